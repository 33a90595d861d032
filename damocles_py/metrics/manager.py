"""The standalone sector manager's Prometheus metrics (`damocles-manager run --metrics-listen`).

    damocles_manager_sectors{state}                       sectors by state, read from the manager at scrape time
    damocles_manager_grpc_requests_total{method,code}     gRPC requests served, by method and status code
    damocles_manager_grpc_request_duration_seconds{method} their latency
    damocles_manager_workers{status}                      workers alive / lost (only if the manager has `workers()`)
    damocles_manager_deals{state}                         deals free / assigned / quarantined (a poison deal)

Everything lives in the manager's own registry, so several managers (tests) never share series.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import Counter as Tally
from http.server import ThreadingHTTPServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from damocles_py.errors import UserError

log = logging.getLogger(__name__)

# Every sector is counted once, in the most advanced of these it reached.
SECTOR_STATES = ("allocated", "pre_committed", "proven", "finished", "aborted")
DEAL_STATES = ("free", "assigned", "quarantined")
WORKER_STATUSES = ("alive", "lost")  # always exported (0 if none); other statuses a manager reports are added
RPC_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30)


def sector_state(record) -> str:
    """Where a manager `SectorRecord` stands, as one of SECTOR_STATES."""
    from damocles_py.manager.db import Submission

    if record.aborted:
        return "aborted"
    if record.finished:
        return "finished"
    if record.commit is not None and record.commit.state is Submission.Accepted:
        return "proven"
    if record.pre_commit is not None and record.pre_commit.state is Submission.Accepted:
        return "pre_committed"
    return "allocated"


def worker_status(worker) -> str | None:
    """alive/lost (or another status) of one item of `workers()`; None if its shape is unknown.

    Accepts a `status` or `state` (string or enum), or a boolean `alive` or `lost`, as an
    attribute or a dict key.
    """
    def field(name):
        return worker.get(name) if isinstance(worker, dict) else getattr(worker, name, None)

    for name in ("status", "state"):
        value = field(name)
        if isinstance(value, enum.Enum):
            value = value.value if isinstance(value.value, str) else value.name
        if isinstance(value, str) and value:
            return value.lower()
    for name, if_true, if_false in (("alive", "alive", "lost"), ("lost", "lost", "alive")):
        value = field(name)
        if isinstance(value, bool):
            return if_true if value else if_false
    return None


class _StateCollector(Collector):
    """Reads the manager when Prometheus scrapes: sector counts by state, and workers if it lists them."""

    def __init__(self, manager, service=None):
        self._manager = manager
        self._service = service  # the gRPC servicer: it may be the one that knows the workers
        self._warned: set[str] = set()

    def collect(self):
        sectors = self._read("sectors", self._manager.sectors)
        if sectors is not None:
            counts = Tally(sector_state(r) for r in sectors)
            family = GaugeMetricFamily("damocles_manager_sectors", "Sectors the manager knows, by state",
                                       labels=["state"])
            for state in SECTOR_STATES:
                family.add_metric([state], counts.get(state, 0))
            yield family

        deals_fn = getattr(self._manager, "deals", None)
        deals = self._read("deals", deals_fn) if callable(deals_fn) else None
        if deals is not None:
            counts = Tally("quarantined" if d.quarantine else "free" if d.sector is None else "assigned" for d in deals)
            family = GaugeMetricFamily("damocles_manager_deals", "Deals the manager knows, by state "
                                       "(quarantined: its piece failed its commitment check)", labels=["state"])
            for state in DEAL_STATES:
                family.add_metric([state], counts.get(state, 0))
            yield family

        workers_fn = getattr(self._manager, "workers", None) or getattr(self._service, "workers", None)
        workers = self._read("workers", workers_fn) if callable(workers_fn) else None
        if workers is not None:
            items = workers.values() if isinstance(workers, dict) else workers
            statuses = [worker_status(w) for w in items]
            if None in statuses:
                self._warn_once("workers", "workers(): items have no status/state/alive/lost; not exported")
                return
            counts = Tally(statuses)
            family = GaugeMetricFamily("damocles_manager_workers", "Workers the manager has heard from, by status",
                                       labels=["status"])
            for status in sorted(set(WORKER_STATUSES) | set(counts)):
                family.add_metric([status], counts.get(status, 0))
            yield family

    def _read(self, what: str, fn):
        """fn(), or None (logged once) if it fails: one bad read must not fail the whole scrape."""
        try:
            return fn()
        except Exception as e:  # noqa: BLE001
            self._warn_once(what, f"metrics: cannot read {what} from the manager: {type(e).__name__}: {e}")
            return None

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)


class _RequestInterceptor(grpc.ServerInterceptor):
    """Counts and times every unary rpc the server handles, by method and final status code."""

    def __init__(self, metrics: "ManagerMetrics"):
        self._metrics = metrics

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:  # unknown method / streaming: untouched
            return handler
        method = handler_call_details.method.rpartition("/")[2]
        inner = handler.unary_unary

        def measured(request, context):
            start = time.perf_counter()
            failed = True
            try:
                response = inner(request, context)
                failed = False
                return response
            finally:
                # abort() and set_code() leave the code on the context; an escaping exception is UNKNOWN.
                code = context.code() or (grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK)
                self._metrics.observe(method, getattr(code, "name", str(code)), time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(measured, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


class ManagerMetrics:
    """The manager's registry. Pass `interceptor` to `serve_manager`, then `start_metrics_server`."""

    def __init__(self, manager, service=None):
        self.registry = CollectorRegistry()
        self.requests = Counter("damocles_manager_grpc_requests_total",
                                "gRPC requests the manager handled, by method and status code",
                                ["method", "code"], registry=self.registry)
        self.request_seconds = Histogram("damocles_manager_grpc_request_duration_seconds",
                                         "Time the manager took to handle a gRPC request, by method",
                                         ["method"], buckets=RPC_BUCKETS, registry=self.registry)
        # The Venus JSON-RPC API (--venus-listen): code is "ok" or the JSON-RPC error code (11001, 1, -32602...)
        self.venus_requests = Counter("damocles_manager_venus_requests_total",
                                      "Venus JSON-RPC calls the manager handled, by method and outcome",
                                      ["method", "code"], registry=self.registry)
        self.venus_request_seconds = Histogram("damocles_manager_venus_request_duration_seconds",
                                               "Time the manager took to handle a Venus JSON-RPC call, by method",
                                               ["method"], buckets=RPC_BUCKETS, registry=self.registry)
        self.registry.register(_StateCollector(manager, service))
        self.interceptor = _RequestInterceptor(self)

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method, code).inc()
        self.request_seconds.labels(method).observe(seconds)

    def observe_venus(self, method: str, code: str, seconds: float) -> None:
        """`jsonrpc.server.JSONRPCServer`'s observe hook (called for known methods only)."""
        self.venus_requests.labels(method, code).inc()
        self.venus_request_seconds.labels(method).observe(seconds)


def start_metrics_server(listen: str, metrics: ManagerMetrics) -> ThreadingHTTPServer:
    """Serve /metrics on `listen` ("host:port"); `shutdown()` the result to stop."""
    host, _, port = listen.rpartition(":")
    try:
        server, _thread = start_http_server(int(port), addr=host or "0.0.0.0", registry=metrics.registry)
    except OSError as e:
        raise UserError(f"cannot serve metrics on {listen}: {e}. Fix: pass another --metrics-listen address") from None
    return server
