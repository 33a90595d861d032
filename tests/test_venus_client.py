"""`VenusManager` over real HTTP on loopback, against damocles-manager's documented wire format.

damocles-manager is Go and cannot run here, so the peer is a small stdlib HTTP server that answers
each `Venus.*` call with the literal JSON go-jsonrpc writes (reference `damocles-rpc.md` §1.1, §1.5):
`{"jsonrpc":"2.0","result":...,"id":N}`, errors `{"jsonrpc":"2.0","id":N,"error":{...}}`, Go's extra
fields included. Each test checks the bytes the client sent and what it made of the answer: the
strict-response rules, the error codes (11001 aborts, anything else is temporary, also through a
real sealing thread), timeouts against a peer that never answers, and piece download.
"""

from __future__ import annotations

import inspect
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import wait_until, write_config

from damocles_py.config.schema import Plan, ProcessorsConfig, SealingConfig, SealingThreadConfig
from damocles_py.fsm.context import StageContext, ThreadControl
from damocles_py.processors.gates import StageLimits
from damocles_py.processors.pool import Processors
from damocles_py.fsm.handlers.common import stage_pieces
from damocles_py.fsm.sector import Sector
from damocles_py.fsm.failure import FailureCause, FailureLevel, SealingFailure
from damocles_py.manager.heartbeat import HeartbeatSender
from damocles_py.manager.interface import (
    AcquireDealsSpec,
    AllocatedSector,
    AllocateSpec,
    Deal,
    ManagerRequestError,
    ManagerUnavailable,
    OnChainState,
    PreCommitInfo,
    SectorId,
    SectorManager,
    SectorStateResp,
    Seed,
    SeedWait,
    SnapUpProofInfo,
    StateReport,
    SubmitResult,
    ThreadSummary,
    Ticket,
    WorkerPing,
    WorkerRef,
)
from damocles_py.manager.venus.addr import AddressError, parse_manager_addr
from damocles_py.manager.venus.client import PLEDGE_PREFIX, WORKER_HEADER, VenusManager
from damocles_py.manager.venus.errors import SectorStateNotFound, VenusResponseError, VenusRPCError
from damocles_py.manager.venus.piecestore import download_piece
from damocles_py.proofs import PieceInfo, SealProof
from damocles_py.store.location import init_location
from damocles_py.thread.observer import WorkerObserver
from damocles_py.thread.runtime import SealingThread, WorkerContext, classify
from test_venus_codec import (
    COMM_R,
    COMM_R_JSON,
    GO_PIECE,
    GO_SNAPUP,
    GO_STORE,
    PROOF,
    PROOF_B64,
    TICKET,
    TICKET_B64,
    ZERO_2K,
    ZERO_2K_CID,
)

P2K = SealProof.StackedDrg2KiBV1_1
SID = SectorId(1000, 1)
WORKER = WorkerRef("worker-a", 0, "/abs/path/store1")


class GoManager:
    """A loopback HTTP server speaking as damocles-manager: answers are literal JSON texts.

    `answer(method, result_json)` queues a success, `fail(method, code, message)` a go-jsonrpc
    error, `raw(method, body, status)` any body; answers are given in the order queued, and once
    all were given the last one repeats. An unknown method gets go-jsonrpc's -32601 with HTTP 500. Every request is recorded.
    """

    def __init__(self):
        self.requests: list[tuple[str, dict, bytes]] = []  # (path, headers, body)
        self._answers: dict[str, list[Callable[[object], tuple[int, bytes]]]] = {}
        self._used: dict[str, int] = {}  # method -> answers given
        self.files: dict[str, tuple[int, dict, bytes]] = {}  # GET path -> (status, headers, body)
        self.gets: list[tuple[str, dict]] = []
        manager = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                manager.requests.append((self.path, dict(self.headers), body))
                request = json.loads(body)
                status, out = manager._reply(request)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_GET(self):
                manager.gets.append((self.path, dict(self.headers)))
                status, headers, body = manager.files.get(self.path, (404, {}, b"404 page not found\n"))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.addr = f"/ip4/127.0.0.1/tcp/{self.port}/http"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def _reply(self, request) -> tuple[int, bytes]:
        queue = self._answers.get(request["method"])
        if not queue:
            m = request["method"]
            return 500, (b'{"jsonrpc":"2.0","id":%d,"error":{"code":-32601,"message":"(error code -32601) method '
                         b"'%s' not found\"}}" % (request["id"], m.encode()))
        used = self._used.get(request["method"], 0)
        self._used[request["method"]] = used + 1
        return queue[min(used, len(queue) - 1)](request["id"])

    def answer(self, method: str, result_json: str) -> None:
        self._answers.setdefault(method, []).append(
            lambda rid: (200, b'{"jsonrpc":"2.0","result":%s,"id":%d}' % (result_json.encode(), rid)))

    def fail(self, method: str, code: int, message: str, status: int = 200) -> None:
        self._answers.setdefault(method, []).append(lambda rid: (status, json.dumps(
            {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}},
            separators=(",", ":")).encode()))

    def raw(self, method: str, body: Callable[[int], bytes], status: int = 200) -> None:
        self._answers.setdefault(method, []).append(lambda rid: (status, body(rid)))

    def sent(self, method: str) -> list[str]:
        """The request bodies sent for `method`, as text."""
        return [b.decode() for _, _, b in self.requests if json.loads(b)["method"] == method]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def go():
    server = GoManager()
    yield server
    server.close()


@pytest.fixture
def venus(go):
    client = VenusManager(go.addr, timeout=10.0)
    yield client
    client.close()


def body(method: str, params: str, rid: int) -> str:
    return '{"jsonrpc":"2.0","method":"%s","params":%s,"id":%d}' % (method, params, rid)


