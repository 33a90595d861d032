"""damocles' worker admin API, `VenusWorker.*` JSON-RPC over HTTP (reference `damocles-rpc.md` §2).

Served by the daemon on `[worker.rpc_server]` (any path, POST, JSON content type), so that
`damocles-manager util worker info|pause|resume` of a damocles farm, ours or Go, steers our threads;
`VenusWorkerClient` is the same API's client, used by our `damocles-manager util worker ...`.

    VenusWorker.WorkerList    []            -> [WorkerThreadInfo]   one per sealing thread
    VenusWorker.WorkerPause   [index]       -> bool   false: already paused or pausing
    VenusWorker.WorkerResume  [index, state|null] -> bool   false: the thread was not paused
    VenusWorker.WorkerVersion []            -> "v0.1.0-damocles-py"

Shapes are written once as wire dataclasses for the Venus codec (`manager/venus/codec.py`), the
thread state as serde's internally tagged enum (`{"state":"Running","elapsed":12,"proc":"pc1"}`).
Where we differ from damocles-worker, on purpose:

- Pause and resume go through `admin.control.ThreadControl`, the mechanism of our gRPC admin API:
  a resume state the sector cannot take now (unknown, later than the current state, Empty,
  Finished) is refused with -32602 naming the valid states (damocles logs and ignores it).
  Unknown index: -32602 "worker #N not found", as damocles.
- WorkerPause and WorkerResume need the worker's admin token (`Authorization: Bearer <token>`,
  the file `admin.token` in `[worker] state_dir`) unless the caller's IP is listed in
  `[worker] venus_admin_trust`. A Go damocles-manager sends no token, so steering from one needs
  its IP listed: the risk is that anyone able to send from that IP can pause, rewind or abort
  sectors. WorkerList and WorkerVersion are open, as the gRPC List is.
- WorkerSetEnv / WorkerRemoveEnv (processor dump switches) are not served: -32601.
- Errors are answered with HTTP 200 as jsonrpc-http-server does, except the shared server's own
  protocol errors (unknown method, unparsable body).
"""

from __future__ import annotations

import hmac
import os
import time
from dataclasses import dataclass
from typing import Sequence

from damocles_py import __version__
from damocles_py.admin.control import ResumeRefused, ThreadControl, UnknownThread
from damocles_py.admin.token import MIN_TOKEN_CHARS
from damocles_py.errors import UserError
from damocles_py.fsm.failure import FailureCause
from damocles_py.jsonrpc.server import INVALID_PARAMS, Call, JSONRPCServer, RPCError
from damocles_py.manager.venus.codec import U64, Method, Param, WireError, decode, encode, wire

DEFAULT_PORT = 17890  # damocles' core.DefaultWorkerListenPort
VERSION = f"v{__version__}-damocles-py"  # WorkerVersion, and the Version of our pings
UNAUTHORIZED = 401  # our code for a mutating call without the admin token


# ---------------------------------------------------------------------------------------------
# wire shapes (Rust `damocles-worker/src/rpc/worker/mod.rs`: no rename, snake_case keys)


@dataclass(frozen=True)
class Idle:
    __wire_tag__ = ("state", "Idle")


@dataclass(frozen=True)
class Paused:
    __wire_tag__ = ("state", "Paused")
    elapsed: int = wire("elapsed")  # whole seconds in this thread state


@dataclass(frozen=True)
class Running:
    __wire_tag__ = ("state", "Running")
    elapsed: int = wire("elapsed")
    proc: str | None = wire("proc")  # the heavy stage running (pc1, c2, ...), None between stages


@dataclass(frozen=True)
class Waiting:
    __wire_tag__ = ("state", "Waiting")
    elapsed: int = wire("elapsed")


ThreadState = Idle | Paused | Running | Waiting


@dataclass(frozen=True)
class WorkerThreadInfo:
    location: str = wire("location")
    plan: str = wire("plan")
    job_id: str | None = wire("job_id")  # s-t0<miner>-<number>
    index: int = wire("index", U64)
    thread_state: ThreadState = wire("thread_state")
    job_state: str = wire("job_state")  # "" with no job
    job_stage: str | None = wire("job_stage")
    last_error: str | None = wire("last_error")


def _m(name: str, params: Sequence, result) -> Method:
    return Method(f"VenusWorker.{name}", tuple(Param(p) for p in params), result)


WORKER_LIST = _m("WorkerList", [], list[WorkerThreadInfo])
WORKER_PAUSE = _m("WorkerPause", [int], bool)
WORKER_RESUME = _m("WorkerResume", [int, str | None], bool)
WORKER_VERSION = _m("WorkerVersion", [], str)
MUTATING = frozenset({WORKER_PAUSE.name, WORKER_RESUME.name})


# ---------------------------------------------------------------------------------------------
# our threads as damocles shows them

