"""What a stage run waits for before it starts: `[processors.limitation]` and `[processors.ext_locks]`.

Every wait polls a `check` callback (the thread's pause/stop check, which raises to leave), so a
thread waiting for a slot obeys a pause at once and holds nothing while paused (damocles #765);
whatever was taken is given back in `finally`, also when the run fails or its child dies (#572).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

POLL = 0.2  # seconds between pause/stop checks while waiting

Check = Callable[[], None]


class StageLimits:
    """`limitation.concurrent` (at most N runs of a stage at once, across threads) and
    `limitation.staggered` (at most one start of a stage per interval, as damocles)."""

    def __init__(self, concurrent: dict[str, int], staggered: dict[str, float] | None = None):
        self._sems = {stage: threading.Semaphore(n) for stage, n in concurrent.items()}
        self._interval = dict(staggered or {})
        self._next_start: dict[str, float] = {}
        self._cond = threading.Condition()

    @contextmanager
    def slot(self, stage: str, check: Check, on_wait: Callable[[], None]) -> Iterator[None]:
        sem = self._sems.get(stage)
        waited = False

        def wait_once():
            nonlocal waited
            if not waited:
                waited = True
                on_wait()

        if sem is not None and not sem.acquire(blocking=False):
            wait_once()
            while not sem.acquire(timeout=POLL):
                check()
        try:
            self._stagger(stage, check, wait_once)
        except BaseException:
            if sem is not None:
                sem.release()
            raise
        try:
            yield
        finally:
            if sem is not None:
                sem.release()

    def _stagger(self, stage: str, check: Check, wait_once: Callable[[], None]) -> None:
        interval = self._interval.get(stage)
        if interval is None:
            return
        while True:
            with self._cond:
                left = self._next_start.get(stage, 0.0) - time.monotonic()
                if left <= 0:
                    self._next_start[stage] = time.monotonic() + interval
                    return
            wait_once()
            check()
            time.sleep(min(left, POLL))


class ExtLocks:
    """`[processors.ext_locks]`: named counted locks a processor entry holds while a task runs."""

    def __init__(self, sizes: dict[str, int]):
        self._free = dict(sizes)
        self.sizes = dict(sizes)

    def try_take(self, names: tuple[str, ...]) -> bool:
        """All of `names` or none (the caller holds the pool's condition)."""
        if all(self._free[n] > 0 for n in names):
            for n in names:
                self._free[n] -= 1
            return True
        return False

    def give_back(self, names: tuple[str, ...]) -> None:
        for n in names:
            self._free[n] += 1

    def held(self, name: str) -> int:
        return self.sizes[name] - self._free[name]
