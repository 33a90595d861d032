"""Sealing thread locations and the locks a daemon holds on its directories.

A location is usable only once `damocles-worker store sealing-init` has prepared it (it writes
damocles' marker, an empty `.holder`, so a location prepared by either worker is accepted by both). A missing or unmarked location is an error, never created on the fly: an unmounted
sealing disk leaves an empty mount point, and a thread sealing onto the root disk with an empty
database would orphan the sector that the real disk holds.

Each thread location and the worker's state_dir are locked (flock on a lock file holding the
holder's pid and host) for the daemon's lifetime, so a second daemon on the same config exits
instead of sealing the same sectors twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from damocles_py.errors import UserError
from damocles_py.store.durable import fsync_dir, make_dirs, write_durably
from damocles_py.store.thread_db import DB_FILE  # a location used before markers existed has its database

MARKER_FILE = ".holder"  # damocles-worker's PLACEHOLDER_NAME
LEGACY_MARKER_FILE = ".damocles-sealing-location"  # written by sealing-init before damocles' marker
LOCK_FILE = ".damocles.lock"


def init_command(path: Path) -> str:
    return f"damocles-worker store sealing-init -l {path}"


def init_location(path: Path) -> Path:
    """Prepare a sealing thread location (idempotent): its folders and the marker file."""
    path = path.resolve()
    make_dirs(path / "data")
    make_dirs(path / "logs")
    if not (path / MARKER_FILE).exists():
        write_durably(path / MARKER_FILE, b"")  # empty, as damocles' (its Store::open wants a regular file)
    fsync_dir(path)
    return path


def location_problem(path: Path, what: str) -> str | None:
    """Why `path` cannot be used as a sealing thread location now, or None if it can."""
    fix = f"mount the sealing disk that holds it, or prepare a new location with `{init_command(path)}`"
    if not path.exists():
        return f"{what}: {path} does not exist. Fix: {fix}"
    if not path.is_dir():
        return f"{what}: {path} is not a directory. Fix: correct the location, or {fix}"
    if not any((path / name).is_file() for name in (MARKER_FILE, LEGACY_MARKER_FILE, DB_FILE)):
        return (f"{what}: {path} was not prepared by `store sealing-init` (an empty mount point of an "
                f"unmounted disk looks like this). Fix: {fix}")
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{what}: {path} is not writable by this user. Fix: check its owner and permissions"
    left = damocles_sector_files(path)
    if left:
        return (f"{what}: {path} holds files of a sector damocles-worker was sealing ({', '.join(left)}); its state "
                f"is in damocles' meta/ database, which this worker cannot continue, and sealing over it would "
                f"orphan that sector. Fix: let damocles-worker finish it, or abort it there (`damocles-worker "
                f"worker resume -i <thread> -s Aborted`), which empties {path / 'data'}")
    return None


# damocles-worker's per-sector scratch folders under `<location>/data/`, emptied after each sector
# (its Store::cleanup). Ours are `data/<sid>/` folders, so these names are damocles' alone.
DAMOCLES_DATA_DIRS = ("unsealed", "prepared", "cache", "sealed", "update", "update-cache")


def damocles_sector_files(location: Path) -> list[str]:
    """`data/<dir>/<entry>` paths a damocles-worker sector left in a location (none between sectors)."""
    found = []
    for name in DAMOCLES_DATA_DIRS:
        try:
            found += sorted(f"data/{name}/{entry}" for entry in os.listdir(location / "data" / name))
        except OSError:
            continue
    return found


def holder_of(lock_path: Path) -> str:
    """Who holds a lock, as written in its file: `pid 123 on host h (since ...)`."""
    try:
        info = json.loads(lock_path.read_text() or "{}")
        return f"pid {info['pid']} on host {info['host']} (since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its pid could not be read)"


class DirLock:
    """An exclusive lock on a directory for this process's lifetime (released by `release` or exit)."""

    def __init__(self, directory: Path, what: str):
        self.path = directory / LOCK_FILE
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> "DirLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(
                f"{self.what} {self.path.parent} is in use by another damocles-worker daemon: "
                f"{holder_of(self.path)}. Fix: stop that daemon first (kill -TERM <pid>), "
                f"or give this one its own config") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def lock_holder(directory: Path) -> str | None:
    """Who holds `directory`'s lock now, or None; takes no lock and creates nothing (for --check)."""
    path = directory / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return holder_of(path)
    finally:
        os.close(fd)  # also drops the shared lock probed above