# ---------------------------------------------------------------------------------------------
# addresses


@pytest.mark.parametrize("addr, url", [
    ("/ip4/127.0.0.1/tcp/1789", "http://127.0.0.1:1789/rpc/v0"),
    ("/ip4/10.0.0.2/tcp/1789/https", "https://10.0.0.2:1789/rpc/v0"),
    ("/ip4/10.0.0.2/tcp/1789/http", "http://10.0.0.2:1789/rpc/v0"),
    ("/ip6/2001:db8::8888/tcp/1789", "http://[2001:db8::8888]:1789/rpc/v0"),
    ("/dns/manager.lan/tcp/1789", "http://manager.lan:1789/rpc/v0"),
    ("/dns4/manager.lan/tcp/1789/https", "https://manager.lan:1789/rpc/v0"),
    ("/dns6/manager.lan/tcp/80", "http://manager.lan:80/rpc/v0"),
    ("http://hello.com:1789", "http://hello.com:1789/rpc/v0"),
    ("https://hello.com:1789/some/path?q=1", "https://hello.com:1789/rpc/v0"),
    ("http://[::1]:1789/x", "http://[::1]:1789/rpc/v0"),
    ("http://hello.com", "http://hello.com/rpc/v0"),
])
def test_address_forms(addr, url):
    endpoint = parse_manager_addr(addr)
    assert endpoint.rpc_url == url
    assert endpoint.piecestore_url == url.replace("/rpc/v0", "/piecestore/")


@pytest.mark.parametrize("addr, problem", [
    ("127.0.0.1:1789", "not a multiaddr"),
    ("/ip4/127.0.0.1", "needs a host and a TCP port"),
    ("/ip4/localhost/tcp/1789", "not an ip4 address"),
    ("/ip6/127.0.0.1/tcp/1789", "not an ip6 address"),
    ("/ip4/127.0.0.1/udp/1789", "expected /tcp/<port>"),
    ("/ip4/127.0.0.1/tcp/99999", "not a TCP port"),
    ("/ip4/127.0.0.1/tcp/1789/ws", "only /http or /https"),
    ("/unix/tmp/sock/tcp/1", "/unix is not supported"),
    ("ftp://hello.com:21", "not http or https"),
    ("http://hello.com:port", "not a number"),
])
def test_bad_addresses_say_what_to_write(addr, problem):
    with pytest.raises(AddressError) as e:
        parse_manager_addr(addr)
    text = str(e.value)
    assert problem in text and "/ip4/127.0.0.1/tcp/1789" in text and "\n" not in text


# ---------------------------------------------------------------------------------------------
# a sealer's calls, end to end over HTTP


def test_sealer_calls_send_what_damocles_worker_sends(go, venus):
    go.answer("Venus.AllocateSector", '{"ID":{"Miner":1000,"Number":1},"ProofType":5}')
    pledge = GO_PIECE.replace('"DealID":77', '"DealID":0')
    go.answer("Venus.AcquireDeals", f"[{GO_PIECE},{pledge}]")
    go.answer("Venus.AssignTicket", '{"Ticket":"%s","Epoch":12345}' % TICKET_B64)
    go.answer("Venus.SubmitPreCommit", '{"Res":1,"Desc":null}')
    go.answer("Venus.PollPreCommitState", '{"State":2,"Desc":null}')
    go.answer("Venus.PollPreCommitState", '{"State":3,"Desc":null}')
    go.answer("Venus.StoreReserveSpace", GO_STORE)
    go.answer("Venus.SubmitPersistedEx", "true")
    go.answer("Venus.WaitSeed", '{"ShouldWait":true,"Delay":1500,"Seed":null}')
    go.answer("Venus.WaitSeed", '{"ShouldWait":false,"Delay":0,"Seed":{"Seed":"%s","Epoch":2000}}' % TICKET_B64)
    go.answer("Venus.SubmitProof", '{"Res":2,"Desc":"duplicate"}')
    go.answer("Venus.PollProofState", '{"State":3,"Desc":null}')
    go.answer("Venus.ReportState", '{"Id":{"Miner":1000,"Number":1},"Finalized":false,"AbortReason":""}')
    go.answer("Venus.ReportFinalized", "null")

    spec = AllocateSpec(allowed_miners=(1000,), allowed_proofs=(P2K,), allowed_stores=("store-a",))
    assert venus.allocate_sector(spec, WORKER) == AllocatedSector(SID, P2K)
    deals = venus.acquire_deals(SID, AcquireDealsSpec())
    assert [(d.deal_id, d.piece.commitment, d.piece.size, d.piece_path, d.payload_size) for d in deals] == [
        (77, ZERO_2K, 2032, ZERO_2K_CID, 1900), (0, ZERO_2K, 2032, PLEDGE_PREFIX + ZERO_2K_CID, 1900)]
    ticket = venus.assign_ticket(SID)
    assert ticket == Ticket(TICKET, 12345)
    resp = venus.submit_pre_commit(AllocatedSector(SID, P2K), PreCommitInfo(COMM_R, ZERO_2K, ticket), reset=False)
    assert resp.result is SubmitResult.Accepted and resp.desc == ""
    assert venus.poll_pre_commit_state(SID).state is OnChainState.Pending  # Packed: poll again
    assert venus.poll_pre_commit_state(SID).state is OnChainState.Landed
    assert venus.reserve_store(SID, 4096, ["store-a", "store-b"]) == "store-a"
    assert venus.submit_persisted(SID, "store-a", False) is True
    assert venus.wait_seed(AllocatedSector(SID, P2K)) == SeedWait(None, 1500.0)
    assert venus.wait_seed(AllocatedSector(SID, P2K)) == SeedWait(Seed(TICKET, 2000))
    resp = venus.submit_proof(SID, PROOF, reset=False)
    assert resp.result is SubmitResult.DuplicateSubmit and resp.desc == "duplicate"
    assert venus.poll_proof_state(SID).state is OnChainState.Landed
    report = StateReport(WORKER, "C2Done", "ProofSubmitted", "SubmitProof")
    assert venus.report_state(SID, report) == SectorStateResp(finalized=False, abort_reason="")
    venus.report_finalized(SID, worker=WORKER)

    sid = '{"Miner":1000,"Number":1}'
    comm_d = "[" + ",".join(map(str, ZERO_2K)) + "]"
    assert [b for _, _, b in go.requests] == [x.encode() for x in [
        body("Venus.AllocateSector", '[{"AllowedMiners":[1000],"AllowedProofTypes":[5]}]', 0),
        body("Venus.AcquireDeals", f'[{sid},{{"MaxDeals":null,"MinUsedSpace":null}}]', 1),
        body("Venus.AssignTicket", f"[{sid}]", 2),
        body("Venus.SubmitPreCommit", '[{"ID":%s,"ProofType":5},{"CommR":%s,"CommD":%s,"Ticket":{"Ticket":"%s",'
             '"Epoch":12345}},false]' % (sid, COMM_R_JSON, comm_d, TICKET_B64), 3),
        body("Venus.PollPreCommitState", f"[{sid}]", 4),
        body("Venus.PollPreCommitState", f"[{sid}]", 5),
        body("Venus.StoreReserveSpace", f'[{sid},4096,["store-a","store-b"]]', 6),
        body("Venus.SubmitPersistedEx", f'[{sid},"store-a",false]', 7),
        body("Venus.WaitSeed", f"[{sid},5]", 8),
        body("Venus.WaitSeed", f"[{sid},5]", 9),
        body("Venus.SubmitProof", f'[{sid},{{"Proof":"{PROOF_B64}"}},false]', 10),
        body("Venus.PollProofState", f"[{sid}]", 11),
        body("Venus.ReportState", '[%s,{"Worker":{"Instance":"worker-a","Location":"/abs/path/store1"},'
             '"StateChange":{"Prev":"C2Done","Next":"ProofSubmitted","Event":"SubmitProof"},"Failure":null}]'
             % sid, 12),
        body("Venus.ReportFinalized", f"[{sid}]", 13),
    ]]
    for path, headers, _ in go.requests:
        assert path == "/rpc/v0"
        assert headers["Content-Type"] == "application/json" and headers["Accept"] == "application/json"
        assert "Authorization" not in headers  # no auth, as damocles-worker


