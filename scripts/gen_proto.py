"""Regenerate the gRPC Python code from proto/*.proto (needs grpcio-tools): python scripts/gen_proto.py"""

import pathlib
import re
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGETS = {"worker_admin.proto": ROOT / "damocles_py" / "admin", "manager.proto": ROOT / "damocles_py" / "manager"}

for proto, out in TARGETS.items():
    if not (ROOT / "proto" / proto).exists():
        continue
    rc = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}", f"--grpc_python_out={out}", proto])
    if rc:
        sys.exit(f"protoc failed for {proto}")
    stem = proto.removesuffix(".proto")
    grpc_file = out / f"{stem}_pb2_grpc.py"
    # protoc emits a top-level import; make it package-relative.
    grpc_file.write_text(re.sub(rf"^import {stem}_pb2", f"from . import {stem}_pb2", grpc_file.read_text(), flags=re.M))
    print(f"generated {stem}_pb2.py and {stem}_pb2_grpc.py in {out.relative_to(ROOT)}")
