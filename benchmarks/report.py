"""The Markdown report and the target verdicts.

Every target comes from the issues (2, 3 and 5) and is judged as measured, against the
baseline measured in the same run; nothing is tuned to pass.
"""

from __future__ import annotations

import json
from typing import Any

from .analysis import CODE_NAMES, fmt, ratio
from .clients import BASELINE, EAGLE_CONFIGS, GRPC_DESCRIPTIONS, GRPC_SETUPS
from .fleet import APERTURE_MAX_MEAN
from .worker import SLOW_S

MET = "met"
MISSED = "**MISSED**"
NOT_RUN = "not run"

#: "flat in N": pick cost at the largest N at most this many times the cost at N = 3
FLAT_FACTOR = 1.5


def _get(d: Any, *path: Any) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return NOT_RUN
    return MET if ok else MISSED


def _never(v: float | None, bound: float | None = None) -> str:
    if v is None:
        return "never" if bound is None else f"never (> {bound:.1f} s)"
    return f"{v:.2f} s"


# ----------------------------------------------------------------------------- targets


def evaluate_targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target: what was measured, the same-run baseline, and met / missed."""
    sc = res.get("scenarios", {})
    rows: list[dict[str, Any]] = []

    def add(
        area: str, target: str, measured: str, baseline: str, ok: bool | None, source: str
    ) -> None:
        rows.append(
            {
                "area": area,
                "target": target,
                "measured": measured,
                "baseline": baseline,
                "verdict": _verdict(ok),
                "ok": ok,
                "source": source,
            }
        )

    # overhead ------------------------------------------------------------------
    ov = sc.get("overhead")
    for gname in ("sync, 1 thread", "asyncio, 16 concurrent"):
        g = _get(ov, "groups", gname)
        if g is None:
            add(
                "overhead",
                f"calls/s eagle / grpcio round_robin ({gname}) >= 0.95",
                "—",
                "—",
                None,
                "issue 10",
            )
            continue
        e = g["clients"][g["eagle"]]["calls_per_s"]
        b = g["clients"][g["baseline"]]["calls_per_s"]
        r = g["ratio"]
        add(
            "overhead",
            f"calls/s eagle / grpcio round_robin ({gname}) >= 0.95",
            f"{r:.2f}, median of per-round ratios "
            + ", ".join(f"{x:.2f}" for x in g["round_ratios"] if x is not None)
            + f" (ratio of medians {g.get('ratio_of_medians') or 0:.2f}: "
            f"{e:,.0f} vs {b:,.0f} calls/s)",
            f"{g['baseline']} {b:,.0f} calls/s",
            r is not None and r >= 0.95,
            "issue 10",
        )
    # idle ----------------------------------------------------------------------
    idle = _get(sc, "idle", "clients") or {}
    for label, base in (("eagle-sync", "grpc-rr"), ("eagle-aio", "grpc-aio-rr")):
        c = idle.get(label)
        b = idle.get(base)
        add(
            "idle",
            f"{label}: an idle 3-member channel, default config, <= 0.3 % of one core",
            f"{c['cpu_pct']:.3f} %" if c else "—",
            f"{base}: {b['cpu_pct']:.3f} %" if b else "—",
            None if c is None else c["cpu_pct"] <= 0.3,
            "issue 11",
        )
    # the OpenTelemetry adapter (issue 14) ------------------------------------------
    ot = sc.get("otel")
    for gname in ("sync, 1 thread: metrics", "asyncio, 16 concurrent: metrics"):
        name = f"calls/s with eagle.ops.otel metrics on / off ({gname}) >= 0.97"
        g = _get(ot, "groups", gname)
        if g is None:
            add("otel", name, "—", "—", None, "issue 14")
            continue
        on = g["clients"][g["eagle"]]["calls_per_s"]
        off = g["clients"][g["baseline"]]["calls_per_s"]
        r = g["ratio"]
        add(
            "otel",
            name,
            f"{r:.3f}, median of per-round ratios "
            + ", ".join(f"{x:.3f}" for x in g["round_ratios"] if x is not None)
            + f" ({on:,.0f} vs {off:,.0f} calls/s)",
            f"{g['baseline']} {off:,.0f} calls/s",
            r is not None and r >= 0.97,
            "issue 14",
        )
    # pick cost: every pick job of the run counts; the absolute bound is judged on the
    # worst (largest) figure any job measured, flatness within the job that measured N = 3
    own = {(c["n"], c["policy"]): c["pick_us"] for c in (_get(ov, "pick", "cases") or [])}
    worst: dict[tuple[int, str], float] = dict(own)
    for c in _get(sc, "scale", "pick", "cases") or []:
        k = (c["n"], c["policy"])
        worst[k] = max(worst.get(k, 0.0), c["pick_us"])
    for n in (3, 1000, 1024):
        v = worst.get((n, "round_robin"))
        p2c = worst.get((n, "p2c"))
        add(
            "overhead",
            f"pick cost at {n} endpoints <= 5 µs (round_robin, the default)",
            f"{v:.2f} µs (p2c {p2c:.2f} µs)" if v is not None and p2c is not None else "—",
            "—",
            None if v is None else v <= 5.0,
            "issue 2, 5",
        )
    c3, c1024 = own.get((3, "round_robin")), own.get((1024, "round_robin"))
    if c3 and c1024:
        f = c1024 / c3
        add(
            "overhead",
            f"pick cost flat in N (1024 vs 3 endpoints within {FLAT_FACTOR}x, same job)",
            f"{f:.2f}x ({c3:.2f} -> {c1024:.2f} µs)",
            "—",
            f <= FLAT_FACTOR,
            "issue 2, 5",
        )
    else:
        add("overhead", "pick cost flat in N", "—", "—", None, "issue 2, 5")

    # failover (issue 2) ---------------------------------------------------------
    fo = sc.get("failover")
    b = _get(fo, "clients", "grpc-rr-hc")
    b_txt = "—"
    if b:
        b_txt = (
            f"grpc-rr-hc: {b['fault']['failed_after']} failed, failures stop "
            f"{_never(b['fault']['failures_stop_s'])}"
        )
    for label, note in (
        ("eagle-sync[hi0.2]", "health.interval 0.2"),
        ("eagle-sync[hi0.2-idem]", "health.interval 0.2, Unary declared idempotent"),
    ):
        e = _get(fo, "clients", label)
        add(
            "failover",
            f"hang, 4 threads, 1 s deadline, {note}: <= 2 failed calls",
            f"{e['fault']['failed_after']} failed" if e else "—",
            b_txt,
            None if e is None else e["fault"]["failed_after"] <= 2,
            "issue 2",
        )
        add(
            "failover",
            f"…{label}: calls stop failing within 1.5 s",
            (
                f"failures stop {_never(e['fault']['failures_stop_s'])} "
                f"(last failing call sent at {_never(e['fault']['last_hit_sent_s'])})"
            )
            if e
            else "—",
            b_txt,
            None
            if e is None
            else (
                e["fault"]["failures_stop_s"] is not None and e["fault"]["failures_stop_s"] <= 1.5
            ),
            "issue 2",
        )

    # fault matrix ----------------------------------------------------------------
    hang = _get(sc, "hang", "clients") or {}
    base_hang = _get(hang, BASELINE, "fault")
    bh = (
        f"{BASELINE}: {base_hang['failed_after']} failed, "
        f"failures stop {_never(base_hang['failures_stop_s'])}"
        if base_hang
        else "—"
    )
    for label in (
        "eagle-sync[hi0.2]",
        "eagle-aio[hi0.2]",
        "eagle-sync[hi0.2-idem]",
        "eagle-aio[hi0.2-idem]",
    ):
        f = _get(hang, label, "fault")
        add(
            "hang",
            f"{label}: <= 2 failed calls",
            f"{f['failed_after']} failed" if f else "—",
            bh,
            None if f is None else f["failed_after"] <= 2,
            "issue 5",
        )
    f = _get(hang, "eagle-sync[pertry]", "fault")
    add(
        "hang",
        "eagle-sync[pertry] (per_try_timeout 0.25): 0 failed calls",
        f"{f['failed_after']} failed" if f else "—",
        bh,
        None if f is None else f["failed_after"] == 0,
        "issue 3, 5",
    )
    add(
        "hang",
        "eagle-sync[pertry]: throughput back to >= 90 % of steady within 1.5 s",
        (
            f"{_never(f['tput_recover_s'])} (lowest 0.5 s window "
            f"{fmt(100 * f['tput_min_ratio'] if f['tput_min_ratio'] is not None else None)} %)"
        )
        if f
        else "—",
        (f"{BASELINE}: {_never(base_hang['tput_recover_s'])}" if base_hang else "—"),
        None if f is None else (f["tput_recover_s"] is not None and f["tput_recover_s"] <= 1.5),
        "issue 3",
    )
    # every fault scenario with subsetting on (issue 12) ------------------------------
    for scen in ("steady", "crash", "restart", "hang", "drain", "slow", "flap"):
        cl = _get(sc, scen, "clients") or {}
        for mode in ("sync", "aio"):
            label = f"eagle-{mode}[subset]"
            ref = f"eagle-{mode}" if f"eagle-{mode}" in cl else "eagle-sync"
            got, base = cl.get(label), cl.get(ref)
            if got is None and not cl:
                continue  # the scenario did not run

            def failed(c: dict[str, Any]) -> int:
                f = c.get("fault")
                return int(f["failed_after"] if f else c["basic"]["failed"])

            add(
                scen,
                f"{label} (subset on, random, size 20): no more failed calls than {ref} "
                "without subsetting (+1 for noise)",
                f"{failed(got)} failed of {got['basic']['calls']}" if got else "—",
                f"{ref}: {failed(base)} failed" if base else "—",
                None if got is None or base is None else failed(got) <= failed(base) + 1,
                "issue 12",
            )
    crash = _get(sc, "crash", "clients") or {}
    bc = _get(crash, BASELINE, "fault")
    for label, what in (
        ("eagle-sync", "default config"),
        ("eagle-aio", "default config"),
        ("eagle-sync[idem]", "Unary declared idempotent"),
        ("eagle-aio[idem]", "Unary declared idempotent"),
    ):
        f = _get(crash, label, "fault")
        add(
            "crash",
            f"{label} ({what}): 0 failed calls",
            f"{f['failed_after']} failed" if f else "—",
            f"{BASELINE}: {bc['failed_after']} failed" if bc else "—",
            None if f is None else f["failed_after"] == 0,
            "issue 3, 5",
        )
    for kind, what in (("cstream", "client-streaming"), ("bidi", "bidi")):
        for mode, base in (("sync", "grpc-rr"), ("aio", "grpc-aio-rr")):
            label = f"eagle-{mode}{{{kind}}}"
            f = _get(crash, label, "fault")
            bf = _get(crash, f"{base}{{{kind}}}", "fault")
            add(
                "crash",
                f"{label}: {what} calls made once the client saw the kill (its first failed "
                "call ended), 0 failed",
                (
                    f"{f.get('failed_after_seen', '?')} failed of those; all failures after "
                    f"the kill: {f['failed_after']} ({f.get('failed_started_after', '?')} of "
                    "calls started after the kill signal)"
                    if f
                    else "—"
                ),
                (
                    f"{base}{{{kind}}}: {bf.get('failed_after_seen', '?')} failed of those; "
                    f"all: {bf['failed_after']}"
                    if bf
                    else "—"
                ),
                None if f is None else f.get("failed_after_seen") == 0,
                "issue 10",
            )
    rs = _get(sc, "restart", "clients") or {}
    for label in ("eagle-sync", "eagle-aio"):
        m = _get(rs, label, "restart")
        ok = None
        if m is not None:
            ok = m["gap_s"] is not None and m["gap_s"] <= 0.5
        add(
            "restart",
            f"{label}: a killed member restarted under load answers calls within one probe "
            "interval (0.5 s) of its first SERVING probe answer",
            (
                f"SERVING {fmt(m['serving_after_s'])} s after the restart, first call "
                f"{fmt(m['first_call_after_s'])} s after it (gap {fmt(m['gap_s'])} s)"
                if m
                else "—"
            ),
            (
                f"{BASELINE}: first call {fmt(_get(rs, BASELINE, 'restart', 'first_call_after_s'))}"
                " s after the restart"
                if _get(rs, BASELINE, "restart")
                else "—"
            ),
            ok,
            "issue 11",
        )
    slow = _get(sc, "slow", "clients") or {}
    steady = _get(sc, "steady", "clients") or {}
    bs = _get(slow, BASELINE, "fault")
    for label in ("eagle-sync[p2c]", "eagle-aio[p2c]"):
        f = _get(slow, label, "fault")
        st = _get(steady, label, "basic", "p99_ms")
        ref = "steady run"
        if st is None and f is not None:
            st, ref = f["pre_p99_ms"], "pre-fault window"
        r = ratio(f["fault_p99_ms"], st) if f else None
        add(
            "slow",
            f"{label}: p99 within 1.5x of steady",
            (
                f"{r:.2f}x ({fmt(f['fault_p99_ms'])} ms vs {fmt(st)} ms {ref}); "
                f"member 0 answered {100 * (f.get('victim_share_after_1s') or 0):.1f} % "
                "of calls after the first second"
            )
            if f and r is not None
            else "—",
            f"{BASELINE}: p99 {fmt(bs['fault_p99_ms'])} ms" if bs else "—",
            None if r is None else r <= 1.5,
            "issue 3, 5",
        )

    # retry storm -------------------------------------------------------------------
    rs = _get(sc, "retry_storm", "clients") or {}
    base = _get(rs, "grpc-rr-retry")
    bt = _get(rs, "grpc-rr-retry-throttle")
    btxt = "—"
    if base:
        btxt = f"grpc-rr-retry {fmt(base['attempts_per_call'])}"
        if bt:
            btxt += f", grpc-rr-retry-throttle {fmt(bt['attempts_per_call'])}"
    for label in ("eagle-sync[idem]", "eagle-aio[idem]"):
        c = rs.get(label)
        add(
            "retry storm",
            f"{label}: attempts per call <= 1.2 + 10/s",
            f"{fmt(c['attempts_per_call'])} (allowed {fmt(c['allowed_per_call'])}; "
            f"{c['server_attempts']} attempts for {c['storm_calls']} calls)"
            if c and c["attempts_per_call"] is not None
            else "—",
            btxt,
            None
            if not c or c["attempts_per_call"] is None
            else c["attempts_per_call"] <= c["allowed_per_call"],
            "issue 3",
        )

    # partition -------------------------------------------------------------------------
    pt = sc.get("partition")
    if pt is not None and "skipped" in pt:
        rows.append(
            {
                "area": "partition",
                "target": "watch resumed within 2.5 s, 0 events lost",
                "measured": "—",
                "baseline": "—",
                "verdict": f"skipped: {pt['skipped']}",
                "ok": None,
                "source": "issue 5",
            }
        )
    else:
        wa = _get(pt, "watchers") or {}
        b1, b2 = wa.get("watch-plain"), wa.get("watch-hasleader")
        btxt = "; ".join(
            f"{n}: resume {_never(w['resume_s'])}, {w['lost']} lost"
            for n, w in (("watch-plain", b1), ("watch-hasleader", b2))
            if w
        )
        for label in ("eagle-watch", "eagle-watch+hasleader"):
            w = wa.get(label)
            ok = None
            if w:
                ok = w["resume_s"] is not None and w["resume_s"] <= 2.5 and w["lost"] == 0
            add(
                "partition",
                f"{label}: watch resumed within 2.5 s, 0 events lost",
                f"resume {_never(w['resume_s'])}, {w['lost']} lost of {w['expected']}"
                + ("" if w.get("placed_on_victim") else " (NOT placed on the victim)")
                if w
                else "—",
                btxt or "—",
                ok,
                "issue 5",
            )

    # discovery --------------------------------------------------------------------------
    dv = sc.get("discovery")
    if isinstance(dv, dict):
        for provider, bound in (("dns", 1.5), ("etcd", 0.5)):
            d = dv.get(provider)
            if not isinstance(d, dict):
                continue
            target = (
                f"discovery {provider}: a new member serves within {bound} s, "
                "0 calls failed during churn"
            )
            if "skipped" in d or "error" in d:
                why = d.get("skipped") or d.get("error")
                rows.append(
                    {
                        "area": "discovery",
                        "target": target,
                        "measured": "—",
                        "baseline": "—",
                        "verdict": f"not run: {why}",
                        "ok": None,
                        "source": "discovery brief",
                    }
                )
                continue
            join = d.get("join_max_s")
            ok = join is not None and join <= bound and d["failed"] == 0
            add(
                "discovery",
                target,
                f"first call on the new member after {_never(join)} (max of {d['rounds']}); "
                f"{d['failed']} of {d['calls']} calls failed",
                "—",
                ok,
                "discovery brief",
            )

    # scale ------------------------------------------------------------------------------
    sizes = _get(sc, "scale", "sizes") or {}
    s1024 = _get(sizes, "1024", "clients") or {}
    for label in ("eagle-sync[scale]", "eagle-aio[scale]"):
        c = s1024.get(label)
        add(
            "scale",
            f"{label}: 1024 endpoints probed every second using < 25 % of one core",
            f"{c['core_pct']:.0f} % of a core ({c['cpu_per_interval_s']:.3f} CPU s per 1 s "
            f"interval; {c.get('ticks_skipped', 0)} ticks skipped)"
            if c
            else "—",
            "—",
            None if c is None else c["core_pct"] < 25.0,
            "issue 5",
        )
    for n, entry in sizes.items():
        bare = entry["clients"].get("grpc-bare-channels")
        for label in ("eagle-sync[scale]", "eagle-aio[scale]"):
            c = entry["clients"].get(label)
            slope = _get(sc, "scale", "marginal_kib", label)
            add(
                "scale",
                f"{label}: < 100 KiB per endpoint, sub-channel included ({n} endpoints)",
                (
                    f"{c['kib_per_endpoint']:.1f} KiB"
                    + (f" (marginal, 256 -> 1024: {slope:.1f} KiB)" if slope else "")
                )
                if c
                else "—",
                f"bare grpcio channel: {bare['kib_per_endpoint']:.1f} KiB" if bare else "—",
                None if c is None else c["kib_per_endpoint"] < 100.0,
                "issue 5",
            )
    # scale, issue 12: watch mode at 1024, detection, subsetting at 10,000 ---------------
    bare1024 = s1024.get("grpc-bare-channels")
    floor1024 = s1024.get("grpc-bare-watch")
    base = "; ".join(
        f"{what}: {100 * b['cpu_per_s']:.1f} %"
        for what, b in (
            ("1024 bare grpcio channels", bare1024),
            ("the same, sync, each with a Watch stream open + keepalive 1 s", floor1024),
        )
        if b
    )
    for label in ("eagle-sync[scale-watch-ka]", "eagle-aio[scale-watch-ka]"):
        c = s1024.get(label)
        add(
            "scale",
            f"{label}: 1024 endpoints, no subsetting, health.mode watch + keepalive 1 s: "
            "< 10 % of one core",
            f"{c['core_pct']:.1f} % of a core" if c else "—",
            base or "—",
            None if c is None else c["core_pct"] < 10.0,
            "issue 12",
        )
    det = _get(sc, "scale", "detect", "clients") or {}
    bounds = {"crash": 1.0, "drain": 1.0, "freeze": 5.0}
    for label, d in det.items():
        times = d.get("detect_s") or {}
        for fault, bound in bounds.items():
            took = times.get(fault)
            add(
                "scale",
                f"{label}: 1024 endpoints, an idle member's {fault} seen within {bound:g} s",
                _never(took),
                "—",
                None if not times else (took is not None and took <= bound),
                "issue 12",
            )
    sub = _get(sc, "scale", "subset", "clients") or {}
    n_sub = _get(sc, "scale", "subset", "n") or 10000
    for label in ("eagle-sync[scale-subset]", "eagle-aio[scale-subset]"):
        c = sub.get(label)
        add(
            "scale",
            f"{label}: {n_sub:,} endpoints, subset 20: < 3 % of one core",
            f"{c['core_pct']:.1f} % of a core ({c.get('in_use')} members in use)" if c else "—",
            "—",
            None if c is None else c["core_pct"] < 3.0,
            "issue 12",
        )
        add(
            "scale",
            f"{label}: {n_sub:,} endpoints, subset 20: RSS over the bare process < 20 MiB",
            f"{c['rss_growth_mib']:.1f} MiB" if c else "—",
            "bare process: the worker with eagle and grpcio imported, no channel",
            None if c is None else c["rss_growth_mib"] < 20.0,
            "issue 12",
        )
    # fleet (subsetting, simulated) ----------------------------------------------------
    fl = sc.get("fleet")
    modes = _get(fl, "modes") or {}
    ap, rnd = modes.get("aperture"), modes.get("random")
    binom = _get(fl, "binomial", "max_over_mean")
    base_txt = "—"
    if rnd and binom is not None:
        base_txt = f"random (A68) {_fleets_txt(rnd)}; binomial expectation {binom:.2f}"
    add(
        "fleet",
        f"aperture, 1000 clients x 1000 servers, size 20: connections per server max/mean "
        f"<= {APERTURE_MAX_MEAN} (also after one server is added)",
        f"{ap['connections']['max_over_mean']:.3f} ({ap['connections']['max']} / "
        f"{ap['connections']['mean']:.2f}); after adding one: "
        f"{ap['after_add']['connections']['max_over_mean']:.3f}"
        if ap
        else "—",
        base_txt,
        None
        if ap is None
        else max(
            ap["connections"]["max_over_mean"], ap["after_add"]["connections"]["max_over_mean"]
        )
        <= APERTURE_MAX_MEAN,
        "subsetting brief; Finagle deterministic aperture",
    )
    add(
        "fleet",
        "random (A68): one server added or removed changes <= 1 member per client",
        f"max {rnd['churn_add']['max']} (add), {rnd['churn_remove']['max']} (remove); mean "
        f"{rnd['churn_add']['mean']:.3f} / {rnd['churn_remove']['mean']:.3f}"
        if rnd
        else "—",
        "—",
        None if rnd is None else max(rnd["churn_add"]["max"], rnd["churn_remove"]["max"]) <= 1,
        "gRPC A68",
    )
    add(
        "fleet",
        "aperture: one server added or removed changes <= the documented bound per client "
        "(2, + ceil(M / C) when the slice width steps)",
        f"max {ap['churn_add']['max']} (add, bound {ap['churn_bound']['add']}), "
        f"{ap['churn_remove']['max']} (remove, bound {ap['churn_bound']['remove']}); mean "
        f"{ap['churn_add']['mean']:.2f} / {ap['churn_remove']['mean']:.2f}"
        if ap
        else "—",
        "—",
        None
        if ap is None
        else ap["churn_add"]["max"] <= ap["churn_bound"]["add"]
        and ap["churn_remove"]["max"] <= ap["churn_bound"]["remove"],
        "docs/configuration.md (subset)",
    )
    add(
        "fleet",
        "the 1000 x 1000 simulation finishes in < 60 s",
        f"{fl['elapsed_s']:.1f} s" if fl and "elapsed_s" in fl else "—",
        "—",
        None if not fl or "elapsed_s" not in fl else fl["elapsed_s"] < 60.0,
        "subsetting brief",
    )
    return rows


# ----------------------------------------------------------------------------- sections


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _failures(d: dict[str, int]) -> str:
    if not d:
        return "0"
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]))


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}x"


def section_otel(ot: dict[str, Any] | None) -> str:
    if not ot:
        return ""
    if "error" in ot:
        return f"## OpenTelemetry adapter\n\nERROR: {ot['error']}\n"
    parts = [
        "## OpenTelemetry adapter (issue 14)",
        "",
        "The same eagle client with `eagle.ops.otel` on (a real OpenTelemetry SDK: a meter "
        "provider whose periodic reader collects every second; with traces, a tracer "
        "provider sampling every call, spans batched) and off, "
        f"{ot['rounds']} interleaved round(s) of {ot['duration']:.1f} s each. The target "
        f"(metrics on / off >= {ot.get('target', 0.97)}) uses the median of the per-round "
        "ratios; traces are for information.",
        "",
        _pairs_table(ot),
        "",
    ]
    return "\n".join(parts)


def _pairs_table(ov: dict[str, Any]) -> str:
    rows = []
    for gname, g in ov["groups"].items():
        base = g["clients"][g["baseline"]]
        for label, c in g["clients"].items():
            rows.append(
                [
                    gname,
                    label + (" (baseline)" if label == g["baseline"] else ""),
                    f"{c['calls_per_s']:,.0f}",
                    _x(ratio(c["calls_per_s"], base["calls_per_s"])),
                    fmt(c["p50_ms"], digits=3),
                    fmt(c["p99_ms"], digits=3),
                    fmt(c["cpu_per_1000"], digits=3),
                    _x(ratio(c["cpu_per_1000"], base["cpu_per_1000"])),
                    fmt(c["max_rss_mib"], digits=1),
                ]
            )
    return _table(
        [
            "mode",
            "client",
            "calls/s",
            "x baseline",
            "p50 ms",
            "p99 ms",
            "CPU s / 1000 calls",
            "CPU x baseline",
            "peak RSS MiB",
        ],
        rows,
    )


def section_overhead(ov: dict[str, Any] | None) -> str:
    if not ov:
        return ""
    if "error" in ov:
        return f"## Overhead\n\nERROR: {ov['error']}\n"
    parts = [
        "## Overhead (issue 2)",
        "",
        f"Unary Echo calls as fast as possible over 3 healthy members, {ov['rounds']} "
        f"interleaved round(s) of {ov['duration']:.1f} s per client (eagle, grpcio, ...; "
        "order reversed every other round), median of the rounds shown. `x baseline` here "
        "is the ratio of the medians; the target uses the median of the per-round ratios "
        "(each round's runs ran back to back), see Targets.",
        "",
        _pairs_table(ov),
        "",
    ]
    cases = _get(ov, "pick", "cases") or []
    if cases:
        parts += [
            "Pick cost: one `Balancer.pick(method)` over N SERVING members (built directly "
            "from `eagle.parse_endpoints` and `eagle.Config()`), best of 7 rounds; "
            "`pick + done` adds the outcome report every call also makes.",
            "",
            _table(
                ["N", "policy", "pick µs", "pick + done µs"],
                [
                    [str(c["n"]), c["policy"], f"{c['pick_us']:.2f}", f"{c['pick_done_us']:.2f}"]
                    for c in cases
                ],
            ),
            "",
        ]
    parts.append("![overhead](plots/overhead.png)\n")
    return "\n".join(parts)


def _fault_rows(
    clients: dict[str, Any], base_label: str | None, timing: bool = True
) -> list[list[str]]:
    base = clients.get(base_label) if base_label else None
    rows = []
    for label, c in clients.items():
        b = c["basic"]
        f = (c.get("fault") or {}) if timing else {}
        bb = base["basic"] if base else None
        rows.append(
            [
                label + (" (baseline)" if label == base_label else ""),
                str(b["calls"]),
                _failures(b["failures"]),
                fmt(b["success_pct"]),
                fmt(b["throughput"]),
                _x(ratio(b["throughput"], bb["throughput"])) if bb else "—",
                fmt(b["p50_ms"]),
                fmt(b["p99_ms"]),
                fmt(b["p999_ms"]),
                _x(ratio(b["p99_ms"], bb["p99_ms"])) if bb else "—",
                (fmt(f.get("detect_s")) + (" ᵉ" if f.get("status_detect_s") is not None else ""))
                if f
                else "—",
                (fmt(f["recover_s"]) if f.get("recover_s") is not None else "never") if f else "—",
                (fmt(f["tput_recover_s"]) if f.get("tput_recover_s") is not None else "never")
                if f
                else "—",
                fmt(b["cpu_per_1000"], digits=3),
                _x(ratio(b["cpu_per_1000"], bb["cpu_per_1000"])) if bb else "—",
                fmt(b["max_rss_mib"], digits=1),
            ]
        )
    return rows


FAULT_HEADER = [
    "client",
    "calls",
    "failures by code",
    "success %",
    "ok calls/s",
    "x base",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "p99 x base",
    "detect s",
    "recover s",
    "tput recover s",
    "CPU s/1000 calls",
    "CPU x base",
    "peak RSS MiB",
]


def section_matrix(sc: dict[str, Any], names: list[str], opts: dict[str, Any]) -> str:
    present = [n for n in names if n in sc]
    if not present:
        return ""
    parts = [
        "## Fault matrix",
        "",
        f"3 echo servers on 127.0.0.1; every client at once, each in its own process, "
        f"{opts['rate']:g} calls/s from {opts['concurrency']} threads (asyncio: tasks), "
        f"deadline {opts['deadline']:g} s, {opts['duration']:g} s per scenario, fault on "
        f"member 0 at t = {opts['fault_at']:g} s (it stays faulted to the end). Member 0 is "
        "the endpoint `grpc-plain` and `grpc-pick-first` use: for them this is the worst "
        f"case. Baseline for every ratio: `{BASELINE}`. ᵉ = eagle's own status-table "
        "detection; other detect figures are when the last hit call was sent.",
        "",
    ]
    for name in present:
        s = sc[name]
        if "error" in s:
            parts += [f"### {name}", "", f"ERROR: {s['error']}", ""]
            continue
        parts += [f"### {name}: {s['description']}", ""]
        base = BASELINE if BASELINE in s["clients"] else None
        # a flapping member has no single moment of detection or recovery
        parts.append(_table(FAULT_HEADER, _fault_rows(s["clients"], base, name != "flap")))
        extra = []
        for label, c in s["clients"].items():
            f = c.get("fault") or {}
            if name == "slow" and f.get("victim_share_after_1s") is not None:
                extra.append(
                    f"`{label}`: p99 after the fault {fmt(f['fault_p99_ms'])} ms; member 0 "
                    f"answered {100 * f['victim_share_after_1s']:.1f} % of calls after t_fault+1 s"
                )
            if name == "drain" and f.get("victim_share_after_1s") is not None:
                extra.append(
                    f"`{label}`: drained member still answered "
                    f"{100 * f['victim_share_after_1s']:.1f} % of calls after t_fault+1 s"
                )
        if extra:
            parts += ["", *[f"- {e}" for e in extra]]
        parts += ["", f"![{name}](plots/timeline_{name}.png)", ""]
        parts += _error_samples(s["clients"])
    return "\n".join(parts)


def _error_samples(clients: dict[str, Any]) -> list[str]:
    lines = []
    for label, c in clients.items():
        for e in (c.get("basic") or {}).get("errors", [])[:6]:
            code = CODE_NAMES.get(e["code"], str(e["code"]))
            details = e["details"].replace("|", "/").replace("\n", " ")[:160]
            lines.append(f"| {label} | {code} | {e['count']} | {e['first_t']:.2f} | {details} |")
    if not lines:
        return []
    return [
        "<details><summary>failed calls: codes and details</summary>",
        "",
        "| client | code | count | first at s | details |",
        "|---|---|---|---|---|",
        *lines,
        "",
        "</details>",
        "",
    ]


def section_failover(fo: dict[str, Any] | None) -> str:
    if not fo:
        return ""
    if "error" in fo:
        return f"## Failover (issue 2)\n\nERROR: {fo['error']}\n"
    rows = []
    for label, c in fo["clients"].items():
        f, b = c["fault"], c["basic"]
        rows.append(
            [
                label,
                str(b["calls"]),
                fmt(b["throughput"]),
                str(f["failed_after"]),
                _failures(b["failures"]),
                _never(f["last_hit_sent_s"]),
                _never(f["failures_stop_s"]),
                _never(f["status_detect_s"]) if label.startswith("eagle") else "—",
                fmt(b["cpu_per_1000"], digits=3),
            ]
        )
    return "\n".join(
        [
            "## Failover (issue 2)",
            "",
            f"3 servers, {fo['threads']} threads in a closed loop (no pacing), deadline "
            f"{fo['deadline']:g} s, {fo['duration']:g} s run, member 0 frozen (SIGSTOP) at "
            f"t = {fo.get('t_plan', 2):g} s and left frozen; each client alone on a fresh cluster.",
            "",
            _table(
                [
                    "client",
                    "calls",
                    "ok calls/s",
                    "failed after fault",
                    "failures by code",
                    "last failing call sent",
                    "failures stop",
                    "eagle detect",
                    "CPU s/1000 calls",
                ],
                rows,
            ),
            "",
            "![failover](plots/timeline_failover.png)",
            "",
            *_error_samples(fo["clients"]),
        ]
    )


def section_retry_storm(rs: dict[str, Any] | None) -> str:
    if not rs:
        return ""
    if "error" in rs:
        return f"## Retry storm\n\nERROR: {rs['error']}\n"
    rows = []
    for label, c in rs["clients"].items():
        st = c.get("eagle_stats") or {}
        rows.append(
            [
                label,
                str(c["storm_calls"]),
                str(c["storm_failed"]),
                str(c["server_attempts"]),
                fmt(c["attempts_per_call"]),
                fmt(c["allowed_per_call"]),
                fmt(c.get("run_attempts_per_call")),
                fmt(c["fault"].get("recover_after_end_s")),
                str(st.get("retries", "—")),
                str(st.get("budget_refusals", "—")),
                fmt(c["basic"]["cpu_per_1000"], digits=3),
            ]
        )
    return "\n".join(
        [
            "## Retry storm (issue 3)",
            "",
            f"Every member answers UNAVAILABLE for {rs['storm_s']:g} s from t = "
            f"{rs['t_storm']:g} s (requests sent then carry `fail_code = 14`; the servers "
            "abort them, retries included). Attempts are counted by the servers. Clients "
            "run one after another on the same 3 members. `eagle-sync` (default config) "
            "declares nothing idempotent, so it never re-sends a call that reached a server. "
            "eagle's budget (Finagle / Linkerd) allows retries of 20 % of the calls of the last "
            "10 s plus 10/s, so healthy traffic just before the storm (here "
            f"{rs['t_storm']:g} s of it) adds to what the storm may spend; the whole-run column "
            "counts every attempt of the run (healthy ones included) per call.",
            "",
            _table(
                [
                    "client",
                    "calls in storm",
                    "failed",
                    "attempts (servers)",
                    "attempts / call",
                    "allowed (1.2 + 10/s)",
                    "attempts / call, whole run",
                    "recover after storm s",
                    "eagle retries",
                    "eagle budget refusals",
                    "CPU s/1000 calls",
                ],
                rows,
            ),
            "",
            "![retry storm](plots/timeline_retry_storm.png)",
            "",
        ]
    )


def section_partition(pt: dict[str, Any] | None) -> str:
    if not pt:
        return ""
    if "skipped" in pt:
        return f"## Partition\n\nSkipped: {pt['skipped']}\n"
    if "error" in pt:
        return f"## Partition\n\nERROR: {pt['error']}\n"
    parts = [
        "## Partition (etcd)",
        "",
        f"Real 3-member etcd; follower `{pt['victim']}` cut off from its peers with iptables "
        f"at t = {pt['t_partition']:.2f} s and healed at t = {pt['t_heal']:.2f} s "
        f"(leader `{pt['leader']}`). Unary: linearizable `KV/Range`. {pt['writes']} writes "
        f"through the leader ({pt['write_failures']} failed).",
        "",
        "Unary calls (recover = last hit before the heal; never = hit until the heal):",
        "",
        _table(FAULT_HEADER, _fault_rows(pt["clients"], "grpc-rr-hc")),
        "",
        "Watches (first watch placed on the partitioned member):",
        "",
    ]
    rows = []
    for label, w in pt["watchers"].items():
        rows.append(
            [
                label,
                "yes" if w.get("placed_on_victim") else "NO",
                _never(w["resume_s"]),
                f"{w['lost']} / {w['expected']}",
                str(w["duplicates"]),
                fmt(w["max_delay_s"]),
                str(w["n_errors"]),
                str(max(0, len(w["opens"]) - 1)),
            ]
        )
    parts.append(
        _table(
            [
                "watcher",
                "on victim",
                "resume after cut",
                "lost / expected",
                "duplicates",
                "max delay s",
                "stream errors",
                "re-opens",
            ],
            rows,
        )
    )
    parts += ["", "![partition](plots/timeline_partition.png)", ""]
    parts += _error_samples(pt["clients"])
    return "\n".join(parts)


def section_idle(s: dict[str, Any] | None) -> str:
    if not s or "clients" not in s:
        return ""
    rows = [
        [label, f"{c['cpu_pct']:.3f} %", f"{c['cpu_s'] * 1000:.1f} ms", f"{c['elapsed_s']:.1f} s"]
        for label, c in s["clients"].items()
    ]
    return "\n".join(
        [
            "## Idle cost (issue 11)",
            "",
            "One channel over 3 healthy members, ready and then left alone (no calls), each in "
            "its own process; eagle with its default config (a probe per member every 0.5 s). "
            "CPU of the whole client process over the window.",
            "",
            _table(["client", "CPU (% of one core)", "CPU time", "window"], rows),
            "",
        ]
    )


def section_discovery(dv: dict[str, Any] | None) -> str:
    if not dv:
        return ""
    if "error" in dv:
        return f"## Discovery\n\nERROR: {dv['error']}\n"
    parts = [
        "## Discovery",
        "",
        "Closed-loop unary calls from 4 threads while the member set changes each round: "
        "dns: records on a real dnsmasq rewritten (one pod in, one out; `period` 0.5 s, "
        "`min_interval` 0.2 s); etcd: a server registered with `EtcdRegistration`, another "
        "deregistered. *Join* is the time from the change to the first call the new member "
        "served.",
        "",
    ]
    rows = []
    for provider in ("dns", "etcd"):
        d = dv.get(provider)
        if not isinstance(d, dict):
            continue
        if "skipped" in d or "error" in d:
            rows.append([provider, "—", "—", "—", f"not run: {d.get('skipped') or d.get('error')}"])
            continue
        joins = ", ".join(_never(j) for j in d["join_s"])
        rows.append(
            [
                provider,
                joins,
                _never(d["join_median_s"]),
                f"{d['failed']} / {d['calls']}",
                _failures(d["failures"]) if d["failed"] else "",
            ]
        )
    parts.append(_table(["provider", "join per round", "median", "failed / calls", "codes"], rows))
    parts.append("")
    return "\n".join(parts)


def section_scale(s: dict[str, Any] | None) -> str:
    if not s:
        return ""
    if "error" in s:
        return f"## Scale\n\nERROR: {s['error']}\n"
    rows = []
    for n, entry in s["sizes"].items():
        for label, c in entry["clients"].items():
            is_eagle = label.startswith("eagle")
            rows.append(
                [
                    n,
                    label,
                    f"{c['all_probed_s']:.2f}",
                    f"{c['cpu_per_interval_s']:.3f}" if "cpu_per_interval_s" in c else "—",
                    f"{c['core_pct']:.0f} %"
                    if is_eagle
                    else f"{100 * c['cpu_per_s']:.1f} % (idle)",
                    f"{c['kib_per_endpoint']:.1f}",
                    ", ".join(f"{k} {v}" for k, v in (c.get("states") or {}).items()) or "—",
                    str(c.get("ticks_skipped", "—")),
                    fmt(c.get("probe_latency_p50_ms")),
                    fmt(c.get("probe_latency_max_ms")),
                ]
            )
    parts = [
        "## Scale",
        "",
        "One server process listening on N ports; each client alone in a fresh process. "
        "`[scale]`: a `Check` to every endpoint every 1 s (`health.interval` 1.0); "
        "`[scale-watch]`: `health.mode: watch` (a `Health/Watch` stream per endpoint, a "
        "`Check` every 2.5 s); `[scale-watch-ka]`: watch mode with keepalive pings every 1 s "
        "(the test servers allow them) and a `Check` every 30 s. CPU measured over "
        f"a quiet {s['window']:g} s window without calls. KiB per endpoint = RSS growth from "
        "before the channel was created to after every endpoint was probed, divided by N. "
        "`grpc-bare-channels` = N plain grpcio channels, each connected by one health "
        "`Check`: grpcio's own cost per channel. `all probed` for it = time to connect all. "
        "`grpc-bare-watch` = the same with a Health/Watch stream open on each and keepalive "
        "every second: grpcio's own cost for a sync client holding a stream per member.",
        "",
        _table(
            [
                "N",
                "client",
                "all probed s",
                "CPU s per interval",
                "% of one core",
                "KiB / endpoint",
                "states",
                "ticks skipped",
                "probe p50 ms",
                "probe max ms",
            ],
            rows,
        ),
        "",
    ]
    marginal = s.get("marginal_kib") or {}
    if marginal:
        parts += [
            "Marginal memory per endpoint between 256 and 1024 endpoints ((growth at 1024 - "
            "growth at 256) / 768, leaving out what a channel costs whatever its size): "
            + ", ".join(f"`{k}` {v:.1f} KiB" for k, v in marginal.items()),
            "",
        ]
    det = _get(s, "detect", "clients") or {}
    if det:
        drows = []
        for label, d in det.items():
            t = d.get("detect_s") or {}
            drows.append([label] + [_never(t.get(f)) for f in ("crash", "drain", "freeze")])
        parts += [
            f"Detection over {_get(s, 'detect', 'n')} endpoints, channel idle: one member "
            "each crashed (SIGKILL), drained (NOT_SERVING) and frozen (SIGSTOP) at once; time "
            "until the channel's status shows it UNREACHABLE / NOT_SERVING / UNREACHABLE.",
            "",
            _table(["client", "crash", "drain", "freeze (idle)"], drows),
            "",
        ]
    sub = _get(s, "subset", "clients") or {}
    if sub:
        srows = [
            [
                label,
                str(c.get("in_use")),
                f"{c['all_probed_s']:.2f}",
                f"{c['core_pct']:.1f} %",
                f"{c['rss_growth_mib']:.1f}",
                ", ".join(f"{k} {v}" for k, v in (c.get("states") or {}).items()) or "—",
            ]
            for label, c in sub.items()
        ]
        parts += [
            f"Subsetting over {_get(s, 'subset', 'n'):,} endpoints (4 server processes x 2,500 "
            "ports), A68 random subsetting of 20, watch mode; RSS growth over the bare worker "
            "process (eagle and grpcio imported, no channel).",
            "",
            _table(
                ["client", "in use", "all probed s", "% of one core", "RSS MiB", "states"], srows
            ),
            "",
        ]
    cases = _get(s, "pick", "cases") or []
    if cases:
        parts += [
            "Pick cost measured again at these sizes (another process, same method):",
            "",
            _table(
                ["N", "policy", "pick µs", "pick + done µs"],
                [
                    [str(c["n"]), c["policy"], f"{c['pick_us']:.2f}", f"{c['pick_done_us']:.2f}"]
                    for c in cases
                ],
            ),
            "",
        ]
    return "\n".join(parts)


def _fleets_txt(s: dict[str, Any]) -> str:
    """A68's max/mean: this fleet's, and the mean over the independent fleets simulated."""
    txt = f"{s['connections']['max_over_mean']:.2f}"
    fleets = s.get("fleets")
    if fleets:
        txt += f" (mean of {fleets['count']} fleets {fleets['mean_max_over_mean']:.2f})"
    return txt


def section_fleet(fl: dict[str, Any] | None) -> str:
    if not fl:
        return ""
    if "error" in fl:
        return f"## Fleet\n\nERROR: {fl['error']}\n"
    c, m, size = fl["clients"], fl["servers"], fl["size"]
    none = fl["no_subsetting"]
    rows = [
        [
            "none (every client uses every server)",
            f"{none['connections_total']:,}",
            f"{none['connections_per_server']} / {none['connections_per_server']}",
            "1.00",
            "—",
            f"{none['probes_per_server_s']:,.0f} / {none['probes_per_server_s']:,.0f}",
            "—",
            "—",
            "—",
        ]
    ]
    for mode, s in fl["modes"].items():
        co, ld = s["connections"], s["load"]
        after = s["after_add"]["connections"]
        rows.append(
            [
                {"random": "random (gRPC A68)", "aperture": "aperture (Finagle)"}.get(
                    mode, f"{mode} (SRE book ch. 20)"
                ),
                f"{s['connections_total']:,}",
                f"{co['max']} / {co['mean']:.2f} (min {co['min']})",
                f"{co['max_over_mean']:.3f} (after +1: {after['max_over_mean']:.3f})"
                + (
                    f"; mean of {s['fleets']['count']} fleets "
                    f"{s['fleets']['mean_max_over_mean']:.3f}"
                    if s.get("fleets")
                    else ""
                ),
                f"{ld['max_over_mean']:.3f}",
                f"{s['probes_per_server_s']['max']:.0f} / {s['probes_per_server_s']['mean']:.0f}",
                f"{s['members_per_client']['min']:.0f}-{s['members_per_client']['max']:.0f}",
                f"{s['churn_add']['max']} / {s['churn_add']['mean']:.3f}",
                f"{s['churn_remove']['max']} / {s['churn_remove']['mean']:.3f}",
            ]
        )
    b = fl["binomial"]
    mc = b["monte_carlo"]
    parts = [
        "## Fleet (subsetting, simulated)",
        "",
        f"{c:,} clients x {m:,} servers, `subset.size` {size} (`min_aperture` "
        f"{fl['min_aperture']}), simulated on the sans-IO core (`eagle.core.subset`), no "
        f"sockets. Probes at the default `health.interval` {fl['health_interval']:g} s. Churn = "
        "members changed per client (`max(joined, left)`) when one server is added or removed, "
        f"max / mean over {fl['events']} events each. Load = calls per server when each client "
        f"spreads its calls over its subset by weight (1.00 = even). Took {fl['elapsed_s']:.1f} s.",
        "",
        _table(
            [
                "subsetting",
                "connections",
                "conns / server max / mean",
                "max / mean",
                "load max / mean",
                "probes / server / s max / mean",
                "members / client",
                "churn +1 server max / mean",
                "churn -1 server max / mean",
            ],
            rows,
        ),
        "",
        "Uncoordinated random subsets for comparison: each server's connection count is "
        f"Binomial({c}, {size}/{m}); the expected busiest of {m} servers has "
        f"{b['expected_max']:.1f} connections, {b['max_over_mean']:.2f} x the mean (binomial "
        f"tail, servers taken as independent); Monte Carlo ({mc['trials']} fleets of "
        f"`random.sample`): {mc['max_over_mean']:.2f} x on average, p95 {mc['p95']:.2f} x.",
        "",
    ]
    ap = fl["modes"].get("aperture")
    if ap and "churn_bound" in ap:
        parts += [
            f"aperture's documented churn bound here: {ap['churn_bound']['add']} when a server "
            f"is added, {ap['churn_bound']['remove']} when one is removed (2, plus ceil(M / C) "
            "when the slice width ceil(A x C / M) client units steps).",
            "",
        ]
    return "\n".join(parts)


def section_configs(res: dict[str, Any]) -> str:
    used = sorted(res.get("eagle_configs_used", []))
    parts = [
        "## Configurations",
        "",
        "eagle configs used in this run (as passed to `eagle.insecure_channel(..., "
        "config=...)`; every key not given is at its default):",
        "",
    ]
    for name in used:
        parts.append(f"- `{name}`: `{json.dumps(EAGLE_CONFIGS[name])}`")
    parts += [
        "",
        "<details><summary>eagle defaults (<code>eagle.Config().to_dict()</code>)</summary>",
        "",
        "```json",
        json.dumps(res.get("eagle_defaults", {}), indent=1),
        "```",
        "</details>",
        "",
        "grpcio setups (all with `grpc.enable_http_proxy` 0):",
        "",
    ]
    for name, desc in GRPC_DESCRIPTIONS.items():
        _, sc, extra = GRPC_SETUPS[name]
        detail = []
        if sc:
            detail.append(f"service config `{json.dumps(sc)}`")
        if extra:
            detail.append("options " + ", ".join(f"`{k}={v}`" for k, v in extra))
        parts.append(f"- `{name}`: {desc}" + (f"; {'; '.join(detail)}" if detail else ""))
    parts.append("")
    return "\n".join(parts)


def section_definitions() -> str:
    return "\n".join(
        [
            "## Definitions",
            "",
            f"- A call is *hit* by a fault when it failed or took >= {SLOW_S * 1000:.0f} ms; in "
            "`drain`, when it failed or was answered by the drained member (a drained member "
            "answers at full speed, so slow calls there are machine noise).",
            "- **detect**: eagle (ᵉ): the faulted member left SERVING in eagle's status "
            "table; grpcio exposes no per-member status, so for it: when the last hit call "
            "was *sent* (after that it stopped sending calls into the fault).",
            "- **recover**: when the last hit call *ended*: the last time the application saw "
            "a failure or a slow call. *never* = hit calls were still being sent in the last "
            "0.75 s of the run (or of the fault, when it is lifted).",
            "- **failures stop** (failover): the same, counting failed calls only.",
            "- **tput recover**: after the fault, the end of the last 0.5 s window whose "
            "successful calls/s were under 90 % of the pre-fault level.",
            "- **ok calls/s**: successful calls per second over the whole run; latency "
            "percentiles cover every call, failed ones included.",
            "- **CPU s / 1000 calls**: user + system CPU of the client's own process "
            "(`getrusage`) during the load, every thread included (eagle's prober too), per "
            "1000 calls. **peak RSS**: the process's `VmHWM` (`ru_maxrss` would include the "
            "parent's, which Linux keeps across fork + exec).",
            "- Times are seconds after the fault was injected.",
            "",
        ]
    )


def render(res: dict[str, Any], plots: set[str] | None = None) -> str:
    """The whole report. With ``plots`` given, image links to other plots are dropped
    (the copy in ``results/latest`` only carries the key plots)."""
    sc = res.get("scenarios", {})
    env = res.get("env", {})
    opts = res.get("options", {})
    targets = res.get("targets") or evaluate_targets(res)
    lines = [
        "# eagle benchmark report",
        "",
        f"- run: `{res.get('run_id')}`, {'quick' if opts.get('quick') else 'full'} mode, "
        f"took {res.get('elapsed_s', 0):.0f} s",
        f"- command: `{res.get('command')}`",
        f"- machine: {env.get('cpu')}, {env.get('cores')} cores, {env.get('kernel')}; "
        f"load average at start {env.get('loadavg_start')}, at end {env.get('loadavg_end')}",
        f"- versions: Python {env.get('python')}, grpcio {env.get('grpcio')}, eagle "
        f"{env.get('eagle')} (git {env.get('git')})",
    ]
    if res.get("reanalyzed"):
        lines.append(
            f"- figures recomputed from this run's raw per-call records on "
            f"{res['reanalyzed']} (`python -m benchmarks --report-from <run dir>`); "
            "nothing was run again"
        )
    lines += [
        "",
        "The machine is shared and noisy: compare ratios against the baseline measured in "
        "the same run, not absolute numbers across runs.",
        "",
        "## Targets",
        "",
        _table(
            ["area", "target (source)", "measured", "baseline, same run", "verdict"],
            [
                [
                    t["area"],
                    f"{t['target']} ({t['source']})",
                    t["measured"],
                    t["baseline"],
                    t["verdict"],
                ]
                for t in targets
            ],
        ),
        "",
    ]
    met = sum(1 for t in targets if t["ok"] is True)
    missed = [t for t in targets if t["ok"] is False]
    lines.append(f"{met} of {len(targets)} targets met, {len(missed)} missed.")
    if missed:
        lines += ["", "Missed, with the measured figure:", ""]
        lines += [f"- {t['target']}: {t['measured']}" for t in missed]
    lines += ["", "![success](plots/success.png)", ""]
    lines.append(section_overhead(sc.get("overhead")))
    lines.append(section_otel(sc.get("otel")))
    lines.append(
        section_matrix(sc, ["steady", "crash", "restart", "hang", "drain", "slow", "flap"], opts)
    )
    lines.append(section_failover(sc.get("failover")))
    lines.append(section_retry_storm(sc.get("retry_storm")))
    lines.append(section_partition(sc.get("partition")))
    lines.append(section_idle(sc.get("idle")))
    lines.append(section_discovery(sc.get("discovery")))
    lines.append(section_scale(sc.get("scale")))
    lines.append(section_fleet(sc.get("fleet")))
    errors = {k: v["error"] for k, v in sc.items() if isinstance(v, dict) and "error" in v}
    if errors:
        lines += ["## Errors", ""] + [f"- `{k}`: {v}" for k, v in errors.items()] + [""]
    lines.append(section_configs(res))
    lines.append(section_definitions())
    text = "\n".join(lines)
    if plots is not None:
        out = []
        for line in text.splitlines():
            if line.startswith("![") and "(plots/" in line:
                name = line.split("(plots/")[1].rstrip(")")
                if name not in plots:
                    continue
            out.append(line)
        text = "\n".join(out) + "\n"
    return text
