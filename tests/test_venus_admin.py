"""damocles' worker admin API (`VenusWorker.*`, reference §2) served by our worker, and
`damocles-manager util worker ...` steering it (issue 8, admin side).

One real farm for the module: a `damocles-manager run` process and an in-process worker daemon
(a sealer thread and a snap-up thread that finds no CC sector, so stays idle). The manager's seed
comes 10^6 epochs after the pre-commit, so the sealer waits for it for days: no C2 ever runs, every
sector ends by an operator's Aborted. Requests are the literal bytes Go's `workercli` sends, over
real HTTP; the CLI runs as a subprocess and finds the worker by the name it pings with.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from conftest import STARTUP_BUDGET, free_port, start_manager, thread_db_rows, wait_until, worker_cli, write_config

from damocles_py.config.load import load_config
from damocles_py.daemon import WorkerDaemon
from damocles_py.manager.client import RemoteManager
from damocles_py.preflight import admin_token_path

NAME = "venus-admin-worker"
INFO_KEYS = ["location", "plan", "job_id", "index", "thread_state", "job_state", "job_stage", "last_error"]


class Farm:
    def __init__(self, root: Path):
        self.root = root
        store = root / "persist"
        store.mkdir()
        self.manager_port, self.venus_port = free_port(), free_port()
        self.manager = start_manager(root, self.manager_port, store, "--pre-commit-delay-epochs", "1000000",
                                     "--venus-listen", f"127.0.0.1:{self.venus_port}")
        self.cfg = write_config(root, plans=("sealer", "snapup"), name=NAME, store=store,
                                manager_addr=f"127.0.0.1:{self.manager_port}", worker={"ping_interval": "0.5s"})
        self.config = load_config(self.cfg)
        self.daemon = WorkerDaemon(self.config)
        self.daemon.start()
        self.url = f"http://{self.config.worker.rpc_server.address}/"
        self.token_file = admin_token_path(self.config)
        self.location = self.config.sealing_threads[0].location

    def stop(self) -> None:
        self.daemon.stop(timeout=STARTUP_BUDGET)
        self.manager.terminate()
        self.manager.wait(30)

    def post(self, body: str, token: str | None = None, path: str = "/", **headers) -> requests.Response:
        """POST `body` as Go's go-jsonrpc client does (JSON content type; a token only if given)."""
        headers = {"Content-Type": "application/json", **headers}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.post(self.url.rstrip("/") + path, data=body.encode(), headers=headers, timeout=30)

    def call(self, method: str, params, token: str | None = None, request_id: int = 7) -> dict:
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": f"VenusWorker.{method}", "params": params},
                          separators=(",", ":"))
        answer = self.post(body, token)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def threads(self) -> list[dict]:
        return self.call("WorkerList", [])["result"]

    def wait_thread(self, index: int, what: str, predicate) -> dict:
        return wait_until(lambda: next((t for t in self.threads() if t["index"] == index and predicate(t)), None),
                          STARTUP_BUDGET, what)

    def wait_seed_wait(self) -> dict:
        """Thread 0 with a sector waiting for its seed (the stages before take milliseconds)."""
        return self.wait_thread(0, "thread 0 to wait for its seed",
                                lambda t: t["job_state"] == "PersistanceSubmitted" and t["thread_state"]["state"] != "Paused")

    def util(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "damocles_py.cli.manager", "util", "worker", *args,
                                 "--addr", f"127.0.0.1:{self.manager_port}"],
                                capture_output=True, text=True, timeout=60)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def history(self, sector_id: str) -> list[tuple]:
        return thread_db_rows(self.location, "SELECT h.prev, h.event, h.next, h.failure_cause FROM history h "
                                             "JOIN sectors s ON s.uid = h.uid WHERE s.sector_id = ? ORDER BY h.id",
                              (sector_id,))


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    farm = Farm(tmp_path_factory.mktemp("venus-admin"))
    try:
        yield farm
    finally:
        farm.stop()


