"""The worker daemon: sealing threads, their sector manager, the admin APIs and metrics.

Two admin APIs steer the same threads through one `ThreadControl`: our gRPC `WorkerAdmin` on
`[worker.admin_server]` (the `damocles-worker worker ...` CLI) and damocles' `VenusWorker.*`
JSON-RPC on `[worker.rpc_server]` (`damocles-manager util worker ...`, ours or Go).

`damocles-worker daemon -c sealing.toml` builds a `WorkerDaemon` and runs it until SIGINT or
SIGTERM, which stop the threads at their next stage boundary (a second signal exits at once; the
interrupted stage re-runs on the next start).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from damocles_py.admin.control import ThreadControl
from damocles_py.admin.token import ensure_token
from damocles_py.admin.venus import VERSION, holding_failure
from damocles_py.config.schema import Config
from damocles_py.errors import UserError
from damocles_py.manager.heartbeat import HeartbeatSender
from damocles_py.manager.interface import SectorId, SectorManager, StoreInfo, ThreadSummary
from damocles_py.manager.venus.client import VenusManager
from damocles_py.processors.gates import StageLimits
from damocles_py.processors.pool import Processors
from damocles_py.preflight import admin_token_path, busy_problems, locked_dirs, start_problems
from damocles_py.store.durable import make_dirs
from damocles_py.store.location import DirLock
from damocles_py.thread.logs import install_rust_log_routing
from damocles_py.thread.observer import WorkerObserver
from damocles_py.thread.runtime import SealingThread, WorkerContext

log = logging.getLogger("damocles.daemon")

__all__ = ["WorkerDaemon", "admin_token_path", "build_manager", "ensure_admin_token", "refuse_unstartable"]


def ensure_admin_token(config: Config) -> str:
    """The token every state-changing admin call must carry; created once, readable by the owner only."""
    return ensure_token(admin_token_path(config))


def refuse_unstartable(config: Config) -> None:
    """Refuse a config that cannot start, before anything is created, locked or started."""
    # Locks held by another daemon and a busy admin port are probed here, before any state is
    # created (grpc would only find the port at start, with a log line of its own). The locks are
    # then taken for real; a port taken between now and start still fails there.
    problems = start_problems(config) + busy_problems(config)
    if problems:
        more = (f" ({len(problems) - 1} more problem(s): see `damocles-worker daemon --check -c {config.path}`)"
                if len(problems) > 1 else "")
        raise UserError(problems[0] + more)


def lock_dirs(config: Config) -> list[DirLock]:
    """Lock the worker's state_dir, the embedded manager's and every thread location for this process's lifetime."""
    locks: list[DirLock] = []
    try:
        for directory, what in locked_dirs(config):
            make_dirs(directory)  # state dirs are created at start anyway; locations exist (preflight)
            locks.append(DirLock(directory, what).acquire())
    except BaseException:
        for lock in locks:
            lock.release()
        raise
    return locks


def venus_admin_dest(config: Config) -> str:
    """The `host:port` our pings give as Dest: where a manager reaches this worker's VenusWorker API.

    A wildcard bind (0.0.0.0, ::) is announced as the local IP the system routes to the manager
    from, as damocles-worker does; a specific host as it is."""
    server = config.worker.rpc_server
    host = server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
        if not config.sector_manager.is_embedded:
            from damocles_py.manager.venus.client import local_ip_towards

            addr = config.sector_manager.addr or ""
            try:
                from damocles_py.manager.venus.addr import parse_manager_addr

                endpoint = parse_manager_addr(addr)
                host = local_ip_towards(endpoint.host, endpoint.port or 80)
            except Exception:  # our gRPC form, host:port
                manager_host, _, port = addr.rpartition(":")
                host = local_ip_towards(manager_host.strip("[]") or "127.0.0.1", int(port) if port.isdigit() else 1789)
    return f"[{host}]:{server.port}" if ":" in host else f"{host}:{server.port}"


