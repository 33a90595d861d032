"""`VenusManager`: the worker's `SectorManager` over damocles-manager's `Venus.*` JSON-RPC.

The same interface as `EmbeddedManager` and the gRPC `RemoteManager`, so the state machines do not
know which manager they talk to. Each method is one `Venus.*` call (reference
`damocles-rpc.md` §1.4-1.5); errors follow §1.6 (see `errors.py`): code 11001 aborts the sector,
everything else (other codes, the network, a malformed answer) is `ManagerUnavailable`, temporary.

Where our interface and Venus differ, this client decides as follows:

- allocate_sector / allocate_snapup_sector / allocate_rebuild_sector: Venus has no worker
  argument and no store filter; `spec.allowed_stores` is not sent (a snap-up or rebuild in a
  store the thread lacks fails in the stage that opens it, as in damocles) and `worker` goes in
  the `X-Damocles-Worker` header (below). A damocles-manager's allocation is not idempotent: an
  answer lost on the way leaves a sector number allocated there, as with damocles-worker; ours
  hands the same sector again to the same thread. `AllowedProofTypes` lists only the seal proofs we can seal,
  the V1_1 registered numbers (5..9): `spec.allowed_proofs`, or all five when it is None. damocles
  sends every size's three variants (e.g. [5, 10, 15]); a manager handing out a synthetic or
  NI-PoRep sector to us would hand out one we cannot seal.
- A fresh sector (or snap-up) we cannot take (an unsupported proof type, a snap-up with no pieces
  or no access instance) is reported aborted to the manager at once, releasing its deals, and
  the call answers None (no work): damocles aborts those too. A rebuild of an unsupported proof
  type is only refused (None, logged): aborting would mark a proven sector aborted.
- Deals: `Deal.deal_id` is the deal id (builtin market) or the allocation id (DDO);
  `Deal.piece_path` is the piece CID (`baga6ea4...`), the file name damocles uses in
  `local_pieces_dirs` and on `/piecestore/`; a pledge (filler) piece, whose deal/allocation id
  is 0, gets `PLEDGE_PREFIX + cid`: its data are zeros. `PieceInfo.size` is unpadded (padded/128*127).
- poll_*_state: Venus' `Packed` (2) is our `Pending`: both mean "poll again".
- reserve_store: `StoreReserveSpace` answers a StoreBasicInfo; we return its Name, which must
  be one of the candidates (else ManagerRequestError, as damocles' "no available persist store").
- wait_seed and submit_snapup_proof: Venus wants the proof type and the upgrade's piece CIDs; the
  interface carries them (`AllocatedSector`, `SnapUpProofInfo.pieces`), so the client keeps no
  memory of allocations and a restarted worker sends the same.
- report_state: `Event` is our event name (damocles always sends the string "None", a bug);
  `Failure` is `{"Level": "Temporary"|"Permanent"|"Abort"|"Critical", "Desc": "<cause>: <detail>"}`.
  `Finalized: true` comes back as `SectorStateResp(finalized=True, abort_reason=...)`, which the
  runtime turns into an abort (cause SectorAbortedByManager) without a ReportAborted, as damocles.
- report_aborted: an error answer from the manager is logged and taken (damocles ignores it);
  an unreachable manager raises ManagerUnavailable, so the runtime retries the report.
- worker_ping: `Name` = instance, `Dest` = the ping's (the daemon's `[worker.rpc_server]`), else the
  admin address given, else the local IP towards the manager with port 17890, as damocles;
  `Summary` = the ping's (the daemon counts `Errors`), else counted from the threads (Errors 0).
- Our worker names its thread on the calls that carry a WorkerRef (allocations, state and final
  reports) with `X-Damocles-Worker` (`worker_header`; damocles-worker sends none): our manager
  then makes allocation idempotent and takes final reports only from the holding thread, as over
  gRPC. A damocles-manager ignores the header.
- report_state has its own, shorter bound (`report_timeout`): the runtime reports after every step
  and only logs a failed report, so a hung manager costs a step seconds, not `timeout`.
- Extras for the daemon: `store_basic_info(name)` and `require_stores(names)` (start-up check), and
  `fetch_piece(name, directory)`, the worker's `PieceStore` (`/piecestore/`: the call headers, e.g.
  the farm token, to the manager; `piece_token` only where it redirects).
"""

from __future__ import annotations

