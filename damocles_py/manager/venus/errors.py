"""How answers of damocles-manager's `Venus.*` API reach the worker's failure handling.

damocles-worker's rule (reference §1.6): JSON-RPC error code 11001 ("sector state not found")
aborts the sector; every other error, a transport failure and an unparsable answer are temporary.
Here:

- `SectorStateNotFound` (code 11001) is both a `SealingFailure` of the abort-level cause
  `SectorAbortedByManager` and a `ManagerRequestError`. Raised by a stage handler, the runtime's
  `classify` takes the cause and moves the sector to Aborted without reporting it (the manager
  has no state for it); raised by `report_finalized`/`report_aborted`, the runtime's
  `_tell_manager` takes it as a refusal and finishes the sector locally. No runtime change needed.
- `VenusRPCError` (any other code) and `VenusResponseError` (a malformed answer, naming the
  method and the field) are `ManagerUnavailable`: temporary, retried after `recover_interval`.
"""

from __future__ import annotations

from damocles_py.fsm.failure import FailureCause, SealingFailure
from damocles_py.manager.interface import ManagerRequestError, ManagerUnavailable

# damocles-manager core/api_error_codes.go: APIErrCodeSectorStateNotFound = jsonrpc.ErrorCode(11001)
ERR_SECTOR_STATE_NOT_FOUND = 11001
ERR_METHOD_NOT_FOUND = -32601
ERR_INVALID_PARAMS = -32602
# The methods' params changed between damocles versions (e.g. WaitSeed gained the proof type): a
# manager of another version answers these codes, for ever; say so rather than only "retrying".
_VERSION_HINT = {
    ERR_METHOD_NOT_FOUND: " (is the damocles-manager of version 0.13? this worker speaks its API)",
    ERR_INVALID_PARAMS: " (is the damocles-manager of version 0.13? this worker speaks its API)",
}


class VenusRPCError(ManagerUnavailable):
    """The manager answered with a JSON-RPC error other than 11001: temporary."""

    def __init__(self, method: str, code: int, message: str, url: str):
        self.method, self.code, self.message = method, code, message
        super().__init__(f"{method} failed at the damocles-manager {url}: error code {code}: {message}"
                         f"{_VERSION_HINT.get(code, '')}")


class VenusResponseError(ManagerUnavailable):
    """The manager's answer is not what the protocol says (bad JSON-RPC envelope, a field of the
    wrong type): temporary, like damocles-worker's parse errors. `path` names the field."""

    def __init__(self, method: str, path: str, problem: str, url: str):
        self.method, self.path, self.problem = method, path, problem
        super().__init__(f"{method}: malformed answer from the damocles-manager {url}: {path}: {problem}")


class SectorStateNotFound(SealingFailure, ManagerRequestError):
    """Error code 11001: the manager has no state for the sector; the sector is aborted."""

    def __init__(self, method: str, message: str):
        self.method = method
        super().__init__(FailureCause.SectorAbortedByManager,
                         f"{method}: the damocles-manager has no state for this sector "
                         f"(error code {ERR_SECTOR_STATE_NOT_FOUND}: {message})")
