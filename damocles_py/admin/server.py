"""The worker's admin gRPC API: list threads, pause, resume (optionally at a state), debug a sector.

Calls that change something (Pause, Resume) need the token from the worker's state directory in
the `authorization: Bearer <token>` metadata. Reads need none: they expose nothing secret.
"""

from __future__ import annotations

import hmac
import time
from concurrent import futures

import grpc

from damocles_py.admin import worker_admin_pb2 as pb
from damocles_py.admin import worker_admin_pb2_grpc as pb_grpc
from damocles_py.admin.control import ResumeRefused, ThreadControl, UnknownThread
from damocles_py.admin.token import MIN_TOKEN_CHARS
from damocles_py.errors import UserError
from damocles_py.grpc_strict import StrictDecoding
from damocles_py.fsm.failure import Failure
from damocles_py.manager.interface import SectorId
from damocles_py.store.layout import sector_log_path
from damocles_py.thread.load import stage_loads


def failure_pb(failure: Failure | None) -> tuple[pb.Failure | None, bool]:
    if failure is None:
        return None, False
    return pb.Failure(cause=failure.cause.name, level=failure.level.value, detail=failure.detail,
                      meaning=failure.cause.meaning, action=failure.cause.action), True


def read_log_tail(path, max_bytes: int) -> str:
    """The last `max_bytes` of a sector's log, including its rotated older half (`.log.1`)."""
    parts = [p for p in (path.with_name(path.name + ".1"), path) if p.exists()]
    data = b"".join(p.read_bytes() for p in parts)
    text = data[-max_bytes:].decode("utf-8", "replace")
    return text if len(data) <= max_bytes else f"[... {len(data) - max_bytes} earlier bytes not shown ...]\n" + text


class AdminService(pb_grpc.WorkerAdminServicer):
    def __init__(self, daemon, token: str, control: ThreadControl | None = None):
        if len(token or "") < MIN_TOKEN_CHARS:  # an empty token would accept `Bearer ` with nothing after it
            raise UserError(f"the admin token has {len(token or '')} characters, at least {MIN_TOKEN_CHARS} are needed")
        self.daemon = daemon
        self.token = token
        self.control = control or ThreadControl(daemon.threads)

    def _authorize(self, context) -> None:
        sent = dict(context.invocation_metadata()).get("authorization", "")
        token = sent[len("Bearer "):] if sent.startswith("Bearer ") else ""
        if len(token) < MIN_TOKEN_CHARS or not hmac.compare_digest(token.encode(), self.token.encode()):
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "missing or wrong admin token: pass -c <the worker's sealing.toml> so the CLI "
                          "reads the token from the worker's state_dir")

    def _thread(self, index: int, context):
        try:
            return self.control.thread(index)
        except UnknownThread as e:
            context.abort(grpc.StatusCode.NOT_FOUND, str(e))

    def List(self, request, context):
        now = time.time()
        infos = []
        for t in self.daemon.threads:
            st = t.status
            failure, has_failure = failure_pb(st.last_failure)
            infos.append(pb.ThreadInfo(
                index=st.index, plan=st.plan, location=st.location, sector_id=st.sector_id or "",
                state=st.state, thread_state=st.thread_state, stage=st.stage or "",
                seconds_in_state=max(0.0, now - st.since), last_failure=failure, has_failure=has_failure,
                resumable_states=[s.value for s in t.resumable_states()],
                seconds_waiting=max(0.0, now - st.waiting_since) if st.waiting_since is not None else 0.0,
            ))
        children = self.daemon.processors.info()
        processors = [pb.ProcessorInfo(stage=c.stage, index=c.index, pid=c.pid or 0, cpuset=c.cpuset or "",
                                       state=c.state, sectors=c.sectors, tasks_done=c.tasks_done,
                                       restarts=c.restarts) for c in children]
        loads = stage_loads((t.status for t in self.daemon.threads), always=dict.fromkeys(c.stage for c in children))
        stages = [pb.StageLoad(stage=s.stage, running=s.running, waiting=s.waiting) for s in loads]
        return pb.ListResponse(worker=self.daemon.config.worker.name, threads=infos, processors=processors,
                               stages=stages)

    def Pause(self, request, context):
        self._authorize(context)
        self._thread(request.index, context)
        if self.control.pause(request.index):
            return pb.PauseResponse(accepted=True, message=f"thread {request.index} pauses before its next stage")
        return pb.PauseResponse(accepted=False, message=f"thread {request.index} is already paused or pausing")

    def Resume(self, request, context):
        self._authorize(context)
        self._thread(request.index, context)
        try:
            outcome = self.control.resume(request.index, request.state or None)
        except ResumeRefused as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        state = outcome.state
        if outcome.accepted:
            where = f"at {state.value}" if state else "at its current state"
            return pb.ResumeResponse(accepted=True, message=f"thread {request.index} resumed {where}")
        return pb.ResumeResponse(accepted=False, message=f"thread {request.index} is not paused")

    def SectorDebug(self, request, context):
        try:
            sector_id = SectorId.parse(request.sector_id)
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        max_bytes = request.max_log_bytes or 256 * 1024
        jobs = []
        for t in self.daemon.threads:
            current = t.db.current()
            for sector in t.db.find(sector_id):
                failure, has_failure = failure_pb(sector.failure)
                done = current is None or current.uid != sector.uid
                history = [pb.HistoryEntry(
                    ts=h.ts, prev=h.prev, event=h.event, next=h.next, duration=h.duration or 0.0,
                    has_duration=h.duration is not None, failure_level=h.failure_level or "",
                    failure_cause=h.failure_cause or "", detail=h.detail or "",
                ) for h in t.db.history(sector.uid)]
                log_text = read_log_tail(sector_log_path(t.cfg.location, sector.name), max_bytes) if request.logs else ""
                jobs.append(pb.SectorJob(
                    thread=t.cfg.index, plan=sector.plan.value, state=sector.state.value, done=done,
                    paused=sector.paused, failure=failure, has_failure=has_failure, history=history,
                    log=log_text, proof_type=sector.proof.name if sector.proof else "", retries=sector.retries,
                ))
        if not jobs:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no sealing thread of this worker has worked on sector {sector_id}")
        return pb.SectorDebugResponse(sector_id=str(sector_id), jobs=jobs, manager_view=self._manager_view(sector_id))

    def _manager_view(self, sector_id: SectorId) -> str:
        from damocles_py.cli.manager import format_sector_debug  # the same text damocles-manager prints

        try:
            debug = self.daemon.manager.sector_debug(sector_id)
        except Exception as e:  # the manager may be down: the worker's own view still helps
            return f"(the sector manager could not be asked: {e})"
        return "\n".join(format_sector_debug(debug)) if debug else "(the manager does not know this sector)"


def serve_admin(daemon, address: str, token: str, control: ThreadControl | None = None) -> grpc.Server:
    # grpc enables SO_REUSEPORT by default: a second daemon would then share the port silently
    # undecodable requests: INVALID_ARGUMENT, not gRPC's INTERNAL; no request needs more than 1 MiB
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[StrictDecoding()],
                         options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 1 << 20)])
    pb_grpc.add_WorkerAdminServicer_to_server(AdminService(daemon, token, control), server)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:  # newer grpc raises instead of returning 0
        bound = 0
    if bound == 0:
        raise UserError(f"cannot listen on {address} for the admin API (in use?). "
                        f"Fix: set another [worker.admin_server] port, or stop the process using it")
    server.start()
    return server
