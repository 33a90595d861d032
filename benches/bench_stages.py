"""Per-stage cost of the Python path against a pure-Rust harness calling the same library functions.

    python benches/bench_stages.py [--sizes 2KiB,8MiB] [--rounds 3]

Both paths seal the same piece into a sector `--rounds` times, each in one process: the Python one
through `damocles_py.proofs` (the path the sealing threads use), the Rust one through the
`stage-bench` binary built from this crate (`rust/src/bin/stage_bench.rs`, calling `stages::*`
directly). Both processes warm up alike (parameters and parent cache are loaded once per process),
and the best round of each stage is compared; C1 and verify, which take milliseconds, are timed
as the best of 10 calls on both sides. Target: the Python
path within 3% of Rust per stage at 8MiB.

It also prints PC1's hashing rate as a fraction of this machine's single-core SHA-256 rate: SDR
labelling is sequential SHA-256, so that rate is PC1's physical limit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pc1 import sha256_rate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from damocles_py import bench, proofs  # noqa: E402
from damocles_py.proofs import SealProof, SectorSize, params  # noqa: E402

STAGES = ["add_piece", "tree_d", "pc1", "pc2", "c1", "c2", "verify"]
LAYERS = 2  # SDR layers of every test-size sector
SHA_BLOCKS_PER_LABEL = 20  # 64-byte SHA-256 blocks hashed per node label (replica id, index, 37 parents)


def build_rust_harness() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", params.cache_root() / "cargo-target"))
    env = dict(os.environ, CARGO_TARGET_DIR=str(target))
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "stage-bench"], cwd=ROOT, env=env, check=True)
    return target / "release" / "stage-bench"


def rust_rounds(binary: Path, size: SectorSize, piece: Path, work: Path, rounds: int) -> list[dict[str, float]]:
    """`rounds` seals in one Rust process, so that it warms up (parameters, parent cache) as the
    Python process does over its own rounds."""
    out = subprocess.run([str(binary), str(int(size)), str(piece), str(work), str(rounds)], check=True,
                         capture_output=True, text=True).stdout
    results = [json.loads(line) for line in out.strip().splitlines() if line.startswith("{")]
    assert len(results) == rounds and all(r["verified"] for r in results), "the Rust harness failed to verify"
    return [r["stages"] for r in results]


CHEAP_STAGE_REPEATS = 10  # C1 and verify take milliseconds: best of this many calls, as in stage-bench


def best_of(n: int, fn) -> float:
    best = float("inf")
    for _ in range(n):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def python_rounds(size: SectorSize, piece: Path, work: Path, rounds: int) -> list[dict[str, float]]:
    out = []
    for _ in range(rounds):
        times, s, snark = bench.seal_sector(size, work, piece_path=piece)
        assert times.verified, "the Python path produced a proof that does not verify"
        n = CHEAP_STAGE_REPEATS - 1  # seal_sector timed one call already
        c1 = best_of(n, lambda: proofs.c1(s.proof, s.cache, s.sealed, bench.PROVER_ID, s.sector_id, bench.TICKET,
                                          bench.SEED, s.pre_commit, s.pieces))
        verify = best_of(n, lambda: proofs.verify_seal(s.proof, s.pre_commit.comm_r, s.pre_commit.comm_d,
                                                       bench.PROVER_ID, s.sector_id, bench.TICKET, bench.SEED, snark))
        out.append({**times.stages, "c1": min(times.stages["c1"], c1), "verify": min(times.stages["verify"], verify)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2KiB,8MiB")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sizes = [SectorSize.parse(s) for s in args.sizes.split(",")]
    for size in sizes:
        params.generate(size, (params.Circuit.PoRep,))
    binary = build_rust_harness()
    sha_rate = sha256_rate().large_buffer * 64  # bytes per CPU-second, one core (bench_pc1)
    print(f"single-core SHA-256: {sha_rate / 1e6:.0f} MB/s")

    report = {}
    for size in sizes:
        best_py = {s: float("inf") for s in STAGES}
        best_rs = dict(best_py)
        with tempfile.TemporaryDirectory(prefix="damocles-bench-") as tmp:
            tmp = Path(tmp)
            piece = bench.write_random_piece(tmp / "piece", size.unpadded)
            runs = ((best_rs, rust_rounds(binary, size, piece, tmp / "rust", args.rounds)),
                    (best_py, python_rounds(size, piece, tmp / "python", args.rounds)))
            for best, rounds in runs:
                for stages in rounds:
                    for s in STAGES:
                        best[s] = min(best[s], stages[s])
        print(f"\n{size}: best of {args.rounds} rounds (seconds)")
        print(f"{'stage':<10}{'python':>10}{'rust':>10}{'python/rust':>13}")
        for s in STAGES:
            ratio = best_py[s] / best_rs[s] if best_rs[s] > 0 else float("nan")
            print(f"{s:<10}{best_py[s]:>10.4f}{best_rs[s]:>10.4f}{ratio:>13.3f}")
        nodes = int(size) // 32
        pc1_rate = LAYERS * nodes * SHA_BLOCKS_PER_LABEL * 64 / best_py["pc1"]
        print(f"PC1 hashing: {pc1_rate / 1e6:.0f} MB/s = {pc1_rate / sha_rate:.2f} of single-core SHA-256")
        report[str(size)] = {"python": best_py, "rust": best_rs, "pc1_sha_fraction": pc1_rate / sha_rate}
    print("\nJSON " + json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
