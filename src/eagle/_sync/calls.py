"""Calls on the sync channel, driven by the shell's one attempt loop.

:class:`SyncCall._run` is the only attempt loop of the sync shell. Every call kind uses
it: unary and client-streaming calls (:class:`UnaryCall`, as a blocking call or a
``grpc.Future``), server-streaming and bidi calls (:class:`StreamCall`), and hedging
(:class:`HedgedAttempt`). The loop asks the core for the next step, pauses, sends an
attempt, and hands the attempt's outcome back to the core (:meth:`SyncCall._settle`),
which decides: done, retry, or fail with the attempt's own error.

``inline`` runs decide in the caller's thread and may block it (a blocking unary call);
the others never block: pauses become timers and attempts report from grpc's callback
threads, so a ``future()`` or a stream needs no thread of its own.

What the application sees is grpc's: a blocking call raises the status an attempt ended
with as grpc's own error object, unchanged; a future or a stream is itself the error when
it fails, as grpc's are, with the code, details and metadata of the attempt it ended with.
eagle's own errors (:mod:`eagle.errors`) only stand for errors no attempt produced.
:func:`eagle.call_info` tells what eagle knows on top.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from ..core.calls import FAIL, SEND, AttemptFailure, HedgeRound, Step
from ..core.retry import Delivery
from ..errors import inactive_error, sync_error
from ..shell.attempts import LOCAL_CANCEL, Attempt, CallState, Outcome, abandoned_failure
from ..shell.outcomes import attach_report, failure_of
from .requests import RequestSource

if TYPE_CHECKING:
    pass

__all__ = ["Attempt", "HedgedAttempt", "StreamCall", "SyncCall", "UnaryCall"]

log = logging.getLogger("eagle.calls")


def _aborted(attempt: Attempt) -> Outcome:
    """The outcome of an attempt the watchdog abandoned: eagle's own UNAVAILABLE error,
    judged as a request that may have reached the server."""
    failure = abandoned_failure(attempt)
    return Outcome(attempt, error=sync_error("UNAVAILABLE", failure.details or ""), failure=failure)


def _outcome_of_future(attempt: Attempt) -> Outcome:
    """The outcome of an attempt made with grpc's ``future()``, which has ended."""
    fut = attempt.call
    if attempt.abort_reason is not None:
        return _aborted(attempt)
    try:
        response = fut.result()
    except grpc.FutureCancelledError:
        failure = AttemptFailure("CANCELLED", LOCAL_CANCEL, Delivery.UNANSWERED)
        return Outcome(attempt, call=fut, error=fut, failure=failure)
    except grpc.RpcError as err:
        return Outcome(attempt, call=fut, error=err, failure=failure_of(err))
    return Outcome(attempt, response=response, call=fut)


