"""Partition: one etcd member cut off from its peers with iptables; unary calls and watches.

A real three-member etcd cluster (:class:`eagle.testing.etcd.EtcdCluster`, each member its
own system user). A follower is cut off from its peers (its client port stays reachable):
it soon has no leader, its ``grpc.health.v1`` answer stays SERVING, and linearizable
reads on it hang until their deadline. The victim is listed first to every client.

* unary: linearizable ``KV/Range`` calls, paced as in the fault matrix, through eagle
  (``membership: etcd``) and grpcio ``round_robin`` + ``healthCheckConfig`` (plain and
  tuned keepalive);
* watch: one key, written 10 times a second through the leader. Each watcher's first
  watch is placed on the victim (opened until etcd's response header names it); when a
  watch ends the watcher opens it again from the next revision, like clientv3:

  - ``watch-plain``: a grpcio channel to the victim, no metadata;
  - ``watch-hasleader``: grpcio ``round_robin`` over all members, ``hasleader: true``;
  - ``eagle-watch``: an eagle channel with ``membership: etcd``;
  - ``eagle-watch+hasleader``: the same with ``hasleader: true``.

  Reported: when the watch delivered the first event written after the cut (resume),
  events never delivered (lost), duplicates, and the largest delivery delay.

Skips, with the reason, when etcd, iptables or root are missing.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from . import analysis
from .clients import ClientSpec, grpc_client
from .common import Ctx, rel
from .procs import close_all, load_spec, start_workers


def _watchers() -> list[ClientSpec]:
    return [
        ClientSpec("watch-plain", "grpc", extra={"variant": "plain"}),
        ClientSpec("watch-hasleader", "grpc", extra={"variant": "hasleader", "hasleader": True}),
        ClientSpec("eagle-watch", "eagle", config="etcd", extra={"variant": "eagle"}),
        ClientSpec(
            "eagle-watch+hasleader",
            "eagle",
            config="etcd",
            extra={"variant": "eagle", "hasleader": True},
        ),
    ]


def _unary() -> list[ClientSpec]:
    return [
        ClientSpec("eagle-sync[etcd]", "eagle", config="etcd"),
        grpc_client("rr_hc"),
        grpc_client("rr_hc_tuned"),
    ]


def _watch_metrics(
    r: dict[str, Any], writes: list[tuple[float, int]], t_part: float, end: float
) -> dict[str, Any]:
    events = [(int(rev), float(t)) for rev, t in r["events"]]
    got: dict[int, float] = {}
    for rev, t in events:
        got.setdefault(rev, t)
    written = {rev: t for t, rev in writes if rev > 0}
    expected = [rev for rev, t in written.items() if 0 <= t <= end - 1.0]
    lost = [rev for rev in expected if rev not in got]
    after = sorted(rev for rev, t in written.items() if t > t_part)
    resume = None
    if after:
        first = after[0]
        later = [t for rev, t in got.items() if rev >= first]
        if later:
            resume = min(later) - t_part
    delays = [got[rev] - written[rev] for rev in expected if rev in got]
    return {
        "events": len(events),
        "expected": len(expected),
        "lost": len(lost),
        "duplicates": len(events) - len(got),
        "resume_s": resume,
        "max_delay_s": max(delays) if delays else None,
        "errors": r["errors"][:10],
        "n_errors": len(r["errors"]),
        "opens": r["opens"],
        "cpu_s": r.get("cpu_s"),
        "max_rss_mib": r.get("max_rss_kib", 0) / 1024.0,
    }


def run_partition(ctx: Ctx) -> dict[str, Any]:
    from eagle.testing.etcd import EtcdCluster, etcd_unavailable_reason, put

    reason = etcd_unavailable_reason()
    if reason is not None:
        ctx.log(f"[yellow]partition skipped: {reason}")
        return {"skipped": reason}
    import grpc

    opts = ctx.opts
    t_part = 1.5 if opts.quick else 2.0
    cut = 3.5 if opts.quick else 6.0
    t_heal = t_part + cut
    duration = t_heal + (2.0 if opts.quick else 2.5)
    unary = ctx.select(_unary(), ("grpc-rr-hc",))
    watchers = ctx.select(_watchers())
    ctx.stage("partition: starting etcd", 8)
    out: dict[str, Any] = {
        "duration": duration,
        "t_partition": t_part,
        "t_heal": t_heal,
        "clients": {},
        "watchers": {},
    }
    with EtcdCluster(3) as cluster:
        leader = cluster.leader()
        victim = cluster.followers()[0]
        members = cluster.members
        order = [victim] + [i for i in range(3) if i != victim]
        endpoints = [members[i].endpoint for i in order]
        ids = {str(members[i].member_id): k for k, i in enumerate(order)}
        victim_id = members[victim].member_id
        out.update({"victim": endpoints[0], "leader": members[leader].endpoint})
        lead_ch = grpc.insecure_channel(
            members[leader].endpoint, options=[("grpc.enable_http_proxy", 0)]
        )
        put(lead_ch, "bench/k", "v")
        put(lead_ch, "bench/w", "0")
        specs: list[tuple[str, dict[str, Any]]] = []
        for c in unary:
            spec = load_spec(
                c,
                endpoints,
                concurrency=opts.concurrency,
                rate=opts.rate,
                deadline=opts.deadline,
                method="etcd_range",
                server_map=ids,
            )
            spec["ready_timeout"] = 20.0
            specs.append((c.label, spec))
        for c in watchers:
            specs.append(
                (
                    c.label,
                    {
                        "job": "watch",
                        "client": c.to_json(),
                        "endpoints": endpoints,
                        "victim_member_id": victim_id,
                        "key": "bench/w",
                        "ready_timeout": 20.0,
                    },
                )
            )
        ctx.stage("partition: starting clients", 8)
        workers = start_workers(specs, ctx.logs / "partition", ready_timeout=90)
        writes: list[tuple[float, int]] = []
        stop = threading.Event()
        try:
            t0 = time.monotonic() + 0.5

            def writer() -> None:
                i = 0
                nxt = t0
                while not stop.is_set() and nxt < t0 + duration:
                    ctx_sleep = nxt - time.monotonic()
                    if ctx_sleep > 0:
                        time.sleep(ctx_sleep)
                    i += 1
                    t = rel(t0)
                    try:
                        rev = put(lead_ch, "bench/w", str(i), timeout=1.0)
                    except grpc.RpcError:
                        rev = -1
                    writes.append((t, rev))
                    nxt += 0.1

            for w in workers:
                w.go(t0, duration, ctx.raw / f"partition-{w.name}.json")
            wt = threading.Thread(target=writer, daemon=True)
            wt.start()
            ctx.stage("partition: load running", duration)
            ctx.sleep_until(t0 + t_part, t0)
            before = rel(t0)
            cluster.partition(victim)
            t_cut = (before + rel(t0)) / 2
            ctx.sleep_until(t0 + t_heal, t0)
            cluster.heal(victim)
            t_healed = rel(t0)
            ctx.sleep_until(t0 + duration, t0)
            stop.set()
            wt.join(5)
            results = [w.wait_done(duration + 40) for w in workers]
        finally:
            stop.set()
            close_all(workers)
            cluster.heal_all()
            lead_ch.close()
    out["t_partition"] = t_cut
    out["t_heal"] = t_healed
    out["writes"] = len(writes)
    out["write_failures"] = sum(1 for _, rev in writes if rev <= 0)
    for c, r in zip(unary + watchers, results, strict=True):
        if c in unary:
            out["clients"][c.label] = {
                "spec": c.to_json(),
                "basic": analysis.basic(r, duration),
                "fault": analysis.fault_metrics(
                    r,
                    scenario="partition",
                    t_fault=t_cut,
                    duration=duration,
                    victim=0,
                    victim_endpoint=endpoints[0],
                    fault_end=t_healed,
                ),
                "timeseries": analysis.timeseries(r, duration),
                "transitions": r.get("transitions", [])[:30],
                "eagle_stats": r.get("eagle_stats"),
            }
        else:
            m = _watch_metrics(r, writes, t_cut, duration)
            m["spec"] = c.to_json()
            m["placed_on_victim"] = next(
                (w.info.get("placed_on_victim") for w in workers if w.name == c.label), None
            )
            m["transitions"] = r.get("transitions", [])[:30]
            out["watchers"][c.label] = m
    ctx.end_stage()
    return out
