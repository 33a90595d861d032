"""The standalone manager over gRPC: a real server on a free 127.0.0.1 port around a real
EmbeddedManager (SQLite in tmp_path), driven through RemoteManager, raw stubs and the CLI.

The chain's clock is a fake the tests advance, so tickets, landing and seeds need no waiting.
No real proof is made here (no C2): calls that need one are covered by test_embedded_manager.py;
here they are only checked for their refusals and error statuses.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
from conftest import free_port, wait_until

from damocles_py import proofs
from damocles_py.cli.manager import main as manager_cli
from damocles_py.config.schema import EmbeddedManagerConfig
from damocles_py.manager import convert
from damocles_py.manager import manager_pb2 as pb
from damocles_py.manager import manager_pb2_grpc as pb_grpc
from damocles_py.manager.client import RemoteManager, SectorNotFound
from damocles_py.manager.convert import ThreadSummary, WorkerPing
from damocles_py.manager.embedded import EmbeddedManager, persisted_files, sector_pieces
from damocles_py.manager.interface import (
    AcquireDealsSpec,
    AllocatedSector,
    AllocateSpec,
    Deal,
    ManagerRequestError,
    NotTheHolder,
    ManagerUnavailable,
    OnChainState,
    PreCommitInfo,
    RebuildJob,
    SectorId,
    SectorStateResp,
    Seed,
    SnapUpCandidate,
    SnapUpProofInfo,
    StateReport,
    StoreInfo,
    SubmitResult,
    Ticket,
    WorkerRef,
)
from damocles_py.manager.server import ManagerService, serve_manager
from damocles_py.proofs import PieceInfo, SealProof, SectorSize

MINER = 1000
PROOF = SealProof.StackedDrg2KiBV1_1
WORKER = WorkerRef("worker-a", 0, "/sealing/0")
FAKE_COMM_R = bytes(range(1, 33))
CC_COMM_D = proofs.compute_comm_d(PROOF, proofs.cc_pieces(PROOF))


class FakeClock:
    """The simulated chain's time; block time is 1s, so one second is one epoch."""

    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Running:
    """A manager served on 127.0.0.1; `restart()` serves a new one on the same port and state dir."""

    root: Path
    clock: FakeClock
    store: StoreInfo
    manager: EmbeddedManager
    service: ManagerService
    server: grpc.Server
    port: int

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(grace=0).wait()
        self.manager.close()

    def start(self, port: int = 0) -> None:
        config = EmbeddedManagerConfig(miner=MINER, sector_size=SectorSize(2048), state_dir=self.root / "manager",
                                       pieces_dir=self.root / "pieces")
        self.manager = EmbeddedManager(config, [self.store], clock=self.clock)
        self.service = ManagerService(self.manager)
        self.server, self.port = serve_manager(self.manager, f"127.0.0.1:{port}", service=self.service)


@pytest.fixture
def running(tmp_path):
    (tmp_path / "pieces").mkdir()
    (tmp_path / "store-a").mkdir()
    r = Running(tmp_path, FakeClock(), StoreInfo("store-a", str(tmp_path / "store-a")), None, None, None, 0)
    r.start()
    yield r
    r.stop()


@pytest.fixture
def client(running):
    c = RemoteManager(running.addr, timeout=5.0)
    yield c
    c.close()


_thread_numbers: dict[str, itertools.count] = {}  # by manager address
_thread_numbers_lock = threading.Lock()


def allocate(client: RemoteManager) -> AllocatedSector:
    """A new sector, for another thread of worker-a at each call (the first is WORKER): a thread
    that asks again gets back the sector it holds."""
    with _thread_numbers_lock:
        thread = next(_thread_numbers.setdefault(client.addr, itertools.count()))
    sector = client.allocate_sector(AllocateSpec(), replace(WORKER, thread=thread))
    assert sector is not None
    return sector


def land_cc_pre_commit(client: RemoteManager, clock: FakeClock, sector: AllocatedSector) -> PreCommitInfo:
    info = PreCommitInfo(FAKE_COMM_R, CC_COMM_D, client.assign_ticket(sector.id))
    assert client.submit_pre_commit(sector, info, reset=False).result is SubmitResult.Accepted
    clock.advance(1)
    assert client.poll_pre_commit_state(sector.id).state is OnChainState.Landed
    return info