def test_allocation_offers_only_the_proofs_we_seal_and_gives_back_what_we_cannot(go, venus):
    go.answer("Venus.AllocateSector", '{"ID":{"Miner":1000,"Number":9},"ProofType":10}')  # synthetic PoRep
    go.answer("Venus.AllocateSector", "null")
    go.answer("Venus.ReportAborted", "null")
    assert venus.allocate_sector(AllocateSpec(), WORKER) is None
    assert go.sent("Venus.AllocateSector")[0] == body(
        "Venus.AllocateSector", '[{"AllowedMiners":[],"AllowedProofTypes":[5,6,7,8,9]}]', 0)
    (aborted,) = go.sent("Venus.ReportAborted")
    assert aborted.startswith('{"jsonrpc":"2.0","method":"Venus.ReportAborted","params":[{"Miner":1000,"Number":9},'
                              '"seal proof type 10 is not supported')
    assert venus.allocate_sector(AllocateSpec(), WORKER) is None  # no work
    assert len(go.sent("Venus.ReportAborted")) == 1


def test_failures_are_reported_with_damocles_levels(go, venus):
    go.answer("Venus.ReportState", '{"Id":{"Miner":0,"Number":0},"Finalized":true,"AbortReason":null}')
    report = StateReport(WORKER, "TreeDBuilt", "TreeDBuilt", "Failure", "temporary", "ManagerUnreachable",
                         "no answer\nsecond line")
    # Finalized: the runtime's finalized path; the mock manager's Id {0,0} is not checked, as in damocles
    assert venus.report_state(SID, report) == SectorStateResp(finalized=True, abort_reason=None)
    (sent,) = go.sent("Venus.ReportState")
    assert '"Failure":{"Level":"Temporary","Desc":"ManagerUnreachable: no answer\\nsecond line"}' in sent


def test_wait_seed_sends_the_sectors_proof_and_needs_a_usable_answer(go):
    go.answer("Venus.WaitSeed", '{"ShouldWait":false,"Delay":0,"Seed":null}')
    with VenusManager(go.addr, timeout=10.0) as fresh:  # has seen no allocation: a restarted worker
        with pytest.raises(VenusResponseError, match="no seed and nothing to wait for") as e:
            fresh.wait_seed(AllocatedSector(SID, SealProof.StackedDrg32GiBV1_1))
        assert classify(e.value).level is FailureLevel.temporary
    assert go.sent("Venus.WaitSeed") == [body("Venus.WaitSeed", '[{"Miner":1000,"Number":1},8]', 0)]


def test_reserve_store_must_answer_one_of_the_candidates(go, venus):
    go.answer("Venus.StoreReserveSpace", GO_STORE.replace("store-a", "store-z"))
    go.answer("Venus.StoreReserveSpace", "null")
    with pytest.raises(ManagerRequestError, match="'store-z', which is not one of this worker's candidates"):
        venus.reserve_store(SID, 4096, ["store-a"])
    assert venus.reserve_store(SID, 4096, ["store-a"]) is None


