"""Pickers: choose a member for each call. Never block, never do I/O.

A picker is built from a :class:`PickContext` (a status snapshot plus the candidate list
the balancer computed from it) and rebuilt only when the table's version changes.
``pick(call)`` returns an endpoint key; ``done(outcome)`` feeds back the result of the
call for load and latency accounting.

Register your own with :func:`register_picker`::

    class FirstPicker(eagle.Picker):
        def pick(self, call):
            return self.ctx.candidates[0] if self.ctx.candidates else None

    eagle.register_picker("first", FirstPicker)
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import threading
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field

from .status import State, StatusSnapshot

__all__ = [
    "CallInfo",
    "CallOutcome",
    "LoadTracker",
    "PickContext",
    "Picker",
    "PickerBuilder",
    "available_pickers",
    "candidates_for",
    "get_picker",
    "register_picker",
]


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What a picker may know about the call it places.

    ``exclude`` holds the members this call already tried; a picker should avoid them
    when another candidate exists.
    """

    method: str
    exclude: Set[str] = frozenset()


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """The result of one attempt, reported to ``Picker.done``.

    ``code`` is the gRPC status code name ("OK" on success); ``latency`` in seconds.
    """

    endpoint: str
    code: str
    latency: float


class LoadTracker:
    """In-flight counts and peak-EWMA latency per member (tower / Finagle ``p2c``).

    Kept apart from the picker so it survives picker rebuilds. Estimates decay towards
    zero with time constant ``decay`` seconds, so a member that was slow gets re-tried.
    """

    def __init__(self, decay: float, clock: Callable[[], float]) -> None:
        self.decay = decay
        self.clock = clock
        self._lock = threading.Lock()
        self.inflight: dict[str, int] = {}
        #: when a member last answered: an attempt on it ended, or (counting from then)
        #: its first attempt went out while none was in flight. Health watch mode gives a
        #: member whose attempts have been out an interval with no answer a Check at once.
        self.answered: dict[str, float] = {}
        self._ewma: dict[str, tuple[float, float]] = {}  # endpoint -> (estimate, stamp)

    def start(self, endpoint: str) -> None:
        """Count a call as in flight on ``endpoint``."""
        with self._lock:
            n = self.inflight.get(endpoint, 0)
            if n <= 0:
                self.answered[endpoint] = self.clock()
            self.inflight[endpoint] = n + 1

    def finish(self, endpoint: str, latency: float) -> None:
        """Count a call as finished and fold its latency into the peak EWMA."""
        now = self.clock()
        with self._lock:
            n = self.inflight.get(endpoint, 0)
            self.inflight[endpoint] = n - 1 if n > 0 else 0
            self.answered[endpoint] = now
            est, stamp = self._ewma.get(endpoint, (latency, now))
            if latency > est:
                est = latency  # peak: jump up at once
            else:
                w = math.exp(-max(now - stamp, 0.0) / self.decay)
                est = est * w + latency * (1.0 - w)
            self._ewma[endpoint] = (est, now)

    def latency(self, endpoint: str, now: float) -> float:
        """The decayed latency estimate (0.0 when nothing is known)."""
        item = self._ewma.get(endpoint)
        if item is None:
            return 0.0
        est, stamp = item
        return est * math.exp(-max(now - stamp, 0.0) / self.decay)

    def cost(self, endpoint: str, now: float) -> float:
        """Peak-EWMA cost: latency estimate times (in flight + 1)."""
        return (self.latency(endpoint, now) + 1e-6) * (self.inflight.get(endpoint, 0) + 1)


@dataclass(frozen=True)
class PickContext:
    """Everything a picker is built from.

    Attributes:
        snapshot: the status table at build time.
        candidates: members to place calls on, healthy first (panic mode already applied).
        panic: True when too few members are SERVING and candidates spread wider.
        options: the ``policy`` section of the config (name, weights, decay).
        load: shared :class:`LoadTracker` (survives rebuilds).
        rng: random source (injected for tests).
        leader: the endpoint the majority names as leader, when membership knows it.
    """

    snapshot: StatusSnapshot
    candidates: tuple[str, ...]
    panic: bool
    weights: Mapping[str, float]
    load: LoadTracker
    rng: random.Random
    leader: str | None = None
    extra: Mapping[str, object] = field(default_factory=dict)


class Picker:
    """Base class of pickers. Subclasses implement :meth:`pick`; ``done`` is optional.

    Attributes:
        ctx: the :class:`PickContext` the picker was built from.
        tracks_load: set True to have the balancer count in-flight calls in ``ctx.load``.
    """

    tracks_load = False

    def __init__(self, ctx: PickContext) -> None:
        self.ctx = ctx

    def pick(self, call: CallInfo) -> str | None:
        """Return the endpoint for this call, or None when no candidate exists."""
        raise NotImplementedError

    def done(self, outcome: CallOutcome) -> None:
        """Called once per attempt with its outcome."""


PickerBuilder = Callable[[PickContext], Picker]


#: panic mode's preference among members that are not SERVING, best first: members not
#: probed yet, ejected ones (outlier detection, not health), draining ones (they still
#: answer), cut-off ones (PARTITIONED: connected, and the server answers for itself), and
#: last members whose probes time out but whose connection is up (a frozen server: a
#: call may wait until its deadline, as it would on a plain channel)
PANIC_ORDER: tuple[State, ...] = (
    State.UNKNOWN,
    State.EJECTED,
    State.NOT_SERVING,
    State.PARTITIONED,
    State.UNREACHABLE,
)