class SyncCall(CallState):
    """What every sync call object shares: the attempt loop and the call's end."""

    _source_type = RequestSource

    def _open(self) -> None:
        self._lock = threading.Lock()
        self._cv: threading.Condition | None = None  # made when someone waits
        self._callbacks: list[Callable[[], None]] = []
        self._begin()

    def _begin(self) -> None:
        """What a call kind sets up before its first attempt."""

    # ------------------------------------------------------------ the attempt loop
    def _run(self, inline: bool) -> None:
        """The attempt loop: run the core's steps until an attempt is in flight (it then
        reports through :meth:`_settle`) or the call is over. ``inline`` may block the
        calling thread for pauses and attempts; otherwise pauses become timers."""
        drv = self._drv
        ch = self._ch
        while True:
            if self._done:
                return
            if ch._closed:
                self._end_closed()
                return
            step = drv.next_step()
            kind = step.kind
            if kind is SEND:
                outcome = self._send(step, inline)
                if outcome is None or not self._settle(outcome):
                    return
            elif kind is FAIL:
                self._finish(None, None, sync_error(step.code, step.details))
                return
            elif inline:
                ch._pause(step)
            else:
                ch._later(step, self._resume)
                return

    def _resume(self) -> None:
        self._run(False)

    def _send(self, step: Step, inline: bool) -> Outcome | None:
        """Start an attempt on ``step.endpoint``: its outcome when known at once (inline),
        else None (it reports through :meth:`_settle` when it ends)."""
        raise NotImplementedError

    def _place(self, step: Step, call: Any) -> Attempt | None:
        """Make ``call`` the attempt in flight; None (and ``call`` cancelled) when the
        call ended meanwhile (the application cancelled it)."""
        ep = step.endpoint
        assert ep is not None
        attempt = Attempt(call, ep, self._drv.started)
        with self._lock:
            if self._done:
                if call is not None:
                    call.cancel()
                return None
            self._attempt = attempt
            self._notify()
        return attempt

    def _settle(self, outcome: Outcome) -> bool:
        """Hand an attempt's outcome to the core; True when another attempt follows."""
        attempt = outcome.attempt
        with self._lock:
            if attempt.settled or self._done:
                attempt.settled = True
                return False
            attempt.settled = True
        return self._decide(outcome)

    # ------------------------------------------------------------------ the end
    def _finish(self, response: Any, call: Any, error: BaseException | None) -> None:
        """End the call (once) with a response or an error, and run the callbacks."""
        with self._lock:
            if self._done:
                return
            self._done = True
            self._response = response
            self._final = call
            self._error = error
            self._notify()
            callbacks = self._callbacks
            self._callbacks = []
        drv = self._drv
        if error is not None:
            attach_report(error, drv)
        if call is not None and call is not error:
            attach_report(call, drv)
        self._call_ended(error)
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("eagle: done callback failed")

    def _end_closed(self) -> None:
        self._drv.closed()
        self._finish(None, None, sync_error("CANCELLED", "Channel closed!"))

    def _condition(self) -> threading.Condition:
        """The condition waiters use (made on first use); call with the lock held."""
        cv = self._cv
        if cv is None:
            cv = self._cv = threading.Condition(self._lock)
        return cv

    def _notify(self) -> None:
        """Wake the waiters, if any; call with the lock held."""
        cv = self._cv
        if cv is not None:
            cv.notify_all()

    def _wait(self, timeout: float | None) -> None:
        with self._lock:
            if not self._condition().wait_for(lambda: self._done, timeout):
                raise grpc.FutureTimeoutError()

    def _cancel(self) -> bool:
        """Cancel the call (grpc's ``cancel()``): True when it was still in progress."""
        with self._lock:
            if self._done:
                return False
            self._cancelled = True
            attempt = self._attempt
        if attempt is not None:
            attempt.cancel()
        self._drv.cancelled()
        self._finish(None, None, None)
        return True

    # ---------------------------------------------------------- grpc.Call / Future
    def running(self) -> bool:
        """True while the call is in progress."""
        return not self._done

    def is_active(self) -> bool:
        """True while the call is in progress."""
        return not self._done

    def add_callback(self, callback: Callable[[], Any]) -> bool:
        """Call ``callback()`` when the call ends; False (not registered) when it already
        has, as grpc does."""
        with self._lock:
            if self._done:
                return False
            self._callbacks.append(callback)
            return True

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        """Call ``fn(self)`` when the call ends, at once if it already has."""
        with self._lock:
            if not self._done:
                self._callbacks.append(lambda: fn(self))
                return
        fn(self)

    def _ended(self) -> tuple[Any, BaseException | None]:
        """Wait for the end; (grpc's call of the last attempt, the error)."""
        self._wait(None)
        return self._final, self._error

    def code(self) -> grpc.StatusCode:
        """The call's status code (waits for the end)."""
        final, error = self._ended()
        if self._cancelled:
            return grpc.StatusCode.CANCELLED
        source = error if isinstance(error, grpc.Call) else final
        return grpc.StatusCode.OK if source is None else source.code()

    def details(self) -> str | None:
        """The call's status details (waits for the end)."""
        final, error = self._ended()
        if self._cancelled:
            return LOCAL_CANCEL
        source = error if isinstance(error, grpc.Call) else final
        return None if source is None else source.details()

    def initial_metadata(self) -> Any:
        """The initial metadata of the attempt the call ended with."""
        final, error = self._ended()
        source = error if isinstance(error, grpc.Call) else final
        return () if source is None else source.initial_metadata()

    def trailing_metadata(self) -> Any:
        """The trailing metadata of the attempt the call ended with."""
        final, error = self._ended()
        source = error if isinstance(error, grpc.Call) else final
        return () if source is None else source.trailing_metadata()

    def debug_error_string(self) -> str | None:
        """grpc's debug string of the error the call ended with, or None."""
        _, error = self._ended()
        getter = getattr(error, "debug_error_string", None)
        return getter() if callable(getter) else None

    # ---------------------------------------------------------- the call as error
    # As with grpc's own future and stream objects, a failed call *is* its error: result()
    # raises the call object, exception() returns it, and a stream raises it; its code,
    # details and metadata are those of the attempt (or eagle's own error) it ended with.
    def result(self, timeout: float | None = None) -> Any:
        """The response; raises this call (a ``grpc.RpcError``) when it failed, or
        ``grpc.FutureCancelledError`` when it was cancelled."""
        self._wait(timeout)
        if self._cancelled:
            raise grpc.FutureCancelledError()
        if self._error is not None:
            raise self  # type: ignore[misc]
        return self._response

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """This call (a ``grpc.RpcError``) when it failed, else None; raises
        ``grpc.FutureCancelledError`` when it was cancelled."""
        self._wait(timeout)
        if self._cancelled:
            raise grpc.FutureCancelledError()
        return self if self._error is not None else None  # type: ignore[return-value]

    def traceback(self, timeout: float | None = None) -> types.TracebackType | None:
        """The traceback of the call's error, or None; raises
        ``grpc.FutureCancelledError`` when it was cancelled."""
        self._wait(timeout)
        if self._cancelled:
            raise grpc.FutureCancelledError()
        if self._error is None:
            return None
        try:
            raise self  # type: ignore[misc]
        except BaseException:
            return sys.exc_info()[2]

    def __repr__(self) -> str:
        name = type(self).__name__
        if not self._done:
            return f"<{name} object>"
        code = self.code()
        details = self.details()
        head = f'<{name} of RPC that terminated with:\n\tstatus = {code}\n\tdetails = "{details}"'
        if code is grpc.StatusCode.OK:
            return head + "\n>"
        return head + f'\n\tdebug_error_string = "{self.debug_error_string()}"\n>'

    __str__ = __repr__


