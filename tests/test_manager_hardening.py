"""The manager's side of issue 7: allocation safe to repeat, poison deals quarantined, work handed
only to workers that reach its store, an authenticated API with ownership checks, rebuild aborts
that end the request, and `damocles-manager run --check`.

Everything runs against the real EmbeddedManager (SQLite file, real commP and proof checks) and,
where the item is about the network, the real gRPC server or a real `damocles-manager run`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import free_port, start_manager

from damocles_py.config.schema import EmbeddedManagerConfig
from damocles_py.manager.client import RemoteManager
from damocles_py.manager.embedded import EmbeddedManager
from damocles_py.manager.interface import AllocateSpec, SectorId, StoreInfo, WorkerRef
from damocles_py.proofs import SectorSize

MINER = 1000
WORKER = WorkerRef("worker-a", 0, "/sealing/0")


class FakeClock:
    """The manager's clock, moved by the test (a simulated chain needs no real waiting)."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_manager(root: Path, clock=None, stores=(), **settings) -> EmbeddedManager:
    (root / "pieces").mkdir(parents=True, exist_ok=True)
    config = EmbeddedManagerConfig(miner=MINER, sector_size=SectorSize(2048), state_dir=root / "manager",
                                   pieces_dir=root / "pieces", block_time=1.0, pre_commit_delay_epochs=1,
                                   **settings)
    return EmbeddedManager(config, list(stores), clock=clock or FakeClock(), piece_scan_interval=None)


# ---------------------------------------------------------------------------------------------
# 10. allocation is safe to repeat


def test_a_thread_asking_again_gets_the_sector_it_holds(tmp_path):
    m = make_manager(tmp_path)
    try:
        first = m.allocate_sector(AllocateSpec(), WORKER)
        assert m.allocate_sector(AllocateSpec(), WORKER) == first  # the answer was lost: the same sector
        other = m.allocate_sector(AllocateSpec(), replace(WORKER, thread=1))
        assert other.id == SectorId(MINER, 2)
        # once the thread reports the sector done, it gets a new one
        m.report_aborted(first.id, "abort: PC1Failed: gave up", worker=WORKER)
        assert m.allocate_sector(AllocateSpec(), WORKER).id == SectorId(MINER, 3)
    finally:
        m.close()


_ALLOCATE_THEN_DIE = textwrap.dedent("""
    import os, signal, sys
    from damocles_py.manager.client import RemoteManager
    from damocles_py.manager.interface import AllocateSpec, WorkerRef
    client = RemoteManager(sys.argv[1], timeout=10, token_file=sys.argv[2] or None)
    client.allocate_sector(AllocateSpec(), WorkerRef("worker-a", 0, "/sealing/0"))
    os.kill(os.getpid(), signal.SIGKILL)  # killed before it could save what it was given
""")


def test_a_worker_killed_after_allocation_gets_the_same_sector_over_grpc(tmp_path):
    """A real `damocles-manager run`; a real process allocates, then dies with SIGKILL before it
    saved the answer. The same thread, asking again, gets that sector; another thread does not."""
    port = free_port()
    store = tmp_path / "persist-a"
    store.mkdir()
    manager = start_manager(tmp_path, port, store, auth=True)
    token = tmp_path / "manager-state" / "manager.token"
    try:
        died = subprocess.run([sys.executable, "-c", _ALLOCATE_THEN_DIE, f"127.0.0.1:{port}", str(token)],
                              capture_output=True, text=True, timeout=60)
        assert died.returncode == -signal.SIGKILL, died.stderr
        with RemoteManager(f"127.0.0.1:{port}", timeout=10, token_file=token) as client:
            (lost,) = client.sectors()
            assert lost.holder == WORKER and not lost.finished and not lost.aborted
            assert client.allocate_sector(AllocateSpec(), WORKER).id == lost.id
            assert client.allocate_sector(AllocateSpec(), WORKER).id == lost.id  # and again
            assert client.allocate_sector(AllocateSpec(), replace(WORKER, thread=1)).id == SectorId(MINER, 2)
            assert len(client.sectors()) == 2  # nothing stranded, nothing allocated twice
    finally:
        manager.kill()
        manager.wait()
