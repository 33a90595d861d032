"""`kill -9` of a real daemon process in the middle of PC2 and of C2: after a restart the sector
finishes and the manager verifies its proof."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from damocles_py.config.load import load_config
from damocles_py.manager.db import Submission
from damocles_py.manager.embedded import EmbeddedManager
from damocles_py.manager.interface import SectorId, StoreInfo

from conftest import STARTUP_BUDGET, seal_budget, write_config


def start_daemon(cfg: Path, log: Path, stop_after: int | None = None) -> subprocess.Popen:
    args = [sys.executable, "-m", "damocles_py.cli.worker", "daemon", "-c", str(cfg)]
    if stop_after:
        args += ["--stop-after-sectors", str(stop_after)]
    return subprocess.Popen(args, stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def thread_state(location: Path) -> str | None:
    db = location / "sealing.sqlite3"
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT state FROM sectors WHERE done = 0 ORDER BY uid DESC LIMIT 1").fetchone()
    return row[0] if row else None


def kill_when_stage_starts(proc: subprocess.Popen, sector_log: Path, stage: str, timeout: float) -> None:
    """SIGKILL the daemon as soon as the sector's log says `stage` started (polled every ms)."""
    marker = f"INFO {stage}: start"  # not "pc2: start" when waiting for c2
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sector_log.exists() and marker in sector_log.read_text():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited early with {proc.returncode}")
        time.sleep(0.001)
    raise AssertionError(f"{stage} did not start within {timeout}s")


@pytest.mark.parametrize("stage, state_during", [("pc2", "PC1Done"), ("c2", "C1Done")])
def test_kill_9_mid_stage_then_restart_finishes(tmp_path, stage, state_during):
    cfg = write_config(tmp_path)
    location = tmp_path / "store" / "t0"
    sector_log = location / "logs" / "s-t01000-1.log"

    proc = start_daemon(cfg, tmp_path / "daemon.log")
    try:
        kill_when_stage_starts(proc, sector_log, stage, timeout=2 * STARTUP_BUDGET)  # cheap stages first
    finally:
        if proc.poll() is None:
            proc.kill()
    # the stage was cut off: its result never reached the database
    assert thread_state(location) == state_during

    proc = start_daemon(cfg, tmp_path / "daemon.log", stop_after=1)
    try:
        assert proc.wait(timeout=seal_budget(1)) == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()

    config = load_config(cfg)
    manager = EmbeddedManager(config.sector_manager.embedded, [StoreInfo("persist-a", str(tmp_path / "persist" / "a"))])
    record = manager.sector(SectorId(1000, 1))
    assert record.finished and record.commit.state is Submission.Accepted  # verified by verify_seal
    log_text = sector_log.read_text()
    assert log_text.count(f"INFO {stage}: start") == 2  # cut off once, re-run once
    manager.close()
