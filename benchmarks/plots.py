"""PNG plots (matplotlib, Agg backend): timelines with the fault marked, success %, overhead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .clients import BASELINE

MATRIX = ("steady", "crash", "hang", "drain", "slow", "flap")


def _style(label: str) -> dict[str, Any]:
    if label.startswith("eagle"):
        return {"linewidth": 1.8}
    if label == BASELINE:
        return {"linewidth": 1.6, "linestyle": "--"}
    return {"linewidth": 1.0, "linestyle": ":"}


def timeline(
    path: Path,
    title: str,
    clients: dict[str, Any],
    *,
    t_fault: float | None,
    fault_end: float | None,
    duration: float,
    events: list[tuple[float, str]] | None = None,
) -> None:
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for label, c in clients.items():
        ts = c.get("timeseries")
        if not ts:
            continue
        style = _style(label)
        ax1.plot(ts["t"], ts["tput"], label=label, **style)
        ax2.plot(ts["t"], ts["p99"], label=label, **style)
    for ax in (ax1, ax2):
        if t_fault is not None:
            ax.axvline(t_fault, color="red", linestyle="--", linewidth=1.2)
            ax.axvspan(
                t_fault, fault_end if fault_end is not None else duration, color="red", alpha=0.06
            )
        for t, what in events or []:
            if what in ("stop", "cont"):
                ax.axvline(t, color="red" if what == "stop" else "green", alpha=0.3, linewidth=0.8)
        ax.grid(True, alpha=0.3)
    ax1.set_ylabel("successful calls/s (250 ms buckets)")
    ax2.set_ylabel("p99 latency ms (by call start)")
    ax2.set_yscale("log")
    ax2.set_xlabel("seconds since load start (red: fault)")
    ax1.set_title(title)
    ax1.legend(fontsize=7, ncol=3, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def success(path: Path, scenarios: dict[str, Any]) -> None:
    """A heat map: one row per client, one column per scenario, success % in each cell."""
    import numpy as np

    names = [n for n in (*MATRIX, "failover", "retry_storm", "partition") if n in scenarios]
    names = [n for n in names if isinstance(scenarios[n], dict) and "clients" in scenarios[n]]
    labels: list[str] = []
    for n in names:
        for label in scenarios[n]["clients"]:
            if label not in labels:
                labels.append(label)
    if not names or not labels:
        return
    labels.sort(key=lambda x: (not x.startswith("eagle"), x))
    grid = np.full((len(labels), len(names)), np.nan)
    for j, n in enumerate(names):
        for i, label in enumerate(labels):
            c = scenarios[n]["clients"].get(label)
            if c is not None and c["basic"]["success_pct"] is not None:
                grid[i, j] = c["basic"]["success_pct"]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 3.5, 0.38 * len(labels) + 1.6))
    cmap = plt.get_cmap("RdYlGn").copy()
    cmap.set_bad("#eeeeee")
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=80, vmax=100, aspect="auto")
    for i in range(len(labels)):
        for j in range(len(names)):
            v = grid[i, j]
            if not np.isnan(v):
                ax.text(
                    j, i, f"{v:.1f}" if v < 99.95 else "100", ha="center", va="center", fontsize=8
                )
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_title("success % of calls per scenario per client (whole run; grey: not in scenario)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def overhead(path: Path, ov: dict[str, Any]) -> None:
    groups = ov.get("groups") or {}
    if not groups:
        return
    fig, axes = plt.subplots(1, len(groups), figsize=(11, 4))
    if len(groups) == 1:
        axes = [axes]
    for ax, (gname, g) in zip(axes, groups.items(), strict=True):
        labels = list(g["clients"])
        vals = [g["clients"][k]["calls_per_s"] for k in labels]
        ax.bar(
            range(len(labels)),
            vals,
            color=["tab:blue" if k.startswith("eagle") else "tab:gray" for k in labels],
        )
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=20, fontsize=8)
        ax.set_title(f"{gname}: ratio {g['ratio']:.2f}" if g["ratio"] else gname)
        ax.set_ylabel("unary calls/s (median of rounds)")
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def make_all(out: Path, res: dict[str, Any]) -> list[str]:
    """Write every plot the results allow; returns their file names."""
    pdir = out / "plots"
    pdir.mkdir(parents=True, exist_ok=True)
    sc = res.get("scenarios", {})
    made: list[str] = []
    for n in MATRIX:
        s = sc.get(n)
        if isinstance(s, dict) and "clients" in s:
            timeline(
                pdir / f"timeline_{n}.png",
                f"{n}: {s['description']}",
                s["clients"],
                t_fault=s.get("t_fault"),
                fault_end=None,
                duration=s["duration"],
                events=s.get("events"),
            )
            made.append(f"timeline_{n}.png")
    fo = sc.get("failover")
    if isinstance(fo, dict) and "clients" in fo:
        tf = next(iter(fo["clients"].values()))["t_fault"] if fo["clients"] else None
        timeline(
            pdir / "timeline_failover.png",
            "failover: member 0 frozen (SIGSTOP)",
            fo["clients"],
            t_fault=tf,
            fault_end=None,
            duration=fo["duration"],
        )
        made.append("timeline_failover.png")
    rs = sc.get("retry_storm")
    if isinstance(rs, dict) and "clients" in rs:
        timeline(
            pdir / "timeline_retry_storm.png",
            "retry storm: every member UNAVAILABLE (clients run one after another)",
            rs["clients"],
            t_fault=rs["t_storm"],
            fault_end=rs["t_storm"] + rs["storm_s"],
            duration=rs["duration"],
        )
        made.append("timeline_retry_storm.png")
    pt = sc.get("partition")
    if isinstance(pt, dict) and "clients" in pt:
        timeline(
            pdir / "timeline_partition.png",
            "partition: etcd follower cut off (unary linearizable Range)",
            pt["clients"],
            t_fault=pt["t_partition"],
            fault_end=pt["t_heal"],
            duration=pt["duration"],
        )
        made.append("timeline_partition.png")
    success(pdir / "success.png", sc)
    if (pdir / "success.png").exists():
        made.append("success.png")
    ov = sc.get("overhead")
    if isinstance(ov, dict) and "groups" in ov:
        overhead(pdir / "overhead.png", ov)
        made.append("overhead.png")
    return made
