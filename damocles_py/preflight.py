"""What the worker daemon checks before any thread starts, and what `daemon --check` adds.

`start_problems` is what a start refuses (each problem one line naming the fix): thread locations
not prepared by `store sealing-init` (an unmounted disk), stores missing, threads that could never
get or persist a sector, an unusable admin token file. `busy_problems` (directories locked by a
running daemon, ports in use) is probed at start too, before any state is created. `check_problems`
adds what only the work itself would find out (the manager unreachable, parameter files missing).
Every probe here changes nothing: `daemon --check` runs them all.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from damocles_py.admin.token import TOKEN_FILE, token_problem
from damocles_py.config.schema import Config, Plan, WorkerConfig
from damocles_py.store.location import init_command, location_problem, lock_holder


def admin_token_path(config: Config | WorkerConfig) -> Path:
    worker = config.worker if isinstance(config, Config) else config
    return worker.state_dir / TOKEN_FILE


def _store_problems(config: Config) -> list[str]:
    problems = []
    for i, store in enumerate(config.attached):
        where = f"{config.path}: attached[{i}] (store {store.name!r})"
        if not store.location.exists():
            if not store.create:
                problems.append(
                    f"{where}: {store.location} does not exist. Fix: mount the disk that holds it, create it "
                    f"(mkdir -p {store.location}), set `create = true` for a local store, or correct `location`")
        elif not store.location.is_dir():
            problems.append(f"{where}: {store.location} is not a directory. Fix: correct `location`")
        elif not store.readonly and not os.access(store.location, os.W_OK | os.X_OK):
            problems.append(f"{where}: {store.location} is not writable by this user. "
                            f"Fix: check its owner and permissions, or set `readonly = true`")
    return problems


def _thread_problems(config: Config) -> list[str]:
    problems = []
    for t in config.sealing_threads:
        problem = location_problem(t.location, f"{config.path}: sealing_thread[{t.index}].location")
        if problem:
            problems.append(problem)
    if not any(not s.readonly for s in config.attached):
        plans = sorted({t.plan.value for t in config.sealing_threads})
        problems.append(
            f"{config.path}: no writable [[attached]] store, so the {'/'.join(plans)} thread(s) would fail at "
            f"persist after hours of sealing. Fix: add one, e.g. `[[attached]]` with `name = \"persist-a\"` "
            f"and `location = \"/mnt/persist/a\"`")
    if config.sector_manager.is_embedded:
        emb = config.sector_manager.embedded
        takers = [t for t in config.sealing_threads
                  if (t.sealing.allowed_sizes is None or emb.sector_size in t.sealing.allowed_sizes)
                  and (t.sealing.allowed_miners is None or emb.miner in t.sealing.allowed_miners)]
        if not takers:
            problems.append(
                f"{config.path}: the embedded manager seals {emb.sector_size} sectors of miner {emb.miner}, which "
                f"no sealing thread accepts (allowed_sizes / allowed_miners), so every thread would idle forever. "
                f"Fix: add \"{emb.sector_size}\" to allowed_sizes (and {emb.miner} to allowed_miners), or change "
                f"[sector_manager.embedded] sector_size / miner")
    for size, file in config.processors.static_tree_d.items():
        if not file.is_file():
            problems.append(f"{config.path}: processors.static_tree_d.{size}: {file} does not exist. "
                            f"Fix: correct the path, or remove the entry so the tree is built into the cache")
    return problems


def start_problems(config: Config) -> list[str]:
    """Everything that must stop a start before any thread runs; [] when the config can start."""
    problems = _store_problems(config) + _thread_problems(config)
    state_dir = config.worker.state_dir
    if state_dir.exists() and not (state_dir.is_dir() and os.access(state_dir, os.W_OK | os.X_OK)):
        problems.append(f"{config.path}: worker.state_dir {state_dir} is not a writable directory. "
                        f"Fix: check its owner and permissions, or set another [worker] state_dir")
    farm_token = config.sector_manager.token_file
    if not config.sector_manager.is_embedded and farm_token is not None:
        from damocles_py.manager.auth import token_problem as farm_token_problem

        if not farm_token.exists():
            problems.append(f"{config.path}: sector_manager.rpc_client.token_file: {farm_token} does not exist. "
                            f"Fix: copy the manager's token file there (its state dir's manager.token)")
        else:
            problem = farm_token_problem(farm_token)
            if problem:
                problems.append(f"{config.path}: sector_manager.rpc_client.token_file: {problem}")
    token = token_problem(admin_token_path(config))
    if token:
        problems.append(token)
    return problems


def bind_problem(address: str, what: str, fix: str) -> str | None:
    """Whether `address` (host:port) can be listened on now, tried with a socket that is closed at once."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, sockaddr = infos[0]
        with socket.socket(family, kind, proto) as s:
            # as the servers do: connections of a daemon killed a moment ago (TIME_WAIT) do not
            # make the port busy, a listening socket still does
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(sockaddr)
    except OSError as e:
        return f"{what} {address} cannot be listened on ({e.strerror or e}). Fix: {fix}"
    return None


