"""The asyncio channel: a real ``grpc.aio.Channel`` over N members.

The asyncio twin of :mod:`eagle._sync.channel`: same core, same decisions, grpc.aio I/O.
A ``grpc.aio`` channel is bound to the event loop it was created in, so sub-channels
and the prober start inside the running loop (at once when there is one, else on the
first call).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from typing import Any

import grpc

from ..config import Config
from ..core.calls import SEND, SLEEP, WAIT, CallDriver, Step
from ..endpoints import Endpoint, parse_endpoints
from ..shell.base import ChannelBase
from ..shell.outcomes import InFlight, final_error, report_failure
from ..shell.subchannels import RETIRE_GRACE, MethodHandle, SubChannel
from .hedging import hedged_run
from .prober import AioProber

__all__ = ["Channel", "insecure_channel", "secure_channel"]

log = logging.getLogger("eagle.aio.channel")


def _error(code: str, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode[code], grpc.aio.Metadata(), grpc.aio.Metadata(), details=details
    )


class Channel(ChannelBase, grpc.aio.Channel):  # type: ignore[misc]
    """A ``grpc.aio.Channel`` that spreads calls over several members and routes around
    crashed, frozen, draining, partitioned and misbehaving ones.

    Build it with :func:`eagle.aio.insecure_channel` or :func:`eagle.aio.secure_channel`.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        credentials: grpc.ChannelCredentials | None = None,
        config: Config | dict[str, Any] | str | None = None,
        *,
        options: Sequence[tuple[str, Any]] = (),
        authorities: dict[str, str] | None = None,
    ) -> None:
        self._setup(endpoints, credentials, config, options, authorities)
        self._started = False
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._prober = AioProber(self._balancer, self._subs, self.config)
        self._prober.on_discover = self.update_endpoints  # membership.discover
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._start()

    # ------------------------------------------------------------- sub-channels
    def _start(self) -> None:
        if self._started:
            return
        if self._closed:
            raise _error("CANCELLED", "eagle: channel is closed")
        self._loop = asyncio.get_running_loop()
        self._started = True
        self._event = asyncio.Event()
        self._pool.add(self._endpoints)
        self._prober.start()

    def _make_sub(self, ep: Endpoint) -> SubChannel[Any]:
        opts = self._sub_options(ep)
        if self._credentials is None:
            ch = grpc.aio.insecure_channel(ep.target, options=opts)
        else:
            ch = grpc.aio.secure_channel(ep.target, self._credentials, options=opts)
        return SubChannel(ep, ch)

    async def update_endpoints(self, endpoints: str | Sequence[str]) -> None:
        """Change the member set; members that stay keep their state and calls."""
        parsed = parse_endpoints(endpoints)
        self._start()
        self._pool.add(parsed)
        _, removed = self._balancer.update_endpoints(parsed)
        for sub in self._pool.retire(removed):
            for stream in self._streams.to_abort_all(sub.key):
                stream.abort(f"eagle: member {sub.key} was removed")
            # calls already placed on it may finish; close it after a grace period
            loop = asyncio.get_running_loop()
            loop.call_later(RETIRE_GRACE, self._close_retired, sub)

    def _close_retired(self, sub: SubChannel[Any]) -> None:
        if self._pool.forget(sub) and not self._closed:
            task = asyncio.ensure_future(sub.channel.close())
            self._prober._tasks.add(task)
            task.add_done_callback(self._prober._tasks.discard)

    def _changed(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                self._wake()
            else:
                loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        ev = self._event
        self._event = asyncio.Event()
        if ev is not None:
            ev.set()

    async def _pause(self, step: Step) -> None:
        if step.kind is SLEEP:
            await asyncio.sleep(step.delay)
        elif step.kind is WAIT:
            if self._closed:
                raise _error("CANCELLED", "eagle: channel is closed")
            ev = self._event
            if ev is not None and self._balancer.version == step.version:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), step.delay)
        else:
            raise _error(step.code, step.details)

    def _driver(
        self, method: str, timeout: float | None, wait: bool | None, streaming: bool = False
    ) -> CallDriver:
        self._check_forked()
        if self._closed:
            raise _error("CANCELLED", "eagle: channel is closed")
        if not self._started:
            self._start()
        return CallDriver(self._balancer, method, timeout, wait, streaming=streaming)

    # ---------------------------------------------------- grpc.aio.Channel API
    async def __aenter__(self) -> Channel:
        self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, grace: float | None = None) -> None:
        """Stop probing and close every sub-channel. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._prober.stop()
        subs = self._pool.all()
        await asyncio.gather(*(s.channel.close(grace) for s in subs), return_exceptions=True)
        self._wake()

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """READY while any member serves; CONNECTING before the first probes answer."""
        return self._connectivity()

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        """Return once :meth:`get_state` differs from ``last_observed_state``."""
        self._start()
        while self.get_state() == last_observed_state and not self._closed:
            ev = self._event
            if ev is not None:
                await ev.wait()

    async def channel_ready(self) -> None:
        """Return once some member is SERVING."""
        self._start()
        while self.get_state() != grpc.ChannelConnectivity.READY:
            await self.wait_for_state_change(self.get_state())


_MultiCallable = MethodHandle


class UnaryUnary(_MultiCallable, grpc.aio.UnaryUnaryMultiCallable):  # type: ignore[misc]
    """Unary-unary calls with picking, failover and retries."""

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> UnaryUnaryCall:
        """Start the call; await the result for the response."""
        drv = self._ch._driver(self._method, timeout, wait_for_ready)
        return UnaryUnaryCall(
            self, drv, request, (metadata, credentials, wait_for_ready, compression)
        )


class UnaryUnaryCall(grpc.aio.UnaryUnaryCall):  # type: ignore[misc]
    """An awaitable unary call that may take several attempts.

    Like grpc.aio's own calls, the first attempt starts at once. The retry loop runs in
    the task that awaits the call (no extra task per call on the hot path); a task is
    made only when someone needs the call to progress without awaiting it
    (``add_done_callback``, metadata, a second awaiter) or when the first step must wait.
    """

    def __init__(
        self, owner: UnaryUnary, drv: CallDriver, request: Any, args: tuple[Any, ...]
    ) -> None:
        self._owner = owner
        self._drv = drv
        self._request = request
        self._args = args
        self._attempt: Any = None
        self._error: BaseException | None = None
        self._result: Any = None
        self._finished = False
        self._cancelled = False
        self._running = False  # the retry loop runs (inline or in _task)
        self._task: asyncio.Task[Any] | None = None
        self._waiters: asyncio.Future[None] | None = None
        self._callbacks: list[Callable[[Any], None]] = []
        self._hedge = drv.hedge_delay()
        self._step: Step | None = None
        if self._hedge is None:
            step = drv.next_step()
            if step.kind is SEND:
                self._attempt = self._send(step)
            else:
                self._step = step
                self._ensure_task()
        else:
            self._ensure_task()

    def _send(self, step: Step) -> Any:
        metadata, credentials, wait_for_ready, compression = self._args
        return self._owner._mc(step.endpoint)(
            self._request,
            timeout=step.timeout,
            metadata=metadata,
            credentials=credentials,
            wait_for_ready=wait_for_ready,
            compression=compression,
        )

    async def _drive(self) -> Any:
        drv = self._drv
        ch = self._owner._ch
        if self._hedge is not None:
            return await hedged_run(self._owner, drv, self._hedge, self._request, self._args)
        while True:
            call = self._attempt
            if call is None:
                step = self._step or drv.next_step()
                self._step = None
                if step.kind is not SEND:
                    await ch._pause(step)
                    continue
                call = self._attempt = self._send(step)
            handle = None
            if drv.plan.idempotent:  # the watchdog may abandon it if its member goes
                handle = InFlight(call)
                ch._streams.add_attempt(drv.endpoint or "", handle)
            try:
                result = await call
            except asyncio.CancelledError:
                if handle is None or handle.reason is None or self._cancelled:
                    raise
                self._attempt = None
                if drv.failed("UNAVAILABLE", handle.reason):
                    continue
                raise _error("UNAVAILABLE", handle.reason) from None
            except grpc.aio.AioRpcError as err:
                if not self._cancelled and report_failure(drv, err):
                    self._attempt = None
                    continue
                final = final_error(drv, err)
                if final is err:
                    raise
                raise final from err
            finally:
                if handle is not None:
                    ch._streams.remove_attempt(drv.endpoint or "", handle)
            drv.succeeded()
            return result

    async def _run(self) -> Any:
        self._running = True
        try:
            result = await self._drive()
        except BaseException as exc:
            self._finish(None, exc)
            raise
        self._finish(result, None)
        return result

    def _finish(self, result: Any, error: BaseException | None) -> None:
        if self._finished:
            return
        self._finished = True
        self._result = result
        self._error = error
        if isinstance(error, asyncio.CancelledError):
            self._cancelled = True
        waiters = self._waiters
        if waiters is not None and not waiters.done():
            waiters.set_result(None)
        for cb in self._callbacks:
            try:
                cb(self)
            except Exception:
                log.exception("done callback failed")
        self._callbacks.clear()

    def _ensure_task(self) -> None:
        """Make the call progress on its own (no one may be awaiting it)."""
        if self._task is None and not self._running and not self._finished:
            self._task = asyncio.get_running_loop().create_task(self._run())
            self._task.add_done_callback(_consume)

    def _outcome(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._result

    async def _wait(self) -> None:
        if self._finished:
            return
        self._ensure_task()
        if self._waiters is None:
            self._waiters = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._waiters)

    def __await__(self) -> Generator[Any, None, Any]:
        if self._finished:
            return self._outcome()
        if not self._running and self._task is None:
            return (yield from self._run().__await__())  # the hot path: no extra task
        yield from self._wait().__await__()
        return self._outcome()

    # ---------------------------------------------------------------- grpc.aio.Call
    def cancelled(self) -> bool:
        """True when the call was cancelled."""
        return self._cancelled

    def done(self) -> bool:
        """True when the call finished."""
        return self._finished

    def time_remaining(self) -> float | None:
        """Seconds before the deadline, or None."""
        deadline = self._drv.deadline
        if deadline is None:
            return None
        return max(0.0, deadline - time.monotonic())

    def cancel(self) -> bool:
        """Cancel the call and its attempt in flight."""
        if self._finished:
            return False
        self._cancelled = True
        if self._attempt is not None:
            self._attempt.cancel()
        if self._task is not None:
            self._task.cancel()
        elif not self._running:
            self._finish(None, asyncio.CancelledError())
        return True

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(self)`` when done."""
        if self._finished:
            asyncio.get_running_loop().call_soon(callback, self)
            return
        self._callbacks.append(callback)
        self._ensure_task()

    async def _settle(self) -> Any:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            await self._wait()
        return self._error if isinstance(self._error, grpc.aio.AioRpcError) else self._attempt

    async def initial_metadata(self) -> Any:
        """Initial metadata of the attempt that answered."""
        final = await self._settle()
        if final is None:
            return grpc.aio.Metadata()
        if isinstance(final, grpc.aio.AioRpcError):
            return final.initial_metadata()
        return await final.initial_metadata()

    async def trailing_metadata(self) -> Any:
        """Trailing metadata of the attempt that answered."""
        final = await self._settle()
        if final is None:
            return grpc.aio.Metadata()
        if isinstance(final, grpc.aio.AioRpcError):
            return final.trailing_metadata()
        return await final.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        """Status code of the call."""
        final = await self._settle()
        if self._cancelled:
            return grpc.StatusCode.CANCELLED
        if isinstance(final, grpc.aio.AioRpcError):
            return final.code()
        return await final.code()

    async def details(self) -> str:
        """Status details of the call."""
        final = await self._settle()
        if isinstance(final, grpc.aio.AioRpcError):
            return str(final.details())
        return str(await final.details()) if final is not None else ""

    async def wait_for_connection(self) -> None:
        """Wait until the current attempt is connected."""
        while self._attempt is None and not self._finished:
            self._ensure_task()
            await asyncio.sleep(0.001)
        if self._attempt is not None:
            await self._attempt.wait_for_connection()


