"""``make demo`` / ``eagle demo``: eagle on an embedded local cluster under real faults.

Starts three echo servers on 127.0.0.1, drives calls through an eagle channel from a few
threads, then crashes one member (SIGKILL), freezes one (SIGSTOP) and drains one
(NOT_SERVING), each in turn, showing the status table live. Ends with a summary: calls,
failures, p50/p99 latency and how long each fault took to notice. Exits by itself in
about 30 s and leaves nothing running.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

import grpc

from .._sync.channel import Channel
from ..config import Config
from ..core.status import State, Transition
from ..testing.cluster import LocalCluster
from ..testing.v1 import echo_pb2, echo_pb2_grpc

__all__ = ["DEMO_CONFIG", "main"]

#: the eagle configuration the demo uses (printed at start)
DEMO_CONFIG: dict[str, object] = {
    "health": {"interval": 0.2, "timeout": 0.4, "unhealthy_threshold": 2},
    "retry": {
        "idempotent_methods": ["/eagle.testing.v1.Echo/Unary"],
        "per_try_timeout": 0.3,
    },
    # short ejections so the crashed member is seen back within the demo
    "outlier": {"base_ejection_time": 2.0},
}


@dataclass
class _Load:
    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    per_server: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _drive(stub: echo_pb2_grpc.EchoStub, load: _Load, stop: threading.Event) -> None:
    request = echo_pb2.EchoRequest(message="demo")
    while not stop.is_set():
        start = time.monotonic()
        try:
            resp = stub.Unary(request, timeout=1.0)
        except grpc.RpcError as err:
            with load.lock:
                load.failures[err.code().name] += 1
            time.sleep(0.01)
            continue
        with load.lock:
            load.latencies.append(time.monotonic() - start)
            load.per_server[resp.server] += 1
        time.sleep(0.002)  # bounded rate: about 4 x 400 calls/s at most


def _table(ch: Channel, names: dict[str, str]) -> str:
    rows = ["  member  endpoint               state         probe ms  last error"]
    for ep, st in ch.status().items():
        lat = f"{st.last_latency * 1000:8.1f}" if st.last_latency is not None else "       -"
        err = (st.last_error or "")[:48]
        rows.append(f"  {names[ep]:<6}  {ep:<21}  {st.state.value:<12}  {lat}  {err}")
    return "\n".join(rows)


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Run the demo; returns 0 when every fault was noticed and the cluster recovered."""
    parser = argparse.ArgumentParser(
        prog="eagle demo", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    parser.add_argument(
        "--phase", type=float, default=4.0, help="seconds each fault lasts (default 4)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    out = out or sys.stdout
    tty = out.isatty()

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    noticed: dict[str, float] = {}
    fault_at: dict[str, tuple[str, float]] = {}
    events: list[str] = []

    with LocalCluster(3) as cluster:
        server_pids = [m.pid for m in cluster.members]
        names = {ep: f"m{i}" for i, ep in enumerate(cluster.endpoints)}
        say(f"eagle demo: 3 members on loopback: {', '.join(cluster.endpoints)}")
        say(f"config: {json.dumps(DEMO_CONFIG)}")
        with Channel(cluster.endpoints, config=Config.from_dict(DEMO_CONFIG)) as ch:

            def on_change(t: Transition) -> None:
                events.append(f"{time.strftime('%H:%M:%S')} {names[t.endpoint]} {t}")
                for fault, (ep, at) in fault_at.items():
                    if ep == t.endpoint and t.new is not State.SERVING and fault not in noticed:
                        noticed[fault] = time.monotonic() - at

            ch.on_change(on_change)
            stub = echo_pb2_grpc.EchoStub(ch)  # type: ignore[no-untyped-call]
            load = _Load()
            stop = threading.Event()
            workers = [
                threading.Thread(target=_drive, args=(stub, load, stop), daemon=True)
                for _ in range(args.threads)
            ]
            for w in workers:
                w.start()

            def show(label: str, seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    time.sleep(min(1.0, max(0.0, end - time.monotonic())))
                    with load.lock:
                        calls, fails = len(load.latencies), sum(load.failures.values())
                    header = f"[{label}] calls ok={calls} failed={fails}"
                    if tty:
                        out.write("\x1b[2J\x1b[H")
                    say(header)
                    say(_table(ch, names))
                    for line in events[-4:]:
                        say("  " + line)
                    say()

            phase = args.phase
            show("steady", 2.0)
            steps = [
                ("crash m0 (SIGKILL)", "crash", 0, cluster.kill, cluster.restart),
                ("hang m1 (SIGSTOP)", "hang", 1, cluster.stop, cluster.cont),
                ("drain m2 (NOT_SERVING)", "drain", 2, cluster.drain, cluster.undrain),
            ]
            for label, fault, idx, inject, recover in steps:
                fault_at[fault] = (cluster.endpoints[idx], time.monotonic())
                inject(idx)
                show(label, phase)
                recover(idx)
                show(f"recovering m{idx}", 2.5)
            stop.set()
            for w in workers:
                w.join(3)
            final = ch.status()
        server_pids += [m.pid for m in cluster.members if m.pid not in server_pids]

    lat = sorted(load.latencies)
    p50 = statistics.median(lat) * 1000 if lat else 0.0
    p99 = lat[int(0.99 * (len(lat) - 1))] * 1000 if lat else 0.0
    failed = sum(load.failures.values())
    summary = {
        "calls": len(lat) + failed,
        "failures": failed,
        "failures_by_code": dict(load.failures),
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "noticed_after_s": {k: round(v, 2) for k, v in noticed.items()},
        "calls_per_member": dict(load.per_server),
        "all_serving_at_end": all(s.state is State.SERVING for s in final.values()),
        "server_pids": server_pids,
    }
    if args.json:
        say(json.dumps(summary, indent=2))
    else:
        say("summary")
        say(f"  calls       {summary['calls']}")
        say(f"  failures    {failed} {dict(load.failures) or ''}")
        say(f"  latency     p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        for fault in ("crash", "hang", "drain"):
            took = noticed.get(fault)
            say(f"  {fault:<6} noticed after {took:.2f} s" if took else f"  {fault:<6} NOT noticed")
        say(f"  per member  {dict(load.per_server)}")
        say(f"  all members SERVING at the end: {summary['all_serving_at_end']}")
    ok = len(noticed) == 3 and bool(summary["all_serving_at_end"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
