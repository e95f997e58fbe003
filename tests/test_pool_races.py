"""A member the balancer can pick always has a sub-channel, whatever another thread is
doing to the member set: ``update_endpoints`` changes the balancer first and the
sub-channel pool just after, and a call picked in between must still be sent (a
``KeyError`` here once reached a caller of ``test_sync_32_threads_under_chaos``).

The in-between moments are set up directly on the balancer, then a real call is made."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import eagle
import eagle.aio
from eagle.endpoints import parse_endpoints
from eagle.testing.cluster import LocalCluster
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

CFG = {"health": {"interval": 0.2, "timeout": 0.5}}


@pytest.fixture(scope="module")
def two() -> Iterator[LocalCluster]:
    with LocalCluster(2) as c:
        yield c


def test_a_member_picked_before_its_sub_channel_opened_is_sent_to(two: LocalCluster) -> None:
    a, b = two.endpoints
    with eagle.insecure_channel(a, config=CFG) as ch:
        # another thread's update_endpoints, stopped between the balancer and the pool
        ch.balancer.update_endpoints(parse_endpoints([a, b]))
        assert b not in ch._pool.active
        sub = ch._sub(b)
        assert sub.key == b and ch._pool.active[b] is sub
        stub = echo_pb2_grpc.EchoStub(sub.channel)
        assert stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5).message == "x"


def test_a_member_that_left_before_its_sub_channel_opened_gets_a_retiring_one(
    two: LocalCluster,
) -> None:
    a, b = two.endpoints
    with eagle.insecure_channel(a, config=CFG) as ch:
        # picked while a member, removed again before any pool sync: not in the pool at all
        sub = ch._sub(b)
        assert ch._pool.retiring[b] is sub and b not in ch._pool.active
        stub = echo_pb2_grpc.EchoStub(sub.channel)
        assert stub.Unary(echo_pb2.EchoRequest(message="y"), timeout=5).message == "y"
        ch.update_endpoints([a, b])  # it comes back: the same sub-channel turns active
        assert ch._pool.active[b] is sub and b not in ch._pool.retiring


def test_aio_a_member_picked_before_its_sub_channel_opened_is_sent_to(
    two: LocalCluster,
) -> None:
    a, b = two.endpoints

    async def main() -> None:
        async with eagle.aio.insecure_channel(a, config=CFG) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)
            await stub.Unary(echo_pb2.EchoRequest(message="w"), timeout=5)  # started
            ch.balancer.update_endpoints(parse_endpoints([a, b]))
            assert b not in ch._pool.active
            sub = ch._sub(b)
            assert ch._pool.active[b] is sub
            reply = await echo_pb2_grpc.EchoStub(sub.channel).Unary(
                echo_pb2.EchoRequest(message="z"), timeout=5
            )
            assert reply.message == "z"

    asyncio.run(main())