class UnaryCall(SyncCall, grpc.RpcError, grpc.Call, grpc.Future):  # type: ignore[misc]
    """A unary or client-streaming call: run blocking (``__call__``, ``with_call``) or as
    the ``grpc.Future`` that ``future()`` returns.

    A call declared idempotent is sent as a grpc future so the watchdog can abandon an
    attempt stuck on a member that leaves rotation and the loop can re-send it; a hedged
    call sends a :class:`HedgedAttempt`.
    """

    def _begin(self) -> None:
        drv = self._drv
        self._hedge = drv.hedge_delay() if self._requests is None else None
        self._rescue = drv.plan.idempotent

    # ----------------------------------------------------------------- attempts
    def _send(self, step: Step, inline: bool) -> Outcome | None:
        if self._hedge is not None:
            return HedgedAttempt(self, step, self._hedge).start(inline)
        mc = self._h._mc(step.endpoint)
        metadata, credentials, wait_for_ready, compression = self._opts
        request = self._attempt_requests()
        if inline and not self._rescue:
            # the hot path: grpc's own blocking call, no future, no thread switch
            attempt = self._place(step, None)
            if attempt is None:
                return None
            try:
                response, call = mc.with_call(
                    request, step.timeout, metadata, credentials, wait_for_ready, compression
                )
            except grpc.RpcError as err:
                return Outcome(attempt, call=err, error=err, failure=failure_of(err))
            return Outcome(attempt, response=response, call=call)
        fut = mc.future(request, step.timeout, metadata, credentials, wait_for_ready, compression)
        attempt = self._place(step, fut)
        if attempt is None:
            return None
        streams = self._ch._streams
        if self._rescue:
            streams.add_attempt(attempt.endpoint, attempt)
        if inline:
            with contextlib.suppress(grpc.FutureCancelledError):
                fut.exception()
            if self._rescue:
                streams.remove_attempt(attempt.endpoint, attempt)
            return _outcome_of_future(attempt)
        fut.add_done_callback(lambda _f: self._attempt_ended(attempt))
        return None

    def _attempt_ended(self, attempt: Attempt) -> None:
        """grpc's callback: an attempt of a non-blocking call ended."""
        if self._rescue:
            self._ch._streams.remove_attempt(attempt.endpoint, attempt)
        if self._settle(_outcome_of_future(attempt)):
            self._run(False)

    # ------------------------------------------------------------------ blocking
    def blocking(self, with_call: bool) -> Any:
        """Run the call in the caller's thread: the response (and grpc's call with
        ``with_call``), or raise the error it ended with."""
        self._run(True)
        error = self._error
        if error is not None:
            raise inactive_error(error)
        if with_call:
            return self._response, self._final
        return self._response

    def start(self) -> UnaryCall:
        """Start the call without blocking (``future()``)."""
        self._run(False)
        return self

    # ------------------------------------------------------------- grpc.Future
    def cancel(self) -> bool:
        """Cancel the call and its attempt in flight; False when it already ended."""
        return self._cancel()


