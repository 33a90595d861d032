"""A JSON-RPC 2.0 server over HTTP that answers as damocles' peers expect (reference `damocles-rpc.md`).

One server for both APIs of issue 8: the manager's `Venus.*` (damocles-manager speaks go-jsonrpc, §1.1)
and the worker's `VenusWorker.*` (damocles-worker speaks jsonrpc-http-server, §2.1). Their clients are
Rust `jsonrpc_core` types with `deny_unknown_fields`, so every answer is exactly

    {"jsonrpc":"2.0","result":<value>,"id":<id>}          (`result: null` when there is nothing)
    {"jsonrpc":"2.0","id":<id>,"error":{"code":c,"message":"..."[,"data":...]}}

and nothing else. Errors follow go-jsonrpc: an error a method returns (`RPCError`) is HTTP 200 with its
code (default 1, go-jsonrpc's LogicError; 11001 = sector state not found); a protocol error
(`ProtocolError`: unknown method -32601, bad params -32602, unparsable or oversized request -32700,
invalid request -32600) is HTTP 500 with the same body shape; an unexpected exception in a method (a
bug, go-jsonrpc's panic) is HTTP 500 code 0, logged here with its traceback. Params are positional:
a JSON array (or null/absent for none); named params are refused with -32602.

Optionally (`files=(prefix, hook)`), `GET <prefix><name>` sends the file the hook names (404 when
it names none, 403 when it refuses): damocles-manager's `/piecestore/<piece CID>` beside `/rpc/v0`.

Every call goes first through the `auth` hook with a `Call` (method, peer IP, Authorization header),
which raises `RPCError` to refuse; the methods get the same `Call`, so a method can look at the peer.

HTTP: the standard library's `http.server.ThreadingHTTPServer` (one thread per connection, HTTP/1.1
keep-alive). Why not a package: the JSON-RPC part is a dict lookup plus go-jsonrpc's exact error
conventions, which `jsonrpcserver`/`json-rpc` would have to be bent to (they add their own `data`
fields and choose HTTP statuses of their own); `waitress` is a fine WSGI server but has no clean
stop of its own (its asyncore loop and task threads must be torn down by hand), while the stdlib
server stops with `shutdown()` and needs no new dependency. What the stdlib server lacks we add in a
few lines: a body cap read before the body (`max_body`), a read timeout per connection (a client that
stops sending holds one thread for `read_timeout` seconds at most), POST only, and a stop that ends
idle keep-alive connections at once and lets calls in progress finish (`stop()`).
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import logging
import os
import shutil
import socket
import urllib.parse
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# go-jsonrpc's error codes (and jsonrpc_core's, they agree)
LOGIC_ERROR = 1  # go-jsonrpc's default for any error a method returns
PANIC = 0  # go-jsonrpc: a panic inside a method
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

DEFAULT_MAX_BODY = 5 << 20  # jsonrpc-http-server's default; no Venus request comes near it
# Longer than hyper's pooled-connection idle timeout (90 s, damocles-worker's client): the client drops an
# idle keep-alive connection before we do, so it never sends a request into one we are closing.
DEFAULT_READ_TIMEOUT = 120.0
DEFAULT_MAX_CONNECTIONS = 256  # one thread each; beyond, a new connection is closed at once
JSON_CONTENT_TYPES = ("application/json", "application/json; charset=utf-8", "application/json;charset=utf-8")


class RPCError(Exception):
    """An error a method returns: HTTP 200, `{"code": code, "message": message[, "data": data]}`."""

    http_status = 200

    def __init__(self, message: str, code: int = LOGIC_ERROR, data=None):
        super().__init__(message)
        self.message, self.code, self.data = message, code, data


class ProtocolError(RPCError):
    """The request itself is wrong (go-jsonrpc answers these with HTTP 500)."""

    http_status = 500


def invalid_params(message: str) -> ProtocolError:
    return ProtocolError(message, INVALID_PARAMS)


def dumps(value) -> bytes:
    """Compact UTF-8 JSON as Go and serde write it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def normalize_ip(ip: str) -> str:
    """The peer address as written in trust lists: IPv4-mapped IPv6 (`::ffff:1.2.3.4`) as IPv4."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


@dataclass(frozen=True)
class Call:
    """What a handler and the auth hook know about one call."""

    method: str
    peer_ip: str
    authorization: str | None  # the Authorization header as sent, or None
    path: str
    headers: Mapping[str, str] = field(repr=False, default_factory=dict)  # case-insensitive get()

    def bearer_token(self) -> str | None:
        """The token of `Authorization: Bearer <token>`, or None when absent or of another scheme."""
        if not self.authorization:
            return None
        scheme, _, token = self.authorization.strip().partition(" ")
        return (token.strip() or None) if scheme.lower() == "bearer" else None


Handler = Callable[[Call, list], object]  # returns a JSON-ready value (None -> null)
# GET <prefix><name>: the file to send, None for 404; raises RPCError to refuse (403)
FileHook = Callable[[Call, str], "Path | None"]
AuthHook = Callable[[Call], None]  # raises RPCError to refuse


def success(result, request_id) -> bytes:
    return dumps({"jsonrpc": "2.0", "result": result, "id": request_id})


def failure(err: RPCError, request_id) -> bytes:
    error = {"code": err.code, "message": err.message}
    if err.data is not None:
        error["data"] = err.data
    return dumps({"jsonrpc": "2.0", "id": request_id, "error": error})


class JSONRPCServer:
    """Serves `methods` ({"Venus.AllocateSector": handler, ...}) over HTTP at `paths` (None = any path).

    `start()` binds and serves on a background thread (a port already in use raises OSError);
    `stop()` refuses new connections, closes idle ones and waits for calls in progress."""

    def __init__(self, host: str, port: int, methods: Mapping[str, Handler], *,
                 paths: Collection[str] | None = None, auth: AuthHook | None = None,
                 max_body: int = DEFAULT_MAX_BODY, read_timeout: float = DEFAULT_READ_TIMEOUT,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 require_json_content_type: bool = False, name: str = "jsonrpc",
                 files: tuple[str, FileHook] | None = None,
                 observe: Callable[[str, str, float], None] | None = None):
        self.host, self.port = host, port
        self.methods = dict(methods)
        self.paths = None if paths is None else frozenset(paths)
        self.auth = auth
        self.max_body = max_body
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.require_json_content_type = require_json_content_type
        self.name = name
        self.files = files
        self.observe = observe  # (method, "ok" or the error code, seconds) of each call to a known method
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound (port 0 resolves at start)."""
        if self._httpd is None:
            return self.host, self.port
        return self._httpd.server_address[:2]

    def url(self, path: str = "/") -> str:
        host, port = self.address
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}{path}"

    def start(self) -> "JSONRPCServer":
        if self._httpd is not None:
            raise RuntimeError(f"{self.name} server already started")
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"{self.name}-http", daemon=True)
        self._thread.start()
        log.info("%s JSON-RPC server listening on %s", self.name, self.url())
        return self

    def stop(self, timeout: float = 10.0) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.stopping.set()
        httpd.shutdown()  # the accept loop ends
        httpd.server_close()  # the listening socket closes
        with httpd.conns_lock:
            conns = list(httpd.conns)
        for handler in conns:
            if not handler.busy:  # idle keep-alive (or half-read request): end it now
                _shutdown_socket(handler.connection)
        for t in list(httpd.workers):
            t.join(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- one request -------------------------------------------------------------------------

    def dispatch(self, body: bytes, peer_ip: str, path: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """(HTTP status, response body) for one request body."""
        try:
            request = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            return 500, failure(ProtocolError(f"parse error: {e}", PARSE_ERROR), None)
        if isinstance(request, list):
            return 500, failure(ProtocolError("batch requests are not supported", INVALID_REQUEST), None)
        if not isinstance(request, dict):
            return 500, failure(ProtocolError("a request must be a JSON object", INVALID_REQUEST), None)
        request_id = request.get("id")
        if not (request_id is None or isinstance(request_id, str)
                or (isinstance(request_id, int) and not isinstance(request_id, bool))):
            return 500, failure(ProtocolError("id must be a number, a string or null", INVALID_REQUEST), None)
        method = request.get("method")
        if not isinstance(method, str):
            return 500, failure(ProtocolError("method must be a string", INVALID_REQUEST), request_id)
        handler = self.methods.get(method)
        if handler is None:
            # go-jsonrpc's exact text
            return 500, failure(ProtocolError(f"method '{method}' not found", METHOD_NOT_FOUND), request_id)
        params = request.get("params")
        if params is None:
            params = []
        elif not isinstance(params, list):
            return 500, failure(invalid_params(f"{method}: params must be a positional JSON array"), request_id)
        call = Call(method=method, peer_ip=peer_ip, authorization=headers.get("Authorization"),
                    path=path, headers=headers)
        start = time.perf_counter()
        outcome = "ok"
        try:
            if self.auth is not None:
                self.auth(call)
            result = handler(call, params)
            return 200, success(result, request_id)
        except RPCError as e:
            outcome = str(e.code)
            return e.http_status, failure(e, request_id)
        except Exception as e:  # a bug in a method: go-jsonrpc's panic answer, our traceback in the log
            outcome = str(PANIC)
            log.exception("%s: %s failed unexpectedly", self.name, method)
            return 500, failure(ProtocolError(f"internal error in {method}: {type(e).__name__}: {e}", PANIC),
                                request_id)
        finally:
            if self.observe is not None:
                self.observe(method, outcome, time.perf_counter() - start)


def _shutdown_socket(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _HTTPServer(http.server.ThreadingHTTPServer):
    allow_reuse_address = True  # a restart right after a stop is not refused for TIME_WAIT connections
    daemon_threads = True  # joined by hand in stop(), with a timeout
    request_queue_size = 64

    def __init__(self, owner: JSONRPCServer):
        self.owner = owner
        self.stopping = threading.Event()
        self.conns: set[_Handler] = set()
        self.conns_lock = threading.Lock()
        self.workers: set[threading.Thread] = set()
        if ":" in owner.host:
            self.address_family = socket.AF_INET6
        super().__init__((owner.host, owner.port), _Handler)

    def process_request(self, request, client_address):
        """One thread per connection (as ThreadingMixIn), counted: beyond `max_connections` a new
        connection is closed at once, so a flood of connections is not a flood of threads."""
        with self.conns_lock:
            full = len(self.workers) >= self.owner.max_connections
            if not full:
                t = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                                     name=f"{self.owner.name}-conn", daemon=True)
                self.workers.add(t)
        if full:
            log.warning("%s: %d connections open, refusing one from %s", self.owner.name,
                        self.owner.max_connections, client_address[0])
            self.shutdown_request(request)
            return
        t.start()

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.conns_lock:
                self.workers.discard(threading.current_thread())

    def handle_error(self, request, client_address):
        log.debug("%s: connection from %s ended with an error", self.owner.name, client_address, exc_info=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "damocles-py"
    sys_version = ""
    server: _HTTPServer

    def setup(self):
        self.timeout = self.server.owner.read_timeout
        self.busy = False
        super().setup()
        with self.server.conns_lock:
            self.server.conns.add(self)

    def finish(self):
        with self.server.conns_lock:
            self.server.conns.discard(self)
        super().finish()

    def handle(self):
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection and not self.server.stopping.is_set():
            self.handle_one_request()

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        log.debug("%s %s: " + format, self.server.owner.name, self.address_string(), *args)

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection or self.server.stopping.is_set():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _refuse(self, status: int, text: str) -> None:
        self.close_connection = True
        self._send(status, text.encode() + b"\n", "text/plain; charset=utf-8")

    def do_POST(self):
        self.busy = True
        try:
            self._post()
        finally:
            self.busy = False

    def _post(self):
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        if owner.paths is not None and path not in owner.paths:
            return self._refuse(404, f"no JSON-RPC endpoint at {path}; use {' or '.join(sorted(owner.paths))}")
        if owner.require_json_content_type:
            ctype = (self.headers.get("Content-Type") or "").strip().lower()
            if ctype not in JSON_CONTENT_TYPES:
                return self._refuse(415, "Content-Type must be application/json")
        if self.headers.get("Transfer-Encoding"):
            return self._refuse(411, "send the request with a Content-Length (no chunked encoding)")
        try:
            length = int(self.headers.get("Content-Length", ""))
            if length < 0:
                raise ValueError
        except ValueError:
            return self._refuse(411, "Content-Length required")
        if length > owner.max_body:
            self.close_connection = True  # the body stays unread
            err = ProtocolError(f"RPC request bigger than maximum {owner.max_body} allowed", PARSE_ERROR)
            return self._send(500, failure(err, None))
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            return
        status, answer = owner.dispatch(body, normalize_ip(self.client_address[0]), path, self.headers)
        self._send(status, answer)

    def do_GET(self):
        files = self.server.owner.files
        path = urllib.parse.unquote(self.path.split("?", 1)[0])
        if files is None or not path.startswith(files[0]) or "/" in path[len(files[0]):]:
            return self._not_allowed()
        self.busy = True
        try:
            self._get_file(files[1], path, path[len(files[0]):])
        finally:
            self.busy = False

    def _get_file(self, hook: FileHook, path: str, name: str) -> None:
        call = Call(method=f"GET {path}", peer_ip=normalize_ip(self.client_address[0]),
                    authorization=self.headers.get("Authorization"), path=path, headers=self.headers)
        try:
            target = hook(call, name)
        except RPCError as e:
            return self._refuse(403, e.message)
        try:
            f = open(target, "rb") if target is not None else None
        except OSError as e:
            log.warning("%s: cannot read %s for %s: %s", self.server.owner.name, target, path, e)
            f = None
        if f is None:
            return self._refuse(404, f"{name}: not found")
        with f:
            size = os.fstat(f.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            shutil.copyfileobj(f, self.wfile, 1 << 20)
            self.wfile.flush()

    def do_OPTIONS(self):
        self._send(200, b"", "text/plain")

    def _not_allowed(self):
        self.close_connection = True
        self.send_response(405)
        self.send_header("Allow", "POST, OPTIONS")
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()

    do_PUT = do_DELETE = do_PATCH = do_HEAD = _not_allowed