def draw_seed(client: RemoteManager, clock: FakeClock, sector: AllocatedSector) -> Seed:
    wait = client.wait_seed(sector)
    assert wait.seed is None and wait.delay_seconds > 0
    clock.advance(wait.delay_seconds)
    seed = client.wait_seed(sector).seed
    assert seed is not None and len(seed.value) == 32
    return seed


def raw_error(addr: str, rpc: str, request) -> grpc.RpcError:
    """The status a raw stub gets for a request RemoteManager could never build."""
    with grpc.insecure_channel(addr) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            getattr(pb_grpc.SectorManagerStub(channel), rpc)(request, timeout=5)
    return caught.value


# ---------------------------------------------------------------------------------------------
# allocation and the sealing calls


def test_numbers_are_unique_across_clients_and_threads(running):
    clients = [RemoteManager(running.addr, timeout=10.0) for _ in range(2)]
    numbers: list[int] = []
    lock = threading.Lock()

    def allocate_many(c: RemoteManager) -> None:
        for _ in range(5):
            number = allocate(c).id.number
            with lock:
                numbers.append(number)

    threads = [threading.Thread(target=allocate_many, args=(clients[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    assert sorted(numbers) == list(range(1, 21))


def test_allocate_spec_travels_intact(client):
    # An empty allow-list (nothing allowed) must not arrive as None (anything allowed).
    assert client.allocate_sector(AllocateSpec(allowed_miners=()), WORKER) is None
    assert client.allocate_sector(AllocateSpec(allowed_proofs=()), WORKER) is None
    assert client.allocate_sector(AllocateSpec(allowed_proofs=(SealProof.StackedDrg8MiBV1_1,)), WORKER) is None
    found = client.allocate_sector(AllocateSpec(allowed_miners=(MINER,), allowed_proofs=(PROOF,)), WORKER)
    assert found == AllocatedSector(SectorId(MINER, 1), PROOF)


def test_sealing_calls_round_trip(running, client):
    clock, manager = running.clock, running.manager
    (running.root / "pieces" / "deal-1").write_bytes(os.urandom(1000))
    manager.import_pieces()  # what the manager's background scanner does
    sector = allocate(client)
    assert sector == AllocatedSector(SectorId(MINER, 1), PROOF)

    deals = client.acquire_deals(sector.id, AcquireDealsSpec(max_deals=4))
    assert deals == [manager.deals()[0].deal] and deals[0].payload_size == 1000
    assert client.acquire_deals(sector.id, AcquireDealsSpec()) == deals  # asked again: same answer

    ticket = client.assign_ticket(sector.id)
    assert ticket == manager.sector(sector.id).ticket and len(ticket.value) == 32
    comm_d = proofs.compute_comm_d(PROOF, sector_pieces(PROOF, deals))  # the deal, then zero fill
    info = PreCommitInfo(FAKE_COMM_R, comm_d, ticket)
    assert client.poll_pre_commit_state(sector.id).state is OnChainState.NotFound
    assert client.submit_pre_commit(sector, info, reset=False).result is SubmitResult.Accepted
    assert client.poll_pre_commit_state(sector.id).state is OnChainState.Pending
    clock.advance(1)
    assert client.poll_pre_commit_state(sector.id).state is OnChainState.Landed

    # duplicate and mismatched submissions are answers, not errors
    assert client.submit_pre_commit(sector, info, reset=False).result is SubmitResult.DuplicateSubmit
    other = PreCommitInfo(bytes(32), comm_d, ticket)
    mismatched = client.submit_pre_commit(sector, other, reset=False)
    assert mismatched.result is SubmitResult.MismatchedSubmission and "reset" in mismatched.desc

    assert client.reserve_store(sector.id, 4096, ["no-such-store", "store-a"]) == "store-a"
    assert client.reserve_store(sector.id, 1 << 62, ["store-a"]) is None
    seed = draw_seed(client, clock, sector)
    assert seed == manager.sector(sector.id).seed
    assert client.poll_proof_state(sector.id).state is OnChainState.NotFound


def test_persist_reports_and_rebuild_round_trip(running, client):
    sector = allocate(client)
    info = land_cc_pre_commit(client, running.clock, sector)
    assert client.acquire_deals(sector.id, AcquireDealsSpec()) == []  # CC

    assert client.submit_persisted(sector.id, "store-a", is_upgrade=False) is False  # no files yet
    replica, cache = persisted_files(Path(running.store.path), sector.id, is_upgrade=False)
    replica.parent.mkdir(parents=True)
    replica.write_bytes(b"\0" * 2048)
    cache.mkdir(parents=True)
    (cache / "p_aux").write_bytes(b"\0" * 64)
    assert client.submit_persisted(sector.id, "store-a", is_upgrade=False) is True

    report = StateReport(WORKER, "C2Done", "ProofSubmitted", "SubmitProof", "temporary", "Cause", "detail")
    assert client.report_state(sector.id, report) == SectorStateResp()
    with pytest.raises(NotTheHolder, match="held by worker worker-a thread 0"):  # PERMISSION_DENIED
        client.report_finalized(sector.id, worker=replace(WORKER, thread=9))
    with pytest.raises(ManagerRequestError, match="no accepted proof"):  # finished needs a verified proof
        client.report_finalized(sector.id, worker=WORKER)
    record, history = client.sector_with_history(sector.id)
    assert record == running.manager.sector(sector.id) and not record.finished and record.store == "store-a"
    assert history == running.manager.history(sector.id) and history[0].failure_desc == "detail"
    # (the rebuild of a proven sector over gRPC: tests/test_manager_hardening.py)
    assert client.allocate_rebuild_sector(AllocateSpec(), WORKER) is None
    assert client.allocate_snapup_sector(AllocateSpec(), AcquireDealsSpec(), WORKER) is None  # no deals

    # not being upgraded: refused as an answer (the proof is never looked at)
    snap = client.submit_snapup_proof(sector.id, SnapUpProofInfo(bytes(32), bytes(32), b"proof", "store-a", ()))
    assert snap.result is SubmitResult.Rejected and "not being upgraded" in snap.desc


def test_operator_reads_abort_and_pings(running, client):
    first, second = allocate(client), allocate(client)
    assert [s.id for s in client.sectors()] == [first.id, second.id]
    assert client.sectors() == running.manager.sectors()
    assert client.sector(SectorId(MINER, 99)) is None and client.history(SectorId(MINER, 99)) == []

    client.abort_sector(first.id, "operator says so")
    resp = client.report_state(first.id, StateReport(WORKER, "Allocated", "DealsAcquired", "AcquireDeals"))
    assert resp == SectorStateResp(finalized=True, abort_reason="operator says so")
    with pytest.raises(ManagerRequestError, match="was aborted: operator says so") as refused:
        client.assign_ticket(first.id)
    assert not isinstance(refused.value, SectorNotFound)  # FAILED_PRECONDITION, not NOT_FOUND
    client.report_aborted(first.id, "worker gave up too", worker=WORKER)
    assert client.sector(first.id).aborted

    ping = WorkerPing("worker-a", (ThreadSummary(0, "sealer", "Allocated", second.id, "running"),
                                   ThreadSummary(1, "snapup", "Empty", None, "idle")))
    client.worker_ping(ping)
    assert running.service.worker_pings()["worker-a"].ping == ping


# ---------------------------------------------------------------------------------------------
# errors


def test_unknown_sectors_are_not_found(client):
    unknown = SectorId(MINER, 42)
    calls = [
        lambda: client.assign_ticket(unknown),
        lambda: client.acquire_deals(unknown, AcquireDealsSpec()),
        lambda: client.submit_pre_commit(AllocatedSector(unknown, PROOF),
                                         PreCommitInfo(FAKE_COMM_R, CC_COMM_D, Ticket(bytes(32), 0)), False),
        lambda: client.wait_seed(AllocatedSector(unknown, PROOF)),
        lambda: client.submit_proof(unknown, b"proof", reset=False),
        lambda: client.report_finalized(unknown, worker=WORKER),
        lambda: client.request_rebuild(unknown),
        lambda: client.abort_sector(unknown, "why not"),
    ]
    for call in calls:
        with pytest.raises(SectorNotFound, match="^unknown sector 1000-42$"):
            call()


def test_malformed_requests_are_refused_before_the_manager_sees_them(running, client):
    sector = allocate(client)
    ticket = client.assign_ticket(sector.id)
    short = PreCommitInfo(FAKE_COMM_R[:31], CC_COMM_D, ticket)
    with pytest.raises(ManagerRequestError, match=r"info\.comm_r: must be 32 bytes, got 31"):
        client.submit_pre_commit(sector, short, reset=False)
    assert running.manager.sector(sector.id).pre_commit is None  # nothing recorded

    cases = {
        ("AssignTicket", "sector: missing"): pb.AssignTicketRequest(),
        ("AssignTicket", r"sector\.number: .* out of range"):
            pb.AssignTicketRequest(sector=pb.SectorId(miner=MINER, number=(1 << 64) - 1)),
        ("SubmitPreCommit", r"sector\.proof: unknown seal proof type 'StackedDrg3KiB'"): pb.SubmitPreCommitRequest(
            sector=pb.AllocatedSector(id=convert.sector_id_to_pb(sector.id), proof="StackedDrg3KiB"),
            info=convert.pre_commit_info_to_pb(PreCommitInfo(FAKE_COMM_R, CC_COMM_D, ticket))),
        ("SubmitPreCommit", r"info\.ticket: missing"): pb.SubmitPreCommitRequest(
            sector=convert.allocated_sector_to_pb(sector), info=pb.PreCommitInfo(comm_r=FAKE_COMM_R, comm_d=CC_COMM_D)),
        ("AllocateSector", r"spec\.allowed_proofs: unknown seal proof type 'Nope'"): pb.AllocateSectorRequest(
            spec=pb.AllocateSpec(allowed_proofs=pb.ProofList(proofs=["Nope"])), worker=pb.WorkerRef(instance="w")),
        ("AllocateSector", "worker: missing"): pb.AllocateSectorRequest(),
        ("WorkerPing", "instance: missing"): pb.WorkerPingRequest(),
    }
    for (rpc, message), request in cases.items():
        error = raw_error(running.addr, rpc, request)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (rpc, error.details())
        assert error.details().startswith("malformed request: ")
        assert re.search(message, error.details()), error.details()
    assert [s.id for s in running.manager.sectors()] == [sector.id]  # the bad AllocateSector took no number
    assert running.manager.sector(sector.id).pre_commit is None


def test_malformed_proof_is_rejected_and_the_manager_keeps_working(running, client):
    sector = allocate(client)
    land_cc_pre_commit(client, running.clock, sector)
    with pytest.raises(ManagerRequestError, match="has no seed yet"):
        client.submit_proof(sector.id, b"garbage", reset=False)
    draw_seed(client, running.clock, sector)

    try:
        resp = client.submit_proof(sector.id, b"garbage", reset=False)
    except ManagerUnavailable as e:
        # No 2KiB verifying key on this machine: the manager cannot judge any proof yet, which is
        # its setup problem, so the worker is told to retry, with the fix in the message.
        assert "params generate" in str(e)
        assert client.poll_proof_state(sector.id).state is OnChainState.NotFound
    else:
        assert resp.result is SubmitResult.Rejected and "malformed" in resp.desc
        assert client.poll_proof_state(sector.id).state is OnChainState.Failed
    assert allocate(client).id.number == sector.id.number + 1


class BrokenManager:
    """A manager with a bug: the client must get one line, the server log the traceback."""

    def sectors(self):
        raise RuntimeError("disk on fire")


def test_unexpected_manager_errors_are_internal_and_one_line(caplog):
    server, port = serve_manager(BrokenManager(), "127.0.0.1:0")
    try:
        with RemoteManager(f"127.0.0.1:{port}", timeout=5.0) as c:
            # retryable: a manager bug is not a verdict on the sector
            with pytest.raises(ManagerUnavailable) as caught:
                c.sectors()
    finally:
        server.stop(grace=0).wait()
    assert str(caught.value).endswith(
        "(ListSectors: INTERNAL): internal error in the manager (ListSectors): RuntimeError: disk on fire; see its log")
    assert "Traceback" in caplog.text and "disk on fire" in caplog.text


# ---------------------------------------------------------------------------------------------
# outages


def test_restarted_server_serves_the_same_client_with_state_intact(running, client):
    numbers = [allocate(client).id.number for _ in range(3)]
    before = client.sector(SectorId(MINER, 2))
    running.stop()

    started = time.monotonic()
    for _ in range(3):
        with pytest.raises(ManagerUnavailable, match="unavailable"):
            client.allocate_sector(AllocateSpec(), WORKER)
    assert time.monotonic() - started < 3.0  # failing fast, not waiting for the 5s timeout

    running.start(port=running.port)  # a new server and manager: same port, same state dir
    wait_until(lambda: _reachable(client), timeout=10, what="the client to reconnect")
    assert client.sector(SectorId(MINER, 2)) == before
    assert allocate(client).id.number == numbers[-1] + 1 == 4


def _reachable(client: RemoteManager) -> bool:
    try:
        client.sectors()
        return True
    except ManagerUnavailable:
        return False


# ---------------------------------------------------------------------------------------------
# conversions the server tests above cannot reach without a real proof


def test_snapup_and_upgraded_rebuild_messages_round_trip():
    deal = Deal(7, PieceInfo(bytes(range(32)), 1016), "/pieces/d7", 1000)
    sector = AllocatedSector(SectorId(MINER, 3), PROOF)
    candidate = SnapUpCandidate(sector, (deal,), FAKE_COMM_R, "store-a")
    assert convert.snapup_candidate_from_pb(convert.snapup_candidate_to_pb(candidate)) == candidate
    proof_info = SnapUpProofInfo(FAKE_COMM_R, CC_COMM_D, b"\x01" * 192, "store-b", (bytes(range(32)),))
    assert convert.snapup_proof_info_from_pb(convert.snapup_proof_info_to_pb(proof_info)) == proof_info
    job = RebuildJob(sector, Ticket(bytes(32), 5), (), FAKE_COMM_R, CC_COMM_D, "store-a",
                     upgrade_deals=(deal,), upgrade_comm_r=bytes(32), upgrade_comm_d=CC_COMM_D)
    assert convert.rebuild_job_from_pb(convert.rebuild_job_to_pb(job)) == job and job.is_snapup
    for spec in (AcquireDealsSpec(), AcquireDealsSpec(max_deals=0, min_used_space=1024)):
        assert convert.acquire_deals_spec_from_pb(convert.acquire_deals_spec_to_pb(spec)) == spec


# ---------------------------------------------------------------------------------------------
# the damocles-manager command


def test_cli_rejects_bad_arguments_in_one_line(tmp_path, capsys):
    bad = [
        (["--store", "store-a"], "--store: 'store-a' is not NAME=PATH"),
        (["--store", f"a={tmp_path / 'missing'}"], "is not a directory"),
        (["--sector-size", "3KiB"], "not a supported sector size"),
        (["--block-time", "soon"], "--block-time: expected a duration"),
        (["--listen", "1789"], "--listen: '1789' is not a host:port address"),
    ]
    for extra, message in bad:
        assert manager_cli(["run", "--state-dir", str(tmp_path / "state"), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "state").exists()  # refused before anything was created


def test_cli_run_serves_until_sigterm_and_sector_commands(tmp_path, capsys):
    port = free_port()
    addr = f"127.0.0.1:{port}"
    (tmp_path / "store").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "damocles_py.cli.manager", "run", "--state-dir", str(tmp_path / "state"),
         "--listen", addr, "--miner", "2000", "--block-time", "500ms", "--store", f"store-a={tmp_path / 'store'}",
         "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    token = str(tmp_path / "state" / "manager.token")  # written at the manager's first start
    try:
        with RemoteManager(addr, timeout=5.0) as c:
            wait_until(lambda: process.poll() is not None or _reachable(c), timeout=30, what="damocles-manager")
            assert process.poll() is None, process.communicate()
        assert oct(os.stat(token).st_mode & 0o777) == "0o600"
        with RemoteManager(addr, timeout=5.0, token_file=token) as c:
            sector = allocate(c)
        assert sector.id == SectorId(2000, 1)

        assert manager_cli(["sector", "list", "--addr", addr]) == 0  # reads need no token
        assert "2000-1" in capsys.readouterr().out
        assert manager_cli(["sector", "abort", "2000-1", "--reason", "test", "--addr", addr]) == 2
        assert "needs the manager's farm token" in capsys.readouterr().err
        assert manager_cli(["sector", "rebuild", "2000-1", "--addr", addr, "--token-file", token]) == 2
        assert "not a finished, persisted sector" in capsys.readouterr().err
        assert manager_cli(["sector", "abort", "2000-1", "--reason", "test", "--addr", addr, "--token-file", token]) == 0
        assert manager_cli(["sector", "list", "--addr", addr]) == 0
        assert "aborted" in capsys.readouterr().out
        assert manager_cli(["sector", "abort", "2000-9", "--reason", "test", "--addr", addr, "--token-file", token]) == 2
        assert capsys.readouterr().err == "error: unknown sector 2000-9\n"
        # a second manager on the same port is refused, not silently sharing it
        assert manager_cli(["run", "--state-dir", str(tmp_path / "other"), "--listen", addr]) == 2
        assert "cannot listen on" in capsys.readouterr().err
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
