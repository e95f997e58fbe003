"""The membership provider interface, its registry, and the sans-IO view-fetch logic.

A *membership provider* knows how to ask one member of a replicated service for its
view of the cluster. It is sans-IO: it names the unary RPCs to send
(:class:`ProviderCall`: method path, request serializer, response deserializer,
request) and turns their answers or errors (:class:`CallResult`) into a
:class:`~eagle.core.membership.MemberView` or an error text. The channels' probers do the
sending, each in its own I/O world, and hand the results to a :class:`ViewFetch`; that is
the only code the two probers do not share.

Write your own provider by subclassing :class:`MembershipProvider` and registering it::

    class MyProvider(MembershipProvider):
        name = "mine"

        def calls(self) -> Sequence[ProviderCall]:
            return (ProviderCall("/my.Cluster/Status", Req.SerializeToString,
                                 Resp.FromString, Req()),)

        def interpret(self, results):
            r = results[0]
            if not r.ok:
                return None, r.error_text()
            return MemberView(...), None

    register_provider("mine", MyProvider)
    ch = eagle.insecure_channel(eps, config={"membership": {"provider": "mine"}})

:class:`MembershipProbe` ties a provider to a channel's balancer: which fetch to start
when a member is due, folding the result in with ``Balancer.on_view``, and what
discovery (``membership.discover``) wants changed in the member set.
"""

from __future__ import annotations

import abc
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..config import MembershipConfig, accept_provider_name
from ..core.membership import DiscoveryPlan, MemberView, plan_discovery

if TYPE_CHECKING:
    from ..core.balancer import Balancer

__all__ = [
    "CallResult",
    "MembershipProbe",
    "MembershipProvider",
    "Metadata",
    "ProviderCall",
    "ProviderFactory",
    "ViewFetch",
    "available_providers",
    "call_metadata",
    "create_provider",
    "get_provider",
    "register_provider",
]

log = logging.getLogger("eagle.providers")

#: request metadata pairs
Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """One unary RPC a provider wants sent to a member, with the membership deadline.

    ``key`` is the multicallable key the channels' sub-channels cache by
    (``("unary_unary", method, serializer, deserializer, True)``).
    """

    method: str
    request_serializer: Callable[[Any], bytes]
    response_deserializer: Callable[[bytes], Any]
    request: Any
    key: tuple[str, str, Any, Any, bool] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "key",
            ("unary_unary", self.method, self.request_serializer, self.response_deserializer, True),
        )


@dataclass(frozen=True, slots=True)
class CallResult:
    """The outcome of one :class:`ProviderCall`: a response, or a status code and details.

    ``code`` is None on success, else the gRPC status code name (``"UNAVAILABLE"``).
    """

    response: Any = None
    code: str | None = None
    details: str = ""

    @property
    def ok(self) -> bool:
        """True when the call succeeded."""
        return self.code is None

    def error_text(self) -> str:
        """``"CODE: details"`` for a failed call ("" for a successful one)."""
        if self.code is None:
            return ""
        return f"{self.code}: {self.details}" if self.details else self.code

    @classmethod
    def from_error(cls, err: Any) -> CallResult:
        """Build a failed result from a grpc error (sync ``grpc.RpcError`` or
        ``grpc.aio.AioRpcError``; anything with ``code()`` and ``details()``)."""
        try:
            code = err.code()
            name = code.name if code is not None else "UNKNOWN"
            details = err.details() or ""
        except Exception:
            return cls(code="UNKNOWN", details=repr(err))
        return cls(code=name, details=str(details))


