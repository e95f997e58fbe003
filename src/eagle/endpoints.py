"""Parse and validate endpoint lists.

Accepted forms: ``host:port``, ``[v6]:port``, ``unix:/path`` (also ``unix:///path``),
given as a comma-separated string or a sequence of strings. Host names are fine.
This module imports nothing else of eagle.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Endpoint", "parse_endpoint", "parse_endpoints"]

_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One member address.

    Attributes:
        raw: the endpoint exactly as the user gave it (stripped); status tables are keyed by it.
        target: the grpc target string for this member's sub-channel.
        host: host name or IP literal (without brackets); the socket path for ``unix:``.
        port: TCP port, or 0 for a unix socket.
    """

    raw: str
    target: str
    host: str
    port: int

    @property
    def is_unix(self) -> bool:
        """True for a unix domain socket endpoint."""
        return self.target.startswith("unix:")

    @property
    def ip_literal(self) -> bool:
        """True when the host is an IP literal (grpcio's multi-address targets need that)."""
        if self.is_unix:
            return False
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        return self.raw


def _bad(raw: str, why: str) -> ValueError:
    return ValueError(f"bad endpoint {raw!r}: {why}")


def _parse_port(raw: str, text: str) -> int:
    if not text.isdigit():
        raise _bad(raw, f"port {text!r} is not a number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise _bad(raw, f"port {port} is out of range 1..65535")
    return port


def parse_endpoint(text: str) -> Endpoint:
    """Parse one endpoint; raise ``ValueError`` naming it when it is malformed."""
    if not isinstance(text, str):
        raise ValueError(f"bad endpoint {text!r}: expected a string, got {type(text).__name__}")
    raw = text.strip()
    if not raw:
        raise ValueError("bad endpoint '': empty endpoint")
    if any(c.isspace() for c in raw):
        raise _bad(raw, "contains white space")
    if raw.startswith("unix:"):
        path = raw[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path.startswith("/") and not path.startswith("@"):
            raise _bad(raw, "unix socket path must be absolute (unix:/path)")
        if len(path) < 2:
            raise _bad(raw, "empty unix socket path")
        return Endpoint(raw=raw, target=f"unix:{path}", host=path, port=0)
    if "://" in raw:
        raise _bad(raw, "use host:port, [v6]:port or unix:/path, not a URL")
    if raw.startswith("["):
        close = raw.find("]")
        if close < 0:
            raise _bad(raw, "missing ']' after IPv6 address")
        host = raw[1:close]
        rest = raw[close + 1 :]
        if not rest.startswith(":"):
            raise _bad(raw, "missing ':port' after ']'")
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise _bad(raw, f"{host!r} is not an IPv6 address") from None
        port = _parse_port(raw, rest[1:])
        return Endpoint(raw=raw, target=f"[{host}]:{port}", host=host, port=port)
    if raw.count(":") != 1:
        if raw.count(":") == 0:
            raise _bad(raw, "missing ':port'")
        raise _bad(raw, "IPv6 addresses must be written as [addr]:port")
    host, port_text = raw.split(":")
    if not host:
        raise _bad(raw, "empty host")
    port = _parse_port(raw, port_text)
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        if host.replace(".", "").isdigit():
            raise _bad(raw, f"{host!r} is not a valid IPv4 address") from None
        labels = host.rstrip(".").split(".")
        if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
            raise _bad(raw, f"{host!r} is not a valid host name") from None
    return Endpoint(raw=raw, target=f"{host}:{port}", host=host, port=port)


def parse_endpoints(spec: str | Sequence[str]) -> tuple[Endpoint, ...]:
    """Parse a comma-separated string or a sequence of endpoints.

    Raises ``ValueError`` naming the bad item for an empty list, a malformed endpoint or a
    duplicate (two spellings of the same target count as duplicates).
    """
    if isinstance(spec, str):
        items: list[str] = spec.split(",")
        if not spec.strip():
            raise ValueError("no endpoints given: the endpoint list is empty")
    elif isinstance(spec, Sequence):
        items = list(spec)
        if not items:
            raise ValueError("no endpoints given: the endpoint list is empty")
    else:
        raise ValueError(
            f"endpoints must be a comma-separated string or a sequence, got {type(spec).__name__}"
        )
    parsed: list[Endpoint] = []
    seen: dict[str, str] = {}
    for item in items:
        ep = parse_endpoint(item)
        key = ep.target.lower()
        if key in seen:
            raise ValueError(f"duplicate endpoint {ep.raw!r} (same as {seen[key]!r})")
        seen[key] = ep.raw
        parsed.append(ep)
    return tuple(parsed)
