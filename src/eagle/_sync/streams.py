"""Watched streams for the sync channel.

A :class:`SyncStream` rides on one member. The channel's watchdog calls :meth:`abort`
when that member leaves SERVING; the caller then sees ``UNAVAILABLE`` with details that
name the member and the reason. Server-streaming calls are re-sent to another member when
they fail before their first response (and the failure is retryable).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from ..core.calls import SEND
from ..errors import EagleRpcError
from ..shell.outcomes import report_failure

if TYPE_CHECKING:
    from .channel import _MultiCallable

__all__ = ["SyncStream"]

log = logging.getLogger("eagle.streams")


class SyncStream(grpc.Call, grpc.Future):  # type: ignore[misc]
    """An iterator of responses that is also a ``grpc.Call`` and ``grpc.Future``."""

    def __init__(
        self,
        owner: _MultiCallable,
        request: Any,
        client_streaming: bool,
        timeout: float | None,
        metadata: Any,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
    ) -> None:
        self._owner = owner
        self._request = request
        self._client_streaming = client_streaming
        self._args = (metadata, credentials, wait_for_ready, compression)
        self._drv = owner._ch._driver(owner._method, timeout, wait_for_ready, streaming=True)
        self._lock = threading.Lock()
        self._call: Any = None
        self._endpoint: str | None = None
        self._got_first = False
        self._abort_reason: str | None = None
        self._error: grpc.RpcError | None = None
        self._finished = False
        self._finished_by_user = False

    @property
    def endpoint(self) -> str | None:
        """The member this stream currently rides on."""
        return self._endpoint

    def _start(self) -> None:
        ch = self._owner._ch
        drv = self._drv
        while True:
            step = drv.next_step()
            if step.kind is SEND:
                break
            try:
                ch._pause(step)
            except grpc.RpcError as err:
                self._error = err
                self._finished = True
                return
        ep = step.endpoint
        assert ep is not None
        metadata, credentials, wait_for_ready, compression = self._args
        with self._lock:
            self._endpoint = ep
            self._abort_reason = None
            self._call = self._owner._mc(ep)(
                self._request, step.timeout, metadata, credentials, wait_for_ready, compression
            )
        ch._streams.add(ep, self)

    def _end(self, err: grpc.RpcError | None) -> None:
        ep = self._endpoint
        if ep is None or self._finished:
            return
        self._finished = True
        self._owner._ch._streams.remove(ep, self)
        if err is None:
            self._drv.succeeded()
        else:
            report_failure(self._drv, err, may_retry=False)

    def abort(self, reason: str) -> None:
        """End the stream because its member left rotation (called by the watchdog)."""
        with self._lock:
            if self._finished or self._call is None:
                return
            self._abort_reason = reason
            call = self._call
        log.info("ending stream %s: %s", self._owner._method, reason)
        call.cancel()

    # ---------------------------------------------------------------- iterator
    def __iter__(self) -> SyncStream:
        return self

    def __next__(self) -> Any:
        while True:
            if self._error is not None:
                raise self._error
            try:
                msg = next(self._call)
            except StopIteration:
                self._end(None)
                raise
            except grpc.RpcError as err:
                if self._abort_reason is not None:
                    self._end(err)
                    self._error = EagleRpcError(grpc.StatusCode.UNAVAILABLE, self._abort_reason)
                    raise self._error from None
                may_retry = not (self._got_first or self._client_streaming or self.cancelled())
                ep = self._endpoint
                assert ep is not None
                self._owner._ch._streams.remove(ep, self)
                self._finished = True
                if report_failure(self._drv, err, may_retry=may_retry):
                    self._finished = False
                    self._start()
                    continue
                self._error = err
                raise
            self._got_first = True
            return msg

    def next(self) -> Any:
        """Python 2 style alias of ``__next__`` (grpcio has it too)."""
        return self.__next__()

    # -------------------------------------------------------------- grpc.Call
    def initial_metadata(self) -> Any:
        """Initial metadata of the attempt that answered."""
        return self._call.initial_metadata() if self._call is not None else ()

    def trailing_metadata(self) -> Any:
        """Trailing metadata of the stream."""
        if isinstance(self._error, EagleRpcError) or self._call is None:
            return ()
        return self._call.trailing_metadata()

    def code(self) -> grpc.StatusCode:
        """Status code; UNAVAILABLE when eagle ended the stream."""
        if isinstance(self._error, EagleRpcError):
            return self._error.code()
        if self._abort_reason is not None:
            return grpc.StatusCode.UNAVAILABLE
        return self._call.code()

    def details(self) -> str | None:
        """Status details; name the member and reason when eagle ended the stream."""
        if isinstance(self._error, EagleRpcError):
            return self._error.details()
        if self._abort_reason is not None:
            return self._abort_reason
        details: str | None = self._call.details()
        return details

    def is_active(self) -> bool:
        """True while the stream is open."""
        return not self._finished and self._call is not None and bool(self._call.is_active())

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline."""
        return self._call.time_remaining() if self._call is not None else None

    def cancel(self) -> bool:
        """Cancel the stream (by the caller)."""
        self._finished_by_user = True
        if self._call is None:
            return False
        if self._endpoint is not None:
            self._owner._ch._streams.remove(self._endpoint, self)
        return bool(self._call.cancel())

    def add_callback(self, callback: Callable[[], Any]) -> bool:
        """Call ``callback()`` when the current attempt terminates."""
        return bool(self._call.add_callback(callback)) if self._call is not None else False

    # ------------------------------------------------------------ grpc.Future
    def cancelled(self) -> bool:
        """True when the caller cancelled the stream."""
        return self._finished_by_user

    def running(self) -> bool:
        """True while the stream is open."""
        return self.is_active()

    def done(self) -> bool:
        """True once the stream ended."""
        return not self.is_active()

    def result(self, timeout: float | None = None) -> Any:
        """grpcio semantics: block until the stream ends."""
        if self._error is not None:
            raise self._error
        return self._call.result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The stream's error, or None."""
        if self._error is not None:
            error: BaseException = self._error
            return error
        exc: BaseException | None = self._call.exception(timeout)
        return exc

    def traceback(self, timeout: float | None = None) -> Any:
        """The traceback of the stream's error, or None."""
        if self._error is not None:
            return self._error.__traceback__
        return self._call.traceback(timeout)

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        """Call ``fn(self)`` when the current attempt is done."""
        if self._call is None:
            fn(self)
            return
        self._call.add_done_callback(lambda _c: fn(self))
