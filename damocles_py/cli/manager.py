"""`damocles-manager`: run a standalone sector manager, and operate a running one.

    damocles-manager run --state-dir DIR --listen 127.0.0.1:1789 [--store NAME=PATH ...]
                         [--metrics-listen HOST:PORT] [--worker-timeout 60s] ...
    damocles-manager sector list|debug|abort|rebuild ... [--addr HOST:PORT]
    damocles-manager worker list [--addr HOST:PORT]

`run` serves an `EmbeddedManager` (SQLite state, simulated chain) over gRPC until SIGINT or
SIGTERM; workers point `[sector_manager] addr` at it. The `sector` and `worker` commands talk to
it through `RemoteManager`. Bad arguments and refusals are one line on stderr (`UserError`), never
a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from damocles_py.cli.common import run_main
from damocles_py.errors import UserError

log = logging.getLogger("damocles.manager")

DEFAULT_ADDR = "127.0.0.1:1789"
METRICS_ADDR_EXAMPLE = "127.0.0.1:9001"  # metrics are off unless --metrics-listen is given
ADDR_ENV = "DAMOCLES_MANAGER_ADDR"


# ---------------------------------------------------------------------------------------------
# run: argument checks (each names its flag and says how to fix it)


def _int_arg(value: str, flag: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise UserError(f"{flag}: expected a whole number, got {value!r}") from None
    if number < minimum:
        raise UserError(f"{flag}: must be at least {minimum}, got {number}")
    return number


def _duration_arg(value: str, flag: str) -> float:
    from damocles_py.config.load import ConfigError, parse_duration

    try:
        number_or_text: float | str = float(value)  # a bare number: seconds
    except ValueError:
        number_or_text = value
    try:
        return parse_duration(number_or_text, flag)
    except ConfigError as e:
        raise UserError(f"{flag}: {e.problem}. Fix: write it like 1s, 500ms or 2m, or a number of seconds") from None


def _listen_arg(value: str, flag: str = "--listen", example: str = DEFAULT_ADDR) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UserError(f"{flag}: {value!r} is not a host:port address. Fix: write it like {example}")
    return value


def _stores_arg(values: list[str]):
    from damocles_py.manager.interface import StoreInfo

    stores: dict[str, StoreInfo] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--store: {value!r} is not NAME=PATH. Fix: write it like --store store-a=/mnt/store-a")
        if name in stores:
            raise UserError(f"--store: the name {name!r} is given twice. Fix: give each store its own name")
        location = Path(path).resolve()
        if not location.is_dir():
            raise UserError(f"--store {name}: {location} is not a directory. Fix: mount or create it "
                            f"(mkdir -p {location})")
        stores[name] = StoreInfo(name, str(location))
    return list(stores.values())


def _embedded_config(args):
    from damocles_py.config.schema import EmbeddedManagerConfig
    from damocles_py.proofs import InvalidInput, SectorSize

    try:
        sector_size = SectorSize.parse(args.sector_size, "--sector-size")
    except InvalidInput as e:
        raise UserError(str(e)) from None
    return EmbeddedManagerConfig(
        miner=_int_arg(args.miner, "--miner", 0),
        sector_size=sector_size,
        state_dir=Path(args.state_dir).resolve(),
        pieces_dir=None if args.pieces_dir is None else Path(args.pieces_dir).resolve(),
        block_time=_duration_arg(args.block_time, "--block-time"),
        pre_commit_delay_epochs=_int_arg(args.pre_commit_delay_epochs, "--pre-commit-delay-epochs", 0),
        ticket_expiry_epochs=_int_arg(args.ticket_expiry_epochs, "--ticket-expiry-epochs", 1),
        seed_expiry_epochs=_int_arg(args.seed_expiry_epochs, "--seed-expiry-epochs", 1),
        worker_timeout=_duration_arg(args.worker_timeout, "--worker-timeout"),
    )


# ---------------------------------------------------------------------------------------------
# run


def _wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM; the previous handlers are back afterwards."""
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(1.0):  # a timed wait, so the signal handler gets to run promptly
            pass
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _cmd_run(args) -> int:
    from damocles_py.manager.embedded import EmbeddedManager
    from damocles_py.manager.server import ManagerService, serve_manager

    # Check every argument before touching the state dir or the port.
    listen = _listen_arg(args.listen)
    metrics_listen = None
    if args.metrics_listen is not None:
        metrics_listen = _listen_arg(args.metrics_listen, "--metrics-listen", METRICS_ADDR_EXAMPLE)
    config = _embedded_config(args)
    stores = _stores_arg(args.store)
    # New piece files are imported by the manager's background scanner: serving starts at once.
    manager = EmbeddedManager(config, stores, initial_scan=False)
    service = ManagerService(manager)
    metrics = metrics_server = None
    try:
        if metrics_listen:
            from damocles_py.metrics.manager import ManagerMetrics, start_metrics_server

            metrics = ManagerMetrics(manager, service)
            metrics_server = start_metrics_server(metrics_listen, metrics)
            log.info("metrics on http://%s/metrics", metrics_listen)
        server, port = serve_manager(manager, listen, service=service,
                                     interceptors=[metrics.interceptor] if metrics else None)
        host = listen.rpartition(":")[0]
        log.info("sector manager for miner %d (%s sectors) on %s:%d; state in %s; stores: %s", config.miner,
                 config.sector_size, host, port, config.state_dir, ", ".join(s.name for s in stores) or "none")
        _wait_for_signal()
        log.info("stopping: finishing calls in flight")
        server.stop(grace=5).wait()
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        manager.close()
    return 0


