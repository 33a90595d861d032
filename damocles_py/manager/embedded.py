"""The embedded sector manager: in-process, state in SQLite, a simulated chain.

It plays the parts of damocles-manager and of the chain for a single miner: it hands out sector
numbers, turns piece files into deals, draws tickets and seeds from `SimulatedChain`, checks
pre-commits and verifies proofs with the real proofs library (what the chain would do), and
tracks where sectors are persisted, which CC sectors can be snapped up, and which are rebuilt.
For a farm operator it also keeps worker liveness (pings, and calls carrying a WorkerRef; a worker
silent for `worker_timeout` is lost) and each sector's chain deadlines (`sector_debug`).

Every method runs its reads and writes in one transaction (see `db.ManagerDB`), so concurrent
sealing threads never see half a change and a crash never leaves one. Proof verification runs
inside that transaction too: it takes milliseconds, and doing it there keeps "check, then record"
atomic.

Several managers may share one PostgreSQL database (`config.db`). All state is in the database
(the chain's genesis too, so every manager computes the same epochs and randomness from the wall
clock); what a call checks and then changes is locked first (the sector row, the worker row, the
deals and candidates it takes: see `Tx`), and a call that meets a deadlock with another manager
runs again whole (`_retrying`). Nothing runs per manager that must run once: worker liveness and
chain deadlines are computed from the database when asked (a final deadline aborts a sector in
the transaction of the report that finds it passed), and the pieces-dir scan runs in whichever
manager holds its lease.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import socket
import shutil
import struct
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from damocles_py import proofs
from damocles_py.config.schema import EmbeddedManagerConfig
from damocles_py.fsm.failure import FailureCause
from damocles_py.manager.chain import Clock, SimulatedChain
from damocles_py.manager.db import (
    CommitRecord,
    DealRecord,
    HeldJob,
    HistoryRow,
    DbTarget,
    ManagerDB,
    PreCommitRecord,
    Retryable,
    RebuildState,
    ReservationRecord,
    SectorRecord,
    Submission,
    Tx,
    UpgradeRecord,
    UpgradeState,
    WorkerRecord,
)
from damocles_py.manager.interface import (
    MAX_NAME_CHARS,
    REASON_FINAL_DEADLINE,
    REASON_SEED_EXPIRED,
    REASON_TICKET_EXPIRED,
    AcquireDealsSpec,
    AllocatedSector,
    AllocateSpec,
    Deadline,
    DeadlineKind,
    Deal,
    ManagerRequestError,
    ManagerUnavailable,
    NotTheHolder,
    OnChainState,
    OnChainStatus,
    PreCommitInfo,
    RebuildJob,
    SectorDebug,
    SectorId,
    SectorStateResp,
    Seed,
    SeedWait,
    SnapUpCandidate,
    SnapUpProofInfo,
    StateReport,
    StoreInfo,
    SubmitResponse,
    SubmitResult,
    Ticket,
    WorkerPing,
    WorkerRef,
    WorkerStatus,
    bounded_text,
)
from damocles_py.proofs import PieceInfo, SealProof

log = logging.getLogger(__name__)

_GENESIS_KEY = "genesis"

# How often the pieces dir is scanned for new files in the background (commP is computed there,
# never inside a worker's call); a worker asking for deals also wakes the scanner at once.
PIECE_SCAN_INTERVAL = 10.0
_SCAN_LEASE = "piece-scan"

# How often a call that met a deadlock with another manager is run again.
_ATTEMPTS = 5


def _retrying(method: Callable) -> Callable:
    """Run a call again when its transaction was rolled back by a deadlock or serialization
    failure with another manager (PostgreSQL): nothing of it was kept, so running it again is safe."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return method(self, *args, **kwargs)
            except Retryable as e:
                if attempt == _ATTEMPTS:
                    raise ManagerUnavailable(f"the database stayed busy ({e}); try again") from e
                time.sleep(0.01 * attempt)
    return run


def db_target(config: EmbeddedManagerConfig) -> DbTarget:
    """`config.db` (validated when the config was read), else the SQLite file in the state dir."""
    from damocles_py.manager.sql import parse_db

    return parse_db(config.db) if config.db else DbTarget.sqlite_in(Path(config.state_dir))


def sector_entropy(sector: SectorId) -> bytes:
    """What ties a ticket or seed to one sector (the chain mixes in the miner and number)."""
    return struct.pack(">QQ", sector.miner, sector.number)


def sector_file_name(sector: SectorId) -> str:
    return f"s-t0{sector.miner}-{sector.number}"


def persisted_files(store_root: Path, sector: SectorId, is_upgrade: bool) -> tuple[Path, Path]:
    """(replica file, cache dir) of a sector in a store; same layout as damocles-worker."""
    replica_dir, cache_dir = ("update", "update-cache") if is_upgrade else ("sealed", "cache")
    name = sector_file_name(sector)
    return store_root / replica_dir / name, store_root / cache_dir / name


def choose_deals(free: Sequence[Deal], sector_size: int, spec: AcquireDealsSpec) -> list[Deal]:
    """Deals (oldest first) that fit one sector together, in the order to add them.

    Pieces are powers of two; added largest first, each starts aligned right after the one
    before, so no padding is needed between them and "sum of padded sizes <= sector size" is
    exactly the condition for them to fit.
    """
    chosen: list[Deal] = []
    used = 0
    for deal in free:
        if spec.max_deals is not None and len(chosen) >= spec.max_deals:
            break
        if used + deal.piece.padded_size <= sector_size:
            chosen.append(deal)
            used += deal.piece.padded_size
    if spec.min_used_space is not None and used < spec.min_used_space:
        return []
    return sorted(chosen, key=lambda d: -d.piece.padded_size)


