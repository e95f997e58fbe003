"""grpc's interop ``grpc.testing.TestService``, served by every test server.

The behaviour follows the *Server* section of grpc's interop test descriptions
(``doc/interop-test-descriptions.md`` in grpc/grpc) and is modelled on grpc's own
Python interop server (``src/python/grpcio_tests/tests/interop/service.py``):

* EmptyCall returns the empty message.
* UnaryCall returns ``response_size`` zero bytes (type COMPRESSABLE, the only type),
  and the server's id (its name, e.g. ``m0``) when ``fill_server_id`` is set.
* StreamingOutputCall / FullDuplexCall send one response per ``ResponseParameters``,
  sleeping ``interval_us`` before each one (Observe ResponseParameters.interval_us);
  FullDuplexCall answers each request as it arrives and ends OK after half-close.
* HalfDuplexCall buffers every request until half-close, then answers them in order.
* StreamingInputCall returns the sum of the payload sizes after half-close.
* Echo Status: a ``response_status`` with a non-zero code ends the call with exactly
  that code and message, before any response for that request is sent, and no
  further request is processed (as grpc's Go interop server does).
* Echo Metadata: ``x-grpc-test-echo-initial`` comes back in the initial metadata and
  ``x-grpc-test-echo-trailing-bin`` in the trailing metadata, unchanged.
* CompressedResponse: ``response_compressed`` (unary) and ``ResponseParameters.compressed``
  (streaming) select gzip for that response; uncompressed responses of a compressed
  stream use ``disable_next_message_compression``.
* UnimplementedCall fails with UNIMPLEMENTED (the method is declared, not implemented).

Not implemented: CompressedRequest (``expect_compressed``). A grpcio servicer cannot see
whether a request message arrived with the compressed flag set, so it cannot fail an
uncompressed one with INVALID_ARGUMENT as the descriptions require; CacheableUnaryCall
(needs a caching HTTP proxy) keeps the generated UNIMPLEMENTED answer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Final

import grpc

from eagle.testing.interop import empty_pb2, messages_pb2, test_pb2_grpc

__all__ = [
    "ECHO_INITIAL_KEY",
    "ECHO_TRAILING_KEY",
    "TEST_SERVICE",
    "TestService",
    "add_to_server",
]

#: Full name of the interop service (the wire method prefix is ``/grpc.testing.TestService/``).
TEST_SERVICE: Final = "grpc.testing.TestService"
#: Request metadata key echoed back as initial metadata (Echo Metadata).
ECHO_INITIAL_KEY: Final = "x-grpc-test-echo-initial"
#: Request metadata key echoed back as trailing metadata (Echo Metadata).
ECHO_TRAILING_KEY: Final = "x-grpc-test-echo-trailing-bin"

_STATUS_BY_VALUE: Final[dict[int, grpc.StatusCode]] = {
    code.value[0]: code for code in grpc.StatusCode
}
_US_PER_S: Final = 1_000_000


class _Rpc:
    """Per-RPC helper: a sleep that ends early when the RPC ends (cancel, deadline)."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context
        self._ended = threading.Event()
        if not context.add_callback(self._ended.set):
            self._ended.set()

    def sleep_us(self, micros: int) -> bool:
        """Sleep ``micros`` microseconds; return False if the RPC ended meanwhile."""
        if micros > 0:
            self._ended.wait(micros / _US_PER_S)
        return not self._ended.is_set() and self._context.is_active()


def _echo_metadata(context: grpc.ServicerContext) -> None:
    """Echo Metadata: send the two test keys back, initial and trailing."""
    invocation = context.invocation_metadata() or ()
    initial = tuple((k, v) for k, v in invocation if k == ECHO_INITIAL_KEY)
    trailing = tuple((k, v) for k, v in invocation if k == ECHO_TRAILING_KEY)
    if initial:
        context.send_initial_metadata(initial)
    if trailing:
        context.set_trailing_metadata(trailing)


def _echo_status(
    status: messages_pb2.EchoStatus, has_status: bool, context: grpc.ServicerContext
) -> None:
    """Echo Status: end the RPC with the requested non-OK code and message."""
    if not has_status or status.code == 0:
        return
    code = _STATUS_BY_VALUE.get(status.code, grpc.StatusCode.UNKNOWN)
    context.abort(code, status.message)


