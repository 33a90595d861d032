"""Fuzzing the request decoding of the manager's gRPC API and the worker's admin API.

Raw bytes go through `channel.unary_unary(method)` with no serializer: random bytes, valid
requests cut short, valid requests with flipped bytes, fields of the wrong wire type, huge fields
(over and under the size limit), with and without the token. Every call must end with a gRPC
status (never a hang, never UNKNOWN or INTERNAL: those are unhandled exceptions), the server must
keep serving, and a refused call must leave the database exactly as it was (a dump of every
table, compared before and after each refused call).

The seed is printed; rerun one with FUZZ_SEED=<seed>.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from pathlib import Path

import grpc
from conftest import write_config

from damocles_py.admin import worker_admin_pb2 as admin_pb
from damocles_py.config.schema import EmbeddedManagerConfig
from damocles_py.manager import convert
from damocles_py.manager import manager_pb2 as pb
from damocles_py.manager.embedded import EmbeddedManager
from damocles_py.manager.interface import (
    AcquireDealsSpec,
    AllocateSpec,
    PreCommitInfo,
    StateReport,
    StoreInfo,
    WorkerRef,
)
from damocles_py.manager.server import serve_manager
from damocles_py.proofs import SectorSize

TOKEN = "f" * 64
WORKER = WorkerRef("fuzz-worker", 0, "/sealing/0")
CALLS_PER_METHOD = 30
# Statuses that mean the server did not handle what it got: an exception escaped, or it hung.
BAD_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED}


def seeded() -> random.Random:
    seed = int(os.environ.get("FUZZ_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"fuzz seed: {seed} (rerun with FUZZ_SEED={seed})")
    return random.Random(seed)


def dump(db: Path) -> list[str]:
    """Every table's rows, as SQL (a separate connection; the WAL makes committed rows visible)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def settled(dbs: list[Path]) -> list[list[str]]:
    """The dumps once the threads stopped writing (an accepted pause or resume is acted on by the
    thread a moment later, and must not be taken for the work of the next, refused, call)."""
    last = [dump(p) for p in dbs]
    while True:
        time.sleep(0.3)
        now = [dump(p) for p in dbs]
        if now == last:
            return now
        last = now


