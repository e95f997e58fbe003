"""The synchronous channel: a real ``grpc.Channel`` over N members.

This module only does grpc I/O; every decision comes from :class:`eagle.core.balancer.Balancer`
and the calls run in the one attempt loop of :mod:`eagle._sync.calls`.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from ..config import Config
from ..core.calls import SLEEP, WAIT, CallDriver, Step
from ..endpoints import Endpoint, parse_endpoints
from ..shell.base import ChannelBase
from ..shell.forking import generation
from ..shell.subchannels import RETIRE_GRACE, MethodHandle, SubChannel
from .calls import StreamCall, UnaryCall
from .connectivity import ConnectivityWatcher
from .discovery import Discovery
from .prober import Prober
from .timers import Timers

__all__ = ["Channel", "MultiCallable", "insecure_channel", "secure_channel"]

log = logging.getLogger("eagle.channel")

#: what grpc raises for a blocking unary call on a closed channel, and for the others
_CLOSED_BLOCKING = "Cannot invoke RPC on closed channel!"
_CLOSED = "Cannot invoke RPC: Channel closed!"


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
        options: Sequence[tuple[str, Any]] | None = None,
        compression: grpc.Compression | None = None,
        *,
        config: Config | dict[str, Any] | str | None = None,
        authorities: dict[str, str] | None = None,
        _start: bool = True,
    ) -> None:
        self._setup(endpoints, credentials, config, options or (), authorities, compression)
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._connectivity_subs: list[Callable[[grpc.ChannelConnectivity], None]] = []
        self._waiters: list[Callable[[], None]] = []
        self._timers = Timers()
        self._pool.add(self._pool_changes()[0])
        self._prober = Prober(self._balancer, self._subs, self.config)
        self._prober.on_discover = self.update_endpoints  # membership.discover
        self._watcher = ConnectivityWatcher(self._balancer, self._subs, self._timers)
        if self._discovery_provider is not None:  # discovery: dns:///..., etcd:///...
            self._discovery = Discovery(
                self._discovery_provider,
                self.config.discovery,
                self._balancer,
                self.update_endpoints,
                [ep.raw for ep in self._endpoints],
            )
        if _start:
            self._prober.start()
            self._watcher.start()
            if self._discovery is not None:
                self._discovery.start()

    # ------------------------------------------------------------- sub-channels
    def _make_sub(self, ep: Endpoint) -> SubChannel[grpc.Channel]:
        opts = self._sub_options(ep)
        if self._credentials is None:
            ch = grpc.insecure_channel(ep.target, options=opts, compression=self._compression)
        else:
            ch = grpc.secure_channel(
                ep.target, self._credentials, options=opts, compression=self._compression
            )
        return SubChannel(ep, ch)

    def update_endpoints(self, endpoints: str | Sequence[str]) -> None:
        """Change the member set. Members that stay keep their sub-channel, state and
        in-flight calls; removed members' sub-channels close once their streams end."""
        parsed = parse_endpoints(endpoints)
        with self._lock:
            if self._closed:
                raise ValueError("channel is closed")
        self._balancer.update_endpoints(parsed)
        self._sync_pool()

    def _on_subset(self, added: list[str], removed: list[str]) -> None:
        self._sync_pool()

    def _sync_pool(self) -> None:
        """Open sub-channels for the members in use and retire the others."""
        with self._lock:
            if self._closed:
                return
            add, drop = self._pool_changes()
            if add:
                self._pool.add(add)
            gone = self._pool.retire(drop) if drop else []
        for sub in gone:
            for stream in self._streams.take(sub.key):
                stream.abort(f"eagle: member {sub.key} left the members in use")
            self._close_later(sub)  # calls already placed on it may finish

    def _close_later(self, sub: SubChannel[grpc.Channel]) -> None:
        self._timers.call_later(RETIRE_GRACE, functools.partial(self._close_retired, sub))

    def _close_retired(self, sub: SubChannel[grpc.Channel]) -> None:
        with self._lock:
            if not self._pool.forget(sub):
                return
        sub.channel.close()

    # ------------------------------------------------------------ waiting
    def _changed(self) -> None:
        with self._cond:
            self._cond.notify_all()
            waiters = self._waiters
            self._waiters = []
        for fn in waiters:
            self._timers.call_later(0.0, fn)
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
            return self._cond.wait_for(
                lambda: self._balancer.version != version or self._closed, timeout
            )

    def _pause(self, step: Step) -> None:
        """Carry out a SLEEP or WAIT step in the calling thread."""
        if step.kind is SLEEP:
            time.sleep(step.delay)
        elif step.kind is WAIT:
            self.wait_for_change(step.version, step.delay)

    def _later(self, step: Step, fn: Callable[[], None]) -> None:
        """Carry out a SLEEP or WAIT step without blocking: run ``fn`` when it is over."""
        if step.kind is WAIT:
            fired = threading.Event()

            def once() -> None:
                if not fired.is_set():
                    fired.set()
                    fn()

            with self._cond:
                if self._balancer.version != step.version:
                    self._timers.call_later(0.0, fn)
                    return
                self._waiters.append(once)
            self._timers.call_later(step.delay, once)
        else:
            self._timers.call_later(step.delay, fn)

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
        """Stop probing and close every sub-channel (calls in flight end with CANCELLED,
        as grpc's do). Idempotent and thread-safe."""
        if self._generation != generation():
            # forked child: grpc state, the prober thread and any lock a parent thread
            # held at the fork belong to the parent; take none of them
            self._closed = True
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subs = self._pool.all()
        if self._discovery is not None:
            self._discovery.stop()
        self._prober.stop()
        self._watcher.stop()
        for sub in subs:
            sub.channel.close()
        with self._cond:
            self._cond.notify_all()
            waiters = self._waiters
            self._waiters = []
        for fn in waiters:
            fn()
        self._timers.stop()

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
        self, method: str, timeout: float | None, wait: bool | None, message: str, streaming: bool
    ) -> CallDriver:
        self._check_forked()
        if self._closed:
            raise ValueError(message)
        return CallDriver(self._balancer, method, timeout, wait, streaming=streaming)


