"""Per-sector logs that include the proofs library's own log lines.

The Rust `log` crate is bridged into Python logging (pyo3-log) under loggers named after the
crates. While a heavy stage runs, the sealing thread binds its sector's logger to the OS thread,
and records the library emits from that thread are copied into the sector's log file.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Iterator

RUST_LOGGERS = ("filecoin_proofs", "filecoin_proofs_api", "storage_proofs_core", "storage_proofs_porep",
                "storage_proofs_update", "bellperson", "merkletree", "_core")

_bound: dict[int, logging.Logger] = {}
_installed = threading.Lock()
_handler: logging.Handler | None = None


class _ToSectorLog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        sector_log = _bound.get(threading.get_ident())
        if sector_log is not None:
            for handler in sector_log.handlers:  # the sector's own files only: no second copy on stderr
                if record.levelno >= handler.level:
                    handler.handle(record)


def install_rust_log_routing(level: int = logging.INFO) -> None:
    """Let the library's records at `level` and above reach Python (and so the sector logs)."""
    global _handler
    with _installed:
        if _handler is not None:
            return
        _handler = _ToSectorLog()
        for name in RUST_LOGGERS:
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.addHandler(_handler)


@contextmanager
def bound_to(sector_log: logging.Logger) -> Iterator[None]:
    ident = threading.get_ident()
    _bound[ident] = sector_log
    try:
        yield
    finally:
        _bound.pop(ident, None)