# ---------------------------------------------------------------------------------------------
# sector commands (through RemoteManager)


def _with_manager(args, action: Callable) -> int:
    """Run `action(manager)` against the manager at --addr; its refusals become one-line errors."""
    from damocles_py.manager.client import RemoteManager
    from damocles_py.manager.interface import ManagerRequestError, ManagerUnavailable

    addr = args.addr or os.environ.get(ADDR_ENV) or DEFAULT_ADDR
    manager = RemoteManager(addr, timeout=args.timeout)
    try:
        return action(manager)
    except ManagerUnavailable as e:
        raise UserError(f"{e}. Is the manager running? (start it with: damocles-manager run --state-dir DIR "
                        f"--listen {addr}; or pass --addr / set {ADDR_ENV})") from None
    except ManagerRequestError as e:
        raise UserError(str(e)) from None
    finally:
        manager.close()


def _sector_id_arg(text: str):
    from damocles_py.manager.interface import SectorId

    try:
        return SectorId.parse(text)
    except ValueError as e:
        raise UserError(str(e)) from None


def _phase(record) -> str:
    """Where a sector stands, in a few words (the most advanced thing recorded about it)."""
    from damocles_py.manager.db import RebuildState, Submission, UpgradeState

    if record.aborted:
        return "aborted"
    if record.rebuild is not None:
        return "rebuilding" if record.rebuild is RebuildState.Taken else "rebuild requested"
    if record.upgrade is not None:
        return "upgrading" if record.upgrade.state is UpgradeState.Upgrading else "upgraded"
    if record.finished:
        return "finished"
    steps = [  # latest first
        (record.commit, lambda c: "proof accepted" if c.state is Submission.Accepted else "proof rejected"),
        (record.seed, lambda _: "seed drawn"),
        (record.pre_commit,
         lambda p: "pre-committed" if p.state is Submission.Accepted else "pre-commit rejected"),
        (record.ticket, lambda _: "ticket assigned"),
    ]
    return next((describe(value) for value, describe in steps if value is not None), "allocated")


