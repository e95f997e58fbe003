"""Service discovery, sans-IO: target strings, when to re-resolve, keep-last-good, the
member-set diff, and etcd's naming registry format.

A *discovery provider* (:mod:`eagle.providers.discovery`) yields the member set of a
service over time: a DNS name resolved now and then, or an etcd prefix watched. The
shells run it (a thread or a task) and apply each new set through the channel's
``update_endpoints``; everything they decide comes from here:

* :func:`parse_target` reads the target strings a gRPC user expects
  (``dns:///name:port``, ``dns://127.0.0.1:53/name:port``, ``etcd:///service``;
  gRPC's naming doc, https://github.com/grpc/grpc/blob/master/doc/naming.md).
* :class:`ResolveSchedule` says when a polling provider resolves next: every
  ``discovery.period``, never twice within ``discovery.min_interval`` (gRPC's
  ``grpc.dns_min_time_between_resolutions_ms``, 30 s by default), early (still within
  that minimum) when a member fails, and with exponential backoff after a failed
  resolution (gRPC's connection backoff: 1 s, x1.6, capped at the period).
* :class:`MemberSet` keeps the last good set: a failed resolution or an empty answer
  changes nothing (gRPC's DNS resolver rule: "the previous list of addresses is kept")
  but is counted and shown in :class:`DiscoveryStatus`.
* :class:`NamingTable` reads etcd's endpoints-manager format
  (``go.etcd.io/etcd/client/v3/naming/endpoints``): keys ``<target>/<anything>`` whose
  values are JSON ``{"Op":0,"Addr":"10.0.0.7:50051","Metadata":...}``. A PUT makes the
  key present (whatever its ``Op``: the Go reader ignores it too), a DELETE removes it.
  Unlike the Go reader, whose prefix is ``<target>`` without the slash (so ``foo`` also
  matches ``foo_other/...``, etcd issue 15022), the prefix here is ``<target>/``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..endpoints import parse_endpoint

__all__ = [
    "DEFAULT_DNS_PORT",
    "DiscoveryStatus",
    "DiscoveryTarget",
    "MemberChange",
    "MemberSet",
    "NamingEntry",
    "NamingTable",
    "Resolution",
    "ResolveSchedule",
    "diff_members",
    "format_host_port",
    "naming_prefix",
    "naming_value",
    "parse_host_port",
    "parse_nameserver",
    "parse_naming_value",
    "parse_target",
    "prefix_range_end",
]

log = logging.getLogger("eagle.discovery")

#: the port gRPC assumes for a ``dns:`` target without one (doc/naming.md)
DEFAULT_DNS_PORT = 443


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True, slots=True)
class DiscoveryTarget:
    """A parsed target string: ``scheme://authority/name``.

    ``scheme`` names the provider (``dns``, ``etcd``), ``authority`` is the optional
    part between ``//`` and the next ``/`` (a DNS server for ``dns``, etcd endpoints for
    ``etcd``) and ``name`` what to resolve (``host:port`` for ``dns``, the naming target
    for ``etcd``).
    """

    scheme: str
    authority: str
    name: str
    raw: str


def parse_target(text: str, schemes: Collection[str]) -> DiscoveryTarget | None:
    """The discovery target in ``text``, or None when it names no scheme in ``schemes``
    (then it is an endpoint list). Raises ValueError naming ``text`` when the scheme is
    known but the rest is malformed.

    Accepted: ``scheme:///name``, ``scheme://authority/name`` and ``scheme:name``.
    """
    if not isinstance(text, str) or ":" not in text:
        return None
    scheme, rest = text.split(":", 1)
    scheme_l = scheme.strip().lower()
    if scheme_l not in schemes or "," in scheme:
        return None
    if any(c.isspace() for c in text):
        raise ValueError(f"bad target {text!r}: contains white space")
    authority = ""
    if rest.startswith("//"):
        rest = rest[2:]
        if "/" not in rest:
            raise ValueError(f"bad target {text!r}: expected {scheme_l}://[authority]/name")
        authority, rest = rest.split("/", 1)
    name = rest.lstrip("/") if scheme_l == "etcd" else rest
    if not name:
        raise ValueError(f"bad target {text!r}: nothing to resolve after the scheme")
    return DiscoveryTarget(scheme_l, authority, name, text)


def parse_host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, a bare host or IPv6 literal (with ``default_port``)
    -> ``(host, port)``. ValueError naming ``text`` otherwise."""
    t = text.strip()
    if not t:
        raise ValueError("bad address '': empty")
    host: str
    port_text: str | None
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            raise ValueError(f"bad address {text!r}: missing ']'")
        host, after = t[1:end], t[end + 1 :]
        if after and not after.startswith(":"):
            raise ValueError(f"bad address {text!r}: expected ':port' after ']'")
        port_text = after[1:] if after else None
    elif t.count(":") > 1:  # a bare IPv6 literal
        host, port_text = t, None
    elif ":" in t:
        host, port_text = t.rsplit(":", 1)
    else:
        host, port_text = t, None
    if not host:
        raise ValueError(f"bad address {text!r}: empty host")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"bad address {text!r}: missing ':port'")
        return host, default_port
    if not port_text.isdigit():
        raise ValueError(f"bad address {text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"bad address {text!r}: port {port} is out of range 1..65535")
    return host, port


def format_host_port(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals in brackets (an eagle endpoint)."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def parse_nameserver(text: str) -> tuple[str, int]:
    """A DNS server ``IP``, ``IP:port`` or ``[v6]:port`` -> ``(ip, port)``; port 53 when
    none is given. ValueError naming ``text`` when the host is not an IP address."""
    host, port = parse_host_port(text, 53)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"bad nameserver {text!r}: {host!r} is not an IP address") from None
    return host, port


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Resolution:
    """One answer from a provider: the member endpoints (as eagle endpoints, e.g.
    ``10.0.0.7:50051``), per-endpoint metadata, the answer's TTL in seconds (None when
    unknown), or ``error`` when the resolution failed."""

    endpoints: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    ttl: float | None = None
    error: str | None = None

    @classmethod
    def failed(cls, error: str) -> Resolution:
        """A failed resolution."""
        return cls(error=error)

    @classmethod
    def raised(cls, exc: BaseException) -> Resolution:
        """The failed resolution of a provider that raised ``exc``."""
        return cls(error=f"resolver failed: {exc!r}")

    @property
    def usable(self) -> bool:
        """True when it names members and no error."""
        return self.error is None and bool(self.endpoints)


@dataclass(frozen=True, slots=True)
class MemberChange:
    """What :meth:`MemberSet.offer` wants applied: the new set, and what changed."""

    endpoints: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DiscoveryStatus:
    """What discovery knows, as shown in ``channel.status().discovery``.

    Attributes:
        provider: the provider's name (``dns``, ``etcd``).
        target: what it resolves.
        endpoints: the member set in force (the last good one).
        resolved: True once a good set arrived.
        last_error: why the last resolution failed or was empty (None after a good one).
        last_success: clock time (``time.monotonic()``) of the last good resolution.
        last_attempt: clock time of the last resolution (or update) that finished.
        resolutions: good resolutions/updates so far.
        failures: failed or empty ones so far.
        changes: how many times the member set changed.
        detail: provider-specific facts (e.g. etcd's revision, the member the watch runs on).
    """

    provider: str
    target: str
    endpoints: tuple[str, ...] = ()
    resolved: bool = False
    last_error: str | None = None
    last_success: float | None = None
    last_attempt: float | None = None
    resolutions: int = 0
    failures: int = 0
    changes: int = 0
    detail: Mapping[str, Any] = field(default_factory=dict)


def diff_members(old: Sequence[str], new: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(added, removed)`` between two member sets (order kept)."""
    old_set, new_set = set(old), set(new)
    return (
        tuple(e for e in new if e not in old_set),
        tuple(e for e in old if e not in new_set),
    )


def _dedupe(endpoints: Iterable[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    out: list[str] = []
    for e in endpoints:
        if e not in seen:
            seen.add(e)
            out.append(e)
    return tuple(out)


class MemberSet:
    """The member set discovery keeps, with gRPC's keep-last-good rule.

    :meth:`offer` takes each :class:`Resolution`; a good one that differs from the set in
    force returns the :class:`MemberChange` to apply. A failure or an empty answer keeps
    the last good set, is counted, logged (a WARNING when the error changes, DEBUG when it
    repeats) and shown in :meth:`status`. Thread-safe use is the caller's (one runner).
    """

    def __init__(
        self,
        provider: str,
        target: str,
        initial: Sequence[str] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.target = target
        self._clock = clock
        self.endpoints: tuple[str, ...] = _dedupe(initial)
        self.metadata: dict[str, Any] = {}
        self.resolved = False
        self.last_error: str | None = None
        self.last_success: float | None = None
        self.last_attempt: float | None = None
        self.resolutions = 0
        self.failures = 0
        self.changes = 0
        self.detail: dict[str, Any] = {}

    def note(self, res: Resolution, provider: str, current: str | None) -> str | None:
        """Why the channel has no members, for its "no member" errors, after ``res``:
        None once a resolution is usable, the last error while none ever was, else
        ``current`` (a set in force hides a later failure)."""
        if res.usable:
            return None
        if not self.endpoints:
            return f"discovery {provider} {self.target}: {self.last_error}"
        return current

    def polled(self, schedule: ResolveSchedule, res: Resolution) -> None:
        """A poll of ``schedule`` ended with ``res``: plan the next one and show when."""
        schedule.finished(res.usable, res.ttl)
        self.detail["next_resolution_at"] = schedule.due_at
        self.detail["early_requests"] = schedule.early_requests

    def offer(self, res: Resolution) -> MemberChange | None:
        """Fold in one resolution; the change to apply, or None (nothing to change)."""
        now = self._clock()
        self.last_attempt = now
        if res.error is not None or not res.endpoints:
            why = res.error if res.error is not None else "empty answer (no addresses)"
            self.failures += 1
            keep = f"keeping the last {len(self.endpoints)} member(s)"
            level = logging.DEBUG if why == self.last_error else logging.WARNING
            log.log(level, "discovery %s %s: %s; %s", self.provider, self.target, why, keep)
            self.last_error = why
            return None
        if self.last_error is not None:
            log.info("discovery %s %s: resolving again", self.provider, self.target)
        self.last_error = None
        self.last_success = now
        self.resolutions += 1
        self.resolved = True
        new = _dedupe(res.endpoints)
        self.metadata = {e: res.metadata[e] for e in new if e in res.metadata}
        added, removed = diff_members(self.endpoints, new)
        if not added and not removed and new == self.endpoints:
            return None
        self.endpoints = new
        if not added and not removed:
            return None  # only the order changed: nothing to apply
        self.changes += 1
        log.info(
            "discovery %s %s: adding %s, removing %s",
            self.provider,
            self.target,
            list(added),
            list(removed),
        )
        return MemberChange(new, added, removed)

    def status(self) -> DiscoveryStatus:
        """An immutable :class:`DiscoveryStatus`."""
        return DiscoveryStatus(
            provider=self.provider,
            target=self.target,
            endpoints=self.endpoints,
            resolved=self.resolved,
            last_error=self.last_error,
            last_success=self.last_success,
            last_attempt=self.last_attempt,
            resolutions=self.resolutions,
            failures=self.failures,
            changes=self.changes,
            detail=dict(self.detail),
        )


# --------------------------------------------------------------------------- schedule

#: gRPC's connection backoff (doc/connection-backoff.md), used after failed resolutions
BACKOFF_INITIAL = 1.0
BACKOFF_MULTIPLIER = 1.6


class ResolveSchedule:
    """When a polling provider resolves next.

    * every ``period`` seconds after the last resolution started (or, with a TTL from the
      answer, when the TTL runs out, if that is sooner);
    * never sooner than ``min_interval`` after the last one started, whatever asks;
    * :meth:`request` (a member failed) moves the next one to now, within that minimum;
    * after a failure: gRPC's backoff (1 s, x1.6 each time, at most ``period``), within
      that minimum too.

    The first resolution is due at once.
    """

    def __init__(
        self,
        period: float,
        min_interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if period <= 0 or min_interval < 0 or min_interval > period:
            raise ValueError(
                f"bad schedule: period {period!r}, min_interval {min_interval!r} "
                "(need 0 <= min_interval <= period, period > 0)"
            )
        self.period = period
        self.min_interval = min_interval
        self._clock = clock
        self._started: float | None = None
        self._due = clock()
        self._backoff = BACKOFF_INITIAL
        self._running = False
        self.early_requests = 0

    @property
    def due_at(self) -> float:
        """Clock time the next resolution is due (while one runs: after it ends)."""
        return math.inf if self._running else self._due

    def wait_time(self) -> float:
        """Seconds until the next resolution is due (0: now; inf while one runs)."""
        return max(0.0, self.due_at - self._clock())

    def start(self) -> None:
        """A resolution begins now."""
        self._running = True
        self._started = self._clock()

    def _floor(self) -> float:
        return -math.inf if self._started is None else self._started + self.min_interval

    def finished(self, ok: bool, ttl: float | None = None) -> float:
        """The resolution ended (``ok``: a good answer; ``ttl``: its TTL). Returns the time
        the next one is due."""
        self._running = False
        start = self._started if self._started is not None else self._clock()
        if ok:
            self._backoff = BACKOFF_INITIAL
            wait = self.period
            if ttl is not None and ttl >= 0:
                wait = min(wait, ttl)
        else:
            wait = min(self._backoff, self.period)
            self._backoff = min(self._backoff * BACKOFF_MULTIPLIER, self.period)
        self._due = max(start + wait, self._floor())
        return self._due

    def request(self) -> bool:
        """Ask for an early resolution (a member failed): due now, or at the minimum
        interval after the last one. True when that moved the next one earlier."""
        target = max(self._clock(), self._floor())
        if self._running or target >= self._due:
            return False
        self._due = target
        self.early_requests += 1
        return True


# --------------------------------------------------------------------------- etcd naming


def naming_prefix(target: str) -> bytes:
    """The key prefix of a naming target: ``<target>/`` (with the slash, unlike the Go
    reader's; etcd issue 15022)."""
    t = target.rstrip("/")
    if not t:
        raise ValueError(f"bad etcd naming target {target!r}: empty")
    return (t + "/").encode()


def prefix_range_end(prefix: bytes) -> bytes:
    """etcd's range end for every key starting with ``prefix`` (clientv3's
    ``GetPrefixRangeEnd``: the prefix with its last byte below 0xff incremented)."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"  # every key


@dataclass(frozen=True, slots=True)
class NamingEntry:
    """One registration: its address (an eagle endpoint) and its metadata (any JSON)."""

    addr: str
    metadata: Any = None


def parse_naming_value(value: bytes) -> NamingEntry:
    """Parse one value in etcd's endpoints-manager format (``internal.Update``:
    ``{"Op":0,"Addr":"host:port","Metadata":...}``). ValueError saying why otherwise
    (not JSON, not an object, no usable ``Addr``)."""
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"not a JSON object: {doc!r}")
    addr = doc.get("Addr")
    if not isinstance(addr, str) or not addr.strip():
        raise ValueError(f"no address (Addr is {addr!r})")
    addr = addr.strip()
    if "://" in addr:
        addr = addr.split("://", 1)[1]
    try:
        parse_endpoint(addr)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    return NamingEntry(addr, doc.get("Metadata"))


def naming_value(addr: str, metadata: Any = None) -> bytes:
    """The value a registration writes: Go's ``json.Marshal(internal.Update{Op: Add, ...})``
    without the ``Metadata`` field when there is none, e.g. ``{"Op":0,"Addr":"h:1"}``."""
    doc: dict[str, Any] = {"Op": 0, "Addr": addr}
    if metadata is not None:
        doc["Metadata"] = metadata
    return json.dumps(doc, separators=(",", ":")).encode()


class NamingTable:
    """The registrations under one naming target, rebuilt from a Range and kept up to date
    from Watch events.

    The member set is the distinct addresses, in key order; two keys with the same
    address are one member (it leaves when the last of its keys does). Values that cannot
    be parsed are skipped with one WARNING per key and revision.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.prefix = naming_prefix(target)
        self.range_end = prefix_range_end(self.prefix)
        self.entries: dict[bytes, NamingEntry] = {}
        #: the store revision the table reflects (header revision of the Range, then the
        #: mod revision of the last event)
        self.revision = 0
        self.skipped = 0
        self._warned: set[tuple[bytes, int]] = set()

    def _parse(self, key: bytes, value: bytes, mod_revision: int) -> NamingEntry | None:
        if not key.startswith(self.prefix):
            return None
        try:
            return parse_naming_value(value)
        except ValueError as exc:
            mark = (key, mod_revision)
            if mark not in self._warned:
                self._warned.add(mark)
                self.skipped += 1
                log.warning(
                    "etcd naming %s: skipping key %s (revision %d): %s",
                    self.target,
                    key.decode("utf-8", "replace"),
                    mod_revision,
                    exc,
                )
            return None

    def reset(self, kvs: Iterable[tuple[bytes, bytes, int]], revision: int) -> None:
        """Replace everything with a Range's ``(key, value, mod_revision)`` triples read at
        store ``revision``."""
        entries: dict[bytes, NamingEntry] = {}
        for key, value, mod in kvs:
            entry = self._parse(key, value, mod)
            if entry is not None:
                entries[key] = entry
        self.entries = entries
        self.revision = revision

    def apply(self, events: Iterable[tuple[bool, bytes, bytes, int]]) -> None:
        """Apply watch events ``(is_put, key, value, mod_revision)`` in order."""
        for is_put, key, value, mod in events:
            if not key.startswith(self.prefix):
                continue
            if is_put:
                entry = self._parse(key, value, mod)
                if entry is None:
                    self.entries.pop(key, None)  # an unreadable value replaces a good one
                else:
                    self.entries[key] = entry
            else:
                self.entries.pop(key, None)
            self.revision = max(self.revision, mod)

    def resolution(self) -> Resolution:
        """The member set as a :class:`Resolution` (metadata: the first key's per address)."""
        endpoints: list[str] = []
        metadata: dict[str, Any] = {}
        for key in sorted(self.entries):
            entry = self.entries[key]
            if entry.addr not in metadata:
                endpoints.append(entry.addr)
                metadata[entry.addr] = entry.metadata
        return Resolution(tuple(endpoints), metadata)
