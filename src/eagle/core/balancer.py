"""The balancer ties the sans-IO core together: status table, probes, picking, outcomes.

Both channel shells (sync and asyncio) own one :class:`Balancer` and only do I/O around
it: they ask it which members to probe, report probe results, ask for a member per
attempt, report the outcome, and ask whether to retry.

State is mutated under one lock; ``on_change`` callbacks run after it is released.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass

from ..config import Config
from ..endpoints import Endpoint
from .calls import AttemptFailure
from .health import HealthRecord, ProbeOutcome, ProbeResult
from .membership import MemberView, Verdict, check_view, judge_views, judging_config
from .observers import Observer, ObserverSet
from .outlier import OutlierDetector
from .pickers import (
    CallInfo,
    CallOutcome,
    LoadTracker,
    PickContext,
    Picker,
    candidates_for,
    get_picker,
)
from .retry import AttemptPlan, Delivery, GiveUp, RetryBudget, is_idempotent
from .status import EndpointStatus, State, StatusSnapshot, Transition
from .subset import UNUSABLE_STATES, Subset, SubsetPlan

__all__ = ["Balancer", "Stats"]

log = logging.getLogger("eagle.balancer")

#: the least deadline of a member's first probe, which also sets up its connection
FIRST_PROBE_TIMEOUT = 1.0

#: channels with at most this many members probe them together (one wake-up per
#: interval); larger ones spread their probes over the interval
ALIGNED_MEMBERS = 16

#: a larger channel's spread probes that fall due within this much of each other go out
#: together: at most ~50 prober wake-ups a second, however many members (each wake-up has
#: a fixed cost; a probe sent 20 ms early changes nothing)
SPREAD_BATCH = 0.02

#: a channel that made no call for this long probes at ``health.no_traffic_interval``
NO_TRAFFIC_AFTER = 10.0

#: what a member cut off from its cluster answers calls with (etcd: "etcdserver: no leader")
_NO_LEADER = "no leader"

Listener = Callable[[Transition], None]


@dataclass
class Stats:
    """Counters the balancer keeps (read by metrics and benchmarks)."""

    picks: int = 0
    attempts: int = 0
    retries: int = 0
    budget_refusals: int = 0
    ejections: int = 0
    no_member: int = 0
    stream_moves: int = 0


class _Member:
    __slots__ = (
        "conn_down",
        "due",
        "health",
        "key",
        "probes_sent",
        "probing",
        "since",
        "state",
        "status_extra",
        "view",
        "view_error",
        "watch_live",
        "watch_unsupported",
    )

    def __init__(self, key: str, health: HealthRecord, now: float) -> None:
        self.key = key
        self.health = health
        self.state = State.UNKNOWN
        self.since = now
        self.due = 0.0  # when the next probe is due (the live entry of the probe heap)
        self.conn_down = False  # what the pickers last saw of health.connection_down
        self.watch_live = False  # a Health/Watch stream to it is up (health.mode watch)
        self.watch_unsupported = False  # its server answered Watch with UNIMPLEMENTED
        self.probing = 0  # probes in flight
        self.probes_sent = 0
        self.view: MemberView | None = None
        self.view_error: str | None = None
        self.status_extra: Verdict | None = None


class Balancer:
    """One channel's view of its members and every decision made from it."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        config: Config,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.rng = rng or random.Random()
        self._lock = threading.RLock()
        self._builder = get_picker(config.policy.name)
        now = clock()
        self._members: dict[str, _Member] = {}
        self._endpoints: dict[str, Endpoint] = {}
        self._listeners: list[Listener] = []
        #: telemetry observers (see :mod:`eagle.core.observers`)
        self.observers = ObserverSet()
        self._version = 1
        self._picker: Picker | None = None
        self._picker_version = 0
        self.load = LoadTracker(config.policy.decay, clock)
        self.budget = RetryBudget(config.retry.budget, clock)
        self.stats = Stats()
        self._due: list[tuple[float, int, str]] = []
        self._seq = 0
        self._verdicts: dict[str, Verdict] = {}
        #: passive PARTITIONED verdicts from calls answered "no leader": until, reason
        self._passive: dict[str, tuple[float, str]] = {}
        self._leader: str | None = None
        self._judging = judging_config(config.membership)
        #: subsetting (None when off): only the members in use get sub-channels, probes
        #: and calls
        self._plan: SubsetPlan | None = (
            SubsetPlan(config.subset, rng=self.rng) if config.subset.mode is not None else None
        )
        self._subset: Subset | None = None
        self._in_use: frozenset[str] = frozenset()
        #: bumped when the members that want a Watch stream may have changed (the members
        #: in use, or a member found without Watch): the prober re-syncs its streams then
        self._watch_generation = 0
        #: called (outside the lock) with (added, removed) when the members in use change;
        #: the shell opens and retires their sub-channels
        self.on_subset: Callable[[list[str], list[str]], None] | None = None
        for ep in endpoints:
            self._add(ep, now)
        self.outlier = OutlierDetector(config.outlier, self._members, now)
        if self._plan is None:
            self._set_in_use(frozenset(self._members))
        else:
            self._resubset(now)
        self._track_load = False
        self._picker_done = False
        h = config.health
        self._max_inflight = max(1, math.ceil(h.timeout / h.interval - 1e-9))
        self._infos: dict[str, CallInfo] = {}
        self._retry_off = config.retry.mode == "off"
        self._idempotent_cache: dict[str, bool] = {}
        #: when the last call started (probes slow down after NO_TRAFFIC_AFTER without one)
        self._last_call = -math.inf
        nti = config.health.no_traffic_interval
        self._no_traffic = None if nti is None else max(nti, config.health.interval)
        #: health.mode watch: Watch streams, slow Checks, and Checks when calls stall
        self._watch_mode = config.health.mode == "watch"
        #: watch mode: attempts are in flight (``load`` counts them: a member whose calls
        #: stall gets a Check at once), so the prober looks for stalls every interval
        self._busy = False
        #: called (outside the lock) when time-driven work became due earlier than planned
        #: (a probe wanted at once, an ejection or a "no leader" verdict with an end): the
        #: prober re-arms its timer for :meth:`next_wakeup`
        self.on_due: Callable[[], None] | None = None
        #: discovery: True until the first resolution of a channel that started with no
        #: members (calls wait for it, as gRPC's do while the resolver has not answered)
        self.awaiting_members = False
        #: discovery: why there are no members (shown in "no member" errors)
        self.members_note: str | None = None

    # ------------------------------------------------------------------ members
    def _add(self, ep: Endpoint, now: float) -> None:
        h = self.config.health
        self._members[ep.raw] = _Member(
            ep.raw, HealthRecord(h.unhealthy_threshold, h.healthy_threshold), now
        )
        self._endpoints[ep.raw] = ep
        if self._plan is None:
            self._schedule(ep.raw, now)
        else:
            self._members[ep.raw].due = math.inf  # probed once the subset takes it in

    @property
    def in_use(self) -> frozenset[str]:
        """The members that get sub-channels, probes and calls: every member, or with
        subsetting the subset and the members it is probing to replace unusable ones."""
        return self._in_use

    @property
    def subset(self) -> Subset | None:
        """The current subset (None when subsetting is off)."""
        return self._subset

    def _resubset(self, now: float) -> tuple[list[str], list[str]]:
        """Choose the subset again (under the lock); returns the members that came into
        use and those that left it. A member leaving use is forgotten (UNKNOWN, no probe
        planned), so a state it had then cannot keep it out when it is taken in again."""
        plan = self._plan
        if plan is None:
            return [], []
        members = self._members
        unusable = {
            k: members[k].state.value
            for k in self._in_use
            if k in members and members[k].state in UNUSABLE_STATES
        }
        sub = plan.select(members.keys(), unusable)
        old_members = None if self._subset is None else self._subset.members
        self._subset = sub
        new_in = frozenset(sub.probe)
        added = [k for k in sub.probe if k not in self._in_use]
        removed = [k for k in self._in_use if k not in new_in and k in members]
        self._set_in_use(new_in)
        h = self.config.health
        for k in added:
            self._schedule(k, now)
        for k in removed:
            m = members[k]
            m.due = math.inf
            m.health = HealthRecord(h.unhealthy_threshold, h.healthy_threshold)
            m.state = State.UNKNOWN
            m.since = now
            m.probes_sent = 0
            m.view = None
            m.view_error = None
            self._verdicts.pop(k, None)
            self._passive.pop(k, None)
        if added or removed or old_members != sub.members:
            self._version += 1
        return added, removed

    def _subset_changed(self, added: list[str], removed: list[str]) -> None:
        if added or removed:
            log.info("subset: %d member(s) taken in, %d left: %s", len(added), len(removed), added)
            cb = self.on_subset
            if cb is not None:
                try:
                    cb(added, removed)
                except Exception:
                    log.exception("eagle: on_subset callback failed")
            if added:
                self._notify_due()

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The current members, in order."""
        return tuple(self._endpoints.values())

    def update_endpoints(self, endpoints: Sequence[Endpoint]) -> tuple[list[str], list[str]]:
        """Change the member set; members that stay keep their state. Returns (added, removed)."""
        now = self.clock()
        with self._lock:
            new = {ep.raw: ep for ep in endpoints}
            removed = [k for k in self._members if k not in new]
            added = [k for k in new if k not in self._members]
            for k in removed:
                del self._members[k]
                del self._endpoints[k]
                self._verdicts.pop(k, None)
                self._passive.pop(k, None)
            for k in added:
                self._add(new[k], now)
            # keep the given order
            self._endpoints = {k: self._endpoints[k] for k in new}
            self._members = {k: self._members[k] for k in new}
            self.outlier.set_endpoints(self._members)
            if added or removed:
                self._version += 1
            taken: list[str] = []
            left: list[str] = []
            if self._plan is None:
                self._set_in_use(frozenset(self._members))
            else:
                taken, left = self._resubset(now)
        if added:
            self._notify_due()
        self._subset_changed(taken, left)
        return added, removed

    # ---------------------------------------------------------------- listeners
    def on_change(self, callback: Listener) -> Callable[[], None]:
        """Call ``callback(transition)`` on every state change; returns an unsubscribe function."""
        with self._lock:
            self._listeners.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return unsubscribe

    def add_observer(self, observer: Observer) -> Callable[[], None]:
        """Register a telemetry :class:`~eagle.core.observers.Observer`; returns a function
        that unregisters it."""
        return self.observers.add(observer)

    def _fire(self, transitions: list[Transition]) -> None:
        if not transitions:
            return
        if self._plan is not None and any(
            (t.old in UNUSABLE_STATES) != (t.new in UNUSABLE_STATES) for t in transitions
        ):
            # a member in use became unusable (or usable again): the subset may change
            with self._lock:
                taken, left = self._resubset(self.clock())
            self._subset_changed(taken, left)
        listeners = list(self._listeners)
        observers = self.observers
        for t in transitions:
            log.info("%s", t)
            if observers.transition or observers.ejection:
                observers.emit_transition(t)
            for cb in listeners:
                try:
                    cb(t)
                except Exception:
                    log.exception("eagle on_change callback %r failed", cb)

    # -------------------------------------------------------------------- state
    @property
    def version(self) -> int:
        """Increases on every change of any member's effective state or of the member set."""
        return self._version

    def _effective(self, m: _Member, now: float) -> tuple[State, str]:
        if self.outlier.ejected(m.key, now):
            return State.EJECTED, "ejected by outlier detection"
        verdict = self._verdicts.get(m.key)
        health = m.health.state
        if verdict is not None and verdict.partitioned and health is State.SERVING:
            return State.PARTITIONED, verdict.reason
        passive = self._passive.get(m.key)
        if passive is not None and now < passive[0] and health is State.SERVING:
            return State.PARTITIONED, passive[1]
        return health, m.health.last_error or "probe"

    def _refresh(self, m: _Member, now: float, out: list[Transition], why: str = "") -> None:
        new, reason = self._effective(m, now)
        if m.health.connection_down is not m.conn_down:
            m.conn_down = m.health.connection_down
            self._version += 1  # the pickers' candidates depend on it
        if new is not m.state:
            out.append(Transition(m.key, m.state, new, now, why or reason))
            m.state = new
            m.since = now
            self._version += 1

    def snapshot(self) -> StatusSnapshot:
        """An immutable snapshot of every member's status."""
        with self._lock:
            items = {k: self._status(m) for k, m in self._members.items()}
            return StatusSnapshot(items, self._version)

    def state_of(self, key: str) -> State | None:
        """The state of one member (None when it is not a member)."""
        m = self._members.get(key)
        return None if m is None else m.state

    def states(self) -> list[State]:
        """Every member's state (cheaper than a :meth:`snapshot`)."""
        with self._lock:
            return [m.state for m in self._members.values()]

    def serving_besides(self, key: str) -> bool:
        """True when a member other than ``key`` is SERVING."""
        with self._lock:
            return any(m.state is State.SERVING for k, m in self._members.items() if k != key)

    def status_of(self, key: str) -> EndpointStatus | None:
        """The status of one member (None when it is not a member): cheaper than a whole
        :meth:`snapshot` when the channel has thousands."""
        with self._lock:
            m = self._members.get(key)
            return None if m is None else self._status(m)

    def _status(self, m: _Member) -> EndpointStatus:
        h = m.health
        v = self._verdicts.get(m.key)
        passive = self._passive.get(m.key)
        view = m.view
        return EndpointStatus(
            endpoint=m.key,
            state=m.state,
            since=m.since,
            health=h.state,
            last_probe=h.last_probe,
            last_latency=h.last_latency,
            consecutive_failures=h.consecutive_failures,
            last_error=(
                v.reason
                if v is not None and v.partitioned
                else passive[1]
                if passive is not None and m.state is State.PARTITIONED
                else h.last_error
            ),
            ejected_until=self.outlier.ejected_until(m.key),
            times_ejected=self.outlier.times_ejected(m.key),
            leader=view.leader_id if view else None,
            term=view.term if view else None,
            member_id=view.member_id if view else None,
            verdict=(
                passive[1]
                if passive is not None and m.state is State.PARTITIONED
                else v.reason
                if v is not None
                else None
            ),
            connection_down=h.connection_down,
            subset=None if self._subset is None else self._subset.placement(m.key).reason,
        )

    # ------------------------------------------------------------------- probes
    def _schedule(self, key: str, at: float) -> None:
        """Plan the next probe of ``key`` at ``at`` (an earlier plan is dropped)."""
        m = self._members.get(key)
        if m is None:
            return
        m.due = at
        self._seq += 1
        heapq.heappush(self._due, (at, self._seq, key))

    def _live_top(self) -> tuple[float, int, str] | None:
        """The earliest live entry of the probe heap (stale ones are dropped)."""
        due = self._due
        while due:
            at, _, key = due[0]
            m = self._members.get(key)
            if m is not None and m.due == at:
                return due[0]
            heapq.heappop(due)
        return None

    def next_probe_at(self) -> float | None:
        """When the next probe is due on the balancer's clock (None: no member)."""
        with self._lock:
            top = self._live_top()
            return None if top is None else top[0]

    def probe_soon(self, key: str) -> None:
        """Probe ``key`` at once rather than at its planned time."""
        with self._lock:
            m = self._members.get(key)
            if m is None or m.due <= self.clock() or key not in self._in_use:
                return
            self._schedule(key, self.clock())
        self._notify_due()

    def _traffic_resumed(self, now: float) -> None:
        """Calls start again: every member's next probe comes at most ``interval`` after
        its last one (at once for those probed longer ago)."""
        interval = self.config.health.interval
        woke = False
        with self._lock:
            for key, m in self._members.items():
                if key not in self._in_use:
                    continue
                last = m.health.last_probe
                due = now if last is None else max(now, last + interval)
                if m.due > due:
                    self._schedule(key, due)
                    woke = True
        if woke:
            self._notify_due()

    def _notify_due(self) -> None:
        cb = self.on_due
        if cb is not None:
            try:
                cb()
            except Exception:
                log.exception("eagle: on_due callback failed")

    def next_wakeup(self) -> float | None:
        """When the prober must next run (balancer clock): the next probe due, the end of an
        ejection or of a "no leader" verdict, or the outlier detector's periodic rules."""
        with self._lock:
            top = self._live_top()
            times = [top[0]] if top is not None else []
            times.extend(until for until, _ in self._passive.values())
            sweep = self.outlier.next_event()
            if sweep is not None:
                times.append(sweep)
            if self._watch_mode and self._busy:
                times.append(self.clock() + self.config.health.interval)
        return min(times) if times else None

    def due_probes(self, now: float) -> list[str]:
        """Members whose probe is due at ``now`` (counted as in flight).

        Every member is probed at once when it joins. In a small channel (up to
        :data:`ALIGNED_MEMBERS` members) the members are probed together, and probes due
        within ``jitter`` x ``interval`` of ``now`` go out with them, so the prober wakes
        about once per interval, whatever the jitter did to the members' phases; a large
        channel's second probes come at random phases of the interval instead, so its
        probes spread evenly over time rather than arriving in bursts. Each probe is
        planned ``interval`` +- jitter after the previous due time (no drift). A member has
        at most ``ceil(timeout / interval)`` probes in flight, so an interval shorter than
        the timeout still probes every interval; a late probe never piles up more.
        """
        h = self.config.health
        out: list[str] = []
        base_interval = h.interval
        interval = base_interval
        if self._no_traffic is not None and not self.active(now):
            interval = self._no_traffic
        watch_interval = max(h.watch_check_interval, base_interval)
        with self._lock:
            aligned = len(self._in_use) <= ALIGNED_MEMBERS
            horizon = now + (interval * h.jitter if aligned else SPREAD_BATCH)
            # members probed together stay together: one jitter draw and one base time
            # for all of them (the jitter still decorrelates one client from another)
            shared = interval * (1.0 + h.jitter * (2.0 * self.rng.random() - 1.0))
            base: float | None = None
            due = self._due
            # take every due member off the heap before planning any: a member planned
            # again within the horizon (a late wake-up) must wait for the next pass, not
            # be popped and planned over and over in this one
            taken: dict[str, float] = {}
            while True:
                top = self._live_top()
                if top is None or top[0] > horizon:
                    break
                at, _, key = heapq.heappop(due)
                taken.setdefault(key, at)
            for key, at in taken.items():
                m = self._members[key]
                # this member's interval: a member that is failing is checked again at
                # ``interval`` until its state settles; one whose Watch stream is up at
                # ``watch_check_interval``
                if m.health.consecutive_failures and m.health.state is not State.UNREACHABLE:
                    iv = base_interval
                elif m.watch_live:
                    iv = watch_interval
                else:
                    iv = interval
                if aligned:
                    if base is None:
                        base = at  # the earliest due time: no drift, even when early
                    nxt = base + shared * (iv / interval)
                elif m.probes_sent == 0:
                    nxt = at + iv * (0.5 + self.rng.random())
                else:
                    nxt = at + iv * (1.0 + h.jitter * (2.0 * self.rng.random() - 1.0))
                if nxt <= now:
                    nxt = now + iv * self.rng.random()
                self._schedule(key, nxt)
                if m.probing < self._max_inflight:
                    m.probing += 1
                    m.probes_sent += 1
                    out.append(key)
        return out

    def _set_in_use(self, members: frozenset[str]) -> None:
        self._in_use = members
        self._watch_generation += 1

    # -------------------------------------------------------------- watch mode
    @property
    def watch_generation(self) -> int:
        """Changes whenever :meth:`wants_watch` may answer differently."""
        return self._watch_generation

    @property
    def watch_mode(self) -> bool:
        """True with ``health.mode: watch``."""
        return self._watch_mode

    def wants_watch(self) -> list[str]:
        """Members in use that should have a ``Health/Watch`` stream (watch mode): all
        but those whose server does not implement Watch."""
        if not self._watch_mode:
            return []
        with self._lock:
            return [
                k
                for k in self._in_use
                if k in self._members and not self._members[k].watch_unsupported
            ]

    def on_watch(self, key: str, outcome: ProbeOutcome) -> None:
        """A ``Health/Watch`` message for ``key``: fresh health, like a probe answer."""
        with self._lock:
            m = self._members.get(key)
            if m is None:
                return
            m.watch_live = True
            m.probing += 1  # on_probe counts it as a probe that came back
        self.on_probe(key, outcome)

    def watch_lost(self, key: str, unsupported: bool = False) -> None:
        """The Watch stream of ``key`` ended (``unsupported``: the server answered
        UNIMPLEMENTED): the member is probed at ``interval`` again, at once."""
        with self._lock:
            m = self._members.get(key)
            if m is None:
                return
            m.watch_live = False
            if unsupported:
                m.watch_unsupported = True
                self._watch_generation += 1
        self.probe_soon(key)

    def _stalled(self, now: float) -> bool:
        """Watch mode: members with attempts in flight that answered nothing for an
        interval get a Check at once (a frozen member stalls its calls); True when some
        attempts are in flight at all (so the prober wakes again within an interval)."""
        interval = self.config.health.interval
        busy = False
        answered = self.load.answered
        for key, n in list(self.load.inflight.items()):
            if n <= 0 or key not in self._in_use:
                continue
            busy = True
            m = self._members.get(key)
            if m is None or m.probing or now - answered.get(key, now) < interval:
                continue
            last = m.health.last_probe
            if (last is None or now - last >= interval) and m.due > now:
                self._schedule(key, now)
        return busy

    def probe_skipped(self, key: str) -> None:
        """The probe of ``key`` handed out by :meth:`due_probes` was not sent (its
        sub-channel is gone): it is no longer in flight."""
        with self._lock:
            m = self._members.get(key)
            if m is not None and m.probing > 0:
                m.probing -= 1

    def probe_timeout(self, key: str) -> float:
        """The deadline for the probe of ``key`` about to be sent: ``health.timeout``, or at
        least 1 s for a member's first probe (it also sets up the connection)."""
        timeout = self.config.health.timeout
        m = self._members.get(key)
        if m is not None and m.health.last_probe is None:
            return max(timeout, FIRST_PROBE_TIMEOUT)
        return timeout

    def on_probe(self, key: str, outcome: ProbeOutcome) -> None:
        """Fold in the result of a health probe of ``key``."""
        now = self.clock()
        out: list[Transition] = []
        with self._lock:
            m = self._members.get(key)
            if m is None:
                return
            if m.probing > 0:
                m.probing -= 1
            previous = m.health.last_error
            m.health.apply(outcome, now)
            serving = outcome.result is ProbeResult.SERVING
            if self.outlier.on_health(key, serving, now):
                self._refresh(m, now, out, "ejection ended: a health probe succeeded")
            self._refresh(m, now, out)
        if outcome.error and outcome.error != previous:
            # one warning per distinct problem that took the member out, not one per probe
            level = logging.WARNING if m.health.state is not State.SERVING else logging.DEBUG
            log.log(level, "member %s: %s", key, outcome.error)
        if self.observers.probe:
            self.observers.emit_probe(key, outcome)
        self._fire(out)

    def on_view(self, key: str, view: MemberView | None, error: str | None = None) -> None:
        """Fold in a membership view (or the error fetching it) and re-judge all members."""
        now = self.clock()
        out: list[Transition] = []
        with self._lock:
            m = self._members.get(key)
            if m is None:
                return
            problem = None
            if view is not None:
                problem, trust = check_view(view, m.view)
                if not trust:
                    view, error = None, f"untrusted view: {problem}"
                    problem = None
            if problem is not None:
                log.warning("member %s: %s", key, problem)
            if error and error != m.view_error:
                log.warning("member %s: %s", key, error)  # once per distinct problem
            m.view = view
            m.view_error = error or None
            views = {k: mm.view for k, mm in self._members.items()}
            errors = {k: mm.view_error for k, mm in self._members.items() if mm.view_error}
            verdicts, leader = judge_views(views, errors, self._judging, self._verdicts)
            self._verdicts = verdicts
            fresh = verdicts.get(key)
            if view is not None and fresh is not None and not fresh.partitioned:
                self._passive.pop(key, None)  # a fresh view with a leader wins
            if leader != self._leader:
                self._leader = leader
                self._version += 1
            for mm in self._members.values():
                self._refresh(mm, now, out)
        self._fire(out)

    def membership_views(self) -> tuple[dict[str, MemberView | None], dict[str, Verdict]]:
        """Every member's last membership view (None when unknown) and current verdicts."""
        with self._lock:
            views = {k: m.view for k, m in self._members.items()}
            return views, dict(self._verdicts)

    @property
    def leader(self) -> str | None:
        """The endpoint a majority of members name as leader, or None."""
        return self._leader

    def tick(self, now: float | None = None) -> None:
        """Time-driven work: end ejections that are up, run the outlier percentage rule."""
        now = self.clock() if now is None else now
        out: list[Transition] = []
        with self._lock:
            for key in [k for k, (until, _) in self._passive.items() if until <= now]:
                del self._passive[key]
                m = self._members.get(key)
                if m is not None:
                    self._refresh(m, now, out, "no-leader answers stopped")
            new, ended = self.outlier.sweep(now)
            for ej in new:
                self.stats.ejections += 1
                self._refresh(self._members[ej.endpoint], now, out, ej.reason)
            for key in ended:
                m = self._members.get(key)
                if m is not None:
                    self._refresh(m, now, out, "ejection time is up")
            if self._watch_mode:
                self._busy = self._stalled(now)
        self._fire(out)

    # -------------------------------------------------------------------- calls
    def _current_picker(self) -> Picker:
        picker = self._picker
        if picker is not None and self._picker_version == self._version:
            return picker
        with self._lock:
            version = self._version
            members = self._members
            if self._plan is None:
                snap = StatusSnapshot({k: self._status(m) for k, m in members.items()}, version)
            else:
                # only the subset's active members, in its order: the members it replaced
                # stay probed but take no calls (were they candidates, a replacement not
                # yet probed could tip the picker into panic and onto them). When none is
                # active, every member probed, so that panic mode still has candidates.
                sub = self._subset
                keys = sub.members if sub is not None and sub.members else tuple(self._in_use)
                snap = StatusSnapshot(
                    {k: self._status(members[k]) for k in keys if k in members}, version
                )
            cands, panic = candidates_for(snap, self.config.panic_threshold)
            ctx = PickContext(
                snapshot=snap,
                candidates=cands,
                panic=panic,
                weights=self.config.policy.weights,
                load=self.load,
                rng=self.rng,
                leader=self._leader,
            )
            picker = self._builder(ctx)
            # watch mode counts attempts in flight too (stalled calls get a Check)
            self._track_load = picker.tracks_load or self._watch_mode
            # only pickers that override done() get an outcome object per attempt
            self._picker_done = type(picker).done is not Picker.done
            self._picker = picker
            self._picker_version = version
            return picker

    def is_idempotent(self, method: str) -> bool:
        """Whether config declares ``method`` idempotent (cached)."""
        ans = self._idempotent_cache.get(method)
        if ans is None:
            ans = is_idempotent(method, self.config.retry.idempotent_methods)
            self._idempotent_cache[method] = ans
        return ans

    def active(self, now: float | None = None) -> bool:
        """True while the channel carries calls (one started in the last
        :data:`NO_TRAFFIC_AFTER` seconds)."""
        return (self.clock() if now is None else now) - self._last_call <= NO_TRAFFIC_AFTER

    def plan(
        self,
        method: str,
        deadline: float | None,
        streaming: bool = False,
        now: float | None = None,
    ) -> AttemptPlan:
        """Start a call: count it for the retry budget and return its attempt plan
        (streams get no per-try timeout). The first call after a quiet spell has every
        member not probed within ``health.interval`` probed at once."""
        if now is None:
            now = self.clock()
        quiet = now - self._last_call > NO_TRAFFIC_AFTER
        self._last_call = now
        if quiet and self._no_traffic is not None:
            self._traffic_resumed(now)
        self.budget.deposit()
        cfg = self.config.retry
        return AttemptPlan(
            cfg,
            self.budget,
            self.rng,
            deadline,
            self.is_idempotent(method),
            cfg.max_attempts,
            streaming,
        )

    def pick(self, method: str, exclude: Set[str] = frozenset()) -> str | None:
        """Choose a member for one attempt, avoiding ``exclude`` when possible.

        Returns None when no member can serve (see :meth:`describe_unavailable`).
        """
        picker = self._current_picker()
        if exclude:
            info = CallInfo(method, exclude)
        else:  # the common case: one immutable CallInfo per method, no allocation
            info = self._infos.get(method) or self._info_for(method)
        ep = picker.pick(info)
        self.stats.picks += 1
        if ep is None:
            self.stats.no_member += 1
        else:
            if self._track_load:
                self.load.start(ep)
            if self._watch_mode and not self._busy:
                self._busy = True  # calls are out: the prober looks for stalls
                self._notify_due()
        if self.observers.pick:
            self.observers.emit_pick(ep, method)
        return ep

    def _info_for(self, method: str) -> CallInfo:
        info = CallInfo(method)
        if len(self._infos) < 4096:
            self._infos[method] = info
        return info

    def done(self, endpoint: str, code: str, latency: float, details: str | None = None) -> None:
        """Report the outcome of one attempt (``code`` is the status name, "OK" on success;
        ``details`` the error details, if any). Failures are better reported with
        :meth:`attempt_failed`, which also knows how far the attempt got."""
        picker = self._picker
        if picker is not None:
            if self._track_load:
                self.load.finish(endpoint, latency)
            if self._picker_done:
                picker.done(CallOutcome(endpoint, code, latency))
        if details is not None and code != "OK" and _NO_LEADER in details.lower():
            # the member says it is cut off from its cluster: a membership signal, not
            # a sign of a bad host (so no outlier ejection)
            self._note_no_leader(endpoint, details)
            return
        if not self.outlier.cfg.enabled:
            return
        failed = self.outlier.is_failure(code)
        if not failed and code == "OK" and not self._consecutive_pending(endpoint):
            return  # fast path: a success on a member with no failure streak
        now = self.clock()
        out: list[Transition] = []
        with self._lock:
            ej = self.outlier.record(endpoint, code, now)
            if ej is not None:
                self.stats.ejections += 1
                m = self._members.get(endpoint)
                if m is not None:
                    self._refresh(m, now, out, ej.reason)
        if ej is not None:
            self._notify_due()
        self._fire(out)

    def release(self, endpoint: str, latency: float | None = None) -> None:
        """An attempt picked on ``endpoint`` ended without a verdict on the member (the
        application cancelled it, or it was never sent): only the load accounting."""
        if self._track_load and self._picker is not None:
            self.load.finish(endpoint, latency if latency is not None else 0.0)

    def attempt_failed(
        self, endpoint: str, failure: AttemptFailure, delivery: Delivery, latency: float
    ) -> None:
        """Report a failed attempt on ``endpoint``.

        A lost or refused connection (nothing sent, or UNAVAILABLE with no answer from
        the server) is a health signal: the member is UNREACHABLE at once, until a probe
        succeeds again. An answer that says the member has no leader is a membership
        signal. Everything else feeds the outlier detector.
        """
        code = failure.code
        if failure.abandoned:
            self.release(endpoint, latency)  # eagle gave up on it: its member already left
            return
        if delivery is Delivery.NOT_SENT or (
            delivery is Delivery.UNANSWERED and code == "UNAVAILABLE"
        ):
            self.release(endpoint, latency)
            self.connection_failed(endpoint, f"call failed: {failure.details or code}")
            return
        self.done(endpoint, code, latency, failure.details)

    def connection_failed(self, endpoint: str, error: str) -> None:
        """The connection to ``endpoint`` failed or was lost (a call could not be sent, or
        grpc reports the sub-channel in TRANSIENT_FAILURE): UNREACHABLE at once, back
        after the next successful probe."""
        now = self.clock()
        out: list[Transition] = []
        with self._lock:
            m = self._members.get(endpoint)
            if m is None or m.health.state is State.UNREACHABLE:
                return
            m.health.force_down(error, now)
            self.outlier.on_health(endpoint, False, now)
            self._refresh(m, now, out)
        log.warning("member %s: %s", endpoint, error)
        self._fire(out)

    def on_connectivity(self, endpoint: str, state: str) -> None:
        """Fold in a sub-channel's grpc connectivity state (``ChannelConnectivity`` name).

        TRANSIENT_FAILURE and SHUTDOWN take the member out at once; IDLE after READY
        means the connection dropped, so the member is probed at once (the probe also
        reconnects) instead of waiting for its turn.
        """
        if state in ("TRANSIENT_FAILURE", "SHUTDOWN"):
            self.connection_failed(endpoint, f"connectivity: {state}")
        elif state == "IDLE":
            self.probe_soon(endpoint)

    def _note_no_leader(self, endpoint: str, details: str) -> None:
        now = self.clock()
        out: list[Transition] = []
        ttl = max(1.0, 5.0 * self.config.health.interval)
        with self._lock:
            m = self._members.get(endpoint)
            if m is None:
                return
            self._passive[endpoint] = (now + ttl, f"calls answer: {details}")
            self._refresh(m, now, out)
        self._notify_due()
        self._fire(out)

    def _consecutive_pending(self, endpoint: str) -> bool:
        return self.outlier.has_streak(endpoint)

    def describe_unavailable(self) -> str:
        """Error details for a call no member can serve: each endpoint and its state."""
        note = self.members_note
        if note and not self._members:
            return f"eagle: no member can serve the call: {note}"
        return f"eagle: no member can serve the call: {self.snapshot().describe()}"

    def note_retry(
        self,
        allowed: bool,
        endpoint: str | None = None,
        method: str = "",
        code: str = "",
        give_up: GiveUp | None = None,
    ) -> None:
        """Count a retry decision for stats (and observers): ``allowed`` with the failed
        attempt's ``endpoint``, ``method`` and ``code``, and why it was refused."""
        if allowed:
            self.stats.retries += 1
            if endpoint is not None and self.observers.retry:
                self.observers.emit_retry(endpoint, method, code)
        elif give_up is GiveUp.BUDGET:
            self.stats.budget_refusals += 1
            if endpoint is not None and self.observers.budget_refusal:
                self.observers.emit_budget_refusal(endpoint, method, code)

    def mark_stream_move(self, endpoint: str | None = None, reason: str = "") -> None:
        """Count a stream ended by the watchdog (on ``endpoint``, for ``reason``)."""
        self.stats.stream_moves += 1
        if endpoint is not None and self.observers.stream_move:
            self.observers.emit_stream_move(endpoint, reason)
