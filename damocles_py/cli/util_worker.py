"""`damocles-manager util worker ...`: damocles' commands to see and steer sealing workers.

    damocles-manager util worker list [--expiration 10m]
    damocles-manager util worker info   <name or address>
    damocles-manager util worker pause  <name or address> <thread index>
    damocles-manager util worker resume <name or address> <thread index> [<next state>]
    damocles-manager util worker remove <name>      (forgets its last ping; needs the manager's farm token)

A worker is found by the name it pings with (our manager's `ListWorkers`, its ping's Dest) or
taken as an address (`host:port`, or a host alone with port 17890), as damocles' `resolveWorkerDest`;
then its `VenusWorker.*` admin API is called over JSON-RPC (`admin.venus.VenusWorkerClient`), so
this steers our worker and damocles-worker alike. Columns are damocles'. Our worker wants its
admin token for pause and resume: `--token-file <its state_dir>/admin.token` (or env
DAMOCLES_WORKER_TOKEN_FILE), unless it trusts this machine's IP (`[worker] venus_admin_trust`).
`resume ... Aborted` ends the sector as `damocles-worker worker resume --state Aborted` does: both
go through the worker's one thread control.
"""

from __future__ import annotations

import os
import socket
import time

from damocles_py.cli.common import non_negative_int
from damocles_py.errors import UserError

WORKER_TOKEN_ENV = "DAMOCLES_WORKER_TOKEN_FILE"


def go_duration(seconds: float) -> str:
    """A duration as Go's `time.Duration.String()` prints it, to the millisecond: 1h2m3.5s, 250ms."""
    ms = int(round(seconds * 1000))
    if ms == 0:
        return "0s"
    sign, ms = ("-", -ms) if ms < 0 else ("", ms)
    if ms < 1000:
        return f"{sign}{ms}ms"
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    return sign + (f"{h}h" if h else "") + (f"{m}m" if h or m else "") + f"{s}s"


def tabulate(rows: list[list[str]]) -> list[str]:
    """Go's `tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)`: cells padded to the column width + 2; the
    last cell of a line is not a column."""
    widths: dict[int, int] = {}
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, 2), len(cell) + 2)
    return ["".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])) + row[-1] for row in rows]


def _worker_token(args) -> str | None:
    path = args.token_file or os.environ.get(WORKER_TOKEN_ENV)
    if not path:
        return None
    from pathlib import Path

    from damocles_py.admin.token import read_token

    token = read_token(Path(path))
    if token is None:
        raise UserError(f"no token file at {path}. Fix: pass --token-file <the worker's state_dir>/admin.token")
    return token


def _known_workers(args):
    import argparse

    from damocles_py.cli.manager import _with_manager

    # no --token-file here: that is the worker's secret, not the manager's (ListWorkers needs none)
    view = argparse.Namespace(addr=args.addr, timeout=args.timeout)
    found: dict = {}

    def fetch(manager) -> int:
        found["workers"] = manager.workers()
        return 0

    _with_manager(view, fetch)
    return found["workers"]


def resolve_worker(args, name: str) -> str:
    """The VenusWorker address of `name`: its ping's Dest if the manager knows it, else `name` as an address."""
    from damocles_py.admin.venus import resolve_dest

    for w in _known_workers(args):
        if w.instance == name:
            if not w.dest:
                raise UserError(f"worker {name} has not told the manager its admin address (its pings carry no "
                                f"Dest). Fix: pass the address of its [worker.rpc_server] instead, e.g. host:17890")
            return w.dest
    dest = resolve_dest(name)
    host = dest.rpartition(":")[0].strip("[]")
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        raise UserError(f"no worker named {name!r} has pinged the manager, and {name!r} is not an address. Fix: "
                        f"pick a name from `damocles-manager util worker list`, or pass host:port") from None
    return dest


def _client(args, need_token: bool):
    from damocles_py.admin.venus import VenusWorkerClient

    dest = resolve_worker(args, args.worker)
    return VenusWorkerClient(dest, _worker_token(args) if need_token else None, timeout=args.timeout)


def _cmd_list(args) -> int:
    from damocles_py.manager.interface import WorkerSummary

    expiration = args.expiration
    rows = [["Name", "Dest", "Version", "Threads", "Empty", "Paused", "Running", "Waiting", "Errors",
             "LastPing(with ! if expired)"]]
    now = time.time()
    for w in _known_workers(args):
        if w.last_ping is None:  # it called but never pinged: damocles keeps ping infos only
            continue
        s = w.summary or WorkerSummary.of(w.threads)
        since = max(0.0, now - w.last_ping) if w.silent_for is None else w.silent_for
        last = go_duration(since) + (" (!)" if since > expiration else "")
        rows.append([w.instance, w.dest, w.version, *(str(n) for n in (s.threads, s.empty, s.paused, s.running,
                                                                        s.waiting, s.errors)), last])
    for line in tabulate(rows):
        print(line)
    return 0


