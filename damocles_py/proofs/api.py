"""Typed, validated sealing stages over the Rust core.

Every function checks its arguments first and raises `InvalidInput` naming the bad one, so the
library only sees well-formed calls; a failure inside the library raises `ProofsError` with its
message. All heavy calls release the GIL.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from damocles_py import _core
from damocles_py.proofs import params
from damocles_py.proofs.errors import InvalidInput
from damocles_py.proofs.types import (
    C1Output,
    PC1Output,
    PC2Output,
    PieceInfo,
    SealProof,
    SnapEncodeOutput,
    UpdateProof,
    unpadded_piece_size,
)

PathLike = str | os.PathLike

# ---------------------------------------------------------------------------------------------
# argument checks


def _bytes32(argument: str, value: bytes) -> bytes:
    if not isinstance(value, (bytes, bytearray)):
        raise InvalidInput(argument, f"must be 32 bytes, got {type(value).__name__}")
    if len(value) != 32:
        raise InvalidInput(argument, f"must be 32 bytes, got {len(value)}")
    return bytes(value)


def _readable_file(argument: str, path: PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise InvalidInput(argument, f"{p} does not exist")
    if not p.is_file():
        raise InvalidInput(argument, f"{p} is not a regular file")
    if not os.access(p, os.R_OK):
        raise InvalidInput(argument, f"{p} is not readable (check its permissions)")
    return p


def _directory(argument: str, path: PathLike) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise InvalidInput(argument, f"{p} is not a directory (create it first)")
    return p


def _sector_file(argument: str, path: PathLike, proof: SealProof | UpdateProof) -> Path:
    p = _readable_file(argument, path)
    size = p.stat().st_size
    if size != proof.sector_size:
        raise InvalidInput(
            argument,
            f"{p} is {size} bytes but {proof.name} works on {proof.sector_size} ({int(proof.sector_size)} byte) sectors",
        )
    return p


def _pieces(proof: SealProof | UpdateProof, pieces: Sequence[PieceInfo]) -> list[tuple[bytes, int]]:
    total = 0
    for i, piece in enumerate(pieces):
        _bytes32(f"pieces[{i}].commitment", piece.commitment)
        if piece.size != unpadded_piece_size(piece.size):
            raise InvalidInput(
                f"pieces[{i}].size",
                f"{piece.size} is not a valid unpadded piece size (127 * 2^k, at least 127)",
            )
        total += piece.padded_size
    if total > proof.sector_size:
        raise InvalidInput(
            "pieces", f"pieces take {total} padded bytes, more than the {proof.sector_size} sector"
        )
    return [p.as_tuple() for p in pieces]


def _sector_id(sector_id: int) -> int:
    if not isinstance(sector_id, int) or sector_id < 0:
        raise InvalidInput("sector_id", f"must be a non-negative integer, got {sector_id!r}")
    return sector_id


# ---------------------------------------------------------------------------------------------
# pieces


def piece_commitment(proof: SealProof | str, path: PathLike, piece_size: int | None = None) -> PieceInfo:
    """commP of a file, zero-extended to `piece_size` unpadded bytes (default: the smallest fit)."""
    proof = SealProof.parse(proof)
    p = _readable_file("path", path)
    size = _piece_size_for(proof, p, piece_size)
    return PieceInfo(_core.piece_commitment(proof.name, str(p), size), size)


def _piece_size_for(proof: SealProof, path: Path, piece_size: int | None) -> int:
    length = path.stat().st_size
    if length == 0:
        raise InvalidInput("piece_path", f"{path} is empty; a piece holds at least 1 byte")
    size = unpadded_piece_size(length) if piece_size is None else piece_size
    if size != unpadded_piece_size(size):
        raise InvalidInput("piece_size", f"{size} is not a valid unpadded piece size (127 * 2^k, at least 127)")
    if size < length:
        raise InvalidInput("piece_size", f"{size} is smaller than the {length}-byte piece file {path}")
    if size > proof.sector_size.unpadded:
        raise InvalidInput(
            "piece_path",
            f"{path} needs a {size}-byte piece, bigger than a {proof.sector_size} sector "
            f"({proof.sector_size.unpadded} user bytes)",
        )
    return size


def add_piece(
    proof: SealProof | str,
    piece_path: PathLike,
    staged_path: PathLike,
    existing: Sequence[PieceInfo] = (),
    piece_size: int | None = None,
) -> PieceInfo:
    """Append a piece to the staged sector file after `existing` pieces; returns its PieceInfo."""
    proof = SealProof.parse(proof)
    src = _readable_file("piece_path", piece_path)
    size = _piece_size_for(proof, src, piece_size)
    _pieces(proof, [*existing, PieceInfo(b"\0" * 32, size)])
    comm, _written = _core.add_piece(
        proof.name, str(src), str(staged_path), size, [p.size for p in existing]
    )
    return PieceInfo(comm, size)


def compute_comm_d(proof: SealProof | str, pieces: Sequence[PieceInfo]) -> bytes:
    proof = SealProof.parse(proof)
    return _core.compute_comm_d(proof.name, _pieces(proof, pieces))


def fill_pieces(proof: SealProof | str, pieces: Sequence[PieceInfo]) -> list[PieceInfo]:
    """`pieces` followed by the zero pieces that fill the rest of the sector.

    comm_d is the root over the whole sector, and `compute_comm_d` of a partial list only covers
    the smallest power of two holding it, so PC1 and the chain need the fill in the list. Fillers
    are the set bits of the space left, smallest first, so each starts aligned (pieces are
    expected largest first, as they are then laid out without padding between them).
    """
    proof = SealProof.parse(proof)
    _pieces(proof, pieces)
    fillers = []
    remaining, padded = proof.sector_size - sum(p.padded_size for p in pieces), 128
    while remaining:
        if remaining & padded:
            unpadded = padded // 128 * 127
            fillers.append(PieceInfo(_core.zero_piece_commitment(unpadded), unpadded))
            remaining -= padded
        padded <<= 1
    return [*pieces, *fillers]


def cc_pieces(proof: SealProof | str) -> list[PieceInfo]:
    """The piece list of a CC (committed capacity, all-zero) sector: one zero piece filling it."""
    return fill_pieces(proof, [])


# ---------------------------------------------------------------------------------------------
# TreeD and sealing


def build_tree_d(proof: SealProof | str, staged_path: PathLike | None, cache_dir: PathLike) -> bytes:
    """Build the data tree into `cache_dir` (None: an all-zero CC sector). Returns comm_d."""
    proof = SealProof.parse(proof)
    staged = None if staged_path is None else str(_sector_file("staged_path", staged_path, proof))
    return _core.build_tree_d(proof.name, staged, str(_directory("cache_dir", cache_dir)))


def pc1(
    proof: SealProof | str,
    cache_dir: PathLike,
    staged_path: PathLike | None,
    sealed_path: PathLike,
    prover_id: bytes,
    sector_id: int,
    ticket: bytes,
    pieces: Sequence[PieceInfo],
) -> PC1Output:
    """PreCommit phase 1 (SDR labels). `staged_path=None` seals a CC sector without a staged file."""
    proof = SealProof.parse(proof)
    staged = None if staged_path is None else str(_readable_file("staged_path", staged_path))
    sealed = Path(sealed_path)
    if not sealed.is_file():
        raise InvalidInput("sealed_path", f"{sealed} must exist as a file (create it empty first)")
    data = _core.pc1(
        proof.name,
        str(_directory("cache_dir", cache_dir)),
        staged,
        str(sealed),
        _bytes32("prover_id", prover_id),
        _sector_id(sector_id),
        _bytes32("ticket", ticket),
        _pieces(proof, pieces),
    )
    return PC1Output(proof, data)


def pc2(pc1_output: PC1Output, cache_dir: PathLike, sealed_path: PathLike) -> PC2Output:
    """PreCommit phase 2 (tree_c, replica encoding in place, tree_r_last)."""
    sealed = _sector_file("sealed_path", sealed_path, pc1_output.proof)
    comm_r, comm_d = _core.pc2(pc1_output.data, str(_directory("cache_dir", cache_dir)), str(sealed))
    return PC2Output(comm_r, comm_d)


def c1(
    proof: SealProof | str,
    cache_dir: PathLike,
    sealed_path: PathLike,
    prover_id: bytes,
    sector_id: int,
    ticket: bytes,
    seed: bytes,
    pre_commit: PC2Output,
    pieces: Sequence[PieceInfo],
) -> C1Output:
    """Commit phase 1: the vanilla proofs for the challenges drawn from `seed`."""
    proof = SealProof.parse(proof)
    data = _core.c1(
        proof.name,
        str(_directory("cache_dir", cache_dir)),
        str(_sector_file("sealed_path", sealed_path, proof)),
        _bytes32("prover_id", prover_id),
        _sector_id(sector_id),
        _bytes32("ticket", ticket),
        _bytes32("seed", seed),
        _bytes32("comm_r", pre_commit.comm_r),
        _bytes32("comm_d", pre_commit.comm_d),
        _pieces(proof, pieces),
    )
    return C1Output(proof, data)


def c2(c1_output: C1Output, prover_id: bytes, sector_id: int) -> bytes:
    """Commit phase 2: the Groth16 SNARK. Returns the proof bytes (verified by the library)."""
    params.require(params.Circuit.PoRep, c1_output.proof.sector_size, "C2")
    return _core.c2(c1_output.data, _bytes32("prover_id", prover_id), _sector_id(sector_id))


def verify_seal(
    proof: SealProof | str,
    comm_r: bytes,
    comm_d: bytes,
    prover_id: bytes,
    sector_id: int,
    ticket: bytes,
    seed: bytes,
    proof_bytes: bytes,
) -> bool:
    proof = SealProof.parse(proof)
    params.require(params.Circuit.PoRep, proof.sector_size, "verify_seal", need_params=False)
    return _core.verify_seal(
        proof.name,
        _bytes32("comm_r", comm_r),
        _bytes32("comm_d", comm_d),
        _bytes32("prover_id", prover_id),
        _sector_id(sector_id),
        _bytes32("ticket", ticket),
        _bytes32("seed", seed),
        bytes(proof_bytes),
    )


def unseal_range(
    proof: SealProof | str,
    cache_dir: PathLike,
    sealed_path: PathLike,
    out_path: PathLike,
    prover_id: bytes,
    sector_id: int,
    comm_d: bytes,
    ticket: bytes,
    offset: int,
    num_bytes: int,
) -> int:
    """Unseal `num_bytes` user bytes from `offset` into `out_path`; returns bytes written."""
    proof = SealProof.parse(proof)
    if offset < 0 or num_bytes <= 0 or offset + num_bytes > proof.sector_size.unpadded:
        raise InvalidInput(
            "offset/num_bytes",
            f"range [{offset}, {offset + num_bytes}) is outside the sector's {proof.sector_size.unpadded} user bytes",
        )
    return _core.unseal_range(
        proof.name,
        str(_directory("cache_dir", cache_dir)),
        str(_sector_file("sealed_path", sealed_path, proof)),
        str(out_path),
        _bytes32("prover_id", prover_id),
        _sector_id(sector_id),
        _bytes32("comm_d", comm_d),
        _bytes32("ticket", ticket),
        offset,
        num_bytes,
    )


def clear_cache(cache_dir: PathLike) -> None:
    """Drop the layers and trees proving no longer needs (keeps tree-r-last, p_aux, t_aux)."""
    _core.clear_cache(str(_directory("cache_dir", cache_dir)))


# ---------------------------------------------------------------------------------------------
# snap (empty sector update)


def snap_encode(
    proof: UpdateProof | str,
    new_replica_path: PathLike,
    new_cache_dir: PathLike,
    sector_key_path: PathLike,
    sector_key_cache_dir: PathLike,
    staged_path: PathLike,
    pieces: Sequence[PieceInfo],
) -> SnapEncodeOutput:
    """Encode deal data into a sealed CC sector (`sector_key_path`) as a new replica."""
    proof = UpdateProof.parse(proof)
    new_replica = _sector_file("new_replica_path", new_replica_path, proof)  # pre-sized, as the library wants
    comm_r_new, comm_r_last_new, comm_d_new = _core.snap_encode(
        proof.name,
        str(new_replica),
        str(_directory("new_cache_dir", new_cache_dir)),
        str(_sector_file("sector_key_path", sector_key_path, proof)),
        str(_directory("sector_key_cache_dir", sector_key_cache_dir)),
        str(_sector_file("staged_path", staged_path, proof)),
        _pieces(proof, pieces),
    )
    return SnapEncodeOutput(comm_r_new, comm_r_last_new, comm_d_new)


def snap_partition_proofs(
    proof: UpdateProof | str,
    comm_r_old: bytes,
    encoded: SnapEncodeOutput,
    sector_key_path: PathLike,
    sector_key_cache_dir: PathLike,
    replica_path: PathLike,
    replica_cache_dir: PathLike,
) -> list[bytes]:
    """Vanilla partition proofs of an encoded replica (one serialized proof per partition)."""
    proof = UpdateProof.parse(proof)
    return _core.snap_partition_proofs(
        proof.name,
        _bytes32("comm_r_old", comm_r_old),
        _bytes32("comm_r_new", encoded.comm_r_new),
        _bytes32("comm_d_new", encoded.comm_d_new),
        str(_sector_file("sector_key_path", sector_key_path, proof)),
        str(_directory("sector_key_cache_dir", sector_key_cache_dir)),
        str(_sector_file("replica_path", replica_path, proof)),
        str(_directory("replica_cache_dir", replica_cache_dir)),
    )


def snap_verify_partition_proofs(
    proof: UpdateProof | str, partition_proofs: Sequence[bytes], comm_r_old: bytes, encoded: SnapEncodeOutput
) -> bool:
    proof = UpdateProof.parse(proof)
    return _core.snap_verify_partition_proofs(
        proof.name,
        [bytes(p) for p in partition_proofs],
        _bytes32("comm_r_old", comm_r_old),
        _bytes32("comm_r_new", encoded.comm_r_new),
        _bytes32("comm_d_new", encoded.comm_d_new),
    )


def snap_prove(
    proof: UpdateProof | str, partition_proofs: Sequence[bytes], comm_r_old: bytes, encoded: SnapEncodeOutput
) -> bytes:
    """The snap SNARK over the vanilla partition proofs."""
    proof = UpdateProof.parse(proof)
    params.require(params.Circuit.Update, proof.sector_size, "snap prove")
    return _core.snap_prove(
        proof.name,
        [bytes(p) for p in partition_proofs],
        _bytes32("comm_r_old", comm_r_old),
        _bytes32("comm_r_new", encoded.comm_r_new),
        _bytes32("comm_d_new", encoded.comm_d_new),
    )


def snap_verify(
    proof: UpdateProof | str, proof_bytes: bytes, comm_r_old: bytes, comm_r_new: bytes, comm_d_new: bytes
) -> bool:
    proof = UpdateProof.parse(proof)
    params.require(params.Circuit.Update, proof.sector_size, "snap verify", need_params=False)
    return _core.snap_verify(
        proof.name,
        bytes(proof_bytes),
        _bytes32("comm_r_old", comm_r_old),
        _bytes32("comm_r_new", comm_r_new),
        _bytes32("comm_d_new", comm_d_new),
    )
