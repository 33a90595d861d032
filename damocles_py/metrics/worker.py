"""The worker's Prometheus metrics: thread states, stage durations, failures, retries, sectors,
and calls to the sector manager. Each daemon has its own registry (tests run several at once)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from damocles_py.errors import UserError
from damocles_py.thread.load import HEAVY_STAGES, stage_loads
from damocles_py.thread.observer import WorkerObserver

if TYPE_CHECKING:
    from damocles_py.processors.pool import ChildInfo
    from damocles_py.thread.runtime import ThreadStatus

# Stage durations span milliseconds (2KiB) to hours (32GiB PC1).
STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600)
RPC_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30)


class PrometheusObserver(WorkerObserver):
    def __init__(self, worker: str):
        self.registry = CollectorRegistry()
        r = self.registry
        self.thread_state_gauge = Gauge(
            "damocles_sealing_thread_state", "1 for the state each sealing thread's sector is in",
            ["thread", "plan", "state", "thread_state"], registry=r)
        self.stage_seconds = Histogram(
            "damocles_stage_duration_seconds", "Wall time of heavy sealing stages",
            ["stage", "sector_size", "outcome"], buckets=STAGE_BUCKETS, registry=r)
        self.failures = Counter("damocles_failures_total", "Stage failures by cause and level",
                                ["cause", "level"], registry=r)
        self.retries = Counter("damocles_retries_total", "Temporary failures retried, by cause", ["cause"],
                               registry=r)
        self.sectors = Counter("damocles_sectors_total", "Sectors done, by plan and outcome (finished, aborted)",
                               ["plan", "outcome"], registry=r)
        self.transitions = Counter("damocles_transitions_total", "State transitions, by plan and new state",
                                   ["plan", "state"], registry=r)
        self.rpc_calls = Counter("damocles_manager_rpc_calls_total", "Calls to the sector manager",
                                 ["method", "outcome"], registry=r)
        self.rpc_seconds = Histogram("damocles_manager_rpc_duration_seconds", "Latency of calls to the sector manager",
                                     ["method"], buckets=RPC_BUCKETS, registry=r)
        info = Gauge("damocles_worker_info", "Constant 1, labelled with the worker instance name", ["worker"],
                     registry=r)
        info.labels(worker).set(1)
        self._current: dict[int, tuple[str, str, str, str]] = {}
        self._plans: set[str] = set()

    def thread_state(self, index: int, plan: str, state: str, thread_state: str) -> None:
        if plan not in self._plans:  # export 0 from the start, so increase() counts a plan's first sector
            self._plans.add(plan)
            for outcome in ("finished", "aborted"):
                self.sectors.labels(plan, outcome)
        labels = (str(index), plan, state, thread_state)
        previous = self._current.get(index)
        if previous == labels:
            return
        if previous is not None:
            self.thread_state_gauge.remove(*previous)
        self.thread_state_gauge.labels(*labels).set(1)
        self._current[index] = labels

    def transition(self, index: int, plan: str, prev: str, next: str) -> None:
        self.transitions.labels(plan, next).inc()

    def stage_duration(self, stage: str, sector_size: str, seconds: float, ok: bool) -> None:
        self.stage_seconds.labels(stage, sector_size, "ok" if ok else "failed").observe(seconds)

    def failure(self, cause: str, level: str) -> None:
        self.failures.labels(cause, level).inc()

    def retry(self, cause: str) -> None:
        self.retries.labels(cause).inc()

    def sector_done(self, plan: str, outcome: str) -> None:
        self.sectors.labels(plan, outcome).inc()

    def rpc(self, method: str, seconds: float, ok: bool) -> None:
        self.rpc_calls.labels(method, "ok" if ok else "error").inc()
        self.rpc_seconds.labels(method).observe(seconds)

    def watch_processors(self, children: Callable[[], list[ChildInfo]],
                         statuses: Callable[[], Iterable[ThreadStatus]]) -> None:
        self.registry.register(ProcessorCollector(children, statuses))


class ProcessorCollector:
    """The external processor children and the per-stage thread counts, read at each scrape
    (the pool and the thread statuses are the truth; nothing to keep in step)."""

    def __init__(self, children: Callable[[], list[ChildInfo]], statuses: Callable[[], Iterable[ThreadStatus]]):
        self._children = children
        self._statuses = statuses

    def describe(self):
        return []  # names are only known at collect time; nothing to check for clashes

    def collect(self):
        labels = ["stage", "index"]
        up = GaugeMetricFamily("damocles_processor_up", "1 while a processor child is running, 0 while down or "
                               "starting", labels=labels)
        tasks = CounterMetricFamily("damocles_processor_tasks", "Tasks a processor child finished (since the "
                                    "daemon started)", labels=labels)
        restarts = CounterMetricFamily("damocles_processor_restarts", "Times a processor child was started again "
                                       "after it died", labels=labels)
        info = GaugeMetricFamily("damocles_processor_info", "Constant 1 per processor child, labelled with its pid "
                                 "(empty while down) and configured cpuset", labels=[*labels, "pid", "cpuset"])
        for c in self._children():
            key = [c.stage, str(c.index)]
            up.add_metric(key, 1 if c.state == "running" else 0)
            tasks.add_metric(key, c.tasks_done)
            restarts.add_metric(key, c.restarts)
            info.add_metric([*key, str(c.pid or ""), c.cpuset or ""], 1)
        stages = GaugeMetricFamily("damocles_stage_tasks", "Sealing threads running a heavy stage, and waiting for "
                                   "its slot (limitation, ext_lock or free processor)", labels=["stage", "state"])
        for load in stage_loads(self._statuses(), always=HEAVY_STAGES):
            stages.add_metric([load.stage, "running"], load.running)
            stages.add_metric([load.stage, "waiting"], load.waiting)
        return [up, tasks, restarts, info, stages]


class InstrumentedManager:
    """Wraps a sector manager so that every call is counted and timed."""

    def __init__(self, manager, observer: WorkerObserver):
        self._manager = manager
        self._observer = observer

    def __getattr__(self, name):
        target = getattr(self._manager, name)
        if not callable(target) or name.startswith("_"):
            return target

        def timed(*args, **kwargs):
            start = time.perf_counter()
            ok = False
            try:
                out = target(*args, **kwargs)
                ok = True
                return out
            finally:
                self._observer.rpc(name, time.perf_counter() - start, ok)

        return timed


def start_metrics_server(listen: str, observer: PrometheusObserver) -> ThreadingHTTPServer:
    host, _, port = listen.rpartition(":")
    try:
        server, _thread = start_http_server(int(port), addr=host or "0.0.0.0", registry=observer.registry)
    except OSError as e:
        raise UserError(f"cannot serve metrics on {listen}: {e}. Fix: change [metrics] http_listen") from None
    return server
