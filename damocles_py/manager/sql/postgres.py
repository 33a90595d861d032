"""The PostgreSQL backend (psycopg 3): READ COMMITTED transactions from a small connection pool.

Several manager processes share one database. Whatever must not be handed out twice is claimed
with row locks in the SQL (see `damocles_py.manager.sql`); the schema lock of a migration is the
`meta` table's `schema_version` row, `SELECT ... FOR UPDATE` (no advisory locks: YugabyteDB).
"""

from __future__ import annotations

import functools
import queue
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row

from damocles_py.manager.sql import DbError, DbTarget, DbUnavailable, Dialect, NotAManagerDb, Retryable, Session
from damocles_py.manager.sql.sqlite import SCHEMA_VERSION_KEY

DIALECT = Dialect(integer="BIGINT", real="DOUBLE PRECISION", blob="BYTEA", serial_key="BIGSERIAL PRIMARY KEY",
                  for_update=" FOR UPDATE", skip_locked=" FOR UPDATE SKIP LOCKED")

POOL_SIZE = 12  # connections per manager process (PostgreSQL's default max_connections is 100)
CONNECT_TIMEOUT = 10  # seconds

_PLACEHOLDER = re.compile(r"\?")


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (the SQL has no `%` and no `?` in literals)."""
    return _PLACEHOLDER.sub("%s", sql)


class _PgSession:
    def __init__(self, conn: psycopg.Connection):
        self._conn = conn

    def execute(self, sql: str, params=()):
        return self._conn.execute(translate(sql), tuple(params))


def connect_error(target: DbTarget, e: Exception) -> DbError:
    """One line for why a connection failed, naming the fix."""
    parts = urlsplit(target.location)
    where = f"PostgreSQL at {parts.hostname or 'localhost'}:{parts.port or 5432}"
    text = " ".join(str(e).split())
    if "password authentication failed" in text or "no password supplied" in text:
        return DbError(f"{where} refused user {parts.username!r}: wrong password. "
                       f"Fix: correct the password in the URL ({target.display()})")
    if "does not exist" in text and "database" in text:
        db = parts.path.strip("/")
        return DbError(f"{where} has no database {db!r}. Fix: create it (createdb -O {parts.username} {db}) "
                       "or correct the URL")
    if "role" in text and "does not exist" in text:
        return DbError(f"{where} has no user {parts.username!r}. Fix: create it (createuser --pwprompt "
                       f"{parts.username}) or correct the URL")
    reason = (text.split(" failed: ")[-1] if " failed: " in text else text).split(" Is the server")[0]
    return DbUnavailable(f"cannot reach {where} ({reason}). Fix: start the server, or correct host:port in "
                         f"--db {target.display()}")


class PostgresBackend:
    dialect = DIALECT

    def __init__(self, target: DbTarget, pool_size: int = POOL_SIZE):
        self.target = target
        self._idle: queue.LifoQueue[psycopg.Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(pool_size)
        self._closed = False
        self._idle.put(self._connect())  # the first one now: a bad URL fails the start, not a worker's call

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.target.location, autocommit=False, row_factory=dict_row,
                                   connect_timeout=CONNECT_TIMEOUT, application_name="damocles-manager")
        except psycopg.Error as e:
            raise connect_error(self.target, e) from None

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        if self._closed:
            raise DbUnavailable(f"the manager's connection to {self.target.display()} is closed")
        with self._slots:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._connect()
            if conn.closed:  # dropped by the server since it was last used
                conn = self._connect()
            try:
                yield _PgSession(conn)
                conn.commit()
            except BaseException as e:
                self._rollback(conn)
                if isinstance(e, (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)):
                    raise Retryable(str(e)) from e
                if isinstance(e, psycopg.OperationalError):  # the server went away mid-transaction
                    raise DbUnavailable(f"lost the connection to {self.target.display()}: "
                                        f"{' '.join(str(e).split())}") from e
                raise
            finally:
                if conn.closed or self._closed:
                    conn.close()
                else:
                    self._idle.put(conn)

    @staticmethod
    def _rollback(conn: psycopg.Connection) -> None:
        try:
            conn.rollback()
        except psycopg.Error:
            conn.close()  # broken: the pool drops it

    @contextmanager
    def migration(self) -> Iterator[tuple[Session, int | None]]:
        """Holds the `schema_version` row's lock: a second manager starting at the same time waits,
        then finds the schema migrated."""
        self._bootstrap()
        with self.transaction() as session:
            row = session.execute("SELECT value FROM meta WHERE key = ?" + DIALECT.for_update,
                                  (SCHEMA_VERSION_KEY,)).fetchone()
            yield session, self._version(row["value"])

    def _bootstrap(self) -> None:
        """An empty database gets the `meta` table and a version row (0: nothing else yet)."""
        for attempt in range(3):
            try:
                with self.transaction() as session:
                    tables = self.tables(session)
                    if "meta" not in tables and tables:
                        raise NotAManagerDb(
                            f"{self.target.display()} holds tables ({', '.join(sorted(tables)[:5])}...) but is not a "
                            "damocles manager database (no meta table). Fix: give the manager a database of its own "
                            "(createdb), or correct the URL")
                    session.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                    if "meta" in tables:
                        row = session.execute("SELECT value FROM meta WHERE key = ?", (SCHEMA_VERSION_KEY,)).fetchone()
                        if row is None:
                            raise NotAManagerDb(f"{self.target.display()} has a meta table without a schema_version: "
                                                "not a damocles manager database. Fix: give the manager a database "
                                                "of its own (createdb), or correct the URL")
                        return
                    session.execute("INSERT INTO meta (key, value) VALUES (?, '0') ON CONFLICT (key) DO NOTHING",
                                    (SCHEMA_VERSION_KEY,))
                return
            except (pg_errors.UniqueViolation, Retryable):
                if attempt == 2:  # another manager created it at the same instant: look again
                    raise

    def read_version(self) -> int | None:
        """The schema version, without changing anything (None: an empty database)."""
        with self.transaction() as session:
            tables = self.tables(session)
            if not tables:
                return None
            if "meta" not in tables:
                raise NotAManagerDb(f"{self.target.display()} holds tables ({', '.join(sorted(tables)[:5])}...) but "
                                    "is not a damocles manager database (no meta table). Fix: give the manager a "
                                    "database of its own (createdb), or correct the URL")
            row = session.execute("SELECT value FROM meta WHERE key = ?", (SCHEMA_VERSION_KEY,)).fetchone()
            if row is None:
                raise NotAManagerDb(f"{self.target.display()} has a meta table without a schema_version: not a "
                                    "damocles manager database. Fix: correct the URL")
            return self._version(row["value"])

    def _version(self, value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise NotAManagerDb(f"{self.target.display()}: schema_version {value!r} is not a number") from None

    def columns(self, session: Session, table: str) -> set[str]:
        rows = session.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = "
                               "current_schema() AND table_name = ?", (table,))
        return {r["column_name"] for r in rows}

    def tables(self, session: Session) -> set[str]:
        rows = session.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = "
                               "current_schema() AND table_type = 'BASE TABLE'")
        return {r["table_name"] for r in rows}

    def check(self) -> None:
        with self.transaction() as session:
            session.execute("SELECT 1").fetchone()

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
