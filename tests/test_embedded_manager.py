"""The embedded sector manager: a real SQLite file, real commP, real 2KiB seal and snap proofs.

Time is a fake clock the tests advance: it is the simulated chain's only time source, so
"wait until the ticket expires" is one call. The real seal (and the snap built on it) runs
once per module in a module-scoped fixture, because a 2KiB C2 takes a while.
"""

from __future__ import annotations

import itertools
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from damocles_py import proofs
from damocles_py.config.schema import EmbeddedManagerConfig
from damocles_py.manager.db import Submission, UpgradeState
from damocles_py.manager.embedded import EmbeddedManager, persisted_files, sector_pieces
from damocles_py.manager.interface import (
    REASON_SEED_EXPIRED,
    REASON_TICKET_EXPIRED,
    AcquireDealsSpec,
    AllocatedSector,
    AllocateSpec,
    Deal,
    ManagerRequestError,
    OnChainState,
    PreCommitInfo,
    SectorId,
    SnapUpProofInfo,
    StateReport,
    StoreInfo,
    SubmitResponse,
    SubmitResult,
    Ticket,
    WorkerRef,
)
from damocles_py.proofs import SealProof, SectorSize

MINER = 1000
PROOF = SealProof.StackedDrg2KiBV1_1
SECTOR_SIZE = SectorSize(2048)
WORKER = WorkerRef("worker-a", 0, "/sealing/0")
OTHER_WORKER = WorkerRef("worker-b", 1, "/sealing/1")
FAKE_COMM_R = bytes(range(1, 33))


class FakeClock:
    """The chain's time source, advanced by hand (block time is 1s: one second, one epoch)."""

    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_manager(state_dir: Path, clock: FakeClock, pieces_dir: Path | None = None,
                 stores: list[StoreInfo] | None = None, **settings) -> EmbeddedManager:
    config = EmbeddedManagerConfig(miner=MINER, sector_size=SECTOR_SIZE, state_dir=state_dir,
                                   pieces_dir=pieces_dir, **settings)
    return EmbeddedManager(config, stores or [], clock=clock, piece_scan_interval=None)  # imports: by the test


def write_piece(directory: Path, name: str, size: int) -> Path:
    path = directory / name
    path.write_bytes(os.urandom(size))
    return path


def write_persisted_files(store_root: Path, sector: SectorId, is_upgrade: bool, with_p_aux: bool = True) -> None:
    replica, cache = persisted_files(store_root, sector, is_upgrade)
    replica.parent.mkdir(parents=True, exist_ok=True)
    replica.write_bytes(b"\0" * SECTOR_SIZE)
    cache.mkdir(parents=True, exist_ok=True)
    if with_p_aux:
        (cache / "p_aux").write_bytes(b"\0" * 64)


CC_COMM_D = proofs.compute_comm_d(PROOF, proofs.cc_pieces(PROOF))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pieces_dir(tmp_path) -> Path:
    directory = tmp_path / "pieces"
    directory.mkdir()
    return directory


@pytest.fixture
def store(tmp_path) -> StoreInfo:
    root = tmp_path / "store-a"
    root.mkdir()
    return StoreInfo("store-a", str(root))


@pytest.fixture(params=["sqlite", "postgresql"])
def manager(request, tmp_path, clock, pieces_dir, store):
    """The manager on each backend: its SQLite file, and a real PostgreSQL database (tests/pg.py)."""
    db = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    m = make_manager(tmp_path / "manager", clock, pieces_dir, [store],
                     ticket_expiry_epochs=5, seed_expiry_epochs=5, db=db)
    yield m
    m.close()


_thread_numbers: dict[str, itertools.count] = {}  # by manager state dir
_thread_numbers_lock = threading.Lock()


def allocate(m: EmbeddedManager) -> AllocatedSector:
    """A new sector, for another thread of worker-a at each call (the first is WORKER): a thread
    that asks again gets back the sector it holds."""
    with _thread_numbers_lock:
        thread = next(_thread_numbers.setdefault(str(m.config.state_dir), itertools.count()))
    sector = m.allocate_sector(AllocateSpec(), replace(WORKER, thread=thread))
    assert sector is not None
    return sector


