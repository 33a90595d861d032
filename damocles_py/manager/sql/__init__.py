"""Where the manager's state lives: a SQLite file (the default, zero setup) or a PostgreSQL database.

    target = parse_db("postgresql://damocles:pw@10.0.0.5:5432/damocles")   # or "sqlite:/var/lib/manager"
    backend = open_backend(target)        # DbError (one line for the operator) if it cannot be used
    with backend.transaction() as session:
        session.execute("SELECT value FROM meta WHERE key = ?", ("genesis",)).fetchone()["value"]

One SQL text serves both backends: it is written with `?` placeholders and standard upserts
(`INSERT ... ON CONFLICT ... DO UPDATE/NOTHING`, `RETURNING`), which SQLite (>= 3.35) and PostgreSQL
both run; a `Dialect` supplies the few differences (placeholders, column types, row-lock clauses).
Rows come back as mappings (`row["column"]`) from both.

Concurrency: SQLite has one connection behind one lock and `BEGIN IMMEDIATE` (one writer at a time,
every transaction sees the others whole). PostgreSQL runs READ COMMITTED transactions from a small
connection pool, several manager processes at once; what must not be handed out twice is claimed
with row locks (`SELECT ... FOR UPDATE [SKIP LOCKED]`, `INSERT ... ON CONFLICT DO UPDATE ...
RETURNING` for counters). A deadlock or serialization failure is raised as `Retryable`: the caller
runs the whole call again.

YugabyteDB: only SQL that YugabyteDB's YSQL also runs is used (row locks, upserts, RETURNING,
BIGSERIAL; no advisory locks, no LOCK TABLE, no LISTEN/NOTIFY), so a YugabyteDB cluster can stand
in for PostgreSQL. Only plain PostgreSQL is tested here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from damocles_py.manager.interface import ManagerUnavailable

DB_FILE_NAME = "manager.sqlite3"

URL_EXAMPLE = "postgresql://damocles:PASSWORD@127.0.0.1:5432/damocles"


class DbError(Exception):
    """The database cannot be used; the message is one line naming the problem and the fix."""


class DbUnavailable(DbError, ManagerUnavailable):
    """The database cannot be reached now (a worker's call fails as unavailable and is retried)."""


class NotAManagerDb(DbError):
    """The database holds something else than a manager's state, or a newer manager's."""


class Retryable(Exception):
    """A deadlock or serialization failure: nothing was changed; run the whole transaction again."""


class DbKind(enum.Enum):
    Sqlite = "sqlite"
    Postgres = "postgresql"


@dataclass(frozen=True)
class DbTarget:
    kind: DbKind
    location: str  # the SQLite file's path, or the PostgreSQL URL (with its password)

    @staticmethod
    def sqlite_in(state_dir: Path) -> DbTarget:
        return DbTarget(DbKind.Sqlite, str(Path(state_dir) / DB_FILE_NAME))

    @property
    def path(self) -> Path:
        return Path(self.location)

    def display(self) -> str:
        """Safe to print and log: a URL's password is masked."""
        if self.kind is DbKind.Sqlite:
            return self.location
        parts = urlsplit(self.location)
        if parts.password is None:
            return self.location
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))


def parse_db(value: str, flag: str = "--db") -> DbTarget:
    """`postgresql://...`/`postgres://...` or `sqlite:PATH` (a file, or a directory holding
    manager.sqlite3). ValueError, one line, for anything else (a bare path included: say which)."""
    value = value.strip()
    if value.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(value)
        if not parts.hostname and "host=" not in parts.query:
            raise ValueError(f"{flag}: {value!r} names no host. Fix: write it like {URL_EXAMPLE}")
        if not parts.path.strip("/"):
            raise ValueError(f"{flag}: {DbTarget(DbKind.Postgres, value).display()} names no database. "
                             f"Fix: write it like {URL_EXAMPLE}")
        return DbTarget(DbKind.Postgres, value)
    if value.startswith("sqlite:"):
        path = value[len("sqlite:"):]
        if path.startswith("///"):  # sqlite:///abs/path, as SQLAlchemy writes it
            path = path[2:]
        if not path:
            raise ValueError(f"{flag}: {value!r} names no file. Fix: write it like sqlite:/var/lib/manager/{DB_FILE_NAME}")
        location = Path(path).resolve()
        if location.is_dir():
            location = location / DB_FILE_NAME
        return DbTarget(DbKind.Sqlite, str(location))
    if "://" in value:
        raise ValueError(f"{flag}: {value.split('://')[0]!r} databases are not supported. "
                         f"Fix: write postgresql://... (e.g. {URL_EXAMPLE}) or sqlite:PATH")
    raise ValueError(f"{flag}: {value!r} is a path, not a database URL. Fix: write sqlite:{value} for a SQLite file, "
                     f"or a PostgreSQL URL like {URL_EXAMPLE}")


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Session(Protocol):
    """One open transaction's connection; `execute` takes SQL with `?` placeholders."""

    def execute(self, sql: str, params: Any = ()) -> Cursor: ...


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends' SQL."""

    integer: str  # column types
    real: str
    blob: str
    serial_key: str  # an auto-numbered integer primary key
    for_update: str  # appended to a SELECT: lock the rows read until commit ("" where writers are serialized)
    skip_locked: str  # the same, skipping rows another transaction holds


class Backend(Protocol):
    target: DbTarget
    dialect: Dialect

    def transaction(self) -> AbstractContextManager[Session]: ...

    def migration(self) -> AbstractContextManager[tuple[Session, int | None]]:
        """A transaction holding the schema lock, with the schema version found (None: empty
        database; 0: a SQLite file from before versions were recorded). NotAManagerDb if it holds
        something else."""

    def read_version(self) -> int | None:
        """The schema version, changing nothing (None: an empty database)."""

    def check(self) -> None:
        """DbError if the database is damaged or unreachable."""

    def columns(self, session: Session, table: str) -> set[str]: ...

    def tables(self, session: Session) -> set[str]: ...

    def close(self) -> None: ...


def open_backend(target: DbTarget, readonly: bool = False) -> Backend:
    """DbError (one line) if the database cannot be opened; `readonly`: no file is created."""
    if target.kind is DbKind.Sqlite:
        from damocles_py.manager.sql.sqlite import SqliteBackend

        return SqliteBackend(target, readonly=readonly)
    from damocles_py.manager.sql.postgres import PostgresBackend

    return PostgresBackend(target)


def iter_rows(cursor: Cursor, batch: int = 500) -> Iterator[Any]:
    while rows := cursor.fetchmany(batch):  # type: ignore[attr-defined]
        yield from rows
