"""grpc.aio client interceptors on an eagle channel.

An application's interceptors (``interceptors=`` of :func:`eagle.aio.insecure_channel`)
see one call per application call, not one per attempt: they wrap eagle's call, and
eagle's attempts happen underneath. To behave exactly as grpc.aio's own interceptors do
(call details, early cancellation, a response returned instead of a call, done
callbacks), eagle reuses grpc.aio's intercepted call classes and only replaces the last
link of the chain, which grpc.aio points at its own channel, with eagle's call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc
from grpc.aio import _interceptor as _grpc_interceptor

if TYPE_CHECKING:
    from .channel import MultiCallable

__all__ = ["intercepted_call", "split_interceptors"]

Interceptors = tuple[list[Any], list[Any], list[Any], list[Any]]


def split_interceptors(interceptors: Sequence[Any] | None) -> Interceptors:
    """Sort interceptors by the call kind they intercept, as grpc.aio's channel does
    (with the same error for anything else)."""
    uu: list[Any] = []
    us: list[Any] = []
    su: list[Any] = []
    ss: list[Any] = []
    for interceptor in interceptors or ():
        if isinstance(interceptor, grpc.aio.UnaryUnaryClientInterceptor):
            uu.append(interceptor)
        elif isinstance(interceptor, grpc.aio.UnaryStreamClientInterceptor):
            us.append(interceptor)
        elif isinstance(interceptor, grpc.aio.StreamUnaryClientInterceptor):
            su.append(interceptor)
        elif isinstance(interceptor, grpc.aio.StreamStreamClientInterceptor):
            ss.append(interceptor)
        else:
            raise ValueError(
                f"Interceptor {interceptor} must be UnaryUnaryClientInterceptor or "
                "UnaryStreamClientInterceptor or StreamUnaryClientInterceptor or "
                "StreamStreamClientInterceptor. "
            )
    return uu, us, su, ss


def _terminal(handle: MultiCallable, details: Any, request: Any) -> Any:
    """The last link of the chain: eagle's call for the (maybe changed) call details."""
    method = details.method
    if isinstance(method, bytes):
        method = method.decode()
    if method != handle._method:
        handle = handle._for_method(method)
    return handle._start(
        request, details.timeout, details.metadata, details.credentials, details.wait_for_ready
    )


class _EagleLink:
    """Replaces the last link of grpc.aio's interceptor chain with eagle's call; every
    other link (and everything else about the intercepted call) stays grpc.aio's."""

    _eagle: MultiCallable
    #: grpc.aio keeps the call of a response-streaming chain for its own use
    _keeps_last = False

    async def _run_interceptor(
        self,
        interceptors: list[Any],
        method: bytes,
        request_serializer: Any,
        response_deserializer: Any,
        client_call_details: Any,
        request: Any,
    ) -> Any:
        if interceptors:
            return await super()._run_interceptor(  # type: ignore[misc]
                interceptors,
                method,
                request_serializer,
                response_deserializer,
                client_call_details,
                request,
            )
        call = _terminal(self._eagle, client_call_details, request)
        if self._keeps_last:
            self._last_returned_call_from_interceptors = call
        return call


class _UnaryUnary(_EagleLink, _grpc_interceptor.InterceptedUnaryUnaryCall):  # type: ignore[misc]
    pass


class _UnaryStream(_EagleLink, _grpc_interceptor.InterceptedUnaryStreamCall):  # type: ignore[misc]
    _keeps_last = True


class _StreamUnary(_EagleLink, _grpc_interceptor.InterceptedStreamUnaryCall):  # type: ignore[misc]
    pass


class _StreamStream(_EagleLink, _grpc_interceptor.InterceptedStreamStreamCall):  # type: ignore[misc]
    _keeps_last = True


_CLASSES: dict[str, type[Any]] = {
    "unary_unary": _UnaryUnary,
    "unary_stream": _UnaryStream,
    "stream_unary": _StreamUnary,
    "stream_stream": _StreamStream,
}


def intercepted_call(
    handle: MultiCallable,
    kind: str,
    interceptors: Sequence[Any],
    request: Any,
    timeout: float | None,
    metadata: Any,
    credentials: Any,
    wait_for_ready: bool | None,
) -> Any:
    """grpc.aio's intercepted call object for one application call, ending in eagle's
    call. ``metadata`` must already carry the compression (grpc.aio's rule)."""
    cls = _CLASSES[kind]
    call: Any = object.__new__(cls)
    call._eagle = handle
    _, method, ser, deser, _ = handle._mkey
    cls.__init__(
        call,
        interceptors,
        request,
        timeout,
        metadata,
        credentials,
        wait_for_ready,
        None,  # grpc.aio's channel: never used, the last link is eagle's
        method.encode(),
        ser,
        deser,
        handle._ch._loop,
    )
    return call
