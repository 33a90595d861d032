"""What a stage handler works with: the sector, the manager, its files, and the thread's controls."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from damocles_py.config.schema import AttachedStoreConfig, SealingConfig
from damocles_py.fsm.failure import FailureCause, SealingFailure, is_out_of_space
from damocles_py.fsm.sector import Sector
from damocles_py.fsm.states import State
from damocles_py.manager.interface import SectorManager, WorkerRef
from damocles_py.processors.gates import StageLimits
from damocles_py.processors.pool import ProcessorClosed, ProcessorCrashed, Processors
from damocles_py.processors.protocol import RemoteError
from damocles_py.proofs import InvalidInput, ParametersMissing, ProofsError, SectorSize
from damocles_py.store.layout import PersistLayout, SectorFiles, sector_files
from damocles_py.thread.logs import bound_to


class Interrupted(Exception):
    """A pause or shutdown was requested while the thread waited; the stage re-runs on resume."""


@dataclass(frozen=True)
class ResumeRequest:
    state: State | None  # None: re-run the current state


class ThreadControl:
    """Pause, resume and stop signals between the daemon/admin API and one sealing thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.pause_requested = False
        self.stop_requested = False
        self.paused = False
        self._resume: ResumeRequest | None = None
        self.handler_wait_seconds = 0.0  # handlers waiting on purpose: chain epochs, polling

    def request_pause(self) -> bool:
        with self._cond:
            if self.pause_requested or self.paused:
                return False
            self.pause_requested = True
            self._cond.notify_all()
            return True

    def request_stop(self) -> None:
        with self._cond:
            self.stop_requested = True
            self._cond.notify_all()

    def resume(self, request: ResumeRequest) -> bool:
        """Resume a paused thread; False if it is not paused."""
        with self._cond:
            if not self.paused:
                return False
            self._resume = request
            self._cond.notify_all()
            return True

    def check(self) -> None:
        if self.stop_requested or self.pause_requested:
            raise Interrupted()

    def wait(self, seconds: float) -> None:
        """Sleep, waking early (with Interrupted) if a pause or stop is requested."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while True:
                if self.stop_requested or self.pause_requested:
                    raise Interrupted()
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def restore_pause(self) -> None:
        """A pause persisted by an earlier run: paused from the start, so a `resume` that comes before
        the thread reaches its pause (right after a restart) is accepted and kept for it."""
        with self._cond:
            self.paused = True

    def enter_pause(self) -> None:
        """The thread is paused from now on: `resume` is accepted until `await_resume` returns."""
        with self._cond:
            if not self.paused:  # else a restored pause: keep a resume accepted meanwhile
                self._resume = None
            self.paused, self.pause_requested = True, False

    def await_resume(self, timeout: float | None = None) -> ResumeRequest | None:
        """Block while paused: the resume request, or None if `timeout` passed first (still paused).

        Raises Interrupted (leaving the pause) when the thread must stop.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._resume is None and not self.stop_requested:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            self.paused = False
            if self.stop_requested:
                raise Interrupted()
            request, self._resume = self._resume, None
            return request

    def leave_pause(self) -> None:
        """End a pause without an operator (e.g. the manager abandoned the paused sector)."""
        with self._cond:
            self.paused, self._resume = False, None


class StageObserver(Protocol):
    """Told about stage runs (metrics, thread status)."""

    def stage_waiting(self, stage: str) -> None: ...

    def stage_started(self, stage: str) -> None: ...

    def stage_finished(self, stage: str, sector_size: str, seconds: float, ok: bool) -> None: ...


class PieceStore(Protocol):
    """Where a deal's piece comes from when it is not on this worker's disks: a damocles-manager's
    `/piecestore/`. `fetch_piece` puts the piece `name` (its CID) in `directory`, returns its path."""

    def fetch_piece(self, name: str, directory: Path) -> Path: ...


@dataclass
class StageContext:
    sector: Sector
    manager: SectorManager
    location: Path
    sealing: SealingConfig
    stores: dict[str, AttachedStoreConfig]
    worker: WorkerRef
    log: logging.Logger
    control: ThreadControl
    limits: StageLimits
    observer: StageObserver
    processors: Processors
    local_pieces_dirs: tuple[Path, ...] = ()
    static_tree_d: dict[SectorSize, Path] = field(default_factory=dict)
    piece_store: PieceStore | None = None

    @property
    def files(self) -> SectorFiles:
        return sector_files(self.location, self.sector.name)

    def persist_layout(self, store: str) -> PersistLayout:
        if store not in self.stores:
            raise SealingFailure(
                FailureCause.PersistFailed,
                f"the manager named store {store!r}, which is not among this worker's [[attached]] stores "
                f"({', '.join(self.stores) or 'none'})",
            )
        return PersistLayout(self.stores[store].location, self.sector.name)

    def wait(self, seconds: float) -> None:
        start = time.monotonic()
        try:
            self.control.wait(seconds)
        finally:
            self.control.handler_wait_seconds += time.monotonic() - start

    @contextmanager
    def stage(self, name: str, cause: FailureCause) -> Iterator[Callable[..., Any]]:
        """Run a heavy stage: wait for its slot, time it, and name its failures `cause`.

        Yields `run(fn, *args)`, which runs the stage's task here or in one of its child
        processors (`[[processors.<name>]]`): the handler does not know which.
        """
        waiting = lambda: self.observer.stage_waiting(name)  # noqa: E731
        with self.limits.slot(name, self.control.check, waiting):
            self.observer.stage_started(name)
            self.log.info("%s: start", name)
            start = time.monotonic()
            ok = False

            def run(fn: Callable[..., Any], *args: Any) -> Any:
                try:
                    return self.processors.run(name, fn, args, label=self.sector.name, sector_log=self.log,
                                               check=self.control.check, on_wait=waiting)
                finally:
                    self.observer.stage_started(name)  # running again if it waited for a child

            outcome = "failed"
            try:
                with bound_to(self.log):  # the library's log lines land in this sector's log
                    yield run
                ok, outcome = True, "done"
            except Interrupted:  # a pause or stop while it waited for a child: nothing ran
                outcome = "interrupted"
                raise
            except SealingFailure:
                raise
            except ProcessorClosed:  # the daemon is stopping: like a stop, the stage re-runs on the next start
                outcome = "interrupted"
                raise Interrupted() from None
            except ProcessorCrashed as e:
                raise SealingFailure(FailureCause.ProcessorCrashed, f"{name}: {e}") from e
            except ParametersMissing as e:
                raise SealingFailure(FailureCause.ParametersMissing, str(e)) from e
            except (OSError, ProofsError, InvalidInput) as e:
                # The proofs library reports ENOSPC as text in a ProofsError: out of space is
                # DiskFull whoever raised it, never a stage failure to re-run max_retries times.
                if is_out_of_space(e):
                    raise SealingFailure(FailureCause.DiskFull, f"{name}: {e}") from e
                raise SealingFailure(cause, f"{name}: {e}" if isinstance(e, OSError) else str(e)) from e
            except RemoteError as e:  # an error a child could not send whole
                raise SealingFailure(cause, f"{name}: {e}") from e
            finally:
                seconds = time.monotonic() - start
                self.observer.stage_finished(name, str(self.sector.proof.sector_size), seconds, ok)
                self.log.info("%s: %s in %.3fs", name, outcome, seconds)
