"""Chaos: a worker daemon (two sealer threads) and a standalone manager, both real processes, seal
2KiB sectors while a driver kills the daemon with SIGKILL at random moments and, separately, the
manager, restarting each. Afterwards every sector the manager ever allocated must be finished
with a proof it verified, or aborted with a named cause; none may be left without a thread working
it; no sector number twice; and the worker's thread databases must agree with the manager.

CI (`pytest tests`) runs the short form: 8 daemon kills, manager kills every 5-30 s (at least 4);
about 4-5 minutes estimated for an idle 2-core box (C2 ~60 s); 12-13 minutes measured at load 3-12.
`pytest -m chaos` runs the long one (40 daemon kills, at least 15 manager kills). The RNG seed is
printed; reproduce a run's kill plan with DAMOCLES_CHAOS_SEED=<seed> (timings still vary). DAMOCLES_CHAOS_KILLS=<daemon>,<manager> overrides
the kill counts.

Kills are aimed at stage points, not at wall-clock instants alone: most land in the cheap stages
(allocation, PC1/PC2, pre-commit and its landing, persist, the seed wait), some during C2 and some
right after it (proof submitted, final report); the state each thread was in is recorded.
"""

from __future__ import annotations

import collections
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from damocles_py.fsm.failure import FailureCause
from damocles_py.fsm.sector import Sector
from damocles_py.fsm.states import State
from damocles_py.manager.client import RemoteManager
from damocles_py.manager.db import Submission
from damocles_py.manager.interface import REASON_FINAL_DEADLINE
from damocles_py.store.thread_db import ThreadDB

from conftest import (C2_BUDGET, STARTUP_BUDGET, free_port, seal_budget, start_manager, thread_db_rows, wait_until,
                      write_config)

pytestmark = pytest.mark.chaos

WORKER = "chaos-worker"
THREADS = 2
# States in which a thread runs only cheap stages or waits on the chain (2KiB: milliseconds to ~1 s).
EARLY = {"Empty", "Allocated", "DealsAcquired", "PieceAdded", "TreeDBuilt", "TicketAssigned", "PC1Done",
         "PC2Done", "PCSubmitted", "PCLanded", "Persisted", "PersistanceSubmitted", "SeedAssigned"}
IN_C2 = {"C1Done"}  # the thread is running C2 (or waiting for the C2 slot)
LATE = {"C2Done", "ProofSubmitted", "Finished"}  # proof submitted, polled, reported
NAMED_CAUSE = re.compile(r"\b(" + "|".join(c.name for c in FailureCause) + r")\b")


@dataclass
class Plan:
    seed: int
    daemon_kills: int
    manager_kills: int
    long: bool

    @classmethod
    def from_env(cls, long: bool) -> "Plan":
        seed = int(os.environ.get("DAMOCLES_CHAOS_SEED", random.SystemRandom().randrange(1, 10**9)))
        daemon, manager = (40, 15) if long else (8, 4)
        if os.environ.get("DAMOCLES_CHAOS_KILLS"):
            daemon, manager = (int(x) for x in os.environ["DAMOCLES_CHAOS_KILLS"].split(","))
        return cls(seed, daemon, manager, long)

    def daemon_targets(self, rng: random.Random) -> list[str]:
        """Where each daemon kill aims: mostly early stages (cheap to redo), some in and after C2."""
        k = self.daemon_kills
        in_c2 = max(1 if k >= 5 else 0, round(k * 0.15))
        late = max(1 if k >= 5 else 0, round(k * 0.1))  # each waits for a C2 to end: the dear ones
        targets = ["early"] * (self.daemon_kills - in_c2 - late) + ["c2"] * in_c2 + ["late"] * late
        rng.shuffle(targets)
        return targets


@dataclass
class Log:
    """What the drivers did, for the figures and a failure's message; also written to `path` as it
    happens (tail it to follow a long run)."""

    path: Path
    kills: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, line: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {line}"
        with self.lock:
            self.kills.append(line)
            with self.path.open("a") as f:
                f.write(line + "\n")


# ---------------------------------------------------------------------------------------------
# the two processes


