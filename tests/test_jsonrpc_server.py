"""The shared JSON-RPC 2.0 HTTP server (damocles_py/jsonrpc/server.py) over real HTTP on loopback.

Every answer is checked against the strict shapes damocles-worker's jsonrpc_core accepts
(deny_unknown_fields): success = exactly jsonrpc/result/id, failure = exactly jsonrpc/error/id with
error = code/message[/data]; and the HTTP statuses go-jsonrpc uses (200 for a method's error, 500
for protocol errors).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest
import requests

from damocles_py.jsonrpc.server import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    Call,
    JSONRPCServer,
    RPCError,
    invalid_params,
)


def check_shape(body: dict) -> None:
    """The response rules of reference §1.1 (jsonrpc_core Success/Failure/Error)."""
    assert body["jsonrpc"] == "2.0"
    if "error" in body:
        assert set(body) == {"jsonrpc", "error", "id"}, body
        assert set(body["error"]) <= {"code", "message", "data"}, body
        assert {"code", "message"} <= set(body["error"])
        assert isinstance(body["error"]["code"], int) and isinstance(body["error"]["message"], str)
    else:
        assert set(body) == {"jsonrpc", "result", "id"}, body


def post(url: str, payload, headers=None) -> tuple[int, dict]:
    data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    r = requests.post(url, data=data, headers={"Content-Type": "application/json", **(headers or {})},
                      timeout=10)
    body = r.json()
    check_shape(body)
    return r.status_code, body


@pytest.fixture
def server():
    release = threading.Event()
    calls: list[Call] = []

    def echo(call: Call, params: list):
        calls.append(call)
        return params

    def nothing(call, params):
        return None

    def fails(call, params):
        raise RPCError("sector state not found", 11001)

    def fails_plain(call, params):
        raise RPCError("boom")

    def needs_two(call, params):
        if len(params) != 2:
            raise invalid_params(f"wrong param count (method '{call.method}'): {len(params)} != 2")
        return params[0] + params[1]

    def bug(call, params):
        raise KeyError("oops")

    def slow(call, params):
        release.wait(10)
        return "done"

    def auth(call: Call):
        if call.method == "T.Secret" and call.bearer_token() != "s3cret":
            raise RPCError("permission denied: T.Secret needs the farm token")

    methods = {"T.Echo": echo, "T.Nothing": nothing, "T.Fails": fails, "T.FailsPlain": fails_plain,
               "T.Add": needs_two, "T.Bug": bug, "T.Slow": slow, "T.Secret": nothing}
    srv = JSONRPCServer("127.0.0.1", 0, methods, paths={"/rpc/v0"}, auth=auth, max_body=4096,
                        name="test").start()
    srv.calls = calls
    srv.release = release
    yield srv
    release.set()
    srv.stop()


def test_success_and_null_result(server):
    url = server.url("/rpc/v0")
    status, body = post(url, {"jsonrpc": "2.0", "method": "T.Echo", "params": [{"A": 1}, "é"], "id": 0})
    assert status == 200 and body == {"jsonrpc": "2.0", "result": [{"A": 1}, "é"], "id": 0}
    status, body = post(url, {"jsonrpc": "2.0", "method": "T.Nothing", "params": [], "id": 7})
    assert status == 200 and body == {"jsonrpc": "2.0", "result": None, "id": 7}
    # params may be null or absent for a method without params; ids may be strings
    status, body = post(url, {"jsonrpc": "2.0", "method": "T.Echo", "id": "x"})
    assert status == 200 and body["result"] == [] and body["id"] == "x"
    # the raw bytes: compact, result key present
    r = requests.post(url, data=b'{"jsonrpc":"2.0","method":"T.Nothing","params":[],"id":3}', timeout=10)
    assert r.content == b'{"jsonrpc":"2.0","result":null,"id":3}'
    assert r.headers["Content-Type"] == "application/json"
    assert server.calls[0].peer_ip == "127.0.0.1" and server.calls[0].path == "/rpc/v0"


def test_method_errors_are_http_200_with_their_code(server):
    url = server.url("/rpc/v0")
    status, body = post(url, {"jsonrpc": "2.0", "method": "T.Fails", "params": [], "id": 1})
    assert status == 200 and body["error"] == {"code": 11001, "message": "sector state not found"}
    r = requests.post(url, data=b'{"jsonrpc":"2.0","method":"T.FailsPlain","params":[],"id":2}', timeout=10)
    assert r.content == b'{"jsonrpc":"2.0","id":2,"error":{"code":1,"message":"boom"}}'


def test_protocol_errors_are_http_500(server):
    url = server.url("/rpc/v0")
    status, body = post(url, {"jsonrpc": "2.0", "method": "T.Nope", "params": [], "id": 4})
    assert status == 500 and body["error"] == {"code": METHOD_NOT_FOUND, "message": "method 'T.Nope' not found"}
    assert body["id"] == 4
    status, body = post(url, {"jsonrpc": "2.0", "method": "T.Add", "params": [1], "id": 5})
    assert status == 500 and body["error"]["code"] == INVALID_PARAMS
    status, body = post(url, {"jsonrpc": "2.0", "method": "T.Add", "params": {"a": 1}, "id": 6})
    assert status == 500 and body["error"]["code"] == INVALID_PARAMS and "positional" in body["error"]["message"]
    status, body = post(url, b'{"jsonrpc":"2.0","method":"T.Add",')
    assert status == 500 and body["error"]["code"] == PARSE_ERROR and body["id"] is None
    status, body = post(url, b"\xff\xfe")
    assert status == 500 and body["error"]["code"] == PARSE_ERROR
    status, body = post(url, [{"jsonrpc": "2.0", "method": "T.Nothing", "id": 1}])
    assert status == 500 and body["error"]["code"] == -32600
    status, body = post(url, {"jsonrpc": "2.0", "method": 5, "id": 1})
    assert status == 500 and body["error"]["code"] == -32600
    # a bug in a method: go-jsonrpc's panic answer (code 0), one line, the server keeps serving
    status, body = post(url, {"jsonrpc": "2.0", "method": "T.Bug", "params": [], "id": 8})
    assert status == 500 and body["error"]["code"] == 0 and "KeyError" in body["error"]["message"]
    status, body = post(url, {"jsonrpc": "2.0", "method": "T.Add", "params": [1, 2], "id": 9})
    assert status == 200 and body["result"] == 3


def test_auth_hook_sees_the_token_and_refuses(server):
    url = server.url("/rpc/v0")
    req = {"jsonrpc": "2.0", "method": "T.Secret", "params": [], "id": 1}
    status, body = post(url, req)
    assert status == 200 and body["error"]["code"] == 1 and "farm token" in body["error"]["message"]
    status, body = post(url, req, {"Authorization": "Bearer wrong"})
    assert "error" in body
    status, body = post(url, req, {"authorization": "bearer s3cret"})  # header and scheme are case-insensitive
    assert status == 200 and body["result"] is None


def test_http_level_refusals(server):
    status, body = None, None
    r = requests.post(server.url("/elsewhere"), data=b"{}", timeout=10)
    assert r.status_code == 404 and "/rpc/v0" in r.text
    r = requests.get(server.url("/rpc/v0"), timeout=10)
    assert r.status_code == 405
    # over the body cap: refused before the body is read, as go-jsonrpc does (-32700, HTTP 500)
    big = json.dumps({"jsonrpc": "2.0", "method": "T.Echo", "params": ["x" * 5000], "id": 1})
    status, body = post(server.url("/rpc/v0"), big)
    assert status == 500 and body["error"]["code"] == PARSE_ERROR and "bigger than maximum 4096" in body["error"]["message"]
    # no Content-Length (chunked): refused
    r = requests.post(server.url("/rpc/v0"), data=iter([b'{"jsonrpc":"2.0"}']), timeout=10)
    assert r.status_code == 411


def test_keep_alive_and_concurrent_calls(server):
    url = server.url("/rpc/v0")
    with requests.Session() as s:  # one connection, many requests
        for i in range(5):
            r = s.post(url, json={"jsonrpc": "2.0", "method": "T.Add", "params": [i, 1], "id": i}, timeout=10)
            assert r.json() == {"jsonrpc": "2.0", "result": i + 1, "id": i}
    # a slow call does not hold up another connection's call
    results = []
    t = threading.Thread(target=lambda: results.append(
        post(url, {"jsonrpc": "2.0", "method": "T.Slow", "params": [], "id": 1})))
    t.start()
    status, body = post(url, {"jsonrpc": "2.0", "method": "T.Nothing", "params": [], "id": 2})
    assert status == 200 and not results
    server.release.set()
    t.join(10)
    assert results[0][1]["result"] == "done"


def test_stop_ends_idle_connections_at_once_and_finishes_calls_in_progress():
    release = threading.Event()
    started = threading.Event()

    def slow(call, params):
        started.set()
        release.wait(10)
        return "finished"

    srv = JSONRPCServer("127.0.0.1", 0, {"T.Slow": slow, "T.Nothing": lambda c, p: None}).start()
    host, port = srv.address
    # an idle keep-alive connection: it must not hold stop() up
    idle = http.client.HTTPConnection(host, port, timeout=10)
    idle.request("POST", "/", body=b'{"jsonrpc":"2.0","method":"T.Nothing","params":[],"id":1}',
                 headers={"Content-Type": "application/json"})
    assert idle.getresponse().read() == b'{"jsonrpc":"2.0","result":null,"id":1}'
    # a call in progress: it completes with its answer
    answers = []
    busy = threading.Thread(target=lambda: answers.append(requests.post(
        srv.url("/any/path"), json={"jsonrpc": "2.0", "method": "T.Slow", "params": [], "id": 2}, timeout=20)))
    busy.start()
    assert started.wait(10)
    threading.Timer(0.5, release.set).start()
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 8  # not the 60 s read timeout of the idle connection
    busy.join(10)
    assert answers and answers[0].json() == {"jsonrpc": "2.0", "result": "finished", "id": 2}
    assert answers[0].headers.get("Connection") == "close"
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=2).close()
    idle.close()
    # the port can be bound again at once
    JSONRPCServer(host, port, {}).start().stop()


def test_port_in_use_is_an_oserror():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError):
            JSONRPCServer("127.0.0.1", port, {}).start()


def test_content_type_can_be_required():
    srv = JSONRPCServer("127.0.0.1", 0, {"T.N": lambda c, p: None}, require_json_content_type=True).start()
    try:
        body = b'{"jsonrpc":"2.0","method":"T.N","params":[],"id":1}'
        r = requests.post(srv.url(), data=body, headers={"Content-Type": "text/plain"}, timeout=10)
        assert r.status_code == 415
        r = requests.post(srv.url(), data=body, headers={"Content-Type": "application/json; charset=utf-8"},
                          timeout=10)
        assert r.json() == {"jsonrpc": "2.0", "result": None, "id": 1}
    finally:
        srv.stop()


def test_files_hook_serves_refuses_and_404s(tmp_path):
    (tmp_path / "piece-a").write_bytes(b"\x00\x01" * 3000)

    def hook(call: Call, name: str):
        if call.bearer_token() != "t":
            raise RPCError("needs the token")
        return tmp_path / name if name == "piece-a" else (tmp_path / "gone" if name == "gone" else None)

    srv = JSONRPCServer("127.0.0.1", 0, {}, files=("/piecestore/", hook)).start()
    try:
        ok = requests.get(srv.url("/piecestore/piece-a"), headers={"Authorization": "Bearer t"}, timeout=10)
        assert ok.status_code == 200 and ok.content == b"\x00\x01" * 3000
        assert requests.get(srv.url("/piecestore/piece-a"), timeout=10).status_code == 403
        for name in ("nothing", "gone", "x%2F..%2Fpiece-a"):  # unknown, unreadable, not a plain name
            r = requests.get(srv.url(f"/piecestore/{name}"), headers={"Authorization": "Bearer t"}, timeout=10)
            assert r.status_code in (404, 405), name
        assert requests.get(srv.url("/elsewhere"), timeout=10).status_code == 405
    finally:
        srv.stop()


def test_connections_beyond_the_cap_are_closed_and_the_server_goes_on():
    srv = JSONRPCServer("127.0.0.1", 0, {"T.N": lambda c, p: None}, max_connections=2).start()
    host, port = srv.address
    body = b'{"jsonrpc":"2.0","method":"T.N","params":[],"id":1}'

    def ask(conn):
        conn.request("POST", "/", body=body, headers={"Content-Type": "application/json"})
        return conn.getresponse().read()

    held = [http.client.HTTPConnection(host, port, timeout=10) for _ in range(2)]
    try:
        for conn in held:  # two keep-alive connections, each holding a thread
            assert ask(conn) == b'{"jsonrpc":"2.0","result":null,"id":1}'
        extra = http.client.HTTPConnection(host, port, timeout=10)
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            ask(extra)
        extra.close()
        held.pop().close()  # its thread ends when it sees the close: then there is room again
        deadline = time.monotonic() + 30
        while True:
            fresh = http.client.HTTPConnection(host, port, timeout=10)
            try:
                assert ask(fresh) == b'{"jsonrpc":"2.0","result":null,"id":1}'
                break
            except (http.client.RemoteDisconnected, ConnectionError):
                assert time.monotonic() < deadline, "no room after a connection closed"
                time.sleep(0.1)
            finally:
                fresh.close()
    finally:
        for conn in held:
            conn.close()
        srv.stop()
