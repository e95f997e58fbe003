"""DNS discovery against a real DNS server (dnsmasq on 127.0.0.1) and real pods.

The pods are ``LocalCluster`` members bound to 127.0.0.2, 127.0.0.3, ... on one port
(all of 127/8 is loopback), so each A record is one pod, as behind a headless
Kubernetes service. eagle resolves ``dns:///pods.eagle.test:<port>`` through dnsmasq
(dnspython, explicit nameserver and port). Under load:

* a pod added to the records gets traffic within one re-resolution;
* a pod removed from them stops getting traffic, and the calls in flight on it finish;
* a DNS outage (dnsmasq stopped) and an empty answer keep the last set, and say so in
  ``status().discovery``;
* a member that dies makes eagle re-resolve early (long before the period);
* the records' TTL bounds the next resolution.

Needs dnsmasq and dnspython (CI installs both); skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from _support import wait_until

import eagle
import eagle.aio
from eagle.testing.cluster import LocalCluster
from eagle.testing.dns import DnsServer, dnsmasq_unavailable_reason
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

_REASON = dnsmasq_unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"DNS harness: {_REASON}")

NAME = "pods.eagle.test"
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
NAMES = ["p0", "p1", "p2", "p3"]


def _free_port() -> int:
    """A port free on every pod address (each pod binds its own address, same port)."""
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
                    break
        if ok:
            return port
    raise RuntimeError("no port free on every pod address")


@pytest.fixture(scope="module")
def pods() -> Iterator[LocalCluster]:
    """Four echo servers p0..p3 on 127.0.0.2..5, one port."""
    with LocalCluster(4, hosts=HOSTS, port=_free_port(), names=NAMES) as c:
        yield c


@pytest.fixture
def dns(pods: LocalCluster) -> Iterator[DnsServer]:
    """dnsmasq answering p0 and p1 for pods.eagle.test."""
    with DnsServer({NAME: HOSTS[:2]}, ttl=1) as d:
        yield d


def _config(server: DnsServer, **discovery: Any) -> dict[str, Any]:
    disc: dict[str, Any] = {
        "period": 0.5,
        "min_interval": 0.2,
        "dns": {"nameservers": [server.nameserver], "timeout": 0.5},
    }
    disc.update(discovery)
    return {
        "discovery": disc,
        "health": {"interval": 0.2, "timeout": 0.5, "unhealthy_threshold": 2},
    }


def _eps(pods: LocalCluster, *idx: int) -> set[str]:
    return {pods.endpoints[i] for i in idx}


class Load:
    """Unary calls from ``threads`` threads until stopped (at most ``max_calls`` each and
    ``max_seconds``), counting answers per pod and every failure."""

    def __init__(
        self, ch: grpc.Channel, threads: int = 4, sleep_ms: int = 0, max_seconds: float = 30.0
    ) -> None:
        self.stub = echo_pb2_grpc.EchoStub(ch)
        self.sleep_ms = sleep_ms
        self.max_seconds = max_seconds
        self.max_calls = 20_000
        self.counts: Counter[str] = Counter()
        self.first_seen: dict[str, float] = {}
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _run(self) -> None:
        end = time.monotonic() + self.max_seconds
        for _ in range(self.max_calls):
            if self._stop.is_set() or time.monotonic() > end:
                return
            try:
                resp = self.stub.Unary(
                    echo_pb2.EchoRequest(message="x", sleep_ms=self.sleep_ms), timeout=5
                )
            except grpc.RpcError as err:
                with self._lock:
                    self.failures.append(f"{err.code()}: {err.details()}")
                continue
            with self._lock:
                self.counts[resp.server] += 1
                self.first_seen.setdefault(resp.server, time.monotonic())

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


def test_calls_wait_for_the_first_resolution(pods: LocalCluster, dns: DnsServer) -> None:
    """A call made at once on a new dns:/// channel waits for the resolver (as gRPC's do
    while the channel is CONNECTING) and is served."""
    target = f"dns:///{NAME}:{pods.members[0].port}"
    with eagle.insecure_channel(target, config=_config(dns)) as ch:
        resp = echo_pb2_grpc.EchoStub(ch).Unary(echo_pb2.EchoRequest(message="hi"), timeout=5)
        assert resp.server in ("p0", "p1")
        assert set(ch.endpoints) == _eps(pods, 0, 1)
        disc = ch.status().discovery
        assert disc is not None and disc.provider == "dns" and disc.resolved
        assert "dnspython@" in disc.target


def test_records_change_under_load(pods: LocalCluster, dns: DnsServer) -> None:
    """Added pods get traffic within one re-resolution; removed ones stop getting it
    while their calls in flight finish; a DNS outage keeps the last set."""
    try:
        _records_change_under_load(pods, dns)
    finally:
        pods.slow(0, 0)


def _records_change_under_load(pods: LocalCluster, dns: DnsServer) -> None:
    port = pods.members[0].port
    period = 0.5
    with eagle.insecure_channel(f"dns:///{NAME}:{port}", config=_config(dns)) as ch:
        wait_until(lambda: set(ch.endpoints) == _eps(pods, 0, 1), 5, "p0, p1 resolved")
        with Load(ch, threads=4, sleep_ms=20) as load:
            wait_until(lambda: {"p0", "p1"} <= set(load.snapshot()), 5, "traffic on p0, p1")

            # scale up: p2 joins
            t0 = time.monotonic()
            dns.set(NAME, HOSTS[:3])
            wait_until(lambda: "p2" in load.snapshot(), 5, "traffic on p2")
            joined = load.first_seen["p2"] - t0
            # one re-resolution (period, or the 1 s TTL) plus the resolution itself
            assert joined < period + 1.0, f"p2 served after {joined:.2f}s"

            # scale down: p0 leaves while calls on it are in flight (it answers slowly)
            pods.slow(0, 400)
            wait_until(lambda: pods.stats(0).calls > 5, 5, "slow calls on p0")
            dns.set(NAME, HOSTS[1:3])
            wait_until(lambda: pods.endpoints[0] not in ch.endpoints, 5, "p0 removed")
            pods.reset(0)  # whatever p0 receives from now on was placed after its removal
            at_removal = load.snapshot()["p0"]
            # the calls in flight on p0 when it was removed are answered by p0 itself
            wait_until(lambda: load.snapshot()["p0"] > at_removal, 5, "p0's calls in flight")
            others = load.snapshot()
            wait_until(
                lambda: (
                    load.snapshot()["p1"] > others["p1"] + 20
                    and load.snapshot()["p2"] > others["p2"] + 20
                ),
                5,
                "more traffic on p1 and p2",
            )
            assert pods.stats(0).calls == 0, "p0 got calls after it was removed"

            # DNS outage: the last set stays, the failure shows in the status
            fails = ch.status().discovery.failures  # type: ignore[union-attr]
            dns.stop()
            wait_until(
                lambda: ch.status().discovery.failures >= fails + 2,  # type: ignore[union-attr]
                10,
                "two failed resolutions",
            )
            disc = ch.status().discovery
            assert disc is not None and disc.last_error
            assert set(ch.endpoints) == _eps(pods, 1, 2)
            served = load.snapshot()
            wait_until(
                lambda: sum(load.snapshot().values()) > sum(served.values()) + 20,
                5,
                "calls served during the outage",
            )
            # back: the records (p1, p2, p3 now) are read again
            dns.set_records({NAME: HOSTS[1:]}, wait=0)
            dns.start()
            wait_until(lambda: set(ch.endpoints) == _eps(pods, 1, 2, 3), 10, "p3 added")
            wait_until(lambda: ch.status().discovery.last_error is None, 5, "error cleared")  # type: ignore[union-attr]
        assert load.failures == [], load.failures[:5]


def test_empty_answer_keeps_the_last_set(pods: LocalCluster, dns: DnsServer) -> None:
    """The name vanishing (NXDOMAIN) is a failed resolution, not an empty member set."""
    port = pods.members[0].port
    with eagle.insecure_channel(f"dns:///{NAME}:{port}", config=_config(dns)) as ch:
        wait_until(lambda: set(ch.endpoints) == _eps(pods, 0, 1), 5, "p0, p1 resolved")
        dns.set_records({"other.eagle.test": [HOSTS[3]]}, wait=0)
        wait_until(
            lambda: "NXDOMAIN" in (ch.status().discovery.last_error or ""),  # type: ignore[union-attr]
            5,
            "NXDOMAIN reported",
        )
        assert set(ch.endpoints) == _eps(pods, 0, 1)
        resp = echo_pb2_grpc.EchoStub(ch).Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
        assert resp.server in ("p0", "p1")


def test_member_failure_re_resolves_early(pods: LocalCluster, dns: DnsServer) -> None:
    """With a 30 s period, a member that becomes unreachable makes eagle resolve again
    after min_interval, and the records' new set is applied long before the period."""
    port = pods.members[0].port
    cfg = _config(
        dns,
        period=30.0,
        min_interval=0.3,
        dns={"nameservers": [dns.nameserver], "timeout": 0.5, "use_ttl": False},
    )
    with eagle.insecure_channel(f"dns:///{NAME}:{port}", config=cfg) as ch:
        wait_until(lambda: set(ch.endpoints) == _eps(pods, 0, 1), 5, "p0, p1 resolved")
        wait_until(
            lambda: all(s.state is eagle.State.SERVING for s in ch.status().values()),
            5,
            "both serving",
        )
        dns.set(NAME, [HOSTS[0]])  # p1 leaves the records; nothing resolves for 30 s
        time.sleep(0.5)
        assert pods.endpoints[1] in ch.endpoints  # not yet re-resolved
        pods.kill(1)
        try:
            took = wait_until(lambda: pods.endpoints[1] not in ch.endpoints, 10, "p1 dropped")
            assert took < 5.0
            disc = ch.status().discovery
            assert disc is not None and disc.detail["early_requests"] >= 1
        finally:
            pods.restart(1)