# ---------------------------------------------------------------------------------------------
# snap-up and rebuild


def test_snapup_allocation_and_proof(go, venus):
    go.answer("Venus.AllocateSanpUpSector", GO_SNAPUP)
    go.answer("Venus.SubmitSnapUpProof", '{"Res":1,"Desc":null}')
    cand = venus.allocate_snapup_sector(AllocateSpec(allowed_proofs=(P2K,)), AcquireDealsSpec(2, None), WORKER)
    assert cand.sector == AllocatedSector(SectorId(1000, 3), P2K)
    assert cand.comm_r_old == COMM_R and cand.store == "store-a"
    assert [(d.deal_id, d.piece_path) for d in cand.deals] == [(77, ZERO_2K_CID)]
    info = SnapUpProofInfo(comm_r_new=bytes(32), comm_d_new=ZERO_2K, proof=PROOF, store="store-b",
                           pieces=tuple(d.piece.commitment for d in cand.deals))
    with VenusManager(go.addr, timeout=10.0) as restarted:  # the pieces come with the info, not from memory
        assert restarted.submit_snapup_proof(SectorId(1000, 3), info).result is SubmitResult.Accepted
    assert go.sent("Venus.AllocateSanpUpSector") == [body(
        "Venus.AllocateSanpUpSector", '[{"Sector":{"AllowedMiners":[],"AllowedProofTypes":[5]},'
        '"Deals":{"MaxDeals":2,"MinUsedSpace":null}}]', 0)]
    assert go.sent("Venus.SubmitSnapUpProof") == [body(
        "Venus.SubmitSnapUpProof", '[{"Miner":1000,"Number":3},{"CommR":%s,"CommD":%s,"AccessInstance":"store-b",'
        '"Pieces":[{"/":"%s"}],"Proof":"%s"}]' % ("[" + ",".join(["0"] * 32) + "]",
                                                  "[" + ",".join(map(str, ZERO_2K)) + "]", ZERO_2K_CID, PROOF_B64), 0)]


@pytest.mark.parametrize("change, reason", [
    (('"Pieces":[%s]' % GO_PIECE, '"Pieces":[]'), "has no pieces"),
    (('"AccessInstance":"store-a"', '"AccessInstance":""'), "names no access instance"),
])
def test_an_unusable_snapup_is_given_back(go, venus, change, reason):
    go.answer("Venus.AllocateSanpUpSector", GO_SNAPUP.replace(*change))
    go.answer("Venus.ReportAborted", "null")
    assert venus.allocate_snapup_sector(AllocateSpec(), AcquireDealsSpec(), WORKER) is None
    (aborted,) = go.sent("Venus.ReportAborted")
    assert '{"Miner":1000,"Number":3}' in aborted and reason in aborted


def test_rebuild_jobs(go, venus):
    legacy = '{"ID":12,"PayloadSize":1900,"Piece":{"Size":2048,"Offset":0,"Cid":{"/":"%s"}}}' % ZERO_2K_CID
    go.answer("Venus.AllocateRebuildSector", '{"Sector":{"ID":{"Miner":1000,"Number":4},"ProofType":5},'
              '"Ticket":{"Ticket":"%s","Epoch":90},"Pieces":[%s],"PiecesV2":null,"IsSnapUp":false,'
              '"UpgradePublic":null}' % (TICKET_B64, legacy))
    go.answer("Venus.AllocateRebuildSector", '{"Sector":{"ID":{"Miner":1000,"Number":5},"ProofType":5},'
              '"Ticket":{"Ticket":"%s","Epoch":90},"Pieces":null,"PiecesV2":[%s],"IsSnapUp":true,'
              '"UpgradePublic":{"CommR":%s,"SealedCID":null,"Activation":1,"Expiration":2}}'
              % (TICKET_B64, GO_PIECE, COMM_R_JSON))
    job = venus.allocate_rebuild_sector(AllocateSpec(), WORKER)
    assert job.sector == AllocatedSector(SectorId(1000, 4), P2K) and job.ticket == Ticket(TICKET, 90)
    assert [(d.deal_id, d.piece_path) for d in job.deals] == [(12, ZERO_2K_CID)]
    assert (job.comm_r, job.comm_d, job.store, job.is_snapup) == (b"", b"", "", False)
    job = venus.allocate_rebuild_sector(AllocateSpec(), WORKER)
    assert job.deals == () and [d.deal_id for d in job.upgrade_deals] == [77]
    assert job.is_snapup and job.comm_r == COMM_R


# ---------------------------------------------------------------------------------------------
# liveness and stores


def test_worker_ping_and_store_checks(go):
    go.answer("Venus.WorkerPing", "null")
    go.answer("Venus.StoreBasicInfo", GO_STORE)
    go.answer("Venus.StoreBasicInfo", "null")
    threads = (ThreadSummary(0, "sealer", "PC1Done", SID, "running"),
               ThreadSummary(1, "sealer", "Empty", None, "idle"),
               ThreadSummary(2, "sealer", "C2Done", SectorId(1000, 2), "paused"))
    with VenusManager(go.addr, dest="10.0.0.7:17890", version="v0.1.0-test") as venus:
        venus.worker_ping(WorkerPing("worker-a", threads))
        assert venus.require_stores(["store-a"])["store-a"].path == "/mnt/p1"
        with pytest.raises(ManagerRequestError, match="store basic info of instance 'store-b' not found"):
            venus.require_stores(["store-b"])
    assert go.sent("Venus.WorkerPing") == [body(
        "Venus.WorkerPing", '[{"Name":"worker-a","Dest":"10.0.0.7:17890","Version":"v0.1.0-test",'
        '"Summary":{"Threads":3,"Empty":1,"Paused":1,"Running":1,"Waiting":0,"Errors":0}}]', 0)]
    with VenusManager(go.addr) as venus:  # damocles' default Dest: the local IP towards the manager
        venus.worker_ping(WorkerPing("worker-a"))
    assert '"Dest":"127.0.0.1:17890"' in go.sent("Venus.WorkerPing")[-1]