# ---------------------------------------------------------------------------------------------
# payloads


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def payloads(rng: random.Random, valid: bytes, fields: list[int]) -> list[tuple[str, bytes]]:
    """(kind, bytes) to send: random, truncated, flipped, wrong wire types, huge fields."""
    out: list[tuple[str, bytes]] = [("empty", b""), ("valid", valid)]
    for _ in range(4):
        out.append(("random", rng.randbytes(rng.randrange(1, 300))))
    for _ in range(4):
        if len(valid) > 1:
            out.append(("truncated", valid[: rng.randrange(1, len(valid))]))
    for _ in range(4):
        flipped = bytearray(valid or b"\0")
        for _ in range(rng.randrange(1, 4)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        out.append(("flipped", bytes(flipped)))
    for number in fields:  # each known field with the wrong wire type, or absurd values
        out.append(("varint-for-field", _field(number, 0, _varint(rng.randrange(1 << 64)))))
        out.append(("fixed64-for-field", _field(number, 1, rng.randbytes(8))))
        out.append(("bad-utf8-string", _field(number, 2, _varint(4) + b"\xff\xfe\xfd\xfc")))
        out.append(("nested-garbage", _field(number, 2, _varint(6) + rng.randbytes(6))))
        out.append(("length-past-end", _field(number, 2, _varint(1 << 20) + b"x")))
    out.append(("huge-under-limit", _field(rng.choice(fields or [1]), 2, _varint(200_000) + b"a" * 200_000)))
    out.append(("huge-over-limit", _field(rng.choice(fields or [1]), 2, _varint(2 << 20) + b"a" * (2 << 20))))
    out.append(("unknown-fields", b"".join(_field(rng.randrange(100, 5000), 0, _varint(rng.randrange(1 << 32)))
                                           for _ in range(5))))
    rng.shuffle(out)
    return out[:CALLS_PER_METHOD]


def _fields_of(message_class) -> list[int]:
    return [f.number for f in message_class.DESCRIPTOR.fields]


def call(channel: grpc.Channel, method: str, payload: bytes, metadata) -> grpc.StatusCode:
    stub = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    try:
        stub(payload, timeout=20, metadata=metadata)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


# ---------------------------------------------------------------------------------------------
# the manager


def _valid_manager_requests(sector, ticket) -> dict[str, bytes]:
    """A well-formed request per rpc, about a real sector: the base that gets cut and flipped."""
    sid = convert.sector_id_to_pb(sector.id)
    worker = convert.worker_ref_to_pb(WORKER)
    report = convert.state_report_to_pb(StateReport(WORKER, "Allocated", "DealsAcquired", "AcquireDeals",
                                                    "temporary", "PC1Failed", "x"))
    info = convert.pre_commit_info_to_pb(PreCommitInfo(bytes(32), bytes(32), ticket))
    spec = convert.allocate_spec_to_pb(AllocateSpec((1000,), None, ("store-a",)))
    requests = {
        "AllocateSector": pb.AllocateSectorRequest(spec=spec, worker=worker),
        "AcquireDeals": pb.AcquireDealsRequest(sector=sid, spec=convert.acquire_deals_spec_to_pb(AcquireDealsSpec(2))),
        "AssignTicket": pb.AssignTicketRequest(sector=sid),
        "SubmitPreCommit": pb.SubmitPreCommitRequest(sector=convert.allocated_sector_to_pb(sector), info=info),
        "PollPreCommitState": pb.PollPreCommitStateRequest(sector=sid),
        "ReserveStore": pb.ReserveStoreRequest(sector=sid, size=4096, candidates=["store-a"]),
        "SubmitPersisted": pb.SubmitPersistedRequest(sector=sid, store="store-a"),
        "WaitSeed": pb.WaitSeedRequest(sector=sid),
        "SubmitProof": pb.SubmitProofRequest(sector=sid, proof=b"\1" * 192),
        "PollProofState": pb.PollProofStateRequest(sector=sid),
        "AllocateSnapUpSector": pb.AllocateSnapUpSectorRequest(spec=spec, worker=worker),
        "SubmitSnapUpProof": pb.SubmitSnapUpProofRequest(sector=sid, info=pb.SnapUpProofInfo(
            comm_r_new=bytes(32), comm_d_new=bytes(32), proof=b"p", store="store-a")),
        "AllocateRebuildSector": pb.AllocateRebuildSectorRequest(spec=spec, worker=worker),
        "ReportState": pb.ReportStateRequest(sector=sid, report=report),
        "ReportFinalized": pb.ReportFinalizedRequest(sector=sid, worker=worker),
        "ReportAborted": pb.ReportAbortedRequest(sector=sid, reason="r", worker=worker, cause="PC1Failed"),
        "RequestRebuild": pb.RequestRebuildRequest(sector=sid),
        "AbortSector": pb.AbortSectorRequest(sector=sid, reason="r"),
        "GetSector": pb.GetSectorRequest(sector=sid),
        "ListSectors": pb.ListSectorsRequest(),
        "WorkerPing": pb.WorkerPingRequest(instance="fuzz-worker", threads=[pb.ThreadSummary(
            index=0, plan="sealer", state="Allocated", sector=sid, thread_state="running")]),
        "ListWorkers": pb.ListWorkersRequest(),
        "ForgetWorkerPing": pb.ForgetWorkerPingRequest(instance="fuzz-worker"),
        "DebugSector": pb.DebugSectorRequest(sector=sid),
        "ListDeals": pb.ListDealsRequest(),
        "ImportPieces": pb.ImportPiecesRequest(),
    }
    return {name: msg.SerializeToString() for name, msg in requests.items()}


def test_manager_api_survives_random_requests_and_refusals_change_nothing(tmp_path):
    rng = seeded()
    (tmp_path / "pieces").mkdir()
    (tmp_path / "pieces" / "deal").write_bytes(rng.randbytes(1000))
    (tmp_path / "store-a").mkdir()
    config = EmbeddedManagerConfig(miner=1000, sector_size=SectorSize(2048), state_dir=tmp_path / "manager",
                                   pieces_dir=tmp_path / "pieces", block_time=1.0)
    manager = EmbeddedManager(config, [StoreInfo("store-a", str(tmp_path / "store-a"))], piece_scan_interval=None)
    server, port = serve_manager(manager, "127.0.0.1:0", token=TOKEN)
    db = manager._db.path
    try:
        sector = manager.allocate_sector(AllocateSpec(), WORKER)  # something real for requests to hit
        manager.acquire_deals(sector.id, AcquireDealsSpec())
        valid = _valid_manager_requests(sector, manager.assign_ticket(sector.id))
        service = pb.DESCRIPTOR.services_by_name["SectorManager"]
        assert set(valid) == {m.name for m in service.methods}  # every rpc is fuzzed
        options = [("grpc.max_send_message_length", 8 << 20)]
        counts: dict[str, int] = {}
        started = time.monotonic()
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            for method in service.methods:
                fields = _fields_of(getattr(pb, method.input_type.name))
                for kind, payload in payloads(rng, valid[method.name], fields):
                    metadata = (("authorization", f"Bearer {TOKEN}"),) if rng.random() < 0.7 else None
                    before = dump(db)
                    code = call(channel, f"/{service.full_name}/{method.name}", payload, metadata)
                    counts[code.name] = counts.get(code.name, 0) + 1
                    assert code not in BAD_CODES, (method.name, kind, code, payload[:64])
                    if code is not grpc.StatusCode.OK:
                        assert dump(db) == before, f"refused {method.name} ({kind}, {code.name}) changed the database"
            # still serving, and still right
            assert call(channel, f"/{service.full_name}/ListSectors", b"", None) is grpc.StatusCode.OK
        print(f"manager: {sum(counts.values())} calls in {time.monotonic() - started:.1f}s: {counts}")
        assert counts.get("UNAUTHENTICATED") and counts.get("INVALID_ARGUMENT") and counts.get("RESOURCE_EXHAUSTED")
        assert manager.sector(sector.id) is not None
    finally:
        server.stop(grace=0).wait()
        manager.close()


# ---------------------------------------------------------------------------------------------
# the worker's admin API (inside a real worker daemon)


def test_admin_api_survives_random_requests_and_refusals_change_nothing(tmp_path, daemon_factory):
    rng = seeded()
    cfg = write_config(tmp_path, plans=("sealer", "sealer"))
    daemon = daemon_factory(cfg, max_sectors=0)  # idle threads: nothing seals while we fuzz
    token = daemon.token
    address = daemon.config.worker.admin_server.address
    thread_dbs = [t.db.path for t in daemon.threads]
    service = admin_pb.DESCRIPTOR.services_by_name["WorkerAdmin"]
    valid = {
        "List": admin_pb.ListRequest(),
        "Pause": admin_pb.PauseRequest(index=1),
        "Resume": admin_pb.ResumeRequest(index=1, state="Allocated"),
        "SectorDebug": admin_pb.SectorDebugRequest(sector_id="1000-1", logs=True, max_log_bytes=1 << 31),
    }
    counts: dict[str, int] = {}
    before = settled(thread_dbs)
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 8 << 20)]) as channel:
        for method in service.methods:
            fields = _fields_of(getattr(admin_pb, method.input_type.name))
            for kind, payload in payloads(rng, valid[method.name].SerializeToString(), fields):
                metadata = (("authorization", f"Bearer {token}"),) if rng.random() < 0.5 else None
                code = call(channel, f"/{service.full_name}/{method.name}", payload, metadata)
                counts[code.name] = counts.get(code.name, 0) + 1
                assert code not in BAD_CODES, (method.name, kind, code, payload[:64])
                if code is grpc.StatusCode.OK:
                    before = settled(thread_dbs)
                else:
                    assert [dump(p) for p in thread_dbs] == before, f"refused {method.name} ({kind}) changed a thread DB"
        assert call(channel, f"/{service.full_name}/List", b"", None) is grpc.StatusCode.OK
    print(f"admin: {sum(counts.values())} calls: {counts}")
    assert counts.get("UNAUTHENTICATED")
    assert all(t.status.thread_state != "stopped" for t in daemon.threads)  # the daemon keeps running
