"""The sector manager interface: what a sealing thread asks of the manager, in typed messages.

Three implementations stand behind it: `EmbeddedManager` (in-process, SQLite, simulated chain; the
default), the gRPC client of our standalone `damocles-manager` (`client.RemoteManager`), and
`venus.VenusManager`, a client of damocles' `Venus.*` JSON-RPC (a Go damocles-manager, or ours with
--venus-listen). Errors a caller may retry raise `ManagerUnavailable`; requests the manager
refuses raise `ManagerRequestError` with a reason.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from damocles_py.fsm.failure import FailureCause
from damocles_py.proofs import PieceInfo, SealProof

if TYPE_CHECKING:  # db.py imports this module; its records are only named in annotations here
    from damocles_py.manager.db import DealRecord, HistoryRow, SectorRecord


class ManagerUnavailable(Exception):
    """The manager could not be reached or failed transiently: retry later."""


class ManagerRequestError(Exception):
    """The manager refused the request (unknown sector, wrong worker, malformed input)."""


class NotTheHolder(ManagerRequestError):
    """A report about a sector that another worker thread holds (or nobody, any more)."""


# Bounds of what a caller may make the manager store: names are refused beyond their limit,
# free text (reasons, failure descriptions) is cut there.
MAX_NAME_CHARS = 256
MAX_TEXT_CHARS = 2048


def bounded_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` made safe to store and print on one line: control characters (newlines, escapes)
    become spaces, and it is cut at `limit` characters."""
    clean = "".join(c if c.isprintable() else " " for c in text)
    return clean if len(clean) <= limit else clean[: limit - 15] + " ...(truncated)"


@dataclass(frozen=True, order=True)
class SectorId:
    miner: int
    number: int

    def __str__(self) -> str:
        return f"{self.miner}-{self.number}"

    @classmethod
    def parse(cls, text: str) -> "SectorId":
        try:
            miner, number = text.split("-")
            sid = cls(int(miner), int(number))
        except ValueError:
            raise ValueError(f"{text!r} is not a sector id; write it as <miner>-<number>, e.g. 1000-3") from None
        if not (0 <= sid.miner < 2**63 and 0 <= sid.number < 2**63):  # what SQLite and the RPCs can hold
            raise ValueError(f"{text!r} is not a sector id: miner and number must be whole numbers "
                             f"from 0 to {2**63 - 1}; write it as <miner>-<number>, e.g. 1000-3")
        return sid


@dataclass(frozen=True)
class AllocatedSector:
    id: SectorId
    proof: SealProof


@dataclass(frozen=True)
class AllocateSpec:
    """Which sectors a thread may take: None means any.

    `allowed_stores`: the persist stores the thread can write to; a snap-up candidate or a
    rebuild job whose files live elsewhere is never handed to it.
    """

    allowed_miners: tuple[int, ...] | None = None
    allowed_proofs: tuple[SealProof, ...] | None = None
    allowed_stores: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AcquireDealsSpec:
    max_deals: int | None = None
    min_used_space: int | None = None


# Deal.piece_path of a pledge (filler) piece: its data are zeros, there is no file to read.
PLEDGE_PREFIX = "pledge:"


@dataclass(frozen=True)
class Deal:
    """A deal's piece. `piece_path` is where the worker reads the piece data: a local file, or a
    piece name (a damocles-manager's piece CID) looked up in local_pieces_dirs, then downloaded."""

    deal_id: int
    piece: PieceInfo
    piece_path: str
    payload_size: int

    @property
    def is_pledge(self) -> bool:
        return self.piece_path.startswith(PLEDGE_PREFIX)


@dataclass(frozen=True)
class Ticket:
    value: bytes
    epoch: int


@dataclass(frozen=True)
class Seed:
    value: bytes
    epoch: int


@dataclass(frozen=True)
class SeedWait:
    """Either the seed, or how long to wait before asking again."""

    seed: Seed | None
    delay_seconds: float = 0.0


# Rejection reasons the worker acts on; a manager puts them at the start of SubmitResponse.desc.
REASON_TICKET_EXPIRED = "ticket expired"
REASON_SEED_EXPIRED = "seed expired"
# Starts SectorStateResp.abort_reason when the manager abandoned a sector whose pre-commit expired.
REASON_FINAL_DEADLINE = "final deadline reached"


class SubmitResult(enum.Enum):
    Accepted = 1
    DuplicateSubmit = 2
    MismatchedSubmission = 3
    Rejected = 4
    FilesMissed = 5


@dataclass(frozen=True)
class SubmitResponse:
    result: SubmitResult
    desc: str = ""


