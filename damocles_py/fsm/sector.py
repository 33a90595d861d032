"""The persisted state of one sector job: what every stage produced so far.

A `Sector` is written to the thread's SQLite database after every transition, so a restarted
thread re-runs only the interrupted stage. Phase outputs are stored inline (bytes as hex in JSON).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

from damocles_py.config.schema import Plan
from damocles_py.fsm.failure import Failure, FailureCause, FailureLevel
from damocles_py.fsm.states import State
from damocles_py.manager.interface import Deal, SectorId, Seed, Ticket
from damocles_py.proofs import PieceInfo, SealProof, SnapEncodeOutput


@dataclass
class SnapUpPhase:
    """Snap (upgrade) inputs and outputs: used by the snapup plan and by rebuild of an upgraded sector."""

    deals: list[Deal] = field(default_factory=list)
    pieces: list[PieceInfo] = field(default_factory=list)
    comm_r_old: bytes | None = None
    encoded: SnapEncodeOutput | None = None
    vanilla_proofs: list[bytes] = field(default_factory=list)
    proof: bytes | None = None
    expected_comm_r: bytes | None = None  # rebuild: what the rebuilt update must commit to


@dataclass
class Sector:
    uid: int  # the job's row in the thread database (a sector id is only known after allocation)
    plan: Plan
    state: State = State.Empty
    id: SectorId | None = None
    proof: SealProof | None = None
    deals: list[Deal] = field(default_factory=list)
    pieces: list[PieceInfo] = field(default_factory=list)
    tree_d_comm_d: bytes | None = None
    ticket: Ticket | None = None
    pc1_out: bytes | None = None
    comm_r: bytes | None = None
    comm_d: bytes | None = None
    pc_resubmit: bool = False
    store: str | None = None  # persist store holding the sealed files
    seed: Seed | None = None
    c1_out: bytes | None = None
    seal_proof: bytes | None = None
    proof_resubmit: bool = False
    snap: SnapUpPhase | None = None
    expected_comm_r: bytes | None = None  # rebuild: the comm_r on chain
    retries: int = 0
    failure: Failure | None = None
    paused: bool = False  # waiting for an operator's resume (survives restarts)

    @property
    def name(self) -> str:
        """`s-t0<miner>-<number>`, damocles' name for sector files; `job-<uid>` before allocation."""
        return f"s-t0{self.id.miner}-{self.id.number}" if self.id else f"job-{self.uid}"

    @property
    def is_cc(self) -> bool:
        return not self.deals

    def to_json(self) -> str:
        return json.dumps(_encode(self))

    @classmethod
    def from_json(cls, text: str) -> "Sector":
        return _decode(cls, json.loads(text))


# ---------------------------------------------------------------------------------------------
# A small typed codec: dataclasses, enums, bytes, paths and lists, driven by type hints.

def _encode(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


_HINTS: dict[type, dict] = {}


def _hints(cls) -> dict:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _decode(tp, data):
    if data is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _decode(inner, data)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp)
        items = [_decode(inner, v) for v in data]
        return items if origin is list else tuple(items)
    if dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        return tp(**{k: _decode(hints[k], v) for k, v in data.items() if k in hints})
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp[data]
    if tp is bytes:
        return bytes.fromhex(data)
    if tp is Path:
        return Path(data)
    return data


# Names used by type hints above must be importable for get_type_hints.
__all__ = ["Sector", "SnapUpPhase", "Failure", "FailureCause", "FailureLevel"]
