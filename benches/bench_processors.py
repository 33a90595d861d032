"""External processors (issue 9): warm C2 children, throughput with pinned children, the protocol's cost.

    python benches/bench_processors.py [--parts c2,throughput,protocol] [--sectors 6] [--reps 3]
        [--c2-reps 2] [--protocol-size 8MiB] [--pc1-cpuset 0] [--c2-cpuset 0-1]

1. C2 at 2KiB: the first and second proof (two different sectors) in one warm child, and the same
   two in this process (the daemon's in-process path: the first C2 of the process, then the
   second). filecoin-proofs keeps the Groth parameters in the process's memory, so a long-lived
   child pays their load once; the second/first ratio and first - second (the load) are printed,
   with the time between the library's own "checking cache_path ... for parameters" and "read
   parameters from cache" log lines. The parameter file is read into the page cache first, so
   neither side pays a disk read the other does not.
2. Throughput: a real `WorkerDaemon` (embedded manager, fast simulated chain) with 2 sealer threads,
   PC1 and C2 in children pinned with `cgroup.cpuset` (--pc1-cpuset, --c2-cpuset) and
   `[processors.limitation.concurrent] c2 = 1`, seals --sectors 2KiB sectors. Bound from the
   single-stage times measured in this run: throughput <= 1 / max over resources of the time a
   sector spends on it (the C2 slot: one warm C2; the PC1 child: one PC1; a thread: every stage of
   a sector, over 2 threads). Achieved/bound is printed for the whole run (from the children being
   ready to the last sector finished: it includes the first C2's parameter load and the pipeline
   filling) and for the steady state (first to last sector finished). Target >= 0.95.
3. The child protocol's cost per stage: tree_d, pc1, pc2 at --protocol-size (no Groth parameters
   needed) and c2 at 2KiB (the warm proofs of part 1), the same task in this process and in a
   warm child, alternating; (child - in-process) / in-process on the best run of each side, and the
   pure protocol round trip: a real-size Task (the stage's real arguments) to an echo child that
   answers with the stage's real output, framed and pickled as the processors do. Target < 1% of
   the stage's time at 8MiB.

Each C2 takes about a minute on an idle 2-core box: the default run takes ~20 minutes and says
what it is doing as it goes.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import write_config  # noqa: E402  (the same real-config writer the tests use)

from damocles_py import bench, proofs  # noqa: E402
from damocles_py.config.load import load_config  # noqa: E402
from damocles_py.config.schema import ProcessorConfig, ProcessorsConfig  # noqa: E402
from damocles_py.config.load import parse_cpu_list  # noqa: E402
from damocles_py.processors.pool import Processors  # noqa: E402
from damocles_py.processors.protocol import Done, FrameWriter, Task, read_frame  # noqa: E402
from damocles_py.proofs import SealProof, SectorSize, params  # noqa: E402
from damocles_py.thread.logs import bound_to, install_rust_log_routing  # noqa: E402
from damocles_py.thread.observer import WorkerObserver  # noqa: E402

SMALL = SectorSize.parse("2KiB")
T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# shared helpers


class ParamLoadClock(logging.Handler):
    """Times the library's parameter reads from its own log lines (`storage_proofs_core`)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.started: float | None = None
        self.loads: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "for parameters" in msg and msg.startswith("checking cache_path"):
            self.started = record.created
        elif msg.startswith("read parameters from cache") and self.started is not None:
            self.loads.append(record.created - self.started)
            self.started = None

    def take(self) -> float | None:
        """The parameter load seen since the last call (None: no load happened)."""
        loads, self.loads = self.loads, []
        return sum(loads) if loads else None


