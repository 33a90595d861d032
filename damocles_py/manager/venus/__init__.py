"""The worker as a client of damocles-manager: its `Venus.*` JSON-RPC API over HTTP (issue 8).

    addr.py        rpc_client.addr forms -> http(s)://host:port/rpc/v0
    cid.py         commitments <-> piece / replica CIDs
    codec.py       the wire shapes and the methods, one generic JSON codec
    rpc.py         JSON-RPC 2.0 over HTTP, strict responses, timeouts
    errors.py      11001 -> abort, everything else -> temporary
    client.py      VenusManager, the SectorManager implementation
    piecestore.py  piece download from the manager's /piecestore/
"""

from damocles_py.manager.venus.client import VenusManager

__all__ = ["VenusManager"]
