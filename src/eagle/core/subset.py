"""Subsetting: which members one client connects to, probes and picks from (sans-IO).

Without subsetting every client connects to and probes every member: C clients and M
members make C x M connections and C x M probes per health interval. With it each client
uses a subset of about ``subset.size`` members. Three algorithms, chosen by
``subset.mode``:

``aperture``
    Finagle's *deterministic aperture* (Finagle's default load balancer; "Deterministic
    Aperture: A distributed, load balancing algorithm", Twitter Engineering blog, 2019;
    twitter/finagle ``finagle-core/.../loadbalancer/aperture/``: ``ProcessCoordinate.scala``,
    ``DeterministicAperture.scala``, ``Ring.scala``). Clients and members sit on two rings of
    circumference 1. Client ``i`` of ``C`` owns the point ``i / C`` (``ProcessCoordinate.
    FromInstanceId``, without Finagle's optional peer offset); member ``j`` of ``M`` (sorted,
    so every client sees the same ring) owns ``[j / M, (j + 1) / M)``. A client's slice
    starts at its point and is ``ceil(A * C / M)`` client units wide
    (``DeterministicAperture.dApertureWidth``), where the logical aperture ``A`` is
    ``max(min_aperture, size)`` capped at ``M``: at least ``A`` members, and a whole number
    of client units so the slices of all clients cover the ring evenly. Members the slice
    overlaps get the overlapped fraction of their width as weight (``Ring.weight``): edge
    members are fractional, and every member's weights summed over all clients are equal
    (exactly ``ceil(A * C / M)``). A weighted picker inside the slice (Finagle's
    ``WeightedP2CPick``) then spreads load evenly over the members.

    Unlike Finagle this module uses exact integer arithmetic (units of ``1 / (C * M)``), so
    no epsilon is needed when an edge falls exactly on a member boundary.

    Bounds (checked by the Hypothesis properties in ``tests/test_subset.py``): with
    ``k = ceil(A * C / M)``, every member is in the slices of between ``k`` and
    ``k + ceil(C / M)`` clients, so connections per member are at most
    ``(k + ceil(C / M)) / k`` times the mean, while weighted load is exactly even. Adding
    or removing one member changes at most 2 members of a client's slice (an edge moves,
    or the member itself enters or leaves), plus up to ``ceil(M / C)`` more (``M`` the
    larger count) when ``k`` steps by one because ``M`` changed.

``random``
    gRPC A68 ``random_subsetting`` (grpc/proposal ``A68-random-subsetting.md``; grpc core
    ``random_subsetting.cc``, grpc-java ``RandomSubsettingLoadBalancer``): each client has
    a random 64-bit ``seed``; every endpoint is hashed once with ``XXH64(address, seed)``
    (the endpoint as given, e.g. ``10.0.0.7:50051``: A68 hashes an endpoint's first address);
    endpoints are sorted by hash and the first ``size`` taken (all of them when there are
    fewer). Hashes of the other endpoints do not change when one endpoint is added or
    removed, so each client's subset changes by at most one member (rendezvous hashing).
    Connection counts per server are binomial, not equal (``benchmarks/fleet.py``
    measures both).

``deterministic``
    The Google SRE book's deterministic subsetting (Site Reliability Engineering, ch. 20
    "Load Balancing in the Datacenter"): clients are grouped in rounds of ``M // size``;
    each round shuffles the (sorted) members with the round number as seed and gives each
    client of the round one disjoint ``size``-member slice. Perfectly even connection
    counts when ``size`` divides ``M``, but a member added or removed reshuffles every
    round: most subsets change. Kept as a baseline.

Replacement of unusable members: each algorithm gives a *ranking* of all members (the
aperture slice then the ring onward; the hash order; the slice then the rest of the
round's shuffle) and a *target* count (the slice's member count; ``min(size, M)``). The
active subset is the first ``target`` *usable* members of the ranking, so while enough
members are usable the client always has ``target`` of them; a member that becomes usable
again takes its place back and its replacement leaves. Every member ranked before the last
active one stays in :attr:`Subset.probe`, so members that were passed over are still
probed and can come back. The search goes at most :data:`SEARCH_FACTOR` x ``target``
members deep: in a fleet-wide outage a client probes (and connects to) that many members,
not every member of the fleet, which would turn one outage into C x M connections.

Typical use by a channel (one :class:`SubsetPlan` per channel)::

    plan = SubsetPlan(config.subset)
    subset = plan.select(endpoints, unusable_from(snapshot))
    subset.members    # connect to these and give them to the picker
    subset.weights    # per-member weight for a weighted picker (aperture: fractional)
    subset.probe      # probe these (members + passed-over unusable ones)
    subset.placement("10.0.0.7:50051").reason   # "replaces 10.0.0.3:50051 (UNREACHABLE)"

Nothing here does I/O, takes a lock, sleeps or starts a thread; randomness (the A68 seed)
and the environment (the aperture coordinate) are injected.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import struct
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..config import SubsetConfig
from .status import EndpointStatus, State

__all__ = [
    "ENV_INSTANCE_COUNT",
    "ENV_INSTANCE_INDEX",
    "UNUSABLE_STATES",
    "Placement",
    "Ranking",
    "Subset",
    "SubsetPlan",
    "aperture_ranking",
    "deterministic_ranking",
    "random_ranking",
    "resolve_coordinate",
    "unusable_from",
    "xxh64",
]

log = logging.getLogger("eagle.subset")

#: environment variable giving this client's index among its peers (0-based)
ENV_INSTANCE_INDEX = "EAGLE_INSTANCE_INDEX"
#: environment variable giving the number of peer clients
ENV_INSTANCE_COUNT = "EAGLE_INSTANCE_COUNT"

#: states a member is replaced in: known not to serve. UNKNOWN (not probed yet) and
#: SERVING members are usable.
UNUSABLE_STATES = frozenset(
    {State.NOT_SERVING, State.UNREACHABLE, State.PARTITIONED, State.EJECTED}
)


# --------------------------------------------------------------------------- XXH64

_M64 = (1 << 64) - 1
_P1 = 0x9E3779B185EBCA87
_P2 = 0xC2B2AE3D27D4EB4F
_P3 = 0x165667B19E3779F9
_P4 = 0x85EBCA77C2B2AE63
_P5 = 0x27D4EB2F165667C5
_STRIPE = struct.Struct("<4Q")
_LANE = struct.Struct("<Q")
_WORD = struct.Struct("<I")


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _round(acc: int, lane: int) -> int:
    acc = (acc + lane * _P2) & _M64
    acc = ((acc << 31) | (acc >> 33)) & _M64
    return (acc * _P1) & _M64


def _merge(acc: int, val: int) -> int:
    acc ^= _round(0, val)
    return (acc * _P1 + _P4) & _M64


def xxh64(data: bytes, seed: int = 0) -> int:
    """XXH64 of ``data`` with ``seed`` (Cyan4973/xxHash), the hash gRPC A68 names.

    Pure Python, about 2 µs for an address-sized input: an endpoint is hashed once per
    change of the endpoint list, never per pick.
    """
    n = len(data)
    i = 0
    seed &= _M64
    if n >= 32:
        v1 = (seed + _P1 + _P2) & _M64
        v2 = (seed + _P2) & _M64
        v3 = seed
        v4 = (seed - _P1) & _M64
        while i <= n - 32:
            a, b, c, d = _STRIPE.unpack_from(data, i)
            v1 = _round(v1, a)
            v2 = _round(v2, b)
            v3 = _round(v3, c)
            v4 = _round(v4, d)
            i += 32
        h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _M64
        for v in (v1, v2, v3, v4):
            h = _merge(h, v)
    else:
        h = (seed + _P5) & _M64
    h = (h + n) & _M64
    while i + 8 <= n:
        h ^= _round(0, _LANE.unpack_from(data, i)[0])
        h = (_rotl(h, 27) * _P1 + _P4) & _M64
        i += 8
    if i + 4 <= n:
        h ^= (_WORD.unpack_from(data, i)[0] * _P1) & _M64
        h = (_rotl(h, 23) * _P2 + _P3) & _M64
        i += 4
    while i < n:
        h ^= (data[i] * _P5) & _M64
        h = (_rotl(h, 11) * _P1) & _M64
        i += 1
    h ^= h >> 33
    h = (h * _P2) & _M64
    h ^= h >> 29
    h = (h * _P3) & _M64
    h ^= h >> 32
    return h


# ------------------------------------------------------------------------ rankings


@dataclass(frozen=True, eq=False)
class Ranking:
    """One algorithm's order of all members for one client, before health is known.

    Attributes:
        order: every member, best first; replacements are taken in this order.
        target: how many members the subset holds (the first ``target`` of ``order``).
        weights: the weight of each of the first ``target`` members, in order.
        labels: why each of the first ``target`` members is in the subset, in order.
    """

    order: tuple[str, ...]
    target: int
    weights: tuple[float, ...]
    labels: tuple[str, ...]

    @functools.cached_property
    def rank(self) -> Mapping[str, int]:
        """Member -> its position in :attr:`order` (built once, on first use)."""
        return {ep: i for i, ep in enumerate(self.order)}


def aperture_ranking(
    members: Iterable[str], instance: int, instances: int, aperture: int
) -> Ranking:
    """Deterministic aperture (Finagle): the slice of client ``instance`` of ``instances``.

    ``members`` are sorted first so that every client puts them on the same ring.
    ``aperture`` is the logical aperture (``max(min_aperture, size)``); it is capped at the
    number of members. The order is the slice, then the ring onward from its end.
    """
    ring = sorted(set(members))
    n = len(ring)
    if n == 0:
        return Ranking((), 0, (), ())
    if not 0 <= instance < instances:
        raise ValueError(f"aperture: instance must be 0..{instances - 1}, got {instance}")
    c = instances
    ap = max(1, min(aperture, n))
    # the width in client units: ceil(ap * c / n) (DeterministicAperture.dApertureWidth),
    # at most the whole ring
    units = min(c, -(-ap * c // n))
    # integer coordinates in units of 1 / (n * c): member j spans [j*c, (j+1)*c), the
    # slice spans [start, end) with start = instance / c
    start = instance * n
    end = start + units * n
    overlap: dict[int, int] = {}
    j = start // c
    while j * c < end:
        lo = max(start, j * c)
        hi = min(end, (j + 1) * c)
        if hi > lo:
            idx = j % n
            overlap[idx] = overlap.get(idx, 0) + hi - lo
        j += 1
    first = (start // c) % n
    order = tuple(ring[first:] + ring[:first])
    target = len(overlap)
    weights = tuple(overlap[(first + k) % n] / c for k in range(target))
    labels = tuple(f"aperture slice, weight {w:.3f}" for w in weights)
    return Ranking(order, target, weights, labels)


def random_ranking(hashes: Mapping[str, int], size: int) -> Ranking:
    """gRPC A68 random subsetting: members sorted by their XXH64 hash (ties by name)."""
    order = tuple(sorted(hashes, key=lambda ep: (hashes[ep], ep)))
    target = min(size, len(order))
    labels = tuple(f"random subset rank {k + 1} of {target}" for k in range(target))
    return Ranking(order, target, (1.0,) * target, labels)


def deterministic_ranking(
    members: Iterable[str], instance: int, instances: int, size: int
) -> Ranking:
    """Google SRE book ch. 20 deterministic subsetting for client ``instance``.

    ``subset_count = M // size`` slices per round; client ``instance`` is in round
    ``instance // subset_count`` and takes slice ``instance % subset_count`` of the sorted
    members shuffled with the round as seed. ``instances`` only bounds ``instance``.
    """
    ring = sorted(set(members))
    n = len(ring)
    if n == 0:
        return Ranking((), 0, (), ())
    if not 0 <= instance < instances:
        raise ValueError(f"deterministic: instance must be 0..{instances - 1}, got {instance}")
    size = min(size, n)
    subset_count = max(1, n // size)
    round_ = instance // subset_count
    subset_id = instance % subset_count
    random.Random(round_).shuffle(ring)
    first = subset_id * size
    order = tuple(ring[first:] + ring[:first])
    labels = tuple(f"deterministic subset {subset_id} of round {round_}" for _ in range(size))
    return Ranking(order, size, (1.0,) * size, labels)


# --------------------------------------------------------------------------- result


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one member stands in a :class:`Subset`.

    Attributes:
        endpoint: the member.
        active: True when calls may be placed on it (it is in :attr:`Subset.members`).
        probe: True when it should be probed (it is in :attr:`Subset.probe`).
        rank: its position in the algorithm's order (0 = first choice).
        weight: its weight for a weighted picker (0.0 when not active).
        reason: why, e.g. ``"aperture slice, weight 0.400"``, ``"random subset rank 3 of
            20"``, ``"replaces 10.0.0.3:50051 (UNREACHABLE)"``, ``"outside subset"``.
    """

    endpoint: str
    active: bool
    probe: bool
    rank: int
    weight: float
    reason: str


