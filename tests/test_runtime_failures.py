"""Failure paths of the thread runtime (issue 7, items 1-6 and 8), through real daemons, a real
manager process or the embedded manager, real SQLite and real full file systems (tmpfs mounts:
these tests run as root, as CI does)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from damocles_py.admin.client import AdminClient
from damocles_py.bench import write_random_piece
from damocles_py.errors import UserError
from damocles_py.fsm.states import State
from damocles_py.manager.interface import SectorId

from conftest import free_port, seal_budget, start_manager, wait_until, worker_cli, write_config

S1 = SectorId(1000, 1)


def admin(daemon) -> AdminClient:
    return AdminClient(daemon.config.worker.admin_server.address, daemon.token)


def cause(thread) -> str | None:
    f = thread.status.last_failure
    return f.cause.name if f else None


def job(thread, sector_id=S1):
    """The thread's (last) job on `sector_id` as its database has it, and whether it is done."""
    jobs = [(s, done) for s, done in thread.db.jobs() if s.id == sector_id]
    return jobs[0] if jobs else (None, False)


def sector_log(tmp_path: Path, index: int = 0, name: str = "s-t01000-1") -> Path:
    return tmp_path / "store" / f"t{index}" / "logs" / f"{name}.log"


def make_locations(tmp_path: Path, n: int = 1) -> None:
    for i in range(n):  # what `store sealing-init` does: a thread location must exist
        (tmp_path / "store" / f"t{i}").mkdir(parents=True, exist_ok=True)


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


# ---------------------------------------------------------------------------------------------
# items 1 and 2: final reports with the manager down (a pause is taken) and refusing (finished locally)


def test_final_report_obeys_pause_and_a_refusal_finishes_the_sector_locally(tmp_path, daemon_factory):
    port = free_port()
    store = tmp_path / "persist" / "a"
    store.mkdir(parents=True)
    make_locations(tmp_path)
    manager = start_manager(tmp_path / "m1", port, store)
    # many retries: the thread keeps asking through the manager's restarts below
    cfg = write_config(tmp_path, manager_addr=f"127.0.0.1:{port}",
                       sealing={"max_retries": 1000, "recover_interval": "0.3s"})
    daemon = daemon_factory(cfg, max_sectors=1)
    thread = daemon.threads[0]
    try:
        wait_until(lambda: thread.status.sector_id == "1000-1", 60, "the first sector")
        kill(manager)  # the manager loses its database: a fresh one on the same address
        manager = start_manager(tmp_path / "m2", port, store)
        wait_until(lambda: thread.status.thread_state == "paused", 60, "the refusal to pause the thread")
        assert cause(thread) == "ManagerRejectedRequest"
        assert "unknown sector 1000-1" in thread.status.last_failure.detail

        # the README's action, with the manager down now: the final report_aborted is retried...
        kill(manager)
        assert admin(daemon).resume(0, "Aborted").accepted
        log = sector_log(tmp_path)
        wait_until(lambda: "report_aborted failed, retrying" in log.read_text(), 30, "a retried report")
        # ...and a pause asked for meanwhile is taken: no spinning against the dead manager
        assert admin(daemon).pause(0).accepted
        wait_until(lambda: thread.status.thread_state == "paused", 10, "the pause during the final report")
        retries = log.read_text().count("report_aborted failed")
        time.sleep(2)
        assert log.read_text().count("report_aborted failed") == retries
        # an Aborted sector offers no state to move to: only a plain resume (the report) is left
        assert thread.resumable_states() == []
        with pytest.raises(UserError, match="only its report to the manager is left; resume without --state"):
            admin(daemon).resume(0, "TreeDBuilt")

        # the manager is back but does not know the sector: the refusal is recorded, not retried forever
        manager = start_manager(tmp_path / "m2", port, store)
        out = worker_cli("worker", "resume", "-c", str(cfg), "--index", "0").stdout
        assert "resumed" in out
        wait_until(lambda: job(thread)[1], 30, "the sector to be finished locally")
        sector, _ = job(thread)
        assert sector.state is State.Aborted
        assert thread.status.thread_state != "paused"
        history = thread.db.history(sector.uid)
        refused = [h for h in history if h.event == "Failure(report_aborted refused)"]
        assert len(refused) == 1 and refused[0].failure_cause == "ManagerRejectedRequest"
        assert "unknown sector 1000-1" in refused[0].detail
        assert "the manager refused report_aborted" in log.read_text()
        debug = worker_cli("sector", "debug", "-c", str(cfg), "1000-1").stdout
        assert "ManagerRejectedRequest" in debug and "report_aborted refused" in debug
        assert not (tmp_path / "store" / "t0" / "data" / "s-t01000-1").exists()
    finally:
        manager.kill()
        manager.wait()


