"""`damocles-worker`: the worker's command line."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from damocles_py.cli.common import OneLineParser, run_main


def _cmd_params_generate(args) -> int:
    from damocles_py.proofs import SectorSize, params

    for size in args.sector_size:
        files = params.generate(SectorSize.parse(size, "--sector-size"))
        for f in files:
            print(f"{f.name}: {'present' if f.present else 'MISSING'}")
    return 0


def _cmd_params_check(args) -> int:
    from damocles_py.proofs import SectorSize, params

    sizes = [SectorSize.parse(s, "--sector-size") for s in args.sector_size] or list(params.TEST_SIZES)
    print(f"parameter cache: {params.param_dir()}")
    missing = 0
    for size in sizes:
        for circuit in params.Circuit:
            for f in params.files_for(circuit, size):
                state = "present" if f.present else "missing"
                missing += not f.present
                line = f"{size!s:>7} {circuit.value:<7} {state:<8} {f.name}"
                if args.verify_manifest and f.present:
                    (check,) = params.verify_against_manifest([f.path])
                    line += f"  [{check.status}]"
                print(line)
        if any(not f.present for c in params.Circuit for f in params.files_for(c, size)):
            print(f"  -> generate with: {params.generate_command(size)}")
    return 1 if missing else 0


def _cmd_bench(args) -> int:
    from damocles_py import bench
    from damocles_py.proofs import SectorSize

    size = SectorSize.parse(args.sector_size, "--sector-size")
    with tempfile.TemporaryDirectory(prefix="damocles-bench-") as tmp:
        if args.what == "seal":
            times, _, _ = bench.seal_sector(size, Path(tmp))
        else:
            times = bench.snap_sector(size, Path(tmp))
    print(json.dumps(times.as_json()) if args.json else times.table())
    return 0 if times.verified else 1


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="damocles-worker", description="Filecoin sector-sealing worker")
    sub = p.add_subparsers(dest="command", required=True)

    params_p = sub.add_parser("params", help="Groth parameter files")
    psub = params_p.add_subparsers(dest="params_command", required=True)
    gen = psub.add_parser("generate", help="generate test-size parameters into the parameter cache")
    gen.add_argument("--sector-size", action="append", required=True, help="e.g. 2KiB (repeatable)")
    gen.set_defaults(func=_cmd_params_generate)
    chk = psub.add_parser("check", help="list the parameter files each proof needs and whether they are present")
    chk.add_argument("--sector-size", action="append", default=[], help="default: 2KiB and 8MiB")
    chk.add_argument("--verify-manifest", action="store_true",
                     help="also check present files against the official parameters.json digests")
    chk.set_defaults(func=_cmd_params_check)

    bench_p = sub.add_parser("bench", help="seal one real sector and time each stage")
    bench_p.add_argument("what", choices=["seal", "snap"])
    bench_p.add_argument("--sector-size", default="2KiB")
    bench_p.add_argument("--json", action="store_true", help="print one JSON object")
    bench_p.set_defaults(func=_cmd_bench)

    from damocles_py.cli import worker_daemon

    worker_daemon.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
