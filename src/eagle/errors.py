"""Errors eagle makes itself.

A status a server sent, or an error grpc made for one attempt, reaches the caller as
grpc's own error object, unchanged. eagle makes an error of its own only when no attempt
produced one: no member can serve the call, a deadline passed while no member was
available, or a stream was ended because its member left rotation. Those keep the shape
grpc gives its own local errors:

* sync: :class:`EagleRpcError` is a subclass of grpc's ``_InactiveRpcError`` (a
  ``grpc.RpcError`` that is also a ``grpc.Call`` and a ``grpc.Future``), exactly what a
  sync grpc call raises;
* asyncio: :class:`AioEagleRpcError` is a ``grpc.aio.AioRpcError``.

What eagle knows about any call (member, attempts, outcome unknown, why it was not
retried) is read with :func:`eagle.call_info`, for grpc's errors and eagle's alike.
"""

from __future__ import annotations

import grpc
from grpc import _channel as _grpc_channel

__all__ = ["AioEagleRpcError", "EagleRpcError", "aio_error", "inactive_error", "sync_error"]

_Metadata = tuple[tuple[str, str | bytes], ...]


class EagleRpcError(_grpc_channel._InactiveRpcError):  # type: ignore[misc]
    """A sync call eagle ended itself (e.g. UNAVAILABLE: no member can serve it, with
    details that name every member and its state).

    It behaves exactly like the error grpc raises for its own local failures: a
    ``grpc.RpcError``, ``grpc.Call`` and ``grpc.Future`` whose ``result()`` raises it and
    whose ``exception()`` returns it.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        trailing_metadata: _Metadata = (),
        initial_metadata: _Metadata = (),
    ) -> None:
        state = _grpc_channel._RPCState((), initial_metadata, trailing_metadata, code, details)
        state.debug_error_string = f"{code.name}:{details}"
        super().__init__(state)


class AioEagleRpcError(grpc.aio.AioRpcError):  # type: ignore[misc]
    """An asyncio call eagle ended itself; a ``grpc.aio.AioRpcError`` like the ones
    grpc.aio makes for its own local failures."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(
            code,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            details=details,
            debug_error_string=f"{code.name}:{details}",
        )


def sync_error(code: str, details: str) -> EagleRpcError:
    """eagle's own sync error for status ``code`` (a ``grpc.StatusCode`` name)."""
    return EagleRpcError(grpc.StatusCode[code], details)


def aio_error(code: str, details: str) -> AioEagleRpcError:
    """eagle's own asyncio error for status ``code`` (a ``grpc.StatusCode`` name)."""
    return AioEagleRpcError(grpc.StatusCode[code], details)


def inactive_error(error: BaseException) -> BaseException:
    """The error a blocking sync call raises for ``error``: grpc raises an
    ``_InactiveRpcError`` from blocking calls, so an attempt eagle made as a future (whose
    error is grpc's future object) is turned into the same error grpc's blocking call
    would raise, with the same status, metadata and debug string."""
    inactive_type: type[BaseException] = _grpc_channel._InactiveRpcError
    if isinstance(error, inactive_type):
        return error
    state = getattr(error, "_state", None)
    if not isinstance(state, _grpc_channel._RPCState):
        return error
    inactive = _grpc_channel._InactiveRpcError(state)
    call = getattr(error, "_eagle_call", None)
    if call is not None:
        inactive._eagle_call = call
    result: BaseException = inactive
    return result