def build_manager(config: Config) -> SectorManager:
    """The embedded manager; a damocles-manager over Venus JSON-RPC (`rpc_client.addr` a multiaddr
    or URL); or our manager over gRPC (`host:port`)."""
    stores = [StoreInfo(s.name, str(s.location), s.readonly) for s in config.attached]
    sm = config.sector_manager
    if sm.is_embedded:
        from damocles_py.manager.embedded import EmbeddedManager

        return EmbeddedManager(sm.embedded, stores)
    if sm.is_venus:
        return build_venus_manager(config)
    from damocles_py.manager.client import RemoteManager

    return RemoteManager(sm.addrs, timeout=sm.rpc_timeout, token_file=sm.token_file)  # failover in order


def build_venus_manager(config: Config) -> VenusManager:
    """A client of a damocles-manager: damocles' `rpc_client.headers`, plus the farm token (if
    `rpc_client.token_file`) as `Authorization: Bearer`, and `piece_token` for piece downloads.
    (Pings carry their Dest: `venus_admin_dest`.)"""
    from damocles_py.manager.auth import read_token

    sm = config.sector_manager
    headers = dict(sm.headers)
    if sm.token_file is not None:
        headers["Authorization"] = f"Bearer {read_token(sm.token_file)}"
    return VenusManager(sm.addr, timeout=sm.rpc_timeout, headers=headers, piece_token=sm.piece_token)


def check_venus_stores(manager: VenusManager, config: Config) -> None:
    """damocles-worker's start-up check: the damocles-manager knows every attached store by name
    (closes `manager` when it fails)."""
    from damocles_py.manager.interface import ManagerRequestError, ManagerUnavailable

    try:
        manager.require_stores(s.name for s in config.attached)
    except ManagerRequestError as e:
        manager.close()
        raise UserError(f"{e} ({config.path})") from None
    except ManagerUnavailable as e:
        manager.close()
        raise UserError(f"cannot start: {e}. Fix: start the damocles-manager, or correct [sector_manager] "
                        f"rpc_client.addr in {config.path}") from None


