"""Scale: many endpoints, each client alone in a fresh process with nothing else running.

Full mesh (every client connects to and probes every endpoint), 256 and 1024 endpoints
served by one server process listening on that many ports:

* eagle sync and asyncio with three health setups: ``scale`` (a ``Check`` to every
  endpoint every second), ``scale-watch`` (``health.mode: watch``: ``Health/Watch``
  streams, a ``Check`` every 2.5 s), ``scale-watch-ka`` (watch mode with HTTP/2 keepalive
  every second, which the test servers allow, and a ``Check`` every 30 s). Each: time
  until every endpoint has had a probe answer, then CPU over a quiet window (no calls) as
  % of one core, RSS growth per endpoint (sub-channel and connection included), the
  states the probes settled on, and how many prober ticks APScheduler skipped;
* bare grpcio: N ``grpc.insecure_channel`` objects, each connected with one health
  ``Check``: what grpcio itself costs per channel, for comparison; and the same with one
  ``Health/Watch`` stream open on each and keepalive every second (``grpc-bare-watch``):
  grpcio's own cost for a sync client holding a stream to every member, the floor under
  eagle's sync watch mode.

Detection at 1024 endpoints (1021 on the many-ports server plus 3 member processes of
their own): with each watch setup, one member is crashed (SIGKILL), one drained
(NOT_SERVING) and one frozen (SIGSTOP) while the channel is idle; the time until the
channel shows each out.

Subsetting at 10,000 endpoints (4 server processes x 2,500 ports): eagle sync and
asyncio with ``scale-subset`` (A68 random subsetting, 20 members, watch mode): CPU over a
quiet window and RSS growth over the bare worker process (eagle and grpcio imported, no
channel).

Plus the pick cost at N (``Balancer.pick``, as in ``overhead``).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from eagle.testing.cluster import LocalCluster

from .clients import ClientSpec, eagle
from .common import Ctx
from .overhead import run_pick_cost
from .procs import Worker, start_workers

SIZES = (256, 1024)
#: the endpoints of the detection stage (3 of them are member processes of their own)
DETECT_N = 1024
#: the subsetting stage: SUBSET_PROCS server processes x SUBSET_PORTS ports
SUBSET_PROCS, SUBSET_PORTS = 4, 2500
#: the faults of the detection stage, one member each, in this order
FAULTS = ("crash", "drain", "freeze")


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


def _cost(
    ctx: Ctx, c: ClientSpec, endpoints: list[str], window: float, tag: str, t_stage: float
) -> dict[str, Any]:
    """One client's probe cost and memory over ``endpoints``, in a fresh worker."""
    spec = {
        "job": "scale",
        "client": c.to_json(),
        "endpoints": endpoints,
        "window": window,
        "settle": 1.0 if ctx.opts.quick else 2.0,
    }
    [w] = start_workers([(f"{c.label}-{tag}", spec)], ctx.logs / "scale")
    try:
        w.go(time.monotonic() + 0.1, window, ctx.raw / f"scale-{c.label}-{tag}.json")
        r = w.wait_done(window + 120, tick=lambda: ctx.advance_to(time.monotonic() - t_stage))
    finally:
        w.close()
    if c.is_eagle:
        r["core_pct"] = 100.0 * r["cpu_per_s"]
        if c.config == "scale":
            r["cpu_per_interval_s"] = r["cpu_per_s"] * 1.0  # health.interval 1 s
    return r


