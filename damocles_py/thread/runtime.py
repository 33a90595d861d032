"""A sealing thread: runs its plan's state machine, sector after sector, persisting every step.

The loop for one sector: run the handler of the current state, look the returned event up in the
plan's table, write the new state (and a history line) to the thread database, tell the manager.
Failures are classified into a named cause and level: temporary ones are retried after
`recover_interval` up to `max_retries`, abort abandons the sector, permanent/critical pause the
thread until an operator resumes it (optionally at another state).
"""

from __future__ import annotations

import logging
import logging.handlers
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from damocles_py.config.schema import AttachedStoreConfig, SealingThreadConfig
from damocles_py.fsm.context import Interrupted, ResumeRequest, StageContext, StageLimits, ThreadControl
from damocles_py.fsm.failure import Failure, FailureCause, FailureLevel, SealingFailure
from damocles_py.fsm.plans import PLANS, PlanSpec
from damocles_py.fsm.sector import Sector
from damocles_py.fsm.states import Event, State
from damocles_py.manager.interface import (
    REASON_FINAL_DEADLINE,
    ManagerRequestError,
    ManagerUnavailable,
    SectorManager,
    StateReport,
    WorkerRef,
)
from damocles_py.proofs import SectorSize
from damocles_py.store.layout import sector_files, sector_log_path
from damocles_py.store.thread_db import HistoryEntry, ThreadDB
from damocles_py.thread.observer import WorkerObserver

log = logging.getLogger("damocles.thread")


@dataclass
class ThreadStatus:
    """What `worker list` shows for a thread."""

    index: int
    plan: str
    location: str
    sector_id: str | None = None
    state: str = State.Empty.value
    thread_state: str = "idle"  # idle, running, waiting, paused, stopped
    stage: str | None = None
    since: float = 0.0  # when the current state (or wait, or pause) began
    last_failure: Failure | None = None


@dataclass(frozen=True)
class WorkerContext:
    """What every thread of a worker shares."""

    instance: str
    manager: SectorManager
    stores: dict[str, AttachedStoreConfig]
    limits: StageLimits
    observer: WorkerObserver
    local_pieces_dirs: tuple[Path, ...] = ()
    static_tree_d: dict[SectorSize, Path] | None = None
    # Asked before a thread starts a new sector; False keeps it idle (a draining worker).
    may_start_sector: Callable[[], bool] = lambda: True
    sector_log_max_bytes: int = 16 << 20
    sector_log_retention: float = 14 * 24 * 3600.0


def classify(exc: BaseException) -> Failure:
    """Name the cause of any exception a handler raised."""
    if isinstance(exc, SealingFailure):
        cause, detail = exc.cause, exc.detail
    elif isinstance(exc, ManagerUnavailable):
        cause, detail = FailureCause.ManagerUnreachable, str(exc)
    elif isinstance(exc, ManagerRequestError):
        cause, detail = FailureCause.ManagerRejectedRequest, str(exc)
    else:
        cause, detail = FailureCause.Unexpected, f"{type(exc).__name__}: {exc}"
    return Failure(cause, cause.level, detail)


