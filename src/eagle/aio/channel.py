"""The asyncio channel: a real ``grpc.aio.Channel`` over N members.

The asyncio twin of :mod:`eagle._sync.channel`: same core, same decisions, grpc.aio I/O;
the calls run in the one attempt loop of :mod:`eagle.aio.calls`. A ``grpc.aio`` channel
is bound to the event loop it was created in, so sub-channels, the prober and the
connectivity watcher start inside the running loop (at once when there is one, else on
the first call).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import grpc
from grpc.aio import _channel as _grpc_aio_channel

from ..config import Config
from ..core.calls import SLEEP, CallDriver, Step
from ..endpoints import Endpoint, parse_endpoints
from ..shell.base import ChannelBase
from ..shell.subchannels import RETIRE_GRACE, MethodHandle, SubChannel
from .calls import StreamCall, UnaryCall
from .connectivity import ConnectivityWatcher
from .discovery import Discovery
from .interceptors import intercepted_call, split_interceptors
from .prober import AioProber
from .timers import call_in_loop

__all__ = ["Channel", "MultiCallable", "insecure_channel", "secure_channel"]

log = logging.getLogger("eagle.aio.channel")

#: what grpc.aio raises for a call on a closed channel
_CLOSED = "Channel is closed."


class Channel(ChannelBase, grpc.aio.Channel):  # type: ignore[misc]
    """A ``grpc.aio.Channel`` that spreads calls over several members and routes around
    crashed, frozen, draining, partitioned and misbehaving ones.

    Build it with :func:`eagle.aio.insecure_channel` or :func:`eagle.aio.secure_channel`.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
        compression: grpc.Compression | None = None,
        interceptors: Sequence[Any] | None = None,
        *,
        config: Config | dict[str, Any] | str | None = None,
        authorities: dict[str, str] | None = None,
    ) -> None:
        self._interceptors = split_interceptors(interceptors)
        self._setup(endpoints, credentials, config, options or (), authorities, compression)
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._state_waiters: list[asyncio.Future[None]] = []
        self._prober = AioProber(self._balancer, self._subs, self.config)
        self._prober.on_discover = self.update_endpoints  # membership.discover
        self._watcher = ConnectivityWatcher(self._balancer, self._subs)
        if self._discovery_provider is not None:  # discovery: dns:///..., etcd:///...
            self._discovery = Discovery(
                self._discovery_provider,
                self.config.discovery,
                self._balancer,
                self.update_endpoints,
                [ep.raw for ep in self._endpoints],
            )
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._start()

    # ------------------------------------------------------------- sub-channels
    def _start(self) -> None:
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._started = True
        self._pool.add(self._pool_changes()[0])
        self._prober.start()
        self._watcher.start()
        if self._discovery is not None:
            self._discovery.start()

    def _make_sub(self, ep: Endpoint) -> SubChannel[Any]:
        opts = self._sub_options(ep)
        if self._credentials is None:
            ch = grpc.aio.insecure_channel(ep.target, options=opts, compression=self._compression)
        else:
            ch = grpc.aio.secure_channel(
                ep.target, self._credentials, options=opts, compression=self._compression
            )
        return SubChannel(ep, ch)

    async def update_endpoints(self, endpoints: str | Sequence[str]) -> None:
        """Change the member set; members that stay keep their state and calls."""
        parsed = parse_endpoints(endpoints)
        if self._closed:
            raise ValueError("channel is closed")
        self._start()
        self._balancer.update_endpoints(parsed)
        self._sync_pool()

    def _on_subset(self, added: list[str], removed: list[str]) -> None:
        # not started: _start() opens what is in use then
        call_in_loop(self._loop, self._sync_pool)

    def _sync_pool(self) -> None:
        """Open sub-channels for the members in use and retire the others (in the loop)."""
        if self._closed or not self._started:
            return
        add, drop = self._pool_changes()
        if add:
            self._pool.add(add)
        for sub in self._pool.retire(drop) if drop else []:
            for stream in self._streams.take(sub.key):
                stream.abort(f"eagle: member {sub.key} left the members in use")
            self._close_later(sub)  # calls already placed on it may finish
        self._watcher.start()

    def _close_later(self, sub: SubChannel[Any]) -> None:
        asyncio.get_running_loop().call_later(RETIRE_GRACE, self._close_retired, sub)

    def _close_retired(self, sub: SubChannel[Any]) -> None:
        if self._pool.forget(sub) and not self._closed:
            task = asyncio.ensure_future(sub.channel.close())
            self._prober._tasks.add(task)
            task.add_done_callback(self._prober._tasks.discard)

    # ------------------------------------------------------------ waiting
    def _changed(self) -> None:
        call_in_loop(self._loop, self._wake)

    def _wake(self) -> None:
        waiters = self._waiters + self._state_waiters
        self._waiters = []
        self._state_waiters = []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _pause(self, step: Step, fut: asyncio.Future[None]) -> None:
        """Carry out a SLEEP or WAIT step by awaiting ``fut`` (which the call may cancel)."""
        loop = asyncio.get_running_loop()
        if step.kind is SLEEP:
            handle = loop.call_later(step.delay, _resolve, fut)
        else:
            if self._balancer.version != step.version or self._closed:
                return
            self._waiters.append(fut)
            handle = loop.call_later(step.delay, _resolve, fut)
        try:
            await fut
        finally:
            handle.cancel()

    # ---------------------------------------------------- grpc.aio.Channel API
    async def __aenter__(self) -> Channel:
        self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, grace: float | None = None) -> None:
        """Stop probing and close every sub-channel (grpc.aio's ``grace`` applies to each:
        calls in flight may finish within it, then end with CANCELLED). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._discovery is not None:
            await self._discovery.stop()
        await self._prober.stop()
        await self._watcher.stop()
        subs = self._pool.all()
        await asyncio.gather(*(s.channel.close(grace) for s in subs), return_exceptions=True)
        self._wake()

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """READY while any member serves; CONNECTING before the first probes answer."""
        return self._connectivity()

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        """Return once :meth:`get_state` differs from ``last_observed_state``."""
        self._start()
        loop = asyncio.get_running_loop()
        while self.get_state() == last_observed_state and not self._closed:
            fut: asyncio.Future[None] = loop.create_future()
            self._state_waiters.append(fut)
            await fut

    async def channel_ready(self) -> None:
        """Return once some member is SERVING."""
        self._start()
        while self.get_state() != grpc.ChannelConnectivity.READY:
            await self.wait_for_state_change(self.get_state())

    # ------------------------------------------------------------ call helpers
    def _driver(
        self, method: str, timeout: float | None, wait: bool | None, streaming: bool
    ) -> CallDriver:
        self._check_forked()
        if self._closed:
            raise grpc.aio.UsageError(_CLOSED)
        if not self._started:
            self._start()
        return CallDriver(self._balancer, method, timeout, wait, streaming=streaming)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class MultiCallable(MethodHandle):
    """Base of the asyncio channel's multicallables."""

    __slots__ = ()
    _kind = ""
    _request_stream = False
    _call_type: type[Any] = UnaryCall

    def _for_method(self, method: str) -> MultiCallable:
        """The same multicallable for another method (an interceptor changed it)."""
        _, _, ser, deser, registered = self._mkey
        other: MultiCallable = self._ch._multicallable(self._kind, method, ser, deser, registered)
        return other

    def _start(
        self,
        request: Any,
        timeout: float | None,
        metadata: Any,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any = None,
    ) -> Any:
        ch: Channel = self._ch
        streaming = self._request_stream or self._call_type is StreamCall
        drv = ch._driver(self._method, timeout, wait_for_ready, streaming)
        return self._call_type(
            self,
            drv,
            request,
            metadata,
            credentials,
            wait_for_ready,
            compression,
            self._request_stream,
        )

    def _invoke(
        self,
        request: Any,
        timeout: float | None,
        metadata: Any,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
    ) -> Any:
        ch: Channel = self._ch
        interceptors = ch._interceptors[_KIND_INDEX[self._kind]]
        if not interceptors:
            return self._start(request, timeout, metadata, credentials, wait_for_ready, compression)
        if ch._closed:
            raise grpc.aio.UsageError(_CLOSED)
        ch._start()
        metadata = _grpc_aio_channel._BaseMultiCallable._init_metadata(metadata, compression)
        return intercepted_call(
            self, self._kind, interceptors, request, timeout, metadata, credentials, wait_for_ready
        )


