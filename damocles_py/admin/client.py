"""Client of the worker's admin API, used by `damocles-worker worker|sector ...` and tests."""

from __future__ import annotations

import grpc

from damocles_py.admin import worker_admin_pb2 as pb
from damocles_py.admin import worker_admin_pb2_grpc as pb_grpc
from damocles_py.errors import UserError


class AdminClient:
    def __init__(self, address: str, token: str | None = None, timeout: float = 10.0):
        self.address = address
        self.timeout = timeout
        self._metadata = [("authorization", f"Bearer {token}")] if token else []
        self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.WorkerAdminStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise UserError(
                    f"cannot reach the worker's admin API at {self.address}: is the daemon running? "
                    f"(start it with: damocles-worker daemon -c sealing.toml; this CLI speaks gRPC to "
                    f"[worker.admin_server], default port 17891, not to the VenusWorker port 17890)"
                ) from None
            raise UserError(e.details()) from None

    def list(self) -> pb.ListResponse:
        return self._call(self._stub.List, pb.ListRequest())

    def pause(self, index: int) -> pb.PauseResponse:
        return self._call(self._stub.Pause, pb.PauseRequest(index=index))

    def resume(self, index: int, state: str | None = None) -> pb.ResumeResponse:
        return self._call(self._stub.Resume, pb.ResumeRequest(index=index, state=state or ""))

    def sector_debug(self, sector_id: str, logs: bool = False, max_log_bytes: int = 0) -> pb.SectorDebugResponse:
        return self._call(self._stub.SectorDebug,
                          pb.SectorDebugRequest(sector_id=sector_id, logs=logs, max_log_bytes=max_log_bytes))
