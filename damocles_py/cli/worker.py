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


def _cmd_generator_tree_d(args) -> int:
    """damocles' `generator tree-d`: the all-zero (CC) tree-d of a size, for [processors.static_tree_d]."""
    import logging

    from damocles_py.fsm.handlers.common import cached_cc_tree_d
    from damocles_py.proofs import SealProof, SectorSize

    size = SectorSize.parse(args.sector_size, "--sector-size")
    path = cached_cc_tree_d(Path(args.path).expanduser().absolute(), SealProof.for_size(size),
                            logging.getLogger("damocles_py.generator"))
    print(f"static tree-d for {size}: {path}")
    print(f'use it with: [processors.static_tree_d] {size} = "{path}"')
    return 0


# damocles-worker's `processor <stage>` names (vc-processors builtin/tasks.rs)
PROCESSOR_STAGES = ("add_pieces", "tree_d", "pc1", "pc2", "c2", "snap_encode", "snap_prove", "transfer",
                    "window_post", "winning_post")


def _cmd_processor(args) -> int:
    from damocles_py.config.schema import PROCESSOR_STAGES as SUPPORTED
    from damocles_py.errors import UserError

    if args.stage not in SUPPORTED:
        raise UserError(f"processor {args.stage} is not supported yet by damocles-py: no plan here runs that "
                        f"stage (processors exist for {', '.join(SUPPORTED)})")
    if args.hugepage_files_path or args.hugepage_files_path_pattern:
        raise UserError("--hugepage-files-path is not supported yet by damocles-py: it needs ipfs-force-community's "
                        "fork of rust-fil-proofs. Fix: remove it from the processor's `args`")
    if sys.stdin.isatty():
        raise UserError(f"processor {args.stage} speaks a binary protocol on stdin/stdout: the daemon starts it "
                        f"for [[processors.{args.stage}]] entries. Fix: add such an entry to sealing.toml instead")
    from damocles_py.processors import child

    return child.main(args.stage)


def build_parser() -> argparse.ArgumentParser:
    from damocles_py import __version__

    p = OneLineParser(prog="damocles-worker", description="Filecoin sector-sealing worker")
    p.add_argument("-V", "--version", action="version", version=f"%(prog)s v{__version__}-damocles-py")
    sub = p.add_subparsers(dest="command", required=True)

    gen_p = sub.add_parser("generator", help="generate static files")
    gsub = gen_p.add_subparsers(dest="generator_command", required=True)
    tree_d = gsub.add_parser("tree-d", help="build the CC (all-zero) tree-d of a sector size into a directory")
    tree_d.add_argument("-s", "--sector-size", required=True, help="e.g. 2KiB, 32GiB")
    tree_d.add_argument("-p", "--path", required=True, help="directory to write sc-02-data-tree-d.dat into")
    tree_d.set_defaults(func=_cmd_generator_tree_d)

    proc = sub.add_parser("processor", help="run one stage's tasks for a daemon ([[processors.<stage>]]); started by the daemon")
    proc.add_argument("stage", choices=PROCESSOR_STAGES)
    proc.add_argument("--hugepage-files-path", "--hugepage_files_path")
    proc.add_argument("--hugepage-files-path-pattern", "--hugepage_files_path_pattern")
    proc.add_argument("--disable-link", "--disable_link", action="store_true")
    proc.set_defaults(func=_cmd_processor)

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