def _take_deals(tx: Tx, sector_size: int, spec: AcquireDealsSpec) -> list[Deal]:
    """`choose_deals` of the free deals, locked for this transaction. A deal another manager is
    taking at this moment is left to it, and the choice made again without it."""
    skipped: list[int] = []
    while True:  # each round leaves out at least one more deal: it ends
        chosen = choose_deals(tx.free_deals(excluding=skipped), sector_size, spec)
        locked = tx.lock_free_deals([d.deal_id for d in chosen])
        if len(locked) == len(chosen):
            return chosen
        skipped += [d.deal_id for d in chosen if d.deal_id not in locked]


def sector_pieces(proof: SealProof, deals: Sequence[Deal]) -> list[PieceInfo]:
    """The pieces a sector commits to: its deals, then zeros to the end (all zeros for CC).

    comm_d is the root over the whole sector. `compute_comm_d` of the deals alone only covers the
    smallest power of two that holds them, so the zero fill must be in the list (PC1 checks it).
    """
    return proofs.fill_pieces(proof, [d.piece for d in deals])


def sector_deadlines(record: SectorRecord, config: EmbeddedManagerConfig, epoch: int) -> tuple[Deadline, ...]:
    """The chain deadlines a sector in progress still has to meet (none once finished or aborted)."""
    if record.finished or record.aborted:
        return ()
    deadlines = (_ticket_deadline(record, config), _pre_commit_deadline(record, config))
    return tuple(
        Deadline(kind, start, window, passed=epoch > start + window)
        for kind, start, window in (d for d in deadlines if d is not None)
    )


def _ticket_deadline(record: SectorRecord, config: EmbeddedManagerConfig) -> tuple[DeadlineKind, int, int] | None:
    """The assigned ticket must be pre-committed in time; moot once a pre-commit is accepted."""
    pre_commit = record.pre_commit
    if record.ticket is None or (pre_commit is not None and pre_commit.state is Submission.Accepted):
        return None
    return DeadlineKind.TicketExpiry, record.ticket.epoch, config.ticket_expiry_epochs


def _pre_commit_deadline(record: SectorRecord, config: EmbeddedManagerConfig) -> tuple[DeadlineKind, int, int] | None:
    """An accepted pre-commit expires unless a proof is accepted within the seed's validity."""
    pre_commit, commit = record.pre_commit, record.commit
    if pre_commit is None or pre_commit.state is not Submission.Accepted:
        return None
    if commit is not None and commit.state is Submission.Accepted:
        return None
    # The seed's epoch is fixed by the landing, whether or not the worker asked for the seed yet.
    seed_epoch = record.seed.epoch if record.seed else pre_commit.landing_epoch + config.pre_commit_delay_epochs
    return DeadlineKind.PreCommitExpiry, seed_epoch, config.seed_expiry_epochs


def _holds(record: SectorRecord, worker: WorkerRef) -> bool:
    return (record.holder.instance, record.holder.thread) == (worker.instance, worker.thread)


def _not_holder(record: SectorRecord, worker: WorkerRef) -> str:
    return (f"sector {record.id} is held by worker {record.holder.instance} thread {record.holder.thread}, "
            f"not by {worker.instance} thread {worker.thread}")


def _report_refusal(sector: SectorId, record: SectorRecord | None, worker: WorkerRef) -> str | None:
    """Why a state report is refused: an unknown sector, or one another worker thread holds."""
    if record is None:
        return f"unknown sector {sector}"
    return None if _holds(record, worker) else _not_holder(record, worker)


def _rebuild_given_up(record: SectorRecord) -> bool:
    """A finished (never upgraded) sector whose last rebuild was given up: its holder is the
    rebuild thread, whose reports must now be told to stop."""
    return (record.finished and record.rebuild is None and record.upgrade is None
            and record.rebuild_abort_reason is not None)


def _bounded_report(report: StateReport) -> StateReport:
    """A state report whose free text is safe to store and print (see `bounded_text`)."""
    def text(value: str | None) -> str | None:
        return None if value is None else bounded_text(value)

    return StateReport(report.worker, text(report.prev), text(report.next), text(report.event),
                       text(report.failure_level), text(report.failure_cause), text(report.failure_desc))


# How a PieceCommitmentMismatch names the deal at fault ("deal 3: piece ... has commP ...").
_DEAL_IN_REASON = re.compile(r"\bdeal (\d+)\b")


def _file_stamp(path: str) -> tuple[int, int]:
    """(size, mtime_ns) of a piece file, (-1, -1) if it cannot be read: what a change is seen by."""
    try:
        st = Path(path).stat()
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def _allows(spec: AllocateSpec, miner: int, proof: SealProof) -> bool:
    miner_ok = spec.allowed_miners is None or miner in spec.allowed_miners
    proof_ok = spec.allowed_proofs is None or proof in spec.allowed_proofs
    return miner_ok and proof_ok


def _rejected(desc: str) -> SubmitResponse:
    return SubmitResponse(SubmitResult.Rejected, desc)


_ACCEPTED = SubmitResponse(SubmitResult.Accepted)
_DUPLICATE = SubmitResponse(SubmitResult.DuplicateSubmit)


def _answer_resubmission(accepted: object | None, submitted: object, reset: bool, what: str,
                         sector: SectorId) -> SubmitResponse | None:
    """The answer when something was already accepted for the sector; None: go on and check it."""
    if accepted is None:
        return None
    if accepted == submitted:
        return _DUPLICATE
    if reset:
        return None  # replace it
    return SubmitResponse(
        SubmitResult.MismatchedSubmission,
        f"sector {sector} already has a different accepted {what}; submit with reset to replace it",
    )


def _on_chain_status(state: Submission, landing_epoch: int | None, reason: str | None,
                     epoch: int) -> OnChainStatus:
    if state is Submission.Rejected:
        return OnChainStatus(OnChainState.Failed, reason or "")
    if landing_epoch is None or epoch < landing_epoch:
        return OnChainStatus(OnChainState.Pending)
    return OnChainStatus(OnChainState.Landed)


