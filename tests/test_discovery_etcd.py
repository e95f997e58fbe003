"""etcd naming discovery against a real 3-member etcd cluster and real servers.

* A registration written with ``etcdctl put <target>/<addr> '{"Op":0,"Addr":"<addr>"}'``
  is discovered (its Metadata shown in ``status()``); ``<target>_other/...`` is not (etcd
  issue 15022) and an unparseable value is skipped with one warning.
* ``eagle.server.EtcdRegistration`` writes exactly that format, on a lease; stop()
  deletes the key and revokes the lease; a revoked lease is re-registered.
* A registered server process that is SIGKILLed disappears when its lease expires
  (within TTL + 1 s).
* The etcd member the discovery watch runs on is frozen while registrations change and
  the history is compacted past the watch's revision, then partitioned, then killed: no
  update is lost (the final set equals etcd's).
* 1,000 registrations are discovered in < 1 s and a change among them is applied in
  < 100 ms.

Needs root, etcd, etcdctl and iptables (CI has them); skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import grpc
import pytest
from _support import wait_until

import eagle
import eagle.aio
from eagle.etcdwire.v1 import etcd_pb2
from eagle.server import EtcdRegistration
from eagle.testing.cluster import LocalCluster
from eagle.testing.etcd import EtcdCluster, cleanup_iptables, etcd_unavailable_reason
from eagle.testing.processes import find_tool
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

_REASON = etcd_unavailable_reason()
_ETCDCTL = find_tool("etcdctl")
if _REASON is None and _ETCDCTL is None:
    _REASON = "etcdctl is not installed (Debian: etcd-client)"
pytestmark = [
    pytest.mark.etcd,
    pytest.mark.skipif(_REASON is not None, reason=f"etcd harness unavailable: {_REASON}"),
]


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster(3) as c:
        yield c
    cleanup_iptables()


@pytest.fixture(scope="module")
def servers() -> Iterator[LocalCluster]:
    with LocalCluster(3) as c:
        yield c


def _target() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}"


def _config(etcd: EtcdCluster, **extra: Any) -> dict[str, Any]:
    return {
        "discovery": {"etcd": {"endpoints": etcd.endpoints, "probe_interval": 0.2}},
        "health": {"interval": 0.2, "timeout": 0.5},
        **extra,
    }


def etcdctl(etcd: EtcdCluster, *args: str, endpoints: list[str] | None = None) -> str:
    """Run etcdctl against the cluster (or ``endpoints``); its stdout."""
    eps = ",".join(endpoints or etcd.endpoints)
    out = subprocess.run(
        [str(_ETCDCTL), f"--endpoints={eps}", "--command-timeout=5s", *args],
        capture_output=True,
        text=True,
        timeout=20,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )
    if out.returncode != 0:
        raise AssertionError(f"etcdctl {args}: {out.stderr}")
    return out.stdout


def _value(addr: str) -> str:
    return json.dumps({"Op": 0, "Addr": addr}, separators=(",", ":"))


def etcd_set(etcd: EtcdCluster, target: str, endpoints: list[str] | None = None) -> set[str]:
    """The addresses registered under ``<target>/`` as etcd itself says (etcdctl)."""
    out = etcdctl(etcd, "get", f"{target}/", "--prefix", "--print-value-only", endpoints=endpoints)
    addrs = set()
    for line in out.splitlines():
        try:
            addrs.add(json.loads(line)["Addr"])
        except (ValueError, KeyError, TypeError):
            continue  # what the Go reader skips, too
    return addrs


def _kv(etcd: EtcdCluster, i: int) -> grpc.Channel:
    return grpc.insecure_channel(etcd.endpoints[i])


def _retrying(call: Any, request: Any, timeout: float = 20.0) -> Any:
    """Send an idempotent etcd request until it succeeds: while a cut-off or killed
    leader is replaced, etcd times proposals out after ~5 s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call(request, timeout=min(5.0, max(0.1, deadline - time.monotonic())))
        except grpc.RpcError as err:
            if time.monotonic() >= deadline or err.code() not in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.UNKNOWN,
            ):
                raise


def _put(ch: grpc.Channel, key: str, value: str) -> int:
    call = ch.unary_unary(
        "/etcdserverpb.KV/Put",
        request_serializer=etcd_pb2.PutRequest.SerializeToString,
        response_deserializer=etcd_pb2.PutResponse.FromString,
    )
    req = etcd_pb2.PutRequest(key=key.encode(), value=value.encode())
    return int(cast(etcd_pb2.PutResponse, _retrying(call, req)).header.revision)