def _cmd_sector_list(args) -> int:
    def show(manager) -> int:
        records = manager.sectors()
        print(f"{'sector':<14} {'proof':<22} {'phase':<20} {'holder':<24} {'store':<12} created")
        for r in records:
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at))
            holder = f"{r.holder.instance}/{r.holder.thread}"
            print(f"{str(r.id):<14} {r.proof.name:<22} {_phase(r):<20} {holder:<24} {r.store or '-':<12} {created}")
            if r.aborted and r.abort_reason:
                print(f"{'':<14} abort reason: {r.abort_reason}")
        if not records:
            print("(no sectors yet)")
        return 0

    return _with_manager(args, show)


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _cmd_sector_debug(args) -> int:
    sector_id = _sector_id_arg(args.sector)

    def show(manager) -> int:
        debug = manager.sector_debug(sector_id)
        if debug is None:
            raise UserError(f"unknown sector {sector_id}")
        print("\n".join(format_sector_debug(debug)))
        return 0

    return _with_manager(args, show)


def format_sector_debug(debug) -> list[str]:
    """The lines of `sector debug`: the manager's record, the holder, the chain, deadlines, history."""
    record = debug.record
    return [
        f"sector:        {record.id}",
        f"proof:         {record.proof.name}",
        f"state:         {_manager_state(record)}",
        *_abort_cause_lines(record),
        f"created:       {_when(record.created_at)}",
        f"holder:        {_holder(debug)}",
        *([f"holder thread: {_holder_thread(debug)}"] if debug.holder_thread is not None else []),
        f"chain head:    epoch {debug.epoch}",
        f"pre-commit:    {_on_chain(record.pre_commit, debug.epoch)}",
        f"proof:         {_on_chain(record.commit, debug.epoch)}",
        *_deadline_lines(debug),
        *_history_lines(debug.history),
        *_last_failure_lines(debug.history),
    ]


def _manager_state(record) -> str:
    """allocated / sealing (its phase) / finished (+ upgrade, rebuild) / aborted: reason."""
    from damocles_py.manager.db import RebuildState, UpgradeState

    if record.aborted:
        return f"aborted: {record.abort_reason or 'no reason given'}"
    if not record.finished:
        phase = _phase(record)
        return "allocated" if phase == "allocated" else f"sealing ({phase})"
    extra = []
    if record.upgrade is not None:
        extra.append("upgrading" if record.upgrade.state is UpgradeState.Upgrading else "upgraded")
    if record.rebuild is not None:
        extra.append("rebuilding" if record.rebuild is RebuildState.Taken else "rebuild requested")
    return ", ".join(["finished", *extra])


def _abort_cause_lines(record) -> list[str]:
    """Explain an abort the manager decided itself: the pre-commit's final deadline passed."""
    from damocles_py.fsm.failure import FailureCause
    from damocles_py.manager.interface import REASON_FINAL_DEADLINE

    if not (record.aborted and (record.abort_reason or "").startswith(REASON_FINAL_DEADLINE)):
        return []
    return _cause_lines(FailureCause.FinalDeadlineReached, "  ")


def _cause_lines(cause, indent: str) -> list[str]:
    return [f"{indent}cause:   {cause.name} ({cause.level.value})",
            f"{indent}meaning: {cause.meaning}",
            f"{indent}action:  {cause.action}"]


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _holder(debug) -> str:
    ref, status = debug.record.holder, debug.holder
    where = f" at {ref.location}" if ref.location else ""
    if status.last_seen is None:
        seen = "never heard from"
    else:
        seen = f"last seen {_when(status.last_seen)} ({status.silent_for:.0f}s ago)"
    return f"{ref.instance} thread {ref.thread}{where}; {'LOST: ' if status.lost else ''}{seen}"


def _holder_thread(debug) -> str:
    t = debug.holder_thread
    on = f"on {t.sector}" if t.sector is not None else "with no sector"
    other = " (another sector: this one is no longer worked on)" if t.sector not in (None, debug.record.id) else ""
    return f"{t.thread_state}, {t.plan} plan, at {t.state} {on}{other} (as of its last ping)"


