"""Handlers of the sealer plan: a new sector from allocation to a proof on chain."""

from __future__ import annotations

from damocles_py import proofs
from damocles_py.fsm.context import StageContext
from damocles_py.fsm.failure import FailureCause, SealingFailure
from damocles_py.fsm.handlers.common import prover_id
from damocles_py.fsm.states import Event
from damocles_py.manager.interface import (
    REASON_SEED_EXPIRED,
    REASON_TICKET_EXPIRED,
    AcquireDealsSpec,
    AllocatedSector,
    AllocateSpec,
    OnChainState,
    PreCommitInfo,
    SubmitResult,
)


def allocate_spec(ctx: StageContext) -> AllocateSpec:
    # The stores the thread writes to: a snap-up or rebuild in another store is not for it.
    writable = tuple(name for name, store in ctx.stores.items() if not store.readonly)
    return AllocateSpec(ctx.sealing.allowed_miners, ctx.sealing.allowed_proofs, writable)


def allocate(ctx: StageContext) -> Event | None:
    allocated = ctx.manager.allocate_sector(allocate_spec(ctx), ctx.worker)
    if allocated is None:
        return None
    s = ctx.sector
    s.id, s.proof = allocated.id, allocated.proof
    ctx.files.remove()  # leftovers of an earlier job with this name would confuse every stage
    ctx.files.prepare()
    return Event.Allocate


def acquire_deals(ctx: StageContext) -> Event | None:
    s, cfg = ctx.sector, ctx.sealing
    deals = []
    if cfg.enable_deals:
        deals = ctx.manager.acquire_deals(s.id, AcquireDealsSpec(cfg.max_deals, cfg.min_deal_space))
        if not deals and cfg.disable_cc:
            return None  # wait for deals rather than seal CC
    s.deals = list(deals)
    ctx.log.info("deals: %s", [d.deal_id for d in deals] or "none (CC sector)")
    return Event.AcquireDeals


def assign_ticket(ctx: StageContext) -> Event:
    # Always a fresh ticket: this is also where `resume --state TreeDBuilt` lands after expiry.
    # A sector that got this far before was pre-committed with the old ticket: replace that.
    ctx.sector.pc_resubmit = ctx.sector.comm_r is not None
    ctx.sector.ticket = ctx.manager.assign_ticket(ctx.sector.id)
    ctx.log.info("ticket at epoch %d", ctx.sector.ticket.epoch)
    return Event.AssignTicket


def submit_pre_commit(ctx: StageContext) -> Event:
    s = ctx.sector
    resp = ctx.manager.submit_pre_commit(
        AllocatedSector(s.id, s.proof), PreCommitInfo(s.comm_r, s.comm_d, s.ticket), reset=s.pc_resubmit
    )
    if resp.result in (SubmitResult.Accepted, SubmitResult.DuplicateSubmit):
        s.pc_resubmit = False
        return Event.SubmitPC
    if resp.result is SubmitResult.MismatchedSubmission:
        raise SealingFailure(FailureCause.PreCommitMismatch, resp.desc)
    if resp.desc.startswith(REASON_TICKET_EXPIRED):
        raise SealingFailure(FailureCause.TicketExpired, resp.desc)
    raise SealingFailure(FailureCause.PreCommitRejected, resp.desc or resp.result.name)


def _landed(ctx: StageContext, poll, what: str) -> bool:
    """Poll the chain until `what` lands (True), or must be submitted again (False)."""
    while True:
        status = poll(ctx.sector.id)
        if status.state is OnChainState.Landed:
            return True
        if status.state in (OnChainState.Failed, OnChainState.NotFound):
            ctx.log.warning("%s %s (%s): resubmitting", what, status.state.name, status.desc)
            return False
        if status.state in (OnChainState.PermFailed, OnChainState.ShouldAbort):
            raise SealingFailure(FailureCause.FinalDeadlineReached, f"{what} {status.state.name}: {status.desc}")
        ctx.wait(ctx.sealing.rpc_polling_interval)


def check_pre_commit(ctx: StageContext) -> Event:
    if _landed(ctx, ctx.manager.poll_pre_commit_state, "pre-commit"):
        return Event.CheckPC
    ctx.sector.pc_resubmit = True
    return Event.ReSubmitPC


def submit_persisted(ctx: StageContext) -> Event:
    s = ctx.sector
    if not ctx.manager.submit_persisted(s.id, s.store, False):
        raise SealingFailure(FailureCause.PersistFailed, f"the manager did not find the sector's files in store {s.store}")
    return Event.SubmitPersistance


def wait_seed(ctx: StageContext) -> Event:
    s = ctx.sector
    while True:
        wait = ctx.manager.wait_seed(AllocatedSector(s.id, s.proof))
        if wait.seed is not None:
            s.seed = wait.seed
            ctx.log.info("seed at epoch %d", wait.seed.epoch)
            return Event.AssignSeed
        ctx.wait(max(0.05, min(wait.delay_seconds, ctx.sealing.rpc_polling_interval)))


def c1(ctx: StageContext) -> Event:
    s, files = ctx.sector, ctx.files
    with ctx.stage("c1", FailureCause.C1Failed):
        out = proofs.c1(s.proof, files.cache, files.sealed, prover_id(ctx), s.id.number, s.ticket.value,
                        s.seed.value, proofs.PC2Output(s.comm_r, s.comm_d), s.pieces)
    s.c1_out = out.data
    return Event.C1


def c2(ctx: StageContext) -> Event:
    s = ctx.sector
    s.proof_resubmit = s.seal_proof is not None  # a rewound sector replaces its earlier proof
    with ctx.stage("c2", FailureCause.C2Failed) as run:
        s.seal_proof = run(proofs.c2, proofs.C1Output(s.proof, s.c1_out), prover_id(ctx), s.id.number)
    return Event.C2


def submit_proof(ctx: StageContext) -> Event:
    s = ctx.sector
    resp = ctx.manager.submit_proof(s.id, s.seal_proof, reset=s.proof_resubmit)
    if resp.result in (SubmitResult.Accepted, SubmitResult.DuplicateSubmit):
        s.proof_resubmit = False
        return Event.SubmitProof
    if resp.desc.startswith(REASON_SEED_EXPIRED):
        raise SealingFailure(FailureCause.SeedExpired, resp.desc)
    raise SealingFailure(FailureCause.ProofRejected, resp.desc or resp.result.name)


def check_proof(ctx: StageContext) -> Event:
    if ctx.sealing.ignore_proof_check or _landed(ctx, ctx.manager.poll_proof_state, "proof"):
        return Event.Finish
    ctx.sector.proof_resubmit = True
    return Event.ReSubmitProof