# damocles' `State::stage(plan)`: the stage a job in this state runs next; "-" for none.
# (state, plan) rows first, then (state, None) for any plan.
_JOB_STAGES: dict[tuple[str, str | None], str] = {
    ("Empty", None): "-",
    ("Allocated", "snapup"): "AddPieces",
    ("Allocated", "rebuild"): "AddPieces",
    ("Allocated", None): "AcquireDeals",
    ("DealsAcquired", None): "AddPieces",
    ("PieceAdded", None): "TreeD",
    ("TreeDBuilt", "rebuild"): "PC1",
    ("TreeDBuilt", "snapup"): "SnapEncode",
    ("TreeDBuilt", None): "AssignTicket",
    ("TicketAssigned", None): "PC1",
    ("PC1Done", None): "PC2",
    ("PC2Done", "rebuild"): "C1",
    ("PC2Done", None): "SubmitPreCommit",
    ("PCSubmitted", None): "WaitPCLanded",
    ("PCLanded", None): "PersistFiles",
    ("SnapProved", None): "PersistFiles",
    ("Persisted", "snapup"): "SubmitSnapupProof",
    ("Persisted", None): "SubmitPersisted",
    ("PersistanceSubmitted", None): "WaitSeed",
    ("SeedAssigned", None): "C1",
    ("C1Done", None): "C2",
    ("C2Done", None): "SubmitProof",
    ("ProofSubmitted", None): "WaitProofLanded",
    ("SnapEncoded", None): "SnapProve",
    ("SealedChecked", "rebuild"): "PrepareForSnapup",
    ("SnapPieceAdded", None): "TreeD",
    ("SnapTreeDBuilt", None): "SnapEncode",
    ("SnapDone", None): "PersistFiles",
}


def job_stage(state: str, plan: str) -> str:
    return _JOB_STAGES.get((state, plan)) or _JOB_STAGES.get((state, None)) or "-"


def job_id(sector_id: str) -> str:
    """damocles' job id of a sector `<miner>-<number>`: `s-t0<miner>-<number>`."""
    miner, _, number = sector_id.partition("-")
    return f"s-t0{miner}-{number}"


def thread_state(status, now: float) -> ThreadState:
    elapsed = max(0, int(now - status.since))
    if status.thread_state == "paused":
        return Paused(elapsed)
    if status.thread_state == "running":
        return Running(elapsed, status.stage)
    if status.thread_state == "waiting":
        return Waiting(elapsed)
    return Idle()  # idle, or stopped (only while the daemon shuts down): damocles has no such state


def holding_failure(thread):
    """The failure that holds `thread` paused (damocles' last_error), None if it is not paused by one.
    From its sector record: the status keeps the last failure shown even after a resume."""
    status = thread.status
    if status.thread_state != "paused":
        return None
    if status.last_failure is not None and status.last_failure.cause is FailureCause.StateStoreFailed:
        return status.last_failure  # its database could not be written: the record lags behind
    try:
        sector = thread.db.current()
    except Exception:  # an unreadable database: the status is all there is
        return status.last_failure
    return sector.failure if sector is not None and sector.paused else None


def thread_info(status, now: float | None = None, failure=None) -> WorkerThreadInfo:
    """One thread's `WorkerThreadInfo` from its `ThreadStatus` and `holding_failure`."""
    now = time.time() if now is None else now
    has_job = status.sector_id is not None
    return WorkerThreadInfo(
        location=os.path.realpath(status.location),
        plan=status.plan,
        job_id=job_id(status.sector_id) if has_job else None,
        index=status.index,
        thread_state=thread_state(status, now),
        job_state=status.state if has_job else "",
        job_stage=job_stage(status.state, status.plan) if has_job else None,
        last_error=str(failure) if failure is not None else None,
    )


# ---------------------------------------------------------------------------------------------
# the server


