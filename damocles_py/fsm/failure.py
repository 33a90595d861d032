"""Failure levels and causes: every way a stage can fail has a name, a level and an operator action.

In the spirit of a job system's replicate failure causes: a paused thread always shows *which*
cause stopped it, what it means, and what to do. The README's failure table is generated from
`FailureCause` (see `describe_all`).
"""

from __future__ import annotations

import enum
import errno
from dataclasses import dataclass


class FailureLevel(enum.Enum):
    temporary = "temporary"  # retried after recover_interval, up to max_retries, then permanent
    permanent = "permanent"  # the thread pauses until an operator resumes it
    critical = "critical"  # like permanent: the worker itself needs attention (config, disk, params)
    abort = "abort"  # the sector is abandoned: reported aborted, local files removed, next sector


@dataclass(frozen=True)
class CauseInfo:
    level: FailureLevel
    stage: str
    meaning: str
    action: str


_T, _P, _C, _A = FailureLevel.temporary, FailureLevel.permanent, FailureLevel.critical, FailureLevel.abort


class FailureCause(enum.Enum):
    ManagerUnreachable = CauseInfo(
        _T, "any", "The sector manager did not answer or failed transiently.",
        "Check the manager is running and reachable ([sector_manager] rpc_client.addr); "
        "the thread retries by itself, then `worker resume --index N` once it is back.")
    ManagerRejectedRequest = CauseInfo(
        _P, "any", "The manager refused a request for this sector (unknown sector, wrong worker).",
        "Check `damocles-manager sector debug <sector>`; `worker resume --index N --state Aborted` to drop it.")
    SectorAbortedByManager = CauseInfo(
        _A, "any", "The manager finalized or aborted this sector (e.g. an operator aborted it there).",
        "Nothing: the thread moves on to the next sector.")
    PieceDownloadFailed = CauseInfo(
        _T, "AddPiece",
        "A deal's piece file could not be read, or not downloaded from the damocles-manager's /piecestore/.",
        "Make sure the piece file exists and is readable (pieces_dir / local_pieces_dirs), or that the manager "
        "serves it (piece_token if it redirects); the thread retries by itself, then `worker resume --index N`.")
    PieceCommitmentMismatch = CauseInfo(
        _A, "AddPiece", "The piece data's commitment (commP) differs from the deal's piece CID.",
        "The piece file is wrong or corrupted: replace it; the deal returns to the manager's pool.")
    TreeDFailed = CauseInfo(
        _T, "TreeD", "Building the data tree failed, or its comm_d does not match the pieces.",
        "Check disk space and the staged file; resume, or rewind with `--state DealsAcquired`.")
    ProcessorCrashed = CauseInfo(
        _T, "any", "The child processor running this stage ([[processors.<stage>]]) died mid-task "
        "(killed, out of memory, a crash in the proofs library); it is started again by itself.",
        "Nothing to do for one crash: the stage is retried and the sector's files are intact. If it repeats, "
        "read the daemon's stderr and `dmesg` (OOM killer) and give the processor more memory or fewer "
        "`concurrent` tasks; then `worker resume --index N`.")
    PC1Failed = CauseInfo(
        _T, "PC1", "PreCommit phase 1 (SDR labelling) failed in the proofs library.",
        "Read `sector debug --logs`; check disk space and memory; resume to re-run PC1.")
    PC2Failed = CauseInfo(
        _T, "PC2", "PreCommit phase 2 (tree building, replica encoding) failed in the proofs library.",
        "Read `sector debug --logs`; resume to re-run PC2 (the sealed file is restored first).")
    C1Failed = CauseInfo(
        _T, "C1", "Commit phase 1 (vanilla proofs) failed: cache files missing or corrupt.",
        "Resume to retry; if the cache is damaged rewind with `--state TicketAssigned` (redo PC1/PC2).")
    C2Failed = CauseInfo(
        _T, "C2", "Commit phase 2 (the SNARK) failed in the proofs library.",
        "Check memory/GPU; resume to re-run C2, or rewind with `--state SeedAssigned` to redo C1.")
    SnapEncodeFailed = CauseInfo(
        _T, "SnapEncode", "Encoding deal data into the CC sector failed.",
        "Check that the CC sector's sealed file and cache are readable in their store; resume.")
    SnapProveFailed = CauseInfo(
        _T, "SnapProve", "Proving the sector update failed.", "Resume to retry; rewind with `--state TreeDBuilt`.")
    TicketExpired = CauseInfo(
        _P, "PreCommit", "The ticket is too old for the pre-commit to land (PC1 to pre-commit took too long).",
        "`worker resume --index N --state TreeDBuilt` draws a new ticket and redoes PC1/PC2; "
        "or `--state Aborted` to abandon the sector.")
    PreCommitRejected = CauseInfo(
        _A, "PreCommit", "The pre-commit was rejected (e.g. comm_d does not match the deals).",
        "The sector is abandoned and its deals return to the pool; check the manager's reason.")
    PreCommitMismatch = CauseInfo(
        _P, "PreCommit", "A different pre-commit for this sector is already on chain.",
        "Rewind with `--state PC2Done` to resubmit, or `--state Aborted`.")
    SeedExpired = CauseInfo(
        _A, "Commit", "The proof came too late after the seed: the pre-commit expired (final deadline).",
        "The sector is abandoned; keep C1/C2 within the seed's validity (see seed_expiry_epochs).")
    ProofRejected = CauseInfo(
        _P, "Commit", "The manager rejected the proof: it does not verify.",
        "`worker resume --index N --state SeedAssigned` redoes C1 and C2 with the same seed.")
    PersistFailed = CauseInfo(
        _T, "Persist", "Copying sealed and cache files into a persist store failed, or the manager found them missing.",
        "Check the [[attached]] stores are mounted and writable; `worker resume --index N`.")
    NoStoreSpace = CauseInfo(
        _T, "Persist", "No [[attached]] persist store has room for the sector.",
        "Free space or attach another store; the thread retries by itself, then `worker resume --index N`.")
    StoreFileConflict = CauseInfo(
        _P, "Persist", "The persist store already holds different files under this sector's name that this "
        "sector job did not write (perhaps the replica of another, proven sector); they are never overwritten.",
        "Find out whose files they are (`damocles-manager sector debug <sector>`); if they are not needed, move "
        "them out of the store (`mv <store>/sealed/<name> <store>/cache/<name> <elsewhere>/`), then "
        "`worker resume --index N`; or `worker resume --index N --state Aborted` to abandon this sector.")
    SnapProofRejected = CauseInfo(
        _P, "SnapUp", "The manager rejected the snap proof.",
        "Rewind with `--state TreeDBuilt` to re-encode, or `--state Aborted`.")
    RebuildMismatch = CauseInfo(
        _P, "Rebuild", "The rebuilt replica's commitment differs from the one on chain.",
        "Check the pieces and ticket the manager handed out; `--state Aborted` to give up.")
    DiskFull = CauseInfo(
        _C, "any", "No space left on the device holding the thread's location or a store.",
        "Free space on the disk, then `worker resume --index N`.")
    ParametersMissing = CauseInfo(
        _C, "C2/SnapProve", "Groth parameter files are missing from the parameter cache.",
        "Run `damocles-worker params generate --sector-size <size>` (test sizes) or install the official files; resume.")
    FinalDeadlineReached = CauseInfo(
        _A, "any", "The manager reports the sector's final deadline passed.", "The sector is abandoned.")
    StateStoreFailed = CauseInfo(
        _C, "any", "The thread's state database could not be written.",
        "Check the thread location's disk and permissions; resume.")
    Unexpected = CauseInfo(
        _P, "any", "An unexpected error (a bug or an unknown condition); the traceback is in the sector log.",
        "Read `sector debug --logs`; resume to retry, rewind with `--state`, or `--state Aborted`.")

    @property
    def level(self) -> FailureLevel:
        return self.value.level

    @property
    def meaning(self) -> str:
        return self.value.meaning

    @property
    def action(self) -> str:
        return self.value.action