def test_worker_list_answers_the_exact_worker_info_shape(farm):
    farm.wait_seed_wait()
    answer = farm.post('{"jsonrpc":"2.0","id":1,"method":"VenusWorker.WorkerList","params":[]}')
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    body = json.loads(answer.content, object_pairs_hook=lambda pairs: pairs)  # keep the key order
    assert [k for k, _ in body] == ["jsonrpc", "result", "id"] and dict(body)["id"] == 1
    sealer, snapup = [dict(t) for t in dict(body)["result"]]
    assert [k for k, _ in dict(body)["result"][0]] == INFO_KEYS
    # the sealer: damocles' job id, state names and stage; thread state internally tagged, whole seconds
    assert sealer["location"] == str(farm.location.resolve()) and sealer["plan"] == "sealer"
    assert sealer["index"] == 0 and sealer["job_id"].startswith("s-t01000-")
    assert (sealer["job_state"], sealer["job_stage"], sealer["last_error"]) == ("PersistanceSubmitted", "WaitSeed", None)
    state = dict(sealer["thread_state"])
    assert state["state"] in ("Running", "Waiting") and isinstance(state["elapsed"], int) and state["elapsed"] >= 0
    assert [k for k, _ in sealer["thread_state"]][0] == "state"
    if state["state"] == "Running":
        assert set(state) == {"state", "elapsed", "proc"}
    # the snap-up thread has no job: null id and stage, empty state
    assert (snapup["index"], snapup["plan"], snapup["job_id"], snapup["job_state"], snapup["job_stage"]) == \
        (1, "snapup", None, "", None)
    # null params, no params, any path: as jsonrpc-http-server
    for body in ('{"jsonrpc":"2.0","id":2,"method":"VenusWorker.WorkerList","params":null}',
                 '{"jsonrpc":"2.0","id":2,"method":"VenusWorker.WorkerList"}'):
        assert farm.post(body, path="/rpc/v0").json()["result"][0]["index"] == 0
    assert farm.post('{"jsonrpc":"2.0","id":3,"method":"VenusWorker.WorkerVersion","params":[]}').json() == \
        {"jsonrpc": "2.0", "result": "v0.1.0-damocles-py", "id": 3}


def test_http_rules_of_the_admin_server(farm):
    assert requests.get(farm.url, timeout=10).status_code == 405
    text = farm.post('{"jsonrpc":"2.0","id":1,"method":"VenusWorker.WorkerList","params":[]}',
                     **{"Content-Type": "text/plain"})
    assert text.status_code == 415
    charset = farm.post('{"jsonrpc":"2.0","id":1,"method":"VenusWorker.WorkerList","params":[]}',
                        **{"Content-Type": "application/json; charset=utf-8"})
    assert charset.status_code == 200
    unknown = farm.post('{"jsonrpc":"2.0","id":4,"method":"VenusWorker.WorkerSetEnv","params":["A","1"]}')
    assert unknown.json()["error"]["code"] == -32601


def test_worker_cli_pointed_at_the_venus_port_says_which_port_it_wants(farm):
    """A damocles habit, `damocles-worker worker -H host:17890 list`: our CLI speaks gRPC to
    [worker.admin_server]; one line says so."""
    result = worker_cli("worker", "-H", farm.config.worker.rpc_server.address, "list", check=False)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "[worker.admin_server]" in result.stderr and "17891" in result.stderr


def test_mutating_calls_need_the_admin_token(farm):
    farm.wait_seed_wait()
    literal = '{"jsonrpc":"2.0","id":5,"method":"VenusWorker.WorkerResume","params":[0,null]}'
    for token in (None, "x" * 64):
        refused = farm.post(literal, token).json()
        assert set(refused) == {"jsonrpc", "error", "id"} and refused["error"]["code"] == 401
        assert "admin token" in refused["error"]["message"] and "venus_admin_trust" in refused["error"]["message"]
    pause = farm.call("WorkerPause", [0])
    assert pause["error"]["code"] == 401
    token = farm.daemon.token  # checked by value: no empty, prefix, scheme-less or longer token passes
    body = '{"jsonrpc":"2.0","id":6,"method":"VenusWorker.WorkerPause","params":[0]}'
    for sent in ("Bearer ", "Bearer", "", f"Bearer {token[:16]}", token, f"Bearer {token}x", f"Basic {token}"):
        assert farm.post(body, Authorization=sent).json()["error"]["code"] == 401, sent
    assert farm.threads()[0]["thread_state"]["state"] != "Paused"  # nothing changed
    # the literal Go request with the token: the thread is not paused, so nothing to resume
    assert farm.post(literal, farm.daemon.token).json() == {"jsonrpc": "2.0", "result": False, "id": 5}