def _params_problems(config: Config) -> list[str]:
    from damocles_py.proofs import params
    from damocles_py.proofs.types import SectorSize

    if config.sector_manager.is_embedded:
        sizes = {config.sector_manager.embedded.sector_size}
    else:
        # a thread with no allowed_sizes takes whatever the manager hands out: nothing to check here
        sizes = {s for t in config.sealing_threads for s in (t.sealing.allowed_sizes or ())}
    # C2 needs the PoRep parameters, snap proving the update ones; a rebuild proves nothing
    needs = {Plan.sealer: params.Circuit.PoRep, Plan.snapup: params.Circuit.Update}
    circuits = {needs[t.plan] for t in config.sealing_threads if t.plan in needs}
    problems = []
    for size in sorted(sizes, key=int):
        missing = [f.name for c in sorted(circuits, key=lambda c: c.value) for f in params.files_for(c, SectorSize(int(size)))
                   if not f.present]
        if missing:
            problems.append(f"parameters for {size} missing from {params.param_dir()}: {', '.join(missing)}. "
                            f"Fix: {params.generate_command(size)} (test sizes) or install the official files")
    return problems


def locked_dirs(config: Config) -> list[tuple[Path, str]]:
    """The directories a running daemon holds locked, with their config keys."""
    dirs = [(config.worker.state_dir, "worker.state_dir")]
    if config.sector_manager.is_embedded:  # two embedded managers on one database would hand out sectors twice
        dirs.append((config.sector_manager.embedded.state_dir, "sector_manager.embedded.state_dir"))
    return dirs + [(t.location, f"sealing_thread[{t.index}].location") for t in config.sealing_threads]


def busy_problems(config: Config) -> list[str]:
    """Directories locked by a running daemon, then busy admin/metrics ports (probed; nothing is created)."""
    problems = []
    for directory, key in locked_dirs(config):
        holder = lock_holder(directory)
        if holder:
            problems.append(f"{config.path}: {key} {directory} is in use by another damocles-worker daemon: "
                            f"{holder}. Fix: stop that daemon first (kill -TERM <pid>), or give this one its own config")
    w = config.worker
    wildcard = {"0.0.0.0", "::", ""}
    if w.rpc_server.port == w.admin_server.port and (w.rpc_server.host == w.admin_server.host
                                                     or {w.rpc_server.host, w.admin_server.host} & wildcard):
        problems.append(f"{config.path}: worker.admin_server ({w.admin_server.address}) and worker.rpc_server "
                        f"({w.rpc_server.address}) share port {w.rpc_server.port}. Fix: give [worker.admin_server] "
                        f"another port (default 17891)")
    else:
        for server, what in ((w.admin_server, "the gRPC admin API address"),
                             (w.rpc_server, "the VenusWorker admin API address")):
            key = "admin_server" if server is w.admin_server else "rpc_server"
            bind = bind_problem(server.address, what, f"stop the process using it, or set another [worker.{key}] port")
            if bind:
                problems.append(bind)
    if config.metrics.enable:
        bind = bind_problem(config.metrics.http_listen, "the metrics address",
                            "stop the process using it, or set another [metrics] http_listen")
        if bind:
            problems.append(bind)
    return problems


