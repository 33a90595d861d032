"""Several managers on one real PostgreSQL database (tests/pg.py starts the server).

Two `damocles-manager run --db postgresql://...` processes on their own ports serve eight client
threads at once through the real gRPC API: no sector number, deal, snap-up candidate or rebuild job
is handed out twice, and both managers answer the same. Also: one-line errors for a database that
cannot be used, and `db migrate|check`. (`db copy` of a farm that sealed a sector for real is in
test_embedded_manager.py, beside the sealed sector it copies.)
"""

from __future__ import annotations

import collections
import itertools
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from conftest import free_port, start_manager, wait_until

from damocles_py.manager.client import RemoteManager
from damocles_py.manager.db import CommitRecord, ManagerDB, PreCommitRecord, Submission
from damocles_py.manager.interface import AcquireDealsSpec, AllocateSpec, PreCommitInfo, SectorId, Ticket, WorkerRef
from damocles_py.manager.sql import parse_db
from damocles_py.proofs import SealProof

MINER = 1000
PROOF = SealProof.StackedDrg2KiBV1_1
THREADS = 8
ALLOCATIONS = 1000


def _manager_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "damocles_py.cli.manager", *args], capture_output=True, text=True,
                          timeout=timeout)


class Farm:
    """Two manager processes on one database, a client for each."""

    def __init__(self, tmp_path: Path, pg_url: str, pieces: Path):
        self.store = tmp_path / "store"
        self.store.mkdir()
        pieces.mkdir(exist_ok=True)
        self.ports = [free_port(), free_port()]
        self.procs = []
        for i, port in enumerate(self.ports):  # both scan the same pieces dir (whichever holds the lease)
            self.procs.append(start_manager(tmp_path / f"m{i}", port, self.store, "--db", pg_url,
                                            "--pieces-dir", str(pieces)))
        self.clients = [RemoteManager(f"127.0.0.1:{p}", timeout=60) for p in self.ports]

    def close(self) -> None:
        for c in self.clients:
            c.close()
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def farm(tmp_path, pg_url):
    f = Farm(tmp_path, pg_url, tmp_path / "pieces")
    yield f
    f.close()


def _workers():
    """A new worker thread identity per call (a thread that holds a job is handed the same one again)."""
    counter = itertools.count()
    lock = threading.Lock()

    def next_worker(client_index: int) -> WorkerRef:
        with lock:
            n = next(counter)
        return WorkerRef(f"client-{client_index}", n, f"/sealing/{n}")
    return next_worker


def _in_threads(farm: Farm, calls: int, call) -> list:
    """`call(client, manager_index, thread_index)` `calls` times from THREADS threads, alternating
    managers; every answer (None ones too)."""
    per_thread = calls // THREADS

    def run(t: int) -> list:
        return [((t + i) % 2, call(farm.clients[(t + i) % 2], t)) for i in range(per_thread)]
    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(run, range(THREADS)))
    return [answer for per in results for answer in per]


