"""The local test-cluster harness: real servers, real faults."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eagle.testing.cluster import LOCAL_CHANNEL_OPTIONS, ClusterError, LocalCluster
from eagle.testing.processes import thread_states
from eagle.testing.server import ECHO_SERVICE
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _channel(endpoint: str) -> grpc.Channel:
    return grpc.insecure_channel(endpoint, options=list(LOCAL_CHANNEL_OPTIONS))


def _check(ch: grpc.Channel, service: str = "", timeout: float = 5.0) -> int:
    stub = health_pb2_grpc.HealthStub(ch)
    response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return int(response.status)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(3)
    pids = [m.pid for m in c.members]
    try:
        yield c
    finally:
        pids += [m.pid for m in c.members]
        c.close()
    assert all(_gone(pid) for pid in pids), "cluster left child processes behind"


def test_unary_reaches_each_member(cluster: LocalCluster) -> None:
    assert len(cluster) == 3
    assert len(cluster.endpoints) == 3
    assert cluster.target == ",".join(cluster.endpoints)
    for i, (member, endpoint) in enumerate(zip(cluster.members, cluster.endpoints, strict=True)):
        assert endpoint == f"127.0.0.1:{member.port}"
        assert member.name == f"m{i}" and member.running and not member.stopped
        with _channel(endpoint) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)
            reply = stub.Unary(echo_pb2.EchoRequest(message=f"hi {i}"), timeout=5)
            assert reply.server == f"m{i}"
            assert reply.message == f"hi {i}"
            assert _check(ch) == SERVING
            assert _check(ch, ECHO_SERVICE) == SERVING


def test_unary_fail_code(cluster: LocalCluster) -> None:
    with _channel(cluster.endpoints[0]) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.Unary(echo_pb2.EchoRequest(fail_code=grpc.StatusCode.UNAVAILABLE.value[0]))
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE


def test_streams(cluster: LocalCluster) -> None:
    with _channel(cluster.endpoints[1]) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        replies = list(
            stub.ServerStream(echo_pb2.EchoRequest(message="s", count=3, interval_ms=10), timeout=5)
        )
        assert [r.seq for r in replies] == [0, 1, 2]
        assert {r.server for r in replies} == {"m1"}

        endless = stub.ServerStream(echo_pb2.EchoRequest(count=0, interval_ms=10), timeout=5)
        seqs = [next(endless).seq for _ in range(5)]
        endless.cancel()
        assert seqs == [0, 1, 2, 3, 4]

        requests = [echo_pb2.EchoRequest(message=m) for m in ("a", "b", "c")]
        joined = stub.ClientStream(iter(requests), timeout=5)
        assert (joined.message, joined.seq, joined.server) == ("abc", 3, "m1")

        echoed = list(stub.Bidi(iter(requests), timeout=5))
        assert [(r.message, r.seq) for r in echoed] == [("a", 0), ("b", 1), ("c", 2)]


def test_drain_sets_health_not_serving(cluster: LocalCluster) -> None:
    with _channel(cluster.endpoints[1]) as ch:
        cluster.drain(1)
        try:
            assert _check(ch) == NOT_SERVING
            assert _check(ch, ECHO_SERVICE) == NOT_SERVING
            # Draining only changes health; the member still answers calls.
            reply = echo_pb2_grpc.EchoStub(ch).Unary(echo_pb2.EchoRequest(), timeout=5)
            assert reply.server == "m1"
        finally:
            cluster.undrain(1)
        assert _check(ch) == SERVING
        assert _check(ch, ECHO_SERVICE) == SERVING


def test_stop_hangs_and_cont_resumes(cluster: LocalCluster) -> None:
    with _channel(cluster.endpoints[2]) as ch:
        assert _check(ch) == SERVING
        pid = cluster.member(2).pid
        assert len(thread_states(pid)) > 1  # a gRPC server: several threads
        cluster.stop(2)  # returns once every thread is parked, not just the first
        try:
            assert cluster.member(2).stopped
            assert set(thread_states(pid).values()) <= {"T", "t"}
            with pytest.raises(grpc.RpcError) as err:
                _check(ch, timeout=0.5)
            assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        finally:
            cluster.cont(2)
        assert not cluster.member(2).stopped
        assert not {"T", "t"} & set(thread_states(pid).values())
        assert _check(ch) == SERVING


def test_kill_and_restart_on_same_port(cluster: LocalCluster) -> None:
    before = cluster.member(0)
    cluster.kill(0)
    assert not cluster.alive(0)
    assert _gone(before.pid)
    with _channel(cluster.endpoints[0]) as ch, pytest.raises(grpc.RpcError) as err:
        _check(ch, timeout=1.0)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE

    cluster.restart(0)
    after = cluster.member(0)
    assert after.running and after.port == before.port and after.pid != before.pid
    assert cluster.endpoints[0] == before.endpoints[0]
    with _channel(cluster.endpoints[0]) as ch:
        reply = echo_pb2_grpc.EchoStub(ch).Unary(echo_pb2.EchoRequest(message="back"), timeout=5)
        assert (reply.server, reply.message) == ("m0", "back")
        assert _check(ch) == SERVING


def test_slow_delays_echo_not_health(cluster: LocalCluster) -> None:
    # The delay is large next to what a loaded 2-core machine adds to a loopback call, so the
    # bounds tell "delayed" from "not delayed" without assuming a quiet CPU.
    delay = 1.0
    with _channel(cluster.endpoints[1]) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        stub.Unary(echo_pb2.EchoRequest(), timeout=5)  # connect first
        cluster.slow(1, int(delay * 1000))
        try:
            t0 = time.monotonic()
            stub.Unary(echo_pb2.EchoRequest(), timeout=10)
            assert time.monotonic() - t0 >= delay
            t0 = time.monotonic()
            assert _check(ch) == SERVING
            assert time.monotonic() - t0 < delay / 2
            t0 = time.monotonic()
            cluster.stats(1)
            assert time.monotonic() - t0 < delay / 2
        finally:
            cluster.slow(1, 0)
        t0 = time.monotonic()
        stub.Unary(echo_pb2.EchoRequest(), timeout=5)
        assert time.monotonic() - t0 < delay / 2


def test_write_counts(cluster: LocalCluster) -> None:
    cluster.reset(2)
    with _channel(cluster.endpoints[2]) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        applied = [
            stub.Write(echo_pb2.WriteRequest(key="k", request_id=rid), timeout=5).applied
            for rid in ("w1", "w2", "w1")
        ]
    assert applied == [1, 2, 3]
    stats = cluster.stats(2)
    assert stats.server == "m2"
    assert stats.writes == 3 and stats.calls == 3
    assert list(stats.applied_ids) == ["w1", "w2", "w1"]
    cleared = cluster.reset(2)
    assert (cleared.writes, cleared.calls, list(cleared.applied_ids)) == (0, 0, [])


def test_many_ports_all_answer_health() -> None:
    with LocalCluster.many_ports(64) as scale:
        pid = scale.member(0).pid
        endpoints = scale.endpoints
        assert len(scale) == 1 and len(endpoints) == 64 and len(set(endpoints)) == 64
        assert all(e.startswith("127.0.0.1:") for e in endpoints)
        channels = [_channel(e) for e in endpoints]
        try:
            stub_futures = [
                health_pb2_grpc.HealthStub(ch).Check.future(
                    health_pb2.HealthCheckRequest(), timeout=10
                )
                for ch in channels
            ]
            assert [f.result().status for f in stub_futures] == [SERVING] * 64
        finally:
            for ch in channels:
                ch.close()
    assert _gone(pid)


def test_unix_socket_member() -> None:
    with LocalCluster(1, unix=True) as c:
        (endpoint,) = c.endpoints
        assert endpoint.startswith("unix:/")
        with _channel(endpoint) as ch:
            reply = echo_pb2_grpc.EchoStub(ch).Unary(echo_pb2.EchoRequest(), timeout=5)
            assert reply.server == "m0"


def test_start_failure_reports_stderr_and_close_is_idempotent() -> None:
    with pytest.raises(ClusterError, match="cannot bind"):
        LocalCluster(1, host="192.0.2.1", start_timeout=10)  # TEST-NET: not ours to bind
    c = LocalCluster(1)
    pid = c.member(0).pid
    c.close()
    c.close()
    assert _gone(pid)
    with pytest.raises(ClusterError):
        c.kill(0)