# ---------------------------------------------------------------------------------------------
# the strict response shape and the error codes


@pytest.mark.parametrize("make_body, status, problem", [
    (lambda rid: b'{"jsonrpc":"2.0","result":null,"id":%d,"meta":{}}' % rid, 200, "unexpected top-level key(s) ['meta']"),
    (lambda rid: b'{"jsonrpc":"2.0","id":%d}' % rid, 200, 'missing: a success must carry "result"'),
    (lambda rid: b'{"jsonrpc":"2.0","result":null,"error":{"code":1,"message":"x"},"id":%d}' % rid, 200,
     "unexpected top-level key(s) ['result']"),
    (lambda rid: b'{"jsonrpc":"1.0","result":null,"id":%d}' % rid, 200, 'expected "2.0"'),
    (lambda rid: b'{"jsonrpc":"2.0","result":null,"id":%d}' % (rid + 1), 200, "is not the id of the request"),
    (lambda rid: b'{"jsonrpc":"2.0","result":null}', 200, "response.id: missing"),
    (lambda rid: b'{"jsonrpc":"2.0","id":%d,"error":{"code":1,"message":"x","stack":"..."}}' % rid, 200,
     "unexpected key(s) ['stack']"),
    (lambda rid: b'{"jsonrpc":"2.0","id":%d,"error":{"code":"1","message":"x"}}' % rid, 200,
     "response.error.code: expected an integer"),
    (lambda rid: b'{"jsonrpc":"2.0","result":null,"result":1,"id":%d}' % rid, 200, "duplicate key 'result'"),
    (lambda rid: b'{"jsonrpc":"2.0","result":NaN,"id":%d}' % rid, 200, "not JSON"),
    (lambda rid: b"<html>502 Bad Gateway</html>", 502, "not JSON"),
    (lambda rid: b"", 200, "not JSON"),
    (lambda rid: b'[{"jsonrpc":"2.0","result":null,"id":%d}]' % rid, 200, "expected a JSON-RPC response object"),
])
def test_a_malformed_response_is_a_temporary_failure_naming_it(go, venus, make_body, status, problem):
    go.raw("Venus.ReportFinalized", make_body, status)
    with pytest.raises(VenusResponseError) as e:
        venus.report_finalized(SID, worker=WORKER)
    assert problem in str(e.value) and "Venus.ReportFinalized" in str(e.value)
    assert isinstance(e.value, ManagerUnavailable)
    failure = classify(e.value)
    assert (failure.cause, failure.level) == (FailureCause.ManagerUnreachable, FailureLevel.temporary)


def test_a_field_of_the_wrong_type_names_method_and_field(go, venus):
    go.answer("Venus.AssignTicket", '{"Ticket":"%s","Epoch":"12345"}' % TICKET_B64)
    with pytest.raises(VenusResponseError) as e:
        venus.assign_ticket(SID)
    assert (e.value.method, e.value.path) == ("Venus.AssignTicket", "result.Epoch")
    assert "Venus.AssignTicket" in str(e.value) and "result.Epoch: expected an integer" in str(e.value)
    assert classify(e.value).level is FailureLevel.temporary
    go.answer("Venus.AcquireDeals", "[%s]" % GO_PIECE.replace('"Size":2048', '"Size":2000', 1))
    with pytest.raises(VenusResponseError, match=r"result\[0\]\.Piece\.Size: 2000 is not a padded piece size"):
        venus.acquire_deals(SID, AcquireDealsSpec())


def test_error_code_11001_aborts_the_sector(go, venus):
    go.fail("Venus.AssignTicket", 11001, "error code 11001: sector state not found")
    with pytest.raises(SectorStateNotFound) as e:
        venus.assign_ticket(SID)
    failure = classify(e.value)
    assert (failure.cause, failure.level) == (FailureCause.SectorAbortedByManager, FailureLevel.abort)
    assert "sector state not found" in failure.detail and "Venus.AssignTicket" in failure.detail
    # for the final reports it is a refusal: the runtime finishes the sector locally, no retry
    go.fail("Venus.ReportFinalized", 11001, "error code 11001: sector state not found")
    with pytest.raises(ManagerRequestError):
        venus.report_finalized(SID, worker=WORKER)


@pytest.mark.parametrize("code, status", [(1, 200), (-32601, 500), (-32602, 500), (0, 500)])
def test_every_other_error_code_is_temporary(go, venus, code, status):
    go.fail("Venus.PollPreCommitState", code, "something went wrong", status)
    with pytest.raises(VenusRPCError) as e:
        venus.poll_pre_commit_state(SID)
    assert e.value.code == code and isinstance(e.value, ManagerUnavailable)
    failure = classify(e.value)
    assert (failure.cause, failure.level) == (FailureCause.ManagerUnreachable, FailureLevel.temporary)
    assert f"error code {code}: something went wrong" in str(e.value)
    assert ("is the damocles-manager of version 0.13?" in str(e.value)) == (code in (-32601, -32602))


