"""`damocles-manager`: run a standalone sector manager, and operate a running one.

    damocles-manager run --state-dir DIR --listen 127.0.0.1:1789 [--store NAME=PATH ...]
                         [--db postgresql://USER:PW@HOST:PORT/DB] [--metrics-listen HOST:PORT] [--worker-timeout 60s] [--token-file F | --no-auth]
                         [--venus-listen HOST:PORT [--venus-trust IP[,IP...]]] [--check] ...
    damocles-manager sector list|debug|abort|rebuild ... [--addr HOST:PORT] [--token-file F]
    damocles-manager deal list|import [--addr HOST:PORT] [--token-file F]
    damocles-manager worker list [--addr HOST:PORT]
    damocles-manager util worker list|info|pause|resume ...   (damocles' commands; see cli/util_worker.py)
    damocles-manager db migrate|check --db URL            (or --state-dir DIR: its SQLite file)
    damocles-manager db copy --from sqlite:PATH --to postgresql://USER:PW@HOST:PORT/DB

`run` serves an `EmbeddedManager` (state in SQLite, or with `--db` in PostgreSQL, which several
managers may share; simulated chain) over gRPC until SIGINT or SIGTERM; workers point `[sector_manager] addr` at it. Mutating calls need the farm token, created
on first start in `<state-dir>/manager.token` (`--no-auth` turns that off, on loopback only).
`--venus-listen` also serves damocles-manager's `Venus.*` JSON-RPC at http://HOST:PORT/rpc/v0 from the
same state, for damocles-workers (see `manager/venus/server.py`: who may call what, `--venus-trust`).
`run --check` validates everything a start would and prints what would run, changing nothing.
The `sector`, `deal` and `worker` commands talk to it through `RemoteManager`. Bad arguments and
refusals are one line on stderr (`UserError`), never a traceback.
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
TOKEN_FILE_ENV = "DAMOCLES_MANAGER_TOKEN_FILE"


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


def _stores_arg(values: list[str], check_writable: bool = False):
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
        if check_writable and not os.access(location, os.W_OK | os.X_OK):
            raise UserError(f"--store {name}: {location} is not writable by this user (workers persist there, "
                            f"the manager checks their files). Fix: check its owner and permissions")
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
        db=None if args.db is None else _db_arg(args.db, "--db").location,
    )


def _db_arg(value: str, flag: str):
    from damocles_py.manager.sql import parse_db

    try:
        return parse_db(value, flag)
    except ValueError as e:
        raise UserError(str(e)) from None


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


def _token_path(args, state_dir: Path) -> Path | None:
    """The farm token file `run` uses, None with --no-auth (refused beyond loopback)."""
    from damocles_py.manager.auth import TOKEN_FILE
    from damocles_py.manager.server import is_loopback

    if args.no_auth:
        if args.token_file:
            raise UserError("--no-auth and --token-file contradict each other. Fix: drop one of them")
        host = args.listen.rpartition(":")[0]
        if not is_loopback(host):
            raise UserError(f"--no-auth: refusing to serve {args.listen} without a farm token: anyone who can "
                            f"reach it could finish or abort any sector. Fix: drop --no-auth, or listen on 127.0.0.1")
        return None
    return Path(args.token_file).resolve() if args.token_file else state_dir / TOKEN_FILE


def _open_manager(config, stores):
    from damocles_py.manager.db import DbError
    from damocles_py.manager.embedded import EmbeddedManager

    try:
        # New piece files are imported by the manager's background scanner: serving starts at once.
        return EmbeddedManager(config, stores, initial_scan=False)
    except DbError as e:
        raise UserError(f"cannot open the manager database: {e}") from None


def _cmd_run(args) -> int:
    if args.check:  # every problem, bad arguments included, is a failed check: exit 1
        try:
            return _serve(args)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            print("check: 1 problem(s)")
            return 1
    return _serve(args)


def _serve(args) -> int:
    from damocles_py.manager.auth import ensure_token
    from damocles_py.manager.server import ManagerService, serve_manager

    # Check every argument before touching the state dir or the port.
    listen = _listen_arg(args.listen)
    metrics_listen = None
    if args.metrics_listen is not None:
        metrics_listen = _listen_arg(args.metrics_listen, "--metrics-listen", METRICS_ADDR_EXAMPLE)
    config = _embedded_config(args)
    stores = _stores_arg(args.store, check_writable=True)
    token_path = _token_path(args, config.state_dir)
    venus = _venus_args(args, token_path)
    if args.check:
        return _check_run(listen, metrics_listen, config, stores, token_path, venus)
    shared = _shared_ports([(flag, address) for flag, address in (
        ("--listen", listen), ("--metrics-listen", metrics_listen),
        ("--venus-listen", None if venus is None else f"{venus[0]}:{venus[1]}")) if address is not None])
    if shared:  # before anything is created
        raise UserError(shared[0])
    token = None if token_path is None else ensure_token(token_path)
    manager = _open_manager(config, stores)
    service = ManagerService(manager)
    metrics = metrics_server = venus_server = None
    try:
        if metrics_listen:
            from damocles_py.metrics.manager import ManagerMetrics, start_metrics_server

            metrics = ManagerMetrics(manager, service)
            metrics_server = start_metrics_server(metrics_listen, metrics)
            log.info("metrics on http://%s/metrics", metrics_listen)
        server, port = serve_manager(manager, listen, service=service,
                                     interceptors=[metrics.interceptor] if metrics else None, token=token)
        if venus is not None:
            try:
                venus_server = _serve_venus(manager, venus, token, metrics)
            except UserError:
                server.stop(grace=0).wait()
                raise
        host = listen.rpartition(":")[0]
        log.info("sector manager for miner %d (%s sectors) on %s:%d; state in %s; stores: %s; %s", config.miner,
                 config.sector_size, host, port, manager.db_target.display(), ", ".join(s.name for s in stores) or "none",
                 f"farm token in {token_path}" if token_path else "NO AUTH (loopback only)")
        _wait_for_signal()
        log.info("stopping: finishing calls in flight")
        if venus_server is not None:
            venus_server.stop()
        server.stop(grace=5).wait()
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        manager.close()
    return 0


def _venus_args(args, token_path: Path | None):
    """(host, port, trust networks) of --venus-listen/--venus-trust, None without --venus-listen."""
    from damocles_py.manager.server import is_loopback
    from damocles_py.manager.venus.server import DEFAULT_VENUS_PORT, parse_trust

    if args.venus_listen is None:
        if args.venus_trust:
            raise UserError("--venus-trust without --venus-listen: nothing would use it. Fix: add --venus-listen "
                            f"HOST:{DEFAULT_VENUS_PORT}, or drop --venus-trust")
        return None
    listen = _listen_arg(args.venus_listen, "--venus-listen", f"127.0.0.1:{DEFAULT_VENUS_PORT}")
    try:
        trust = parse_trust(args.venus_trust)
    except ValueError as e:
        raise UserError(f"--venus-trust: {e}") from None
    host, _, port = listen.rpartition(":")
    if token_path is None and not trust and not is_loopback(host):
        raise UserError(f"--venus-listen {listen}: refusing to serve the Venus API beyond loopback with neither a "
                        f"farm token nor --venus-trust: anyone who can reach it could finish or abort any sector. "
                        f"Fix: drop --no-auth (callers then need the token), list the damocles-workers' addresses "
                        f"in --venus-trust, or listen on 127.0.0.1")
    return host.strip("[]"), int(port), trust


def _serve_venus(manager, venus, token: str | None, metrics=None):
    from damocles_py.manager.venus.server import RPC_PATH, serve_venus

    host, port, trust = venus
    try:
        server = serve_venus(manager, host, port, token=token, trust=trust,
                             observe=metrics.observe_venus if metrics else None)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} for the Venus API ({e.strerror}). Fix: pass another "
                        f"--venus-listen address, or stop the process using it") from None
    allowed = (["callers with the farm token"] if token is not None else []) + \
        ([f"callers in {', '.join(map(str, trust))}"] if trust else [])
    auth = f"mutating calls only from {' or '.join(allowed)}" if allowed else "NO AUTH (loopback only)"
    log.info("Venus JSON-RPC (damocles-manager API) on %s; %s", server.url(RPC_PATH), auth)
    return server


def _can_bind(address: str) -> str | None:
    """Why `address` cannot be listened on now, or None (probed with a socket closed at once)."""
    import socket

    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError as e:
        return f"{address}: cannot resolve {host!r} ({e})"
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind(sockaddr)
        except OSError as e:
            return f"{address}: cannot listen there ({e.strerror}); is another manager running?"
    return None


def _shared_ports(listeners: list[tuple[str, str]]) -> list[str]:
    """Two of our own listeners on one port (each is free alone, but a start would fail on the second)."""
    wildcard = {"0.0.0.0", "::", "[::]", ""}
    problems = []
    for i, (flag_a, a) in enumerate(listeners):
        for flag_b, b in listeners[i + 1:]:
            host_a, _, port_a = a.rpartition(":")
            host_b, _, port_b = b.rpartition(":")
            if port_a == port_b and (host_a == host_b or host_a in wildcard or host_b in wildcard):
                problems.append(f"{flag_a} {a} and {flag_b} {b} share port {port_a}. Fix: give each its own "
                                f"port (damocles-workers expect Venus on 1789: e.g. --listen 127.0.0.1:1790)")
    return problems


def _check_run(listen: str, metrics_listen: str | None, config, stores, token_path: Path | None,
               venus=None) -> int:
    """`run --check`: everything a start would validate, probed without changing anything."""
    from damocles_py.manager.auth import token_problem
    from damocles_py.manager.db import DbError, inspect_db
    from damocles_py.manager.embedded import db_target

    problems: list[str] = []
    print(f"manager:   miner {config.miner}, {config.sector_size} sectors ({config.seal_proof.name}), "
          f"block time {config.block_time}s, worker timeout {config.worker_timeout}s")
    try:
        print(f"database:  {inspect_db(db_target(config))}")
    except DbError as e:
        problems.append(f"database: {e}")
    if not config.state_dir.exists() and not _creatable(config.state_dir):
        problems.append(f"--state-dir: {config.state_dir} does not exist and cannot be created here. "
                        f"Fix: create it (mkdir -p {config.state_dir}) or check the permissions of its parent")
    venus_listen = None if venus is None else f"{venus[0]}:{venus[1]}"
    listeners = [(flag, address) for flag, address in
                 (("--listen", listen), ("--metrics-listen", metrics_listen), ("--venus-listen", venus_listen))
                 if address is not None]
    for flag, address in listeners:
        problem = _can_bind(address)
        print(f"listen:    {address} ({flag}): {problem or 'free'}")
        if problem:
            problems.append(f"{flag} {problem}")
    problems += _shared_ports(listeners)
    if token_path is None:
        print("auth:      none (--no-auth, loopback only)")
    else:
        problem = token_problem(token_path)
        if problem:
            problems.append(problem)
        elif token_path.exists():
            print(f"auth:      farm token in {token_path}")
        else:
            print(f"auth:      a start creates the farm token in {token_path}")
            if not _creatable(token_path.parent):
                problems.append(f"--token-file: cannot create {token_path}. Fix: check the permissions of "
                                f"{token_path.parent}")
    if venus is not None:
        trust = ", ".join(map(str, venus[2]))
        print(f"venus:     http://{venus_listen}/rpc/v0; mutating calls from "
              + (f"{trust} or " if trust else "") + ("callers with the farm token" if token_path else "anyone"))
    if config.pieces_dir is None:
        print("pieces:    none (no --pieces-dir: CC sectors only)")
    elif not config.pieces_dir.is_dir():
        problems.append(f"--pieces-dir: {config.pieces_dir} is not a directory. Fix: create it "
                        f"(mkdir -p {config.pieces_dir}) or correct the path")
    elif not os.access(config.pieces_dir, os.R_OK | os.X_OK):
        problems.append(f"--pieces-dir: {config.pieces_dir} is not readable by this user. Fix: check its permissions")
    else:
        files = [p for p in config.pieces_dir.iterdir() if p.is_file() and not p.name.startswith(".")]
        print(f"pieces:    {config.pieces_dir}: {len(files)} piece file(s)")
    for store in stores:
        print(f"store:     {store.name} = {store.path}")
    if not stores:
        print("store:     none (no --store: workers cannot persist sectors here)")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print("check: OK, a start would serve" if not problems else f"check: {len(problems)} problem(s)")
    return 1 if problems else 0


def _creatable(directory: Path) -> bool:
    """Whether `directory` exists writable, or could be made under its nearest existing parent."""
    existing = next((d for d in (directory, *directory.parents) if d.exists()), None)
    return existing is not None and existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


# ---------------------------------------------------------------------------------------------
# sector commands (through RemoteManager)


def _with_manager(args, action: Callable) -> int:
    """Run `action(manager)` against the manager at --addr; its refusals become one-line errors."""
    from damocles_py.manager.client import RemoteManager
    from damocles_py.manager.interface import ManagerRequestError, ManagerUnavailable

    addr = args.addr or os.environ.get(ADDR_ENV) or DEFAULT_ADDR
    token_file = getattr(args, "token_file", None) or os.environ.get(TOKEN_FILE_ENV)
    manager = RemoteManager(addr, timeout=args.timeout, token_file=token_file)
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
        *([f"last rebuild:  given up: {record.rebuild_abort_reason}"] if record.rebuild_abort_reason else []),
        *_deal_lines(debug.deals, record.id),
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
    elif record.rebuild_abort_reason:
        extra.append("rebuild given up")
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
    from damocles_py.manager.venus.server import describe_thread

    return f"{ref.instance} {describe_thread(ref)}{where}; {'LOST: ' if status.lost else ''}{seen}"


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


def _deal_lines(deals, sector) -> list[str]:
    lines = []
    for d in deals:
        where = ("upgrade deal" if d.for_upgrade else "deal") if d.sector == sector else "was its deal"
        lines.append(f"{where + ':':<14} {format_deal(d)}")
    return lines


def format_deal(d) -> str:
    """One deal: id, piece, where it is, and its quarantine if any."""
    if d.quarantine:
        state = f"QUARANTINED (from sector {d.quarantined_by}) until its file changes: {d.quarantine}"
    else:
        state = "in the pool" if d.sector is None else f"in sector {d.sector}{' (upgrade)' if d.for_upgrade else ''}"
    return (f"{d.deal.deal_id} {d.deal.piece_path} ({d.deal.payload_size} bytes, commP "
            f"{d.deal.piece.commitment.hex()[:16]}...): {state}")


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
# deal commands


def _cmd_deal_list(args) -> int:
    def show(manager) -> int:
        deals = manager.deals()
        for d in deals:
            print(format_deal(d))
        if not deals:
            print("(no deals yet: put piece files in the manager's --pieces-dir)")
        return 0

    return _with_manager(args, show)


def _cmd_deal_import(args) -> int:
    def run(manager) -> int:
        new = manager.import_pieces()
        for deal in new:
            print(f"deal {deal.deal_id}: {deal.piece_path} ({deal.payload_size} bytes)")
        print(f"{len(new)} new deal(s)")
        return 0

    return _with_manager(args, run)


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
    p.add_argument("--token-file", help=f"the manager's farm token file, needed by commands that change "
                                        f"something (env {TOKEN_FILE_ENV}; the manager writes it in its "
                                        f"state dir as manager.token)")
    return p


def _add_run(sub) -> None:
    run = sub.add_parser("run", help="serve a sector manager (SQLite state, simulated chain) over gRPC")
    run.add_argument("--state-dir", required=True, help="where the manager keeps its database (the SQLite file) "
                                                        "and its farm token")
    run.add_argument("--db", metavar="URL",
                     help="keep the state in PostgreSQL (postgresql://USER:PW@HOST:PORT/DB), which several managers "
                          "may share; default: <state-dir>/manager.sqlite3")
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
    run.add_argument("--token-file", help="the farm token file mutating calls must match "
                                          "(default: <state-dir>/manager.token, created on first start)")
    run.add_argument("--no-auth", action="store_true",
                     help="serve without a farm token (refused unless --listen is a loopback address)")
    run.add_argument("--venus-listen", metavar="HOST:PORT",
                     help="also serve damocles-manager's Venus JSON-RPC API at http://HOST:PORT/rpc/v0, for "
                          "damocles-workers (damocles' port is 1789; default: off)")
    run.add_argument("--venus-trust", action="append", default=[], metavar="IP[,IP...]",
                     help="addresses (or networks) whose Venus calls need no farm token: damocles-workers send "
                          "none. RISK: anyone at these addresses can allocate, finish and abort sectors")
    run.add_argument("--check", action="store_true",
                     help="validate everything a start would and print what would run; change nothing; exit 0 or 1")
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


def _add_deal(sub) -> None:
    deal = sub.add_parser("deal", help="the deals a running manager made of its pieces dir")
    deal_sub = deal.add_subparsers(dest="deal_command", required=True)
    add_sector_command(deal_sub, "list", "every deal: free, in a sector, or quarantined (with the cause)"
                       ).set_defaults(func=_cmd_deal_list)
    add_sector_command(deal_sub, "import", "turn new files of the pieces dir into deals now (commP computed)"
                       ).set_defaults(func=_cmd_deal_import)


def _add_worker(sub) -> None:
    worker = sub.add_parser("worker", help="the worker instances a running manager hears from")
    worker_sub = worker.add_subparsers(dest="worker_command", required=True)
    add_sector_command(worker_sub, "list", "every worker instance, when it was last seen, and whether it is lost"
                       ).set_defaults(func=_cmd_worker_list)


def _add_util(sub) -> None:
    from damocles_py.cli import util_worker

    util = sub.add_parser("util", help="damocles' operator utilities")
    util_sub = util.add_subparsers(dest="util_command", required=True)
    util_worker.add_commands(util_sub)


def _db_target_of(args):
    """--db, else the SQLite file of --state-dir."""
    from damocles_py.manager.sql import DbTarget

    if args.db is not None:
        return _db_arg(args.db, "--db")
    if args.state_dir is not None:
        return DbTarget.sqlite_in(Path(args.state_dir).resolve())
    raise UserError("name the database: --db postgresql://USER:PW@HOST:PORT/DB (or sqlite:PATH), "
                    "or --state-dir DIR for a manager's SQLite file")


def _cmd_db_check(args) -> int:
    from damocles_py.manager.db import DbError, inspect_db

    target = _db_target_of(args)
    try:
        print(inspect_db(target))
    except DbError as e:
        raise UserError(str(e)) from None
    return 0


def _cmd_db_migrate(args) -> int:
    from damocles_py.manager.db import DbError, migrate
    from damocles_py.manager.sql import open_backend

    target = _db_target_of(args)
    try:
        backend = open_backend(target)
        try:
            found, now = migrate(backend)
        finally:
            backend.close()
    except DbError as e:
        raise UserError(str(e)) from None
    if found == now:
        print(f"{target.display()}: schema version {now}, nothing to do")
    else:
        print(f"{target.display()}: schema version {found or 'none'} -> {now}")
    return 0


def _cmd_db_copy(args) -> int:
    from damocles_py.manager.db import DbError, copy_db

    source, dest = _db_arg(args.source, "--from"), _db_arg(args.dest, "--to")
    try:
        copied = copy_db(source, dest)
    except DbError as e:
        raise UserError(str(e)) from None
    rows = ", ".join(f"{n} {table}" for table, n in copied.items() if n)
    print(f"copied {source.display()} to {dest.display()}: {rows or 'no rows'}")
    return 0


def _add_db(sub) -> None:
    db = sub.add_parser("db", help="the manager's database: migrate its schema, check it, copy it")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    for name, help, func in (("migrate", "bring the schema up to this version (a start does it too)", _cmd_db_migrate),
                             ("check", "say what a start would find, changing nothing", _cmd_db_check)):
        p = db_sub.add_parser(name, help=help)
        p.add_argument("--db", metavar="URL", help="postgresql://USER:PW@HOST:PORT/DB or sqlite:PATH")
        p.add_argument("--state-dir", help="a manager's state dir (its manager.sqlite3), instead of --db")
        p.set_defaults(func=func)
    copy = db_sub.add_parser("copy", help="copy a manager's whole state into a new, empty database")
    copy.add_argument("--from", dest="source", required=True, metavar="URL", help="e.g. sqlite:/var/lib/manager")
    copy.add_argument("--to", dest="dest", required=True, metavar="URL",
                      help="e.g. postgresql://USER:PW@HOST:PORT/DB (must hold no manager state yet)")
    copy.set_defaults(func=_cmd_db_copy)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="damocles-manager", description="standalone Filecoin sector manager")
    sub = p.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_sector(sub)
    _add_deal(sub)
    _add_worker(sub)
    _add_util(sub)
    _add_db(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
