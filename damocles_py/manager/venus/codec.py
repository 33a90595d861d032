"""The JSON shapes of damocles-manager's `Venus.*` API, as dataclasses, with one generic codec.

Every wire type is a dataclass whose fields carry their JSON name and encoding in metadata
(`wire("CommR", COMMITMENT)`); `encode` and `decode` walk the fields and type hints, so a shape is
written down once. The rules are those of damocles-worker's serde types (reference
`damocles-rpc.md` §1.2-1.5, Rust `damocles-worker/src/rpc/sealer/mod.rs`):

- keys are case-sensitive and written in the Rust struct's field order (so what we send is, byte for
  byte, what damocles-worker sends); extra keys the Go manager adds are ignored;
- a missing `X | None` field decodes as None; any other missing field is an error, unless it has
  a default (only legacy `PieceInfo.Offset`);
- u64 / i64 numbers are range-checked; a bool is never a number; a float is never an integer;
- bytes are encoded one of four ways: COMMITMENT (array of 32 ints), RANDOMNESS (base64 std with
  padding, exactly 32 bytes), BASE64 (std with padding), CID_UNSEALED (`{"/": "baga6ea4..."}`);
- enums (`SubmitResult`, `OnChainState`) are numbers; Go's 0 = Unknown is refused, as Rust does.
- internally tagged enums (serde `tag = "state"`, the worker admin API's thread state) are unions
  of dataclasses carrying `__wire_tag__ = (key, variant name)`.

A value of the wrong shape raises `WireError` with the path of the field (`result.ID.Miner`).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field

from damocles_py.manager.venus.cid import CidError, CommitmentKind, cid_to_commitment, commitment_to_cid

# ---------------------------------------------------------------------------------------------
# field encodings

U64 = "u64"  # the default for int
I64 = "i64"
U32 = "u32"
COMMITMENT = "commitment"  # [u8; 32] -> [12, 34, ...]
RANDOMNESS = "randomness"  # BytesArray32 -> base64, exactly 32 bytes
BASE64 = "base64"  # BytesVec -> base64
CID_UNSEALED = "cid-unsealed"  # CidJson of a piece / data commitment -> {"/": "baga6ea4..."}

_INT_RANGES = {U64: (0, 2**64 - 1), I64: (-(2**63), 2**63 - 1), U32: (0, 2**32 - 1)}


def wire(name: str, enc: str | None = None, *, default=dataclasses.MISSING):
    """A dataclass field named `name` on the wire, encoded as `enc` (for ints and bytes)."""
    metadata = {"wire": name, "enc": enc}
    if default is dataclasses.MISSING:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


class WireError(ValueError):
    """A JSON value that does not have the shape the worker needs; `path` names the field."""

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


# ---------------------------------------------------------------------------------------------
# the generic codec


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, str, object, str | None, object], ...]:
    """(attribute, wire name, type, encoding, default) of each field of a wire dataclass."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if "wire" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} has no wire name")
        out.append((f.name, f.metadata["wire"], hints[f.name], f.metadata["enc"], f.default))
    return tuple(out)


