"""damocles' per-thread hot config through a running daemon: `<location>/config.toml` switches a
thread's plan and sealing keys without a restart; a bad file keeps the current config; deleting
the file reverts to sealing.toml."""

from __future__ import annotations

import logging

from conftest import STARTUP_BUDGET, wait_until, worker_cli, write_config


def test_hot_config_switches_plan_and_keys_without_restart(tmp_path, daemon_factory, caplog):
    cfg = write_config(tmp_path)
    daemon = daemon_factory(cfg, max_sectors=0)  # no sector starts: the thread idles, re-reading its file
    thread = daemon.threads[0]
    hot = tmp_path / "store" / "t0" / "config.toml"
    assert thread.status.plan == "sealer"

    hot.write_text('plan = "rebuild"\n[sealing]\nmax_retries = 7\n')
    wait_until(lambda: thread.status.plan == "rebuild", STARTUP_BUDGET, "the thread to take the hot plan")
    assert thread.cfg.sealing.max_retries == 7
    assert thread.cfg.sealing.seal_interval == 0.2  # keys the file does not name keep sealing.toml's

    # a bad file: one log line naming it, the thread keeps what it has
    with caplog.at_level(logging.ERROR, logger="damocles.thread"):
        hot.write_text('plan = "sealer"\n[sealing]\nmax_retrys = 2\n')
        wait_until(lambda: any("config.toml" in r.getMessage() for r in caplog.records), STARTUP_BUDGET,
                   "the bad hot file to be reported")
    message = next(r.getMessage() for r in caplog.records if "config.toml" in r.getMessage())
    assert "max_retrys" in message and "\n" not in message
    assert thread.status.plan == "rebuild" and thread.cfg.sealing.max_retries == 7
    # the operator can still list and steer the threads: the admin commands read only [worker]
    listed = worker_cli("worker", "-c", str(cfg), "list")
    assert "rebuild" in listed.stdout, listed.stdout + listed.stderr
    assert worker_cli("worker", "-c", str(cfg), "pause", "-i", "0").returncode == 0
    wait_until(lambda: thread.status.thread_state == "paused", STARTUP_BUDGET, "the pause")
    assert worker_cli("worker", "-c", str(cfg), "resume", "-i", "0").returncode == 0

    hot.unlink()  # deleting the file reverts to sealing.toml
    wait_until(lambda: thread.status.plan == "sealer", STARTUP_BUDGET, "the thread to revert")
    assert thread.cfg.sealing.max_retries == 3