class WorkerDaemon:
    def __init__(self, config: Config, manager: SectorManager | None = None,
                 observer: WorkerObserver | None = None, max_sectors: int | None = None):
        """`max_sectors`: start at most this many new sectors, then let the threads idle (drain)."""
        self.config = config
        self.max_sectors = max_sectors
        self._started = 0
        self._admission = threading.Lock()
        refuse_unstartable(config)
        if manager is None and config.sector_manager.is_venus:
            manager = build_venus_manager(config)  # its start-up check runs before anything is created
            check_venus_stores(manager, config)
        self._locks = lock_dirs(config)
        try:
            self._build(config, manager, observer)
        except BaseException:
            self._release_locks()
            raise

    def _build(self, config: Config, manager: SectorManager | None, observer: WorkerObserver | None) -> None:
        for store in config.attached:
            if store.create:
                make_dirs(store.location)
        self.observer = observer or self._default_observer()
        self.manager = manager or build_manager(config)
        # deals' pieces not found locally come from a damocles-manager's /piecestore/
        piece_store = self.manager if isinstance(self.manager, VenusManager) else None
        if config.metrics.enable:
            from damocles_py.metrics.worker import InstrumentedManager

            rpc_manager = InstrumentedManager(self.manager, self.observer)
        else:
            rpc_manager = self.manager
        self.token = ensure_admin_token(config)
        install_rust_log_routing()
        self.limits = StageLimits(config.processors.limitation_concurrent, config.processors.limitation_staggered)
        self.processors = Processors(config.processors)  # children start with the daemon
        shared = WorkerContext(
            instance=config.worker.name,
            manager=rpc_manager,
            stores={s.name: s for s in config.attached},
            limits=self.limits,
            processors=self.processors,
            observer=self.observer,
            local_pieces_dirs=config.worker.local_pieces_dirs,
            piece_store=piece_store,
            static_tree_d=config.processors.static_tree_d,
            may_start_sector=self._may_start_sector,
            sector_log_max_bytes=config.worker.sector_log_max_bytes,
            sector_log_retention=config.worker.sector_log_retention,
        )
        self.threads = [SealingThread(t, shared) for t in config.sealing_threads]
        self.observer.watch_processors(self.processors.info, lambda: [t.status for t in self.threads])  # metrics
        self.control = ThreadControl(self.threads)  # one pause/resume for both admin APIs
        self._started = sum(1 for t in self.threads if t.db.current() is not None)  # resumed sectors count
        self._admin = None
        self._venus_admin = None
        self._metrics_server = None
        self._heartbeat = HeartbeatSender(self.manager, config.worker.name, config.worker.ping_interval,
                                          self._thread_summaries, dest=venus_admin_dest(config), version=VERSION,
                                          errors=self._paused_by_failure)
        self._stopping = threading.Event()

    def _default_observer(self) -> WorkerObserver:
        if self.config.metrics.enable:
            from damocles_py.metrics.worker import PrometheusObserver

            return PrometheusObserver(self.config.worker.name)
        return WorkerObserver()

    def start(self) -> None:
        from damocles_py.admin.server import serve_admin
        from damocles_py.admin.venus import VenusWorkerService, serve_venus_worker

        worker = self.config.worker
        try:
            self.processors.start()  # a child that cannot start is an error now, not a stuck thread later
            self._admin = serve_admin(self, worker.admin_server.address, self.token, self.control)
            service = VenusWorkerService(self.threads, self.control, self.token, worker.venus_admin_trust)
            self._venus_admin = serve_venus_worker(service, worker.rpc_server.host, worker.rpc_server.port)
            if self.config.metrics.enable:
                from damocles_py.metrics.worker import start_metrics_server

                self._metrics_server = start_metrics_server(self.config.metrics.http_listen, self.observer)
        except BaseException:  # no thread has started: leave nothing held behind
            self.stop()
            raise
        for t in self.threads:
            t.start()
        self._heartbeat.start()
        log.info("worker %s: %d sealing threads, admin API on %s (gRPC) and %s (VenusWorker JSON-RPC)",
                 worker.name, len(self.threads), worker.admin_server.address, worker.rpc_server.address)

    def _thread_summaries(self) -> list[ThreadSummary]:
        return [ThreadSummary(t.status.index, t.status.plan, t.status.state,
                              SectorId.parse(t.status.sector_id) if t.status.sector_id else None,
                              t.status.thread_state) for t in self.threads]

    def _paused_by_failure(self) -> int:
        """Threads a failure holds paused (what VenusWorker.WorkerList shows as last_error)."""
        return sum(1 for t in self.threads if holding_failure(t) is not None)

    def _may_start_sector(self) -> bool:
        with self._admission:
            if self.max_sectors is not None and self._started >= self.max_sectors:
                return False
            self._started += 1
            return True

    def sectors_done(self) -> int:
        return sum(t.sectors_done for t in self.threads)

    def stop(self, timeout: float | None = None) -> None:
        """Stop threads at their next stage boundary, then the servers."""
        self._stopping.set()
        for t in self.threads:
            t.stop()
        for t in self.threads:
            t.join(timeout)
        self._heartbeat.stop()
        if self._admin is not None:
            self._admin.stop(grace=1).wait()
        if self._venus_admin is not None:
            self._venus_admin.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        close = getattr(self.manager, "close", None)
        if close:
            close()
        self.processors.close()
        self._release_locks()

    def _release_locks(self) -> None:
        for lock in self._locks:
            lock.release()
        self._locks = []

    def run(self, stop_after_sectors: int | None = None) -> int:
        """Run until a signal (or until `stop_after_sectors` sectors are done). Returns an exit code.

        With `stop_after_sectors`, construct the daemon with `max_sectors` of the same value so
        that no thread starts a sector it would then have to abandon.
        """
        signals = {"count": 0}

        def on_signal(signum, _frame):
            signals["count"] += 1
            if signals["count"] > 1:
                log.warning("second signal: exiting now; interrupted stages re-run on the next start")
                os._exit(130)
            log.warning("signal %d: stopping sealing threads at their next stage boundary", signum)
            self._stopping.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        self.start()
        while not self._stopping.is_set():
            if stop_after_sectors is not None and self.sectors_done() >= stop_after_sectors:
                log.info("%d sectors done: stopping", self.sectors_done())
                break
            time.sleep(0.2)
        self.stop()
        return 0