def test_ttl_bounds_the_next_resolution(pods: LocalCluster, dns: DnsServer) -> None:
    """With a 30 s period, records with a 1 s TTL are looked at again after about 1 s."""
    port = pods.members[0].port
    cfg = _config(dns, period=30.0, min_interval=0.2, resolve_on_failure=False)
    with eagle.insecure_channel(f"dns:///{NAME}:{port}", config=cfg) as ch:
        wait_until(lambda: set(ch.endpoints) == _eps(pods, 0, 1), 5, "p0, p1 resolved")
        t0 = time.monotonic()
        dns.set(NAME, HOSTS[:3])
        took = wait_until(lambda: pods.endpoints[2] in ch.endpoints, 5, "p2 added")
        assert time.monotonic() - t0 < 3.0, took


def test_system_resolver(pods: LocalCluster) -> None:
    """Without nameservers, getaddrinfo (off the prober's thread) resolves the name."""
    with LocalCluster(1) as one:
        port = one.members[0].port
        cfg = {"discovery": {"period": 1.0, "min_interval": 0.5}}
        with eagle.insecure_channel(f"dns:///localhost:{port}", config=cfg) as ch:
            resp = echo_pb2_grpc.EchoStub(ch).Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
            assert resp.server == "m0"
            assert f"127.0.0.1:{port}" in ch.endpoints
            disc = ch.status().discovery
            assert disc is not None and "system resolver" in disc.target


