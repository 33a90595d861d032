"""Daemon, thread-control, store and sector-debug commands of damocles-worker."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from damocles_py.cli.common import non_negative_int
from damocles_py.errors import UserError

DEFAULT_CONFIG = "sealing.toml"


def _config_path(args) -> str:
    return args.config or os.environ.get("DAMOCLES_WORKER_CONFIG") or DEFAULT_CONFIG


def _cmd_daemon(args) -> int:
    from damocles_py.config.load import load_config
    from damocles_py.daemon import WorkerDaemon

    if args.check:
        try:
            config = load_config(_config_path(args))
        except UserError as e:  # --check answers 0 or 1, whatever is wrong
            print(f"error: {e}", file=sys.stderr)
            return 1
        return _check(config)
    config = load_config(_config_path(args))
    n = args.stop_after_sectors
    # Sectors in flight when the daemon starts (resumed after a restart) count towards n.
    return WorkerDaemon(config, max_sectors=n).run(stop_after_sectors=n)


def _check(config) -> int:
    """`daemon --check`: what a start would run and every problem it would hit; changes nothing."""
    import logging

    from damocles_py.preflight import check_problems, describe, start_problems

    logging.getLogger().setLevel(logging.WARNING)  # the proofs library's info lines are not the report
    for line in describe(config):
        print(line)
    warnings: list[str] = []
    problems = start_problems(config) + check_problems(config, warnings)
    for warning in warnings:
        print(f"warning: {warning}")
    for problem in problems:
        print(f"problem: {problem}")
    print(f"{len(problems)} problem(s) to fix before starting" if problems else "ok: the daemon can start")
    return 1 if problems else 0


def _client(args, need_token: bool):
    """Admin client from --host (or DAMOCLES_WORKER_HOST) and the config's token file."""
    from damocles_py.admin.client import AdminClient

    host = args.host or os.environ.get("DAMOCLES_WORKER_HOST")
    token = None
    path = _config_path(args)
    if os.path.exists(path):
        from damocles_py.admin.token import read_token
        from damocles_py.config.load import load_worker_section
        from damocles_py.preflight import admin_token_path

        worker = load_worker_section(path)  # a broken hot config or processor entry must not lock the operator out
        host = host or worker.admin_server.address  # our gRPC admin API ([worker.admin_server])
        if need_token:  # an empty or short token file is an error, never a credential
            token = read_token(admin_token_path(worker))
    elif need_token or not host:
        raise UserError(f"no config file at {path}. Fix: pass -c <the worker's sealing.toml> "
                        f"(the admin address and token come from it)")
    if need_token and token is None:
        raise UserError(f"no admin token found for {path}: has the daemon ever started with this config?")
    return AdminClient(host, token)


def _fmt_secs(secs: float) -> str:
    secs = int(secs)
    return f"{secs // 3600}h{secs % 3600 // 60:02d}m" if secs >= 3600 else f"{secs // 60}m{secs % 60:02d}s"


def _cmd_list(args) -> int:
    from google.protobuf.json_format import MessageToDict

    resp = _client(args, need_token=False).list()
    if args.json:
        print(json.dumps(MessageToDict(resp, always_print_fields_with_no_presence=True,
                                       preserving_proto_field_name=True), indent=2))
        return 0
    print(f"worker {resp.worker}")
    doing = [_thread_doing(t) for t in resp.threads]
    width = max([8, *map(len, doing)])
    print(f"{'#':>2}  {'plan':<8} {'sector':<12} {'state':<21} {'stage':<12} {'thread':<{width}} {'for':>7}  last failure")
    for t, what in zip(resp.threads, doing):
        failure = f"{t.last_failure.level}: {t.last_failure.cause}: {t.last_failure.detail}" if t.has_failure else ""
        secs = t.seconds_waiting if t.thread_state == "waiting" else t.seconds_in_state
        print(f"{t.index:>2}  {t.plan:<8} {t.sector_id or '-':<12} {t.state:<21} {t.stage or '-':<12} "
              f"{what:<{width}} {_fmt_secs(secs):>7}  {failure}")
    if resp.processors or any(s.waiting for s in resp.stages):
        _print_processors(resp)
    return 0


def _thread_doing(t) -> str:
    """The thread column: what the thread does; a wait for a stage names the stage."""
    return f"waiting for {t.stage} slot" if t.thread_state == "waiting" and t.stage else t.thread_state