def check_problems(config: Config, warnings: list[str] | None = None) -> list[str]:
    """What only starting would reveal, probed without changing anything (for `daemon --check`).
    `warnings` receives what does not stop a start (a failover manager that does not answer)."""
    problems = busy_problems(config)
    if config.sector_manager.is_venus:
        problems += _venus_problems(config)
    elif not config.sector_manager.is_embedded:
        problems += _grpc_manager_problems(config, [] if warnings is None else warnings)
    try:
        problems += _params_problems(config)
    except Exception as e:  # the proofs extension missing is a problem of this install
        problems.append(f"cannot check the Groth parameters ({type(e).__name__}: {e}). Fix: install the "
                        f"proofs extension (bash scripts/install.sh)")
    return problems


def _grpc_manager_problems(config: Config, warnings: list[str]) -> list[str]:
    """Our manager(s) answer: a problem if none does; with several, each silent one is a warning
    (the worker fails over to the others)."""
    from damocles_py.manager.client import RemoteManager

    sm = config.sector_manager
    silent = []
    for addr in sm.addrs:  # one client each: a failover client would hide which one is down
        try:
            manager = RemoteManager(addr, timeout=min(sm.rpc_timeout, 5.0), token_file=sm.token_file)
        except Exception as e:  # the farm token file is unusable
            return [f"{config.path}: sector_manager.rpc_client.token_file: {e}"]
        try:
            manager.workers()
        except Exception as e:
            silent.append(f"the sector manager at {addr} does not answer ({e})")
        finally:
            manager.close()
    fix = "Fix: start it (damocles-manager run ...) or correct [sector_manager.rpc_client] addr"
    if len(silent) == len(sm.addrs):
        return [f"{s}. {fix}" for s in silent]
    warnings.extend(f"{s}; the worker uses the other manager(s) meanwhile. {fix}" for s in silent)
    return []


def _venus_problems(config: Config) -> list[str]:
    """A damocles-manager's start-up check: it answers, and knows every attached store by name."""
    from damocles_py.manager.interface import ManagerUnavailable
    from damocles_py.manager.venus.client import VenusManager

    sm = config.sector_manager
    problems = []
    with VenusManager(sm.addr, timeout=min(sm.rpc_timeout, 5.0), headers=dict(sm.headers)) as manager:
        for store in config.attached:
            try:
                if manager.store_basic_info(store.name) is None:
                    problems.append(f"{config.path}: [[attached]] store {store.name!r} is not known to the "
                                    f"damocles-manager at {manager.url}. Fix: add it to the manager's persist stores "
                                    f"(same name), or detach it from the worker")
            except ManagerUnavailable as e:
                problems.append(f"{e}. Fix: start the damocles-manager, or correct [sector_manager] rpc_client.addr")
                break
    return problems


def describe(config: Config) -> list[str]:
    """What a start of this config would run, for `daemon --check`."""
    w = config.worker
    lines = [f"config {config.path}",
             f"worker {w.name}: admin API on {w.admin_server.address} (gRPC) and {w.rpc_server.address} "
             f"(VenusWorker JSON-RPC), state_dir {w.state_dir}"]
    if w.venus_admin_trust:
        lines.append(f"VenusWorker pause/resume accepted WITHOUT the admin token from {', '.join(w.venus_admin_trust)} "
                     f"([worker] venus_admin_trust: anyone sending from these IPs can pause, rewind or abort)")
    if config.sector_manager.is_embedded:
        e = config.sector_manager.embedded
        lines.append(f"sector manager: embedded, miner {e.miner}, {e.sector_size} sectors, state_dir {e.state_dir}")
    else:
        sm = config.sector_manager
        failover = f", failing over to {', '.join(sm.fallback_addrs)} in this order" if sm.fallback_addrs else ""
        lines.append(f"sector manager: {sm.addr}{failover}")
    for t in config.sealing_threads:
        sizes = ", ".join(map(str, t.sealing.allowed_sizes)) if t.sealing.allowed_sizes is not None else "any"
        state = "ready" if location_problem(t.location, "") is None else f"NOT READY: {init_command(t.location)}"
        lines.append(f"thread {t.index}: plan {t.plan.value}, location {t.location} ({state}), sizes {sizes}")
    for s in config.attached:
        mode = "read-only" if s.readonly else "read-write"
        extra = ", created at start" if s.create and not s.location.exists() else ""
        lines.append(f"store {s.name}: {s.location} ({mode}{extra})")
    if config.metrics.enable:
        lines.append(f"metrics on {config.metrics.http_listen}")
    return lines
