"""`RemoteManager`: the `SectorManager` of a standalone damocles-manager, over gRPC.

Same methods, arguments and return types as `interface.SectorManager` (plus the operator ones of
`EmbeddedManager`), so a worker cannot tell it from the embedded manager, except that the network
can fail: an unreachable manager, a call cut short or timing out raise `ManagerUnavailable` (the
worker retries); every other refusal raises `ManagerRequestError` with the manager's message.

Calls fail fast while the manager is down (no wait_for_ready), and the channel reconnects by
itself within `RECONNECT_MAX_BACKOFF_MS` once a manager listens on the address again.

Several addresses (managers on one PostgreSQL database, issue 10), in order of preference: a call
that the manager in use cannot serve (any `_TRANSIENT` status) is sent, once, to each of the others
in turn, each try bounded by `timeout`; the one that answers is used from then on. A refusal is an
answer: it is never sent elsewhere. Once a preferred address's channel is connected again, and
`failback_after` seconds after leaving it, calls go back to it.

Sending the same call to a second manager is safe because every manager serves the same database
and every call a worker makes is idempotent there (see `embedded.py`): allocation hands a thread
the job it already holds (`Tx.held_by`), a pre-commit or proof equal to the accepted one is answered
DuplicateSubmit, deals already assigned and a seed already drawn are answered again, a finalize or
abort report re-applies the same end state (the holder is kept), and a state report only appends a
history row. A manager killed after committing a call but before answering it therefore leaves
nothing that the retry on another manager could duplicate. A call that timed out may even still
run on the first manager while the second serves it: the allocations first upsert the worker's
row (`Tx.touch_worker`), which locks it, so one thread's allocations are serialized across managers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import grpc

from damocles_py.manager import convert
from damocles_py.manager import manager_pb2 as pb
from damocles_py.manager import manager_pb2_grpc as pb_grpc
from damocles_py.manager.convert import MalformedMessage
from damocles_py.fsm.failure import FailureCause
from damocles_py.manager.auth import read_token
from damocles_py.manager.db import DealRecord, HistoryRow, SectorRecord
from damocles_py.manager.interface import (
    AcquireDealsSpec,
    AllocatedSector,
    AllocateSpec,
    Deal,
    ManagerRequestError,
    ManagerUnavailable,
    NotTheHolder,
    OnChainStatus,
    PreCommitInfo,
    RebuildJob,
    SectorDebug,
    SectorId,
    SectorStateResp,
    SeedWait,
    SnapUpCandidate,
    SnapUpProofInfo,
    StateReport,
    SubmitResponse,
    Ticket,
    WorkerPing,
    WorkerRef,
    WorkerStatus,
)
from damocles_py.manager.server import GRPC_MESSAGE_OPTIONS

T = TypeVar("T")
log = logging.getLogger(__name__)

# gRPC's default reconnect backoff grows to 120s: after a manager restart, calls would keep
# failing for up to two minutes. Capped at 1s, the channel is back about a second after the manager.
RECONNECT_MAX_BACKOFF_MS = 1000
_CHANNEL_OPTIONS = [
    *GRPC_MESSAGE_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_BACKOFF_MS),
]
# After failing over, stay on the new manager at least this long before going back to a preferred
# one whose channel is connected again: a manager that accepts connections but hangs costs one
# timed-out call per interval, not one per call.
FAILBACK_AFTER = 30.0

# Statuses that say "not now" rather than "no" about the sector: the manager is down, restarting or
# too slow (CANCELLED: a manager shutting down cancels the calls it is serving), the farm token is
# wrong (an operator fixes it; the sector must not be given up for that), or the manager hit a bug.
# Only a refusal about the sector itself (NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION, a
# malformed request) is a `ManagerRequestError`, which may end a final report locally.
_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
              grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


class SectorNotFound(ManagerRequestError):
    """The manager does not know the sector the request names (status NOT_FOUND)."""


def _error_of(e: grpc.RpcError, rpc: str, addr: str) -> Exception:
    code, details = e.code(), e.details() or ""
    if code in _TRANSIENT:
        return ManagerUnavailable(f"sector manager at {addr} unavailable ({rpc}: {code.name}): {details}")
    if code is grpc.StatusCode.NOT_FOUND:
        return SectorNotFound(details)
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return NotTheHolder(details)
    return ManagerRequestError(details or f"{rpc} failed: {code.name}")


class RemoteManager:
    """`addr`: one `host:port`, or several in order of preference (failover, see the module doc).
    `token_file` (or `token`): the farm's token, the same for every manager, sent with every call;
    without it only the reads are served by a manager that requires it."""

    def __init__(self, addr: str | Sequence[str], timeout: float = 30.0, token_file: Path | str | None = None,
                 token: str | None = None, failback_after: float = FAILBACK_AFTER):
        self.addrs: tuple[str, ...] = (addr,) if isinstance(addr, str) else tuple(addr)
        if not self.addrs:
            raise ValueError("RemoteManager needs at least one manager address")
        self.timeout = timeout
        self.failback_after = failback_after
        if token is None and token_file is not None:
            token = read_token(Path(token_file))
        self._metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
        self._closed = False
        self._channels = [grpc.insecure_channel(a, options=_CHANNEL_OPTIONS) for a in self.addrs]
        self._stubs = [pb_grpc.SectorManagerStub(c) for c in self._channels]
        self._lock = threading.Lock()
        self._current = 0  # index of the address in use
        self._left_at = 0.0  # monotonic time calls last moved to a less preferred address
        # while on a later address: readiness of each preferred channel (they keep reconnecting)
        self._comeback: dict[int, grpc.Future] = {}

    @property
    def addr(self) -> str:
        """The address calls go to now."""
        return self.addrs[self._current]

    def close(self) -> None:
        self._closed = True
        with self._lock:
            for ready in self._comeback.values():
                ready.cancel()
            self._comeback.clear()
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> "RemoteManager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, rpc: str, request, parse: Callable[[object], T] = lambda response: response) -> T:
        """Call `rpc` and parse its response; gRPC and parse failures become the interface's errors.

        Tries the address in use, then (if it cannot serve the call) each other address once."""
        if self._closed:
            raise ManagerUnavailable(f"the client of the sector manager at {self.addr} is closed")
        first = self._pick()
        failures: list[ManagerUnavailable] = []
        for i in [*range(first, len(self.addrs)), *range(first)]:
            try:
                response = getattr(self._stubs[i], rpc)(request, timeout=self.timeout, wait_for_ready=False,
                                                        metadata=self._metadata)
            except grpc.RpcError as e:
                error = _error_of(e, rpc, self.addrs[i])
                if not isinstance(error, ManagerUnavailable):
                    raise error from None  # the manager answered: another would answer the same
                failures.append(error)
                continue
            self._settle(i, failures)
            try:
                return parse(response)
            except MalformedMessage as e:
                # A manager speaking another version of the API: retrying will not help.
                raise ManagerRequestError(
                    f"{rpc}: malformed response from the sector manager at {self.addrs[i]}: {e}") from None
        if len(failures) == 1:
            raise failures[0]
        raise ManagerUnavailable(f"no sector manager could serve {rpc}: " + "; ".join(map(str, failures)))

    def _pick(self) -> int:
        """The address to try first: the one in use, or a preferred one that is back."""
        with self._lock:
            if self._current and time.monotonic() - self._left_at >= self.failback_after:
                back = next((i for i in range(self._current)
                             if i in self._comeback and self._comeback[i].done()
                             and not self._comeback[i].cancelled()), None)
                if back is not None:
                    log.warning("sector manager at %s is connected again; going back to it from %s",
                                self.addrs[back], self.addrs[self._current])
                    self._use(back)
            return self._current

    def _settle(self, i: int, failures: list[ManagerUnavailable]) -> None:
        """Address `i` served a call: use it from now on."""
        with self._lock:
            if i == self._current:
                return
            if i > self._current:
                self._left_at = time.monotonic()
                log.warning("failing over to the sector manager at %s: %s", self.addrs[i],
                            "; ".join(map(str, failures)))
            else:
                log.warning("sector manager at %s answers again; going back to it from %s",
                            self.addrs[i], self.addrs[self._current])
            self._use(i)

    def _use(self, i: int) -> None:
        """Send calls to address `i`; watch the readiness of the preferred ones (lock held)."""
        self._current = i
        for j in [j for j in self._comeback if j >= i]:
            self._comeback.pop(j).cancel()
        for j in range(i):
            if j not in self._comeback:
                # keeps the channel reconnecting (backoff capped at RECONNECT_MAX_BACKOFF_MS)
                self._comeback[j] = grpc.channel_ready_future(self._channels[j])

    # -----------------------------------------------------------------------------------------
    # sealing

    def allocate_sector(self, spec: AllocateSpec, worker: WorkerRef) -> AllocatedSector | None:
        request = pb.AllocateSectorRequest(spec=convert.allocate_spec_to_pb(spec),
                                           worker=convert.worker_ref_to_pb(worker))
        return self._call("AllocateSector", request, lambda r: (
            convert.allocated_sector_from_pb(r.sector) if r.HasField("sector") else None))

    def acquire_deals(self, sector: SectorId, spec: AcquireDealsSpec) -> list[Deal]:
        request = pb.AcquireDealsRequest(sector=convert.sector_id_to_pb(sector),
                                         spec=convert.acquire_deals_spec_to_pb(spec))
        return self._call("AcquireDeals", request, lambda r: list(convert.deals_from_pb(r.deals, "deals")))

    def assign_ticket(self, sector: SectorId) -> Ticket:
        request = pb.AssignTicketRequest(sector=convert.sector_id_to_pb(sector))
        return self._call("AssignTicket", request, lambda r: convert.ticket_from_pb(convert.required(r, "ticket")))

    def submit_pre_commit(self, sector: AllocatedSector, info: PreCommitInfo, reset: bool) -> SubmitResponse:
        request = pb.SubmitPreCommitRequest(sector=convert.allocated_sector_to_pb(sector),
                                            info=convert.pre_commit_info_to_pb(info), reset=reset)
        return self._call("SubmitPreCommit", request, convert.submit_response_from_pb)

    def poll_pre_commit_state(self, sector: SectorId) -> OnChainStatus:
        request = pb.PollPreCommitStateRequest(sector=convert.sector_id_to_pb(sector))
        return self._call("PollPreCommitState", request, convert.on_chain_status_from_pb)

    def reserve_store(self, sector: SectorId, size: int, candidates: list[str]) -> str | None:
        request = pb.ReserveStoreRequest(sector=convert.sector_id_to_pb(sector), size=size, candidates=candidates)
        return self._call("ReserveStore", request, lambda r: r.store if r.HasField("store") else None)

    def submit_persisted(self, sector: SectorId, store: str, is_upgrade: bool) -> bool:
        request = pb.SubmitPersistedRequest(sector=convert.sector_id_to_pb(sector), store=store, is_upgrade=is_upgrade)
        return self._call("SubmitPersisted", request, lambda r: r.accepted)

    def wait_seed(self, sector: AllocatedSector) -> SeedWait:
        request = pb.WaitSeedRequest(sector=convert.sector_id_to_pb(sector.id), proof=sector.proof.name)
        return self._call("WaitSeed", request, convert.seed_wait_from_pb)

    def submit_proof(self, sector: SectorId, proof: bytes, reset: bool) -> SubmitResponse:
        request = pb.SubmitProofRequest(sector=convert.sector_id_to_pb(sector), proof=bytes(proof), reset=reset)
        return self._call("SubmitProof", request, convert.submit_response_from_pb)

    def poll_proof_state(self, sector: SectorId) -> OnChainStatus:
        request = pb.PollProofStateRequest(sector=convert.sector_id_to_pb(sector))
        return self._call("PollProofState", request, convert.on_chain_status_from_pb)

    # -----------------------------------------------------------------------------------------
    # snap-up and rebuild

    def allocate_snapup_sector(self, spec: AllocateSpec, deals: AcquireDealsSpec,
                               worker: WorkerRef) -> SnapUpCandidate | None:
        request = pb.AllocateSnapUpSectorRequest(spec=convert.allocate_spec_to_pb(spec),
                                                 deals=convert.acquire_deals_spec_to_pb(deals),
                                                 worker=convert.worker_ref_to_pb(worker))
        return self._call("AllocateSnapUpSector", request, lambda r: (
            convert.snapup_candidate_from_pb(r.candidate) if r.HasField("candidate") else None))

    def submit_snapup_proof(self, sector: SectorId, info: SnapUpProofInfo) -> SubmitResponse:
        request = pb.SubmitSnapUpProofRequest(sector=convert.sector_id_to_pb(sector),
                                              info=convert.snapup_proof_info_to_pb(info))
        return self._call("SubmitSnapUpProof", request, convert.submit_response_from_pb)

    def allocate_rebuild_sector(self, spec: AllocateSpec, worker: WorkerRef) -> RebuildJob | None:
        request = pb.AllocateRebuildSectorRequest(spec=convert.allocate_spec_to_pb(spec),
                                                  worker=convert.worker_ref_to_pb(worker))
        return self._call("AllocateRebuildSector", request, lambda r: (
            convert.rebuild_job_from_pb(r.job) if r.HasField("job") else None))

    # -----------------------------------------------------------------------------------------
    # reports

    def report_state(self, sector: SectorId, report: StateReport) -> SectorStateResp:
        request = pb.ReportStateRequest(sector=convert.sector_id_to_pb(sector),
                                        report=convert.state_report_to_pb(report))
        return self._call("ReportState", request, convert.sector_state_resp_from_pb)

    def report_finalized(self, sector: SectorId, *, worker: WorkerRef) -> None:
        self._call("ReportFinalized", pb.ReportFinalizedRequest(sector=convert.sector_id_to_pb(sector),
                                                                worker=convert.worker_ref_to_pb(worker)))

    def report_aborted(self, sector: SectorId, reason: str, *, worker: WorkerRef,
                       cause: FailureCause | None = None) -> None:
        self._call("ReportAborted", pb.ReportAbortedRequest(
            sector=convert.sector_id_to_pb(sector), reason=reason, worker=convert.worker_ref_to_pb(worker),
            cause=None if cause is None else cause.name))

    # -----------------------------------------------------------------------------------------
    # operator actions and reads (as on EmbeddedManager)

    def request_rebuild(self, sector_id: SectorId) -> None:
        self._call("RequestRebuild", pb.RequestRebuildRequest(sector=convert.sector_id_to_pb(sector_id)))

    def abort_sector(self, sector_id: SectorId, reason: str) -> None:
        self._call("AbortSector", pb.AbortSectorRequest(sector=convert.sector_id_to_pb(sector_id), reason=reason))

    def sector_with_history(self, sector_id: SectorId) -> tuple[SectorRecord, list[HistoryRow]] | None:
        """A sector's record and status history in one call; None if the manager does not know it."""
        request = pb.GetSectorRequest(sector=convert.sector_id_to_pb(sector_id))
        try:
            return self._call("GetSector", request, lambda r: (
                convert.sector_record_from_pb(convert.required(r, "sector")),
                [convert.history_row_from_pb(h, f"history[{i}]") for i, h in enumerate(r.history)],
            ))
        except SectorNotFound:
            return None

    def sector(self, sector_id: SectorId) -> SectorRecord | None:
        found = self.sector_with_history(sector_id)
        return None if found is None else found[0]

    def history(self, sector_id: SectorId) -> list[HistoryRow]:
        found = self.sector_with_history(sector_id)
        return [] if found is None else found[1]

    def sectors(self) -> list[SectorRecord]:
        return self._call("ListSectors", pb.ListSectorsRequest(), lambda r: [
            convert.sector_record_from_pb(s, f"sectors[{i}]") for i, s in enumerate(r.sectors)])

    def sector_debug(self, sector_id: SectorId) -> SectorDebug | None:
        """A sector's record, history, chain deadlines and holder liveness; None if unknown."""
        request = pb.DebugSectorRequest(sector=convert.sector_id_to_pb(sector_id))
        try:
            return self._call("DebugSector", request, convert.sector_debug_from_pb)
        except SectorNotFound:
            return None

    def deals(self) -> list[DealRecord]:
        return self._call("ListDeals", pb.ListDealsRequest(), lambda r: [
            convert.deal_record_from_pb(d, f"deals[{i}]") for i, d in enumerate(r.deals)])

    def import_pieces(self) -> list[Deal]:
        """New files in the manager's pieces dir become deals now (commP computed by the manager)."""
        return self._call("ImportPieces", pb.ImportPiecesRequest(),
                          lambda r: list(convert.deals_from_pb(r.deals, "deals")))

    # -----------------------------------------------------------------------------------------
    # worker liveness

    def worker_ping(self, ping: WorkerPing) -> None:
        self._call("WorkerPing", convert.worker_ping_to_pb(ping))

    def workers(self) -> list[WorkerStatus]:
        return self._call("ListWorkers", pb.ListWorkersRequest(), lambda r: [
            convert.worker_status_from_pb(w, f"workers[{i}]") for i, w in enumerate(r.workers)])

    def forget_worker_ping(self, instance: str) -> bool:
        return self._call("ForgetWorkerPing", pb.ForgetWorkerPingRequest(instance=instance), lambda r: r.forgotten)