def _optional_inner(tp) -> object | None:
    """T for `T | None`, else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def _describe(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _encode_bytes(value: bytes, enc: str | None):
    value = bytes(value)
    if enc == COMMITMENT:
        if len(value) != 32:
            raise ValueError(f"a commitment is 32 bytes, got {len(value)}")
        return list(value)
    if enc == RANDOMNESS:
        if len(value) != 32:
            raise ValueError(f"randomness is 32 bytes, got {len(value)}")
        return base64.b64encode(value).decode("ascii")
    if enc == BASE64:
        return base64.b64encode(value).decode("ascii")
    if enc == CID_UNSEALED:
        return {"/": commitment_to_cid(value, CommitmentKind.unsealed)}
    raise TypeError(f"bytes need an encoding, got {enc!r}")


def encode(value, enc: str | None = None):
    """The JSON-ready value (dicts, lists, str, int, bool, None) of a wire value; `enc` applies to
    ints and bytes, also inside lists and dicts. Encoding follows the value, decoding the type."""
    if value is None:
        return None
    if dataclasses.is_dataclass(value):
        fields = {name: encode(getattr(value, attr), fenc) for attr, name, _, fenc, _ in _fields(type(value))}
        tag = getattr(type(value), "__wire_tag__", None)
        return fields if tag is None else {tag[0]: tag[1], **fields}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, int):
        lo, hi = _INT_RANGES[enc or U64]
        if not lo <= value <= hi:
            raise ValueError(f"{value} does not fit {enc or U64}")
        return value
    if isinstance(value, (bytes, bytearray)):
        return _encode_bytes(value, enc)
    if isinstance(value, dict):
        return {str(k): encode(v, enc) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [encode(v, enc) for v in value]
    raise TypeError(f"cannot encode {type(value).__name__}")


def _decode_bytes(value, path: str, enc: str | None) -> bytes:
    if enc == COMMITMENT:
        if not isinstance(value, list) or len(value) != 32:
            raise WireError(path, f"expected an array of 32 integers (a commitment), got {_describe(value)}")
        for i, b in enumerate(value):
            if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b <= 255:
                raise WireError(f"{path}[{i}]", f"expected an integer from 0 to 255, got {_describe(b)}")
        return bytes(value)
    if enc in (RANDOMNESS, BASE64):
        if not isinstance(value, str):
            raise WireError(path, f"expected a base64 string, got {_describe(value)}")
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise WireError(path, f"{_describe(value)} is not standard base64 with padding") from None
        if enc == RANDOMNESS and len(raw) != 32:
            raise WireError(path, f"expected 32 bytes of randomness, got {len(raw)}")
        return raw
    if enc == CID_UNSEALED:
        if not isinstance(value, dict) or not isinstance(value.get("/"), str):
            raise WireError(path, f'expected a CID {{"/": "baga6ea4..."}}, got {_describe(value)}')
        try:
            return cid_to_commitment(value["/"], CommitmentKind.unsealed)
        except CidError as e:
            raise WireError(path, str(e)) from None
    raise TypeError(f"bytes need an encoding, got {enc!r}")


def decode(tp, value, path: str = "result", enc: str | None = None):
    """`value` (parsed JSON) as a `tp`: a wire dataclass, `X | None`, `list[X]`, `dict[str, str]`,
    an int enum, int, bool, str, bytes (with `enc`), or None (the value must be null)."""
    if tp is None or tp is type(None):
        if value is not None:
            raise WireError(path, f"expected null, got {_describe(value)}")
        return None
    inner = _optional_inner(tp)
    if inner is not None:
        return None if value is None else decode(inner, value, path, enc)
    if value is None:
        raise WireError(path, "is null, which is not allowed here")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _decode_tagged(typing.get_args(tp), value, path)
    if origin is list:
        if not isinstance(value, list):
            raise WireError(path, f"expected an array, got {_describe(value)}")
        (item,) = typing.get_args(tp)
        return [decode(item, v, f"{path}[{i}]", enc) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise WireError(path, f"expected an object, got {_describe(value)}")
        _, item = typing.get_args(tp)
        return {k: decode(item, v, f"{path}.{k}", enc) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise WireError(path, f"expected an object ({tp.__name__}), got {_describe(value)}")
        kwargs = {}
        for attr, name, ftp, fenc, default in _fields(tp):
            if name in value:
                kwargs[attr] = decode(ftp, value[name], f"{path}.{name}", fenc)
            elif default is not dataclasses.MISSING:
                kwargs[attr] = default
            elif _optional_inner(ftp) is not None:
                kwargs[attr] = None
            else:
                raise WireError(f"{path}.{name}", "missing")
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        if isinstance(value, bool) or not isinstance(value, int):
            raise WireError(path, f"expected a number ({tp.__name__}), got {_describe(value)}")
        try:
            return tp(value)
        except ValueError:
            allowed = ", ".join(f"{m.value} {m.name}" for m in tp)
            raise WireError(path, f"{value} is not a {tp.__name__} ({allowed})") from None
    if tp is bool:
        if not isinstance(value, bool):
            raise WireError(path, f"expected true or false, got {_describe(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise WireError(path, f"expected a string, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise WireError(path, f"expected an integer, got {_describe(value)}")
        lo, hi = _INT_RANGES[enc or U64]
        if not lo <= value <= hi:
            raise WireError(path, f"{value} is out of range for {enc or U64}")
        return value
    if tp is bytes:
        return _decode_bytes(value, path, enc)
    raise TypeError(f"no decoder for {tp!r}")


def _decode_tagged(variants: tuple, value, path: str):
    """An internally tagged enum (serde `#[serde(tag = "...")]`): a union of dataclasses, each with
    `__wire_tag__ = (key, name)`; the tag key picks the variant, which decodes the other keys."""
    tags = {getattr(v, "__wire_tag__", (None, None))[1]: v for v in variants}
    key = getattr(variants[0], "__wire_tag__", (None,))[0]
    if key is None or None in tags:
        raise TypeError(f"no decoder for a union of {variants!r}")
    if not isinstance(value, dict):
        raise WireError(path, f"expected an object, got {_describe(value)}")
    variant = tags.get(value.get(key))
    if variant is None:
        raise WireError(f"{path}.{key}", f"expected one of {', '.join(map(str, tags))}, got {_describe(value.get(key))}")
    return decode(variant, value, path)


# ---------------------------------------------------------------------------------------------
# shared shapes (reference §1.3); field order = the Rust struct's


@dataclass(frozen=True)
class SectorID:
    miner: int = wire("Miner")
    number: int = wire("Number")


@dataclass(frozen=True)
class AllocateSectorSpec:
    allowed_miners: list[int] | None = wire("AllowedMiners")
    allowed_proof_types: list[int] | None = wire("AllowedProofTypes", I64)


@dataclass(frozen=True)
class AllocatedSector:
    id: SectorID = wire("ID")
    proof_type: int = wire("ProofType", I64)


@dataclass(frozen=True)
class Ticket:
    ticket: bytes = wire("Ticket", RANDOMNESS)
    epoch: int = wire("Epoch", I64)


@dataclass(frozen=True)
class Seed:
    seed: bytes = wire("Seed", RANDOMNESS)
    epoch: int = wire("Epoch", I64)


@dataclass(frozen=True)
class AcquireDealsSpec:
    max_deals: int | None = wire("MaxDeals")
    min_used_space: int | None = wire("MinUsedSpace")


@dataclass(frozen=True, kw_only=True)
class PieceInfo:
    """Legacy piece info (rebuild's `Pieces`). Keyword-only: `Offset` has a default but is not last."""

    size: int = wire("Size")  # padded
    offset: int = wire("Offset", default=0)  # the one serde default of the worker's types
    cid: bytes = wire("Cid", CID_UNSEALED)


@dataclass(frozen=True)
class DealInfo:
    """Legacy deal info (rebuild's `Pieces`)."""

    id: int = wire("ID")
    payload_size: int = wire("PayloadSize")
    piece: PieceInfo = wire("Piece")


@dataclass(frozen=True)
class PieceInfoV2:
    size: int = wire("Size")  # padded
    piece_cid: bytes = wire("PieceCID", CID_UNSEALED)


@dataclass(frozen=True)
class DealInfoV2:
    deal_id: int = wire("DealID")
    allocation_id: int = wire("AllocationID")
    payload_size: int = wire("PayloadSize")
    is_builtin_market: bool = wire("IsBuiltinMarket")

    @property
    def is_pledge(self) -> bool:
        """A filler piece, not a deal (damocles `Sector::deals`)."""
        return (self.deal_id if self.is_builtin_market else self.allocation_id) == 0

    @property
    def ident(self) -> int:
        """The deal's id in its market: the deal id, or the verified-registry allocation id (DDO)."""
        return self.deal_id if self.is_builtin_market else self.allocation_id


@dataclass(frozen=True)
class SectorPiece:
    piece: PieceInfoV2 = wire("Piece")
    deal_info: DealInfoV2 = wire("DealInfo")  # an object: Go's nil pointer (null) fails, as in Rust


class SubmitResult(enum.IntEnum):
    Accepted = 1
    DuplicateSubmit = 2
    MismatchedSubmission = 3
    Rejected = 4
    FilesMissed = 5


class OnChainState(enum.IntEnum):
    Pending = 1
    Packed = 2
    Landed = 3
    NotFound = 4
    Failed = 5
    PermFailed = 6
    ShouldAbort = 7


@dataclass(frozen=True)
class PreCommitOnChainInfo:
    comm_r: bytes = wire("CommR", COMMITMENT)
    comm_d: bytes = wire("CommD", COMMITMENT)
    ticket: Ticket = wire("Ticket")


@dataclass(frozen=True)
class ProofOnChainInfo:
    proof: bytes = wire("Proof", BASE64)


@dataclass(frozen=True)
class SubmitResp:
    """SubmitPreCommitResp, SubmitProofResp and SubmitSnapUpProofResp: one shape."""

    res: SubmitResult = wire("Res")
    desc: str | None = wire("Desc")


SubmitPreCommitResp = SubmitProofResp = SubmitSnapUpProofResp = SubmitResp


@dataclass(frozen=True)
class PollStateResp:
    """PollPreCommitStateResp and PollProofStateResp: one shape."""

    state: OnChainState = wire("State")
    desc: str | None = wire("Desc")


PollPreCommitStateResp = PollProofStateResp = PollStateResp


@dataclass(frozen=True)
class WaitSeedResp:
    should_wait: bool = wire("ShouldWait")
    delay: int = wire("Delay")  # seconds; u64: a negative delay does not parse
    seed: Seed | None = wire("Seed")


@dataclass(frozen=True)
class WorkerIdentifier:
    instance: str = wire("Instance")
    location: str = wire("Location")


@dataclass(frozen=True)
class SectorStateChange:
    prev: str = wire("Prev")
    next: str = wire("Next")
    event: str = wire("Event")


@dataclass(frozen=True)
class SectorFailure:
    level: str = wire("Level")  # Temporary | Permanent | Abort | Critical
    desc: str = wire("Desc")


@dataclass(frozen=True)
class ReportStateReq:
    worker: WorkerIdentifier = wire("Worker")
    state_change: SectorStateChange = wire("StateChange")
    failure: SectorFailure | None = wire("Failure")


@dataclass(frozen=True)
class SectorState:
    id: SectorID = wire("Id")  # "Id" here, unlike AllocatedSector's "ID"
    finalized: bool = wire("Finalized")
    abort_reason: str | None = wire("AbortReason")


@dataclass(frozen=True)
class AllocateSnapUpSpec:
    sector: AllocateSectorSpec = wire("Sector")
    deals: AcquireDealsSpec = wire("Deals")


@dataclass(frozen=True)
class SectorPublicInfo:
    comm_r: bytes = wire("CommR", COMMITMENT)


@dataclass(frozen=True)
class SectorPrivateInfo:
    access_instance: str = wire("AccessInstance")


@dataclass(frozen=True)
class AllocatedSnapUpSector:
    sector: AllocatedSector = wire("Sector")
    pieces: list[SectorPiece] = wire("Pieces")  # not optional: Go's null fails to parse, as in Rust
    public: SectorPublicInfo = wire("Public")
    private: SectorPrivateInfo = wire("Private")


@dataclass(frozen=True)
class SnapUpOnChainInfo:
    comm_r: bytes = wire("CommR", COMMITMENT)
    comm_d: bytes = wire("CommD", COMMITMENT)
    access_instance: str = wire("AccessInstance")
    pieces: list[bytes] = wire("Pieces", CID_UNSEALED)
    proof: bytes = wire("Proof", BASE64)


@dataclass(frozen=True)
class WorkerInfoSummary:
    threads: int = wire("Threads")
    empty: int = wire("Empty")
    paused: int = wire("Paused")
    running: int = wire("Running")
    waiting: int = wire("Waiting")
    errors: int = wire("Errors")


@dataclass(frozen=True)
class WorkerInfo:
    name: str = wire("Name")
    dest: str = wire("Dest")
    version: str = wire("Version")
    summary: WorkerInfoSummary = wire("Summary")


@dataclass(frozen=True)
class StoreBasicInfo:
    name: str = wire("Name")
    path: str = wire("Path")
    meta: dict[str, str] | None = wire("Meta")


@dataclass(frozen=True)
class SectorRebuildInfo:
    sector: AllocatedSector = wire("Sector")
    ticket: Ticket = wire("Ticket")
    pieces: list[DealInfo] | None = wire("Pieces")
    pieces_v2: list[SectorPiece] | None = wire("PiecesV2")
    is_snapup: bool = wire("IsSnapUp")
    upgrade_public: SectorPublicInfo | None = wire("UpgradePublic")


@dataclass(frozen=True)
class SectorUnsealInfo:
    sector: AllocatedSector = wire("Sector")
    piece_cid: bytes = wire("PieceCid", CID_UNSEALED)
    comm_d: bytes = wire("CommD", COMMITMENT)
    ticket: Ticket = wire("Ticket")
    offset: int = wire("Offset")
    size: int = wire("Size")
    private_info: SectorPrivateInfo = wire("PrivateInfo")


@dataclass(frozen=True)
class AllocatePoStSpec:
    allowed_miners: list[int] | None = wire("AllowedMiners")
    allowed_proof_types: list[str] | None = wire("AllowedProofTypes")  # PoSt proofs are names


@dataclass(frozen=True)
class SectorAccessStores:
    sealed_file: str = wire("SealedFile")
    cache_dir: str = wire("CacheDir")


@dataclass(frozen=True)
class WdPoStSectorInfo:
    sector_id: int = wire("SectorId")
    comm_r: bytes = wire("CommR", COMMITMENT)
    upgrade: bool = wire("Upgrade")
    accesses: SectorAccessStores = wire("Accesses")


@dataclass(frozen=True)
class WdPoStInput:
    sectors: list[WdPoStSectorInfo] = wire("Sectors")
    miner_id: int = wire("MinerId")
    proof_type: str = wire("ProofType")
    seed: bytes = wire("Seed", COMMITMENT)


@dataclass(frozen=True)
class AllocatedWdPoStJob:
    id: str = wire("Id")
    input: WdPoStInput = wire("Input")


@dataclass(frozen=True)
class WindowPoStOutput:
    proofs: list[bytes] = wire("proofs", BASE64)  # lower-case keys here (no rename on either side)
    faults: list[int] = wire("faults")


# ---------------------------------------------------------------------------------------------
# the methods (reference §1.4): positional params and the result


@dataclass(frozen=True)
class Param:
    tp: object
    enc: str | None = None


@dataclass(frozen=True)
class Method:
    name: str
    params: tuple[Param, ...]
    result: object  # a type expression for `decode`; None: the result must be null

    def encode_params(self, args: Sequence) -> list:
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} params, got {len(args)}")
        for i, (a, p) in enumerate(zip(args, self.params)):
            expected = typing.get_origin(p.tp) or p.tp
            if expected is types.UnionType or expected is typing.Union:  # X | None
                expected = (typing.get_origin(_optional_inner(p.tp)) or _optional_inner(p.tp), type(None))
            if not isinstance(a, expected) or (isinstance(a, bool) and expected is int):
                raise TypeError(f"{self.name} param {i}: expected {p.tp}, got {type(a).__name__}")
        return [encode(a, p.enc) for a, p in zip(args, self.params)]

    def decode_result(self, value):
        return decode(self.result, value, "result")

    def decode_params(self, params: list) -> list:
        """The server side: positional params as their types; WireError names the bad one."""
        if len(params) != len(self.params):
            # go-jsonrpc's words for it
            raise WireError("params", f"wrong param count (method '{self.name}'): {len(params)} != {len(self.params)}")
        return [decode(p.tp, v, f"params[{i}]", p.enc) for i, (p, v) in enumerate(zip(self.params, params))]

    def encode_result(self, value):
        """The server side: the JSON-ready result (None -> null)."""
        return encode(value)


