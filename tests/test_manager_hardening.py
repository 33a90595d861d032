"""The manager's side of issue 7: allocation safe to repeat, poison deals quarantined, work handed
only to workers that reach its store, an authenticated API with ownership checks, rebuild aborts
that end the request, and `damocles-manager run --check`.

Everything runs against the real EmbeddedManager (SQLite file, real commP and proof checks) and,
where the item is about the network, the real gRPC server or a real `damocles-manager run`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from conftest import free_port, start_manager, wait_until, write_config

from damocles_py import proofs
from damocles_py.config.schema import EmbeddedManagerConfig
from damocles_py.fsm.failure import FailureCause
from damocles_py.manager.client import RemoteManager
from damocles_py.manager.db import ManagerDB
from damocles_py.manager.embedded import EmbeddedManager
from damocles_py.manager.interface import (
    MAX_TEXT_CHARS,
    AcquireDealsSpec,
    AllocatedSector,
    AllocateSpec,
    ManagerRequestError,
    ManagerUnavailable,
    NotTheHolder,
    PreCommitInfo,
    SectorId,
    StateReport,
    StoreInfo,
    SubmitResult,
    WorkerPing,
    WorkerRef,
)
from damocles_py.manager.server import serve_manager
from damocles_py.metrics.manager import ManagerMetrics
from damocles_py.proofs import SealProof, SectorSize

PROOF = SealProof.StackedDrg2KiBV1_1

MINER = 1000
WORKER = WorkerRef("worker-a", 0, "/sealing/0")


class FakeClock:
    """The manager's clock, moved by the test (a simulated chain needs no real waiting)."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_manager(root: Path, clock=None, stores=(), **settings) -> EmbeddedManager:
    (root / "pieces").mkdir(parents=True, exist_ok=True)
    config = EmbeddedManagerConfig(miner=MINER, sector_size=SectorSize(2048), state_dir=root / "manager",
                                   pieces_dir=root / "pieces", block_time=1.0, pre_commit_delay_epochs=1,
                                   **settings)
    return EmbeddedManager(config, list(stores), clock=clock or FakeClock(), piece_scan_interval=None)


# ---------------------------------------------------------------------------------------------
# 10. allocation is safe to repeat


def test_a_thread_asking_again_gets_the_sector_it_holds(tmp_path):
    m = make_manager(tmp_path)
    try:
        first = m.allocate_sector(AllocateSpec(), WORKER)
        assert m.allocate_sector(AllocateSpec(), WORKER) == first  # the answer was lost: the same sector
        other = m.allocate_sector(AllocateSpec(), replace(WORKER, thread=1))
        assert other.id == SectorId(MINER, 2)
        # once the thread reports the sector done, it gets a new one
        m.report_aborted(first.id, "abort: PC1Failed: gave up", worker=WORKER)
        assert m.allocate_sector(AllocateSpec(), WORKER).id == SectorId(MINER, 3)
    finally:
        m.close()


_ALLOCATE_THEN_DIE = textwrap.dedent("""
    import os, signal, sys
    from damocles_py.manager.client import RemoteManager
    from damocles_py.manager.interface import AllocateSpec, WorkerRef
    client = RemoteManager(sys.argv[1], timeout=10, token_file=sys.argv[2] or None)
    client.allocate_sector(AllocateSpec(), WorkerRef("worker-a", 0, "/sealing/0"))
    os.kill(os.getpid(), signal.SIGKILL)  # killed before it could save what it was given
""")


def test_a_worker_killed_after_allocation_gets_the_same_sector_over_grpc(tmp_path):
    """A real `damocles-manager run`; a real process allocates, then dies with SIGKILL before it
    saved the answer. The same thread, asking again, gets that sector; another thread does not."""
    port = free_port()
    store = tmp_path / "persist-a"
    store.mkdir()
    manager = start_manager(tmp_path, port, store, auth=True)
    token = tmp_path / "manager-state" / "manager.token"
    try:
        died = subprocess.run([sys.executable, "-c", _ALLOCATE_THEN_DIE, f"127.0.0.1:{port}", str(token)],
                              capture_output=True, text=True, timeout=60)
        assert died.returncode == -signal.SIGKILL, died.stderr
        with RemoteManager(f"127.0.0.1:{port}", timeout=10, token_file=token) as client:
            (lost,) = client.sectors()
            assert lost.holder == WORKER and not lost.finished and not lost.aborted
            assert client.allocate_sector(AllocateSpec(), WORKER).id == lost.id
            assert client.allocate_sector(AllocateSpec(), WORKER).id == lost.id  # and again
            assert client.allocate_sector(AllocateSpec(), replace(WORKER, thread=1)).id == SectorId(MINER, 2)
            assert len(client.sectors()) == 2  # nothing stranded, nothing allocated twice
        # A wrong farm token is the farm's problem, not the sector's: retryable, never a refusal that
        # would let a worker finish the sector locally.
        with RemoteManager(f"127.0.0.1:{port}", timeout=10, token="x" * 64) as wrong:
            with pytest.raises(ManagerUnavailable, match="UNAUTHENTICATED"):
                wrong.report_finalized(lost.id, worker=WORKER)
    finally:
        manager.kill()
        manager.wait()


