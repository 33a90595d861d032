"""What the sealing threads tell the rest of the worker (metrics); the default does nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from damocles_py.processors.pool import ChildInfo
    from damocles_py.thread.runtime import ThreadStatus


class WorkerObserver:
    def thread_state(self, index: int, plan: str, state: str, thread_state: str) -> None:
        pass

    def transition(self, index: int, plan: str, prev: str, next: str) -> None:
        pass

    def stage_duration(self, stage: str, sector_size: str, seconds: float, ok: bool) -> None:
        pass

    def failure(self, cause: str, level: str) -> None:
        pass

    def retry(self, cause: str) -> None:
        pass

    def sector_done(self, plan: str, outcome: str) -> None:
        pass

    def rpc(self, method: str, seconds: float, ok: bool) -> None:
        pass

    def watch_processors(self, children: Callable[[], list[ChildInfo]],
                         statuses: Callable[[], Iterable[ThreadStatus]]) -> None:
        """Where to read the processor children and the threads' stages from when asked (scrapes)."""
