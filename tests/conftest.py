"""Shared helpers: write a real sealing.toml, run a real daemon (in-process or as a process), wait.

Timing policy (issue 7, item 20): no test outcome may depend on how fast this machine is. A 2KiB C2
takes ~50 s on the 2-core box; the suite must pass with it 3x slower (a busy core, CI neighbours).
- Chain windows are counted in epochs of the simulated chain, so they are made so long (days of
  wall time) that no ticket or seed expires unless a test asks for it; a test about expiry sets
  its own block time and windows so that expiry is certain, not a race.
- Every wait polls fast and has a deadline far beyond the slow case: a passing test returns as
  soon as the condition holds, only a failing one waits the whole deadline. Budget waits with
  `seal_budget(n)`, for anything that needs `n` C2 runs (in series) to happen first.
- Retry budgets that must outlast a manager restart (a Python process start, slow under load)
  allow at least ~10 s.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from damocles_py.config.load import load_config
from damocles_py.config.schema import Config
from damocles_py.manager.client import RemoteManager
from damocles_py.store.location import init_location
from pg import pg_server, pg_url  # noqa: F401 - the real PostgreSQL fixtures (tests/pg.py)


# A 2KiB C2 takes 50-60 s on an idle 2-core box; its budget is 5x that: the suite runs beside
# other C2s (a run at load 11 took a two-worker farm test past a 460 s budget).
C2_BUDGET = 300.0
# Long enough that no ticket or seed expires in any test that does not ask for it
# (10**6 epochs of the tests' 0.2 s blocks: more than two days).
CHAIN_WINDOW_EPOCHS = 10**6
# Starting a process (Python imports, gRPC server up), taking a pause, the cheap stages.
STARTUP_BUDGET = 60.0


def seal_budget(c2_runs: int = 1) -> float:
    """How long to wait for something that needs `c2_runs` C2 runs in series to happen first."""
    return STARTUP_BUDGET + c2_runs * C2_BUDGET


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"' + str(v) + '"'


def write_config(root: Path, plans=("sealer",), sealing=None, embedded=None, manager_addr=None,
                 thread_sealing=None, metrics_port=None, name="test-worker", store: Path | None = None,
                 worker=None, processors: str | None = None) -> Path:
    """A sealing.toml under `root` with fast intervals, one persist store and the given threads.

    `processors`: raw TOML appended as is (`[processors.*]` sections)."""
    sealing = {"seal_interval": "0.2s", "recover_interval": "0.5s", "rpc_polling_interval": "0.2s",
               "max_retries": 3, **(sealing or {})}
    embedded = {"miner": 1000, "sector_size": "2KiB", "state_dir": "./manager", "pieces_dir": "./pieces",
                "block_time": "0.2s", "pre_commit_delay_epochs": 1, "ticket_expiry_epochs": CHAIN_WINDOW_EPOCHS,
                "seed_expiry_epochs": CHAIN_WINDOW_EPOCHS, **(embedded or {})}
    worker_keys = "".join(f"{k} = {toml_value(v)}\n" for k, v in (worker or {}).items())
    lines = [f'[worker]\nname = "{name}"\nstate_dir = "./worker"\n{worker_keys}',
             f'[worker.rpc_server]\nhost = "127.0.0.1"\nport = {free_port()}\n',
             f'[worker.admin_server]\nhost = "127.0.0.1"\nport = {free_port()}\n']
    if manager_addr:
        lines.append(f'[sector_manager]\nrpc_timeout = "10s"\n[sector_manager.rpc_client]\naddr = "{manager_addr}"\n')
    else:
        lines.append("[sector_manager.embedded]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in embedded.items()))
    lines.append("[sealing]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in sealing.items()))
    for i, plan in enumerate(plans):
        lines.append(f'[[sealing_thread]]\nlocation = "./store/t{i}"\nplan = "{plan}"\n')
        init_location(root / "store" / f"t{i}")  # as an operator does: store sealing-init
        overrides = (thread_sealing or {}).get(i)
        if overrides:
            lines.append("[sealing_thread.sealing]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in overrides.items()))
    lines.append(f'[[attached]]\nname = "persist-a"\nlocation = "{store or "./persist/a"}"\ncreate = true\n')
    if metrics_port:
        lines.append(f'[metrics]\nenable = true\nhttp_listen = "127.0.0.1:{metrics_port}"\n')
    if processors:
        lines.append(processors)
    (root / "pieces").mkdir(exist_ok=True)
    path = root / "sealing.toml"
    path.write_text("\n".join(lines))
    return path


def start_manager(root: Path, port: int, store: Path, *extra: str, auth: bool = False) -> subprocess.Popen:
    """A real `damocles-manager run` process on loopback, its state and log under `root`.

    `auth`: require the farm token (written to root/manager-state/manager.token); else --no-auth."""
    state = root / "manager-state"
    state.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "damocles_py.cli.manager", "run", "--state-dir", str(state),
         "--listen", f"127.0.0.1:{port}", "--block-time", "0.2s", "--pre-commit-delay-epochs", "1",
         "--pieces-dir", str(root / "manager-pieces"), "--store", f"persist-a={store}", "--log-level", "WARNING",
         "--ticket-expiry-epochs", str(CHAIN_WINDOW_EPOCHS), "--seed-expiry-epochs", str(CHAIN_WINDOW_EPOCHS),
         *([] if auth else ["--no-auth"]), *extra],
        stdout=subprocess.DEVNULL, stderr=open(root / "manager.log", "ab"))
    client = RemoteManager(f"127.0.0.1:{port}", timeout=1)

    def serving() -> bool:
        if proc.poll() is not None:
            log = (root / "manager.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"damocles-manager exited with {proc.returncode}:\n{log}")
        return _answers(client)

    try:
        wait_until(serving, STARTUP_BUDGET, "the manager to serve")
    finally:
        client.close()
    return proc


def _answers(client: RemoteManager) -> bool:
    try:
        client.sectors()
        return True
    except Exception:
        return False


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def daemon_factory():
    """Start in-process WorkerDaemons; all are stopped at the end of the test."""
    from damocles_py.daemon import WorkerDaemon

    started: list[WorkerDaemon] = []

    def start(config_path: Path, **kwargs) -> WorkerDaemon:
        """kwargs go to WorkerDaemon; pass max_sectors so no C2 is left running at teardown."""
        config: Config = load_config(config_path)
        daemon = WorkerDaemon(config, **kwargs)
        daemon.start()
        started.append(daemon)
        return daemon

    yield start
    for d in started:
        d.stop(timeout=C2_BUDGET)  # a thread stops at its next stage boundary: after a C2 at worst


def worker_cli(*args, check=True, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "damocles_py.cli.worker", *args],
                          capture_output=True, text=True, check=check, timeout=timeout)


def thread_db_rows(location: Path, sql: str, args=()) -> list[tuple]:
    """Rows of a query on a thread's database, read from outside its daemon ([] if it has none yet).

    A plain connection, not `mode=ro`: a read-only one cannot open a WAL database whose daemon was
    killed and left no shared-memory file, and would then look empty."""
    import sqlite3

    db = location / "sealing.sqlite3"
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):  # the daemon has not created its tables yet
            return []
        raise
    finally:
        conn.close()
