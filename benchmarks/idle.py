"""Idle cost: what an idle channel over 3 healthy members costs the client process.

Each client in its own process, one after another (nothing else runs in it): a channel
over 3 real members with eagle's default config, made ready (eagle: every member SERVING;
then a call to each member), left alone until it is idle (eagle: ``NO_TRAFFIC_AFTER``
without a call, after which it probes every ``health.no_traffic_interval``), then its
process's CPU time is measured over a quiet window with no calls. Beside it, in the same
run, the same for a plain grpcio ``round_robin`` channel (sync and asyncio), which sends
nothing when idle.

Issue 11: an idle 3-member eagle channel with the default config uses at most 0.3 % of
one core, sync and asyncio.
"""

from __future__ import annotations

import time
from typing import Any

from eagle.core.balancer import NO_TRAFFIC_AFTER
from eagle.testing.cluster import LocalCluster

from .clients import eagle, grpc_client
from .common import Ctx
from .procs import start_workers


def run_idle(ctx: Ctx) -> dict[str, Any]:
    quick = ctx.opts.quick
    window = 3.0 if quick else 10.0
    clients = ctx.select(
        [eagle("sync"), eagle("aio"), grpc_client("rr"), grpc_client("rr", "aio")],
        ("grpc-rr",),
    )
    out: dict[str, Any] = {"window": window, "clients": {}}
    ctx.stage("idle: channels doing nothing", len(clients) * (window + 4) + 2 * NO_TRAFFIC_AFTER)
    t_stage = time.monotonic()
    with LocalCluster(3) as cluster:
        for c in clients:
            spec = {
                "job": "idle",
                "client": c.to_json(),
                "endpoints": cluster.endpoints,
                # eagle slows its probes once no call came for NO_TRAFFIC_AFTER: measure
                # the channel as it stays when idle, not the seconds after its last call
                "settle": NO_TRAFFIC_AFTER + 1.0 if c.is_eagle else 1.0,
            }
            [w] = start_workers([(c.label, spec)], ctx.logs / "idle")
            try:
                w.go(time.monotonic() + 0.1, window, ctx.raw / f"idle-{c.label}.json")
                r = w.wait_done(window + 60)
            finally:
                w.close()
            r["spec"] = c.to_json()
            out["clients"][c.label] = r
            ctx.advance_to(time.monotonic() - t_stage)
    ctx.end_stage()
    return out
