"""Stage handlers shared by plans: pieces, TreeD, PC1, PC2 and persisting sealed files.

Every handler is idempotent: it first removes whatever an interrupted earlier run of the same
stage may have left, so re-running a stage after a crash or a rewind is always safe.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from pathlib import Path

from damocles_py import proofs
from damocles_py.fsm.context import StageContext
from damocles_py.fsm.failure import FailureCause, SealingFailure
from damocles_py.fsm.states import Event
from damocles_py.manager.interface import Deal
from damocles_py.proofs import PieceInfo, SealProof
from damocles_py.store.durable import fsync_dir, make_dirs, replace_durably, sha256_file, write_durably
from damocles_py.store.layout import TREE_D_FILE, StoreConflict, job_token, persist_group, persisted_cache_files


def prover_id(ctx: StageContext) -> bytes:
    return proofs.prover_id_from_miner(ctx.sector.id.miner)


# ---------------------------------------------------------------------------------------------
# pieces


def _pieces_dir(ctx: StageContext) -> Path:
    """The sector's own piece files (pledge zeros, downloads): removed with its other scratch files."""
    return ctx.files.root / "pieces"


def _zero_piece(ctx: StageContext, size: int) -> Path:
    """A pledge (filler) piece: `size` zero bytes, as a sparse file (no disk space)."""
    path = _pieces_dir(ctx) / f"pledge-{size}"
    if not (path.is_file() and path.stat().st_size == size):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(size)
    return path


def _piece_file(ctx: StageContext, deal: Deal) -> Path:
    """The deal's piece data: zeros for a pledge piece; the manager's path when it is a local file;
    else a file of that name in local_pieces_dirs; else downloaded from the manager's piece store."""
    if deal.is_pledge:
        return _zero_piece(ctx, deal.piece.size)
    given = Path(deal.piece_path)
    name = given.name
    candidates = ([given] if given.is_absolute() else []) + [d / name for d in ctx.local_pieces_dirs]
    for path in candidates:
        if path.is_file():
            return path
    if ctx.piece_store is not None and name not in ("", ".", ".."):
        ctx.log.info("deal %d: piece %s is not local: downloading it from the manager", deal.deal_id, name)
        return ctx.piece_store.fetch_piece(name, _pieces_dir(ctx))
    raise SealingFailure(
        FailureCause.PieceDownloadFailed,
        f"deal {deal.deal_id}: piece file not found (looked at {', '.join(map(str, candidates)) or 'nothing'})",
    )


def stage_pieces(ctx: StageContext, deals: list[Deal], staged: Path) -> list[PieceInfo]:
    """Write the deals' pieces into a fresh staged file and check each commP against its deal.

    Returns the sector's piece list: the deals' pieces, then the zero pieces filling the sector.
    """
    proof = ctx.sector.proof
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(b"")
    pieces: list[PieceInfo] = []
    with ctx.stage("add_pieces", FailureCause.PieceDownloadFailed) as run:
        for deal in deals:
            path = _piece_file(ctx, deal)
            piece = run(proofs.add_piece, proof, path, staged, pieces, deal.piece.size)
            if piece.commitment != deal.piece.commitment:
                raise SealingFailure(
                    FailureCause.PieceCommitmentMismatch,
                    f"deal {deal.deal_id}: piece {path} has commP {piece.commitment.hex()}, "
                    f"the deal says {deal.piece.commitment.hex()}",
                )
            ctx.log.info("piece of deal %d added: %d bytes, commP %s", deal.deal_id, piece.size,
                         piece.commitment.hex())
            pieces.append(piece)
        with open(staged, "r+b") as f:  # the staged file is the whole sector, zero-filled after the pieces
            f.truncate(proof.sector_size)
    return proofs.fill_pieces(proof, pieces)  # the zeros after the deals are pieces too


def add_pieces(ctx: StageContext) -> Event:
    s = ctx.sector
    s.pieces = proofs.cc_pieces(s.proof) if s.is_cc else stage_pieces(ctx, s.deals, ctx.files.staged)
    return Event.AddPiece


