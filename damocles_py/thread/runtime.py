"""A sealing thread: runs its plan's state machine, sector after sector, persisting every step.

The loop for one sector: run the handler of the current state, look the returned event up in the
plan's table, write the new state (and a history line) to the thread database, tell the manager.
Failures are classified into a named cause and level: temporary ones are retried after
`recover_interval` up to `max_retries`, abort abandons the sector, permanent/critical pause the
thread until an operator resumes it (optionally at another state).

Every wait (a retry, an idle spell, a final report the manager could not take) ends early on a
pause or stop request and returns to the loop, which takes the pause in one place (`_pause`).
A failed write to the thread database pauses the thread (StateStoreFailed) and is written again
on resume: the sector in memory is never dropped.
"""

from __future__ import annotations

import logging
import logging.handlers
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, TypeVar

from damocles_py.config.schema import AttachedStoreConfig, SealingThreadConfig
from damocles_py.config.load import HOT_CONFIG, ConfigError, load_hot_thread_config
from damocles_py.fsm.context import Interrupted, PieceStore, ResumeRequest, StageContext, ThreadControl
from damocles_py.processors.gates import StageLimits
from damocles_py.processors.pool import Processors
from damocles_py.fsm.failure import Failure, FailureCause, FailureLevel, SealingFailure, is_out_of_space
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
from damocles_py.store.thread_db import FLAG_PAUSED_IDLE, HistoryEntry, StateStoreError, ThreadDB
from damocles_py.thread.observer import WorkerObserver

log = logging.getLogger("damocles.thread")

T = TypeVar("T")


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
    waiting_since: float | None = None  # thread_state "waiting": since when (worker list's "for")
    last_failure: Failure | None = None


@dataclass(frozen=True)
class WorkerContext:
    """What every thread of a worker shares."""

    instance: str
    manager: SectorManager
    stores: dict[str, AttachedStoreConfig]
    limits: StageLimits
    observer: WorkerObserver
    processors: Processors
    local_pieces_dirs: tuple[Path, ...] = ()
    static_tree_d: dict[SectorSize, Path] | None = None
    piece_store: PieceStore | None = None  # pieces not found locally are fetched from there
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
    elif isinstance(exc, StateStoreError):
        cause, detail = FailureCause.StateStoreFailed, str(exc)
    elif is_out_of_space(exc):  # wherever it was raised: freeing space is the fix, not a retry
        cause, detail = FailureCause.DiskFull, f"{type(exc).__name__}: {exc}"
    else:
        cause, detail = FailureCause.Unexpected, f"{type(exc).__name__}: {exc}"
    return Failure(cause, cause.level, detail)


