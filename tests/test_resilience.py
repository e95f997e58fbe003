"""Retries, budget, per-try timeouts, p2c and write safety against 3 real servers."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

import grpc
import pytest
from _support import FAST, wait_until

import eagle
from eagle.testing.cluster import LocalCluster
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

UNARY = "/eagle.testing.v1.Echo/Unary"


def cfg(**sections: Any) -> dict[str, Any]:
    out: dict[str, Any] = dict(FAST)
    out.update(sections)
    return out


def hammer(
    stub: echo_pb2_grpc.EchoStub,
    seconds: float,
    threads: int = 4,
    fault: Any = None,
    at: float = 0.5,
    **req: Any,
) -> tuple[Counter[str], list[grpc.RpcError]]:
    """Run unary calls from `threads` threads for `seconds`; inject `fault` at `at` s."""
    servers: Counter[str] = Counter()
    errors: list[grpc.RpcError] = []
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def run() -> None:
        while time.monotonic() < end:
            try:
                resp = stub.Unary(echo_pb2.EchoRequest(message="x", **req), timeout=2)
            except grpc.RpcError as err:
                with lock:
                    errors.append(err)
                continue
            with lock:
                servers[resp.server] += 1

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    if fault is not None:
        time.sleep(at)
        fault()
    for w in workers:
        w.join(seconds + 10)
    return servers, errors


def _all_serving(ch: eagle.Channel) -> None:
    wait_until(lambda: all(s.serving for s in ch.status().values()), 5, "all SERVING")


def test_crash_costs_zero_failed_calls(cluster: LocalCluster) -> None:
    """SIGKILL under load from 4 threads: in-flight reads are retried elsewhere; new calls
    fail over transparently (Unary is declared idempotent: it is a read)."""
    config = cfg(retry={"idempotent_methods": [UNARY]})
    with eagle.insecure_channel(cluster.endpoints, config=config) as ch:
        _all_serving(ch)
        stub = echo_pb2_grpc.EchoStub(ch)
        servers, errors = hammer(stub, 3.0, fault=lambda: cluster.kill(0))
        assert not errors, [e.details() for e in errors[:3]]
        assert servers["m1"] > 0 and servers["m2"] > 0
        assert ch.balancer.stats.retries > 0 or servers["m0"] > 0


def test_hang_with_per_try_timeout_costs_zero_failed_calls(cluster: LocalCluster) -> None:
    config = cfg(retry={"idempotent_methods": [UNARY], "per_try_timeout": 0.25})
    with eagle.insecure_channel(cluster.endpoints, config=config) as ch:
        _all_serving(ch)
        stub = echo_pb2_grpc.EchoStub(ch)
        try:
            servers, errors = hammer(stub, 3.0, fault=lambda: cluster.stop(0))
        finally:
            cluster.cont(0)
        assert not errors, [e.code() for e in errors[:3]]
        assert servers["m1"] > 0 and servers["m2"] > 0


def test_p2c_routes_around_a_slow_member(cluster: LocalCluster) -> None:
    with eagle.insecure_channel(cluster.endpoints, config=cfg(policy="p2c")) as ch:
        _all_serving(ch)
        stub = echo_pb2_grpc.EchoStub(ch)
        cluster.slow(0, 200)
        hammer(stub, 1.0)  # the first second: p2c learns
        servers, errors = hammer(stub, 2.0)
        assert not errors
        total = sum(servers.values())
        assert servers["m0"] < 0.1 * total, servers
        # health probes still pass: it is slow, not down
        assert ch.status()[cluster.endpoints[0]].serving


def test_every_member_failing_stays_within_the_retry_budget(cluster: LocalCluster) -> None:
    config = cfg(retry={"idempotent_methods": [UNARY], "initial_backoff": 0.001})
    with eagle.insecure_channel(cluster.endpoints, config=config) as ch:
        _all_serving(ch)
        stub = echo_pb2_grpc.EchoStub(ch)
        stats = ch.balancer.stats
        attempts0, retries0 = stats.attempts, stats.retries
        start = time.monotonic()
        servers, errors = hammer(stub, 2.0, fail_code=grpc.StatusCode.UNAVAILABLE.value[0])
        elapsed = time.monotonic() - start
        calls = len(errors) + sum(servers.values())
        retries = stats.retries - retries0
        attempts = stats.attempts - attempts0
        assert calls > 50 and not servers
        assert all(e.code() is grpc.StatusCode.UNAVAILABLE for e in errors)
        # budget: 20 % of calls plus 10 retries/s (one second's worth up front)
        assert retries <= 0.2 * calls + 10 * (1 + elapsed) + 1, (calls, retries)
        assert attempts == calls + retries
        assert ch.balancer.budget.refused > 0


def test_non_idempotent_write_that_reached_a_server_is_never_retried(
    cluster: LocalCluster,
) -> None:
    config = cfg(retry={"per_try_timeout": 0.25}, health={"interval": 5.0, "timeout": 1.0})
    with eagle.insecure_channel(cluster.endpoints, config=config) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        for i in range(3):
            stub.Write(echo_pb2.WriteRequest(key="warm", request_id=f"w{i}"), timeout=2)
        cluster.stop(0)  # frozen, and the slow prober has not noticed yet
        failed: list[str] = []
        ok: list[str] = []
        try:
            for _ in range(6):
                rid = uuid.uuid4().hex
                try:
                    stub.Write(echo_pb2.WriteRequest(key="k", request_id=rid), timeout=2)
                    ok.append(rid)
                except grpc.RpcError as err:
                    assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED
                    # grpc's own error, unchanged; eagle says the outcome is unknown (it
                    # may have been applied) and why it was not retried
                    assert err.details() == "Deadline Exceeded"
                    info = eagle.call_info(err)
                    assert info is not None and info.outcome_unknown, info
                    assert info.give_up is eagle.GiveUp.NOT_IDEMPOTENT
                    failed.append(rid)
        finally:
            cluster.cont(0)
        assert failed, "no write landed on the frozen member"
        time.sleep(0.5)  # the thawed member applies what it had received
        applied = Counter(
            rid for i in range(3) for rid in cluster.stats(i).applied_ids if len(rid) == 32
        )
        for rid in ok + failed:
            assert applied[rid] <= 1, f"write {rid} applied {applied[rid]} times"
        assert all(applied[rid] == 1 for rid in ok)


def test_pushback_is_honoured(shared_cluster: LocalCluster) -> None:
    config = cfg(retry={"idempotent_methods": [UNARY], "max_attempts": 2})
    with eagle.insecure_channel(shared_cluster.endpoints, config=config) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        code = grpc.StatusCode.UNAVAILABLE.value[0]
        start = time.monotonic()
        with pytest.raises(grpc.RpcError):
            stub.Unary(echo_pb2.EchoRequest(message="pushback:400", fail_code=code), timeout=5)
        assert time.monotonic() - start >= 0.4  # waited as the server asked
        start = time.monotonic()
        retries0 = ch.balancer.stats.retries
        with pytest.raises(grpc.RpcError):
            stub.Unary(echo_pb2.EchoRequest(message="pushback:-1", fail_code=code), timeout=5)
        assert ch.balancer.stats.retries == retries0  # negative pushback: no retry


def test_retry_mode_grpc_hands_retries_to_grpc(shared_cluster: LocalCluster) -> None:
    config = cfg(retry={"mode": "grpc", "max_attempts": 3})
    with eagle.insecure_channel(shared_cluster.endpoints, config=config) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        assert stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5).message == "x"
        retries0 = ch.balancer.stats.retries
        before = [shared_cluster.stats(i).calls for i in range(3)]
        with pytest.raises(grpc.RpcError):
            stub.Unary(
                echo_pb2.EchoRequest(fail_code=grpc.StatusCode.UNAVAILABLE.value[0]), timeout=5
            )
        assert ch.balancer.stats.retries == retries0  # eagle did not retry...
        grew = [shared_cluster.stats(i).calls - before[i] for i in range(3)]
        assert sorted(grew) == [0, 0, 3], grew  # ...gRPC's retryPolicy did, on one member
