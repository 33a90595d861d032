"""What an operator can get wrong, through the real CLI (issue 7, items 9, 16, 18, 19).

Every refusal is one line on stderr naming the problem and the fix, exit code != 0, no traceback,
and no state changed: no token, no database, no manager state, no location created.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from damocles_py.admin.client import AdminClient
from damocles_py.config.load import load_config
from damocles_py.errors import UserError

from conftest import STARTUP_BUDGET, free_port, start_manager, wait_until, worker_cli, write_config

# A sealer with deals on and CC off, and no deals anywhere: it allocates a sector and waits for
# deals, so a daemon runs without sealing anything (no C2 on the machine while these tests run).
IDLE = {"enable_deals": True, "disable_cc": True}


def snapshot(root: Path) -> set[str]:
    """Every path under root: compared before and after a refused command."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_refused(proc: subprocess.CompletedProcess, *expected: str) -> str:
    """One line on stderr containing `expected`, no traceback, exit code != 0."""
    assert proc.returncode != 0, proc
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def daemon_cli(cfg: Path, *extra: str, timeout: float = STARTUP_BUDGET) -> subprocess.CompletedProcess:
    return worker_cli("daemon", "-c", str(cfg), *extra, check=False, timeout=timeout)


def start_daemon_process(cfg: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "damocles_py.cli.worker", "daemon", "-c", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=open(log, "ab"))


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STARTUP_BUDGET)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def admin_answers(cfg_address: str) -> bool:
    client = AdminClient(cfg_address, timeout=2)
    try:
        client.list()
        return True
    except UserError:
        return False
    finally:
        client.close()


def replace_in(cfg: Path, old: str, new: str) -> None:
    text = cfg.read_text()
    assert old in text
    cfg.write_text(text.replace(old, new))


# ---------------------------------------------------------------------------------------------
# item 9: a thread location is never created on the fly


@pytest.mark.parametrize("how", ["missing", "empty mount point"])
def test_unprepared_location_stops_the_daemon(tmp_path, how):
    cfg = write_config(tmp_path)
    location = tmp_path / "store" / "t0"
    shutil.rmtree(location)
    if how == "empty mount point":  # what an unmounted disk leaves behind
        location.mkdir()
    before = snapshot(tmp_path)
    line = assert_refused(daemon_cli(cfg), str(location), f"damocles-worker store sealing-init -l {location}",
                          "sealing_thread[0].location")
    assert line.startswith("error: ")
    assert snapshot(tmp_path) == before  # no token, no manager database, no thread database

    # the fix the line names works
    out = worker_cli("store", "sealing-init", "-l", str(location)).stdout
    assert f"sealing location ready: {location}" in out
    assert worker_cli("daemon", "--check", "-c", str(cfg), check=False).returncode == 0


def test_location_used_before_markers_existed_is_accepted(tmp_path):
    """A location with a thread database (from an earlier version) is a prepared one."""
    cfg = write_config(tmp_path)
    location = tmp_path / "store" / "t0"
    (location / ".holder").unlink()  # the marker store sealing-init writes (damocles')
    assert daemon_cli(cfg, "--check").returncode != 0
    worker_cli("store", "sealing-init", "-l", str(tmp_path / "other"))  # makes a database there
    shutil.copy(tmp_path / "other" / "sealing.sqlite3", location / "sealing.sqlite3")
    assert daemon_cli(cfg, "--check").returncode == 0


# ---------------------------------------------------------------------------------------------
# item 16: one daemon per config


def test_second_daemon_on_the_same_config_exits_naming_the_holder(tmp_path):
    cfg = write_config(tmp_path, sealing=IDLE)
    address = load_config(cfg).worker.admin_server.address  # our gRPC admin API
    first = start_daemon_process(cfg, tmp_path / "daemon-1.log")
    try:
        wait_until(lambda: admin_answers(address), STARTUP_BUDGET, "the first daemon to serve")
        second = daemon_cli(cfg)
        assert_refused(second, "in use by another damocles-worker daemon", f"pid {first.pid}", "worker.state_dir")
        assert first.poll() is None  # the first one is unharmed

        # --check sees the locks and the busy port too, and exits 1
        check = daemon_cli(cfg, "--check")
        assert check.returncode == 1 and "Traceback" not in check.stderr + check.stdout
        assert f"in use by another damocles-worker daemon: pid {first.pid}" in check.stdout
        assert "cannot be listened on" in check.stdout

        # another config (own state_dir and location) on the same admin port: the port is refused
        other = tmp_path / "other"
        other.mkdir()
        cfg2 = write_config(other, sealing=IDLE)
        replace_in(cfg2, cfg2.read_text().split("port = ")[1].split()[0], address.rsplit(":", 1)[1])
        before = snapshot(other)
        assert_refused(daemon_cli(cfg2), f"admin API address {address} cannot be listened on")
        assert snapshot(other) == before
    finally:
        stop_process(first)
    # once the first daemon is gone, its locks are gone with it
    assert daemon_cli(cfg, "--check").returncode == 0