class SealingThread:
    def __init__(self, cfg: SealingThreadConfig, worker: WorkerContext):
        self.cfg = cfg
        self.worker = worker
        self.plan: PlanSpec = PLANS[cfg.plan]
        self.db = ThreadDB(cfg.location)  # the daemon checked the location exists (store sealing-init)
        self.control = ThreadControl()
        self.status = ThreadStatus(cfg.index, cfg.plan.value, str(cfg.location), since=time.time())
        self.ref = WorkerRef(worker.instance, cfg.index, str(cfg.location))
        self._thread: threading.Thread | None = None
        self._loggers: dict[str, logging.Logger] = {}
        self.sectors_done = 0
        # The sector being driven. In memory it is the truth: after a failed database write the
        # database lags behind it until the write succeeds.
        self._sector: Sector | None = None
        self._store_failure: Failure | None = None  # set while paused on StateStoreFailed
        self._refused: tuple[int, str] | None = None  # the last final report refused: (job, answer)
        self._hot_config_error: str | None = None  # the last bad `<location>/config.toml`, said once
        current = self.db.current()
        if current.paused if current is not None else self.db.flag(FLAG_PAUSED_IDLE):
            self.control.restore_pause()  # paused from the start: an early resume is not refused
            self.status.thread_state = "paused"
            if current is not None:  # `worker list` shows the paused sector and its cause at once
                self.status.sector_id = str(current.id) if current.id else None
                self.status.state = current.state.value
                self.status.last_failure = current.failure

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

    def resumable_states(self) -> list[State]:
        """States `resume --state` accepts now: the current one, earlier ones it has been in, and Aborted.

        Empty (would drop the sector without telling anyone) and Finished (would skip its proof)
        are never accepted; nor are states after the current one, which would skip work, nor
        states the sector never was in (a rebuild of a sector never upgraded has no snap states).
        A thread with no allocated sector, a sector already Finished or Aborted (only its report
        to the manager is pending) and a failed database write accept a plain resume only.
        """
        sector = self._sector or self.db.current()
        if self._store_failure is not None or sector is None or sector.id is None or sector.state.is_final:
            return []
        plan = PLANS[sector.plan]
        been_in = {sector.state.value}
        for h in self.db.history(sector.uid):
            been_in.update((h.prev, h.next))
        states = [s for s in plan.states if s not in (State.Empty, State.Finished, State.Aborted)
                  and s.value in been_in]
        return states[: states.index(sector.state) + 1] + [State.Aborted]

    def resume_refusal(self, state: State | None, name: str) -> str | None:
        """Why `resume --state <name>` cannot be honoured now (None: it can); `state` None: no such state."""
        valid = self.resumable_states()
        if state is not None and state in valid:
            return None
        if valid:
            return f"cannot be resumed at state {name!r}; valid states now: {', '.join(s.value for s in valid)}"
        sector = self._sector or self.db.current()
        if self._store_failure is not None:
            why = "it is paused because its database could not be written; resume without --state to write again"
        elif sector is None or sector.id is None:
            why = "it has no allocated sector to move (it is idle); resume without --state"
        else:
            why = f"its sector is {sector.state.value}, only its report to the manager is left; resume without --state"
        return f"cannot be resumed at state {name!r}: {why}"

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
                    if self.control.pause_requested or self.db.flag(FLAG_PAUSED_IDLE):
                        self._pause_idle()
                        continue
                    self._reload_config()  # before each new sector (and while idle, for `worker list`)
                    if not self.worker.may_start_sector():
                        self._idle(self.cfg.sealing.recover_interval)
                        continue
                    sector = self._store(lambda: self.db.create(self.plan.plan))
                if self._drive(sector):
                    self.sectors_done += 1
                    self._prune_logs()
                    self._idle(self.cfg.sealing.seal_interval)
        except Interrupted:
            pass
        except Exception:  # a bug in the runtime itself: keep the daemon alive, show it
            log.exception("thread %d crashed", self.cfg.index)
        finally:
            self._set_status(thread_state="stopped")
            for name in list(self._loggers):
                self._close_log(name)

    def _reload_config(self) -> None:
        """damocles' hot config: `<location>/config.toml` is read before each new sector, so an
        operator switches a thread's plan or sealing keys without a restart. A bad file keeps the
        config the thread has, said once in the log."""
        try:
            cfg = load_hot_thread_config(self.cfg)
        except ConfigError as e:
            if str(e) != self._hot_config_error:
                log.error("thread %d keeps its current config: %s", self.cfg.index, e)
            self._hot_config_error = str(e)
            return
        self._hot_config_error = None
        if cfg != self.cfg:
            log.info("thread %d: config changed (%s): plan %s", self.cfg.index,
                     self.cfg.location / HOT_CONFIG, cfg.plan.value)
            self.cfg, self.plan = cfg, PLANS[cfg.plan]
            self.status.plan = cfg.plan.value

    def _idle(self, seconds: float) -> None:
        """Wait with nothing to do; a pause or stop ends the wait and the loop takes it."""
        self._set_status(thread_state="idle")
        try:
            self.control.wait(seconds)
        except Interrupted:
            pass

    def _pause_idle(self) -> None:
        """A pause with no sector. Persisted: a restarted daemon keeps the thread paused."""
        self._store(lambda: self.db.set_flag(FLAG_PAUSED_IDLE, "1"))
        self.control.enter_pause()
        self._set_status(thread_state="paused")
        self.control.await_resume()  # a --state was refused by resume_refusal: nothing to move
        self._store(lambda: self.db.set_flag(FLAG_PAUSED_IDLE, None))
        self._set_status(thread_state="idle")

    def _drive(self, sector: Sector) -> bool:
        """Run one sector until it is done (True) or the thread must stop (False)."""
        plan = PLANS[sector.plan]  # a sector keeps the plan it started with
        self._sector = sector
        self._set_status(sector=sector)
        try:
            while True:
                if self.control.stop_requested:
                    return False
                if sector.paused or self.control.pause_requested:
                    self._pause(sector, plan)
                elif sector.state is State.Finished:
                    if self._finalize(sector):
                        return True
                elif sector.state is State.Aborted:
                    if self._abort(sector):
                        return True
                else:
                    self._step(sector, plan)
        finally:
            self._sector = None

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
            processors=self.worker.processors,
            local_pieces_dirs=self.worker.local_pieces_dirs,
            static_tree_d=self.worker.static_tree_d or {},
            piece_store=self.worker.piece_store,
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
                self._idle(self.cfg.sealing.recover_interval)
                return
            nxt = plan.next_state(prev, event)
        except Interrupted:
            return
        except Exception as exc:
            self._on_failure(sector, classify(exc), exc)
            return
        duration = time.time() - start
        sector.state, sector.retries, sector.failure = nxt, 0, None
        self._save(sector, HistoryEntry(time.time(), prev.value, event.value, nxt.value, duration))
        ctx.log.info("%s --%s--> %s (%.3fs)", prev.value, event.value, nxt.value, duration)
        self.worker.observer.transition(self.cfg.index, sector.plan.value, prev.value, nxt.value)
        self._set_status(sector=sector)
        self._report(sector, prev.value, event.value)

    def _report(self, sector: Sector, prev: str, event: str, failure: Failure | None = None) -> bool:
        """Tell the manager (best effort). True if it answered that it abandoned the sector, which
        then moves to Aborted (whatever pause it was in) and on to the next sector."""
        if sector.id is None:
            return False
        report = StateReport(
            self.ref, prev, sector.state.value, event,
            failure.level.value if failure else None, failure.cause.name if failure else None,
            failure.detail if failure else None,
        )
        try:
            resp = self.worker.manager.report_state(sector.id, report)
        except Exception as e:  # reporting must never stop sealing
            self._sector_log(sector).warning("could not report state to the manager: %s", e)
            return False
        if not resp.finalized or sector.state.is_final:
            return False
        reason = resp.abort_reason or "finalized by the manager"
        cause = (FailureCause.FinalDeadlineReached if reason.startswith(REASON_FINAL_DEADLINE)
                 else FailureCause.SectorAbortedByManager)
        self._sector_log(sector).warning("the manager abandoned the sector: %s", reason)
        self._move(sector, State.Aborted, Event.Abort, Failure(cause, FailureLevel.abort, reason))
        return True

    def _move(self, sector: Sector, to: State, event: Event, failure: Failure | None) -> None:
        prev = sector.state
        sector.state, sector.failure, sector.retries = to, failure, 0
        if to.is_final:
            sector.paused = False  # nothing is left to decide: finish it without an operator
        self._save(sector, HistoryEntry(
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
                self._save(sector, _failure_entry(sector, failure, f"retry {sector.retries}/{cfg.max_retries}"))
                self.worker.observer.retry(failure.cause.name)
                self._set_status(failure=failure)
                if self._report(sector, sector.state.value, "Failure", failure):
                    return
                self._set_status(thread_state="waiting")
                try:
                    self.control.wait(cfg.recover_interval)
                except Interrupted:
                    pass  # the loop takes the pause or the stop
                return
            failure = Failure(failure.cause, FailureLevel.permanent,
                              f"{failure.detail} (still failing after {cfg.max_retries} retries)")
        if failure.level is FailureLevel.abort:
            self._move(sector, State.Aborted, Event.Abort, failure)
            return
        # permanent or critical: pause, keep the state, show the cause
        sector.failure, sector.paused = failure, True
        self._save(sector, _failure_entry(sector, failure, "paused"))
        self._set_status(failure=failure)
        self._report(sector, sector.state.value, "Failure", failure)

    def _pause(self, sector: Sector, plan: PlanSpec) -> None:
        """Wait for the operator. Meanwhile the manager is asked now and then about the sector:
        if it abandoned it, the sector moves to Aborted and on, with no operator needed."""
        if not sector.paused:
            sector.paused = True
            self._save(sector)
        self.control.enter_pause()
        self._set_status(thread_state="paused", sector=sector)
        poll = max(self.cfg.sealing.rpc_polling_interval, 0.05)
        while True:
            request = self.control.await_resume(poll)
            if request is not None:
                break
            if not sector.state.is_final and self._report(sector, sector.state.value, "Paused", sector.failure):
                self.control.leave_pause()
                return
        sector.paused, sector.retries = False, 0
        to = request.state
        if to is not None:
            if to is not sector.state:
                self._sector_log(sector).warning("operator moved the sector from %s to %s",
                                                 sector.state.value, to.value)
            for flag in plan.rewind_flags(to):  # a rewind re-submits: replace what was submitted
                setattr(sector, flag, True)
            failure = None
            if to is State.Aborted:
                failure = sector.failure or Failure(FailureCause.Unexpected, FailureLevel.abort,
                                                    "aborted by the operator")
            self._move(sector, to, Event.SetState, failure)
        else:
            if not sector.state.is_final:  # a finished or aborted sector keeps its cause for the record
                sector.failure = None
            self._save(sector)
        self._set_status(sector=sector)

    def _finalize(self, sector: Sector) -> bool:
        if not self._tell_manager(sector, "report_finalized",
                                  lambda: self.worker.manager.report_finalized(sector.id, worker=self.ref)):
            return False
        sector_files(self.cfg.location, sector.name).remove()
        self._save(sector, done=True)
        self._sector_log(sector).info("sector finished")
        self._close_log(sector.name)
        self.worker.observer.sector_done(sector.plan.value, "finished")
        return True

    def _abort(self, sector: Sector) -> bool:
        reason = str(sector.failure) if sector.failure else "aborted"
        decided_by_manager = sector.failure and sector.failure.cause in (
            FailureCause.SectorAbortedByManager, FailureCause.FinalDeadlineReached)
        if sector.id is not None and not decided_by_manager:
            if not self._tell_manager(sector, "report_aborted",
                                      lambda: self.worker.manager.report_aborted(
                                          sector.id, reason, worker=self.ref,
                                          cause=sector.failure.cause if sector.failure else None)):
                return False
        sector_files(self.cfg.location, sector.name).remove()  # local scratch only; stores are untouched
        self._save(sector, done=True)
        self._sector_log(sector).warning("sector aborted: %s", reason)
        self._close_log(sector.name)
        self.worker.observer.sector_done(sector.plan.value, "aborted")
        return True

    def _tell_manager(self, sector: Sector, what: str, call: Callable[[], None]) -> bool:
        """Make a final report. True: done (taken, or refused for good). False: not yet; the thread
        waited `recover_interval` (or a pause or stop came) and the loop will ask again."""
        try:
            call()
            self._refused = None
            return True
        except ManagerRequestError as e:
            # A refusal (unknown sector, not the holder) is an answer, not an outage: asking again
            # gets the same one. Asked twice (a manager error that passes is no verdict), it is
            # recorded where operators look, and the sector is finished here.
            if self._refused != (sector.uid, str(e)):
                self._refused = (sector.uid, str(e))
                return self._retry_report(sector, what, e)
            self._refused = None
            failure = Failure(FailureCause.ManagerRejectedRequest, FailureCause.ManagerRejectedRequest.level,
                              f"the manager refused {what}: {e}; the sector is finished locally "
                              f"as {sector.state.value}")
            self._sector_log(sector).warning("%s", failure)
            self.worker.observer.failure(failure.cause.name, failure.level.value)
            self._save(sector, _failure_entry(sector, failure, f"{what} refused"))
            self._set_status(failure=failure)
            return True
        except Exception as e:  # unreachable (or a transient error)
            return self._retry_report(sector, what, e)

    def _retry_report(self, sector: Sector, what: str, e: Exception) -> bool:
        self._sector_log(sector).warning("%s failed, retrying in %ss: %s", what, self.cfg.sealing.recover_interval, e)
        self._set_status(thread_state="waiting")
        try:
            self.control.wait(self.cfg.sealing.recover_interval)
        except Interrupted:
            pass  # the loop takes the pause or the stop, then reports again
        return False

    # ------------------------------------------------------------------------------------------
    # the thread database: a failed write pauses the thread (StateStoreFailed), never loses the sector

    def _save(self, sector: Sector, entry: HistoryEntry | None = None, done: bool = False) -> None:
        self._store(lambda: self.db.save(sector, entry, done), sector)

    def _store(self, write: Callable[[], T], sector: Sector | None = None) -> T:
        """Run a database write; while it fails, pause with the critical StateStoreFailed and write
        again on each `worker resume`. The sector in memory stays as it is meanwhile."""
        failed: Failure | None = None
        failed_at = 0.0
        while True:
            try:
                out = write()
                break
            except StateStoreError as e:
                failed = Failure(FailureCause.StateStoreFailed, FailureCause.StateStoreFailed.level, str(e))
                failed_at = failed_at or time.time()
                (self._sector_log(sector) if sector else log).error(
                    "thread %d: %s; paused until `worker resume --index %d`", self.cfg.index, failed, self.cfg.index)
                self.worker.observer.failure(failed.cause.name, failed.level.value)
                self.control.enter_pause()
                self._store_failure = failed
                self._set_status(thread_state="paused", failure=failed)
                try:
                    self.control.await_resume()  # a --state was refused: only writing again helps
                finally:
                    self._store_failure = None
                self._set_status(thread_state="running")
        if failed is not None and sector is not None:  # written at last: keep the episode in the history
            entry = replace(_failure_entry(sector, failed, "paused, written after resume"), ts=failed_at)
            try:
                self.db.add_history(sector.uid, entry)
            except StateStoreError:
                pass  # failing again right away: the next write pauses again
        return out

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
            st.waiting_since = now if thread_state == "waiting" else None
        if stage is not None:  # "" clears it: the handler runs no heavy stage (yet)
            st.stage = stage or None
        elif thread_state in ("idle", "paused", "stopped", "waiting"):  # a retry's wait is for no stage
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
