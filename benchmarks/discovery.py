"""Discovery: the member set changes under load, through DNS and through etcd's registry.

* **dns**: four echo servers on 127.0.0.2..5 (one port; each A record is one pod) behind
  a real dnsmasq on 127.0.0.1 (:class:`eagle.testing.dns.DnsServer`). An eagle channel on
  ``dns:///pods.eagle.bench:<port>`` (dnspython against dnsmasq, ``discovery.period``
  0.5 s, ``min_interval`` 0.2 s; gRPC's defaults are 30 s) carries closed-loop unary
  calls from 4 threads while the records change: each round adds the pod that is out
  and removes another.
* **etcd**: a real 3-member etcd, four echo servers, each registered with
  :class:`eagle.server.EtcdRegistration` (2 s lease) or deregistered in turn; an eagle
  channel on ``etcd:///<target>`` carries the same load.

Reported for each: the time from the registration change (the DNS records rewritten, the
key written) to the first call served by the new member, and the calls that failed
while the set changed (the goal is 0: members that stay are not disturbed, a removed
member's calls in flight finish on it).

Run alone: ``python -m benchmarks --scenarios discovery``.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections import Counter
from typing import Any

import grpc

import eagle
from eagle.testing.cluster import LocalCluster
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

from .common import Ctx

THREADS = 4
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
NAMES = ["p0", "p1", "p2", "p3"]
DNS_NAME = "pods.eagle.bench"
HEALTH = {"interval": 0.2, "timeout": 0.5}


class _Load:
    """Closed-loop unary calls from THREADS threads, bounded in count and time."""

    def __init__(self, ch: grpc.Channel, max_seconds: float) -> None:
        self.stub = echo_pb2_grpc.EchoStub(ch)
        self.max_seconds = max_seconds
        self.counts: Counter[str] = Counter()
        self.first_after: dict[str, float] = {}
        self.failures: Counter[str] = Counter()
        self._since: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(THREADS)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def expect(self, name: str) -> float:
        """Start timing ``name``'s first answer from now; returns the start time."""
        now = time.monotonic()
        with self._lock:
            self._since[name] = now
            self.first_after.pop(name, None)
        return now

    def first(self, name: str) -> float | None:
        with self._lock:
            return self.first_after.get(name)

    def _run(self) -> None:
        end = time.monotonic() + self.max_seconds
        for _ in range(200_000):
            if self._stop.is_set() or time.monotonic() > end:
                return
            try:
                resp = self.stub.Unary(echo_pb2.EchoRequest(message="b", sleep_ms=5), timeout=2)
            except grpc.RpcError as err:
                with self._lock:
                    self.failures[err.code().name] += 1
                continue
            now = time.monotonic()
            with self._lock:
                self.counts[resp.server] += 1
                since = self._since.get(resp.server)
                if since is not None and resp.server not in self.first_after:
                    self.first_after[resp.server] = now - since


