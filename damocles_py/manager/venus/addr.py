"""damocles' `[sector_manager] rpc_client.addr` forms, turned into the manager's JSON-RPC URL.

As damocles-worker's `rpc_addr` (`damocles-worker/src/util/net.rs`):

    /ip4/127.0.0.1/tcp/1789            -> http://127.0.0.1:1789/rpc/v0
    /ip4/10.0.0.2/tcp/1789/https       -> https://10.0.0.2:1789/rpc/v0
    /dns4/manager.lan/tcp/1789/http    -> http://manager.lan:1789/rpc/v0   (also /dns, /dns6)
    /ip6/::1/tcp/1789                  -> http://[::1]:1789/rpc/v0
    http://manager.lan:1789/any/path   -> http://manager.lan:1789/rpc/v0   (the path is dropped)

One difference, on purpose: damocles writes an IPv6 host without brackets
(`http://::1:1789/rpc/v0`), which no HTTP client can use; we bracket it.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass

RPC_PATH = "/rpc/v0"  # damocles-manager: http.Handle(fmt.Sprintf("/rpc/v%d", core.MajorVersion), ...)
PIECESTORE_PATH = "/piecestore/"  # damocles-manager dep/common.go HTTPEndpointPiecestore

_EXAMPLES = "e.g. /ip4/127.0.0.1/tcp/1789, /dns4/manager.lan/tcp/1789/https or http://127.0.0.1:1789"


class AddressError(ValueError):
    """An rpc_client.addr that is neither a supported multiaddr nor an http(s) URL."""


@dataclass(frozen=True)
class ManagerEndpoint:
    scheme: str  # http | https
    host: str  # a name or an IP address, without brackets
    port: int | None  # None: the scheme's default port

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + ("" if self.port is None else f":{self.port}")

    @property
    def rpc_url(self) -> str:
        return self.origin + RPC_PATH

    @property
    def piecestore_url(self) -> str:
        return self.origin + PIECESTORE_PATH


def _bad(addr: str, why: str) -> AddressError:
    return AddressError(f"rpc_client.addr {addr!r}: {why}; write a multiaddr or URL, {_EXAMPLES}")


def _port(addr: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise _bad(addr, f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def _parse_multiaddr(addr: str) -> ManagerEndpoint:
    parts = addr.split("/")[1:]
    if len(parts) < 4 or "" in parts:
        raise _bad(addr, "a multiaddr needs a host and a TCP port")
    proto, host, tcp, port = parts[:4]
    if proto == "ip4" or proto == "ip6":
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise _bad(addr, f"{host!r} is not an {proto} address") from None
        if ip.version != int(proto[-1]):
            raise _bad(addr, f"{host!r} is not an {proto} address")
    elif proto not in ("dns", "dns4", "dns6"):
        raise _bad(addr, f"/{proto} is not supported (use /ip4, /ip6, /dns, /dns4 or /dns6)")
    if tcp != "tcp":
        raise _bad(addr, f"expected /tcp/<port> after the host, got /{tcp}")
    rest = parts[4:]
    if len(rest) > 1 or (rest and rest[0] not in ("http", "https")):
        raise _bad(addr, f"unexpected {'/' + '/'.join(rest)!r} after the port (only /http or /https may follow)")
    return ManagerEndpoint(rest[0] if rest else "http", host, _port(addr, port))


def _parse_url(addr: str) -> ManagerEndpoint:
    url = urllib.parse.urlsplit(addr)
    if url.scheme not in ("http", "https"):
        raise _bad(addr, f"scheme {url.scheme!r} is not http or https")
    if not url.hostname:
        raise _bad(addr, "no host")
    try:
        port = url.port
    except ValueError:
        raise _bad(addr, "the port is not a number from 1 to 65535") from None
    if port == 0:
        raise _bad(addr, "port 0 is not a TCP port")
    return ManagerEndpoint(url.scheme, url.hostname, port)


def parse_manager_addr(addr: str) -> ManagerEndpoint:
    """The manager endpoint named by `addr`; AddressError (one line, with examples) otherwise."""
    addr = addr.strip()
    if addr.startswith("/"):
        return _parse_multiaddr(addr)
    if "://" in addr:
        return _parse_url(addr)
    raise _bad(addr, "not a multiaddr (starting with /) nor a URL (starting with http:// or https://)")


def rpc_url(addr: str) -> str:
    return parse_manager_addr(addr).rpc_url
