"""The embedded manager's SQLite store: sectors, deals, store reservations, status history and
worker liveness.

One file, `<state_dir>/manager.sqlite3`, in WAL mode with full sync, so a committed change
survives a crash. Every change the manager makes goes through `ManagerDB.transaction()`: one
connection, one lock, one `BEGIN IMMEDIATE` ... `COMMIT`, so a multi-step change (a new sector
number and its sector row; deals and the sector they go to) is all-or-nothing, and concurrent
sealing threads see each other's changes whole. Rows cross this module's boundary as the typed
records below, never as dicts or tuples.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from damocles_py.manager.interface import (
    Deal,
    PreCommitInfo,
    SectorId,
    Seed,
    StateReport,
    ThreadSummary,
    Ticket,
    WorkerPing,
    WorkerRef,
    WorkerSummary,
)
from damocles_py.proofs import PieceInfo, SealProof

DB_FILE_NAME = "manager.sqlite3"

# Version 1 had no meta row for it; 2 added rebuild_abort_reason and deal quarantine; 3 the workers'
# admin address (dest), version and thread summary from their pings.
SCHEMA_VERSION = 3
_SCHEMA_VERSION_KEY = "schema_version"

# Columns added since version 1, added in place to an older file when it is opened.
_ADDED_COLUMNS = {
    "sectors": [("rebuild_abort_reason", "TEXT")],
    "deals": [("quarantine", "TEXT"), ("quarantine_miner", "INTEGER"), ("quarantine_number", "INTEGER"),
              ("quarantine_size", "INTEGER"), ("quarantine_mtime_ns", "INTEGER")],
    "workers": [("dest", "TEXT"), ("version", "TEXT"), ("summary", "TEXT")],
}


class UnknownSchema(Exception):
    """The database was written by a newer manager (or is not a manager database)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The last sector number handed out per miner; bumped in the transaction that inserts the sector.