def _consume(task: asyncio.Task[Any]) -> None:
    """Mark a background call task's exception as retrieved (it is kept on the call)."""
    if not task.cancelled():
        task.exception()


class StreamCall(grpc.aio.UnaryStreamCall, grpc.aio.StreamStreamCall):  # type: ignore[misc]
    """A watched stream. Server-streaming calls are re-sent to another member when they
    fail before their first response; the watchdog ends the stream with UNAVAILABLE
    (naming the member and the reason) when its member leaves SERVING."""

    def __init__(
        self,
        owner: _MultiCallable,
        drv: CallDriver,
        request: Any,
        client_streaming: bool,
        args: tuple[Any, ...],
    ) -> None:
        self._owner = owner
        self._drv = drv
        self._request = request
        self._client_streaming = client_streaming
        self._args = args
        self._call: Any = None
        self._endpoint: str | None = None
        self._got_first = False
        self._abort_reason: str | None = None
        self._error: grpc.aio.AioRpcError | None = None
        self._finished = False
        self._ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._place())

    @property
    def endpoint(self) -> str | None:
        """The member this stream currently rides on."""
        return self._endpoint

    async def _place(self) -> None:
        ch = self._owner._ch
        drv = self._drv
        try:
            while True:
                step = drv.next_step()
                if step.kind is SEND:
                    break
                await ch._pause(step)
        except grpc.aio.AioRpcError as err:
            self._error = err
            self._finished = True
            self._ready.set()
            return
        ep = step.endpoint
        assert ep is not None
        metadata, credentials, wait_for_ready, compression = self._args
        self._endpoint = ep
        self._abort_reason = None
        self._call = self._owner._mc(ep)(
            self._request,
            timeout=step.timeout,
            metadata=metadata,
            credentials=credentials,
            wait_for_ready=wait_for_ready,
            compression=compression,
        )
        ch._streams.add(ep, self)
        self._ready.set()

    def abort(self, reason: str) -> None:
        """End the stream because its member left rotation (called by the watchdog)."""
        if self._finished or self._call is None:
            return
        self._abort_reason = reason
        log.info("ending stream %s: %s", self._owner._method, reason)
        self._call.cancel()

    def _end(self, err: Any) -> None:
        if self._finished or self._endpoint is None:
            return
        self._finished = True
        self._owner._ch._streams.remove(self._endpoint, self)
        if err is None:
            self._drv.succeeded()
        else:
            report_failure(self._drv, err, may_retry=False)

    async def read(self) -> Any:
        """The next response, or ``grpc.aio.EOF`` at the end of the stream."""
        while True:
            await self._ready.wait()
            if self._error is not None:
                raise self._error
            try:
                msg = await self._call.read()
            except asyncio.CancelledError:
                if self._abort_reason is None:
                    raise
                self._error = _error("UNAVAILABLE", self._abort_reason)
                self._end(self._error)
                raise self._error from None
            except grpc.aio.AioRpcError as err:
                if self._abort_reason is not None:
                    self._error = _error("UNAVAILABLE", self._abort_reason)
                    self._end(self._error)
                    raise self._error from None
                may_retry = not (self._got_first or self._client_streaming)
                if self._endpoint is not None:
                    self._owner._ch._streams.remove(self._endpoint, self)
                if report_failure(self._drv, err, may_retry=may_retry):
                    self._ready.clear()
                    self._task = asyncio.get_running_loop().create_task(self._place())
                    continue
                self._finished = True
                self._error = err
                raise
            if msg is grpc.aio.EOF:
                self._end(None)
                return msg
            self._got_first = True
            return msg

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            msg = await self.read()
            if msg is grpc.aio.EOF:
                return
            yield msg

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def write(self, request: Any) -> None:
        """Send one request message (bidi streams)."""
        await self._ready.wait()
        if self._error is not None:
            raise self._error
        await self._call.write(request)

    async def done_writing(self) -> None:
        """Close the request side (bidi streams)."""
        await self._ready.wait()
        if self._error is not None:
            raise self._error
        await self._call.done_writing()

    # ---------------------------------------------------------------- grpc.aio.Call
    def cancelled(self) -> bool:
        """True when the caller cancelled the stream."""
        return bool(self._call is not None and self._call.cancelled() and not self._abort_reason)

    def done(self) -> bool:
        """True once the stream ended."""
        return self._finished or (self._call is not None and self._call.done())

    def time_remaining(self) -> float | None:
        """Seconds before the deadline, or None."""
        return self._call.time_remaining() if self._call is not None else None

    def cancel(self) -> bool:
        """Cancel the stream (by the caller)."""
        if self._endpoint is not None:
            self._owner._ch._streams.remove(self._endpoint, self)
        if self._call is None:
            return bool(self._task.cancel())
        return bool(self._call.cancel())

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(self)`` when the current attempt is done."""
        if self._call is not None:
            self._call.add_done_callback(lambda _c: callback(self))

    async def initial_metadata(self) -> Any:
        """Initial metadata of the current attempt."""
        await self._ready.wait()
        return await self._call.initial_metadata() if self._call else grpc.aio.Metadata()

    async def trailing_metadata(self) -> Any:
        """Trailing metadata of the stream."""
        await self._ready.wait()
        if self._error is not None or self._call is None:
            return grpc.aio.Metadata()
        return await self._call.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        """Status code; UNAVAILABLE when eagle ended the stream."""
        await self._ready.wait()
        if self._error is not None:
            return self._error.code()
        return await self._call.code()

    async def details(self) -> str:
        """Status details; name the member and reason when eagle ended the stream."""
        await self._ready.wait()
        if self._error is not None:
            return str(self._error.details())
        return str(await self._call.details())

    async def wait_for_connection(self) -> None:
        """Wait until the stream is connected."""
        await self._ready.wait()
        if self._call is not None:
            await self._call.wait_for_connection()


class UnaryStream(_MultiCallable, grpc.aio.UnaryStreamMultiCallable):  # type: ignore[misc]
    """Server-streaming calls, watched while open."""

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> StreamCall:
        """Open the stream; iterate with ``async for`` or call ``read()``."""
        drv = self._ch._driver(self._method, timeout, wait_for_ready, streaming=True)
        return StreamCall(
            self, drv, request, False, (metadata, credentials, wait_for_ready, compression)
        )


class StreamStream(_MultiCallable, grpc.aio.StreamStreamMultiCallable):  # type: ignore[misc]
    """Bidi streams, watched while open."""

    def __call__(
        self,
        request_iterator: Any = None,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> StreamCall:
        """Open the stream; use ``write``/``done_writing``/``read`` or a request iterator."""
        drv = self._ch._driver(self._method, timeout, wait_for_ready, streaming=True)
        return StreamCall(
            self,
            drv,
            request_iterator,
            True,
            (metadata, credentials, wait_for_ready, compression),
        )


class StreamUnary(_MultiCallable, grpc.aio.StreamUnaryMultiCallable):  # type: ignore[misc]
    """Client-streaming calls: placed on a picked member; never re-sent."""

    def __call__(
        self,
        request_iterator: Any = None,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        """Start the call; returns grpc.aio's own call object for the attempt."""
        drv = self._ch._driver(self._method, timeout, wait_for_ready, streaming=True)
        step = drv.next_step()
        if step.kind is not SEND:
            # no member at all: fail the call the grpc.aio way, when awaited
            return _failed_call(step)
        call = self._mc(step.endpoint)(
            request_iterator,
            timeout=step.timeout,
            metadata=metadata,
            credentials=credentials,
            wait_for_ready=wait_for_ready,
            compression=compression,
        )

        def report(c: Any) -> None:
            if c.cancelled():
                drv.failed("CANCELLED", None, may_retry=False)
                return
            exc = c.exception() if hasattr(c, "exception") else None
            if exc is None:
                drv.succeeded()
            else:
                report_failure(drv, exc, may_retry=False)

        call.add_done_callback(report)
        return call


