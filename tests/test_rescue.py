"""Idempotent calls stuck on a member that leaves rotation are abandoned and re-sent to
another member (no per-try timeout needed); non-idempotent ones are not."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
from _support import wait_until

import eagle
import eagle.aio
from eagle.testing.cluster import LocalCluster
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

UNARY = "/eagle.testing.v1.Echo/Unary"
CONFIG = {
    "health": {"interval": 0.2, "timeout": 0.4, "unhealthy_threshold": 2},
    "retry": {"idempotent_methods": [UNARY]},
}


def test_sync_stuck_idempotent_calls_are_rescued(cluster: LocalCluster) -> None:
    with eagle.insecure_channel(cluster.endpoints, config=CONFIG) as ch:
        wait_until(lambda: all(s.serving for s in ch.status().values()), 5, "all SERVING")
        stub = echo_pb2_grpc.EchoStub(ch)
        cluster.stop(0)
        results: list[tuple[float, str]] = []
        errors: list[BaseException] = []

        def one() -> None:
            start = time.monotonic()
            try:
                resp = stub.Unary(echo_pb2.EchoRequest(message="r"), timeout=8)
                results.append((time.monotonic() - start, resp.server))
            except BaseException as exc:
                errors.append(exc)

        try:
            threads = [threading.Thread(target=one) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(15)
        finally:
            cluster.cont(0)
        assert not errors, errors
        assert len(results) == 6 and all(server != "m0" for _, server in results)
        # some call sat on the frozen member until the prober noticed, then moved on,
        # long before its 8 s deadline
        assert max(took for took, _ in results) < 4.0
        assert ch.balancer.stats.retries >= 1


def test_sync_stuck_write_is_not_rescued(cluster: LocalCluster) -> None:
    with eagle.insecure_channel(cluster.endpoints, config=CONFIG) as ch:
        wait_until(lambda: all(s.serving for s in ch.status().values()), 5, "all SERVING")
        stub = echo_pb2_grpc.EchoStub(ch)
        cluster.stop(0)
        outcomes: list[str] = []

        def one(i: int) -> None:
            try:
                stub.Write(echo_pb2.WriteRequest(key="k", request_id=f"w{i}"), timeout=2.5)
                outcomes.append("ok")
            except grpc.RpcError as err:
                outcomes.append(err.code().name)

        try:
            threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(15)
        finally:
            cluster.cont(0)
        # the write that reached the frozen member waits for its own deadline
        assert "DEADLINE_EXCEEDED" in outcomes and outcomes.count("ok") >= 4


def test_aio_stuck_idempotent_calls_are_rescued(cluster: LocalCluster) -> None:
    async def main() -> list[tuple[float, str]]:
        async with eagle.aio.insecure_channel(cluster.endpoints, config=CONFIG) as ch:
            while not all(s.serving for s in ch.status().values()):
                await asyncio.sleep(0.05)
            stub = echo_pb2_grpc.EchoStub(ch)
            cluster.stop(0)

            async def one() -> tuple[float, str]:
                start = time.monotonic()
                resp = await stub.Unary(echo_pb2.EchoRequest(message="r"), timeout=8)
                return time.monotonic() - start, str(resp.server)

            try:
                out = list(await asyncio.gather(*[one() for _ in range(6)]))
            finally:
                cluster.cont(0)
            assert ch.balancer.stats.retries >= 1  # some call was moved off m0
            return out

    results = asyncio.run(main())
    assert all(server != "m0" for _, server in results)
    assert max(took for took, _ in results) < 4.0