class Subset:
    """The outcome of :meth:`SubsetPlan.select`: which members one client uses, and why.

    Attributes:
        mode: the algorithm (``"aperture"``, ``"random"``, ``"deterministic"``), or None
            when subsetting is off (then every member is active with weight 1).
        members: the active members, in the algorithm's order: connect to them and give
            them to the picker. ``target`` of them while enough members are usable.
        weights: weight of each active member (aperture: the overlapped fraction, a
            replacement inherits the weight of the member it replaces; otherwise 1.0).
        probe: the members to probe: every member ranked up to the last active one, so
            members that are unusable and were replaced or passed over are still probed
            and can come back. At most ``SEARCH_FACTOR x target`` members (all of them
            when there are fewer), however few are usable.
        natural: the algorithm's subset as if every member were usable (for a picker's
            panic mode, or to show what the subset would be).
        target: how many members the subset aims to hold.
        replaced: unusable member -> the member that replaces it.
    """

    __slots__ = (
        "_cache",
        "_ranking",
        "_replaces",
        "_stop",
        "_unusable",
        "members",
        "mode",
        "natural",
        "probe",
        "replaced",
        "target",
        "weights",
    )

    def __init__(
        self,
        mode: str | None,
        ranking: Ranking,
        members: tuple[str, ...],
        weights: Mapping[str, float],
        stop: int,
        replaced: Mapping[str, str],
        unusable: Mapping[str, str],
    ) -> None:
        self.mode = mode
        self._ranking = ranking
        self.members = members
        self.weights = weights
        self._stop = stop
        self.probe = ranking.order[:stop]
        self.natural = ranking.order[: ranking.target]
        self.target = ranking.target
        self.replaced = replaced
        self._replaces = {new: old for old, new in replaced.items()}
        self._unusable = unusable
        self._cache: dict[str, str] | None = None

    def __contains__(self, endpoint: object) -> bool:
        return endpoint in self.weights

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return (
            f"Subset(mode={self.mode!r}, members={len(self.members)}/{self.target}, "
            f"probe={len(self.probe)}, replaced={len(self.replaced)})"
        )

    def placement(self, endpoint: str) -> Placement:
        """Where ``endpoint`` stands and why; ``KeyError`` when it is not a member at all."""
        r = self._ranking
        rank = r.rank[endpoint]
        weight = self.weights.get(endpoint, 0.0)
        active = endpoint in self.weights
        probe = rank < self._stop
        state = self._unusable.get(endpoint)
        if self.mode is None:
            reason = "subsetting off: every member"
            if state is not None:
                reason += f" ({state})"
        elif rank < r.target:
            reason = r.labels[rank]
            if state is not None:
                new = self.replaced.get(endpoint)
                reason += f"; {state}: " + (
                    f"replaced by {new}" if new else "no usable member left to replace it"
                )
        elif endpoint in self._replaces:
            old = self._replaces[endpoint]
            reason = f"replaces {old} ({self._unusable[old]})"
        elif probe and state is not None:
            reason = f"outside subset ({state}; passed over as a replacement)"
        else:
            reason = "outside subset"
        return Placement(endpoint, active, probe, rank, weight, reason)

    @property
    def reasons(self) -> Mapping[str, str]:
        """Every member -> the reason it is in or out (built on first use)."""
        if self._cache is None:
            self._cache = {ep: self.placement(ep).reason for ep in self._ranking.order}
        return self._cache

    def describe(self) -> str:
        """One line per member that is active, probed or replaced (for logs and the CLI)."""
        return "\n".join(f"{ep}: {self.placement(ep).reason}" for ep in self.probe)