# ---------------------------------------------------------------------------------------------
# item 3: a sector the manager abandons while its thread is paused moves on without an operator


def test_sector_aborted_at_the_manager_while_paused_moves_on(tmp_path, daemon_factory):
    make_locations(tmp_path)
    # epochs of 5ms and a ticket valid for one: the pre-commit is refused, the thread pauses
    cfg = write_config(tmp_path, embedded={"block_time": "0.005s", "ticket_expiry_epochs": 1,
                                           "seed_expiry_epochs": 10**7})
    daemon = daemon_factory(cfg, max_sectors=1)
    thread = daemon.threads[0]
    wait_until(lambda: thread.status.thread_state == "paused", 120, "the TicketExpired pause")
    assert cause(thread) == "TicketExpired" and thread.status.state == "PC2Done"
    offered = [s.value for s in thread.resumable_states()]
    assert offered[-2:] == ["PC2Done", "Aborted"] and "PCSubmitted" not in offered

    daemon.manager.abort_sector(S1, "given up by the operator at the manager")
    wait_until(lambda: job(thread)[1], 30, "the paused sector to be dropped")
    sector, _ = job(thread)
    assert sector.state is State.Aborted and not sector.paused
    assert sector.failure.cause.name == "SectorAbortedByManager"
    # no operator was needed (the status follows the database write a moment later)
    wait_until(lambda: thread.status.thread_state in ("idle", "running"), 30, "the thread moving on")
    assert thread.resumable_states() == []


# ---------------------------------------------------------------------------------------------
# item 4: a pause while waiting for deals, and one with no sector at all, honour --state or refuse it,
# and survive a restart


def test_idle_pauses_are_persisted_and_resume_state_is_honoured_or_refused(tmp_path, daemon_factory):
    make_locations(tmp_path)
    cfg = write_config(tmp_path, sealing={"enable_deals": True, "disable_cc": True})
    daemon = daemon_factory(cfg, max_sectors=1)
    thread = daemon.threads[0]
    # no deals and no CC: the allocated sector waits for deals
    wait_until(lambda: thread.status.sector_id == "1000-1" and thread.status.state == "Allocated", 60,
               "the sector waiting for deals")
    assert admin(daemon).pause(0).accepted
    wait_until(lambda: thread.status.thread_state == "paused", 10, "the pause")
    assert job(thread)[0].paused  # persisted with the sector
    assert [s.value for s in thread.resumable_states()] == ["Allocated", "Aborted"]

    daemon.stop()
    daemon = daemon_factory(cfg, max_sectors=1)
    thread = daemon.threads[0]
    # paused from the daemon's start: a resume right after a restart is not refused as "not paused"
    assert thread.status.thread_state == "paused"
    assert "resumed at Aborted" in admin(daemon).resume(0, "Aborted").message
    wait_until(lambda: daemon.manager.sector(S1).aborted, 30, "the sector aborted at the manager")
    wait_until(lambda: job(thread)[1] and thread.status.thread_state == "idle", 30, "the thread idle, no sector")

    # no sector (max_sectors reached): the pause is a thread flag, --state is refused with the reason
    assert admin(daemon).pause(0).accepted
    wait_until(lambda: thread.status.thread_state == "paused", 10, "the idle pause")
    with pytest.raises(UserError, match="no allocated sector to move .it is idle.; resume without --state"):
        admin(daemon).resume(0, "Aborted")
    result = worker_cli("worker", "resume", "-c", str(cfg), "--index", "0", "--state", "PC1Done", check=False)
    assert result.returncode != 0 and "no allocated sector" in result.stderr and "Traceback" not in result.stderr
    daemon.stop()

    daemon = daemon_factory(cfg, max_sectors=0)
    thread = daemon.threads[0]
    assert thread.status.thread_state == "paused"  # from the start, as above
    assert admin(daemon).pause(0).accepted is False
    assert admin(daemon).resume(0).accepted
    wait_until(lambda: thread.status.thread_state == "idle", 10, "the thread idle again")
    assert thread.db.flag("paused_idle") is None