def test_report_aborted_takes_an_error_answer_but_not_an_outage(go):
    go.fail("Venus.ReportAborted", 1, "sector is finalized")
    with VenusManager(go.addr, timeout=5.0) as venus:
        venus.report_aborted(SID, "reason", worker=WORKER)  # an answer: logged, as damocles-worker
    go.close()
    with VenusManager(go.addr, timeout=5.0) as venus:
        with pytest.raises(ManagerUnavailable, match="unreachable"):
            venus.report_aborted(SID, "reason", worker=WORKER)


# ---------------------------------------------------------------------------------------------
# a hung manager never blocks a thread for ever


def test_a_manager_that_never_answers_costs_one_timeout():
    with socket.socket() as listener:  # the kernel accepts the connection; nobody ever reads or answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        with VenusManager(f"/ip4/127.0.0.1/tcp/{port}", timeout=1.0) as venus:
            start = time.monotonic()
            with pytest.raises(ManagerUnavailable, match="did not answer within 1.0s"):
                venus.assign_ticket(SID)
            elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 1.0 * 3 + 2  # a 3x slower machine still passes


def test_a_state_report_has_its_own_short_bound():
    # the runtime reports after every step and only logs a failed report: a hung manager must cost
    # a step `report_timeout`, not the long `timeout` of the calls whose answer the step needs
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        with VenusManager(f"/ip4/127.0.0.1/tcp/{port}", timeout=30.0, report_timeout=0.5) as venus:
            start = time.monotonic()
            with pytest.raises(ManagerUnavailable, match="did not answer within 0.5s"):
                venus.report_state(SID, StateReport(WORKER, "Allocated", "DealsAcquired", "AcquireDeals"))
            elapsed = time.monotonic() - start
        assert VenusManager(f"/ip4/127.0.0.1/tcp/{port}", timeout=30.0).report_timeout == 10.0
    assert 0.4 <= elapsed < 0.5 * 3 + 2


def test_a_manager_that_trickles_its_answer_is_cut_at_the_deadline():
    stop = threading.Event()

    def trickle(listener):
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            while not stop.is_set():  # one byte every 0.1 s: each read succeeds, the answer never ends
                try:
                    conn.sendall(b" ")
                except OSError:
                    return
                stop.wait(0.1)

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        server = threading.Thread(target=trickle, args=(listener,), daemon=True)
        server.start()
        with VenusManager(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=1.0) as venus:
            start = time.monotonic()
            with pytest.raises(ManagerUnavailable, match="did not answer within"):
                venus.assign_ticket(SID)
            elapsed = time.monotonic() - start
        stop.set()
        server.join(5)
    assert 0.9 <= elapsed < 2 * 1.0 * 3 + 2  # at most the deadline plus one read timeout, 3x slower


def test_an_unreachable_manager_is_temporary():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        with VenusManager(f"/ip4/127.0.0.1/tcp/{port}", timeout=5.0) as venus:
            with pytest.raises(ManagerUnavailable, match="unreachable") as e:
                venus.allocate_sector(AllocateSpec(), WORKER)
    assert classify(e.value).cause is FailureCause.ManagerUnreachable


# ---------------------------------------------------------------------------------------------
# the runtime's reactions, through a real sealing thread


def _thread(tmp_path: Path, venus: VenusManager) -> SealingThread:
    location = init_location(tmp_path / "t0")
    sealing = SealingConfig(allowed_sizes=(P2K.sector_size,), max_retries=3, recover_interval=0.05,
                            seal_interval=3600.0, rpc_polling_interval=0.05)
    worker = WorkerContext("worker-a", venus, {}, StageLimits({}), WorkerObserver(), Processors(ProcessorsConfig()))
    return SealingThread(SealingThreadConfig(0, location, Plan.sealer, sealing), worker)


def _states(go) -> list[tuple[str, str, str | None]]:
    out = []
    for sent in go.sent("Venus.ReportState"):
        req = json.loads(sent)["params"][1]
        out.append((req["StateChange"]["Next"], req["StateChange"]["Event"], (req["Failure"] or {}).get("Level")))
    return out


def test_thread_aborts_on_11001_and_retries_on_code_1(go, tmp_path):
    go.answer("Venus.AllocateSector", '{"ID":{"Miner":1000,"Number":1},"ProofType":5}')
    go.answer("Venus.AllocateSector", "null")
    go.answer("Venus.ReportState", '{"Id":{"Miner":1000,"Number":1},"Finalized":false,"AbortReason":""}')
    go.fail("Venus.AssignTicket", 1, "chain head not available")  # temporary: retried
    go.fail("Venus.AssignTicket", 11001, "error code 11001: sector state not found")  # then abort
    with VenusManager(go.addr, timeout=10.0) as venus:
        thread = _thread(tmp_path, venus)
        thread.start()
        try:
            wait_until(lambda: thread.sectors_done == 1, 60, "the sector to be dropped")
        finally:
            thread.stop()
            thread.join(10)
    assert len(go.sent("Venus.AssignTicket")) == 2
    assert _states(go) == [("Allocated", "Allocate", None), ("DealsAcquired", "AcquireDeals", None),
                           ("PieceAdded", "AddPiece", None), ("TreeDBuilt", "BuildTreeD", None),
                           ("TreeDBuilt", "Failure", "Temporary")]  # code 1: retried
    assert go.sent("Venus.ReportAborted") == []  # 11001: the manager has no state for it, nothing to report
    assert _last(thread, SID) == ("TreeDBuilt", "Abort", "Aborted", "SectorAbortedByManager")