def test_aio_records_change(pods: LocalCluster, dns: DnsServer) -> None:
    """The asyncio channel: same target, same behaviour (dnspython's asyncio resolver)."""
    port = pods.members[0].port

    async def main() -> None:
        target = f"dns:///{NAME}:{port}"
        async with eagle.aio.insecure_channel(target, config=_config(dns)) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)
            resp = await stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
            assert resp.server in ("p0", "p1")
            dns.set(NAME, [HOSTS[1], HOSTS[2]])
            seen: set[str] = set()
            deadline = time.monotonic() + 5
            failures = 0
            while "p2" not in seen and time.monotonic() < deadline:
                try:
                    r = await stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
                    seen.add(r.server)
                except grpc.RpcError:
                    failures += 1
                await asyncio.sleep(0.01)
            assert "p2" in seen
            assert set(ch.endpoints) == _eps(pods, 1, 2)
            dns.stop()
            fails = ch.status().discovery.failures
            while ch.status().discovery.failures < fails + 1 and time.monotonic() < deadline + 5:
                await asyncio.sleep(0.05)
            assert ch.status().discovery.last_error
            assert set(ch.endpoints) == _eps(pods, 1, 2)
            r = await stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
            assert r.server in ("p1", "p2")
            assert failures == 0

    asyncio.run(main())


