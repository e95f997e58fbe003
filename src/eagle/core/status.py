"""Endpoint states, per-endpoint status records and immutable snapshots of them."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .discovery import DiscoveryStatus

__all__ = ["EndpointStatus", "State", "StatusSnapshot", "Transition"]


class State(enum.Enum):
    """What eagle currently believes about one member.

    UNKNOWN: not probed yet (still a candidate, so a new channel is usable at once).
    SERVING: healthy. NOT_SERVING: health service says NOT_SERVING/SERVICE_UNKNOWN (drain).
    UNREACHABLE: probes fail to connect or miss their deadline (crash, hang).
    PARTITIONED: reachable and maybe SERVING, but cut off from its cluster (membership).
    EJECTED: taken out by passive outlier detection until its ejection time is up.
    """

    UNKNOWN = "UNKNOWN"
    SERVING = "SERVING"
    NOT_SERVING = "NOT_SERVING"
    UNREACHABLE = "UNREACHABLE"
    PARTITIONED = "PARTITIONED"
    EJECTED = "EJECTED"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """An immutable record of one member's status.

    Attributes:
        endpoint: the endpoint as given by the user.
        state: the effective state (see :class:`State`).
        since: clock time (``time.monotonic()``) the state was entered.
        health: the state the health probe alone gives (before ejection / membership).
        last_probe: clock time of the last finished probe, or None.
        last_latency: latency of the last finished probe in seconds, or None.
        consecutive_failures: probe failures in a row.
        last_error: text of the last probe or membership error, or None.
        ejected_until: clock time an ejection ends, or None.
        times_ejected: how many times outlier detection has ejected it.
        leader: the leader this member names (membership on), or None.
        term: the member's term (membership on), or None.
        member_id: the member's own id (membership on), or None.
        verdict: the membership verdict text, or None.
        connection_down: True when a connection to the member failed or was lost (refused,
            reset, grpc's TRANSIENT_FAILURE) and no probe has succeeded since: no call can
            reach it.
        subset: with subsetting on, whether the member is in this client's subset and
            why (e.g. ``"random subset rank 3 of 20"``, ``"replaces 10.0.0.3:50051
            (UNREACHABLE)"``, ``"outside subset"``); None when subsetting is off.
        discovery: the metadata discovery found with the member (etcd naming's
            ``Metadata``), or None.
    """

    endpoint: str
    state: State = State.UNKNOWN
    since: float = 0.0
    health: State = State.UNKNOWN
    last_probe: float | None = None
    last_latency: float | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    ejected_until: float | None = None
    times_ejected: int = 0
    leader: str | None = None
    term: int | None = None
    member_id: str | None = None
    verdict: str | None = None
    connection_down: bool = False
    subset: str | None = None
    discovery: Any = None

    @property
    def serving(self) -> bool:
        """True when the member is in rotation (SERVING)."""
        return self.state is State.SERVING


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of effective state, as reported to ``on_change`` callbacks."""

    endpoint: str
    old: State
    new: State
    at: float
    reason: str

    def __str__(self) -> str:
        return f"{self.endpoint}: {self.old} -> {self.new} ({self.reason})"


class StatusSnapshot(Mapping[str, EndpointStatus]):
    """An immutable mapping of endpoint (as given) to :class:`EndpointStatus`.

    ``version`` increases whenever any state changes; pickers are rebuilt from a
    snapshot only when it does. ``discovery`` is what the channel's discovery provider
    knows (:class:`~eagle.core.discovery.DiscoveryStatus`), None without discovery.
    """

    __slots__ = ("_items", "discovery", "version")

    def __init__(
        self,
        items: Mapping[str, EndpointStatus],
        version: int,
        discovery: DiscoveryStatus | None = None,
    ) -> None:
        self._items = dict(items)
        self.version = version
        self.discovery = discovery

    def with_discovery(
        self, discovery: DiscoveryStatus, metadata: Mapping[str, Any]
    ) -> StatusSnapshot:
        """A copy carrying ``discovery`` and each member's discovery ``metadata``."""
        items = {
            k: replace(st, discovery=metadata[k]) if metadata.get(k) is not None else st
            for k, st in self._items.items()
        }
        return StatusSnapshot(items, self.version, discovery)

    def __getitem__(self, key: str) -> EndpointStatus:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        body = ", ".join(f"{k}: {v.state}" for k, v in self._items.items())
        return f"StatusSnapshot(v{self.version}, {{{body}}})"

    def describe(self) -> str:
        """One line naming each member and its state (used in error details)."""
        parts = []
        for key, st in self._items.items():
            extra = f": {st.last_error}" if st.last_error and st.state is not State.SERVING else ""
            parts.append(f"{key} {st.state}{extra}")
        return "; ".join(parts)