def test_unknown_index_and_invalid_state_are_invalid_params(farm):
    token = farm.daemon.token
    for method, params in (("WorkerPause", [9]), ("WorkerResume", [9, None]), ("WorkerResume", [9])):
        error = farm.call(method, params, token)["error"]
        assert error == {"code": -32602, "message": "worker #9 not found"}
    assert farm.call("WorkerPause", ["0"], token)["error"]["code"] == -32602  # an index is a number
    farm.wait_seed_wait()
    assert farm.call("WorkerPause", [0], token)["result"] is True
    paused = farm.wait_thread(0, "thread 0 paused", lambda t: t["thread_state"]["state"] == "Paused")
    assert set(paused["thread_state"]) == {"state", "elapsed"}
    assert farm.call("WorkerPause", [0], token)["result"] is False  # already paused
    for bad in ("Bogus", "Finished", "Empty", "SeedAssigned"):
        error = farm.call("WorkerResume", [0, bad], token)["error"]
        assert error["code"] == -32602
        assert f"cannot be resumed at state '{bad}'" in error["message"]
        assert "valid states now: " in error["message"] and "PersistanceSubmitted, Aborted" in error["message"]
    assert farm.threads()[0]["thread_state"]["state"] == "Paused"  # a refused resume changes nothing
    assert farm.call("WorkerResume", [0, None], token)["result"] is True
    farm.wait_seed_wait()


def test_util_worker_by_name_pauses_resumes_and_aborts_like_the_worker_cli(farm):
    """`damocles-manager util worker` finds the worker by its ping name; `resume ... Aborted` ends the
    sector exactly as `damocles-worker worker resume --state Aborted` (gRPC) does."""
    dest = farm.config.worker.rpc_server.address
    listed = wait_until(lambda: (out := farm.util("list").stdout) and NAME in out and out, STARTUP_BUDGET,
                        "the worker's ping to reach the manager")
    header, row = listed.splitlines()[0], next(line for line in listed.splitlines() if line.startswith(NAME))
    assert header.split() == ["Name", "Dest", "Version", "Threads", "Empty", "Paused", "Running", "Waiting",
                              "Errors", "LastPing(with", "!", "if", "expired)"]
    assert row.split()[1:4] == [dest, "v0.1.0-damocles-py", "2"]

    first = farm.wait_seed_wait()["job_id"]
    info = farm.util("info", NAME).stdout.splitlines()
    assert info[0].split() == ["Index", "Loc", "Plan", "JobID", "JobState", "JobStage", "ThreadState", "LastErr"]
    assert info[1].split()[:6] == ["0", str(farm.location.resolve()), "sealer", first, "PersistanceSubmitted",
                                   "WaitSeed"]
    assert info[2].split()[:4] == ["1", str((farm.root / "store" / "t1").resolve()), "snapup", "NULL"]
    assert farm.util("info", dest).stdout.splitlines()[1].split()[3] == first  # by address too

    # pause and resume need the worker's token: one line naming it, nothing changed
    refused = farm.util("pause", NAME, "0", check=False)
    assert refused.returncode == 2 and "admin token" in refused.stderr and len(refused.stderr.splitlines()) == 1
    token = ["--token-file", str(farm.token_file)]
    assert "pause call done, ok = true" in farm.util("pause", NAME, "0", *token).stdout
    farm.wait_thread(0, "thread 0 paused", lambda t: t["thread_state"]["state"] == "Paused")
    bad = farm.util("resume", NAME, "0", "Finished", *token, check=False)
    assert bad.returncode == 2 and "valid states now:" in bad.stderr and "code -32602" in bad.stderr
    assert "resume call done, ok = true" in farm.util("resume", NAME, "0", "Aborted", *token).stdout

    # the sector is aborted (manager and thread agree) and the thread takes the next one
    second = wait_until(lambda: (t := farm.threads()[0])["job_id"] not in (None, first) and
                        t["job_state"] == "PersistanceSubmitted" and t["job_id"], STARTUP_BUDGET, "the next sector")
    manager = RemoteManager(f"127.0.0.1:{farm.manager_port}", timeout=10)
    try:
        states = {str(s.id): s for s in manager.sectors()}
    finally:
        manager.close()
    assert states[first.removeprefix("s-t0")].aborted

    # the same with our worker CLI over gRPC: the same history, step for step
    cli = ["-c", str(farm.cfg)]
    assert worker_cli("worker", "pause", *cli, "--index", "0").returncode == 0
    farm.wait_thread(0, "thread 0 paused", lambda t: t["thread_state"]["state"] == "Paused")
    assert worker_cli("worker", "resume", *cli, "--index", "0", "--state", "Aborted").returncode == 0
    wait_until(lambda: farm.threads()[0]["job_id"] not in (first, second), STARTUP_BUDGET, "a third sector")
    by_util, by_cli = farm.history(first.removeprefix("s-t0")), farm.history(second.removeprefix("s-t0"))
    assert by_util and by_util[-1][2] == "Aborted"
    assert by_util == by_cli