def _zeros(size: int) -> messages_pb2.Payload:
    return messages_pb2.Payload(type=messages_pb2.COMPRESSABLE, body=b"\x00" * size)


def _stream_responses(
    requests: Iterable[messages_pb2.StreamingOutputCallRequest],
    context: grpc.ServicerContext,
) -> Iterator[messages_pb2.StreamingOutputCallResponse]:
    """Answer each request's ResponseParameters in order (shared by the streaming calls)."""
    rpc = _Rpc(context)
    compression_on = False
    for request in requests:
        _echo_status(request.response_status, request.HasField("response_status"), context)
        for params in request.response_parameters:
            if not rpc.sleep_us(params.interval_us):
                return
            if params.compressed.value:
                if not compression_on:
                    context.set_compression(grpc.Compression.Gzip)
                    compression_on = True
            elif compression_on:
                context.disable_next_message_compression()
            yield messages_pb2.StreamingOutputCallResponse(payload=_zeros(params.size))


class TestService(test_pb2_grpc.TestServiceServicer):
    """The ``grpc.testing.TestService`` servicer (see the module docstring).

    ``server_id`` is what ``SimpleResponse.server_id`` reports when the request sets
    ``fill_server_id``: unique per server process, the same for all its calls.
    """

    def __init__(self, server_id: str = "") -> None:
        self._server_id = server_id

    def EmptyCall(self, request: empty_pb2.Empty, context: grpc.ServicerContext) -> empty_pb2.Empty:
        """One empty request, one empty response."""
        _echo_metadata(context)
        return empty_pb2.Empty()

    def UnaryCall(
        self, request: messages_pb2.SimpleRequest, context: grpc.ServicerContext
    ) -> messages_pb2.SimpleResponse:
        """``response_size`` zero bytes, or the requested status."""
        _echo_metadata(context)
        _echo_status(request.response_status, request.HasField("response_status"), context)
        if request.response_type != messages_pb2.COMPRESSABLE:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unsupported response_type")
        if request.response_compressed.value:
            context.set_compression(grpc.Compression.Gzip)
        return messages_pb2.SimpleResponse(
            payload=_zeros(request.response_size),
            server_id=self._server_id if request.fill_server_id else "",
        )

    def StreamingOutputCall(
        self, request: messages_pb2.StreamingOutputCallRequest, context: grpc.ServicerContext
    ) -> Iterator[messages_pb2.StreamingOutputCallResponse]:
        """One response per ResponseParameters, then OK."""
        _echo_metadata(context)
        yield from _stream_responses((request,), context)

    def StreamingInputCall(
        self,
        request_iterator: Iterator[messages_pb2.StreamingInputCallRequest],
        context: grpc.ServicerContext,
    ) -> messages_pb2.StreamingInputCallResponse:
        """After half-close: the sum of every request's payload size."""
        _echo_metadata(context)
        total = sum(len(request.payload.body) for request in request_iterator)
        return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=total)

    def FullDuplexCall(
        self,
        request_iterator: Iterator[messages_pb2.StreamingOutputCallRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[messages_pb2.StreamingOutputCallResponse]:
        """Answer each request as it arrives; OK after half-close."""
        _echo_metadata(context)
        yield from _stream_responses(request_iterator, context)

    def HalfDuplexCall(
        self,
        request_iterator: Iterator[messages_pb2.StreamingOutputCallRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[messages_pb2.StreamingOutputCallResponse]:
        """Buffer every request until half-close, then answer them in order."""
        _echo_metadata(context)
        buffered = list(request_iterator)
        yield from _stream_responses(buffered, context)

    def UnimplementedCall(
        self, request: empty_pb2.Empty, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        """Declared by the service but not implemented: always UNIMPLEMENTED."""
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        raise AssertionError("unreachable: abort raises")  # pragma: no cover


def add_to_server(server: grpc.Server, server_id: str = "") -> None:
    """Register a :class:`TestService` reporting ``server_id`` on ``server``."""
    test_pb2_grpc.add_TestServiceServicer_to_server(TestService(server_id), server)  # type: ignore[no-untyped-call]
