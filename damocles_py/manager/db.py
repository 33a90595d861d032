"""The manager's store: sectors, deals, store reservations, status history and worker liveness.

By default one SQLite file, `<state_dir>/manager.sqlite3`, in WAL mode with full sync, so a
committed change survives a crash; or a PostgreSQL database that several managers share (see
`damocles_py.manager.sql` for the backends). Every change the manager makes goes through
`ManagerDB.transaction()`, so a multi-step change (a new sector number and its sector row; deals
and the sector they go to) is all-or-nothing, and concurrent sealing threads see each other's
changes whole. The schema is versioned (`MIGRATIONS`, the same list for both backends) and
migrated when a database is opened. Rows cross this module's boundary as the typed records
below, never as dicts or tuples.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from damocles_py.manager.sql import (
    DB_FILE_NAME,
    Backend,
    DbError,
    DbKind,
    DbTarget,
    Dialect,
    NotAManagerDb,
    Retryable,
    Session,
    open_backend,
)
from damocles_py.manager.sql.sqlite import SCHEMA_VERSION_KEY
from damocles_py.proofs import PieceInfo, SealProof

__all__ = ["DB_FILE_NAME", "DbError", "DbTarget", "Retryable"]  # re-exported for the manager and the CLI

log = logging.getLogger(__name__)

Row = Any  # a mapping of column name to value, from either backend

# Version 1 had no meta row for it; 2 added rebuild_abort_reason and deal quarantine; 3 the workers'
# admin address (dest), version and thread summary from their pings; 4 leases (periodic jobs that one
# manager of several runs at a time).
SCHEMA_VERSION = 4
_SCHEMA_VERSION_KEY = SCHEMA_VERSION_KEY


class UnknownSchema(NotAManagerDb):
    """The database was written by a newer manager (or is not a manager database)."""


@dataclass(frozen=True)
class AddColumn:
    """A column added in place (skipped where it exists: files from between versions have it)."""

    table: str
    name: str
    kind: str  # a Dialect attribute name ("integer", "blob", ...) or a literal SQL type


# The schema's history, applied in order from the version a database has; the same list for both
# backends. `{integer}`, `{real}`, `{blob}`, `{serial_key}` are the backend's types (see sql.Dialect).
MIGRATIONS: tuple[tuple[int, tuple[str | AddColumn, ...]], ...] = (
    (1, (
        """CREATE TABLE IF NOT EXISTS meta (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
        # The last sector number handed out per miner; bumped in the transaction that inserts the sector.
        """CREATE TABLE IF NOT EXISTS sector_numbers (
            miner       {integer} PRIMARY KEY,
            last_number {integer} NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS sectors (
            miner             {integer} NOT NULL,
            number            {integer} NOT NULL,
            proof             TEXT    NOT NULL,
            created_at        {real}  NOT NULL,
            holder_instance   TEXT    NOT NULL,
            holder_thread     {integer} NOT NULL,
            holder_location   TEXT    NOT NULL,
            -- the ticket last assigned (a new one replaces it after a ticket expired)
            ticket            {blob},
            ticket_epoch      {integer},
            -- the pre-commit: what was submitted, and the ticket it was sealed with
            pre_comm_r        {blob},
            pre_comm_d        {blob},
            pre_ticket        {blob},
            pre_ticket_epoch  {integer},
            pre_state         TEXT,     -- 'accepted' | 'rejected'
            pre_epoch         {integer},  -- landing epoch of an accepted pre-commit
            pre_reason        TEXT,     -- why it was rejected
            seed              {blob},
            seed_epoch        {integer},
            commit_proof      {blob},
            commit_state      TEXT,     -- 'accepted' | 'rejected'
            commit_epoch      {integer},  -- landing epoch of an accepted proof
            commit_reason     TEXT,
            store             TEXT,
            finished          {integer} NOT NULL DEFAULT 0,
            aborted           {integer} NOT NULL DEFAULT 0,
            abort_reason      TEXT,
            rebuild           TEXT,     -- NULL | 'requested' | 'taken'
            upgrade           TEXT,     -- NULL | 'upgrading' | 'upgraded'
            upgrade_comm_r    {blob},
            upgrade_comm_d    {blob},
            upgrade_proof     {blob},
            upgrade_store     TEXT,
            PRIMARY KEY (miner, number)
        )""",
        """CREATE TABLE IF NOT EXISTS deals (
            deal_id          {serial_key},
            piece_commitment {blob}    NOT NULL,
            piece_size       {integer} NOT NULL,  -- unpadded
            piece_path       TEXT    NOT NULL UNIQUE,
            payload_size     {integer} NOT NULL,
            sector_miner     {integer},           -- NULL: in the pool
            sector_number    {integer},
            for_upgrade      {integer} NOT NULL DEFAULT 0,
            position         {integer}            -- order of the piece in its sector
        )""",
        "CREATE INDEX IF NOT EXISTS deals_by_sector ON deals (sector_miner, sector_number)",
        """CREATE TABLE IF NOT EXISTS reservations (
            miner  {integer} NOT NULL,
            number {integer} NOT NULL,
            store  TEXT    NOT NULL,
            size   {integer} NOT NULL,
            PRIMARY KEY (miner, number)
        )""",
        """CREATE TABLE IF NOT EXISTS history (
            id              {serial_key},
            miner           {integer} NOT NULL,
            number          {integer} NOT NULL,
            time            {real}    NOT NULL,
            worker_instance TEXT    NOT NULL,
            worker_thread   {integer} NOT NULL,
            worker_location TEXT    NOT NULL,
            prev            TEXT    NOT NULL,
            next            TEXT    NOT NULL,
            event           TEXT    NOT NULL,
            failure_level   TEXT,
            failure_cause   TEXT,
            failure_desc    TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS history_by_sector ON history (miner, number)",
        # When each worker instance was last heard from, so a restarted manager still knows who was
        # alive and when. A ping or any call carrying the worker's WorkerRef counts.
        """CREATE TABLE IF NOT EXISTS workers (
            instance  TEXT PRIMARY KEY,
            last_seen {real} NOT NULL,
            last_ping {real}             -- NULL: it called, but never pinged
        )""",
        # The threads a worker described in its last ping (each ping replaces its rows).
        """CREATE TABLE IF NOT EXISTS worker_threads (
            instance      TEXT    NOT NULL,
            idx           {integer} NOT NULL,
            plan          TEXT    NOT NULL,
            state         TEXT    NOT NULL,
            sector_miner  {integer},           -- NULL: no sector
            sector_number {integer},
            thread_state  TEXT    NOT NULL,
            PRIMARY KEY (instance, idx)
        )""",
    )),
    (2, (
        AddColumn("sectors", "rebuild_abort_reason", "TEXT"),  # why the last rebuild was given up
        # Set when a worker found the piece's commP wrong: never handed out until the file changes
        # (its size or mtime differ from those recorded here; its commP is then computed again).
        AddColumn("deals", "quarantine", "TEXT"),
        AddColumn("deals", "quarantine_miner", "integer"),  # the sector whose abort quarantined it
        AddColumn("deals", "quarantine_number", "integer"),
        AddColumn("deals", "quarantine_size", "integer"),  # the file's size and mtime then (-1: no file)
        AddColumn("deals", "quarantine_mtime_ns", "integer"),
    )),
    (3, (
        AddColumn("workers", "dest", "TEXT"),  # its admin API (host:port) from its last ping
        AddColumn("workers", "version", "TEXT"),
        AddColumn("workers", "summary", "TEXT"),  # JSON thread counts from its last ping (WorkerSummary)
    )),
    (4, (
        # A periodic job (the pieces-dir scan) runs in whichever manager holds its lease.
        """CREATE TABLE IF NOT EXISTS leases (
            name    TEXT PRIMARY KEY,
            holder  TEXT NOT NULL,
            expires {real} NOT NULL
        )""",
    )),
)

# Every table, in an order that `db copy` can insert them in.
TABLES = ("meta", "sector_numbers", "sectors", "deals", "reservations", "history", "workers", "worker_threads",
          "leases")


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


def _worker_from_row(row: Row, threads: Sequence[ThreadSummary]) -> WorkerRecord:
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


def _sector_from_row(row: Row) -> SectorRecord:
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


def _pre_commit_from_row(row: Row) -> PreCommitRecord | None:
    if row["pre_state"] is None:
        return None
    ticket = Ticket(bytes(row["pre_ticket"]), row["pre_ticket_epoch"])
    return PreCommitRecord(
        info=PreCommitInfo(bytes(row["pre_comm_r"]), bytes(row["pre_comm_d"]), ticket),
        state=Submission(row["pre_state"]),
        landing_epoch=row["pre_epoch"],
        reject_reason=row["pre_reason"],
    )


def _commit_from_row(row: Row) -> CommitRecord | None:
    if row["commit_state"] is None:
        return None
    return CommitRecord(
        proof=bytes(row["commit_proof"]),
        state=Submission(row["commit_state"]),
        landing_epoch=row["commit_epoch"],
        reject_reason=row["commit_reason"],
    )


def _upgrade_from_row(row: Row) -> UpgradeRecord | None:
    if row["upgrade"] is None:
        return None
    return UpgradeRecord(
        state=UpgradeState(row["upgrade"]),
        comm_r=_optional(row["upgrade_comm_r"], bytes),
        comm_d=_optional(row["upgrade_comm_d"], bytes),
        proof=_optional(row["upgrade_proof"], bytes),
        store=row["upgrade_store"],
    )


def _deal_from_row(row: Row) -> Deal:
    piece = PieceInfo(bytes(row["piece_commitment"]), row["piece_size"])
    return Deal(row["deal_id"], piece, row["piece_path"], row["payload_size"])


def _deal_record_from_row(row: Row) -> DealRecord:
    sector = None if row["sector_miner"] is None else SectorId(row["sector_miner"], row["sector_number"])
    by = None if row["quarantine_miner"] is None else SectorId(row["quarantine_miner"], row["quarantine_number"])
    return DealRecord(_deal_from_row(row), sector, bool(row["for_upgrade"]), row["quarantine"], by)


def _history_from_row(row: Row) -> HistoryRow:
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


def _thread_from_row(row: Row) -> ThreadSummary:
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

    def __init__(self, session: Session, dialect: Dialect):
        self._conn = session
        self._dialect = dialect

    def _one(self, sql: str, params: Sequence = ()) -> Row | None:
        return self._conn.execute(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence = ()) -> list[Row]:
        return self._conn.execute(sql, params).fetchall()

    def _update_sector(self, sector: SectorId, assignments: str, params: Sequence) -> None:
        self._conn.execute(f"UPDATE sectors SET {assignments} WHERE {_KEY}", [*params, *_key(sector)])

    # -- meta

    def meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else row["value"]

    def set_meta(self, key: str, value: str) -> None:
        self._conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)"
                           " ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def add_meta(self, key: str, value: str) -> str:
        """Set `key` unless it is set; returns its value (the first writer's, when managers race)."""
        self._conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (key, value))
        return self.meta(key)

    def take_lease(self, name: str, holder: str, now: float, seconds: float) -> bool:
        """Hold the lease `name` for `seconds` if it is free, expired or `holder`'s already: one
        manager of several runs a periodic job at a time."""
        row = self._one(
            "INSERT INTO leases (name, holder, expires) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires"
            " WHERE leases.expires < ? OR leases.holder = excluded.holder RETURNING holder",
            (name, holder, now + seconds, now),
        )
        return row is not None

    def release_lease(self, name: str, holder: str) -> None:
        self._conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    # -- sectors

    def next_sector_number(self, miner: int) -> int:
        """Take the next number of `miner`: 1, 2, ... never the same one twice."""
        # One statement: the counter row stays locked until commit, so a concurrent manager waits for
        # it and then counts on from the committed value.
        row = self._one(
            "INSERT INTO sector_numbers (miner, last_number) VALUES (?, 1) ON CONFLICT (miner)"
            " DO UPDATE SET last_number = sector_numbers.last_number + 1 RETURNING last_number", (miner,))
        return row["last_number"]

    def insert_sector(self, sector: SectorId, proof: SealProof, holder: WorkerRef, created_at: float) -> None:
        self._conn.execute(
            "INSERT INTO sectors (miner, number, proof, created_at, holder_instance, holder_thread,"
            " holder_location) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*_key(sector), proof.name, created_at, holder.instance, holder.thread, holder.location),
        )

    def sector(self, sector: SectorId, for_update: bool = False) -> SectorRecord | None:
        """`for_update`: the row stays locked until commit (another manager changing it waits)."""
        lock = self._dialect.for_update if for_update else ""
        row = self._one(f"SELECT * FROM sectors WHERE {_KEY}{lock}", _key(sector))
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
            f"{where} ORDER BY miner, number LIMIT 1{self._dialect.skip_locked}",
            params,
        )
        return None if row is None else _sector_from_row(row)

    def first_rebuild_request(self, miners: Sequence[int] | None, proofs: Sequence[SealProof] | None,
                              stores: Sequence[str] | None) -> SectorRecord | None:
        """The lowest-numbered rebuild request whose files go to one of `stores`."""
        where, params = _allowed(miners, proofs, stores, _REBUILD_STORE)
        row = self._one(f"SELECT * FROM sectors WHERE rebuild = 'requested'{where} ORDER BY miner, number LIMIT 1"
                        f"{self._dialect.skip_locked}", params)
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
        row = self._one(
            "INSERT INTO deals (piece_commitment, piece_size, piece_path, payload_size)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (piece_path) DO NOTHING RETURNING deal_id",
            (piece.commitment, piece.size, piece_path, payload_size),
        )
        if row is None:
            return None
        return Deal(row["deal_id"], piece, piece_path, payload_size)

    def free_deals(self, excluding: Sequence[int] = ()) -> list[Deal]:
        rows = self._all("SELECT * FROM deals WHERE sector_miner IS NULL AND quarantine IS NULL ORDER BY deal_id")
        skip = set(excluding)
        return [_deal_from_row(r) for r in rows if r["deal_id"] not in skip]

    def lock_free_deals(self, deal_ids: Sequence[int]) -> set[int]:
        """Of `deal_ids`, those still free, locked until commit; a deal another transaction is
        taking is skipped, not waited for (so no deal goes to two sectors)."""
        if not deal_ids:
            return set()
        rows = self._all(
            f"SELECT deal_id FROM deals WHERE deal_id IN ({', '.join('?' * len(deal_ids))})"
            f" AND sector_miner IS NULL AND quarantine IS NULL{self._dialect.skip_locked}",
            list(deal_ids),
        )
        return {r["deal_id"] for r in rows}

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
        return int(row["total"])  # (PostgreSQL sums integers as NUMERIC)

    def reserve(self, sector: SectorId, store: str, size: int) -> None:
        self._conn.execute(
            "INSERT INTO reservations (miner, number, store, size) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (miner, number) DO UPDATE SET store = excluded.store, size = excluded.size",
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
            # a ping naming a thread index twice keeps the last, rather than failing
            self._conn.execute(
                "INSERT INTO worker_threads (instance, idx, plan, state, sector_miner, sector_number,"
                " thread_state) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (instance, idx) DO UPDATE SET"
                " plan = excluded.plan, state = excluded.state, sector_miner = excluded.sector_miner,"
                " sector_number = excluded.sector_number, thread_state = excluded.thread_state",
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


def _apply(backend: Backend, session: Session, version: int, steps: Sequence[str | AddColumn]) -> None:
    types = backend.dialect.__dict__
    for step in steps:
        if isinstance(step, AddColumn):
            if step.name not in backend.columns(session, step.table):
                kind = types.get(step.kind, step.kind)
                session.execute(f"ALTER TABLE {step.table} ADD COLUMN {step.name} {kind}")
        else:
            session.execute(step.format(**types))
    log.debug("%s: schema version %d applied", backend.target.display(), version)


def _newer(target: DbTarget, version: int) -> UnknownSchema:
    return UnknownSchema(f"{target.display()} has schema version {version}; this manager knows up to "
                         f"{SCHEMA_VERSION}. Fix: run the newer damocles-manager that wrote it")


def migrate(backend: Backend) -> tuple[int | None, int]:
    """Bring the schema to SCHEMA_VERSION in one transaction; (version found, version now).
    UnknownSchema if it is newer than this manager knows."""
    with backend.migration() as (session, version):
        if version is not None and version > SCHEMA_VERSION:
            raise _newer(backend.target, version)
        for number, steps in MIGRATIONS:
            if version is None or number > version:
                _apply(backend, session, number, steps)
        if version != SCHEMA_VERSION:
            Tx(session, backend.dialect).set_meta(_SCHEMA_VERSION_KEY, str(SCHEMA_VERSION))
    return version, SCHEMA_VERSION


def _counts(session: Session) -> tuple[int, int]:
    sectors = session.execute("SELECT COUNT(*) AS n FROM sectors").fetchone()["n"]
    deals = session.execute("SELECT COUNT(*) AS n FROM deals").fetchone()["n"]
    return sectors, deals


def inspect_db(where: Path | DbTarget) -> str:
    """What a manager start would find (`run --check`, `db check`), without changing anything.

    Raises DbError (UnknownSchema included) when a start would fail on it.
    """
    target = where if isinstance(where, DbTarget) else DbTarget.sqlite_in(where)
    if target.kind is DbKind.Sqlite and not target.path.exists():
        return f"{target.path} does not exist yet: a start creates it (schema version {SCHEMA_VERSION})"
    backend = open_backend(target, readonly=True)
    try:
        backend.check()
        version = backend.read_version()
        if target.kind is DbKind.Sqlite:
            if version is None:
                raise UnknownSchema(f"{target.path} is not a damocles manager database (no meta table). "
                                    "Fix: point --state-dir at the manager's own directory")
        else:
            if version in (None, 0):
                return (f"{target.display()} is empty: a start (or `damocles-manager db migrate`) creates the schema "
                        f"(version {SCHEMA_VERSION})")
        if version > SCHEMA_VERSION:
            raise _newer(target, version)
        with backend.transaction() as session:
            sectors, deals = _counts(session)
    finally:
        backend.close()
    upgrade = "" if version == SCHEMA_VERSION else f" (a start upgrades it to version {SCHEMA_VERSION})"
    return f"{target.display()}: schema version {version}{upgrade}, {sectors} sectors, {deals} deals"


class ManagerDB:
    """The manager's store on one backend (a SQLite file by default, or PostgreSQL): the schema is
    migrated on open; every read and write goes through `transaction()`."""

    def __init__(self, where: Path | DbTarget):
        """`where`: a state dir (its manager.sqlite3) or a DbTarget. DbError (one line) if unusable."""
        self.target = where if isinstance(where, DbTarget) else DbTarget.sqlite_in(where)
        self.path = self.target.path if self.target.kind is DbKind.Sqlite else None
        self._backend = open_backend(self.target)
        try:
            migrate(self._backend)
        except BaseException:
            self._backend.close()
            raise

    @property
    def kind(self) -> DbKind:
        return self.target.kind

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One atomic unit: committed when the block ends, rolled back if it raises. On PostgreSQL
        it may raise Retryable (a deadlock with another manager): run the whole unit again."""
        with self._backend.transaction() as session:
            yield Tx(session, self._backend.dialect)

    def close(self) -> None:
        self._backend.close()


def copy_db(source: DbTarget, dest: DbTarget) -> dict[str, int]:
    """Copy every table of a manager database into another, empty one (migrated first); the rows
    copied per table. DbError, changing nothing, if the source is not at this manager's schema
    version or the destination holds state already."""
    if source == dest:
        raise DbError(f"--from and --to are the same database ({source.display()}). Fix: name two databases")
    if source.kind is DbKind.Sqlite and not source.path.is_file():
        raise DbError(f"--from: {source.path} does not exist. Fix: name the manager's SQLite file "
                      f"(sqlite:<state-dir>/{DB_FILE_NAME})")
    src = open_backend(source, readonly=True)
    try:
        version = src.read_version()
        if version is None:
            raise NotAManagerDb(f"--from: {source.display()} is not a damocles manager database (no meta table). "
                                "Fix: name the manager's own database")
        if version != SCHEMA_VERSION:
            if version > SCHEMA_VERSION:
                raise _newer(source, version)
            raise DbError(f"--from: {source.display()} has schema version {version}, not {SCHEMA_VERSION}. Fix: "
                          f"run `damocles-manager db migrate --db {_as_arg(source)}` first")
        dst = ManagerDB(dest)
        try:
            return _copy_tables(src, dst)
        finally:
            dst.close()
    finally:
        src.close()


def _as_arg(target: DbTarget) -> str:
    return f"sqlite:{target.path}" if target.kind is DbKind.Sqlite else target.display()


def _copy_tables(src: Backend, dst: ManagerDB) -> dict[str, int]:
    copied: dict[str, int] = {}
    backend = dst._backend
    with backend.transaction() as out:
        for table in TABLES:
            row = out.execute(f"SELECT COUNT(*) AS n FROM {table}" +
                              (" WHERE key <> ?" if table == "meta" else ""),
                              (_SCHEMA_VERSION_KEY,) if table == "meta" else ()).fetchone()
            if row["n"]:
                raise DbError(f"--to: {dst.target.display()} already holds manager state ({row['n']} rows in "
                              f"{table}); nothing was copied. Fix: copy into a new, empty database")
        for table in TABLES:
            columns = sorted(backend.columns(out, table))
            with src.transaction() as session:
                rows = session.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
            if table == "meta":
                rows = [r for r in rows if r["key"] != _SCHEMA_VERSION_KEY]
            insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            for r in rows:
                out.execute(insert, tuple(r[c] for c in columns))
            copied[table] = len(rows)
        if dst.kind is DbKind.Postgres:  # auto-numbered keys continue after the copied rows
            for table, key in (("deals", "deal_id"), ("history", "id")):
                out.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{key}'),"
                            f" COALESCE((SELECT MAX({key}) FROM {table}), 0) + 1, false)")
    return copied