class HedgedAttempt(Attempt):
    """One round of a hedged unary call, settled as one attempt of the loop.

    The first attempt goes out at once; while no answer came within ``hedging.delay`` the
    core may allow another on a different member. The first success wins and the others
    are cancelled; when all fail, the last failure is the round's outcome. The bookkeeping
    is the core's :class:`~eagle.core.calls.HedgeRound`.
    """

    __slots__ = ("_cond", "_futures", "_inline", "_owner", "_result", "_round", "_timer")

    def __init__(self, owner: UnaryCall, step: Step, delay: float) -> None:
        assert step.endpoint is not None
        super().__init__(None, step.endpoint, owner._drv.started)
        self._owner = owner
        self._round = HedgeRound(owner._drv, delay)
        self._cond = threading.Condition()
        self._futures: list[tuple[Any, str, float]] = []
        self._result: Outcome | None = None
        self._timer: Any = None
        self._inline = False
        self._send_one(step)

    def _send_one(self, step: Step) -> None:
        owner = self._owner
        metadata, credentials, wait_for_ready, compression = owner._opts
        fut = owner._h._mc(step.endpoint).future(
            owner._request, step.timeout, metadata, credentials, wait_for_ready, compression
        )
        ep = step.endpoint
        assert ep is not None
        started = owner._drv._clock()
        entry = (fut, ep, started)
        with self._cond:
            self._futures.append(entry)
            self._round.sent(ep, started)
        fut.add_done_callback(lambda _f: self._one_ended(entry))

    def start(self, inline: bool) -> Outcome | None:
        """Make the round the call's attempt; wait for its outcome when ``inline``."""
        owner = self._owner
        self._inline = inline
        with owner._lock:
            if owner._done:
                self.cancel()
                return None
            owner._attempt = self
        self._arm()
        if not inline:
            return None
        with self._cond:
            self._cond.wait_for(lambda: self._result is not None)
            return self._result

    def _arm(self) -> None:
        wait = self._round.wait_time()
        if wait is not None:
            self._timer = self._owner._ch._timers.call_later(wait, self._no_answer)

    def _no_answer(self) -> None:
        """The hedging delay passed with no answer: maybe send another attempt."""
        with self._cond:
            if self._result is not None:
                return
        step = self._round.hedge()
        if step is not None:
            self._send_one(step)
            self._arm()

    def _one_ended(self, entry: tuple[Any, str, float]) -> None:
        fut, ep, started = entry
        with self._cond:
            if self._result is not None:
                return
            if not fut.cancelled() and fut.code() is grpc.StatusCode.OK:
                self._round.won(ep, started)
                result = Outcome(self, response=fut.result(), call=fut)
            else:
                try:
                    err: Any = fut.exception()
                    failure = failure_of(err)
                except grpc.FutureCancelledError:
                    err = sync_error("CANCELLED", LOCAL_CANCEL)
                    failure = AttemptFailure("CANCELLED", LOCAL_CANCEL, Delivery.UNANSWERED)
                if not self._round.lost(ep, started, failure):
                    return
                last = self._round.close_lost()
                result = Outcome(self, call=err, error=err, failure=last)
            self._result = result
            self._cond.notify_all()
            others = [f for f, _, _ in self._futures if f is not fut]
        timer = self._timer
        if timer is not None:
            timer.cancel()
        for other in others:
            other.cancel()
        if self._inline:
            return  # the caller's thread waits for the result and settles it
        owner = self._owner
        if owner._settle(result):
            owner._run(False)

    def cancel(self) -> None:
        """Cancel every attempt of the round."""
        with self._cond:
            futures = [f for f, _, _ in self._futures]
        for f in futures:
            f.cancel()