def test_bad_targets_and_config() -> None:
    """Every bad value raises ValueError naming it."""
    cases: list[tuple[Any, Any, str]] = [
        ("dns:///", None, "nothing to resolve"),
        ("dns:///name:99999", None, "out of range"),
        ("dns:///name:port", None, "not a number"),
        ("dns://[::1/name:1", None, "dns://"),
        (
            "dns:///pods:1",
            {"discovery": {"dns": {"nameservers": ["ns.example"]}}},
            "discovery.dns.nameservers",
        ),
        ("dns:///pods:1", {"discovery": {"dns": {"timeout": 0}}}, "discovery.dns.timeout"),
        ("dns:///pods:1", {"discovery": {"dns": {"families": "ipx"}}}, "discovery.dns.families"),
        (
            "dns:///pods:1",
            {"discovery": {"period": 1, "min_interval": 5}},
            "discovery.min_interval",
        ),
        ("dns:///pods:1", {"discovery": {"provider": "etcd"}}, "discovery.provider"),
        ("a:1", {"discovery": {"provider": "nope"}}, "discovery.provider"),
        ("a:1", {"discovery": {"provider": "dns"}}, "discovery.target"),
        ("a:1", {"discovery": {"perod": 1}}, "discovery.perod"),
        ("etcd:///svc", None, "discovery.etcd.endpoints"),
        (
            "etcd:///svc",
            {"discovery": {"etcd": {"endpoints": ["bad endpoint"]}}},
            "discovery.etcd.endpoints",
        ),
        (
            "dns:///pods:1",
            {"membership": {"provider": "etcd", "discover": True}},
            "discovery.provider",
        ),
    ]
    for target, config, needle in cases:
        with pytest.raises(ValueError, match=needle.replace("[", r"\[")):
            eagle.insecure_channel(target, config=config)


def test_srv_records(pods: LocalCluster) -> None:
    """With ``discovery.dns.srv`` the SRV records name the hosts and ports."""
    port = pods.members[0].port
    srv = {"_grpc._tcp.pods.eagle.test": [("p0.eagle.test", port), ("p2.eagle.test", port)]}
    records = {"p0.eagle.test": [HOSTS[0]], "p2.eagle.test": [HOSTS[2]]}
    with DnsServer(records, srv=srv) as server:
        cfg = _config(server)
        cfg["discovery"]["dns"]["srv"] = True
        with eagle.insecure_channel("dns:///_grpc._tcp.pods.eagle.test", config=cfg) as ch:
            resp = echo_pb2_grpc.EchoStub(ch).Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
            assert resp.server in ("p0", "p2")
            assert set(ch.endpoints) == _eps(pods, 0, 2)


def test_tls_verifies_the_resolved_name(tmp_path: Any) -> None:
    """On a secure dns:/// channel every member is verified against the name resolved
    (gRPC's authority for a dns: target), not against its IP address."""
    from eagle.testing.tls import CertAuthority

    ca = CertAuthority()
    cert, key = ca.issue("pods", dns=[NAME], ips=[]).write(tmp_path, "server")
    ca_path = ca.write(tmp_path)
    port = _free_port()
    args = ["--tls-cert", cert, "--tls-key", key]
    with (
        LocalCluster(2, hosts=HOSTS[:2], port=port, names=NAMES[:2], extra_args=args) as tls,
        DnsServer({NAME: HOSTS[:2]}) as server,
    ):
        with open(ca_path, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        target = f"dns:///{NAME}:{port}"
        with eagle.secure_channel(target, creds, config=_config(server)) as ch:
            seen = set()
            for _ in range(6):
                r = echo_pb2_grpc.EchoStub(ch).Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
                seen.add(r.server)
            assert seen == {"p0", "p1"}
        assert tls.alive(0) and tls.alive(1)