class OnChainState(enum.Enum):
    Pending = 1
    Landed = 3
    NotFound = 4
    Failed = 5
    PermFailed = 6
    ShouldAbort = 7


@dataclass(frozen=True)
class OnChainStatus:
    state: OnChainState
    desc: str = ""


@dataclass(frozen=True)
class PreCommitInfo:
    comm_r: bytes
    comm_d: bytes
    ticket: Ticket


@dataclass(frozen=True)
class SnapUpCandidate:
    """A sealed CC sector to upgrade, the deals to put in it, and where its files are."""

    sector: AllocatedSector
    deals: tuple[Deal, ...]
    comm_r_old: bytes
    store: str


@dataclass(frozen=True)
class SnapUpProofInfo:
    comm_r_new: bytes
    comm_d_new: bytes
    proof: bytes
    store: str
    # The upgrade's piece commitments, in order: a restarted worker re-sends what the manager
    # handed it (damocles-manager wants them with the proof).
    pieces: tuple[bytes, ...]


@dataclass(frozen=True)
class RebuildJob:
    """A sealed sector to re-create from its ticket and pieces, into `store`."""

    sector: AllocatedSector
    ticket: Ticket
    deals: tuple[Deal, ...]  # empty: a CC sector
    comm_r: bytes
    comm_d: bytes
    store: str
    # Set when the sector was upgraded by snap: the deals and commitments of the update.
    upgrade_deals: tuple[Deal, ...] = ()
    upgrade_comm_r: bytes | None = None
    upgrade_comm_d: bytes | None = None

    @property
    def is_snapup(self) -> bool:
        return self.upgrade_comm_r is not None


@dataclass(frozen=True)
class StoreInfo:
    name: str
    path: str
    readonly: bool = False


@dataclass(frozen=True)
class WorkerRef:
    """Who holds a sector: worker instance name and thread index."""

    instance: str
    thread: int
    location: str = ""


@dataclass(frozen=True)
class StateReport:
    worker: WorkerRef
    prev: str
    next: str
    event: str
    failure_level: str | None = None
    failure_cause: str | None = None
    failure_desc: str | None = None


@dataclass(frozen=True)
class SectorStateResp:
    """`finalized` tells the worker the manager abandoned the sector (e.g. aborted by an operator)."""

    finalized: bool = False
    abort_reason: str | None = None


# ---------------------------------------------------------------------------------------------
# worker liveness: heartbeats and what the manager concludes from them


@dataclass(frozen=True)
class ThreadSummary:
    """One sealing thread as its worker describes it in a heartbeat."""

    index: int
    plan: str
    state: str
    sector: SectorId | None
    thread_state: str  # idle | running | waiting | paused | stopped


@dataclass(frozen=True)
class WorkerSummary:
    """Thread counts of a worker, as damocles' `WorkerInfo.Summary` (Venus pings carry only these)."""

    threads: int = 0
    empty: int = 0
    paused: int = 0
    running: int = 0
    waiting: int = 0
    errors: int = 0

    @classmethod
    def of(cls, threads: "tuple[ThreadSummary, ...]") -> "WorkerSummary":
        return cls(threads=len(threads), empty=sum(t.sector is None for t in threads),
                   paused=sum(t.thread_state == "paused" for t in threads),
                   running=sum(t.thread_state == "running" for t in threads),
                   waiting=sum(t.thread_state == "waiting" for t in threads))


@dataclass(frozen=True)
class WorkerPing:
    """A worker's heartbeat, sent every `ping_interval` (see `heartbeat.HeartbeatSender`).

    `dest`: where its admin API (`VenusWorker.*`, `host:port`) answers, so the manager's
    `util worker` finds it by name; `summary`: set by pings that carry no threads (Venus)."""

    instance: str
    threads: tuple[ThreadSummary, ...] = ()
    dest: str = ""
    version: str = ""
    summary: WorkerSummary | None = None


@dataclass(frozen=True)
class WorkerStatus:
    """What the manager knows of a worker instance.

    `last_seen` is the manager's time of its last ping or of its last call carrying its WorkerRef
    (None: it holds sectors but was never heard from since liveness was recorded). A worker is
    `lost` once it has been silent for longer than the manager's `worker_timeout`.
    """

    instance: str
    last_seen: float | None
    lost: bool
    sectors: tuple[SectorId, ...]  # the sectors it holds that are still in progress
    silent_for: float | None = None  # seconds since last_seen, on the manager's clock
    last_ping: float | None = None  # None: it called, but never pinged
    threads: tuple[ThreadSummary, ...] = ()  # as described in its last ping
    dest: str = ""  # its admin API address, from its last ping ("" if none given)
    version: str = ""
    summary: WorkerSummary | None = None  # from its last ping