def pre_commit_cc(m: EmbeddedManager, sector: AllocatedSector) -> PreCommitInfo:
    """An accepted CC pre-commit (a made-up comm_r: only the proof check would notice)."""
    info = PreCommitInfo(FAKE_COMM_R, CC_COMM_D, m.assign_ticket(sector.id))
    assert m.submit_pre_commit(sector, info, reset=False).result is SubmitResult.Accepted
    return info


def land_pre_commit_cc(m: EmbeddedManager, clock: FakeClock, sector: AllocatedSector) -> PreCommitInfo:
    info = pre_commit_cc(m, sector)
    clock.advance(1)
    assert m.poll_pre_commit_state(sector.id).state is OnChainState.Landed
    return info


def wait_for_seed(m: EmbeddedManager, clock: FakeClock, sector: AllocatedSector):
    wait = m.wait_seed(sector)
    clock.advance(wait.delay_seconds)
    seed = m.wait_seed(sector).seed
    assert seed is not None
    return seed


# ---------------------------------------------------------------------------------------------
# the chain and allocation


def test_sector_numbers_are_unique_and_survive_a_restart(tmp_path, clock):
    first = make_manager(tmp_path / "manager", clock)
    numbers = [allocate(first).id.number for _ in range(3)]
    clock.advance(10)
    assert first.chain.epoch() == 10
    first.close()

    reopened = make_manager(tmp_path / "manager", clock)
    assert (tmp_path / "manager" / "manager.sqlite3").is_file()
    assert numbers == [1, 2, 3]
    assert allocate(reopened).id == SectorId(MINER, 4)
    assert reopened.chain.epoch() == 10  # genesis was persisted: epochs go on
    assert [s.id.number for s in reopened.sectors()] == [1, 2, 3, 4]
    assert reopened.sector(SectorId(MINER, 1)).holder == WORKER
    reopened.close()


