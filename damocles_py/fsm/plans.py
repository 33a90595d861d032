"""One transition table per plan, reading like the task state flow.

Each row is a state, the handler that runs while the sector is in that state (it does the work
and returns the event), and the events that may follow with their next states. So "what happens
in PC2Done" is one row: `submit_pre_commit`, then SubmitPC -> PCSubmitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from damocles_py.config.schema import Plan
from damocles_py.fsm.handlers import common, rebuild, sealer, snapup
from damocles_py.fsm.states import Event, State

E, S = Event, State


@dataclass(frozen=True)
class Step:
    handler: Callable  # (StageContext) -> Event | None; None means "no work now" (idle)
    transitions: dict[Event, State]


@dataclass(frozen=True)
class PlanSpec:
    plan: Plan
    steps: dict[State, Step]
    # Submissions an operator's rewind must replace: a sector put back at (or before) the state
    # that submits something re-submits *with reset* (the sector flag named here is set), else
    # the manager refuses a second, different submission as a mismatch.
    resubmit_on_rewind: dict[State, str] = field(default_factory=dict)

    @property
    def states(self) -> list[State]:
        """Every state a sector of this plan can be put in (resume --state), in flow order."""
        ordered = list(self.steps)
        for step in self.steps.values():
            ordered += [s for s in step.transitions.values() if s not in ordered]
        return ordered + [S.Aborted]

    def rewind_flags(self, to: State) -> list[str]:
        """The sector flags to set when an operator puts a sector back at `to`."""
        order = self.states
        return [flag for state, flag in self.resubmit_on_rewind.items() if order.index(to) <= order.index(state)]

    def next_state(self, state: State, event: Event) -> State:
        step = self.steps.get(state)
        if step is None or event not in step.transitions:
            raise InvalidTransition(f"{self.plan.value}: no transition from {state.value} on {event.value}")
        return step.transitions[event]


class InvalidTransition(Exception):
    pass


SEALER = PlanSpec(Plan.sealer, {
    S.Empty:                Step(sealer.allocate,          {E.Allocate: S.Allocated}),
    S.Allocated:            Step(sealer.acquire_deals,     {E.AcquireDeals: S.DealsAcquired}),
    S.DealsAcquired:        Step(common.add_pieces,        {E.AddPiece: S.PieceAdded}),
    S.PieceAdded:           Step(common.build_tree_d,      {E.BuildTreeD: S.TreeDBuilt}),
    S.TreeDBuilt:           Step(sealer.assign_ticket,     {E.AssignTicket: S.TicketAssigned}),
    S.TicketAssigned:       Step(common.pc1,               {E.PC1: S.PC1Done}),
    S.PC1Done:              Step(common.pc2,               {E.PC2: S.PC2Done}),
    S.PC2Done:              Step(sealer.submit_pre_commit, {E.SubmitPC: S.PCSubmitted}),
    S.PCSubmitted:          Step(sealer.check_pre_commit,  {E.ReSubmitPC: S.PC2Done, E.CheckPC: S.PCLanded}),
    S.PCLanded:             Step(common.persist_sealed,    {E.Persist: S.Persisted}),
    S.Persisted:            Step(sealer.submit_persisted,  {E.SubmitPersistance: S.PersistanceSubmitted}),
    S.PersistanceSubmitted: Step(sealer.wait_seed,         {E.AssignSeed: S.SeedAssigned}),
    S.SeedAssigned:         Step(sealer.c1,                {E.C1: S.C1Done}),
    S.C1Done:               Step(sealer.c2,                {E.C2: S.C2Done}),
    S.C2Done:               Step(sealer.submit_proof,      {E.SubmitProof: S.ProofSubmitted}),
    S.ProofSubmitted:       Step(sealer.check_proof,       {E.ReSubmitProof: S.C2Done, E.Finish: S.Finished}),
}, resubmit_on_rewind={S.PC2Done: "pc_resubmit", S.C2Done: "proof_resubmit"})

SNAPUP = PlanSpec(Plan.snapup, {
    S.Empty:       Step(snapup.allocate,          {E.AllocatedSnapUpSector: S.Allocated}),
    S.Allocated:   Step(snapup.add_pieces,        {E.AddPiece: S.PieceAdded}),
    S.PieceAdded:  Step(snapup.build_tree_d,      {E.BuildTreeD: S.TreeDBuilt}),
    S.TreeDBuilt:  Step(snapup.snap_encode,       {E.SnapEncode: S.SnapEncoded}),
    S.SnapEncoded: Step(snapup.snap_prove,        {E.SnapProve: S.SnapProved}),
    S.SnapProved:  Step(snapup.persist_update,    {E.Persist: S.Persisted}),
    S.Persisted:   Step(snapup.submit_snap_proof, {E.RePersist: S.SnapProved, E.Finish: S.Finished}),
})

REBUILD = PlanSpec(Plan.rebuild, {
    S.Empty:          Step(rebuild.allocate,             {E.AllocatedRebuildSector: S.Allocated}),
    S.Allocated:      Step(common.add_pieces,            {E.AddPiece: S.PieceAdded}),
    S.PieceAdded:     Step(common.build_tree_d,          {E.BuildTreeD: S.TreeDBuilt}),
    S.TreeDBuilt:     Step(common.pc1,                   {E.PC1: S.PC1Done}),
    S.PC1Done:        Step(rebuild.pc2,                  {E.PC2: S.PC2Done}),
    S.PC2Done:        Step(rebuild.check_sealed,         {E.CheckSealed: S.SealedChecked}),
    S.SealedChecked:  Step(rebuild.add_snap_pieces,      {E.SkipSnap: S.SnapDone, E.AddPiece: S.SnapPieceAdded}),
    S.SnapPieceAdded: Step(snapup.build_tree_d,          {E.BuildTreeD: S.SnapTreeDBuilt}),
    S.SnapTreeDBuilt: Step(rebuild.snap_encode,          {E.SnapEncode: S.SnapEncoded}),
    S.SnapEncoded:    Step(rebuild.check_snap,           {E.SnapProve: S.SnapDone}),
    S.SnapDone:       Step(rebuild.persist,              {E.Persist: S.Persisted}),
    S.Persisted:      Step(rebuild.submit_persisted,     {E.SubmitPersistance: S.Finished}),
})

PLANS: dict[Plan, PlanSpec] = {p.plan: p for p in (SEALER, SNAPUP, REBUILD)}
