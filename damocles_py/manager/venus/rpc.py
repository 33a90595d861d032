"""JSON-RPC 2.0 over HTTP, as damocles-worker speaks it to damocles-manager (reference §1.1).

Requests: `POST <addr>/rpc/v0`, body `{"jsonrpc":"2.0","method":"Venus.X","params":[...],"id":N}`
(positional params, a u64 id counting from 0 per client), headers `Content-Type` and `Accept:
application/json`. Serialised as serde_json does: compact, UTF-8 (no \\u escapes of non-ASCII).

Responses are checked as strictly as jsonrpc_core's `deny_unknown_fields` types: only
`jsonrpc`/`result`/`id` or `jsonrpc`/`error`/`id` at the top level, `result` present on success
(`null` for nothing), the error object only `code`/`message`/`data`. The HTTP status is ignored
(the fork damocles uses parses the body of a 500 too). Unlike damocles-worker, every call has a
deadline: a manager that does not answer costs a thread `timeout` seconds, never forever.

HTTP client: `requests` (already a dependency of nearly every Python installation, stable API,
pure Python, connection pooling, per-operation timeouts); httpx would do as well but is one
more package for nothing we need (no async, no HTTP/2).
"""

from __future__ import annotations

import itertools
import json
import threading
import time

import requests

from damocles_py.manager.interface import ManagerUnavailable
from damocles_py.manager.venus.codec import Method, WireError
from damocles_py.manager.venus.errors import (
    ERR_SECTOR_STATE_NOT_FOUND,
    SectorStateNotFound,
    VenusResponseError,
    VenusRPCError,
)

REQUEST_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
MAX_RESPONSE_BYTES = 64 << 20  # far above any answer of the worker's methods; a bound on a rogue peer
_SUCCESS_KEYS = frozenset({"jsonrpc", "result", "id"})
_FAILURE_KEYS = frozenset({"jsonrpc", "error", "id"})
_ERROR_KEYS = frozenset({"code", "message", "data"})


