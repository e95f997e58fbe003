"""Issue 2 failover: 3 servers, 4 threads, 1 s deadline, 8 s run, SIGSTOP one at t = 2 s.

eagle (sync, ``health.interval`` 0.2 s) against grpcio ``round_robin`` +
``healthCheckConfig`` over an ``ipv4:`` multi-address target. Each client gets a fresh
cluster of its own and runs alone (closed loop, no pacing: as many calls as 4 threads
can make). Reported for each: calls that failed after the fault, when the last failing
call was sent, and when calls stopped failing.

Run alone: ``python -m benchmarks.failover`` (same as ``--scenarios failover``).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from eagle.testing.cluster import LocalCluster

from . import analysis
from .clients import eagle, grpc_client
from .common import Ctx, rel
from .procs import load_spec, start_workers

THREADS = 4
DEADLINE = 1.0


def run_failover(ctx: Ctx) -> dict[str, Any]:
    quick = ctx.opts.quick
    duration = 3.0 if quick else 8.0
    t_plan = 1.0 if quick else 2.0
    clients = ctx.select(
        [eagle("sync", "hi0.2"), eagle("sync", "hi0.2-idem"), grpc_client("rr_hc")],
        ("grpc-rr-hc",),
    )
    out: dict[str, Any] = {
        "duration": duration,
        "threads": THREADS,
        "deadline": DEADLINE,
        "t_plan": t_plan,
        "clients": {},
    }
    for c in clients:
        ctx.stage(f"failover: {c.label}", duration + 3)
        with LocalCluster(3) as cluster:
            endpoints = cluster.endpoints
            spec = load_spec(
                c,
                endpoints,
                concurrency=THREADS,
                rate=0.0,
                deadline=DEADLINE,
                server_map={"m0": 0, "m1": 1, "m2": 2},
            )
            [w] = start_workers([(c.label, spec)], ctx.logs / "failover")
            try:
                t0 = time.monotonic() + 0.3
                w.go(t0, duration, ctx.raw / f"failover-{c.label}.json")
                ctx.sleep_until(t0 + t_plan, t0)
                before = rel(t0)
                cluster.stop(0)
                t_fault = (before + rel(t0)) / 2
                ctx.sleep_until(t0 + duration, t0)
                r = w.wait_done(duration + 30)
            finally:
                w.close()
        out["clients"][c.label] = {
            "spec": c.to_json(),
            "t_fault": t_fault,
            "basic": analysis.basic(r, duration),
            "fault": analysis.fault_metrics(
                r,
                scenario="hang",
                t_fault=t_fault,
                duration=duration,
                victim=0,
                victim_endpoint=endpoints[0],
            ),
            "timeseries": analysis.timeseries(r, duration),
            "eagle_stats": r.get("eagle_stats"),
        }
    ctx.end_stage()
    return out


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(["--scenarios", "failover", *sys.argv[1:]]))