class Farm:
    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.store = root / "persist-a"
        self.store.mkdir()
        (root / "manager-pieces").mkdir()
        (root / "w").mkdir()
        # Retries: 60 x 0.5 s outlasts any manager outage the driver causes (down <= 3 s, plus a restart).
        self.cfg = write_config(root / "w", plans=("sealer",) * THREADS, manager_addr=f"127.0.0.1:{self.port}",
                                store=self.store, name=WORKER, worker={"ping_interval": "1s"},
                                sealing={"max_retries": 60, "recover_interval": "0.5s"})
        # The farm token, as in production: the manager writes it on its first start.
        self.token_file = root / "manager-state" / "manager.token"
        addr_line = f'addr = "127.0.0.1:{self.port}"\n'
        text = self.cfg.read_text().replace(addr_line, addr_line + f'token_file = "{self.token_file}"\n')
        # One C2 at a time (2 cores): a kill in C2 loses one SNARK, not two, and a thread waiting
        # for the C2 slot is one more place for a kill to land.
        self.cfg.write_text(text + "\n[processors.limitation.concurrent]\nc2 = 1\n")
        self.locations = [root / "w" / "store" / f"t{i}" for i in range(THREADS)]
        self.admin_port = int(re.search(r"port = (\d+)", self.cfg.read_text()).group(1))
        self.manager: subprocess.Popen | None = None
        self.daemon: subprocess.Popen | None = None

    def start_manager(self) -> None:
        self.manager = start_manager(self.root, self.port, self.store, auth=True)

    def start_daemon(self, stop_after: int | None = None) -> None:
        args = [sys.executable, "-m", "damocles_py.cli.worker", "daemon", "-c", str(self.cfg), "--log-level", "INFO"]
        if stop_after is not None:
            args += ["--stop-after-sectors", str(stop_after)]
        log = open(self.root / "daemon.log", "ab")
        self.daemon = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def daemon_serving(self) -> bool:
        """The daemon is up: its admin API (started just before the threads) accepts connections."""
        assert self.daemon.poll() is None, f"the daemon exited with {self.daemon.returncode}: {self.daemon_log()}"
        try:
            with socket.create_connection(("127.0.0.1", self.admin_port), timeout=1):
                return True
        except OSError:
            return False

    def thread_states(self) -> list[str | None]:
        """Each thread's current (not done) sector state from its database; None: no sector."""
        out = []
        for loc in self.locations:
            rows = thread_db_rows(loc, "SELECT state FROM sectors WHERE done = 0 ORDER BY uid DESC LIMIT 1")
            out.append(rows[0][0] if rows else None)
        return out

    def c2_running_for(self) -> float | None:
        """How long the longest C2 running now has been running (None: none), from the sector logs'
        stage markers ("c2: start", then "c2: done|failed"); a C2 cut off by a kill counts as running
        until the restarted one logs its start."""
        longest = None
        for loc in self.locations:
            rows = thread_db_rows(loc, "SELECT sector_id FROM sectors WHERE done = 0 AND state = 'C1Done'")
            if not rows or rows[0][0] is None:
                continue
            miner, number = rows[0][0].split("-")
            log = loc / "logs" / f"s-t0{miner}-{number}.log"
            lines = [ln for ln in (log.read_text(errors="replace").splitlines() if log.exists() else [])
                     if " INFO c2: " in ln]
            if lines and lines[-1].endswith("c2: start"):
                started = time.mktime(time.strptime(lines[-1][:19], "%Y-%m-%d %H:%M:%S"))
                running = time.time() - started
                longest = running if longest is None else max(longest, running)
        return longest

    def in_flight(self) -> int:
        return sum(1 for s in self.thread_states() if s is not None)

    def daemon_log(self, chars: int = 3000) -> str:
        path = self.root / "daemon.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def kill(self, proc: subprocess.Popen | None) -> None:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def kill_now(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


# ---------------------------------------------------------------------------------------------
# the drivers


def wait_for(predicate, timeout: float, what: str):
    """The driver polls often: a kill should land close to the moment it waits for."""
    return wait_until(predicate, timeout, f"chaos driver: {what}", interval=0.02)


def drive_daemon(farm: Farm, plan: Plan, rng: random.Random, log: Log, points: collections.Counter,
                 stop: threading.Event) -> None:
    """Kill the daemon at each target's stage point, restart it, until the plan's kills are done."""
    for n, target in enumerate(plan.daemon_targets(rng), 1):
        if stop.is_set():
            return
        wait_for(farm.daemon_serving, STARTUP_BUDGET, "the daemon to serve")
        if target == "early":
            # the next moment a thread is in (or about to start) its cheap stages while no C2 has been
            # running for long (the kill takes it down too: keep what it costs small), a little later
            def early_moment() -> bool:
                if not any(s is None or s in EARLY for s in farm.thread_states()):
                    return False
                running = farm.c2_running_for()
                return running is None or running < 5.0

            wait_for(early_moment, seal_budget(2), "a thread in its early stages")
            time.sleep(rng.uniform(0.0, 0.3))  # they last about a second (chain waits of 0.2 s epochs)
        elif target == "c2":
            time.sleep(rng.uniform(0.0, 1.5))  # let the threads move on from where they restarted
            wait_for(lambda: any(s in IN_C2 for s in farm.thread_states()), seal_budget(2), "a thread in C2")
            time.sleep(rng.uniform(1.0, 25.0))  # somewhere in the C2 (or just after it, if it was quick)
        else:  # late: between the proof's submission and the final report
            wait_for(lambda: any(s in LATE for s in farm.thread_states()), seal_budget(2),
                     "a thread past C2")
            time.sleep(rng.uniform(0.0, 0.05))
        states = farm.thread_states()
        kill_now(farm.daemon)
        for s in states:
            points[s or "no sector"] += 1
        log.add(f"daemon kill {n}/{plan.daemon_kills} ({target}): thread states {states}")
        time.sleep(rng.uniform(0.0, 1.0))
        if n < plan.daemon_kills:
            farm.start_daemon()


