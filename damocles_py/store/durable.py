"""Writes that survive a power cut: data and directory entries are fsynced before a file counts.

A rename is atomic but not durable until the directory holding it is fsynced; file data is not
durable until the file is. Persisted sector files are deleted from the sealing location once the
sector finishes, so the copy in the store must be on disk first, not in the page cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_CHUNK = 1 << 20


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """mkdir -p, with each new directory's entry fsynced in its parent."""
    missing = []
    for d in (directory, *directory.parents):
        if d.exists():
            break
        missing.append(d)
    directory.mkdir(parents=True, exist_ok=True)
    for d in reversed(missing):
        fsync_dir(d.parent)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _removed_on_failure(tmp: Path) -> Iterator[None]:
    """A half-written temporary file is removed: on a full disk it would hold the space freed for the retry."""
    try:
        yield
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _commit(tmp: Path, dest: Path) -> None:
    _fsync_file(tmp)
    tmp.replace(dest)
    fsync_dir(dest.parent)


def write_durably(dest: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a whole file atomically (complete or absent) and durably."""
    make_dirs(dest.parent)
    tmp = dest.with_name(f".{dest.name}.partial")
    with _removed_on_failure(tmp):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _commit(tmp, dest)


def copy_durably(src: Path, dest: Path) -> None:
    """Copy a file so that `dest` is complete or absent, and on disk once this returns."""
    make_dirs(dest.parent)
    tmp = dest.with_name(f".{dest.name}.partial")
    with _removed_on_failure(tmp):
        shutil.copyfile(src, tmp)
        _commit(tmp, dest)


def replace_durably(tmp: Path, dest: Path) -> None:
    """Move a finished file into place durably (data fsynced, then rename, then directory)."""
    _commit(tmp, dest)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def same_content(a: Path, b: Path) -> bool:
    """Byte-for-byte equal (sizes first, so a mismatch is usually found without reading)."""
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(_CHUNK), fb.read(_CHUNK)
            if ca != cb:
                return False
            if not ca:
                return True