import logging
import socket
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from damocles_py import __version__
from damocles_py.fsm.failure import FailureCause
from damocles_py.manager.interface import (
    AcquireDealsSpec,
    AllocatedSector,
    AllocateSpec,
    Deal,
    PLEDGE_PREFIX,
    ManagerRequestError,
    OnChainState,
    OnChainStatus,
    PreCommitInfo,
    RebuildJob,
    SectorId,
    SectorStateResp,
    Seed,
    SeedWait,
    SnapUpCandidate,
    SnapUpProofInfo,
    StateReport,
    SubmitResponse,
    SubmitResult,
    Ticket,
    WorkerPing,
    WorkerRef,
    WorkerSummary,
)
from damocles_py.manager.venus import codec as w
from damocles_py.manager.venus.addr import ManagerEndpoint, parse_manager_addr
from damocles_py.manager.venus.cid import commitment_to_cid
from damocles_py.manager.venus.errors import VenusResponseError, VenusRPCError
from damocles_py.manager.venus.piecestore import download_piece
from damocles_py.manager.venus.rpc import JsonRpcClient
from damocles_py.proofs import PieceInfo, SealProof

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_ADMIN_PORT = 17890  # damocles-worker's rpc_server.port default, used in the ping's Dest
VERSION = f"v{__version__}-damocles-py"
REPORT_TIMEOUT = 10.0  # default bound of a ReportState: the runtime only logs a failed report
WORKER_HEADER = "X-Damocles-Worker"


def worker_header(ref: WorkerRef) -> dict[str, str]:
    """The header by which our worker names its thread on a Venus call (see the module doc)."""
    return {WORKER_HEADER: urllib.parse.urlencode({"instance": ref.instance, "thread": ref.thread,
                                                   "location": ref.location})}

# filecoin-proofs RegisteredSealProof numbers of the interactive PoRep V1_1 proofs we seal.
REGISTERED_SEAL_PROOF: dict[SealProof, int] = {
    SealProof.StackedDrg2KiBV1_1: 5,
    SealProof.StackedDrg8MiBV1_1: 6,
    SealProof.StackedDrg512MiBV1_1: 7,
    SealProof.StackedDrg32GiBV1_1: 8,
    SealProof.StackedDrg64GiBV1_1: 9,
}
SEAL_PROOF_OF: dict[int, SealProof] = {n: p for p, n in REGISTERED_SEAL_PROOF.items()}

_ON_CHAIN = {
    w.OnChainState.Pending: OnChainState.Pending,
    w.OnChainState.Packed: OnChainState.Pending,
    w.OnChainState.Landed: OnChainState.Landed,
    w.OnChainState.NotFound: OnChainState.NotFound,
    w.OnChainState.Failed: OnChainState.Failed,
    w.OnChainState.PermFailed: OnChainState.PermFailed,
    w.OnChainState.ShouldAbort: OnChainState.ShouldAbort,
}


class _Malformed(Exception):
    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem


def _sid(sector: SectorId) -> w.SectorID:
    return w.SectorID(sector.miner, sector.number)


def _sector_id(sid: w.SectorID) -> SectorId:
    return SectorId(sid.miner, sid.number)


def _allocate_spec(spec: AllocateSpec) -> w.AllocateSectorSpec:
    proofs = REGISTERED_SEAL_PROOF if spec.allowed_proofs is None else spec.allowed_proofs
    return w.AllocateSectorSpec(list(spec.allowed_miners or ()), [REGISTERED_SEAL_PROOF[p] for p in proofs])


def _deals_spec(spec: AcquireDealsSpec) -> w.AcquireDealsSpec:
    return w.AcquireDealsSpec(spec.max_deals, spec.min_used_space)


def _unpadded(padded: int, path: str) -> int:
    if padded < 128 or padded & (padded - 1):
        raise _Malformed(path, f"{padded} is not a padded piece size (a power of two, at least 128)")
    return padded // 128 * 127


def _deal(piece: w.SectorPiece, path: str) -> Deal:
    cid = commitment_to_cid(piece.piece.piece_cid)
    info = piece.deal_info
    size = _unpadded(piece.piece.size, f"{path}.Piece.Size")
    return Deal(info.ident, PieceInfo(piece.piece.piece_cid, size),
                PLEDGE_PREFIX + cid if info.is_pledge else cid, info.payload_size)


def _legacy_deal(deal: w.DealInfo, path: str) -> Deal:
    cid = commitment_to_cid(deal.piece.cid)
    size = _unpadded(deal.piece.size, f"{path}.Piece.Size")
    return Deal(deal.id, PieceInfo(deal.piece.cid, size), PLEDGE_PREFIX + cid if deal.id == 0 else cid,
                deal.payload_size)


