"""Groth parameter files: where they live, which a proof needs, generating and verifying them.

The library reads its settings (FIL_PROOFS_PARAMETER_CACHE, FIL_PROOFS_PARENT_CACHE) once per
process, so `configure_environment` runs when `damocles_py.proofs` is imported, before any call.
The default cache is a stable directory outside the clone, shared by builds and CI runs.
"""

from __future__ import annotations

import enum
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from damocles_py import _core
from damocles_py.proofs.errors import ParametersMissing
from damocles_py.proofs.types import SectorSize

PARAMS_VERSION = 28
# Sizes whose parameters a 2-core machine can generate in minutes (a local trusted setup).
TEST_SIZES = (SectorSize(2 << 10), SectorSize(8 << 20))


def cache_root() -> Path:
    """Root of damocles-py's stable caches (parameters, parent cache, static trees)."""
    return Path(os.environ.get("DAMOCLES_PY_CACHE", Path.home() / ".cache" / "damocles-py"))


def configure_environment() -> None:
    os.environ.setdefault(
        "FIL_PROOFS_PARAMETER_CACHE", str(cache_root() / "filecoin-proof-parameters")
    )
    os.environ.setdefault("FIL_PROOFS_PARENT_CACHE", str(cache_root() / "filecoin-parents"))


def param_dir() -> Path:
    return Path(os.environ["FIL_PROOFS_PARAMETER_CACHE"])


class Circuit(enum.Enum):
    PoRep = "porep"  # C2 and verify_seal
    Update = "update"  # snap prove and snap verify


@dataclass(frozen=True)
class ParamFile:
    circuit: Circuit
    sector_size: SectorSize
    name: str
    path: Path

    @property
    def present(self) -> bool:
        return self.path.is_file() and self.path.stat().st_size > 0


def files_for(circuit: Circuit, sector_size: SectorSize) -> list[ParamFile]:
    """The `.params` and `.vk` files a circuit of this size needs."""
    ident = _core.param_identifier(circuit.value, int(sector_size))
    names = [f"v{PARAMS_VERSION}-{ident}.params", f"v{PARAMS_VERSION}-{ident}.vk"]
    return [ParamFile(circuit, sector_size, n, param_dir() / n) for n in names]


def generate_command(sector_size: SectorSize) -> str:
    return f"damocles-worker params generate --sector-size {sector_size}"


def require(circuit: Circuit, sector_size: SectorSize, what: str, need_params: bool = True) -> None:
    """Raise ParametersMissing (with the command that fixes it) if a proof cannot run."""
    files = files_for(circuit, sector_size)
    if not need_params:
        files = [f for f in files if f.name.endswith(".vk")]
    missing = [f.name for f in files if not f.present]
    if missing:
        raise ParametersMissing(what, missing, str(param_dir()), generate_command(sector_size))


def generate(sector_size: SectorSize, circuits: tuple[Circuit, ...] = tuple(Circuit)) -> list[ParamFile]:
    """Generate missing parameters for `sector_size`. Idempotent and safe when processes race.

    Generation runs in a child process whose parameter cache is a private temporary directory;
    finished files are renamed into the cache, `.params` before `.vk`. A crash therefore never
    leaves a half-written file under a real name, and a lock serialises concurrent generators.
    """
    out: list[ParamFile] = []
    cache = param_dir()
    cache.mkdir(parents=True, exist_ok=True)
    for circuit in circuits:
        files = files_for(circuit, sector_size)
        out.extend(files)
        if all(f.present for f in files):
            continue
        lock_path = cache / f".generate-{circuit.value}-{int(sector_size)}.lock"
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if all(f.present for f in files):
                continue  # another process generated them while we waited
            tmp = cache / f".tmp-{circuit.value}-{int(sector_size)}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                env = dict(os.environ, FIL_PROOFS_PARAMETER_CACHE=str(tmp))
                _run_with_progress(
                    [sys.executable, "-m", "damocles_py.proofs._generate", circuit.value, str(int(sector_size))],
                    env, f"{circuit.name} parameters for {sector_size} sectors",
                )
                for suffix in (".meta", ".params", ".vk"):
                    for produced in tmp.glob(f"*{suffix}"):
                        os.replace(produced, cache / produced.name)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return out


# Minutes a local trusted setup takes on a 2-core machine, to tell the operator what to expect.
_EXPECTED_MINUTES = {SectorSize(2 << 10): 10, SectorSize(8 << 20): 25}
PROGRESS_EVERY = 30.0  # seconds between "still generating" lines


def _run_with_progress(cmd: list[str], env: dict[str, str], what: str) -> None:
    """Run a generator child, saying what it does and how long it has run (it is silent for minutes)."""
    expected = _EXPECTED_MINUTES.get(SectorSize(int(cmd[-1])))
    hint = f" (about {expected} min on 2 cores; done once, cached in {param_dir()})" if expected else ""
    print(f"generating {what}{hint}", file=sys.stderr, flush=True)
    start = time.monotonic()
    child = subprocess.Popen(cmd, env=env)
    while True:
        try:
            rc = child.wait(timeout=PROGRESS_EVERY)
            break
        except subprocess.TimeoutExpired:
            print(f"  still generating {what}: {time.monotonic() - start:.0f} s so far", file=sys.stderr, flush=True)
        except BaseException:
            child.kill()
            child.wait()
            raise
    if rc != 0:
        raise subprocess.CalledProcessError(rc, cmd)
    print(f"  {what}: done in {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ManifestCheck:
    name: str
    status: str  # "official", "differs" (e.g. a local trusted setup), "not-in-manifest"


def manifest() -> dict[str, dict]:
    """The official parameters.json manifest that storage-proofs-core ships."""
    return json.loads(_core.params_manifest())


def verify_against_manifest(paths: list[Path]) -> list[ManifestCheck]:
    """Check files against the official manifest's blake2b digests (as the library does)."""
    entries = manifest()
    results = []
    for path in paths:
        entry = entries.get(path.name)
        if entry is None:
            results.append(ManifestCheck(path.name, "not-in-manifest"))
            continue
        h = hashlib.blake2b()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        status = "official" if h.hexdigest()[:32] == entry["digest"] else "differs"
        results.append(ManifestCheck(path.name, status))
    return results