def drive_manager(farm: Farm, plan: Plan, rng: random.Random, log: Log, stop: threading.Event,
                  errors: list[BaseException]) -> None:
    """Kill the manager at random moments (and keep it down a random while) until told to stop,
    having done at least the plan's manager kills."""
    n = 0
    try:
        while not (stop.is_set() and n >= plan.manager_kills):
            if stop.wait(rng.uniform(5.0, 30.0)) and n >= plan.manager_kills:
                break
            states = farm.thread_states()
            kill_now(farm.manager)
            n += 1
            log.add(f"manager kill {n}: worker thread states {states}")
            time.sleep(rng.uniform(0.2, 3.0))
            farm.start_manager()
    except BaseException as e:  # surfaced by the test
        errors.append(e)
    finally:
        log.add(f"manager driver done after {n} kills")


# ---------------------------------------------------------------------------------------------
# the test


def chaos_is_selected(config) -> bool:
    """`pytest -m chaos` asks for the long form; a plain run (CI) gets the short one."""
    expr = config.option.markexpr or ""
    return "chaos" in expr and "not chaos" not in expr


def test_chaos_kills_lose_no_sector(tmp_path, request, capsys):
    plan = Plan.from_env(long=chaos_is_selected(request.config))
    rng = random.Random(plan.seed)
    with capsys.disabled():
        print(f"\nchaos: seed {plan.seed} (DAMOCLES_CHAOS_SEED={plan.seed} to replay), "
              f"{'long' if plan.long else 'short'} form: {plan.daemon_kills} daemon kills, "
              f">= {plan.manager_kills} manager kills; driver log {tmp_path / 'chaos.log'}")
    farm = Farm(tmp_path)
    log = Log(tmp_path / "chaos.log")
    points: collections.Counter = collections.Counter()
    started = time.monotonic()
    farm.start_manager()
    farm.start_daemon()
    stop = threading.Event()
    manager_errors: list[BaseException] = []
    manager_driver = threading.Thread(
        target=drive_manager, args=(farm, plan, random.Random(rng.random()), log, stop, manager_errors), daemon=True)
    try:
        manager_driver.start()
        drive_daemon(farm, plan, rng, log, points, stop)
        stop.set()
        manager_driver.join(timeout=120)
        assert not manager_driver.is_alive(), "the manager driver did not stop"
        assert not manager_errors, f"the manager driver failed: {manager_errors[0]!r}"
        manager_kills = sum(1 for line in log.kills if " manager kill " in line)

        # drain: the daemon's last restart finishes the sectors in flight and starts no new one
        in_flight = farm.in_flight()
        if in_flight:
            farm.start_daemon(stop_after=in_flight)
            drain_deadline = time.monotonic() + seal_budget(2)
            while farm.daemon.poll() is None and time.monotonic() < drain_deadline:
                paused = paused_jobs(farm)
                assert not paused, f"a thread paused during the drain: {paused}\n{farm.daemon_log()}"
                time.sleep(0.5)
            assert farm.daemon.poll() == 0, (f"the draining daemon did not exit cleanly "
                                             f"({farm.daemon.poll()}); threads: {farm.thread_states()}\n"
                                             f"{farm.daemon_log()}")

        with RemoteManager(f"127.0.0.1:{farm.port}", timeout=30) as client:
            records = client.sectors()
            report = check_views(farm, records, client)
    finally:
        stop.set()
        farm.kill(farm.daemon)
        manager_driver.join(timeout=30)
        farm.kill(farm.manager)

    elapsed = time.monotonic() - started
    figures = (f"chaos: seed {plan.seed}: kills {plan.daemon_kills} daemon + {manager_kills} manager, "
               f"sectors {len(records)}, finished {report.finished}, aborted {report.aborted}, "
               f"stranded {len(report.stranded)}, in {elapsed:.0f}s\n"
               f"chaos: daemon kills landed with threads in: "
               + ", ".join(f"{state} {count}" for state, count in points.most_common()))
    with capsys.disabled():
        print(figures)
        if report.aborted:
            print("chaos: aborted: " + "; ".join(report.abort_reasons))
    problems = report.problems
    assert not problems, "\n".join([figures, *problems, "driver log:", *log.kills])
    assert report.finished >= 1, figures  # the farm did seal through the chaos


