"""Server-side helpers for Python services that eagle clients talk to.

A :class:`MembershipPublisher` holds what this member knows about its cluster (its
:class:`~eagle.core.membership.MemberView`) and its serving status, and serves both:

* ``grpc.health.v1.Health`` (grpcio's own ``HealthServicer``), which eagle's prober
  polls with ``Check``;
* ``eagle.membership.v1.Membership``: ``GetView`` (what eagle's ``eagle`` membership
  provider polls) and ``WatchView`` (the current view at once, then every change).

::

    publisher = MembershipPublisher("m0", "cluster-1", leader_id="m0", term=3,
                                    members={"m0": ["10.0.0.1:50051"], ...})
    server = grpc.server(futures.ThreadPoolExecutor(16), options=server_options())
    publisher.add_to_server(server)
    ...
    publisher.set_view(leader_id="", has_quorum=False)   # lost the leader
    publisher.set_serving(False)                         # drain

:func:`server_options` returns the channel options that let eagle's keepalive pings in
(without them a server answers frequent pings with GOAWAY ``too_many_pings``).
``grpc.aio`` servers are served by :meth:`MembershipPublisher.add_to_aio_server`.

:class:`EtcdRegistration` (from :mod:`eagle.registration`) registers a server's address in
etcd's gRPC naming registry on a kept-alive lease, for clients using ``etcd:///target``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .core.membership import MemberView
from .membership.v1 import membership_pb2, membership_pb2_grpc
from .registration import EtcdRegistration

__all__ = [
    "AioMembershipServicer",
    "EtcdRegistration",
    "MembershipPublisher",
    "MembershipServicer",
    "server_options",
    "view_to_proto",
]

log = logging.getLogger("eagle.server")

Members = Mapping[str, Sequence[str]] | Sequence[tuple[str, Sequence[str]]]

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def server_options(
    min_ping_interval: float = 0.1, *, permit_without_calls: bool = True
) -> list[tuple[str, int]]:
    """grpc server options that permit eagle's keepalive pings.

    Clients may ping every ``min_ping_interval`` seconds, with or without calls in
    flight (``permit_without_calls``), and are never sent GOAWAY ``too_many_pings``.
    Pass them as ``grpc.server(..., options=server_options())`` (add your own after).
    """
    if min_ping_interval < 0:
        raise ValueError(f"min_ping_interval: must be >= 0, got {min_ping_interval!r}")
    return [
        ("grpc.keepalive_permit_without_calls", 1 if permit_without_calls else 0),
        # the string of C-core's GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS
        # (grpc/impl/channel_arg_names.h); note: no "recv" in it
        ("grpc.http2.min_ping_interval_without_data_ms", int(min_ping_interval * 1000)),
        ("grpc.http2.max_ping_strikes", 0),
    ]


def _members(members: Members) -> tuple[tuple[str, tuple[str, ...]], ...]:
    items = members.items() if isinstance(members, Mapping) else members
    out = []
    for member_id, endpoints in items:
        if isinstance(endpoints, str):
            raise ValueError(f"member {member_id!r}: endpoints must be a list, got {endpoints!r}")
        out.append((str(member_id), tuple(str(e) for e in endpoints)))
    return tuple(out)


def view_to_proto(view: MemberView) -> membership_pb2.View:
    """The ``eagle.membership.v1.View`` message for ``view``."""
    return membership_pb2.View(
        member_id=view.member_id,
        cluster_id=view.cluster_id,
        leader_id=view.leader_id,
        term=view.term,
        has_quorum=view.has_quorum,
        applied=view.applied,
        members=[membership_pb2.Member(id=mid, endpoints=list(eps)) for mid, eps in view.members],
    )


class MembershipPublisher:
    """This member's view of its cluster and its serving status, served over gRPC.

    Thread-safe: update it from any thread with :meth:`set_view` and
    :meth:`set_serving`; ``WatchView`` streams see every change.
    """

    def __init__(
        self,
        member_id: str,
        cluster_id: str = "",
        *,
        leader_id: str = "",
        term: int = 0,
        has_quorum: bool = True,
        applied: int = 0,
        members: Members = (),
        serving: bool = True,
    ) -> None:
        self._cond = threading.Condition()
        self._view = MemberView(
            member_id=member_id,
            cluster_id=cluster_id,
            leader_id=leader_id,
            term=term,
            has_quorum=has_quorum,
            applied=applied,
            members=_members(members),
        )
        self._version = 1
        self._closed = False
        self._subscribers: list[Callable[[MemberView | None], None]] = []
        #: grpcio's health servicer (sync servers); its statuses follow :meth:`set_serving`
        self.health = health.HealthServicer()
        self._status: dict[str, int] = {}
        self._aio_health: list[tuple[Any, asyncio.AbstractEventLoop]] = []
        self.set_serving(serving)

    # ----------------------------------------------------------------- the view
    @property
    def view(self) -> MemberView:
        """The view being published."""
        with self._cond:
            return self._view

    @property
    def version(self) -> int:
        """Increases with every change of the view."""
        with self._cond:
            return self._version

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def set_view(self, view: MemberView | None = None, **changes: Any) -> MemberView:
        """Publish a new view: a whole :class:`MemberView`, or changes to the current one
        (``leader_id``, ``term``, ``has_quorum``, ``applied``, ``members``,
        ``cluster_id``, ``member_id``). Returns the view now published."""
        if "members" in changes:
            changes["members"] = _members(changes["members"])
        with self._cond:
            try:
                new = replace(view if view is not None else self._view, **changes)
            except TypeError as exc:
                raise ValueError(f"set_view: {exc}") from None
            if new == self._view:
                return new
            self._view = new
            self._version += 1
            self._cond.notify_all()
            subscribers = list(self._subscribers)
        for cb in subscribers:
            try:
                cb(new)
            except Exception:
                log.exception("view subscriber %r failed", cb)
        return new

    def subscribe(self, callback: Callable[[MemberView | None], None]) -> Callable[[], None]:
        """Call ``callback(view)`` on every change (``None`` once closed). Returns an
        unsubscribe function. Callbacks run on the thread that changed the view."""
        with self._cond:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._cond:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def wait_for_change(self, version: int, timeout: float | None) -> tuple[int, MemberView]:
        """Block until the view's version differs from ``version`` (or ``timeout``, or
        close); return the current ``(version, view)``."""
        with self._cond:
            self._cond.wait_for(lambda: self._version != version or self._closed, timeout)
            return self._version, self._view

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # ------------------------------------------------------------------ health
    def set_serving(self, serving: bool, service: str = "") -> None:
        """Set the ``grpc.health.v1`` status of ``service`` ("" = the whole server)."""
        status = _SERVING if serving else _NOT_SERVING
        with self._cond:
            self._status[service] = status
            aio = list(self._aio_health)
        self.health.set(service, status)
        for servicer, loop in aio:
            _schedule(loop, servicer.set(service, status))

    def serving(self, service: str = "") -> bool:
        """Whether ``service`` is set SERVING."""
        with self._cond:
            return bool(self._status.get(service) == _SERVING)

    # ----------------------------------------------------------------- serving
    def servicer(self) -> MembershipServicer:
        """A ``Membership`` servicer for a sync ``grpc.Server``."""
        return MembershipServicer(self)

    def add_to_server(self, server: grpc.Server) -> None:
        """Serve ``grpc.health.v1.Health`` and ``eagle.membership.v1.Membership`` on a
        sync ``grpc.Server`` (before it starts)."""
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        membership_pb2_grpc.add_MembershipServicer_to_server(  # type: ignore[no-untyped-call]
            MembershipServicer(self), server
        )

    def add_to_aio_server(self, server: grpc.aio.Server) -> None:
        """Serve both services on a ``grpc.aio.Server``. Call it inside the server's
        running event loop (status changes are applied there)."""
        loop = asyncio.get_running_loop()
        aio_health = health.aio.HealthServicer()
        with self._cond:
            statuses = dict(self._status)
            self._aio_health.append((aio_health, loop))
        for service, status in statuses.items():
            _schedule(loop, aio_health.set(service, status))
        health_pb2_grpc.add_HealthServicer_to_server(aio_health, server)
        membership_pb2_grpc.add_MembershipServicer_to_server(  # type: ignore[no-untyped-call]
            AioMembershipServicer(self), server
        )

    def close(self) -> None:
        """Set every service NOT_SERVING and end the open ``WatchView`` streams."""
        with self._cond:
            if self._closed:
                return
            services = list(self._status)
        for service in services:
            self.set_serving(False, service)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            subscribers = list(self._subscribers)
        for cb in subscribers:
            try:
                cb(None)
            except Exception:
                log.exception("view subscriber %r failed", cb)


def _schedule(loop: asyncio.AbstractEventLoop, coro: Any) -> None:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    try:
        if running is loop:
            loop.create_task(coro)
        else:
            asyncio.run_coroutine_threadsafe(coro, loop)
    except RuntimeError:  # loop closed
        coro.close()


class MembershipServicer(membership_pb2_grpc.MembershipServicer):
    """``eagle.membership.v1.Membership`` for sync servers, backed by a publisher."""

    def __init__(self, publisher: MembershipPublisher) -> None:
        self._pub = publisher

    def GetView(
        self, request: membership_pb2.GetViewRequest, context: grpc.ServicerContext
    ) -> membership_pb2.View:
        """The current view."""
        return view_to_proto(self._pub.view)

    def WatchView(
        self, request: membership_pb2.WatchViewRequest, context: grpc.ServicerContext
    ) -> Iterator[membership_pb2.View]:
        """The current view at once, then every change, until the client goes away or the
        publisher closes."""
        pub = self._pub
        context.add_callback(pub._wake)
        version = 0
        while context.is_active() and not pub.closed:
            new_version, view = pub.wait_for_change(version, timeout=1.0)
            if new_version != version and not pub.closed:
                version = new_version
                yield view_to_proto(view)


class AioMembershipServicer(membership_pb2_grpc.MembershipServicer):
    """``eagle.membership.v1.Membership`` for ``grpc.aio`` servers, backed by a publisher."""

    def __init__(self, publisher: MembershipPublisher) -> None:
        self._pub = publisher

    async def GetView(
        self, request: membership_pb2.GetViewRequest, context: grpc.aio.ServicerContext
    ) -> membership_pb2.View:
        """The current view."""
        return view_to_proto(self._pub.view)

    async def WatchView(
        self, request: membership_pb2.WatchViewRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[membership_pb2.View]:
        """The current view at once, then every change."""
        pub = self._pub
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def on_change(_view: MemberView | None) -> None:
            with contextlib.suppress(RuntimeError):  # loop closed
                loop.call_soon_threadsafe(changed.set)

        unsubscribe = pub.subscribe(on_change)
        try:
            version = 0
            while not pub.closed:
                changed.clear()
                new_version = pub.version
                if new_version != version:
                    version = new_version
                    yield view_to_proto(pub.view)
                    continue
                await changed.wait()
        finally:
            unsubscribe()
