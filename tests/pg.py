"""A real PostgreSQL server for the tests, from Debian's `postgresql` package.

`pg_server` (session scope) runs `initdb` into a temporary directory as an unprivileged user (the
server refuses to run as root, and CI runs as root: the user `damocles-pg` is created then),
starts it on a free loopback port with its socket in that directory, and creates a login with a
password. `pg_url` (per test) is a new, empty database on it owned by that login:

    def test_x(pg_url):            # "postgresql://damocles:...@127.0.0.1:PORT/t3"
        db = ManagerDB(parse_db(pg_url))

Without the PostgreSQL binaries the tests using them are skipped, saying why.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_USER = "damocles"
PG_PASSWORD = "s3cret-pw"
OS_USER = "damocles-pg"  # runs the server when the tests run as root


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    bin: Path
    root: Path
    port: int
    run_as: list[str]  # the command prefix running a program as the server's user

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def url(self, dbname: str, password: str = PG_PASSWORD) -> str:
        return f"postgresql://{PG_USER}:{password}@127.0.0.1:{self.port}/{dbname}"

    def admin(self, sql: str) -> None:
        """Run `sql` as the superuser (over the unix socket)."""
        subprocess.run([*self.run_as, str(self.bin / "psql"), "-h", str(self.socket_dir), "-p", str(self.port),
                        "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql],
                       check=True, capture_output=True, timeout=60)

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.run_as, str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), *args],
                              capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=200 -c shared_buffers=16MB")
        started = self.ctl("-l", str(self.root / "server.log"), "-o", options, "-w", "-t", "60", "start")
        if started.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl start failed: {started.stderr}\n{log}")

    def stop(self) -> None:
        self.ctl("-m", "fast", "-w", "stop")


def _run_as_prefix() -> list[str]:
    if os.geteuid() != 0:
        return []
    if subprocess.run(["id", "-u", OS_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OS_USER],
                       check=True, capture_output=True)
    return ["runuser", "-u", OS_USER, "--"]


def start_pg_server() -> PgServer:
    """initdb, start and create the test login; the caller stops it (`stop`) and removes `root`."""
    bin_dir = pg_bin()
    if bin_dir is None:
        raise FileNotFoundError("no /usr/lib/postgresql/*/bin/initdb")
    run_as = _run_as_prefix()
    root = Path(tempfile.mkdtemp(prefix="damocles-pg-"))
    os.chmod(root, 0o755)
    (root / "sock").mkdir()
    if run_as:
        shutil.chown(root, OS_USER)
        shutil.chown(root / "sock", OS_USER)
    subprocess.run([*run_as, str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", "postgres", "--no-sync",
                    "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C"],
                   check=True, capture_output=True, timeout=180)
    server = PgServer(bin_dir, root, _free_port(), run_as)
    server.start()
    server.admin(f"CREATE ROLE {PG_USER} LOGIN PASSWORD '{PG_PASSWORD}'")
    return server


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the whole session (skips, saying why, where it cannot run)."""
    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                    "apt-get install postgresql, or run scripts/install.sh")
    print("\nstarting a PostgreSQL server for the tests (initdb + pg_ctl start)...")
    server = start_pg_server()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


_names = itertools.count(1)


@pytest.fixture
def pg_url(pg_server):
    """A new, empty database for one test; its URL (password auth over TCP on loopback)."""
    name = f"t{os.getpid()}_{next(_names)}"
    pg_server.admin(f"CREATE DATABASE {name} OWNER {PG_USER}")
    yield pg_server.url(name)
    pg_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