class MultiCallable(MethodHandle):
    """Base of the sync channel's multicallables."""

    __slots__ = ()


class _UnaryResponse(MultiCallable):
    """Calls with one response (unary-unary, stream-unary)."""

    __slots__ = ()
    _request_stream = False

    def _call(
        self,
        request: Any,
        timeout: float | None,
        metadata: Any,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
        closed_message: str,
    ) -> UnaryCall:
        ch: Channel = self._ch
        drv = ch._driver(
            self._method, timeout, wait_for_ready, closed_message, self._request_stream
        )
        return UnaryCall(
            self,
            drv,
            request,
            metadata,
            credentials,
            wait_for_ready,
            compression,
            self._request_stream,
        )

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
        call = self._call(
            request, timeout, metadata, credentials, wait_for_ready, compression, _CLOSED_BLOCKING
        )
        return call.blocking(False)

    def with_call(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> tuple[Any, grpc.Call]:
        """Like ``__call__`` but also return grpc's ``grpc.Call`` of the attempt that
        answered."""
        call = self._call(
            request, timeout, metadata, credentials, wait_for_ready, compression, _CLOSED_BLOCKING
        )
        result: tuple[Any, grpc.Call] = call.blocking(True)
        return result

    def future(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> UnaryCall:
        """Start the call without blocking; returns a ``grpc.Future`` that is also a
        ``grpc.Call``."""
        call = self._call(
            request, timeout, metadata, credentials, wait_for_ready, compression, _CLOSED
        )
        return call.start()


class _StreamResponse(MultiCallable):
    """Calls with a response stream (unary-stream, stream-stream)."""

    __slots__ = ()
    _request_stream = False

    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> StreamCall:
        """Open the stream; returns an iterator of responses that is also a ``grpc.Call``
        and a ``grpc.Future``."""
        ch: Channel = self._ch
        drv = ch._driver(self._method, timeout, wait_for_ready, _CLOSED, True)
        call = StreamCall(
            self,
            drv,
            request,
            metadata,
            credentials,
            wait_for_ready,
            compression,
            self._request_stream,
        )
        return call.start()


class UnaryUnary(_UnaryResponse, grpc.UnaryUnaryMultiCallable):  # type: ignore[misc]
    """Unary-unary calls: each attempt goes to a picked member; failures are retried on
    another member when that is safe (see the retry section of the README)."""

    __slots__ = ()


class StreamUnary(_UnaryResponse, grpc.StreamUnaryMultiCallable):  # type: ignore[misc]
    """Client-streaming calls: the request messages are kept (up to
    ``retry.buffer_size``) so the call can be re-sent to another member."""

    __slots__ = ()
    _request_stream = True


class UnaryStream(_StreamResponse, grpc.UnaryStreamMultiCallable):  # type: ignore[misc]
    """Server-streaming calls: re-sent only before the first response; watched while open."""

    __slots__ = ()


class StreamStream(_StreamResponse, grpc.StreamStreamMultiCallable):  # type: ignore[misc]
    """Bidi streams: re-sent (replaying the request messages) only before the first
    response; watched while open."""

    __slots__ = ()
    _request_stream = True


Channel._kinds = {
    "unary_unary": UnaryUnary,
    "unary_stream": UnaryStream,
    "stream_unary": StreamUnary,
    "stream_stream": StreamStream,
}


def insecure_channel(
    target: str | Sequence[str],
    options: Sequence[tuple[str, Any]] | None = None,
    compression: grpc.Compression | None = None,
    *,
    config: Config | dict[str, Any] | str | None = None,
) -> Channel:
    """A plaintext :class:`Channel` over the members in ``target`` (``"a:1,b:2"`` or a
    sequence of endpoints, or a discovery target: ``"dns:///name:port"``,
    ``"etcd:///service"``), with grpc's own signature.

    ``options`` are grpc channel options and ``compression`` the default compression, as
    for ``grpc.insecure_channel``; both apply to every member's sub-channel. ``config``
    is an :class:`eagle.Config`, a dict with the same keys, or a path to a
    ``.json``/``.toml`` file; None reads ``EAGLE_CONFIG`` or uses the defaults.
    """
    return Channel(target, None, options, compression, config=config)


def secure_channel(
    target: str | Sequence[str],
    credentials: grpc.ChannelCredentials,
    options: Sequence[tuple[str, Any]] | None = None,
    compression: grpc.Compression | None = None,
    *,
    config: Config | dict[str, Any] | str | None = None,
    authorities: dict[str, str] | None = None,
) -> Channel:
    """A TLS :class:`Channel`, with grpc's own signature; probes use the same credentials
    as calls.

    ``authorities`` maps an endpoint to the TLS host name to verify (for members
    addressed by IP): it sets ``grpc.ssl_target_name_override`` on that sub-channel.
    """
    if credentials is None:
        raise ValueError("secure_channel: credentials must not be None")
    return Channel(
        target, credentials, options, compression, config=config, authorities=authorities
    )
