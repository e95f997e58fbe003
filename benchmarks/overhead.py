"""Issue 2 overhead: unary calls/s through eagle vs grpcio ``round_robin``, and pick cost.

* sync, one thread, as fast as possible; asyncio, 16 concurrent calls;
* the same 3 healthy members for every client; each client in its own process; runs
  are interleaved (eagle, grpcio, eagle, grpcio, ...) and the median of the rounds is
  compared, so a burst of load from elsewhere on the machine hits both sides alike;
* pick cost: ``Balancer.pick`` over N SERVING members built directly from
  ``eagle.parse_endpoints`` and ``eagle.Config()`` (best of 7 rounds, in its own process).

Run alone: ``python -m benchmarks.overhead`` (same as ``--scenarios overhead``).
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from eagle.testing.cluster import LocalCluster

from . import analysis
from .clients import ClientSpec, eagle, grpc_client
from .common import Ctx
from .procs import Worker, close_all, load_spec, start_workers

PICK_SIZES = (3, 256, 1000, 1024)
PICK_POLICIES = ("round_robin", "p2c")


def run_pick_cost(
    ctx: Ctx, sizes: tuple[int, ...], name: str = "pick", seconds_per_case: float = 0.4
) -> dict[str, Any]:
    spec = {
        "job": "pick",
        "sizes": list(sizes),
        "policies": list(PICK_POLICIES),
        "seconds_per_case": seconds_per_case,
    }
    [w] = start_workers([(name, spec)], ctx.logs / "pick")
    try:
        w.go(time.monotonic() + 0.1, 0, ctx.raw / f"{name}.json")
        result = w.wait_done(120)
    finally:
        w.close()
    return result


def set_ratios(g: dict[str, Any]) -> None:
    """The group's headline ratio: the median of the per-round eagle/baseline ratios
    (paired, interleaved runs); the ratio of the medians is kept beside it."""
    e = [r["calls_per_s"] for r in g["clients"][g["eagle"]]["runs"]]
    b = [r["calls_per_s"] for r in g["clients"][g["baseline"]]["runs"]]
    g["ratio"], g["round_ratios"] = analysis.paired_ratio(e, b)
    g["ratio_of_medians"] = analysis.ratio(
        g["clients"][g["eagle"]]["calls_per_s"], g["clients"][g["baseline"]]["calls_per_s"]
    )


def _round(ctx: Ctx, w: Worker, duration: float, name: str, tag: str) -> dict[str, Any]:
    t0 = time.monotonic() + 0.2
    w.go(t0, duration, ctx.raw / f"{tag}-{name}.json")
    ctx.sleep_until(t0 + duration)
    r = w.wait_done(duration + 30)
    b = analysis.basic(r, duration)
    return {
        "calls_per_s": b["calls"] / duration,
        "ok_per_s": b["throughput"],
        "failed": b["failed"],
        "p50_ms": b["p50_ms"],
        "p99_ms": b["p99_ms"],
        "cpu_per_1000": b["cpu_per_1000"],
        "max_rss_mib": b["max_rss_mib"],
    }


Group = tuple[str, int, list[ClientSpec]]


def measure_groups(
    ctx: Ctx, groups: list[Group], rounds: int, duration: float, tag: str
) -> dict[str, Any]:
    """Paired, interleaved rounds of each group's clients on one 3-member cluster: the
    first client of a group is measured against the second (its baseline), the order
    reversed every other round. Returns the groups' results (see :func:`set_ratios`)."""
    out: dict[str, Any] = {}
    t_stage = time.monotonic()
    with LocalCluster(3) as cluster:
        endpoints = cluster.endpoints
        for gname, conc, clients in groups:
            specs = [
                (
                    f"{c.label}-c{conc}",
                    load_spec(
                        c,
                        endpoints,
                        concurrency=conc,
                        rate=0.0,
                        deadline=ctx.opts.deadline,
                        warmup_s=0.5,
                    ),
                )
                for c in clients
            ]
            workers = start_workers(specs, ctx.logs / tag)
            try:
                per: dict[str, list[dict[str, Any]]] = {c.label: [] for c in clients}
                for i in range(rounds):
                    order = list(zip(clients, workers, strict=True))
                    if i % 2:
                        order.reverse()
                    for c, w in order:
                        per[c.label].append(_round(ctx, w, duration, f"{w.name}-r{i}", tag))
                        ctx.advance_to(time.monotonic() - t_stage)
            finally:
                close_all(workers)
            g: dict[str, Any] = {"concurrency": conc, "clients": {}}
            for c in clients:
                runs = per[c.label]
                g["clients"][c.label] = {
                    "spec": c.to_json(),
                    "runs": runs,
                    "calls_per_s": statistics.median(r["calls_per_s"] for r in runs),
                    "p50_ms": statistics.median(r["p50_ms"] for r in runs if r["p50_ms"]),
                    "p99_ms": statistics.median(r["p99_ms"] for r in runs if r["p99_ms"]),
                    "cpu_per_1000": statistics.median(
                        r["cpu_per_1000"] for r in runs if r["cpu_per_1000"]
                    ),
                    "max_rss_mib": max(r["max_rss_mib"] for r in runs),
                }
            g["eagle"] = clients[0].label
            g["baseline"] = clients[1].label
            set_ratios(g)
            out[gname] = g
    return out


def run_overhead(ctx: Ctx) -> dict[str, Any]:
    quick = ctx.opts.quick
    # many short paired rounds: the median of per-round ratios resists the bursts of load
    # a shared machine has better than a few long rounds
    rounds = 2 if quick else 9
    duration = 0.8 if quick else 1.5
    groups: list[Group] = [
        ("sync, 1 thread", 1, [eagle("sync"), grpc_client("rr")]),
        ("asyncio, 16 concurrent", 16, [eagle("aio"), grpc_client("rr", "aio")]),
    ]
    if not quick:
        # for information: health-checked round robin and a plain channel, sync
        groups[0][2].extend([grpc_client("rr_hc"), grpc_client("plain")])
    total = sum(len(g[2]) for g in groups) * rounds * (duration + 0.4) + 4
    ctx.stage("overhead: unary calls/s", total)
    out: dict[str, Any] = {"rounds": rounds, "duration": duration}
    out["groups"] = measure_groups(ctx, groups, rounds, duration, "overhead")
    ctx.stage("overhead: pick cost", 8)
    out["pick"] = run_pick_cost(ctx, PICK_SIZES, seconds_per_case=0.1 if quick else 0.4)
    ctx.end_stage()
    return out


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(["--scenarios", "overhead", *sys.argv[1:]]))