def test_a_daemon_killed_9_can_be_restarted_at_once(tmp_path):
    """Its locks die with it, and a connection it had open does not make its admin port look busy."""
    cfg = write_config(tmp_path, sealing=IDLE)
    address = load_config(cfg).worker.admin_server.address  # our gRPC admin API
    first = start_daemon_process(cfg, tmp_path / "daemon-1.log")
    try:
        wait_until(lambda: admin_answers(address), STARTUP_BUDGET, "the first daemon to serve")
        client = AdminClient(address, timeout=10)
        client.list()  # a connection open when the daemon dies
        first.send_signal(signal.SIGKILL)
        first.wait()
        client.close()
        second = start_daemon_process(cfg, tmp_path / "daemon-2.log")
        try:
            wait_until(lambda: admin_answers(address) or second.poll() is not None, STARTUP_BUDGET, "the restart")
            assert second.poll() is None, (tmp_path / "daemon-2.log").read_text()
        finally:
            stop_process(second)
    finally:
        stop_process(first)


def test_location_shared_by_two_configs_is_locked(tmp_path):
    """Two configs (own state_dirs) pointing at one thread location: the second daemon is refused."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    cfg_a = write_config(a, sealing=IDLE)
    cfg_b = write_config(b, sealing=IDLE)
    replace_in(cfg_b, 'location = "./store/t0"', f'location = "{a / "store" / "t0"}"')
    address = load_config(cfg_a).worker.admin_server.address
    first = start_daemon_process(cfg_a, tmp_path / "daemon-a.log")
    try:
        wait_until(lambda: admin_answers(address), STARTUP_BUDGET, "the first daemon to serve")
        assert_refused(daemon_cli(cfg_b), "sealing_thread[0].location", str(a / "store" / "t0"), f"pid {first.pid}")
    finally:
        stop_process(first)


# ---------------------------------------------------------------------------------------------
# item 18: bad input gives one line, never a traceback, and changes nothing


def test_pause_with_a_negative_index(tmp_path):
    cfg = write_config(tmp_path)
    before = snapshot(tmp_path)
    assert_refused(worker_cli("worker", "pause", "-c", str(cfg), "-i", "-1", check=False),
                   "--index", "from 0 to")
    assert snapshot(tmp_path) == before


def test_sector_debug_of_a_number_too_big(tmp_path):
    cfg = write_config(tmp_path)
    before = snapshot(tmp_path)
    assert_refused(worker_cli("sector", "debug", "-c", str(cfg), "1000-99999999999999999999", check=False),
                   "1000-99999999999999999999", "<miner>-<number>")
    assert snapshot(tmp_path) == before


def test_other_bad_arguments(tmp_path):
    cfg = write_config(tmp_path)
    before = snapshot(tmp_path)
    assert_refused(worker_cli("store", "sealing-init", "-l", "~nosuchuser/x", check=False), "~nosuchuser/x", "full path")
    assert_refused(daemon_cli(cfg, "--stop-after-sectors", "-5"), "--stop-after-sectors")
    assert_refused(worker_cli("worker", "resume", "-c", str(cfg), "-i", "99999999999", check=False), "--index")
    assert snapshot(tmp_path) == before


BAD_CONFIGS = {
    # (a change to the test config, text the line must contain)
    "unknown user's home": (('location = "./store/t0"', 'location = "~nosuchuser/x"'), 'cannot expand "~nosuchuser"'),
    "300 years": (('recover_interval = "0.5s"', 'recover_interval = "109500d"'), "365 days"),
    "verify_after_pc2": (("[sealing]\n", "[sealing]\nverify_after_pc2 = true\n"), "not supported yet"),
    "request_task_max_retries": (("[sealing]\n", "[sealing]\nrequest_task_max_retries = 3\n"), "not supported yet"),
    "no thread takes the embedded size": (("[sealing]\n", '[sealing]\nallowed_sizes = ["8MiB"]\n'),
                                          "no sealing thread accepts"),
    "sealer without a store": (None, "no writable [[attached]] store"),
}


@pytest.mark.parametrize("change, expected", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_is_refused_at_start(tmp_path, change, expected):
    cfg = write_config(tmp_path)
    if change is None:  # drop the [[attached]] block (the last one in the file) entirely
        text = cfg.read_text()
        cfg.write_text(text[: text.index("[[attached]]")])
    else:
        replace_in(cfg, *change)
    before = snapshot(tmp_path)
    assert_refused(daemon_cli(cfg), expected, "Fix:")
    assert snapshot(tmp_path) == before
    check = daemon_cli(cfg, "--check")  # --check says the same, and exits 1
    assert check.returncode == 1 and "Traceback" not in check.stderr + check.stdout
    assert expected in check.stdout + check.stderr
    assert snapshot(tmp_path) == before


def test_missing_farm_token_file_is_refused_at_start(tmp_path):
    port = free_port()
    cfg = write_config(tmp_path, manager_addr=f"127.0.0.1:{port}")
    replace_in(cfg, f'addr = "127.0.0.1:{port}"', f'addr = "127.0.0.1:{port}"\ntoken_file = "./nope.token"')
    before = snapshot(tmp_path)
    assert_refused(daemon_cli(cfg), "sector_manager.rpc_client.token_file", "nope.token", "does not exist")
    assert snapshot(tmp_path) == before


def test_admin_api_refuses_an_index_out_of_range(tmp_path, daemon_factory):
    """The server checks too: a client other than ours may send any index."""
    cfg = write_config(tmp_path, sealing=IDLE)
    daemon = daemon_factory(cfg, max_sectors=0)
    client = AdminClient(daemon.config.worker.admin_server.address, daemon.token)
    try:
        for index in (1, 2**32 - 1):
            with pytest.raises(UserError, match=f"no sealing thread with index {index}"):
                client.pause(index)
        assert daemon.threads[0].status.thread_state != "paused"
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# item 19: daemon --check


def test_check_prints_what_would_run_and_changes_nothing(tmp_path):
    cfg = write_config(tmp_path, plans=("sealer", "snapup"))
    before = snapshot(tmp_path)
    proc = daemon_cli(cfg, "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "thread 0: plan sealer" in out and "thread 1: plan snapup" in out
    assert f"location {tmp_path / 'store' / 't0'} (ready)" in out
    assert "store persist-a" in out and "sector manager: embedded, miner 1000, 2KiB" in out
    assert out.strip().endswith("ok: the daemon can start")
    assert snapshot(tmp_path) == before  # no token, no databases, no store created
    assert not (tmp_path / "worker").exists() and not (tmp_path / "manager").exists()


def test_check_lists_every_problem(tmp_path):
    cfg = write_config(tmp_path, plans=("sealer", "sealer"))
    shutil.rmtree(tmp_path / "store" / "t1")
    (tmp_path / "worker").mkdir()
    (tmp_path / "worker" / "admin.token").write_text("")
    replace_in(cfg, "create = true", "create = false")
    before = snapshot(tmp_path)
    proc = daemon_cli(cfg, "--check")
    assert proc.returncode == 1
    # (parameter files are the machine's, not this config's: not counted here)
    problems = [line for line in proc.stdout.splitlines()
                if line.startswith("problem: ") and not line.startswith("problem: parameters for")]
    assert len(problems) == 3, proc.stdout
    assert any("sealing_thread[1].location" in p for p in problems)
    assert any("admin token file" in p and "is empty" in p for p in problems)
    assert any("attached[0]" in p and "does not exist" in p for p in problems)
    assert snapshot(tmp_path) == before


def test_check_of_a_remote_manager_that_does_not_answer(tmp_path):
    cfg = write_config(tmp_path, manager_addr=f"127.0.0.1:{free_port()}", sealing={"allowed_sizes": ["2KiB"]})
    proc = daemon_cli(cfg, "--check")
    assert proc.returncode == 1
    assert "the sector manager at 127.0.0.1:" in proc.stdout and "does not answer" in proc.stdout


def test_check_of_a_remote_manager_with_a_farm_token(tmp_path):
    port = free_port()
    store = tmp_path / "persist" / "a"
    store.mkdir(parents=True)
    manager = start_manager(tmp_path, port, store, auth=True)
    try:
        cfg = write_config(tmp_path, manager_addr=f"127.0.0.1:{port}", sealing={"allowed_sizes": ["2KiB"]})
        addr_line = f'addr = "127.0.0.1:{port}"'
        token = tmp_path / "manager-state" / "manager.token"
        replace_in(cfg, addr_line, f'{addr_line}\ntoken_file = "{token}"')
        proc = daemon_cli(cfg, "--check")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"sector manager: 127.0.0.1:{port}" in proc.stdout

        empty = tmp_path / "empty.token"
        empty.write_text("")
        replace_in(cfg, str(token), str(empty))
        proc = daemon_cli(cfg, "--check")
        assert proc.returncode == 1 and "token_file" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    finally:
        manager.kill()
        manager.wait()


def test_check_of_an_invalid_config_is_one_line(tmp_path):
    cfg = write_config(tmp_path)
    replace_in(cfg, "max_retries = 3", "max_retires = 3")
    assert_refused(daemon_cli(cfg, "--check"), "did you mean `max_retries`")