def dumps(value) -> bytes:
    """JSON as serde_json writes it: no spaces, UTF-8, keys in the given order."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def encode_request(method: str, params: list, request_id: int) -> bytes:
    return dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": request_id})


class _Duplicate(ValueError):
    pass


def _object(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:  # serde refuses a duplicate field; Python would keep the last silently
            raise _Duplicate(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def loads(raw: bytes):
    return json.loads(raw, object_pairs_hook=_object, parse_constant=_no_constant)


def parse_response(raw: bytes, method: str, request_id: int, url: str = ""):
    """The `result` value of a response body; raises the error the worker must act on."""

    def bad(path: str, problem: str) -> VenusResponseError:
        return VenusResponseError(method, path, problem, url)

    try:
        obj = loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        preview = raw[:80].decode("utf-8", "replace")
        raise bad("response", f"not JSON ({e}): {preview!r}") from None
    if not isinstance(obj, dict):
        raise bad("response", f"expected a JSON-RPC response object, got {type(obj).__name__}")
    is_failure = "error" in obj
    extra = set(obj) - (_FAILURE_KEYS if is_failure else _SUCCESS_KEYS)
    if extra:
        raise bad("response", f"unexpected top-level key(s) {sorted(extra)}: a JSON-RPC response holds only "
                              f"jsonrpc, result (or error) and id")
    if not is_failure and "result" not in obj:
        raise bad("response.result", 'missing: a success must carry "result" (null for nothing)')
    if "jsonrpc" in obj and obj["jsonrpc"] != "2.0":
        raise bad("response.jsonrpc", f'expected "2.0", got {obj["jsonrpc"]!r}')
    if "id" not in obj:
        raise bad("response.id", "missing")
    rid = obj["id"]
    if not (rid == request_id and type(rid) is int) and not (is_failure and rid is None):
        raise bad("response.id", f"{rid!r} is not the id of the request ({request_id})")
    if not is_failure:
        return obj["result"]
    error = obj["error"]
    if not isinstance(error, dict):
        raise bad("response.error", f"expected an object, got {error!r}")
    extra = set(error) - _ERROR_KEYS
    if extra:
        raise bad("response.error", f"unexpected key(s) {sorted(extra)}: only code, message and data")
    code, message = error.get("code"), error.get("message")
    if isinstance(code, bool) or not isinstance(code, int):
        raise bad("response.error.code", f"expected an integer, got {code!r}")
    if not isinstance(message, str):
        raise bad("response.error.message", f"expected a string, got {message!r}")
    if code == ERR_SECTOR_STATE_NOT_FOUND:
        raise SectorStateNotFound(method, message)
    raise VenusRPCError(method, code, message, url)


class JsonRpcClient:
    """Calls `Venus.*` methods at `url`. Thread-safe: one HTTP session per calling thread.

    `timeout` bounds a whole call (connect, send, wait, read the answer); `connect_timeout`
    the TCP connect within it. `headers` are sent in addition (damocles' `rpc_client.headers`).
    """

    def __init__(self, url: str, timeout: float = 30.0, connect_timeout: float = 5.0,
                 headers: dict[str, str] | None = None):
        if timeout <= 0:
            raise ValueError(f"the RPC timeout must be positive, got {timeout}")
        self.url = url
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)
        self.headers = {**REQUEST_HEADERS, **(headers or {})}
        self._ids = itertools.count()
        self._ids_lock = threading.Lock()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._closed = False

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.clear()  # no requests defaults (urllib3 still adds Host, User-Agent)
            session.trust_env = False  # no proxy or .netrc credentials picked up from the environment
            self._local.session = session
            with self._ids_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        self._closed = True
        with self._ids_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def next_id(self) -> int:
        with self._ids_lock:
            return next(self._ids)

    def call(self, method: Method, *args, timeout: float | None = None, headers: dict[str, str] | None = None):
        """Call `method` with positional `args` (wire values) and decode its result; `timeout`
        overrides the client's bound for this call, `headers` are added to this call's."""
        if self._closed:
            raise ManagerUnavailable(f"the client of the damocles-manager at {self.url} is closed")
        request_id = self.next_id()
        body = encode_request(method.name, method.encode_params(args), request_id)
        raw = self.post(method.name, body, timeout, headers)
        value = parse_response(raw, method.name, request_id, self.url)
        try:
            return method.decode_result(value)
        except WireError as e:
            raise VenusResponseError(method.name, e.path, e.problem, self.url) from None

    def post(self, method: str, body: bytes, timeout: float | None = None,
             headers: dict[str, str] | None = None) -> bytes:
        """POST `body`, return the response body, whatever the HTTP status (as the damocles fork)."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        try:
            with self._session().post(self.url, data=body, headers={**self.headers, **(headers or {})}, stream=True,
                                      allow_redirects=False,
                                      timeout=(min(self.connect_timeout, timeout), timeout)) as resp:
                chunks, size = [], 0
                # read1: at most one recv per call, so a peer that trickles bytes meets the deadline too
                # (read(n) would keep receiving until it has n bytes, each recv resetting the timeout).
                read = getattr(resp.raw, "read1", resp.raw.read)  # read1: urllib3 >= 2
                while chunk := read(64 << 10):
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise ManagerUnavailable(f"{method}: the answer of the damocles-manager at {self.url} "
                                                 f"exceeds {MAX_RESPONSE_BYTES} bytes")
                    if time.monotonic() > deadline:
                        raise requests.Timeout(f"no complete answer within {timeout}s")
                    chunks.append(chunk)
                return b"".join(chunks)
        except requests.Timeout as e:
            raise ManagerUnavailable(f"{method}: the damocles-manager at {self.url} did not answer within "
                                     f"{timeout}s ({e})") from None
        except (requests.RequestException, OSError) as e:
            raise ManagerUnavailable(f"{method}: the damocles-manager at {self.url} is unreachable: {e}") from None