def _delete(ch: grpc.Channel, key: str) -> int:
    call = ch.unary_unary(
        "/etcdserverpb.KV/DeleteRange",
        request_serializer=etcd_pb2.DeleteRangeRequest.SerializeToString,
        response_deserializer=etcd_pb2.DeleteRangeResponse.FromString,
    )
    req = etcd_pb2.DeleteRangeRequest(key=key.encode())
    return int(cast(etcd_pb2.DeleteRangeResponse, _retrying(call, req)).header.revision)


def _compact(ch: grpc.Channel, revision: int) -> None:
    call = ch.unary_unary(
        "/etcdserverpb.KV/Compact",
        request_serializer=etcd_pb2.CompactionRequest.SerializeToString,
        response_deserializer=etcd_pb2.CompactionResponse.FromString,
    )
    _retrying(call, etcd_pb2.CompactionRequest(revision=revision, physical=True))


def _watch_member(ch: Any, etcd: EtcdCluster) -> int:
    """Index of the etcd member the channel's discovery watch runs on."""
    member_id = ch.status().discovery.detail.get("watch_member_id")
    for m in etcd.members:
        if m.member_id is not None and str(m.member_id) == member_id:
            return m.index
    raise AssertionError(f"watch member {member_id} not among {etcd.members}")


def _timed(pred: Any, timeout: float, what: str) -> float:
    """Seconds until ``pred()`` holds, polled every millisecond (for the < 100 ms check)."""
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.001)
    return time.monotonic() - start


def _make_follower(etcd: EtcdCluster, w: int) -> int:
    """Make sure member ``w`` is not the leader (etcdctl move-leader); the leader's index."""
    lead = etcd.leader()
    if lead != w:
        return lead
    to = next(i for i in range(3) if i != w)
    member_id = etcd.members[to].member_id
    assert member_id is not None
    etcdctl(etcd, "move-leader", f"{member_id:x}", endpoints=[etcd.endpoints[lead]])
    wait_until(lambda: etcd.leader() != w, 10, "leadership moved")
    return etcd.leader()


# --------------------------------------------------------------------------- tests


