"""A worker naming several managers (`rpc_client.addr = [...]`, issue 10): its client fails over to
the next address when the one in use cannot serve a call, goes back to the preferred one when it
is back, never re-sends a call a manager refused, and a sealing daemon loses nothing when its
manager is SIGKILLed mid-seal. All managers are real `damocles-manager run` processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from damocles_py.config.load import ConfigError, load_config
from damocles_py.manager.client import RemoteManager
from damocles_py.manager.db import Submission
from damocles_py.manager.interface import (AllocateSpec, ManagerRequestError, ManagerUnavailable, StateReport,
                                           WorkerPing, WorkerRef)

from conftest import (STARTUP_BUDGET, free_port, seal_budget, start_manager, thread_db_rows, wait_until,
                      write_config)


def with_addrs(cfg: Path, addrs: str) -> Path:
    """`cfg` (written with one manager address) naming `addrs` (a TOML value) instead."""
    text = cfg.read_text()
    start = text.index("addr = ")
    end = text.index("\n", start)
    cfg.write_text(text[:start] + f"addr = {addrs}" + text[end:])
    return cfg


def dead_addr() -> str:
    """A loopback address nobody listens on (connections are refused)."""
    return f"127.0.0.1:{free_port()}"


def manager_root(tmp_path: Path, name: str) -> tuple[Path, Path]:
    root = tmp_path / name
    store = tmp_path / "persist-a"
    (root / "manager-pieces").mkdir(parents=True)
    store.mkdir(exist_ok=True)
    return root, store


# ---------------------------------------------------------------------------------------------
# config


def test_one_address_or_several_in_order(tmp_path):
    cfg = write_config(tmp_path, manager_addr="127.0.0.1:1789")
    assert load_config(cfg).sector_manager.addrs == ("127.0.0.1:1789",)
    sm = load_config(with_addrs(cfg, '["10.0.0.1:1789", "10.0.0.2:1789", "[::1]:1789"]')).sector_manager
    assert sm.addr == "10.0.0.1:1789" and sm.fallback_addrs == ("10.0.0.2:1789", "[::1]:1789")
    assert not sm.is_venus and not sm.is_embedded


@pytest.mark.parametrize("addrs, problem", [
    ("[]", "sector_manager.rpc_client.addr: an empty array names no sector manager. Fix: write one address"),
    ('["10.0.0.1:1789", "10.0.0.1:1789"]', "addr[1]: '10.0.0.1:1789' is listed twice. Fix: list each manager once"),
    ('["10.0.0.1:1789", "/ip4/10.0.0.2/tcp/1789"]',
     "addr[1]: '/ip4/10.0.0.2/tcp/1789' is a damocles-manager (Venus) address; failover between several "
     "addresses is for our managers (gRPC host:port) only"),
    ('["10.0.0.1:1789", "10.0.0.2"]', 'addr[1]: expected a host:port address, got "10.0.0.2" (a string)'),
    ('["10.0.0.1:1789", 1789]', "addr[1]: expected a host:port address, got 1789 (an integer)"),
])
def test_bad_address_lists_are_one_line(tmp_path, addrs, problem):
    cfg = with_addrs(write_config(tmp_path, manager_addr="127.0.0.1:1789"), addrs)
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert problem in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------
# the client, against manager processes


def pinged(addr: str, instance: str) -> bool:
    """Whether the manager at `addr` recorded a ping of `instance` (asked of that manager alone)."""
    with RemoteManager(addr, timeout=5) as one:
        return any(w.instance == instance for w in one.workers())


def test_client_fails_over_and_goes_back_to_the_preferred_manager(tmp_path):
    # Two managers with their own state: which one served a call shows in its own ping records.
    # (A farm's managers share one database; the client's choice of address is what is tested here.)
    (root_a, store), (root_b, _) = manager_root(tmp_path, "a"), manager_root(tmp_path, "b")
    port_a, port_b = free_port(), free_port()
    addr_a, addr_b = f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"
    a, b = start_manager(root_a, port_a, store), start_manager(root_b, port_b, store)
    client = RemoteManager([addr_a, addr_b], timeout=5, failback_after=1.0)
    try:
        client.worker_ping(WorkerPing("w-first"))
        assert pinged(addr_a, "w-first") and not pinged(addr_b, "w-first") and client.addr == addr_a

        a.send_signal(signal.SIGKILL)
        a.wait()
        client.worker_ping(WorkerPing("w-failed-over"))  # the same call, served by b: no error
        failed_over = time.monotonic()
        assert pinged(addr_b, "w-failed-over") and client.addr == addr_b
        client.worker_ping(WorkerPing("w-stays"))  # remembered: a is not tried first any more
        assert pinged(addr_b, "w-stays")

        a = start_manager(root_a, port_a, store)  # back on its address
        n = iter(range(10**6))

        def back_on_a() -> bool:
            instance = f"w-back-{next(n)}"
            client.worker_ping(WorkerPing(instance))
            return pinged(addr_a, instance)

        wait_until(back_on_a, STARTUP_BUDGET, "calls to go back to the preferred manager", interval=0.2)
        assert client.addr == addr_a and time.monotonic() - failed_over >= 1.0  # not before failback_after

        # a refusal is an answer: b knows this sector, a does not, and the report is not sent to b
        holder = WorkerRef("w-refused", 0, "/sealing/0")
        with RemoteManager(addr_b, timeout=5) as only_b:
            sector = only_b.allocate_sector(AllocateSpec(), holder)
            rows = len(only_b.history(sector.id))
            with pytest.raises(ManagerRequestError, match=f"unknown sector {sector.id}"):
                client.report_state(sector.id, StateReport(holder, "Empty", "Allocated", "Allocate"))
            assert len(only_b.history(sector.id)) == rows

        for p in (a, b):
            p.send_signal(signal.SIGKILL)
            p.wait()
        with pytest.raises(ManagerUnavailable) as e:  # every address tried once, each named
            client.workers()
        assert f"{addr_a} unavailable (ListWorkers: UNAVAILABLE)" in str(e.value)
        assert f"{addr_b} unavailable (ListWorkers: UNAVAILABLE)" in str(e.value)
    finally:
        client.close()
        for p in (a, b):
            p.kill()


def test_a_frozen_manager_costs_one_timeout_not_one_per_call(tmp_path):
    """A manager that accepts connections but never answers (SIGSTOPped): the call waits out its
    timeout once, is served by the next manager, and later calls go there at once."""
    (root_a, store), (root_b, _) = manager_root(tmp_path, "a"), manager_root(tmp_path, "b")
    port_a, port_b = free_port(), free_port()
    addr_a, addr_b = f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"
    a, b = start_manager(root_a, port_a, store), start_manager(root_b, port_b, store)
    client = RemoteManager([addr_a, addr_b], timeout=2)
    try:
        client.worker_ping(WorkerPing("w-before"))  # connected to a
        a.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        client.worker_ping(WorkerPing("w-frozen"))
        assert 2 <= time.monotonic() - started < STARTUP_BUDGET and client.addr == addr_b
        assert pinged(addr_b, "w-frozen")
        started = time.monotonic()
        for i in range(3):
            client.worker_ping(WorkerPing(f"w-after-{i}"))
        assert time.monotonic() - started < 2  # not a timeout each: a is not tried again yet
        assert all(pinged(addr_b, f"w-after-{i}") for i in range(3))
    finally:
        client.close()
        for p in (a, b):
            p.kill()
            p.wait()


# ---------------------------------------------------------------------------------------------
# the worker daemon


def test_worker_starts_with_its_first_manager_down(tmp_path, daemon_factory):
    root, store = manager_root(tmp_path, "m")
    port = free_port()
    # seeds come only after 10**5 epochs: the sector waits, interruptibly, and no C2 runs here
    manager = start_manager(root, port, store, "--pre-commit-delay-epochs", "100000")
    dead = dead_addr()
    (tmp_path / "w").mkdir()
    cfg = with_addrs(write_config(tmp_path / "w", manager_addr="x:1", store=store, name="w-failover"),
                     f'["{dead}", "127.0.0.1:{port}"]')
    try:
        out = subprocess.run([sys.executable, "-m", "damocles_py.cli.worker", "daemon", "--check", "-c", str(cfg)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"sector manager: {dead}, failing over to 127.0.0.1:{port} in this order" in out.stdout
        assert f"warning: the sector manager at {dead} does not answer" in out.stdout

        daemon = daemon_factory(cfg, max_sectors=1)
        with RemoteManager(f"127.0.0.1:{port}", timeout=5) as live:
            (record,) = wait_until(lambda: [r for r in live.sectors() if r.pre_commit is not None],
                                   STARTUP_BUDGET, "the sector's pre-commit to reach the second manager")
            assert record.holder.instance == "w-failover" and record.pre_commit.state is Submission.Accepted
        assert daemon.manager.addr == f"127.0.0.1:{port}"
        # the failover happened inside the calls: the thread never saw the manager unreachable
        location = tmp_path / "w" / "store" / "t0"
        assert thread_db_rows(location, "SELECT 1 FROM history WHERE failure_cause = 'ManagerUnreachable'") == []
    finally:
        manager.kill()


def test_check_names_every_manager_when_none_answers(tmp_path):
    dead = [dead_addr(), dead_addr()]
    cfg = with_addrs(write_config(tmp_path, manager_addr="x:1"), f'["{dead[0]}", "{dead[1]}"]')
    out = subprocess.run([sys.executable, "-m", "damocles_py.cli.worker", "daemon", "--check", "-c", str(cfg)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    for addr in dead:
        assert f"problem: the sector manager at {addr} does not answer" in out.stdout


# ---------------------------------------------------------------------------------------------
# sealing through a manager SIGKILLed mid-seal


def start_worker(cfg: Path, log: Path, sectors: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "damocles_py.cli.worker", "daemon", "-c", str(cfg),
                             "--log-level", "WARNING", "--stop-after-sectors", str(sectors)],
                            stdout=subprocess.DEVNULL, stderr=open(log, "ab"))


def test_sectors_finish_on_the_other_manager_when_one_is_killed_mid_seal(tmp_path, pg_url):
    """Two managers on one PostgreSQL database, one farm token; one daemon, two sealing threads, one
    2KiB sector each (two C2s). The manager in use is SIGKILLed once both sectors are pre-committed
    and is not restarted: both sectors finish against the other, which verifies both proofs, and
    the threads never saw the manager unreachable (every call was re-sent within itself)."""
    (root_a, store), (root_b, _) = manager_root(tmp_path, "a"), manager_root(tmp_path, "b")
    port_a, port_b = free_port(), free_port()
    addr_a, addr_b = f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"
    token = tmp_path / "farm.token"  # created by the first manager, used by both and by the worker
    shared = ("--db", pg_url, "--token-file", str(token))
    a = start_manager(root_a, port_a, store, *shared, auth=True)
    b = start_manager(root_b, port_b, store, *shared, auth=True)
    (tmp_path / "w").mkdir()
    cfg = with_addrs(write_config(tmp_path / "w", plans=("sealer", "sealer"), manager_addr="x:1", store=store,
                                  name="w", sealing={"max_retries": 30, "recover_interval": "1s"}),
                     f'["{addr_a}", "{addr_b}"]\ntoken_file = "{token}"')
    log = tmp_path / "w" / "worker.log"
    worker = start_worker(cfg, log, sectors=2)
    try:
        print("sealing two 2KiB sectors (two C2s, a few minutes)...")
        with RemoteManager(addr_a, timeout=5) as first:
            wait_until(lambda: len([r for r in first.sectors() if r.pre_commit is not None]) == 2,
                       STARTUP_BUDGET, "both sectors to be pre-committed through the first manager")
        a.send_signal(signal.SIGKILL)
        a.wait()
        try:
            # the two C2s may run one after the other (one process); a third of budget for a loaded box
            assert worker.wait(timeout=seal_budget(3)) == 0, log.read_text()[-3000:]
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not finish its two sectors:\n{log.read_text()[-3000:]}") from None
        with RemoteManager(addr_b, timeout=5) as survivor:
            records = survivor.sectors()
            assert sorted(r.id.number for r in records) == [1, 2]  # nothing allocated twice
            assert {(r.holder.instance, r.holder.thread) for r in records} == {("w", 0), ("w", 1)}
            for r in records:  # finished only with a proof the manager verified
                assert r.finished and not r.aborted and r.commit.state is Submission.Accepted
                assert r.store == "persist-a"
        assert f"failing over to the sector manager at {addr_b}" in log.read_text()
        outage = "SELECT 1 FROM history WHERE failure_cause = 'ManagerUnreachable'"
        for t in (0, 1):
            assert thread_db_rows(tmp_path / "w" / "store" / f"t{t}", outage) == []
    finally:
        worker.kill()
        for p in (a, b):
            p.kill()
