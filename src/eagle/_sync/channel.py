"""The synchronous channel: a real ``grpc.Channel`` over N members.

This module only does grpc I/O; every decision comes from :class:`eagle.core.balancer.Balancer`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc

from ..config import Config
from ..core.calls import FAIL, SEND, SLEEP, WAIT, CallDriver, Step
from ..endpoints import Endpoint, parse_endpoints
from ..errors import EagleRpcError
from ..shell.base import ChannelBase
from ..shell.forking import generation
from ..shell.outcomes import InFlight, final_error, report_failure
from ..shell.subchannels import RETIRE_GRACE, MethodHandle, SubChannel
from .hedging import hedged_call
from .prober import Prober
from .streams import SyncStream

__all__ = ["Channel", "insecure_channel", "secure_channel"]

log = logging.getLogger("eagle.channel")

_monotonic = time.monotonic


class Channel(ChannelBase, grpc.Channel):  # type: ignore[misc]
    """A ``grpc.Channel`` that spreads calls over several members and routes around
    crashed, frozen, draining, partitioned and misbehaving ones.

    Build it with :func:`eagle.insecure_channel` or :func:`eagle.secure_channel`.
    Generated stubs work unchanged. ``status()`` shows what eagle sees.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        credentials: grpc.ChannelCredentials | None = None,
        config: Config | dict[str, Any] | str | None = None,
        *,
        options: Sequence[tuple[str, Any]] = (),
        authorities: dict[str, str] | None = None,
        _start: bool = True,
    ) -> None:
        self._setup(endpoints, credentials, config, options, authorities)
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._connectivity_subs: list[Callable[[grpc.ChannelConnectivity], None]] = []
        self._pool.add(self._endpoints)
        self._prober = Prober(self._balancer, self._subs, self.config)
        self._prober.on_discover = self.update_endpoints  # membership.discover
        if _start:
            self._prober.start()

    # ------------------------------------------------------------- sub-channels
    def _make_sub(self, ep: Endpoint) -> SubChannel[grpc.Channel]:
        opts = self._sub_options(ep)
        if self._credentials is None:
            ch = grpc.insecure_channel(ep.target, options=opts)
        else:
            ch = grpc.secure_channel(ep.target, self._credentials, options=opts)
        return SubChannel(ep, ch)

    def update_endpoints(self, endpoints: str | Sequence[str]) -> None:
        """Change the member set. Members that stay keep their sub-channel, state and
        in-flight calls; removed members' sub-channels close once their streams end."""
        parsed = parse_endpoints(endpoints)
        with self._lock:
            if self._closed:
                raise ValueError("channel is closed")
            self._pool.add(parsed)
            _, removed = self._balancer.update_endpoints(parsed)
            gone = self._pool.retire(removed)
        for sub in gone:
            for stream in self._streams.to_abort_all(sub.key):
                stream.abort(f"eagle: member {sub.key} was removed")
            # calls already placed on it may finish; close it after a grace period
            timer = threading.Timer(RETIRE_GRACE, self._close_retired, (sub,))
            timer.daemon = True
            timer.start()

    def _close_retired(self, sub: SubChannel[grpc.Channel]) -> None:
        with self._lock:
            if not self._pool.forget(sub):
                return
        sub.channel.close()

    def _changed(self) -> None:
        with self._cond:
            self._cond.notify_all()
        if self._connectivity_subs:
            state = self._connectivity()
            for cb in list(self._connectivity_subs):
                try:
                    cb(state)
                except Exception:
                    log.exception("connectivity callback failed")

    def wait_for_change(self, version: int, timeout: float | None) -> bool:
        """Block until the table's version differs from ``version`` or ``timeout`` passes."""
        with self._cond:
            return self._cond.wait_for(lambda: self._balancer.version != version, timeout)

    # --------------------------------------------------------- grpc.Channel API
    def subscribe(
        self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False
    ) -> None:
        """Report the channel's overall connectivity (READY while any member serves)."""
        self._connectivity_subs.append(callback)
        callback(self._connectivity())

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        """Stop reporting connectivity to ``callback``."""
        if callback in self._connectivity_subs:
            self._connectivity_subs.remove(callback)

    def close(self) -> None:
        """Stop probing and close every sub-channel. Idempotent and thread-safe."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subs = self._pool.all()
        if self._generation != generation():
            return  # forked child: grpc state and the prober thread belong to the parent
        self._prober.stop()
        for sub in subs:
            sub.channel.close()
        with self._cond:
            self._cond.notify_all()

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed:
                self.close()
        except Exception:
            pass

    # ------------------------------------------------------------ call helpers
    def _driver(
        self, method: str, timeout: float | None, wait: bool | None, streaming: bool = False
    ) -> CallDriver:
        self._check_forked()
        if self._closed:
            raise EagleRpcError(grpc.StatusCode.CANCELLED, "eagle: channel is closed")
        return CallDriver(self._balancer, method, timeout, wait, streaming=streaming)

    def _pause(self, step: Step) -> None:
        """Carry out a SLEEP or WAIT step, or raise for a FAIL step."""
        if step.kind is SLEEP:
            time.sleep(step.delay)
        elif step.kind is WAIT:
            if self._closed:
                raise EagleRpcError(grpc.StatusCode.CANCELLED, "eagle: channel is closed")
            self.wait_for_change(step.version, step.delay)
        else:
            raise EagleRpcError(grpc.StatusCode[step.code], step.details)


_MultiCallable = MethodHandle


class UnaryUnary(_MultiCallable, grpc.UnaryUnaryMultiCallable):  # type: ignore[misc]
    """Unary-unary calls: each attempt goes to a picked member; failures are retried on
    another member when that is safe (see the retry section of the README)."""

    def _blocking(
        self,
        request: Any,
        timeout: float | None,
        metadata: Any,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
        with_call: bool,
    ) -> Any:
        ch = self._ch
        drv = ch._driver(self._method, timeout, wait_for_ready)
        hedge = drv.hedge_delay()
        if hedge is not None:
            return hedged_call(
                self,
                drv,
                hedge,
                request,
                metadata,
                credentials,
                wait_for_ready,
                compression,
                with_call,
            )
        rescue = drv.plan.idempotent  # abandon stuck attempts when their member goes
        while True:
            step = drv.next_step()
            if step.kind is not SEND:
                ch._pause(step)
                continue
            mc = self._mc(step.endpoint)
            if rescue:
                return_call, result = self._rescuable(
                    ch, drv, step, mc, request, metadata, credentials, wait_for_ready, compression
                )
                if return_call is None:
                    continue  # abandoned: try again elsewhere
                return (result, return_call) if with_call else result
            try:
                if with_call:
                    result = mc.with_call(
                        request, step.timeout, metadata, credentials, wait_for_ready, compression
                    )
                else:
                    result = mc(
                        request, step.timeout, metadata, credentials, wait_for_ready, compression
                    )
            except grpc.RpcError as err:
                if report_failure(drv, err):
                    continue
                final = final_error(drv, err)
                if final is err:
                    raise
                raise final from err
            drv.succeeded()
            return result

    @staticmethod
    def _rescuable(
        ch: Channel,
        drv: CallDriver,
        step: Step,
        mc: Any,
        request: Any,
        metadata: Any,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
    ) -> tuple[Any, Any]:
        """One attempt of an idempotent call, as a future the watchdog can abandon.

        Returns (call, response); (None, None) when the call should go on elsewhere."""
        ep = step.endpoint
        assert ep is not None
        fut = mc.future(request, step.timeout, metadata, credentials, wait_for_ready, compression)
        handle = InFlight(fut)
        ch._streams.add_attempt(ep, handle)
        try:
            result = fut.result()
        except grpc.FutureCancelledError:
            reason = handle.reason or "eagle: attempt cancelled"
            if drv.failed("UNAVAILABLE", reason):
                return None, None
            raise EagleRpcError(grpc.StatusCode.UNAVAILABLE, reason) from None
        except grpc.RpcError as err:
            if report_failure(drv, err):
                return None, None
            raise final_error(drv, err) from None
        finally:
            ch._streams.remove_attempt(ep, handle)
        drv.succeeded()
        return fut, result

    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        """Send the call and block until its response (or raise ``grpc.RpcError``)."""
        return self._blocking(
            request, timeout, metadata, credentials, wait_for_ready, compression, False
        )

    def with_call(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> tuple[Any, grpc.Call]:
        """Like ``__call__`` but also return the ``grpc.Call`` of the attempt that answered."""
        result: tuple[Any, grpc.Call] = self._blocking(
            request, timeout, metadata, credentials, wait_for_ready, compression, True
        )
        return result

    def future(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> UnaryFuture:
        """Start the call without blocking; returns a ``grpc.Future`` that is a ``grpc.Call``."""
        fut = UnaryFuture(
            self, request, timeout, metadata, credentials, wait_for_ready, compression
        )
        fut._start()
        return fut


class UnaryFuture(grpc.Future, grpc.Call):  # type: ignore[misc]
    """The future of a unary call that may take several attempts."""

    def __init__(
        self,
        owner: UnaryUnary,
        request: Any,
        timeout: float | None,
        metadata: Any,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
    ) -> None:
        self._owner = owner
        self._args = (request, metadata, credentials, wait_for_ready, compression)
        self._drv = owner._ch._driver(owner._method, timeout, wait_for_ready)
        self._cond = threading.Condition()
        self._attempt: Any = None
        self._result: Any = None
        self._error: BaseException | None = None
        self._done = False
        self._cancelled = False
        self._callbacks: list[Callable[[Any], None]] = []

    # ---------------------------------------------------------------- attempts
    def _start(self) -> None:
        """Run the driver until an attempt is in flight (timers instead of sleeping)."""
        step = self._drv.next_step()
        if step.kind is SLEEP or step.kind is WAIT:
            delay = step.delay
            if step.kind is WAIT and self._owner._ch.closed:
                self._finish(None, EagleRpcError(grpc.StatusCode.CANCELLED, "channel closed"))
                return
            timer = threading.Timer(delay, self._start)
            timer.daemon = True
            timer.start()
            return
        if step.kind is FAIL:
            self._finish(None, EagleRpcError(grpc.StatusCode[step.code], step.details))
            return
        request, metadata, credentials, wait_for_ready, compression = self._args
        with self._cond:
            if self._cancelled:
                return
            self._attempt = self._owner._mc(step.endpoint).future(
                request, step.timeout, metadata, credentials, wait_for_ready, compression
            )
        self._attempt.add_done_callback(self._on_attempt)

    def _on_attempt(self, attempt: Any) -> None:
        try:
            result = attempt.result()
        except grpc.RpcError as err:
            if not self._cancelled and report_failure(self._drv, err):
                self._start()
            else:
                self._finish(None, final_error(self._drv, err))
            return
        except grpc.FutureCancelledError as err:
            self._finish(None, err)
            return
        self._drv.succeeded()
        self._finish(result, None)

    def _finish(self, result: Any, error: BaseException | None) -> None:
        with self._cond:
            if self._done:
                return
            self._result = result
            self._error = error
            self._done = True
            self._cond.notify_all()
            callbacks = list(self._callbacks)
        for cb in callbacks:
            try:
                cb(self)
            except Exception:
                log.exception("future callback failed")

    # ------------------------------------------------------------ grpc.Future
    def cancel(self) -> bool:
        """Cancel the call (and its attempt in flight)."""
        with self._cond:
            if self._done:
                return False
            self._cancelled = True
            attempt = self._attempt
        if attempt is not None:
            attempt.cancel()
        self._finish(None, grpc.FutureCancelledError())
        return True

    def cancelled(self) -> bool:
        """True when the call was cancelled."""
        return self._cancelled

    def running(self) -> bool:
        """True while the call is not done."""
        return not self._done

    def done(self) -> bool:
        """True when the call finished (succeeded, failed or was cancelled)."""
        return self._done

    def _wait(self, timeout: float | None) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._done, timeout):
                raise grpc.FutureTimeoutError()

    def result(self, timeout: float | None = None) -> Any:
        """The response; raises the call's ``grpc.RpcError`` when it failed."""
        self._wait(timeout)
        if self._error is not None:
            raise self._error
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The call's error, or None."""
        self._wait(timeout)
        return self._error

    def traceback(self, timeout: float | None = None) -> Any:
        """The traceback of the call's error, or None."""
        self._wait(timeout)
        return None if self._error is None else self._error.__traceback__

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        """Call ``fn(self)`` when the call is done (at once if it already is)."""
        with self._cond:
            if not self._done:
                self._callbacks.append(fn)
                return
        fn(self)

    # -------------------------------------------------------------- grpc.Call
    def _final(self) -> Any:
        self._wait(None)
        return self._error if isinstance(self._error, grpc.Call) else self._attempt

    def initial_metadata(self) -> Any:
        """Initial metadata of the attempt that answered."""
        final = self._final()
        return final.initial_metadata() if final is not None else ()

    def trailing_metadata(self) -> Any:
        """Trailing metadata of the attempt that answered."""
        final = self._final()
        return final.trailing_metadata() if final is not None else ()

    def code(self) -> grpc.StatusCode:
        """Status code of the call."""
        if self._cancelled:
            return grpc.StatusCode.CANCELLED
        final = self._final()
        return final.code() if final is not None else grpc.StatusCode.UNKNOWN

    def details(self) -> str | None:
        """Status details of the call."""
        final = self._final()
        return final.details() if final is not None else None

    def is_active(self) -> bool:
        """True while the call is in progress."""
        return not self._done

    def time_remaining(self) -> float | None:
        """Seconds left before the call's deadline, or None without one."""
        deadline = self._drv.deadline
        return None if deadline is None else max(0.0, deadline - _monotonic())

    def add_callback(self, callback: Callable[[], Any]) -> bool:
        """Call ``callback()`` when the call terminates."""
        self.add_done_callback(lambda _f: callback())
        return True