def _print_processors(resp) -> None:
    """The external processors (`[[processors.<stage>]]` children) and each stage's running/waiting threads."""
    if resp.processors:
        print()
        print(f"{'processor':<16} {'pid':>8}  {'cpuset':<12} {'state':<9} {'tasks':>6} {'restarts':>8}  sectors")
        for p in resp.processors:
            print(f"{f'{p.stage}[{p.index}]':<16} {p.pid or '-':>8}  {p.cpuset or '-':<12} {p.state:<9} "
                  f"{p.tasks_done:>6} {p.restarts:>8}  {', '.join(p.sectors) or '-'}")
    print()
    print(f"{'stage':<12} {'running':>7} {'waiting':>7}")
    for s in resp.stages:
        print(f"{s.stage:<12} {s.running:>7} {s.waiting:>7}")


def _cmd_pause(args) -> int:
    resp = _client(args, need_token=True).pause(args.index)
    print(resp.message)
    return 0 if resp.accepted else 1


def _cmd_resume(args) -> int:
    resp = _client(args, need_token=True).resume(args.index, args.state)
    print(resp.message)
    return 0 if resp.accepted else 1


def _cmd_sealing_init(args) -> int:
    from pathlib import Path

    from damocles_py.store.location import init_location
    from damocles_py.store.thread_db import ThreadDB

    for loc in args.loc:
        try:
            path = Path(loc).expanduser()
        except RuntimeError as e:  # ~user that does not exist
            raise UserError(f"cannot use location {loc!r}: {e}. Fix: write the full path") from None
        path = init_location(path)
        ThreadDB(path).close()
        print(f"sealing location ready: {path}")
    return 0


def _cmd_file_init(args) -> int:
    """As damocles: `mkdir -p` each persist store. Ours: `--name` also writes its sectorstore.json
    (the manager's format), which names the store for both workers and lets `scan_persist_stores` find it."""
    from pathlib import Path

    from damocles_py.store.durable import make_dirs, write_durably
    from damocles_py.store.layout import SECTORSTORE_JSON, SectorStoreJsonError, read_sectorstore_json, sectorstore_json

    if args.name is None and args.read_only:
        raise UserError("store file-init: --read-only is written to sectorstore.json, which needs --name. "
                        "Fix: add --name <the store's name in the manager>")
    for loc in args.loc:
        path = Path(loc).expanduser().absolute()
        make_dirs(path)
        if args.name is not None:
            try:
                existing = read_sectorstore_json(path)
            except SectorStoreJsonError as e:
                raise UserError(f"{e}. Fix: remove or repair it, then run this again") from None
            if existing is not None and existing.name not in (None, args.name):
                raise UserError(f"{path / SECTORSTORE_JSON} already names this store {existing.name!r}. "
                                f"Fix: use --name {existing.name}, or edit the file if the manager knows it as "
                                f"{args.name!r}")
            write_durably(path / SECTORSTORE_JSON, sectorstore_json(args.name, readonly=args.read_only))
        print(f"persist store ready: {path}" + (f" (name {args.name})" if args.name else ""))
    return 0


def _not_supported(what: str, why: str):
    def run(args) -> int:
        raise UserError(f"{what} is not supported yet by damocles-py: {why}")

    return run


def _cmd_sector_debug(args) -> int:
    from damocles_py.manager.interface import SectorId

    try:
        SectorId.parse(args.sector)
    except ValueError as e:
        raise UserError(str(e)) from None
    resp = _client(args, need_token=False).sector_debug(args.sector, logs=args.logs)
    for job in resp.jobs:
        print(f"sector {resp.sector_id}  plan {job.plan}  thread {job.thread}  proof {job.proof_type or '-'}")
        status = "done" if job.done else ("paused" if job.paused else "in progress")
        print(f"  state: {job.state} ({status}, retries {job.retries})")
        if job.has_failure:
            f = job.failure
            print(f"  failure: {f.cause} [{f.level}] {f.detail}\n    meaning: {f.meaning}\n    action:  {f.action}")
        print("  status history:")
        for h in job.history:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.ts))
            took = f" ({h.duration:.3f}s)" if h.has_duration else ""
            line = f"    {when}  {h.prev} --{h.event}--> {h.next}{took}"
            if h.failure_cause:
                line += f"  [{h.failure_level}: {h.failure_cause}: {h.detail}]"
            print(line)
        if args.logs:
            print("  log:")
            for line in job.log.splitlines():
                print(f"    {line}")
    print("on the sector manager:")
    for line in resp.manager_view.splitlines():
        print(f"  {line}")
    return 0