def test_concurrent_allocations_get_distinct_numbers(manager):
    numbers: list[int] = []
    lock = threading.Lock()

    def allocate_many():
        for _ in range(10):
            number = allocate(manager).id.number
            with lock:
                numbers.append(number)

    threads = [threading.Thread(target=allocate_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == list(range(1, 41))


def test_allocate_honours_the_spec(manager):
    assert manager.allocate_sector(AllocateSpec(allowed_miners=(2000,)), WORKER) is None
    assert manager.allocate_sector(AllocateSpec(allowed_proofs=(SealProof.StackedDrg8MiBV1_1,)), WORKER) is None
    sector = manager.allocate_sector(AllocateSpec(allowed_miners=(MINER,), allowed_proofs=(PROOF,)), WORKER)
    assert sector == AllocatedSector(SectorId(MINER, 1), PROOF)


def test_chain_randomness_and_waits(manager, clock):
    chain = manager.chain
    assert chain.epoch() == 0
    a = chain.randomness("ticket", 5, b"x")
    assert len(a) == 32 and a == chain.randomness("ticket", 5, b"x")
    assert a != chain.randomness("seed", 5, b"x") != chain.randomness("ticket", 6, b"x")
    clock.advance(2.5)
    assert chain.epoch() == 2
    assert chain.seconds_until(4) == pytest.approx(1.5)
    assert chain.seconds_until(1) == 0.0


def test_unknown_sectors_are_refused(manager):
    unknown = SectorId(MINER, 7)
    calls = [
        lambda: manager.acquire_deals(unknown, AcquireDealsSpec()),
        lambda: manager.assign_ticket(unknown),
        lambda: manager.poll_pre_commit_state(unknown),
        lambda: manager.wait_seed(AllocatedSector(unknown, PROOF)),
        lambda: manager.submit_proof(unknown, b"", reset=False),
        lambda: manager.reserve_store(unknown, 1, ["store-a"]),
        lambda: manager.report_finalized(unknown, worker=WORKER),
        lambda: manager.report_aborted(unknown, "x", worker=WORKER),
        lambda: manager.request_rebuild(unknown),
    ]
    for call in calls:
        with pytest.raises(ManagerRequestError, match="unknown sector 1000-7"):
            call()


# ---------------------------------------------------------------------------------------------
# deals


def test_deals_come_from_piece_files_with_real_commp(manager, pieces_dir, caplog):
    small = write_piece(pieces_dir, "a-small", 500)  # a 508-byte piece, 512 padded
    large = write_piece(pieces_dir, "b-large", 1000)  # 1016, 1024 padded
    write_piece(pieces_dir, "c-large", 1000)  # would not fit next to the two above
    write_piece(pieces_dir, "d-too-big", 3000)  # bigger than a 2KiB sector: never a deal
    write_piece(pieces_dir, ".e-being-written", 100)
    assert manager.acquire_deals(allocate(manager).id, AcquireDealsSpec()) == []  # not imported yet: CC
    manager.import_pieces()  # what the background scanner does; commP is never computed in a call

    first = allocate(manager)
    deals = manager.acquire_deals(first.id, AcquireDealsSpec())
    assert [d.piece_path for d in deals] == [str(large), str(small)]  # largest first
    assert [d.payload_size for d in deals] == [1000, 500]
    assert [d.piece for d in deals] == [proofs.piece_commitment(PROOF, large), proofs.piece_commitment(PROOF, small)]
    assert [d.piece.size for d in deals] == [1016, 508]
    assert manager.acquire_deals(first.id, AcquireDealsSpec()) == deals  # idempotent
    assert sum("d-too-big" in r.message for r in caplog.records) == 1  # warned once

    second = allocate(manager)
    assert [Path(d.piece_path).name for d in manager.acquire_deals(second.id, AcquireDealsSpec())] == ["c-large"]
    assert manager.acquire_deals(allocate(manager).id, AcquireDealsSpec()) == []  # the pool is empty: CC
    manager.import_pieces()
    assert len(manager.deals()) == 3


def test_acquire_deals_honours_max_deals(manager, pieces_dir):
    for name in ("a", "b", "c"):
        write_piece(pieces_dir, name, 100)
    manager.import_pieces()
    deals = manager.acquire_deals(allocate(manager).id, AcquireDealsSpec(max_deals=2))
    assert len(deals) == 2


def test_aborted_sectors_release_their_deals(manager, pieces_dir, store):
    write_piece(pieces_dir, "piece", 1000)
    manager.import_pieces()
    first = allocate(manager)
    deals = manager.acquire_deals(first.id, AcquireDealsSpec())
    assert len(deals) == 1
    assert manager.reserve_store(first.id, 1, [store.name]) == store.name

    manager.report_aborted(first.id, "pc1 failed for good", worker=WORKER)
    record = manager.sector(first.id)
    assert record.aborted and record.abort_reason == "pc1 failed for good"
    assert manager.reservations() == []
    with pytest.raises(ManagerRequestError, match="aborted"):
        manager.assign_ticket(first.id)
    assert manager.acquire_deals(allocate(manager).id, AcquireDealsSpec()) == deals


def staged_comm_d(deals: list[Deal], workdir: Path) -> bytes:
    """comm_d as sealing computes it: the tree-d root of the staged sector holding the deals."""
    workdir.mkdir()
    staged = workdir / "staged"
    staged.write_bytes(b"")
    added: list[proofs.PieceInfo] = []
    for deal in deals:
        added.append(proofs.add_piece(PROOF, deal.piece_path, staged, added, piece_size=deal.piece.size))
    with open(staged, "r+b") as f:
        f.truncate(SECTOR_SIZE)
    (workdir / "cache").mkdir()
    return proofs.build_tree_d(PROOF, staged, workdir / "cache")


def test_pre_commit_comm_d_must_match_the_deals(manager, pieces_dir, tmp_path):
    write_piece(pieces_dir, "a", 200)  # a 254-byte piece, 256 padded
    write_piece(pieces_dir, "b", 400)  # 508, 512 padded: 1280 bytes of zeros fill the sector
    manager.import_pieces()
    sector = allocate(manager)
    deals = manager.acquire_deals(sector.id, AcquireDealsSpec())
    assert len(deals) == 2
    ticket = manager.assign_ticket(sector.id)

    as_cc = manager.submit_pre_commit(sector, PreCommitInfo(FAKE_COMM_R, CC_COMM_D, ticket), reset=False)
    assert as_cc.result is SubmitResult.Rejected and "comm_d" in as_cc.desc
    assert manager.poll_pre_commit_state(sector.id).state is OnChainState.Failed
    deals_only = proofs.compute_comm_d(PROOF, [d.piece for d in deals])  # without the zero fill
    no_fill = manager.submit_pre_commit(sector, PreCommitInfo(FAKE_COMM_R, deals_only, ticket), reset=False)
    assert no_fill.result is SubmitResult.Rejected

    comm_d = staged_comm_d(deals, tmp_path / "staging")
    assert comm_d == proofs.compute_comm_d(PROOF, sector_pieces(PROOF, deals))
    ok = manager.submit_pre_commit(sector, PreCommitInfo(FAKE_COMM_R, comm_d, ticket), reset=False)
    assert ok.result is SubmitResult.Accepted, ok.desc


# ---------------------------------------------------------------------------------------------
# tickets, pre-commits, seeds


def test_ticket_expiry_rejects_the_pre_commit(manager, clock):
    sector = allocate(manager)
    ticket = manager.assign_ticket(sector.id)
    assert ticket.epoch == 0
    clock.advance(6)  # expiry is 5 epochs

    expired = manager.submit_pre_commit(sector, PreCommitInfo(FAKE_COMM_R, CC_COMM_D, ticket), reset=False)
    assert expired.result is SubmitResult.Rejected and expired.desc.startswith(REASON_TICKET_EXPIRED)
    status = manager.poll_pre_commit_state(sector.id)
    assert status.state is OnChainState.Failed and "ticket expired" in status.desc

    fresh = manager.assign_ticket(sector.id)
    assert fresh.epoch == 6 and fresh.value != ticket.value
    again = manager.submit_pre_commit(sector, PreCommitInfo(FAKE_COMM_R, CC_COMM_D, fresh), reset=False)
    assert again.result is SubmitResult.Accepted


def test_pre_commit_with_a_ticket_not_assigned_is_rejected(manager):
    sector = allocate(manager)
    manager.assign_ticket(sector.id)
    forged = Ticket(b"\7" * 32, 0)
    response = manager.submit_pre_commit(sector, PreCommitInfo(FAKE_COMM_R, CC_COMM_D, forged), reset=False)
    assert response.result is SubmitResult.Rejected and "not the ticket assigned" in response.desc


def test_pre_commit_duplicate_mismatch_and_reset(manager, clock):
    sector = allocate(manager)
    assert manager.poll_pre_commit_state(sector.id).state is OnChainState.NotFound
    info = pre_commit_cc(manager, sector)
    assert manager.poll_pre_commit_state(sector.id).state is OnChainState.Pending

    assert manager.submit_pre_commit(sector, info, reset=False).result is SubmitResult.DuplicateSubmit
    other = PreCommitInfo(b"\2" * 32, info.comm_d, info.ticket)
    assert manager.submit_pre_commit(sector, other, reset=False).result is SubmitResult.MismatchedSubmission
    assert manager.sector(sector.id).pre_commit.info == info

    assert manager.submit_pre_commit(sector, other, reset=True).result is SubmitResult.Accepted
    assert manager.sector(sector.id).pre_commit.info == other
    clock.advance(1)
    assert manager.poll_pre_commit_state(sector.id).state is OnChainState.Landed


def test_seed_comes_after_the_pre_commit_delay(manager, clock):
    sector = allocate(manager)
    with pytest.raises(ManagerRequestError, match="no landed pre-commit"):
        manager.wait_seed(sector)
    land_pre_commit_cc(manager, clock, sector)  # submitted at epoch 0, landed at 1

    wait = manager.wait_seed(sector)
    assert wait.seed is None and wait.delay_seconds == pytest.approx(3.0)  # delay: 3 epochs
    clock.advance(2)
    assert manager.wait_seed(sector).seed is None
    clock.advance(1)
    seed = manager.wait_seed(sector).seed
    assert seed.epoch == 4 and len(seed.value) == 32
    clock.advance(1)
    assert manager.wait_seed(sector).seed == seed  # the seed of an epoch never changes
    assert manager.sector(sector.id).seed == seed


def test_proofs_need_a_seed_and_expire_with_it(manager, clock):
    sector = allocate(manager)
    land_pre_commit_cc(manager, clock, sector)
    with pytest.raises(ManagerRequestError, match="no seed"):
        manager.submit_proof(sector.id, b"\0" * 192, reset=False)
    wait_for_seed(manager, clock, sector)
    clock.advance(6)
    response = manager.submit_proof(sector.id, b"\0" * 192, reset=False)
    assert response.result is SubmitResult.Rejected and response.desc.startswith(REASON_SEED_EXPIRED)
    assert manager.poll_proof_state(sector.id).state is OnChainState.Failed


# ---------------------------------------------------------------------------------------------
# stores


def test_reserve_store_picks_the_freest_writable_candidate(tmp_path, clock):
    roots = {name: tmp_path / name for name in ("a", "b", "ro")}
    for root in roots.values():
        root.mkdir()
    stores = [StoreInfo("a", str(roots["a"])), StoreInfo("b", str(roots["b"])),
              StoreInfo("ro", str(roots["ro"]), readonly=True)]
    m = make_manager(tmp_path / "manager", clock, stores=stores)
    one, two, three = allocate(m), allocate(m), allocate(m)
    size = 1 << 20

    first = m.reserve_store(one.id, size, ["a", "b", "ro", "nowhere"])
    # Both stores share a filesystem: the first reservation makes the other one the freest.
    second = m.reserve_store(two.id, size, ["a", "b"])
    assert {first, second} == {"a", "b"}
    assert m.reserve_store(three.id, size, ["ro", "nowhere"]) is None
    assert m.reserve_store(three.id, 1 << 62, ["a", "b"]) is None
    assert {(r.sector, r.store) for r in m.reservations()} == {(one.id, first), (two.id, second)}

    m.report_aborted(one.id, "gave up", worker=WORKER)  # a final report releases the reservation
    assert [r.sector for r in m.reservations()] == [two.id]
    m.close()


def test_submit_persisted_checks_the_files(manager, store):
    sector = allocate(manager)
    root = Path(store.path)
    assert manager.submit_persisted(sector.id, store.name, is_upgrade=False) is False
    write_persisted_files(root, sector.id, is_upgrade=False, with_p_aux=False)
    assert manager.submit_persisted(sector.id, store.name, is_upgrade=False) is False
    write_persisted_files(root, sector.id, is_upgrade=False)
    assert manager.submit_persisted(sector.id, "unknown-store", is_upgrade=False) is False
    assert manager.submit_persisted(sector.id, store.name, is_upgrade=True) is False  # no update files
    assert manager.submit_persisted(sector.id, store.name, is_upgrade=False) is True
    assert manager.sector(sector.id).store == store.name


# ---------------------------------------------------------------------------------------------
# reports, operator actions, rebuild


def test_report_state_history_and_operator_abort(manager, pieces_dir):
    write_piece(pieces_dir, "piece", 1000)
    manager.import_pieces()
    sector = allocate(manager)
    manager.acquire_deals(sector.id, AcquireDealsSpec())
    report = StateReport(WORKER, "Empty", "Allocated", "SectorAllocated")
    assert manager.report_state(sector.id, report).finalized is False
    failure = StateReport(WORKER, "Allocated", "Allocated", "Retry", "temp", "io", "disk hiccup")
    manager.report_state(sector.id, failure)

    rows = manager.history(sector.id)
    assert [(r.prev, r.next, r.event) for r in rows] == [
        ("Empty", "Allocated", "SectorAllocated"), ("Allocated", "Allocated", "Retry")]
    assert rows[1].worker == WORKER and (rows[1].failure_level, rows[1].failure_desc) == ("temp", "disk hiccup")

    manager.abort_sector(sector.id, "operator: bad disk")
    response = manager.report_state(sector.id, report)
    assert response.finalized is True and response.abort_reason == "operator: bad disk"
    assert all(d.sector is None for d in manager.deals())


def test_an_unproven_sector_is_neither_finished_nor_rebuilt(manager, clock, store):
    """(The rebuild of a proven sector: tests/test_manager_hardening.py, with a real proof.)"""
    sector = allocate(manager)
    with pytest.raises(ManagerRequestError, match="not a finished"):
        manager.request_rebuild(sector.id)
    land_pre_commit_cc(manager, clock, sector)
    write_persisted_files(Path(store.path), sector.id, is_upgrade=False)
    assert manager.submit_persisted(sector.id, store.name, is_upgrade=False)
    with pytest.raises(ManagerRequestError, match="no accepted proof"):
        manager.report_finalized(sector.id, worker=WORKER)
    assert not manager.sector(sector.id).finished
    with pytest.raises(ManagerRequestError, match="not a finished"):
        manager.request_rebuild(sector.id)


# ---------------------------------------------------------------------------------------------
# one real 2KiB seal, then a real snap-up of it


def require_parameters() -> None:
    for circuit in (proofs.params.Circuit.PoRep, proofs.params.Circuit.Update):
        proofs.params.require(circuit, SECTOR_SIZE, "the real seal tests")


@dataclass
class RealRun:
    manager: EmbeddedManager
    clock: FakeClock
    root: Path
    store: StoreInfo
    sector: AllocatedSector
    pre_commit: proofs.PC2Output
    proof: bytes = b""
    responses: dict[str, SubmitResponse] = field(default_factory=dict)
    states: dict[str, OnChainState] = field(default_factory=dict)
    persisted: bool = False


def seal_cc_sector(m: EmbeddedManager, store: StoreInfo, sector: AllocatedSector) -> tuple[Ticket, proofs.PC2Output]:
    """PC1 and PC2 of a CC sector, written straight into the store's layout."""
    sealed, cache = persisted_files(Path(store.path), sector.id, is_upgrade=False)
    sealed.parent.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True)
    sealed.write_bytes(b"")
    ticket = m.assign_ticket(sector.id)
    proofs.build_tree_d(PROOF, None, cache)
    prover_id = proofs.prover_id_from_miner(sector.id.miner)
    pc1 = proofs.pc1(PROOF, cache, None, sealed, prover_id, sector.id.number, ticket.value, proofs.cc_pieces(PROOF))
    return ticket, proofs.pc2(pc1, cache, sealed)


def prove(m: EmbeddedManager, store: StoreInfo, sector: AllocatedSector, ticket: Ticket,
          pre_commit: proofs.PC2Output, seed: bytes) -> bytes:
    sealed, cache = persisted_files(Path(store.path), sector.id, is_upgrade=False)
    prover_id = proofs.prover_id_from_miner(sector.id.miner)
    c1 = proofs.c1(PROOF, cache, sealed, prover_id, sector.id.number, ticket.value, seed, pre_commit,
                   proofs.cc_pieces(PROOF))
    return proofs.c2(c1, prover_id, sector.id.number)


@pytest.fixture(scope="module")
def sealed(tmp_path_factory) -> RealRun:
    """A CC sector sealed for real through the manager: ticket, pre-commit, seed, proof, persist."""
    require_parameters()
    root = tmp_path_factory.mktemp("real")
    (root / "pieces").mkdir()
    (root / "store").mkdir()
    store = StoreInfo("store", str(root / "store"))
    clock = FakeClock()
    m = make_manager(root / "manager", clock, root / "pieces", [store])
    sector = allocate(m)
    assert m.acquire_deals(sector.id, AcquireDealsSpec()) == []
    ticket, pc2 = seal_cc_sector(m, store, sector)
    run = RealRun(m, clock, root, store, sector, pc2)

    run.responses["pre_commit"] = m.submit_pre_commit(sector, PreCommitInfo(pc2.comm_r, pc2.comm_d, ticket), False)
    clock.advance(1)
    seed = wait_for_seed(m, clock, sector)
    run.proof = prove(m, store, sector, ticket, pc2, seed.value)

    flipped = bytearray(run.proof)
    flipped[len(flipped) // 2] ^= 0x01
    run.responses["flipped"] = m.submit_proof(sector.id, bytes(flipped), reset=False)
    run.states["after_flipped"] = m.poll_proof_state(sector.id).state
    run.responses["garbage"] = m.submit_proof(sector.id, b"not a proof", reset=False)
    run.responses["proof"] = m.submit_proof(sector.id, run.proof, reset=False)
    run.responses["again"] = m.submit_proof(sector.id, run.proof, reset=False)
    run.states["submitted"] = m.poll_proof_state(sector.id).state
    clock.advance(1)
    run.states["next_epoch"] = m.poll_proof_state(sector.id).state

    assert m.reserve_store(sector.id, 2 * SECTOR_SIZE, [store.name]) == store.name
    run.persisted = m.submit_persisted(sector.id, store.name, is_upgrade=False)
    m.report_finalized(sector.id, worker=m.sector(sector.id).holder)
    return run


def test_real_seal_proof_is_accepted(sealed):
    r = sealed.responses
    assert r["pre_commit"].result is SubmitResult.Accepted
    assert r["proof"].result is SubmitResult.Accepted, r["proof"].desc
    assert r["again"].result is SubmitResult.DuplicateSubmit
    assert sealed.states["submitted"] is OnChainState.Pending
    assert sealed.states["next_epoch"] is OnChainState.Landed
    record = sealed.manager.sector(sealed.sector.id)
    assert record.commit.state is Submission.Accepted and record.finished and record.store == sealed.store.name
    assert sealed.persisted is True
    assert sealed.manager.reservations() == []


def test_real_seal_bad_proofs_are_rejected(sealed):
    flipped, garbage = sealed.responses["flipped"], sealed.responses["garbage"]
    assert flipped.result is SubmitResult.Rejected and flipped.desc
    assert sealed.states["after_flipped"] is OnChainState.Failed
    assert garbage.result is SubmitResult.Rejected and "malformed" in garbage.desc


@dataclass
class SnapRun:
    candidate_without_deals: object
    abandoned: object
    candidate: object
    candidate_while_upgrading: object
    responses: dict[str, SubmitResponse]
    persisted: bool


@pytest.fixture(scope="module")
def snapped(sealed) -> SnapRun:
    """The sealed CC sector upgraded for real with one deal from the pieces dir."""
    m, store = sealed.manager, sealed.store
    without_deals = m.allocate_snapup_sector(AllocateSpec(), AcquireDealsSpec(), OTHER_WORKER)
    write_piece(sealed.root / "pieces", "deal", 1000)
    m.import_pieces()
    abandoned = m.allocate_snapup_sector(AllocateSpec(), AcquireDealsSpec(), OTHER_WORKER)
    m.report_aborted(abandoned.sector.id, "snap thread crashed", worker=OTHER_WORKER)  # gives up the upgrade, not the sector
    candidate = m.allocate_snapup_sector(AllocateSpec(), AcquireDealsSpec(), OTHER_WORKER)
    while_upgrading = m.allocate_snapup_sector(AllocateSpec(), AcquireDealsSpec(), replace(OTHER_WORKER, thread=7))
    assert m.allocate_snapup_sector(AllocateSpec(), AcquireDealsSpec(), OTHER_WORKER) == candidate  # asked again

    sector_id = candidate.sector.id
    update = PROOF.update_proof
    sealed_file, cache = persisted_files(Path(store.path), sector_id, is_upgrade=False)
    replica, replica_cache = persisted_files(Path(store.path), sector_id, is_upgrade=True)
    replica.parent.mkdir(parents=True, exist_ok=True)
    replica_cache.mkdir(parents=True)
    replica.write_bytes(b"\0" * SECTOR_SIZE)  # encoding needs it as big as the sector key
    staged = sealed.root / "snap-staged"
    staged.write_bytes(b"")
    added: list[proofs.PieceInfo] = []
    for deal in candidate.deals:
        added.append(proofs.add_piece(PROOF, deal.piece_path, staged, added, piece_size=deal.piece.size))
    assert added == [d.piece for d in candidate.deals]
    with open(staged, "r+b") as f:
        f.truncate(SECTOR_SIZE)
    pieces = sector_pieces(PROOF, candidate.deals)  # the deals, then zeros to fill the sector
    encoded = proofs.snap_encode(update, replica, replica_cache, sealed_file, cache, staged, pieces)
    vanilla = proofs.snap_partition_proofs(update, candidate.comm_r_old, encoded, sealed_file, cache,
                                           replica, replica_cache)
    snark = proofs.snap_prove(update, vanilla, candidate.comm_r_old, encoded)

    def submit(comm_d: bytes, proof: bytes) -> SubmitResponse:
        return m.submit_snapup_proof(sector_id, SnapUpProofInfo(encoded.comm_r_new, comm_d, proof, store.name,
                                                                tuple(p.commitment for p in added)))

    flipped = bytearray(snark)
    flipped[len(flipped) // 2] ^= 0x01
    responses = {
        "wrong_comm_d": submit(CC_COMM_D, snark),
        "wrong_pieces": m.submit_snapup_proof(sector_id, SnapUpProofInfo(
            encoded.comm_r_new, encoded.comm_d_new, snark, store.name, (bytes(32),))),
        "flipped": submit(encoded.comm_d_new, bytes(flipped)),
    }
    p_aux = replica_cache / "p_aux"
    p_aux.rename(replica_cache / "p_aux.away")
    responses["files_missed"] = submit(encoded.comm_d_new, snark)
    (replica_cache / "p_aux.away").rename(p_aux)
    responses["proof"] = submit(encoded.comm_d_new, snark)
    responses["again"] = submit(encoded.comm_d_new, snark)
    persisted = m.submit_persisted(sector_id, store.name, is_upgrade=True)
    m.report_finalized(sector_id, worker=OTHER_WORKER)
    return SnapRun(without_deals, abandoned, candidate, while_upgrading, responses, persisted)


def test_snapup_candidate_is_the_sealed_cc_sector(sealed, snapped):
    assert snapped.candidate_without_deals is None  # no deals: nothing allocated
    candidate = snapped.candidate
    assert candidate.sector == sealed.sector
    assert candidate.comm_r_old == sealed.pre_commit.comm_r and candidate.store == sealed.store.name
    assert [Path(d.piece_path).name for d in candidate.deals] == ["deal"]
    assert snapped.candidate_while_upgrading is None  # the only CC sector is taken
    assert snapped.abandoned == candidate  # aborting the upgrade put the sector and its deals back
    assert not sealed.manager.sector(sealed.sector.id).aborted


def test_real_snap_proof_is_accepted(sealed, snapped):
    r = snapped.responses
    assert r["wrong_comm_d"].result is SubmitResult.Rejected and "comm_d_new" in r["wrong_comm_d"].desc
    assert r["wrong_pieces"].result is SubmitResult.Rejected and "not the upgrade's deals' pieces" in r["wrong_pieces"].desc
    assert r["flipped"].result is SubmitResult.Rejected
    assert r["files_missed"].result is SubmitResult.FilesMissed and "p_aux" in r["files_missed"].desc
    assert r["proof"].result is SubmitResult.Accepted, r["proof"].desc
    assert r["again"].result is SubmitResult.DuplicateSubmit
    assert snapped.persisted is True
    upgrade = sealed.manager.sector(sealed.sector.id).upgrade
    assert upgrade.state is UpgradeState.Upgraded and upgrade.store == sealed.store.name


def test_rebuild_of_an_upgraded_sector_carries_the_update(sealed, snapped):
    m = sealed.manager
    m.request_rebuild(sealed.sector.id)
    job = m.allocate_rebuild_sector(AllocateSpec(), WORKER)
    assert job.is_snapup and job.deals == () and job.upgrade_deals == snapped.candidate.deals
    assert job.comm_r == sealed.pre_commit.comm_r
    assert job.upgrade_comm_r == m.sector(sealed.sector.id).upgrade.comm_r


def test_db_copy_moves_a_sealed_farm_to_postgresql(sealed, snapped, pg_url, tmp_path):
    """`db copy` of the SQLite manager that sealed (and snapped, and rebuilt) a sector for real, then
    a manager on PostgreSQL shows the same sectors, history and deals in `sector debug`."""
    import subprocess
    import sys

    from conftest import free_port, start_manager

    from damocles_py.manager.client import RemoteManager

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "damocles_py.cli.manager", *args], capture_output=True,
                              text=True, timeout=120)

    m = sealed.manager
    holder = m.sector(sealed.sector.id).holder
    m.report_state(sealed.sector.id, StateReport(holder, "Persisted", "Finished", "Finish"))  # some history
    source = f"sqlite:{sealed.root / 'manager'}"
    copied = cli("db", "copy", "--from", source, "--to", pg_url)
    assert copied.returncode == 0 and "1 sectors" in copied.stdout and "1 history" in copied.stdout, copied.stderr
    again = cli("db", "copy", "--from", source, "--to", pg_url)  # a non-empty target is refused, unchanged
    assert again.returncode == 2 and "already holds manager state" in again.stderr, again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    port = free_port()
    proc = start_manager(tmp_path, port, Path(sealed.store.path), "--db", pg_url)
    client = RemoteManager(f"127.0.0.1:{port}", timeout=30)
    try:
        assert client.sectors() == m.sectors()
        assert client.deals() == m.deals()
        sector = sealed.sector.id
        debug = client.sector_debug(sector)
        assert debug.record == m.sector(sector) and debug.history == tuple(m.history(sector))
        shown = cli("sector", "debug", str(sector), "--addr", f"127.0.0.1:{port}")
        local = cli("db", "check", "--db", pg_url)
        assert shown.returncode == 0 and str(sector) in shown.stdout, shown.stderr
        assert f"{len(m.sectors())} sectors" in local.stdout
        # new deals and sectors on PostgreSQL number on after the copied ones
        allocated = client.allocate_sector(AllocateSpec(), WorkerRef("after-copy", 0, "/s/0"))
        assert allocated.id.number == max(s.id.number for s in m.sectors()) + 1
    finally:
        client.close()
        proc.terminate()
        proc.wait(30)
