"""What the sync and asyncio call objects share: attempts, their outcomes, and the state
of one application call, with the hand-over of an outcome to the core.

Each shell's call classes (:mod:`eagle._sync.calls`, :mod:`eagle.aio.calls`) add the I/O:
how an attempt is sent and waited for, how pauses are taken, how the end is announced
(a condition variable, or futures in the event loop).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from ..core.calls import AttemptFailure, CallDriver, CallReport
from ..core.retry import Delivery
from .outcomes import status_of

__all__ = ["LOCAL_CANCEL", "Attempt", "CallState", "Outcome", "abandoned_failure"]

#: grpc's details for a call the application cancelled
LOCAL_CANCEL = "Locally cancelled by application!"


class Attempt:
    """One attempt in flight: grpc's call or future on one member.

    The watchdog may :meth:`abort` it when its member leaves rotation; its outcome is
    settled exactly once (``settled``), by whoever sees it end first.
    """

    __slots__ = ("abort_reason", "call", "endpoint", "settled", "started")

    def __init__(self, call: Any, endpoint: str, started: float) -> None:
        self.call = call
        self.endpoint = endpoint
        self.started = started
        self.abort_reason: str | None = None
        self.settled = False

    def abort(self, reason: str) -> None:
        """End the attempt because its member left rotation (called by the watchdog)."""
        self.abort_reason = reason
        call = self.call
        if call is not None:
            call.cancel()

    def cancel(self) -> None:
        """Cancel the attempt (the application cancelled the call)."""
        call = self.call
        if call is not None:
            call.cancel()


class Outcome:
    """How one attempt ended: a response (``error`` None) or the error to raise if the
    call ends with it, and the :class:`AttemptFailure` the core judges it by."""

    __slots__ = ("attempt", "call", "error", "failure", "response")

    def __init__(
        self,
        attempt: Attempt,
        response: Any = None,
        call: Any = None,
        error: BaseException | None = None,
        failure: AttemptFailure | None = None,
    ) -> None:
        self.attempt = attempt
        self.response = response
        self.call = call
        self.error = error
        self.failure = failure


def abandoned_failure(attempt: Attempt) -> AttemptFailure:
    """How the core judges an attempt the watchdog abandoned: UNAVAILABLE, and it may
    have reached the server (no verdict on the member, which already left)."""
    reason = attempt.abort_reason or "eagle: attempt abandoned"
    return AttemptFailure("UNAVAILABLE", reason, Delivery.UNANSWERED, abandoned=True)


class _Source(Protocol):
    @property
    def replayable(self) -> bool: ...

    def for_attempt(self) -> Any: ...


class CallState:
    """The state of one application call that both shells' call objects keep, and the
    hand-over of an attempt's outcome to the core (:meth:`_decide`)."""

    #: the shell's request source type (replays request streams to new attempts)
    _source_type: ClassVar[type[Any]]

    def __init__(
        self,
        handle: Any,
        drv: CallDriver,
        request: Any,
        metadata: Any,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
        request_stream: bool,
    ) -> None:
        self._h = handle
        self._ch = handle._ch
        self._drv = drv
        self._opts = (metadata, credentials, wait_for_ready, compression)
        self._requests: Any = None
        self._request: Any = None
        if request_stream:
            self._requests = self._source_type(
                request, handle._serializer, self._ch.config.retry.buffer_size
            )
        else:
            self._request = request
        self._attempt: Attempt | None = None
        self._done = False
        self._cancelled = False
        self._response: Any = None
        self._final: Any = None  # grpc's call of the attempt the call ended with
        self._error: BaseException | None = None
        self._open()

    def _open(self) -> None:
        """The shell's own set-up of a new call (then its first steps)."""

    def _committed(self, attempt: Attempt) -> bool:
        """True when the call must not be re-sent after ``attempt`` failed (a request
        stream that overflowed its replay buffer; streams add what they delivered)."""
        requests: _Source | None = self._requests
        return requests is not None and not requests.replayable

    def _attempt_requests(self) -> Any:
        """The request (or request iterator) a new attempt sends."""
        requests: _Source | None = self._requests
        return self._request if requests is None else requests.for_attempt()

    def _finish(self, response: Any, call: Any, error: BaseException | None) -> None:
        """End the call (once) with a response or an error (shell-specific)."""
        raise NotImplementedError

    def _call_ended(self, error: BaseException | None) -> None:
        """Tell the core the call ended (after the shell announced it)."""
        if error is not None:
            code = status_of(error)[0] if callable(getattr(error, "code", None)) else "UNKNOWN"
        else:
            code = "CANCELLED" if self._cancelled else "OK"
        self._drv.finished(code)

    def _decide(self, outcome: Outcome) -> bool:
        """Hand a settled attempt's outcome to the core; True when another attempt
        follows, else the call is finished with the response or the attempt's error."""
        drv = self._drv
        if outcome.error is None:
            drv.succeeded()
            self._finish(outcome.response, outcome.call, None)
            return False
        failure = outcome.failure
        assert failure is not None
        if drv.failed(failure, self._committed(outcome.attempt)).retry:
            return True
        self._finish(None, outcome.call, outcome.error)
        return False

    def eagle_report(self) -> CallReport:
        """What eagle knows about this call (see :func:`eagle.call_info`)."""
        return self._drv.report()

    # --------------------------------------------------------- grpc's call API
    def cancelled(self) -> bool:
        """True when the application cancelled the call."""
        return self._cancelled

    def done(self) -> bool:
        """True once the call ended (success, error or cancellation)."""
        return self._done

    def time_remaining(self) -> float | None:
        """Seconds left before the call's deadline, or None without one."""
        return self._drv.time_remaining()