# ---------------------------------------------------------------------------------------------
# items 5, 6 and 8 on real full file systems: a sealing disk (DiskFull from the proofs library),
# the thread's database disk (StateStoreFailed), a persist store (a rebuild paused after its
# snap-less path); the README's actions (free space, `worker resume`) complete every one.


@pytest.fixture
def tmpfs():
    """Mount small tmpfs file systems (we run as root); lazily unmounted at the end of the test."""
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(fs: Path, leave: int = 0) -> Path:
    """Fill the file system holding `fs` with one file, leaving `leave` bytes (0: full to the last byte)."""
    filler = fs / f"filler-{time.monotonic_ns()}"
    st = os.statvfs(fs)
    todo = st.f_bavail * st.f_frsize - leave
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = 1 << 20
        while chunk and (todo > 0 or not leave):
            try:
                todo -= os.write(fd, b"\1" * (min(chunk, todo) if leave else chunk))
            except OSError as e:
                if e.errno != 28:
                    raise
                chunk //= 2
    finally:
        os.close(fd)
    return filler


def history_causes(thread, sector_id=S1) -> list[tuple[str, str, str]]:
    sector, _ = job(thread, sector_id)
    return [(h.prev, h.event, h.failure_cause) for h in thread.db.history(sector.uid) if h.failure_cause]