def _on_chain(submission, epoch: int) -> str:
    """A pre-commit or proof as the chain sees it: none / pending / landed at epoch / rejected."""
    from damocles_py.manager.db import Submission

    if submission is None:
        return "none"
    if submission.state is Submission.Rejected:
        return f"rejected: {submission.reject_reason or 'no reason given'}"
    if epoch < submission.landing_epoch:
        return f"pending (lands at epoch {submission.landing_epoch})"
    return f"landed at epoch {submission.landing_epoch}"


def _deadline_lines(debug) -> list[str]:
    if not debug.deadlines:
        return ["deadlines:     none"]
    lines = ["deadlines:"]
    for d in debug.deadlines:
        status = "PASSED" if d.passed else f"{_plural(d.epoch - debug.epoch, 'epoch')} left"
        lines.append(f"  {d.kind.value}: {status}: {d.describe()}")
        if d.passed:
            lines += _cause_lines(d.kind.cause, "    ")
    return lines


def _history_lines(history) -> list[str]:
    if not history:
        return ["history:       no state reports yet"]
    lines = [f"history:       {_plural(len(history), 'state report')}, oldest first"]
    for h in history:
        failure = f"  [{h.failure_level} {h.failure_cause}: {h.failure_desc}]" if h.failure_cause else ""
        lines.append(f"  {_when(h.time)}  {h.worker.instance}/{h.worker.thread}  "
                     f"{h.prev} --{h.event}--> {h.next}{failure}")
    return lines


def _last_failure_lines(history) -> list[str]:
    from damocles_py.fsm.failure import FailureCause

    last = next((h for h in reversed(history) if h.failure_cause), None)
    if last is None:
        return ["last failure:  none"]
    lines = [f"last failure:  {last.failure_cause} ({last.failure_level}) at {_when(last.time)}: {last.failure_desc}"]
    cause = FailureCause.__members__.get(last.failure_cause)
    if cause is None:
        return [*lines, "  (not a known failure cause)"]
    return [*lines, f"  meaning: {cause.meaning}", f"  action:  {cause.action}"]


def _cmd_sector_abort(args) -> int:
    sector_id = _sector_id_arg(args.sector)
    if not args.reason.strip():
        raise UserError("--reason: say why the sector is aborted; the worker logs it")

    def abort(manager) -> int:
        manager.abort_sector(sector_id, args.reason)
        print(f"sector {sector_id}: aborted ({args.reason}); its worker gives it up at its next report")
        return 0

    return _with_manager(args, abort)


def _cmd_sector_rebuild(args) -> int:
    sector_id = _sector_id_arg(args.sector)

    def rebuild(manager) -> int:
        manager.request_rebuild(sector_id)
        print(f"sector {sector_id}: rebuild requested; a worker thread with plan = \"rebuild\" will take it")
        return 0

    return _with_manager(args, rebuild)


# ---------------------------------------------------------------------------------------------
# worker commands


def _cmd_worker_list(args) -> int:
    def show(manager) -> int:
        workers = manager.workers()
        print(f"{'instance':<20} {'status':<6} {'last seen':<19} {'silent':>8}  sectors")
        for w in workers:
            print(format_worker_line(w))
            for t in w.threads:
                sector = "-" if t.sector is None else str(t.sector)
                print(f"  thread {t.index}: {t.plan} plan, {t.thread_state}, at {t.state}, sector {sector}")
        if not workers:
            print("(no workers heard from yet)")
        return 0

    return _with_manager(args, show)


def format_worker_line(w) -> str:
    status = "LOST" if w.lost else "alive"
    seen = "never" if w.last_seen is None else _when(w.last_seen)
    silent = "-" if w.silent_for is None else f"{w.silent_for:.0f}s"
    sectors = ", ".join(str(s) for s in w.sectors) or "-"
    return f"{w.instance:<20} {status:<6} {seen:<19} {silent:>8}  {sectors}"


