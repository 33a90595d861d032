"""A gRPC server interceptor shared by the manager's and the admin API's servers.

grpcio answers a request whose bytes do not decode as its message type with INTERNAL ("Exception
deserializing request!"), as if the server had failed. `StrictDecoding` decodes the request
itself and answers INVALID_ARGUMENT naming the message type: the caller sent something wrong.
"""

from __future__ import annotations

import grpc


class StrictDecoding(grpc.ServerInterceptor):
    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler  # unknown method, streaming, or raw already: untouched
        decode, behavior = handler.request_deserializer, handler.unary_unary
        method = handler_call_details.method.rpartition("/")[2]

        def strict(raw: bytes, context: grpc.ServicerContext):
            try:
                request = decode(raw)
            except Exception as e:  # noqa: BLE001 - protobuf's DecodeError, or anything a bad payload raises
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"malformed request: {method}: cannot decode it ({type(e).__name__}: {e})")
            return behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(strict, request_deserializer=None,
                                                   response_serializer=handler.response_serializer)
