"""Calls on the asyncio channel, driven by the shell's one attempt loop.

The asyncio twin of :mod:`eagle._sync.calls`, name for name. :meth:`AioCall._run` is the
only attempt loop of the asyncio shell; unary and client-streaming calls
(:class:`UnaryCall`), server-streaming and bidi calls (:class:`StreamCall`) and hedging
(:class:`HedgedAttempt`) all use it. The loop asks the core for the next step, pauses,
sends an attempt, and hands the attempt's outcome back to the core
(:meth:`AioCall._settle`), which decides: done, retry, or fail with the attempt's error.

A unary call's loop runs in the task that awaits it (no task per call on the hot path);
a task is made only when the call must progress on its own. Cancelling a call at any
moment, before or after it is placed on a member, settles it with CANCELLED, as grpc.aio
does. Errors are grpc.aio's own ``AioRpcError`` objects, unchanged; eagle's own errors
(:mod:`eagle.errors`) only stand for errors no attempt produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Generator
from typing import TYPE_CHECKING, Any

import grpc

from ..core.calls import FAIL, SEND, AttemptFailure, HedgeRound, Step
from ..core.retry import Delivery
from ..errors import aio_error
from ..shell.attempts import LOCAL_CANCEL, Attempt, CallState, Outcome, abandoned_failure
from ..shell.outcomes import attach_report, failure_of
from .requests import RequestSource

if TYPE_CHECKING:
    pass

__all__ = ["AioCall", "Attempt", "HedgedAttempt", "StreamCall", "UnaryCall"]

log = logging.getLogger("eagle.aio.calls")

_ALREADY_FINISHED = "RPC already finished."
_HALF_CLOSED = 'RPC is half closed after calling "done_writing".'
_API_STYLE = "The iterator and read/write APIs may not be mixed on a single RPC."


def _aborted(attempt: Attempt) -> Outcome:
    """The outcome of an attempt the watchdog abandoned: eagle's own UNAVAILABLE error,
    judged as a request that may have reached the server."""
    failure = abandoned_failure(attempt)
    return Outcome(attempt, error=aio_error("UNAVAILABLE", failure.details or ""), failure=failure)


def _consume(task: asyncio.Task[Any]) -> None:
    """Mark a background task's exception as retrieved (the call keeps its outcome)."""
    if not task.cancelled():
        task.exception()