# ---------------------------------------------------------------------------------------------
# a real proven CC sector in store-a, served over gRPC with a farm token (snap-up, rebuild)

TOKEN = "t" * 64
OTHER = WorkerRef("worker-b", 1, "/sealing/1")


@dataclass
class Proven:
    manager: EmbeddedManager
    clock: FakeClock
    root: Path
    sector: AllocatedSector
    client: RemoteManager
    refusals: dict[str, str]


@pytest.fixture(scope="module")
def proven(tmp_path_factory):
    """One CC sector sealed and proven for real (one C2), persisted in store-a; store-b is empty."""
    from test_embedded_manager import prove, require_parameters, seal_cc_sector, wait_for_seed

    require_parameters()
    root = tmp_path_factory.mktemp("proven")
    stores = [StoreInfo(name, str(root / name)) for name in ("store-a", "store-b")]
    for s in stores:
        Path(s.path).mkdir()
    clock = FakeClock()
    m = make_manager(root, clock, stores)
    sector = m.allocate_sector(AllocateSpec(), WORKER)
    ticket, pc2 = seal_cc_sector(m, stores[0], sector)
    assert m.submit_pre_commit(sector, PreCommitInfo(pc2.comm_r, pc2.comm_d, ticket), False).result \
        is SubmitResult.Accepted
    clock.advance(1)
    seed = wait_for_seed(m, clock, sector)
    refusals = {}
    with pytest.raises(ManagerRequestError) as no_proof:  # 17: finished needs an accepted proof
        m.report_finalized(sector.id, worker=WORKER)
    refusals["no proof"] = str(no_proof.value)
    assert m.submit_proof(sector.id, prove(m, stores[0], sector, ticket, pc2, seed.value), False).result \
        is SubmitResult.Accepted
    assert m.submit_persisted(sector.id, "store-a", is_upgrade=False)
    with pytest.raises(NotTheHolder) as not_holder:
        m.report_finalized(sector.id, worker=OTHER)
    refusals["not holder"] = str(not_holder.value)
    m.report_finalized(sector.id, worker=WORKER)
    server, port = serve_manager(m, "127.0.0.1:0", token=TOKEN)
    client = RemoteManager(f"127.0.0.1:{port}", timeout=10, token=TOKEN)
    yield Proven(m, clock, root, sector, client, refusals)
    client.close()
    server.stop(grace=0).wait()
    m.close()


def test_a_sector_is_finished_only_by_its_holder_with_an_accepted_proof(proven):
    assert "has no accepted proof" in proven.refusals["no proof"]
    assert "held by worker worker-a thread 0, not by worker-b thread 1" in proven.refusals["not holder"]
    assert proven.manager.sector(proven.sector.id).finished


def test_snapup_candidates_only_in_stores_the_worker_can_reach(proven):
    m, client = proven.manager, proven.client
    (proven.root / "pieces" / "deal").write_bytes(os.urandom(1000))
    (deal,) = client.import_pieces()  # the operator's import (commP computed by the manager)
    in_b, in_a = AllocateSpec(allowed_stores=("store-b",)), AllocateSpec(allowed_stores=("store-a",))
    assert client.allocate_snapup_sector(in_b, AcquireDealsSpec(), OTHER) is None  # over gRPC too
    assert m.allocate_snapup_sector(AllocateSpec(allowed_stores=()), AcquireDealsSpec(), OTHER) is None
    candidate = client.allocate_snapup_sector(in_a, AcquireDealsSpec(), OTHER)
    assert candidate.sector == proven.sector and candidate.store == "store-a" and candidate.deals == (deal,)
    # 10: the answer lost, the same thread asks again: the same candidate and deals
    assert client.allocate_snapup_sector(in_a, AcquireDealsSpec(), OTHER) == candidate
    client.report_aborted(proven.sector.id, "abort: SnapEncodeFailed: test over", worker=OTHER)
    assert m.sector(proven.sector.id).upgrade is None
    assert [d.sector for d in m.deals()] == [None]


