"""Our manager's `Venus.*` JSON-RPC API (damocles_py/manager/venus/server.py), driven as
damocles-worker drives damocles-manager (reference `damocles-rpc.md` §1), over real HTTP against a
real `damocles-manager run --venus-listen` process, with real proofs.

damocles-worker itself (Rust) cannot run here, so the requests are what it sends: the reference's
literal JSON where it gives one, else our codec's encode side (which the codec tests pin to
damocles-worker's bytes), on a raw HTTP connection with only `Content-Type`/`Accept` (no auth),
from 127.0.0.2, the address given to `--venus-trust`. Every answer is checked against the strict
shapes jsonrpc_core accepts, then decoded with the codec's strict client side.

One CC sector is sealed for real (one C2) and its proof verified by the manager; the same sector is
then snapped up for real (one update proof) and handed out for a rebuild. The refusals (no token,
untrusted address, wrong token, unknown sector, malformed params, unknown methods, another thread's
report) run against the same manager.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import STARTUP_BUDGET, free_port, start_manager, wait_until
from damocles_py import proofs
from damocles_py.manager.client import RemoteManager
from damocles_py.manager.interface import SectorId, WorkerRef
from damocles_py.manager.venus import codec as w
from damocles_py.manager.venus.cid import commitment_to_cid
from damocles_py.manager.venus.client import worker_header
from damocles_py.proofs import SealProof

TRUSTED = "127.0.0.2"  # a damocles-worker's address, listed in --venus-trust
UNTRUSTED = "127.0.0.1"
PROOF = SealProof.StackedDrg2KiBV1_1
PROVER = proofs.prover_id_from_miner(1000)
CHAIN_WAIT = 60.0  # a few 0.2 s epochs; far more on a slow machine


def check_shape(body: dict) -> None:
    """jsonrpc_core's Success / Failure / Error with deny_unknown_fields (reference §1.1)."""
    assert body.get("jsonrpc") == "2.0", body
    if "error" in body:
        assert set(body) == {"jsonrpc", "error", "id"}, body
        assert set(body["error"]) <= {"code", "message", "data"} and {"code", "message"} <= set(body["error"]), body
    else:
        assert set(body) == {"jsonrpc", "result", "id"}, body


class Peer:
    """A JSON-RPC caller from `source` (an address of this machine), as damocles-worker sends."""

    def __init__(self, port: int, source: str, headers: dict | None = None):
        self.port, self.source, self.headers = port, source, headers or {}
        self.next_id = 0

    def post(self, body: str | bytes, path: str = "/rpc/v0") -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120, source_address=(self.source, 0))
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json",
                                                             "Accept": "application/json", **self.headers})
            resp = conn.getresponse()
            answer = json.loads(resp.read())
        finally:
            conn.close()
        check_shape(answer)
        return resp.status, answer

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60, source_address=(self.source, 0))
        try:
            conn.request("GET", path, headers=self.headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def request(self, method: str, params: list) -> tuple[int, dict]:
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": self.next_id},
                          separators=(",", ":"))
        self.next_id += 1
        return self.post(body)

    def call(self, method: w.Method, *args):
        """A call with the codec's params; the answer must be a success, decoded strictly."""
        status, answer = self.request(method.name, method.encode_params(args))
        assert status == 200 and "error" not in answer, answer
        return method.decode_result(answer["result"])

    def error(self, method: str, params: list) -> tuple[int, int, str]:
        status, answer = self.request(method, params)
        assert "error" in answer, answer
        return status, answer["error"]["code"], answer["error"]["message"]


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    root = tmp_path_factory.mktemp("venus")
    store = root / "persist-a"
    store.mkdir()
    (root / "manager-pieces").mkdir()
    grpc_port, venus_port, metrics_port = free_port(), free_port(), free_port()
    proc = start_manager(root, grpc_port, store, "--venus-listen", f"127.0.0.1:{venus_port}",
                         "--venus-trust", TRUSTED, "--metrics-listen", f"127.0.0.1:{metrics_port}", auth=True)
    rust = Peer(venus_port, TRUSTED)

    def venus_up():
        try:
            return rust.request("Venus.StoreBasicInfo", ["persist-a"])[0] == 200
        except OSError:
            return False

    try:
        wait_until(venus_up, STARTUP_BUDGET, "the Venus API to serve")
        token_file = root / "manager-state" / "manager.token"
        grpc = RemoteManager(f"127.0.0.1:{grpc_port}", timeout=30, token_file=token_file)
        yield dict(root=root, store=store, port=venus_port, grpc_port=grpc_port, metrics_port=metrics_port, rust=rust, grpc=grpc, token=token_file.read_text().strip())
        grpc.close()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _sid(number: int) -> w.SectorID:
    return w.SectorID(1000, number)