class AioCall(CallState):
    """What every asyncio call object shares: the attempt loop and the call's end."""

    _source_type = RequestSource

    def _open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._first: Attempt | None = None  # placed at creation, not yet awaited
        self._callbacks: list[Callable[[Any], None]] = []
        self._ended: asyncio.Future[None] | None = None
        self._placed: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._running = False  # the loop runs (inline or in _task)
        self._pausing: asyncio.Future[None] | None = None
        self._stashed: Step | None = None  # a first step that was not SEND
        if self._ch._closed:
            self._end_closed()
            return
        self._begin()

    def _begin(self) -> None:
        """What a call kind does at creation (grpc.aio starts a call at once)."""

    # ------------------------------------------------------------ the attempt loop
    async def _run(self) -> None:
        """The attempt loop: run the core's steps until the call is over (unary) or an
        attempt is in flight that reports on its own (streams)."""
        drv = self._drv
        ch = self._ch
        attempt = self._first
        self._first = None
        self._running = True
        try:
            while True:
                if attempt is None:
                    if self._done:
                        return
                    if ch._closed:
                        self._end_closed()
                        return
                    step = self._stashed or drv.next_step()
                    self._stashed = None
                    kind = step.kind
                    if kind is SEND:
                        attempt = self._send(step)
                        if attempt is None:
                            return
                    elif kind is FAIL:
                        self._finish(None, None, aio_error(step.code, step.details))
                        return
                    else:
                        await self._pause(step)
                        continue
                outcome = await self._outcome(attempt)
                attempt = None
                if outcome is None or not self._settle(outcome):
                    return
        except asyncio.CancelledError:
            if not self._done:
                self._cancel()  # the task running the loop was cancelled: so is the call
            raise
        finally:
            self._running = False

    def _send(self, step: Step) -> Attempt | None:
        """Start an attempt on ``step.endpoint``; None when the call ended meanwhile."""
        raise NotImplementedError

    async def _outcome(self, attempt: Attempt) -> Outcome | None:
        """Wait for ``attempt``'s outcome; None when it reports on its own (streams)."""
        raise NotImplementedError

    async def _pause(self, step: Step) -> None:
        """Carry out a SLEEP or WAIT step; cancelling the call interrupts it."""
        fut = self._loop.create_future()
        self._pausing = fut
        try:
            await self._ch._pause(step, fut)
        finally:
            self._pausing = None

    def _grpc_call(self, step: Step) -> Any:
        metadata, credentials, wait_for_ready, compression = self._opts
        return self._h._mc(step.endpoint)(
            self._attempt_requests(),
            timeout=step.timeout,
            metadata=metadata,
            credentials=credentials,
            wait_for_ready=wait_for_ready,
            compression=compression,
        )

    def _place(self, step: Step, call: Any) -> Attempt | None:
        """Make ``call`` the attempt in flight; None (and ``call`` cancelled) when the call
        ended meanwhile."""
        ep = step.endpoint
        assert ep is not None
        return self._adopt(Attempt(call, ep, self._drv.started))

    def _adopt(self, attempt: Attempt) -> Attempt | None:
        """Make ``attempt`` the one in flight; None (and it is cancelled) when the call
        ended meanwhile."""
        if self._done:
            attempt.cancel()
            return None
        self._attempt = attempt
        placed = self._placed
        if placed is not None:
            self._placed = None
            if not placed.done():
                placed.set_result(None)
        return attempt

    def _settle(self, outcome: Outcome) -> bool:
        """Hand an attempt's outcome to the core; True when another attempt follows."""
        attempt = outcome.attempt
        if attempt.settled or self._done:
            attempt.settled = True
            return False
        attempt.settled = True
        return self._decide(outcome)

    def _spawn(self) -> None:
        """Run the loop in a task of its own (nobody may be awaiting the call)."""
        if self._task is None and not self._running and not self._done:
            self._task = self._loop.create_task(self._run())
            self._task.add_done_callback(_consume)

    # ------------------------------------------------------------------ the end
    def _finish(self, response: Any, call: Any, error: BaseException | None) -> None:
        """End the call (once) with a response or an error, and run the callbacks."""
        if self._done:
            return
        self._done = True
        self._response = response
        self._final = call
        self._error = error
        drv = self._drv
        if error is not None:
            attach_report(error, drv)
        if call is not None and call is not error:
            attach_report(call, drv)
        self._call_ended(error)
        for fut in (self._ended, self._placed):
            if fut is not None and not fut.done():
                fut.set_result(None)
        self._ended = self._placed = None
        if self._requests is not None:
            self._requests.wake()
        callbacks = self._callbacks
        self._callbacks = []
        for cb in callbacks:
            try:
                cb(self)
            except Exception:
                log.exception("eagle: done callback failed")

    def _end_closed(self) -> None:
        self._drv.closed()
        self._finish(None, None, aio_error("CANCELLED", "Channel closed!"))

    async def _wait_end(self) -> None:
        """Wait for the end of the call (making it progress if nobody drives it)."""
        if self._done:
            return
        self._spawn()
        if self._ended is None:
            self._ended = self._loop.create_future()
        await asyncio.shield(self._ended)

    async def _wait_placed(self) -> Attempt | None:
        """Wait until an attempt is in flight (or the call ended)."""
        while self._attempt is None and not self._done:
            self._spawn()
            if self._placed is None:
                self._placed = self._loop.create_future()
            await asyncio.shield(self._placed)
        return self._attempt

    def _cancel(self) -> bool:
        """Cancel the call (grpc.aio's ``cancel()``): True when it was still going."""
        if self._done:
            return False
        self._cancelled = True
        attempt = self._attempt
        if attempt is not None:
            attempt.cancel()
        pausing = self._pausing
        if pausing is not None and not pausing.done():
            pausing.cancel()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._drv.cancelled()
        self._finish(None, None, None)
        return True

    # ------------------------------------------------- request streams, write style
    async def write(self, request: Any) -> None:
        """Send one request message (client-streaming and bidi calls made without a
        request iterator)."""
        await _write(self, request)

    async def done_writing(self) -> None:
        """Close the request side (write style)."""
        await _done_writing(self)

    @property
    def _done_writing_flag(self) -> bool:
        requests = self._requests
        return requests is not None and bool(requests.done_writing)

    # --------------------------------------------------------------- grpc.aio.Call
    def cancel(self) -> bool:
        """Cancel the call at any moment; False when it already ended."""
        return self._cancel()

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(self)`` when the call ends (at once when it already has)."""
        if self._done:
            callback(self)
            return
        self._callbacks.append(callback)
        self._spawn()

    def _source(self) -> Any:
        error = self._error
        return error if isinstance(error, grpc.aio.AioRpcError) else self._final

    async def code(self) -> grpc.StatusCode:
        """The call's status code (waits for the end)."""
        await self._wait_end()
        if self._cancelled:
            return grpc.StatusCode.CANCELLED
        source = self._source()
        if source is None:
            return grpc.StatusCode.OK
        if isinstance(source, grpc.aio.AioRpcError):
            return source.code()
        code: grpc.StatusCode = await source.code()
        return code

    async def details(self) -> str:
        """The call's status details (waits for the end)."""
        await self._wait_end()
        if self._cancelled:
            return LOCAL_CANCEL
        source = self._source()
        if source is None:
            return ""
        if isinstance(source, grpc.aio.AioRpcError):
            return str(source.details())
        return str(await source.details())

    async def initial_metadata(self) -> Any:
        """The initial metadata of the attempt the call ended with."""
        await self._wait_end()
        source = self._source()
        if source is None:
            return grpc.aio.Metadata()
        if isinstance(source, grpc.aio.AioRpcError):
            return source.initial_metadata()
        return await source.initial_metadata()

    async def trailing_metadata(self) -> Any:
        """The trailing metadata of the attempt the call ended with."""
        await self._wait_end()
        source = self._source()
        if source is None:
            return grpc.aio.Metadata()
        if isinstance(source, grpc.aio.AioRpcError):
            return source.trailing_metadata()
        return await source.trailing_metadata()

    async def debug_error_string(self) -> str | None:
        """grpc's debug string of the call's end."""
        await self._wait_end()
        source = self._source()
        if source is None:
            return None if not self._cancelled else ""
        if isinstance(source, grpc.aio.AioRpcError):
            text: str | None = source.debug_error_string()
            return text
        text = await source.debug_error_string()
        return text

    async def wait_for_connection(self) -> None:
        """Wait until the call is connected to a member; raise its error when it ended
        without success, as grpc.aio does."""
        while True:
            attempt = await self._wait_placed()
            if attempt is None:
                break
            call = attempt.call
            if call is None:  # a hedged round: connected once it has an answer
                await self._wait_end()
                break
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
                await call.wait_for_connection()
            if not call.done():
                return
            await self._superseded(attempt)
            if self._attempt is attempt:
                break
        if self._done:
            self._raise_for_status()

    async def _superseded(self, attempt: Attempt) -> None:
        """Wait until ``attempt`` is settled: the call ended, or another attempt took over."""
        while not self._done and self._attempt is attempt:
            if self._ended is None:
                self._ended = self._loop.create_future()
            if self._placed is None:
                self._placed = self._loop.create_future()
            await asyncio.wait(
                [asyncio.shield(self._ended), asyncio.shield(self._placed)],
                return_when=asyncio.FIRST_COMPLETED,
            )

    def _raise_for_status(self) -> None:
        if self._cancelled:
            raise asyncio.CancelledError()
        if self._error is not None:
            raise self._error


