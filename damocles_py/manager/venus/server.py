"""Our manager serves damocles-manager's `Venus.*` JSON-RPC API, so an unmodified damocles-worker
(Rust) seals against it (reference `damocles-rpc.md` §1), beside our gRPC API, from the same
`EmbeddedManager` (the same SQLite state: both kinds of workers can share one manager).

`damocles-manager run --venus-listen HOST:PORT` serves it at `POST /rpc/v0` (and the deals' piece
files at `GET /piecestore/<piece CID>`, §1.9) with the shared `jsonrpc.server.JSONRPCServer`.
Params are decoded and results encoded by the worker-side codec (`codec.py`, one codec for both
sides); shapes follow damocles' serde types (keys are case-sensitive here, where go-jsonrpc would
match them in any case: damocles-worker sends them exactly). Errors as damocles-manager answers:
a sector the manager does not know is code 11001 (the worker aborts it); a refusal (not the holder,
a bad proof type, no token) is code 1 (the worker retries: temporary); malformed params -32602;
the methods we do not serve (unseal, wdpost: a manager without those modules) -32601.

What we answer where Venus and our manager differ:
- AllocateSector/AllocateSanpUpSector/AllocateRebuildSector: `AllowedProofTypes` numbers we do
  not seal (synthetic / NI-PoRep, 10.., 15..) are ignored; a list of only such types gets nothing
  (null). Empty lists mean "any", as in damocles.
- AcquireDeals: our deals as `SectorPiece`s of the builtin market (`DealID` = our deal id,
  `AllocationID` 0, `IsBuiltinMarket` true); no deals: null. The piece data: `/piecestore/<CID>`.
- WaitSeed: `Delay` in whole seconds, at least 1 while the seed is not there yet.
- ReportState: `Failure.Level` is stored lower-cased; a `Desc` that starts with one of our failure
  cause names (`PC1Failed: ...`, as our worker writes it) is stored as that cause.
- AllocateRebuildSector: `PiecesV2` holds the sector's deals (null for CC); for an upgraded sector
  `IsSnapUp` is true, `PiecesV2` holds the upgrade's deals and `UpgradePublic.CommR` the CC
  sector key's comm_r (what damocles rebuilds before encoding the update).
- WorkerPing: `Name` is the worker instance, `Dest` (its admin API) and `Version` and `Summary` are
  stored for `util worker` (`WorkerGetPingInfo`, `WorkerPingInfoList`); empty Name/Dest refused.

Who is calling (issue 7 items 10 and 17). Venus requests carry no worker identity at allocation;
damocles-worker names itself only in ReportState (`Worker: {Instance, Location}`, the location is
the thread's sealing store, unique per thread of a box). So:
- A caller that sends `X-Damocles-Worker: instance=<name>&thread=<index>&location=<path>`
  (url-encoded; `client.worker_header()` builds it; our worker sends it) is that WorkerRef, exactly as
  over gRPC: allocation is idempotent (the same sector again until it is reported), and every
  final report must come from the holding thread.
- Any other caller (damocles-worker) is anonymous: each allocation is new (not idempotent, as with
  damocles-manager: an answer lost on the way strands a sector number, as there), and the sector is
  held by `venus@<caller IP>` with a thread number >= 2**31 unique to that allocation. Its first
  ReportState binds it to `{Instance, Location}` (thread 2**32-1 means "named by location"); from
  then on a ReportState naming another thread is refused. ReportFinalized/ReportAborted name
  nobody: they are accepted for a sector held by an anonymous Venus caller (from the allocating
  IP while unbound), and refused for a sector an identified worker (ours, over gRPC or with the
  header) holds. The manager's own rules still apply (a sector finishes only with its proof
  accepted).

Auth. damocles-worker sends no Authorization header. Reads (`PollPreCommitState`,
`PollProofState`, `StoreBasicInfo`, `WorkerGetPingInfo`, `WorkerPingInfoList`) are open; every
other call (and `/piecestore/`) needs `Authorization: Bearer <farm token>` or a caller address in
`--venus-trust` (IPs or networks; anyone at such an address can then allocate, finish and abort
sectors and read the pieces: list only the sealing boxes). With `--no-auth` and no trust list,
everything is open, which `run` allows on loopback only.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import secrets
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from damocles_py.fsm.failure import FailureCause
from damocles_py.jsonrpc.server import (
    INVALID_PARAMS,
    LOGIC_ERROR,
    Call,
    JSONRPCServer,
    ProtocolError,
    RPCError,
)
from damocles_py.manager import interface as i
from damocles_py.manager.interface import (
    MAX_NAME_CHARS,
    ManagerRequestError,
    ManagerUnavailable,
    NotTheHolder,
    SectorId,
    WorkerRef,
)
from damocles_py.manager.venus import codec as w
from damocles_py.manager.venus.cid import CidError, CommitmentKind, cid_to_commitment
# the header's format lives with the client that sends it (`worker_header`)
from damocles_py.manager.venus.client import REGISTERED_SEAL_PROOF, SEAL_PROOF_OF, WORKER_HEADER
from damocles_py.manager.venus.errors import ERR_SECTOR_STATE_NOT_FOUND

log = logging.getLogger(__name__)

RPC_PATH = "/rpc/v0"
PIECESTORE_PATH = "/piecestore/"
DEFAULT_VENUS_PORT = 1789  # damocles-manager's --listen default
ANONYMOUS_PREFIX = "venus@"
ANONYMOUS_THREAD_BASE = 1 << 31  # holder threads from here up: anonymous Venus callers
BOUND_THREAD = (1 << 32) - 1  # an anonymous caller's thread, named by its location
MAX_REQUEST_BYTES = 1 << 20  # as the gRPC API: a proof is a few KiB, a ping less

READ_ONLY = frozenset({"Venus.PollPreCommitState", "Venus.PollProofState", "Venus.StoreBasicInfo",
                       "Venus.WorkerGetPingInfo", "Venus.WorkerPingInfoList"})


def parse_worker_header(value: str) -> WorkerRef:
    fields = urllib.parse.parse_qs(value, keep_blank_values=True, strict_parsing=False)
    try:
        instance = fields["instance"][0]
        thread = int(fields["thread"][0])
    except (KeyError, IndexError, ValueError):
        raise ProtocolError(f"{WORKER_HEADER}: {value!r} is not instance=<name>&thread=<index>&location=<path>",
                            INVALID_PARAMS) from None
    location = fields.get("location", [""])[0]
    if not instance or not 0 <= thread < ANONYMOUS_THREAD_BASE:
        raise ProtocolError(f"{WORKER_HEADER}: needs an instance name and a thread index from 0 to "
                            f"{ANONYMOUS_THREAD_BASE - 1}", INVALID_PARAMS)
    _check_name(instance, f"{WORKER_HEADER} instance")
    _check_name(location, f"{WORKER_HEADER} location")
    return WorkerRef(instance, thread, location)


def describe_thread(ref: WorkerRef) -> str:
    """A holder's thread for operators: anonymous Venus callers have no thread index."""
    if ref.thread == BOUND_THREAD:
        return "thread (a Venus caller's, known by its location)"
    if ref.thread >= ANONYMOUS_THREAD_BASE:
        return "thread (a Venus caller's, unnamed until its first state report)"
    return f"thread {ref.thread}"


