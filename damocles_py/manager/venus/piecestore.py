"""Piece download from the damocles-manager's `/piecestore/`, when a deal's piece is not local.

As damocles-worker's fetcher (reference §1.9): `GET {origin}/piecestore/{pieceCid}`, without
following redirects; on a 3xx, one request to `Location` (joined to the URL) carrying
`Authorization: Bearer <piece_token>` and `X-VENUS-API-NAMESPACE: v1.IMarket` when a token is
configured (`sector_manager.piece_token`); any other non-2xx status is an error. damocles-worker
sends no credentials on the first request; ours sends the headers of its RPC calls (the farm token,
`rpc_client.headers`) to the manager's own origin, never to where it redirects. Connect
timeout 5 s. Unlike damocles, a transfer that stalls for `stall_timeout` seconds fails too (a
piece can be 32 GiB, so there is no bound on the whole transfer, only on silence).

The file is written to a temporary name next to `dest`, fsynced, then renamed: a crash never
leaves a half piece under the piece's name. Failures raise `SealingFailure(PieceDownloadFailed)`
(temporary: the stage is retried).
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import requests

from damocles_py.fsm.failure import FailureCause, SealingFailure
from damocles_py.manager.venus.addr import ManagerEndpoint
from damocles_py.store.durable import make_dirs, replace_durably

CONNECT_TIMEOUT = 5.0
MARKET_NAMESPACE = "v1.IMarket"
_CHUNK = 1 << 20


def piece_url(endpoint: ManagerEndpoint, piece_cid: str) -> str:
    return endpoint.piecestore_url + urllib.parse.quote(piece_cid, safe="")


def download_piece(endpoint: ManagerEndpoint, piece_cid: str, dest: Path, token: str | None = None,
                   stall_timeout: float = 60.0, origin_headers: dict[str, str] | None = None) -> int:
    """Fetch the piece `piece_cid` into `dest`; returns its size in bytes. `origin_headers` go
    with the request to the manager only."""
    url = piece_url(endpoint, piece_cid)

    def fail(why: str) -> SealingFailure:
        return SealingFailure(FailureCause.PieceDownloadFailed, f"piece {piece_cid}: download from {url}: {why}")

    timeout = (min(CONNECT_TIMEOUT, stall_timeout), stall_timeout)
    tmp = dest.with_name(f".{dest.name}.download-{os.getpid()}")
    with requests.Session() as session:
        session.trust_env = False
        try:
            resp = session.get(url, stream=True, allow_redirects=False, timeout=timeout, headers=origin_headers)
            if resp.is_redirect:
                location = resp.headers.get("Location", "")
                resp.close()
                url = urllib.parse.urljoin(url, location)
                headers = {"Authorization": f"Bearer {token}", "X-VENUS-API-NAMESPACE": MARKET_NAMESPACE} if token else {}
                resp = session.get(url, stream=True, allow_redirects=False, timeout=timeout, headers=headers)
            with resp:
                if not 200 <= resp.status_code < 300:
                    raise fail(f"HTTP {resp.status_code} {resp.reason}: {resp.text[:200]!r}")
                make_dirs(dest.parent)
                size = 0
                try:
                    with open(tmp, "wb") as f:
                        for chunk in resp.iter_content(_CHUNK):
                            f.write(chunk)
                            size += len(chunk)
                    replace_durably(tmp, dest)  # fsyncs the data, renames, fsyncs the directory
                finally:
                    tmp.unlink(missing_ok=True)
                return size
        except requests.RequestException as e:
            raise fail(str(e)) from None
