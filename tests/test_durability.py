"""Durability: persisted files and the admin token reach the disk, the shared CC tree-d is checked
before reuse, and a store never loses another sector's replica (issue 7, items 13, 14, 15).

fsync cannot be observed by pulling the power here, so the tests watch the real system calls with
strace (`-y` names each file descriptor's path) and check their order: the data is fsynced before
the rename that makes the file count, and the directory after it.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from damocles_py.proofs import SealProof, SectorSize

from conftest import STARTUP_BUDGET, wait_until, worker_cli, write_config

IDLE = {"enable_deals": True, "disable_cc": True}  # waits for deals that never come: no sealing


def syscalls(tmp_path: Path, code: str) -> list[str]:
    """The fsync/rename calls a Python snippet makes, as strace prints them (paths resolved)."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    trace = tmp_path / "strace.txt"
    subprocess.run(["strace", "-f", "-y", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2", "-o", str(trace),
                    sys.executable, "-c", code], check=True, timeout=120)
    return trace.read_text().splitlines()


def first(lines: list[str], *parts: str) -> int:
    for i, line in enumerate(lines):
        if all(p in line for p in parts):
            return i
    raise AssertionError(f"no system call with {parts} in:\n" + "\n".join(lines))


def assert_durable_write(lines: list[str], dest: Path) -> None:
    """dest's data fsynced, then renamed into place, then its directory fsynced."""
    tmp = f".{dest.name}.partial"
    data = first(lines, "fsync(", f"{tmp}>")
    rename = first(lines, "rename", tmp, f'"{dest}"')
    directory = next(i for i, line in enumerate(lines) if i > rename and "fsync(" in line and f"<{dest.parent}>" in line)
    assert data < rename < directory


# ---------------------------------------------------------------------------------------------
# item 14: persisted files and the shared tree-d are on disk before they count


def test_persisted_copy_is_fsynced_before_it_counts(tmp_path):
    src = tmp_path / "sealed-local"
    src.write_bytes(b"replica" * 1000)
    dest = tmp_path / "store" / "sealed" / "s-t01000-1"
    lines = syscalls(tmp_path, "from pathlib import Path\nfrom damocles_py.store.layout import copy_atomically\n"
                               f"copy_atomically(Path({str(src)!r}), Path({str(dest)!r}))")
    assert_durable_write(lines, dest)
    # the new folders' entries too: store/ in tmp_path, sealed/ in store/
    first(lines, "fsync(", f"<{tmp_path}>")
    first(lines, "fsync(", f"<{tmp_path / 'store'}>")
    assert dest.read_bytes() == src.read_bytes()


def test_a_copy_cut_short_by_a_full_disk_leaves_nothing_behind(tmp_path):
    """A real full file system (a 64 KiB tmpfs): the half-written copy does not keep the space."""
    import errno
    import os

    from damocles_py.store.layout import copy_atomically

    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)]).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        src = tmp_path / "big"
        src.write_bytes(b"x" * (256 << 10))
        with pytest.raises(OSError) as info:
            copy_atomically(src, disk / "sealed" / "s-t01000-1")
        assert info.value.errno == errno.ENOSPC
        assert list((disk / "sealed").iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def tree_d_files(directory: Path) -> tuple[Path, Path]:
    return directory / "sc-02-data-tree-d.dat", directory / "sc-02-data-tree-d.dat.sum"


def test_shared_tree_d_is_checked_before_reuse_and_rebuilt_if_corrupt(tmp_path, caplog):
    from damocles_py.fsm.handlers.common import cached_cc_tree_d

    proof = SealProof.for_size(SectorSize(2048))
    log = logging.getLogger("test.tree_d")
    directory = tmp_path / "static-tree-d" / "2KiB"
    target, sidecar = tree_d_files(directory)

    assert cached_cc_tree_d(directory, proof, log) == target
    good = target.read_bytes()
    assert sidecar.is_file() and str(len(good)) in sidecar.read_text()
    assert hashlib.sha256(good).hexdigest() in sidecar.read_text()

    # intact: reused as it is, no rebuild
    inode = target.stat().st_ino
    with caplog.at_level(logging.WARNING, logger="test.tree_d"):
        cached_cc_tree_d(directory, proof, log)
    assert target.stat().st_ino == inode and not caplog.records

    # a flipped byte (same size), a truncated file, a missing sidecar (a cache written before
    # sidecars existed, or a crash between the two): each is rebuilt, with a log line
    def flip(data: bytes) -> None:
        target.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])

    damages = {"flipped byte": lambda: flip(good), "truncated": lambda: target.write_bytes(good[:100]),
               "no sidecar": lambda: sidecar.unlink()}
    for what, damage in damages.items():
        damage()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="test.tree_d"):
            cached_cc_tree_d(directory, proof, log)
        assert target.read_bytes() == good, what
        assert any("rebuilding" in r.getMessage() for r in caplog.records), what