Channel._kinds = {
    "unary_unary": UnaryUnary,
    "unary_stream": UnaryStream,
    "stream_unary": StreamUnary,
    "stream_stream": StreamStream,
}


async def _fail(step: Step) -> Any:
    raise _error(step.code or "UNAVAILABLE", step.details)


def _failed_call(step: Step) -> Any:
    return asyncio.get_running_loop().create_task(_fail(step))


def insecure_channel(
    endpoints: str | Sequence[str],
    config: Config | dict[str, Any] | str | None = None,
    *,
    options: Sequence[tuple[str, Any]] = (),
) -> Channel:
    """A plaintext asyncio :class:`Channel` over ``endpoints`` (see
    :func:`eagle.insecure_channel` for the arguments)."""
    return Channel(endpoints, None, config, options=options)


def secure_channel(
    endpoints: str | Sequence[str],
    credentials: grpc.ChannelCredentials,
    config: Config | dict[str, Any] | str | None = None,
    *,
    options: Sequence[tuple[str, Any]] = (),
    authorities: dict[str, str] | None = None,
) -> Channel:
    """A TLS asyncio :class:`Channel`; probes use the same credentials as calls."""
    if credentials is None:
        raise ValueError("secure_channel: credentials must not be None")
    return Channel(endpoints, credentials, config, options=options, authorities=authorities)
