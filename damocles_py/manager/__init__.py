"""Sector managers: the interface, the embedded manager, and the gRPC client/server."""
