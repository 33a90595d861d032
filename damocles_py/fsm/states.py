"""States and events of the sealing plans, named exactly as in the task state flow (the contract)."""

from __future__ import annotations

import enum


class State(enum.Enum):
    Empty = "Empty"
    Allocated = "Allocated"
    DealsAcquired = "DealsAcquired"
    PieceAdded = "PieceAdded"
    TreeDBuilt = "TreeDBuilt"
    TicketAssigned = "TicketAssigned"
    PC1Done = "PC1Done"
    PC2Done = "PC2Done"
    PCSubmitted = "PCSubmitted"
    PCLanded = "PCLanded"
    Persisted = "Persisted"
    PersistanceSubmitted = "PersistanceSubmitted"
    SeedAssigned = "SeedAssigned"
    C1Done = "C1Done"
    C2Done = "C2Done"
    ProofSubmitted = "ProofSubmitted"
    SnapEncoded = "SnapEncoded"
    SnapProved = "SnapProved"
    SealedChecked = "SealedChecked"
    SnapPieceAdded = "SnapPieceAdded"
    SnapTreeDBuilt = "SnapTreeDBuilt"
    SnapDone = "SnapDone"
    # Special states: the sector completed normally, or was abandoned.
    Finished = "Finished"
    Aborted = "Aborted"

    @property
    def is_final(self) -> bool:
        return self in (State.Finished, State.Aborted)


class Event(enum.Enum):
    Allocate = "Allocate"
    AcquireDeals = "AcquireDeals"
    AddPiece = "AddPiece"
    BuildTreeD = "BuildTreeD"
    AssignTicket = "AssignTicket"
    PC1 = "PC1"
    PC2 = "PC2"
    SubmitPC = "SubmitPC"
    ReSubmitPC = "ReSubmitPC"
    CheckPC = "CheckPC"
    Persist = "Persist"
    SubmitPersistance = "SubmitPersistance"
    AssignSeed = "AssignSeed"
    C1 = "C1"
    C2 = "C2"
    SubmitProof = "SubmitProof"
    ReSubmitProof = "ReSubmitProof"
    Finish = "Finish"
    AllocatedSnapUpSector = "AllocatedSnapUpSector"
    SnapEncode = "SnapEncode"
    SnapProve = "SnapProve"
    RePersist = "RePersist"
    AllocatedRebuildSector = "AllocatedRebuildSector"
    CheckSealed = "CheckSealed"
    SkipSnap = "SkipSnap"
    # Not in any table: recorded in the history when an operator (resume --state) or an abort
    # moves a sector.
    SetState = "SetState"
    Abort = "Abort"