def test_trusted_ip_needs_no_token(tmp_path):
    """`[worker] venus_admin_trust`: a Go damocles-manager sends no token; its IP is trusted instead."""
    cfg = write_config(tmp_path, plans=("snapup",), worker={"venus_admin_trust": ["127.0.0.1"]})
    daemon = WorkerDaemon(load_config(cfg))
    daemon.start()
    try:
        url = f"http://{daemon.config.worker.rpc_server.address}/anything"
        post = lambda body: requests.post(url, data=body, headers={"Content-Type": "application/json"},  # noqa: E731
                                          timeout=30).json()
        assert post('{"jsonrpc":"2.0","id":1,"method":"VenusWorker.WorkerPause","params":[0]}')["result"] is True
        wait_until(lambda: daemon.threads[0].status.thread_state == "paused", STARTUP_BUDGET, "the idle pause")
        answer = post('{"jsonrpc":"2.0","id":2,"method":"VenusWorker.WorkerResume","params":[0,null]}')
        assert answer == {"jsonrpc": "2.0", "result": True, "id": 2}
    finally:
        daemon.stop(timeout=STARTUP_BUDGET)
    check = worker_cli("daemon", "-c", str(cfg), "--check", check=False).stdout
    assert "accepted WITHOUT the admin token from 127.0.0.1" in check


def test_admin_ports_are_checked_before_start(tmp_path):
    """The two admin servers on one address, or a busy VenusWorker port: one line, nothing started."""
    same = write_config(tmp_path, plans=("snapup",))
    text = same.read_text()
    rpc_port = load_config(same).worker.rpc_server.port
    admin_port = load_config(same).worker.admin_server.port
    same.write_text(text.replace(f"port = {admin_port}", f"port = {rpc_port}"))
    result = worker_cli("daemon", "-c", str(same), "--check", check=False)
    assert result.returncode == 1 and f"share port {rpc_port}" in result.stdout
    # damocles' mock config puts rpc_server on 17891, our admin_server's default: a wildcard host clashes too
    same.write_text(text.replace(f"port = {admin_port}", f"port = {rpc_port}")
                    .replace('host = "127.0.0.1"', 'host = "0.0.0.0"', 1))
    result = worker_cli("daemon", "-c", str(same), "--check", check=False)
    assert result.returncode == 1 and f"share port {rpc_port}" in result.stdout


def test_bad_requests_are_refused_and_change_nothing(tmp_path):
    """Wrong params (types, ranges, counts), garbage bodies: a strict JSON-RPC error each, with the
    token too; no thread is paused, the server keeps answering."""
    import random

    cfg = write_config(tmp_path, plans=("snapup", "snapup"))
    daemon = WorkerDaemon(load_config(cfg))
    daemon.start()
    try:
        url = f"http://{daemon.config.worker.rpc_server.address}/"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {daemon.token}"}
        bad_params = [[-1], [1.5], [True], ["0"], [[0]], [{"i": 0}], [2**64], [None], [0, 1], [0, ["Aborted"]],
                      [0, None, None], {"index": 0}, "0", 0]
        rng = random.Random(8)
        bodies = [json.dumps({"jsonrpc": "2.0", "id": i, "method": f"VenusWorker.{m}", "params": p})
                  for i, p in enumerate(bad_params) for m in ("WorkerPause", "WorkerResume")]
        bodies += [json.dumps({"jsonrpc": "2.0", "id": 1, "method": "VenusWorker.WorkerList", "params": [0]}),
                   '{"jsonrpc":"2.0","id":1,"method":"VenusWorker.WorkerPause","params":[0]',  # cut short
                   "[]", "null", '"x"', '{"id":{},"method":"VenusWorker.WorkerPause","params":[0]}']
        bodies += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))).decode("latin-1") for _ in range(30)]
        for body in bodies:
            answer = requests.post(url, data=body.encode("utf-8", "surrogateescape"), headers=headers, timeout=30)
            reply = answer.json()
            assert set(reply) == {"jsonrpc", "error", "id"}, (body, reply)
            assert set(reply["error"]) <= {"code", "message", "data"} and reply["error"]["code"] < 0, (body, reply)
        assert all(t.status.thread_state != "paused" for t in daemon.threads)
        ok = requests.post(url, data='{"jsonrpc":"2.0","id":1,"method":"VenusWorker.WorkerList","params":[]}',
                           headers=headers, timeout=30).json()
        assert [t["index"] for t in ok["result"]] == [0, 1]
    finally:
        daemon.stop(timeout=STARTUP_BUDGET)