def add_commands(sub) -> None:
    def with_client_args(p, after_subcommand: bool = False):
        # damocles spells them before the subcommand (`worker -c F list`); after it (`worker list -c F`)
        # is ours, kept: there SUPPRESS leaves a value given before the subcommand in place.
        default = argparse.SUPPRESS if after_subcommand else None
        p.add_argument("-c", "--config", default=default,
                       help="the worker's sealing.toml (env DAMOCLES_WORKER_CONFIG)")
        p.add_argument("-H", "--host", default=default, help="the gRPC admin API address host:port, [worker.admin_server] "
                                            "(env DAMOCLES_WORKER_HOST)")
        return p

    d = sub.add_parser("daemon", help="run the sealing threads")
    d.add_argument("-c", "--config", help="sealing.toml (env DAMOCLES_WORKER_CONFIG)")
    d.add_argument("--check", action="store_true",
                   help="validate everything a start would (config, locations, locks, stores, ports, token, "
                        "manager, parameters), print what would run, exit 0 or 1; changes nothing")
    d.add_argument("--stop-after-sectors", type=non_negative_int, default=None,
                   help="exit once this many sectors are finished or aborted (for qualification runs)")
    d.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    d.set_defaults(func=_cmd_daemon)

    w = with_client_args(sub.add_parser("worker", help="steer a running daemon's sealing threads"))
    wsub = w.add_subparsers(dest="worker_command", required=True)
    lst = with_client_args(wsub.add_parser("list", help="show every sealing thread"), after_subcommand=True)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_cmd_list)
    pause = with_client_args(wsub.add_parser("pause", help="pause a thread before its next stage"),
                             after_subcommand=True)
    pause.add_argument("-i", "--index", type=non_negative_int, required=True)
    pause.set_defaults(func=_cmd_pause)
    resume = with_client_args(wsub.add_parser("resume", help="resume a paused thread"), after_subcommand=True)
    resume.add_argument("-i", "--index", type=non_negative_int, required=True)
    resume.add_argument("-s", "--state", help="rewind to this state, or Aborted to abandon the sector")
    resume.set_defaults(func=_cmd_resume)
    for name in ("enable-dump", "disable-dump"):
        dump = wsub.add_parser(name, aliases=[name.replace("-", "_")],
                               help="damocles' external-processor error dumps: not supported yet")
        dump.add_argument("--child-pid", "--child_pid")
        if name == "enable-dump":
            dump.add_argument("--dump-dir", "--dump_dir")
        dump.set_defaults(func=_not_supported(f"worker {name}", "it dumps damocles' JSON responses of external "
                                              "processor children; ours speak a typed protocol and their errors go "
                                              "into the sector's log and `sector debug`"))

    st = sub.add_parser("store", help="prepare storage")
    stsub = st.add_subparsers(dest="store_command", required=True)
    init = stsub.add_parser("sealing-init", help="prepare sealing thread locations")
    init.add_argument("-l", "--loc", nargs="+", required=True)
    init.set_defaults(func=_cmd_sealing_init)
    file_init = stsub.add_parser("file-init", help="prepare persist stores ([[attached]])")
    file_init.add_argument("-l", "--loc", nargs="+", required=True)
    file_init.add_argument("--name", help="(ours) also write sectorstore.json naming the store, as the manager knows it")
    file_init.add_argument("--read-only", action="store_true", help="(ours, with --name) mark it read-only there")
    file_init.set_defaults(func=_cmd_file_init)
    huge = stsub.add_parser("hugepage-file-init", help="damocles' PC1 hugepage files: not supported yet")
    huge.add_argument("-n", "--node", "--numa_node_index")
    huge.add_argument("-s", "--size")
    huge.add_argument("-c", "--num", "--number_of_files")
    huge.add_argument("--path")
    huge.add_argument("--path-pattern", "--path_pattern")
    huge.set_defaults(func=_not_supported("store hugepage-file-init", "PC1 runs in the daemon with the "
                                          "filecoin-proofs allocator; hugepage memory pools need an external PC1 "
                                          "processor (issue 9)"))

    sec = sub.add_parser("sector", help="inspect sectors")
    secsub = sec.add_subparsers(dest="sector_command", required=True)
    dbg = with_client_args(secsub.add_parser("debug", help="status history, failure cause and log of a sector"))
    dbg.add_argument("sector", help="<miner>-<number>, e.g. 1000-3")
    dbg.add_argument("--logs", action="store_true", help="also print the sector's own log")
    dbg.set_defaults(func=_cmd_sector_debug)