def sector_logger(tmp: Path, name: str, clock: ParamLoadClock) -> logging.Logger:
    """A sector's log as the daemon makes one (a file), plus the parameter-load clock."""
    logger = logging.getLogger(f"bench.{name}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(tmp / f"{name}.log")
    handler.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.addHandler(clock)
    return logger


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) the process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class InProcess:
    """The daemon's in-process path: the call runs here, the library's log lines go to the sector log."""

    def __init__(self, sector_log: logging.Logger):
        self.log = sector_log
        self.cpu = 0.0  # CPU seconds of the last call

    def __call__(self, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        cpu = own_cpu()
        with bound_to(self.log):
            out = fn(*args)
        self.cpu = own_cpu() - cpu
        return out


class InChild:
    """A task through `Processors.run`, as `StageContext.stage()` sends it."""

    def __init__(self, pool: Processors, sector_log: logging.Logger):
        self.pool = pool
        self.log = sector_log
        self.cpu = 0.0  # CPU seconds of the last call: the child's and this process's (pickling, pipe)

    def __call__(self, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        pid = self.pool.children[stage][0].info().pid
        cpu, child_cpu = own_cpu(), proc_cpu(pid)
        out = self.pool.run(stage, fn, args, label="bench", sector_log=self.log, check=lambda: None,
                            on_wait=lambda: None)
        self.cpu = own_cpu() - cpu + proc_cpu(pid) - child_cpu
        return out


def start_children(external: dict[str, ProcessorConfig]) -> Processors:
    pool = Processors(ProcessorsConfig(external={stage: (cfg,) for stage, cfg in external.items()}))
    pool.start()
    return pool


def child_config(stage: str, cpuset: str | None = None) -> ProcessorConfig:
    cpus = parse_cpu_list(cpuset) if cpuset else None
    return ProcessorConfig(stage, cpuset=cpus, cpuset_text=cpuset, stable_wait=120.0)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def warm_page_cache(size: SectorSize) -> None:
    """Read the size's PoRep parameter files once, so the first C2 of either path reads from memory."""
    for f in params.files_for(params.Circuit.PoRep, size):
        with open(f.path, "rb") as fh:
            while fh.read(16 << 20):
                pass


@dataclasses.dataclass(frozen=True)
class C1Input:
    sector: bench.SealedSector
    c1: proofs.C1Output


def prepare_c1(work: Path, sector_id: int) -> tuple[C1Input, dict[str, float]]:
    """Seal a 2KiB sector through PC2 and run C1: C2's input. Also its single-stage times."""
    times, s, _ = bench.seal_sector(SMALL, work, sector_id=sector_id, prove=False)
    t_c1, c1 = timed(lambda: proofs.c1(s.proof, s.cache, s.sealed, bench.PROVER_ID, s.sector_id, bench.TICKET,
                                       bench.SEED, s.pre_commit, s.pieces))
    return C1Input(s, c1), {**times.stages, "c1": t_c1}


def verify(inp: C1Input, snark: bytes) -> None:
    s = inp.sector
    ok = proofs.verify_seal(s.proof, s.pre_commit.comm_r, s.pre_commit.comm_d, bench.PROVER_ID, s.sector_id,
                            bench.TICKET, bench.SEED, snark)
    if not ok:
        raise SystemExit("a C2 proof did not verify")


# ---------------------------------------------------------------------------------------------
# 1. warm C2


@dataclasses.dataclass
class C2Result:
    inproc: list[float]  # every C2 in this process, in order (the first paid the parameter load)
    child: list[float]  # every C2 in the child, in order
    inproc_cpu: list[float]  # their CPU seconds
    child_cpu: list[float]
    inproc_load: float | None  # the parameter read the library logged in the first in-process C2
    child_load: float | None
    stage_times: dict[str, float]  # a 2KiB sector's other stages (for the throughput bound)
    c1_bytes: int
    proof_example: tuple[C1Input, bytes]


def bench_c2(tmp: Path, reps: int, cpuset: str | None) -> C2Result:
    say("C2: sealing two 2KiB sectors through C1 (their C2 inputs)")
    a, stage_times = prepare_c1(tmp / "c2-a", 11)
    b, _ = prepare_c1(tmp / "c2-b", 12)
    inputs = [a, b]
    say("C2: reading the 2KiB PoRep parameters into the page cache")
    warm_page_cache(SMALL)
    clock = ParamLoadClock()
    log = sector_logger(tmp, "c2", clock)
    say(f"C2: starting a c2 child (cpuset {cpuset or 'all'})")
    pool = start_children({"c2": child_config("c2", cpuset)})
    paths = {"in-process": InProcess(log), "child": InChild(pool, log)}
    times: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    loads: dict[str, float | None] = {}
    try:
        for i in range(reps):  # alternate the paths: load from others drifts alike for both
            inp = inputs[i % 2]
            for name, run in paths.items():
                say(f"C2 #{i + 1} {name} ({'first of its process' if i == 0 else 'warm'})...")
                clock.take()
                secs, snark = timed(lambda: run("c2", proofs.c2, inp.c1, bench.PROVER_ID, inp.sector.sector_id))
                load = clock.take()
                if i == 0:
                    loads[name] = load
                verify(inp, snark)
                times[name].append(secs)
                cpu[name].append(run.cpu)
                say(f"C2 #{i + 1} {name}: {secs:.2f}s, {run.cpu:.2f} CPU-s (verified)"
                    + (f", library logged a parameter read of {load:.2f}s" if load else ""))
    finally:
        pool.close()
    return C2Result(times["in-process"], times["child"], cpu["in-process"], cpu["child"], loads.get("in-process"), loads.get("child"), stage_times,
                    len(a.c1.data), (a, snark))


def report_c2(r: C2Result) -> None:
    print("\n== 1. C2 at 2KiB: first vs second proof of the same size (wall s; CPU-s in brackets) ==")
    print(f"{'path':<12}{'first':>18}{'second':>18}{'second/first':>14}{'first-second':>18}{'logged load s':>15}")
    for name, ts, cs, load in (("in-process", r.inproc, r.inproc_cpu, r.inproc_load),
                               ("child", r.child, r.child_cpu, r.child_load)):
        print(f"{name:<12}{f'{ts[0]:.2f} [{cs[0]:.1f}]':>18}{f'{ts[1]:.2f} [{cs[1]:.1f}]':>18}"
              f"{f'{ts[1] / ts[0]:.3f} [{cs[1] / cs[0]:.3f}]':>14}{f'{ts[0] - ts[1]:.2f} [{cs[0] - cs[1]:.1f}]':>18}"
              f"{(f'{load:.2f}' if load is not None else 'none'):>15}")
    print(f"child/in-process: first {r.child[0] / r.inproc[0]:.3f} [{r.child_cpu[0] / r.inproc_cpu[0]:.3f}], "
          f"second {r.child[1] / r.inproc[1]:.3f} [{r.child_cpu[1] / r.inproc_cpu[1]:.3f}]")
    for name, ts in (("in-process", r.inproc), ("child", r.child)):
        if len(ts) > 2:
            print(f"{name}'s later proofs: {', '.join(f'{t:.2f}s' for t in ts[2:])}")


# ---------------------------------------------------------------------------------------------
# 2. throughput


class StageLog(WorkerObserver):
    def __init__(self):
        self.durations: dict[str, list[float]] = {}

    def stage_duration(self, stage, sector_size, seconds, ok):
        if ok:
            self.durations.setdefault(stage, []).append(seconds)


@dataclasses.dataclass
class ThroughputResult:
    sectors: int
    elapsed: float  # children ready -> last sector finished
    finished_at: list[float]  # seconds after the children were ready
    stage_durations: dict[str, list[float]]
    bound: float  # sectors per second
    bound_rows: list[tuple[str, float]]  # resource, seconds per sector on it


def bench_throughput(tmp: Path, n: int, c2_warm: float, stage_times: dict[str, float], pc1_cpuset: str,
                     c2_cpuset: str, threads: int = 2) -> ThroughputResult:
    per_sector = dict(stage_times, c2=c2_warm)
    rows = [("c2 slot (limit 1)", c2_warm), ("pc1 child", stage_times["pc1"]),
            (f"a sealing thread (all stages / {threads})", sum(per_sector.values()) / threads)]
    bound = 1 / max(t for _, t in rows)
    run_dir = tmp / "daemon"
    run_dir.mkdir()
    cfg = write_config(run_dir, plans=("sealer",) * threads,
                       sealing={"seal_interval": "0.01s", "rpc_polling_interval": "0.01s"},
                       embedded={"sector_size": "2KiB", "block_time": "0.01s",
                                 "ticket_expiry_epochs": 10**7, "seed_expiry_epochs": 10**7})
    with open(cfg, "a") as f:  # the operator's [processors] section, through the real config loader
        f.write(f'\n[processors.limitation.concurrent]\nc2 = 1\n\n'
                f'[[processors.pc1]]\ncgroup.cpuset = "{pc1_cpuset}"\nstable_wait = "120s"\n\n'
                f'[[processors.c2]]\ncgroup.cpuset = "{c2_cpuset}"\nstable_wait = "120s"\n')
    from damocles_py.daemon import WorkerDaemon

    stages = StageLog()
    daemon = WorkerDaemon(load_config(cfg), observer=stages, max_sectors=n)
    say(f"throughput: starting a daemon with {threads} sealer threads, pc1 child on cpus {pc1_cpuset}, "
        f"c2 child on cpus {c2_cpuset}, c2 limited to 1; {n} sectors (~{n * c2_warm:.0f}s)")
    daemon.start()
    start = time.perf_counter()  # children are ready once start() returns
    finished: list[float] = []
    try:
        while len(finished) < n:
            done = daemon.sectors_done()
            while len(finished) < min(done, n):
                finished.append(time.perf_counter() - start)
                say(f"throughput: sector {len(finished)}/{n} finished at {finished[-1]:.1f}s")
            paused = [t.status for t in daemon.threads if t.status.thread_state == "paused"]
            if paused:
                raise SystemExit(f"a sealing thread paused: {paused[0].last_failure}")
            time.sleep(0.05)
    finally:
        daemon.stop()
    return ThroughputResult(n, finished[-1], finished, stages.durations, bound, rows)


def report_throughput(r: ThroughputResult, c2_first_child: float | None) -> None:
    print(f"\n== 2. Throughput: 2 sealer threads, {r.sectors} 2KiB sectors, PC1/C2 in pinned children, c2 = 1 ==")
    print("bound from single-stage times (seconds a sector spends on each resource):")
    for name, secs in r.bound_rows:
        print(f"  {name:<38}{secs:>9.3f}")
    c2s = r.stage_durations.get("c2", [])
    print(f"C2 in the daemon's child: {', '.join(f'{t:.1f}' for t in c2s)} s; the C2 slot was busy "
          f"{sum(c2s) / r.elapsed:.3f} of the run (what the scheduling reached, whatever the load did to C2)")
    whole = r.sectors / r.elapsed
    print(f"whole run: {r.sectors} sectors in {r.elapsed:.1f}s = {whole * 3600:.1f}/h; bound "
          f"{r.bound * 3600:.1f}/h; achieved/bound {whole / r.bound:.3f} (target >= 0.95)")
    if r.sectors > 1:
        steady = (r.sectors - 1) / (r.finished_at[-1] - r.finished_at[0])
        print(f"steady state (first to last sector finished): {steady * 3600:.1f}/h; "
              f"achieved/bound {steady / r.bound:.3f}")
    if c2_first_child is not None:
        # the one-time costs no scheduler avoids: the first sector's stages before C2, one parameter load
        c2_warm = r.bound_rows[0][1]
        floor = (c2_first_child - c2_warm) + r.sectors / r.bound
        print(f"whole run against a bound that counts one parameter load ({c2_first_child - c2_warm:.1f}s): "
              f"{floor / r.elapsed:.3f}")


# ---------------------------------------------------------------------------------------------
# 3. the protocol's cost


ECHO = r"""
import sys, os
from damocles_py.processors.protocol import Done, FrameWriter, read_frame
out = FrameWriter(os.fdopen(1, "wb"))
stdin = os.fdopen(0, "rb")
reply = read_frame(stdin).args[0]  # the first task carries the output to answer with
out.send(Done(0, None))
while (task := read_frame(stdin)) is not None:
    out.send(Done(task.id, reply))
"""


def protocol_round_trip(args: tuple, output: Any, n: int = 50) -> tuple[float, int, int]:
    """Median seconds of send-task/receive-result with these real arguments and output, through
    a pipe to another process; and the two frames' pickled sizes."""
    import pickle

    proc = subprocess.Popen([sys.executable, "-c", ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    out = FrameWriter(proc.stdin)
    try:
        out.send(Task(0, "set-reply", (output,)))
        read_frame(proc.stdout)
        times = []
        for i in range(1, n + 1):
            start = time.perf_counter()
            out.send(Task(i, "pc1", args))
            frame = read_frame(proc.stdout)
            times.append(time.perf_counter() - start)
            assert isinstance(frame, Done) and frame.id == i
    finally:
        proc.stdin.close()
        proc.wait()
    return (statistics.median(times), len(pickle.dumps(Task(1, "x", args), pickle.HIGHEST_PROTOCOL)),
            len(pickle.dumps(Done(1, output), pickle.HIGHEST_PROTOCOL)))


@dataclasses.dataclass
class StageCost:
    stage: str
    size: SectorSize
    inproc: list[float]
    child: list[float]
    inproc_cpu: list[float]
    child_cpu: list[float]
    round_trip: float
    task_bytes: int
    result_bytes: int


def bench_protocol(tmp: Path, size: SectorSize, reps: int) -> list[StageCost]:
    proof = SealProof.for_size(size)
    work = tmp / "protocol"
    work.mkdir()
    piece = bench.write_random_piece(work / "piece", size.unpadded)
    staged = work / "staged"
    staged.write_bytes(b"")
    info = proofs.add_piece(proof, piece, staged)
    with open(staged, "r+b") as f:
        f.truncate(size)
    clock = ParamLoadClock()
    log = sector_logger(tmp, "protocol", clock)
    say(f"protocol: starting tree_d, pc1, pc2 children (unpinned, as this process)")
    pool = start_children({s: child_config(s) for s in ("tree_d", "pc1", "pc2")})
    paths = {"in-process": InProcess(log), "child": InChild(pool, log)}
    times = {(stage, name): [] for stage in ("tree_d", "pc1", "pc2") for name in paths}
    cpu = {(stage, name): [] for stage in ("tree_d", "pc1", "pc2") for name in paths}
    last: dict[str, tuple[tuple, Any]] = {}
    try:
        for i in range(reps + 1):  # round 0 warms both paths (parent cache, imports) and is not counted
            for name, run in paths.items():
                cache, sealed = work / f"cache-{name}", work / f"sealed-{name}"
                shutil.rmtree(cache, ignore_errors=True)  # no tree or layers of an earlier round reused
                cache.mkdir()
                sealed.write_bytes(b"")
                calls = [("tree_d", proofs.build_tree_d, (proof, staged, cache)),
                         ("pc1", proofs.pc1, (proof, cache, staged, sealed, bench.PROVER_ID, 1, bench.TICKET, [info])),
                         ("pc2", proofs.pc2, None)]
                out = None
                line = []
                for stage, fn, args in calls:
                    if args is None:
                        args = (out, cache, sealed)
                    secs, out = timed(lambda: run(stage, fn, *args))
                    last[stage] = (args, out)
                    if i:
                        times[(stage, name)].append(secs)
                        cpu[(stage, name)].append(run.cpu)
                    line.append(f"{stage} {secs:.3f}s ({run.cpu:.2f} CPU-s)")
                say(f"protocol {size} round {i}{' (warm-up)' if i == 0 else f'/{reps}'} {name}: {', '.join(line)}")
    finally:
        pool.close()
    results = []
    for stage in ("tree_d", "pc1", "pc2"):
        args, out = last[stage]
        rt, tb, rb = protocol_round_trip(args, out)
        results.append(StageCost(stage, size, times[(stage, "in-process")], times[(stage, "child")],
                                 cpu[(stage, "in-process")], cpu[(stage, "child")], rt, tb, rb))
    return results


def c2_cost(c2: C2Result) -> StageCost:
    inp, snark = c2.proof_example
    args = (inp.c1, bench.PROVER_ID, inp.sector.sector_id)
    rt, tb, rb = protocol_round_trip(args, snark)
    return StageCost("c2", SMALL, c2.inproc[1:], c2.child[1:], c2.inproc_cpu[1:], c2.child_cpu[1:], rt, tb, rb)


def rel(child: float, inproc: float) -> str:
    return f"{(child - inproc) / inproc:+.2%}" if inproc > 0 else "n/a"


def report_protocol(costs: list[StageCost]) -> None:
    print("\n== 3. The child protocol's cost per stage (warm runs; (child - in-process) / in-process) ==")
    print(f"{'stage':<8}{'size':>6}{'n':>3}{'wall ip/ch best s':>19}{'best':>9}{'median':>9}"
          f"{'CPU ip/ch best s':>18}{'best':>9}{'median':>9}{'round trip':>12}{'rt/stage':>10}{'task/result B':>15}")
    for c in costs:
        ib, cb = min(c.inproc), min(c.child)
        im, cm = statistics.median(c.inproc), statistics.median(c.child)
        ipb, cpb = min(c.inproc_cpu), min(c.child_cpu)
        ipm, cpm = statistics.median(c.inproc_cpu), statistics.median(c.child_cpu)
        print(f"{c.stage:<8}{str(c.size):>6}{len(c.child):>3}{f'{ib:.3f}/{cb:.3f}':>19}{rel(cb, ib):>9}"
              f"{rel(cm, im):>9}{f'{ipb:.2f}/{cpb:.2f}':>18}{rel(cpb, ipb):>9}{rel(cpm, ipm):>9}"
              f"{c.round_trip * 1e3:>10.3f}ms{c.round_trip / ib:>10.4%}{f'{c.task_bytes}/{c.result_bytes}':>15}")
    print("target: < 1% of the stage's time at 8MiB. The round trip is the protocol alone (a real-size task\n"
          "and result through a pipe to another process); wall and CPU differences also carry the noise of\n"
          "a shared machine (CPU time is the steadier: it does not count time spent waiting for a core).")


# ---------------------------------------------------------------------------------------------


def load_conditions() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="c2,throughput,protocol", help="any of c2, throughput, protocol")
    ap.add_argument("--sectors", type=int, default=6, help="sectors in the throughput run")
    ap.add_argument("--reps", type=int, default=3, help="measured rounds of tree_d/pc1/pc2 per path")
    ap.add_argument("--c2-reps", type=int, default=2, help="C2 proofs per path (>= 2: first and second)")
    ap.add_argument("--protocol-size", default="8MiB")
    ap.add_argument("--pc1-cpuset", default="0")
    ap.add_argument("--c2-cpuset", default="0-1", help="both cores: C2 is the only heavy stage at 2KiB")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if unknown := parts - {"c2", "throughput", "protocol"}:
        raise SystemExit(f"--parts: unknown {', '.join(sorted(unknown))}; use c2, throughput, protocol")
    if args.c2_reps < 2:
        raise SystemExit("--c2-reps must be at least 2 (a first and a second proof)")
    for cpuset in (args.pc1_cpuset, args.c2_cpuset):
        missing = set(parse_cpu_list(cpuset)) - os.sched_getaffinity(0)
        if missing:
            raise SystemExit(f"cpuset {cpuset!r} names CPUs this process cannot use ({sorted(missing)})")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # the library's INFO lines go to the sector logs only
        handler.setLevel(logging.WARNING)
    install_rust_log_routing()
    params.generate(SMALL, (params.Circuit.PoRep,))
    print(f"start: {load_conditions()}", flush=True)

    c2 = tp = None
    costs: list[StageCost] = []
    with tempfile.TemporaryDirectory(prefix="damocles-bench-processors-") as tmp:
        tmp = Path(tmp)
        if "protocol" in parts:
            costs += bench_protocol(tmp, SectorSize.parse(args.protocol_size), args.reps)
        if "c2" in parts or "throughput" in parts:  # the throughput bound needs the warm C2 time
            c2 = bench_c2(tmp, args.c2_reps, args.c2_cpuset)
            if "protocol" in parts:
                costs.append(c2_cost(c2))
        if "throughput" in parts:
            tp = bench_throughput(tmp, args.sectors, min(c2.child[1:]), c2.stage_times, args.pc1_cpuset,
                                  args.c2_cpuset)
    if c2 is not None:
        report_c2(c2)
    if tp is not None:
        report_throughput(tp, c2.child[0])
    if costs:
        report_protocol(costs)
    print(f"\nend: {load_conditions()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