def test_a_pause_during_a_hung_call_takes_effect_when_the_call_gives_up(go, tmp_path):
    go.answer("Venus.AllocateSector", '{"ID":{"Miner":1000,"Number":1},"ProofType":5}')
    go.answer("Venus.ReportState", '{"Id":{"Miner":1000,"Number":1},"Finalized":false,"AbortReason":""}')

    def hang(rid: int) -> bytes:  # a manager that takes longer than the worker's bound
        time.sleep(3)
        return b'{"jsonrpc":"2.0","result":null,"id":%d}' % rid

    go.raw("Venus.AssignTicket", hang)
    with VenusManager(go.addr, timeout=1.0) as venus:
        thread = _thread(tmp_path, venus)
        thread.start()
        try:
            wait_until(lambda: go.sent("Venus.AssignTicket"), 30, "the hung call")
            start = time.monotonic()
            assert thread.pause()
            wait_until(lambda: thread.status.thread_state == "paused", 1.0 * 3 + 5, "the pause")
            elapsed = time.monotonic() - start
            calls = len(go.sent("Venus.AssignTicket"))
            time.sleep(0.5)  # recover_interval is 0.05 s: a thread that ignored the pause would call again
            assert len(go.sent("Venus.AssignTicket")) == calls == 1
        finally:
            thread.stop()
            assert thread.join(10)
    assert elapsed < 1.0 * 3 + 2  # the call's bound (1 s), not the manager's 3 s, nor for ever


def _last(thread: SealingThread, sid: SectorId) -> tuple:
    (sector,) = thread.db.find(sid)
    h = thread.db.history(sector.uid)[-1]
    return h.prev, h.event, h.next, h.failure_cause


def test_thread_aborts_when_report_state_answers_finalized(go, tmp_path):
    go.answer("Venus.AllocateSector", '{"ID":{"Miner":1000,"Number":1},"ProofType":5}')
    go.answer("Venus.AllocateSector", "null")
    go.answer("Venus.ReportState", '{"Id":{"Miner":1000,"Number":1},"Finalized":true,"AbortReason":"terminated"}')
    with VenusManager(go.addr, timeout=10.0) as venus:
        thread = _thread(tmp_path, venus)
        thread.start()
        try:
            wait_until(lambda: thread.sectors_done == 1, 60, "the sector to be dropped")
        finally:
            thread.stop()
            thread.join(10)
    assert _states(go) == [("Allocated", "Allocate", None)]  # then the sector was dropped
    assert _last(thread, SID) == ("Allocated", "Abort", "Aborted", "SectorAbortedByManager")
    assert go.sent("Venus.ReportAborted") == []  # as damocles: the manager decided, no ReportAborted
    assert go.sent("Venus.AcquireDeals") == [] and go.sent("Venus.AssignTicket") == []


# ---------------------------------------------------------------------------------------------
# piece download


def test_piece_download_follows_one_redirect_with_the_token(go, tmp_path):
    data = bytes(range(256)) * 8
    go.files[f"/piecestore/{ZERO_2K_CID}"] = (302, {"Location": f"/market/piece/{ZERO_2K_CID}"}, b"")
    go.files[f"/market/piece/{ZERO_2K_CID}"] = (200, {}, data)
    endpoint = parse_manager_addr(go.addr)
    dest = tmp_path / "pieces" / ZERO_2K_CID
    assert download_piece(endpoint, ZERO_2K_CID, dest, token="tok") == len(data)
    assert dest.read_bytes() == data and sorted(p.name for p in dest.parent.iterdir()) == [ZERO_2K_CID]
    (first, first_headers), (second, second_headers) = go.gets
    assert first == f"/piecestore/{ZERO_2K_CID}" and "Authorization" not in first_headers
    assert second == f"/market/piece/{ZERO_2K_CID}"
    assert second_headers["Authorization"] == "Bearer tok"
    assert second_headers["X-VENUS-API-NAMESPACE"] == "v1.IMarket"

    # ours: the headers of the RPC calls (the farm token) go to the manager, never to the redirect
    go.gets.clear()
    download_piece(endpoint, ZERO_2K_CID, dest, token="tok", origin_headers={"Authorization": "Bearer farm"})
    (_, first_headers), (_, second_headers) = go.gets
    assert first_headers["Authorization"] == "Bearer farm" and second_headers["Authorization"] == "Bearer tok"
    go.gets.clear()
    download_piece(endpoint, ZERO_2K_CID, dest, origin_headers={"Authorization": "Bearer farm"})
    assert "Authorization" not in go.gets[1][1]  # no piece_token: nothing sent where it redirects


def test_piece_download_failures_are_piece_download_failed(go, tmp_path):
    endpoint = parse_manager_addr(go.addr)
    dest = tmp_path / ZERO_2K_CID
    with pytest.raises(SealingFailure) as e:
        download_piece(endpoint, ZERO_2K_CID, dest)
    assert e.value.cause is FailureCause.PieceDownloadFailed and "HTTP 404" in e.value.detail
    assert not dest.exists() and list(tmp_path.iterdir()) == []
    go.close()
    with pytest.raises(SealingFailure, match="PieceDownloadFailed"):
        download_piece(endpoint, ZERO_2K_CID, dest, stall_timeout=2.0)


class _NoStageObserver:
    def stage_waiting(self, stage): ...

    def stage_started(self, stage): ...

    def stage_finished(self, stage, sector_size, seconds, ok): ...