def test_two_managers_hand_out_every_sector_number_once(farm):
    worker = _workers()
    answers = _in_threads(farm, ALLOCATIONS, lambda c, t: c.allocate_sector(AllocateSpec(), worker(t)))
    numbers = [a.id.number for _, a in answers]
    assert sorted(numbers) == list(range(1, ALLOCATIONS + 1))  # every number once, none skipped
    by_manager = collections.Counter(m for m, _ in answers)
    assert by_manager[0] == by_manager[1] == ALLOCATIONS // 2
    # both answer the same about any sector: the state is the database's
    for number in (1, ALLOCATIONS // 2, ALLOCATIONS):
        a, b = (c.sector_debug(SectorId(MINER, number)) for c in farm.clients)
        assert a.record == b.record and a.epoch in (b.epoch, b.epoch - 1, b.epoch + 1)


def _write_pieces(directory: Path, count: int) -> None:
    for i in range(count):
        (directory / f"piece-{i:04d}").write_bytes(os.urandom(100 + i % 27))


def test_two_managers_hand_out_every_deal_once(farm, tmp_path):
    _write_pieces(tmp_path / "pieces", ALLOCATIONS)
    print(f"\ncomputing commP of {ALLOCATIONS} piece files...")
    imported = farm.clients[0].import_pieces()
    assert len(imported) == ALLOCATIONS or len(farm.clients[1].deals()) == ALLOCATIONS
    worker = _workers()
    one = AcquireDealsSpec(max_deals=1)

    def allocate_with_deal(client: RemoteManager, t: int):
        sector = client.allocate_sector(AllocateSpec(), worker(t))
        return sector.id, client.acquire_deals(sector.id, one)

    answers = _in_threads(farm, ALLOCATIONS, allocate_with_deal)
    handed = [d.deal_id for _, (_, deals) in answers for d in deals]
    assert len(handed) == len(set(handed)), "a deal went to two sectors"
    assert len(handed) == ALLOCATIONS  # none left behind: a deal being taken is skipped, not lost
    records = {r.deal.deal_id: r.sector for r in farm.clients[1].deals()}
    for _, (sector, deals) in answers:
        for d in deals:
            assert records[d.deal_id] == sector


def _record_sealed_sectors(url: str, count: int) -> list[SectorId]:
    """Sectors as a farm that sealed them has them recorded (proof accepted, persisted, finished)."""
    db = ManagerDB(parse_db(url))
    ids = []
    try:
        with db.transaction() as tx:
            for _ in range(count):
                sector = SectorId(MINER, tx.next_sector_number(MINER))
                tx.insert_sector(sector, PROOF, WorkerRef("sealer", 0, "/sealing/0"), 1.0)
                ticket = Ticket(bytes(32), 1)
                tx.set_pre_commit(sector, PreCommitRecord(PreCommitInfo(bytes(range(32)), bytes(32), ticket),
                                                          Submission.Accepted, 2, None))
                tx.set_commit(sector, CommitRecord(b"proof", Submission.Accepted, 3, None))
                tx.set_store(sector, "persist-a")
                tx.mark_finished(sector)
                ids.append(sector)
    finally:
        db.close()
    return ids


def test_two_managers_hand_out_every_snapup_candidate_and_rebuild_job_once(farm, tmp_path, pg_url):
    candidates = 400
    sealed = _record_sealed_sectors(pg_url, candidates + 200)
    to_snap, to_rebuild = sealed[:candidates], sealed[candidates:]
    _write_pieces(tmp_path / "pieces", candidates)
    print(f"\ncomputing commP of {candidates} piece files...")
    farm.clients[1].import_pieces()
    for i, sector in enumerate(to_rebuild):
        farm.clients[i % 2].request_rebuild(sector)
    worker = _workers()
    one = AcquireDealsSpec(max_deals=1)

    snaps = _in_threads(farm, candidates + 2 * THREADS,  # more asks than candidates: the last ones get none
                        lambda c, t: c.allocate_snapup_sector(AllocateSpec(), one, worker(t)))
    taken = [s for _, s in snaps if s is not None]
    assert sorted(s.sector.id.number for s in taken) == [s.number for s in to_snap]  # each once
    deals = [d.deal_id for s in taken for d in s.deals]
    assert len(deals) == len(set(deals)) == candidates

    jobs = _in_threads(farm, len(to_rebuild) + 2 * THREADS,
                       lambda c, t: c.allocate_rebuild_sector(AllocateSpec(), worker(t)))
    rebuilt = [j.sector.id for _, j in jobs if j is not None]
    assert sorted(s.number for s in rebuilt) == [s.number for s in to_rebuild]


def test_a_manager_on_an_unusable_database_says_why_in_one_line(tmp_path, pg_server, pg_url):
    state = tmp_path / "state"
    common = ["run", "--state-dir", str(state), "--listen", f"127.0.0.1:{free_port()}", "--no-auth"]
    port = pg_server.port
    cases = {
        "wrong password": (pg_server.url(pg_url.rsplit("/", 1)[1], password="nope"), "wrong password"),
        "unreachable": (f"postgresql://damocles:pw@127.0.0.1:{free_port()}/x", "cannot reach PostgreSQL"),
        "no database": (pg_server.url("no_such_db"), "has no database 'no_such_db'"),
        "a sqlite path": (str(tmp_path / "manager.sqlite3"), "is a path, not a database URL"),
        "another scheme": ("mysql://u:p@h/db", "'mysql' databases are not supported"),
    }
    for what, (url, expected) in cases.items():
        for args in (common + ["--db", url], ["db", "check" if len(what) % 2 else "migrate", "--db", url]):
            out = _manager_cli(*args)
            assert out.returncode == 2, (what, args, out.stderr)
            lines = out.stderr.strip().splitlines()
            assert len(lines) == 1 and expected in lines[0] and "Traceback" not in out.stderr, (what, out.stderr)
            assert "nope" not in out.stderr  # a password is never printed

    # a PostgreSQL database holding something else, and one of a newer schema: refused, unchanged
    other = pg_server.url("t_other")
    pg_server.admin("CREATE DATABASE t_other OWNER damocles")
    try:
        with psycopg.connect(other, autocommit=True) as conn:
            conn.execute("CREATE TABLE accounts (id int)")
        for args in (common + ["--db", other], ["db", "migrate", "--db", other]):
            out = _manager_cli(*args)
            assert out.returncode == 2 and "is not a damocles manager database" in out.stderr, out.stderr
        with psycopg.connect(other) as conn:
            assert [r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables WHERE "
                                               "table_schema = 'public'")] == ["accounts"]
    finally:
        pg_server.admin("DROP DATABASE t_other WITH (FORCE)")

    assert "is empty" in _manager_cli("db", "check", "--db", pg_url).stdout
    migrated = _manager_cli("db", "migrate", "--db", pg_url)
    assert migrated.returncode == 0 and "-> 4" in migrated.stdout, migrated.stderr
    assert "nothing to do" in _manager_cli("db", "migrate", "--db", pg_url).stdout
    assert "schema version 4, 0 sectors, 0 deals" in _manager_cli("db", "check", "--db", pg_url).stdout
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    for args in (common + ["--db", pg_url], ["db", "check", "--db", pg_url], ["db", "migrate", "--db", pg_url]):
        out = _manager_cli(*args)
        assert out.returncode == 2 and "has schema version 99; this manager knows up to 4" in out.stderr, out.stderr
    assert not state.exists() or not (state / "manager.sqlite3").exists()  # the SQLite default was not touched