class StreamCall(SyncCall, grpc.RpcError, grpc.Call, grpc.Future):  # type: ignore[misc]
    """A server-streaming or bidi call: an iterator of responses that is also a
    ``grpc.Call`` and ``grpc.Future``, as grpc's own stream object is.

    Until its first response reaches the application the call may be re-sent to another
    member (request streams are replayed from their buffer); from then on it is
    committed. The watchdog ends it with UNAVAILABLE when its member leaves rotation.
    """

    _delivered = False  # a response reached the application: committed

    def _begin(self) -> None:
        self._delivered = False

    @property
    def endpoint(self) -> str | None:
        """The member the stream currently rides on."""
        attempt = self._attempt
        return None if attempt is None else attempt.endpoint

    def start(self) -> StreamCall:
        """Place the first attempt (never blocks)."""
        self._run(False)
        return self

    def _committed(self, attempt: Attempt) -> bool:
        return self._delivered or super()._committed(attempt)

    def _send(self, step: Step, inline: bool) -> Outcome | None:
        metadata, credentials, wait_for_ready, compression = self._opts
        call = self._h._mc(step.endpoint)(
            self._attempt_requests(),
            step.timeout,
            metadata,
            credentials,
            wait_for_ready,
            compression,
        )
        attempt = self._place(step, call)
        if attempt is None:
            return None
        self._ch._streams.add(attempt.endpoint, attempt)
        call.add_done_callback(lambda _c: self._attempt_ended(attempt))
        return None

    def _attempt_ended(self, attempt: Attempt) -> None:
        """The attempt's RPC terminated (grpc's callback, or the reader saw its end)."""
        if attempt.settled:
            return
        self._ch._streams.remove(attempt.endpoint, attempt)
        call = attempt.call
        if attempt.abort_reason is not None:
            outcome = _aborted(attempt)
        elif call.code() is grpc.StatusCode.OK:
            outcome = Outcome(attempt, call=call)
        else:
            outcome = Outcome(attempt, call=call, error=call, failure=failure_of(call))
        if self._settle(outcome):
            self._run(False)

    # ---------------------------------------------------------------- iterator
    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        while True:
            with self._lock:
                self._condition().wait_for(lambda: self._done or self._attempt is not None)
                attempt = self._attempt
                if attempt is None or self._cancelled:
                    self._raise_end()
            try:
                msg = next(attempt.call)
            except StopIteration:
                self._attempt_ended(attempt)
                self._superseded(attempt)
                continue
            except grpc.RpcError:
                self._attempt_ended(attempt)
                self._superseded(attempt)
                continue
            with self._lock:
                if self._attempt is not attempt:
                    continue  # a failed attempt's leftover: the call was re-sent
                self._delivered = True
            return msg

    def _superseded(self, attempt: Attempt) -> None:
        """Wait until ``attempt`` is settled: the call ended (its error is raised), or
        another attempt took over."""
        with self._lock:
            while not self._done and self._attempt is attempt:
                self._condition().wait()
            if self._attempt is attempt:
                self._raise_end()

    def _raise_end(self) -> NoReturn:
        """Called once the call ended: stop, or raise the stream itself (it is the error,
        as grpc's stream objects are)."""
        if self._cancelled or self._error is not None:
            raise self
        raise StopIteration

    def next(self) -> Any:
        """grpc's alias of ``__next__``."""
        return self.__next__()

    # ------------------------------------------------------------- grpc.Future
    def cancel(self) -> bool:
        """Cancel the stream; False when it already ended."""
        attempt = self._attempt
        if attempt is not None:
            self._ch._streams.remove(attempt.endpoint, attempt)
        return self._cancel()

    def abort(self, reason: str) -> None:
        """End the stream's current attempt because its member left rotation."""
        attempt = self._attempt
        if attempt is not None:
            attempt.abort(reason)

    def initial_metadata(self) -> Any:
        """The initial metadata of the attempt the stream rides on (waits for it)."""
        with self._lock:
            self._condition().wait_for(lambda: self._done or self._attempt is not None)
            attempt = self._attempt
            error = self._error
        if isinstance(error, grpc.Call):
            return error.initial_metadata()
        if attempt is None or attempt.call is None:
            return ()
        return attempt.call.initial_metadata()
