"""One sub-channel per member, with one cached multicallable per method."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from ..endpoints import Endpoint
from ..providers.base import Metadata, call_metadata

__all__ = ["MethodHandle", "MethodKey", "SubChannel", "WithMetadata"]

C = TypeVar("C")

#: (call kind, method, request serializer, response deserializer, registered?)
MethodKey = tuple[str, str, Any, Any, bool]


class SubChannel(Generic[C]):
    """A member's own grpc channel (sync or aio) and its multicallables, created once."""

    __slots__ = ("_cache", "channel", "endpoint", "key")

    def __init__(self, endpoint: Endpoint, channel: C) -> None:
        self.endpoint = endpoint
        self.key = endpoint.raw
        self.channel = channel
        self._cache: dict[MethodKey, Any] = {}

    def multicallable(self, mkey: MethodKey) -> Any:
        """The cached multicallable for ``mkey`` (created on first use)."""
        mc = self._cache.get(mkey)
        if mc is None:
            kind, method, ser, deser, registered = mkey
            factory: Callable[..., Any] = getattr(self.channel, kind)
            if registered:
                mc = factory(method, ser, deser, _registered_method=True)
            else:
                mc = factory(method, ser, deser)
            self._cache[mkey] = mc
        return mc


class WithMetadata:
    """A grpc multicallable (sync or aio) that adds fixed metadata to every call.

    Works for both call styles: sync (``mc(request, timeout, metadata, ...)``, also
    ``future`` and ``with_call``) and aio (``mc(request, timeout=..., metadata=...)``).
    Keys the caller already sets are left as the caller set them.
    """

    __slots__ = ("_extra", "_keys", "_mc")

    def __init__(self, mc: Any, extra: Metadata) -> None:
        self._mc = mc
        self._extra = extra
        self._keys = frozenset(k for k, _ in extra)

    def _merge(self, metadata: Any) -> Any:
        if not metadata:
            return self._extra
        items = tuple(tuple(pair) for pair in metadata)
        present = {k for k, _ in items}
        if self._keys <= present:
            return items
        return items + tuple(p for p in self._extra if p[0] not in present)

    def _args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        # args after the request: (timeout, metadata, credentials, ...)
        if len(args) >= 2:
            return (args[0], self._merge(args[1]), *args[2:])
        kwargs["metadata"] = self._merge(kwargs.get("metadata"))
        return args

    def __call__(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._mc(request, *self._args(args, kwargs), **kwargs)

    def future(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        """``future`` of the wrapped multicallable, with the metadata added."""
        return self._mc.future(request, *self._args(args, kwargs), **kwargs)

    def with_call(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        """``with_call`` of the wrapped multicallable, with the metadata added."""
        return self._mc.with_call(request, *self._args(args, kwargs), **kwargs)


#: how long a removed member's sub-channel stays open for calls already placed on it
RETIRE_GRACE = 30.0


class SubChannelPool(Generic[C]):
    """The sub-channels of one eagle channel: the members' (``active``, the dict the prober
    reads) and removed members' ones that are *retiring*: still usable by calls already
    placed on them, closed after :data:`RETIRE_GRACE` seconds. ``generation`` changes on
    every change of the member set, so cached multicallables can be dropped."""

    def __init__(self, make: Callable[[Endpoint], SubChannel[C]]) -> None:
        self._make = make
        self.active: dict[str, SubChannel[C]] = {}
        self.retiring: dict[str, SubChannel[C]] = {}
        self.generation = 0

    # Calls read the pool without a lock (``find``), while one thread at a time changes
    # it: a sub-channel moving between ``active`` and ``retiring`` is put in its new place
    # before it leaves the old one, so a reader always finds it in one of them.

    def find(self, key: str) -> SubChannel[C] | None:
        """The sub-channel of ``key`` (active or retiring), or None when it has neither."""
        sub = self.active.get(key)
        if sub is None:
            sub = self.retiring.get(key)
        return sub

    def add(self, endpoints: Sequence[Endpoint]) -> None:
        """Make sure every endpoint has an active sub-channel (a retiring one comes back)."""
        for ep in endpoints:
            if ep.raw not in self.active:
                old = self.retiring.get(ep.raw)
                self.active[ep.raw] = old if old is not None else self._make(ep)
                if old is not None:
                    del self.retiring[ep.raw]
        self.generation += 1

    def retire(self, keys: Sequence[str]) -> list[SubChannel[C]]:
        """Move removed members' sub-channels to retiring; returns them."""
        gone: list[SubChannel[C]] = []
        for k in keys:
            sub = self.active.get(k)
            if sub is not None:
                self.retiring[k] = sub
                del self.active[k]
                gone.append(sub)
        self.generation += 1
        return gone

    def add_retiring(self, ep: Endpoint) -> SubChannel[C]:
        """A sub-channel for a member that already left, for the calls placed on it."""
        sub = self._make(ep)
        self.retiring[ep.raw] = sub
        return sub

    def forget(self, sub: SubChannel[C]) -> bool:
        """Drop a retiring sub-channel (it is about to be closed); False if it came back."""
        if self.retiring.get(sub.key) is sub:
            del self.retiring[sub.key]
            return True
        return False

    def all(self) -> list[SubChannel[C]]:
        """Every sub-channel, active and retiring."""
        return [*self.active.values(), *self.retiring.values()]


class MethodHandle:
    """Base of eagle's multicallables: one method, its channel, and the per-member grpc
    multicallables it uses (looked up once, then kept while the member's sub-channel is
    the same one: a member removed and added again gets a fresh sub-channel).

    The metadata the membership provider asks for (``hasleader: true`` with
    ``membership.etcd.require_leader``) is added here, once, for both shells.
    """

    __slots__ = ("_bal", "_ch", "_extra", "_mcs", "_method", "_mkey")

    def __init__(self, ch: Any, mkey: MethodKey) -> None:
        self._ch = ch
        self._bal = ch._balancer
        self._mkey = mkey
        self._method: str = mkey[1]
        self._mcs: dict[str, tuple[SubChannel[Any], Any]] = {}
        self._extra: Metadata = call_metadata(ch.config.membership)

    @property
    def _serializer(self) -> Callable[[Any], bytes] | None:
        """The method's request serializer (sizes request messages for replay)."""
        ser: Callable[[Any], bytes] | None = self._mkey[2]
        return ser

    def _mc(self, ep: str | None) -> Any:
        assert ep is not None
        sub = self._ch._sub(ep)
        entry = self._mcs.get(ep)
        if entry is not None and entry[0] is sub:
            return entry[1]
        mc = sub.multicallable(self._mkey)
        if self._extra:
            mc = WithMetadata(mc, self._extra)
        self._mcs[ep] = (sub, mc)
        return mc