def _poll(peer: Peer, method: w.Method, sid: w.SectorID, what: str) -> w.PollStateResp:
    def landed():
        resp = peer.call(method, sid)
        assert resp.state in (w.OnChainState.Pending, w.OnChainState.Landed), resp
        return resp if resp.state is w.OnChainState.Landed else None
    return wait_until(landed, CHAIN_WAIT, what, interval=0.2)


def _persist(src_sealed: Path, src_cache: Path, store: Path, name: str, update: bool = False) -> None:
    replica_dir, cache_dir = ("update", "update-cache") if update else ("sealed", "cache")
    (store / replica_dir).mkdir(exist_ok=True)
    shutil.copyfile(src_sealed, store / replica_dir / name)
    shutil.copytree(src_cache, store / cache_dir / name, dirs_exist_ok=True)


def test_a_whole_sealer_life_then_snap_up_and_rebuild_with_real_proofs(farm, tmp_path):
    rust: Peer = farm["rust"]
    store: Path = farm["store"]

    # start-up (reference §1.7): every attached store must be known; the first ping after an interval
    info = rust.call(w.STORE_BASIC_INFO, "persist-a")
    assert info == w.StoreBasicInfo("persist-a", str(store.resolve()), {})
    assert rust.call(w.STORE_BASIC_INFO, "nosuch") is None
    status, answer = rust.post(
        '{"jsonrpc":"2.0","method":"Venus.WorkerPing","params":[{"Name":"192.168.1.10","Dest":"192.168.1.10:17890",'
        '"Version":"v0.13.1-git.4235a89","Summary":{"Threads":3,"Empty":1,"Paused":0,"Running":1,"Waiting":0,'
        '"Errors":0}}],"id":0}')
    assert (status, answer) == (200, {"jsonrpc": "2.0", "result": None, "id": 0})
    pings = rust.call(w.WORKER_PING_INFO_LIST)
    ping = next(p for p in pings if p.info.name == "192.168.1.10")
    assert ping.info.dest == "192.168.1.10:17890" and ping.info.summary.threads == 3
    assert abs(ping.last_ping - time.time()) < 120
    assert rust.call(w.WORKER_GET_PING_INFO, "192.168.1.10") == ping
    assert rust.call(w.WORKER_GET_PING_INFO, "nobody") is None
    # ... and our manager's own view of workers shows it too (the same state)
    assert next(s for s in farm["grpc"].workers() if s.instance == "192.168.1.10")

    # allocation: the reference's literal request; 2KiB gives [5, 10, 15]
    status, answer = rust.post('{"jsonrpc":"2.0","method":"Venus.AllocateSector","params":[{"AllowedMiners":[1000],'
                               '"AllowedProofTypes":[5,10,15]}],"id":0}')
    assert (status, answer) == (200, {"jsonrpc": "2.0", "result": {"ID": {"Miner": 1000, "Number": 1},
                                                                    "ProofType": 5}, "id": 0})
    sid = _sid(1)
    # a worker that only seals NI-PoRep/synthetic types gets nothing (null), as with no work
    assert rust.call(w.ALLOCATE_SECTOR, w.AllocateSectorSpec([1000], [10, 15])) is None
    assert rust.call(w.ALLOCATE_SECTOR, w.AllocateSectorSpec([1001], [])) is None

    # ReportState after every step (the reference's literal shape): binds the sector to this thread
    location = str(tmp_path / "store1")
    report = ('{"jsonrpc":"2.0","method":"Venus.ReportState","params":[{"Miner":1000,"Number":1},'
              '{"Worker":{"Instance":"192.168.1.10","Location":%s},"StateChange":{"Prev":"%s","Next":"%s",'
              '"Event":"None"},"Failure":%s}],"id":7}')
    status, answer = rust.post(report % (json.dumps(location), "Allocated", "DealsAcquired", "null"))
    assert (status, answer) == (200, {"jsonrpc": "2.0", "result": {"Id": {"Miner": 1000, "Number": 1},
                                                                    "Finalized": False, "AbortReason": ""}, "id": 7})
    # no deals in the pool: a CC sector
    assert rust.call(w.ACQUIRE_DEALS, sid, w.AcquireDealsSpec(None, None)) is None

    # real PC1/PC2 with the manager's ticket
    ticket = rust.call(w.ASSIGN_TICKET, sid)
    assert len(ticket.ticket) == 32
    work = tmp_path / "cc"
    cache, sealed = work / "cache", work / "sealed"
    cache.mkdir(parents=True)
    sealed.write_bytes(b"")
    pieces = proofs.cc_pieces(PROOF)
    proofs.build_tree_d(PROOF, None, cache)
    pc1 = proofs.pc1(PROOF, cache, None, sealed, PROVER, 1, ticket.ticket, pieces)
    pc2 = proofs.pc2(pc1, cache, sealed)
    on_chain = w.PreCommitOnChainInfo(pc2.comm_r, pc2.comm_d, ticket)
    resp = rust.call(w.SUBMIT_PRE_COMMIT, w.AllocatedSector(sid, 5), on_chain, False)
    assert resp == w.SubmitResp(w.SubmitResult.Accepted, None)
    assert rust.call(w.SUBMIT_PRE_COMMIT, w.AllocatedSector(sid, 5), on_chain, False).res is w.SubmitResult.DuplicateSubmit
    _poll(rust, w.POLL_PRE_COMMIT_STATE, sid, "the pre-commit to land")
    rust.post(report % (json.dumps(location), "PCSubmitted", "PCLanded", "null"))

    # persist: the manager reserves a store, the files go there, the manager checks them
    reserved = rust.call(w.STORE_RESERVE_SPACE, sid, 2 * 2048, ["persist-a"])
    assert reserved is not None and reserved.name == "persist-a"
    assert rust.call(w.SUBMIT_PERSISTED_EX, sid, "persist-a", False) is False  # nothing there yet
    _persist(sealed, cache, store, "s-t01000-1")
    assert rust.call(w.SUBMIT_PERSISTED_EX, sid, "persist-a", False) is True

    def seed():
        resp = rust.call(w.WAIT_SEED, sid, 5)
        if resp.seed is None:
            assert resp.should_wait and resp.delay >= 1, resp  # what the worker needs to sleep
            return None
        return resp.seed
    got_seed = wait_until(seed, CHAIN_WAIT, "the seed", interval=0.2)

    # a proof that does not verify is rejected; the real one (C2) is accepted, verified by the manager
    bad = rust.call(w.SUBMIT_PROOF, sid, w.ProofOnChainInfo(b"\x01" * 192), False)
    assert bad.res is w.SubmitResult.Rejected and bad.desc
    c1 = proofs.c1(PROOF, cache, sealed, PROVER, 1, ticket.ticket, got_seed.seed, pc2, pieces)
    snark = proofs.c2(c1, PROVER, 1)
    assert rust.call(w.SUBMIT_PROOF, sid, w.ProofOnChainInfo(snark), True) == w.SubmitResp(w.SubmitResult.Accepted, None)
    _poll(rust, w.POLL_PROOF_STATE, sid, "the proof to land")
    # a failure report keeps its level and our cause name, as sector debug shows it
    status, answer = rust.post(report % (json.dumps(location), "ProofSubmitted", "ProofSubmitted",
                                         '{"Level":"Temporary","Desc":"C2Failed: out of memory"}'))
    assert status == 200 and answer["result"]["Finalized"] is False
    assert rust.call(w.REPORT_FINALIZED, sid) is None

    # the same state over gRPC: finished, held by the thread that reported, with its history
    record, history = farm["grpc"].sector_with_history(SectorId(1000, 1))
    assert record.finished and not record.aborted and record.store == "persist-a"
    assert (record.holder.instance, record.holder.location) == ("192.168.1.10", location)
    assert [h.next for h in history] == ["DealsAcquired", "PCLanded", "ProofSubmitted"]
    assert (history[-1].failure_level, history[-1].failure_cause) == ("temporary", "C2Failed")

    # --- deals: two pieces in the manager's pieces dir become deals
    pieces_dir = farm["root"] / "manager-pieces"
    datas = []
    for n in range(2):
        data = bytes((n * 7 + i) % 251 for i in range(2032))
        (pieces_dir / f".p{n}").write_bytes(data)
        (pieces_dir / f".p{n}").rename(pieces_dir / f"p{n}")
        datas.append(data)
    farm["grpc"].import_pieces()

    # a fresh sector takes one as a SectorPiece of the builtin market; the piece is at /piecestore/
    allocated = rust.call(w.ALLOCATE_SECTOR, w.AllocateSectorSpec([1000], [5, 10, 15]))
    sid2 = allocated.id
    got = rust.call(w.ACQUIRE_DEALS, sid2, w.AcquireDealsSpec(1, None))
    assert len(got) == 1
    deal = got[0]
    assert deal.deal_info.deal_id > 0 and deal.deal_info.allocation_id == 0 and deal.deal_info.is_builtin_market
    assert deal.deal_info.payload_size == 2032 and deal.piece.size == 2048
    cid = commitment_to_cid(deal.piece.piece_cid)
    assert cid.startswith("baga6ea4")
    status, data = rust.get(f"/piecestore/{cid}")
    assert status == 200 and data in datas
    assert rust.get("/piecestore/bagaboo")[0] == 404
    assert Peer(farm["port"], UNTRUSTED).get(f"/piecestore/{cid}")[0] == 403
    # asked again (a restart): the same answer
    assert rust.call(w.ACQUIRE_DEALS, sid2, w.AcquireDealsSpec(1, None)) == got
    # another address cannot report this still unbound sector (even with the farm token)
    other = Peer(farm["port"], UNTRUSTED, {"Authorization": f"Bearer {farm['token']}"})
    status, code, message = other.error("Venus.ReportAborted", [w.encode(sid2), "not mine"])
    assert (status, code) == (200, 1) and "127.0.0.2" in message
    # its allocating worker aborts it: the deal goes back to the pool
    assert rust.call(w.REPORT_ABORTED, sid2, "given back by the test") is None
    assert farm["grpc"].sector(SectorId(1000, sid2.number)).aborted

    # --- snap-up of the CC sector: real encode and update proof, verified by the manager
    candidate = rust.call(w.ALLOCATE_SNAPUP_SECTOR, w.AllocateSnapUpSpec(w.AllocateSectorSpec([1000], [5]),
                                                                       w.AcquireDealsSpec(1, None)))
    assert candidate.sector == w.AllocatedSector(sid, 5)
    assert candidate.public.comm_r == pc2.comm_r and candidate.private.access_instance == "persist-a"
    assert len(candidate.pieces) == 1 and candidate.pieces[0].deal_info.deal_id > 0
    snap_cid = commitment_to_cid(candidate.pieces[0].piece.piece_cid)
    status, piece_data = rust.get(f"/piecestore/{snap_cid}")
    assert status == 200
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "piece").write_bytes(piece_data)
    staged, replica, ucache = snap / "staged", snap / "update", snap / "update-cache"
    ucache.mkdir()
    staged.write_bytes(b"")
    with open(replica, "wb") as f:
        f.truncate(PROOF.sector_size)
    piece = proofs.add_piece(PROOF, snap / "piece", staged)
    with open(staged, "r+b") as f:
        f.truncate(PROOF.sector_size)
    update = PROOF.update_proof
    encoded = proofs.snap_encode(update, replica, ucache, sealed, cache, staged, [piece])
    vanilla = proofs.snap_partition_proofs(update, pc2.comm_r, encoded, sealed, cache, replica, ucache)
    snap_proof = proofs.snap_prove(update, vanilla, pc2.comm_r, encoded)
    snap_location = str(tmp_path / "store2")
    rust.post(report % (json.dumps(snap_location), "Empty", "Allocated", "null"))
    info = w.SnapUpOnChainInfo(encoded.comm_r_new, encoded.comm_d_new, "persist-a", [piece.commitment], snap_proof)
    assert rust.call(w.SUBMIT_SNAPUP_PROOF, sid, info).res is w.SubmitResult.FilesMissed  # not persisted yet
    _persist(replica, ucache, store, "s-t01000-1", update=True)
    assert rust.call(w.SUBMIT_SNAPUP_PROOF, sid, info) == w.SubmitResp(w.SubmitResult.Accepted, None)
    assert rust.call(w.REPORT_FINALIZED, sid) is None
    record = farm["grpc"].sector(SectorId(1000, 1))
    assert record.upgrade is not None and record.upgrade.comm_r == encoded.comm_r_new
    assert record.holder.location == snap_location

    # --- rebuild: the upgraded sector is handed out with its ticket, the update's pieces, the CC comm_r
    farm["grpc"].request_rebuild(SectorId(1000, 1))
    job = rust.call(w.ALLOCATE_REBUILD_SECTOR, w.AllocateSectorSpec([1000], [5, 10, 15]))
    assert job.sector == w.AllocatedSector(sid, 5) and job.ticket == ticket
    assert job.is_snapup and job.upgrade_public.comm_r == pc2.comm_r and job.pieces is None
    assert [p.piece.piece_cid for p in job.pieces_v2] == [piece.commitment]
    assert rust.call(w.ALLOCATE_REBUILD_SECTOR, w.AllocateSectorSpec([1000], [5])) is None  # one job, taken
    assert rust.call(w.REPORT_ABORTED, sid, "operator gave the rebuild up") is None
    assert farm["grpc"].sector(SectorId(1000, 1)).rebuild_abort_reason