def paused_jobs(farm: Farm) -> list[str]:
    out = []
    for i, loc in enumerate(farm.locations):
        for (data,) in thread_db_rows(loc, "SELECT data FROM sectors WHERE done = 0"):
            sector = Sector.from_json(data)
            if sector.paused:
                out.append(f"thread {i} sector {sector.id} at {sector.state.value}: {sector.failure}")
    return out


@dataclass
class Report:
    finished: int = 0
    aborted: int = 0
    stranded: list[str] = field(default_factory=list)
    abort_reasons: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_views(farm: Farm, records, client: RemoteManager) -> Report:
    """Every sector finished with a verified proof or aborted with a named cause; no sector held by
    nobody; no number twice; the thread databases agree with the manager."""
    report = Report()
    problems = report.problems
    numbers = [r.id for r in records]
    duplicates = [n for n, c in collections.Counter(numbers).items() if c > 1]
    if duplicates:
        problems.append(f"sector numbers handed out twice: {duplicates}")

    jobs = {}  # sector id -> [(thread index, Sector, done)]
    undone = []
    for i, loc in enumerate(farm.locations):
        db = ThreadDB(loc)
        try:
            for sector, done in db.jobs(limit=10**6):
                if sector.id is not None:
                    jobs.setdefault(sector.id, []).append((i, sector, done))
                if not done:
                    undone.append(f"thread {i}: job {sector.uid} ({sector.id or 'no sector yet'}) at {sector.state.value}")
        finally:
            db.close()
    if undone:
        problems.append(f"jobs still in progress after the drain: {undone}")

    for r in records:
        mine = jobs.get(r.id, [])
        if r.finished:
            report.finished += 1
            if r.commit is None or r.commit.state is not Submission.Accepted:
                problems.append(f"{r.id} is finished without an accepted (verified) proof: {r.commit}")
        elif r.aborted:
            report.aborted += 1
            reason = r.abort_reason or ""
            report.abort_reasons.append(f"{r.id}: {reason}")
            if not (NAMED_CAUSE.search(reason) or reason.startswith(REASON_FINAL_DEADLINE)):
                problems.append(f"{r.id} is aborted without a named cause: {reason!r}")
        else:
            working = [j for j in mine if not j[2]]
            if not working:  # counted here, and not again below as unknown to the worker
                report.stranded.append(str(r.id))
                debug = client.sector_debug(r.id)
                history = [f"{h.prev}->{h.next} ({h.event})" for h in debug.history] if debug else []
                problems.append(f"STRANDED: {r.id} is in progress at the manager (holder {r.holder}) but no "
                                f"thread works on it; manager history {history}; worker jobs "
                                f"{[(i, s.state.value, d) for i, s, d in mine]}")
            else:
                problems.append(f"{r.id} is still in progress after the drain: {[(i, s.state.value) for i, s, _ in working]}")
        # the worker's view
        if len(mine) > 1:
            problems.append(f"{r.id} was worked on by {len(mine)} jobs: {[(i, s.state.value) for i, s, _ in mine]}")
        if not mine:
            if str(r.id) not in report.stranded:
                problems.append(f"{r.id} ({'finished' if r.finished else 'aborted' if r.aborted else 'open'}) "
                                f"is unknown to every thread database")
            continue
        thread, sector, done = mine[-1]
        if r.holder.instance != WORKER or r.holder.thread != thread:
            problems.append(f"{r.id}: the manager says thread {r.holder.instance}/{r.holder.thread} holds it, "
                            f"the worker has it in thread {thread}")
        expected = State.Finished if r.finished else State.Aborted if r.aborted else None
        if expected is not None and (sector.state is not expected or not done):
            problems.append(f"{r.id}: {expected.value} at the manager, {sector.state.value} "
                            f"({'done' if done else 'not done'}) in thread {thread}")
    for sector_id in set(jobs) - set(numbers):
        problems.append(f"{sector_id} is in a thread database but unknown to the manager: "
                        f"{[(i, s.state.value) for i, s, _ in jobs[sector_id]]}")
    return report
