"""Sealing threads end to end: real 2KiB seals through the daemon with the embedded manager."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from damocles_py.admin.client import AdminClient
from damocles_py.bench import write_random_piece
from damocles_py.errors import UserError
from damocles_py.fsm.states import State
from damocles_py.manager.db import Submission
from damocles_py.manager.interface import SectorId
from damocles_py.store.layout import PersistLayout

from conftest import STARTUP_BUDGET, seal_budget, wait_until, write_config

SEALER_FLOW = ["Empty", "Allocated", "DealsAcquired", "PieceAdded", "TreeDBuilt", "TicketAssigned", "PC1Done",
               "PC2Done", "PCSubmitted", "PCLanded", "Persisted", "PersistanceSubmitted", "SeedAssigned", "C1Done",
               "C2Done", "ProofSubmitted", "Finished"]


def finished(daemon, n):
    return lambda: sum(1 for r in daemon.manager.sectors() if r.finished) >= n


def proof_landed(record) -> bool:
    return record.commit is not None and record.commit.state is Submission.Accepted


def transitions(thread, sector_id):
    (job,) = [j for j in thread.db.find(sector_id)]
    return [h for h in thread.db.history(job.uid)]


def test_sealer_seals_deal_and_cc_sectors(tmp_path, daemon_factory):
    cfg = write_config(tmp_path, sealing={"enable_deals": True},
                       worker={"sector_log_max_bytes": "8KiB", "sector_log_retention": "1h"})
    write_random_piece(tmp_path / "pieces" / "deal-1.bin", 1500)
    stale = tmp_path / "store" / "t0" / "logs" / "s-t01000-99.log"  # a sector done long ago
    stale.parent.mkdir(parents=True, exist_ok=True)  # store sealing-init made it
    stale.write_text("old\n")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    daemon = daemon_factory(cfg, max_sectors=2)
    wait_until(finished(daemon, 2), seal_budget(2), "two sealed sectors")

    records = sorted(daemon.manager.sectors(), key=lambda r: r.id.number)[:2]
    assert [r.id.number for r in records] == [1, 2]
    deals = {d.sector: d for d in daemon.manager.deals()}
    assert SectorId(1000, 1) in deals and SectorId(1000, 2) not in deals  # a deal sector, then CC
    for record in records:
        assert record.finished and proof_landed(record)
        layout = PersistLayout(tmp_path / "persist" / "a", f"s-t0{record.id.miner}-{record.id.number}")
        assert layout.sealed.stat().st_size == 2048
        assert (layout.cache / "p_aux").exists() and (layout.cache / "t_aux").exists()
        history = transitions(daemon.threads[0], record.id)
        flow = [history[0].prev] + [h.next for h in history if not h.event.startswith("Failure")]
        assert flow == SEALER_FLOW
    # the sector's scratch files are gone, its log stays, capped; logs past retention are removed
    assert not (tmp_path / "store" / "t0" / "data" / "s-t01000-1").exists()
    log = tmp_path / "store" / "t0" / "logs" / "s-t01000-1.log"
    assert "sector finished" in log.read_text()
    assert sum(p.stat().st_size for p in log.parent.glob("s-t01000-1.log*")) <= 8192 + 1024
    assert not stale.exists()


def test_snapup_then_rebuild_restores_identical_files(tmp_path, daemon_factory):
    cfg = write_config(tmp_path, plans=("sealer", "snapup", "rebuild"), sealing={"enable_deals": False},
                       thread_sealing={1: {"enable_deals": True}})
    write_random_piece(tmp_path / "pieces" / "upgrade.bin", 2000)
    daemon = daemon_factory(cfg, max_sectors=3)  # one job per thread: a CC seal, its upgrade, its rebuild
    sealer, snapup, rebuild = daemon.threads

    # snapup upgrades the first sealed CC sector with the piece
    wait_until(lambda: any(r.upgrade and r.upgrade.state.value == "upgraded" for r in daemon.manager.sectors()),
               seal_budget(2), "a snapped-up sector")  # a C2, then a snap prove
    record = next(r for r in daemon.manager.sectors() if r.upgrade and r.upgrade.state.value == "upgraded")
    layout = PersistLayout(tmp_path / "persist" / "a", f"s-t0{record.id.miner}-{record.id.number}")
    originals = {p: p.read_bytes() for p in (layout.sealed, layout.update, layout.cache / "p_aux",
                                              layout.update_cache / "p_aux")}

    # lose the sector's files, ask for a rebuild: the rebuild thread re-creates them identically
    for path in (layout.sealed, layout.update):
        path.unlink()
    shutil.rmtree(layout.cache)
    shutil.rmtree(layout.update_cache)
    daemon.manager.request_rebuild(record.id)
    wait_until(lambda: all(p.exists() for p in originals) and daemon.manager.sector(record.id).rebuild is None,
               seal_budget(1), "the rebuilt sector")
    for path, data in originals.items():
        assert path.read_bytes() == data, f"{path.name} differs after rebuild"
    history = transitions(rebuild, record.id)
    assert [h.next for h in history][-6:] == ["SnapPieceAdded", "SnapTreeDBuilt", "SnapEncoded", "SnapDone",
                                              "Persisted", "Finished"]
    assert snapup.status.thread_state in ("idle", "running", "waiting")


def _admin(daemon) -> AdminClient:
    return AdminClient(daemon.config.worker.admin_server.address, daemon.token)


def test_resume_rewinds_aborts_and_refuses_invalid_states(tmp_path, daemon_factory):
    cfg = write_config(tmp_path)
    daemon = daemon_factory(cfg, max_sectors=3)
    thread = daemon.threads[0]
    admin = _admin(daemon)

    # pause once the first sector is past PC2, then rewind it to TreeDBuilt
    wait_until(lambda: thread.status.state in ("PCSubmitted", "PCLanded", "Persisted", "PersistanceSubmitted",
                                               "SeedAssigned", "C1Done"), 2 * STARTUP_BUDGET, "a sector past PC2")
    assert admin.resume(0).accepted is False  # not paused: nothing to resume
    assert admin.pause(0).accepted
    wait_until(lambda: thread.status.thread_state == "paused", seal_budget(1), "the pause")  # after a C2 at worst
    paused_at = thread.status.state

    with pytest.raises(UserError, match="cannot be resumed at state 'Bogus'; valid states now: Allocated"):
        admin.resume(0, "Bogus")
    with pytest.raises(UserError, match="cannot be resumed at state 'SnapEncoded'"):
        admin.resume(0, "SnapEncoded")
    with pytest.raises(UserError, match="cannot be resumed at state 'ProofSubmitted'"):  # later: would skip work
        admin.resume(0, "ProofSubmitted")
    with pytest.raises(UserError, match="missing or wrong admin token"):
        AdminClient(daemon.config.worker.admin_server.address, "wrong").resume(0, "TreeDBuilt")

    assert admin.resume(0, "TreeDBuilt").accepted
    wait_until(finished(daemon, 1), seal_budget(1), "the rewound sector to finish")
    history = transitions(thread, SectorId(1000, 1))
    rewind = next(i for i, h in enumerate(history) if h.event == "SetState")
    assert (history[rewind].prev, history[rewind].next) == (paused_at, "TreeDBuilt")
    replay = [h.next for h in history[rewind + 1:]]
    assert replay[:3] == ["TicketAssigned", "PC1Done", "PC2Done"] and replay[-1] == "Finished"
    assert proof_landed(daemon.manager.sector(SectorId(1000, 1)))

    # the next sector: pause it early and abandon it; the thread moves on to sector 3
    wait_until(lambda: thread.status.sector_id == "1000-2", STARTUP_BUDGET, "the second sector")
    admin.pause(0)
    wait_until(lambda: thread.status.thread_state == "paused", seal_budget(1), "the pause")  # after a C2 at worst
    assert admin.resume(0, "Aborted").accepted
    wait_until(lambda: daemon.manager.sector(SectorId(1000, 2)).aborted, STARTUP_BUDGET, "sector 2 aborted at the manager")
    wait_until(lambda: thread.status.sector_id == "1000-3", STARTUP_BUDGET, "the thread to take sector 3")
    admin.pause(0)  # no need to prove sector 3
    assert not (tmp_path / "store" / "t0" / "data" / "s-t01000-2").exists()
    history = transitions(thread, SectorId(1000, 2))
    assert history[-1].next == "Aborted"


def test_pc2_is_idempotent_after_a_cut_off_run(tmp_path):
    """PC2 encodes the sealed file in place; re-running it (as after a crash) must give the same replica."""
    import contextlib
    import logging
    from types import SimpleNamespace

    from damocles_py import bench, proofs
    from damocles_py.config.schema import Plan
    from damocles_py.fsm.handlers import common
    from damocles_py.fsm.sector import Sector
    from damocles_py.manager.interface import Deal
    from damocles_py.store.layout import SectorFiles

    proof = proofs.SealProof.StackedDrg2KiBV1_1
    _, ref, _ = bench.seal_sector(proofs.SectorSize(2048), tmp_path / "ref", prove=False)
    reference = ref.sealed.read_bytes()
    sector = Sector(uid=1, plan=Plan.sealer, id=SectorId(1000, 1), proof=proof, pieces=ref.pieces,
                    deals=[Deal(1, ref.pieces[0], "unused", 2032)])
    sector.pc1_out = proofs.pc1(proof, ref.cache, tmp_path / "ref" / "staged", ref.sealed, bench.PROVER_ID, 1,
                                bench.TICKET, ref.pieces).data
    # the handler needs only these parts of a StageContext
    ctx = SimpleNamespace(sector=sector, files=SectorFiles(tmp_path / "ref"), log=logging.getLogger("test"),
                          stage=lambda name, cause: contextlib.nullcontext(lambda fn, *args: fn(*args)))
    common.pc2(ctx)
    assert sector.comm_r == ref.pre_commit.comm_r and ref.sealed.read_bytes() == reference
    common.pc2(ctx)  # the sealed file is already encoded now, as after a crash right after PC2
    assert sector.comm_r == ref.pre_commit.comm_r and ref.sealed.read_bytes() == reference