#: how deep the search for usable members goes, in multiples of the subset's target
#: (a subset of 20 looks at most 60 members deep: it keeps 20 usable members while up to
#: two thirds of the fleet is unusable)
SEARCH_FACTOR = 3


def _choose(mode: str | None, ranking: Ranking, unusable: Mapping[str, str]) -> Subset:
    """The first ``target`` usable members among the first ``SEARCH_FACTOR x target``
    of ``ranking`` (see the module docstring)."""
    order, target = ranking.order, ranking.target
    nat_w = ranking.weights
    if not unusable or not any(ep in unusable for ep in order[:target]):
        members = order[:target]
        return Subset(
            mode, ranking, members, dict(zip(members, nat_w, strict=True)), target, {}, {}
        )
    members_l: list[str] = []
    weights: dict[str, float] = {}
    pending: deque[tuple[str, float]] = deque()
    replaced: dict[str, str] = {}
    for i in range(target):
        ep = order[i]
        if ep in unusable:
            pending.append((ep, nat_w[i]))
        else:
            members_l.append(ep)
            weights[ep] = nat_w[i]
    i = target
    n = min(len(order), SEARCH_FACTOR * target)
    while pending and i < n:
        ep = order[i]
        i += 1
        if ep in unusable:
            continue
        old, w = pending.popleft()
        replaced[old] = ep
        members_l.append(ep)
        weights[ep] = w
    stop = i
    relevant = {ep: unusable[ep] for ep in order[:stop] if ep in unusable}
    return Subset(mode, ranking, tuple(members_l), weights, stop, replaced, relevant)


