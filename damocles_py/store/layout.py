"""Where a sector's files live: in the sealing thread's location, and in a persist store.

Names follow damocles-worker: `s-t0<miner>-<number>`, with `sealed/`, `cache/`, `update/` and
`update-cache/` directories in persist stores.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

# Cache files proving needs after sealing (the rest of the cache is scratch).
PERSISTED_CACHE_GLOBS = ("p_aux", "t_aux", "sc-02-data-tree-r-last*.dat")
TREE_D_FILE = "sc-02-data-tree-d.dat"


@dataclass(frozen=True)
class SectorFiles:
    """A sector's scratch files inside a sealing thread location."""

    root: Path

    @property
    def staged(self) -> Path:
        return self.root / "staged"

    @property
    def sealed(self) -> Path:
        return self.root / "sealed"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def snap_staged(self) -> Path:
        return self.root / "snap-staged"

    @property
    def update(self) -> Path:
        return self.root / "update"

    @property
    def update_cache(self) -> Path:
        return self.root / "update-cache"

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def sector_files(location: Path, sector_name: str) -> SectorFiles:
    return SectorFiles(location / "data" / sector_name)


def sector_log_path(location: Path, sector_name: str) -> Path:
    return location / "logs" / f"{sector_name}.log"


@dataclass(frozen=True)
class PersistLayout:
    """A sector's files inside a persist store (`[[attached]]`)."""

    store_root: Path
    name: str

    @property
    def sealed(self) -> Path:
        return self.store_root / "sealed" / self.name

    @property
    def cache(self) -> Path:
        return self.store_root / "cache" / self.name

    @property
    def update(self) -> Path:
        return self.store_root / "update" / self.name

    @property
    def update_cache(self) -> Path:
        return self.store_root / "update-cache" / self.name


def copy_atomically(src: Path, dest: Path) -> None:
    """Copy a file so that `dest` either is complete or does not exist (crash-safe, idempotent)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.copyfile(src, tmp)
    tmp.replace(dest)


def persisted_cache_files(cache_dir: Path) -> list[Path]:
    return sorted(p for pattern in PERSISTED_CACHE_GLOBS for p in cache_dir.glob(pattern))