def test_an_aborted_rebuild_ends_with_its_reason_until_requested_again(proven, capsys):
    from damocles_py.cli.manager import format_sector_debug

    m, client, sid = proven.manager, proven.client, proven.sector.id
    rebuilder = WorkerRef("worker-c", 2, "/sealing/2")
    client.request_rebuild(sid)
    assert client.allocate_rebuild_sector(AllocateSpec(allowed_stores=("store-b",)), rebuilder) is None  # 12
    job = client.allocate_rebuild_sector(AllocateSpec(allowed_stores=("store-a",)), rebuilder)
    assert job.sector == proven.sector and job.store == "store-a"
    assert client.allocate_rebuild_sector(AllocateSpec(), rebuilder) == job  # 10: asked again, same job

    # 8: the worker gives up (operator `resume --state Aborted`): the request ends, with the reason
    client.report_aborted(sid, "abort: RebuildMismatch: comm_r differs", worker=rebuilder,
                          cause=FailureCause.RebuildMismatch)
    record = client.sector(sid)
    assert record.rebuild is None and record.rebuild_abort_reason.startswith("abort: RebuildMismatch")
    assert record.finished and not record.aborted  # the sector itself is on chain, untouched
    assert client.allocate_rebuild_sector(AllocateSpec(), rebuilder) is None  # not requested again by itself
    assert client.allocate_rebuild_sector(AllocateSpec(), OTHER) is None
    report = StateReport(rebuilder, "RebuildSealed", "RebuildSealed", "Retry")
    told = client.report_state(sid, report)  # a rebuild thread still on it is told to stop
    assert told.finalized and "rebuild given up" in told.abort_reason
    with pytest.raises(ManagerRequestError, match="rebuild was given up"):
        client.report_finalized(sid, worker=rebuilder)
    lines = "\n".join(format_sector_debug(client.sector_debug(sid)))
    assert "finished, rebuild given up" in lines and "last rebuild:  given up: abort: RebuildMismatch" in lines

    # the operator re-requests explicitly; aborting it (taken, then only requested) ends it too
    client.request_rebuild(sid)
    assert client.sector(sid).rebuild_abort_reason is None
    assert client.allocate_rebuild_sector(AllocateSpec(), rebuilder) == job
    client.abort_sector(sid, "operator: disk replaced, not needed")
    assert client.sector(sid).rebuild_abort_reason == "operator: disk replaced, not needed"
    client.request_rebuild(sid)
    client.abort_sector(sid, "operator: changed my mind")
    assert client.sector(sid).rebuild is None
    with pytest.raises(ManagerRequestError, match="finished and nothing is running"):
        client.abort_sector(sid, "again")

    # a rebuild that succeeds: the request is done
    client.request_rebuild(sid)
    assert client.allocate_rebuild_sector(AllocateSpec(), rebuilder) == job
    client.report_finalized(sid, worker=rebuilder)
    record = client.sector(sid)
    assert record.rebuild is None and record.rebuild_abort_reason is None and record.finished


# ---------------------------------------------------------------------------------------------
# 11. a deal whose piece fails its commitment check is quarantined until its file changes