class UnaryCall(AioCall, grpc.aio.UnaryUnaryCall, grpc.aio.StreamUnaryCall):  # type: ignore[misc]
    """A unary or client-streaming call: await it for the response.

    Like grpc.aio's own calls, the first attempt starts at once. A call declared
    idempotent is registered with the watchdog, which may abandon an attempt stuck on a
    member that leaves rotation so the loop can re-send it; a hedged call sends a
    :class:`HedgedAttempt`.
    """

    _hedge: float | None = None
    _rescue = False

    def _begin(self) -> None:
        drv = self._drv
        self._hedge = drv.hedge_delay() if self._requests is None else None
        self._rescue = drv.plan.idempotent
        step = drv.next_step()
        if step.kind is SEND:
            self._first = self._send(step)
        else:
            self._stashed = step
            self._spawn()

    # ----------------------------------------------------------------- attempts
    def _send(self, step: Step) -> Attempt | None:
        if self._hedge is not None:
            return self._adopt(HedgedAttempt(self, step, self._hedge))
        attempt = self._place(step, self._grpc_call(step))
        if attempt is not None and self._rescue:
            self._ch._streams.add_attempt(attempt.endpoint, attempt)
        return attempt

    async def _outcome(self, attempt: Attempt) -> Outcome | None:
        if isinstance(attempt, HedgedAttempt):
            return await attempt.outcome()
        call = attempt.call
        try:
            response = await call
        except asyncio.CancelledError:
            if attempt.abort_reason is None or self._cancelled:
                raise
            return _aborted(attempt)
        except grpc.aio.AioRpcError as err:
            return Outcome(attempt, call=call, error=err, failure=failure_of(err))
        finally:
            if self._rescue:
                self._ch._streams.remove_attempt(attempt.endpoint, attempt)
        return Outcome(attempt, response=response, call=call)

    # ------------------------------------------------------------------ await
    def __await__(self) -> Generator[Any, None, Any]:
        if not self._done:
            if not self._running and self._task is None:
                try:
                    yield from self._run().__await__()  # the hot path: no extra task
                except asyncio.CancelledError:
                    if not self._cancelled:
                        self._cancel()
                    raise
            else:
                yield from self._wait_end().__await__()
        if self._cancelled:
            raise asyncio.CancelledError()
        if self._error is not None:
            raise self._error
        return self._response


