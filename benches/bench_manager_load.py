"""Manager load: a simulated farm drives real `damocles-manager run` processes over gRPC.

    nice -n 10 python benches/bench_manager_load.py [--configs sqlite,pg1,pg2] [--threads 50,500]
        [--duration 30] [--warmup 5] [--think 1.0] [--samples 2] [--cache DIR]

What runs: 1 or 2 real manager processes (`damocles-manager run`, started as the tests start them,
chain block time 0.2 s) on SQLite or on one PostgreSQL database (`--db`), and, in a separate client
process, N simulated sealing threads grouped into worker boxes of 10 threads; each box has one
`RemoteManager` (the worker's real gRPC client), boxes are spread over the managers. Every thread
makes the manager calls of a sealer sector's life in the order `fsm/handlers/sealer.py` and the
thread runtime make them: allocate, report_state after every transition (16 for a sealed
sector), acquire_deals, assign_ticket, submit_pre_commit, poll_pre_commit_state until landed,
reserve_store, submit_persisted, wait_seed until the seed, submit_proof, and the final report. The sealing stages
themselves take no time, so the manager sees a farm running ~450x faster than a 32GiB one.

Two modes per configuration and thread count:
- saturated: each thread makes its next call as soon as the last one answers (polls wait 0.1 s):
  the calls per second the configuration can serve (its capacity);
- paced: each thread waits `--think` seconds (0.5x-1.5x, random) after every call, so N threads
  offer about N/think calls per second: the latency a farm of that rate sees. "Served" means
  p99 < 100 ms and no call failed.
Threads start at random times over the warm-up (paced: 30 calls' worth), so that, as in a farm,
they are spread over a sector's life rather than in step; only calls started after it are counted.
Farm size served with room = half the saturated rate / (40 calls per 32GiB sector / 5 h).
Client CPU (the simulator, one process) is measured and printed beside the managers' and the
database's, to show the client is not what limits the rate.

Proofs. The manager verifies every submitted seal proof for real (`verify_seal` against the
sector's comm_r, comm_d, ticket and seed, which are tied to its number), so a proof is valid for
one sector only, and a 2KiB C2 costs ~1 CPU minute: a valid proof for each of thousands of
simulated sectors is out of reach. So:
- a sample of `--samples` sectors is sealed for real once (PC1, PC2, C1, C2 on a real replica,
  against a manager of the same chain settings; cached in `--cache`), its state copied into each
  configuration's database (SQLite: the file; PostgreSQL: `damocles-manager db copy`); in the
  first run of each configuration those sectors submit their real proofs, which the manager
  verifies and accepts; they then poll until the proof lands and report finalized;
- every other sector submits a real, well-formed proof of a sample sector: the manager runs the
  same full verification (same cost: measured and printed at the start) and rejects it, as it must
  for the wrong sector. Those sectors then report the abort (report_state to Aborted,
  report_aborted) instead of polling the proof and reporting finalized, the one place where their
  call mix differs from a sealed sector's. Their comm_r is a random field element, their comm_d the
  real CC comm_d (which the manager checks), and the files submit_persisted checks are real
  (empty) files in the store.
Nothing is mocked: every call crosses gRPC into the manager and its database.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from damocles_py import proofs  # noqa: E402
from damocles_py.manager.client import RemoteManager  # noqa: E402
from damocles_py.manager.embedded import persisted_files  # noqa: E402
from damocles_py.manager.interface import (  # noqa: E402
    AcquireDealsSpec,
    AllocateSpec,
    OnChainState,
    PreCommitInfo,
    SectorId,
    StateReport,
    SubmitResult,
    WorkerRef,
)

STORE = "persist-a"
BOX_THREADS = 10  # simulated threads per worker box (one gRPC client each)
POLL = 0.1  # seconds between polls of the chain (the tests' block time is 0.2 s)
CALLS_PER_SECTOR = 40  # a 32GiB sector's calls, issue 10
SECTOR_HOURS = 5.0  # 4 to 6 hours per 32GiB sector
ROOM = 0.5  # "with room": plan a farm at half the measured capacity
TARGET_P99_MS = 100.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr if _IN_CLIENT else sys.stdout, flush=True)


_IN_CLIENT = False


# =============================================================================================
# the client process: simulated sealing threads


@dataclass(frozen=True)
class Sample:
    number: int
    thread: int
    proof: bytes


class Recorder:
    """Per-thread call records: (name, start, seconds, ok)."""

    def __init__(self):
        self.rows: list[tuple[str, float, float, bool]] = []

    def call(self, name: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            out = fn(*args, **kwargs)
        except Exception:
            self.rows.append((name, t0, time.perf_counter() - t0, False))
            raise
        self.rows.append((name, t0, time.perf_counter() - t0, True))
        return out


class SimThread(threading.Thread):
    def __init__(self, mgr: RemoteManager, ref: WorkerRef, spec: dict, stop: threading.Event,
                 sample: Sample | None, window_start: float):
        super().__init__(daemon=True)
        self.mgr, self.ref, self.spec, self.stop_ev = mgr, ref, spec, stop
        self.sample, self.window_start = sample, window_start
        self.rec = Recorder()
        self.think = spec["think"]
        self.store = Path(spec["store"])
        self.wrong_proof = bytes.fromhex(spec["wrong_proof"])
        self.comm_d = bytes.fromhex(spec["cc_comm_d"])
        self.rng = random.Random(hash((ref.instance, ref.thread)))
        self.sample_ok: bool | None = None
        self.failures = 0
        self.current: SectorId | None = None  # the sector of the life in progress

    # one call, then the pause of the mode (saturated: none)
    def c(self, name: str, fn, *args, **kwargs):
        if self.stop_ev.is_set():
            raise _Stop()
        out = self.rec.call(name, fn, *args, **kwargs)
        if self.think:
            self.stop_ev.wait(self.think * self.rng.uniform(0.5, 1.5))
        return out

    def report(self, sector: SectorId, prev: str, nxt: str, event: str, **failure) -> None:
        resp = self.c("report_state", self.mgr.report_state, sector,
                      StateReport(self.ref, prev, nxt, event, **failure))
        if resp.finalized:
            raise RuntimeError(f"manager abandoned {sector}: {resp.abort_reason}")

    def poll(self, name: str, fn, sector) -> None:
        while True:
            status = self.c(name, fn, sector)
            if status.state is OnChainState.Landed:
                return
            if status.state is not OnChainState.Pending:
                raise RuntimeError(f"{name} {sector}: {status.state.name} {status.desc}")
            if self.stop_ev.wait(POLL):
                raise _Stop()

    def run(self) -> None:
        try:
            if self.sample is not None:
                self.stop_ev.wait(max(0.0, self.window_start - time.perf_counter() + 2.0))
                try:
                    self.sample_tail()
                except Exception as e:  # _Stop included: the sample did not finish in the window
                    self.sample_ok = False
                    log(f"  sample sector {self.sample.number}: {type(e).__name__}: {e}")
            else:  # a farm's threads are at every point of a sector's life, not in step
                self.stop_ev.wait(self.rng.uniform(0, self.spec["warmup"]))
            while not self.stop_ev.is_set():
                try:
                    self.life()
                except _Stop:
                    return
                except Exception as e:  # counted as an error call; a new sector after a pause
                    self.failures += 1
                    if self.failures <= 3:
                        log(f"  {self.ref.instance}/{self.ref.thread}: {type(e).__name__}: {e}")
                    self.give_up()
                    self.stop_ev.wait(0.5)
        except _Stop:
            return

    def give_up(self) -> None:
        """Abandon the sector a failed life held, as a worker would, so the next allocation is new."""
        if self.current is not None:
            try:
                self.mgr.report_aborted(self.current, "bench: a call failed", worker=self.ref)
            except Exception:
                pass
            self.current = None

    def sample_tail(self) -> None:
        """A really sealed sector, at C2Done: its real proof, verified and accepted by the manager."""
        sid = SectorId(self.spec["miner"], self.sample.number)
        resp = self.c("submit_proof (real proof)", self.mgr.submit_proof, sid, self.sample.proof, False)
        if resp.result is not SubmitResult.Accepted:
            self.sample_ok = False
            log(f"  sample sector {sid}: proof {resp.result.name}: {resp.desc}")
            return
        self.report(sid, "C2Done", "ProofSubmitted", "SubmitProof")
        self.poll("poll_proof_state", self.mgr.poll_proof_state, sid)
        self.report(sid, "ProofSubmitted", "Finished", "Finish")
        self.c("report_finalized", self.mgr.report_finalized, sid, worker=self.ref)
        self.sample_ok = True

    def life(self) -> None:
        m = self.mgr
        a = self.c("allocate_sector", m.allocate_sector, AllocateSpec(), self.ref)
        if a is None:
            raise RuntimeError("no sector allocated")
        s = self.current = a.id
        self.report(s, "Empty", "Allocated", "Allocate")
        self.c("acquire_deals", m.acquire_deals, s, AcquireDealsSpec())
        self.report(s, "Allocated", "DealsAcquired", "AcquireDeals")
        self.report(s, "DealsAcquired", "PieceAdded", "AddPiece")
        self.report(s, "PieceAdded", "TreeDBuilt", "BuildTreeD")
        ticket = self.c("assign_ticket", m.assign_ticket, s)
        self.report(s, "TreeDBuilt", "TicketAssigned", "AssignTicket")
        self.report(s, "TicketAssigned", "PC1Done", "PC1")
        self.report(s, "PC1Done", "PC2Done", "PC2")
        comm_r = bytearray(self.rng.randbytes(32))
        comm_r[31] &= 0x3F  # a valid field element (< 2^254), as a real comm_r is
        resp = self.c("submit_pre_commit", m.submit_pre_commit, a, PreCommitInfo(bytes(comm_r), self.comm_d, ticket),
                      False)
        if resp.result is not SubmitResult.Accepted:
            raise RuntimeError(f"pre-commit of {s}: {resp.result.name} {resp.desc}")
        self.report(s, "PC2Done", "PCSubmitted", "SubmitPC")
        self.poll("poll_pre_commit_state", m.poll_pre_commit_state, s)
        self.report(s, "PCSubmitted", "PCLanded", "CheckPC")
        store = self.c("reserve_store", m.reserve_store, s, 2 * 2048, [STORE])
        replica, cache = persisted_files(self.store, s, False)  # what submit_persisted looks for
        replica.touch()
        cache.mkdir(exist_ok=True)
        (cache / "p_aux").touch()
        self.report(s, "PCLanded", "Persisted", "Persist")
        if not self.c("submit_persisted", m.submit_persisted, s, store, False):
            raise RuntimeError(f"submit_persisted {s}: refused")
        self.report(s, "Persisted", "PersistanceSubmitted", "SubmitPersistance")
        while True:
            wait = self.c("wait_seed", m.wait_seed, a)
            if wait.seed is not None:
                break
            if self.stop_ev.wait(max(0.05, min(wait.delay_seconds, POLL))):
                raise _Stop()
        self.report(s, "PersistanceSubmitted", "SeedAssigned", "AssignSeed")
        self.report(s, "SeedAssigned", "C1Done", "C1")
        self.report(s, "C1Done", "C2Done", "C2")
        # A well-formed proof of another sector: fully verified, and rejected.
        resp = self.c("submit_proof (verified, rejected)", m.submit_proof, s, self.wrong_proof, False)
        if resp.result is not SubmitResult.Rejected:
            raise RuntimeError(f"a proof of another sector was not rejected for {s}: {resp.result.name}")
        self.report(s, "C2Done", "Aborted", "Abort", failure_level="permanent", failure_cause="ProofRejected",
                    failure_desc=resp.desc)
        self.c("report_aborted", m.report_aborted, s, "bench: simulated sector (no real proof)", worker=self.ref)
        self.current = None


class _Stop(Exception):
    pass


def _proc_cpu(pids: list[int], with_children: bool = False) -> float:
    """CPU seconds (user + system) used so far by these processes (and their live children)."""
    tick = os.sysconf("SC_CLK_TCK")
    wanted = set(pids)
    if with_children:
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) in pids:
                wanted.add(int(Path(stat).parent.name))
    total = 0.0
    for pid in wanted:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _cpu_pressure() -> float:
    """Seconds so far in which some runnable task waited for a CPU (Linux PSI; 0 if unavailable)."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return int(some.rsplit("total=", 1)[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return 0.0


