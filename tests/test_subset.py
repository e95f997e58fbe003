"""Subsetting core (eagle.core.subset): aperture, A68 random subsetting, replacement."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from eagle.config import Config, SubsetConfig, SubsetCoordinateConfig
from eagle.core import subset as subset_mod
from eagle.core.status import EndpointStatus, State, StatusSnapshot
from eagle.core.subset import (
    ENV_INSTANCE_COUNT,
    ENV_INSTANCE_INDEX,
    SEARCH_FACTOR,
    SubsetPlan,
    aperture_ranking,
    resolve_coordinate,
    unusable_from,
    xxh64,
)

FAST = settings(max_examples=60, deadline=None)


def names(n: int, prefix: str = "10.0.") -> list[str]:
    return [f"{prefix}{i // 250}.{i % 250}:50051" for i in range(n)]


def aperture(instance: int, instances: int, size: int = 20, min_aperture: int = 12) -> SubsetPlan:
    coord = SubsetCoordinateConfig(instance=instance, instances=instances)
    return SubsetPlan(
        SubsetConfig(mode="aperture", size=size, min_aperture=min_aperture, coordinate=coord)
    )


def rand(seed: int, size: int = 20) -> SubsetPlan:
    return SubsetPlan(SubsetConfig(mode="random", size=size, seed=seed))


def width_units(n: int, c: int, ap: int) -> int:
    """ceil(A * C / M) client units, as DeterministicAperture.dApertureWidth."""
    a = min(ap, n)
    return min(c, -(-a * c // n))


# ------------------------------------------------------------------------------ XXH64


def test_xxh64_reference_values() -> None:
    # the reference values of the xxHash test suite (seed 0)
    assert xxh64(b"") == 0xEF46DB3751D8E999
    assert xxh64(b"a") == 0xD24EC4F1A98C6E5B
    assert xxh64(b"abc") == 0x44BC2CF5AD770999


@FAST
@given(st.binary(max_size=100), st.integers(0, (1 << 64) - 1))
def test_xxh64_matches_the_c_implementation(data: bytes, seed: int) -> None:
    assert xxh64(data, seed) == xxhash.xxh64_intdigest(data, seed)


# ------------------------------------------------------------------------- A68 random


def test_random_subset_is_the_a68_hash_order() -> None:
    eps = names(200)
    seed = 0x1234_5678_9ABC_DEF0
    sub = rand(seed).select(eps)
    want = sorted(eps, key=lambda e: xxhash.xxh64_intdigest(e.encode(), seed))[:20]
    assert sub.members == tuple(want)
    assert sub.natural == tuple(want)
    assert all(w == 1.0 for w in sub.weights.values())
    assert sub.placement(want[2]).reason == "random subset rank 3 of 20"
    outside = next(e for e in eps if e not in want)
    p = sub.placement(outside)
    assert (p.active, p.probe, p.reason, p.weight) == (False, False, "outside subset", 0.0)


def test_random_uses_every_endpoint_when_fewer_than_size() -> None:
    eps = names(7)
    sub = rand(3).select(eps)
    assert sorted(sub.members) == sorted(eps) and sub.target == 7


def test_random_seed_is_random_per_client_unless_configured() -> None:
    cfg = SubsetConfig(mode="random")
    assert SubsetPlan(cfg, rng=random.Random(5)).seed == random.Random(5).getrandbits(64)
    a, b = SubsetPlan(cfg), SubsetPlan(cfg)
    assert a.seed != b.seed  # 2**-64 chance of a false failure
    eps = names(300)
    assert a.select(eps).members != b.select(eps).members


def test_random_hashes_each_endpoint_once_per_change(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real = subset_mod.xxh64

    def counting(data: bytes, seed: int = 0) -> int:
        nonlocal calls
        calls += 1
        return real(data, seed)

    monkeypatch.setattr(subset_mod, "xxh64", counting)
    eps = names(10_000)
    plan = rand(9)
    t0 = time.perf_counter()
    first = plan.select(eps)
    elapsed = time.perf_counter() - t0
    assert calls == 10_000
    assert elapsed < 2.0, f"10,000 endpoints took {elapsed:.2f} s"
    for _ in range(3):  # state changes only: no hashing
        plan.select(eps, {first.members[0]: "UNREACHABLE"})
    assert calls == 10_000
    plan.select([*eps, "10.9.9.9:50051"])  # one endpoint more: one hash more
    assert calls == 10_001
    plan.select(eps[1:])  # one fewer: nothing to hash
    assert calls == 10_001


@FAST
@given(
    st.integers(0, 60),
    st.integers(1, 25),
    st.integers(0, (1 << 64) - 1),
    st.data(),
)
def test_random_churn_is_at_most_one_member(
    n: int, size: int, seed: int, data: st.DataObject
) -> None:
    """A68: adding or removing one server changes at most one member of the subset."""
    eps = names(n + 1)
    extra = data.draw(st.sampled_from(eps))
    before = [e for e in eps if e != extra]
    a = set(rand(seed, size).select(before).members)
    b = set(rand(seed, size).select(eps).members)  # extra added
    assert len(b - a) <= 1 and len(a - b) <= 1
    if b != a:
        assert b - a == {extra}
    if extra not in b:
        assert a == b  # a server outside the subset changes nothing
    # the same holds for the active subset while some members are being replaced
    down = dict.fromkeys(data.draw(st.sets(st.sampled_from(eps))), "UNREACHABLE")
    a = set(rand(seed, size).select(before, down).members)
    b = set(rand(seed, size).select(eps, down).members)
    assert len(b - a) <= 1 and len(a - b) <= 1


# ----------------------------------------------------------------------------- aperture


def test_aperture_slice_by_hand() -> None:
    # 4 clients, 10 members, aperture 3: width ceil(3*4/10) = 2 client units = 0.5;
    # client 1 starts at 0.25 = member 2.5 and ends at 0.75 = member 7.5
    eps = [f"m{i}" for i in range(10)]
    r = aperture_ranking(eps, 1, 4, 3)
    assert r.order[: r.target] == ("m2", "m3", "m4", "m5", "m6", "m7")
    assert r.weights == (0.5, 1.0, 1.0, 1.0, 1.0, 0.5)
    assert r.order[r.target :] == ("m8", "m9", "m0", "m1")
    sub = aperture(1, 4, size=3, min_aperture=1).select(reversed(eps))
    assert sub.members == r.order[:6]
    assert sub.weights["m2"] == 0.5 and sub.weights["m4"] == 1.0
    assert sub.placement("m2").reason == "aperture slice, weight 0.500"


def test_aperture_width_covers_min_aperture_and_size() -> None:
    eps = names(100)
    # min_aperture wins over a smaller size, size over a smaller min_aperture
    assert len(aperture(0, 100, size=5, min_aperture=12).select(eps).members) == 12
    assert len(aperture(0, 100, size=30, min_aperture=12).select(eps).members) == 30
    # fewer clients than needed to cover the ring with 20 each: wider slices
    sub = aperture(0, 2).select(eps)
    assert len(sub.members) == 50 and all(w == 1.0 for w in sub.weights.values())
    # one client alone talks to everybody
    assert len(aperture(0, 1).select(eps).members) == 100
    # fewer members than the aperture: all of them
    assert len(aperture(3, 10).select(names(5)).members) == 5


@FAST
@given(st.integers(1, 60), st.integers(1, 60), st.integers(1, 30), st.integers(1, 20))
def test_aperture_is_balanced(n: int, c: int, size: int, min_ap: int) -> None:
    """Every member's weight summed over all client coordinates is the same (the slice
    width in client units), and connection counts stay within the documented bound."""
    eps = names(n)
    k = width_units(n, c, max(size, min_ap))
    total = dict.fromkeys(eps, 0.0)
    conns = dict.fromkeys(eps, 0)
    for i in range(c):
        sub = aperture(i, c, size=size, min_aperture=min_ap).select(eps)
        assert len(sub.members) >= min(max(size, min_ap), n)
        for ep, w in sub.weights.items():
            assert 0.0 < w <= 1.0
            total[ep] += w
            conns[ep] += 1
    for ep in eps:
        assert math.isclose(total[ep], k, rel_tol=1e-9), (ep, total[ep], k)
        assert k <= conns[ep] <= min(c, k + math.ceil(c / n))


@FAST
@given(
    st.integers(1, 40),
    st.integers(1, 60),
    st.integers(1, 30),
    st.data(),
)
def test_aperture_churn_within_documented_bound(
    n: int, c: int, ap: int, data: st.DataObject
) -> None:
    """Adding or removing one member changes at most 2 members of a slice, plus
    ceil(M / C) more when the slice width ceil(A * C / M) steps by one client unit."""
    eps = names(n + 1)
    extra = data.draw(st.sampled_from(eps))
    before = [e for e in eps if e != extra]
    i = data.draw(st.integers(0, c - 1))
    a = set(aperture(i, c, size=ap, min_aperture=1).select(before).members)
    b = set(aperture(i, c, size=ap, min_aperture=1).select(eps).members)
    stepped = width_units(n, c, ap) != width_units(n + 1, c, ap)
    bound = 2 + (math.ceil((n + 1) / c) if stepped else 0)
    assert len(b - a) <= bound and len(a - b) <= bound


# ------------------------------------------------------------------ determinism, order


@FAST
@given(st.integers(1, 50), st.sampled_from(["aperture", "random", "deterministic"]), st.randoms())
def test_same_inputs_same_subset(n: int, mode: str, rnd: random.Random) -> None:
    eps = names(n)
    shuffled = list(eps)
    rnd.shuffle(shuffled)
    cfg = SubsetConfig(
        mode=mode, size=7, seed=42, coordinate=SubsetCoordinateConfig(instance=3, instances=11)
    )
    bad = {e: "UNREACHABLE" for e in eps if rnd.random() < 0.3}
    a = SubsetPlan(cfg).select(eps, bad)
    b = SubsetPlan(cfg).select(shuffled, bad)
    assert a.members == b.members and a.weights == b.weights and a.probe == b.probe
    assert a.reasons == b.reasons


def test_deterministic_mode_is_the_sre_book_algorithm() -> None:
    eps = names(100)
    # 100 members / 20 = 5 subsets per round; clients 0..4 are round 0 and share nothing
    seen: set[str] = set()
    for i in range(5):
        cfg = SubsetConfig(
            mode="deterministic", coordinate=SubsetCoordinateConfig(instance=i, instances=50)
        )
        sub = SubsetPlan(cfg).select(eps)
        assert len(sub.members) == 20 and not seen & set(sub.members)
        seen |= set(sub.members)
        shuffled = sorted(eps)
        random.Random(0).shuffle(shuffled)  # the book: random.seed(round); shuffle
        assert sub.members == tuple(shuffled[i * 20 : (i + 1) * 20])
        assert sub.placement(sub.members[0]).reason == f"deterministic subset {i} of round 0"
    assert seen == set(eps)


# ------------------------------------------------------------------------- replacement


def test_replacement_reasons_and_recovery() -> None:
    eps = names(50)
    plan = rand(77, size=5)
    ranked = plan.ranking(eps).order
    healthy = plan.select(eps)
    assert healthy.members == ranked[:5]
    bad = {ranked[1]: "UNREACHABLE", ranked[5]: "NOT_SERVING", ranked[3]: "EJECTED"}
    sub = plan.select(eps, bad)
    assert sub.members == (ranked[0], ranked[2], ranked[4], ranked[6], ranked[7])
    assert sub.replaced == {ranked[1]: ranked[6], ranked[3]: ranked[7]}
    assert sub.probe == ranked[:8]
    assert sub.placement(ranked[6]).reason == f"replaces {ranked[1]} (UNREACHABLE)"
    assert sub.placement(ranked[7]).reason == f"replaces {ranked[3]} (EJECTED)"
    assert sub.placement(ranked[1]).reason == (
        f"random subset rank 2 of 5; UNREACHABLE: replaced by {ranked[6]}"
    )
    p = sub.placement(ranked[5])
    assert (p.active, p.probe) == (False, True)
    assert p.reason == "outside subset (NOT_SERVING; passed over as a replacement)"
    assert sub.placement(ranked[8]).reason == "outside subset"
    assert set(sub.reasons) == set(eps)
    with pytest.raises(KeyError):
        sub.placement("nope:1")
    # ranked[1] recovers: it takes its place back and the last replacement (ranked[7])
    # leaves; ranked[6] now stands in for ranked[3]: one member changed, not two
    again = plan.select(eps, {ranked[3]: "EJECTED", ranked[5]: "NOT_SERVING"})
    assert again.members == (ranked[0], ranked[1], ranked[2], ranked[4], ranked[6])
    assert again.replaced == {ranked[3]: ranked[6]}


def test_aperture_replacement_inherits_the_weight() -> None:
    eps = [f"m{i:02d}" for i in range(10)]
    plan = aperture(1, 4, size=3, min_aperture=1)  # m02 (0.5) .. m07 (0.5), see above
    sub = plan.select(eps, {"m02": State.UNREACHABLE, "m03": "PARTITIONED"})
    assert sub.replaced == {"m02": "m08", "m03": "m09"}
    assert sub.weights["m08"] == 0.5 and sub.weights["m09"] == 1.0
    assert math.isclose(sum(sub.weights.values()), sum(plan.select(eps).weights.values()))
    assert sub.placement("m08").reason == "replaces m02 (UNREACHABLE)"


def test_too_few_usable_members() -> None:
    eps = names(6)
    plan = rand(1, size=4)
    bad = {e: "UNREACHABLE" for e in eps[:4]}
    sub = plan.select(eps, bad)
    assert sorted(sub.members) == sorted(eps[4:])  # every usable member
    assert set(sub.probe) == set(eps)  # and everything probed, to find more
    lonely = [e for e in sub.natural if e in bad and e not in sub.replaced]
    assert lonely
    assert sub.placement(lonely[0]).reason.endswith("no usable member left to replace it")
    assert plan.select(eps, dict.fromkeys(eps, "UNREACHABLE")).members == ()


def test_a_fleet_wide_outage_does_not_probe_the_whole_fleet() -> None:
    eps = names(2000)
    plan = rand(5, size=20)
    sub = plan.select(eps, dict.fromkeys(eps, "UNREACHABLE"))
    assert sub.members == ()
    assert len(sub.probe) == SEARCH_FACTOR * 20  # not 2000 connections per client
    # half the fleet down: the subset still holds 20 usable members
    order = plan.ranking(eps).order
    half = plan.select(eps, dict.fromkeys(order[::2], "UNREACHABLE"))
    assert len(half.members) == 20 and len(half.probe) <= SEARCH_FACTOR * 20


@FAST
@given(
    st.integers(0, 40),
    st.integers(1, 12),
    st.sampled_from(["aperture", "random", "deterministic"]),
    st.data(),
)
def test_replacement_keeps_the_target_while_enough_are_usable(
    n: int, size: int, mode: str, data: st.DataObject
) -> None:
    eps = names(n)
    cfg = SubsetConfig(
        mode=mode,
        size=size,
        min_aperture=1,
        seed=data.draw(st.integers(0, (1 << 64) - 1)),
        coordinate=SubsetCoordinateConfig(instance=2, instances=5),
    )
    plan = SubsetPlan(cfg)
    down = data.draw(st.sets(st.sampled_from(eps))) if eps else set()
    sub = plan.select(eps, dict.fromkeys(down, "UNREACHABLE"))
    order = plan.ranking(eps).order
    searched = order[: SEARCH_FACTOR * sub.target]
    usable = [e for e in searched if e not in down]
    # the active subset is the first `target` usable members of the algorithm's order,
    # looked for among the first SEARCH_FACTOR x target
    assert sub.members == tuple(usable[: sub.target])
    assert len(sub.members) == min(sub.target, len(usable))
    assert set(sub.probe) <= set(searched)
    assert not down & set(sub.members)
    # every natural member that is still usable stays; every replaced one is probed
    assert set(sub.natural) - down <= set(sub.members)
    assert set(sub.members) | (set(sub.natural) & down) <= set(sub.probe)
    assert len(sub.replaced) == len(set(sub.members) - set(sub.natural))
    for old, new in sub.replaced.items():
        assert old in down and new not in sub.natural
        assert sub.weights[new] == plan.select(eps).weights[old]


def test_off_mode_keeps_every_member() -> None:
    plan = SubsetPlan(SubsetConfig())
    eps = names(5)
    sub = plan.select(eps, {eps[1]: "UNREACHABLE"})
    assert sub.mode is None and sub.members == (eps[0], *eps[2:])
    assert sub.probe == tuple(eps) and sub.natural == tuple(eps)
    assert sub.placement(eps[1]).reason == "subsetting off: every member (UNREACHABLE)"


def test_unusable_from_a_status_snapshot() -> None:
    states = {
        "a:1": State.SERVING,
        "b:1": State.UNKNOWN,
        "c:1": State.UNREACHABLE,
        "d:1": State.NOT_SERVING,
        "e:1": State.PARTITIONED,
        "f:1": State.EJECTED,
    }
    snap = StatusSnapshot({k: EndpointStatus(k, state=v) for k, v in states.items()}, 1)
    assert unusable_from(snap) == {
        "c:1": "UNREACHABLE",
        "d:1": "NOT_SERVING",
        "e:1": "PARTITIONED",
        "f:1": "EJECTED",
    }


# -------------------------------------------------------------------------- coordinate


def test_coordinate_from_config_or_environment() -> None:
    cfg = Config.from_dict({"subset": {"mode": "aperture"}}).subset
    env = {ENV_INSTANCE_INDEX: "3", ENV_INSTANCE_COUNT: "10"}
    assert resolve_coordinate(cfg, env) == (3, 10)
    plan = SubsetPlan(cfg, environ=env)
    assert (plan.instance, plan.instances) == (3, 10)
    given_cfg = Config.from_dict(
        {"subset": {"mode": "aperture", "coordinate": {"instance": 1, "instances": 2}}}
    ).subset
    assert resolve_coordinate(given_cfg, env) == (1, 2)  # the config wins
    partly = Config.from_dict({"subset": {"mode": "aperture", "coordinate": {"instance": 9}}})
    assert resolve_coordinate(partly.subset, env) == (9, 10)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {},
            "subset.coordinate.instances: subset mode 'aperture' needs it; set it or "
            "EAGLE_INSTANCE_COUNT",
        ),
        ({ENV_INSTANCE_COUNT: "4"}, "subset.coordinate.instance: subset mode 'aperture' needs"),
        ({ENV_INSTANCE_COUNT: "four", ENV_INSTANCE_INDEX: "0"}, "EAGLE_INSTANCE_COUNT: must be"),
        ({ENV_INSTANCE_COUNT: "0", ENV_INSTANCE_INDEX: "0"}, "EAGLE_INSTANCE_COUNT: must be"),
        ({ENV_INSTANCE_COUNT: "4", ENV_INSTANCE_INDEX: "-1"}, "EAGLE_INSTANCE_INDEX: must be"),
        (
            {ENV_INSTANCE_COUNT: "4", ENV_INSTANCE_INDEX: "4"},
            "EAGLE_INSTANCE_INDEX: must be less than the instance count 4, got 4",
        ),
    ],
)
def test_bad_coordinate_names_the_key_or_variable(env: dict[str, str], message: str) -> None:
    cfg = SubsetConfig(mode="aperture")
    with pytest.raises(ValueError) as err:
        SubsetPlan(cfg, environ=env)
    assert message in str(err.value)


def test_random_mode_needs_no_coordinate() -> None:
    plan = SubsetPlan(SubsetConfig(mode="random", seed=1), environ={})
    assert plan.select(names(3)).members


def test_many_endpoints_are_cheap_for_aperture() -> None:
    eps: Sequence[str] = names(10_000)
    plan = aperture(123, 1000)
    t0 = time.perf_counter()
    sub = plan.select(eps)
    for k in range(10):
        plan.select(eps, {sub.members[k]: "UNREACHABLE"})
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"took {elapsed:.2f} s"
    # 1000 clients over 10,000 members, aperture 20: ceil(20 * 1000 / 10000) = 2 client
    # units = exactly 20 members each
    assert len(sub.members) == 20


# ------------------------------------------------------------------- fleet simulation


def test_binomial_expectation_for_uncoordinated_random_subsets() -> None:
    from benchmarks.fleet import binomial_expected_max

    b = binomial_expected_max(1000, 1000, 20)
    assert b["mean"] == 20.0
    assert 1.7 < b["max_over_mean"] < 1.85  # "about 1.7" for 1,000 x 1,000 x 20
    # a single server: the max is the count itself
    assert math.isclose(binomial_expected_max(50, 1, 1)["max_over_mean"], 1.0)


def test_small_fleet_simulation_meets_the_bounds() -> None:
    from benchmarks.fleet import simulate

    r = simulate(clients=60, servers=40, size=5, events=3, mc_trials=2, random_fleets=2)
    ap, rnd = r["modes"]["aperture"], r["modes"]["random"]
    k = width_units(40, 60, 12)  # min_aperture 12 > size 5
    assert ap["connections"]["max"] <= k + math.ceil(60 / 40)
    assert math.isclose(ap["load"]["max_over_mean"], 1.0)
    assert ap["churn_add"]["max"] <= ap["churn_bound"]["add"]
    assert ap["churn_remove"]["max"] <= ap["churn_bound"]["remove"]
    assert rnd["churn_add"]["max"] <= 1 and rnd["churn_remove"]["max"] <= 1
    assert rnd["connections"]["mean"] == 60 * 5 / 40
    assert len(rnd["fleets"]["max_over_mean"]) == 2
    assert r["no_subsetting"]["probes_per_server_s"] == 60 / Config().health.interval
