"""`damocles-worker processor <stage>`: a long-lived child that runs one stage's tasks for the daemon.

Set-up before the `Ready` frame, from the environment the daemon gives it (damocles' variable names):
- `VC_CG_CPUSET`: pin to those CPUs (sched_setaffinity; also a cgroup v2 cpuset where this process
  may create one under `VC_CG_NAME`, removed at exit);
- `VENUS_WORKER_NUMA_PREFERRED`: prefer that node's memory (set_mempolicy) when the node exists.
Tasks run each in its own thread (the parent bounds how many); the proofs library keeps what it
caches (the Groth parameters of C2 and snap prove) for the child's life, so a second proof of a
size pays no parameter load. Log records a task emits go home to the parent, tagged with the task.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from pathlib import Path

from damocles_py.config.load import parse_cpu_list
from damocles_py.processors.protocol import Done, Failed, FrameWriter, LogLine, Ready, Task, portable_error, read_frame

ENV_CPUSET = "VC_CG_CPUSET"  # as damocles sets it for its children
ENV_CGROUP = "VC_CG_NAME"
ENV_NUMA = "VENUS_WORKER_NUMA_PREFERRED"
CGROUP_ROOT = Path("/sys/fs/cgroup")
_MPOL_PREFERRED = 1
_SYS_SET_MEMPOLICY = 238  # x86_64

log = logging.getLogger("damocles_py.processor")


def _cgroup_cpuset(name: str, cpuset: str) -> str:
    """Put this process in a cgroup v2 cpuset `<root>/<name>`; what happened, for the log."""
    if not (CGROUP_ROOT / "cgroup.controllers").exists():
        return "cgroup v2 not mounted: pinned with sched_setaffinity only"
    group = CGROUP_ROOT / name
    try:
        parent = CGROUP_ROOT
        for part in Path(name).parts:  # enable the cpuset controller down the path
            (parent / "cgroup.subtree_control").write_text("+cpuset")
            parent = parent / part
            parent.mkdir(exist_ok=True)
        (group / "cpuset.cpus").write_text(cpuset)
        (group / "cgroup.procs").write_text(str(os.getpid()))
    except OSError as e:
        return f"cgroup v2 cpuset {group} not available ({e.strerror or e}): pinned with sched_setaffinity only"
    return f"in cgroup v2 cpuset {group}"


def _leave_cgroup(name: str) -> None:
    group = CGROUP_ROOT / name
    try:
        if (group / "cgroup.procs").read_text().split() == [str(os.getpid())]:
            (group.parent / "cgroup.procs").write_text(str(os.getpid()))
            group.rmdir()
    except OSError:
        pass  # not ours, or already gone


def _prefer_node(node: int) -> str:
    if not Path(f"/sys/devices/system/node/node{node}").exists():
        return f"numa_preferred = {node} ignored: this machine has no NUMA node {node}"
    mask = ctypes.c_ulong(1 << node)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_SYS_SET_MEMPOLICY, _MPOL_PREFERRED, ctypes.byref(mask), node + 2) != 0:
        return f"numa_preferred = {node} not applied: set_mempolicy failed ({os.strerror(ctypes.get_errno())})"
    return f"memory preferred from NUMA node {node}"


def set_up(env: dict[str, str]) -> tuple[str, ...]:
    notes = []
    cpuset = env.get(ENV_CPUSET)
    if cpuset:
        os.sched_setaffinity(0, parse_cpu_list(cpuset) or ())  # threads started later (rayon's) inherit it
        if env.get(ENV_CGROUP):
            notes.append(_cgroup_cpuset(env[ENV_CGROUP], cpuset))
    if env.get(ENV_NUMA):
        notes.append(_prefer_node(int(env[ENV_NUMA])))
    return tuple(notes)


class _TaskLogs(logging.Handler):
    """Sends the records of a task's thread to the parent; other records go to stderr as usual."""

    def __init__(self, out: FrameWriter):
        super().__init__(logging.INFO)
        self.out = out
        self.task = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        task_id = getattr(self.task, "id", None)
        if task_id is not None:
            self.out.send(LogLine(task_id, record.levelno, record.name, record.getMessage()))


def _run(task: Task, out: FrameWriter, logs: _TaskLogs) -> None:
    from damocles_py.processors.tasks import TASKS

    logs.task.id = task.id
    try:
        fn = TASKS.get(task.function)
        if fn is None:
            raise ValueError(f"this processor has no task {task.function!r}")
        value = fn(*task.args)
    except BaseException as e:  # everything goes home: the parent maps it to a failure cause
        logs.task.id = None
        out.send(Failed(task.id, portable_error(e)))
    else:
        logs.task.id = None
        out.send(Done(task.id, value))


def main(stage: str) -> int:
    # The protocol owns the real stdout; anything printed (by us or a library) goes to stderr.
    out = FrameWriter(os.fdopen(os.dup(1), "wb"))
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    stdin = os.fdopen(os.dup(0), "rb")
    # Only warnings reach stderr, tagged with this child; a task's INFO lines go to its sector's log.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True,
                        format=f"%(asctime)s %(levelname)s processor {stage}[{os.getpid()}] %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)
    notes = set_up(dict(os.environ))
    import damocles_py.proofs  # noqa: F401  (loads the library before Ready: the first task pays nothing)
    from damocles_py.thread.logs import RUST_LOGGERS

    logs = _TaskLogs(out)
    logging.getLogger().addHandler(logs)
    for name in RUST_LOGGERS + ("damocles_py",):
        logging.getLogger(name).setLevel(logging.INFO)
    out.send(Ready(stage, os.getpid(), tuple(sorted(os.sched_getaffinity(0))), notes))
    try:
        while (frame := read_frame(stdin)) is not None:  # None: the daemon closed our stdin, or died
            if isinstance(frame, Task):
                threading.Thread(target=_run, args=(frame, out, logs), daemon=True,
                                 name=f"task-{frame.id}").start()
    finally:
        if os.environ.get(ENV_CGROUP):
            _leave_cgroup(os.environ[ENV_CGROUP])
    return 0