# ---------------------------------------------------------------------------- plan


def resolve_coordinate(
    config: SubsetConfig, environ: Mapping[str, str] | None = None
) -> tuple[int, int]:
    """This client's ``(instance, instances)``: the config's values, else the environment's
    ``EAGLE_INSTANCE_INDEX`` / ``EAGLE_INSTANCE_COUNT``. ``ValueError`` names the key path
    or variable that is missing or wrong."""
    env = os.environ if environ is None else environ
    coord = config.coordinate
    mode = config.mode

    def read(value: int | None, key: str, var: str, lo: int) -> int:
        if value is not None:
            return value
        text = env.get(var)
        if text is None or not text.strip():
            raise ValueError(
                f"subset.coordinate.{key}: subset mode {mode!r} needs it; set it or {var}"
            )
        try:
            got = int(text.strip())
        except ValueError:
            raise ValueError(f"{var}: must be a whole number >= {lo}, got {text!r}") from None
        if got < lo:
            raise ValueError(f"{var}: must be a whole number >= {lo}, got {text!r}")
        return got

    instances = read(coord.instances, "instances", ENV_INSTANCE_COUNT, 1)
    instance = read(coord.instance, "instance", ENV_INSTANCE_INDEX, 0)
    if instance >= instances:
        where = "subset.coordinate.instance" if coord.instance is not None else ENV_INSTANCE_INDEX
        raise ValueError(
            f"{where}: must be less than the instance count {instances}, got {instance}"
        )
    return instance, instances