def _thread_state(ts) -> str:
    from damocles_py.admin.venus import Running

    elapsed = getattr(ts, "elapsed", None)
    text = type(ts).__name__ if elapsed is None else f"{type(ts).__name__}({go_duration(elapsed)})"
    return f"{text} {ts.proc}" if isinstance(ts, Running) and ts.proc else text


def _cmd_info(args) -> int:
    with _client(args, need_token=False) as client:
        threads = client.worker_list()
    if not threads:
        return 0
    rows = [["Index", "Loc", "Plan", "JobID", "JobState", "JobStage", "ThreadState", "LastErr"]]
    for t in threads:
        rows.append([str(t.index), t.location, t.plan, t.job_id or "NULL", t.job_state, t.job_stage or "NULL",
                     _thread_state(t.thread_state), t.last_error if t.last_error is not None else "NULL"])
    for line in tabulate(rows):
        print(line)
    return 0


def _cmd_pause(args) -> int:
    with _client(args, need_token=True) as client:
        ok = client.worker_pause(args.index)
    print(f"pause call done, ok = {str(ok).lower()}" + ("" if ok else " (already paused or pausing)"))
    return 0


def _cmd_resume(args) -> int:
    with _client(args, need_token=True) as client:
        ok = client.worker_resume(args.index, args.state or None)
    print(f"resume call done, ok = {str(ok).lower()}" + ("" if ok else " (the thread was not paused)"))
    return 0


def _cmd_remove(args) -> int:
    from damocles_py.cli.manager import _with_manager

    def forget(manager) -> int:
        if not manager.forget_worker_ping(args.name):
            raise UserError(f"worker info not found. please make sure the instance name is correct: {args.name}")
        print(f"'{args.name}' removed")
        return 0

    return _with_manager(args, forget)  # --token-file here: the manager's farm token (a change on the manager)


def _duration(text: str) -> float:
    import argparse

    from damocles_py.config.load import ConfigError, parse_duration

    try:
        return parse_duration(text, "--expiration")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_commands(util_sub) -> None:
    """`util worker ...` under the manager's `util` command."""
    from damocles_py.cli.manager import ADDR_ENV, DEFAULT_ADDR, TOKEN_FILE_ENV

    worker = util_sub.add_parser("worker", help="see and steer sealing workers (damocles' util worker)")
    sub = worker.add_subparsers(dest="util_worker_command", required=True)

    def command(name: str, help: str, *, target: bool = True, token: bool = False):
        p = sub.add_parser(name, help=help)
        p.add_argument("--addr", help=f"the manager's host:port (env {ADDR_ENV}; default {DEFAULT_ADDR})")
        p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer (default 10)")
        if target:
            p.add_argument("worker", help="the worker's instance name (as it pings the manager), or its "
                                          "[worker.rpc_server] address host:port (port 17890 if left out)")
        if token:
            p.add_argument("--token-file", help=f"the worker's admin token file, <state_dir>/admin.token (env "
                                                f"{WORKER_TOKEN_ENV}); not needed if it trusts this IP")
        return p

    lst = command("list", "every worker that pings the manager", target=False)
    lst.add_argument("--expiration", type=_duration, default=600.0,
                     help="a worker silent for longer is marked (!) (default 10m)")
    lst.set_defaults(func=_cmd_list)
    command("info", "the sealing threads of a worker").set_defaults(func=_cmd_info)
    pause = command("pause", "pause a sealing thread of a worker", token=True)
    pause.add_argument("index", type=non_negative_int, help="the thread index")
    pause.set_defaults(func=_cmd_pause)
    resume = command("resume", "resume a paused thread, at the given state if any (Aborted ends the sector)",
                     token=True)
    resume.add_argument("index", type=non_negative_int, help="the thread index")
    resume.add_argument("state", nargs="?", help="the state to resume at, e.g. TreeDBuilt, or Aborted")
    resume.set_defaults(func=_cmd_resume)
    remove = command("remove", "forget a worker's last ping (until it pings again)", target=False)
    remove.add_argument("name", help="the worker's instance name")
    remove.add_argument("--token-file", help=f"the manager's farm token file (env {TOKEN_FILE_ENV})")
    remove.set_defaults(func=_cmd_remove)
