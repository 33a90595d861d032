"""Our worker against our manager over damocles' `Venus.*` JSON-RPC only (issue 8).

The manager is a real `damocles-manager run --venus-listen` process with its farm token required;
the worker is a real `damocles-worker daemon` process whose `rpc_client.addr` is a multiaddr, so it
speaks nothing but `Venus.*` (and `/piecestore/`) to it. The test driver reads and steers the
manager over its gRPC API, as an operator's commands do.

One farm, shared by the tests below to keep to 2 C2 and 1 snap proof:
  phase 1: a sealer thread seals a deal sector (its piece downloaded from the manager's
           /piecestore/) and a CC sector; the worker is killed -9 mid-seal and restarted;
  phase 2: a snapup thread upgrades the CC sector (its piece from local_pieces_dirs, named by
           its CID as in damocles), then a rebuild thread re-creates the upgraded sector's lost files.
Every proof is verified by the manager (verify_seal, snap verify) before it is accepted.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from damocles_py.bench import write_random_piece
from damocles_py.manager.client import RemoteManager
from damocles_py.manager.db import HistoryRow, SectorRecord, Submission
from damocles_py.manager.interface import SectorId
from damocles_py.manager.venus.cid import commitment_to_cid
from damocles_py.store.layout import PersistLayout

from conftest import STARTUP_BUDGET, free_port, seal_budget, start_manager, wait_until, write_config

SEALER_FLOW = ["Empty", "Allocated", "DealsAcquired", "PieceAdded", "TreeDBuilt", "TicketAssigned", "PC1Done",
               "PC2Done", "PCSubmitted", "PCLanded", "Persisted", "PersistanceSubmitted", "SeedAssigned", "C1Done",
               "C2Done", "ProofSubmitted", "Finished"]
# Kill the worker while its sector waits on the manager (chain, seed) or runs C1: mid-seal, no C2 lost.
KILL_STATES = {"PCSubmitted", "PCLanded", "Persisted", "PersistanceSubmitted", "SeedAssigned", "C1Done"}


def sector_name(sid: SectorId) -> str:
    return f"s-t0{sid.miner}-{sid.number}"


def start_worker(cfg: Path, log: Path, sectors: int) -> subprocess.Popen:
    args = [sys.executable, "-m", "damocles_py.cli.worker", "daemon", "-c", str(cfg), "--log-level", "INFO",
            "--stop-after-sectors", str(sectors)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log, "ab"))


def run_cli(*args: str, timeout: float = STARTUP_BUDGET) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "damocles_py.cli.worker", *args], capture_output=True, text=True,
                          timeout=timeout)


def venus_config(root: Path, venus_addr: str, token: Path, store: Path, plans, **kwargs) -> Path:
    """A worker config whose manager is a damocles-manager (multiaddr), with the farm token."""
    cfg = write_config(root, plans=plans, manager_addr=venus_addr, store=store, **kwargs)
    text = cfg.read_text().replace(f'addr = "{venus_addr}"\n', f'addr = "{venus_addr}"\ntoken_file = "{token}"\n')
    cfg.write_text(text)
    return cfg


def thread_state(location: Path) -> str | None:
    import sqlite3

    db = location / "sealing.sqlite3"
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db, timeout=10) as conn:
            row = conn.execute("SELECT state FROM sectors WHERE done = 0 ORDER BY uid DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:  # tables not created yet
        return None
    return row[0] if row else None


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else f"({path} missing)"


@dataclass
class Farm:
    root: Path
    store: Path
    token: Path
    grpc_port: int
    venus_addr: str
    manager: subprocess.Popen
    client: RemoteManager
    # filled by the phases
    records: dict[int, SectorRecord] = field(default_factory=dict)
    history: dict[int, tuple[HistoryRow, ...]] = field(default_factory=dict)
    killed_in: str | None = None
    worker_config: Path | None = None  # phase 1's
    downloaded: list[Path] = field(default_factory=list)
    originals: dict[Path, bytes] = field(default_factory=dict)
    rebuilt: dict[Path, bytes] = field(default_factory=dict)
    snap_flow: list[str] = field(default_factory=list)
    rebuild_flow: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def manager(tmp_path_factory):
    root = tmp_path_factory.mktemp("venus-farm")
    store = root / "persist-a"
    store.mkdir()
    (root / "manager-pieces").mkdir()
    grpc_port, venus_port = free_port(), free_port()
    proc = start_manager(root, grpc_port, store, "--venus-listen", f"127.0.0.1:{venus_port}", auth=True)
    token = root / "manager-state" / "manager.token"
    client = RemoteManager(f"127.0.0.1:{grpc_port}", token_file=token)
    try:
        wait_until(lambda: port_open(venus_port), STARTUP_BUDGET, "the manager's Venus listener")
        yield Farm(root, store, token, grpc_port, f"/ip4/127.0.0.1/tcp/{venus_port}", proc, client)
    finally:
        client.close()
        proc.kill()
        proc.wait()


def _import_piece(farm: Farm, name: str, size: int) -> Path:
    """A deal for the manager: written as a dot file, renamed, then imported (commP computed)."""
    tmp = farm.root / "manager-pieces" / f".{name}"
    write_random_piece(tmp, size)
    path = tmp.with_name(name)
    tmp.rename(path)
    farm.client.import_pieces()
    return path


@pytest.fixture(scope="module")
def farm(manager: Farm) -> Farm:
    root = manager.root

    # phase 1: a deal sector and a CC sector, the worker killed -9 mid-seal once
    _import_piece(manager, "deal-a.bin", 1500)
    w1 = root / "worker-1"
    w1.mkdir()
    cfg = venus_config(w1, manager.venus_addr, manager.token, manager.store, ("sealer",),
                       sealing={"enable_deals": True}, name="venus-worker-1")
    location, log = w1 / "store" / "t0", w1 / "worker.log"
    manager.worker_config = cfg
    proc = start_worker(cfg, log, sectors=2)
    try:
        deadline = time.monotonic() + seal_budget(0) + STARTUP_BUDGET
        while manager.killed_in is None:
            state = thread_state(location)
            if state in KILL_STATES:
                os.kill(proc.pid, signal.SIGKILL)
                manager.killed_in = state
            assert proc.poll() is None or manager.killed_in, f"worker exited early:\n{tail(log)}"
            assert time.monotonic() < deadline, f"no sector reached {sorted(KILL_STATES)}:\n{tail(log)}"
            time.sleep(0.005)
        proc.wait()
        # the pieces the dead worker downloaded stay in its sector's scratch directory
        manager.downloaded = sorted((location / "data").glob("*/pieces/baga*"))
        proc = start_worker(cfg, log, sectors=2)
        assert proc.wait(timeout=seal_budget(3)) == 0, tail(log)
    finally:
        if proc.poll() is None:
            proc.kill()
    for number in (1, 2):
        record, history = manager.client.sector_with_history(SectorId(1000, number))
        manager.records[number], manager.history[number] = record, history

    # phase 2: the CC sector (2) snapped up with a local piece, then its lost files rebuilt
    deal_b = _import_piece(manager, "deal-b.bin", 2000)
    (free,) = [d for d in manager.client.deals() if d.sector is None]
    local = root / "local-pieces"
    local.mkdir()
    shutil.copyfile(deal_b, local / commitment_to_cid(free.deal.piece.commitment))
    w2 = root / "worker-2"
    w2.mkdir()
    cfg = venus_config(w2, manager.venus_addr, manager.token, manager.store, ("snapup", "rebuild"),
                       sealing={"enable_deals": True}, name="venus-worker-2",
                       worker={"local_pieces_dirs": [str(local)]})
    log = w2 / "worker.log"
    proc = start_worker(cfg, log, sectors=2)
    sid = SectorId(1000, 2)
    layout = PersistLayout(manager.store, sector_name(sid))
    try:
        def upgraded() -> bool:
            assert proc.poll() is None, f"worker exited early:\n{tail(log)}"
            upgrade = manager.client.sector(sid).upgrade
            return upgrade is not None and upgrade.state.value == "upgraded"

        wait_until(upgraded, seal_budget(1), "the CC sector upgraded over Venus")
        # the snap-up job reports itself finished before the sector is handed to a rebuild
        wait_until(lambda: thread_state(w2 / "store" / "t0") is None, STARTUP_BUDGET, "the snap-up job to end")
        manager.originals = {p: p.read_bytes() for p in (layout.sealed, layout.update, layout.cache / "p_aux",
                                                         layout.update_cache / "p_aux")}
        for path in (layout.sealed, layout.update):
            path.unlink()
        shutil.rmtree(layout.cache)
        shutil.rmtree(layout.update_cache)
        manager.client.request_rebuild(sid)
        assert proc.wait(timeout=seal_budget(1)) == 0, tail(log)
    finally:
        if proc.poll() is None:
            proc.kill()
    manager.rebuilt = {p: p.read_bytes() for p in manager.originals if p.exists()}
    record, history = manager.client.sector_with_history(sid)
    manager.records[2], manager.history[2] = record, history
    return manager


def _flow(history: tuple[HistoryRow, ...], since: int = 0) -> list[str]:
    rows = [h for h in history[since:] if not h.event.startswith("Failure")]
    return [rows[0].prev] + [h.next for h in rows]


# ---------------------------------------------------------------------------------------------
# start-up checks (no sealing)


def test_a_store_the_manager_does_not_know_stops_the_worker_at_start(manager, tmp_path):
    cfg = venus_config(tmp_path, manager.venus_addr, manager.token, manager.store, ("sealer",))
    with open(cfg, "a") as f:
        f.write(f'\n[[attached]]\nname = "persist-z"\nlocation = "{tmp_path / "z"}"\ncreate = true\n')
    done = run_cli("daemon", "-c", str(cfg))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "'persist-z' not found in the damocles-manager" in lines[0] and "persist stores" in lines[0]
    assert not (tmp_path / "z").exists() and not (tmp_path / "worker").exists()  # nothing created
    checked = run_cli("daemon", "-c", str(cfg), "--check")  # daemon --check asks the same, changing nothing
    out = checked.stdout + checked.stderr
    assert checked.returncode != 0 and "store 'persist-z' is not known to the damocles-manager" in out, out
    assert "'persist-a' is not known" not in out


def test_an_unreachable_manager_stops_the_worker_at_start(manager, tmp_path):
    cfg = venus_config(tmp_path, f"/ip4/127.0.0.1/tcp/{free_port()}", manager.token, manager.store, ("sealer",))
    done = run_cli("daemon", "-c", str(cfg))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "unreachable" in lines[0] and "start the damocles-manager" in lines[0]


# ---------------------------------------------------------------------------------------------
# the farm


def test_deal_and_cc_sectors_sealed_over_venus_and_verified(farm):
    deal_sector, cc_sector = farm.records[1], farm.records[2]
    for record in (deal_sector, cc_sector):
        assert record.finished and not record.aborted
        assert record.commit is not None and record.commit.state is Submission.Accepted  # verify_seal passed
        assert record.store == "persist-a"
    deals = {d.sector: d for d in farm.client.deals() if not d.for_upgrade}
    assert SectorId(1000, 1) in deals and SectorId(1000, 2) not in deals  # a deal sector, then CC


def test_state_reports_carry_damocles_state_names(farm):
    sealed = [h for h in farm.history[2] if h.worker.instance == "venus-worker-1"]
    assert _flow(tuple(sealed)) == SEALER_FLOW  # the CC sector: every step reported, in order
    # the sector in flight when the worker was killed: a report cut off by the kill is not sent again
    names = _flow(farm.history[1])
    assert [s for s in SEALER_FLOW if s in names] == names and len(set(SEALER_FLOW) - set(names)) <= 1
    assert {h.worker.instance for h in farm.history[1]} == {"venus-worker-1"}


def test_a_worker_killed_mid_seal_finishes_the_sector_after_restart(farm):
    assert farm.killed_in in KILL_STATES
    assert farm.records[1].finished  # the sector that was in flight
    assert farm.downloaded, "the deal's piece was not downloaded from the manager's /piecestore/"


def test_the_worker_pinged_the_manager_with_its_venus_admin_address(farm):
    from damocles_py.config.load import load_config

    port = load_config(farm.worker_config).worker.rpc_server.port
    (status,) = [w for w in farm.client.workers() if w.instance == "venus-worker-1"]
    assert status.last_ping is not None and status.dest == f"127.0.0.1:{port}"


def test_cc_sector_snapped_up_over_venus_with_a_verified_update_proof(farm):
    record = farm.records[2]
    assert record.upgrade is not None and record.upgrade.state.value == "upgraded"  # snap_verify passed
    upgrade_deals = [d for d in farm.client.deals() if d.sector == SectorId(1000, 2) and d.for_upgrade]
    assert len(upgrade_deals) == 1


def test_the_upgraded_sector_is_rebuilt_identically_over_venus(farm):
    assert farm.originals and farm.rebuilt == farm.originals
    assert farm.records[2].rebuild is None  # the rebuild request is done
    flow = [h.next for h in farm.history[2]]
    assert flow[-6:] == ["SnapPieceAdded", "SnapTreeDBuilt", "SnapEncoded", "SnapDone", "Persisted", "Finished"]
