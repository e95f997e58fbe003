"""Construction errors and clean shutdown."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest
from _support import FAST

import eagle
import eagle.aio
from eagle.testing.cluster import LocalCluster
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc


@pytest.mark.parametrize(
    ("endpoints", "config", "named"),
    [
        ("", None, "empty"),
        ("127.0.0.1:1,nonsense", None, "'nonsense'"),
        ("127.0.0.1:1,127.0.0.1:1", None, "duplicate endpoint '127.0.0.1:1'"),
        ("127.0.0.1:1", {"heath": {}}, "heath: unknown config key"),
        ("127.0.0.1:1", {"health": {"interval": -1}}, "health.interval"),
        ("127.0.0.1:1", {"health": {"timeout": 0}}, "health.timeout"),
    ],
)
def test_bad_input_raises_value_error(endpoints: str, config: object, named: str) -> None:
    before = threading.active_count()
    for factory in (eagle.insecure_channel, eagle.aio.insecure_channel):
        with pytest.raises(ValueError) as err:
            factory(endpoints, config=config)  # type: ignore[operator]
        assert named in str(err.value)
    assert threading.active_count() == before  # nothing started


def test_config_passed_as_options_names_the_mistake() -> None:
    # eagle < 0.2 took the config as the second positional argument; grpc's is options
    for factory in (eagle.insecure_channel, eagle.aio.insecure_channel):
        with pytest.raises(TypeError, match=r"options: .*pass eagle's settings as config="):
            factory("127.0.0.1:1", {"health": {"interval": 1}})  # type: ignore[arg-type]


def _non_grpc_threads() -> set[threading.Thread]:
    """Every thread but the main one and grpcio's own process-wide aio poller."""
    return {
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and "_poll_wrapper" not in t.name
    }


def test_close_stops_scheduler_and_subchannels(shared_cluster: LocalCluster) -> None:
    before = _non_grpc_threads()
    ch = eagle.insecure_channel(shared_cluster.endpoints, config=FAST)
    stub = echo_pb2_grpc.EchoStub(ch)
    stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
    assert _non_grpc_threads() - before  # the scheduler runs
    closers = [threading.Thread(target=ch.close) for _ in range(4)]
    for t in closers:
        t.start()
    for t in closers:
        t.join(5)
    ch.close()  # idempotent
    deadline = time.monotonic() + 5
    while _non_grpc_threads() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (_non_grpc_threads() - before), _non_grpc_threads() - before
    # grpc's behaviour on a closed channel, for every call kind
    with pytest.raises(ValueError, match="Cannot invoke RPC on closed channel!"):
        stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=1)
    with pytest.raises(ValueError, match="Cannot invoke RPC: Channel closed!"):
        stub.Unary.future(echo_pb2.EchoRequest(message="x"), timeout=1)
    with pytest.raises(ValueError, match="Cannot invoke RPC: Channel closed!"):
        stub.ServerStream(echo_pb2.EchoRequest(message="x"), timeout=1)
    for sub in ch._subs.values():
        with pytest.raises(ValueError):  # grpcio: "Cannot invoke RPC on closed channel!"
            sub.channel.unary_unary("/x/y")(b"", timeout=1)


def test_aio_close_stops_everything(shared_cluster: LocalCluster) -> None:
    async def main() -> None:
        ch = eagle.aio.insecure_channel(shared_cluster.endpoints, config=FAST)
        stub = echo_pb2_grpc.EchoStub(ch)
        await stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
        await asyncio.sleep(0.3)
        await ch.close()
        await ch.close()
        assert ch._prober._scheduler is None and not ch._prober._tasks
        # grpc.aio's behaviour on a closed channel
        with pytest.raises(grpc.aio.UsageError, match=r"Channel is closed\."):
            stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=1)
        with pytest.raises(grpc.aio.UsageError, match=r"Channel is closed\."):
            stub.Bidi()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not others, others

    before = _non_grpc_threads()
    asyncio.run(main())
    assert not (_non_grpc_threads() - before)