class SealingThread:
    def __init__(self, cfg: SealingThreadConfig, worker: WorkerContext):
        self.cfg = cfg
        self.worker = worker
        self.plan: PlanSpec = PLANS[cfg.plan]
        cfg.location.mkdir(parents=True, exist_ok=True)
        self.db = ThreadDB(cfg.location)
        self.control = ThreadControl()
        self.status = ThreadStatus(cfg.index, cfg.plan.value, str(cfg.location), since=time.time())
        self.ref = WorkerRef(worker.instance, cfg.index, str(cfg.location))
        self._thread: threading.Thread | None = None
        self._loggers: dict[str, logging.Logger] = {}
        self.sectors_done = 0

    # ------------------------------------------------------------------------------------------
    # control (called from the admin API and the daemon)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"sealing-{self.cfg.index}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.control.request_stop()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def pause(self) -> bool:
        return self.control.request_pause()

    def resume(self, state: State | None) -> bool:
        return self.control.resume(ResumeRequest(state))

    def resumable_states(self, sector: Sector | None = None) -> list[State]:
        """States `resume --state` accepts now: the current one, earlier ones, and Aborted.

        Empty (would drop the sector without telling anyone) and Finished (would skip its proof)
        are never accepted; nor are states after the current one, which would skip work.
        """
        sector = sector or self.db.current()
        plan = PLANS[sector.plan] if sector else self.plan
        states = [s for s in plan.states if s not in (State.Empty, State.Finished)]
        if sector is None or sector.state not in states:
            return [State.Aborted]
        upto = states.index(sector.state)
        return states[: upto + 1] + ([State.Aborted] if State.Aborted not in states[: upto + 1] else [])

    # ------------------------------------------------------------------------------------------
    # the loop

    def _prune_logs(self) -> None:
        """Remove the logs of sectors done longer ago than `sector_log_retention`."""
        current = self.db.current()
        keep = sector_log_path(self.cfg.location, current.name).name if current else None
        cutoff = time.time() - self.worker.sector_log_retention
        for path in (self.cfg.location / "logs").glob("*.log*"):
            if not path.name.startswith(keep or "\0") and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)

    def _run(self) -> None:
        try:
            self._prune_logs()
            while not self.control.stop_requested:
                sector = self.db.current()
                if sector is None:
                    if not self.worker.may_start_sector():
                        self._sleep(self.cfg.sealing.recover_interval, "idle")
                        continue
                    sector = self.db.create(self.plan.plan)
                finished = self._drive(sector)
                if finished:
                    self.sectors_done += 1
                    self._prune_logs()
                    self._sleep(self.cfg.sealing.seal_interval, "idle")
        except Interrupted:
            pass
        except Exception:  # a bug in the runtime itself: keep the daemon alive, show it
            log.exception("thread %d crashed", self.cfg.index)
        finally:
            self._set_status(thread_state="stopped")
            for name in list(self._loggers):
                self._close_log(name)

    def _sleep(self, seconds: float, thread_state: str) -> None:
        self._set_status(thread_state=thread_state)
        try:
            self.control.wait(seconds)
        except Interrupted:
            if self.control.stop_requested:
                raise
            # A pause asked for while idle: take it now, with no sector to rewind.
            self._set_status(thread_state="paused")
            if self.control.wait_for_resume() is None:
                raise

    def _drive(self, sector: Sector) -> bool:
        """Run one sector until it is done (True) or the thread must stop (False)."""
        plan = PLANS[sector.plan]  # a sector keeps the plan it started with
        self._set_status(sector=sector)
        while True:
            if self.control.stop_requested:
                return False
            if sector.paused or self.control.pause_requested:
                if not self._pause(sector, plan):
                    return False
                continue
            if sector.state is State.Finished:
                return self._finalize(sector)
            if sector.state is State.Aborted:
                return self._abort(sector)
            self._step(sector, plan)

    def _context(self, sector: Sector) -> StageContext:
        return StageContext(
            sector=sector,
            manager=self.worker.manager,
            location=self.cfg.location,
            sealing=self.cfg.sealing,
            stores=self.worker.stores,
            worker=self.ref,
            log=self._sector_log(sector),
            control=self.control,
            limits=self.worker.limits,
            observer=_StageObserver(self),
            local_pieces_dirs=self.worker.local_pieces_dirs,
            static_tree_d=self.worker.static_tree_d or {},
        )

    def _step(self, sector: Sector, plan: PlanSpec) -> None:
        prev = sector.state
        step = plan.steps[prev]
        ctx = self._context(sector)
        self._set_status(thread_state="running", stage="")
        start = time.time()
        try:
            event = step.handler(ctx)
            if event is None:  # no work available (no sector, no deals): ask again later
                self._sleep(self.cfg.sealing.recover_interval, "idle")
                return
            nxt = plan.next_state(prev, event)
        except Interrupted:
            return
        except Exception as exc:
            self._on_failure(sector, classify(exc), exc)
            return
        duration = time.time() - start
        sector.state, sector.retries, sector.failure = nxt, 0, None
        self.db.save(sector, HistoryEntry(time.time(), prev.value, event.value, nxt.value, duration))
        ctx.log.info("%s --%s--> %s (%.3fs)", prev.value, event.value, nxt.value, duration)
        self.worker.observer.transition(self.cfg.index, sector.plan.value, prev.value, nxt.value)
        self._set_status(sector=sector)
        self._report(sector, prev.value, event.value)

    def _report(self, sector: Sector, prev: str, event: str, failure: Failure | None = None) -> None:
        """Tell the manager (best effort); it may answer that it abandoned the sector."""
        if sector.id is None:
            return
        report = StateReport(
            self.ref, prev, sector.state.value, event,
            failure.level.value if failure else None, failure.cause.name if failure else None,
            failure.detail if failure else None,
        )
        try:
            resp = self.worker.manager.report_state(sector.id, report)
        except Exception as e:  # reporting must never stop sealing
            self._sector_log(sector).warning("could not report state to the manager: %s", e)
            return
        if resp.finalized and not sector.state.is_final:
            reason = resp.abort_reason or "finalized by the manager"
            cause = (FailureCause.FinalDeadlineReached if reason.startswith(REASON_FINAL_DEADLINE)
                     else FailureCause.SectorAbortedByManager)
            self._move(sector, State.Aborted, Event.Abort, Failure(cause, FailureLevel.abort, reason))

    def _move(self, sector: Sector, to: State, event: Event, failure: Failure | None) -> None:
        prev = sector.state
        sector.state, sector.failure, sector.retries = to, failure, 0
        self.db.save(sector, HistoryEntry(
            time.time(), prev.value, event.value, to.value, None,
            failure.level.value if failure else None, failure.cause.name if failure else None,
            failure.detail if failure else None,
        ))
        self._set_status(sector=sector)

    def _on_failure(self, sector: Sector, failure: Failure, exc: BaseException) -> None:
        slog = self._sector_log(sector)
        slog.error("%s failed: %s\n%s", sector.state.value, failure,
                   "".join(traceback.format_exception(exc)) if failure.cause is FailureCause.Unexpected else "")
        self.worker.observer.failure(failure.cause.name, failure.level.value)
        cfg = self.cfg.sealing
        if failure.level is FailureLevel.temporary:
            if sector.retries < cfg.max_retries:
                sector.retries += 1
                sector.failure = failure
                self.db.save(sector, _failure_entry(sector, failure, f"retry {sector.retries}/{cfg.max_retries}"))
                self.worker.observer.retry(failure.cause.name)
                self._set_status(failure=failure)
                self._report(sector, sector.state.value, "Failure", failure)
                try:
                    self._sleep_retry(cfg.recover_interval)
                except Interrupted:
                    pass
                return
            failure = Failure(failure.cause, FailureLevel.permanent,
                              f"{failure.detail} (still failing after {cfg.max_retries} retries)")
        if failure.level is FailureLevel.abort:
            self._move(sector, State.Aborted, Event.Abort, failure)
            return
        # permanent or critical: pause, keep the state, show the cause
        sector.failure, sector.paused = failure, True
        self.db.save(sector, _failure_entry(sector, failure, "paused"))
        self._set_status(failure=failure)
        self._report(sector, sector.state.value, "Failure", failure)

    def _sleep_retry(self, seconds: float) -> None:
        self._set_status(thread_state="waiting")
        self.control.wait(seconds)

    def _pause(self, sector: Sector, plan: PlanSpec) -> bool:
        if not sector.paused:
            sector.paused = True
            self.db.save(sector)
        self._set_status(thread_state="paused", sector=sector)
        request = self.control.wait_for_resume()
        if request is None:
            return False
        sector.paused, sector.retries = False, 0
        if request.state is not None and request.state is not sector.state:
            self._sector_log(sector).warning("operator moved the sector from %s to %s",
                                             sector.state.value, request.state.value)
            failure = sector.failure if request.state is State.Aborted else None
            if request.state is State.Aborted and failure is None:
                failure = Failure(FailureCause.Unexpected, FailureLevel.abort, "aborted by the operator")
            self._move(sector, request.state, Event.SetState, failure)
            sector.failure = failure if request.state is State.Aborted else None
        else:
            sector.failure = None
        self.db.save(sector)
        self._set_status(sector=sector)
        return True

    def _finalize(self, sector: Sector) -> bool:
        if not self._tell_manager(sector, lambda: self.worker.manager.report_finalized(sector.id)):
            return False
        sector_files(self.cfg.location, sector.name).remove()
        self.db.save(sector, done=True)
        self._sector_log(sector).info("sector finished")
        self._close_log(sector.name)
        self.worker.observer.sector_done(sector.plan.value, "finished")
        return True

    def _abort(self, sector: Sector) -> bool:
        reason = str(sector.failure) if sector.failure else "aborted"
        decided_by_manager = sector.failure and sector.failure.cause in (
            FailureCause.SectorAbortedByManager, FailureCause.FinalDeadlineReached)
        if sector.id is not None and not decided_by_manager:
            if not self._tell_manager(sector, lambda: self.worker.manager.report_aborted(sector.id, reason)):
                return False
        sector_files(self.cfg.location, sector.name).remove()  # local scratch only; stores are untouched
        self.db.save(sector, done=True)
        self._sector_log(sector).warning("sector aborted: %s", reason)
        self._close_log(sector.name)
        self.worker.observer.sector_done(sector.plan.value, "aborted")
        return True

    def _tell_manager(self, sector: Sector, call) -> bool:
        """Retry a final report until the manager takes it; False if the thread must stop."""
        while True:
            try:
                call()
                return True
            except (ManagerUnavailable, ManagerRequestError) as e:
                self._sector_log(sector).warning("manager report failed, retrying: %s", e)
                try:
                    self._sleep_retry(self.cfg.sealing.recover_interval)
                except Interrupted:
                    if self.control.stop_requested:
                        return False

    # ------------------------------------------------------------------------------------------
    # status and logs

    def _set_status(self, thread_state: str | None = None, sector: Sector | None = None,
                    failure: Failure | None = None, stage: str | None = None) -> None:
        st = self.status
        now = time.time()
        if sector is not None:
            if sector.state.value != st.state or (str(sector.id) if sector.id else None) != st.sector_id:
                st.since = now
            st.sector_id = str(sector.id) if sector.id else None
            st.state = sector.state.value
            if sector.failure is not None:
                st.last_failure = sector.failure
            if sector.paused:
                thread_state = "paused"
        if failure is not None:
            st.last_failure = failure
        if thread_state is not None and thread_state != st.thread_state:
            st.thread_state = thread_state
            if thread_state in ("paused", "idle"):
                st.since = now
        if stage is not None:  # "" clears it: the handler runs no heavy stage (yet)
            st.stage = stage or None
        elif thread_state in ("idle", "paused", "stopped"):
            st.stage = None
        self.worker.observer.thread_state(self.cfg.index, st.plan, st.state, st.thread_state)

    def _sector_log(self, sector: Sector) -> logging.Logger:
        name = sector.name
        logger = self._loggers.get(name)
        if logger is None:
            logger = logging.getLogger(f"damocles.sector.{name}")
            logger.setLevel(logging.INFO)
            path = sector_log_path(self.cfg.location, name)
            has_file = any(getattr(h, "baseFilename", None) == str(path) for h in logger.handlers)
            if sector.id is not None and not has_file:  # loggers are global: one file handler per sector
                path.parent.mkdir(parents=True, exist_ok=True)
                # Two halves of the cap: when the log fills up, the older half is dropped.
                handler = logging.handlers.RotatingFileHandler(
                    path, maxBytes=self.worker.sector_log_max_bytes // 2, backupCount=1)
                handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
                logger.addHandler(handler)
            self._loggers[name] = logger
        return logger

    def _close_log(self, name: str) -> None:
        logger = self._loggers.pop(name, None)
        if logger is not None:
            for h in list(logger.handlers):
                logger.removeHandler(h)
                h.close()


def _failure_entry(sector: Sector, failure: Failure, what: str) -> HistoryEntry:
    return HistoryEntry(time.time(), sector.state.value, f"Failure({what})", sector.state.value, None,
                        failure.level.value, failure.cause.name, failure.detail)


class _StageObserver:
    """Feeds a thread's heavy-stage runs into its status and the worker's metrics."""

    def __init__(self, thread: SealingThread):
        self.thread = thread

    def stage_waiting(self, stage: str) -> None:
        self.thread._set_status(thread_state="waiting", stage=stage)

    def stage_started(self, stage: str) -> None:
        self.thread._set_status(thread_state="running", stage=stage)

    def stage_finished(self, stage: str, sector_size: str, seconds: float, ok: bool) -> None:
        self.thread.worker.observer.stage_duration(stage, sector_size, seconds, ok)