def test_refusals(farm):
    rust: Peer = farm["rust"]
    port = farm["port"]
    nobody = Peer(port, UNTRUSTED)  # neither trusted nor holding the token
    spec = [{"AllowedMiners": [1000], "AllowedProofTypes": [5, 10, 15]}]

    # mutating calls from an untrusted address need the farm token: code 1 (the worker retries)
    status, code, message = nobody.error("Venus.AllocateSector", spec)
    assert (status, code) == (200, 1) and "farm token" in message and "--venus-trust" in message
    wrong = Peer(port, UNTRUSTED, {"Authorization": "Bearer " + "0" * 64})
    assert wrong.error("Venus.AllocateSector", spec)[1] == 1
    # reads need nothing; with the token everything works (our worker)
    assert nobody.request("Venus.StoreBasicInfo", ["persist-a"])[0] == 200
    ours = Peer(port, UNTRUSTED, {"Authorization": f"Bearer {farm['token']}"})
    allocated = ours.call(w.ALLOCATE_SECTOR, w.AllocateSectorSpec([1000], [5]))
    assert allocated is not None

    # a worker that names its thread (X-Damocles-Worker) gets the same sector until it reports it
    named = Peer(port, UNTRUSTED, {"Authorization": f"Bearer {farm['token']}",
                                   **worker_header(WorkerRef("ours", 0, "/srv/t0"))})
    first = named.call(w.ALLOCATE_SECTOR, w.AllocateSectorSpec([1000], [5]))
    assert named.call(w.ALLOCATE_SECTOR, w.AllocateSectorSpec([1000], [5])) == first
    # ... and an anonymous caller cannot report a sector a named thread holds
    status, code, message = rust.error("Venus.ReportFinalized", [w.encode(first.id)])
    assert (status, code) == (200, 1) and "not the holder" in message
    assert named.call(w.REPORT_ABORTED, first.id, "test over") is None
    garbled = Peer(port, TRUSTED, {"X-Damocles-Worker": "thread=x"})
    assert garbled.error("Venus.AllocateSector", spec)[:2] == (500, -32602)

    # a ReportState naming another thread than the one the sector is bound to is refused
    sid = w.encode(allocated.id)
    state = {"Worker": {"Instance": "box", "Location": "/a"},
             "StateChange": {"Prev": "Allocated", "Next": "DealsAcquired", "Event": "None"}, "Failure": None}
    assert ours.request("Venus.ReportState", [sid, state])[0] == 200
    state["Worker"]["Location"] = "/b"
    status, code, message = ours.error("Venus.ReportState", [sid, state])
    assert (status, code) == (200, 1) and "not the holder" in message
    # operators see such a holder by its name and location (it has no thread index)
    debug = _manager_cli("sector", "debug", f"1000-{allocated.id.number}", "--addr", f"127.0.0.1:{farm['grpc_port']}")
    assert debug.returncode == 0 and "box thread (a Venus caller's, known by its location) at /a" in debug.stdout, \
        debug.stdout + debug.stderr

    # unknown sector: 11001 (the worker aborts it), HTTP 200 as go-jsonrpc
    for method, params in (("Venus.AssignTicket", [{"Miner": 1000, "Number": 999}]),
                           ("Venus.ReportFinalized", [{"Miner": 1000, "Number": 999}]),
                           ("Venus.PollProofState", [{"Miner": 1000, "Number": 999}]),
                           ("Venus.ReportState", [{"Miner": 1000, "Number": 999}, state])):
        status, code, message = rust.error(method, params)
        assert (status, code) == (200, 11001) and "sector state not found" in message, method

    # malformed params: -32602 naming the field, HTTP 500; unknown methods -32601 (unseal, wdpost: not served)
    status, code, message = rust.error("Venus.AssignTicket", [{"Miner": "1000", "Number": 1}])
    assert (status, code) == (500, -32602) and "params[0].Miner" in message
    assert rust.error("Venus.AssignTicket", [])[:2] == (500, -32602)
    assert rust.error("Venus.SubmitPreCommit", [sid, {"CommR": [1] * 31}, False])[:2] == (500, -32602)
    assert rust.error("Venus.AssignTicket", {"sector": sid})[:2] == (500, -32602)
    for method in ("Venus.Nope", "Venus.AllocateUnsealSector", "Venus.WdPoStAllocateJobs",
                   "Venus.AllocateSectorsBatch"):
        status, code, message = rust.error(method, [])
        assert (status, code) == (500, -32601) and message == f"method '{method}' not found"
    status, answer = rust.post(b'{"jsonrpc":"2.0","method":')
    assert status == 500 and answer["error"]["code"] == -32700
    # an empty ping is refused as damocles-manager does
    status, code, _ = rust.error("Venus.WorkerPing", [{"Name": "", "Dest": "", "Version": "",
                                                       "Summary": {"Threads": 0, "Empty": 0, "Paused": 0,
                                                                   "Running": 0, "Waiting": 0, "Errors": 0}}])
    assert (status, code) == (200, 1)
    # every call to a known method is counted by outcome; names pass promtool
    from test_metrics import promtool_check_metrics, samples, scrape

    text = scrape(farm["metrics_port"])
    found = samples(text)

    def count(method, code):
        return found.get(("damocles_manager_venus_requests_total", frozenset({"method": method, "code": code}.items())))
    assert count("Venus.AssignTicket", "11001") >= 1 and count("Venus.AssignTicket", "-32602") >= 2
    assert count("Venus.AllocateSector", "1") >= 2 and count("Venus.AllocateSector", "ok") >= 1
    assert "Venus.Nope" not in text
    if shutil.which("promtool"):  # test_metrics skips without it; here the rest must still run
        promtool_check_metrics(text)

    # only /rpc/v0 speaks JSON-RPC
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/rpc/v1", body=b"{}")
    assert conn.getresponse().status == 404
    conn.close()