def _wait(pred: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            return False
        time.sleep(0.002)
    return True


def _free_port() -> int:
    for _ in range(20):
        with socket.socket() as s:
            s.bind((HOSTS[0], 0))
            port = int(s.getsockname()[1])
        ok = True
        for host in HOSTS[1:]:
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no port free on 127.0.0.2..5")


def _summary(joins: list[float | None], load: _Load, rounds: int) -> dict[str, Any]:
    got = [j for j in joins if j is not None]
    return {
        "rounds": rounds,
        "join_s": joins,
        "join_median_s": statistics.median(got) if got else None,
        "join_max_s": max(got) if len(got) == len(joins) and got else None,
        "calls": sum(load.counts.values()),
        "per_member": dict(load.counts),
        "failed": sum(load.failures.values()),
        "failures": dict(load.failures),
    }


def _run_dns(ctx: Ctx, rounds: int) -> dict[str, Any]:
    from eagle.testing.dns import DnsServer, dnsmasq_unavailable_reason

    reason = dnsmasq_unavailable_reason()
    if reason is not None:
        ctx.log(f"[yellow]discovery dns skipped: {reason}")
        return {"skipped": reason}
    period, min_interval = 0.5, 0.2
    with (
        LocalCluster(4, hosts=HOSTS, port=_free_port(), names=NAMES) as pods,
        DnsServer({DNS_NAME: HOSTS[:3]}, ttl=1) as dns,
    ):
        port = pods.members[0].port
        cfg = {
            "discovery": {
                "period": period,
                "min_interval": min_interval,
                "dns": {"nameservers": [dns.nameserver], "timeout": 0.5},
            },
            "health": HEALTH,
        }
        with eagle.insecure_channel(f"dns:///{DNS_NAME}:{port}", config=cfg) as ch:
            _wait(lambda: len(ch.endpoints) == 3, 5)
            load = _Load(ch, max_seconds=rounds * 4 + 10)
            load.start()
            joins: list[float | None] = []
            live = [0, 1, 2]
            try:
                for r in range(rounds):
                    out = next(i for i in range(4) if i not in live)
                    leave = live[r % len(live)]
                    live = [i for i in live if i != leave] + [out]
                    load.expect(NAMES[out])
                    dns.set(DNS_NAME, [HOSTS[i] for i in live], wait=0)
                    _wait(lambda n=NAMES[out]: load.first(n) is not None, 5)  # type: ignore[misc]
                    joins.append(load.first(NAMES[out]))
                    time.sleep(1.0)  # the removed pod's calls finish; load goes on
            finally:
                load.stop()
            res = _summary(joins, load, rounds)
            res.update({"period": period, "min_interval": min_interval})
            return res


def _run_etcd(ctx: Ctx, rounds: int) -> dict[str, Any]:
    from eagle.server import EtcdRegistration
    from eagle.testing.etcd import EtcdCluster, cleanup_iptables, etcd_unavailable_reason

    reason = etcd_unavailable_reason()
    if reason is not None:
        ctx.log(f"[yellow]discovery etcd skipped: {reason}")
        return {"skipped": reason}
    target = f"bench-{int(time.time() * 1000) % 1_000_000}"
    try:
        with EtcdCluster(3) as etcd, LocalCluster(4, names=NAMES) as servers:
            regs: dict[int, EtcdRegistration] = {}

            def register(i: int) -> None:
                regs[i] = EtcdRegistration(
                    etcd.endpoints, target, servers.endpoints[i], ttl=2
                ).start()

            for i in range(3):
                register(i)
            cfg = {"discovery": {"etcd": {"endpoints": etcd.endpoints}}, "health": HEALTH}
            with eagle.insecure_channel(f"etcd:///{target}", config=cfg) as ch:
                _wait(lambda: len(ch.endpoints) == 3, 5)
                load = _Load(ch, max_seconds=rounds * 3 + 10)
                load.start()
                joins: list[float | None] = []
                live = [0, 1, 2]
                try:
                    for r in range(rounds):
                        out = next(i for i in range(4) if i not in live)
                        leave = live[r % len(live)]
                        load.expect(NAMES[out])
                        register(out)
                        _wait(lambda n=NAMES[out]: load.first(n) is not None, 5)  # type: ignore[misc]
                        joins.append(load.first(NAMES[out]))
                        regs.pop(leave).stop()
                        live = [i for i in live if i != leave] + [out]
                        time.sleep(0.5)
                finally:
                    load.stop()
                    for reg in regs.values():
                        reg.stop()
                return _summary(joins, load, rounds)
    finally:
        cleanup_iptables()


def run_discovery(ctx: Ctx) -> dict[str, Any]:
    """Both providers, each alone; a part that cannot run here says why."""
    rounds = 2 if ctx.opts.quick else 4
    out: dict[str, Any] = {}
    ctx.stage("discovery: dns", rounds * 1.5 + 4)
    try:
        out["dns"] = _run_dns(ctx, rounds)
    except Exception as exc:
        out["dns"] = {"error": repr(exc)}
    ctx.stage("discovery: etcd", rounds * 1.0 + 8)
    try:
        out["etcd"] = _run_etcd(ctx, rounds)
    except Exception as exc:
        out["etcd"] = {"error": repr(exc)}
    return out