class SealingFailure(Exception):
    """Raised by a stage handler: a named cause plus the detail of this occurrence."""

    def __init__(self, cause: FailureCause, detail: str):
        self.cause = cause
        self.detail = detail
        super().__init__(f"{cause.name}: {detail}")


@dataclass(frozen=True)
class Failure:
    """A failure as recorded on the sector and shown to operators."""

    cause: FailureCause
    level: FailureLevel
    detail: str

    def __str__(self) -> str:
        return f"{self.level.value}: {self.cause.name}: {self.detail}"


_OUT_OF_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How the proofs library (Rust std::io errors turned into ProofsError text) and SQLite say it.
_OUT_OF_SPACE_TEXT = ("no space left on device", "os error 28", "disk quota exceeded", "os error 122")


def is_out_of_space(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it was raised from) means a full disk, whatever raised it."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _OUT_OF_SPACE_ERRNOS:
            return True
        if any(t in str(e).lower() for t in _OUT_OF_SPACE_TEXT):
            return True
        e = e.__cause__ or e.__context__
    return False


def describe_all() -> str:
    """The README's failure-cause table, generated from the enum so that the two never drift."""
    rows = ["| cause | level | stage | meaning | what to do |", "|---|---|---|---|---|"]
    for cause in FailureCause:
        rows.append(f"| `{cause.name}` | {cause.level.value} | {cause.value.stage} | {cause.meaning} | {cause.action} |")
    return "\n".join(rows)