class UnaryStream(_MultiCallable, grpc.UnaryStreamMultiCallable):  # type: ignore[misc]
    """Server-streaming calls: retried only before the first response; watched while open."""

    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> SyncStream:
        """Open the stream; returns an iterator of responses that is also a ``grpc.Call``."""
        stream = SyncStream(
            self, request, False, timeout, metadata, credentials, wait_for_ready, compression
        )
        stream._start()
        return stream


class StreamStream(_MultiCallable, grpc.StreamStreamMultiCallable):  # type: ignore[misc]
    """Bidi streams: placed on a picked member and watched while open."""

    def __call__(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> SyncStream:
        """Open the stream; returns an iterator of responses that is also a ``grpc.Call``."""
        stream = SyncStream(
            self,
            request_iterator,
            True,
            timeout,
            metadata,
            credentials,
            wait_for_ready,
            compression,
        )
        stream._start()
        return stream


class StreamUnary(_MultiCallable, grpc.StreamUnaryMultiCallable):  # type: ignore[misc]
    """Client-streaming calls: placed on a picked member; never re-sent once the request
    iterator was handed to grpc (its messages cannot be replayed)."""

    def _place(self, timeout: float | None, wait: bool | None) -> tuple[CallDriver, Step]:
        drv = self._ch._driver(self._method, timeout, wait, streaming=True)
        while True:
            step = drv.next_step()
            if step.kind is SEND:
                return drv, step
            self._ch._pause(step)

    @staticmethod
    def _run(drv: CallDriver, fn: Callable[[], Any]) -> Any:
        try:
            result = fn()
        except grpc.RpcError as err:
            report_failure(drv, err, may_retry=False)
            raise
        drv.succeeded()
        return result

    def __call__(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        """Send the request stream and block until the response."""
        drv, step = self._place(timeout, wait_for_ready)
        mc = self._mc(step.endpoint)
        return self._run(
            drv,
            lambda: mc(
                request_iterator, step.timeout, metadata, credentials, wait_for_ready, compression
            ),
        )

    def with_call(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> tuple[Any, grpc.Call]:
        """Like ``__call__`` but also return the ``grpc.Call``."""
        drv, step = self._place(timeout, wait_for_ready)
        mc = self._mc(step.endpoint)
        result: tuple[Any, grpc.Call] = self._run(
            drv,
            lambda: mc.with_call(
                request_iterator, step.timeout, metadata, credentials, wait_for_ready, compression
            ),
        )
        return result

    def future(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        """Start the call without blocking; returns grpc's own future for the attempt."""
        drv, step = self._place(timeout, wait_for_ready)
        fut = self._mc(step.endpoint).future(
            request_iterator, step.timeout, metadata, credentials, wait_for_ready, compression
        )

        def report(f: Any) -> None:
            code = f.code()
            if code is grpc.StatusCode.OK:
                drv.succeeded()
            else:
                drv.failed(
                    code.name if code is not None else "UNKNOWN", f.details(), may_retry=False
                )

        fut.add_done_callback(report)
        return fut


Channel._kinds = {
    "unary_unary": UnaryUnary,
    "unary_stream": UnaryStream,
    "stream_unary": StreamUnary,
    "stream_stream": StreamStream,
}


def insecure_channel(
    endpoints: str | Sequence[str],
    config: Config | dict[str, Any] | str | None = None,
    *,
    options: Sequence[tuple[str, Any]] = (),
) -> Channel:
    """A plaintext :class:`Channel` over ``endpoints`` (``"a:1,b:2"`` or a sequence).

    ``config`` is an :class:`eagle.Config`, a dict with the same keys, or a path to a
    ``.json``/``.toml`` file; None reads ``EAGLE_CONFIG`` or uses the defaults.
    ``options`` are extra grpc channel options for every sub-channel.
    """
    return Channel(endpoints, None, config, options=options)


def secure_channel(
    endpoints: str | Sequence[str],
    credentials: grpc.ChannelCredentials,
    config: Config | dict[str, Any] | str | None = None,
    *,
    options: Sequence[tuple[str, Any]] = (),
    authorities: dict[str, str] | None = None,
) -> Channel:
    """A TLS :class:`Channel`; probes use the same credentials as calls.

    ``authorities`` maps an endpoint to the TLS host name to verify (for members
    addressed by IP): it sets ``grpc.ssl_target_name_override`` on that sub-channel.
    """
    if credentials is None:
        raise ValueError("secure_channel: credentials must not be None")
    return Channel(endpoints, credentials, config, options=options, authorities=authorities)