# ---------------------------------------------------------------------------------------------
# parser


def add_sector_command(sector_sub, name: str, help: str) -> argparse.ArgumentParser:
    """A `sector <name>` subcommand with the options to reach a running manager.
    (New sector commands, like `sector debug`, are added with this.)"""
    p = sector_sub.add_parser(name, help=help)
    p.add_argument("--addr", help=f"the manager's host:port (env {ADDR_ENV}; default {DEFAULT_ADDR})")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the manager (default 10)")
    return p


def _add_run(sub) -> None:
    run = sub.add_parser("run", help="serve a sector manager (SQLite state, simulated chain) over gRPC")
    run.add_argument("--state-dir", required=True, help="where the manager keeps its database")
    run.add_argument("--listen", default=DEFAULT_ADDR, help=f"host:port to serve on (default {DEFAULT_ADDR})")
    run.add_argument("--miner", default="1000", help="the miner actor id (default 1000)")
    run.add_argument("--sector-size", default="2KiB", help="sector size, e.g. 2KiB, 8MiB, 32GiB (default 2KiB)")
    run.add_argument("--pieces-dir", help="each file put here becomes a deal (write it as a dot file, then rename)")
    run.add_argument("--block-time", default="1s", help="simulated chain block time (default 1s)")
    run.add_argument("--pre-commit-delay-epochs", default="3", help="epochs from pre-commit landing to seed")
    run.add_argument("--ticket-expiry-epochs", default="900", help="epochs a ticket stays valid for pre-commit")
    run.add_argument("--seed-expiry-epochs", default="900", help="epochs a seed stays valid for the proof")
    run.add_argument("--worker-timeout", default="60s",
                     help="a worker silent (no ping, no call) this long is lost (default 60s)")
    run.add_argument("--store", action="append", default=[], metavar="NAME=PATH",
                     help="a store workers persist sectors to (repeatable); same names as their [[attached]]")
    run.add_argument("--metrics-listen", metavar="HOST:PORT",
                     help=f"serve Prometheus metrics on http://HOST:PORT/metrics (e.g. {METRICS_ADDR_EXAMPLE}; "
                          f"default: off)")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.set_defaults(func=_cmd_run)


def _add_sector(sub) -> None:
    sector = sub.add_parser("sector", help="inspect and steer the sectors of a running manager")
    sector_sub = sector.add_subparsers(dest="sector_command", required=True)
    add_sector_command(sector_sub, "list", "every sector and where it stands").set_defaults(func=_cmd_sector_list)
    debug = add_sector_command(sector_sub, "debug", "all the manager knows of a sector: holder, chain, "
                               "deadlines, history, last failure")
    debug.add_argument("sector", help="<miner>-<number>, e.g. 1000-3")
    debug.set_defaults(func=_cmd_sector_debug)
    abort = add_sector_command(sector_sub, "abort", "give up a sector (or the upgrade/rebuild running on it)")
    abort.add_argument("sector", help="<miner>-<number>, e.g. 1000-3")
    abort.add_argument("--reason", required=True, help="why; recorded and shown to the worker")
    abort.set_defaults(func=_cmd_sector_abort)
    rebuild = add_sector_command(sector_sub, "rebuild", "have a rebuild thread re-create a finished sector's files")
    rebuild.add_argument("sector", help="<miner>-<number>, e.g. 1000-3")
    rebuild.set_defaults(func=_cmd_sector_rebuild)


def _add_worker(sub) -> None:
    worker = sub.add_parser("worker", help="the worker instances a running manager hears from")
    worker_sub = worker.add_subparsers(dest="worker_command", required=True)
    add_sector_command(worker_sub, "list", "every worker instance, when it was last seen, and whether it is lost"
                       ).set_defaults(func=_cmd_worker_list)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="damocles-manager", description="standalone Filecoin sector manager")
    sub = p.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_sector(sub)
    _add_worker(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
