"""Thread control shared by both admin APIs: our gRPC `WorkerAdmin` and damocles' `VenusWorker.*`.

One mechanism, so a pause, a resume and the check of a resume state are the same whoever asks:
`damocles-worker worker resume --state Aborted --index 0` (gRPC) and `damocles-manager util worker
resume <worker> 0 Aborted` (VenusWorker) end the sector the same way. damocles-worker does not check
the state a resume names (an unknown one is logged and ignored by the thread); we refuse a state
the sector cannot take now, naming the ones it can. Each server maps the errors below onto its own
protocol (gRPC status codes; JSON-RPC -32602).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from damocles_py.fsm.states import State


class UnknownThread(LookupError):
    def __init__(self, index: int, count: int):
        self.index, self.count = index, count
        super().__init__(f"no sealing thread with index {index}; this worker has indexes 0..{count - 1}"
                         if count else f"no sealing thread with index {index}; this worker has none")


class ResumeRefused(ValueError):
    """The state a resume names cannot be taken now; the message lists the valid ones."""


class ControlledThread(Protocol):
    def pause(self) -> bool: ...
    def resume(self, state: State | None) -> bool: ...
    def resume_refusal(self, state: State | None, name: str) -> str | None: ...


@dataclass(frozen=True)
class ResumeOutcome:
    accepted: bool  # False: the thread was not paused, nothing changed
    state: State | None  # the state it resumes at; None: its current one


class ThreadControl:
    """Pause and resume the threads of a running daemon by index."""

    def __init__(self, threads: Sequence[ControlledThread]):
        self.threads = threads

    def thread(self, index: int) -> ControlledThread:
        if not 0 <= index < len(self.threads):
            raise UnknownThread(index, len(self.threads))
        return self.threads[index]

    def pause(self, index: int) -> bool:
        """True if a pause was requested; False if the thread is already paused or pausing."""
        return self.thread(index).pause()

    def resume(self, index: int, state_name: str | None) -> ResumeOutcome:
        """Resume thread `index`, at `state_name` when given (a rewind, or Aborted to end the sector)."""
        thread = self.thread(index)
        state = None
        if state_name is not None:
            state = State.__members__.get(state_name)
            refusal = thread.resume_refusal(state, state_name)
            if refusal is not None:
                raise ResumeRefused(f"thread {index} {refusal}")
        return ResumeOutcome(thread.resume(state), state)