class MembershipProvider(abc.ABC):
    """Asks one member for its view of the cluster (sans-IO).

    Subclasses set :attr:`name`, return the RPCs to send from :meth:`calls` (the same
    objects every time is best: sub-channels cache a multicallable per call) and turn the
    results into a view with :meth:`interpret`. They are built with the channel's
    :class:`~eagle.config.MembershipConfig`.
    """

    #: the name configs use (``membership.provider``)
    name: ClassVar[str] = ""

    def __init__(self, config: MembershipConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def calls(self) -> Sequence[ProviderCall]:
        """The unary RPCs to send to a member for one view (sent concurrently)."""

    @abc.abstractmethod
    def interpret(self, results: Sequence[CallResult]) -> tuple[MemberView | None, str | None]:
        """Turn the results (in :meth:`calls` order) into ``(view, None)`` or
        ``(None, error text)``. An error text containing ``"no leader"`` marks the member
        PARTITIONED; any other error leaves it to its health probe."""

    def call_metadata(self) -> Metadata:
        """Metadata the channel adds to every application call (default none)."""
        return ()


ProviderFactory = Callable[[MembershipConfig], MembershipProvider]

_REGISTRY: dict[str, ProviderFactory] = {}
_REGISTRY_LOCK = threading.Lock()


def register_provider(name: str, factory: ProviderFactory, *, replace: bool = False) -> None:
    """Make ``factory`` (usually a :class:`MembershipProvider` subclass) available as
    ``membership.provider: name``. Registering a taken name needs ``replace=True``."""
    if not name or not isinstance(name, str):
        raise ValueError(f"provider name must be a non-empty string, got {name!r}")
    with _REGISTRY_LOCK:
        if name in _REGISTRY and not replace and _REGISTRY[name] is not factory:
            raise ValueError(f"membership provider {name!r} is already registered")
        _REGISTRY[name] = factory
        accept_provider_name(name)
    _call_metadata.cache_clear()


def available_providers() -> tuple[str, ...]:
    """Names of the registered membership providers, sorted."""
    with _REGISTRY_LOCK:
        return tuple(sorted(_REGISTRY))


def get_provider(name: str) -> ProviderFactory:
    """The factory registered as ``name``; ValueError naming the config key otherwise."""
    with _REGISTRY_LOCK:
        factory = _REGISTRY.get(name)
    if factory is None:
        known = ", ".join(available_providers())
        raise ValueError(f"membership.provider: unknown provider {name!r} (registered: {known})")
    return factory


def create_provider(config: MembershipConfig) -> MembershipProvider | None:
    """Build the provider ``config`` names, or None when membership is off."""
    if config.provider is None:
        return None
    return get_provider(config.provider)(config)


@functools.lru_cache(maxsize=64)
def _call_metadata(config: MembershipConfig) -> Metadata:
    provider = create_provider(config)
    return provider.call_metadata() if provider is not None else ()


def call_metadata(config: MembershipConfig) -> Metadata:
    """Metadata to add to every application call under ``config`` (e.g. etcd's
    ``hasleader: true`` with ``membership.etcd.require_leader``). Cached."""
    if config.provider is None:
        return ()
    return _call_metadata(config)


# --------------------------------------------------------------------------- fetching


class ViewFetch:
    """One member's view fetch in flight.

    The prober sends each of :attr:`calls` to member :attr:`key` with deadline
    :attr:`timeout` and reports each outcome with :meth:`succeeded` or :meth:`failed`
    (from any thread, in any order). When the last one is in, the provider interprets
    them and the balancer gets the view. Reporting the same call twice is ignored.
    """

    __slots__ = ("_left", "_lock", "_probe", "_results", "calls", "key", "timeout")

    def __init__(self, probe: MembershipProbe, key: str, calls: Sequence[ProviderCall]) -> None:
        self._probe = probe
        self.key = key
        self.calls = tuple(calls)
        self.timeout = probe.timeout
        self._results: list[CallResult | None] = [None] * len(self.calls)
        self._left = len(self.calls)
        self._lock = threading.Lock()

    def succeeded(self, index: int, response: Any) -> None:
        """Call ``index`` answered ``response``."""
        self.deliver(index, CallResult(response))

    def failed(self, index: int, code: str, details: str = "") -> None:
        """Call ``index`` failed with status ``code`` (name) and ``details``."""
        self.deliver(index, CallResult(code=code, details=details))

    def deliver(self, index: int, result: CallResult) -> None:
        """Record the result of call ``index``; the last one completes the fetch."""
        with self._lock:
            if self._results[index] is not None:
                return
            self._results[index] = result
            self._left -= 1
            done = self._left == 0
        if done:
            self._probe._complete(self.key, [r for r in self._results if r is not None])


class MembershipProbe:
    """A channel's membership probing, sans-IO: one per channel, shared by its prober.

    :meth:`begin` hands out at most one :class:`ViewFetch` per member at a time; when a
    fetch completes, the view (or error) goes to ``Balancer.on_view``. With
    ``membership.discover``, :meth:`discovery` says how the member set should change;
    the prober applies that through the channel's ``update_endpoints``.
    """

    def __init__(self, balancer: Balancer, provider: MembershipProvider) -> None:
        self.balancer = balancer
        self.provider = provider
        self.config = provider.config
        self.timeout = provider.config.timeout
        self._calls = tuple(provider.calls())
        self._lock = threading.Lock()
        self._inflight: set[str] = set()
        self._discovered: set[str] = set()
        self._dirty = False
        self._closed = False

    @classmethod
    def for_balancer(cls, balancer: Balancer) -> MembershipProbe | None:
        """The probe ``balancer``'s config asks for, or None when membership is off."""
        provider = create_provider(balancer.config.membership)
        return None if provider is None else cls(balancer, provider)

    def begin(self, key: str) -> ViewFetch | None:
        """Start fetching ``key``'s view; None while a fetch of it is still in flight."""
        with self._lock:
            if self._closed or key in self._inflight:
                return None
            self._inflight.add(key)
        return ViewFetch(self, key, self._calls)

    def _complete(self, key: str, results: Sequence[CallResult]) -> None:
        with self._lock:
            self._inflight.discard(key)
            if self._closed:
                return
        try:
            view, error = self.provider.interpret(results)
        except Exception as exc:
            log.exception("membership provider %s failed on %s", self.provider.name, key)
            view, error = None, f"provider {self.provider.name} failed: {exc!r}"
        if view is None and not error:
            error = "no view"
        if error:
            log.debug("member %s: no view: %s", key, error)
        self.balancer.on_view(key, view, error)
        if self.config.discover:
            with self._lock:
                self._dirty = True

    def discovery(self) -> DiscoveryPlan | None:
        """What discovery wants changed now (None: nothing). Marks the endpoints it adds as
        discovered; call from one thread (the prober's)."""
        if not self.config.discover:
            return None
        with self._lock:
            if not self._dirty or self._closed:
                return None
            self._dirty = False
            discovered = frozenset(self._discovered)
        current = [ep.raw for ep in self.balancer.endpoints]
        views, verdicts = self.balancer.membership_views()
        plan = plan_discovery(current, views, verdicts, discovered)
        if not plan:
            return None
        with self._lock:
            self._discovered.update(plan.add)
            self._discovered.difference_update(plan.remove)
        log.info("membership discovery: adding %s, removing %s", list(plan.add), list(plan.remove))
        return plan

    @property
    def discovered(self) -> frozenset[str]:
        """Endpoints discovery added (and has not removed since)."""
        with self._lock:
            return frozenset(self._discovered)

    def close(self) -> None:
        """Stop folding in views (results still in flight are dropped)."""
        with self._lock:
            self._closed = True