class EmbeddedManager:
    """A `SectorManager` for one miner (`config.miner`), sealing `config.seal_proof` sectors."""

    def __init__(self, config: EmbeddedManagerConfig, stores: list[StoreInfo], clock: Clock = time.time,
                 piece_scan_interval: float | None = PIECE_SCAN_INTERVAL, initial_scan: bool = True):
        """`initial_scan`: import the pieces dir before returning (at start, never in a call);
        `piece_scan_interval` None: no background scanner (`import_pieces` is then the only way)."""
        self.config = config
        self.miner = config.miner
        self.seal_proof = config.seal_proof
        self._stores = {s.name: s for s in stores}
        self._clock = clock
        self._db = ManagerDB(db_target(config))
        self.chain = SimulatedChain(self._genesis(), config.block_time, clock)
        self._scan_lock = threading.Lock()  # one pieces-dir scan at a time here: commP once per file
        self._name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # holder of leases
        self._warned_pieces: set[str] = set()
        self._stopping = threading.Event()
        self._wake_scanner = threading.Event()
        self._scanner: threading.Thread | None = None
        if config.pieces_dir is not None:
            if initial_scan:
                self._register_new_pieces()
            if piece_scan_interval is not None:
                self._scanner = threading.Thread(target=self._scan_loop, args=(piece_scan_interval,),
                                                 name="piece-scanner", daemon=True)
                self._scanner.start()

    def _genesis(self) -> float:
        """Genesis is the first start of any manager on the database; persisted so epochs keep
        counting across restarts, and every manager sharing the database counts the same."""
        with self._db.transaction() as tx:
            return float(tx.add_meta(_GENESIS_KEY, repr(self._clock())))

    def close(self) -> None:
        self._stopping.set()
        self._wake_scanner.set()
        if self._scanner is not None:
            self._scanner.join(timeout=30)  # a scan stops between files
            try:  # another manager takes the scan over at once, not when the lease expires
                with self._db.transaction() as tx:
                    tx.release_lease(_SCAN_LEASE, self._name)
            except Exception as e:  # noqa: BLE001 - closing anyway; the lease expires by itself
                log.debug("releasing the scan lease failed: %s", e)
        self._db.close()

    def _scan_loop(self, interval: float) -> None:
        while not self._stopping.is_set():
            try:
                if self._take_lease(_SCAN_LEASE, 3 * interval + 60):  # (one scan of several managers)
                    self._register_new_pieces()
                    self.recheck_quarantined_deals()
            except Exception:  # noqa: BLE001 - the scanner must outlive a bad file or a busy disk
                if self._stopping.is_set():
                    return
                log.exception("scanning the pieces dir failed; trying again in %.0fs", interval)
            self._wake_scanner.wait(interval)
            self._wake_scanner.clear()

    @property
    def db_target(self) -> DbTarget:
        return self._db.target

    def _take_lease(self, name: str, seconds: float) -> bool:
        with self._db.transaction() as tx:
            return tx.take_lease(name, self._name, self._clock(), seconds)

    # -----------------------------------------------------------------------------------------
    # read APIs (debugging, tests, the CLI)

    def sector(self, sector_id: SectorId) -> SectorRecord | None:
        with self._db.transaction() as tx:
            return tx.sector(sector_id)

    def sectors(self) -> list[SectorRecord]:
        with self._db.transaction() as tx:
            return tx.sectors()

    def history(self, sector_id: SectorId) -> list[HistoryRow]:
        with self._db.transaction() as tx:
            return tx.history(sector_id)

    def deals(self) -> list[DealRecord]:
        """Deals known so far (the pieces dir is scanned when deals are handed out, not here)."""
        with self._db.transaction() as tx:
            return tx.deals()

    def reservations(self) -> list[ReservationRecord]:
        with self._db.transaction() as tx:
            return tx.reservations()

    def workers(self) -> list[WorkerStatus]:
        """Every worker instance heard from, or holding a sector in progress, and whether it is lost."""
        now = self._clock()
        with self._db.transaction() as tx:
            records = {w.instance: w for w in tx.workers()}
            held = tx.sectors_in_progress_by_holder()
        return [self._worker_status(instance, records.get(instance), held.get(instance, []), now)
                for instance in sorted(records.keys() | held.keys())]

    def _worker_status(self, instance: str, record: WorkerRecord | None, sectors: Sequence[SectorId],
                       now: float) -> WorkerStatus:
        if record is None:  # holds sectors, but never heard from since liveness is recorded
            return WorkerStatus(instance, None, True, tuple(sectors))
        silent_for = now - record.last_seen
        return WorkerStatus(instance, record.last_seen, silent_for > self.config.worker_timeout, tuple(sectors),
                            silent_for, record.last_ping, record.threads, record.dest, record.version,
                            record.summary)

    def sector_debug(self, sector_id: SectorId) -> SectorDebug | None:
        """A sector's record, history, chain deadlines and holder liveness; None if unknown."""
        now = self._clock()
        with self._db.transaction() as tx:
            record = tx.sector(sector_id)
            if record is None:
                return None
            history = tx.history(sector_id)
            deals = tuple(tx.deals_about(sector_id))
            worker = tx.worker(record.holder.instance)
            held = tx.sectors_in_progress_by_holder().get(record.holder.instance, [])
        epoch = self.chain.epoch()
        holder = self._worker_status(record.holder.instance, worker, held, now)
        thread = next((t for t in holder.threads if t.index == record.holder.thread), None)
        return SectorDebug(record, tuple(history), epoch, sector_deadlines(record, self.config, epoch), holder, thread,
                           deals)

    # -----------------------------------------------------------------------------------------
    # helpers

    @staticmethod
    def _require(tx: Tx, sector_id: SectorId) -> SectorRecord:
        """The sector, locked until the transaction ends (another manager's call on it waits)."""
        record = tx.sector(sector_id, for_update=True)
        if record is None:
            raise ManagerRequestError(f"unknown sector {sector_id}")
        return record

    @staticmethod
    def _require_active(tx: Tx, sector_id: SectorId) -> SectorRecord:
        """A known sector that was not aborted (nothing more may be submitted for an aborted one)."""
        record = EmbeddedManager._require(tx, sector_id)
        if record.aborted:
            raise ManagerRequestError(f"sector {sector_id} was aborted: {record.abort_reason}")
        return record

    def import_pieces(self) -> list[Deal]:
        """Operator action: turn new files in the pieces dir into deals now; returns the new deals.

        (Deals are otherwise imported by the background scanner, every `piece_scan_interval`.)"""
        before = {r.deal.deal_id for r in self.deals()}
        self._register_new_pieces()
        return [r.deal for r in self.deals() if r.deal.deal_id not in before]

    def _register_new_pieces(self) -> None:
        """Turn each new regular file of the pieces dir into a deal (its commP computed here)."""
        if self.config.pieces_dir is None:
            return
        pieces_dir = Path(self.config.pieces_dir).absolute()  # deals carry paths workers open as-is
        with self._scan_lock:
            if not pieces_dir.is_dir():
                self._warn_once(str(pieces_dir), "pieces dir %s does not exist; no deals until it does", pieces_dir)
                return
            with self._db.transaction() as tx:
                known = tx.known_piece_paths()
            for path in sorted(pieces_dir.iterdir()):
                if self._stopping.is_set():
                    return
                # Dot files are skipped: the usual way to write a file and rename it in when complete.
                if path.name.startswith(".") or not path.is_file() or str(path) in known:
                    continue
                self._register_piece(path)

    def _register_piece(self, path: Path) -> None:
        try:
            payload_size = path.stat().st_size
        except OSError as e:  # removed or unreadable since the listing: the next scan sees it again
            self._warn_once(str(path), "piece %s skipped: %s", path, e)
            return
        capacity = self.seal_proof.sector_size.unpadded
        if payload_size > capacity:
            self._warn_once(str(path), "piece %s (%d bytes) does not fit a %s sector (%d bytes); skipped",
                            path, payload_size, self.seal_proof.sector_size, capacity)
            return
        try:
            piece = proofs.piece_commitment(self.seal_proof, path)
        except (proofs.InvalidInput, proofs.ProofsError) as e:
            self._warn_once(str(path), "piece %s skipped: %s", path, e)
            return
        with self._db.transaction() as tx:
            deal = tx.add_deal(str(path), piece, payload_size)
        if deal is not None:
            log.info("deal %d: piece %s (%d bytes, commP %s)", deal.deal_id, path, payload_size,
                     piece.commitment.hex())

    def recheck_quarantined_deals(self) -> list[Deal]:
        """Free each quarantined deal whose piece file changed, with its commP computed again.

        Run by the background scanner; returns the deals freed."""
        with self._db.transaction() as tx:
            quarantined = tx.quarantined_deals()
        freed = []
        for q in quarantined:
            path = q.deal.piece_path
            stamp = _file_stamp(path)
            if stamp == (q.size, q.mtime_ns) or stamp == (-1, -1) or stamp[0] > self.seal_proof.sector_size.unpadded:
                continue  # unchanged, gone, or too big: it stays out of the pool
            try:
                piece = proofs.piece_commitment(self.seal_proof, path)
            except (proofs.InvalidInput, proofs.ProofsError, OSError) as e:
                self._warn_once(f"quarantine:{path}:{stamp}", "quarantined deal %d: %s", q.deal.deal_id, e)
                continue
            with self._db.transaction() as tx:
                tx.release_quarantine(q.deal.deal_id, piece, stamp[0])
            log.info("deal %d: piece %s changed (commP now %s): out of quarantine, back in the pool",
                     q.deal.deal_id, path, piece.commitment.hex())
            freed.append(Deal(q.deal.deal_id, piece, path, stamp[0]))
        return freed

    def _warn_once(self, key: str, message: str, *args) -> None:
        if key not in self._warned_pieces:
            self._warned_pieces.add(key)
            log.warning(message, *args)

    # -----------------------------------------------------------------------------------------
    # sealing

    @_retrying
    def allocate_sector(self, spec: AllocateSpec, worker: WorkerRef) -> AllocatedSector | None:
        now = self._clock()
        with self._db.transaction() as tx:
            tx.touch_worker(worker.instance, now)  # asking for work is a sign of life
            held = tx.held_by(worker, HeldJob.Seal)
            if held is not None:  # its earlier answer was lost: the same sector again
                log.info("sector %s handed again to %s/%d, which holds it", held.id, worker.instance, worker.thread)
                return AllocatedSector(held.id, held.proof)
            if not _allows(spec, self.miner, self.seal_proof):
                return None
            sector_id = SectorId(self.miner, tx.next_sector_number(self.miner))
            tx.insert_sector(sector_id, self.seal_proof, worker, now)
        log.info("allocated sector %s to %s/%d", sector_id, worker.instance, worker.thread)
        return AllocatedSector(sector_id, self.seal_proof)

    @_retrying
    def acquire_deals(self, sector: SectorId, spec: AcquireDealsSpec) -> list[Deal]:
        self._wake_scanner.set()  # new files become deals soon; this call never waits for commP
        with self._db.transaction() as tx:
            record = self._require_active(tx, sector)
            assigned = tx.deals_of(sector, for_upgrade=False)
            if assigned or record.pre_commit is not None:
                return assigned  # asked again (e.g. after a restart): the same answer
            chosen = _take_deals(tx, record.proof.sector_size, spec)
            tx.assign_deals(sector, chosen, for_upgrade=False)
            return chosen

    @_retrying
    def assign_ticket(self, sector: SectorId) -> Ticket:
        with self._db.transaction() as tx:
            self._require_active(tx, sector)
            epoch = self.chain.epoch()
            ticket = Ticket(self.chain.randomness("ticket", epoch, sector_entropy(sector)), epoch)
            tx.set_ticket(sector, ticket)
            return ticket

    @_retrying
    def submit_pre_commit(self, sector: AllocatedSector, info: PreCommitInfo, reset: bool) -> SubmitResponse:
        with self._db.transaction() as tx:
            record = self._require_active(tx, sector.id)
            if sector.proof is not record.proof:
                raise ManagerRequestError(
                    f"sector {sector.id} is a {record.proof.name} sector, not {sector.proof.name}")
            previous = record.pre_commit
            accepted = previous.info if previous and previous.state is Submission.Accepted else None
            answer = _answer_resubmission(accepted, info, reset, "pre-commit", sector.id)
            if answer is not None:
                return answer
            problem = self._pre_commit_problem(tx, record, info)
            if problem is not None:
                tx.set_pre_commit(sector.id, PreCommitRecord(info, Submission.Rejected, None, problem))
                return _rejected(problem)
            landing = self.chain.epoch() + 1
            tx.set_pre_commit(sector.id, PreCommitRecord(info, Submission.Accepted, landing, None))
            return _ACCEPTED

    def _pre_commit_problem(self, tx: Tx, record: SectorRecord, info: PreCommitInfo) -> str | None:
        """Why the chain would refuse this pre-commit, or None."""
        if record.ticket is None or info.ticket != record.ticket:
            return f"ticket at epoch {info.ticket.epoch} is not the ticket assigned to sector {record.id}"
        age = self.chain.epoch() - info.ticket.epoch
        if age > self.config.ticket_expiry_epochs:
            return (f"{REASON_TICKET_EXPIRED}: it is {age} epochs old, more than {self.config.ticket_expiry_epochs}; "
                    "get a new ticket and seal again")
        if len(info.comm_r) != 32:
            return f"comm_r must be 32 bytes, got {len(info.comm_r)}"
        expected = proofs.compute_comm_d(record.proof, sector_pieces(record.proof, tx.deals_of(record.id, False)))
        if info.comm_d != expected:
            return f"comm_d {info.comm_d.hex()} does not match the sector's pieces (expected {expected.hex()})"
        return None

    @_retrying
    def poll_pre_commit_state(self, sector: SectorId) -> OnChainStatus:
        with self._db.transaction() as tx:
            pre_commit = self._require(tx, sector).pre_commit
        if pre_commit is None:
            return OnChainStatus(OnChainState.NotFound)
        return _on_chain_status(pre_commit.state, pre_commit.landing_epoch, pre_commit.reject_reason,
                                self.chain.epoch())

    @_retrying
    def reserve_store(self, sector: SectorId, size: int, candidates: list[str]) -> str | None:
        with self._db.transaction() as tx:
            self._require(tx, sector)
            best: tuple[int, str] | None = None  # (available bytes, store name)
            for name in dict.fromkeys(candidates):
                available = self._available_space(tx, name, sector)
                if available is not None and available >= size and (best is None or available > best[0]):
                    best = (available, name)
            if best is None:
                return None
            tx.reserve(sector, best[1], size)
            return best[1]

    def _available_space(self, tx: Tx, store_name: str, sector: SectorId) -> int | None:
        """Free bytes of a writable registered store, less what other sectors reserved there."""
        store = self._stores.get(store_name)
        if store is None or store.readonly:
            return None
        try:
            free = shutil.disk_usage(store.path).free
        except OSError as e:
            log.warning("store %s (%s) is unusable: %s", store.name, store.path, e)
            return None
        return free - tx.reserved_on(store_name, excluding=sector)

    @_retrying
    def submit_persisted(self, sector: SectorId, store: str, is_upgrade: bool) -> bool:
        with self._db.transaction() as tx:
            self._require(tx, sector)
            missing = self._missing_files(store, sector, is_upgrade)
            if missing is not None:
                log.warning("sector %s: %s", sector, missing)
                return False
            if is_upgrade:
                tx.set_upgrade_store(sector, store)
            else:
                tx.set_store(sector, store)
            return True

    def _missing_files(self, store_name: str, sector: SectorId, is_upgrade: bool) -> str | None:
        """What is missing of a sector's persisted files in a store, or None if they are there."""
        store = self._stores.get(store_name)
        if store is None:
            return f"unknown store {store_name!r}"
        replica, cache = persisted_files(Path(store.path), sector, is_upgrade)
        if not replica.is_file():
            return f"{replica} is missing in store {store_name}"
        if not (cache / "p_aux").is_file():
            return f"{cache / 'p_aux'} is missing in store {store_name}"
        return None

    @_retrying
    def wait_seed(self, allocated: AllocatedSector) -> SeedWait:
        sector = allocated.id
        with self._db.transaction() as tx:
            record = self._require_active(tx, sector)
            if allocated.proof is not record.proof:
                raise ManagerRequestError(f"sector {sector} is sealed with {record.proof.name}, "
                                          f"not {allocated.proof.name}")
            landed = self._landed_pre_commit(record)
            seed_epoch = landed.landing_epoch + self.config.pre_commit_delay_epochs
            if self.chain.epoch() < seed_epoch:
                return SeedWait(None, self.chain.seconds_until(seed_epoch))
            seed = Seed(self.chain.randomness("seed", seed_epoch, sector_entropy(sector)), seed_epoch)
            tx.set_seed(sector, seed)
            return SeedWait(seed)

    def _landed_pre_commit(self, record: SectorRecord) -> PreCommitRecord:
        pre_commit = record.pre_commit
        landed = (pre_commit is not None and pre_commit.state is Submission.Accepted
                  and self.chain.epoch() >= pre_commit.landing_epoch)
        if not landed:
            raise ManagerRequestError(f"sector {record.id} has no landed pre-commit; wait until it lands")
        return pre_commit

    @_retrying
    def submit_proof(self, sector: SectorId, proof: bytes, reset: bool) -> SubmitResponse:
        with self._db.transaction() as tx:
            record = self._require_active(tx, sector)
            if record.seed is None:
                raise ManagerRequestError(f"sector {sector} has no seed yet; call wait_seed until it returns one")
            previous = record.commit
            accepted = previous.proof if previous and previous.state is Submission.Accepted else None
            answer = _answer_resubmission(accepted, bytes(proof), reset, "proof", sector)
            if answer is not None:
                return answer
        # Verified outside any transaction: it takes milliseconds (more for big sectors), during which
        # a SQLite transaction would hold every other call (benches/bench_manager_load.py). The
        # decision is taken on the record read again; if what the proof is checked against changed
        # meanwhile, the whole call runs again.
        problem = self._seal_proof_problem(record, proof)
        with self._db.transaction() as tx:
            now = self._require_active(tx, sector)
            if (now.seed, now.pre_commit, now.commit) != (record.seed, record.pre_commit, record.commit):
                raise Retryable(f"sector {sector} changed while its proof was checked")
            if problem is not None:
                tx.set_commit(sector, CommitRecord(proof, Submission.Rejected, None, problem))
                return _rejected(problem)
            tx.set_commit(sector, CommitRecord(proof, Submission.Accepted, self.chain.epoch() + 1, None))
            return _ACCEPTED

    def _seal_proof_problem(self, record: SectorRecord, proof: bytes) -> str | None:
        """Why the chain would refuse this seal proof, or None."""
        seed = record.seed
        age = self.chain.epoch() - seed.epoch
        if age > self.config.seed_expiry_epochs:
            return (f"{REASON_SEED_EXPIRED}: it is {age} epochs old, more than {self.config.seed_expiry_epochs}; "
                    "the sector must be sealed again")
        pre_commit = record.pre_commit.info
        try:
            valid = proofs.verify_seal(
                record.proof, pre_commit.comm_r, pre_commit.comm_d, proofs.prover_id_from_miner(record.id.miner),
                record.id.number, pre_commit.ticket.value, seed.value, bytes(proof),
            )
        except proofs.ParametersMissing as e:
            raise ManagerUnavailable(str(e)) from e  # the manager's setup, not the worker's proof
        except (proofs.InvalidInput, proofs.ProofsError) as e:
            return f"malformed proof: {e}"
        if not valid:
            return "proof does not verify against the sector's commitments, ticket and seed"
        return None

    @_retrying
    def poll_proof_state(self, sector: SectorId) -> OnChainStatus:
        with self._db.transaction() as tx:
            commit = self._require(tx, sector).commit
        if commit is None:
            return OnChainStatus(OnChainState.NotFound)
        return _on_chain_status(commit.state, commit.landing_epoch, commit.reject_reason, self.chain.epoch())

    # -----------------------------------------------------------------------------------------
    # snap-up

    @_retrying
    def allocate_snapup_sector(self, spec: AllocateSpec, deals: AcquireDealsSpec,
                               worker: WorkerRef) -> SnapUpCandidate | None:
        self._wake_scanner.set()
        with self._db.transaction() as tx:
            tx.touch_worker(worker.instance, self._clock())
            held = tx.held_by(worker, HeldJob.Upgrade)
            if held is not None:  # its earlier answer was lost: the same candidate, the same deals
                log.info("snap-up of %s handed again to %s/%d", held.id, worker.instance, worker.thread)
                return SnapUpCandidate(AllocatedSector(held.id, held.proof),
                                       tuple(tx.deals_of(held.id, for_upgrade=True)),
                                       held.pre_commit.info.comm_r, held.store)
            record = tx.first_snapup_candidate(spec.allowed_miners, spec.allowed_proofs, spec.allowed_stores)
            if record is None:
                return None
            chosen = _take_deals(tx, record.proof.sector_size, deals)
            if not chosen:
                return None
            tx.assign_deals(record.id, chosen, for_upgrade=True)
            tx.set_upgrade(record.id, UpgradeRecord(UpgradeState.Upgrading))
            tx.set_holder(record.id, worker)
        log.info("sector %s: snap-up with deals %s by %s/%d", record.id, [d.deal_id for d in chosen],
                 worker.instance, worker.thread)
        sector = AllocatedSector(record.id, record.proof)
        return SnapUpCandidate(sector, tuple(chosen), record.pre_commit.info.comm_r, record.store)

    @_retrying
    def submit_snapup_proof(self, sector: SectorId, info: SnapUpProofInfo) -> SubmitResponse:
        with self._db.transaction() as tx:
            record = self._require_active(tx, sector)
            upgrade = record.upgrade
            if upgrade is None:
                return _rejected(f"sector {sector} is not being upgraded")
            if upgrade.state is UpgradeState.Upgraded:
                accepted = (upgrade.comm_r, upgrade.comm_d, upgrade.proof)
                submitted = (info.comm_r_new, info.comm_d_new, info.proof)
                # no reset for upgrades: an accepted update is final
                return _answer_resubmission(accepted, submitted, False, "update proof", sector)
            problem = self._snap_proof_problem(tx, record, info)
            if problem is not None:
                return _rejected(problem)  # still upgrading: the thread may fix it and submit again
            if info.store not in self._stores:
                return _rejected(f"unknown store {info.store!r}")
            missing = self._missing_files(info.store, sector, is_upgrade=True)
            if missing is not None:
                return SubmitResponse(SubmitResult.FilesMissed, missing)  # the thread persists them again
            tx.set_upgrade(sector, UpgradeRecord(UpgradeState.Upgraded, info.comm_r_new, info.comm_d_new,
                                                 info.proof, info.store))
            return _ACCEPTED

    def _snap_proof_problem(self, tx: Tx, record: SectorRecord, info: SnapUpProofInfo) -> str | None:
        deals = tx.deals_of(record.id, True)
        pieces = tuple(d.piece.commitment for d in deals)
        if tuple(info.pieces) != pieces:
            return (f"the pieces {[p.hex() for p in info.pieces]} are not the upgrade's deals' pieces "
                    f"{[p.hex() for p in pieces]}")
        expected = proofs.compute_comm_d(record.proof, sector_pieces(record.proof, deals))
        if info.comm_d_new != expected:
            return f"comm_d_new {info.comm_d_new.hex()} does not match the upgrade's deals (expected {expected.hex()})"
        comm_r_old = record.pre_commit.info.comm_r
        try:
            valid = proofs.snap_verify(record.proof.update_proof, info.proof, comm_r_old, info.comm_r_new,
                                       info.comm_d_new)
        except proofs.ParametersMissing as e:
            raise ManagerUnavailable(str(e)) from e
        except (proofs.InvalidInput, proofs.ProofsError) as e:
            return f"malformed update proof: {e}"
        if not valid:
            return "update proof does not verify against comm_r_old, comm_r_new and comm_d_new"
        return None

    # -----------------------------------------------------------------------------------------
    # rebuild

    @_retrying
    def request_rebuild(self, sector_id: SectorId) -> None:
        """Operator action: have a rebuild thread re-create a finished sector's files."""
        with self._db.transaction() as tx:
            record = self._require(tx, sector_id)
            if not record.finished or record.aborted or record.store is None:
                raise ManagerRequestError(
                    f"sector {sector_id} is not a finished, persisted sector; nothing to rebuild")
            if record.upgrade is not None and record.upgrade.state is UpgradeState.Upgrading:
                raise ManagerRequestError(f"sector {sector_id} is being upgraded; rebuild it after the upgrade")
            if record.rebuild is None:
                tx.set_rebuild(sector_id, RebuildState.Requested)

    @_retrying
    def allocate_rebuild_sector(self, spec: AllocateSpec, worker: WorkerRef) -> RebuildJob | None:
        with self._db.transaction() as tx:
            tx.touch_worker(worker.instance, self._clock())
            held = tx.held_by(worker, HeldJob.Rebuild)
            if held is not None:  # its earlier answer was lost: the same job
                log.info("rebuild of %s handed again to %s/%d", held.id, worker.instance, worker.thread)
                return self._rebuild_job(tx, held)
            record = tx.first_rebuild_request(spec.allowed_miners, spec.allowed_proofs, spec.allowed_stores)
            if record is None:
                return None
            tx.set_rebuild(record.id, RebuildState.Taken)
            tx.set_holder(record.id, worker)
            return self._rebuild_job(tx, record)

    @staticmethod
    def _rebuild_job(tx: Tx, record: SectorRecord) -> RebuildJob:
        pre_commit = record.pre_commit.info
        upgrade = record.upgrade
        upgraded = upgrade is not None and upgrade.state is UpgradeState.Upgraded
        return RebuildJob(
            sector=AllocatedSector(record.id, record.proof),
            ticket=pre_commit.ticket,
            deals=tuple(tx.deals_of(record.id, for_upgrade=False)),
            comm_r=pre_commit.comm_r,
            comm_d=pre_commit.comm_d,
            # an upgraded sector's live files are the update's
            store=(upgrade.store or record.store) if upgraded else record.store,
            upgrade_deals=tuple(tx.deals_of(record.id, for_upgrade=True)) if upgraded else (),
            upgrade_comm_r=upgrade.comm_r if upgraded else None,
            upgrade_comm_d=upgrade.comm_d if upgraded else None,
        )

    # -----------------------------------------------------------------------------------------
    # reports and operator actions

    @_retrying
    def report_state(self, sector: SectorId, report: StateReport) -> SectorStateResp:
        report = _bounded_report(report)
        now = self._clock()
        with self._db.transaction() as tx:
            record = tx.sector(sector, for_update=True)
            refusal = _report_refusal(sector, record, report.worker)
            if refusal is not None:  # a refused call changes nothing, not even liveness (anyone could send it)
                raise (ManagerRequestError if record is None else NotTheHolder)(refusal)
            tx.touch_worker(report.worker.instance, now)
            tx.append_history(sector, now, report)
            return self._answer_report(tx, record)

    def _answer_report(self, tx: Tx, record: SectorRecord) -> SectorStateResp:
        """Tell the worker to give the sector up if it was aborted or can no longer be saved."""
        if record.aborted:
            return SectorStateResp(finalized=True, abort_reason=record.abort_reason)
        if _rebuild_given_up(record):  # the rebuild thread holding it must stop
            return SectorStateResp(finalized=True, abort_reason=f"rebuild given up: {record.rebuild_abort_reason}")
        epoch = self.chain.epoch()
        final = next((d for d in sector_deadlines(record, self.config, epoch) if d.kind.final and d.passed), None)
        if final is None:
            return SectorStateResp()  # an expired ticket is recoverable: the worker draws a new one
        reason = f"{REASON_FINAL_DEADLINE}: {final.kind.value}: {final.describe()}; the chain is at epoch {epoch}"
        self._abort(tx, record, reason)
        return SectorStateResp(finalized=True, abort_reason=reason)

    @_retrying
    def forget_worker_ping(self, instance: str) -> bool:
        """`util worker remove`: forget `instance`'s last ping; False if it had none."""
        with self._db.transaction() as tx:
            return tx.forget_ping(instance)

    @_retrying
    def worker_ping(self, ping: WorkerPing) -> None:
        if not ping.instance:
            raise ManagerRequestError("a ping must name its worker instance")
        ping = dataclasses.replace(ping, dest=bounded_text(ping.dest, MAX_NAME_CHARS),
                                   version=bounded_text(ping.version, MAX_NAME_CHARS))
        with self._db.transaction() as tx:
            tx.record_ping(ping, self._clock())

    def store_info(self, name: str) -> StoreInfo | None:
        """The persist store registered under `name`, if any."""
        return self._stores.get(name)

    @_retrying
    def rebind_holder(self, sector: SectorId, current: WorkerRef, new: WorkerRef) -> None:
        """Hand a sector from `current` to `new`, atomically; NotTheHolder if `current` no longer
        holds it. (A Venus caller names its thread only in its first state report.)"""
        with self._db.transaction() as tx:
            record = self._require(tx, sector)
            if not _holds(record, current):
                raise NotTheHolder(_not_holder(record, current))
            tx.set_holder(sector, new)

    def _require_held(self, tx: Tx, sector: SectorId, worker: WorkerRef) -> SectorRecord:
        """The sector, if `worker` (its instance and thread) holds it; the caller's report otherwise
        is refused: only the thread working on a sector may say it is done."""
        record = self._require(tx, sector)
        if not _holds(record, worker):
            raise NotTheHolder(_not_holder(record, worker))
        tx.touch_worker(worker.instance, self._clock())
        return record

    @_retrying
    def report_finalized(self, sector: SectorId, *, worker: WorkerRef) -> None:
        with self._db.transaction() as tx:
            record = self._require_held(tx, sector, worker)
            if record.rebuild is RebuildState.Taken:
                tx.set_rebuild(sector, None)  # rebuilt (its files were checked by submit_persisted)
            elif _rebuild_given_up(record):
                raise ManagerRequestError(f"sector {sector}: its rebuild was given up ({record.rebuild_abort_reason}); "
                                          "`damocles-manager sector rebuild` requests a new one")
            elif record.upgrade is not None:
                if record.upgrade.state is not UpgradeState.Upgraded:
                    raise ManagerRequestError(f"sector {sector}: its update proof was not accepted; "
                                              "it cannot be finished (submit the update proof first)")
                # the upgrade was recorded when its proof was accepted; nothing more to do
            elif record.aborted:
                raise ManagerRequestError(f"sector {sector} was aborted ({record.abort_reason}); "
                                          "it cannot be finished")
            elif record.commit is None or record.commit.state is not Submission.Accepted:
                raise ManagerRequestError(f"sector {sector} has no accepted proof; it cannot be finished "
                                          "(submit its proof first)")
            else:
                tx.mark_finished(sector)
            tx.release_reservation(sector)

    @_retrying
    def report_aborted(self, sector: SectorId, reason: str, *, worker: WorkerRef,
                       cause: FailureCause | None = None) -> None:
        reason = bounded_text(reason)
        with self._db.transaction() as tx:
            record = self._require_held(tx, sector, worker)
            if cause is FailureCause.PieceCommitmentMismatch:
                self._quarantine_deals(tx, record, reason)
            self._abort(tx, record, reason)

    def _quarantine_deals(self, tx: Tx, record: SectorRecord, reason: str) -> None:
        """Keep the deal(s) whose piece failed its commitment check out of the pool until the file
        changes; otherwise every new sector would take the deal and abort ("poison deal")."""
        if record.finished and not self._upgrading(record):
            return  # a rebuild: the deals are on chain already, nothing goes back to the pool
        deals = tx.deals_of(record.id, for_upgrade=self._upgrading(record))
        named = {int(n) for n in _DEAL_IN_REASON.findall(reason)}
        at_fault = [d for d in deals if d.deal_id in named] or deals  # unnamed: all of the sector's
        cause = FailureCause.PieceCommitmentMismatch.name
        why = reason if cause in reason else f"{cause}: {reason}"
        for deal in at_fault:
            size, mtime_ns = _file_stamp(deal.piece_path)
            tx.quarantine_deal(deal.deal_id, why, record.id, size, mtime_ns)
            log.warning("deal %d quarantined until its piece file %s changes: %s", deal.deal_id, deal.piece_path,
                        reason)

    @_retrying
    def abort_sector(self, sector_id: SectorId, reason: str) -> None:
        """Operator action: give up a sector (or its upgrade, or its rebuild, requested or running);
        its deals go back."""
        reason = bounded_text(reason)
        with self._db.transaction() as tx:
            record = self._require(tx, sector_id)
            if record.finished and record.rebuild is None and not self._upgrading(record):
                raise ManagerRequestError(f"sector {sector_id} is finished and nothing is running on it")
            self._abort(tx, record, reason, by_operator=True)

    @staticmethod
    def _upgrading(record: SectorRecord) -> bool:
        return record.upgrade is not None and record.upgrade.state is UpgradeState.Upgrading

    def _abort(self, tx: Tx, record: SectorRecord, reason: str, by_operator: bool = False) -> None:
        """Abort what is running on a sector. A finished sector is sealed and on chain: aborting
        gives up its running job (rebuild, upgrade), never the sector itself. An operator may also
        give up a rebuild that is only requested."""
        sector = record.id
        if record.rebuild is RebuildState.Taken or (by_operator and record.rebuild is not None):
            # Given up for good (a rebuild that cannot succeed would otherwise be retried forever):
            # the reason is shown by `sector debug`; an operator requests it again explicitly.
            log.warning("sector %s: rebuild given up (%s); `sector rebuild` requests it again", sector, reason)
            tx.end_rebuild(sector, reason)
        elif self._upgrading(record):
            log.warning("sector %s: snap-up aborted (%s); its deals go back to the pool", sector, reason)
            tx.release_deals(sector, for_upgrade=True)
            tx.clear_upgrade(sector)
        elif record.finished:
            log.warning("sector %s: abort (%s) ignored: the sector is finished and nothing runs on it",
                        sector, reason)
        elif not record.aborted:
            log.warning("sector %s aborted: %s", sector, reason)
            tx.mark_aborted(sector, reason)
            tx.release_deals(sector, for_upgrade=False)
        tx.release_reservation(sector)
