"""The sealing thread's database: a SQLite file in the thread's location.

It holds every sector job the thread ran (the current one is the newest not done) and each job's
status history. A transition writes the sector and its history row in one transaction, so after a
`kill -9` the database shows exactly the last completed transition.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from damocles_py.config.schema import Plan
from damocles_py.fsm.sector import Sector
from damocles_py.manager.interface import SectorId

DB_FILE = "sealing.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sectors (
    uid INTEGER PRIMARY KEY AUTOINCREMENT,
    sector_id TEXT,
    plan TEXT NOT NULL,
    state TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sectors_by_id ON sectors(sector_id);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid INTEGER NOT NULL REFERENCES sectors(uid),
    ts REAL NOT NULL,
    prev TEXT NOT NULL,
    event TEXT NOT NULL,
    next TEXT NOT NULL,
    duration REAL,
    failure_level TEXT,
    failure_cause TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS history_by_uid ON history(uid);
CREATE TABLE IF NOT EXISTS thread_flags (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# Thread flags: what the thread itself must remember across restarts (a pause taken with no sector).
FLAG_PAUSED_IDLE = "paused_idle"


class StateStoreError(Exception):
    """The thread database could not be written (read-only file system, disk full, I/O error)."""


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a sector's status history: a transition, or a failure in `prev`."""

    ts: float
    prev: str
    event: str
    next: str
    duration: float | None = None
    failure_level: str | None = None
    failure_cause: str | None = None
    detail: str | None = None


class ThreadDB:
    def __init__(self, location: Path):
        self.path = location / DB_FILE
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")  # a transition survives power loss, not just kill -9
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _tx(self, fn):
        """Run `fn` in one write transaction; a failed write raises StateStoreError and changes nothing."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                out = fn(self._conn)
                self._conn.execute("COMMIT")
                return out
            except (sqlite3.Error, OSError) as e:
                self._rollback()
                raise StateStoreError(f"{self.path}: {e}") from e
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        # A COMMIT refused for lack of space can leave the transaction open: close it, or every
        # later BEGIN fails with "cannot start a transaction within a transaction".
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def current(self) -> Sector | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT data FROM sectors WHERE done = 0 ORDER BY uid DESC LIMIT 1"
            ).fetchone()
        return Sector.from_json(row[0]) if row else None

    def create(self, plan: Plan) -> Sector:
        now = time.time()

        def insert(conn):
            cur = conn.execute(
                "INSERT INTO sectors (plan, state, created, updated, data) VALUES (?, 'Empty', ?, ?, '{}')",
                (plan.value, now, now),
            )
            sector = Sector(uid=cur.lastrowid, plan=plan)
            conn.execute("UPDATE sectors SET data = ? WHERE uid = ?", (sector.to_json(), sector.uid))
            return sector

        return self._tx(insert)

    def save(self, sector: Sector, entry: HistoryEntry | None = None, done: bool = False) -> None:
        """Write the sector (and its new history line) atomically."""

        def write(conn):
            conn.execute(
                "UPDATE sectors SET sector_id = ?, state = ?, done = ?, updated = ?, data = ? WHERE uid = ?",
                (str(sector.id) if sector.id else None, sector.state.value, int(done), time.time(),
                 sector.to_json(), sector.uid),
            )
            if entry is not None:
                _insert_history(conn, sector.uid, entry)

        self._tx(write)

    def add_history(self, uid: int, entry: HistoryEntry) -> None:
        self._tx(lambda conn: _insert_history(conn, uid, entry))

    def flag(self, name: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM thread_flags WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_flag(self, name: str, value: str | None) -> None:
        """Set (or, with None, clear) a thread flag."""

        def write(conn):
            if value is None:
                conn.execute("DELETE FROM thread_flags WHERE name = ?", (name,))
            else:
                conn.execute("INSERT INTO thread_flags (name, value) VALUES (?, ?)"
                             " ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, value))

        self._tx(write)

    def history(self, uid: int) -> list[HistoryEntry]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT ts, prev, event, next, duration, failure_level, failure_cause, detail"
                " FROM history WHERE uid = ? ORDER BY id",
                (uid,),
            ).fetchall()
        return [HistoryEntry(*r) for r in rows]

    def find(self, sector_id: SectorId) -> list[Sector]:
        """Every job of this thread that worked on `sector_id` (e.g. a seal, then its rebuild)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT data FROM sectors WHERE sector_id = ? ORDER BY uid", (str(sector_id),)
            ).fetchall()
        return [Sector.from_json(r[0]) for r in rows]

    def jobs(self, limit: int = 100) -> list[tuple[Sector, bool]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT data, done FROM sectors ORDER BY uid DESC LIMIT ?", (limit,)
            ).fetchall()
        return [(Sector.from_json(d), bool(done)) for d, done in rows]


def _insert_history(conn: sqlite3.Connection, uid: int, entry: HistoryEntry) -> None:
    conn.execute(
        "INSERT INTO history (uid, ts, prev, event, next, duration, failure_level, failure_cause, detail)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (uid, entry.ts, entry.prev, entry.event, entry.next, entry.duration,
         entry.failure_level, entry.failure_cause, entry.detail),
    )
