"""Soak: mixed traffic through eagle under random real faults, for minutes.

``make soak`` runs ``python -m eagle.testing.soak --minutes 10``. Every ``--report``
seconds it prints calls, failures and the client's RSS; at the end it fails (exit 1) when
RSS keeps growing or the failure rate climbs instead of staying flat.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO

import grpc

from .._sync.channel import Channel
from ..config import Config
from .cluster import LocalCluster
from .v1 import echo_pb2, echo_pb2_grpc

__all__ = ["SoakResult", "main", "run"]

SOAK_CONFIG: dict[str, object] = {
    "health": {"interval": 0.2, "timeout": 0.4},
    "retry": {"idempotent_methods": ["/eagle.testing.v1.Echo/Unary"], "per_try_timeout": 0.3},
    "outlier": {"base_ejection_time": 2.0},
}


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass
class SoakResult:
    """What a soak run saw: one sample per report period, and the verdict."""

    samples: list[tuple[float, int, int, int]] = field(default_factory=list)  # t, calls, fails, rss
    faults: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when neither RSS nor the failure rate grew without bound."""
        return not self.problems


def _judge(result: SoakResult) -> None:
    s = result.samples
    if len(s) < 4:
        result.problems.append(f"too few samples ({len(s)}) to judge")
        return
    half = len(s) // 2
    early = s[1:half]
    late = s[half:]
    early_rss = max(x[3] for x in early) if early else s[0][3]
    late_rss = max(x[3] for x in late)
    # allowed: allocator warm-up, not a steady climb
    if late_rss > early_rss * 1.25 + 8 * 1024:
        result.problems.append(f"RSS grew from {early_rss} KiB to {late_rss} KiB")

    def rate(a: tuple[float, int, int, int], b: tuple[float, int, int, int]) -> float:
        calls = b[1] - a[1]
        return (b[2] - a[2]) / calls if calls else 0.0

    first, last = rate(s[0], s[half]), rate(s[half], s[-1])
    if last > max(3 * first, 0.01):
        result.problems.append(f"failure rate climbed from {first:.4f} to {last:.4f}")
    if s[-1][1] - s[half][1] <= 0:
        result.problems.append("no calls succeeded in the second half")


def run(
    seconds: float,
    threads: int = 8,
    report: float = 10.0,
    seed: int | None = None,
    out: TextIO | None = None,
) -> SoakResult:
    """Soak for ``seconds``; returns the samples and the verdict."""
    out = out or sys.stdout
    rng = random.Random(seed)
    result = SoakResult()
    stop = threading.Event()
    counts = {"calls": 0, "fails": 0}
    lock = threading.Lock()
    with (
        LocalCluster(3) as cluster,
        Channel(cluster.endpoints, config=Config.from_dict(SOAK_CONFIG)) as ch,
    ):
        stub = echo_pb2_grpc.EchoStub(ch)  # type: ignore[no-untyped-call]

        def traffic(i: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    if n % 7 == 0:
                        list(stub.ServerStream(echo_pb2.EchoRequest(count=3), timeout=2))
                    elif n % 11 == 0:
                        stub.Write(echo_pb2.WriteRequest(key="k", request_id=f"{i}-{n}"), timeout=2)
                    else:
                        stub.Unary(echo_pb2.EchoRequest(message="soak"), timeout=2)
                    ok = True
                except grpc.RpcError:
                    ok = False
                with lock:
                    counts["calls"] += 1
                    counts["fails"] += 0 if ok else 1
                time.sleep(0.002)

        def chaos() -> None:
            while not stop.wait(rng.uniform(1.0, 3.0)):
                i = rng.randrange(3)
                kind = rng.choice(["crash", "hang", "drain", "slow"])
                result.faults.append(f"{kind} m{i}")
                if kind == "crash":
                    cluster.kill(i)
                    stop.wait(1.0)
                    cluster.restart(i)
                elif kind == "hang":
                    cluster.stop(i)
                    stop.wait(1.0)
                    cluster.cont(i)
                elif kind == "drain":
                    cluster.drain(i)
                    stop.wait(1.0)
                    cluster.undrain(i)
                else:
                    cluster.slow(i, 200)
                    stop.wait(1.0)
                    cluster.slow(i, 0)

        workers = [threading.Thread(target=traffic, args=(i,), daemon=True) for i in range(threads)]
        chaos_thread = threading.Thread(target=chaos, daemon=True)
        for w in workers:
            w.start()
        chaos_thread.start()
        start = time.monotonic()
        end = start + seconds
        while True:
            now = time.monotonic()
            with lock:
                sample = (round(now - start, 1), counts["calls"], counts["fails"], _rss_kib())
            result.samples.append(sample)
            print(
                f"t={sample[0]:7.1f}s calls={sample[1]:8d} failures={sample[2]:6d} "
                f"rss={sample[3] / 1024:7.1f} MiB",
                file=out,
                flush=True,
            )
            if now >= end:
                break
            time.sleep(min(report, max(0.0, end - time.monotonic())))
        stop.set()
        chaos_thread.join(10)
        for w in workers:
            w.join(5)
    _judge(result)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m eagle.testing.soak --minutes 10``."""
    p = argparse.ArgumentParser(prog="python -m eagle.testing.soak", description=__doc__)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--report", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    result = run(args.minutes * 60, args.threads, args.report, args.seed)
    print(f"faults injected: {len(result.faults)}")
    if result.ok:
        print("soak: OK (RSS and failure rate flat)")
        return 0
    print("soak: FAILED: " + "; ".join(result.problems))
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