def candidates_for(
    snapshot: StatusSnapshot, panic_threshold: float
) -> tuple[tuple[str, ...], bool]:
    """Healthy-first candidates and whether panic mode is on.

    SERVING members when at least ``panic_threshold`` of the members are SERVING; before
    the first probe answers, UNKNOWN members too. Otherwise (panic, as in Envoy and
    Finagle) calls spread over the SERVING members and those of the best state that can
    still be reached, in :data:`PANIC_ORDER`: a call goes to a member and the server
    answers for itself rather than failing in the client. Only members no call can reach
    (their connection is down) are never candidates, so a call fails fast only when grpc
    would: no member can be connected to.
    """
    serving: list[str] = []
    by_state: dict[State, list[str]] = {}
    for key, st in snapshot.items():
        state = st.state
        if state is State.SERVING:
            serving.append(key)
        elif not st.connection_down:
            by_state.setdefault(state, []).append(key)
    total = len(snapshot)
    if serving and len(serving) >= panic_threshold * total:
        return tuple(serving), False
    unknown = by_state.get(State.UNKNOWN, [])
    if not serving and unknown and len(unknown) == total:
        return tuple(unknown), False  # nothing probed yet: a new channel is usable at once
    usable = list(serving)
    for state in PANIC_ORDER:
        members = by_state.get(state)
        if members:
            if usable and state in (State.PARTITIONED, State.UNREACHABLE):
                break  # better members exist: cut-off and frozen ones only as a last resort
            usable.extend(members)
            if state in (State.PARTITIONED, State.UNREACHABLE):
                break
    return tuple(usable), True


class RoundRobinPicker(Picker):
    """Healthy-first round robin over the candidates."""

    def __init__(self, ctx: PickContext) -> None:
        super().__init__(ctx)
        self._cands = ctx.candidates
        self._n = len(self._cands)
        start = ctx.rng.randrange(self._n) if self._n else 0
        self._next = itertools.count(start).__next__

    def pick(self, call: CallInfo) -> str | None:
        n = self._n
        if not n:
            return None
        cands = self._cands
        ep = cands[self._next() % n]
        if call.exclude and ep in call.exclude:
            for _ in range(n - 1):
                ep = cands[self._next() % n]
                if ep not in call.exclude:
                    break
        return ep


class P2CPicker(Picker):
    """Power of two choices on peak-EWMA latency x in-flight (tower, Finagle; 10 s decay).

    Routes around a member that is slow but still passes its health probes.
    """

    tracks_load = True

    def __init__(self, ctx: PickContext) -> None:
        super().__init__(ctx)
        self._cands = ctx.candidates
        self._rand = ctx.rng.random

    def pick(self, call: CallInfo) -> str | None:
        cands = self._cands
        if call.exclude:
            cands = tuple(c for c in cands if c not in call.exclude) or cands
        n = len(cands)
        if n <= 1:
            return cands[0] if n else None
        i = int(self._rand() * n)
        j = int(self._rand() * (n - 1))
        if j >= i:
            j += 1
        a, b = cands[i], cands[j]
        load = self.ctx.load
        now = load.clock()
        return a if load.cost(a, now) <= load.cost(b, now) else b


class WeightedPicker(Picker):
    """Random choice weighted by static per-endpoint weights (``policy.weights``, default 1)."""

    def __init__(self, ctx: PickContext) -> None:
        super().__init__(ctx)
        self._cands = ctx.candidates
        acc = 0.0
        self._cum: list[float] = []
        for c in self._cands:
            acc += ctx.weights.get(c, 1.0)
            self._cum.append(acc)
        self._total = acc
        self._rand = ctx.rng.random

    def pick(self, call: CallInfo) -> str | None:
        if not self._cands:
            return None
        for _ in range(4):
            i = bisect.bisect_right(self._cum, self._rand() * self._total)
            ep = self._cands[min(i, len(self._cands) - 1)]
            if ep not in call.exclude:
                return ep
        others = [c for c in self._cands if c not in call.exclude]
        return others[0] if others else ep


class PickLeaderPicker(RoundRobinPicker):
    """Send calls to the member the majority names as leader; round robin until one is known.

    Without membership (``membership.provider`` null) no leader is known and it behaves
    exactly as ``round_robin``.
    """

    def pick(self, call: CallInfo) -> str | None:
        leader = self.ctx.leader
        if leader is not None and leader in self._cands and leader not in call.exclude:
            return leader
        return super().pick(call)


_REGISTRY: dict[str, PickerBuilder] = {
    "round_robin": RoundRobinPicker,
    "p2c": P2CPicker,
    "weighted": WeightedPicker,
    "pick_leader": PickLeaderPicker,
}


def register_picker(name: str, builder: PickerBuilder) -> None:
    """Register a picker under ``name`` for use as ``policy: {"name": name}``."""
    if not name or not isinstance(name, str):
        raise ValueError(f"picker name must be a non-empty string, got {name!r}")
    _REGISTRY[name] = builder


def get_picker(name: str) -> PickerBuilder:
    """The builder registered as ``name``; ``ValueError`` naming it when there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"policy.name: unknown picker {name!r} (known: {known})") from None


def available_pickers() -> Sequence[str]:
    """Names of all registered pickers."""
    return sorted(_REGISTRY)