_KIND_INDEX = {"unary_unary": 0, "unary_stream": 1, "stream_unary": 2, "stream_stream": 3}


class UnaryUnary(MultiCallable, grpc.aio.UnaryUnaryMultiCallable):  # type: ignore[misc]
    """Unary-unary calls with picking, failover and retries."""

    __slots__ = ()
    _kind = "unary_unary"

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        """Start the call; await it for the response."""
        return self._invoke(request, timeout, metadata, credentials, wait_for_ready, compression)


class StreamUnary(MultiCallable, grpc.aio.StreamUnaryMultiCallable):  # type: ignore[misc]
    """Client-streaming calls: the request messages are kept (up to
    ``retry.buffer_size``) so the call can be re-sent to another member."""

    __slots__ = ()
    _kind = "stream_unary"
    _request_stream = True

    def __call__(
        self,
        request_iterator: Any = None,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        """Start the call; give a request iterator or use ``write``/``done_writing``."""
        return self._invoke(
            request_iterator, timeout, metadata, credentials, wait_for_ready, compression
        )


class UnaryStream(MultiCallable, grpc.aio.UnaryStreamMultiCallable):  # type: ignore[misc]
    """Server-streaming calls: re-sent only before the first response; watched while open."""

    __slots__ = ()
    _kind = "unary_stream"
    _call_type = StreamCall

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        """Open the stream; iterate with ``async for`` or call ``read()``."""
        return self._invoke(request, timeout, metadata, credentials, wait_for_ready, compression)


class StreamStream(MultiCallable, grpc.aio.StreamStreamMultiCallable):  # type: ignore[misc]
    """Bidi streams: re-sent (replaying the request messages) only before the first
    response; watched while open."""

    __slots__ = ()
    _kind = "stream_stream"
    _request_stream = True
    _call_type = StreamCall

    def __call__(
        self,
        request_iterator: Any = None,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        """Open the stream; use ``write``/``done_writing``/``read`` or a request iterator."""
        return self._invoke(
            request_iterator, timeout, metadata, credentials, wait_for_ready, compression
        )


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
    interceptors: Sequence[Any] | None = None,
    *,
    config: Config | dict[str, Any] | str | None = None,
) -> Channel:
    """A plaintext asyncio :class:`Channel`, with grpc.aio's own signature (see
    :func:`eagle.insecure_channel`). ``interceptors`` are grpc.aio client interceptors;
    each sees one call per application call."""
    return Channel(target, None, options, compression, interceptors, config=config)


def secure_channel(
    target: str | Sequence[str],
    credentials: grpc.ChannelCredentials,
    options: Sequence[tuple[str, Any]] | None = None,
    compression: grpc.Compression | None = None,
    interceptors: Sequence[Any] | None = None,
    *,
    config: Config | dict[str, Any] | str | None = None,
    authorities: dict[str, str] | None = None,
) -> Channel:
    """A TLS asyncio :class:`Channel`, with grpc.aio's own signature; probes use the
    same credentials as calls."""
    if credentials is None:
        raise ValueError("secure_channel: credentials must not be None")
    return Channel(
        target,
        credentials,
        options,
        compression,
        interceptors,
        config=config,
        authorities=authorities,
    )
