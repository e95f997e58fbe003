"""Scale: 256 and 1024 endpoints served by one server process listening on that many ports.

For each N, one after another, each in a fresh process with nothing else running in it:

* eagle sync and eagle asyncio with ``health.interval`` 1 s: time from creating the
  channel until every endpoint has had a probe answer (or failure), then the prober's CPU
  over a quiet window (no calls) as CPU seconds per interval and % of one core, RSS growth
  per endpoint (sub-channel and connection included), the states the probes settled on,
  and how many prober ticks APScheduler skipped because the previous one was still
  running;
* bare grpcio: N ``grpc.insecure_channel`` objects, each connected with one health
  ``Check``: what grpcio itself costs per channel, for comparison;
* pick cost at N (``Balancer.pick``, as in ``overhead``).
"""

from __future__ import annotations

import time
from typing import Any

from eagle.testing.cluster import LocalCluster

from .clients import ClientSpec, eagle
from .common import Ctx
from .overhead import run_pick_cost
from .procs import start_workers

SIZES = (256, 1024)


def add_marginal(out: dict[str, Any]) -> None:
    """KiB per endpoint between the two sizes: (growth at 1024 - growth at 256) / 768,
    which leaves out what a channel costs whatever its number of endpoints."""
    sizes = out.get("sizes", {})
    lo, hi = sizes.get(str(SIZES[0])), sizes.get(str(SIZES[-1]))
    out["marginal_kib"] = {}
    if not lo or not hi:
        return
    for label, c_hi in hi["clients"].items():
        c_lo = lo["clients"].get(label)
        if c_lo is None:
            continue
        g_hi = c_hi["rss_after_kib"] - c_hi["rss_before_kib"]
        g_lo = c_lo["rss_after_kib"] - c_lo["rss_before_kib"]
        out["marginal_kib"][label] = (g_hi - g_lo) / (SIZES[-1] - SIZES[0])


def run_scale(ctx: Ctx) -> dict[str, Any]:
    quick = ctx.opts.quick
    window = 1.0 if quick else 5.0
    bare = ClientSpec(label="grpc-bare-channels", family="grpc", mode="sync", setup="plain")
    clients = ctx.select(
        [eagle("sync", "scale"), eagle("aio", "scale"), bare], ("grpc-bare-channels",)
    )
    out: dict[str, Any] = {"window": window, "sizes": {}}
    sizes = SIZES[-1:] if quick else SIZES  # quick: the largest N only
    out["sizes_run"] = list(sizes)
    for n in sizes:
        ctx.stage(f"scale: {n} endpoints", len(clients) * (window + 5))
        t_stage = time.monotonic()
        entry: dict[str, Any] = {"clients": {}}
        with LocalCluster.many_ports(n) as cluster:
            endpoints = cluster.endpoints
            for c in clients:
                spec = {
                    "job": "scale",
                    "client": c.to_json(),
                    "endpoints": endpoints,
                    "window": window,
                    "settle": 0.5 if quick else 1.0,
                }
                [w] = start_workers([(f"{c.label}-{n}", spec)], ctx.logs / "scale")
                try:
                    w.go(time.monotonic() + 0.1, window, ctx.raw / f"scale-{c.label}-{n}.json")
                    r = w.wait_done(
                        window + 90, tick=lambda ts=t_stage: ctx.advance_to(time.monotonic() - ts)
                    )
                finally:
                    w.close()
                if c.is_eagle:
                    interval = 1.0
                    r["cpu_per_interval_s"] = r["cpu_per_s"] * interval
                    r["core_pct"] = 100.0 * r["cpu_per_s"]
                entry["clients"][c.label] = r
        out["sizes"][str(n)] = entry
    add_marginal(out)
    ctx.stage("scale: pick cost", 4)
    out["pick"] = run_pick_cost(
        ctx, SIZES, name="pick-scale", seconds_per_case=0.2 if quick else 0.4
    )
    ctx.end_stage()
    return out
