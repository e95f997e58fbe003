"""Report a grpc error (sync ``grpc.RpcError`` or ``grpc.aio.AioRpcError``) to a call's
driver. Both error kinds expose ``code()``, ``details()`` and ``trailing_metadata()``."""

from __future__ import annotations

from typing import Any

import grpc

from ..core.calls import CallDriver
from ..errors import AioOutcomeUnknownError, OutcomeUnknownError

__all__ = ["InFlight", "final_error", "report_failure"]


def report_failure(drv: CallDriver, err: Any, may_retry: bool = True) -> bool:
    """Tell ``drv`` an attempt failed with ``err``; True when the call should go on."""
    code = err.code()
    try:
        trailing = err.trailing_metadata()
    except Exception:
        trailing = None
    return drv.failed(
        code.name if code is not None else "UNKNOWN", err.details(), trailing, may_retry=may_retry
    )


def final_error(drv: CallDriver, err: Any) -> Any:
    """The error to raise for a call that gave up on ``err``: ``err`` itself, or, when the
    outcome is unknown (a non-idempotent call that may have been applied), an
    :class:`~eagle.errors.OutcomeUnknownError` with the same code that says so."""
    note = drv.unknown_outcome
    if note is None:
        return err
    details = f"{err.details()} ({note})"
    if isinstance(err, grpc.aio.AioRpcError):
        wrapped: Any = AioOutcomeUnknownError(
            err.code(), err.initial_metadata(), err.trailing_metadata(), details=details
        )
    else:
        try:
            trailing = tuple(err.trailing_metadata() or ())
        except Exception:
            trailing = ()
        wrapped = OutcomeUnknownError(err.code(), details, trailing)
    wrapped.__cause__ = err
    return wrapped


class InFlight:
    """A unary attempt in flight that the watchdog may abandon: when its member leaves
    rotation (UNREACHABLE, PARTITIONED, EJECTED) :meth:`abort` cancels it, and the call's
    loop retries it on another member (only idempotent calls are registered)."""

    __slots__ = ("call", "reason")

    def __init__(self, call: Any) -> None:
        self.call = call
        self.reason: str | None = None

    def abort(self, reason: str) -> None:
        """Cancel the attempt because its member left rotation."""
        self.reason = reason
        self.call.cancel()
