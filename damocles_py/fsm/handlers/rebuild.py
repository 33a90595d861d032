"""Handlers of the rebuild plan: re-create a lost sealed sector (and its snap update) from its
ticket and pieces, check it matches what is on chain, and put it back in its store.

A damocles-manager says less than ours: no store (one is reserved, as for a new sector) and no
commitments to compare with (empty: the comparison is skipped, and C1 checks the replica, as in
damocles-worker).
"""

from __future__ import annotations

from damocles_py import proofs
from damocles_py.fsm.context import StageContext
from damocles_py.fsm.failure import FailureCause, SealingFailure
from damocles_py.fsm.handlers import common, snapup
from damocles_py.fsm.handlers.sealer import allocate_spec
from damocles_py.fsm.sector import SnapUpPhase
from damocles_py.fsm.states import Event


def allocate(ctx: StageContext) -> Event | None:
    job = ctx.manager.allocate_rebuild_sector(allocate_spec(ctx), ctx.worker)
    if job is None:
        return None
    s = ctx.sector
    s.id, s.proof, s.ticket = job.sector.id, job.sector.proof, job.ticket
    s.deals, s.store, s.expected_comm_r = list(job.deals), job.store or None, job.comm_r or None
    if job.is_snapup:
        s.snap = SnapUpPhase(deals=list(job.upgrade_deals), comm_r_old=job.comm_r,
                             expected_comm_r=job.upgrade_comm_r or None)
    ctx.files.remove()
    ctx.files.prepare()
    ctx.log.info("rebuilding into store %s (%s)", job.store or "(to be reserved)",
                 "upgraded sector" if job.is_snapup else "sealed sector")
    return Event.AllocatedRebuildSector


def pc2(ctx: StageContext) -> Event:
    event = common.pc2(ctx)
    s = ctx.sector
    if s.expected_comm_r is not None and s.comm_r != s.expected_comm_r:
        raise SealingFailure(
            FailureCause.RebuildMismatch,
            f"rebuilt comm_r {s.comm_r.hex()} differs from the sector's {s.expected_comm_r.hex()}",
        )
    return event


def check_sealed(ctx: StageContext) -> Event:
    """C1 with the ticket as seed: the library checks its vanilla proofs against the replica."""
    s, files = ctx.sector, ctx.files
    with ctx.stage("c1", FailureCause.C1Failed):
        proofs.c1(s.proof, files.cache, files.sealed, common.prover_id(ctx), s.id.number, s.ticket.value,
                  s.ticket.value, proofs.PC2Output(s.comm_r, s.comm_d), s.pieces)
    return Event.CheckSealed


def add_snap_pieces(ctx: StageContext) -> Event:
    s = ctx.sector
    if s.snap is None:
        return Event.SkipSnap
    s.snap.pieces = common.stage_pieces(ctx, s.snap.deals, ctx.files.snap_staged)
    return Event.AddPiece


def snap_encode(ctx: StageContext) -> Event:
    s, files = ctx.sector, ctx.files
    encoded = snapup.encode(ctx, files.sealed, files.cache)  # the rebuilt replica is the sector key
    if s.snap.expected_comm_r is not None and encoded.comm_r_new != s.snap.expected_comm_r:
        raise SealingFailure(
            FailureCause.RebuildMismatch,
            f"rebuilt update comm_r {encoded.comm_r_new.hex()} differs from the sector's {s.snap.expected_comm_r.hex()}",
        )
    return Event.SnapEncode


def check_snap(ctx: StageContext) -> Event:
    with ctx.stage("snap_prove", FailureCause.SnapProveFailed):
        snapup.vanilla_proofs(ctx, ctx.files.sealed, ctx.files.cache)
    return Event.SnapProve


def persist(ctx: StageContext) -> Event:
    s, files = ctx.sector, ctx.files
    layout = ctx.persist_layout(common.reserve_store(ctx))  # kept when the manager named one
    # A rebuild exists to replace a lost or damaged replica; its output matched the chain's comm_r.
    common.copy_sealed_files(ctx, files.sealed, files.cache, layout.sealed, layout.cache, replace=True)
    if s.snap is not None:
        common.copy_sealed_files(ctx, files.update, files.update_cache, layout.update, layout.update_cache,
                                 replace=True)
    return Event.Persist


def submit_persisted(ctx: StageContext) -> Event:
    s = ctx.sector
    if not ctx.manager.submit_persisted(s.id, s.store, s.snap is not None):
        raise SealingFailure(FailureCause.PersistFailed, f"the manager did not find the rebuilt files in store {s.store}")
    return Event.SubmitPersistance
