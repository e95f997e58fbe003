"""grpc's interop client test cases, each once for a ``grpc.Channel`` and once for a
``grpc.aio.Channel``.

The cases and what they assert come from grpc's interop test descriptions
(``doc/interop-test-descriptions.md`` in grpc/grpc, the *Client* section) and are modelled
on grpc's own Python interop clients (``src/python/grpcio_tests/tests/interop/methods.py``
and ``tests_aio/interop/methods.py``). They run against
:class:`eagle.testing.interop_service.TestService`, which every
:mod:`eagle.testing.server` serves, so they work on a plain grpc channel (the control)
and on an eagle channel alike::

    run_sync("large_unary", channel)
    await run_aio("ping_pong", aio_channel)

Every RPC carries a :data:`CALL_TIMEOUT` deadline (except the deadline case) so a
broken channel fails a case instead of hanging it. A failed assertion raises
:class:`InteropFailure`, whose message names the case and the expected and received
values.

Which cases grpcio can express
------------------------------
The 16 cases here: empty_unary, large_unary, client_streaming, server_streaming,
ping_pong, empty_stream, timeout_on_sleeping_server, cancel_after_begin,
cancel_after_first_response, custom_metadata, status_code_and_message,
special_status_message, unimplemented_method, unimplemented_service,
server_compressed_unary and server_compressed_streaming.

* server_compressed_unary / server_compressed_streaming: the *server* chooses the
  compression per response (``ServicerContext.set_compression`` and
  ``disable_next_message_compression``), so grpcio can run them. A grpcio client cannot
  read a received message's compressed flag, so these cases assert what the descriptions
  require "if supported by the implementation" aside: the calls succeed and the payload
  sizes (and order, and count) are exact.
* client_compressed_unary / client_compressed_streaming are left out. Both start with a
  probe that must fail with INVALID_ARGUMENT because the server sees an *uncompressed*
  message with ``expect_compressed`` set; a grpcio server cannot see a request message's
  compressed flag, and the streaming case also needs per-message compression on the
  client, which grpcio's stream calls do not offer.
* The auth cases (compute_engine_creds, jwt_token_creds, oauth2_auth_token,
  per_rpc_creds, google_default_credentials, compute_engine_channel_credentials) need
  Google production credentials, and cacheable_unary needs a caching HTTP proxy.

:data:`CALLS` lists how many application calls of each kind (``unary_unary``,
``unary_stream``, ``stream_unary``, ``stream_stream``) a case makes, so a test can check
that interceptors saw each call exactly once; :data:`AIO_CALLS` is the same for the aio
cases, except where grpc.aio itself shows interceptors fewer calls (see there).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Final

import grpc

from eagle.testing.interop import empty_pb2, messages_pb2, test_pb2_grpc
from eagle.testing.interop_service import ECHO_INITIAL_KEY, ECHO_TRAILING_KEY

__all__ = [
    "AIO_CALLS",
    "AIO_CASES",
    "CALLS",
    "CALL_TIMEOUT",
    "CASES",
    "SPECIAL_STATUS_MESSAGE",
    "SYNC_CASES",
    "InteropFailure",
    "run_aio",
    "run_sync",
]

#: Deadline, in seconds, of every call but timeout_on_sleeping_server's.
CALL_TIMEOUT: Final = 10.0
#: The message of special_status_message: whitespace, a BMP and a non-BMP character.
SPECIAL_STATUS_MESSAGE: Final = (
    "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
)

_LARGE_REQUEST: Final = 271828
_LARGE_RESPONSE: Final = 314159
_STREAM_REQUEST_SIZES: Final = (27182, 8, 1828, 45904)
_STREAM_RESPONSE_SIZES: Final = (31415, 9, 2653, 58979)
_COMPRESSED_STREAM: Final = ((True, 31415), (False, 92653))
_STATUS_MESSAGE: Final = "test status message"
_INITIAL_VALUE: Final = "test_initial_metadata_value"
_TRAILING_VALUE: Final = b"\xab\xab\xab"
_TIMEOUT_ON_SLEEPING_SERVER: Final = 0.001


class InteropFailure(AssertionError):
    """An interop case saw something its description does not allow."""


def _expect(ok: bool, what: str, expected: object, got: object) -> None:
    if not ok:
        raise InteropFailure(f"{what}: expected {expected!r}, got {got!r}")


def _expect_code(got: object, expected: grpc.StatusCode, what: str = "status code") -> None:
    _expect(got is expected, what, expected, got)


def _expect_details(got: object, expected: str, what: str = "status details") -> None:
    _expect(got == expected, what, expected, got)


def _zeros(size: int) -> messages_pb2.Payload:
    return messages_pb2.Payload(body=b"\x00" * size)


def _check_payload(payload: messages_pb2.Payload, size: int, what: str) -> None:
    _expect(payload.type == messages_pb2.COMPRESSABLE, f"{what} payload type", 0, payload.type)
    _expect(len(payload.body) == size, f"{what} payload size", size, len(payload.body))
    zeros = payload.body.count(0)
    _expect(zeros == size, f"{what} payload zero bytes", size, zeros)


def _large_request(**fields: Any) -> messages_pb2.SimpleRequest:
    return messages_pb2.SimpleRequest(
        response_type=messages_pb2.COMPRESSABLE,
        response_size=_LARGE_RESPONSE,
        payload=_zeros(_LARGE_REQUEST),
        **fields,
    )


def _status_request(message: str) -> messages_pb2.SimpleRequest:
    return messages_pb2.SimpleRequest(
        response_type=messages_pb2.COMPRESSABLE,
        response_size=1,
        payload=_zeros(1),
        response_status=messages_pb2.EchoStatus(
            code=grpc.StatusCode.UNKNOWN.value[0], message=message
        ),
    )


def _status_stream_request() -> messages_pb2.StreamingOutputCallRequest:
    return messages_pb2.StreamingOutputCallRequest(
        response_type=messages_pb2.COMPRESSABLE,
        response_parameters=[messages_pb2.ResponseParameters(size=1)],
        payload=_zeros(1),
        response_status=messages_pb2.EchoStatus(
            code=grpc.StatusCode.UNKNOWN.value[0], message=_STATUS_MESSAGE
        ),
    )


def _ping(response_size: int, payload_size: int) -> messages_pb2.StreamingOutputCallRequest:
    return messages_pb2.StreamingOutputCallRequest(
        response_type=messages_pb2.COMPRESSABLE,
        response_parameters=[messages_pb2.ResponseParameters(size=response_size)],
        payload=_zeros(payload_size),
    )


def _server_streaming_request() -> messages_pb2.StreamingOutputCallRequest:
    return messages_pb2.StreamingOutputCallRequest(
        response_type=messages_pb2.COMPRESSABLE,
        response_parameters=[
            messages_pb2.ResponseParameters(size=size) for size in _STREAM_RESPONSE_SIZES
        ],
    )


def _compressed_streaming_request() -> messages_pb2.StreamingOutputCallRequest:
    return messages_pb2.StreamingOutputCallRequest(
        response_type=messages_pb2.COMPRESSABLE,
        response_parameters=[
            messages_pb2.ResponseParameters(
                size=size, compressed=messages_pb2.BoolValue(value=compressed)
            )
            for compressed, size in _COMPRESSED_STREAM
        ],
    )


def _input_requests() -> list[messages_pb2.StreamingInputCallRequest]:
    return [
        messages_pb2.StreamingInputCallRequest(payload=_zeros(size))
        for size in _STREAM_REQUEST_SIZES
    ]


_CUSTOM_METADATA: Final = ((ECHO_INITIAL_KEY, _INITIAL_VALUE), (ECHO_TRAILING_KEY, _TRAILING_VALUE))


def _check_echoed_metadata(initial: Any, trailing: Any, what: str) -> None:
    initial_map = dict(initial or ())
    trailing_map = dict(trailing or ())
    _expect(
        initial_map.get(ECHO_INITIAL_KEY) == _INITIAL_VALUE,
        f"{what} initial metadata {ECHO_INITIAL_KEY}",
        _INITIAL_VALUE,
        initial_map.get(ECHO_INITIAL_KEY),
    )
    _expect(
        trailing_map.get(ECHO_TRAILING_KEY) == _TRAILING_VALUE,
        f"{what} trailing metadata {ECHO_TRAILING_KEY}",
        _TRAILING_VALUE,
        trailing_map.get(ECHO_TRAILING_KEY),
    )


def _test_stub(channel: Any) -> Any:
    return test_pb2_grpc.TestServiceStub(channel)  # type: ignore[no-untyped-call]


def _unimplemented_stub(channel: Any) -> Any:
    return test_pb2_grpc.UnimplementedServiceStub(channel)  # type: ignore[no-untyped-call]


# ------------------------------------------------------------------------------- sync


class _Pipe:
    """A request iterator fed from the test thread (grpc's interop ``_Pipe``)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._values: list[Any] = []
        self._open = True

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        with self._cond:
            while not self._values and self._open:
                self._cond.wait()
            if self._values:
                return self._values.pop(0)
            raise StopIteration

    def add(self, value: Any) -> None:
        """Queue one request."""
        with self._cond:
            self._values.append(value)
            self._cond.notify()

    def close(self) -> None:
        """Half-close: the iterator ends once the queue is drained."""
        with self._cond:
            self._open = False
            self._cond.notify()

    def __enter__(self) -> _Pipe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sync_expect_end(responses: Any, what: str) -> None:
    """The response iterator has no further message and the call ended OK."""
    try:
        extra = next(responses)
    except StopIteration:
        pass
    else:
        raise InteropFailure(f"{what}: expected no further response, got {extra!r}")
    _expect_code(responses.code(), grpc.StatusCode.OK, f"{what} status code")


def sync_empty_unary(channel: grpc.Channel) -> None:
    """empty_unary: EmptyCall with the default Empty succeeds with a non-null Empty."""
    response = _test_stub(channel).EmptyCall(empty_pb2.Empty(), timeout=CALL_TIMEOUT)
    _expect(isinstance(response, empty_pb2.Empty), "response type", "Empty", type(response))


def sync_large_unary(channel: grpc.Channel) -> None:
    """large_unary: 271828 zero bytes up, 314159 zero bytes back."""
    response = _test_stub(channel).UnaryCall(_large_request(), timeout=CALL_TIMEOUT)
    _check_payload(response.payload, _LARGE_RESPONSE, "response")


def sync_client_streaming(channel: grpc.Channel) -> None:
    """client_streaming: four requests, aggregated_payload_size 74922."""
    response = _test_stub(channel).StreamingInputCall(iter(_input_requests()), timeout=CALL_TIMEOUT)
    _expect(
        response.aggregated_payload_size == 74922,
        "aggregated_payload_size",
        74922,
        response.aggregated_payload_size,
    )


def sync_server_streaming(channel: grpc.Channel) -> None:
    """server_streaming: exactly four responses sized 31415, 9, 2653, 58979."""
    call = _test_stub(channel).StreamingOutputCall(
        _server_streaming_request(), timeout=CALL_TIMEOUT
    )
    sizes = [len(r.payload.body) for r in call]
    _expect(sizes == list(_STREAM_RESPONSE_SIZES), "response sizes", _STREAM_RESPONSE_SIZES, sizes)
    _expect_code(call.code(), grpc.StatusCode.OK)


def sync_ping_pong(channel: grpc.Channel) -> None:
    """ping_pong: four request/response rounds on FullDuplexCall, then half-close."""
    with _Pipe() as pipe:
        responses = _test_stub(channel).FullDuplexCall(pipe, timeout=CALL_TIMEOUT)
        for n, (size, payload) in enumerate(
            zip(_STREAM_RESPONSE_SIZES, _STREAM_REQUEST_SIZES, strict=True)
        ):
            pipe.add(_ping(size, payload))
            _check_payload(next(responses).payload, size, f"response {n}")
    _sync_expect_end(responses, "after half-close")


def sync_empty_stream(channel: grpc.Channel) -> None:
    """empty_stream: FullDuplexCall half-closed at once gets zero responses, OK."""
    with _Pipe() as pipe:
        responses = _test_stub(channel).FullDuplexCall(pipe, timeout=CALL_TIMEOUT)
    _sync_expect_end(responses, "empty stream")


def sync_timeout_on_sleeping_server(channel: grpc.Channel) -> None:
    """timeout_on_sleeping_server: a 1 ms FullDuplexCall ends DEADLINE_EXCEEDED."""
    with _Pipe() as pipe:
        responses = _test_stub(channel).FullDuplexCall(pipe, timeout=_TIMEOUT_ON_SLEEPING_SERVER)
        pipe.add(
            messages_pb2.StreamingOutputCallRequest(
                response_type=messages_pb2.COMPRESSABLE, payload=_zeros(27182)
            )
        )
        try:
            got = next(responses)
        except grpc.RpcError as err:
            _expect_code(err.code(), grpc.StatusCode.DEADLINE_EXCEEDED, "raised status code")
        else:
            raise InteropFailure(f"expected DEADLINE_EXCEEDED, got a response {got!r}")
    _expect_code(responses.code(), grpc.StatusCode.DEADLINE_EXCEEDED)


def sync_cancel_after_begin(channel: grpc.Channel) -> None:
    """cancel_after_begin: StreamingInputCall cancelled before any request: CANCELLED."""
    with _Pipe() as pipe:
        future = _test_stub(channel).StreamingInputCall.future(pipe, timeout=CALL_TIMEOUT)
        future.cancel()
        _expect(future.cancelled() is True, "cancelled()", True, future.cancelled())
        _expect_code(future.code(), grpc.StatusCode.CANCELLED)


def sync_cancel_after_first_response(channel: grpc.Channel) -> None:
    """cancel_after_first_response: FullDuplexCall cancelled after one response."""
    with _Pipe() as pipe:
        responses = _test_stub(channel).FullDuplexCall(pipe, timeout=CALL_TIMEOUT)
        pipe.add(_ping(_STREAM_RESPONSE_SIZES[0], _STREAM_REQUEST_SIZES[0]))
        next(responses)
        responses.cancel()
        try:
            got = next(responses)
        except grpc.RpcError as err:
            _expect_code(err.code(), grpc.StatusCode.CANCELLED, "raised status code")
        else:
            raise InteropFailure(f"expected the call to be cancelled, got {got!r}")
    _expect_code(responses.code(), grpc.StatusCode.CANCELLED)


def sync_custom_metadata(channel: grpc.Channel) -> None:
    """custom_metadata: the echo keys come back on UnaryCall and FullDuplexCall."""
    stub = _test_stub(channel)
    future = stub.UnaryCall.future(
        _large_request(), metadata=_CUSTOM_METADATA, timeout=CALL_TIMEOUT
    )
    _check_payload(future.result().payload, _LARGE_RESPONSE, "UnaryCall response")
    _check_echoed_metadata(future.initial_metadata(), future.trailing_metadata(), "UnaryCall")
    with _Pipe() as pipe:
        responses = stub.FullDuplexCall(pipe, metadata=_CUSTOM_METADATA, timeout=CALL_TIMEOUT)
        pipe.add(_ping(_LARGE_RESPONSE, _LARGE_REQUEST))
        _check_payload(next(responses).payload, _LARGE_RESPONSE, "FullDuplexCall response")
    _sync_expect_end(responses, "FullDuplexCall")
    _check_echoed_metadata(
        responses.initial_metadata(), responses.trailing_metadata(), "FullDuplexCall"
    )


def _sync_check_unary_status(future: Any, message: str) -> None:
    _expect_code(future.code(), grpc.StatusCode.UNKNOWN, "UnaryCall status code")
    _expect_details(future.details(), message, "UnaryCall status details")
    err = future.exception()
    _expect(isinstance(err, grpc.RpcError), "UnaryCall exception()", "a grpc.RpcError", err)
    _expect_code(err.code(), grpc.StatusCode.UNKNOWN, "UnaryCall exception().code()")
    _expect_details(err.details(), message, "UnaryCall exception().details()")


def sync_status_code_and_message(channel: grpc.Channel) -> None:
    """status_code_and_message: UNKNOWN "test status message" on UnaryCall and FullDuplexCall."""
    stub = _test_stub(channel)
    future = stub.UnaryCall.future(_status_request(_STATUS_MESSAGE), timeout=CALL_TIMEOUT)
    _sync_check_unary_status(future, _STATUS_MESSAGE)
    with _Pipe() as pipe:
        responses = stub.FullDuplexCall(pipe, timeout=CALL_TIMEOUT)
        pipe.add(_status_stream_request())
    _expect_code(responses.code(), grpc.StatusCode.UNKNOWN, "FullDuplexCall status code")
    _expect_details(responses.details(), _STATUS_MESSAGE, "FullDuplexCall status details")


def sync_special_status_message(channel: grpc.Channel) -> None:
    """special_status_message: whitespace and Unicode in the status message survive."""
    future = _test_stub(channel).UnaryCall.future(
        _status_request(SPECIAL_STATUS_MESSAGE), timeout=CALL_TIMEOUT
    )
    _sync_check_unary_status(future, SPECIAL_STATUS_MESSAGE)


def sync_unimplemented_method(channel: grpc.Channel) -> None:
    """unimplemented_method: TestService/UnimplementedCall ends UNIMPLEMENTED."""
    future = _test_stub(channel).UnimplementedCall.future(empty_pb2.Empty(), timeout=CALL_TIMEOUT)
    _expect_code(future.code(), grpc.StatusCode.UNIMPLEMENTED)


def sync_unimplemented_service(channel: grpc.Channel) -> None:
    """unimplemented_service: UnimplementedService/UnimplementedCall ends UNIMPLEMENTED."""
    future = _unimplemented_stub(channel).UnimplementedCall.future(
        empty_pb2.Empty(), timeout=CALL_TIMEOUT
    )
    _expect_code(future.code(), grpc.StatusCode.UNIMPLEMENTED)


def sync_server_compressed_unary(channel: grpc.Channel) -> None:
    """server_compressed_unary: compressed and uncompressed 314159-byte responses."""
    stub = _test_stub(channel)
    for compressed in (True, False):
        request = _large_request(response_compressed=messages_pb2.BoolValue(value=compressed))
        response = stub.UnaryCall(request, timeout=CALL_TIMEOUT)
        _check_payload(response.payload, _LARGE_RESPONSE, f"response (compressed={compressed})")


def sync_server_compressed_streaming(channel: grpc.Channel) -> None:
    """server_compressed_streaming: exactly two responses, 31415 and 92653 bytes."""
    call = _test_stub(channel).StreamingOutputCall(
        _compressed_streaming_request(), timeout=CALL_TIMEOUT
    )
    sizes = [len(r.payload.body) for r in call]
    want = [size for _, size in _COMPRESSED_STREAM]
    _expect(sizes == want, "response sizes", want, sizes)
    _expect_code(call.code(), grpc.StatusCode.OK)


# -------------------------------------------------------------------------------- aio


async def _aio_expect_eof(call: Any, what: str) -> None:
    got = await call.read()
    _expect(got is grpc.aio.EOF, f"{what}: next read", "EOF", got)
    _expect_code(await call.code(), grpc.StatusCode.OK, f"{what} status code")


async def aio_empty_unary(channel: grpc.aio.Channel) -> None:
    """empty_unary (aio)."""
    response = await _test_stub(channel).EmptyCall(empty_pb2.Empty(), timeout=CALL_TIMEOUT)
    _expect(isinstance(response, empty_pb2.Empty), "response type", "Empty", type(response))


async def aio_large_unary(channel: grpc.aio.Channel) -> None:
    """large_unary (aio)."""
    response = await _test_stub(channel).UnaryCall(_large_request(), timeout=CALL_TIMEOUT)
    _check_payload(response.payload, _LARGE_RESPONSE, "response")


async def aio_client_streaming(channel: grpc.aio.Channel) -> None:
    """client_streaming (aio): requests from an async generator."""

    async def requests() -> Any:
        for request in _input_requests():
            yield request

    response = await _test_stub(channel).StreamingInputCall(requests(), timeout=CALL_TIMEOUT)
    _expect(
        response.aggregated_payload_size == 74922,
        "aggregated_payload_size",
        74922,
        response.aggregated_payload_size,
    )


async def aio_server_streaming(channel: grpc.aio.Channel) -> None:
    """server_streaming (aio): read() four times, then EOF."""
    call = _test_stub(channel).StreamingOutputCall(
        _server_streaming_request(), timeout=CALL_TIMEOUT
    )
    for n, size in enumerate(_STREAM_RESPONSE_SIZES):
        response = await call.read()
        _expect(response is not grpc.aio.EOF, f"response {n}", "a message", response)
        _check_payload(response.payload, size, f"response {n}")
    await _aio_expect_eof(call, "after four responses")


async def aio_ping_pong(channel: grpc.aio.Channel) -> None:
    """ping_pong (aio): write/read four times, done_writing, OK with empty details."""
    call = _test_stub(channel).FullDuplexCall(timeout=CALL_TIMEOUT)
    for n, (size, payload) in enumerate(
        zip(_STREAM_RESPONSE_SIZES, _STREAM_REQUEST_SIZES, strict=True)
    ):
        await call.write(_ping(size, payload))
        response = await call.read()
        _expect(response is not grpc.aio.EOF, f"response {n}", "a message", response)
        _check_payload(response.payload, size, f"response {n}")
    await call.done_writing()
    await _aio_expect_eof(call, "after half-close")
    _expect_details(await call.details(), "")


async def aio_empty_stream(channel: grpc.aio.Channel) -> None:
    """empty_stream (aio)."""
    call = _test_stub(channel).FullDuplexCall(timeout=CALL_TIMEOUT)
    await call.done_writing()
    await _aio_expect_eof(call, "empty stream")


def _aio_send_after_end(err: grpc.aio.AioRpcError) -> bool:
    """grpc.aio's own report of a message sent on a call that had already ended: Core
    fails the send batch and grpc.aio replaces the call's status with INTERNAL "Internal
    error from Core" (``grpc/aio/_call.py``, ``_write`` -> ``set_internal_error``), so the
    DEADLINE_EXCEEDED the call ended with can no longer be read from it."""
    return (
        err.code() is grpc.StatusCode.INTERNAL
        and err.details() == "Internal error from Core"
        and "SendMessage" in (err.debug_error_string() or "")
    )


async def aio_timeout_on_sleeping_server(channel: grpc.aio.Channel) -> None:
    """timeout_on_sleeping_server (aio): a 1 ms FullDuplexCall ends DEADLINE_EXCEEDED.

    The deadline may pass before the request is written, so a failing write is part of
    the expected end: InvalidStateError on a finished call, or grpc.aio's INTERNAL for a
    send onto a call that had just ended (see :func:`_aio_send_after_end`; a loaded
    machine hits it, plain grpc.aio as much as eagle).
    """
    call = _test_stub(channel).FullDuplexCall(timeout=_TIMEOUT_ON_SLEEPING_SERVER)
    request = messages_pb2.StreamingOutputCallRequest(
        response_type=messages_pb2.COMPRESSABLE, payload=_zeros(27182)
    )
    try:
        await call.write(request)
        got = await call.read()
    except grpc.aio.AioRpcError as err:
        if _aio_send_after_end(err):
            return
        _expect_code(err.code(), grpc.StatusCode.DEADLINE_EXCEEDED, "raised status code")
    except asyncio.InvalidStateError:
        pass
    else:
        raise InteropFailure(f"expected DEADLINE_EXCEEDED, got a read result {got!r}")
    _expect_code(await call.code(), grpc.StatusCode.DEADLINE_EXCEEDED)


async def aio_cancel_after_begin(channel: grpc.aio.Channel) -> None:
    """cancel_after_begin (aio): StreamingInputCall cancelled at once: CANCELLED."""
    call = _test_stub(channel).StreamingInputCall(timeout=CALL_TIMEOUT)
    call.cancel()
    _expect_code(await call.code(), grpc.StatusCode.CANCELLED)
    # only once the call has settled: an intercepted grpc.aio call is not cancelled()
    # until its interceptor task has run
    _expect(call.cancelled() is True, "cancelled()", True, call.cancelled())


async def aio_cancel_after_first_response(channel: grpc.aio.Channel) -> None:
    """cancel_after_first_response (aio): the next read raises CancelledError."""
    call = _test_stub(channel).FullDuplexCall(timeout=CALL_TIMEOUT)
    await call.write(_ping(_STREAM_RESPONSE_SIZES[0], _STREAM_REQUEST_SIZES[0]))
    await call.read()
    call.cancel()
    try:
        got = await call.read()
    except asyncio.CancelledError:
        pass
    else:
        raise InteropFailure(f"expected asyncio.CancelledError from read(), got {got!r}")
    _expect_code(await call.code(), grpc.StatusCode.CANCELLED)


async def aio_custom_metadata(channel: grpc.aio.Channel) -> None:
    """custom_metadata (aio)."""
    stub = _test_stub(channel)
    call = stub.UnaryCall(_large_request(), metadata=_CUSTOM_METADATA, timeout=CALL_TIMEOUT)
    _check_payload((await call).payload, _LARGE_RESPONSE, "UnaryCall response")
    _check_echoed_metadata(
        await call.initial_metadata(), await call.trailing_metadata(), "UnaryCall"
    )
    stream = stub.FullDuplexCall(metadata=_CUSTOM_METADATA, timeout=CALL_TIMEOUT)
    await stream.write(_ping(_LARGE_RESPONSE, _LARGE_REQUEST))
    response = await stream.read()
    _expect(response is not grpc.aio.EOF, "FullDuplexCall response", "a message", response)
    _check_payload(response.payload, _LARGE_RESPONSE, "FullDuplexCall response")
    await stream.done_writing()
    await _aio_expect_eof(stream, "FullDuplexCall")
    _check_echoed_metadata(
        await stream.initial_metadata(), await stream.trailing_metadata(), "FullDuplexCall"
    )


async def _aio_check_unary_status(channel: grpc.aio.Channel, message: str) -> None:
    call = _test_stub(channel).UnaryCall(_status_request(message), timeout=CALL_TIMEOUT)
    _expect_code(await call.code(), grpc.StatusCode.UNKNOWN, "UnaryCall status code")
    _expect_details(await call.details(), message, "UnaryCall status details")
    try:
        got = await call
    except grpc.aio.AioRpcError as err:
        _expect_code(err.code(), grpc.StatusCode.UNKNOWN, "raised status code")
        _expect_details(err.details(), message, "raised status details")
    else:
        raise InteropFailure(f"expected an AioRpcError, got {got!r}")


async def aio_status_code_and_message(channel: grpc.aio.Channel) -> None:
    """status_code_and_message (aio)."""
    await _aio_check_unary_status(channel, _STATUS_MESSAGE)
    call = _test_stub(channel).FullDuplexCall(timeout=CALL_TIMEOUT)
    await call.write(_status_stream_request())
    await call.done_writing()
    _expect_code(await call.code(), grpc.StatusCode.UNKNOWN, "FullDuplexCall status code")
    _expect_details(await call.details(), _STATUS_MESSAGE, "FullDuplexCall status details")


async def aio_special_status_message(channel: grpc.aio.Channel) -> None:
    """special_status_message (aio)."""
    await _aio_check_unary_status(channel, SPECIAL_STATUS_MESSAGE)


async def aio_unimplemented_method(channel: grpc.aio.Channel) -> None:
    """unimplemented_method (aio)."""
    call = _test_stub(channel).UnimplementedCall(empty_pb2.Empty(), timeout=CALL_TIMEOUT)
    _expect_code(await call.code(), grpc.StatusCode.UNIMPLEMENTED)


async def aio_unimplemented_service(channel: grpc.aio.Channel) -> None:
    """unimplemented_service (aio)."""
    call = _unimplemented_stub(channel).UnimplementedCall(empty_pb2.Empty(), timeout=CALL_TIMEOUT)
    _expect_code(await call.code(), grpc.StatusCode.UNIMPLEMENTED)


async def aio_server_compressed_unary(channel: grpc.aio.Channel) -> None:
    """server_compressed_unary (aio)."""
    stub = _test_stub(channel)
    for compressed in (True, False):
        request = _large_request(response_compressed=messages_pb2.BoolValue(value=compressed))
        response = await stub.UnaryCall(request, timeout=CALL_TIMEOUT)
        _check_payload(response.payload, _LARGE_RESPONSE, f"response (compressed={compressed})")


async def aio_server_compressed_streaming(channel: grpc.aio.Channel) -> None:
    """server_compressed_streaming (aio): async iteration over exactly two responses."""
    call = _test_stub(channel).StreamingOutputCall(
        _compressed_streaming_request(), timeout=CALL_TIMEOUT
    )
    sizes = [len(r.payload.body) async for r in call]
    want = [size for _, size in _COMPRESSED_STREAM]
    _expect(sizes == want, "response sizes", want, sizes)
    _expect_code(await call.code(), grpc.StatusCode.OK)


# ----------------------------------------------------------------------------- tables

#: Case names in the order of the descriptions.
CASES: Final[Sequence[str]] = (
    "empty_unary",
    "large_unary",
    "server_compressed_unary",
    "client_streaming",
    "server_streaming",
    "server_compressed_streaming",
    "ping_pong",
    "empty_stream",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
    "cancel_after_begin",
    "cancel_after_first_response",
    "timeout_on_sleeping_server",
)

#: Each case's sync implementation.
SYNC_CASES: Final[Mapping[str, Callable[[grpc.Channel], None]]] = {
    name: globals()[f"sync_{name}"] for name in CASES
}

#: Each case's asyncio implementation.
AIO_CASES: Final[Mapping[str, Callable[[grpc.aio.Channel], Awaitable[None]]]] = {
    name: globals()[f"aio_{name}"] for name in CASES
}

_UU, _US, _SU, _SS = "unary_unary", "unary_stream", "stream_unary", "stream_stream"

#: Application calls each case makes, by kind (the same for sync and aio).
CALLS: Final[Mapping[str, Mapping[str, int]]] = {
    "empty_unary": {_UU: 1},
    "large_unary": {_UU: 1},
    "server_compressed_unary": {_UU: 2},
    "client_streaming": {_SU: 1},
    "server_streaming": {_US: 1},
    "server_compressed_streaming": {_US: 1},
    "ping_pong": {_SS: 1},
    "empty_stream": {_SS: 1},
    "custom_metadata": {_UU: 1, _SS: 1},
    "status_code_and_message": {_UU: 1, _SS: 1},
    "special_status_message": {_UU: 1},
    "unimplemented_method": {_UU: 1},
    "unimplemented_service": {_UU: 1},
    "cancel_after_begin": {_SU: 1},
    "cancel_after_first_response": {_SS: 1},
    "timeout_on_sleeping_server": {_SS: 1},
}

#: :data:`CALLS` for the aio cases, as grpc.aio's interceptors see them. grpc.aio runs a
#: call's client interceptors in a task; cancel_after_begin cancels the call before the
#: event loop ever runs that task, so no interceptor sees that call (grpcio 1.85: found
#: by running the control, ``grpc.aio.insecure_channel(..., interceptors=[...])``).
AIO_CALLS: Final[Mapping[str, Mapping[str, int]]] = {**CALLS, "cancel_after_begin": {}}


def run_sync(name: str, channel: grpc.Channel) -> None:
    """Run interop case ``name`` on a sync channel; raises :class:`InteropFailure`."""
    SYNC_CASES[name](channel)


async def run_aio(name: str, channel: grpc.aio.Channel) -> None:
    """Run interop case ``name`` on an asyncio channel; raises :class:`InteropFailure`."""
    await AIO_CASES[name](channel)
