"""Where a sector's files live: in the sealing thread's location, and in a persist store.

Names follow damocles-worker: `s-t0<miner>-<number>`, with `sealed/`, `cache/`, `update/` and
`update-cache/` directories in persist stores.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from damocles_py.store.durable import copy_durably, same_content, write_durably

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
    """Copy a file so that `dest` either is complete or does not exist, and is on disk (fsynced)."""
    copy_durably(src, dest)


class StoreConflict(Exception):
    """A persist store holds different files under a sector's name that this sector job did not write."""


def job_token(job_root: Path) -> str:
    """A random name for one sector job, kept in its scratch folder (a new job starts a new folder).

    It marks the files the job persists, so that re-running its own persist (after a crash, or a
    rewind that re-seals with a new ticket) may replace them, and nothing else may be replaced.
    """
    path = job_root / "persist.job"
    if not path.is_file() or not path.read_text().strip():
        write_durably(path, secrets.token_hex(16).encode())
    return path.read_text().strip()


def persist_group(pairs: list[tuple[Path, Path]], token: str, replace: bool = False) -> None:
    """Copy (src, dest) pairs into a store durably; the first dest names the group's claim file.

    A dest that exists with other content is replaced only if this job wrote it (its token is in
    the claim file) or `replace` is set (a rebuild, whose output was checked against the chain);
    otherwise StoreConflict, and nothing is written. Identical files are left as they are.
    """
    first = pairs[0][1]
    claim = first.with_name(f".{first.name}.job")
    ours = replace or (claim.is_file() and claim.read_text().strip() == token)
    todo = [(src, dest) for src, dest in pairs if ours or not dest.exists() or not same_content(src, dest)]
    if not ours:
        taken = [dest for _, dest in todo if dest.exists()]
        if taken:
            raise StoreConflict(", ".join(map(str, taken)))
    write_durably(claim, token.encode())  # before the copies: a crash half-way leaves files we may replace
    for src, dest in todo:
        copy_durably(src, dest)


def persisted_cache_files(cache_dir: Path) -> list[Path]:
    return sorted(p for pattern in PERSISTED_CACHE_GLOBS for p in cache_dir.glob(pattern))


# ---------------------------------------------------------------------------------------------
# sectorstore.json: how damocles names a persist store on disk (damocles-rpc.md §5.3)

SECTORSTORE_JSON = "sectorstore.json"


@dataclass(frozen=True)
class SectorStoreJson:
    """What a worker reads from `<store>/sectorstore.json` (keys `ID`, `Name`, `ReadOnly`; the
    manager's other keys, Lotus' too, are its business)."""

    name: str | None  # `Name` if non-empty, else `ID` if non-empty
    readonly: bool | None


class SectorStoreJsonError(ValueError):
    """A sectorstore.json that is not what damocles writes (one line, naming the file)."""


def read_sectorstore_json(store: Path) -> SectorStoreJson | None:
    """`store`'s sectorstore.json, or None when it has none (a regular file is needed, as damocles)."""
    path = store / SECTORSTORE_JSON
    if not os.path.isfile(path):  # False for any OSError too: a store that cannot be read is refused elsewhere
        return None
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise SectorStoreJsonError(f"{path}: cannot be read as JSON ({e})") from None
    if not isinstance(data, dict):
        raise SectorStoreJsonError(f"{path}: expected a JSON object, got {type(data).__name__}")
    for key, kind in (("ID", str), ("Name", str), ("ReadOnly", bool)):
        if data.get(key) is not None and not isinstance(data[key], kind):
            raise SectorStoreJsonError(f"{path}: {key} must be a {'string' if kind is str else 'boolean'}, "
                                       f"got {json.dumps(data[key])}")
    return SectorStoreJson(name=data.get("Name") or data.get("ID") or None, readonly=data.get("ReadOnly"))


def sectorstore_json(name: str, readonly: bool = False, weight: int = 1) -> bytes:
    """The file `damocles-manager util storage gen-sectorstore-json` writes, tab-indented as Go's
    MarshalIndent, with `name` as ID and Name (read the same by damocles' worker and manager)."""
    doc = {"ID": name, "Name": name, "Path": "", "Meta": None, "Strict": True, "ReadOnly": readonly,
           "Weight": weight, "AllowMiners": [], "DenyMiners": [], "Plugin": "", "PluginName": ""}
    return json.dumps(doc, indent="\t").encode()