def test_full_disks_pause_critical_and_free_space_plus_resume_completes(tmp_path, tmpfs, daemon_factory):
    location = tmpfs(tmp_path / "store" / "t0", "32m")  # the sealing thread's disk: its database and logs
    store = tmpfs(tmp_path / "persist" / "a", "8m")  # the persist store
    cfg = write_config(tmp_path, plans=("sealer", "rebuild"), store=store,
                       sealing={"enable_deals": True, "disable_cc": True, "max_retries": 3},
                       thread_sealing={1: {"enable_deals": False, "disable_cc": False}})
    data = tmpfs(location / "data", "8m")  # the sector files: a disk of their own
    daemon = daemon_factory(cfg)  # no cap: the rebuild thread takes a job for each request
    sealer, rebuild = daemon.threads
    cli = ["-c", str(cfg)]

    # the sector waits for a deal; meanwhile its data disk fills up, all but one page
    wait_until(lambda: sealer.status.state == "Allocated", 60, "the sector waiting for deals")
    assert admin(daemon).pause(0).accepted
    wait_until(lambda: sealer.status.thread_state == "paused", 10, "the pause")
    data_filler = fill(data, leave=4096)
    write_random_piece(tmp_path / "pieces" / "deal-1.bin", 1500)
    daemon.manager.import_pieces()
    assert admin(daemon).resume(0).accepted

    # ENOSPC inside the proofs library: DiskFull, critical, paused at once (no retries)
    # (the status still says "paused" until the resumed thread runs: wait for the new pause's cause)
    wait_until(lambda: sealer.status.thread_state == "paused" and cause(sealer) == "DiskFull", 60,
               "the DiskFull pause")
    assert sealer.status.last_failure.level.value == "critical"
    assert "No space left on device" in sealer.status.last_failure.detail
    failed_in = sealer.status.state
    assert failed_in in ("DealsAcquired", "PieceAdded", "TicketAssigned", "PC1Done")  # a Rust stage
    assert [c for c in history_causes(sealer) if c[2] == "DiskFull"] == [(failed_in, "Failure(paused)", "DiskFull")]

    # the database's disk fills up too; the data disk is freed; resuming cannot write: StateStoreFailed
    db_filler = fill(location)
    data_filler.unlink()
    assert "resumed" in worker_cli("worker", "resume", *cli, "--index", "0").stdout
    wait_until(lambda: cause(sealer) == "StateStoreFailed" and sealer.status.thread_state == "paused", 30,
               "the StateStoreFailed pause")
    assert sealer.status.last_failure.level.value == "critical"
    assert sealer.resumable_states() == []
    listed = worker_cli("worker", "list", *cli).stdout
    assert "StateStoreFailed" in listed
    # resuming while the disk is still full pauses again, with the sector kept in memory
    since = sealer.status.since
    assert admin(daemon).resume(0).accepted
    wait_until(lambda: sealer.status.thread_state == "paused" and sealer.status.since > since, 30,
               "the second StateStoreFailed pause")
    assert sealer.status.state == failed_in

    # free the space: `worker resume` writes the sector and it goes on to Finished (one C2)
    db_filler.unlink()
    assert "resumed" in worker_cli("worker", "resume", *cli, "--index", "0").stdout
    wait_until(lambda: daemon.manager.sector(S1).finished, seal_budget(2), "the sector to finish")
    wait_until(lambda: job(sealer)[1], 30, "the job done in the thread database")
    causes = history_causes(sealer)
    assert (failed_in, "Failure(paused)", "DiskFull") in causes
    assert any(c[2] == "StateStoreFailed" and c[1] == "Failure(paused, written after resume)" for c in causes)
    assert not any("retry" in c[1] for c in causes)  # out of space is never retried as a stage failure

    # item 8: a rebuild of a never-upgraded sector; its store is full, so it pauses at persisting
    name = "s-t01000-1"
    originals = {p: p.read_bytes() for p in (store / "sealed" / name, store / "cache" / name / "p_aux")}
    shutil.rmtree(store / "cache" / name)
    (store / "sealed" / name).unlink()
    store_filler = fill(store)
    daemon.manager.request_rebuild(S1)
    wait_until(lambda: rebuild.status.thread_state == "paused", 60, "the rebuild paused on the full store")
    assert cause(rebuild) == "DiskFull" and rebuild.status.state == "SnapDone"
    offered = [s.value for s in rebuild.resumable_states()]
    assert offered == ["Allocated", "PieceAdded", "TreeDBuilt", "PC1Done", "PC2Done", "SealedChecked",
                       "SnapDone", "Aborted"]  # no snap state: the sector was never upgraded
    with pytest.raises(UserError, match="cannot be resumed at state 'SnapEncoded'; valid states now: Allocated"):
        admin(daemon).resume(1, "SnapEncoded")
    store_filler.unlink()
    assert "resumed at SealedChecked" in worker_cli("worker", "resume", *cli, "--index", "1",
                                                    "--state", "SealedChecked").stdout
    wait_until(lambda: daemon.manager.sector(S1).rebuild is None and all(p.exists() for p in originals), 60,
               "the rebuilt sector")
    for path, content in originals.items():
        assert path.read_bytes() == content

    # RebuildMismatch (the failure table's advice, issue 7 item 7): the manager's record of the
    # sector is damaged (its comm_r), so the rebuilt replica does not match it; the advice:
    # `--state Aborted` gives the rebuild up, and the manager ends the job (no endless retaking).
    conn = sqlite3.connect(tmp_path / "manager" / "manager.sqlite3")
    with conn:
        conn.execute("UPDATE sectors SET pre_comm_r = ? WHERE miner = 1000 AND number = 1", (bytes(32),))
    conn.close()
    daemon.manager.request_rebuild(S1)
    wait_until(lambda: rebuild.status.thread_state == "paused" and cause(rebuild) == "RebuildMismatch", 60,
               "the rebuild paused on the mismatch")
    assert rebuild.status.state == "PC1Done"
    assert "resumed at Aborted" in worker_cli("worker", "resume", *cli, "--index", "1", "--state", "Aborted").stdout
    wait_until(lambda: daemon.manager.sector(S1).rebuild is None, 30, "the rebuild job given up at the manager")
    time.sleep(1)
    assert rebuild.status.thread_state == "idle" and daemon.manager.sector(S1).finished
