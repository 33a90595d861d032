"""The sector manager's gRPC server: any `SectorManager` (normally an `EmbeddedManager`) over the network.

Each rpc parses its whole request first (`convert`), so a malformed request is refused with
INVALID_ARGUMENT naming the field and never reaches the manager. Errors the manager raises become
statuses the client turns back into the same exceptions (see `client.RemoteManager`):

    ManagerRequestError -> NOT_FOUND (the request's sector is unknown) or FAILED_PRECONDITION
    NotTheHolder        -> PERMISSION_DENIED (a report about a sector another thread holds)
    ManagerUnavailable  -> UNAVAILABLE (the worker retries)
    anything else       -> INTERNAL, logged here with its traceback; the client gets one line

With a farm token (`TokenAuth`), every call but the reads needs `authorization: Bearer <token>`;
without one the server only listens on loopback. Requests are capped at MAX_REQUEST_BYTES.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc

from damocles_py.errors import UserError
from damocles_py.grpc_strict import StrictDecoding
from damocles_py.manager import convert
from damocles_py.manager import manager_pb2 as pb
from damocles_py.manager import manager_pb2_grpc as pb_grpc
from damocles_py.manager.convert import MalformedMessage, required
from damocles_py.manager.interface import (
    ManagerRequestError,
    ManagerUnavailable,
    NotTheHolder,
    SectorId,
    WorkerPing,
)

log = logging.getLogger(__name__)

# Sector lists and rebuild jobs can outgrow gRPC's 4 MiB default (answers; the client takes them).
MAX_MESSAGE_BYTES = 64 << 20
GRPC_MESSAGE_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
# No request needs more (the biggest is a proof, a few KiB; a ping of a thousand threads is ~100 KiB):
# anything larger is refused with RESOURCE_EXHAUSTED before it is decoded.
MAX_REQUEST_BYTES = 1 << 20

# The calls that change nothing: served without the farm token (operators' reads, chain polls).
READ_ONLY_METHODS = frozenset({"GetSector", "ListSectors", "DebugSector", "ListWorkers", "ListDeals",
                               "PollPreCommitState", "PollProofState"})


def _deny(request, context: grpc.ServicerContext):
    context.abort(grpc.StatusCode.UNAUTHENTICATED,
                  "this call needs the manager's farm token (metadata authorization: Bearer <token>). Fix: set "
                  "[sector_manager.rpc_client] token_file (worker) or --token-file (CLI) to the manager's token file")


class TokenAuth(grpc.ServerInterceptor):
    """Refuses every call but READ_ONLY_METHODS that does not carry the farm token."""

    _denied = grpc.unary_unary_rpc_method_handler(_deny)

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method.rsplit("/", 1)[-1]
        if method in READ_ONLY_METHODS:
            return continuation(handler_call_details)
        given = next((value for key, value in handler_call_details.invocation_metadata or ()
                      if key == "authorization"), "")
        given = given.encode() if isinstance(given, str) else bytes(given)
        if hmac.compare_digest(given, self._expected):
            return continuation(handler_call_details)
        return self._denied


def is_loopback(host: str) -> bool:
    """`host` (of a listen address) only reachable from this machine."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


@dataclass(frozen=True)
class PingRecord:
    ping: WorkerPing  # the instance and the threads of its last ping
    received_at: float  # unix seconds, on the manager's clock


def _sector_in(request) -> SectorId | None:
    """The sector a request is about, if it names one (AllocatedSector carries it as `id`)."""
    if "sector" not in request.DESCRIPTOR.fields_by_name or not request.HasField("sector"):
        return None
    msg = request.sector
    if isinstance(msg, pb.AllocatedSector):
        msg = msg.id
    return SectorId(msg.miner, msg.number)


