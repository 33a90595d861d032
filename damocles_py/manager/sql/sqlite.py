"""The SQLite backend: one file in WAL mode with full sync, one connection behind one lock.

`BEGIN IMMEDIATE` takes the file's write lock for every transaction, so transactions never
interleave (within this process by the lock, with another process by SQLite's own lock) and the
row-lock clauses of the SQL are empty here.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from damocles_py.manager.sql import DbError, DbTarget, Dialect, NotAManagerDb, Session

DIALECT = Dialect(integer="INTEGER", real="REAL", blob="BLOB", serial_key="INTEGER PRIMARY KEY AUTOINCREMENT",
                  for_update="", skip_locked="")

SCHEMA_VERSION_KEY = "schema_version"


class SqliteBackend:
    dialect = DIALECT

    def __init__(self, target: DbTarget, readonly: bool = False):
        self.target = target
        path = target.path
        try:
            if readonly:
                if not path.is_file():
                    raise DbError(f"{path} does not exist. Fix: name the manager's SQLite file (sqlite:PATH)")
                self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False,
                                             isolation_level=None)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                # isolation_level=None: no implicit transactions; `transaction()` opens them explicitly.
                self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            self._lock = threading.RLock()
            self._begin = "BEGIN" if readonly else "BEGIN IMMEDIATE"
            if not readonly:
                self._conn.execute("PRAGMA journal_mode = WAL")
                # FULL: a committed sector number is on disk before it is handed out, so it is never reused.
                self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA busy_timeout = 10000")  # another process on the same file
            self._conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # "file is not a database"
        except sqlite3.Error as e:
            raise DbError(f"{path}: {e}. Fix: name the manager's SQLite file, or move this file away") from None
        except OSError as e:
            raise DbError(f"{path}: {e.strerror}. Fix: check the directory and its permissions") from None

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._lock:
            self._conn.execute(self._begin)
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def migration(self) -> Iterator[tuple[Session, int | None]]:
        with self.transaction() as session:
            yield session, self._schema_version(session)

    def read_version(self) -> int | None:
        with self.transaction() as session:
            return self._schema_version(session)

    def _schema_version(self, session: Session) -> int | None:
        """None: a new file; 1: a file from before versions were recorded."""
        tables = self.tables(session)
        if "meta" not in tables:
            return None
        row = session.execute("SELECT value FROM meta WHERE key = ?", (SCHEMA_VERSION_KEY,)).fetchone()
        if row is None:
            return 1 if "sectors" in tables else None
        try:
            return int(row[0])
        except ValueError:
            raise NotAManagerDb(f"{self.target.path}: schema_version {row[0]!r} is not a number") from None

    def columns(self, session: Session, table: str) -> set[str]:
        return {r["name"] for r in session.execute(f"PRAGMA table_info({table})")}

    def tables(self, session: Session) -> set[str]:
        return {r[0] for r in session.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def check(self) -> None:
        """The file is whole (`PRAGMA quick_check`); DbError otherwise."""
        with self._lock:
            result = self._conn.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise DbError(f"{self.target.path} is damaged ({result}). Fix: restore it from a backup")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