def _own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def client_main(spec: dict) -> dict:
    """Run the simulated threads for warmup + duration; the steady window's statistics."""
    n, addrs = spec["threads"], spec["addrs"]
    boxes = [RemoteManager(addrs[b % len(addrs)], timeout=60, token_file=spec["token_file"])
             for b in range((n + BOX_THREADS - 1) // BOX_THREADS)]
    samples = [Sample(s["number"], s["thread"], bytes.fromhex(s["proof"])) for s in spec["samples"]]
    stop = threading.Event()
    t_start = time.perf_counter()
    window_start = t_start + spec["warmup"]
    window_end = window_start + spec["duration"]
    threads = []
    for i in range(n):
        sample = samples[i] if i < len(samples) else None
        # a sample sector is held by the thread that sealed it: that thread's name
        ref = (WorkerRef("bench-sample", sample.thread) if sample else
               WorkerRef(f"{spec['run']}-box{i // BOX_THREADS}", i % BOX_THREADS))
        threads.append(SimThread(boxes[i // BOX_THREADS], ref, spec, stop, sample, window_start))
    for t in threads:
        t.start()
    cpu0 = None
    next_progress = t_start + 10
    while True:
        now = time.perf_counter()
        if cpu0 is None and now >= window_start:
            cpu0 = (_own_cpu(), _proc_cpu(spec["manager_pids"]), _proc_cpu(spec["db_pids"], True), _cpu_pressure())
        if now >= window_end:
            break
        if now >= next_progress:
            done = sum(len(t.rec.rows) for t in threads)
            log(f"    t={now - t_start:4.0f}s  {done} calls so far")
            next_progress += 10
        time.sleep(min(0.2, window_end - now))
    cpu1 = (_own_cpu(), _proc_cpu(spec["manager_pids"]), _proc_cpu(spec["db_pids"], True), _cpu_pressure())
    load = os.getloadavg()[0]
    stop.set()
    for t in threads:
        t.join(timeout=90)
    for b in boxes:
        b.close()

    per_call: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    for t in threads:
        for name, start, secs, ok in t.rec.rows:
            if not (window_start <= start < window_end):
                continue
            if ok:
                per_call.setdefault(name, []).append(secs)
            else:
                errors[name] = errors.get(name, 0) + 1
    dur = spec["duration"]
    return {
        "per_call": {k: _stats(v, dur) for k, v in sorted(per_call.items())},
        "overall": _stats([x for v in per_call.values() for x in v], dur),
        "errors": errors,
        "cpu": {"client": (cpu1[0] - cpu0[0]) / dur, "managers": (cpu1[1] - cpu0[1]) / dur,
                "database": (cpu1[2] - cpu0[2]) / dur,
                # the machine: share of the window in which some task waited for a CPU, load average
                "pressure": (cpu1[3] - cpu0[3]) / dur, "load": load},
        "samples": [t.sample_ok for t in threads if t.sample is not None],
        "think": spec["think"],
    }


def _stats(lat: list[float], dur: float) -> dict:
    if not lat:
        return {"count": 0, "rate": 0.0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    lat = sorted(lat)
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000  # noqa: E731
    return {"count": len(lat), "rate": len(lat) / dur, "p50": q(0.50), "p99": q(0.99), "max": lat[-1] * 1000}


# =============================================================================================
# the orchestrator: sample proofs, PostgreSQL, managers, runs, the report


def seal_samples(cache: Path, k: int) -> tuple[list[dict], Path]:
    """`k` sectors sealed for real against a manager, stopped at C2Done with their proofs.

    Returns the samples and the manager state dir holding them (cached: the C2s run once)."""
    from conftest import free_port, start_manager

    meta = cache / "samples.json"
    state = cache / "manager-state"
    if meta.exists():
        samples = json.loads(meta.read_text())
        if len(samples) >= k:
            log(f"proof sample: {len(samples)} really sealed sectors from {cache} (cached)")
            return samples[:k], state
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    store = cache / "persist"
    _empty_store(store)
    port = free_port()
    proc = start_manager(cache, port, store, "--token-file", str(cache / "token"), auth=True)
    mgr = RemoteManager(f"127.0.0.1:{port}", token_file=cache / "token")
    samples = []
    try:
        for i in range(k):
            log(f"proof sample: sealing sector {i + 1} of {k} for real (a 2KiB C2 takes about a minute)")
            ref = WorkerRef("bench-sample", i)
            a = mgr.allocate_sector(AllocateSpec(), ref)
            work = cache / "work" / str(i)
            (work / "cache").mkdir(parents=True)
            sealed = work / "sealed"
            sealed.write_bytes(b"")
            pieces = proofs.cc_pieces(a.proof)
            proofs.build_tree_d(a.proof, None, work / "cache")
            ticket = mgr.assign_ticket(a.id)
            pid = proofs.prover_id_from_miner(a.id.miner)
            pc1 = proofs.pc1(a.proof, work / "cache", None, sealed, pid, a.id.number, ticket.value, pieces)
            pc2 = proofs.pc2(pc1, work / "cache", sealed)
            resp = mgr.submit_pre_commit(a, PreCommitInfo(pc2.comm_r, pc2.comm_d, ticket), False)
            assert resp.result is SubmitResult.Accepted, resp
            while mgr.poll_pre_commit_state(a.id).state is not OnChainState.Landed:
                time.sleep(POLL)
            replica, cache_dir = persisted_files(store, a.id, False)
            shutil.copyfile(sealed, replica)
            shutil.copytree(work / "cache", cache_dir)
            assert mgr.submit_persisted(a.id, STORE, False)
            while (wait := mgr.wait_seed(a)).seed is None:
                time.sleep(POLL)
            c1 = proofs.c1(a.proof, work / "cache", sealed, pid, a.id.number, ticket.value, wait.seed.value, pc2,
                           pieces)
            t0 = time.perf_counter()
            snark = proofs.c2(c1, pid, a.id.number)
            log(f"  C2 took {time.perf_counter() - t0:.0f} s")
            assert proofs.verify_seal(a.proof, pc2.comm_r, pc2.comm_d, pid, a.id.number, ticket.value,
                                      wait.seed.value, snark)
            samples.append({"number": a.id.number, "thread": i, "proof": snark.hex(),
                            "comm_r": pc2.comm_r.hex(), "comm_d": pc2.comm_d.hex(), "ticket": ticket.value.hex(),
                            "seed": wait.seed.value.hex()})
            shutil.rmtree(work)
    finally:
        mgr.close()
        _stop_procs([proc])
    meta.write_text(json.dumps(samples))
    return samples, state


def verify_cost(sample: dict) -> tuple[float, float]:
    """ms per verify_seal of the sample's proof: for its own sector (valid), for another (invalid)."""
    proof = proofs.SealProof.for_size(proofs.SectorSize.parse("2KiB"))
    pid = proofs.prover_id_from_miner(1000)
    args = [bytes.fromhex(sample[k]) for k in ("comm_r", "comm_d")]
    t, s, snark = (bytes.fromhex(sample[k]) for k in ("ticket", "seed", "proof"))
    out = []
    for number, expect in ((sample["number"], True), (sample["number"] + 10**6, False)):
        proofs.verify_seal(proof, *args, pid, number, t, s, snark)  # warm
        t0 = time.perf_counter()
        for _ in range(10):
            assert proofs.verify_seal(proof, *args, pid, number, t, s, snark) is expect
        out.append((time.perf_counter() - t0) / 10 * 1000)
    return out[0], out[1]


# --- PostgreSQL --------------------------------------------------------------------------------


class Postgres:
    """A throwaway PostgreSQL server, started by the tests' helper (`tests/pg.py`: Debian's binaries,
    initdb as an unprivileged user, loopback, password login), then restarted with fsync on: the
    tests run it with fsync off, which would flatter it beside SQLite (full sync)."""

    def __init__(self):
        import pg  # tests/pg.py

        self.server = pg.start_pg_server()
        self.server.stop()
        s = self.server
        options = (f"-p {s.port} -k {s.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=on "
                   "-c synchronous_commit=on -c max_connections=200 -c shared_buffers=128MB")
        started = s.ctl("-l", str(s.root / "server.log"), "-o", options, "-w", "-t", "60", "start")
        if started.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()[-300:]}")
        self.pid = int((s.root / "data" / "postmaster.pid").read_text().split()[0])
        self._dbs = 0

    def new_database(self) -> str:
        self._dbs += 1
        name = f"bench{self._dbs}"
        self.server.admin(f"CREATE DATABASE {name} OWNER {self._user()}")
        return self.server.url(name)

    @staticmethod
    def _user() -> str:
        import pg

        return pg.PG_USER

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.server.root, ignore_errors=True)


def _postgres_support() -> str | None:
    """Why the manager cannot run on PostgreSQL here, or None."""
    out = subprocess.run([sys.executable, "-m", "damocles_py.cli.manager", "run", "--help"], capture_output=True,
                         text=True, cwd=ROOT, env=_env())
    if "--db" not in out.stdout:
        return "`damocles-manager run` has no --db option yet (PostgreSQL support not landed)"
    return None


# --- managers ----------------------------------------------------------------------------------


@dataclass
class Config:
    name: str
    managers: int
    postgres: bool


CONFIGS = {"sqlite": Config("SQLite, 1 manager", 1, False), "pg1": Config("PostgreSQL, 1 manager", 1, True),
           "pg2": Config("PostgreSQL, 2 managers", 2, True)}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _stop_procs(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def start_managers(cfg: Config, root: Path, store: Path, token: Path, db_url: str | None, sample_state: Path | None):
    from conftest import free_port, start_manager

    os.environ["PYTHONPATH"] = str(ROOT)
    procs, addrs = [], []
    for i in range(cfg.managers):
        mroot = root / f"m{i}"
        mroot.mkdir(parents=True)
        if sample_state is not None and db_url is None:  # the sample sectors' SQLite state, as it is
            (mroot / "manager-state").mkdir()
            for f in sample_state.glob("manager.sqlite3*"):
                shutil.copy2(f, mroot / "manager-state" / f.name)
        port = free_port()
        extra = ["--token-file", str(token)] + (["--db", db_url] if db_url else [])
        procs.append(start_manager(mroot, port, store, *extra, auth=True))
        addrs.append(f"127.0.0.1:{port}")
    return procs, addrs


def copy_samples_to_postgres(sample_state: Path, url: str) -> str | None:
    """Copy the sample sectors' state into the PostgreSQL database; None, or why not."""
    for source in (f"sqlite:{sample_state}", f"sqlite:{sample_state / 'manager.sqlite3'}"):
        out = subprocess.run([sys.executable, "-m", "damocles_py.cli.manager", "db", "copy", "--from", source,
                              "--to", url], capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=300)
        if out.returncode == 0:
            return None
    return f"`damocles-manager db copy` failed: {(out.stderr or out.stdout).strip()[-300:]}"


def _empty_store(store: Path) -> None:
    for sub in ("sealed", "cache"):
        shutil.rmtree(store / sub, ignore_errors=True)
        (store / sub).mkdir(parents=True)


def run_client(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--client", json.dumps(spec)], stdout=subprocess.PIPE,
                          text=True, env=_env(), timeout=spec["warmup"] + spec["duration"] + 300)
    if proc.returncode:
        raise RuntimeError(f"client process exited with {proc.returncode}")
    return json.loads(proc.stdout)


def capacity_threads(rate: float) -> int:
    return int(ROOM * rate / (CALLS_PER_SECTOR / (SECTOR_HOURS * 3600)))


def _server_ms(res: dict) -> float:
    """CPU milliseconds the managers and the database spent per call: the cost of a call, whatever
    share of the machine the neighbours left."""
    rate = res["overall"]["rate"]
    return 1000 * (res["cpu"]["managers"] + res["cpu"]["database"]) / rate if rate else 0.0


def print_run(title: str, res: dict) -> None:
    o, cpu = res["overall"], res["cpu"]
    errs = sum(res["errors"].values())
    log(f"  {title}: {o['rate']:.0f} calls/s, p50 {o['p50']:.1f} ms, p99 {o['p99']:.1f} ms, "
        f"{errs} errors; CPU (cores): client {cpu['client']:.2f}, managers {cpu['managers']:.2f}, "
        f"database {cpu['database']:.2f}; server CPU per call {_server_ms(res):.2f} ms; machine: load "
        f"{cpu['load']:.1f}, CPU contended {100 * cpu['pressure']:.0f}% of the time")
    log(f"    {'call':<36}{'count':>8}{'calls/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, s in res["per_call"].items():
        log(f"    {name:<36}{s['count']:>8}{s['rate']:>9.1f}{s['p50']:>9.1f}{s['p99']:>9.1f}{s['max']:>9.1f}")
    if res["errors"]:
        log(f"    errors: {res['errors']}")
    if res["samples"]:
        ok = sum(1 for s in res["samples"] if s)
        log(f"    proof sample: {ok} of {len(res['samples'])} real proofs verified, accepted, landed and finalized")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--client", help=argparse.SUPPRESS)
    ap.add_argument("--configs", default="sqlite,pg1,pg2", help="of sqlite, pg1, pg2 (default all)")
    ap.add_argument("--threads", default="50,500", help="simulated thread counts (default 50,500)")
    ap.add_argument("--modes", default="saturated,paced")
    ap.add_argument("--duration", type=float, default=30.0, help="steady-state seconds per run (default 30)")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (default 5)")
    ap.add_argument("--think", default="1", help="paced mode: mean seconds between a thread's calls; a list "
                    "(e.g. 1,2) runs paced once per value (default 1)")
    ap.add_argument("--samples", type=int, default=2, help="sectors sealed for real, their proofs verified (default 2)")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "damocles-bench-manager-load"),
                    help="where the sample sectors are kept between runs")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.client:
        global _IN_CLIENT
        _IN_CLIENT = True
        print(json.dumps(client_main(json.loads(args.client))))
        return 0

    configs = [CONFIGS[c] for c in args.configs.split(",")]
    counts = [int(n) for n in args.threads.split(",")]
    modes = args.modes.split(",")
    args.think = [float(t) for t in args.think.split(",")]
    log(f"manager load bench: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start, "
        f"nice {os.nice(0)}; {args.duration:.0f} s measured after {args.warmup:.0f} s warm-up per run")

    samples, sample_state = seal_samples(Path(args.cache), args.samples) if args.samples else ([], None)
    cc = proofs.SealProof.for_size(proofs.SectorSize.parse("2KiB"))
    cc_comm_d = proofs.compute_comm_d(cc, proofs.cc_pieces(cc))
    wrong = samples[0]["proof"] if samples else None
    if samples:
        valid_ms, invalid_ms = verify_cost(samples[0])
        log(f"verify_seal (2KiB) in this process: {valid_ms:.1f} ms for the valid proof, {invalid_ms:.1f} ms for "
            f"the same proof against another sector (rejected): bulk sectors pay the full verification")
    else:
        return _fail("--samples 0: there is no real proof to submit; use at least 1")

    results = []
    pg_reason = _postgres_support() if any(c.postgres for c in configs) else None
    pg: Postgres | None = None
    work = Path(tempfile.mkdtemp(prefix="bench-manager-load-"))
    try:
        for cfg in configs:
            if cfg.postgres and pg_reason:
                log(f"\n{cfg.name}: SKIPPED: {pg_reason}")
                results.append({"config": cfg.name, "skipped": pg_reason})
                continue
            if cfg.postgres and pg is None:
                try:
                    log("starting PostgreSQL (tests/pg.py: initdb into a temporary directory), fsync on")
                    pg = Postgres()
                except Exception as e:
                    pg_reason = f"PostgreSQL could not be started: {e}"
                    log(f"\n{cfg.name}: SKIPPED: {pg_reason}")
                    results.append({"config": cfg.name, "skipped": pg_reason})
                    continue
            results += run_config(cfg, work, pg, counts, modes, args, samples, sample_state, wrong, cc_comm_d)
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    summary(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def run_config(cfg, work, pg, counts, modes, args, samples, sample_state, wrong, cc_comm_d) -> list[dict]:
    root = work / cfg.name.replace(", ", "-").replace(" ", "")
    store, token = root / "store", root / "token"
    root.mkdir(parents=True)
    _empty_store(store)
    db_url = pg.new_database() if cfg.postgres else None
    use_samples = samples
    if db_url:
        why = copy_samples_to_postgres(sample_state, db_url)
        if why:
            log(f"{cfg.name}: no real proofs in this configuration: {why}")
            use_samples = []
    log(f"\n{cfg.name}: starting {cfg.managers} manager process(es)")
    procs, addrs = start_managers(cfg, root, store, token, db_url, sample_state if use_samples else None)
    out = []
    try:
        first = True
        # one saturated run, and one paced run per think time, for each thread count
        plan = [(n, mode, think) for n in counts for mode in modes
                for think in (args.think if mode == "paced" else [0.0])]
        for n, mode, think in plan:
            run = f"{mode[:3]}{n}t{think:g}"
            # paced: threads start spread over one sector life (~30 calls), measured once all run
            warmup = max(args.warmup, 30 * think)
            title = f"{cfg.name}, {n} threads, {mode}" + (f" (think {think:g} s)" if think else "")
            log(f"{title}: running {warmup + args.duration:.0f} s")
            spec = {"run": run, "threads": n, "addrs": addrs, "token_file": str(token), "store": str(store),
                    "think": think, "warmup": warmup,
                    "duration": args.duration, "miner": 1000, "wrong_proof": wrong, "cc_comm_d": cc_comm_d.hex(),
                    "samples": use_samples if first else [], "manager_pids": [p.pid for p in procs],
                    "db_pids": [pg.pid] if db_url else []}
            first = False
            res = run_client(spec)
            print_run(title, res)
            out.append({"config": cfg.name, "threads": n, "mode": mode, **res})
            _empty_store(store)  # the files go; the database keeps growing, as a farm's does
    finally:
        _stop_procs(procs)
    return out


def summary(results: list[dict]) -> None:
    log("\nsummary (calls of the sector life; farm size = half the saturated rate / "
        f"({CALLS_PER_SECTOR} calls per {SECTOR_HOURS:.0f} h per thread)):")
    log(f"{'configuration':<26}{'threads':>8}  {'mode':<10}{'calls/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'client CPU':>11}{'srv ms/call':>12}{'load':>6}  verdict")
    for r in results:
        if "skipped" in r:
            log(f"{r['config']:<26}  skipped: {r['skipped']}")
            continue
        o = r["overall"]
        if r["mode"] == "saturated":
            verdict = f"capacity: a farm of {capacity_threads(o['rate']):,} sealing threads with room"
        else:
            served = o["p99"] < TARGET_P99_MS and not r["errors"]
            verdict = (f"{r['threads']} threads at 1 call per ~{r['think']:g} s: {'served' if served else 'NOT served'} "
                       f"(p99 {'<' if o['p99'] < TARGET_P99_MS else '>='} {TARGET_P99_MS:.0f} ms"
                       f"{', errors' if r['errors'] else ''})")
        log(f"{r['config']:<26}{r['threads']:>8}  {r['mode']:<10}{o['rate']:>9.0f}{o['p50']:>9.1f}{o['p99']:>9.1f}"
            f"{sum(r['errors'].values()):>8}{r['cpu']['client']:>11.2f}{_server_ms(r):>12.2f}{r['cpu']['load']:>6.1f}"
            f"  {verdict}")


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
