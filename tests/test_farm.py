"""A farm: one standalone manager and worker processes on loopback, all real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from damocles_py.manager.client import RemoteManager
from damocles_py.manager.db import Submission
from damocles_py.manager.interface import SectorId

from conftest import (STARTUP_BUDGET, free_port, seal_budget, start_manager, thread_db_rows, wait_until, worker_cli,
                      write_config)


def start_worker(cfg: Path, log: Path, sectors: int | None = None) -> subprocess.Popen:
    args = [sys.executable, "-m", "damocles_py.cli.worker", "daemon", "-c", str(cfg), "--log-level", "WARNING"]
    if sectors:
        args += ["--stop-after-sectors", str(sectors)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log, "ab"))


def farm(tmp_path: Path, workers: int, **config):
    port = free_port()
    store = tmp_path / "persist-a"
    store.mkdir()
    (tmp_path / "manager-pieces").mkdir()
    manager = start_manager(tmp_path, port, store)
    configs = []
    for i in range(workers):
        root = tmp_path / f"worker-{i}"
        root.mkdir()
        configs.append(write_config(root, plans=("sealer",), manager_addr=f"127.0.0.1:{port}", store=store,
                                    name=f"worker-{i}", **config))
    return port, store, manager, configs


def test_two_workers_share_one_manager(tmp_path):
    port, store, manager, configs = farm(tmp_path, 2)
    procs = [start_worker(cfg, cfg.parent / "worker.log", sectors=2) for cfg in configs]
    try:
        for p, cfg in zip(procs, configs):
            # each worker seals 2 sectors in series, both workers on 2 cores: 4 C2s of budget
            assert p.wait(timeout=seal_budget(4)) == 0, (cfg.parent / "worker.log").read_text()[-2000:]
        client = RemoteManager(f"127.0.0.1:{port}")
        records = client.sectors()
        numbers = [r.id.number for r in records]
        assert sorted(numbers) == list(range(1, 5))  # 4 sectors, no number twice
        holders = {r.holder.instance for r in records}
        assert holders == {"worker-0", "worker-1"}
        for r in records:
            assert r.finished and r.commit.state is Submission.Accepted  # verified by the manager
        client.close()
    finally:
        for p in procs:
            p.kill()
        manager.kill()


def test_manager_restart_mid_seal_loses_nothing(tmp_path):
    # a retry budget of 30 s outlasts a manager restart on a slow machine; the chain windows of
    # start_manager outlast any C2, so the sectors cannot expire while the manager is down
    port, store, manager, configs = farm(tmp_path, 2, sealing={"max_retries": 30, "recover_interval": "1s"})
    procs = [start_worker(cfg, cfg.parent / "worker.log", sectors=1) for cfg in configs]
    try:
        client = RemoteManager(f"127.0.0.1:{port}", timeout=2)
        wait_until(lambda: len(client.sectors()) == 2, STARTUP_BUDGET, "both workers to hold a sector")
        client.close()
        manager.send_signal(signal.SIGKILL)
        manager.wait()
        # both workers hit the outage and retry (in their first cheap stages, before any C2)
        locations = [cfg.parent / "store" / "t0" for cfg in configs]
        outage = "SELECT 1 FROM history WHERE failure_cause = 'ManagerUnreachable'"
        wait_until(lambda: all(thread_db_rows(loc, outage) for loc in locations), seal_budget(1),
                   "both workers to retry a ManagerUnreachable failure")  # a worker may be in C2 first
        manager = start_manager(tmp_path, port, store)
        for p, cfg in zip(procs, configs):
            assert p.wait(timeout=seal_budget(2)) == 0, (cfg.parent / "worker.log").read_text()[-2000:]
        client = RemoteManager(f"127.0.0.1:{port}")
        records = client.sectors()
        assert len(records) == 2 and all(r.finished and r.commit.state is Submission.Accepted for r in records)
        client.close()
    finally:
        for p in procs:
            p.kill()
        manager.kill()


def test_piece_commitment_mismatch_shows_cause_level_and_logs(tmp_path, daemon_factory):
    """A deal whose piece data changed after the deal was made: the sector is aborted with a named
    cause, and `sector debug --logs` shows the cause, its level and the stage's log lines."""
    from damocles_py.config.load import load_config
    from damocles_py.manager.embedded import EmbeddedManager
    from damocles_py.manager.interface import StoreInfo
    from damocles_py.bench import write_random_piece

    cfg = write_config(tmp_path, sealing={"enable_deals": True})
    piece = write_random_piece(tmp_path / "pieces" / "deal.bin", 1500)
    config = load_config(cfg)
    manager = EmbeddedManager(config.sector_manager.embedded, [StoreInfo("persist-a", str(tmp_path / "persist/a"))])
    (deal,) = [r.deal for r in manager.deals()]  # imported at start: the deal's commP is fixed now
    manager.close()
    data = bytearray(piece.read_bytes())
    data[100] ^= 0xFF  # the piece file is then corrupted
    piece.write_bytes(bytes(data))

    daemon = daemon_factory(cfg, max_sectors=1)
    wait_until(lambda: daemon.manager.sector(SectorId(1000, 1)) and daemon.manager.sector(SectorId(1000, 1)).aborted,
               STARTUP_BUDGET, "the sector to be aborted")
    assert daemon.manager.deals()[0].sector is None  # the deal went back to the pool
    out = worker_cli("sector", "debug", "1000-1", "--logs", "-c", str(cfg)).stdout
    assert "failure: PieceCommitmentMismatch [abort]" in out
    assert "meaning: The piece data's commitment (commP) differs from the deal's piece CID." in out
    assert "DealsAcquired --Abort--> Aborted" in out
    assert "add_pieces: start" in out and "add_pieces: failed" in out  # the stage's own log lines
    assert f"deal {deal.deal_id}: piece" in out


def test_a_stopped_worker_is_marked_lost(tmp_path):
    port = free_port()
    store = tmp_path / "persist-a"
    store.mkdir()
    (tmp_path / "manager-pieces").mkdir()
    manager = start_manager(tmp_path, port, store, "--worker-timeout", "2s")
    (tmp_path / "w").mkdir()
    cfg = write_config(tmp_path / "w", plans=("sealer",), manager_addr=f"127.0.0.1:{port}", store=store,
                       name="worker-x", worker={"ping_interval": "0.3s"})
    worker = start_worker(cfg, tmp_path / "worker.log")
    client = RemoteManager(f"127.0.0.1:{port}")
    try:
        alive = lambda: [w for w in client.workers() if w.instance == "worker-x" and not w.lost and w.sectors]
        wait_until(alive, STARTUP_BUDGET, "the worker to be alive and hold a sector")
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        (status,) = wait_until(lambda: [w for w in client.workers() if w.instance == "worker-x" and w.lost],
                               STARTUP_BUDGET, "the worker to be marked lost")
        (held,) = status.sectors[:1]
        debug = client.sector_debug(held)
        assert debug.holder.instance == "worker-x" and debug.holder.lost
        out = subprocess.run([sys.executable, "-m", "damocles_py.cli.manager", "sector", "debug", str(held),
                              "--addr", f"127.0.0.1:{port}"], capture_output=True, text=True, check=True).stdout
        assert "LOST" in out and "worker-x" in out
    finally:
        client.close()
        worker.kill()
        manager.kill()
