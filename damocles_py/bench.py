"""Qualification benchmarks: seal (or snap) one real sector and time every stage.

`damocles-worker bench seal|snap` runs these; `benches/` reuses them to compare the Python path
with the pure-Rust harness. Each stage is one call into the proofs layer, timed with a monotonic
clock; the sector's proof is verified at the end, and a proof that does not verify is an error.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from damocles_py import proofs
from damocles_py.proofs import SealProof, SectorSize

PROVER_ID = proofs.prover_id_from_miner(1000)
TICKET = bytes(range(32))
SEED = bytes(range(32, 64))


@dataclass
class StageTimes:
    sector_size: SectorSize
    stages: dict[str, float] = field(default_factory=dict)
    verified: bool = False

    def timed(self, name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.stages[name] = time.perf_counter() - start
        return out

    def as_json(self) -> dict:
        return {"sector_size": str(self.sector_size), "stages": dict(self.stages), "verified": self.verified}

    def table(self) -> str:
        rows = [f"{'stage':<16}{'seconds':>12}"]
        rows += [f"{name:<16}{secs:>12.3f}" for name, secs in self.stages.items()]
        rows.append(f"{'total':<16}{sum(self.stages.values()):>12.3f}")
        rows.append(f"sector {self.sector_size}: proof {'verified' if self.verified else 'did NOT verify'}")
        return "\n".join(rows)


def write_random_piece(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            chunk = min(remaining, 1 << 20)
            f.write(os.urandom(chunk))
            remaining -= chunk
    return path


@dataclass(frozen=True)
class SealedSector:
    """What sealing one sector leaves behind, for snap and for tests."""

    proof: SealProof
    sector_id: int
    sealed: Path
    cache: Path
    pieces: list
    pre_commit: proofs.PC2Output


def seal_sector(sector_size: SectorSize, workdir: Path, piece_path: Path | None = None,
                cc: bool = False, sector_id: int = 1, prove: bool = True) -> tuple[StageTimes, SealedSector, bytes]:
    """Seal one sector through every stage; returns (times, sealed sector, proof bytes).

    `prove=False` stops after PC2: the replica exists (enough to snap it) but has no proof.
    """
    proof = SealProof.for_size(sector_size)
    workdir.mkdir(parents=True, exist_ok=True)
    staged, sealed, cache = workdir / "staged", workdir / "sealed", workdir / "cache"
    shutil.rmtree(cache, ignore_errors=True)  # a tree or layers left by an earlier run would be reused
    cache.mkdir()
    sealed.write_bytes(b"")
    t = StageTimes(proof.sector_size)

    if cc:
        pieces = proofs.cc_pieces(proof)
        t.timed("tree_d", proofs.build_tree_d, proof, None, cache)
        staged_arg = None
    else:
        if piece_path is None:
            piece_path = write_random_piece(workdir / "piece", proof.sector_size.unpadded)
        staged.write_bytes(b"")
        piece = t.timed("add_piece", proofs.add_piece, proof, piece_path, staged)
        pieces = [piece]
        with open(staged, "r+b") as f:  # the staged file holds the whole (zero-filled) sector
            f.truncate(proof.sector_size)
        t.timed("tree_d", proofs.build_tree_d, proof, staged, cache)
        staged_arg = staged

    pc1_out = t.timed("pc1", proofs.pc1, proof, cache, staged_arg, sealed, PROVER_ID, sector_id, TICKET, pieces)
    pc2_out = t.timed("pc2", proofs.pc2, pc1_out, cache, sealed)
    sector = SealedSector(proof, sector_id, sealed, cache, pieces, pc2_out)
    if not prove:
        return t, sector, b""
    c1_out = t.timed("c1", proofs.c1, proof, cache, sealed, PROVER_ID, sector_id, TICKET, SEED, pc2_out, pieces)
    snark = t.timed("c2", proofs.c2, c1_out, PROVER_ID, sector_id)
    t.verified = t.timed(
        "verify", proofs.verify_seal, proof, pc2_out.comm_r, pc2_out.comm_d, PROVER_ID, sector_id, TICKET, SEED, snark
    )
    return t, sector, snark


def snap_sector(sector_size: SectorSize, workdir: Path) -> StageTimes:
    """Seal a CC sector (through PC2: snap needs no seal proof), upgrade it with random deal data,
    and prove the update."""
    _, cc, _ = seal_sector(sector_size, workdir / "cc", cc=True, prove=False)
    update = cc.proof.update_proof
    snap_dir = workdir / "snap"
    snap_dir.mkdir(parents=True, exist_ok=True)
    staged, replica, cache = snap_dir / "staged", snap_dir / "update", snap_dir / "update-cache"
    cache.mkdir(exist_ok=True)
    with open(replica, "wb") as f:  # the library wants the new replica as big as the sector key
        f.truncate(cc.proof.sector_size)
    staged.write_bytes(b"")
    t = StageTimes(cc.proof.sector_size)

    piece_path = write_random_piece(snap_dir / "piece", cc.proof.sector_size.unpadded)
    piece = t.timed("add_piece", proofs.add_piece, cc.proof, piece_path, staged)
    with open(staged, "r+b") as f:
        f.truncate(cc.proof.sector_size)
    encoded = t.timed("snap_encode", proofs.snap_encode, update, replica, cache, cc.sealed, cc.cache, staged, [piece])
    comm_r_old = cc.pre_commit.comm_r
    vanilla = t.timed("snap_vanilla", proofs.snap_partition_proofs, update, comm_r_old, encoded, cc.sealed, cc.cache,
                      replica, cache)
    snark = t.timed("snap_prove", proofs.snap_prove, update, vanilla, comm_r_old, encoded)
    t.verified = t.timed("verify", proofs.snap_verify, update, snark, comm_r_old, encoded.comm_r_new,
                         encoded.comm_d_new)
    return t