def test_util_worker_steers_any_venus_worker_peer(farm):
    """`util worker info|pause|resume <address>` against a peer answering as damocles-worker 0.13 does
    (the reference's literal WorkerInfo JSON, no token asked): rendered, and the params sent as Go sends them."""
    from damocles_py.jsonrpc.server import JSONRPCServer

    calls: list[tuple[str, list, str | None]] = []
    rust_info = json.loads(
        '[{"location":"/abs/path/store1","plan":"sealer","job_id":"s-t01000-1","index":0,'
        '"thread_state":{"state":"Running","elapsed":120,"proc":"pc1"},"job_state":"TicketAssigned",'
        '"job_stage":"PC1","last_error":null},'
        '{"location":"-","plan":"snapup","job_id":null,"index":1,"thread_state":{"state":"Paused","elapsed":62},'
        '"job_state":"","job_stage":null,"last_error":"permanent: no CC sector"}]')

    def record(result):
        def handler(call, params):
            calls.append((call.method, params, call.authorization))
            return result
        return handler

    peer = JSONRPCServer("127.0.0.1", 0, {"VenusWorker.WorkerList": record(rust_info),
                                          "VenusWorker.WorkerPause": record(True),
                                          "VenusWorker.WorkerResume": record(False)})
    with peer:
        address = f"127.0.0.1:{peer.address[1]}"
        info = farm.util("info", address).stdout.splitlines()
        assert info[1].split() == ["0", "/abs/path/store1", "sealer", "s-t01000-1", "TicketAssigned", "PC1",
                                   "Running(2m0s)", "pc1", "NULL"]
        assert info[2].split()[:6] == ["1", "-", "snapup", "NULL", "NULL", "Paused(1m2s)"]
        assert info[2].endswith("permanent: no CC sector")
        assert "ok = true" in farm.util("pause", address, "1").stdout
        assert "ok = false" in farm.util("resume", address, "1", "Aborted").stdout
        assert "ok = false" in farm.util("resume", address, "0").stdout
    assert calls == [("VenusWorker.WorkerList", [], None), ("VenusWorker.WorkerPause", [1], None),
                     ("VenusWorker.WorkerResume", [1, "Aborted"], None), ("VenusWorker.WorkerResume", [0, None], None)]
    unknown = farm.util("info", "no-such-worker", check=False)
    assert unknown.returncode == 2 and len(unknown.stderr.splitlines()) == 1
    assert "no worker named 'no-such-worker' has pinged the manager" in unknown.stderr


def test_a_worker_pinging_over_venus_is_found_by_name(farm, tmp_path):
    """A worker on the manager's Venus API (multiaddr) pings Dest/Version/Summary there; `util worker`
    finds it by that name through the manager's gRPC view and steers it."""
    root = tmp_path / "venus-worker"
    root.mkdir()
    cfg = write_config(root, plans=("snapup",), name="venus-pinger", store=farm.root / "persist",
                       manager_addr=f"/ip4/127.0.0.1/tcp/{farm.venus_port}", worker={"ping_interval": "0.5s"})
    daemon = WorkerDaemon(load_config(cfg))
    daemon.start()
    try:
        dest = daemon.config.worker.rpc_server.address
        row = wait_until(lambda: next((line for line in farm.util("list").stdout.splitlines()
                                       if line.startswith("venus-pinger")), None), STARTUP_BUDGET, "the Venus ping")
        assert row.split()[1:4] == [dest, "v0.1.0-damocles-py", "1"]
        info = farm.util("info", "venus-pinger").stdout.splitlines()
        assert info[1].split()[:3] == ["0", str((root / "store" / "t0").resolve()), "snapup"]
        token = ["--token-file", str(admin_token_path(daemon.config))]
        assert "ok = true" in farm.util("pause", "venus-pinger", "0", *token).stdout
        wait_until(lambda: daemon.threads[0].status.thread_state == "paused", STARTUP_BUDGET, "the pause")
        assert "ok = true" in farm.util("resume", "venus-pinger", "0", *token).stdout
        wait_until(lambda: daemon.threads[0].status.thread_state != "paused", STARTUP_BUDGET, "the resume")
    finally:
        daemon.stop(timeout=STARTUP_BUDGET)

    # util worker remove: its ping is forgotten (over gRPC; Go's client calls Venus.WorkerPingInfoRemove)
    assert farm.util("remove", "venus-pinger").stdout == "'venus-pinger' removed\n"
    assert "venus-pinger" not in farm.util("list").stdout and NAME in farm.util("list").stdout
    again = farm.util("remove", "venus-pinger", check=False)
    assert again.returncode == 2 and "worker info not found" in again.stderr
    venus = f"http://127.0.0.1:{farm.venus_port}/rpc/v0"
    get = '{"jsonrpc":"2.0","id":1,"method":"Venus.WorkerGetPingInfo","params":["%s"]}'
    assert requests.post(venus, data=get % NAME, timeout=10).json()["result"]["Info"]["Name"] == NAME
    remove = '{"jsonrpc":"2.0","id":2,"method":"Venus.WorkerPingInfoRemove","params":["venus-pinger"]}'
    assert requests.post(venus, data=remove, timeout=10).json() == {"jsonrpc": "2.0", "result": None, "id": 2}
    assert requests.post(venus, data=get % "venus-pinger", timeout=10).json()["result"] is None


