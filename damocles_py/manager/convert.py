"""Conversions between the manager's dataclasses and their protobuf messages (proto/manager.proto).

One pair per message: `<name>_to_pb(value)` builds the message, `<name>_from_pb(msg, field)` checks
and parses it. `field` is where the message sits in its request ("info.ticket"), so a refusal names
the exact field: parsing raises `MalformedMessage` for a missing message field, an unknown proof or
enum value, a commitment that is not 32 bytes or a number out of range. The server parses a whole
request before it calls the manager, so a malformed request never changes any state.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from google.protobuf.message import Message

from damocles_py.manager import manager_pb2 as pb
from damocles_py.fsm.failure import FailureCause
from damocles_py.manager.db import (
    CommitRecord,
    DealRecord,
    HistoryRow,
    PreCommitRecord,
    RebuildState,
    SectorRecord,
    Submission,
    UpgradeRecord,
    UpgradeState,
)
from damocles_py.manager.interface import (
    MAX_NAME_CHARS,
    AcquireDealsSpec,
    AllocatedSector,
    AllocateSpec,
    Deadline,
    DeadlineKind,
    Deal,
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
    SubmitResponse,
    SubmitResult,
    ThreadSummary,
    Ticket,
    WorkerPing,
    WorkerRef,
    WorkerStatus,
    WorkerSummary,
)
from damocles_py.proofs import InvalidInput, PieceInfo, SealProof

# The manager stores numbers in SQLite, whose integers are signed 64-bit.
_INT64_MAX = (1 << 63) - 1
COMMITMENT_BYTES = 32


class MalformedMessage(ValueError):
    """A message the other side cannot use; `field` names the offending field."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


# ---------------------------------------------------------------------------------------------
# field helpers