def test_pieces_come_from_local_dirs_else_the_piecestore_once_and_pledge_pieces_are_zeros(go, tmp_path):
    """The AddPiece handler over a VenusManager, with real commP checks (ZERO_2K is the commP of
    2032 zero bytes): local_pieces_dirs first, else one download, and no file at all for a pledge."""
    zeros = b"\0" * 2032
    go.files[f"/piecestore/{ZERO_2K_CID}"] = (200, {}, zeros)
    deal = Deal(77, PieceInfo(ZERO_2K, 2032), ZERO_2K_CID, 1900)
    pledge = Deal(0, PieceInfo(ZERO_2K, 2032), PLEDGE_PREFIX + ZERO_2K_CID, 0)
    assert pledge.is_pledge and not deal.is_pledge
    local = tmp_path / "local"
    local.mkdir()
    (local / ZERO_2K_CID).write_bytes(zeros)
    with VenusManager(go.addr, timeout=10.0, headers={"Authorization": "Bearer farm"}) as venus:
        ctx = StageContext(Sector(1, Plan.sealer, id=SID, proof=P2K), venus, tmp_path / "t0", SealingConfig(), {},
                           WORKER, logging.getLogger("test"), ThreadControl(), StageLimits({}), _NoStageObserver(), Processors(ProcessorsConfig()),
                           local_pieces_dirs=(local,), piece_store=venus)
        ctx.files.prepare()
        assert stage_pieces(ctx, [deal], ctx.files.staged)[0] == PieceInfo(ZERO_2K, 2032)
        assert go.gets == []  # the local file
        (local / ZERO_2K_CID).unlink()
        for _ in range(2):  # a retried stage does not download again
            assert stage_pieces(ctx, [deal], ctx.files.staged)[0] == PieceInfo(ZERO_2K, 2032)
        assert [(path, headers["Authorization"]) for path, headers in go.gets] == [
            (f"/piecestore/{ZERO_2K_CID}", "Bearer farm")]
        assert stage_pieces(ctx, [pledge], ctx.files.staged)[0] == PieceInfo(ZERO_2K, 2032)
        assert len(go.gets) == 1  # a pledge piece is zeros: nothing to read or download
        assert ctx.files.staged.stat().st_size == 2048
        ctx.files.remove()  # the downloads go with the sector's scratch files
        assert not (tmp_path / "t0").exists() or not any((tmp_path / "t0").rglob(ZERO_2K_CID))


def test_our_worker_names_its_thread_on_allocations_and_reports(go, venus):
    go.answer("Venus.AllocateSector", '{"ID":{"Miner":1000,"Number":1},"ProofType":5}')
    go.answer("Venus.AcquireDeals", "null")
    go.answer("Venus.ReportState", '{"Id":{"Miner":1000,"Number":1},"Finalized":false,"AbortReason":""}')
    go.answer("Venus.ReportFinalized", "null")
    go.answer("Venus.ReportAborted", "null")
    venus.allocate_sector(AllocateSpec(), WORKER)
    venus.acquire_deals(SID, AcquireDealsSpec())
    venus.report_state(SID, StateReport(WORKER, "Allocated", "DealsAcquired", "AcquireDeals"))
    venus.report_finalized(SID, worker=WORKER)
    venus.report_aborted(SID, "x", worker=WORKER)
    named = {json.loads(b)["method"]: h.get(WORKER_HEADER) for _, h, b in go.requests}
    expected = "instance=worker-a&thread=0&location=%2Fabs%2Fpath%2Fstore1"
    assert named == {"Venus.AllocateSector": expected, "Venus.AcquireDeals": None, "Venus.ReportState": expected,
                     "Venus.ReportFinalized": expected, "Venus.ReportAborted": expected}


# ---------------------------------------------------------------------------------------------
# one more implementation of the worker's manager interface


def test_the_daemon_builds_its_venus_client_from_damocles_keys(go, tmp_path):
    from damocles_py.config.load import load_config
    from damocles_py.daemon import build_manager

    token = tmp_path / "manager.token"
    token.write_text("f" * 64)
    token.chmod(0o600)
    cfg = write_config(tmp_path, manager_addr=go.addr)
    cfg.write_text(cfg.read_text().replace(
        f'addr = "{go.addr}"\n', f'addr = "{go.addr}"\ntoken_file = "{token}"\nheaders = {{ X-Farm = "east" }}\n'
    ).replace("[sector_manager]\n", '[sector_manager]\npiece_token = "market-tok"\n'))
    go.answer("Venus.StoreBasicInfo", GO_STORE)
    with build_manager(load_config(cfg)) as venus:
        assert isinstance(venus, VenusManager) and venus.piece_token == "market-tok"
        venus.store_basic_info("store-a")
    (_, headers, _), = go.requests
    assert headers["Authorization"] == "Bearer " + "f" * 64 and headers["X-Farm"] == "east"


def test_venus_manager_has_every_method_of_the_interface():
    for name, member in vars(SectorManager).items():
        if name.startswith("_") or not callable(member):
            continue
        ours, theirs = inspect.signature(getattr(VenusManager, name)), inspect.signature(member)
        for param in theirs.parameters.values():
            assert ours.parameters[param.name].kind == param.kind, (name, param.name)
        extra = [p for n, p in ours.parameters.items() if n not in theirs.parameters]
        assert all(p.default is not inspect.Parameter.empty for p in extra), name  # only optional extras


def test_the_heartbeat_pings_a_venus_manager(go):
    go.answer("Venus.WorkerPing", "null")
    with VenusManager(go.addr, dest="10.0.0.7:17890") as venus:
        sender = HeartbeatSender(venus, "worker-a", interval=60.0,
                                 threads=lambda: [ThreadSummary(0, "sealer", "PC1Done", SID, "running")])
        assert sender.ping_once()
    assert '"Summary":{"Threads":1,"Empty":0,"Paused":0,"Running":1,"Waiting":0,"Errors":0}' in \
        go.sent("Venus.WorkerPing")[0]
    go.fail("Venus.WorkerPing", 1, "name or dest empty")
    with VenusManager(go.addr, dest="10.0.0.7:17890") as venus:
        assert not HeartbeatSender(venus, "worker-a", interval=60.0).ping_once()  # logged, never raised
