"""The discovery provider interface and its registry.

A *discovery provider* yields a service's member set over time. It is the same plug-in
shape as the membership providers (:mod:`eagle.providers.base`): a class with a
``name``, built from the channel's :class:`~eagle.config.DiscoveryConfig` and its
:class:`~eagle.core.discovery.DiscoveryTarget`, registered with
:func:`register_discovery_provider`; ``discovery.provider`` (or the scheme of a target
string such as ``dns:///name:port``) picks it.

There are two kinds:

* **polling** providers (``polling = True``, e.g. ``dns``) answer one resolution at a
  time with :meth:`DiscoveryProvider.resolve` (sync, blocking: the runner calls it from
  its own thread, never from the prober's scheduler thread) and
  :meth:`DiscoveryProvider.resolve_async` (asyncio). The runner decides when, with
  :class:`~eagle.core.discovery.ResolveSchedule`.
* **watching** providers (``polling = False``, e.g. ``etcd``) run for the channel's life
  in :meth:`DiscoveryProvider.watch` / :meth:`DiscoveryProvider.watch_async` and hand
  every new member set to the :class:`DiscoverySession` they get.

Either way the runner (:mod:`eagle._sync.discovery`, :mod:`eagle.aio.discovery`) keeps
the last good set (:class:`~eagle.core.discovery.MemberSet`) and applies changes through
the channel's ``update_endpoints``. Write your own::

    class StaticFile(DiscoveryProvider):
        name = "file"
        polling = True

        def resolve(self) -> Resolution:
            with open("/" + self.target.name) as f:  # file:///path
                return Resolution(tuple(line.strip() for line in f if line.strip()))

    register_discovery_provider("file", StaticFile)
    ch = eagle.insecure_channel("file:///etc/members.txt",
                                config={"discovery": {"period": 5, "min_interval": 1}})
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from ..config import DiscoveryConfig, accept_discovery_provider_name
from ..core.discovery import DiscoveryTarget, Resolution, parse_target

__all__ = [
    "AioDiscoverySession",
    "DiscoveryProvider",
    "DiscoveryProviderFactory",
    "DiscoverySession",
    "available_discovery_providers",
    "create_discovery_provider",
    "discovery_target",
    "get_discovery_provider",
    "register_discovery_provider",
]


class DiscoverySession(Protocol):
    """What a watching provider's sync :meth:`~DiscoveryProvider.watch` gets."""

    @property
    def stopped(self) -> bool:
        """True once the channel closed: return from ``watch``."""

    def offer(self, resolution: Resolution) -> None:
        """A new member set (or a failure: ``Resolution.failed(text)``)."""

    def note(self, **detail: Any) -> None:
        """Provider-specific facts for ``status().discovery.detail``."""

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when stopped meanwhile."""

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from any thread) when the session stops, e.g. to cancel a
        blocking stream; at once when it already has."""


