"""One sub-channel per member, with one cached multicallable per method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .endpoints import Endpoint

__all__ = ["MethodHandle", "MethodKey", "SubChannel"]

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


class MethodHandle:
    """Base of eagle's multicallables: one method, its channel, and the per-member grpc
    multicallables it uses (looked up once, then kept)."""

    __slots__ = ("_bal", "_ch", "_mcs", "_method", "_mkey")

    def __init__(self, ch: Any, mkey: MethodKey) -> None:
        self._ch = ch
        self._bal = ch._balancer
        self._mkey = mkey
        self._method: str = mkey[1]
        self._mcs: dict[str, Any] = {}

    def _mc(self, ep: str | None) -> Any:
        assert ep is not None
        mc = self._mcs.get(ep)
        if mc is None:
            mc = self._ch._sub(ep).multicallable(self._mkey)
            self._mcs[ep] = mc
        return mc