CREATE TABLE IF NOT EXISTS sector_numbers (
    miner       INTEGER PRIMARY KEY,
    last_number INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS sectors (
    miner             INTEGER NOT NULL,
    number            INTEGER NOT NULL,
    proof             TEXT    NOT NULL,
    created_at        REAL    NOT NULL,
    holder_instance   TEXT    NOT NULL,
    holder_thread     INTEGER NOT NULL,
    holder_location   TEXT    NOT NULL,
    -- the ticket last assigned (a new one replaces it after a ticket expired)
    ticket            BLOB,
    ticket_epoch      INTEGER,
    -- the pre-commit: what was submitted, and the ticket it was sealed with
    pre_comm_r        BLOB,
    pre_comm_d        BLOB,
    pre_ticket        BLOB,
    pre_ticket_epoch  INTEGER,
    pre_state         TEXT,     -- 'accepted' | 'rejected'
    pre_epoch         INTEGER,  -- landing epoch of an accepted pre-commit
    pre_reason        TEXT,     -- why it was rejected
    seed              BLOB,
    seed_epoch        INTEGER,
    commit_proof      BLOB,
    commit_state      TEXT,     -- 'accepted' | 'rejected'
    commit_epoch      INTEGER,  -- landing epoch of an accepted proof
    commit_reason     TEXT,
    store             TEXT,
    finished          INTEGER NOT NULL DEFAULT 0,
    aborted           INTEGER NOT NULL DEFAULT 0,
    abort_reason      TEXT,
    rebuild           TEXT,     -- NULL | 'requested' | 'taken'
    rebuild_abort_reason TEXT,  -- why the last rebuild was given up; cleared by a new request
    upgrade           TEXT,     -- NULL | 'upgrading' | 'upgraded'
    upgrade_comm_r    BLOB,
    upgrade_comm_d    BLOB,
    upgrade_proof     BLOB,
    upgrade_store     TEXT,
    PRIMARY KEY (miner, number)
);

CREATE TABLE IF NOT EXISTS deals (
    deal_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    piece_commitment BLOB    NOT NULL,
    piece_size       INTEGER NOT NULL,  -- unpadded
    piece_path       TEXT    NOT NULL UNIQUE,
    payload_size     INTEGER NOT NULL,
    sector_miner     INTEGER,           -- NULL: in the pool
    sector_number    INTEGER,
    for_upgrade      INTEGER NOT NULL DEFAULT 0,
    position         INTEGER,           -- order of the piece in its sector
    -- Set when a worker found the piece's commP wrong: never handed out until the file changes
    -- (its size or mtime differ from those recorded here; its commP is then computed again).
    quarantine          TEXT,
    quarantine_miner    INTEGER,          -- the sector whose abort quarantined it
    quarantine_number   INTEGER,
    quarantine_size     INTEGER,          -- the file's size and mtime then (-1: no file)
    quarantine_mtime_ns INTEGER
);
CREATE INDEX IF NOT EXISTS deals_by_sector ON deals (sector_miner, sector_number);

CREATE TABLE IF NOT EXISTS reservations (
    miner  INTEGER NOT NULL,
    number INTEGER NOT NULL,
    store  TEXT    NOT NULL,
    size   INTEGER NOT NULL,
    PRIMARY KEY (miner, number)
);

CREATE TABLE IF NOT EXISTS history (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    miner           INTEGER NOT NULL,
    number          INTEGER NOT NULL,
    time            REAL    NOT NULL,
    worker_instance TEXT    NOT NULL,
    worker_thread   INTEGER NOT NULL,
    worker_location TEXT    NOT NULL,
    prev            TEXT    NOT NULL,
    next            TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    failure_level   TEXT,
    failure_cause   TEXT,
    failure_desc    TEXT
);
CREATE INDEX IF NOT EXISTS history_by_sector ON history (miner, number);

-- When each worker instance was last heard from, so a restarted manager still knows who was
-- alive and when. A ping or any call carrying the worker's WorkerRef counts.
CREATE TABLE IF NOT EXISTS workers (
    instance  TEXT PRIMARY KEY,
    last_seen REAL NOT NULL,
    last_ping REAL,             -- NULL: it called, but never pinged
    dest      TEXT,             -- its admin API (host:port) from its last ping
    version   TEXT,
    summary   TEXT              -- JSON thread counts from its last ping (WorkerSummary)
);

-- The threads a worker described in its last ping (each ping replaces its rows).
CREATE TABLE IF NOT EXISTS worker_threads (
    instance      TEXT    NOT NULL,
    idx           INTEGER NOT NULL,
    plan          TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    sector_miner  INTEGER,           -- NULL: no sector
    sector_number INTEGER,
    thread_state  TEXT    NOT NULL,
    PRIMARY KEY (instance, idx)
);
"""


# ---------------------------------------------------------------------------------------------
# records


class Submission(enum.Enum):
    Accepted = "accepted"
    Rejected = "rejected"


class RebuildState(enum.Enum):
    Requested = "requested"  # by an operator; waiting for a rebuild thread
    Taken = "taken"  # a rebuild thread is on it


class UpgradeState(enum.Enum):
    Upgrading = "upgrading"  # handed to a snap-up thread with deals
    Upgraded = "upgraded"  # its update proof was accepted


class HeldJob(enum.Enum):
    """What a thread may hold, one of each kind at most; the value selects its sector row."""

    Seal = "finished = 0 AND aborted = 0"
    Upgrade = "aborted = 0 AND upgrade = 'upgrading'"
    Rebuild = "aborted = 0 AND rebuild = 'taken'"


@dataclass(frozen=True)
class PreCommitRecord:
    info: PreCommitInfo
    state: Submission
    landing_epoch: int | None  # set when accepted
    reject_reason: str | None  # set when rejected


@dataclass(frozen=True)
class CommitRecord:
    """A submitted (prove-commit) seal proof."""

    proof: bytes
    state: Submission
    landing_epoch: int | None
    reject_reason: str | None


@dataclass(frozen=True)
class UpgradeRecord:
    state: UpgradeState
    comm_r: bytes | None = None  # the new replica's, once upgraded
    comm_d: bytes | None = None
    proof: bytes | None = None
    store: str | None = None  # where the update files were persisted


@dataclass(frozen=True)
class SectorRecord:
    id: SectorId
    proof: SealProof
    created_at: float
    holder: WorkerRef  # who holds it now (sealing, upgrading or rebuilding it)
    ticket: Ticket | None
    pre_commit: PreCommitRecord | None
    seed: Seed | None
    commit: CommitRecord | None
    store: str | None  # where the sealed files were persisted
    finished: bool
    aborted: bool
    abort_reason: str | None
    rebuild: RebuildState | None
    upgrade: UpgradeRecord | None
    rebuild_abort_reason: str | None = None  # why the last rebuild was given up


@dataclass(frozen=True)
class DealRecord:
    deal: Deal
    sector: SectorId | None  # None: free, in the pool
    for_upgrade: bool
    quarantine: str | None = None  # set: never handed out until its piece file changes
    quarantined_by: SectorId | None = None


@dataclass(frozen=True)
class QuarantinedDeal:
    deal: Deal
    size: int  # of the piece file when quarantined (-1: no file)
    mtime_ns: int


@dataclass(frozen=True)
class ReservationRecord:
    sector: SectorId
    store: str
    size: int


@dataclass(frozen=True)
class HistoryRow:
    sector: SectorId
    time: float
    worker: WorkerRef
    prev: str
    next: str
    event: str
    failure_level: str | None
    failure_cause: str | None
    failure_desc: str | None


@dataclass(frozen=True)
class WorkerRecord:
    instance: str
    last_seen: float
    last_ping: float | None
    threads: tuple[ThreadSummary, ...]  # from its last ping
    dest: str = ""
    version: str = ""
    summary: WorkerSummary | None = None


# ---------------------------------------------------------------------------------------------
# row conversions


def _worker_from_row(row: sqlite3.Row, threads: Sequence[ThreadSummary]) -> WorkerRecord:
    summary = None
    if row["summary"]:
        try:
            summary = WorkerSummary(**json.loads(row["summary"]))
        except (ValueError, TypeError):  # written by us; a damaged value only loses the counts
            summary = None
    return WorkerRecord(row["instance"], row["last_seen"], row["last_ping"], tuple(threads),
                        row["dest"] or "", row["version"] or "", summary)


def _optional(value, convert):
    return None if value is None else convert(value)


def _sector_from_row(row: sqlite3.Row) -> SectorRecord:
    return SectorRecord(
        id=SectorId(row["miner"], row["number"]),
        proof=SealProof[row["proof"]],
        created_at=row["created_at"],
        holder=WorkerRef(row["holder_instance"], row["holder_thread"], row["holder_location"]),
        ticket=None if row["ticket"] is None else Ticket(bytes(row["ticket"]), row["ticket_epoch"]),
        pre_commit=_pre_commit_from_row(row),
        seed=None if row["seed"] is None else Seed(bytes(row["seed"]), row["seed_epoch"]),
        commit=_commit_from_row(row),
        store=row["store"],
        finished=bool(row["finished"]),
        aborted=bool(row["aborted"]),
        abort_reason=row["abort_reason"],
        rebuild=_optional(row["rebuild"], RebuildState),
        upgrade=_upgrade_from_row(row),
        rebuild_abort_reason=row["rebuild_abort_reason"],
    )


def _pre_commit_from_row(row: sqlite3.Row) -> PreCommitRecord | None:
    if row["pre_state"] is None:
        return None
    ticket = Ticket(bytes(row["pre_ticket"]), row["pre_ticket_epoch"])
    return PreCommitRecord(
        info=PreCommitInfo(bytes(row["pre_comm_r"]), bytes(row["pre_comm_d"]), ticket),
        state=Submission(row["pre_state"]),
        landing_epoch=row["pre_epoch"],
        reject_reason=row["pre_reason"],
    )


def _commit_from_row(row: sqlite3.Row) -> CommitRecord | None:
    if row["commit_state"] is None:
        return None
    return CommitRecord(
        proof=bytes(row["commit_proof"]),
        state=Submission(row["commit_state"]),
        landing_epoch=row["commit_epoch"],
        reject_reason=row["commit_reason"],
    )


def _upgrade_from_row(row: sqlite3.Row) -> UpgradeRecord | None:
    if row["upgrade"] is None:
        return None
    return UpgradeRecord(
        state=UpgradeState(row["upgrade"]),
        comm_r=_optional(row["upgrade_comm_r"], bytes),
        comm_d=_optional(row["upgrade_comm_d"], bytes),
        proof=_optional(row["upgrade_proof"], bytes),
        store=row["upgrade_store"],
    )


def _deal_from_row(row: sqlite3.Row) -> Deal:
    piece = PieceInfo(bytes(row["piece_commitment"]), row["piece_size"])
    return Deal(row["deal_id"], piece, row["piece_path"], row["payload_size"])


def _deal_record_from_row(row: sqlite3.Row) -> DealRecord:
    sector = None if row["sector_miner"] is None else SectorId(row["sector_miner"], row["sector_number"])
    by = None if row["quarantine_miner"] is None else SectorId(row["quarantine_miner"], row["quarantine_number"])
    return DealRecord(_deal_from_row(row), sector, bool(row["for_upgrade"]), row["quarantine"], by)


def _history_from_row(row: sqlite3.Row) -> HistoryRow:
    return HistoryRow(
        sector=SectorId(row["miner"], row["number"]),
        time=row["time"],
        worker=WorkerRef(row["worker_instance"], row["worker_thread"], row["worker_location"]),
        prev=row["prev"],
        next=row["next"],
        event=row["event"],
        failure_level=row["failure_level"],
        failure_cause=row["failure_cause"],
        failure_desc=row["failure_desc"],
    )


def _thread_from_row(row: sqlite3.Row) -> ThreadSummary:
    sector = None if row["sector_miner"] is None else SectorId(row["sector_miner"], row["sector_number"])
    return ThreadSummary(row["idx"], row["plan"], row["state"], sector, row["thread_state"])


_KEY = "miner = ? AND number = ?"

# A sector someone is working on: being sealed, or a finished one being upgraded or rebuilt.
_IN_PROGRESS = "aborted = 0 AND (finished = 0 OR rebuild = 'taken' OR upgrade = 'upgrading')"


# The store a rebuild writes to: an upgraded sector's live files are the update's.
_REBUILD_STORE = "(CASE WHEN upgrade = 'upgraded' AND upgrade_store IS NOT NULL THEN upgrade_store ELSE store END)"


def _allowed(miners: Sequence[int] | None, proofs: Sequence[SealProof] | None, stores: Sequence[str] | None,
             store_column: str) -> tuple[str, list]:
    """The `AND ... IN (...)` clauses of an AllocateSpec's allow-lists."""
    parts = [_in_clause("miner", miners), _in_clause("proof", None if proofs is None else [p.name for p in proofs]),
             _in_clause(store_column, stores)]
    return "".join(sql for sql, _ in parts), [p for _, params in parts for p in params]


def _key(sector: SectorId) -> tuple[int, int]:
    return (sector.miner, sector.number)


def _in_clause(column: str, values: Sequence | None) -> tuple[str, list]:
    """`AND column IN (...)` for an allow-list; nothing when the list is None (any value)."""
    if values is None:
        return "", []
    return f" AND {column} IN ({', '.join('?' * len(values))})", list(values)


# ---------------------------------------------------------------------------------------------
# the store


class Tx:
    """Reads and writes inside one transaction. Obtain it from `ManagerDB.transaction()`."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def _one(self, sql: str, params: Sequence = ()) -> sqlite3.Row | None:
        return self._conn.execute(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence = ()) -> list[sqlite3.Row]:
        return self._conn.execute(sql, params).fetchall()

    def _update_sector(self, sector: SectorId, assignments: str, params: Sequence) -> None:
        self._conn.execute(f"UPDATE sectors SET {assignments} WHERE {_KEY}", [*params, *_key(sector)])

    # -- meta

    def meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else row["value"]

    def set_meta(self, key: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- sectors

    def next_sector_number(self, miner: int) -> int:
        """Take the next number of `miner`: 1, 2, ... never the same one twice."""
        row = self._one("SELECT last_number FROM sector_numbers WHERE miner = ?", (miner,))
        number = 1 if row is None else row["last_number"] + 1
        self._conn.execute(
            "INSERT OR REPLACE INTO sector_numbers (miner, last_number) VALUES (?, ?)", (miner, number)
        )
        return number

    def insert_sector(self, sector: SectorId, proof: SealProof, holder: WorkerRef, created_at: float) -> None:
        self._conn.execute(
            "INSERT INTO sectors (miner, number, proof, created_at, holder_instance, holder_thread,"
            " holder_location) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*_key(sector), proof.name, created_at, holder.instance, holder.thread, holder.location),
        )

    def sector(self, sector: SectorId) -> SectorRecord | None:
        row = self._one(f"SELECT * FROM sectors WHERE {_KEY}", _key(sector))
        return None if row is None else _sector_from_row(row)

    def sectors(self) -> list[SectorRecord]:
        return [_sector_from_row(r) for r in self._all("SELECT * FROM sectors ORDER BY miner, number")]

    def first_snapup_candidate(self, miners: Sequence[int] | None, proofs: Sequence[SealProof] | None,
                               stores: Sequence[str] | None) -> SectorRecord | None:
        """The lowest-numbered sealed CC sector that nothing is being done to, in one of `stores`."""
        where, params = _allowed(miners, proofs, stores, "store")
        row = self._one(
            "SELECT * FROM sectors s WHERE finished = 1 AND aborted = 0 AND commit_state = 'accepted'"
            " AND store IS NOT NULL AND upgrade IS NULL AND rebuild IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM deals d WHERE d.sector_miner = s.miner"
            " AND d.sector_number = s.number AND d.for_upgrade = 0)"
            f"{where} ORDER BY miner, number LIMIT 1",
            params,
        )
        return None if row is None else _sector_from_row(row)

    def first_rebuild_request(self, miners: Sequence[int] | None, proofs: Sequence[SealProof] | None,
                              stores: Sequence[str] | None) -> SectorRecord | None:
        """The lowest-numbered rebuild request whose files go to one of `stores`."""
        where, params = _allowed(miners, proofs, stores, _REBUILD_STORE)
        row = self._one(f"SELECT * FROM sectors WHERE rebuild = 'requested'{where} ORDER BY miner, number LIMIT 1",
                        params)
        return None if row is None else _sector_from_row(row)

    def held_by(self, worker: WorkerRef, kind: "HeldJob") -> SectorRecord | None:
        """The job of `kind` that the thread `worker` holds and has not reported done, if any.

        Allocation hands it back to the same thread, so an answer lost on the way (a timeout, a
        worker killed before it saved the sector) never strands a sector: asking again returns it.
        """
        row = self._one(
            f"SELECT * FROM sectors WHERE holder_instance = ? AND holder_thread = ? AND {kind.value}"
            " ORDER BY miner, number LIMIT 1",
            (worker.instance, worker.thread),
        )
        return None if row is None else _sector_from_row(row)

    def set_holder(self, sector: SectorId, holder: WorkerRef) -> None:
        self._update_sector(
            sector, "holder_instance = ?, holder_thread = ?, holder_location = ?",
            (holder.instance, holder.thread, holder.location),
        )

    def set_ticket(self, sector: SectorId, ticket: Ticket) -> None:
        self._update_sector(sector, "ticket = ?, ticket_epoch = ?", (ticket.value, ticket.epoch))

    def set_pre_commit(self, sector: SectorId, pre_commit: PreCommitRecord) -> None:
        """Record a pre-commit; the seed and proof of any earlier one no longer apply, so drop them."""
        info = pre_commit.info
        self._update_sector(
            sector,
            "pre_comm_r = ?, pre_comm_d = ?, pre_ticket = ?, pre_ticket_epoch = ?, pre_state = ?,"
            " pre_epoch = ?, pre_reason = ?, seed = NULL, seed_epoch = NULL, commit_proof = NULL,"
            " commit_state = NULL, commit_epoch = NULL, commit_reason = NULL",
            (info.comm_r, info.comm_d, info.ticket.value, info.ticket.epoch, pre_commit.state.value,
             pre_commit.landing_epoch, pre_commit.reject_reason),
        )

    def set_seed(self, sector: SectorId, seed: Seed) -> None:
        self._update_sector(sector, "seed = ?, seed_epoch = ?", (seed.value, seed.epoch))

    def set_commit(self, sector: SectorId, commit: CommitRecord) -> None:
        self._update_sector(
            sector, "commit_proof = ?, commit_state = ?, commit_epoch = ?, commit_reason = ?",
            (commit.proof, commit.state.value, commit.landing_epoch, commit.reject_reason),
        )

    def set_store(self, sector: SectorId, store: str) -> None:
        self._update_sector(sector, "store = ?", (store,))

    def set_upgrade_store(self, sector: SectorId, store: str) -> None:
        self._update_sector(sector, "upgrade_store = ?", (store,))

    def mark_finished(self, sector: SectorId) -> None:
        self._update_sector(sector, "finished = 1", ())

    def mark_aborted(self, sector: SectorId, reason: str) -> None:
        self._update_sector(sector, "aborted = 1, abort_reason = ?", (reason,))

    def set_rebuild(self, sector: SectorId, state: RebuildState | None) -> None:
        """A new request clears the reason an earlier one was given up."""
        clear = ", rebuild_abort_reason = NULL" if state is RebuildState.Requested else ""
        self._update_sector(sector, f"rebuild = ?{clear}", (_optional(state, lambda s: s.value),))

    def end_rebuild(self, sector: SectorId, reason: str) -> None:
        """Give a rebuild up: it stays ended, with its reason, until an operator requests it again."""
        self._update_sector(sector, "rebuild = NULL, rebuild_abort_reason = ?", (reason,))

    def set_upgrade(self, sector: SectorId, upgrade: UpgradeRecord) -> None:
        self._update_sector(
            sector,
            "upgrade = ?, upgrade_comm_r = ?, upgrade_comm_d = ?, upgrade_proof = ?, upgrade_store = ?",
            (upgrade.state.value, upgrade.comm_r, upgrade.comm_d, upgrade.proof, upgrade.store),
        )

    def clear_upgrade(self, sector: SectorId) -> None:
        self._update_sector(
            sector,
            "upgrade = NULL, upgrade_comm_r = NULL, upgrade_comm_d = NULL, upgrade_proof = NULL,"
            " upgrade_store = NULL",
            (),
        )

    # -- deals

    def known_piece_paths(self) -> set[str]:
        return {r["piece_path"] for r in self._all("SELECT piece_path FROM deals")}

    def add_deal(self, piece_path: str, piece: PieceInfo, payload_size: int) -> Deal | None:
        """A new deal in the pool; None if a deal for this path exists already."""
        cursor = self._conn.execute(
            "INSERT OR IGNORE INTO deals (piece_commitment, piece_size, piece_path, payload_size)"
            " VALUES (?, ?, ?, ?)",
            (piece.commitment, piece.size, piece_path, payload_size),
        )
        if cursor.rowcount == 0:
            return None
        return Deal(cursor.lastrowid, piece, piece_path, payload_size)

    def free_deals(self) -> list[Deal]:
        rows = self._all("SELECT * FROM deals WHERE sector_miner IS NULL AND quarantine IS NULL ORDER BY deal_id")
        return [_deal_from_row(r) for r in rows]

    def quarantine_deal(self, deal_id: int, reason: str, by: SectorId, size: int, mtime_ns: int) -> bool:
        """Keep a deal out of the pool until its piece file changes; False if there is no such deal."""
        cursor = self._conn.execute(
            "UPDATE deals SET quarantine = ?, quarantine_miner = ?, quarantine_number = ?, quarantine_size = ?,"
            " quarantine_mtime_ns = ? WHERE deal_id = ?",
            (reason, *_key(by), size, mtime_ns, deal_id),
        )
        return cursor.rowcount == 1

    def quarantined_deals(self) -> list[QuarantinedDeal]:
        rows = self._all("SELECT * FROM deals WHERE quarantine IS NOT NULL ORDER BY deal_id")
        return [QuarantinedDeal(_deal_from_row(r), r["quarantine_size"], r["quarantine_mtime_ns"]) for r in rows]

    def release_quarantine(self, deal_id: int, piece: PieceInfo, payload_size: int) -> None:
        """The piece file changed: the deal takes its new commitment and is free again."""
        self._conn.execute(
            "UPDATE deals SET piece_commitment = ?, piece_size = ?, payload_size = ?, quarantine = NULL,"
            " quarantine_miner = NULL, quarantine_number = NULL, quarantine_size = NULL,"
            " quarantine_mtime_ns = NULL WHERE deal_id = ?",
            (piece.commitment, piece.size, payload_size, deal_id),
        )

    def deals_about(self, sector: SectorId) -> list[DealRecord]:
        """A sector's deals, and those its abort quarantined."""
        rows = self._all(
            "SELECT * FROM deals WHERE (sector_miner = ? AND sector_number = ?)"
            " OR (quarantine_miner = ? AND quarantine_number = ?) ORDER BY deal_id",
            (*_key(sector), *_key(sector)),
        )
        return [_deal_record_from_row(r) for r in rows]

    def deals_of(self, sector: SectorId, for_upgrade: bool) -> list[Deal]:
        """The deals assigned to a sector (its own, or those of its upgrade), in piece order."""
        rows = self._all(
            "SELECT * FROM deals WHERE sector_miner = ? AND sector_number = ? AND for_upgrade = ?"
            " ORDER BY position",
            (*_key(sector), int(for_upgrade)),
        )
        return [_deal_from_row(r) for r in rows]

    def deals(self) -> list[DealRecord]:
        return [_deal_record_from_row(r) for r in self._all("SELECT * FROM deals ORDER BY deal_id")]

    def assign_deals(self, sector: SectorId, deals: Sequence[Deal], for_upgrade: bool) -> None:
        for position, deal in enumerate(deals):
            self._conn.execute(
                "UPDATE deals SET sector_miner = ?, sector_number = ?, for_upgrade = ?, position = ?"
                " WHERE deal_id = ? AND sector_miner IS NULL",
                (*_key(sector), int(for_upgrade), position, deal.deal_id),
            )

    def release_deals(self, sector: SectorId, for_upgrade: bool) -> None:
        """Put a sector's deals back in the pool."""
        self._conn.execute(
            "UPDATE deals SET sector_miner = NULL, sector_number = NULL, for_upgrade = 0, position = NULL"
            " WHERE sector_miner = ? AND sector_number = ? AND for_upgrade = ?",
            (*_key(sector), int(for_upgrade)),
        )

    # -- store reservations

    def reserved_on(self, store: str, excluding: SectorId) -> int:
        """Bytes reserved on `store` by sectors other than `excluding`."""
        row = self._one(
            "SELECT COALESCE(SUM(size), 0) AS total FROM reservations"
            " WHERE store = ? AND NOT (miner = ? AND number = ?)",
            (store, *_key(excluding)),
        )
        return row["total"]

    def reserve(self, sector: SectorId, store: str, size: int) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO reservations (miner, number, store, size) VALUES (?, ?, ?, ?)",
            (*_key(sector), store, size),
        )

    def release_reservation(self, sector: SectorId) -> None:
        self._conn.execute(f"DELETE FROM reservations WHERE {_KEY}", _key(sector))

    def reservations(self) -> list[ReservationRecord]:
        rows = self._all("SELECT * FROM reservations ORDER BY miner, number")
        return [ReservationRecord(SectorId(r["miner"], r["number"]), r["store"], r["size"]) for r in rows]

    # -- status history

    def append_history(self, sector: SectorId, time: float, report: StateReport) -> None:
        worker = report.worker
        self._conn.execute(
            "INSERT INTO history (miner, number, time, worker_instance, worker_thread, worker_location,"
            " prev, next, event, failure_level, failure_cause, failure_desc)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*_key(sector), time, worker.instance, worker.thread, worker.location, report.prev,
             report.next, report.event, report.failure_level, report.failure_cause, report.failure_desc),
        )

    def history(self, sector: SectorId) -> list[HistoryRow]:
        rows = self._all(f"SELECT * FROM history WHERE {_KEY} ORDER BY id", _key(sector))
        return [_history_from_row(r) for r in rows]

    # -- worker liveness

    def touch_worker(self, instance: str, time: float) -> None:
        """`instance` was heard from at `time`."""
        self._conn.execute(
            "INSERT INTO workers (instance, last_seen) VALUES (?, ?)"
            " ON CONFLICT (instance) DO UPDATE SET last_seen = excluded.last_seen",
            (instance, time),
        )

    def record_ping(self, ping: WorkerPing, time: float) -> None:
        self.touch_worker(ping.instance, time)
        summary = ping.summary or WorkerSummary.of(ping.threads)
        self._conn.execute("UPDATE workers SET last_ping = ?, dest = ?, version = ?, summary = ? WHERE instance = ?",
                           (time, ping.dest, ping.version, json.dumps(summary.__dict__), ping.instance))
        self._conn.execute("DELETE FROM worker_threads WHERE instance = ?", (ping.instance,))
        for t in ping.threads:
            sector = (None, None) if t.sector is None else _key(t.sector)
            # OR REPLACE: a ping naming a thread index twice keeps the last, rather than failing
            self._conn.execute(
                "INSERT OR REPLACE INTO worker_threads (instance, idx, plan, state, sector_miner, sector_number,"
                " thread_state) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ping.instance, t.index, t.plan, t.state, *sector, t.thread_state),
            )

    def forget_ping(self, instance: str) -> bool:
        """Drop what `instance`'s pings said (damocles' `WorkerPingInfoRemove`): it leaves `util worker
        list` until it pings again. When it was last heard from stays: sectors it holds need it."""
        cur = self._conn.execute("UPDATE workers SET last_ping = NULL, dest = NULL, version = NULL, summary = NULL"
                                 " WHERE instance = ? AND last_ping IS NOT NULL", (instance,))
        self._conn.execute("DELETE FROM worker_threads WHERE instance = ?", (instance,))
        return cur.rowcount > 0

    def workers(self) -> list[WorkerRecord]:
        threads: dict[str, list[ThreadSummary]] = {}
        for row in self._all("SELECT * FROM worker_threads ORDER BY instance, idx"):
            threads.setdefault(row["instance"], []).append(_thread_from_row(row))
        rows = self._all("SELECT * FROM workers ORDER BY instance")
        return [_worker_from_row(r, threads.get(r["instance"], ())) for r in rows]

    def worker(self, instance: str) -> WorkerRecord | None:
        row = self._one("SELECT * FROM workers WHERE instance = ?", (instance,))
        if row is None:
            return None
        threads = self._all("SELECT * FROM worker_threads WHERE instance = ? ORDER BY idx", (instance,))
        return _worker_from_row(row, [_thread_from_row(t) for t in threads])

    def sectors_in_progress_by_holder(self) -> dict[str, list[SectorId]]:
        """The sectors being worked on, by the worker instance holding them."""
        rows = self._all(f"SELECT miner, number, holder_instance FROM sectors WHERE {_IN_PROGRESS}"
                         " ORDER BY miner, number")
        held: dict[str, list[SectorId]] = {}
        for r in rows:
            held.setdefault(r["holder_instance"], []).append(SectorId(r["miner"], r["number"]))
        return held


