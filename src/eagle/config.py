"""eagle's configuration: frozen dataclasses, loaded from a dict, JSON/TOML file or env.

Every key and value is validated; errors are ``ValueError`` naming the key path, e.g.
``retry.max_attempts: must be 1..5, got 9``. Durations are seconds. The defaults and
where each comes from are documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .endpoints import parse_endpoint

__all__ = [
    "Config",
    "DiscoveryConfig",
    "DnsDiscoveryConfig",
    "EtcdDiscoveryConfig",
    "EtcdMembershipConfig",
    "HealthConfig",
    "HedgingConfig",
    "KeepaliveConfig",
    "MembershipConfig",
    "OutlierConfig",
    "PolicyConfig",
    "RetryBudgetConfig",
    "RetryConfig",
    "SubsetConfig",
    "SubsetCoordinateConfig",
    "accept_discovery_provider_name",
    "accept_provider_name",
    "load_config",
]

GRPC_STATUS_NAMES = frozenset(
    {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    }
)


def _dur(default: float | None, *, optional: bool = False, allow_zero: bool = False) -> Any:
    """A duration field in seconds: > 0 (or >= 0 with allow_zero), optionally null."""
    return field(
        default=default,
        metadata={"kind": "duration", "optional": optional, "allow_zero": allow_zero},
    )


def _num(default: float | int | None, lo: float, hi: float, *, optional: bool = False) -> Any:
    """A number lo..hi (a whole number when the field is an int), optionally null."""
    return field(
        default=default, metadata={"kind": "range", "lo": lo, "hi": hi, "optional": optional}
    )


def _choice(
    default: str | None, *choices: str, aliases: Mapping[str, str | None] | None = None
) -> Any:
    """One of ``choices``; a null default makes null a choice too. ``aliases`` map other
    accepted spellings to a choice (e.g. ``"off"`` to null)."""
    return field(
        default=default,
        metadata={"kind": "choice", "choices": choices, "aliases": dict(aliases or {})},
    )


def _codes(*default: str) -> Any:
    return field(default=tuple(default), metadata={"kind": "codes"})


@dataclass(frozen=True)
class HealthConfig:
    """Active health probing (``grpc.health.v1.Health/Check``).

    Defaults detect a frozen member within about 1.5 s while the channel carries calls: a
    probe every 0.5 s, each with a 0.4 s deadline, two misses in a row mark it
    UNREACHABLE. A channel with no call for a while probes every ``no_traffic_interval``
    (5 s) instead, and every member at once when calls start again.
    """

    service: str = ""
    #: ``check``: a unary Check every interval; ``watch``: a ``Health/Watch`` stream per
    #: member (the server pushes changes), plus a Check with a deadline every
    #: ``watch_check_interval`` and whenever calls on the member stall (a Watch stream
    #: never notices a frozen server)
    mode: str = _choice("check", "check", "watch")
    interval: float = _dur(0.5)
    #: with ``mode: watch``: how often a member whose Watch stream is up still gets a Check
    watch_check_interval: float = _dur(2.5)
    #: the interval while the channel carries no calls (Envoy's ``no_traffic_interval``),
    #: never shorter than ``interval``; null probes at ``interval`` all the time
    no_traffic_interval: float | None = _dur(5.0, optional=True)
    timeout: float = _dur(0.4)
    unhealthy_threshold: int = _num(2, 1, 100)
    healthy_threshold: int = _num(2, 1, 100)
    jitter: float = _num(0.1, 0.0, 0.5)


@dataclass(frozen=True)
class RetryBudgetConfig:
    """Retries may add ``ratio`` of calls plus ``min_per_second`` (Finagle, Linkerd)."""

    ratio: float = _num(0.2, 0.0, 10.0)
    min_per_second: float = _num(10.0, 0.0, 1e6)
    window: float = _dur(10.0)


@dataclass(frozen=True)
class RetryConfig:
    """Retries across members. ``mode``: ``eagle`` (default), ``grpc`` or ``off``."""

    mode: str = _choice("eagle", "eagle", "grpc", "off")
    max_attempts: int = _num(3, 1, 5)
    initial_backoff: float = _dur(0.025)
    multiplier: float = _num(2.0, 1.0, 100.0)
    max_backoff: float = _dur(1.0)
    jitter: float = _num(0.2, 0.0, 1.0)
    retryable_codes: tuple[str, ...] = _codes("UNAVAILABLE")
    per_try_timeout: float | None = _dur(None, optional=True)
    idempotent_methods: tuple[str, ...] = ()
    budget: RetryBudgetConfig = field(default_factory=RetryBudgetConfig)
    #: bytes of request messages kept per request-streaming call so a new attempt can
    #: replay them (gRPC A6; grpc core's per-RPC retry buffer default is 256 KiB)
    buffer_size: int = _num(256 * 1024, 0, 1 << 30)


@dataclass(frozen=True)
class HedgingConfig:
    """Hedged requests for idempotent methods; off while ``delay`` is null."""

    delay: float | None = _dur(None, optional=True)
    max_attempts: int = _num(2, 2, 5)


@dataclass(frozen=True)
class OutlierConfig:
    """Passive outlier ejection fed by real call outcomes (gRPC A50, Envoy, Finagle)."""

    enabled: bool = True
    interval: float = _dur(10.0)
    consecutive_failures: int = _num(5, 1, 1_000_000)
    failure_percentage: float = _num(85.0, 0.0, 100.0)
    minimum_requests: int = _num(50, 1, 1_000_000)
    minimum_hosts: int = _num(5, 1, 1_000_000)
    base_ejection_time: float = _dur(30.0)
    max_ejection_time: float = _dur(300.0)
    max_ejection_percent: float = _num(10.0, 0.0, 100.0)
    failure_codes: tuple[str, ...] = _codes(
        "UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN", "DATA_LOSS"
    )
    #: when a successful health probe ends an ejection (Envoy's
    #: ``successful_active_health_check_uneject_host``): ``recovered`` (a probe failed
    #: during the ejection, then one succeeded), ``always`` (Envoy's literal rule: any
    #: successful probe) or ``never`` (the ejection runs its time)
    uneject_on_probe: str = _choice("recovered", "recovered", "always", "never")


@dataclass(frozen=True)
class KeepaliveConfig:
    """HTTP/2 keepalive on each sub-channel.

    ``time`` defaults to 330 s: 10 % above the 300 s floor a default gRPC server enforces
    (etcd's is 5 s), so quiet streams never draw a ``too_many_pings`` GOAWAY. Not exactly
    at the floor: the server measures the gap between pings as it receives them, so a
    ping delayed a little and the next one on time look early, and on a quiet stream the
    strikes are never forgiven (grpc/grpc ``src/core/ext/transport/chttp2/transport/
    ping_abuse_policy.cc``). Frozen members are the prober's job, not keepalive's.
    ``timeout`` also sets ``grpc.http2.ping_timeout_ms``.
    """

    time: float | None = _dur(330.0, optional=True)
    timeout: float = _dur(20.0)
    permit_without_calls: bool = False


@dataclass(frozen=True)
class EtcdMembershipConfig:
    """Settings of the ``etcd`` membership provider."""

    require_leader: bool = False
    max_term_lag: int = _num(1, 0, 1_000_000)
    max_applied_lag: int = _num(1000, 0, 1 << 62)


@dataclass(frozen=True)
class MembershipConfig:
    """Membership-aware health: ``provider`` is ``eagle``, ``etcd``, the name of a provider
    registered with :func:`eagle.providers.register_provider`, or null (off)."""

    provider: str | None = None
    timeout: float = _dur(0.5)
    discover: bool = False
    max_term_lag: int = _num(1, 0, 1_000_000)
    max_applied_lag: int = _num(1000, 0, 1 << 62)
    etcd: EtcdMembershipConfig = field(default_factory=EtcdMembershipConfig)


@dataclass(frozen=True)
class SubsetCoordinateConfig:
    """This client's place among its peers, for ``aperture`` (and ``deterministic``).

    ``instance`` is this client's index (0-based) and ``instances`` how many clients share
    the servers. Null reads ``EAGLE_INSTANCE_INDEX`` / ``EAGLE_INSTANCE_COUNT`` from the
    environment when the channel is built (Finagle's ``ProcessCoordinate``).
    """

    instance: int | None = _num(None, 0, (1 << 31) - 1, optional=True)
    instances: int | None = _num(None, 1, 1 << 31, optional=True)


@dataclass(frozen=True)
class SubsetConfig:
    """Subsetting: connect to and probe only some members (off while ``mode`` is null).

    ``aperture`` is Finagle's deterministic aperture, ``random`` gRPC A68's
    ``random_subsetting``, ``deterministic`` the Google SRE book's (ch. 20). See
    :mod:`eagle.core.subset`.
    """

    mode: str | None = _choice(None, "aperture", "random", "deterministic", aliases={"off": None})
    size: int = _num(20, 1, 1_000_000)
    min_aperture: int = _num(12, 1, 1_000_000)
    coordinate: SubsetCoordinateConfig = field(default_factory=SubsetCoordinateConfig)
    seed: int | None = _num(None, 0, (1 << 64) - 1, optional=True)


def _endpoints(kind: str) -> Any:
    """A list of endpoints (``kind`` "endpoints": host:port) or DNS nameservers (``kind``
    "nameservers": an IP address with an optional port)."""
    return field(default=(), metadata={"kind": kind})


@dataclass(frozen=True)
class DnsDiscoveryConfig:
    """Settings of the ``dns`` discovery provider.

    With no ``nameservers`` the system resolver answers (``getaddrinfo``, off the prober's
    thread). Naming nameservers (``"127.0.0.1"``, ``"127.0.0.1:5353"``, ``"[::1]:53"``)
    needs the ``dnspython`` package (``pip install eagle-grpc[dns]``), which also gives
    the records' TTLs (``use_ttl``) and SRV lookups (``srv``).
    """

    nameservers: tuple[str, ...] = _endpoints("nameservers")
    timeout: float = _dur(2.0)
    #: which addresses to use: ``any`` (A and AAAA), ``ipv4`` (A) or ``ipv6`` (AAAA)
    families: str = _choice("any", "any", "ipv4", "ipv6")
    #: with dnspython: re-resolve when the shortest TTL runs out (within min_interval..period)
    use_ttl: bool = True
    #: with dnspython: the target names SRV records (``_grpc._tcp.svc.example``); their
    #: targets' addresses with the records' ports are the members
    srv: bool = False


@dataclass(frozen=True)
class EtcdDiscoveryConfig:
    """Settings of the ``etcd`` discovery provider (etcd's gRPC naming registry)."""

    #: etcd client endpoints (host:port); the connection is itself an eagle channel
    endpoints: tuple[str, ...] = _endpoints("endpoints")
    #: deadline of each Range call (the watch has none)
    timeout: float = _dur(2.0)
    #: send ``hasleader: true`` so a member cut off from its leader ends the watch
    require_leader: bool = True
    #: eagle health-probe interval on the etcd members
    probe_interval: float = _dur(0.5)


@dataclass(frozen=True)
class DiscoveryConfig:
    """Where the member set comes from: ``provider`` is ``dns``, ``etcd``, the name of a
    provider registered with :func:`eagle.providers.register_discovery_provider`, or null
    (off: the endpoints given, and ``update_endpoints``). A target string such as
    ``dns:///name:port`` or ``etcd:///target`` sets ``provider`` and ``target``.
    """

    provider: str | None = field(default=None, metadata={"kind": "discovery_provider"})
    #: ``name:port`` (dns) or the naming target (etcd); "" takes it from the channel target
    target: str = ""
    #: re-resolve this often (polling providers; gRPC re-resolves DNS at most every 30 s)
    period: float = _dur(30.0)
    #: never resolve more often than this, early re-resolution included (gRPC's
    #: ``grpc.dns_min_time_between_resolutions_ms``, 30 s)
    min_interval: float = _dur(30.0, allow_zero=True)
    #: re-resolve early (still after min_interval) when a member becomes unreachable
    resolve_on_failure: bool = True
    dns: DnsDiscoveryConfig = field(default_factory=DnsDiscoveryConfig)
    etcd: EtcdDiscoveryConfig = field(default_factory=EtcdDiscoveryConfig)


@dataclass(frozen=True)
class PolicyConfig:
    """Which picker to use, by registered name, and its options."""

    name: str = "round_robin"
    weights: Mapping[str, float] = field(default_factory=dict)
    decay: float = _dur(10.0)


@dataclass(frozen=True)
class Config:
    """All of eagle's settings. Build with :func:`load_config` or ``Config.from_dict``."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    panic_threshold: float = _num(0.5, 0.0, 1.0)
    health: HealthConfig = field(default_factory=HealthConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    hedging: HedgingConfig = field(default_factory=HedgingConfig)
    outlier: OutlierConfig = field(default_factory=OutlierConfig)
    keepalive: KeepaliveConfig = field(default_factory=KeepaliveConfig)
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    subset: SubsetConfig = field(default_factory=SubsetConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    channel_options: Mapping[str, int | str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Build and validate a config from a JSON-shaped mapping."""
        built: Config = _build(cls, _normalise_top(data), "")
        return built

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-shaped dict (round-trips through ``from_dict``)."""
        out: dict[str, Any] = _to_plain(self)
        return out


# the names ``membership.provider`` accepts: the built-ins, plus every name registered with
# eagle.providers.register_provider (which calls accept_provider_name)
_PROVIDERS: set[str] = {"eagle", "etcd"}


def accept_provider_name(name: str) -> None:
    """Let ``membership.provider`` take ``name`` (called by
    :func:`eagle.providers.register_provider`; the registry itself lives there)."""
    _PROVIDERS.add(name)


def _provider_ok(value: Any) -> bool:
    return isinstance(value, str) and value in _PROVIDERS


def _provider_error(value: Any) -> str:
    others = sorted(_PROVIDERS - {"eagle", "etcd"})
    extra = f" or a registered provider ({', '.join(others)})" if others else ""
    return f"must be null, 'eagle', 'etcd'{extra}; got {value!r}"


# the names ``discovery.provider`` accepts (eagle.providers.register_discovery_provider adds)
_DISCOVERY_PROVIDERS: set[str] = {"dns", "etcd"}


def accept_discovery_provider_name(name: str) -> None:
    """Let ``discovery.provider`` take ``name`` (called by
    :func:`eagle.providers.register_discovery_provider`)."""
    _DISCOVERY_PROVIDERS.add(name)


def _check_addresses(kind: str, value: Any, path: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple):
        raise _fail(path, f"must be a list of {kind}, got {value!r}")
    out = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise _fail(path, f"must be a list of non-empty strings, got {item!r}")
        item = item.strip()
        if kind == "nameservers":
            from .core.discovery import parse_nameserver

            try:
                parse_nameserver(item)
            except ValueError as exc:
                raise _fail(path, str(exc)) from None
        else:
            try:
                parse_endpoint(item)
            except ValueError as exc:
                raise _fail(path, str(exc)) from None
        out.append(item)
    return tuple(out)


def _normalise_top(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept the short forms ``"policy": "p2c"``, ``"membership": "etcd"`` and
    ``"subset": "random"`` (``"subset": null`` is off)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"config: expected a mapping, got {type(data).__name__}")
    out = dict(data)
    if isinstance(out.get("policy"), str):
        out["policy"] = {"name": out["policy"]}
    if isinstance(out.get("discovery"), str) or ("discovery" in out and out["discovery"] is None):
        out["discovery"] = {"provider": out["discovery"]}
    if "subset" in out and (out["subset"] is None or isinstance(out["subset"], str)):
        out["subset"] = {"mode": out["subset"]}
    mem = out.get("membership")
    if mem is None and "membership" in out:
        out["membership"] = {}
    elif isinstance(mem, str):
        if not _provider_ok(mem):
            raise ValueError(f"membership: {_provider_error(mem)}")
        out["membership"] = {"provider": mem}
    elif isinstance(mem, Mapping):
        mem = dict(mem)
        # {"etcd": {...}} alone means provider etcd
        if "provider" not in mem:
            named = [p for p in ("eagle", "etcd") if p in mem]
            if len(named) == 1:
                mem["provider"] = named[0]
            if "eagle" in mem:
                extra = mem.pop("eagle")
                if extra not in ({}, None):
                    raise ValueError("membership.eagle: takes no settings")
        out["membership"] = mem
    return out


def _fail(path: str, msg: str) -> ValueError:
    return ValueError(f"{path}: {msg}")


def _check_value(f: dataclasses.Field[Any], hint: Any, value: Any, path: str) -> Any:
    meta = f.metadata
    kind = meta.get("kind")
    if kind == "duration":
        if value is None:
            if meta.get("optional"):
                return None
            raise _fail(path, "must be a duration in seconds, got null")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(path, f"must be a duration in seconds, got {value!r}")
        if not math.isfinite(value):
            raise _fail(path, f"must be a finite duration, got {value!r}")
        if value < 0 or (value == 0 and not meta.get("allow_zero")):
            raise _fail(path, f"must be a positive duration in seconds, got {value!r}")
        return float(value)
    if kind == "range":
        lo, hi = meta["lo"], meta["hi"]
        if value is None and meta.get("optional"):
            return None
        want_int = hint is int or hint == (int | None)
        if isinstance(value, bool) or not isinstance(value, int | float):
            null = "null or " if meta.get("optional") else ""
            raise _fail(path, f"must be {null}a number {lo}..{hi}, got {value!r}")
        if want_int and not (isinstance(value, int) or float(value).is_integer()):
            raise _fail(path, f"must be a whole number {lo}..{hi}, got {value!r}")
        if not math.isfinite(value) or not lo <= value <= hi:
            raise _fail(path, f"must be {lo}..{hi}, got {value!r}")
        return int(value) if want_int else float(value)
    if kind == "choice":
        aliases = meta["aliases"]
        if isinstance(value, str) and value in aliases:
            return aliases[value]
        if value in meta["choices"] or (value is None and f.default is None):
            return value
        names = [*(["null"] if f.default is None else []), *aliases, *meta["choices"]]
        raise _fail(path, f"must be one of {', '.join(names)}; got {value!r}")
    if kind == "discovery_provider":
        if value is None or (isinstance(value, str) and value in _DISCOVERY_PROVIDERS):
            return value
        known = ", ".join(sorted(_DISCOVERY_PROVIDERS))
        raise _fail(path, f"must be null or a discovery provider ({known}); got {value!r}")
    if kind in ("endpoints", "nameservers"):
        return _check_addresses(kind, value, path)
    if kind == "codes":
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise _fail(path, f"must be a list of gRPC status code names, got {value!r}")
        codes = []
        for code in value:
            name = code.upper() if isinstance(code, str) else code
            if name not in GRPC_STATUS_NAMES or name == "OK":
                raise _fail(path, f"unknown gRPC status code {code!r}")
            codes.append(name)
        return tuple(codes)
    # plain types
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, Mapping):
            raise _fail(path, f"must be a mapping, got {value!r}")
        return _build(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise _fail(path, f"must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise _fail(path, f"must be a string, got {value!r}")
        return value
    if hint == (str | None):
        if value is not None and not _provider_ok(value):
            raise _fail(path, _provider_error(value))
        return value
    if hint == tuple[str, ...]:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise _fail(path, f"must be a list of strings, got {value!r}")
        for item in value:
            if not isinstance(item, str) or not item:
                raise _fail(path, f"must be a list of non-empty strings, got {item!r}")
        return tuple(value)
    if hint == Mapping[str, float]:
        if not isinstance(value, Mapping):
            raise _fail(path, f"must be a mapping of endpoint to weight, got {value!r}")
        weights: dict[str, float] = {}
        for k, w in value.items():
            try:
                parse_endpoint(k)
            except ValueError as exc:
                raise _fail(f"{path}.{k}", str(exc)) from None
            if isinstance(w, bool) or not isinstance(w, int | float) or not 0 < w < math.inf:
                raise _fail(f"{path}.{k}", f"weight must be a positive number, got {w!r}")
            weights[k] = float(w)
        return types.MappingProxyType(weights)
    if hint == Mapping[str, int | str]:
        if not isinstance(value, Mapping):
            raise _fail(path, f"must be a mapping of grpc channel options, got {value!r}")
        opts: dict[str, int | str] = {}
        for k, v in value.items():
            if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int | str):
                raise _fail(f"{path}.{k}", f"must be an int or string, got {v!r}")
            opts[k] = v
        return types.MappingProxyType(opts)
    raise AssertionError(f"unhandled config type {hint!r} at {path}")  # pragma: no cover


def _build(cls: type[Any], data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise _fail(prefix or "config", f"must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            where = f"{prefix}.{key}" if prefix else str(key)
            known = ", ".join(sorted(fields))
            raise ValueError(f"{where}: unknown config key (known keys: {known})")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        path = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _check_value(fields[name], hints[name], value, path)
    obj = cls(**kwargs)
    _cross_check(obj, prefix)
    return obj


def _cross_check(obj: Any, prefix: str) -> None:
    p = f"{prefix}." if prefix else ""
    if isinstance(obj, HealthConfig) and obj.timeout > obj.interval * 10:
        raise ValueError(f"{p}timeout: must not exceed 10 x interval, got {obj.timeout}")

    if isinstance(obj, RetryConfig) and obj.max_backoff < obj.initial_backoff:
        raise ValueError(
            f"{p}max_backoff: must be >= initial_backoff ({obj.initial_backoff}), "
            f"got {obj.max_backoff}"
        )
    if (
        isinstance(obj, SubsetCoordinateConfig)
        and obj.instance is not None
        and obj.instances is not None
        and obj.instance >= obj.instances
    ):
        raise ValueError(
            f"{p}instance: must be less than instances ({obj.instances}), got {obj.instance}"
        )
    if isinstance(obj, DiscoveryConfig) and obj.min_interval > obj.period:
        raise ValueError(
            f"{p}min_interval: must be <= period ({obj.period}), got {obj.min_interval}"
        )
    if isinstance(obj, Config) and obj.discovery.provider and obj.membership.discover:
        raise ValueError(
            f"{p}discovery.provider: cannot be combined with membership.discover "
            "(one source of members per channel)"
        )
    if isinstance(obj, OutlierConfig) and obj.max_ejection_time < obj.base_ejection_time:
        raise ValueError(
            f"{p}max_ejection_time: must be >= base_ejection_time ({obj.base_ejection_time}), "
            f"got {obj.max_ejection_time}"
        )


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj


def load_config(source: Config | Mapping[str, Any] | str | os.PathLike[str] | None) -> Config:
    """Turn any accepted config source into a validated :class:`Config`.

    ``source`` may be a ``Config``, a JSON-shaped dict, or a path to a ``.json`` or
    ``.toml`` file. ``None`` reads the file named by ``EAGLE_CONFIG`` when that is set,
    otherwise gives the defaults.
    """
    if isinstance(source, Config):
        return source
    if source is None:
        env = os.environ.get("EAGLE_CONFIG")
        if not env:
            return Config()
        source = env
    if isinstance(source, str | os.PathLike):
        path = pathlib.Path(source)
        suffix = path.suffix.lower()
        if suffix not in (".json", ".toml"):
            raise ValueError(f"config file {str(path)!r}: must end in .json or .toml")
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"config file {str(path)!r}: cannot read: {exc.strerror}") from None
        try:
            data = json.loads(text) if suffix == ".json" else tomllib.loads(text.decode())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"config file {str(path)!r}: not valid {suffix[1:]}: {exc}") from None
        return Config.from_dict(data)
    if isinstance(source, Mapping):
        return Config.from_dict(source)
    raise ValueError(f"config: expected a Config, dict or file path, got {type(source).__name__}")