def test_the_embedded_manager_takes_its_database_from_sealing_toml(tmp_path, pg_url):
    from conftest import write_config

    from damocles_py.config.load import ConfigError, load_config
    from damocles_py.manager.embedded import EmbeddedManager

    for bad, expected in (("/var/lib/manager.sqlite3", "is a path, not a database URL"),
                          ("mysql://u:p@h/db", "'mysql' databases are not supported")):
        root = tmp_path / f"bad-{len(bad)}"
        root.mkdir()
        with pytest.raises(ConfigError) as e:
            load_config(write_config(root, embedded={"db": bad}))
        text = str(e.value)
        assert "sector_manager.embedded.db" in text and expected in text and len(text.splitlines()) == 1, text

    root = tmp_path / "good"
    root.mkdir()
    config = load_config(write_config(root, embedded={"db": pg_url})).sector_manager.embedded
    assert config.db == pg_url
    first = EmbeddedManager(config, [], piece_scan_interval=None)
    second = EmbeddedManager(config, [], piece_scan_interval=None)  # a second process would see the same
    try:
        worker = WorkerRef("w", 0, "/s/0")
        a = first.allocate_sector(AllocateSpec(), worker)
        assert second.allocate_sector(AllocateSpec(), worker) == a  # the same thread holds it: the same sector
        assert second.chain.genesis == first.chain.genesis
        assert not (Path(config.state_dir) / "manager.sqlite3").exists()  # nothing went to SQLite
    finally:
        first.close()
        second.close()


def test_a_periodic_job_runs_in_one_manager_at_a_time(pg_url, tmp_path):
    """The pieces-dir scan's lease: one holder until it expires or is given back (on both backends)."""
    for url in (pg_url, f"sqlite:{tmp_path}"):
        a, b = ManagerDB(parse_db(url)), ManagerDB(parse_db(url))
        try:
            with a.transaction() as tx:
                assert tx.take_lease("piece-scan", "manager-a", now=100.0, seconds=30)
            with b.transaction() as tx:
                assert not tx.take_lease("piece-scan", "manager-b", now=110.0, seconds=30)  # a holds it
            with a.transaction() as tx:
                assert tx.take_lease("piece-scan", "manager-a", now=120.0, seconds=30)  # renewed to 150
            with b.transaction() as tx:
                assert not tx.take_lease("piece-scan", "manager-b", now=140.0, seconds=30)
                assert tx.take_lease("piece-scan", "manager-b", now=151.0, seconds=30)  # a went silent
            with b.transaction() as tx:
                tx.release_lease("piece-scan", "manager-b")
            with a.transaction() as tx:
                assert tx.take_lease("piece-scan", "manager-a", now=152.0, seconds=30)  # given back: free
        finally:
            a.close()
            b.close()