def _statements(script: str) -> Iterator[str]:
    """The SQL statements of `script`, one by one."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""


def _schema_version(conn: sqlite3.Connection) -> int:
    """0: a new file; 1: a file from before versions were recorded."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" not in tables:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (_SCHEMA_VERSION_KEY,)).fetchone()
    if row is None:
        return 1 if "sectors" in tables else 0
    try:
        return int(row[0])
    except ValueError:
        raise UnknownSchema(f"schema_version {row[0]!r} is not a number") from None


def inspect_db(state_dir: Path) -> str:
    """What a manager start would find in `state_dir`, without changing anything (`run --check`).

    Raises UnknownSchema (or sqlite3.Error) when a start would fail on it.
    """
    path = state_dir / DB_FILE_NAME
    if not path.exists():
        return f"{path} does not exist yet: a start creates it (schema version {SCHEMA_VERSION})"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.execute("PRAGMA quick_check").fetchone()
        version = _schema_version(conn)
        if version > SCHEMA_VERSION:
            raise UnknownSchema(f"{path} has schema version {version}; this manager knows up to {SCHEMA_VERSION}. "
                                "Fix: run the newer damocles-manager that wrote it")
        if version == 0:
            raise UnknownSchema(f"{path} is not a damocles manager database (no meta table). "
                                "Fix: point --state-dir at the manager's own directory")
        sectors = conn.execute("SELECT COUNT(*) FROM sectors").fetchone()[0]
        deals = conn.execute("SELECT COUNT(*) FROM deals").fetchone()[0]
    finally:
        conn.close()
    upgrade = "" if version == SCHEMA_VERSION else f" (a start upgrades it to version {SCHEMA_VERSION})"
    return f"{path}: schema version {version}{upgrade}, {sectors} sectors, {deals} deals"