class VenusWorkerService:
    """The `VenusWorker.*` methods over a daemon's threads, for `JSONRPCServer`."""

    def __init__(self, threads: Sequence, control: ThreadControl, token: str,
                 trusted_ips: Sequence[str] = (), version: str | None = None):
        if len(token or "") < MIN_TOKEN_CHARS:
            raise UserError(f"the admin token has {len(token or '')} characters, at least {MIN_TOKEN_CHARS} are needed")
        self.threads = threads
        self.control = control
        self.token = token
        self.trusted_ips = frozenset(trusted_ips)
        self.version = version or VERSION

    def methods(self) -> dict:
        return {WORKER_LIST.name: self.worker_list, WORKER_PAUSE.name: self.worker_pause,
                WORKER_RESUME.name: self.worker_resume, WORKER_VERSION.name: self.worker_version}

    def authorize(self, call: Call) -> None:
        if call.method not in MUTATING or call.peer_ip in self.trusted_ips:
            return
        token = call.bearer_token() or ""
        if len(token) < MIN_TOKEN_CHARS or not hmac.compare_digest(token.encode(), self.token.encode()):
            raise RPCError(f"{call.method} needs the worker's admin token (Authorization: Bearer <the "
                           f"worker's state_dir/admin.token>), or the caller's IP {call.peer_ip} listed in "
                           f"[worker] venus_admin_trust", UNAUTHORIZED)

    @staticmethod
    def _params(method: Method, params: list, required: int) -> list:
        """Positional params decoded as `method` declares them; trailing optional ones may be omitted."""
        if not required <= len(params) <= len(method.params):
            want = f"{required}" if required == len(method.params) else f"{required} to {len(method.params)}"
            raise RPCError(f"{method.name} takes {want} params, got {len(params)}", INVALID_PARAMS)
        params = params + [None] * (len(method.params) - len(params))
        try:
            return [decode(p.tp, v, f"params[{i}]", p.enc) for i, (p, v) in enumerate(zip(method.params, params))]
        except WireError as e:
            raise RPCError(f"{method.name}: {e}", INVALID_PARAMS) from None

    def worker_list(self, call: Call, params: list):
        self._params(WORKER_LIST, params, 0)
        now = time.time()
        return encode([thread_info(t.status, now, holding_failure(t)) for t in self.threads])

    def _index(self, index: int) -> None:
        try:
            self.control.thread(index)
        except UnknownThread:
            raise RPCError(f"worker #{index} not found", INVALID_PARAMS) from None  # damocles' words

    def worker_pause(self, call: Call, params: list):
        (index,) = self._params(WORKER_PAUSE, params, 1)
        self._index(index)
        return self.control.pause(index)

    def worker_resume(self, call: Call, params: list):
        index, state = self._params(WORKER_RESUME, params, 1)
        self._index(index)
        try:
            return self.control.resume(index, state).accepted
        except ResumeRefused as e:
            raise RPCError(str(e), INVALID_PARAMS) from None

    def worker_version(self, call: Call, params: list):
        self._params(WORKER_VERSION, params, 0)
        return self.version


def serve_venus_worker(service: VenusWorkerService, host: str, port: int) -> JSONRPCServer:
    """Start the VenusWorker server on host:port (any path, JSON content type, as damocles)."""
    server = JSONRPCServer(host, port, service.methods(), paths=None, auth=service.authorize,
                           require_json_content_type=True, name="venus-worker")
    try:
        return server.start()
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} for the VenusWorker admin API ({e.strerror or e}). "
                        f"Fix: set another [worker.rpc_server] port, or stop the process using it") from None


# ---------------------------------------------------------------------------------------------
# the client (damocles' Go `workercli.Client`)


def resolve_dest(text: str) -> str:
    """`host:port`, or an IP / host name alone (port 17890), as damocles' `resolveWorkerDest`."""
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port or [v6]
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""  # a bare IPv6 address or a host name
    if not host or (port and not (port.isdigit() and 1 <= int(port) <= 65535)):
        raise UserError(f"{text!r} is neither a known worker name nor an address. Fix: pass a name from "
                        f"`damocles-manager util worker list`, or host:port of the worker's [worker.rpc_server]")
    return f"[{host}]:{port or DEFAULT_PORT}" if ":" in host else f"{host}:{port or DEFAULT_PORT}"


class VenusWorkerClient:
    """Calls a worker's `VenusWorker.*` at `http://<dest>/`; every failure is one `UserError` line."""

    def __init__(self, dest: str, token: str | None = None, timeout: float = 10.0):
        from damocles_py.manager.venus.rpc import JsonRpcClient

        self.dest = dest
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.rpc = JsonRpcClient(f"http://{dest}/", timeout=timeout, headers=headers)

    def close(self) -> None:
        self.rpc.close()

    def __enter__(self) -> "VenusWorkerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: Method, *args):
        from damocles_py.manager.venus.errors import VenusResponseError, VenusRPCError
        from damocles_py.manager.interface import ManagerUnavailable

        try:
            return self.rpc.call(method, *args)
        except VenusRPCError as e:
            raise UserError(f"the worker at {self.dest} refused {method.name}: {e.message} (code {e.code})") from None
        except VenusResponseError as e:
            raise UserError(f"{method.name}: malformed answer from the worker at {self.dest}: {e.path}: "
                            f"{e.problem}") from None
        except ManagerUnavailable as e:
            why = "did not answer in time" if "did not answer" in str(e) else "is unreachable"
            raise UserError(f"the worker's VenusWorker API at http://{self.dest}/ {why}: is its daemon running, "
                            f"and is this its [worker.rpc_server] address?") from None

    def worker_list(self) -> list[WorkerThreadInfo]:
        return self._call(WORKER_LIST)

    def worker_pause(self, index: int) -> bool:
        return self._call(WORKER_PAUSE, index)

    def worker_resume(self, index: int, state: str | None = None) -> bool:
        return self._call(WORKER_RESUME, index, state)

    def worker_version(self) -> str:
        return self._call(WORKER_VERSION)