def _wait_file(path: Path, w: Worker, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if w.proc.poll() is not None or time.monotonic() > deadline:
            return  # wait_done reports why
        time.sleep(0.05)


def _detect(ctx: Ctx, c: ClientSpec, big: LocalCluster) -> dict[str, Any]:
    """Crash, drain and freeze one member each of a 1024-endpoint idle channel."""
    with LocalCluster(3, names=list(FAULTS)) as three:
        watch = dict(zip(FAULTS, three.endpoints, strict=True))
        ready = ctx.raw / f"detect-{c.label}.ready"
        ready.unlink(missing_ok=True)
        spec = {
            "job": "detect",
            "client": c.to_json(),
            "endpoints": big.endpoints + three.endpoints,
            "watch": watch,
            "ready_file": str(ready),
            "settle": 2.0,
            "timeout": 15.0,
        }
        [w] = start_workers([(f"detect-{c.label}", spec)], ctx.logs / "scale")
        at: dict[str, float] = {}
        try:
            w.go(time.monotonic() + 0.1, 0.0, ctx.raw / f"detect-{c.label}.json")
            _wait_file(ready, w, 120)
            if ready.exists():
                at["crash"] = time.monotonic()
                three.kill(0)
                at["drain"] = time.monotonic()
                three.drain(1)
                at["freeze"] = time.monotonic()
                three.stop(2)
            r = w.wait_done(150)
        finally:
            if "freeze" in at:
                with contextlib.suppress(Exception):
                    three.cont(2)
            w.close()
    seen: dict[str, float] = r.get("seen", {})
    r["detect_s"] = {f: (seen[f] - at[f]) if f in seen else None for f in at}
    return r


def run_scale(ctx: Ctx) -> dict[str, Any]:
    quick = ctx.opts.quick
    window = 2.0 if quick else 5.0
    bare = ClientSpec(label="grpc-bare-channels", family="grpc", mode="sync", setup="plain")
    bare_watch = ClientSpec(
        label="grpc-bare-watch",
        family="grpc",
        mode="sync",
        setup="plain",
        extra={"variant": "watch"},
    )
    watchers = [eagle(m, n) for n in ("scale-watch", "scale-watch-ka") for m in ("sync", "aio")]
    mesh = ctx.select(
        [eagle("sync", "scale"), eagle("aio", "scale"), *watchers, bare, bare_watch],
        ("grpc-bare-channels", "grpc-bare-watch"),
    )
    out: dict[str, Any] = {"window": window, "sizes": {}}
    sizes = SIZES[-1:] if quick else SIZES  # quick: the largest N only
    out["sizes_run"] = list(sizes)
    for n in sizes:
        ctx.stage(f"scale: {n} endpoints", len(mesh) * (window + 12))
        t_stage = time.monotonic()
        entry: dict[str, Any] = {"clients": {}}
        with LocalCluster.many_ports(n) as cluster:
            for c in mesh:
                entry["clients"][c.label] = _cost(
                    ctx, c, cluster.endpoints, window, str(n), t_stage
                )
        out["sizes"][str(n)] = entry
    add_marginal(out)

    detectors = ctx.select(watchers)
    if detectors:
        ctx.stage(f"scale: detection at {DETECT_N} endpoints", len(detectors) * 20)
        out["detect"] = {"n": DETECT_N, "clients": {}}
        with LocalCluster.many_ports(DETECT_N - len(FAULTS)) as big:
            for c in detectors:
                out["detect"]["clients"][c.label] = _detect(ctx, c, big)

    subsetters = ctx.select([eagle("sync", "scale-subset"), eagle("aio", "scale-subset")])
    if subsetters:
        n = SUBSET_PROCS * SUBSET_PORTS
        ctx.stage(f"scale: {n} endpoints, subset 20", len(subsetters) * (window + 15))
        t_stage = time.monotonic()
        names = [f"scale{i}" for i in range(SUBSET_PROCS)]
        out["subset"] = {"n": n, "clients": {}}
        with LocalCluster(
            SUBSET_PROCS, ports_per_member=SUBSET_PORTS, names=names, start_timeout=120
        ) as cluster:
            for c in subsetters:
                out["subset"]["clients"][c.label] = _cost(
                    ctx, c, cluster.endpoints, window, str(n), t_stage
                )

    ctx.stage("scale: pick cost", 4)
    out["pick"] = run_pick_cost(
        ctx, SIZES, name="pick-scale", seconds_per_case=0.2 if quick else 0.4
    )
    ctx.end_stage()
    return out
