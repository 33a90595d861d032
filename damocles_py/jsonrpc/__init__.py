"""A JSON-RPC 2.0 server over HTTP shaped as damocles peers expect (see server.py)."""