def _path(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def required(msg: Message, name: str, parent: str = "") -> Message:
    """A message field the receiver cannot do without (proto3 would hand over an empty default)."""
    if not msg.HasField(name):
        raise MalformedMessage(_path(parent, name), "missing")
    return getattr(msg, name)


def _optional_scalar(msg: Message, name: str):
    return getattr(msg, name) if msg.HasField(name) else None


def count_from_pb(value: int, field: str) -> int:
    """A uint64 the manager stores: SQLite holds at most a signed 64-bit integer."""
    if value > _INT64_MAX:
        raise MalformedMessage(field, f"{value} is out of range (at most {_INT64_MAX})")
    return value




def name_from_pb(value: str, field: str) -> str:
    """A name the manager stores and matches on (worker instance, location, store): refused, not
    cut, beyond MAX_NAME_CHARS, since a cut name could match another."""
    if len(value) > MAX_NAME_CHARS:
        raise MalformedMessage(field, f"{len(value)} characters, more than {MAX_NAME_CHARS}")
    if not value.isprintable():
        raise MalformedMessage(field, "contains control characters")
    return value


def names_from_pb(values: Iterable[str], field: str) -> tuple[str, ...]:
    return tuple(name_from_pb(v, f"{field}[{i}]") for i, v in enumerate(values))


def failure_cause_from_pb(msg: Message, name: str, parent: str = "") -> FailureCause | None:
    value = _optional_scalar(msg, name)
    if value is None:
        return None
    cause = FailureCause.__members__.get(value)
    if cause is None:
        raise MalformedMessage(_path(parent, name), f"unknown failure cause {value[:64]!r}")
    return cause


def _commitment(value: bytes, field: str) -> bytes:
    if len(value) != COMMITMENT_BYTES:
        raise MalformedMessage(field, f"must be {COMMITMENT_BYTES} bytes, got {len(value)}")
    return bytes(value)


def _optional_commitment(msg: Message, name: str, parent: str) -> bytes | None:
    value = _optional_scalar(msg, name)
    return None if value is None else _commitment(value, _path(parent, name))


def _seal_proof(name: str, field: str) -> SealProof:
    try:
        return SealProof.parse(name, field)
    except InvalidInput as e:
        raise MalformedMessage(field, e.problem) from None


# ---------------------------------------------------------------------------------------------
# enums: explicit tables, so renaming a member on either side fails loudly here


def _table(pairs: dict[enum.Enum, int]) -> tuple[dict[enum.Enum, int], dict[int, enum.Enum]]:
    return pairs, {number: member for member, number in pairs.items()}


_SUBMIT_RESULT_TO, _SUBMIT_RESULT_FROM = _table({
    SubmitResult.Accepted: pb.SUBMIT_RESULT_ACCEPTED,
    SubmitResult.DuplicateSubmit: pb.SUBMIT_RESULT_DUPLICATE_SUBMIT,
    SubmitResult.MismatchedSubmission: pb.SUBMIT_RESULT_MISMATCHED_SUBMISSION,
    SubmitResult.Rejected: pb.SUBMIT_RESULT_REJECTED,
    SubmitResult.FilesMissed: pb.SUBMIT_RESULT_FILES_MISSED,
})
_ON_CHAIN_STATE_TO, _ON_CHAIN_STATE_FROM = _table({
    OnChainState.Pending: pb.ON_CHAIN_STATE_PENDING,
    OnChainState.Landed: pb.ON_CHAIN_STATE_LANDED,
    OnChainState.NotFound: pb.ON_CHAIN_STATE_NOT_FOUND,
    OnChainState.Failed: pb.ON_CHAIN_STATE_FAILED,
    OnChainState.PermFailed: pb.ON_CHAIN_STATE_PERM_FAILED,
    OnChainState.ShouldAbort: pb.ON_CHAIN_STATE_SHOULD_ABORT,
})
_SUBMISSION_TO, _SUBMISSION_FROM = _table({
    Submission.Accepted: pb.SUBMISSION_ACCEPTED,
    Submission.Rejected: pb.SUBMISSION_REJECTED,
})
_REBUILD_STATE_TO, _REBUILD_STATE_FROM = _table({
    RebuildState.Requested: pb.REBUILD_STATE_REQUESTED,
    RebuildState.Taken: pb.REBUILD_STATE_TAKEN,
})
_UPGRADE_STATE_TO, _UPGRADE_STATE_FROM = _table({
    UpgradeState.Upgrading: pb.UPGRADE_STATE_UPGRADING,
    UpgradeState.Upgraded: pb.UPGRADE_STATE_UPGRADED,
})
_DEADLINE_KIND_TO, _DEADLINE_KIND_FROM = _table({
    DeadlineKind.TicketExpiry: pb.DEADLINE_KIND_TICKET_EXPIRY,
    DeadlineKind.PreCommitExpiry: pb.DEADLINE_KIND_PRE_COMMIT_EXPIRY,
})


def _enum_from(table: dict[int, enum.Enum], number: int, field: str, what: str):
    member = table.get(number)
    if member is None:
        raise MalformedMessage(field, f"unknown {what} value {number}")
    return member


# ---------------------------------------------------------------------------------------------
# sector ids and allocation


def sector_id_to_pb(value: SectorId) -> pb.SectorId:
    return pb.SectorId(miner=value.miner, number=value.number)


def sector_id_from_pb(msg: pb.SectorId, field: str = "sector") -> SectorId:
    return SectorId(count_from_pb(msg.miner, _path(field, "miner")),
                    count_from_pb(msg.number, _path(field, "number")))


def allocated_sector_to_pb(value: AllocatedSector) -> pb.AllocatedSector:
    return pb.AllocatedSector(id=sector_id_to_pb(value.id), proof=value.proof.name)


def allocated_sector_from_pb(msg: pb.AllocatedSector, field: str = "sector") -> AllocatedSector:
    sector_id = sector_id_from_pb(required(msg, "id", field), _path(field, "id"))
    return AllocatedSector(sector_id, _seal_proof(msg.proof, _path(field, "proof")))


def allocate_spec_to_pb(value: AllocateSpec) -> pb.AllocateSpec:
    msg = pb.AllocateSpec()
    # Set the list even when empty: an empty allow-list (nothing allowed) differs from None (any).
    if value.allowed_miners is not None:
        msg.allowed_miners.SetInParent()
        msg.allowed_miners.miners.extend(value.allowed_miners)
    if value.allowed_proofs is not None:
        msg.allowed_proofs.SetInParent()
        msg.allowed_proofs.proofs.extend(p.name for p in value.allowed_proofs)
    if value.allowed_stores is not None:
        msg.allowed_stores.SetInParent()
        msg.allowed_stores.stores.extend(value.allowed_stores)
    return msg


def allocate_spec_from_pb(msg: pb.AllocateSpec, field: str = "spec") -> AllocateSpec:
    miners = proofs = stores = None
    if msg.HasField("allowed_stores"):
        stores = names_from_pb(msg.allowed_stores.stores, _path(field, "allowed_stores"))
    if msg.HasField("allowed_miners"):
        where = _path(field, "allowed_miners")
        miners = tuple(count_from_pb(m, where) for m in msg.allowed_miners.miners)
    if msg.HasField("allowed_proofs"):
        where = _path(field, "allowed_proofs")
        proofs = tuple(_seal_proof(name, where) for name in msg.allowed_proofs.proofs)
    return AllocateSpec(miners, proofs, stores)


def acquire_deals_spec_to_pb(value: AcquireDealsSpec) -> pb.AcquireDealsSpec:
    return pb.AcquireDealsSpec(max_deals=value.max_deals, min_used_space=value.min_used_space)


def acquire_deals_spec_from_pb(msg: pb.AcquireDealsSpec, field: str = "spec") -> AcquireDealsSpec:
    max_deals = _optional_scalar(msg, "max_deals")
    min_used = _optional_scalar(msg, "min_used_space")
    return AcquireDealsSpec(
        None if max_deals is None else count_from_pb(max_deals, _path(field, "max_deals")),
        None if min_used is None else count_from_pb(min_used, _path(field, "min_used_space")),
    )


def worker_ref_to_pb(value: WorkerRef) -> pb.WorkerRef:
    return pb.WorkerRef(instance=value.instance, thread=value.thread, location=value.location)


def worker_ref_from_pb(msg: pb.WorkerRef, field: str = "worker") -> WorkerRef:
    instance = name_from_pb(msg.instance, _path(field, "instance"))
    if not instance:
        raise MalformedMessage(_path(field, "instance"), "missing: name the worker instance")
    return WorkerRef(instance, msg.thread, name_from_pb(msg.location, _path(field, "location")))


def _stored_worker_ref_from_pb(msg: pb.WorkerRef, field: str) -> WorkerRef:
    """A WorkerRef in a stored record: as it is."""
    return WorkerRef(msg.instance, msg.thread, msg.location)


# ---------------------------------------------------------------------------------------------
# deals, tickets, seeds


def piece_to_pb(value: PieceInfo) -> pb.PieceInfo:
    return pb.PieceInfo(commitment=value.commitment, size=value.size)


def piece_from_pb(msg: pb.PieceInfo, field: str = "piece") -> PieceInfo:
    return PieceInfo(_commitment(msg.commitment, _path(field, "commitment")),
                     count_from_pb(msg.size, _path(field, "size")))


def deal_to_pb(value: Deal) -> pb.Deal:
    return pb.Deal(deal_id=value.deal_id, piece=piece_to_pb(value.piece), piece_path=value.piece_path,
                   payload_size=value.payload_size)


def deal_from_pb(msg: pb.Deal, field: str = "deal") -> Deal:
    piece = piece_from_pb(required(msg, "piece", field), _path(field, "piece"))
    return Deal(count_from_pb(msg.deal_id, _path(field, "deal_id")), piece, msg.piece_path,
                count_from_pb(msg.payload_size, _path(field, "payload_size")))


def deals_from_pb(msgs: Iterable[pb.Deal], field: str) -> tuple[Deal, ...]:
    return tuple(deal_from_pb(m, f"{field}[{i}]") for i, m in enumerate(msgs))


def ticket_to_pb(value: Ticket) -> pb.Ticket:
    return pb.Ticket(value=value.value, epoch=value.epoch)


def ticket_from_pb(msg: pb.Ticket, field: str = "ticket", exact: bool = True) -> Ticket:
    """`exact=False` for stored records, which keep whatever was once submitted."""
    value = _commitment(msg.value, _path(field, "value")) if exact else bytes(msg.value)
    return Ticket(value, msg.epoch)


def seed_to_pb(value: Seed) -> pb.Seed:
    return pb.Seed(value=value.value, epoch=value.epoch)


def seed_from_pb(msg: pb.Seed, field: str = "seed") -> Seed:
    return Seed(_commitment(msg.value, _path(field, "value")), msg.epoch)


def seed_wait_to_pb(value: SeedWait) -> pb.SeedWait:
    seed = None if value.seed is None else seed_to_pb(value.seed)
    return pb.SeedWait(seed=seed, delay_seconds=value.delay_seconds)


def seed_wait_from_pb(msg: pb.SeedWait, field: str = "") -> SeedWait:
    seed = seed_from_pb(msg.seed, _path(field, "seed")) if msg.HasField("seed") else None
    return SeedWait(seed, msg.delay_seconds)


# ---------------------------------------------------------------------------------------------
# submissions and their on-chain state


def submit_response_to_pb(value: SubmitResponse) -> pb.SubmitResponse:
    return pb.SubmitResponse(result=_SUBMIT_RESULT_TO[value.result], desc=value.desc)


def submit_response_from_pb(msg: pb.SubmitResponse, field: str = "") -> SubmitResponse:
    result = _enum_from(_SUBMIT_RESULT_FROM, msg.result, _path(field, "result"), "SubmitResult")
    return SubmitResponse(result, msg.desc)


def on_chain_status_to_pb(value: OnChainStatus) -> pb.OnChainStatus:
    return pb.OnChainStatus(state=_ON_CHAIN_STATE_TO[value.state], desc=value.desc)


def on_chain_status_from_pb(msg: pb.OnChainStatus, field: str = "") -> OnChainStatus:
    state = _enum_from(_ON_CHAIN_STATE_FROM, msg.state, _path(field, "state"), "OnChainState")
    return OnChainStatus(state, msg.desc)


def pre_commit_info_to_pb(value: PreCommitInfo) -> pb.PreCommitInfo:
    return pb.PreCommitInfo(comm_r=value.comm_r, comm_d=value.comm_d, ticket=ticket_to_pb(value.ticket))


def pre_commit_info_from_pb(msg: pb.PreCommitInfo, field: str = "info", exact: bool = True) -> PreCommitInfo:
    ticket = ticket_from_pb(required(msg, "ticket", field), _path(field, "ticket"), exact)
    if not exact:
        return PreCommitInfo(bytes(msg.comm_r), bytes(msg.comm_d), ticket)
    return PreCommitInfo(_commitment(msg.comm_r, _path(field, "comm_r")),
                         _commitment(msg.comm_d, _path(field, "comm_d")), ticket)


# ---------------------------------------------------------------------------------------------
# snap-up and rebuild


def snapup_candidate_to_pb(value: SnapUpCandidate) -> pb.SnapUpCandidate:
    return pb.SnapUpCandidate(sector=allocated_sector_to_pb(value.sector), deals=[deal_to_pb(d) for d in value.deals],
                              comm_r_old=value.comm_r_old, store=value.store)


def snapup_candidate_from_pb(msg: pb.SnapUpCandidate, field: str = "candidate") -> SnapUpCandidate:
    return SnapUpCandidate(
        sector=allocated_sector_from_pb(required(msg, "sector", field), _path(field, "sector")),
        deals=deals_from_pb(msg.deals, _path(field, "deals")),
        comm_r_old=_commitment(msg.comm_r_old, _path(field, "comm_r_old")),
        store=msg.store,
    )


def snapup_proof_info_to_pb(value: SnapUpProofInfo) -> pb.SnapUpProofInfo:
    return pb.SnapUpProofInfo(comm_r_new=value.comm_r_new, comm_d_new=value.comm_d_new, proof=value.proof,
                              store=value.store, pieces=list(value.pieces))


def snapup_proof_info_from_pb(msg: pb.SnapUpProofInfo, field: str = "info") -> SnapUpProofInfo:
    # The proof's bytes go to the manager as they are: judging them is the manager's job (Rejected).
    pieces = tuple(_commitment(p, _path(field, f"pieces[{i}]")) for i, p in enumerate(msg.pieces))
    return SnapUpProofInfo(_commitment(msg.comm_r_new, _path(field, "comm_r_new")),
                           _commitment(msg.comm_d_new, _path(field, "comm_d_new")), bytes(msg.proof), msg.store,
                           pieces)


def rebuild_job_to_pb(value: RebuildJob) -> pb.RebuildJob:
    return pb.RebuildJob(
        sector=allocated_sector_to_pb(value.sector), ticket=ticket_to_pb(value.ticket),
        deals=[deal_to_pb(d) for d in value.deals], comm_r=value.comm_r, comm_d=value.comm_d, store=value.store,
        upgrade_deals=[deal_to_pb(d) for d in value.upgrade_deals],
        upgrade_comm_r=value.upgrade_comm_r, upgrade_comm_d=value.upgrade_comm_d,
    )


def rebuild_job_from_pb(msg: pb.RebuildJob, field: str = "job") -> RebuildJob:
    return RebuildJob(
        sector=allocated_sector_from_pb(required(msg, "sector", field), _path(field, "sector")),
        ticket=ticket_from_pb(required(msg, "ticket", field), _path(field, "ticket")),
        deals=deals_from_pb(msg.deals, _path(field, "deals")),
        comm_r=_commitment(msg.comm_r, _path(field, "comm_r")),
        comm_d=_commitment(msg.comm_d, _path(field, "comm_d")),
        store=msg.store,
        upgrade_deals=deals_from_pb(msg.upgrade_deals, _path(field, "upgrade_deals")),
        upgrade_comm_r=_optional_commitment(msg, "upgrade_comm_r", field),
        upgrade_comm_d=_optional_commitment(msg, "upgrade_comm_d", field),
    )


# ---------------------------------------------------------------------------------------------
# state reports


def state_report_to_pb(value: StateReport) -> pb.StateReport:
    return pb.StateReport(
        worker=worker_ref_to_pb(value.worker), prev=value.prev, next=value.next, event=value.event,
        failure_level=value.failure_level, failure_cause=value.failure_cause, failure_desc=value.failure_desc,
    )


def state_report_from_pb(msg: pb.StateReport, field: str = "report") -> StateReport:
    return StateReport(
        worker=worker_ref_from_pb(required(msg, "worker", field), _path(field, "worker")),
        prev=msg.prev, next=msg.next, event=msg.event,
        failure_level=_optional_scalar(msg, "failure_level"),
        failure_cause=_optional_scalar(msg, "failure_cause"),
        failure_desc=_optional_scalar(msg, "failure_desc"),
    )


def sector_state_resp_to_pb(value: SectorStateResp) -> pb.SectorStateResp:
    return pb.SectorStateResp(finalized=value.finalized, abort_reason=value.abort_reason)


def sector_state_resp_from_pb(msg: pb.SectorStateResp, field: str = "") -> SectorStateResp:
    return SectorStateResp(msg.finalized, _optional_scalar(msg, "abort_reason"))


# ---------------------------------------------------------------------------------------------
# sector records and history (operator reads: stored values come back as they are)


def _pre_commit_record_to_pb(value: PreCommitRecord) -> pb.PreCommitRecord:
    return pb.PreCommitRecord(info=pre_commit_info_to_pb(value.info), state=_SUBMISSION_TO[value.state],
                              landing_epoch=value.landing_epoch, reject_reason=value.reject_reason)


def _pre_commit_record_from_pb(msg: pb.PreCommitRecord, field: str) -> PreCommitRecord:
    return PreCommitRecord(
        info=pre_commit_info_from_pb(required(msg, "info", field), _path(field, "info"), exact=False),
        state=_enum_from(_SUBMISSION_FROM, msg.state, _path(field, "state"), "Submission"),
        landing_epoch=_optional_scalar(msg, "landing_epoch"),
        reject_reason=_optional_scalar(msg, "reject_reason"),
    )


def _commit_record_to_pb(value: CommitRecord) -> pb.CommitRecord:
    return pb.CommitRecord(proof=value.proof, state=_SUBMISSION_TO[value.state],
                           landing_epoch=value.landing_epoch, reject_reason=value.reject_reason)


def _commit_record_from_pb(msg: pb.CommitRecord, field: str) -> CommitRecord:
    return CommitRecord(
        proof=bytes(msg.proof),
        state=_enum_from(_SUBMISSION_FROM, msg.state, _path(field, "state"), "Submission"),
        landing_epoch=_optional_scalar(msg, "landing_epoch"),
        reject_reason=_optional_scalar(msg, "reject_reason"),
    )


def _upgrade_record_to_pb(value: UpgradeRecord) -> pb.UpgradeRecord:
    return pb.UpgradeRecord(state=_UPGRADE_STATE_TO[value.state], comm_r=value.comm_r, comm_d=value.comm_d,
                            proof=value.proof, store=value.store)


def _upgrade_record_from_pb(msg: pb.UpgradeRecord, field: str) -> UpgradeRecord:
    return UpgradeRecord(
        state=_enum_from(_UPGRADE_STATE_FROM, msg.state, _path(field, "state"), "UpgradeState"),
        comm_r=_optional_scalar(msg, "comm_r"),
        comm_d=_optional_scalar(msg, "comm_d"),
        proof=_optional_scalar(msg, "proof"),
        store=_optional_scalar(msg, "store"),
    )


def sector_record_to_pb(value: SectorRecord) -> pb.SectorRecord:
    return pb.SectorRecord(
        id=sector_id_to_pb(value.id), proof=value.proof.name, created_at=value.created_at,
        holder=worker_ref_to_pb(value.holder),
        ticket=None if value.ticket is None else ticket_to_pb(value.ticket),
        pre_commit=None if value.pre_commit is None else _pre_commit_record_to_pb(value.pre_commit),
        seed=None if value.seed is None else seed_to_pb(value.seed),
        commit=None if value.commit is None else _commit_record_to_pb(value.commit),
        store=value.store, finished=value.finished, aborted=value.aborted, abort_reason=value.abort_reason,
        rebuild=None if value.rebuild is None else _REBUILD_STATE_TO[value.rebuild],
        upgrade=None if value.upgrade is None else _upgrade_record_to_pb(value.upgrade),
        rebuild_abort_reason=value.rebuild_abort_reason,
    )


def sector_record_from_pb(msg: pb.SectorRecord, field: str = "sector") -> SectorRecord:
    def sub(name: str, parse):
        return parse(getattr(msg, name), _path(field, name)) if msg.HasField(name) else None

    rebuild = _optional_scalar(msg, "rebuild")
    return SectorRecord(
        id=sector_id_from_pb(required(msg, "id", field), _path(field, "id")),
        proof=_seal_proof(msg.proof, _path(field, "proof")),
        created_at=msg.created_at,
        holder=_stored_worker_ref_from_pb(msg.holder, _path(field, "holder")),
        ticket=sub("ticket", lambda m, f: ticket_from_pb(m, f, exact=False)),
        pre_commit=sub("pre_commit", _pre_commit_record_from_pb),
        seed=sub("seed", seed_from_pb),
        commit=sub("commit", _commit_record_from_pb),
        store=_optional_scalar(msg, "store"),
        finished=msg.finished,
        aborted=msg.aborted,
        abort_reason=_optional_scalar(msg, "abort_reason"),
        rebuild=None if rebuild is None else _enum_from(_REBUILD_STATE_FROM, rebuild, _path(field, "rebuild"),
                                                        "RebuildState"),
        upgrade=sub("upgrade", _upgrade_record_from_pb),
        rebuild_abort_reason=_optional_scalar(msg, "rebuild_abort_reason"),
    )


def history_row_to_pb(value: HistoryRow) -> pb.HistoryRow:
    return pb.HistoryRow(
        sector=sector_id_to_pb(value.sector), time=value.time, worker=worker_ref_to_pb(value.worker),
        prev=value.prev, next=value.next, event=value.event, failure_level=value.failure_level,
        failure_cause=value.failure_cause, failure_desc=value.failure_desc,
    )


def history_row_from_pb(msg: pb.HistoryRow, field: str = "history") -> HistoryRow:
    return HistoryRow(
        sector=sector_id_from_pb(required(msg, "sector", field), _path(field, "sector")),
        time=msg.time,
        worker=_stored_worker_ref_from_pb(msg.worker, _path(field, "worker")),
        prev=msg.prev, next=msg.next, event=msg.event,
        failure_level=_optional_scalar(msg, "failure_level"),
        failure_cause=_optional_scalar(msg, "failure_cause"),
        failure_desc=_optional_scalar(msg, "failure_desc"),
    )


# ---------------------------------------------------------------------------------------------
# worker heartbeats and liveness (ThreadSummary and WorkerPing are also importable from here)


def thread_summary_to_pb(value: ThreadSummary) -> pb.ThreadSummary:
    sector = None if value.sector is None else sector_id_to_pb(value.sector)
    return pb.ThreadSummary(index=value.index, plan=value.plan, state=value.state, sector=sector,
                            thread_state=value.thread_state)


def thread_summary_from_pb(msg: pb.ThreadSummary, field: str = "thread") -> ThreadSummary:
    sector = sector_id_from_pb(msg.sector, _path(field, "sector")) if msg.HasField("sector") else None
    return ThreadSummary(msg.index, msg.plan, msg.state, sector, msg.thread_state)


def worker_ping_to_pb(value: WorkerPing) -> pb.WorkerPingRequest:
    return pb.WorkerPingRequest(instance=value.instance, threads=[thread_summary_to_pb(t) for t in value.threads],
                                dest=value.dest, version=value.version,
                                summary=None if value.summary is None else pb.WorkerSummary(**vars(value.summary)))


def worker_ping_from_pb(msg: pb.WorkerPingRequest, field: str = "") -> WorkerPing:
    if not msg.instance:
        raise MalformedMessage(_path(field, "instance"), "missing: name the worker instance")
    instance = name_from_pb(msg.instance, _path(field, "instance"))
    threads = _thread_summaries_from_pb(msg.threads, _path(field, "threads"))
    for i, t in enumerate(threads):  # stored and shown: bounded like names
        for name in ("plan", "state", "thread_state"):
            name_from_pb(getattr(t, name), f"{_path(field, 'threads')}[{i}].{name}")
    dest = name_from_pb(msg.dest, _path(field, "dest")) if msg.dest else ""
    version = name_from_pb(msg.version, _path(field, "version")) if msg.version else ""
    summary = _summary_from_pb(msg.summary) if msg.HasField("summary") else None
    return WorkerPing(instance, threads, dest=dest, version=version, summary=summary)


def _thread_summaries_from_pb(msgs: Iterable[pb.ThreadSummary], field: str) -> tuple[ThreadSummary, ...]:
    return tuple(thread_summary_from_pb(t, f"{field}[{i}]") for i, t in enumerate(msgs))


_SUMMARY_FIELDS = ("threads", "empty", "paused", "running", "waiting", "errors")


def _summary_from_pb(msg: pb.WorkerSummary) -> WorkerSummary:
    return WorkerSummary(**{f: getattr(msg, f) for f in _SUMMARY_FIELDS})


def worker_status_to_pb(value: WorkerStatus) -> pb.WorkerStatus:
    return pb.WorkerStatus(
        instance=value.instance, last_seen=value.last_seen, lost=value.lost,
        sectors=[sector_id_to_pb(s) for s in value.sectors], silent_for=value.silent_for,
        last_ping=value.last_ping, threads=[thread_summary_to_pb(t) for t in value.threads], dest=value.dest,
        version=value.version, summary=None if value.summary is None else pb.WorkerSummary(**vars(value.summary)),
    )


def worker_status_from_pb(msg: pb.WorkerStatus, field: str = "worker") -> WorkerStatus:
    return WorkerStatus(
        instance=msg.instance,
        last_seen=_optional_scalar(msg, "last_seen"),
        lost=msg.lost,
        sectors=tuple(sector_id_from_pb(s, f"{_path(field, 'sectors')}[{i}]") for i, s in enumerate(msg.sectors)),
        silent_for=_optional_scalar(msg, "silent_for"),
        last_ping=_optional_scalar(msg, "last_ping"),
        threads=_thread_summaries_from_pb(msg.threads, _path(field, "threads")),
        dest=msg.dest,
        version=msg.version,
        summary=_summary_from_pb(msg.summary) if msg.HasField("summary") else None,
    )


# ---------------------------------------------------------------------------------------------
# the sector debug view


def deadline_to_pb(value: Deadline) -> pb.Deadline:
    return pb.Deadline(kind=_DEADLINE_KIND_TO[value.kind], start_epoch=value.start_epoch, window=value.window,
                       passed=value.passed)


def deadline_from_pb(msg: pb.Deadline, field: str = "deadline") -> Deadline:
    kind = _enum_from(_DEADLINE_KIND_FROM, msg.kind, _path(field, "kind"), "DeadlineKind")
    return Deadline(kind, msg.start_epoch, msg.window, msg.passed)


def deal_record_to_pb(value: DealRecord) -> pb.DealRecord:
    return pb.DealRecord(
        deal=deal_to_pb(value.deal), sector=None if value.sector is None else sector_id_to_pb(value.sector),
        for_upgrade=value.for_upgrade, quarantine=value.quarantine,
        quarantined_by=None if value.quarantined_by is None else sector_id_to_pb(value.quarantined_by),
    )


def deal_record_from_pb(msg: pb.DealRecord, field: str = "deal") -> DealRecord:
    def sector(name: str) -> SectorId | None:
        return sector_id_from_pb(getattr(msg, name), _path(field, name)) if msg.HasField(name) else None

    return DealRecord(deal_from_pb(required(msg, "deal", field), _path(field, "deal")), sector("sector"),
                      msg.for_upgrade, _optional_scalar(msg, "quarantine"), sector("quarantined_by"))


def sector_debug_to_pb(value: SectorDebug) -> pb.SectorDebug:
    thread = None if value.holder_thread is None else thread_summary_to_pb(value.holder_thread)
    return pb.SectorDebug(
        sector=sector_record_to_pb(value.record), history=[history_row_to_pb(h) for h in value.history],
        epoch=value.epoch, deadlines=[deadline_to_pb(d) for d in value.deadlines],
        holder=worker_status_to_pb(value.holder), holder_thread=thread,
        deals=[deal_record_to_pb(d) for d in value.deals],
    )


def sector_debug_from_pb(msg: pb.SectorDebug, field: str = "") -> SectorDebug:
    thread = msg.holder_thread
    return SectorDebug(
        record=sector_record_from_pb(required(msg, "sector", field), _path(field, "sector")),
        history=tuple(history_row_from_pb(h, f"{_path(field, 'history')}[{i}]") for i, h in enumerate(msg.history)),
        epoch=msg.epoch,
        deadlines=tuple(deadline_from_pb(d, f"{_path(field, 'deadlines')}[{i}]")
                        for i, d in enumerate(msg.deadlines)),
        holder=worker_status_from_pb(required(msg, "holder", field), _path(field, "holder")),
        holder_thread=thread_summary_from_pb(thread, _path(field, "holder_thread"))
        if msg.HasField("holder_thread") else None,
        deals=tuple(deal_record_from_pb(d, f"{_path(field, 'deals')}[{i}]") for i, d in enumerate(msg.deals)),
    )
