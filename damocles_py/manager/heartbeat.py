"""`HeartbeatSender`: a worker's ping to its sector manager, every `ping_interval`.

The manager records when it last heard from each worker instance and calls one silent for longer
than its `worker_timeout` lost (see `EmbeddedManager.workers`). A ping is best effort: a manager
that is down or refuses it must never disturb sealing, so failures are logged at debug level and
the next ping simply tries again.

    sender = HeartbeatSender(manager, "worker-a", interval=30.0, threads=lambda: summaries)
    sender.start()
    ...
    sender.stop()
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Protocol

from damocles_py.manager.interface import ThreadSummary, WorkerPing, WorkerSummary

log = logging.getLogger(__name__)


class PingReceiver(Protocol):
    """What a heartbeat needs of a manager (EmbeddedManager and RemoteManager both have it)."""

    def worker_ping(self, ping: WorkerPing) -> None: ...


class HeartbeatSender:
    """A daemon thread that pings `manager` as `instance` every `interval` seconds.

    `threads` is called at each ping for the current summary of the worker's sealing threads
    (by default none). `dest` is where the worker serves damocles' VenusWorker admin API
    (`host:port`), so the manager's `util worker ... <name>` can reach it; `version` is shown by
    `util worker list`; `errors` counts the threads a failure holds paused (the ping's
    Summary.Errors). The first ping goes out as soon as the sender starts, so the manager knows a
    freshly started worker at once.
    """

    def __init__(self, manager: PingReceiver, instance: str, interval: float,
                 threads: Callable[[], Iterable[ThreadSummary]] = tuple, dest: str = "", version: str = "",
                 errors: Callable[[], int] | None = None):
        if interval <= 0:
            raise ValueError(f"the ping interval must be positive, got {interval}")
        self.manager = manager
        self.instance = instance
        self.dest = dest
        self.version = version
        self._errors = errors
        self.interval = interval
        self._threads = threads
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("this heartbeat sender was started already")
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.instance}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop pinging; waits up to `timeout` for a ping in flight to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def ping_once(self) -> bool:
        """Send one ping now; False if it failed (logged at debug level, never raised)."""
        try:
            threads = tuple(self._threads())
            summary = None
            if self._errors is not None:  # damocles' Summary.Errors: the threads a failure holds paused
                summary = dataclasses.replace(WorkerSummary.of(threads), errors=self._errors())
            self.manager.worker_ping(WorkerPing(self.instance, threads, dest=self.dest, version=self.version,
                                                summary=summary))
            return True
        except Exception as e:  # noqa: BLE001 - a heartbeat must never disturb the worker
            log.debug("heartbeat of %s not delivered: %s", self.instance, e)
            return False

    def _run(self) -> None:
        while not self._stop.is_set():
            self.ping_once()
            self._stop.wait(self.interval)
