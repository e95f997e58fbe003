"""Fleet: 1,000 clients x 1,000 servers with subsetting, simulated on the sans-IO core.

No sockets and no servers: each simulated client owns a real
:class:`eagle.core.subset.SubsetPlan` and asks it for its subset, exactly as a channel
would. For each mode (``aperture``, ``random`` = gRPC A68, ``deterministic`` = the SRE
book's, for comparison) it reports:

* connections per server (max / mean): how evenly the subsets spread over the servers,
  and for ``aperture`` also the weighted load (each client spreading its calls over its
  slice by weight, as a weighted P2C would);
* probes per server per second at the default ``health.interval`` (every client probes
  each member of its subset once per interval), against every client probing every
  server without subsetting;
* churn: members changed per client (``max(joined, left)``) when one server is added or
  removed, over several such events.

The yardstick for ``random`` is the expectation for uncoordinated random subsets: each
server's connection count is Binomial(C, size / M); the expected busiest of M servers is
computed from the binomial tail (servers taken as independent) and by Monte Carlo
(``random.sample`` per client).

Run alone: ``python -m benchmarks.fleet`` (same as ``--scenarios fleet``).
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from eagle.config import Config, SubsetConfig, SubsetCoordinateConfig
from eagle.core.subset import SubsetPlan

from .common import Ctx

CLIENTS = 1000
SERVERS = 1000
SIZE = 20
SEED = 20240415  # the simulation's own seed: every run draws the same A68 seeds
MODES = ("aperture", "random", "deterministic")

#: targets: aperture's busiest server has at most this many times the mean connections
APERTURE_MAX_MEAN = 1.05


def server_names(n: int) -> list[str]:
    """``n`` distinct server addresses (10.x.y.z:50051)."""
    return [f"10.{i // 62500}.{(i // 250) % 250}.{i % 250}:50051" for i in range(n)]


def aperture_churn_bound(servers: int, clients: int, aperture: int, added: bool) -> int:
    """The documented bound (docs/configuration.md, ``eagle.core.subset``): 2 members,
    plus ``ceil(M / C)`` when the slice width ``ceil(A * C / M)`` steps by one unit."""
    after = servers + 1 if added else servers - 1

    def units(m: int) -> int:
        return min(clients, -(-min(aperture, m) * clients // m))

    step = units(servers) != units(after)
    return 2 + (math.ceil(max(servers, after) / clients) if step else 0)


def binomial_expected_max(clients: int, servers: int, size: int) -> dict[str, float]:
    """E[max] of ``servers`` independent Binomial(clients, size/servers) counts, from the
    tail: E[max] = sum over m of (1 - F(m) ** servers)."""
    p = size / servers
    mean = clients * p
    if p >= 1.0:  # every client uses every server
        return {"mean": mean, "expected_max": mean, "max_over_mean": 1.0}
    log_p, log_q = math.log(p), math.log1p(-p)
    cdf = 0.0
    expected = 0.0
    for m in range(clients + 1):
        log_pmf = (
            math.lgamma(clients + 1)
            - math.lgamma(m + 1)
            - math.lgamma(clients - m + 1)
            + m * log_p
            + (clients - m) * log_q
        )
        cdf = min(1.0, cdf + math.exp(log_pmf))
        tail = 1.0 - cdf**servers
        expected += tail
        if m > mean and tail < 1e-12:
            break
    return {"mean": mean, "expected_max": expected, "max_over_mean": expected / mean}


def monte_carlo_max(
    clients: int, servers: int, size: int, trials: int, rng: random.Random
) -> dict[str, float]:
    """Max/mean of connection counts when each client picks ``size`` servers at random."""
    ratios = []
    population = range(servers)
    for _ in range(trials):
        counts = [0] * servers
        for _ in range(clients):
            for s in rng.sample(population, size):
                counts[s] += 1
        ratios.append(max(counts) / (clients * size / servers))
    return {
        "trials": trials,
        "max_over_mean": statistics.fmean(ratios),
        "p95": sorted(ratios)[int(0.95 * (len(ratios) - 1))],
    }


def _plans(mode: str, clients: int, size: int, rng: random.Random) -> list[SubsetPlan]:
    plans = []
    for i in range(clients):
        cfg = SubsetConfig(
            mode=mode,
            size=size,
            coordinate=SubsetCoordinateConfig(instance=i, instances=clients),
            seed=rng.getrandbits(64) if mode == "random" else None,
        )
        plans.append(SubsetPlan(cfg))
    return plans


def _spread(values: Sequence[float]) -> dict[str, float]:
    mean = statistics.fmean(values)
    return {
        "min": min(values),
        "mean": mean,
        "max": max(values),
        "max_over_mean": max(values) / mean if mean else 0.0,
    }


def _fleet_stats(
    plans: Sequence[SubsetPlan], servers: Sequence[str], interval: float
) -> tuple[dict[str, Any], list[frozenset[str]]]:
    conns = dict.fromkeys(servers, 0)
    load = dict.fromkeys(servers, 0.0)
    subsets = []
    sizes = []
    for plan in plans:
        sub = plan.select(servers)
        total = sum(sub.weights.values())
        for ep, w in sub.weights.items():
            conns[ep] += 1
            load[ep] += w / total  # each client sends one unit of load, by weight
        subsets.append(frozenset(sub.members))
        sizes.append(len(sub.members))
    c = list(conns.values())
    stats = {
        "servers": len(servers),
        "connections": _spread(c),
        "load": _spread(list(load.values())),
        "members_per_client": _spread(sizes),
        "probes_per_server_s": {"mean": statistics.fmean(c) / interval, "max": max(c) / interval},
    }
    return stats, subsets


def _churn(
    plans: Sequence[SubsetPlan], before: Sequence[frozenset[str]], servers: Sequence[str]
) -> dict[str, Any]:
    changed = []
    for plan, old in zip(plans, before, strict=True):
        new = frozenset(plan.select(servers).members)
        changed.append(max(len(new - old), len(old - new)))
    hist: dict[str, int] = {}
    for c in changed:
        hist[str(c)] = hist.get(str(c), 0) + 1
    return {"max": max(changed), "mean": statistics.fmean(changed), "histogram": hist}


def simulate(
    clients: int = CLIENTS,
    servers: int = SERVERS,
    size: int = SIZE,
    events: int = 5,
    mc_trials: int = 20,
    random_fleets: int = 4,
    modes: Sequence[str] = MODES,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """The whole simulation: ``events`` add- and remove-one-server events per mode,
    ``mc_trials`` Monte Carlo fleets of plain random subsets, ``random_fleets`` A68 fleets
    (independent seeds) for the spread of the busiest server."""
    t_start = time.monotonic()
    defaults = Config()
    interval = defaults.health.interval
    min_aperture = defaults.subset.min_aperture
    events_rng = random.Random(SEED + 2)  # one stream per purpose: the draws of one do
    names = server_names(servers)  # not move when another changes
    # a newcomer shares a host with a random server on another port, so it lands at a
    # random place in the sorted order (the aperture ring) rather than always at the end
    newcomers = [n.replace(":50051", ":50052") for n in events_rng.sample(names, events)]
    leavers = events_rng.sample(names, events)
    out: dict[str, Any] = {
        "clients": clients,
        "servers": servers,
        "size": size,
        "min_aperture": min_aperture,
        "health_interval": interval,
        "events": events,
        "seed": SEED,
        "random_fleets": random_fleets,
        "no_subsetting": {
            "connections_per_server": clients,
            "probes_per_server_s": clients / interval,
            "connections_total": clients * servers,
        },
        "modes": {},
    }
    progress("fleet: binomial expectation")
    out["binomial"] = binomial_expected_max(clients, servers, size)
    out["binomial"]["monte_carlo"] = monte_carlo_max(
        clients, servers, size, mc_trials, random.Random(SEED + 1)
    )
    for mode in modes:
        progress(f"fleet: {mode}")
        t0 = time.monotonic()
        plans = _plans(mode, clients, size, random.Random(SEED))
        stats, base = _fleet_stats(plans, names, interval)
        stats["connections_total"] = sum(len(s) for s in base)
        t_build = time.monotonic() - t0
        adds, removes = [], []
        for k in range(events):
            added = [*names, newcomers[k]]
            add = _churn(plans, base, added)
            if k == 0:
                after, _ = _fleet_stats(plans, added, interval)
                stats["after_add"] = {
                    "connections": after["connections"],
                    "load": after["load"],
                    "members_per_client": after["members_per_client"],
                }
            add["server"] = newcomers[k]
            adds.append(add)
            gone = leavers[k]
            rem = _churn(plans, base, [n for n in names if n != gone])
            rem["server"] = gone
            removes.append(rem)
        stats["churn_add"] = {
            "max": max(a["max"] for a in adds),
            "mean": statistics.fmean(a["mean"] for a in adds),
            "events": adds,
        }
        stats["churn_remove"] = {
            "max": max(r["max"] for r in removes),
            "mean": statistics.fmean(r["mean"] for r in removes),
            "events": removes,
        }
        if mode == "random" and random_fleets > 1:
            # one fleet's busiest server is one draw: more fleets (other A68 seeds) show
            # the spread; the first is the fleet above
            ratios = [stats["connections"]["max_over_mean"]]
            for f in range(1, random_fleets):
                progress(f"fleet: random, fleet {f + 1} of {random_fleets}")
                more, _ = _fleet_stats(
                    _plans(mode, clients, size, random.Random(SEED + 100 + f)), names, interval
                )
                ratios.append(more["connections"]["max_over_mean"])
            stats["fleets"] = {
                "count": random_fleets,
                "max_over_mean": ratios,
                "mean_max_over_mean": statistics.fmean(ratios),
            }
        if mode == "aperture":
            ap = max(min_aperture, size)
            stats["churn_bound"] = {
                "add": aperture_churn_bound(servers, clients, ap, added=True),
                "remove": aperture_churn_bound(servers, clients, ap, added=False),
            }
        stats["build_s"] = t_build
        stats["elapsed_s"] = time.monotonic() - t0
        out["modes"][mode] = stats
    out["elapsed_s"] = time.monotonic() - t_start
    return out


def run_fleet(ctx: Ctx) -> dict[str, Any]:
    """The ``fleet`` scenario (quick mode: fewer churn events and Monte Carlo trials)."""
    quick = ctx.opts.quick
    t0 = time.monotonic()
    ctx.stage("fleet: simulating 1000 x 1000", 4 if quick else 20)

    def progress(msg: str) -> None:
        ctx.log(msg)
        ctx.advance_to(time.monotonic() - t0)

    out = simulate(
        events=2 if quick else 5,
        mc_trials=5 if quick else 20,
        random_fleets=2 if quick else 4,
        progress=progress,
    )
    ctx.end_stage()
    return out


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(["--scenarios", "fleet", *sys.argv[1:]]))