def unusable_from(
    statuses: Mapping[str, EndpointStatus], states: frozenset[State] = UNUSABLE_STATES
) -> dict[str, str]:
    """Members of a status table (e.g. a :class:`~eagle.core.status.StatusSnapshot`) in one
    of ``states``, with the state's name: the ``unusable`` argument of
    :meth:`SubsetPlan.select`."""
    return {k: st.state.value for k, st in statuses.items() if st.state in states}


class SubsetPlan:
    """One client's subsetting: its config, seed or coordinate, and the cached ranking.

    Build one per channel. :meth:`select` is cheap to call on every change of member
    states: the ranking is recomputed only when the endpoint list changes, and in
    ``random`` mode only endpoints not seen before are hashed. Not thread-safe: call it
    under the balancer's lock.

    Args:
        config: the ``subset`` section.
        environ: where a null coordinate is read from (default ``os.environ``).
        rng: the source of the A68 seed when ``config.seed`` is null (default: a fresh
            ``random.Random()``, seeded from the OS).
    """

    def __init__(
        self,
        config: SubsetConfig,
        *,
        environ: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.mode = config.mode
        self.size = config.size
        #: the logical aperture: at least ``min_aperture`` and at least ``size``
        self.aperture = max(config.min_aperture, config.size)
        self.instance = 0
        self.instances = 1
        if self.mode in ("aperture", "deterministic"):
            self.instance, self.instances = resolve_coordinate(config, environ)
        #: the A68 seed (random per client unless configured)
        self.seed = (
            config.seed if config.seed is not None else (rng or random.Random()).getrandbits(64)
        )
        self._key: tuple[str, ...] | None = None
        self._set: frozenset[str] = frozenset()
        self._ranking = Ranking((), 0, (), ())
        self._hashes: dict[str, int] = {}

    def __repr__(self) -> str:
        if self.mode in ("aperture", "deterministic"):
            where = f"instance {self.instance} of {self.instances}"
        elif self.mode == "random":
            where = f"seed {self.seed:#018x}"
        else:
            where = "off"
        return f"SubsetPlan({self.mode}, size {self.size}, {where})"

    def ranking(self, endpoints: Iterable[str]) -> Ranking:
        """The algorithm's ranking of ``endpoints`` (cached while they stay the same)."""
        key = tuple(endpoints)
        if key == self._key:
            return self._ranking
        members = frozenset(key)
        self._key = key
        if members == self._set:
            return self._ranking
        self._set = members
        mode = self.mode
        if mode == "aperture":
            self._ranking = aperture_ranking(members, self.instance, self.instances, self.aperture)
        elif mode == "random":
            old = self._hashes
            seed = self.seed
            self._hashes = {
                ep: old[ep] if ep in old else xxh64(ep.encode(), seed) for ep in members
            }
            self._ranking = random_ranking(self._hashes, self.size)
        elif mode == "deterministic":
            self._ranking = deterministic_ranking(members, self.instance, self.instances, self.size)
        else:
            order = tuple(dict.fromkeys(key))
            self._ranking = Ranking(order, len(order), (1.0,) * len(order), ("",) * len(order))
        if mode is not None:
            log.debug("%r: %d members, subset of %d", self, len(members), self._ranking.target)
        return self._ranking

    def select(
        self, endpoints: Iterable[str], unusable: Mapping[str, str | State] | None = None
    ) -> Subset:
        """The active subset of ``endpoints`` given the members that are ``unusable``.

        ``unusable`` maps a member to its state or a short reason (see
        :func:`unusable_from`); members not in it are usable, UNKNOWN ones included.
        """
        ranking = self.ranking(endpoints)
        bad = {k: str(v) for k, v in unusable.items()} if unusable else {}
        if self.mode is None:
            order = ranking.order
            members = tuple(ep for ep in order if ep not in bad)
            return Subset(
                None,
                ranking,
                members,
                dict.fromkeys(members, 1.0),
                len(order),
                {},
                {ep: bad[ep] for ep in order if ep in bad},
            )
        return _choose(self.mode, ranking, bad)