def _rpc(handler):
    """Turn what a handler raises into a status with a one-line message; never a traceback."""

    @functools.wraps(handler)
    def wrapper(self: "ManagerService", request, context: grpc.ServicerContext):
        try:
            return handler(self, request, context)
        except MalformedMessage as e:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {e}"
        except NotTheHolder as e:
            code, message = grpc.StatusCode.PERMISSION_DENIED, str(e)
        except ManagerRequestError as e:
            code, message = self._refusal_status(request), str(e)
        except ManagerUnavailable as e:
            code, message = grpc.StatusCode.UNAVAILABLE, str(e)
        except Exception as e:  # noqa: BLE001 - the client gets a status, the log gets the traceback
            log.exception("%s failed", handler.__name__)
            code = grpc.StatusCode.INTERNAL
            message = f"internal error in the manager ({handler.__name__}): {type(e).__name__}: {e}; see its log"
        # abort() raises: call it outside the try, or the handlers above would catch it.
        context.abort(code, message)

    return wrapper


class ManagerService(pb_grpc.SectorManagerServicer):
    """Serves `manager`: the `SectorManager` methods plus the operator ones of `EmbeddedManager`
    (request_rebuild, abort_sector, sector, sectors, history, worker_ping, workers, sector_debug)."""

    def __init__(self, manager):
        self.manager = manager

    def _refusal_status(self, request) -> grpc.StatusCode:
        """NOT_FOUND when the request's sector is unknown, else FAILED_PRECONDITION: the request
        is well-formed, but the manager refuses it in the sector's current state. (Asking the
        manager beats matching its message text.)"""
        sector = _sector_in(request)
        lookup = getattr(self.manager, "sector", None)
        try:
            unknown = sector is not None and lookup is not None and lookup(sector) is None
        except Exception:  # noqa: BLE001 - only choosing a status code; the refusal stands
            log.warning("could not look up sector %s to classify a refusal", sector, exc_info=True)
            unknown = False
        return grpc.StatusCode.NOT_FOUND if unknown else grpc.StatusCode.FAILED_PRECONDITION

    def worker_pings(self) -> dict[str, PingRecord]:
        """The last ping of each worker instance that ever pinged (kept by the manager, so it
        survives restarts; `manager.workers()` has the fuller picture)."""
        return {w.instance: PingRecord(WorkerPing(w.instance, w.threads), w.last_ping)
                for w in self.manager.workers() if w.last_ping is not None}

    # -----------------------------------------------------------------------------------------
    # sealing

    @_rpc
    def AllocateSector(self, request, context):
        spec = convert.allocate_spec_from_pb(request.spec)
        worker = convert.worker_ref_from_pb(required(request, "worker"))
        sector = self.manager.allocate_sector(spec, worker)
        return pb.AllocateSectorResponse(sector=None if sector is None else convert.allocated_sector_to_pb(sector))

    @_rpc
    def AcquireDeals(self, request, context):
        sector = convert.sector_id_from_pb(required(request, "sector"))
        spec = convert.acquire_deals_spec_from_pb(request.spec)
        deals = self.manager.acquire_deals(sector, spec)
        return pb.AcquireDealsResponse(deals=[convert.deal_to_pb(d) for d in deals])

    @_rpc
    def AssignTicket(self, request, context):
        sector = convert.sector_id_from_pb(required(request, "sector"))
        return pb.AssignTicketResponse(ticket=convert.ticket_to_pb(self.manager.assign_ticket(sector)))

    @_rpc
    def SubmitPreCommit(self, request, context):
        sector = convert.allocated_sector_from_pb(required(request, "sector"))
        info = convert.pre_commit_info_from_pb(required(request, "info"))
        return convert.submit_response_to_pb(self.manager.submit_pre_commit(sector, info, request.reset))

    @_rpc
    def PollPreCommitState(self, request, context):
        sector = convert.sector_id_from_pb(required(request, "sector"))
        return convert.on_chain_status_to_pb(self.manager.poll_pre_commit_state(sector))

    @_rpc
    def ReserveStore(self, request, context):
        sector = convert.sector_id_from_pb(required(request, "sector"))
        size = convert.count_from_pb(request.size, "size")
        return pb.ReserveStoreResponse(store=self.manager.reserve_store(sector, size, list(request.candidates)))

    @_rpc
    def SubmitPersisted(self, request, context):
        sector = convert.sector_id_from_pb(required(request, "sector"))
        accepted = self.manager.submit_persisted(sector, request.store, request.is_upgrade)
        return pb.SubmitPersistedResponse(accepted=accepted)

    @_rpc
    def WaitSeed(self, request, context):
        sector = convert.allocated_sector_from_pb(pb.AllocatedSector(id=required(request, "sector"),
                                                                     proof=request.proof))
        return convert.seed_wait_to_pb(self.manager.wait_seed(sector))

    @_rpc
    def SubmitProof(self, request, context):
        sector = convert.sector_id_from_pb(required(request, "sector"))
        # The proof's bytes go as they are: a malformed proof is the manager's to reject (Rejected).
        return convert.submit_response_to_pb(self.manager.submit_proof(sector, bytes(request.proof), request.reset))

    @_rpc
    def PollProofState(self, request, context):
        sector = convert.sector_id_from_pb(required(request, "sector"))
        return convert.on_chain_status_to_pb(self.manager.poll_proof_state(sector))

    # -----------------------------------------------------------------------------------------
    # snap-up and rebuild

    @_rpc
    def AllocateSnapUpSector(self, request, context):
        spec = convert.allocate_spec_from_pb(request.spec)
        deals = convert.acquire_deals_spec_from_pb(request.deals, "deals")
        worker = convert.worker_ref_from_pb(required(request, "worker"))
        candidate = self.manager.allocate_snapup_sector(spec, deals, worker)
        return pb.AllocateSnapUpSectorResponse(
            candidate=None if candidate is None else convert.snapup_candidate_to_pb(candidate))

    @_rpc
    def SubmitSnapUpProof(self, request, context):
        sector = convert.sector_id_from_pb(required(request, "sector"))
        info = convert.snapup_proof_info_from_pb(required(request, "info"))
        return convert.submit_response_to_pb(self.manager.submit_snapup_proof(sector, info))

    @_rpc
    def AllocateRebuildSector(self, request, context):
        spec = convert.allocate_spec_from_pb(request.spec)
        worker = convert.worker_ref_from_pb(required(request, "worker"))
        job = self.manager.allocate_rebuild_sector(spec, worker)
        return pb.AllocateRebuildSectorResponse(job=None if job is None else convert.rebuild_job_to_pb(job))

    # -----------------------------------------------------------------------------------------
    # reports

    @_rpc
    def ReportState(self, request, context):
        sector = convert.sector_id_from_pb(required(request, "sector"))
        report = convert.state_report_from_pb(required(request, "report"))
        return convert.sector_state_resp_to_pb(self.manager.report_state(sector, report))

    @_rpc
    def ReportFinalized(self, request, context):
        sector = convert.sector_id_from_pb(required(request, "sector"))
        worker = convert.worker_ref_from_pb(required(request, "worker"))
        self.manager.report_finalized(sector, worker=worker)
        return pb.ReportFinalizedResponse()

    @_rpc
    def ReportAborted(self, request, context):
        sector = convert.sector_id_from_pb(required(request, "sector"))
        worker = convert.worker_ref_from_pb(required(request, "worker"))
        cause = convert.failure_cause_from_pb(request, "cause")
        self.manager.report_aborted(sector, request.reason, worker=worker, cause=cause)
        return pb.ReportAbortedResponse()

    # -----------------------------------------------------------------------------------------
    # operator actions and reads

    @_rpc
    def RequestRebuild(self, request, context):
        self.manager.request_rebuild(convert.sector_id_from_pb(required(request, "sector")))
        return pb.RequestRebuildResponse()

    @_rpc
    def AbortSector(self, request, context):
        sector = convert.sector_id_from_pb(required(request, "sector"))
        if not request.reason:
            raise MalformedMessage("reason", "missing: say why the sector is aborted")
        self.manager.abort_sector(sector, request.reason)
        return pb.AbortSectorResponse()

    @_rpc
    def GetSector(self, request, context):
        sector_id = convert.sector_id_from_pb(required(request, "sector"))
        record = self.manager.sector(sector_id)
        if record is None:
            raise ManagerRequestError(f"unknown sector {sector_id}")  # -> NOT_FOUND
        history = [convert.history_row_to_pb(h) for h in self.manager.history(sector_id)]
        return pb.GetSectorResponse(sector=convert.sector_record_to_pb(record), history=history)

    @_rpc
    def ListSectors(self, request, context):
        return pb.ListSectorsResponse(sectors=[convert.sector_record_to_pb(s) for s in self.manager.sectors()])

    @_rpc
    def DebugSector(self, request, context):
        sector_id = convert.sector_id_from_pb(required(request, "sector"))
        debug = self.manager.sector_debug(sector_id)
        if debug is None:
            raise ManagerRequestError(f"unknown sector {sector_id}")  # -> NOT_FOUND
        return convert.sector_debug_to_pb(debug)

    @_rpc
    def ListDeals(self, request, context):
        return pb.ListDealsResponse(deals=[convert.deal_record_to_pb(d) for d in self.manager.deals()])

    @_rpc
    def ImportPieces(self, request, context):
        return pb.ImportPiecesResponse(deals=[convert.deal_to_pb(d) for d in self.manager.import_pieces()])

    # -----------------------------------------------------------------------------------------
    # worker liveness

    @_rpc
    def WorkerPing(self, request, context):
        self.manager.worker_ping(convert.worker_ping_from_pb(request))
        return pb.WorkerPingResponse()

    @_rpc
    def ListWorkers(self, request, context):
        return pb.ListWorkersResponse(workers=[convert.worker_status_to_pb(w) for w in self.manager.workers()])

    @_rpc
    def ForgetWorkerPing(self, request, context):
        instance = convert.name_from_pb(request.instance, "instance")
        return pb.ForgetWorkerPingResponse(forgotten=self.manager.forget_worker_ping(instance))


