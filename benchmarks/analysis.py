"""Turn per-call records into the figures the report shows.

Definitions (also printed in the report):

* a call is *hit* by the fault when it failed or took at least ``SLOW_S`` (190 ms); in
  the ``drain`` scenario, when it failed or was answered by the drained member;
* **detect**: for eagle, when the faulted member left SERVING in eagle's status table;
  for grpcio (which exposes no per-member status), when the last hit call was *sent*
  (after that the client stopped sending calls into the fault);
* **recover**: when the last hit call *ended*, i.e. the last time the application saw
  a failure or a slow call (``None``/"never" when hit calls were still being sent in
  the last ``SETTLE_S`` of the run, or of the fault when it is lifted);
* **failures stop**: the same, counting failed calls only (issue 2's "time until calls
  stop failing");
* **tput recover**: after the fault, when the rolling 0.5 s throughput of successful calls
  last dipped under 90 % of its pre-fault level.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .worker import SLOW_S

CODE_NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}

#: hits must have stopped this long before the end of the run to count as recovered
SETTLE_S = 0.75


def arrays(result: dict[str, Any]) -> dict[str, np.ndarray]:
    c = result["calls"]
    start = np.asarray(c["start"], dtype=float)
    lat = np.asarray(c["latency"], dtype=float)
    return {
        "start": start,
        "latency": lat,
        "end": start + lat,
        "code": np.asarray(c["code"], dtype=int),
        "server": np.asarray(c["server"], dtype=int),
    }


def pct(values: np.ndarray, q: float) -> float | None:
    if values.size == 0:
        return None
    return float(np.percentile(values, q, method="higher"))


def basic(result: dict[str, Any], duration: float) -> dict[str, Any]:
    """Calls, failures by code, success %, throughput, latency, CPU, RSS."""
    a = arrays(result)
    n = int(a["start"].size)
    ok = a["code"] == 0
    fails: dict[str, int] = {}
    for code in np.unique(a["code"][~ok]):
        fails[CODE_NAMES.get(int(code), str(code))] = int(np.sum(a["code"] == code))
    lat_ms = a["latency"] * 1000.0
    cpu = float(result.get("cpu_s", 0.0))
    return {
        "calls": n,
        "ok": int(ok.sum()),
        "failed": int(n - ok.sum()),
        "failures": fails,
        "success_pct": 100.0 * float(ok.sum()) / n if n else None,
        "throughput": float(ok.sum()) / duration if duration > 0 else None,
        "p50_ms": pct(lat_ms, 50),
        "p99_ms": pct(lat_ms, 99),
        "p999_ms": pct(lat_ms, 99.9),
        "max_ms": float(lat_ms.max()) if n else None,
        "cpu_s": cpu,
        "cpu_per_1000": 1000.0 * cpu / n if n else None,
        "max_rss_mib": float(result.get("max_rss_kib", 0)) / 1024.0,
        "stuck": int(result.get("stuck_threads", 0)),
        "errors": result.get("errors", []),
    }


def hits_mask(a: dict[str, np.ndarray], scenario: str, victim: int | None) -> np.ndarray:
    """Calls the fault hit. A drained member keeps answering at full speed, so in
    ``drain`` a hit is a call it answered (or a failure), never a slow call: a slow call
    there is the shared machine's noise, not the fault's doing."""
    failed = a["code"] != 0
    if scenario == "drain" and victim is not None:
        return failed | (a["server"] == victim)
    return failed | (a["latency"] >= SLOW_S)


def paired_ratio(a_runs: list[float], b_runs: list[float]) -> tuple[float | None, list[float]]:
    """Median of per-round ratios a/b of interleaved runs (each round's two runs ran back
    to back, so load from elsewhere on the machine hits both alike), and the ratios."""
    rs = [x / y for x, y in zip(a_runs, b_runs, strict=True) if y]
    if not rs:
        return None, []
    return float(np.median(rs)), rs


def _rolling_ok_rate(a: dict[str, np.ndarray], t_from: float, t_to: float, width: float = 0.5):
    ok_end = np.sort(a["end"][a["code"] == 0])
    starts = np.arange(t_from, max(t_from, t_to - width) + 1e-9, 0.1)
    lo = np.searchsorted(ok_end, starts, side="left")
    hi = np.searchsorted(ok_end, starts + width, side="left")
    return starts, (hi - lo) / width


def fault_metrics(
    result: dict[str, Any],
    *,
    scenario: str,
    t_fault: float,
    duration: float,
    victim: int | None,
    victim_endpoint: str | None,
    fault_end: float | None = None,
) -> dict[str, Any]:
    """Impact of a fault at ``t_fault`` (seconds after t0), see the module docstring.

    ``fault_end`` (when the fault is lifted before the end of the run, e.g. the retry
    storm) bounds the window in which hits count.
    """
    a = arrays(result)
    horizon = duration if fault_end is None else fault_end
    after = a["end"] > t_fault
    hit = hits_mask(a, scenario, victim) & after
    failed = (a["code"] != 0) & after
    # calls made after the fault (not in flight when it hit), and those made after the
    # client could know of it (the first failure it saw ended): those a balancer can save
    fails = a["code"] != 0
    started_after = a["start"] >= t_fault
    seen = a["end"][failed]
    t_seen = float(seen.min()) if seen.size else None
    out: dict[str, Any] = {
        "t_fault": t_fault,
        "failed_after": int(failed.sum()),
        "failed_started_after": int((fails & started_after).sum()),
        "t_first_failure": t_seen,
        "failed_after_seen": 0 if t_seen is None else int((fails & (a["start"] >= t_seen)).sum()),
        "hits_after": int(hit.sum()),
    }

    def last(mask: np.ndarray, field: str) -> float | None:
        if not mask.any():
            return 0.0
        t = float(a[field][mask].max())
        # hits still happening at the end of the window: not recovered
        if float(a["start"][mask].max()) > horizon - SETTLE_S:
            return None
        return max(0.0, t - t_fault)

    out["last_hit_sent_s"] = last(hit, "start")
    out["recover_s"] = last(hit, "end")
    out["failures_stop_s"] = last(failed, "end")
    if fault_end is not None:
        # a fault that ends by itself: measure recovery from its end
        late = hit & (a["start"] >= fault_end)
        out["hits_after_fault_end"] = int(late.sum())
        out["recover_after_end_s"] = (
            max(0.0, float(a["end"][late].max()) - fault_end) if late.any() else 0.0
        )
    # eagle's own detection: the victim leaving SERVING in the status table
    det = None
    for t, ep, _old, new, _why in result.get("transitions", []):
        if ep == victim_endpoint and t >= t_fault - 0.05 and new != "SERVING":
            det = max(0.0, t - t_fault)
            break
    out["status_detect_s"] = det
    out["detect_s"] = det if det is not None else out["last_hit_sent_s"]
    # throughput recovery against the pre-fault level
    pre_from = min(0.5, t_fault / 2)
    _, pre = _rolling_ok_rate(a, pre_from, t_fault)
    base = float(np.median(pre)) if pre.size else 0.0
    out["pre_fault_tput"] = base
    if base > 0:
        starts, rates = _rolling_ok_rate(a, t_fault, horizon)
        low = rates < 0.9 * base
        out["tput_min_ratio"] = float(rates.min() / base) if rates.size else None
        if not low.any():
            out["tput_recover_s"] = 0.0
        else:
            i = int(np.nonzero(low)[0].max())
            end_of_dip = float(starts[i] + 0.5)
            out["tput_recover_s"] = (
                None if end_of_dip > horizon - SETTLE_S else max(0.0, end_of_dip - t_fault)
            )
    else:
        out["tput_min_ratio"] = None
        out["tput_recover_s"] = None
    # share of successful calls the victim answered, from 1 s after the fault on
    later = (a["code"] == 0) & (a["start"] >= t_fault + 1.0)
    if victim is not None and later.any():
        out["victim_share_after_1s"] = float(np.mean(a["server"][later] == victim))
    # latency in the fault window
    win = a["start"] >= t_fault
    lat_ms = a["latency"][win] * 1000.0
    out["fault_p50_ms"] = pct(lat_ms, 50)
    out["fault_p99_ms"] = pct(lat_ms, 99)
    out["fault_p999_ms"] = pct(lat_ms, 99.9)
    pre_mask = a["start"] < t_fault
    out["pre_p99_ms"] = pct(a["latency"][pre_mask] * 1000.0, 99)
    return out


def timeseries(result: dict[str, Any], duration: float, bucket: float = 0.25) -> dict[str, Any]:
    """Per-bucket throughput (successful calls/s, by end time), p50/p99 latency and
    failures (by start time), for the plots."""
    a = arrays(result)
    nb = max(1, math.ceil(duration / bucket))
    edges = np.arange(nb + 1) * bucket
    ok = a["code"] == 0
    tput = np.histogram(a["end"][ok], bins=edges)[0] / bucket
    fails = np.histogram(a["start"][~ok], bins=edges)[0]
    idx = np.clip((a["start"] / bucket).astype(int), 0, nb - 1)
    p50 = np.full(nb, np.nan)
    p99 = np.full(nb, np.nan)
    lat_ms = a["latency"] * 1000.0
    order = np.argsort(idx, kind="stable")
    sidx = idx[order]
    slat = lat_ms[order]
    bounds = np.searchsorted(sidx, np.arange(nb + 1))
    for b in range(nb):
        seg = slat[bounds[b] : bounds[b + 1]]
        if seg.size:
            p50[b] = np.percentile(seg, 50)
            p99[b] = np.percentile(seg, 99)
    return {
        "t": (edges[:-1] + bucket / 2).tolist(),
        "tput": tput.tolist(),
        "fails": fails.tolist(),
        "p50": p50.tolist(),
        "p99": p99.tolist(),
    }


def fmt(v: Any, unit: str = "", digits: int = 2) -> str:
    """Format a figure for the report ("—" for missing)."""
    if v is None:
        return "—"
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        if abs(v) >= 100:
            s = f"{v:,.0f}"
        elif abs(v) >= 10:
            s = f"{v:.1f}"
        else:
            s = f"{v:.{digits}f}"
        return s + unit
    return f"{v}{unit}"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def restart_metrics(
    result: dict[str, Any], *, t_restart: float, victim: int, victim_endpoint: str
) -> dict[str, Any]:
    """After a killed member is restarted at ``t_restart``: when eagle's status table saw
    it SERVING again (its first SERVING probe answer), when it answered its first call
    again, and the gap between the two (issue 11: within one probe interval)."""
    a = arrays(result)
    mask = (a["server"] == victim) & (a["code"] == 0) & (a["start"] >= t_restart)
    first_call = float(a["end"][mask].min()) if mask.any() else None
    serving = [
        t[0]
        for t in result.get("transitions", [])
        if t[1] == victim_endpoint and t[3] == "SERVING" and t[0] >= t_restart
    ]
    t_serving = min(serving) if serving else None
    return {
        "t_restart": t_restart,
        "serving_after_s": None if t_serving is None else t_serving - t_restart,
        "first_call_after_s": None if first_call is None else first_call - t_restart,
        "gap_s": (
            None if t_serving is None or first_call is None else max(0.0, first_call - t_serving)
        ),
    }