# ---------------------------------------------------------------------------------------------
# TreeD


def static_cc_tree_d(ctx: StageContext, proof: SealProof) -> Path:
    """The all-zero tree-d of a sector size: configured, or built once into the shared cache."""
    configured = ctx.static_tree_d.get(proof.sector_size)
    if configured is not None:
        return configured
    return cached_cc_tree_d(proofs.params.cache_root() / "static-tree-d" / str(proof.sector_size), proof, ctx.log)


# Cached tree-d files whose checksum this process has verified: path -> (inode, size, mtime).
# A full checksum once per process, then a stat before each reuse: hashing a 64 GiB tree per CC
# sector would cost more than building it.
_verified_tree_d: dict[Path, tuple[int, int, int]] = {}


def _tree_d_intact(target: Path, sidecar: Path) -> bool:
    """The cached tree-d matches the size and sha256 recorded when it was built."""
    try:
        recorded = json.loads(sidecar.read_text())
        st = target.stat()
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict) or st.st_size != recorded.get("size"):
        return False
    key = (st.st_ino, st.st_size, st.st_mtime_ns)
    if _verified_tree_d.get(target) != key:
        if sha256_file(target) != recorded.get("sha256"):
            return False
        _verified_tree_d[target] = key
    return True


def cached_cc_tree_d(target_dir: Path, proof: SealProof, log: logging.Logger) -> Path:
    """The tree-d in `target_dir`, checked against its sidecar before reuse; (re)built if absent or corrupt.

    Many CC sectors link to this one file, so it is written durably (data, then the directory
    entry, then the sidecar holding its size and sha256, which marks it complete).
    """
    target = target_dir / TREE_D_FILE
    sidecar = target_dir / f"{TREE_D_FILE}.sum"
    make_dirs(target_dir)
    with open(target_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several threads (or daemons) may need it at once: build it once
        if _tree_d_intact(target, sidecar):
            return target
        if target.exists() or sidecar.exists():
            log.warning("shared CC tree-d %s does not match its recorded size and checksum (corrupt or "
                        "incomplete): rebuilding it", target)
            sidecar.unlink(missing_ok=True)
            fsync_dir(target_dir)
        tmp = target_dir / f".build-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        proofs.build_tree_d(proof, None, tmp)
        built = tmp / TREE_D_FILE
        record = {"size": built.stat().st_size, "sha256": sha256_file(built)}
        replace_durably(built, target)
        write_durably(sidecar, (json.dumps(record) + "\n").encode())
        shutil.rmtree(tmp, ignore_errors=True)
        st = target.stat()  # hashed just above: no need to read it again
        _verified_tree_d[target] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return target


def make_tree_d(ctx: StageContext, staged: Path | None, cache: Path, pieces: list[PieceInfo]) -> bytes:
    """Build (or link, for CC) tree-d into a fresh `cache`, and check it commits to `pieces`."""
    proof = ctx.sector.proof
    shutil.rmtree(cache, ignore_errors=True)  # never reuse a stale tree from an earlier attempt
    cache.mkdir(parents=True)
    with ctx.stage("tree_d", FailureCause.TreeDFailed) as run:
        expected = proofs.compute_comm_d(proof, pieces)
        if staged is None:  # CC: the shared all-zero tree, whose root is the zero pieces' comm_d
            os.symlink(static_cc_tree_d(ctx, proof), cache / TREE_D_FILE)
            return expected
        comm_d = run(proofs.build_tree_d, proof, staged, cache)
        if comm_d != expected:
            raise SealingFailure(
                FailureCause.TreeDFailed,
                f"tree-d root {comm_d.hex()} does not match the pieces' comm_d {expected.hex()}",
            )
    return comm_d


def build_tree_d(ctx: StageContext) -> Event:
    s, files = ctx.sector, ctx.files
    s.tree_d_comm_d = make_tree_d(ctx, None if s.is_cc else files.staged, files.cache, s.pieces)
    return Event.BuildTreeD


# ---------------------------------------------------------------------------------------------
# PC1 / PC2


def pc1(ctx: StageContext) -> Event:
    s, files = ctx.sector, ctx.files
    for entry in files.cache.iterdir():  # drop layers of an interrupted PC1, keep the tree-d
        if entry.name != TREE_D_FILE:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    files.sealed.write_bytes(b"")
    with ctx.stage("pc1", FailureCause.PC1Failed) as run:
        out = run(proofs.pc1, s.proof, files.cache, None if s.is_cc else files.staged, files.sealed,
                  prover_id(ctx), s.id.number, s.ticket.value, s.pieces)
    s.pc1_out = out.data
    return Event.PC1


def _restore_unsealed_replica(ctx: StageContext) -> None:
    """Put the sealed file back to PC1's result (the unsealed data) before PC2.

    PC2 encodes the sealed file in place, so a PC2 cut off half-way leaves it half-encoded; running
    PC2 again on that yields a replica whose proofs fail ("Invalid vanilla proof" in damocles).
    Restoring first makes PC2 idempotent. A CC sector is all zeros (a sparse file costs nothing).
    """
    s, files = ctx.sector, ctx.files
    if s.is_cc:
        with open(files.sealed, "wb") as f:
            f.truncate(s.proof.sector_size)
    else:
        shutil.copyfile(files.staged, files.sealed)
    for pattern in ("sc-02-data-tree-c*", "sc-02-data-tree-r-last*", "p_aux", "t_aux"):
        for stale in files.cache.glob(pattern):
            stale.unlink()


def pc2(ctx: StageContext) -> Event:
    s, files = ctx.sector, ctx.files
    with ctx.stage("pc2", FailureCause.PC2Failed) as run:
        _restore_unsealed_replica(ctx)
        out = run(proofs.pc2, proofs.PC1Output(s.proof, s.pc1_out), files.cache, files.sealed)
    s.comm_r, s.comm_d = out.comm_r, out.comm_d
    ctx.log.info("PC2: comm_r %s comm_d %s", out.comm_r.hex(), out.comm_d.hex())
    return Event.PC2


# ---------------------------------------------------------------------------------------------
# persisting sealed files


def reserve_store(ctx: StageContext) -> str:
    """The persist store for this sector: kept once chosen, so a retry copies to the same place."""
    s = ctx.sector
    if s.store is None:
        candidates = [name for name, st in ctx.stores.items() if not st.readonly]
        if not candidates:
            raise SealingFailure(FailureCause.PersistFailed, "no writable [[attached]] store is configured")
        store = ctx.manager.reserve_store(s.id, 2 * int(s.proof.sector_size), candidates)
        if store is None:
            raise SealingFailure(FailureCause.NoStoreSpace, f"no store among {candidates} has room")
        s.store = store
    return s.store


def copy_sealed_files(ctx: StageContext, sealed: Path, cache: Path, dest_sealed: Path, dest_cache: Path,
                      replace: bool = False) -> None:
    """Copy a replica and its cache files into a store, durably.

    Files of the same name already there are never replaced unless this sector job wrote them
    (or `replace`: a rebuild, whose replica was checked against the chain): they may be the
    replica of another sector that is proven on chain.
    """
    pairs = [(sealed, dest_sealed)] + [(f, dest_cache / f.name) for f in persisted_cache_files(cache)]
    with ctx.stage("transfer", FailureCause.PersistFailed) as run:
        try:
            run(persist_group, pairs, job_token(ctx.files.root), replace)
        except StoreConflict as e:
            raise SealingFailure(
                FailureCause.StoreFileConflict,
                f"the store already holds other files under this sector's name, not written by this sector "
                f"job (left untouched): {e}",
            ) from None


def persist_sealed(ctx: StageContext) -> Event:
    layout = ctx.persist_layout(reserve_store(ctx))
    copy_sealed_files(ctx, ctx.files.sealed, ctx.files.cache, layout.sealed, layout.cache)
    ctx.log.info("sealed files persisted to store %s", ctx.sector.store)
    return Event.Persist