# ---------------------------------------------------------------------------------------------
# sector deadlines and the debug view


class DeadlineKind(enum.Enum):
    """The chain's two deadlines for a sector in progress, with the cause a worker gets for each."""

    # The ticket can no longer be pre-committed; a new ticket (and PC1/PC2 again) saves the sector.
    TicketExpiry = "ticket expiry"
    # The pre-commit expires without a proof: nothing can save the sector any more.
    PreCommitExpiry = "pre-commit expiry"

    @property
    def cause(self) -> FailureCause:
        return FailureCause.TicketExpired if self is DeadlineKind.TicketExpiry else FailureCause.FinalDeadlineReached

    @property
    def final(self) -> bool:
        return self is DeadlineKind.PreCommitExpiry


@dataclass(frozen=True)
class Deadline:
    """`start_epoch + window` is the last epoch at which the sector can still make it."""

    kind: DeadlineKind
    start_epoch: int  # the ticket's epoch, or the seed's
    window: int  # ticket_expiry_epochs, or seed_expiry_epochs
    passed: bool  # when the view was taken

    @property
    def epoch(self) -> int:
        return self.start_epoch + self.window

    def describe(self) -> str:
        if self.kind is DeadlineKind.TicketExpiry:
            return (f"pre-commit must land by epoch {self.epoch} "
                    f"(ticket epoch {self.start_epoch} + ticket_expiry_epochs {self.window})")
        return (f"proof must be submitted by epoch {self.epoch} "
                f"(seed epoch {self.start_epoch} + seed_expiry_epochs {self.window})")


@dataclass(frozen=True)
class SectorDebug:
    """Everything the manager knows about one sector, for `damocles-manager sector debug`."""

    record: SectorRecord
    history: tuple[HistoryRow, ...]  # every state report, oldest first
    epoch: int  # the chain head when the view was taken
    deadlines: tuple[Deadline, ...]  # of an unfinished, unaborted sector; empty otherwise
    holder: WorkerStatus  # liveness of the worker instance holding the sector
    holder_thread: ThreadSummary | None = None  # the holding thread, as its worker's last ping described it
    deals: tuple[DealRecord, ...] = ()  # its deals, and those quarantined by its abort


class SectorManager(Protocol):
    def allocate_sector(self, spec: AllocateSpec, worker: WorkerRef) -> AllocatedSector | None: ...

    def acquire_deals(self, sector: SectorId, spec: AcquireDealsSpec) -> list[Deal]: ...

    def assign_ticket(self, sector: SectorId) -> Ticket: ...

    def submit_pre_commit(self, sector: AllocatedSector, info: PreCommitInfo, reset: bool) -> SubmitResponse: ...

    def poll_pre_commit_state(self, sector: SectorId) -> OnChainStatus: ...

    def reserve_store(self, sector: SectorId, size: int, candidates: list[str]) -> str | None: ...

    def submit_persisted(self, sector: SectorId, store: str, is_upgrade: bool) -> bool: ...

    # The seal proof travels with the sector: damocles-manager picks the seed's rule by proof type.
    def wait_seed(self, sector: AllocatedSector) -> SeedWait: ...

    def submit_proof(self, sector: SectorId, proof: bytes, reset: bool) -> SubmitResponse: ...

    def poll_proof_state(self, sector: SectorId) -> OnChainStatus: ...

    def allocate_snapup_sector(self, spec: AllocateSpec, deals: AcquireDealsSpec,
                               worker: WorkerRef) -> SnapUpCandidate | None: ...

    def submit_snapup_proof(self, sector: SectorId, info: SnapUpProofInfo) -> SubmitResponse: ...

    def allocate_rebuild_sector(self, spec: AllocateSpec, worker: WorkerRef) -> RebuildJob | None: ...

    def report_state(self, sector: SectorId, report: StateReport) -> SectorStateResp: ...

    # The final reports name the reporting thread: the manager refuses (NotTheHolder) a report
    # about a sector that thread does not hold. `cause` is the FailureCause the worker aborted
    # with (a PieceCommitmentMismatch quarantines the deal named in `reason`).
    def report_finalized(self, sector: SectorId, *, worker: WorkerRef) -> None: ...

    def report_aborted(self, sector: SectorId, reason: str, *, worker: WorkerRef,
                       cause: FailureCause | None = None) -> None: ...
