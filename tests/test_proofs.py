"""The Rust core through the Python API: real 2KiB seals and snaps, bad inputs, GIL release."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from damocles_py import bench, proofs
from damocles_py.proofs import InvalidInput, ParametersMissing, ProofsError, SealProof, SectorSize

PROOF = SealProof.StackedDrg2KiBV1_1


@pytest.fixture(scope="module")
def sealed_with_gil_probe(tmp_path_factory):
    """One real 2KiB sector sealed through every stage (shared by the tests below), while a Python
    thread ticks: the longest gap between ticks tells whether the GIL was held during C2."""
    out = []
    duration, gap = _max_gap_while(lambda: out.append(bench.seal_sector(SectorSize.parse("2KiB"),
                                                                        tmp_path_factory.mktemp("seal"))))
    return out[0], duration, gap


@pytest.fixture(scope="module")
def sealed(sealed_with_gil_probe):
    return sealed_with_gil_probe[0]


def verifies(comm_r, comm_d, seed, proof_bytes, sector_id=1):
    try:
        return proofs.verify_seal(PROOF, comm_r, comm_d, bench.PROVER_ID, sector_id, bench.TICKET, seed, proof_bytes)
    except ProofsError:
        return False  # a malformed proof may fail to parse: it does not verify either


def test_full_seal_verifies(sealed):
    times, sector, snark = sealed
    assert times.verified
    assert set(times.stages) == {"add_piece", "tree_d", "pc1", "pc2", "c1", "c2", "verify"}
    assert verifies(sector.pre_commit.comm_r, sector.pre_commit.comm_d, bench.SEED, snark)


def test_flipped_byte_does_not_verify(sealed):
    _, sector, snark = sealed
    for index in (0, len(snark) // 2, len(snark) - 1):
        bad = bytearray(snark)
        bad[index] ^= 0x01
        assert not verifies(sector.pre_commit.comm_r, sector.pre_commit.comm_d, bench.SEED, bytes(bad))


def test_other_seed_or_sector_does_not_verify(sealed):
    _, sector, snark = sealed
    assert not verifies(sector.pre_commit.comm_r, sector.pre_commit.comm_d, b"\x09" * 32, snark)
    assert not verifies(sector.pre_commit.comm_r, sector.pre_commit.comm_d, bench.SEED, snark, sector_id=2)


def test_unseal_returns_the_piece(sealed, tmp_path):
    _, sector, _ = sealed
    piece_data = (sector.sealed.parent / "piece").read_bytes()
    out = tmp_path / "unsealed"
    n = proofs.unseal_range(PROOF, sector.cache, sector.sealed, out, bench.PROVER_ID, sector.sector_id,
                            sector.pre_commit.comm_d, bench.TICKET, 0, 1016)
    assert n == 1016
    assert out.read_bytes() == piece_data[:1016]


def test_snap_encode_prove_verify(tmp_path):
    times = bench.snap_sector(SectorSize.parse("2KiB"), tmp_path)
    assert times.verified
    assert {"snap_encode", "snap_vanilla", "snap_prove", "verify"} <= set(times.stages)


def test_piece_commitment_matches_add_piece(tmp_path):
    piece = bench.write_random_piece(tmp_path / "p", 1000)
    staged = tmp_path / "staged"
    staged.write_bytes(b"")
    added = proofs.add_piece(PROOF, piece, staged)
    assert added == proofs.piece_commitment(PROOF, piece)
    assert added.size == 1016  # the smallest valid piece holding 1000 bytes


# ---------------------------------------------------------------------------------------------
# bad input gets an error naming the argument


def _pc1(tmp_path, **override):
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    sealed = tmp_path / "sealed"
    sealed.write_bytes(b"")
    args = dict(proof=PROOF, cache_dir=cache, staged_path=None, sealed_path=sealed, prover_id=b"\0" * 32,
                sector_id=1, ticket=b"\1" * 32, pieces=proofs.cc_pieces(PROOF))
    args.update(override)
    return proofs.pc1(**args)


def test_wrong_ticket_length(tmp_path):
    with pytest.raises(InvalidInput, match="ticket: must be 32 bytes, got 31"):
        _pc1(tmp_path, ticket=b"\1" * 31)


def test_wrong_seed_length(sealed):
    _, sector, snark = sealed
    with pytest.raises(InvalidInput, match="seed: must be 32 bytes, got 33"):
        proofs.verify_seal(PROOF, sector.pre_commit.comm_r, sector.pre_commit.comm_d, bench.PROVER_ID, 1,
                           bench.TICKET, b"\2" * 33, snark)


def test_piece_bigger_than_sector(tmp_path):
    piece = bench.write_random_piece(tmp_path / "big", 4000)
    staged = tmp_path / "staged"
    staged.write_bytes(b"")
    with pytest.raises(InvalidInput, match="piece_path: .* bigger than a 2KiB sector"):
        proofs.add_piece(PROOF, piece, staged)


def test_pieces_overflowing_the_sector(tmp_path):
    pieces = [proofs.PieceInfo(b"\0" * 32, 1016), proofs.PieceInfo(b"\0" * 32, 2032)]
    with pytest.raises(InvalidInput, match="pieces: pieces take 3072 padded bytes"):
        proofs.compute_comm_d(PROOF, pieces)


def test_sector_size_mismatch(tmp_path):
    staged = tmp_path / "staged"
    staged.write_bytes(b"\0" * 4096)
    (tmp_path / "cache").mkdir()
    with pytest.raises(InvalidInput, match=r"staged_path: .* is 4096 bytes but StackedDrg2KiBV1_1 works on 2KiB"):
        proofs.build_tree_d(PROOF, staged, tmp_path / "cache")
    with pytest.raises(InvalidInput, match="sector_size: '3KiB' is not a supported sector size"):
        SectorSize.parse("3KiB")


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(InvalidInput, match=r"path: .*nope does not exist"):
        proofs.piece_commitment(PROOF, tmp_path / "nope")
    with pytest.raises(InvalidInput, match="path: .* is not a regular file"):
        proofs.piece_commitment(PROOF, tmp_path)
    with pytest.raises(InvalidInput, match="cache_dir: .* is not a directory"):
        _pc1(tmp_path, cache_dir=tmp_path / "missing")


def test_unknown_proof_type():
    with pytest.raises(InvalidInput, match="proof: unknown seal proof type 'StackedDrg3KiBV1_1'"):
        proofs.cc_pieces("StackedDrg3KiBV1_1")


def test_library_errors_carry_its_message(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "sealed").write_bytes(b"\0" * 2048)
    with pytest.raises(ProofsError, match="PC2: PC1 output is not valid"):
        proofs.pc2(proofs.PC1Output(PROOF, b"not json"), tmp_path / "cache", tmp_path / "sealed")


def test_missing_parameters_name_the_fix(tmp_path):
    """A process whose parameter cache is empty gets ParametersMissing with the generate command."""
    code = (
        "from damocles_py import proofs\n"
        "try:\n"
        "    proofs.verify_seal('StackedDrg2KiBV1_1', b'0'*32, b'0'*32, b'0'*32, 1, b'0'*32, b'0'*32, b'x')\n"
        "except proofs.ParametersMissing as e:\n"
        "    print(e)\n"
    )
    env = dict(os.environ, FIL_PROOFS_PARAMETER_CACHE=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert "verify_seal needs Groth parameters that are missing" in out
    assert "damocles-worker params generate --sector-size 2KiB" in out
    assert ParametersMissing.__name__  # the type raised above


# ---------------------------------------------------------------------------------------------
# the GIL is released during heavy calls


def _max_gap_while(fn) -> tuple[float, float]:
    """Run fn while a Python thread ticks; return (call duration, longest gap between ticks)."""
    ticks: list[float] = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    time.sleep(0.02)
    start = time.perf_counter()
    fn()
    end = time.perf_counter()
    stop.set()
    t.join()
    during = [x for x in ticks if start <= x <= end]
    points = [start, *during, end]
    return end - start, max(b - a for a, b in zip(points, points[1:]))


def test_gil_released_during_pc1_and_c2(tmp_path, sealed_with_gil_probe):
    proof = SealProof.StackedDrg8MiBV1_1  # PC1 needs no parameters; 8MiB makes it last seconds
    cache = tmp_path / "cache"
    cache.mkdir()
    sealed = tmp_path / "sealed"
    sealed.write_bytes(b"")
    pieces = proofs.cc_pieces(proof)
    duration, gap = _max_gap_while(
        lambda: proofs.pc1(proof, cache, None, sealed, b"\0" * 32, 1, b"\1" * 32, pieces))
    # A held GIL would stall the ticker for the whole call (gap = duration); relative to the call's
    # own length, so a faster or busier machine changes nothing.
    assert gap < min(1.0, duration / 3), f"the ticker stalled {gap:.3f}s during a {duration:.3f}s PC1"

    (times, _, _), duration, gap = sealed_with_gil_probe
    assert times.stages["c2"] > 1.0  # C2 dominates the seal, so a held GIL would show as a long gap
    assert gap < min(1.0, duration / 3), f"the ticker stalled {gap:.3f}s during a {duration:.3f}s seal"
