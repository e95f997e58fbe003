"""``python -m benchmarks``: the one entry point of the suite.

python -m benchmarks                    # everything, full length (< 10 min on 2 cores)
python -m benchmarks --quick            # everything, briefly (< 2 min)
python -m benchmarks --scenarios hang,slow --clients eagle-sync,grpc-rr-hc
python -m benchmarks --duration 20 --concurrency 8 --rate 400 --out /tmp/bench
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import plots, report
from .common import Ctx, Options
from .procs import REPO_ROOT, kill_all

ALL_SCENARIOS = (
    "overhead",
    "idle",
    "otel",
    "steady",
    "crash",
    "restart",
    "hang",
    "drain",
    "slow",
    "flap",
    "failover",
    "retry_storm",
    "scale",
    "fleet",
    "partition",
    "discovery",
)
RESULTS = REPO_ROOT / "benchmarks" / "results"
KEY_PLOTS = ("success.png", "timeline_hang.png")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="eagle benchmark suite: eagle vs grpcio under real faults.",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(ALL_SCENARIOS),
        help=f"comma-separated, from: {', '.join(ALL_SCENARIOS)} (default: all)",
    )
    p.add_argument(
        "--clients",
        default=None,
        help="comma-separated client labels or prefixes, e.g. eagle-sync,grpc-rr-hc "
        "(default: all; the baseline grpc-rr-hc is always kept where a scenario needs it)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of load per fault scenario (default 10, quick 2.5)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="threads (asyncio: tasks) per client in fault scenarios (default 4)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="calls/s per client in fault scenarios, 0 = unpaced (default 100)",
    )
    p.add_argument("--deadline", type=float, default=1.0, help="per-call deadline (default 1 s)")
    p.add_argument("--quick", action="store_true", help="run every scenario briefly (< 2 min)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default benchmarks/results/<timestamp>)",
    )
    p.add_argument(
        "--report-from",
        type=Path,
        default=None,
        metavar="DIR",
        help="run nothing: recompute the figures of the run in DIR from its raw per-call "
        "records and write its report, plots and JSON again",
    )
    p.add_argument(
        "--no-latest",
        action="store_true",
        help="do not refresh benchmarks/results/latest after a full run",
    )
    return p


def _env() -> dict[str, Any]:
    import grpc

    import eagle

    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        git = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except Exception:
        git = "?"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "eagle": eagle.__version__,
        "git": git or "?",
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _run_one(ctx: Ctx, name: str) -> dict[str, Any]:
    from . import (
        discovery,
        failover,
        faults,
        fleet,
        idle,
        otel,
        overhead,
        partition,
        retry_storm,
        scale,
    )

    if name in faults.FAULT_SCENARIOS:
        return faults.run_fault_scenario(ctx, name)
    runners = {
        "overhead": overhead.run_overhead,
        "idle": idle.run_idle,
        "otel": otel.run_otel,
        "failover": failover.run_failover,
        "retry_storm": retry_storm.run_retry_storm,
        "scale": scale.run_scale,
        "fleet": fleet.run_fleet,
        "partition": partition.run_partition,
        "discovery": discovery.run_discovery,
    }
    return runners[name](ctx)


def _used_configs(res: dict[str, Any]) -> list[str]:
    used: set[str] = set()

    def walk(d: Any) -> None:
        if isinstance(d, dict):
            spec = d.get("spec")
            if isinstance(spec, dict) and spec.get("family") == "eagle" and spec.get("config"):
                used.add(spec["config"])
            for v in d.values():
                walk(v)

    walk(res.get("scenarios"))
    return sorted(used)


def _print_targets(console: Console, targets: list[dict[str, Any]]) -> None:
    table = Table(title="targets", show_lines=False)
    for col in ("area", "target", "measured", "verdict"):
        table.add_column(col, overflow="fold")
    for t in targets:
        verdict = t["verdict"].replace("**", "")
        style = "green" if t["ok"] else ("red" if t["ok"] is False else "yellow")
        table.add_row(
            escape(t["area"]), escape(t["target"]), escape(t["measured"]), f"[{style}]{verdict}"
        )
    console.print(table)


def reanalyze(out: Path, update_latest: bool) -> int:
    """Recompute a finished run's figures from its raw records; rewrite its outputs."""
    from . import analysis, faults, overhead, scale

    console = Console(stderr=True)
    res = json.loads((out / "results.json").read_text())
    sc = res.get("scenarios", {})
    for name in faults.FAULT_SCENARIOS:
        s = sc.get(name)
        if not isinstance(s, dict) or "clients" not in s:
            continue
        for label, entry in s["clients"].items():
            raw = out / "raw" / f"{name}-{label}.json"
            if not raw.exists():
                continue
            r = json.loads(raw.read_text())
            entry["basic"] = analysis.basic(r, s["duration"])
            entry["timeseries"] = analysis.timeseries(r, s["duration"])
            if s.get("t_fault") is not None:
                entry["fault"] = analysis.fault_metrics(
                    r,
                    scenario=name,
                    t_fault=s["t_fault"],
                    duration=s["duration"],
                    victim=faults.VICTIM,
                    victim_endpoint=s["victim"],
                )
    for key in ("overhead", "otel"):
        ov = sc.get(key)
        if isinstance(ov, dict):
            for g in (ov.get("groups") or {}).values():
                overhead.set_ratios(g)
    sca = sc.get("scale")
    if isinstance(sca, dict) and "sizes" in sca:
        scale.add_marginal(sca)
    res["reanalyzed"] = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    res["eagle_configs_used"] = _used_configs(res)
    res["targets"] = report.evaluate_targets(res)
    made = plots.make_all(out, res)
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str))
    (out / "report.md").write_text(report.render(res))
    _print_targets(console, res["targets"])
    console.log(f"report: {out / 'report.md'} (figures recomputed from {out / 'raw'})")
    opts = res.get("options", {})
    full = (
        not opts.get("quick")
        and list(opts.get("scenarios", [])) == list(ALL_SCENARIOS)
        and not opts.get("clients")
        and not any(isinstance(v, dict) and "error" in v for v in sc.values())
    )
    if full and update_latest:
        _update_latest(out, res, made)
        console.log(f"updated {RESULTS / 'latest'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.report_from is not None:
        return reanalyze(args.report_from, not args.no_latest)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in ALL_SCENARIOS]
    if unknown:
        print(
            f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(ALL_SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    scenarios = [s for s in ALL_SCENARIOS if s in scenarios]  # canonical order
    run_id = dt.datetime.now().strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else "")
    out = args.out or RESULTS / run_id
    out.mkdir(parents=True, exist_ok=True)
    opts = Options(
        quick=args.quick,
        scenarios=scenarios,
        clients=[c.strip() for c in args.clients.split(",")] if args.clients else None,
        duration=args.duration or (2.5 if args.quick else 10.0),
        concurrency=args.concurrency,
        rate=args.rate if args.rate is not None else 100.0,
        deadline=args.deadline,
        out=out,
        update_latest=not args.no_latest,
    )
    console = Console(stderr=True)
    argv_shown = argv if argv is not None else sys.argv[1:]
    res: dict[str, Any] = {
        "run_id": run_id,
        "command": " ".join(["python -m benchmarks", *(shlex.quote(a) for a in argv_shown)]),
        "options": {
            "quick": opts.quick,
            "scenarios": scenarios,
            "clients": opts.clients,
            "duration": opts.duration,
            "concurrency": opts.concurrency,
            "rate": opts.rate,
            "deadline": opts.deadline,
            "fault_at": opts.fault_at,
        },
        "env": _env(),
        "scenarios": {},
    }
    import eagle

    res["eagle_defaults"] = eagle.Config().to_dict()
    started = time.monotonic()
    console.log(f"eagle benchmarks: {', '.join(scenarios)} -> {out}")
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    ctx = Ctx(opts=opts, console=console, progress=progress, results=res)
    rc = 0
    try:
        with progress:
            overall = progress.add_task("all scenarios", total=len(scenarios))
            for name in scenarios:
                t = time.monotonic()
                try:
                    res["scenarios"][name] = _run_one(ctx, name)
                    console.log(f"{name}: done in {time.monotonic() - t:.1f} s")
                except KeyboardInterrupt:
                    raise
                except Exception as exc:
                    rc = 1
                    ctx.end_stage()
                    kill_all()
                    res["scenarios"][name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
                    console.log(f"[red]{name} failed: {escape(str(exc))}")
                    (out / "logs").mkdir(exist_ok=True)
                    with open(out / "logs" / f"{name}-error.txt", "w") as f:
                        traceback.print_exc(file=f)
                progress.advance(overall)
    finally:
        kill_all()
    res["elapsed_s"] = time.monotonic() - started
    res["env"]["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    res["eagle_configs_used"] = _used_configs(res)
    res["targets"] = report.evaluate_targets(res)
    made = plots.make_all(out, res)
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str))
    (out / "report.md").write_text(report.render(res))
    _print_targets(console, res["targets"])
    console.log(f"report: {out / 'report.md'} ({res['elapsed_s']:.0f} s)")
    full = not opts.quick and list(scenarios) == list(ALL_SCENARIOS) and not opts.clients
    if full and opts.update_latest and rc == 0:
        _update_latest(out, res, made)
        console.log(f"updated {RESULTS / 'latest'}")
    return rc


def _update_latest(out: Path, res: dict[str, Any], made: list[str]) -> None:
    latest = RESULTS / "latest"
    if latest.exists():
        shutil.rmtree(latest)
    (latest / "plots").mkdir(parents=True)
    keep = {p for p in KEY_PLOTS if p in made}
    for p in keep:
        shutil.copy2(out / "plots" / p, latest / "plots" / p)
    (latest / "report.md").write_text(report.render(res, plots=keep))
    summary = {k: v for k, v in res.items() if k != "scenarios"}
    (latest / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
