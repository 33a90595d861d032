"""Failure handling through the daemon: a manager outage (a real gRPC manager process killed and
restarted), a ticket that expires, and configs that must not start."""

from __future__ import annotations

import signal

from damocles_py.admin.client import AdminClient
from damocles_py.manager.client import RemoteManager
from damocles_py.manager.interface import SectorId

from conftest import STARTUP_BUDGET, free_port, seal_budget, start_manager, wait_until, worker_cli, write_config


def failure_cause(thread) -> str | None:
    f = thread.status.last_failure
    return f.cause.name if f else None


def test_manager_outage_within_budget_is_survived_longer_one_pauses(tmp_path, daemon_factory):
    port = free_port()
    store = tmp_path / "persist" / "a"
    store.mkdir(parents=True)
    manager = start_manager(tmp_path, port, store)
    # a budget of 3 retries 4 s apart outlasts a manager restart (a Python process start) on a slow machine
    cfg = write_config(tmp_path, manager_addr=f"127.0.0.1:{port}",
                       sealing={"max_retries": 3, "recover_interval": "4s"})
    daemon = daemon_factory(cfg, max_sectors=2)
    thread = daemon.threads[0]
    try:
        # a short outage: the thread retries (temporary failure) and carries on once it is back
        wait_until(lambda: thread.status.sector_id == "1000-1", STARTUP_BUDGET, "the first sector")
        manager.send_signal(signal.SIGKILL)
        manager.wait()
        wait_until(lambda: failure_cause(thread) == "ManagerUnreachable", seal_budget(1), "a ManagerUnreachable retry")
        assert thread.status.thread_state != "paused"
        manager = start_manager(tmp_path, port, store)
        wait_until(lambda: thread.status.sector_id == "1000-2", seal_budget(1), "sector 1 to finish")
        client = RemoteManager(f"127.0.0.1:{port}")
        assert client.sector(SectorId(1000, 1)).finished

        # a long outage: after max_retries the thread pauses with the cause, until resumed
        manager.send_signal(signal.SIGKILL)
        manager.wait()
        wait_until(lambda: thread.status.thread_state == "paused", seal_budget(1), "the thread to pause")
        assert failure_cause(thread) == "ManagerUnreachable"
        assert "still failing after 3 retries" in thread.status.last_failure.detail
        manager = start_manager(tmp_path, port, store)
        assert AdminClient(daemon.config.worker.admin_server.address, daemon.token).resume(0).accepted
        wait_until(lambda: client.sector(SectorId(1000, 2)).finished, seal_budget(1), "sector 2 to finish")
        client.close()
    finally:
        manager.kill()
        manager.wait()


def test_expired_ticket_pauses_and_rewinding_to_tree_d_built_recovers(tmp_path, daemon_factory):
    # epochs of 0.1 ms and a ticket valid for one: stale by the time PC2 is done, however fast the
    # machine (PC1, PC2 and their database writes take milliseconds); the seed's window is 28 hours
    cfg = write_config(tmp_path, embedded={"block_time": "0.0001s", "ticket_expiry_epochs": 1, "seed_expiry_epochs": 10**9})
    daemon = daemon_factory(cfg, max_sectors=1)
    thread = daemon.threads[0]
    wait_until(lambda: thread.status.thread_state == "paused", 2 * STARTUP_BUDGET, "the thread to pause")
    assert failure_cause(thread) == "TicketExpired"
    assert thread.status.state == "PC2Done"
    daemon.stop()

    # the operator gives tickets a sane validity and restarts: the thread is still paused, with its cause
    cfg = write_config(tmp_path, embedded={"block_time": "0.0001s", "ticket_expiry_epochs": 10**8, "seed_expiry_epochs": 10**9})
    daemon = daemon_factory(cfg, max_sectors=1)
    thread = daemon.threads[0]
    wait_until(lambda: thread.status.thread_state == "paused", STARTUP_BUDGET, "the restored pause")
    assert failure_cause(thread) == "TicketExpired"
    out = worker_cli("worker", "resume", "-c", str(cfg), "--index", "0", "--state", "TreeDBuilt").stdout
    assert "resumed at TreeDBuilt" in out
    wait_until(lambda: daemon.manager.sector(SectorId(1000, 1)).finished, seal_budget(1), "the sector to finish")
    tickets = [h for h in daemon.manager.history(SectorId(1000, 1)) if h.next == "TicketAssigned"]
    assert len(tickets) == 2  # a fresh ticket after the rewind


def test_invalid_configs_stop_the_daemon_with_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    cases = {
        '[sealing]\nmax_retires = 3\n[[sealing_thread]]\nlocation = "./t"\n': "did you mean `max_retries`",
        '[[sealing_thread]]\nlocation = "./t"\nplan = "sealr"\n': "sealing_thread[0].plan",
        '[[sealing_thread]]\nplan = "sealer"\n': "sealing_thread[0].location",
        '[sealing]\nmax_retries = "five"\n[[sealing_thread]]\nlocation = "./t"\n': "sealing.max_retries",
    }
    for text, expected in cases.items():
        bad.write_text(text)
        result = worker_cli("daemon", "-c", str(bad), check=False)
        assert result.returncode == 2
        assert expected in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "t").exists()  # no thread started