def test_a_poison_deal_is_quarantined_until_its_file_changes(tmp_path):
    from damocles_py.cli.manager import format_sector_debug

    m = make_manager(tmp_path)
    try:
        piece = tmp_path / "pieces" / "deal.bin"
        piece.write_bytes(os.urandom(1000))
        (deal,) = m.import_pieces()
        first = m.allocate_sector(AllocateSpec(), WORKER)
        assert m.acquire_deals(first.id, AcquireDealsSpec()) == [deal]
        reason = (f"abort: PieceCommitmentMismatch: deal {deal.deal_id}: piece {piece} has commP "
                  f"{'00' * 32}, the deal says {deal.piece.commitment.hex()}")
        m.report_aborted(first.id, reason, worker=WORKER, cause=FailureCause.PieceCommitmentMismatch)

        (record,) = m.deals()
        assert record.sector is None and record.quarantined_by == first.id
        assert record.quarantine.startswith("abort: PieceCommitmentMismatch: deal 1: piece")
        second = m.allocate_sector(AllocateSpec(), replace(WORKER, thread=1))
        assert m.acquire_deals(second.id, AcquireDealsSpec()) == []  # not taken again: a CC sector
        metrics = ManagerMetrics(m).registry
        assert metrics.get_sample_value("damocles_manager_deals", {"state": "quarantined"}) == 1
        lines = "\n".join(format_sector_debug(m.sector_debug(first.id)))
        assert f"was its deal:  {deal.deal_id} {piece}" in lines and "QUARANTINED (from sector 1000-1)" in lines

        assert m.recheck_quarantined_deals() == []  # the file did not change: still quarantined
        os.utime(piece, ns=(piece.stat().st_atime_ns, piece.stat().st_mtime_ns))  # same stamp: nothing
        assert m.recheck_quarantined_deals() == []
        piece.write_bytes(os.urandom(900))  # the operator replaces the piece file
        (freed,) = m.recheck_quarantined_deals()
        assert freed.deal_id == deal.deal_id and freed.payload_size == 900
        assert freed.piece == proofs.piece_commitment(PROOF, piece)  # commP computed again
        third = m.allocate_sector(AllocateSpec(), replace(WORKER, thread=2))
        assert m.acquire_deals(third.id, AcquireDealsSpec()) == [freed]
        assert m.deals()[0].quarantine is None
    finally:
        m.close()


def test_a_real_worker_quarantines_a_poison_deal(tmp_path, daemon_factory):
    """The real daemon (embedded manager) aborts the sector with PieceCommitmentMismatch; the
    runtime reports the cause, the deal is quarantined: the next sector is CC, not poisoned."""
    from damocles_py.bench import write_random_piece
    from damocles_py.config.load import load_config

    cfg = write_config(tmp_path, sealing={"enable_deals": True})
    piece = write_random_piece(tmp_path / "pieces" / "deal.bin", 1500)
    config = load_config(cfg)
    manager = EmbeddedManager(config.sector_manager.embedded, [StoreInfo("persist-a", str(tmp_path / "persist/a"))])
    assert len(manager.deals()) == 1  # imported at start: the deal's commP is fixed now
    manager.close()
    data = bytearray(piece.read_bytes())
    data[100] ^= 0xFF  # then the piece file is corrupted
    piece.write_bytes(bytes(data))

    daemon = daemon_factory(cfg, max_sectors=1)
    first = SectorId(MINER, 1)
    wait_until(lambda: (r := daemon.manager.sector(first)) is not None and r.aborted, 120, "the abort")
    (record,) = daemon.manager.deals()
    assert record.quarantine and "PieceCommitmentMismatch" in record.quarantine and record.quarantined_by == first
    nxt = daemon.manager.allocate_sector(AllocateSpec(), WorkerRef("probe", 9))
    assert daemon.manager.acquire_deals(nxt.id, AcquireDealsSpec()) == []


# ---------------------------------------------------------------------------------------------
# 17. the farm token, bounded requests


