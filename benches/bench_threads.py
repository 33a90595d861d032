"""Sealing throughput of K threads against the bound from single-sector costs, and the
orchestration overhead per sector.

    python benches/bench_threads.py [--size 8MiB] [--threads 2] [--sectors-per-thread 2]

1. One sector is sealed alone through the proofs API (no daemon): its wall time W and the process
   CPU time C it used (all threads). With N cores and K sealing threads, no scheduler can beat
   bound = min(K / W, N / C) sectors per second: K threads cannot each go faster than one sector
   alone, and the sectors cannot use more CPU than the machine has.
2. A real daemon (embedded manager, fast simulated chain) then runs K sealer threads until each
   finished `--sectors-per-thread` sectors; throughput is sectors over the wall time of the run.
3. Orchestration overhead per sector = its wall time in the daemon minus the time inside proofs
   stages and minus the time spent waiting on purpose (chain, polling). That remainder is the
   Python state machine, the SQLite writes, logging and manager calls.

Targets: throughput >= 90% of the bound; overhead < 1% of the sector time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import write_config  # noqa: E402  (the same real-config writer the tests use)

from damocles_py import bench  # noqa: E402
from damocles_py.config.load import load_config  # noqa: E402
from damocles_py.daemon import WorkerDaemon  # noqa: E402
from damocles_py.proofs import SectorSize, params  # noqa: E402
from damocles_py.thread.observer import WorkerObserver  # noqa: E402


class StageClock(WorkerObserver):
    """Adds up the time sealing threads spend inside proofs stages."""

    def __init__(self):
        self.stage_seconds = 0.0

    def stage_duration(self, stage, sector_size, seconds, ok):
        self.stage_seconds += seconds


def single_sector(size: SectorSize, work: Path) -> tuple[float, float]:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    times, _, _ = bench.seal_sector(size, work)
    assert times.verified
    return time.perf_counter() - wall0, time.process_time() - cpu0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="8MiB")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sectors-per-thread", type=int, default=2)
    args = ap.parse_args()
    size = SectorSize.parse(args.size)
    params.generate(size, (params.Circuit.PoRep,))
    cores = os.cpu_count() or 1

    with tempfile.TemporaryDirectory(prefix="damocles-bench-threads-") as tmp:
        tmp = Path(tmp)
        wall, cpu = single_sector(size, tmp / "alone")
        bound = min(args.threads / wall, cores / cpu)  # sectors per second
        print(f"one {size} sector alone: {wall:.1f}s wall, {cpu:.1f}s CPU on {cores} cores")

        run_dir = tmp / "daemon"
        run_dir.mkdir()
        cfg = write_config(run_dir, plans=("sealer",) * args.threads,
                           sealing={"seal_interval": "0.01s", "rpc_polling_interval": "0.01s"},
                           embedded={"sector_size": str(size), "block_time": "0.01s",
                                     # fast epochs: keep tickets and seeds valid for the whole run
                                     "ticket_expiry_epochs": 10**7, "seed_expiry_epochs": 10**7})
        clock = StageClock()
        total = args.threads * args.sectors_per_thread
        daemon = WorkerDaemon(load_config(cfg), observer=clock, max_sectors=total)
        start = time.perf_counter()
        daemon.start()
        while sum(1 for r in daemon.manager.sectors() if r.finished) < total:
            paused = [t.status for t in daemon.threads if t.status.thread_state == "paused"]
            if paused:
                daemon.stop()
                raise SystemExit(f"a sealing thread paused: {paused[0].last_failure}")
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        waited = sum(t.control.handler_wait_seconds for t in daemon.threads)
        sector_time = sum(_sector_wall(t) for t in daemon.threads)
        daemon.stop()

    throughput = total / elapsed
    overhead = sector_time - clock.stage_seconds - waited
    print(f"{args.threads} threads sealed {total} sectors in {elapsed:.1f}s")
    print(f"throughput: {throughput * 3600:.1f} sectors/hour; bound {bound * 3600:.1f}; "
          f"ratio {throughput / bound:.3f} (target >= 0.90)")
    print(f"sector time {sector_time:.1f}s = stages {clock.stage_seconds:.1f}s + waits {waited:.2f}s "
          f"+ orchestration {overhead:.3f}s -> overhead {overhead / sector_time:.4%} (target < 1%)")
    return 0


def _sector_wall(thread) -> float:
    """Sum over the thread's finished sectors of (last transition - first handler start)."""
    total = 0.0
    for sector, done in thread.db.jobs():
        history = thread.db.history(sector.uid)
        if done and history:
            total += history[-1].ts - (history[0].ts - (history[0].duration or 0.0))
    return total


if __name__ == "__main__":
    sys.exit(main())