def _check_name(value: str, what: str) -> str:
    if len(value) > MAX_NAME_CHARS or not value.isprintable():
        raise ProtocolError(f"{what}: more than {MAX_NAME_CHARS} characters or control characters", INVALID_PARAMS)
    return value


def parse_trust(values: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """`--venus-trust` entries (IPs or networks, comma-separated); ValueError names a bad one."""
    nets = []
    for value in values:
        for item in filter(None, (v.strip() for v in value.split(","))):
            try:
                net = ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network (write it like 192.168.1.10 or "
                                 f"192.168.1.0/24; host names are not accepted)") from None
            if net.prefixlen == 0:
                raise ValueError(f"{item!r} trusts every address: anyone could finish or abort any sector. "
                                 f"List the sealing boxes' addresses, or give the workers the farm token")
            nets.append(net)
    return tuple(nets)


def _anonymous(ref: WorkerRef) -> bool:
    return ref.thread >= ANONYMOUS_THREAD_BASE


def _not_found(sector: SectorId) -> RPCError:
    # damocles-manager's words: "sector state not found"
    return RPCError(f"sector state not found: unknown sector {sector}", ERR_SECTOR_STATE_NOT_FOUND)


def _sid(sid: w.SectorID) -> SectorId:
    return SectorId(sid.miner, sid.number)


def _wire_sid(sector: SectorId) -> w.SectorID:
    return w.SectorID(sector.miner, sector.number)


def _allocated(sector: i.AllocatedSector) -> w.AllocatedSector:
    return w.AllocatedSector(_wire_sid(sector.id), REGISTERED_SEAL_PROOF[sector.proof])


def _spec(spec: w.AllocateSectorSpec) -> i.AllocateSpec | None:
    """Our AllocateSpec; None when the caller accepts no proof type we seal."""
    proofs = None
    if spec.allowed_proof_types:
        proofs = tuple(dict.fromkeys(SEAL_PROOF_OF[n] for n in spec.allowed_proof_types if n in SEAL_PROOF_OF))
        if not proofs:
            return None
    miners = tuple(spec.allowed_miners) if spec.allowed_miners else None
    return i.AllocateSpec(allowed_miners=miners, allowed_proofs=proofs)


def _deals_spec(spec: w.AcquireDealsSpec) -> i.AcquireDealsSpec:
    return i.AcquireDealsSpec(spec.max_deals, spec.min_used_space)


def _padded(unpadded: int) -> int:
    return unpadded // 127 * 128


def _piece(deal: i.Deal) -> w.SectorPiece:
    pledge = deal.is_pledge
    return w.SectorPiece(
        w.PieceInfoV2(_padded(deal.piece.size), deal.piece.commitment),
        w.DealInfoV2(deal_id=0 if pledge else deal.deal_id, allocation_id=0, payload_size=deal.payload_size,
                     is_builtin_market=True))


def _pieces(deals: Iterable[i.Deal]) -> list[w.SectorPiece] | None:
    return [_piece(d) for d in deals] or None


def _submit(resp: i.SubmitResponse) -> w.SubmitResp:
    return w.SubmitResp(w.SubmitResult(resp.result.value), resp.desc or None)


def _poll(status: i.OnChainStatus) -> w.PollStateResp:
    return w.PollStateResp(w.OnChainState(status.state.value), status.desc or None)


def _store(info: i.StoreInfo) -> w.StoreBasicInfo:
    return w.StoreBasicInfo(info.name, info.path, {})


_CAUSES = {c.name for c in FailureCause}


def _failure(failure: w.SectorFailure | None) -> tuple[str | None, str | None, str | None]:
    """(level, cause, desc) of a reported failure; our worker writes `<Cause>: <detail>`."""
    if failure is None:
        return None, None, None
    head, sep, rest = failure.desc.partition(": ")
    if head in _CAUSES:
        return failure.level.lower(), head, rest if sep else None
    return failure.level.lower(), None, failure.desc


@dataclass(frozen=True)
class _Handler:
    method: w.Method
    fn: Callable  # (call, *decoded params) -> our result, encoded by `method`


class VenusService:
    """The `Venus.*` methods over one `EmbeddedManager` (`manager`), with the auth rule above."""

    def __init__(self, manager, token: str | None = None, trust: Iterable = ()):
        self.manager = manager
        self.token = token
        self.trust = tuple(trust)
        self._handlers = {h.method.name: h for h in (
            _Handler(w.ALLOCATE_SECTOR, self.allocate_sector),
            _Handler(w.ACQUIRE_DEALS, self.acquire_deals),
            _Handler(w.ASSIGN_TICKET, self.assign_ticket),
            _Handler(w.SUBMIT_PRE_COMMIT, self.submit_pre_commit),
            _Handler(w.POLL_PRE_COMMIT_STATE, self.poll_pre_commit_state),
            _Handler(w.SUBMIT_PERSISTED_EX, self.submit_persisted_ex),
            _Handler(w.WAIT_SEED, self.wait_seed),
            _Handler(w.SUBMIT_PROOF, self.submit_proof),
            _Handler(w.POLL_PROOF_STATE, self.poll_proof_state),
            _Handler(w.REPORT_STATE, self.report_state),
            _Handler(w.REPORT_FINALIZED, self.report_finalized),
            _Handler(w.REPORT_ABORTED, self.report_aborted),
            _Handler(w.ALLOCATE_SNAPUP_SECTOR, self.allocate_snapup_sector),
            _Handler(w.SUBMIT_SNAPUP_PROOF, self.submit_snapup_proof),
            _Handler(w.WORKER_PING, self.worker_ping),
            _Handler(w.STORE_RESERVE_SPACE, self.store_reserve_space),
            _Handler(w.STORE_BASIC_INFO, self.store_basic_info),
            _Handler(w.ALLOCATE_REBUILD_SECTOR, self.allocate_rebuild_sector),
            _Handler(w.WORKER_GET_PING_INFO, self.worker_get_ping_info),
            _Handler(w.WORKER_PING_INFO_LIST, self.worker_ping_info_list),
            _Handler(w.WORKER_PING_INFO_REMOVE, self.worker_ping_info_remove),
        )}

    # -- plumbing ------------------------------------------------------------------------------

    def methods(self) -> dict[str, Callable[[Call, list], object]]:
        return {name: self._dispatcher(h) for name, h in self._handlers.items()}

    def _dispatcher(self, h: _Handler):
        def run(call: Call, params: list):
            try:
                args = h.method.decode_params(params)
            except w.WireError as e:
                raise ProtocolError(f"{h.method.name}: {e}", INVALID_PARAMS) from None
            try:
                return h.method.encode_result(h.fn(call, *args))
            except RPCError:
                raise
            except NotTheHolder as e:
                raise RPCError(f"{h.method.name}: not the holder: {e}", LOGIC_ERROR) from None
            except (ManagerRequestError, ManagerUnavailable) as e:
                raise RPCError(f"{h.method.name}: {e}", LOGIC_ERROR) from None
        return run

    def trusted(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.trust)

    def allowed(self, call: Call) -> bool:
        """Whether `call` may change state (or read pieces): token, trusted address, or open mode."""
        if self.trusted(call.peer_ip):
            return True
        if self.token is None:
            return not self.trust  # --no-auth without a trust list: open (loopback only)
        given = call.bearer_token()
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def auth(self, call: Call) -> None:
        if call.method in READ_ONLY or call.method not in self._handlers or self.allowed(call):
            return
        raise RPCError(f"{call.method} needs the manager's farm token (Authorization: Bearer <token>) or a caller "
                       f"address listed in the manager's --venus-trust; {call.peer_ip} sent neither. Fix: give "
                       f"the worker the token file ([sector_manager.rpc_client] token_file), or add its address "
                       f"to --venus-trust", LOGIC_ERROR)

    def _caller(self, call: Call) -> WorkerRef | None:
        """The WorkerRef a caller names in the worker header, or None (anonymous)."""
        value = call.headers.get(WORKER_HEADER)
        return None if value is None else parse_worker_header(value)

    def _record(self, sector: SectorId):
        record = self.manager.sector(sector)
        if record is None:
            raise _not_found(sector)
        return record

    def _known(self, sid: w.SectorID) -> SectorId:
        sector = _sid(sid)
        self._record(sector)
        return sector

    def _allocation_ref(self, call: Call) -> WorkerRef:
        ref = self._caller(call)
        if ref is not None:
            return ref
        return WorkerRef(f"{ANONYMOUS_PREFIX}{call.peer_ip}",
                         ANONYMOUS_THREAD_BASE + secrets.randbelow(BOUND_THREAD - ANONYMOUS_THREAD_BASE), "")

    def _final_report_ref(self, call: Call, sector: SectorId) -> WorkerRef:
        """Who a ReportFinalized/ReportAborted speaks for: the header's thread, or for an anonymous
        caller the sector's holder, if that is an anonymous Venus caller (from this IP while unbound)."""
        ref = self._caller(call)
        if ref is not None:
            return ref
        holder = self._record(sector).holder
        if not _anonymous(holder):
            raise NotTheHolder(f"sector {sector} is held by worker {holder.instance} thread {holder.thread}, "
                               f"which names itself; an anonymous Venus caller cannot report it")
        if holder.thread != BOUND_THREAD and holder.instance != f"{ANONYMOUS_PREFIX}{call.peer_ip}":
            raise NotTheHolder(f"sector {sector} was allocated to {holder.instance.removeprefix(ANONYMOUS_PREFIX)}, "
                               f"not to {call.peer_ip}")
        return holder

    # -- sealing -------------------------------------------------------------------------------

    def allocate_sector(self, call: Call, spec: w.AllocateSectorSpec) -> w.AllocatedSector | None:
        ours = _spec(spec)
        if ours is None:
            return None
        allocated = self.manager.allocate_sector(ours, self._allocation_ref(call))
        return None if allocated is None else _allocated(allocated)

    def acquire_deals(self, call: Call, sid: w.SectorID, spec: w.AcquireDealsSpec) -> list[w.SectorPiece] | None:
        return _pieces(self.manager.acquire_deals(self._known(sid), _deals_spec(spec)))

    def assign_ticket(self, call: Call, sid: w.SectorID) -> w.Ticket:
        ticket = self.manager.assign_ticket(self._known(sid))
        return w.Ticket(ticket.value, ticket.epoch)

    def submit_pre_commit(self, call: Call, sector: w.AllocatedSector, info: w.PreCommitOnChainInfo,
                          reset: bool) -> w.SubmitResp:
        allocated = self._ours(sector)
        ours = i.PreCommitInfo(info.comm_r, info.comm_d, i.Ticket(info.ticket.ticket, info.ticket.epoch))
        return _submit(self.manager.submit_pre_commit(allocated, ours, reset))

    def _ours(self, sector: w.AllocatedSector) -> i.AllocatedSector:
        sid = self._known(sector.id)
        proof = SEAL_PROOF_OF.get(sector.proof_type)
        if proof is None:
            raise RPCError(f"seal proof type {sector.proof_type} is not one this manager seals "
                           f"({sorted(SEAL_PROOF_OF)})", LOGIC_ERROR)
        return i.AllocatedSector(sid, proof)

    def poll_pre_commit_state(self, call: Call, sid: w.SectorID) -> w.PollStateResp:
        return _poll(self.manager.poll_pre_commit_state(self._known(sid)))

    def submit_persisted_ex(self, call: Call, sid: w.SectorID, instance: str, is_upgrade: bool) -> bool:
        return self.manager.submit_persisted(self._known(sid), instance, is_upgrade)

    def wait_seed(self, call: Call, sid: w.SectorID, proof_type: int) -> w.WaitSeedResp:
        wait = self.manager.wait_seed(self._ours(w.AllocatedSector(sid, proof_type)))
        if wait.seed is not None:
            return w.WaitSeedResp(False, 0, w.Seed(wait.seed.value, wait.seed.epoch))
        return w.WaitSeedResp(True, max(1, math.ceil(wait.delay_seconds)), None)

    def submit_proof(self, call: Call, sid: w.SectorID, info: w.ProofOnChainInfo, reset: bool) -> w.SubmitResp:
        return _submit(self.manager.submit_proof(self._known(sid), info.proof, reset))

    def poll_proof_state(self, call: Call, sid: w.SectorID) -> w.PollStateResp:
        return _poll(self.manager.poll_proof_state(self._known(sid)))

    # -- snap-up and rebuild -------------------------------------------------------------------

    def allocate_snapup_sector(self, call: Call, spec: w.AllocateSnapUpSpec) -> w.AllocatedSnapUpSector | None:
        ours = _spec(spec.sector)
        if ours is None:
            return None
        got = self.manager.allocate_snapup_sector(ours, _deals_spec(spec.deals), self._allocation_ref(call))
        if got is None:
            return None
        return w.AllocatedSnapUpSector(_allocated(got.sector), [_piece(d) for d in got.deals],
                                       w.SectorPublicInfo(got.comm_r_old), w.SectorPrivateInfo(got.store))

    def submit_snapup_proof(self, call: Call, sid: w.SectorID, info: w.SnapUpOnChainInfo) -> w.SubmitResp:
        ours = i.SnapUpProofInfo(info.comm_r, info.comm_d, info.proof, info.access_instance, tuple(info.pieces))
        return _submit(self.manager.submit_snapup_proof(self._known(sid), ours))

    def allocate_rebuild_sector(self, call: Call, spec: w.AllocateSectorSpec) -> w.SectorRebuildInfo | None:
        ours = _spec(spec)
        if ours is None:
            return None
        job = self.manager.allocate_rebuild_sector(ours, self._allocation_ref(call))
        if job is None:
            return None
        ticket = w.Ticket(job.ticket.value, job.ticket.epoch)
        if job.is_snapup:
            return w.SectorRebuildInfo(_allocated(job.sector), ticket, None, _pieces(job.upgrade_deals), True,
                                       w.SectorPublicInfo(job.comm_r))
        return w.SectorRebuildInfo(_allocated(job.sector), ticket, None, _pieces(job.deals), False, None)

    # -- reports -------------------------------------------------------------------------------

    def report_state(self, call: Call, sid: w.SectorID, req: w.ReportStateReq) -> w.SectorState:
        sector = _sid(sid)
        _check_name(req.worker.instance, "params[1].Worker.Instance")
        _check_name(req.worker.location, "params[1].Worker.Location")
        ref = self._caller(call) or self._bind(call, sector, req.worker)
        level, cause, desc = _failure(req.failure)
        change = req.state_change
        report = i.StateReport(ref, change.prev, change.next, change.event, level, cause, desc)
        resp = self.manager.report_state(sector, report)
        return w.SectorState(sid, resp.finalized, resp.abort_reason or "")

    def _bind(self, call: Call, sector: SectorId, who: w.WorkerIdentifier) -> WorkerRef:
        """The holder ref for an anonymous caller's state report, binding an unbound sector to it."""
        holder = self._record(sector).holder
        named = WorkerRef(who.instance, BOUND_THREAD, who.location)
        if not _anonymous(holder):
            raise NotTheHolder(f"sector {sector} is held by worker {holder.instance} thread {holder.thread}, "
                               f"not by {who.instance} at {who.location}")
        if holder.thread == BOUND_THREAD:
            if (holder.instance, holder.location) != (named.instance, named.location):
                raise NotTheHolder(f"sector {sector} is held by {holder.instance} at {holder.location}, "
                                   f"not by {who.instance} at {who.location}")
            return holder
        if holder.instance != f"{ANONYMOUS_PREFIX}{call.peer_ip}":
            raise NotTheHolder(f"sector {sector} was allocated to {holder.instance.removeprefix(ANONYMOUS_PREFIX)}, "
                               f"not to {call.peer_ip}")
        if not who.instance:
            raise ProtocolError("params[1].Worker.Instance: empty; name the worker", INVALID_PARAMS)
        self.manager.rebind_holder(sector, holder, named)
        log.info("sector %s: held by %s at %s (Venus, from %s)", sector, who.instance, who.location, call.peer_ip)
        return named

    def report_finalized(self, call: Call, sid: w.SectorID) -> None:
        sector = _sid(sid)
        self.manager.report_finalized(sector, worker=self._final_report_ref(call, sector))

    def report_aborted(self, call: Call, sid: w.SectorID, reason: str) -> None:
        sector = _sid(sid)
        head = reason.partition(":")[0].strip()
        cause = FailureCause[head] if head in _CAUSES else None
        self.manager.report_aborted(sector, reason, worker=self._final_report_ref(call, sector), cause=cause)

    # -- stores and liveness -------------------------------------------------------------------

    def store_reserve_space(self, call: Call, sid: w.SectorID, size: int,
                            candidates: list[str]) -> w.StoreBasicInfo | None:
        name = self.manager.reserve_store(self._known(sid), size, candidates)
        if name is None:
            return None
        info = self.manager.store_info(name)
        return None if info is None else _store(info)

    def store_basic_info(self, call: Call, name: str) -> w.StoreBasicInfo | None:
        info = self.manager.store_info(name)
        return None if info is None else _store(info)

    def worker_ping(self, call: Call, info: w.WorkerInfo) -> None:
        if not info.name or not info.dest:  # as damocles-manager
            raise RPCError("WorkerPing: Name and Dest must not be empty", LOGIC_ERROR)
        _check_name(info.name, "params[0].Name")
        s = info.summary
        summary = i.WorkerSummary(s.threads, s.empty, s.paused, s.running, s.waiting, s.errors)
        self.manager.worker_ping(i.WorkerPing(info.name, (), dest=info.dest, version=info.version, summary=summary))

    def worker_get_ping_info(self, call: Call, name: str) -> w.WorkerPingInfo | None:
        return next((p for p in self._ping_infos() if p.info.name == name), None)

    def worker_ping_info_list(self, call: Call) -> list[w.WorkerPingInfo]:
        return self._ping_infos()

    def worker_ping_info_remove(self, call: Call, name: str) -> None:
        self.manager.forget_worker_ping(name)  # damocles: no error for an unknown name

    def _ping_infos(self) -> list[w.WorkerPingInfo]:
        out = []
        for status in self.manager.workers():
            if status.last_ping is None:
                continue  # it called, but never pinged: no Dest to show
            s = status.summary or i.WorkerSummary.of(status.threads)
            summary = w.WorkerInfoSummary(s.threads, s.empty, s.paused, s.running, s.waiting, s.errors)
            out.append(w.WorkerPingInfo(w.WorkerInfo(status.instance, status.dest, status.version, summary),
                                        int(status.last_ping)))
        return out

    # -- piece files (GET /piecestore/<CID>) ---------------------------------------------------

    def piece_file(self, call: Call, name: str) -> Path | None:
        """The file of the deal whose piece CID is `name`, if the caller may read it."""
        if not self.allowed(call):
            raise RPCError("reading pieces needs the farm token or a trusted address (--venus-trust)", LOGIC_ERROR)
        try:
            commitment = cid_to_commitment(name, CommitmentKind.unsealed)
        except CidError:
            return None
        for record in self.manager.deals():
            deal = record.deal
            if deal.piece.commitment == commitment and not deal.is_pledge:
                return Path(deal.piece_path)
        return None


def serve_venus(manager, host: str, port: int, *, token: str | None, trust: Iterable = (),
                observe: Callable[[str, str, float], None] | None = None) -> JSONRPCServer:
    """Start serving `manager`'s Venus API on host:port (port 0: any); OSError if it cannot bind.
    `observe(method, outcome, seconds)`: e.g. `ManagerMetrics.observe_venus`."""
    service = VenusService(manager, token, trust)
    server = JSONRPCServer(host, port, service.methods(), paths={RPC_PATH}, auth=service.auth,
                           max_body=MAX_REQUEST_BYTES, name="venus",
                           files=(PIECESTORE_PATH, service.piece_file), observe=observe)
    server.service = service
    return server.start()
