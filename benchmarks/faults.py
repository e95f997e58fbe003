"""The fault matrix: steady, crash, hang, drain, slow and flap on 3 real echo servers.

Every client of a scenario runs at the same time, each in its own process, against the
same three members, and the fault hits member 0 (the first endpoint, the one a plain
channel and ``pick_first`` use) at the same moment for all of them. Load is paced: each
client sends ``--rate`` calls/s from ``--concurrency`` threads (asyncio: tasks), every
call with a ``--deadline`` deadline; a thread stuck in a call does not burst to catch up.
"""

from __future__ import annotations

import time
from typing import Any

from eagle.testing.cluster import LocalCluster

from . import analysis
from .clients import BASELINE, NATIVE, ClientSpec, eagle, grpc_client, streamed
from .common import Ctx, rel
from .procs import close_all, collect, load_spec, start_workers

FAULT_SCENARIOS = ("steady", "crash", "restart", "hang", "drain", "slow", "flap")

#: ``restart``: how long the killed member stays down
RESTART_AFTER = 2.0

DESCRIPTIONS = {
    "steady": "no fault",
    "crash": "SIGKILL member 0 at t_fault; it stays down",
    "restart": f"SIGKILL member 0 at t_fault; restarted on the same port {RESTART_AFTER:g} s later",
    "hang": "SIGSTOP member 0 at t_fault; it stays frozen (SIGCONT at cleanup)",
    "drain": "member 0's health turns NOT_SERVING at t_fault (it still answers calls)",
    "slow": "+200 ms on every Echo call of member 0 from t_fault (health stays fast)",
    "flap": "member 0 frozen (SIGSTOP) for 1 s, resumed (SIGCONT) for 1 s, repeatedly",
}

VICTIM = 0
SERVER_MAP = {"m0": 0, "m1": 1, "m2": 2}


def clients_for(scenario: str) -> list[ClientSpec]:
    if scenario == "steady":
        eagles = [eagle("sync"), eagle("aio"), eagle("sync", "p2c"), eagle("aio", "p2c")]
    elif scenario == "hang":
        eagles = [
            eagle("sync"),
            eagle("sync", "hi0.2"),
            eagle("sync", "hi0.2-idem"),
            eagle("sync", "pertry"),
            eagle("aio", "hi0.2"),
            eagle("aio", "hi0.2-idem"),
        ]
    elif scenario == "crash":
        # a call in flight on the killed member may have been applied: eagle re-sends it
        # only for methods declared idempotent (Echo/Unary is a read). Client-streaming
        # and bidi calls right after the kill must never be placed on the dead member
        # (issue 10), next to grpcio's round_robin making the same calls
        eagles = [eagle("sync"), eagle("aio"), eagle("sync", "idem"), eagle("aio", "idem")]
        eagles += [
            streamed(c, kind)
            for kind in ("cstream", "bidi")
            for c in (eagle("sync"), eagle("aio"), grpc_client("rr"), grpc_client("rr", "aio"))
        ]
    elif scenario == "slow":
        eagles = [eagle("sync"), eagle("sync", "p2c"), eagle("aio", "p2c")]
    else:
        eagles = [eagle("sync"), eagle("aio")]
    # every scenario again with subsetting on
    eagles += [eagle("sync", "subset"), eagle("aio", "subset")]
    return eagles + NATIVE


def _apply(cluster: LocalCluster, scenario: str) -> None:
    if scenario in ("crash", "restart"):
        cluster.kill(VICTIM)
    elif scenario in ("hang", "flap"):
        cluster.stop(VICTIM)
    elif scenario == "drain":
        cluster.drain(VICTIM)
    elif scenario == "slow":
        cluster.slow(VICTIM, 200)


