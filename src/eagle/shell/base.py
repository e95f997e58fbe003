"""What the sync and the asyncio channel share: setup, status, the watchdog's reaction to
transitions, connectivity, and the four multicallable factories. No I/O here; each shell
adds its own sub-channel type, prober, waiting and closing."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import grpc

from ..config import Config, load_config
from ..core.balancer import Balancer
from ..core.status import State, StatusSnapshot, Transition
from ..core.streams import StreamRegistry, members_to_leave
from ..endpoints import Endpoint, parse_endpoints
from ..providers.discovery import (
    DiscoveryProvider,
    create_discovery_provider,
    discovery_target,
)
from .forking import ForkedChannelError, generation
from .options import subchannel_options
from .subchannels import SubChannel, SubChannelPool

__all__ = ["ChannelBase"]

_FORKED = (
    "eagle: this channel was created before os.fork(); grpc channels and the prober's "
    "thread do not survive a fork: create a new channel in the child"
)


def _check_options(options: Any) -> list[tuple[str, Any]]:
    """grpc channel options as grpc takes them: (key, value) pairs. eagle's own settings
    go to ``config=`` (they were the second positional argument before eagle 0.2)."""
    if isinstance(options, Config | Mapping | str | bytes):
        raise TypeError(
            f"options: expected grpc channel options, a sequence of (key, value) pairs as "
            f"for grpc.insecure_channel, got {type(options).__name__}; "
            f"pass eagle's settings as config=..."
        )
    out: list[tuple[str, Any]] = []
    for item in options:
        if not isinstance(item, tuple | list) or len(item) != 2 or not isinstance(item[0], str):
            raise TypeError(f"options: each option must be a (key, value) pair, got {item!r}")
        out.append((item[0], item[1]))
    return out


def _members_and_discovery(
    endpoints: Any, config: Config
) -> tuple[tuple[Endpoint, ...], DiscoveryProvider | None]:
    """The initial members and the discovery provider (None: off) for a channel target.

    ``"dns:///name:port"``-style targets start with no members (calls wait for the first
    resolution); with ``discovery.provider`` and ``discovery.target`` in the config, the
    endpoints given (if any) are the members until the first good resolution.
    """
    target = discovery_target(endpoints, config.discovery)
    if target is None:
        return parse_endpoints(endpoints), None
    if config.membership.discover:
        raise ValueError(
            f"discovery.provider: the target {target.raw!r} cannot be combined with "
            "membership.discover (one source of members per channel)"
        )
    provider = create_discovery_provider(config.discovery, target)
    if isinstance(endpoints, str) and endpoints.strip() == target.raw.strip():
        return (), provider
    if not endpoints:
        return (), provider
    return parse_endpoints(endpoints), provider


class ChannelBase:
    """The shell-independent half of :class:`eagle.Channel` and :class:`eagle.aio.Channel`."""

    #: the shell's multicallable classes, by call kind
    _kinds: ClassVar[dict[str, type[Any]]] = {}

    def _setup(
        self,
        endpoints: str | Sequence[str],
        credentials: grpc.ChannelCredentials | None,
        config: Config | dict[str, Any] | str | None,
        options: Sequence[tuple[str, Any]],
        authorities: dict[str, str] | None,
        compression: grpc.Compression | None = None,
    ) -> None:
        self._compression = compression
        self._generation = generation()
        self.config = load_config(config)
        self._endpoints, self._discovery_provider = _members_and_discovery(endpoints, self.config)
        self._credentials = credentials
        self._options = _check_options(options)
        self._authorities = dict(authorities or {})
        self._balancer = Balancer(self._endpoints, self.config)
        self._pool: SubChannelPool[Any] = SubChannelPool(self._make_sub)
        self._subs = self._pool.active
        self._closed = False
        self._streams = StreamRegistry()
        self._balancer.on_change(self._on_transition)
        self._balancer.on_subset = self._on_subset
        #: the channel's discovery runner (set by the shell when discovery is on)
        self._discovery: Any = None
        #: discovery: the TLS host name members are verified against (gRPC's target host)
        self._default_authority: str | None = None
        if self._discovery_provider is not None and credentials is not None:
            self._default_authority = self._discovery_provider.authority()
        if self._discovery_provider is not None and not self._endpoints:
            self._balancer.awaiting_members = True  # calls wait for the first resolution

    # ------------------------------------------------------------- sub-channels
    def _make_sub(self, ep: Endpoint) -> SubChannel[Any]:
        raise NotImplementedError

    def _sub_options(self, ep: Endpoint) -> list[tuple[str, Any]]:
        authority = self._authorities.get(ep.raw, self._default_authority)
        return subchannel_options(self.config, authority) + self._options

    def _sub(self, key: str) -> SubChannel[Any]:
        """The sub-channel of a picked member."""
        sub = self._pool.find(key)
        if sub is None:
            # picked the moment the balancer took the member in, before the pool caught
            # up (another thread is between ``update_endpoints`` and ``_sync_pool``)
            self._sync_pool()
            sub = self._pool.find(key)
        if sub is None:
            # taken in and removed again before its sub-channel opened: the attempt gets
            # one of its own, closed after the grace period like any retiring one
            sub = self._pool.add_retiring(parse_endpoints(key)[0])
            self._close_later(sub)
        return sub

    def _sync_pool(self) -> None:
        raise NotImplementedError

    def _close_later(self, sub: SubChannel[Any]) -> None:
        """Close a retiring sub-channel after :data:`RETIRE_GRACE` (unless it came back)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ status
    def status(self) -> StatusSnapshot:
        """An immutable snapshot of every member's status, keyed by endpoint as given
        (with discovery on, ``.discovery`` says what the provider knows)."""
        snap = self._balancer.snapshot()
        disc = self._discovery
        if disc is not None:
            return snap.with_discovery(disc.status(), disc.metadata())
        return snap

    def on_change(self, callback: Callable[[Transition], None]) -> Callable[[], None]:
        """Call ``callback(transition)`` on every state change; returns an unsubscribe
        function. Callbacks run on eagle's prober (thread or event loop): keep them short."""
        return self._balancer.on_change(callback)

    @property
    def balancer(self) -> Balancer:
        """The sans-IO core this channel drives (for tools and tests)."""
        return self._balancer

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The current members, as given."""
        return tuple(ep.raw for ep in self._balancer.endpoints)

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    def _on_transition(self, t: Transition) -> None:
        """The watchdog: end streams and abandon rescuable attempts on members they should
        leave (see :func:`eagle.core.streams.members_to_leave`)."""
        registry = self._streams
        carriers = registry.carriers()
        if carriers:  # nothing to end otherwise (and no O(members) work per transition)
            bal = self._balancer
            carrying = {k: st for k in carriers if (st := bal.status_of(k)) is not None}
            others_serve = bal.serving_besides(t.endpoint)
            for endpoint, reason in members_to_leave(t, carrying, others_serve):
                for s in registry.take(endpoint):
                    bal.mark_stream_move(endpoint, reason)
                    s.abort(reason)
                state = bal.state_of(endpoint)
                if state is not None:
                    for attempt in registry.take_attempts(endpoint, state):
                        attempt.abort(reason)
        self._changed()

    def _changed(self) -> None:
        """Wake whoever waits for the status table to change (shell-specific)."""

    def _on_subset(self, added: list[str], removed: list[str]) -> None:
        """The members in use changed (subsetting): open and retire sub-channels
        (shell-specific)."""

    def _pool_changes(self) -> tuple[list[Endpoint], list[str]]:
        """What the sub-channel pool must gain and lose to match the members in use."""
        want = self._balancer.in_use
        active = self._pool.active
        add = [ep for ep in self._balancer.endpoints if ep.raw in want and ep.raw not in active]
        drop = [k for k in active if k not in want]
        return add, drop

    def _connectivity(self) -> grpc.ChannelConnectivity:
        """READY while any member serves; CONNECTING before the first probes answer."""
        states = self._balancer.states()
        if State.SERVING in states:
            return grpc.ChannelConnectivity.READY
        if all(s is State.UNKNOWN for s in states):
            return grpc.ChannelConnectivity.CONNECTING
        return grpc.ChannelConnectivity.TRANSIENT_FAILURE

    def _check_forked(self) -> None:
        if self._generation != generation():
            raise ForkedChannelError(_FORKED)

    # --------------------------------------------------- multicallable factories
    def _multicallable(
        self,
        kind: str,
        method: str,
        request_serializer: Callable[[Any], bytes] | None,
        response_deserializer: Callable[[bytes], Any] | None,
        registered: bool | None,
    ) -> Any:
        mkey = (kind, method, request_serializer, response_deserializer, bool(registered))
        return self._kinds[kind](self, mkey)

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> Any:
        """A unary-unary multicallable spread over the members."""
        return self._multicallable(
            "unary_unary", method, request_serializer, response_deserializer, _registered_method
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> Any:
        """A unary-stream multicallable; its streams are watched and may be moved."""
        return self._multicallable(
            "unary_stream", method, request_serializer, response_deserializer, _registered_method
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> Any:
        """A stream-unary multicallable (placed once; its requests cannot be replayed)."""
        return self._multicallable(
            "stream_unary", method, request_serializer, response_deserializer, _registered_method
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> Any:
        """A stream-stream multicallable; its streams are watched and may be moved."""
        return self._multicallable(
            "stream_stream", method, request_serializer, response_deserializer, _registered_method
        )
