"""Hedged requests: a second attempt to another member after `hedging.delay`; the first
answer wins and the loser is cancelled. Real servers, one made slow."""

from __future__ import annotations

import asyncio
import time

from _support import FAST, wait_until

import eagle
import eagle.aio
from eagle.testing.cluster import LocalCluster
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

UNARY = "/eagle.testing.v1.Echo/Unary"
CONFIG = {
    **FAST,
    "hedging": {"delay": 0.05},
    "retry": {"idempotent_methods": [UNARY]},
    "outlier": {"enabled": False},
}


def test_sync_hedge_beats_a_slow_member(cluster: LocalCluster) -> None:
    cluster.slow(0, 1000)
    with eagle.insecure_channel(cluster.endpoints, config=CONFIG) as ch:
        wait_until(lambda: all(s.serving for s in ch.status().values()), 5, "all SERVING")
        stub = echo_pb2_grpc.EchoStub(ch)
        start = time.monotonic()
        servers = [
            stub.Unary(echo_pb2.EchoRequest(message="h"), timeout=5).server for _ in range(9)
        ]
        # every call took well under the slow member's second: the hedge won
        assert time.monotonic() - start < 9 * 0.5
        assert "m0" not in servers
        resp, call = stub.Unary.with_call(echo_pb2.EchoRequest(message="w"), timeout=5)
        assert resp.message == "w" and call.code().name == "OK"
        assert ch.balancer.stats.retries >= 3  # hedges count against the retry budget


def test_writes_are_never_hedged(cluster: LocalCluster) -> None:
    with eagle.insecure_channel(cluster.endpoints, config=CONFIG) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        for i in range(6):
            stub.Write(echo_pb2.WriteRequest(key="k", request_id=f"r{i}"), timeout=5)
        assert ch.balancer.stats.retries == 0
        assert sum(len(cluster.stats(i).applied_ids) for i in range(3)) == 6


def test_aio_hedge_beats_a_slow_member(cluster: LocalCluster) -> None:
    cluster.slow(0, 1000)

    async def main() -> list[str]:
        async with eagle.aio.insecure_channel(cluster.endpoints, config=CONFIG) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)
            out = []
            for _ in range(9):
                out.append((await stub.Unary(echo_pb2.EchoRequest(), timeout=5)).server)
            return out

    start = time.monotonic()
    servers = asyncio.run(main())
    assert time.monotonic() - start < 9 * 0.5
    assert "m0" not in servers