class AioDiscoverySession(Protocol):
    """What a watching provider's :meth:`~DiscoveryProvider.watch_async` gets."""

    @property
    def stopped(self) -> bool:
        """True once the channel closed."""

    async def offer(self, resolution: Resolution) -> None:
        """A new member set (or a failure)."""

    def note(self, **detail: Any) -> None:
        """Provider-specific facts for ``status().discovery.detail``."""

    async def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when stopped meanwhile."""


class DiscoveryProvider:
    """Yields a service's member set (see the module docstring).

    Subclasses set :attr:`name` and :attr:`polling` and implement either
    :meth:`resolve` and :meth:`resolve_async` (polling) or :meth:`watch` and
    :meth:`watch_async` (watching). Constructors may raise ValueError naming a bad
    config key or target; they must not do I/O.
    """

    #: the name configs and target schemes use
    name: ClassVar[str] = ""
    #: True: resolve now and then; False: watch for the channel's life
    polling: ClassVar[bool] = True

    def __init__(self, config: DiscoveryConfig, target: DiscoveryTarget) -> None:
        self.config = config
        self.target = target

    def describe(self) -> str:
        """What is resolved, for logs and status (default: the target's name)."""
        return self.target.name

    def authority(self) -> str | None:
        """The TLS host name to verify on every member of a secure channel (gRPC uses
        the target's host name), or None (default: verify each member's own address)."""
        return None

    def resolve(self) -> Resolution:
        """One resolution (polling providers; blocking, called off the scheduler thread)."""
        raise NotImplementedError(f"discovery provider {self.name!r} does not poll")

    async def resolve_async(self) -> Resolution:
        """One resolution in the running event loop (polling providers). The default runs
        :meth:`resolve` in the loop's default executor."""
        return await asyncio.get_running_loop().run_in_executor(None, self.resolve)

    def watch(self, session: DiscoverySession) -> None:
        """Watch until ``session.stopped`` (watching providers; blocking, own thread)."""
        raise NotImplementedError(f"discovery provider {self.name!r} does not watch")

    async def watch_async(self, session: AioDiscoverySession) -> None:
        """Watch until ``session.stopped`` in the running loop (watching providers)."""
        raise NotImplementedError(f"discovery provider {self.name!r} does not watch")

    def close(self) -> None:
        """Release what the provider holds (sync channels; default: nothing)."""
        return None

    async def close_async(self) -> None:
        """Release what the provider holds (asyncio channels; default: :meth:`close`)."""
        self.close()


DiscoveryProviderFactory = Callable[[DiscoveryConfig, DiscoveryTarget], DiscoveryProvider]

_REGISTRY: dict[str, DiscoveryProviderFactory] = {}
_LOCK = threading.Lock()


def register_discovery_provider(
    name: str, factory: DiscoveryProviderFactory, *, replace: bool = False
) -> None:
    """Make ``factory`` (usually a :class:`DiscoveryProvider` subclass) available as
    ``discovery.provider: name`` and as the target scheme ``name:///...``. Registering a
    taken name needs ``replace=True``."""
    if not name or not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"discovery provider name must be an identifier, got {name!r}")
    with _LOCK:
        if name in _REGISTRY and not replace and _REGISTRY[name] is not factory:
            raise ValueError(f"discovery provider {name!r} is already registered")
        _REGISTRY[name] = factory
        accept_discovery_provider_name(name)


def available_discovery_providers() -> tuple[str, ...]:
    """Names of the registered discovery providers, sorted."""
    with _LOCK:
        return tuple(sorted(_REGISTRY))


def get_discovery_provider(name: str) -> DiscoveryProviderFactory:
    """The factory registered as ``name``; ValueError naming the config key otherwise."""
    with _LOCK:
        factory = _REGISTRY.get(name)
    if factory is None:
        known = ", ".join(available_discovery_providers())
        raise ValueError(f"discovery.provider: unknown provider {name!r} (registered: {known})")
    return factory


def discovery_target(endpoints: Any, config: DiscoveryConfig) -> DiscoveryTarget | None:
    """The discovery target a channel's ``target`` argument and config ask for, or None
    (no discovery: ``endpoints`` is an endpoint list).

    A target string with a registered scheme wins; it must agree with
    ``discovery.provider`` when both are set. Otherwise ``discovery.provider`` with
    ``discovery.target`` names it (the channel's endpoints are then the initial members).
    """
    parsed = None
    if isinstance(endpoints, str):
        parsed = parse_target(endpoints.strip(), available_discovery_providers())
    if parsed is not None:
        if config.provider is not None and config.provider != parsed.scheme:
            raise ValueError(
                f"discovery.provider: {config.provider!r} does not match the target {parsed.raw!r}"
            )
        return parsed
    if config.provider is None:
        return None
    if not config.target:
        raise ValueError(
            f"discovery.target: must be set with discovery.provider {config.provider!r} "
            "(or give a target such as 'dns:///name:port')"
        )
    text = f"{config.provider}:///{config.target}"
    parsed = parse_target(text, (config.provider,))
    if parsed is None:  # pragma: no cover - the scheme is the provider's own name
        raise ValueError(f"discovery.target: bad target {config.target!r}")
    return parsed


def create_discovery_provider(
    config: DiscoveryConfig, target: DiscoveryTarget
) -> DiscoveryProvider:
    """Build the provider for ``target`` (ValueError naming what is wrong)."""
    return get_discovery_provider(target.scheme)(config, target)
