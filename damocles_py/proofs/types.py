"""Types at the proofs boundary: sector sizes, proof types, pieces and phase outputs."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from damocles_py.proofs.errors import InvalidInput

_UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]iB|B)?\s*$")


class SectorSize(int):
    """A sector size in bytes, parsed from strings like ``2KiB`` and printed back the same way."""

    @classmethod
    def parse(cls, value: str | int, argument: str = "sector_size") -> "SectorSize":
        if isinstance(value, int):
            size = value
        else:
            m = _SIZE_RE.match(str(value))
            if not m:
                raise InvalidInput(
                    argument,
                    f"{value!r} is not a size; write it like 2KiB, 8MiB, 512MiB, 32GiB or 64GiB",
                )
            size = int(m.group(1)) * _UNITS[m.group(2) or ""]
        if size not in _SEAL_PROOFS_BY_SIZE:
            names = ", ".join(str(SectorSize(s)) for s in sorted(_SEAL_PROOFS_BY_SIZE))
            raise InvalidInput(argument, f"{value!r} is not a supported sector size; use one of {names}")
        return cls(size)

    def __str__(self) -> str:
        for unit in ("TiB", "GiB", "MiB", "KiB"):
            if self % _UNITS[unit] == 0:
                return f"{self // _UNITS[unit]}{unit}"
        return f"{int(self)}B"

    def __repr__(self) -> str:
        return f"SectorSize({self})"

    @property
    def unpadded(self) -> int:
        """User bytes a sector holds (Fr32 padding takes 1 bit in 256)."""
        return self // 128 * 127


class SealProof(enum.Enum):
    """Registered PoRep proof types (interactive PoRep V1_1, the normal choice)."""

    StackedDrg2KiBV1_1 = 2 << 10
    StackedDrg8MiBV1_1 = 8 << 20
    StackedDrg512MiBV1_1 = 512 << 20
    StackedDrg32GiBV1_1 = 32 << 30
    StackedDrg64GiBV1_1 = 64 << 30

    @property
    def sector_size(self) -> SectorSize:
        return SectorSize(self.value)

    @property
    def update_proof(self) -> "UpdateProof":
        return UpdateProof.for_size(self.sector_size)

    @classmethod
    def for_size(cls, size: str | int) -> "SealProof":
        return _SEAL_PROOFS_BY_SIZE[SectorSize.parse(size)]

    @classmethod
    def parse(cls, name: "str | SealProof", argument: str = "proof") -> "SealProof":
        return _parse_proof(cls, name, argument, "seal")


class UpdateProof(enum.Enum):
    """Registered empty-sector-update (SnapDeals) proof types."""

    StackedDrg2KiBV1 = 2 << 10
    StackedDrg8MiBV1 = 8 << 20
    StackedDrg512MiBV1 = 512 << 20
    StackedDrg32GiBV1 = 32 << 30
    StackedDrg64GiBV1 = 64 << 30

    @property
    def sector_size(self) -> SectorSize:
        return SectorSize(self.value)

    @classmethod
    def for_size(cls, size: str | int) -> "UpdateProof":
        return cls(int(SectorSize.parse(size)))

    @classmethod
    def parse(cls, name: "str | UpdateProof", argument: str = "proof") -> "UpdateProof":
        return _parse_proof(cls, name, argument, "update")


_SEAL_PROOFS_BY_SIZE = {p.value: p for p in SealProof}


def _parse_proof(cls, name, argument: str, kind: str):
    if isinstance(name, cls):
        return name
    try:
        return cls[name]
    except KeyError:
        raise InvalidInput(
            argument, f"unknown {kind} proof type {name!r}; use one of {', '.join(p.name for p in cls)}"
        ) from None


def padded_piece_size(payload_bytes: int) -> int:
    """Smallest valid padded piece size (a power of two >= 128) holding `payload_bytes` user bytes."""
    needed = -(-payload_bytes * 128 // 127)
    size = 128
    while size < needed:
        size <<= 1
    return size


def unpadded_piece_size(payload_bytes: int) -> int:
    return padded_piece_size(payload_bytes) // 128 * 127


@dataclass(frozen=True)
class PieceInfo:
    """A piece as the proofs library sees it: its commitment (commP) and unpadded size."""

    commitment: bytes
    size: int

    @property
    def padded_size(self) -> int:
        return self.size // 127 * 128

    def as_tuple(self) -> tuple[bytes, int]:
        return (self.commitment, self.size)


@dataclass(frozen=True)
class PC1Output:
    """PC1's serialized output (the library's JSON), opaque to Python."""

    proof: SealProof
    data: bytes


@dataclass(frozen=True)
class PC2Output:
    comm_r: bytes
    comm_d: bytes


@dataclass(frozen=True)
class C1Output:
    """C1's serialized output (vanilla proofs, the library's JSON), opaque to Python."""

    proof: SealProof
    data: bytes


@dataclass(frozen=True)
class SnapEncodeOutput:
    comm_r_new: bytes
    comm_r_last_new: bytes
    comm_d_new: bytes


def uvarint(n: int) -> bytes:
    """Unsigned LEB128 (the multiformats varint): ID-address payloads, CID prefixes."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def prover_id_from_miner(miner: int) -> bytes:
    """The prover id of actor `miner`: its ID-address payload (unsigned LEB128), zero padded to 32."""
    if miner < 0:
        raise InvalidInput("miner", f"actor id must not be negative, got {miner}")
    return uvarint(miner).ljust(32, b"\0")