def serve_manager(manager, address: str, service: ManagerService | None = None,
                  max_workers: int = 16,
                  interceptors: Sequence[grpc.ServerInterceptor] | None = None,
                  token: str | None = None) -> tuple[grpc.Server, int]:
    """Start serving `manager` on `address` ("host:port"; port 0 picks a free one).

    Returns the started server and the port it listens on. `service` lets the caller keep the
    servicer; by default one is made for `manager`. `interceptors` see every call (e.g. the
    metrics' one, `metrics.manager.ManagerMetrics.interceptor`). `token`: the farm token mutating
    calls must carry; None (no auth) is refused unless `address` is a loopback one.
    """
    host = address.rpartition(":")[0]
    if token is None and not is_loopback(host):
        raise UserError(f"refusing to serve the sector manager on {address} without a farm token: anyone who "
                        f"can reach it could finish or abort any sector. Fix: drop --no-auth (the token is then "
                        f"required), or listen on 127.0.0.1")
    # No SO_REUSEPORT: gRPC sets it by default, and a second manager started on the same port would
    # then bind too and silently take half the calls. Refusing the port is the clear failure.
    options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_receive_message_length", MAX_REQUEST_BYTES), ("grpc.so_reuseport", 0)]
    # auth first: a caller without the token learns nothing, not even whether its bytes decode
    chain = [*(interceptors or ()), *([TokenAuth(token)] if token is not None else []), StrictDecoding()]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="manager-rpc"),
                         options=options, interceptors=chain or None)
    pb_grpc.add_SectorManagerServicer_to_server(service or ManagerService(manager), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:  # some gRPC versions raise instead of returning 0
        port = 0
    if port == 0:
        raise UserError(f"cannot listen on {address} for the sector manager API (in use, or not a host:port?). "
                        f"Fix: pass another --listen address, or stop the process using it")
    server.start()
    return server, port