def _run_manager(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "damocles_py.cli.manager", "run", "--state-dir",
                           str(tmp_path / "state"), "--log-level", "WARNING", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_unusable_token_files_and_open_binds_without_auth_are_refused_at_start(tmp_path):
    token = tmp_path / "token"
    for content, mode, expected in [("", 0o600, "is empty"), ("short", 0o600, "holds only 5 characters"),
                                    ("x" * 64, 0o644, "readable by other users")]:
        token.write_text(content)
        token.chmod(mode)
        run = _run_manager(tmp_path, "--listen", f"127.0.0.1:{free_port()}", "--token-file", str(token))
        assert run.returncode == 2 and run.stderr.count("\n") == 1 and expected in run.stderr, run.stderr
        assert "Traceback" not in run.stderr
    run = _run_manager(tmp_path, "--listen", f"0.0.0.0:{free_port()}", "--no-auth")
    assert run.returncode == 2 and "without a farm token" in run.stderr and run.stderr.count("\n") == 1
    assert not (tmp_path / "state").exists()  # refused before anything was created


def test_mutating_calls_need_the_token_and_requests_are_bounded(tmp_path):
    m = make_manager(tmp_path)
    server, port = serve_manager(m, "127.0.0.1:0", token=TOKEN)
    addr = f"127.0.0.1:{port}"
    try:
        with RemoteManager(addr, timeout=5) as anonymous, RemoteManager(addr, timeout=5, token="u" * 64) as wrong:
            for client in (anonymous, wrong):
                with pytest.raises(ManagerUnavailable, match="needs the manager's farm token"):
                    client.allocate_sector(AllocateSpec(), WORKER)
                with pytest.raises(ManagerUnavailable, match="needs the manager's farm token"):
                    client.worker_ping(WorkerPing("intruder"))
                assert client.sectors() == []  # reads are open
        assert m.sectors() == [] and m.workers() == []
        with RemoteManager(addr, timeout=5, token=TOKEN) as client:
            sector = client.allocate_sector(AllocateSpec(), WORKER)
            # free text is cut and made one line; names over the limit are refused
            client.report_aborted(sector.id, "line one\nline two\x1b[31m" + "x" * 100_000, worker=WORKER)
            reason = m.sector(sector.id).abort_reason
            assert len(reason) <= MAX_TEXT_CHARS and reason.startswith("line one line two [31mxxx")
            assert reason.endswith("...(truncated)")
            with pytest.raises(ManagerRequestError, match=r"worker\.instance: 10000 characters"):
                client.allocate_sector(AllocateSpec(), WorkerRef("w" * 10_000, 0))
            # a request over the size limit is refused before it is decoded
            with pytest.raises(ManagerRequestError, match="RESOURCE_EXHAUSTED|larger than max"):
                client.submit_proof(sector.id, b"\0" * (2 << 20), reset=False)
            assert len(m.sectors()) == 1
    finally:
        server.stop(grace=0).wait()
        m.close()


def test_a_worker_sends_the_token_from_its_config(tmp_path, daemon_factory):
    port = free_port()
    store = tmp_path / "persist-a"
    store.mkdir()
    manager = start_manager(tmp_path, port, store, auth=True)
    token = tmp_path / "manager-state" / "manager.token"
    try:
        cfg = write_config(tmp_path, manager_addr=f"127.0.0.1:{port}", name="tokened")
        text = cfg.read_text().replace(f'addr = "127.0.0.1:{port}"\n',
                                       f'addr = "127.0.0.1:{port}"\ntoken_file = "{token}"\n')
        cfg.write_text(text)
        daemon_factory(cfg, max_sectors=0)  # pings only: no sector is started
        with RemoteManager(f"127.0.0.1:{port}", timeout=5) as reader:
            wait_until(lambda: any(w.instance == "tokened" and w.last_ping for w in reader.workers()), 60,
                       "the worker's authenticated ping")
    finally:
        manager.kill()
        manager.wait()


# ---------------------------------------------------------------------------------------------
# 19. run --check


def test_run_check_validates_without_changing_anything(tmp_path):
    (tmp_path / "pieces").mkdir()
    (tmp_path / "store").mkdir()
    port = free_port()
    common = ["--listen", f"127.0.0.1:{port}", "--pieces-dir", str(tmp_path / "pieces"),
              "--store", f"store-a={tmp_path / 'store'}", "--check"]
    ok = _run_manager(tmp_path, *common)
    assert ok.returncode == 0, ok.stderr
    assert "check: OK" in ok.stdout and "a start creates the farm token" in ok.stdout
    assert f"127.0.0.1:{port} (--listen): free" in ok.stdout
    assert not (tmp_path / "state").exists()  # nothing created

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        taken = _run_manager(tmp_path, *common)
    assert taken.returncode == 1 and "cannot listen there" in taken.stderr

    # a database of a newer schema, and a file that is no database
    db = ManagerDB(tmp_path / "state")
    with db.transaction() as tx:
        tx.set_meta("schema_version", "99")
    db.close()
    before = (tmp_path / "state" / "manager.sqlite3").read_bytes()
    newer = _run_manager(tmp_path, *common)
    assert newer.returncode == 1 and "schema version 99" in newer.stderr
    assert (tmp_path / "state" / "manager.sqlite3").read_bytes() == before
    assert not (tmp_path / "state" / "manager.token").exists()
    started = _run_manager(tmp_path, "--listen", f"127.0.0.1:{port}")  # a real start refuses it too
    assert started.returncode == 2 and "schema version 99" in started.stderr and "Traceback" not in started.stderr
    (tmp_path / "state" / "manager.sqlite3").write_bytes(b"not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / "state" / f"manager.sqlite3{suffix}").unlink(missing_ok=True)
    garbage = _run_manager(tmp_path, *common)
    assert garbage.returncode == 1 and "database" in garbage.stderr, garbage.stderr
    bad_args = _run_manager(tmp_path, *common[:-3], "--store", "nameless", "--check")
    assert bad_args.returncode == 1 and "--store: 'nameless' is not NAME=PATH" in bad_args.stderr