def _m(name: str, params: Sequence, result) -> Method:
    return Method(f"Venus.{name}", tuple(p if isinstance(p, Param) else Param(p) for p in params), result)


ALLOCATE_SECTOR = _m("AllocateSector", [AllocateSectorSpec], AllocatedSector | None)
ACQUIRE_DEALS = _m("AcquireDeals", [SectorID, AcquireDealsSpec], list[SectorPiece] | None)
ASSIGN_TICKET = _m("AssignTicket", [SectorID], Ticket)
SUBMIT_PRE_COMMIT = _m("SubmitPreCommit", [AllocatedSector, PreCommitOnChainInfo, bool], SubmitPreCommitResp)
POLL_PRE_COMMIT_STATE = _m("PollPreCommitState", [SectorID], PollPreCommitStateResp)
SUBMIT_PERSISTED_EX = _m("SubmitPersistedEx", [SectorID, str, bool], bool)
WAIT_SEED = _m("WaitSeed", [SectorID, Param(int, I64)], WaitSeedResp)
SUBMIT_PROOF = _m("SubmitProof", [SectorID, ProofOnChainInfo, bool], SubmitProofResp)
POLL_PROOF_STATE = _m("PollProofState", [SectorID], PollProofStateResp)
REPORT_STATE = _m("ReportState", [SectorID, ReportStateReq], SectorState)
REPORT_FINALIZED = _m("ReportFinalized", [SectorID], None)
REPORT_ABORTED = _m("ReportAborted", [SectorID, str], None)
ALLOCATE_SNAPUP_SECTOR = _m("AllocateSanpUpSector", [AllocateSnapUpSpec], AllocatedSnapUpSector | None)  # sic
SUBMIT_SNAPUP_PROOF = _m("SubmitSnapUpProof", [SectorID, SnapUpOnChainInfo], SubmitSnapUpProofResp)
WORKER_PING = _m("WorkerPing", [WorkerInfo], None)
STORE_RESERVE_SPACE = _m("StoreReserveSpace", [SectorID, int, list[str]], StoreBasicInfo | None)
STORE_BASIC_INFO = _m("StoreBasicInfo", [str], StoreBasicInfo | None)
ALLOCATE_REBUILD_SECTOR = _m("AllocateRebuildSector", [AllocateSectorSpec], SectorRebuildInfo | None)
ALLOCATE_UNSEAL_SECTOR = _m("AllocateUnsealSector", [AllocateSectorSpec], SectorUnsealInfo | None)
ACHIEVE_UNSEAL_SECTOR = _m("AchieveUnsealSector", [SectorID, Param(bytes, CID_UNSEALED), str], None)
ACQUIRE_UNSEAL_DEST = _m("AcquireUnsealDest", [SectorID, Param(bytes, CID_UNSEALED)], list[str])
WDPOST_ALLOCATE_JOBS = _m("WdPoStAllocateJobs", [AllocatePoStSpec, Param(int, U32), str], list[AllocatedWdPoStJob])
WDPOST_HEARTBEAT_JOBS = _m("WdPoStHeartbeatJobs", [list[str], str], None)
WDPOST_FINISH_JOB = _m("WdPoStFinishJob", [str, WindowPoStOutput | None, str], None)


