"""The parent side of external processors: start the children, pick one per task, restart the dead.

`Processors.run(stage, fn, args, ...)` is the one call a sealing thread makes for a heavy task:
a stage with `[[processors.<stage>]]` entries sends it to a child, any other stage calls `fn` here.
A task goes to the child with the most free capacity whose `locks` are all free (damocles picks
the same way, but then blocks on the first entry; here a thread waits for whichever frees first,
checking for pause and stop). A child that dies fails its tasks with `ProcessorCrashed` and is
started again; the threads and the other children carry on.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from damocles_py.config.load import format_cpu_list
from damocles_py.config.schema import ProcessorConfig, ProcessorsConfig
from damocles_py.errors import UserError
from damocles_py.processors.child import ENV_CGROUP, ENV_CPUSET, ENV_NUMA
from damocles_py.processors.gates import POLL, Check, ExtLocks
from damocles_py.processors.protocol import Done, Failed, FrameWriter, LogLine, ProtocolError, Ready, Task, read_frame
from damocles_py.processors.tasks import task_name

log = logging.getLogger("damocles_py.processors")

RESTART_DELAY = 1.0  # damocles waits 3 s; a sector's retry waits recover_interval anyway
MAX_RESTART_DELAY = 30.0
UNBOUNDED = 64  # damocles' selector treats an entry without `concurrent` as 64 slots


class ProcessorStartError(UserError):
    """A child processor could not be started (bad `bin`, no ready frame in time)."""


class ProcessorCrashed(Exception):
    """The child running a task died (or broke the protocol) before answering."""


class ProcessorClosed(ProcessorCrashed):
    """The daemon stopped the child while it ran a task (shutdown): the stage re-runs on the next start."""


@dataclass(frozen=True)
class ChildInfo:
    """One child, as `worker list` and the metrics show it."""
    stage: str
    index: int
    pid: int | None  # None while down
    cpuset: str | None
    state: str  # running | starting | down
    sectors: tuple[str, ...]  # the tasks in flight, by sector
    tasks_done: int
    restarts: int


class _Pending:
    def __init__(self, label: str, sector_log: logging.Logger):
        self.label = label
        self.log = sector_log
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def finish(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error
        self.done.set()

    def log_line(self, line: LogLine) -> None:
        # as thread.logs does for in-process runs: the sector's own files, not a second stderr copy
        record = logging.LogRecord(line.logger, line.level, "", 0, line.message, None, None)
        for handler in self.log.handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


class Child:
    """One `[[processors.<stage>]]` entry's process, started again when it dies."""

    def __init__(self, cfg: ProcessorConfig, index: int, changed: threading.Condition):
        self.cfg = cfg
        self.index = index
        self.name = f"{cfg.stage}[{index}]"
        self._changed = changed  # the pool's condition: notified when this child's capacity changes
        self._proc: subprocess.Popen | None = None
        self._out: FrameWriter | None = None
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._next_id = 1
        self.ready: Ready | None = None
        self.state = "down"
        self.load = 0  # tasks leased to this child (guarded by the pool's condition)
        self.tasks_done = 0
        self.restarts = 0
        self.closing = False

    @property
    def capacity(self) -> int:
        return self.cfg.concurrent or UNBOUNDED

    def argv(self) -> list[str]:
        program = [self.cfg.bin] if self.cfg.bin else [sys.executable, "-m", "damocles_py.cli.worker"]
        return program + list(self.cfg.args if self.cfg.args is not None else ("processor", self.cfg.stage))

    def env(self) -> dict[str, str]:
        env = dict(os.environ) if self.cfg.inherit_envs else {}
        env.update(self.cfg.envs)
        if self.cfg.cpuset_text:
            env[ENV_CPUSET] = self.cfg.cpuset_text
            env[ENV_CGROUP] = f"{self.cfg.cgroup_group_name}/sub-{self.cfg.stage}-{os.getpid()}-{self.index}"
        if self.cfg.numa_preferred is not None:
            env[ENV_NUMA] = str(self.cfg.numa_preferred)
        return env

    def start(self) -> None:
        """Start the process and wait for its Ready frame; ProcessorStartError if it does not come."""
        argv = self.argv()
        self.state = "starting"
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self.env())
        except OSError as e:
            self.state = "down"
            raise ProcessorStartError(
                f"[[processors.{self.cfg.stage}]] entry {self.index}: cannot run {argv[0]!r}: {e.strerror or e}. "
                f"Fix: set `bin` to an executable path (or remove it to use damocles-worker itself)") from None
        first: list = []
        got_first = threading.Event()
        threading.Thread(target=self._read, args=(proc, first, got_first), daemon=True,
                         name=f"processor-{self.name}").start()
        if not got_first.wait(self.cfg.stable_wait) or not isinstance(first[0], Ready):
            proc.kill()
            proc.wait()
            self.state = "down"
            why = (f"exited with status {proc.returncode} before saying it was ready" if got_first.is_set()
                   else f"did not say it was ready within {self.cfg.stable_wait:g}s")
            raise ProcessorStartError(
                f"[[processors.{self.cfg.stage}]] entry {self.index}: {' '.join(argv)} {why} (anything it printed is in the daemon's stderr). "
                f"Fix: check `bin`/`args` (it must speak damocles-py's processor protocol) or raise `stable_wait`")
        with self._lock:
            self._proc, self._out, self.ready = proc, FrameWriter(proc.stdin), first[0]
        with self._changed:
            self.state = "running"
            self._changed.notify_all()
        notes = "; ".join(self.ready.notes)
        log.info("processor %s started: pid %d, cpus %s%s", self.name, self.ready.pid,
                 format_cpu_list(self.ready.cpus), f" ({notes})" if notes else "")

    def _read(self, proc: subprocess.Popen, first: list, got_first: threading.Event) -> None:
        """The child's frames until it goes away; then its tasks fail and it is started again."""
        problem = None
        try:
            while (frame := read_frame(proc.stdout)) is not None:
                if not got_first.is_set():
                    first.append(frame)
                    got_first.set()
                elif isinstance(frame, LogLine):
                    pending = self._pending.get(frame.id)
                    if pending is not None:
                        pending.log_line(frame)
                elif isinstance(frame, (Done, Failed)):
                    with self._lock:
                        pending = self._pending.pop(frame.id, None)
                    if pending is not None:
                        self.tasks_done += isinstance(frame, Done)
                        pending.finish(*((frame.value, None) if isinstance(frame, Done) else (None, frame.error)))
        except (ProtocolError, OSError, EOFError, Exception) as e:  # a broken child is a dead child
            problem = f"broke the protocol ({e})"
            proc.kill()
        if not got_first.is_set():
            first.append(None)
            got_first.set()
        status = proc.wait()
        self._died(proc, problem or _exit_text(status))

    def _died(self, proc: subprocess.Popen, how: str) -> None:
        with self._lock:
            if self._proc is not proc:  # never became ready: start() reports it
                return
            self._proc, self._out = None, None
            pending, self._pending = self._pending, {}
        with self._changed:
            self.state = "down"
            self._changed.notify_all()
        for task in pending.values():
            task.finish(error=ProcessorClosed(f"the daemon stopped the {self.name} processor") if self.closing else
                        ProcessorCrashed(f"the {self.name} processor (pid {proc.pid}) {how} while running "
                                         f"this task; it is started again and the stage retried"))
        if self.closing:
            return
        log.error("processor %s (pid %d) %s%s", self.name, proc.pid, how,
                  f", {len(pending)} task(s) failed" if pending else "")
        if self.cfg.auto_restart:
            threading.Thread(target=self._restart, daemon=True, name=f"restart-{self.name}").start()

    def _restart(self) -> None:
        delay = RESTART_DELAY
        while not self.closing:
            time.sleep(delay)
            if self.closing:  # the daemon stopped meanwhile: start nothing it will not stop
                return
            try:
                self.start()
                self.restarts += 1
                if self.closing:
                    self.close()
                return
            except ProcessorStartError as e:
                log.error("processor %s: restart failed: %s (next try in %.0fs)", self.name, e, delay)
                delay = min(delay * 2, MAX_RESTART_DELAY)

    def call(self, function: str, args: tuple, label: str, sector_log: logging.Logger) -> Any:
        pending = _Pending(label, sector_log)
        with self._lock:
            out = self._out
            if out is None:
                raise ProcessorCrashed(f"the {self.name} processor is not running")
            task_id, self._next_id = self._next_id, self._next_id + 1
            self._pending[task_id] = pending
        try:
            out.send(Task(task_id, function, args))
        except OSError:
            pass  # it died: the reader fails the task
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.value

    def info(self) -> ChildInfo:
        with self._lock:
            pid = self._proc.pid if self._proc is not None else None
            sectors = tuple(p.label for p in self._pending.values())
        return ChildInfo(self.cfg.stage, self.index, pid, self.cfg.cpuset_text, self.state, sectors,
                         self.tasks_done, self.restarts)

    def close(self) -> None:
        self.closing = True
        with self._lock:
            proc = self._proc
        if proc is not None:
            proc.stdin.close()  # the child's loop ends; a task still running dies with it
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Processors:
    """Every stage's children, the ext_locks they share, and the one call that runs a task."""

    def __init__(self, cfg: ProcessorsConfig):
        self._changed = threading.Condition()
        self.locks = ExtLocks(cfg.ext_locks)
        self.children: dict[str, list[Child]] = {
            stage: [Child(entry, i, self._changed) for i, entry in enumerate(entries)]
            for stage, entries in cfg.external.items() if entries
        }

    def start(self) -> None:
        """Start every child (at once); on any failure stop the started ones and raise."""
        started: list[Child] = []
        errors: list[ProcessorStartError] = []

        def start(child: Child) -> None:
            try:
                child.start()
                started.append(child)
            except ProcessorStartError as e:
                errors.append(e)

        threads = [threading.Thread(target=start, args=(c,)) for cs in self.children.values() for c in cs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            for child in started:
                child.close()
            raise errors[0]

    def close(self) -> None:
        for children in self.children.values():
            for child in children:
                child.close()

    def external(self, stage: str) -> bool:
        return stage in self.children

    def run(self, stage: str, fn: Callable[..., Any], args: tuple, *, label: str, sector_log: logging.Logger,
            check: Check, on_wait: Callable[[], None]) -> Any:
        """`fn(*args)`: here if `stage` has no processors, else in one of its children."""
        if stage not in self.children:
            return fn(*args)
        function = task_name(fn)
        with self._lease(stage, check, on_wait) as child:
            return child.call(function, args, label, sector_log)

    @contextmanager
    def _lease(self, stage: str, check: Check, on_wait: Callable[[], None]) -> Iterator[Child]:
        children = self.children[stage]
        waited = False
        with self._changed:
            while True:
                free = [c for c in children if c.state == "running" and c.load < c.capacity]
                free.sort(key=lambda c: c.capacity - c.load, reverse=True)
                child = next((c for c in free if self.locks.try_take(c.cfg.locks)), None)
                if child is not None:
                    child.load += 1
                    break
                if not any(c.state != "down" or c.cfg.auto_restart for c in children):
                    raise ProcessorCrashed(f"no {stage} processor is running (all exited; auto_restart = false)")
                if not waited:
                    waited = True
                    on_wait()
                self._changed.wait(POLL)
                check()  # raises to leave: a pause or stop while waiting takes effect at once
        try:
            yield child
        finally:
            with self._changed:
                child.load -= 1
                self.locks.give_back(child.cfg.locks)
                self._changed.notify_all()

    def info(self) -> list[ChildInfo]:
        return [c.info() for children in self.children.values() for c in children]


def _exit_text(status: int) -> str:
    if status < 0:
        import signal

        return f"was killed by {signal.Signals(-status).name}"
    return f"exited with status {status}"