class ManagerDB:
    """The SQLite file, shared by every thread through one connection behind one lock."""

    def __init__(self, state_dir: Path):
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / DB_FILE_NAME
        # isolation_level=None: no implicit transactions; `transaction()` opens them explicitly.
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed sector number is on disk before it is handed out, so it is never reused.
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA busy_timeout = 10000")  # another process on the same file
            self._conn.execute("BEGIN IMMEDIATE")  # all tables and columns, or none
            try:
                version = _schema_version(self._conn)
                if version > SCHEMA_VERSION:
                    raise UnknownSchema(f"{self.path} has schema version {version}; this manager knows up to "
                                        f"{SCHEMA_VERSION}. Fix: run the newer damocles-manager that wrote it")
                for statement in _statements(_SCHEMA):  # (executescript would commit half-way)
                    self._conn.execute(statement)
                for table, columns in _ADDED_COLUMNS.items():
                    present = {r["name"] for r in self._conn.execute(f"PRAGMA table_info({table})")}
                    for name, kind in columns:
                        if name not in present:
                            self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
                self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                   (_SCHEMA_VERSION_KEY, str(SCHEMA_VERSION)))
            except BaseException:
                self._conn.execute("ROLLBACK")
                self._conn.close()
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One atomic unit: committed when the block ends, rolled back if it raises."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