class HedgedAttempt(Attempt):
    """One round of a hedged unary call, settled as one attempt of the loop.

    The first attempt goes out at once; while no answer came within ``hedging.delay`` the
    core may allow another on a different member. The first success wins and the others
    are cancelled; when all fail, the last failure is the round's outcome. The bookkeeping
    is the core's :class:`~eagle.core.calls.HedgeRound`.
    """

    __slots__ = ("_owner", "_round", "_sent")

    def __init__(self, owner: UnaryCall, step: Step, delay: float) -> None:
        assert step.endpoint is not None
        super().__init__(None, step.endpoint, owner._drv.started)
        self._owner = owner
        self._round = HedgeRound(owner._drv, delay)
        self._sent: dict[asyncio.Task[Any], tuple[Any, str, float]] = {}
        self._send_one(step)

    def _send_one(self, step: Step) -> None:
        ep = step.endpoint
        assert ep is not None
        call = self._owner._grpc_call(step)
        task = asyncio.ensure_future(_await(call))
        started = self._owner._drv._clock()
        self._sent[task] = (call, ep, started)
        self._round.sent(ep, started)

    async def outcome(self) -> Outcome:
        """Race the round's attempts; the winner's or the last loser's outcome."""
        rnd = self._round
        pending: set[asyncio.Task[Any]] = set(self._sent)
        try:
            while True:
                done, pending = await asyncio.wait(
                    pending, timeout=rnd.wait_time(), return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    step = rnd.hedge()  # the delay passed with no answer
                    if step is not None:
                        before = set(self._sent)
                        self._send_one(step)
                        pending |= set(self._sent) - before
                    continue
                for task in done:
                    call, ep, started = self._sent[task]
                    if not task.cancelled() and task.exception() is None:
                        rnd.won(ep, started)
                        return Outcome(self, response=task.result(), call=call)
                    err: Any = None if task.cancelled() else task.exception()
                    if isinstance(err, grpc.aio.AioRpcError):
                        failure = failure_of(err)
                    else:
                        err = aio_error("CANCELLED", LOCAL_CANCEL)
                        failure = AttemptFailure("CANCELLED", LOCAL_CANCEL, Delivery.UNANSWERED)
                    if rnd.lost(ep, started, failure):
                        last = rnd.close_lost()
                        return Outcome(self, call=err, error=err, failure=last)
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Cancel every attempt of the round still going."""
        for task, (call, _, _) in self._sent.items():
            if not task.done():
                call.cancel()
                task.cancel()


async def _await(call: Any) -> Any:
    return await call


class StreamCall(AioCall, grpc.aio.UnaryStreamCall, grpc.aio.StreamStreamCall):  # type: ignore[misc]
    """A server-streaming or bidi call: ``read()`` or ``async for`` its responses.

    Until its first response reaches the application the call may be re-sent to another
    member (request messages are replayed from their buffer); from then on it is
    committed. The watchdog ends it with UNAVAILABLE when its member leaves rotation.
    """

    _delivered = False  # a response reached the application: committed
    _aiter: AsyncIterator[Any] | None = None

    def _begin(self) -> None:
        self._spawn()

    @property
    def endpoint(self) -> str | None:
        """The member the stream currently rides on."""
        attempt = self._attempt
        return None if attempt is None else attempt.endpoint

    def _committed(self, attempt: Attempt) -> bool:
        return self._delivered or super()._committed(attempt)

    def _send(self, step: Step) -> Attempt | None:
        attempt = self._place(step, self._grpc_call(step))
        if attempt is None:
            return None
        self._ch._streams.add(attempt.endpoint, attempt)
        attempt.call.add_done_callback(lambda _c: self._attempt_ended(attempt))
        return attempt

    async def _outcome(self, attempt: Attempt) -> Outcome | None:
        return None  # a stream's attempt reports when it ends (_attempt_ended)

    def _attempt_ended(self, attempt: Attempt) -> None:
        """The attempt's RPC terminated (grpc's callback, or the reader saw its end)."""
        if attempt.settled:
            return
        self._ch._streams.remove(attempt.endpoint, attempt)
        call = attempt.call
        if attempt.abort_reason is not None:
            outcome = _aborted(attempt)
        elif call.cancelled():
            outcome = Outcome(
                attempt,
                call=call,
                error=aio_error("CANCELLED", LOCAL_CANCEL),
                failure=AttemptFailure("CANCELLED", LOCAL_CANCEL, Delivery.UNANSWERED),
            )
        else:
            self._loop.create_task(self._settle_status(attempt)).add_done_callback(_consume)
            return
        if self._settle(outcome):
            self._task = None
            self._spawn()

    async def _settle_status(self, attempt: Attempt) -> None:
        call = attempt.call
        code = await call.code()
        if attempt.settled:
            return
        if code is grpc.StatusCode.OK:
            outcome = Outcome(attempt, call=call)
        else:
            err = grpc.aio.AioRpcError(
                code,
                await call.initial_metadata(),
                await call.trailing_metadata(),
                details=await call.details(),
                debug_error_string=await call.debug_error_string(),
            )
            outcome = Outcome(attempt, call=call, error=err, failure=failure_of(err))
        if self._settle(outcome):
            self._task = None
            self._spawn()

    # ---------------------------------------------------------------- reading
    async def read(self) -> Any:
        """The next response, or ``grpc.aio.EOF`` at the end of the stream."""
        if self._done and (self._attempt is None or self._attempt.call.done()):
            return self._end_of_stream()
        if self._aiter is not None:
            raise grpc.aio.UsageError(_API_STYLE)
        return await self._read()

    async def _read(self) -> Any:
        while True:
            attempt = await self._wait_placed()
            if attempt is None:
                return self._end_of_stream()
            try:
                msg = await attempt.call.read()
            except asyncio.CancelledError:
                if attempt.abort_reason is None:
                    raise  # the application cancelled the call (or the reading task)
                msg = None
            except grpc.aio.AioRpcError:
                msg = None
            if msg is None or msg is grpc.aio.EOF:
                # the attempt ended: the call ends with it, or another attempt takes over
                self._attempt_ended(attempt)
                await self._superseded(attempt)
                if self._attempt is attempt:
                    return self._end_of_stream()
                continue
            if self._attempt is not attempt:
                continue  # a failed attempt's leftover: the call was re-sent
            self._delivered = True
            return msg

    def _end_of_stream(self) -> Any:
        if self._cancelled:
            raise asyncio.CancelledError()
        if self._error is not None:
            raise self._error
        return grpc.aio.EOF

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            msg = await self._read()
            if msg is grpc.aio.EOF:
                return
            yield msg

    def __aiter__(self) -> AsyncIterator[Any]:
        if self._aiter is None:
            self._aiter = self._iterate()
        return self._aiter

    def abort(self, reason: str) -> None:
        """End the stream's current attempt because its member left rotation."""
        attempt = self._attempt
        if attempt is not None:
            attempt.abort(reason)

    async def initial_metadata(self) -> Any:
        """The initial metadata of the attempt the stream rides on."""
        while True:
            attempt = await self._wait_placed()
            if attempt is None or attempt.call is None:
                return await super().initial_metadata()
            md = await attempt.call.initial_metadata()
            if self._attempt is attempt or self._done:
                return md


async def _write(call: AioCall, request: Any) -> None:
    """``write()`` of a request-streaming call, with grpc.aio's checks; returns once the
    attempt in flight took the message (or the call ended)."""
    requests = call._requests
    if requests is None or not requests.writer:
        raise grpc.aio.UsageError(_API_STYLE)
    if call._done:
        raise asyncio.InvalidStateError(_ALREADY_FINISHED)
    if requests.done_writing:
        raise asyncio.InvalidStateError(_HALF_CLOSED)
    index = requests.write(request)
    call._spawn()
    while not call._done and not requests.read_by_current(index):
        await requests.changed()
    if call._done:
        call._raise_for_status()


async def _done_writing(call: AioCall) -> None:
    """``done_writing()`` of a request-streaming call (idempotent)."""
    requests = call._requests
    if requests is None or not requests.writer:
        raise grpc.aio.UsageError(_API_STYLE)
    if not requests.done_writing:
        requests.end()
    call._spawn()