def test_a_thread_paused_by_a_failure_shows_last_error_and_counts_in_the_ping(tmp_path, monkeypatch):
    """A real critical failure (the Groth parameters missing at C2: the SNARK never starts) pauses the
    thread: WorkerList gives its last_error, the ping's Summary counts it in Errors; Aborted ends it."""
    empty_cache = tmp_path / "no-params"
    empty_cache.mkdir()
    monkeypatch.setenv("FIL_PROOFS_PARAMETER_CACHE", str(empty_cache))  # read at each proof call
    cfg = write_config(tmp_path, plans=("sealer", "snapup"), worker={"ping_interval": "0.3s"})
    # two starts: one per thread (with one, the snapup thread could take it first and the sealer never start)
    daemon = WorkerDaemon(load_config(cfg), max_sectors=2)
    daemon.start()
    try:
        url = f"http://{daemon.config.worker.rpc_server.address}/"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {daemon.token}"}

        def call(method, params):
            body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": f"VenusWorker.{method}", "params": params})
            return requests.post(url, data=body, headers=headers, timeout=30).json()

        paused = wait_until(lambda: next((t for t in call("WorkerList", [])["result"]
                                          if t["index"] == 0 and t["last_error"]), None),
                            STARTUP_BUDGET, "the C2 failure to pause thread 0")
        assert paused["thread_state"]["state"] == "Paused" and paused["job_state"] == "C1Done"
        assert paused["job_stage"] == "C2" and paused["last_error"].startswith("critical: ParametersMissing: ")
        wait_until(lambda: [w.summary.errors for w in daemon.manager.workers() if w.summary] == [1],
                   STARTUP_BUDGET, "a ping counting one thread in error")
        assert call("WorkerResume", [0, "Aborted"])["result"] is True
        wait_until(lambda: (t := call("WorkerList", [])["result"][0])["job_state"] == "Aborted"
                   or t["job_id"] is None, STARTUP_BUDGET, "the sector to end")
        record = daemon.manager.sector(daemon.manager.sectors()[0].id)
        assert record.aborted and record.commit is None  # ended without a proof
        assert call("WorkerList", [])["result"][0]["last_error"] is None
    finally:
        daemon.stop(timeout=STARTUP_BUDGET)


def test_util_worker_remove_needs_the_farm_token(tmp_path):
    store = tmp_path / "persist"
    store.mkdir()
    port = free_port()
    manager = start_manager(tmp_path, port, store, auth=True)
    try:
        def remove(*extra):
            return subprocess.run([sys.executable, "-m", "damocles_py.cli.manager", "util", "worker", "remove", "w1",
                                   "--addr", f"127.0.0.1:{port}", *extra], capture_output=True, text=True, timeout=60)

        refused = remove()
        assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1 and "token" in refused.stderr
        unknown = remove("--token-file", str(tmp_path / "manager-state" / "manager.token"))
        assert unknown.returncode == 2 and "worker info not found" in unknown.stderr
    finally:
        manager.terminate()
        manager.wait(30)