def test_shared_tree_d_is_written_durably(tmp_path):
    directory = tmp_path / "static-tree-d" / "2KiB"
    lines = syscalls(tmp_path, "import logging\nfrom pathlib import Path\n"
                               "from damocles_py.fsm.handlers.common import cached_cc_tree_d\n"
                               "from damocles_py.proofs import SealProof, SectorSize\n"
                               f"cached_cc_tree_d(Path({str(directory)!r}), SealProof.for_size(SectorSize(2048)), "
                               "logging.getLogger())")
    target, sidecar = tree_d_files(directory)
    tree = first(lines, "fsync(", "sc-02-data-tree-d.dat>")
    moved = first(lines, "rename", f'"{target}"')
    assert tree < moved
    assert_durable_write(lines, sidecar)  # the sidecar, which marks the tree complete, comes last
    assert moved < first(lines, "rename", f'"{sidecar}"')


# ---------------------------------------------------------------------------------------------
# item 15: the admin token


def test_admin_token_is_created_durably_and_private(tmp_path):
    path = tmp_path / "worker" / "admin.token"
    lines = syscalls(tmp_path, "from pathlib import Path\nfrom damocles_py.admin.token import ensure_token\n"
                               f"ensure_token(Path({str(path)!r}))")
    assert_durable_write(lines, path)
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("content, mode, expected", [
    ("", 0o600, "is empty"), ("\n", 0o600, "is empty"), ("abc123\n", 0o600, "holds only 6 characters"),
    ("a" * 64, 0o644, "readable by other users"), ("a" * 30 + " " + "a" * 30, 0o600, "characters a token cannot carry"),
], ids=["empty", "blank line", "short", "world-readable", "space"])
def test_unusable_token_file_is_refused(tmp_path, content, mode, expected):
    cfg = write_config(tmp_path)
    token = tmp_path / "worker" / "admin.token"
    token.parent.mkdir()
    token.write_text(content)
    token.chmod(mode)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for args in (["daemon", "-c", str(cfg)], ["worker", "pause", "-c", str(cfg), "-i", "0"],
                 ["worker", "resume", "-c", str(cfg), "-i", "0"]):
        proc = worker_cli(*args, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f"admin token file {token}" in lines[0] and expected in lines[0], proc.stderr
        assert "Fix: " in lines[0]
    assert token.read_text() == content  # never replaced behind the operator's back
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_admin_api_checks_the_token_by_value(tmp_path, daemon_factory):
    """`Bearer ` with nothing after it, or a prefix of the token, is not the token."""
    from damocles_py.admin import worker_admin_pb2 as pb
    from damocles_py.admin import worker_admin_pb2_grpc as pb_grpc

    daemon = daemon_factory(write_config(tmp_path, sealing=IDLE), max_sectors=0)
    channel = grpc.insecure_channel(daemon.config.worker.admin_server.address)
    stub = pb_grpc.WorkerAdminStub(channel)
    try:
        for sent in ("Bearer ", "Bearer", "", f"Bearer {daemon.token[:16]}", daemon.token, f"Bearer {daemon.token}x"):
            with pytest.raises(grpc.RpcError) as info:
                stub.Pause(pb.PauseRequest(index=0), metadata=[("authorization", sent)], timeout=10)
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED, sent
        assert daemon.threads[0].status.thread_state != "paused"
        ok = stub.Pause(pb.PauseRequest(index=0), metadata=[("authorization", f"Bearer {daemon.token}")], timeout=10)
        assert ok.accepted
    finally:
        channel.close()


# ---------------------------------------------------------------------------------------------
# item 13: persist never overwrites another sector's files


def history_count(thread, next_state: str) -> int:
    sector = thread.db.current()
    return sum(1 for h in thread.db.history(sector.uid) if h.next == next_state) if sector else 0


def test_persist_refuses_foreign_files_and_replaces_only_its_own(tmp_path, daemon_factory):
    # the seed comes days after the pre-commit lands: the sector waits in PersistanceSubmitted, no C2 runs
    cfg = write_config(tmp_path, embedded={"pre_commit_delay_epochs": 10**6})
    store = tmp_path / "persist" / "a"
    foreign_sealed = store / "sealed" / "s-t01000-1"
    foreign_cache = store / "cache" / "s-t01000-1"
    foreign_sealed.parent.mkdir(parents=True)
    foreign_sealed.write_bytes(b"the replica of another, proven sector 1000-1" * 47)
    foreign_cache.mkdir(parents=True)
    (foreign_cache / "p_aux").write_bytes(b"\x01" * 64)
    foreign = {p: p.read_bytes() for p in (foreign_sealed, foreign_cache / "p_aux")}

    daemon = daemon_factory(cfg, max_sectors=1)
    thread = daemon.threads[0]
    wait_until(lambda: thread.status.thread_state == "paused", 2 * STARTUP_BUDGET, "the thread to pause at persist")
    assert thread.status.last_failure.cause.name == "StoreFileConflict"
    assert thread.status.state == "PCLanded"
    assert {p: p.read_bytes() for p in foreign} == foreign  # untouched
    debug = worker_cli("sector", "debug", "-c", str(cfg), "1000-1").stdout
    assert "StoreFileConflict" in debug and "move them out of the store" in debug and str(foreign_sealed) in debug

    # the table's advice: move them away (after checking whose they are), then resume
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(foreign_sealed, moved / "sealed")
    shutil.move(foreign_cache, moved / "cache")
    assert "resumed" in worker_cli("worker", "resume", "-c", str(cfg), "-i", "0").stdout
    wait_until(lambda: thread.status.state == "PersistanceSubmitted", STARTUP_BUDGET, "the sector to persist")
    local_sealed = tmp_path / "store" / "t0" / "data" / "s-t01000-1" / "sealed"
    first_replica = foreign_sealed.read_bytes()
    assert first_replica == local_sealed.read_bytes()
    assert (moved / "sealed").read_bytes() == foreign[foreign_sealed]

    # its own earlier persist may be replaced: rewind to draw a new ticket, which re-seals differently
    assert "pauses" in worker_cli("worker", "pause", "-c", str(cfg), "-i", "0").stdout
    wait_until(lambda: thread.status.thread_state == "paused", STARTUP_BUDGET, "the pause")
    assert "resumed at TreeDBuilt" in worker_cli("worker", "resume", "-c", str(cfg), "-i", "0",
                                                 "--state", "TreeDBuilt").stdout
    wait_until(lambda: history_count(thread, "PersistanceSubmitted") == 2 and thread.status.state == "PersistanceSubmitted",
               STARTUP_BUDGET, "the re-sealed sector to persist again")
    sector = thread.db.current()
    assert sector.failure is None and thread.status.thread_state != "paused"
    conflicts = [h for h in thread.db.history(sector.uid) if h.failure_cause == "StoreFileConflict"]
    assert len(conflicts) == 1  # the second persist replaced its own files without a conflict
    assert foreign_sealed.read_bytes() == local_sealed.read_bytes() != first_replica