@dataclass(frozen=True)
class WorkerPingInfo:
    """Go `core.WorkerPingInfo`: a worker's last ping, as `util worker list|info` reads it."""

    info: WorkerInfo = wire("Info")
    last_ping: int = wire("LastPing", I64)  # unix seconds


# SealerCliAPI methods (reference §1.8) that `damocles-manager util worker` calls; not the worker's.
WORKER_GET_PING_INFO = _m("WorkerGetPingInfo", [str], WorkerPingInfo | None)
WORKER_PING_INFO_LIST = _m("WorkerPingInfoList", [], list[WorkerPingInfo])
WORKER_PING_INFO_REMOVE = _m("WorkerPingInfoRemove", [str], None)
CLI_METHODS: dict[str, Method] = {m.name: m for m in (WORKER_GET_PING_INFO, WORKER_PING_INFO_LIST,
                                                      WORKER_PING_INFO_REMOVE)}

METHODS: dict[str, Method] = {m.name: m for m in (
    ALLOCATE_SECTOR, ACQUIRE_DEALS, ASSIGN_TICKET, SUBMIT_PRE_COMMIT, POLL_PRE_COMMIT_STATE, SUBMIT_PERSISTED_EX,
    WAIT_SEED, SUBMIT_PROOF, POLL_PROOF_STATE, REPORT_STATE, REPORT_FINALIZED, REPORT_ABORTED,
    ALLOCATE_SNAPUP_SECTOR, SUBMIT_SNAPUP_PROOF, WORKER_PING, STORE_RESERVE_SPACE, STORE_BASIC_INFO,
    ALLOCATE_REBUILD_SECTOR, ALLOCATE_UNSEAL_SECTOR, ACHIEVE_UNSEAL_SECTOR, ACQUIRE_UNSEAL_DEST,
    WDPOST_ALLOCATE_JOBS, WDPOST_HEARTBEAT_JOBS, WDPOST_FINISH_JOB,
)}
