"""Passive outlier detection: eject members whose real calls fail (gRPC A50, Envoy).

Two rules, fed by real call outcomes:

* consecutive failures (default 5, Finagle): ejects at once, which small clusters need;
* failure percentage (A50: 85 %, at least 50 requests, at least 5 hosts with that many):
  evaluated every ``interval``.

An ejection lasts ``base_ejection_time x times ejected``, capped at
``max(base, max_ejection_time)``. At most ``max_ejection_percent`` of members are ejected
at once, but one is always allowed. ``times ejected`` decreases by one each interval a
member spends un-ejected (A50).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ..config import OutlierConfig

__all__ = ["Ejection", "OutlierDetector"]


@dataclass(frozen=True, slots=True)
class Ejection:
    """An ejection decided by the detector."""

    endpoint: str
    until: float
    times: int
    reason: str


class _Counters:
    __slots__ = (
        "consecutive",
        "down_while_ejected",
        "ejected_until",
        "failures",
        "successes",
        "times",
    )

    def __init__(self) -> None:
        self.consecutive = 0
        self.successes = 0
        self.failures = 0
        self.times = 0
        self.ejected_until: float | None = None
        #: a health probe failed (or the connection did) since the ejection began
        self.down_while_ejected = False


class OutlierDetector:
    """Ejection math. Not thread-safe: the balancer calls it under its lock."""

    def __init__(self, cfg: OutlierConfig, endpoints: Iterable[str], now: float) -> None:
        self.cfg = cfg
        self._failure_codes = frozenset(cfg.failure_codes)
        self._c: dict[str, _Counters] = {ep: _Counters() for ep in endpoints}
        self._next_sweep = now + cfg.interval
        # kept incrementally so that the per-wake-up questions cost O(ejected), not
        # O(members): a channel over thousands of members asks them on every tick
        self._ejected: set[str] = set()  # members with an ejection (maybe just over)
        self._marked: set[str] = set()  # members with ``times`` > 0 (they decay)
        self._counted = False  # a call outcome was counted since the last sweep

    def set_endpoints(self, endpoints: Iterable[str]) -> None:
        """Follow a change of membership, keeping counters of members that stay."""
        keep = list(endpoints)
        self._c = {ep: self._c.get(ep) or _Counters() for ep in keep}
        self._ejected &= self._c.keys()
        self._marked &= self._c.keys()

    def is_failure(self, code: str) -> bool:
        """Whether a status code counts against a member."""
        return code in self._failure_codes

    def ejected(self, endpoint: str, now: float) -> bool:
        """True while ``endpoint`` is ejected."""
        c = self._c.get(endpoint)
        return c is not None and c.ejected_until is not None and now < c.ejected_until

    def ejected_until(self, endpoint: str) -> float | None:
        """The end of the current ejection of ``endpoint``, if any."""
        c = self._c.get(endpoint)
        return None if c is None else c.ejected_until

    def times_ejected(self, endpoint: str) -> int:
        """How many times ``endpoint`` was ejected (decays by one per clean interval)."""
        c = self._c.get(endpoint)
        return 0 if c is None else c.times

    def has_streak(self, endpoint: str) -> bool:
        """True when ``endpoint`` has failures in a row pending (a success must reset them)."""
        c = self._c.get(endpoint)
        return c is not None and c.consecutive > 0

    def _cap(self) -> int:
        n = len(self._c)
        return max(1, math.floor(self.cfg.max_ejection_percent / 100.0 * n))

    def _count_ejected(self, now: float) -> int:
        return sum(1 for ep in self._ejected if now < (self._c[ep].ejected_until or now))

    def _eject(self, ep: str, c: _Counters, now: float, reason: str) -> Ejection | None:
        if not self.cfg.enabled or self._count_ejected(now) >= self._cap():
            return None
        c.times += 1
        span = min(
            self.cfg.base_ejection_time * c.times,
            max(self.cfg.base_ejection_time, self.cfg.max_ejection_time),
        )
        c.ejected_until = now + span
        self._ejected.add(ep)
        self._marked.add(ep)
        c.consecutive = 0
        c.down_while_ejected = False
        return Ejection(ep, c.ejected_until, c.times, reason)

    def next_event(self) -> float | None:
        """When the detector next has time-driven work: an ejection ends, or the periodic
        rules run (only while some member has calls counted or an ejection)."""
        ends = [u for u in (self._c[ep].ejected_until for ep in self._ejected) if u is not None]
        if ends or self._counted or self._marked:
            ends.append(self._next_sweep)
        return min(ends) if ends else None

    def on_health(self, endpoint: str, serving: bool, now: float) -> bool:
        """Fold in a health signal (a probe, or a connection failure) for ``endpoint``;
        True when it ends the member's ejection.

        Envoy un-ejects a host that passes an active health check
        (``successful_active_health_check_uneject_host``, default true; see Envoy's
        ``OutlierDetection`` in ``config/cluster/v3/outlier_detection.proto``) and clears its
        counters. eagle probes far more often than Envoy's usual health-check interval, so
        by default (``uneject_on_probe: recovered``) a successful probe ends an ejection
        only after a probe failed during it: the member went down and came back (a crash
        and restart, a freeze and resume). ``always`` is Envoy's literal rule; it also
        ends ejections of members that pass probes but fail calls, within one interval.
        """
        c = self._c.get(endpoint)
        if c is None or c.ejected_until is None or now >= c.ejected_until:
            return False
        if not serving:
            c.down_while_ejected = True
            return False
        mode = self.cfg.uneject_on_probe
        if mode == "never" or (mode == "recovered" and not c.down_while_ejected):
            return False
        c.ejected_until = None
        self._ejected.discard(endpoint)
        c.consecutive = c.successes = c.failures = 0
        c.down_while_ejected = False
        return True

    def record(self, endpoint: str, code: str, now: float) -> Ejection | None:
        """Fold in one call outcome; returns an ejection when the consecutive rule fires."""
        c = self._c.get(endpoint)
        if c is None:
            return None
        self._counted = True
        if code in self._failure_codes:
            c.failures += 1
            c.consecutive += 1
            if c.consecutive >= self.cfg.consecutive_failures and not self.ejected(endpoint, now):
                return self._eject(
                    endpoint, c, now, f"outlier: {c.consecutive} consecutive failures ({code})"
                )
        else:
            c.successes += 1
            c.consecutive = 0
        return None

    def sweep(self, now: float) -> tuple[list[Ejection], list[str]]:
        """Run the periodic rules when an interval has passed.

        Returns (new ejections, members whose ejection just ended).
        """
        ended: list[str] = []
        for ep in list(self._ejected):
            c = self._c[ep]
            if c.ejected_until is None or now >= c.ejected_until:
                if c.ejected_until is not None:
                    ended.append(ep)
                c.ejected_until = None
                self._ejected.discard(ep)
        if now < self._next_sweep:
            return [], ended
        self._next_sweep = now + self.cfg.interval
        cfg = self.cfg
        new: list[Ejection] = []
        busy = [
            (ep, c) for ep, c in self._c.items() if c.successes + c.failures >= cfg.minimum_requests
        ]
        if len(busy) >= cfg.minimum_hosts:
            for ep, c in busy:
                total = c.successes + c.failures
                pct = 100.0 * c.failures / total
                if pct >= cfg.failure_percentage and not self.ejected(ep, now):
                    ej = self._eject(ep, c, now, f"outlier: {pct:.0f}% of {total} calls failed")
                    if ej is not None:
                        new.append(ej)
        just_ended = set(ended)
        if self._counted:
            self._counted = False
            for c in self._c.values():
                c.successes = c.failures = 0
        for ep in list(self._marked):
            c = self._c[ep]
            # A50: a member that spent the interval un-ejected is forgiven one ejection
            if c.ejected_until is None and c.times > 0 and ep not in just_ended:
                c.times -= 1
            if c.times <= 0:
                self._marked.discard(ep)
        return new, ended
