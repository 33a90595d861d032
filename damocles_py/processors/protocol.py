"""The child processor protocol: length-prefixed pickled dataclasses over the child's stdin/stdout.

Both ends are this package, so pickle carries the stage functions' own argument, output and error
types unchanged (a `PC1Output` in, a `PC2Output` back, a `ProofsError` raised on the far side is
raised here). The child speaks only after `Ready`; its stderr is the daemon's.
"""

from __future__ import annotations

import pickle
import struct
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO

_HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 31  # a 64GiB sector's C1 output is well under this


class ProtocolError(Exception):
    """The other side sent something that is not a frame of this protocol (or went away mid-frame)."""


@dataclass(frozen=True)
class Ready:
    """The child's first frame: it is set up (pinned, memory policy) and takes tasks."""
    stage: str
    pid: int
    cpus: tuple[int, ...]  # the CPUs it may run on, as the kernel reports after pinning
    notes: tuple[str, ...]  # what setup did or could not do (cgroup, NUMA), for the daemon's log


@dataclass(frozen=True)
class Task:
    id: int
    function: str  # a name in `tasks.TASKS`
    args: tuple


@dataclass(frozen=True)
class LogLine:
    """A log record the task emitted (the proofs library's lines included), for the sector's log."""
    id: int
    level: int
    logger: str
    message: str


@dataclass(frozen=True)
class Done:
    id: int
    value: Any


@dataclass(frozen=True)
class Failed:
    id: int
    error: BaseException


Frame = Ready | Task | LogLine | Done | Failed


class FrameWriter:
    """Writes whole frames; safe to share between threads."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, frame: Frame) -> None:
        body = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._stream.write(_HEADER.pack(len(body)) + body)
            self._stream.flush()


def read_frame(stream: BinaryIO) -> Frame | None:
    """The next frame, or None at a clean end of stream (the other side closed or died)."""
    header = stream.read(_HEADER.size)
    if not header:
        return None
    if len(header) < _HEADER.size:
        raise ProtocolError("stream ended inside a frame header")
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes is over the {MAX_FRAME} limit")
    body = stream.read(size)
    if len(body) < size:
        raise ProtocolError(f"stream ended inside a frame ({len(body)} of {size} bytes)")
    frame = pickle.loads(body)
    if not isinstance(frame, (Ready, Task, LogLine, Done, Failed)):
        raise ProtocolError(f"unexpected frame type {type(frame).__name__}")
    return frame


class RemoteError(RuntimeError):
    """An error raised in a child that could not cross whole: its type name and message."""


def portable_error(error: BaseException) -> BaseException:
    """`error` if it survives a pickle round trip, else a RemoteError with its type and message."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RemoteError(f"{type(error).__name__}: {error}")