def _manager_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "damocles_py.cli.manager", *args], capture_output=True,
                          text=True, timeout=120)


def test_run_check_and_refused_starts(tmp_path):
    state = str(tmp_path / "state")
    port = free_port()
    ok = _manager_cli("run", "--check", "--state-dir", state, "--venus-listen", f"0.0.0.0:{port}",
                      "--venus-trust", "10.0.0.5,10.0.1.0/24")
    assert ok.returncode == 0, ok.stderr
    assert f"venus:     http://0.0.0.0:{port}/rpc/v0; mutating calls from 10.0.0.5/32, 10.0.1.0/24 or callers " \
           f"with the farm token" in ok.stdout
    # beyond loopback with neither a token nor a trust list: refused, one line
    bad = _manager_cli("run", "--check", "--state-dir", state, "--no-auth", "--venus-listen", f"0.0.0.0:{port}")
    assert bad.returncode == 1 and "refusing to serve the Venus API beyond loopback" in bad.stderr
    assert "Traceback" not in bad.stderr
    for trust, words in (("0.0.0.0/0", "trusts every address"), ("box.example", "not an IP address")):
        bad = _manager_cli("run", "--check", "--state-dir", state, "--venus-listen", f"127.0.0.1:{port}",
                           "--venus-trust", trust)
        assert bad.returncode == 1 and words in bad.stderr and "Traceback" not in bad.stderr
    bad = _manager_cli("run", "--check", "--state-dir", state, "--venus-trust", "10.0.0.5")
    assert bad.returncode == 1 and "--venus-trust without --venus-listen" in bad.stderr
    # a port in use is a failed check, and a refused start (one line)
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        bad = _manager_cli("run", "--check", "--state-dir", state, "--venus-listen", f"127.0.0.1:{busy}")
        assert bad.returncode == 1 and "--venus-listen" in bad.stderr
        bad = _manager_cli("run", "--state-dir", state, "--no-auth", "--listen", f"127.0.0.1:{free_port()}",
                           "--venus-listen", f"127.0.0.1:{busy}")
        assert bad.returncode != 0 and "cannot listen on" in bad.stderr and "Traceback" not in bad.stderr
    # the gRPC API and the Venus API on one port: each probe alone says "free", so the check compares
    # them; a start refuses before it creates anything
    shared = free_port()
    fresh = tmp_path / "fresh-state"
    for extra in (["--check"], []):
        bad = _manager_cli("run", *extra, "--state-dir", str(fresh), "--listen", f"127.0.0.1:{shared}",
                           "--venus-listen", f"0.0.0.0:{shared}", "--venus-trust", "10.0.0.5")
        assert bad.returncode != 0 and f"share port {shared}" in bad.stderr and "Traceback" not in bad.stderr
        assert not fresh.exists()
