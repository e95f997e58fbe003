"""What a grpc error says about an attempt, for the core to decide on.

Both shells hand every failed attempt's error (a sync ``grpc.RpcError`` that is also a
``grpc.Call``, or a ``grpc.aio.AioRpcError``) to :func:`failure_of`, which reads its code,
details and trailing metadata and classifies how far the attempt got
(:class:`~eagle.core.retry.Delivery`):

* NOT_SENT - grpc could not connect, so no byte of the call left the client;
* UNANSWERED - grpc core ended the call itself after it may have been sent: the
  connection was lost mid-call, or the deadline expired without an answer;
* ANSWERED - anything else: a status the server sent.

grpcio does not say in its error object whether a status came from the peer, so the
classification reads the details grpc core writes for its own local errors.

It also lets :func:`eagle.call_info` find the :class:`~eagle.core.calls.CallReport` of the
call an error, future or call object belongs to.
"""

from __future__ import annotations

from typing import Any

from ..core.calls import AttemptFailure, CallDriver, CallReport
from ..core.retry import Delivery

__all__ = ["attach_report", "call_info", "failure_of", "status_of"]

#: details grpc core gives an attempt that could not connect (nothing was sent)
_NOT_SENT_MARKS = (
    "failed to connect",
    "connection refused",
    "connect failed",
    "name resolution",
    "dns resolution",
    "no such file or directory",  # unix socket gone
    "channel is in state transient_failure",
    "failed to pick subchannel",
)

#: details grpc core gives an UNAVAILABLE call whose connection broke after it was sent
_CONNECTION_LOST_MARKS = (
    "socket closed",
    "connection reset",
    "stream removed",
    "broken pipe",
    "goaway",
    "transport closed",
    "end of tcp stream",
    "keepalive",
    "ping timeout",
    "connection aborted",
    "timed out",
)


def delivery_of(code: str, details: str | None) -> Delivery:
    """How far an attempt that failed with ``code`` / ``details`` got."""
    low = (details or "").lower()
    if code == "UNAVAILABLE":
        if any(mark in low for mark in _NOT_SENT_MARKS):
            return Delivery.NOT_SENT
        if any(mark in low for mark in _CONNECTION_LOST_MARKS):
            return Delivery.UNANSWERED
        return Delivery.ANSWERED
    if code == "DEADLINE_EXCEEDED" and low == "deadline exceeded":
        return Delivery.UNANSWERED  # grpc core's own text: no answer before the deadline
    if code in ("UNKNOWN", "INTERNAL") and "stream removed" in low:
        return Delivery.UNANSWERED
    return Delivery.ANSWERED


def status_of(err: Any) -> tuple[str, str | None]:
    """The status code name and details of a grpc error (sync or asyncio)."""
    code = err.code()
    return (code.name if code is not None else "UNKNOWN"), err.details()


def failure_of(err: Any) -> AttemptFailure:
    """The :class:`AttemptFailure` of an attempt that ended with grpc error ``err``."""
    code, details = status_of(err)
    try:
        trailing = err.trailing_metadata()
    except Exception:
        trailing = None
    return AttemptFailure(code, details, delivery_of(code, details), trailing)


_ATTR = "_eagle_call"


def attach_report(obj: Any, drv: CallDriver) -> Any:
    """Remember on ``obj`` (grpc's error or call object) the call it belongs to, so
    :func:`call_info` finds it; returns ``obj``. Objects that take no attributes are
    left alone."""
    try:
        setattr(obj, _ATTR, drv)
    except (AttributeError, TypeError):
        return obj
    return obj


def call_info(obj: Any) -> CallReport | None:
    """What eagle knows about the call ``obj`` belongs to: an error raised by an eagle
    channel (grpc's own error object or eagle's), a future, a call object, or the call
    returned by ``with_call``. None for objects eagle did not see."""
    getter = getattr(obj, "eagle_report", None)
    if callable(getter):
        report: CallReport | None = getter()
        return report
    drv = getattr(obj, _ATTR, None)
    if isinstance(drv, CallDriver):
        return drv.report()
    return None
