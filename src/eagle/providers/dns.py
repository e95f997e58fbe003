"""The ``dns`` discovery provider: a DNS name's A and AAAA records are the members.

``eagle.insecure_channel("dns:///orders.svc.cluster.local:50051")`` (gRPC's own target
syntax, https://github.com/grpc/grpc/blob/master/doc/naming.md; the port defaults to
443 as in gRPC) resolves the name and makes each address a member on that port, the way
a headless Kubernetes service is meant to be used. The name is re-resolved every
``discovery.period`` and early when a member fails, never more often than
``discovery.min_interval`` (both 30 s by default, gRPC's minimum between resolutions).
A failed resolution or an empty answer keeps the last good set.

Two resolvers:

* the **system resolver** (default): ``socket.getaddrinfo`` in the discovery runner's own
  thread (sync channels) or ``loop.getaddrinfo`` (asyncio). It gives no TTLs.
* **dnspython** (``pip install eagle-grpc[dns]``), used when ``discovery.dns.nameservers``
  or a target authority (``dns://10.0.0.53:53/name:port``) names DNS servers: A and AAAA
  queries to those servers with ``discovery.dns.timeout``, the answers' TTL bounding the
  next resolution (``discovery.dns.use_ttl``), and SRV records with
  ``discovery.dns.srv`` (the name is then ``_service._proto.name``, the records give the
  hosts and ports).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from typing import Any

from ..config import DiscoveryConfig
from ..core.discovery import (
    DEFAULT_DNS_PORT,
    DiscoveryTarget,
    Resolution,
    format_host_port,
    parse_host_port,
    parse_nameserver,
)
from .discovery import DiscoveryProvider, register_discovery_provider

__all__ = ["DnsProvider", "dnspython_available"]

_FAMILIES = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
_RDTYPES = {"any": ("A", "AAAA"), "ipv4": ("A",), "ipv6": ("AAAA",)}


def dnspython_available() -> bool:
    """True when the ``dnspython`` package can be imported."""
    try:
        import dns.resolver  # noqa: F401
    except ImportError:
        return False
    return True


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _sorted_unique(addrs: Sequence[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for a in addrs:
        seen.setdefault(a, None)
    return tuple(seen)


class DnsProvider(DiscoveryProvider):
    """Members from a DNS name's A/AAAA (or SRV) records."""

    name = "dns"
    polling = True

    def __init__(self, config: DiscoveryConfig, target: DiscoveryTarget) -> None:
        super().__init__(config, target)
        try:
            self.host, self.port = parse_host_port(target.name, DEFAULT_DNS_PORT)
        except ValueError as exc:
            raise ValueError(f"discovery target {target.raw!r}: {exc}") from None
        cfg = config.dns
        self.family = cfg.families
        servers = [target.authority] if target.authority else list(cfg.nameservers)
        try:
            self.nameservers = [parse_nameserver(s) for s in servers]
        except ValueError as exc:
            key = f"target {target.raw!r}" if target.authority else "discovery.dns.nameservers"
            raise ValueError(f"{key}: {exc}") from None
        self.srv = cfg.srv
        self.literal = _literal(self.host)
        self.use_dnspython = bool(self.nameservers) or self.srv
        if self.use_dnspython and not dnspython_available():
            key = "discovery.dns.srv" if self.srv else "discovery.dns.nameservers"
            raise ValueError(f"{key}: needs the dnspython package (pip install 'eagle-grpc[dns]')")

    def describe(self) -> str:
        """``host:port`` and which resolver."""
        via = (
            "dnspython@" + ",".join(format_host_port(h, p) for h, p in self.nameservers)
            if self.nameservers
            else "system resolver"
        )
        return f"{self.host}:{self.port} ({via})"

    def authority(self) -> str | None:
        """The name resolved (not for IP literals or SRV names): what TLS verifies on a
        secure channel, as gRPC does for a ``dns:`` target."""
        if self.literal is not None or self.srv:
            return None
        return self.host

    # ------------------------------------------------------------- system resolver
    def _from_addrinfo(self, infos: Sequence[Any]) -> Resolution:
        addrs = []
        for family, _type, _proto, _canon, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                addrs.append(format_host_port(str(sockaddr[0]).split("%")[0], self.port))
        if not addrs:
            return Resolution.failed(f"{self.host}: no A/AAAA addresses")
        return Resolution(_sorted_unique(addrs))

    def resolve(self) -> Resolution:
        """Resolve once (blocking; the sync runner calls it from its own thread)."""
        if self.literal is not None:
            return Resolution((format_host_port(self.literal, self.port),))
        if self.use_dnspython:
            return self._resolve_dnspython()
        try:
            infos = socket.getaddrinfo(
                self.host, self.port, _FAMILIES[self.family], socket.SOCK_STREAM
            )
        except OSError as exc:
            return Resolution.failed(f"{self.host}: {exc}")
        return self._from_addrinfo(infos)

    async def resolve_async(self) -> Resolution:
        """Resolve once in the running loop (``loop.getaddrinfo`` or dnspython's asyncio
        resolver), bounded by ``discovery.dns.timeout``."""
        if self.literal is not None:
            return Resolution((format_host_port(self.literal, self.port),))
        if self.use_dnspython:
            return await self._resolve_dnspython_async()
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(
                    self.host, self.port, family=_FAMILIES[self.family], type=socket.SOCK_STREAM
                ),
                self.config.dns.timeout,
            )
        except TimeoutError:
            return Resolution.failed(f"{self.host}: no answer within {self.config.dns.timeout} s")
        except OSError as exc:
            return Resolution.failed(f"{self.host}: {exc}")
        return self._from_addrinfo(infos)

    # ------------------------------------------------------------------- dnspython
    def _resolver(self, module: Any) -> Any:
        import dns.nameserver

        r = module.Resolver(configure=not self.nameservers)
        if self.nameservers:
            r.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in self.nameservers]
        r.lifetime = self.config.dns.timeout
        r.timeout = self.config.dns.timeout
        r.cache = None
        return r

    def _ttl(self, ttls: list[int]) -> float | None:
        return float(min(ttls)) if ttls and self.config.dns.use_ttl else None

    def _resolve_dnspython(self) -> Resolution:
        import dns.exception
        import dns.resolver

        r = self._resolver(dns.resolver)
        targets: list[_Target]
        try:
            targets = (
                _srv_targets(r.resolve(self.host, "SRV", search=False))
                if self.srv
                else [(self.host, self.port, None)]
            )
        except dns.exception.DNSException as exc:
            return Resolution.failed(f"SRV {self.host}: {_dns_error(exc)}")
        answers: list[tuple[_Query, Any]] = []
        for q in self._queries(targets):
            try:
                answers.append((q, r.resolve(q[1], q[0], search=False)))
            except dns.exception.DNSException as exc:
                answers.append((q, exc))
        return self._fold(targets, answers)

    async def _resolve_dnspython_async(self) -> Resolution:
        import dns.asyncresolver
        import dns.exception
        import dns.resolver

        r = self._resolver(dns.asyncresolver)
        targets: list[_Target]
        try:
            targets = (
                _srv_targets(await r.resolve(self.host, "SRV", search=False))
                if self.srv
                else [(self.host, self.port, None)]
            )
        except dns.exception.DNSException as exc:
            return Resolution.failed(f"SRV {self.host}: {_dns_error(exc)}")
        answers: list[tuple[_Query, Any]] = []
        for q in self._queries(targets):
            try:
                answers.append((q, await r.resolve(q[1], q[0], search=False)))
            except dns.exception.DNSException as exc:
                answers.append((q, exc))
        return self._fold(targets, answers)

    def _queries(self, targets: list[_Target]) -> list[_Query]:
        """The address lookups for ``targets``: (record type, host, port)."""
        return [(rdtype, h, p) for h, p, _ in targets for rdtype in _RDTYPES[self.family]]

    def _fold(self, targets: list[_Target], answers: list[tuple[_Query, Any]]) -> Resolution:
        """The resolution from each lookup's answer (or the exception it raised). One
        family failing is fine while the other answers (gRPC's c-ares resolver uses
        whichever of A and AAAA came back); the shortest TTL seen counts."""
        addrs: list[str] = []
        ttls: list[int] = [t for *_, t in targets if t is not None]
        errors: list[str] = []
        for (rdtype, host, port), ans in answers:
            if isinstance(ans, BaseException):
                errors.append(f"{rdtype} {host}: {_dns_error(ans)}")
                continue
            ttls.append(ans.rrset.ttl)
            addrs += [format_host_port(rd.address, port) for rd in ans]
        if not addrs:
            return Resolution.failed("; ".join(errors) or f"{self.host}: no addresses")
        return Resolution(_sorted_unique(addrs), ttl=self._ttl(ttls))


#: an SRV target or the name itself: (host, port, the SRV record's TTL or None)
_Target = tuple[str, int, "int | None"]
#: one address lookup: (record type, host, port)
_Query = tuple[str, str, int]


def _srv_targets(ans: Any) -> list[_Target]:
    """The (host, port, TTL) targets of an SRV answer."""
    ttl = ans.rrset.ttl
    return [(str(rd.target).rstrip("."), int(rd.port), ttl) for rd in ans]


def _dns_error(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


register_discovery_provider("dns", DnsProvider)