def test_etcdctl_registration_is_discovered(
    etcd: EtcdCluster, servers: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    target = _target()
    a, b = servers.endpoints[0], servers.endpoints[1]
    etcdctl(etcd, "put", f"{target}/{a}", _value(a))
    etcdctl(etcd, "put", f"{target}_other/{b}", _value(b))  # another target (issue 15022)
    caplog.set_level(logging.WARNING, logger="eagle.discovery")
    with eagle.insecure_channel(f"etcd:///{target}", config=_config(etcd)) as ch:
        resp = echo_pb2_grpc.EchoStub(ch).Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
        assert resp.server == "m0"
        assert ch.endpoints == (a,)
        # a second member, with metadata; then a value no reader can use
        meta = json.dumps({"Op": 0, "Addr": b, "Metadata": {"zone": "z1"}})
        etcdctl(etcd, "put", f"{target}/{b}", meta)
        wait_until(lambda: set(ch.endpoints) == {a, b}, 5, "b discovered")
        assert ch.status()[b].discovery == {"zone": "z1"}
        etcdctl(etcd, "put", f"{target}/junk", "not json")
        wait_until(
            lambda: ch.status().discovery.detail.get("skipped") == 1,  # type: ignore[union-attr]
            5,
            "the junk value skipped",
        )
        warnings = [r for r in caplog.records if "junk" in r.getMessage()]
        assert len(warnings) == 1
        # PUT with Op 1 still means present (the Go reader ignores Op on PUTs); DELETE: gone
        etcdctl(etcd, "put", f"{target}/{a}", json.dumps({"Op": 1, "Addr": a}))
        etcdctl(etcd, "put", f"{target}/marker", json.dumps({"Op": 0, "Addr": "127.0.0.1:1"}))
        wait_until(lambda: "127.0.0.1:1" in ch.endpoints, 5, "the marker discovered")
        assert a in ch.endpoints  # the Op 1 PUT, applied before the marker, kept it
        etcdctl(etcd, "del", f"{target}/marker")
        etcdctl(etcd, "del", f"{target}/{a}")
        wait_until(lambda: set(ch.endpoints) == {b}, 5, "a removed")
        disc = ch.status().discovery
        assert disc is not None and disc.provider == "etcd" and disc.resolved
        assert set(ch.endpoints) == etcd_set(etcd, target)


def test_server_registration_format_and_lifecycle(etcd: EtcdCluster) -> None:
    target = _target()
    addr = "127.0.0.1:45678"
    reg = EtcdRegistration(etcd.endpoints, target, addr, ttl=5).start()
    try:
        got = etcdctl(etcd, "get", f"{target}/{addr}", "--print-value-only").strip()
        assert got == '{"Op":0,"Addr":"127.0.0.1:45678"}'
        lease = f"{reg.lease_id:x}"
        assert lease in etcdctl(etcd, "lease", "list")
        # lose the lease: the registration notices and registers again
        etcdctl(etcd, "lease", "revoke", lease)
        wait_until(lambda: reg.registrations == 2, 10, "re-registration")
        wait_until(lambda: etcd_set(etcd, target) == {addr}, 5, "the key back")
    finally:
        reg.stop()
    assert etcd_set(etcd, target) == set()
    assert f"{reg.lease_id:x}" not in etcdctl(etcd, "lease", "list")


def test_killed_server_disappears_when_its_lease_expires(etcd: EtcdCluster) -> None:
    target = _target()
    ttl = 2
    args = ["--etcd-register", ",".join(etcd.endpoints), "--etcd-target", target]
    args += ["--etcd-ttl", str(ttl)]
    with (
        LocalCluster(2, extra_args=args, names=["r0", "r1"]) as regd,
        eagle.insecure_channel(f"etcd:///{target}", config=_config(etcd)) as ch,
    ):
        wait_until(lambda: set(ch.endpoints) == set(regd.endpoints), 10, "both registered")
        regd.kill(0)
        took = wait_until(lambda: regd.endpoints[0] not in ch.endpoints, ttl + 5, "r0 gone")
        print(f"r0 left {took:.2f}s after SIGKILL (lease TTL {ttl}s)")
        assert took <= ttl + 1.0, f"r0 left after {took:.2f}s (lease TTL {ttl}s)"
        assert set(ch.endpoints) == {regd.endpoints[1]} == etcd_set(etcd, target)


def _churn(kv: grpc.Channel, target: str, servers: LocalCluster, step: int) -> None:
    """A few registrations change: fake members come and go, real ones stay."""
    for j in range(5):
        _put(kv, f"{target}/fake-{step}-{j}", _value(f"127.0.9.{step % 250 + 1}:{20000 + j}"))
    _delete(kv, f"{target}/fake-{step}-0")
    _delete(kv, f"{target}/fake-{step - 1}-1")


def test_watch_member_frozen_compacted_partitioned_killed(
    etcd: EtcdCluster, servers: LocalCluster
) -> None:
    """No update is lost when the member the watch runs on fails, or when the history
    the watch would resume from is compacted."""
    target = _target()
    for ep in servers.endpoints:
        etcdctl(etcd, "put", f"{target}/{ep}", _value(ep))
    cfg = _config(etcd)
    with eagle.insecure_channel(f"etcd:///{target}", config=cfg) as ch:
        wait_until(lambda: set(ch.endpoints) == set(servers.endpoints), 5, "listed")
        wait_until(lambda: "watch_member_id" in ch.status().discovery.detail, 5, "watching")  # type: ignore[union-attr]

        # 1. freeze the watch's member; meanwhile change registrations and compact the
        #    history past the revision the watch will resume from
        #    (the watch's member is made a follower first, so the writes and the
        #    compaction go through at once, before eagle notices the frozen member)
        w = _watch_member(ch, etcd)
        other = _make_follower(etcd, w)
        lists = ch.status().discovery.detail["lists"]  # type: ignore[union-attr]
        etcd.stop(w)
        try:
            with _kv(etcd, other) as kv:
                _churn(kv, target, servers, 1)
                rev = _put(kv, f"{target}/fake-1-9", _value("127.0.9.99:20009"))
                _compact(kv, rev)
            want = etcd_set(etcd, target, [etcd.endpoints[other]])
            wait_until(lambda: set(ch.endpoints) == want, 10, "set after compaction")
        finally:
            etcd.cont(w)
        disc = ch.status().discovery
        assert disc is not None and disc.detail["lists"] > lists, disc.detail
        assert "compacted" in disc.detail.get("last_watch_error", ""), disc.detail

        # 2. partition the member the watch now runs on; change registrations
        w = _watch_member(ch, etcd)
        other = (w + 1) % 3
        etcd.partition(w)
        try:
            with _kv(etcd, other) as kv:
                for step in range(2, 6):
                    _churn(kv, target, servers, step)
            want = etcd_set(etcd, target, [etcd.endpoints[other]])
            wait_until(lambda: set(ch.endpoints) == want, 15, "set during the partition")
        finally:
            etcd.heal(w)
        # 3. kill the member the watch runs on; change registrations; bring it back
        w = _watch_member(ch, etcd)
        other = (w + 1) % 3
        etcd.kill(w)
        try:
            with _kv(etcd, other) as kv:
                for step in range(6, 9):
                    _churn(kv, target, servers, step)
            want = etcd_set(etcd, target, [etcd.endpoints[other]])
            wait_until(lambda: set(ch.endpoints) == want, 15, "set after the kill")
        finally:
            etcd.restart(w)
        # calls still go to the real servers throughout
        resp = echo_pb2_grpc.EchoStub(ch).Unary(
            echo_pb2.EchoRequest(message="x"), timeout=5, wait_for_ready=True
        )
        assert resp.server in ("m0", "m1", "m2")
        assert set(ch.endpoints) == etcd_set(etcd, target)


def test_thousand_registrations(etcd: EtcdCluster) -> None:
    """1,000 registrations (one real server on 1,000 ports) are discovered in < 1 s; a
    change among them is applied in < 100 ms."""
    target = _target()
    with LocalCluster.many_ports(1000) as big:
        eps = big.endpoints
        with _kv(etcd, 0) as kv:
            for ep in eps[:-1]:
                _put(kv, f"{target}/{ep}", _value(ep))
            cfg = _config(etcd, health={"interval": 5.0, "timeout": 2.0})
            t0 = time.monotonic()
            with eagle.insecure_channel(f"etcd:///{target}", config=cfg) as ch:
                wait_until(lambda: len(ch.endpoints) == 999, 5, "999 discovered")
                discovered = time.monotonic() - t0
                # steady state: the first probes of 999 new members are over
                wait_until(
                    lambda: all(st.serving for st in ch.status().values()), 20, "999 serving"
                )
                # one more joins, then one leaves: from the write to the channel's set
                t1 = time.monotonic()
                _put(kv, f"{target}/{eps[-1]}", _value(eps[-1]))
                _timed(lambda: len(ch.endpoints) == 1000, 5, "the 1000th")
                added = time.monotonic() - t1
                t2 = time.monotonic()
                _delete(kv, f"{target}/{eps[0]}")
                _timed(lambda: eps[0] not in ch.endpoints, 5, "one removed")
                removed = time.monotonic() - t2
                resp = echo_pb2_grpc.EchoStub(ch).Unary(
                    echo_pb2.EchoRequest(message="x"), timeout=5
                )
                assert resp.server == "scale"
    ms = f"add {added * 1e3:.1f} ms, remove {removed * 1e3:.1f} ms"
    print(f"discovered 999 in {discovered:.3f}s, {ms}")
    assert discovered < 1.0, f"999 registrations discovered in {discovered:.3f}s"
    assert added < 0.1, f"a registration applied in {added * 1000:.1f} ms"
    assert removed < 0.1, f"a deregistration applied in {removed * 1000:.1f} ms"


def test_aio_etcd_discovery(etcd: EtcdCluster, servers: LocalCluster) -> None:
    """The asyncio channel: discovered, changed, and the watch survives its member's kill."""
    target = _target()
    a, b = servers.endpoints[0], servers.endpoints[1]
    etcdctl(etcd, "put", f"{target}/{a}", _value(a))

    async def main() -> None:
        async with eagle.aio.insecure_channel(f"etcd:///{target}", config=_config(etcd)) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)
            resp = await stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
            assert resp.server == "m0"
            etcdctl(etcd, "put", f"{target}/{b}", _value(b))
            deadline = time.monotonic() + 5
            while set(ch.endpoints) != {a, b} and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert set(ch.endpoints) == {a, b}
            w = _watch_member(ch, etcd)
            etcd.kill(w)
            try:
                other = (w + 1) % 3
                with _kv(etcd, other) as kv:
                    _delete(kv, f"{target}/{a}")
                deadline = time.monotonic() + 15
                while set(ch.endpoints) != {b} and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert set(ch.endpoints) == {b}
            finally:
                etcd.restart(w)

    asyncio.run(main())


def test_listing_reads_every_page(etcd: EtcdCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """With 2 keys a page, 5 registrations take 3 Range pages: sync and asyncio listings
    both find all 5 (and nothing past the prefix)."""
    import eagle.providers.etcd_naming as naming

    monkeypatch.setattr(naming, "PAGE", 2)
    target = _target()
    eps = [f"127.0.0.1:{20000 + i}" for i in range(5)]
    for ep in eps:
        etcdctl(etcd, "put", f"{target}/{ep}", _value(ep))
    etcdctl(etcd, "put", f"{target}0/127.0.0.1:1", _value("127.0.0.1:1"))  # past the prefix
    cfg = _config(etcd, health={"interval": 5.0, "timeout": 1.0})
    with eagle.insecure_channel(f"etcd:///{target}", config=cfg) as ch:
        wait_until(lambda: len(ch.endpoints) >= 5, 5, "5 discovered")
        assert set(ch.endpoints) == set(eps)

    async def main() -> set[str]:
        async with eagle.aio.insecure_channel(f"etcd:///{target}", config=cfg) as ach:
            deadline = time.monotonic() + 5
            while len(ach.endpoints) < 5 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return set(ach.endpoints)

    assert asyncio.run(main()) == set(eps)
