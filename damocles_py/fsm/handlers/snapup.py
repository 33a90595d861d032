"""Handlers of the snapup plan: upgrade a sealed CC sector with deal data (SnapDeals)."""

from __future__ import annotations

import shutil
from pathlib import Path

from damocles_py import proofs
from damocles_py.fsm.context import StageContext
from damocles_py.fsm.failure import FailureCause, SealingFailure
from damocles_py.fsm.handlers.common import copy_sealed_files, make_tree_d, stage_pieces
from damocles_py.fsm.handlers.sealer import allocate_spec
from damocles_py.fsm.sector import SnapUpPhase
from damocles_py.fsm.states import Event
from damocles_py.manager.interface import AcquireDealsSpec, SnapUpProofInfo, SubmitResult
from damocles_py.store.layout import TREE_D_FILE


def allocate(ctx: StageContext) -> Event | None:
    deals_spec = AcquireDealsSpec(ctx.sealing.max_deals, ctx.sealing.min_deal_space)
    cand = ctx.manager.allocate_snapup_sector(allocate_spec(ctx), deals_spec, ctx.worker)
    if cand is None:
        return None
    s = ctx.sector
    s.id, s.proof, s.store = cand.sector.id, cand.sector.proof, cand.store
    s.snap = SnapUpPhase(deals=list(cand.deals), comm_r_old=cand.comm_r_old)
    ctx.files.remove()
    ctx.files.prepare()
    ctx.log.info("upgrading CC sector in store %s with deals %s", cand.store, [d.deal_id for d in cand.deals])
    return Event.AllocatedSnapUpSector


def add_pieces(ctx: StageContext) -> Event:
    snap = ctx.sector.snap
    snap.pieces = stage_pieces(ctx, snap.deals, ctx.files.snap_staged)
    return Event.AddPiece


def build_tree_d(ctx: StageContext) -> Event:
    """TreeD of the upgrade data, into the update cache where snap encoding reuses it."""
    make_tree_d(ctx, ctx.files.snap_staged, ctx.files.update_cache, ctx.sector.snap.pieces)
    return Event.BuildTreeD


def encode(ctx: StageContext, sector_key: Path, sector_key_cache: Path) -> proofs.SnapEncodeOutput:
    """Encode the staged upgrade data into a fresh update replica (keeps the update cache's tree-d)."""
    s, files = ctx.sector, ctx.files
    for entry in files.update_cache.iterdir():
        if entry.name != TREE_D_FILE:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    with open(files.update, "wb") as f:  # the library wants the new replica as big as the sector key
        f.truncate(s.proof.sector_size)
    with ctx.stage("snap_encode", FailureCause.SnapEncodeFailed) as run:
        s.snap.encoded = run(proofs.snap_encode, s.proof.update_proof, files.update, files.update_cache,
                             sector_key, sector_key_cache, files.snap_staged, s.snap.pieces)
    ctx.log.info("snap encoded: comm_r_new %s", s.snap.encoded.comm_r_new.hex())
    return s.snap.encoded


def snap_encode(ctx: StageContext) -> Event:
    source = ctx.persist_layout(ctx.sector.store)
    encode(ctx, source.sealed, source.cache)
    return Event.SnapEncode


def vanilla_proofs(ctx: StageContext, sector_key: Path, sector_key_cache: Path) -> list[bytes]:
    """The update's vanilla partition proofs, checked before anything is built on them."""
    s, files = ctx.sector, ctx.files
    update = s.proof.update_proof
    vanilla = proofs.snap_partition_proofs(update, s.snap.comm_r_old, s.snap.encoded, sector_key,
                                           sector_key_cache, files.update, files.update_cache)
    if not proofs.snap_verify_partition_proofs(update, vanilla, s.snap.comm_r_old, s.snap.encoded):
        raise SealingFailure(FailureCause.SnapProveFailed, "the update's vanilla partition proofs do not verify")
    return vanilla


def snap_prove(ctx: StageContext) -> Event:
    s = ctx.sector
    source = ctx.persist_layout(s.store)
    with ctx.stage("snap_prove", FailureCause.SnapProveFailed) as run:
        vanilla = vanilla_proofs(ctx, source.sealed, source.cache)
        update, enc = s.proof.update_proof, s.snap.encoded
        s.snap.proof = run(proofs.snap_prove, update, vanilla, s.snap.comm_r_old, enc)
        if not proofs.snap_verify(update, s.snap.proof, s.snap.comm_r_old, enc.comm_r_new, enc.comm_d_new):
            raise SealingFailure(FailureCause.SnapProveFailed, "the snap proof does not verify")
    return Event.SnapProve


def persist_update(ctx: StageContext) -> Event:
    """The update replica goes next to the sector's sealed files, in the store that holds them."""
    layout = ctx.persist_layout(ctx.sector.store)
    copy_sealed_files(ctx, ctx.files.update, ctx.files.update_cache, layout.update, layout.update_cache)
    return Event.Persist


def submit_snap_proof(ctx: StageContext) -> Event:
    s = ctx.sector
    enc = s.snap.encoded
    pieces = tuple(d.piece.commitment for d in s.snap.deals)
    resp = ctx.manager.submit_snapup_proof(
        s.id, SnapUpProofInfo(enc.comm_r_new, enc.comm_d_new, s.snap.proof, s.store, pieces))
    if resp.result in (SubmitResult.Accepted, SubmitResult.DuplicateSubmit):
        return Event.Finish
    if resp.result is SubmitResult.FilesMissed:
        ctx.log.warning("manager misses the update files (%s): persisting again", resp.desc)
        return Event.RePersist
    raise SealingFailure(FailureCause.SnapProofRejected, resp.desc or resp.result.name)