def _submit_response(resp: w.SubmitResp) -> SubmitResponse:
    return SubmitResponse(SubmitResult(int(resp.res)), resp.desc or "")


def _failure(report: StateReport) -> w.SectorFailure | None:
    if report.failure_level is None:
        return None
    desc = report.failure_desc or ""
    if report.failure_cause:
        desc = f"{report.failure_cause}: {desc}" if desc else report.failure_cause
    return w.SectorFailure(report.failure_level.capitalize(), desc)


def summary_of(ping: WorkerPing) -> w.WorkerInfoSummary:
    """damocles' thread counts: as the worker counted them (with Errors), else from its threads."""
    return w.WorkerInfoSummary(**vars(ping.summary or WorkerSummary.of(ping.threads)))


def local_ip_towards(host: str, port: int) -> str:
    """The local address the system routes to `host` from (no packet is sent: a UDP connect)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


class VenusManager:
    """`addr`: damocles' `rpc_client.addr` (multiaddr or URL). `timeout`: the bound of one call;
    `report_timeout` that of a ReportState (default: the smaller of `timeout` and 10 s).

    `headers`: sent with every call (damocles' `rpc_client.headers`; our worker adds
    `Authorization: Bearer <farm token>`). `dest`: the worker's admin address for pings
    (`host:port`). `piece_token`: sent on a redirected piece download (damocles' `piece_token`).
    """

    def __init__(self, addr: str, timeout: float = 30.0, connect_timeout: float = 5.0,
                 headers: dict[str, str] | None = None, dest: str | None = None, version: str = VERSION,
                 piece_token: str | None = None, report_timeout: float | None = None):
        self.endpoint: ManagerEndpoint = parse_manager_addr(addr)
        self.addr = addr
        self.rpc = JsonRpcClient(self.endpoint.rpc_url, timeout, connect_timeout, headers)
        self._headers = dict(headers or {})  # also sent on piece downloads from the manager
        self.report_timeout = min(timeout, REPORT_TIMEOUT) if report_timeout is None else report_timeout
        self.dest = dest
        self.version = version
        self.piece_token = piece_token

    @property
    def url(self) -> str:
        return self.rpc.url

    def close(self) -> None:
        self.rpc.close()

    def __enter__(self) -> "VenusManager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -----------------------------------------------------------------------------------------
    # plumbing

    def _call(self, method: w.Method, *args, timeout: float | None = None, worker: WorkerRef | None = None):
        return self.rpc.call(method, *args, timeout=timeout, headers=None if worker is None else worker_header(worker))

    def _map(self, method: w.Method, fn: Callable[[], T]) -> T:
        """Map a decoded answer onto our types; a value that breaks a rule of ours is malformed."""
        try:
            return fn()
        except _Malformed as e:
            raise VenusResponseError(method.name, e.path, e.problem, self.url) from None

    def _abort_unusable(self, sid: w.SectorID, reason: str, worker: WorkerRef) -> None:
        """Tell the manager we give back a sector it just allocated to us (best effort)."""
        log.warning("damocles-manager allocated sector %d-%d, which this worker cannot take: %s; "
                    "reporting it aborted", sid.miner, sid.number, reason)
        try:
            self._call(w.REPORT_ABORTED, sid, reason, worker=worker)
        except Exception as e:  # noqa: BLE001 - best effort, as damocles' ReportAborted
            log.warning("ReportAborted of %d-%d failed: %s", sid.miner, sid.number, e)

    def _proof_of(self, allocated: w.AllocatedSector) -> SealProof | None:
        return SEAL_PROOF_OF.get(allocated.proof_type)

    # -----------------------------------------------------------------------------------------
    # sealing

    def allocate_sector(self, spec: AllocateSpec, worker: WorkerRef) -> AllocatedSector | None:
        allocated = self._call(w.ALLOCATE_SECTOR, _allocate_spec(spec), worker=worker)
        if allocated is None:
            return None
        proof = self._proof_of(allocated)
        if proof is None:
            self._abort_unusable(allocated.id, f"seal proof type {allocated.proof_type} is not supported by "
                                               f"this worker (it seals {sorted(SEAL_PROOF_OF)})", worker)
            return None
        return AllocatedSector(_sector_id(allocated.id), proof)

    def acquire_deals(self, sector: SectorId, spec: AcquireDealsSpec) -> list[Deal]:
        pieces = self._call(w.ACQUIRE_DEALS, _sid(sector), _deals_spec(spec)) or []
        return self._map(w.ACQUIRE_DEALS, lambda: [_deal(p, f"result[{i}]") for i, p in enumerate(pieces)])

    def assign_ticket(self, sector: SectorId) -> Ticket:
        ticket = self._call(w.ASSIGN_TICKET, _sid(sector))
        return Ticket(ticket.ticket, ticket.epoch)

    def submit_pre_commit(self, sector: AllocatedSector, info: PreCommitInfo, reset: bool) -> SubmitResponse:
        allocated = w.AllocatedSector(_sid(sector.id), REGISTERED_SEAL_PROOF[sector.proof])
        on_chain = w.PreCommitOnChainInfo(info.comm_r, info.comm_d, w.Ticket(info.ticket.value, info.ticket.epoch))
        return _submit_response(self._call(w.SUBMIT_PRE_COMMIT, allocated, on_chain, bool(reset)))

    def poll_pre_commit_state(self, sector: SectorId) -> OnChainStatus:
        resp = self._call(w.POLL_PRE_COMMIT_STATE, _sid(sector))
        return OnChainStatus(_ON_CHAIN[resp.state], resp.desc or "")

    def reserve_store(self, sector: SectorId, size: int, candidates: list[str]) -> str | None:
        info = self._call(w.STORE_RESERVE_SPACE, _sid(sector), size, list(candidates))
        if info is None:
            return None
        if info.name not in candidates:
            raise ManagerRequestError(
                f"Venus.StoreReserveSpace: the damocles-manager reserved space for sector {sector} in store "
                f"{info.name!r}, which is not one of this worker's candidates {list(candidates)}; attach that "
                f"store to the worker or check the manager's persist stores")
        return info.name

    def submit_persisted(self, sector: SectorId, store: str, is_upgrade: bool) -> bool:
        return self._call(w.SUBMIT_PERSISTED_EX, _sid(sector), store, bool(is_upgrade))

    def wait_seed(self, sector: AllocatedSector) -> SeedWait:
        resp = self._call(w.WAIT_SEED, _sid(sector.id), REGISTERED_SEAL_PROOF[sector.proof])
        if resp.seed is not None:
            return SeedWait(Seed(resp.seed.seed, resp.seed.epoch))
        if not resp.should_wait or resp.delay == 0:
            raise VenusResponseError(w.WAIT_SEED.name, "result", "no seed and nothing to wait for "
                                     "(ShouldWait false or Delay 0)", self.url)
        return SeedWait(None, float(resp.delay))

    def submit_proof(self, sector: SectorId, proof: bytes, reset: bool) -> SubmitResponse:
        return _submit_response(self._call(w.SUBMIT_PROOF, _sid(sector), w.ProofOnChainInfo(bytes(proof)),
                                           bool(reset)))

    def poll_proof_state(self, sector: SectorId) -> OnChainStatus:
        resp = self._call(w.POLL_PROOF_STATE, _sid(sector))
        return OnChainStatus(_ON_CHAIN[resp.state], resp.desc or "")

    # -----------------------------------------------------------------------------------------
    # snap-up and rebuild

    def allocate_snapup_sector(self, spec: AllocateSpec, deals: AcquireDealsSpec,
                               worker: WorkerRef) -> SnapUpCandidate | None:
        method = w.ALLOCATE_SNAPUP_SECTOR
        got = self._call(method, w.AllocateSnapUpSpec(_allocate_spec(spec), _deals_spec(deals)), worker=worker)
        if got is None:
            return None
        proof = self._proof_of(got.sector)
        unusable = (f"seal proof type {got.sector.proof_type} is not supported" if proof is None
                    else "the snap-up allocation has no pieces" if not got.pieces
                    else "the snap-up allocation names no access instance" if not got.private.access_instance
                    else None)
        if unusable:
            self._abort_unusable(got.sector.id, unusable, worker)
            return None
        sector = _sector_id(got.sector.id)
        candidate_deals = self._map(method, lambda: tuple(_deal(p, f"result.Pieces[{i}]")
                                                          for i, p in enumerate(got.pieces)))
        return SnapUpCandidate(AllocatedSector(sector, proof), candidate_deals, got.public.comm_r,
                               got.private.access_instance)

    def submit_snapup_proof(self, sector: SectorId, info: SnapUpProofInfo) -> SubmitResponse:
        on_chain = w.SnapUpOnChainInfo(info.comm_r_new, info.comm_d_new, info.store, list(info.pieces), info.proof)
        return _submit_response(self._call(w.SUBMIT_SNAPUP_PROOF, _sid(sector), on_chain))

    def allocate_rebuild_sector(self, spec: AllocateSpec, worker: WorkerRef) -> RebuildJob | None:
        """Venus says less than our RebuildJob holds: no store (`store=""`: reserve one to persist
        into), no comm_d, and comm_r only for an upgraded sector (its CC sector key's, from
        `UpgradePublic`). Unknown commitments are `b""`: the rebuild handlers must then skip the
        comparison with the chain's (damocles checks the rebuilt replica with C1 only)."""
        method = w.ALLOCATE_REBUILD_SECTOR
        info = self._call(method, _allocate_spec(spec), worker=worker)
        if info is None:
            return None
        proof = self._proof_of(info.sector)
        if proof is None:
            log.error("damocles-manager handed a rebuild of sector %d-%d with seal proof type %d, which this "
                      "worker cannot seal; not taken", info.sector.id.miner, info.sector.id.number,
                      info.sector.proof_type)
            return None

        def deals() -> tuple[Deal, ...]:
            if info.pieces_v2 is not None:
                return tuple(_deal(p, f"result.PiecesV2[{i}]") for i, p in enumerate(info.pieces_v2))
            return tuple(_legacy_deal(d, f"result.Pieces[{i}]") for i, d in enumerate(info.pieces or ()))

        pieces = self._map(method, deals)
        sector = _sector_id(info.sector.id)
        ticket = Ticket(info.ticket.ticket, info.ticket.epoch)
        if not info.is_snapup:
            return RebuildJob(AllocatedSector(sector, proof), ticket, pieces, comm_r=b"", comm_d=b"", store="")
        if info.upgrade_public is None:
            raise VenusResponseError(method.name, "result.UpgradePublic", "null for an upgraded sector (IsSnapUp)",
                                     self.url)
        # An upgraded sector is rebuilt as CC (its sector key), then encoded with the upgrade's pieces.
        return RebuildJob(AllocatedSector(sector, proof), ticket, (), comm_r=info.upgrade_public.comm_r,
                          comm_d=b"", store="", upgrade_deals=pieces, upgrade_comm_r=b"", upgrade_comm_d=b"")

    # -----------------------------------------------------------------------------------------
    # reports

    def report_state(self, sector: SectorId, report: StateReport) -> SectorStateResp:
        req = w.ReportStateReq(
            w.WorkerIdentifier(report.worker.instance, report.worker.location),
            w.SectorStateChange(report.prev, report.next, report.event),
            _failure(report),
        )
        state = self._call(w.REPORT_STATE, _sid(sector), req, timeout=self.report_timeout, worker=report.worker)
        return SectorStateResp(finalized=state.finalized, abort_reason=state.abort_reason)

    def report_finalized(self, sector: SectorId, *, worker: WorkerRef) -> None:
        self._call(w.REPORT_FINALIZED, _sid(sector), worker=worker)

    def report_aborted(self, sector: SectorId, reason: str, *, worker: WorkerRef,
                       cause: FailureCause | None = None) -> None:
        try:
            self._call(w.REPORT_ABORTED, _sid(sector), reason, worker=worker)
        except VenusRPCError as e:  # an answer, not an outage: damocles-worker ignores it too
            log.warning("the damocles-manager refused ReportAborted of %s: %s", sector, e)

    # -----------------------------------------------------------------------------------------
    # liveness and stores

    def worker_ping(self, ping: WorkerPing) -> None:
        dest = ping.dest or self.dest or (f"{local_ip_towards(self.endpoint.host, self.endpoint.port or 80)}:"
                                          f"{DEFAULT_ADMIN_PORT}")
        self._call(w.WORKER_PING, w.WorkerInfo(ping.instance, dest, self.version, summary_of(ping)))

    def store_basic_info(self, name: str) -> w.StoreBasicInfo | None:
        return self._call(w.STORE_BASIC_INFO, name)

    def require_stores(self, names: Iterable[str]) -> dict[str, w.StoreBasicInfo]:
        """damocles-worker's start-up check: the manager must know every attached store."""
        found = {}
        for name in names:
            info = self.store_basic_info(name)
            if info is None:
                raise ManagerRequestError(
                    f"store basic info of instance {name!r} not found in the damocles-manager at {self.url}; "
                    f"add the store to the manager's persist stores (same name), or detach it from the worker")
            found[name] = info
        return found

    # -----------------------------------------------------------------------------------------
    # pieces

    def fetch_piece(self, name: str, directory: Path) -> Path:
        """The piece `name` (its CID) from the manager's `/piecestore/`, into `directory` (kept
        there: a retried stage does not download it again). The caller checks its commP."""
        path = directory / name
        if not path.is_file():
            download_piece(self.endpoint, name, path, self.piece_token, origin_headers=self._headers)
        return path
