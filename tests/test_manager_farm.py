"""What a farm operator needs from the standalone manager: worker heartbeats and lost workers,
final deadlines the manager detects, `sector debug` / `worker list`, and hostile requests.

Deadlines and liveness run on EmbeddedManager directly with a fake clock (block time 1s: one
second is one epoch). The remote parts use a real gRPC server on 127.0.0.1 port 0, around an
EmbeddedManager on the same fake clock; the CLI runs as a subprocess against it. No real proof
is made here (no C2).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from conftest import wait_until, write_config

from damocles_py import proofs
from damocles_py.config.load import load_config
from damocles_py.cli.manager import main as manager_cli
from damocles_py.config.schema import EmbeddedManagerConfig
from damocles_py.fsm.failure import FailureCause
from damocles_py.manager import convert
from damocles_py.manager import manager_pb2 as pb
from damocles_py.manager import manager_pb2_grpc as pb_grpc
from damocles_py.manager.client import RemoteManager
from damocles_py.manager.db import CommitRecord, Submission
from damocles_py.manager.embedded import EmbeddedManager, sector_deadlines, sector_pieces
from damocles_py.manager.heartbeat import HeartbeatSender
from damocles_py.manager.interface import (
    AcquireDealsSpec,
    AllocatedSector,
    AllocateSpec,
    DeadlineKind,
    ManagerRequestError,
    OnChainState,
    PreCommitInfo,
    SectorId,
    SectorStateResp,
    StateReport,
    SubmitResult,
    ThreadSummary,
    WorkerPing,
    WorkerRef,
)
from damocles_py.manager.server import serve_manager
from damocles_py.proofs import SealProof, SectorSize

MINER = 1000
PROOF = SealProof.StackedDrg2KiBV1_1
WORKER = WorkerRef("worker-a", 0, "/sealing/0")
OTHER_WORKER = WorkerRef("worker-b", 1, "/sealing/1")
FAKE_COMM_R = bytes(range(1, 33))
CC_COMM_D = proofs.compute_comm_d(PROOF, proofs.cc_pieces(PROOF))
EXPIRY = 5  # ticket_expiry_epochs and seed_expiry_epochs of these tests
TIMEOUT = 30.0  # worker_timeout of these tests


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_manager(root: Path, clock: FakeClock) -> EmbeddedManager:
    config = EmbeddedManagerConfig(miner=MINER, sector_size=SectorSize(2048), state_dir=root / "manager",
                                   pieces_dir=root / "pieces", ticket_expiry_epochs=EXPIRY,
                                   seed_expiry_epochs=EXPIRY, worker_timeout=TIMEOUT)
    (root / "pieces").mkdir(exist_ok=True)
    return EmbeddedManager(config, [], clock=clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manager(tmp_path, clock):
    m = make_manager(tmp_path, clock)
    yield m
    m.close()


def allocate(m, worker: WorkerRef = WORKER) -> AllocatedSector:
    sector = m.allocate_sector(AllocateSpec(), worker)
    assert sector is not None
    return sector


def land_pre_commit(m, clock: FakeClock, sector: AllocatedSector, comm_d: bytes = CC_COMM_D) -> None:
    info = PreCommitInfo(FAKE_COMM_R, comm_d, m.assign_ticket(sector.id))
    assert m.submit_pre_commit(sector, info, reset=False).result is SubmitResult.Accepted
    clock.advance(1)
    assert m.poll_pre_commit_state(sector.id).state is OnChainState.Landed


def report(m, sector: SectorId, worker: WorkerRef = WORKER, prev: str = "Allocated", nxt: str = "DealsAcquired",
           event: str = "AcquireDeals", failure: tuple[str, str, str] | None = None) -> SectorStateResp:
    return m.report_state(sector, StateReport(worker, prev, nxt, event, *(failure or (None, None, None))))


def status_of(m, instance: str):
    return next(w for w in m.workers() if w.instance == instance)


# ---------------------------------------------------------------------------------------------
# heartbeats and lost workers


def test_a_worker_is_lost_after_the_timeout_and_alive_again_after_a_ping(manager, clock):
    threads = (ThreadSummary(0, "sealer", "PC1Done", SectorId(MINER, 1), "running"),
               ThreadSummary(1, "snapup", "Empty", None, "idle"))
    manager.worker_ping(WorkerPing("worker-a", threads))
    first = status_of(manager, "worker-a")
    assert (first.last_seen, first.last_ping, first.lost, first.threads) == (clock.now, clock.now, False, threads)

    clock.advance(TIMEOUT)
    assert status_of(manager, "worker-a").lost is False  # silent for exactly the timeout: not yet
    clock.advance(1)
    lost = status_of(manager, "worker-a")
    assert lost.lost is True and lost.silent_for == TIMEOUT + 1

    manager.worker_ping(WorkerPing("worker-a"))
    back = status_of(manager, "worker-a")
    assert (back.lost, back.silent_for, back.threads) == (False, 0.0, ())  # each ping replaces the threads


def test_calls_carrying_a_worker_ref_are_signs_of_life(manager, clock):
    assert manager.allocate_sector(AllocateSpec(allowed_miners=()), OTHER_WORKER) is None  # no work, still alive
    assert status_of(manager, "worker-b").last_ping is None
    sector = allocate(manager, OTHER_WORKER)
    held = status_of(manager, "worker-b")
    assert (held.lost, held.sectors, held.last_seen) == (False, (sector.id,), clock.now)

    clock.advance(TIMEOUT + 1)
    assert status_of(manager, "worker-b").lost
    report(manager, sector.id, OTHER_WORKER)
    assert not status_of(manager, "worker-b").lost

    clock.advance(TIMEOUT + 1)
    assert manager.allocate_rebuild_sector(AllocateSpec(), OTHER_WORKER) is None
    assert not status_of(manager, "worker-b").lost
    clock.advance(TIMEOUT + 1)
    assert manager.allocate_snapup_sector(AllocateSpec(), AcquireDealsSpec(), OTHER_WORKER) is None
    assert not status_of(manager, "worker-b").lost

    manager.abort_sector(sector.id, "operator")
    assert status_of(manager, "worker-b").sectors == ()  # an aborted sector is held by nobody


def test_liveness_survives_a_manager_restart(tmp_path, clock):
    m = make_manager(tmp_path, clock)
    threads = (ThreadSummary(0, "sealer", "Allocated", SectorId(MINER, 1), "running"),)
    allocate(m)
    m.worker_ping(WorkerPing("worker-a", threads))
    clock.advance(10)
    m.worker_ping(WorkerPing("worker-b"))
    before = m.workers()
    m.close()

    reopened = make_manager(tmp_path, clock)
    try:
        assert reopened.workers() == before
        assert [(w.instance, w.lost) for w in before] == [("worker-a", False), ("worker-b", False)]
        clock.advance(TIMEOUT - 5)  # worker-a silent for 35s, worker-b for 25s
        assert [(w.instance, w.lost) for w in reopened.workers()] == [("worker-a", True), ("worker-b", False)]
        assert status_of(reopened, "worker-a").threads == threads
    finally:
        reopened.close()


class FlakyManager:
    """Refuses the first ping (a manager restarting), then records them."""

    def __init__(self):
        self.pings: list[WorkerPing] = []
        self.calls = 0

    def worker_ping(self, ping: WorkerPing) -> None:
        self.calls += 1
        if self.calls == 1:
            raise ManagerRequestError("manager restarting")
        self.pings.append(ping)


def test_heartbeat_sender_pings_every_interval_and_ignores_failures(caplog):
    caplog.set_level(logging.DEBUG, logger="damocles_py.manager.heartbeat")
    summary = (ThreadSummary(0, "sealer", "PC2Done", SectorId(MINER, 4), "running"),)
    target = FlakyManager()
    sender = HeartbeatSender(target, "worker-a", interval=0.02, threads=lambda: summary)
    sender.start()
    try:
        wait_until(lambda: len(target.pings) >= 2, timeout=10, what="two delivered pings")
    finally:
        sender.stop()
    calls = target.calls
    assert target.pings[0] == WorkerPing("worker-a", summary)
    assert "heartbeat of worker-a not delivered: manager restarting" in caplog.text
    assert all(r.levelno == logging.DEBUG for r in caplog.records)
    time.sleep(0.1)
    assert target.calls == calls  # stopped means stopped
    with pytest.raises(ValueError, match="positive"):
        HeartbeatSender(target, "worker-a", interval=0)


def test_heartbeat_sender_keeps_an_embedded_manager_informed(manager, clock):
    sender = HeartbeatSender(manager, "worker-c", interval=0.02)
    sender.start()
    try:
        wait_until(lambda: any(w.instance == "worker-c" for w in manager.workers()), 10, "the first ping")
    finally:
        sender.stop()
    assert status_of(manager, "worker-c").last_ping == clock.now


# ---------------------------------------------------------------------------------------------
# final deadlines


def test_an_expired_pre_commit_is_final_and_releases_the_deals(manager, clock, tmp_path):
    (tmp_path / "pieces" / "deal-1").write_bytes(os.urandom(1000))
    manager.import_pieces()
    sector = allocate(manager)
    deals = manager.acquire_deals(sector.id, AcquireDealsSpec())
    assert len(deals) == 1
    land_pre_commit(manager, clock, sector, proofs.compute_comm_d(PROOF, sector_pieces(PROOF, deals)))
    # Landed at epoch 1: the seed is at 1 + 3 (pre_commit_delay_epochs), drawn or not, and the
    # proof must be in by 4 + EXPIRY.
    deadline = manager.sector_debug(sector.id).deadlines
    assert [(d.kind, d.epoch, d.passed) for d in deadline] == [(DeadlineKind.PreCommitExpiry, 4 + EXPIRY, False)]
    clock.advance(3)
    assert manager.wait_seed(sector).seed.epoch == 4
    clock.advance(EXPIRY)
    assert report(manager, sector.id) == SectorStateResp()  # at the deadline: still in time

    clock.advance(1)
    debug = manager.sector_debug(sector.id)
    assert [(d.kind, d.passed) for d in debug.deadlines] == [(DeadlineKind.PreCommitExpiry, True)]
    answer = report(manager, sector.id, prev="C1Done", nxt="C2Done", event="C2")
    reason = ("final deadline reached: pre-commit expiry: proof must be submitted by epoch 9 "
              "(seed epoch 4 + seed_expiry_epochs 5); the chain is at epoch 10")
    assert answer == SectorStateResp(finalized=True, abort_reason=reason)

    record = manager.sector(sector.id)
    assert record.aborted and record.abort_reason == reason
    assert all(d.sector is None for d in manager.deals())  # back in the pool
    assert manager.sector_debug(sector.id).deadlines == ()  # an aborted sector has none
    assert report(manager, sector.id) == answer  # asked again: the same answer
    assert [h.next for h in manager.history(sector.id)][-1] == "DealsAcquired"  # the report is recorded


def test_an_expired_ticket_shows_in_the_debug_view_but_is_recoverable(manager, clock):
    sector = allocate(manager)
    assert manager.sector_debug(sector.id).deadlines == ()  # no ticket yet
    ticket = manager.assign_ticket(sector.id)
    clock.advance(EXPIRY + 1)

    debug = manager.sector_debug(sector.id)
    (expiry,) = debug.deadlines
    assert (expiry.kind, expiry.start_epoch, expiry.epoch, expiry.passed) == (
        DeadlineKind.TicketExpiry, ticket.epoch, ticket.epoch + EXPIRY, True)
    assert expiry.kind.cause is FailureCause.TicketExpired and not expiry.kind.final
    assert debug.epoch == EXPIRY + 1
    assert report(manager, sector.id) == SectorStateResp()  # not final: the worker can draw a new ticket
    assert not manager.sector(sector.id).aborted

    manager.assign_ticket(sector.id)
    assert [d.passed for d in manager.sector_debug(sector.id).deadlines] == [False]
    land_pre_commit(manager, clock, sector)
    assert [d.kind for d in manager.sector_debug(sector.id).deadlines] == [DeadlineKind.PreCommitExpiry]


def test_no_deadline_once_the_proof_is_accepted(manager, clock):
    sector = allocate(manager)
    land_pre_commit(manager, clock, sector)
    record = manager.sector(sector.id)
    proven = dataclasses.replace(record, commit=CommitRecord(b"proof", Submission.Accepted, 2, None))
    rejected = dataclasses.replace(record, commit=CommitRecord(b"proof", Submission.Rejected, None, "bad"))
    assert sector_deadlines(proven, manager.config, 100) == ()
    assert [d.passed for d in sector_deadlines(rejected, manager.config, 100)] == [True]
    assert sector_deadlines(dataclasses.replace(record, finished=True), manager.config, 100) == ()


def test_a_report_from_a_worker_not_holding_the_sector_is_refused(manager, clock):
    sector = allocate(manager)
    report(manager, sector.id)
    with pytest.raises(ManagerRequestError,
                       match=f"^sector {sector.id} is held by worker worker-a thread 0, not by worker-b thread 1$"):
        report(manager, sector.id, OTHER_WORKER)
    with pytest.raises(ManagerRequestError, match="held by worker worker-a thread 0"):
        report(manager, sector.id, dataclasses.replace(WORKER, thread=1))  # same instance, another thread
    assert len(manager.history(sector.id)) == 1  # the refused reports are not recorded
    assert "worker-b" not in {w.instance for w in manager.workers()}  # nor is their sender (its pings are)


# ---------------------------------------------------------------------------------------------
# over gRPC


@pytest.fixture
def served(manager):
    server, port = serve_manager(manager, "127.0.0.1:0")
    yield f"127.0.0.1:{port}"
    server.stop(grace=0).wait()


@pytest.fixture
def client(served):
    c = RemoteManager(served, timeout=5.0)
    yield c
    c.close()


def test_workers_and_the_debug_view_travel_intact(manager, clock, client):
    sector = allocate(client)
    client.assign_ticket(sector.id)
    report(client, sector.id, failure=("temporary", "PC1Failed", "disk hiccup"))
    client.worker_ping(WorkerPing("worker-a", (ThreadSummary(0, "sealer", "Allocated", sector.id, "running"),)))
    clock.advance(EXPIRY + 1)

    assert client.workers() == manager.workers() and len(client.workers()) == 1
    debug = client.sector_debug(sector.id)
    assert debug == manager.sector_debug(sector.id)
    assert debug.holder_thread == ThreadSummary(0, "sealer", "Allocated", sector.id, "running")
    assert debug.deadlines[0].passed and debug.history[0].failure_cause == "PC1Failed"
    assert client.sector_debug(SectorId(MINER, 99)) is None


def raw_call(addr: str, rpc: str, request):
    """Call `rpc` with a request RemoteManager could never build: (response, None) or (None, error)."""
    with grpc.insecure_channel(addr) as channel:
        try:
            return getattr(pb_grpc.SectorManagerStub(channel), rpc)(request, timeout=5), None
        except grpc.RpcError as e:
            return None, e


def test_hostile_requests_get_clear_statuses_and_leave_the_manager_working(manager, clock, served, client):
    sector = allocate(client)
    ticket = client.assign_ticket(sector.id)
    info = PreCommitInfo(FAKE_COMM_R, CC_COMM_D, ticket)
    sector_pb, info_pb = convert.allocated_sector_to_pb(sector), convert.pre_commit_info_to_pb(info)

    def report_pb(worker: WorkerRef, number: int = sector.id.number) -> pb.ReportStateRequest:
        return pb.ReportStateRequest(
            sector=pb.SectorId(miner=MINER, number=number),
            report=convert.state_report_to_pb(StateReport(worker, "Allocated", "DealsAcquired", "AcquireDeals")))

    refused = [
        # unknown sectors
        ("ReportState", report_pb(WORKER, 42), grpc.StatusCode.NOT_FOUND, "^unknown sector 1000-42$"),
        ("DebugSector", pb.DebugSectorRequest(sector=pb.SectorId(miner=MINER, number=42)),
         grpc.StatusCode.NOT_FOUND, "^unknown sector 1000-42$"),
        # a worker reporting on a sector another worker holds
        ("ReportState", report_pb(OTHER_WORKER), grpc.StatusCode.PERMISSION_DENIED,
         f"^sector {sector.id} is held by worker worker-a thread 0, not by worker-b thread 1$"),
        # a proof before there is anything to prove
        ("SubmitProof", pb.SubmitProofRequest(sector=convert.sector_id_to_pb(sector.id), proof=b"\xff" * 192),
         grpc.StatusCode.FAILED_PRECONDITION, "has no seed yet"),
        # wrong-length fields
        ("SubmitPreCommit", pb.SubmitPreCommitRequest(sector=sector_pb, info=pb.PreCommitInfo(
            comm_r=FAKE_COMM_R[:31], comm_d=CC_COMM_D, ticket=info_pb.ticket)),
         grpc.StatusCode.INVALID_ARGUMENT, r"info\.comm_r: must be 32 bytes, got 31"),
        ("SubmitPreCommit", pb.SubmitPreCommitRequest(sector=sector_pb, info=pb.PreCommitInfo(
            comm_r=FAKE_COMM_R, comm_d=CC_COMM_D, ticket=pb.Ticket(value=bytes(33), epoch=0))),
         grpc.StatusCode.INVALID_ARGUMENT, r"info\.ticket\.value: must be 32 bytes, got 33"),
        ("SubmitSnapUpProof", pb.SubmitSnapUpProofRequest(
            sector=convert.sector_id_to_pb(sector.id),
            info=pb.SnapUpProofInfo(comm_r_new=FAKE_COMM_R, comm_d_new=b"", proof=b"p", store="s")),
         grpc.StatusCode.INVALID_ARGUMENT, r"info\.comm_d_new: must be 32 bytes, got 0"),
        ("WorkerPing", pb.WorkerPingRequest(instance="worker-a", threads=[pb.ThreadSummary(
            index=0, sector=pb.SectorId(miner=MINER, number=(1 << 64) - 1))]),
         grpc.StatusCode.INVALID_ARGUMENT, r"threads\[0\]\.sector\.number: .* out of range"),
    ]
    for rpc, request, code, message in refused:
        _, error = raw_call(served, rpc, request)
        assert error is not None and error.code() is code, (rpc, error and error.details())
        assert re.search(message, error.details()), (rpc, error.details())

    # duplicate submits are answers, not errors
    assert client.submit_pre_commit(sector, info, reset=False).result is SubmitResult.Accepted
    assert client.submit_pre_commit(sector, info, reset=False).result is SubmitResult.DuplicateSubmit
    other = PreCommitInfo(bytes(32), CC_COMM_D, ticket)
    assert client.submit_pre_commit(sector, other, reset=False).result is SubmitResult.MismatchedSubmission
    client.worker_ping(WorkerPing("worker-a"))
    client.worker_ping(WorkerPing("worker-a"))

    # malformed proof bytes: rejected as an answer (or, without a verifying key here, UNAVAILABLE)
    clock.advance(1)
    clock.advance(client.wait_seed(sector).delay_seconds)
    assert client.wait_seed(sector).seed is not None
    response, error = raw_call(served, "SubmitProof",
                               pb.SubmitProofRequest(sector=convert.sector_id_to_pb(sector.id), proof=b"\xff" * 7))
    if error is not None:
        assert error.code() is grpc.StatusCode.UNAVAILABLE and "params generate" in error.details()
    else:
        assert response.result == pb.SUBMIT_RESULT_REJECTED and response.desc.startswith("malformed proof")

    # nothing the hostile requests sent was recorded, and the manager keeps working
    assert manager.sector(sector.id).pre_commit.info == info
    assert manager.history(sector.id) == []
    others = [dataclasses.replace(WORKER, thread=t) for t in (1, 2)]  # WORKER holds sector 1: it gets it again
    assert [allocate(client, w).id.number for w in others] == [2, 3]
    assert allocate(client).id == sector.id


# ---------------------------------------------------------------------------------------------
# the damocles-manager command


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "damocles_py.cli.manager", *args],
                          capture_output=True, text=True, timeout=60)


def test_sector_debug_and_worker_list_commands(manager, clock, served, client):
    held = allocate(client)
    report(client, held.id, prev="Empty", nxt="Allocated", event="SectorAllocated")
    report(client, held.id, prev="Allocated", nxt="Allocated", event="Failure",
           failure=("temporary", "PC1Failed", "disk hiccup"))
    client.assign_ticket(held.id)
    client.worker_ping(WorkerPing("worker-a", (ThreadSummary(0, "sealer", "TicketAssigned", held.id, "running"),)))
    expired = allocate(client, OTHER_WORKER)
    land_pre_commit(client, clock, expired)  # one epoch later
    clock.advance(59)  # worker-a is lost; the ticket of `held` and the pre-commit of `expired` expired
    assert report(client, expired.id, OTHER_WORKER).finalized  # worker-b is alive and told to give it up

    out = run_cli("sector", "debug", str(held.id), "--addr", served)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for expected in [
        f"sector:        {held.id}",
        f"proof:         {PROOF.name}",
        "state:         sealing (ticket assigned)",
        "pre-commit:    none",
        "proof:         none",
        "chain head:    epoch 60",
        "deadlines:",
        "  ticket expiry: PASSED: pre-commit must land by epoch 5 (ticket epoch 0 + ticket_expiry_epochs 5)",
        "    cause:   TicketExpired (permanent)",
        f"    meaning: {FailureCause.TicketExpired.meaning}",
        f"    action:  {FailureCause.TicketExpired.action}",
        "history:       2 state reports, oldest first",
        f"  meaning: {FailureCause.PC1Failed.meaning}",
        f"  action:  {FailureCause.PC1Failed.action}",
    ]:
        assert expected in lines, (expected, out.stdout)
    assert re.search(r"^holder:        worker-a thread 0 at /sealing/0; LOST: last seen .* \(60s ago\)$",
                     out.stdout, re.M), out.stdout
    assert "holder thread: running, sealer plan, at TicketAssigned on 1000-1 (as of its last ping)" in lines
    assert re.search(r"^  \S+ \S+  worker-a/0  Empty --SectorAllocated--> Allocated$", out.stdout, re.M)
    assert re.search(r"^  .*  worker-a/0  Allocated --Failure--> Allocated  \[temporary PC1Failed: disk hiccup\]$",
                     out.stdout, re.M)
    assert re.search(r"^last failure:  PC1Failed \(temporary\) at .*: disk hiccup$", out.stdout, re.M)

    out = run_cli("sector", "debug", str(expired.id), "--addr", served)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    state = lines.index("state:         aborted: final deadline reached: pre-commit expiry: proof must be submitted"
                        " by epoch 9 (seed epoch 4 + seed_expiry_epochs 5); the chain is at epoch 60")
    assert lines[state + 1:state + 4] == ["  cause:   FinalDeadlineReached (abort)",
                                          f"  meaning: {FailureCause.FinalDeadlineReached.meaning}",
                                          f"  action:  {FailureCause.FinalDeadlineReached.action}"]
    assert re.search(r"^holder:        worker-b thread 1 at /sealing/1; last seen .* \(0s ago\)$", out.stdout, re.M)
    assert "pre-commit:    landed at epoch 1" in lines and "proof:         none" in lines
    assert "deadlines:     none" in out.stdout and "last failure:  none" in out.stdout

    out = run_cli("worker", "list", "--addr", served)
    assert out.returncode == 0, out.stderr
    rows = out.stdout.splitlines()
    assert rows[0].split() == ["instance", "status", "last", "seen", "silent", "sectors"]
    assert re.match(r"worker-a +LOST +\S+ \S+ +60s  1000-1$", rows[1]), rows
    assert rows[2] == "  thread 0: sealer plan, running, at TicketAssigned, sector 1000-1"
    assert re.match(r"worker-b +alive +\S+ \S+ +0s  -$", rows[3]), rows  # its sector was aborted

    out = run_cli("sector", "debug", "1000-99", "--addr", served)
    assert (out.returncode, out.stderr) == (2, "error: unknown sector 1000-99\n")


def test_worker_timeout_option_and_config_key(tmp_path, capsys):
    assert manager_cli(["run", "--state-dir", str(tmp_path / "state"), "--worker-timeout", "soon"]) == 2
    assert capsys.readouterr().err.startswith("error: --worker-timeout: ")
    config = load_config(write_config(tmp_path, embedded={"worker_timeout": "45s"}))
    assert config.sector_manager.embedded.worker_timeout == 45.0
    assert load_config(write_config(tmp_path)).sector_manager.embedded.worker_timeout == 60.0