def run_fault_scenario(ctx: Ctx, scenario: str) -> dict[str, Any]:
    opts = ctx.opts
    clients = ctx.select(clients_for(scenario), (BASELINE,))
    duration = opts.duration
    if scenario == "restart":  # the member must come back and serve within the run
        duration = max(duration, opts.fault_at + RESTART_AFTER + 3.0)
    t_fault_plan = opts.fault_at
    ctx.stage(f"{scenario}: starting {len(clients)} clients", duration + 6)
    events: list[tuple[float, str]] = []
    timing: dict[str, float] = {}
    t_mark = time.monotonic()
    with LocalCluster(3) as cluster:
        timing["cluster_start"] = time.monotonic() - t_mark
        endpoints = cluster.endpoints
        specs = [
            (
                c.label,
                load_spec(
                    c,
                    endpoints,
                    concurrency=opts.concurrency,
                    rate=opts.rate,
                    deadline=opts.deadline,
                    method=c.extra.get("method", "echo"),
                    server_map=SERVER_MAP,
                ),
            )
            for c in clients
        ]
        t_mark = time.monotonic()
        workers = start_workers(specs, ctx.logs / scenario)
        timing["workers_start"] = time.monotonic() - t_mark
        try:
            t0 = time.monotonic() + 0.5
            for w in workers:
                w.go(t0, duration, ctx.raw / f"{scenario}-{w.name}.json")
            ctx.stage(f"{scenario}: load running", duration)
            t_fault = None
            if scenario != "steady":
                ctx.sleep_until(t0 + t_fault_plan, t0)
                before = rel(t0)
                _apply(cluster, scenario)
                t_fault = (before + rel(t0)) / 2
                events.append((t_fault, DESCRIPTIONS[scenario].split(" at ")[0]))
                if scenario == "restart":
                    ctx.sleep_until(t0 + t_fault_plan + RESTART_AFTER, t0)
                    before = rel(t0)
                    cluster.restart(VICTIM)
                    t_restart = (before + rel(t0)) / 2
                    events.append((t_restart, "restarted"))
                    timing["t_restart"] = t_restart
                if scenario == "flap":
                    down = True
                    nxt = t0 + t_fault + 1.0
                    while nxt < t0 + duration - 0.3:
                        ctx.sleep_until(nxt, t0)
                        if down:
                            cluster.cont(VICTIM)
                        else:
                            cluster.stop(VICTIM)
                        down = not down
                        events.append((rel(t0), "stop" if down else "cont"))
                        nxt += 1.0
                    if down:
                        cluster.cont(VICTIM)
            ctx.sleep_until(t0 + duration, t0)
            ctx.stage(f"{scenario}: collecting", 1)
            t_mark = time.monotonic()
            results = collect(workers, duration, grace=opts.deadline * 6 + 20)
            timing["collect"] = time.monotonic() - t_mark
        finally:
            t_mark = time.monotonic()
            close_all(workers)
            timing["workers_close"] = time.monotonic() - t_mark
            t_mark = time.monotonic()
    timing["cluster_close"] = time.monotonic() - t_mark
    out: dict[str, Any] = {
        "description": DESCRIPTIONS[scenario],
        "duration": duration,
        "t_fault": t_fault,
        "events": events,
        "timing": timing,
        "victim": endpoints[VICTIM],
        "endpoints": endpoints,
        "clients": {},
    }
    for c, r in zip(clients, results, strict=True):
        entry: dict[str, Any] = {
            "spec": c.to_json(),
            "basic": analysis.basic(r, duration),
            "timeseries": analysis.timeseries(r, duration),
        }
        if t_fault is not None:
            entry["fault"] = analysis.fault_metrics(
                r,
                scenario=scenario,
                t_fault=t_fault,
                duration=duration,
                victim=VICTIM,
                victim_endpoint=endpoints[VICTIM],
            )
        if scenario == "restart" and "t_restart" in timing:
            entry["restart"] = analysis.restart_metrics(
                r, t_restart=timing["t_restart"], victim=VICTIM, victim_endpoint=endpoints[VICTIM]
            )
        if c.is_eagle:
            entry["eagle_stats"] = r.get("eagle_stats")
            entry["transitions"] = r.get("transitions", [])[:50]
            entry["final_states"] = r.get("final_states")
        out["clients"][c.label] = entry
    ctx.end_stage()
    return out
