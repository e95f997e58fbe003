"""Real faults on real servers: crash (SIGKILL), hang (SIGSTOP), drain (NOT_SERVING).

For each fault and for both channels: within the configured thresholds the member leaves
rotation, every later call succeeds on the others, and the member rejoins after it
recovers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest
from _support import FAST

import eagle
import eagle.aio
from eagle import State
from eagle.testing.cluster import LocalCluster
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

FAULTS = {
    # fault: (inject, recover, states that count as "left rotation")
    "crash": (LocalCluster.kill, LocalCluster.restart, {State.UNREACHABLE, State.EJECTED}),
    "hang": (LocalCluster.stop, LocalCluster.cont, {State.UNREACHABLE, State.EJECTED}),
    "drain": (LocalCluster.drain, LocalCluster.undrain, {State.NOT_SERVING}),
}
#: generous bounds (the machine is shared): detection is ~1.2 s with FAST
DETECT_BOUND = 4.0
REJOIN_BOUND = 12.0


async def _until(pred: Callable[[], bool], bound: float, what: str) -> float:
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > bound:
            pytest.fail(f"{what} did not happen within {bound}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def scenario(
    cluster: LocalCluster,
    fault: str,
    status: Callable[[], eagle.StatusSnapshot],
    call: Callable[[], Awaitable[str]],
) -> None:
    inject, recover, gone = FAULTS[fault]
    victim = cluster.endpoints[0]
    await _until(lambda: all(s.serving for s in status().values()), 5, "all members SERVING")
    inject(cluster, 0)
    detect = await _until(lambda: status()[victim].state in gone, DETECT_BOUND, "detection")
    # every later call succeeds, on the others
    servers = [await call() for _ in range(60)]
    assert "m0" not in servers
    assert set(servers) == {"m1", "m2"}
    recover(cluster, 0)
    await _until(lambda: status()[victim].serving, REJOIN_BOUND, "rejoin")
    servers = [await call() for _ in range(30)]
    assert "m0" in servers, "member did not return to rotation"
    print(f"{fault}: detected in {detect:.2f}s")


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_sync_channel_survives(cluster: LocalCluster, fault: str) -> None:
    with eagle.insecure_channel(cluster.endpoints, config=FAST) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)

        async def call() -> str:
            return str(stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=2).server)

        asyncio.run(scenario(cluster, fault, ch.status, call))


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_aio_channel_survives(cluster: LocalCluster, fault: str) -> None:
    async def main() -> None:
        async with eagle.aio.insecure_channel(cluster.endpoints, config=FAST) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)

            async def call() -> str:
                return str((await stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=2)).server)

            await scenario(cluster, fault, ch.status, call)

    asyncio.run(main())


def test_every_member_down_fails_fast_then_recovers(cluster: LocalCluster) -> None:
    with eagle.insecure_channel(cluster.endpoints, config=FAST) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        for i in range(3):
            cluster.kill(i)
        deadline = time.monotonic() + DETECT_BOUND
        while not all(s.state is State.UNREACHABLE for s in ch.status().values()):
            assert time.monotonic() < deadline, ch.status()
            time.sleep(0.05)
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
        assert time.monotonic() - start < 0.5  # fails fast, not at the deadline
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        for ep in cluster.endpoints:
            assert f"{ep} UNREACHABLE" in err.value.details()
        # wait_for_ready waits within its deadline until a member can serve
        for i in range(3):
            cluster.restart(i)
        resp = stub.Unary(
            echo_pb2.EchoRequest(message="x"), timeout=REJOIN_BOUND, wait_for_ready=True
        )
        assert resp.server in {"m0", "m1", "m2"}


def _flap(cluster: LocalCluster) -> None:
    for _ in range(5):  # up and down every 200 ms for 2 s, then stays up
        cluster.drain(0)
        time.sleep(0.2)
        cluster.undrain(0)
        time.sleep(0.2)


def _all_down(cluster: LocalCluster) -> None:
    for i in range(3):
        cluster.kill(i)
    time.sleep(1.5)
    for i in range(3):
        cluster.restart(i)


def _slow(cluster: LocalCluster) -> None:
    cluster.slow(0, 200)
    time.sleep(1.5)
    cluster.slow(0, 0)


RECOVERY = {"slow": _slow, "flap": _flap, "all_down": _all_down}


async def recovery_scenario(
    cluster: LocalCluster,
    fault: str,
    status: Callable[[], eagle.StatusSnapshot],
    call: Callable[[], Awaitable[str]],
) -> None:
    """During the fault calls may fail; after it every member returns to rotation and
    calls succeed again, without anyone restarting the client."""
    await _until(lambda: all(s.serving for s in status().values()), 5, "all members SERVING")
    loop = asyncio.get_running_loop()
    injected = loop.run_in_executor(None, RECOVERY[fault], cluster)
    while not injected.done():  # keep calling through the fault; failures allowed here
        try:
            await call()
        except grpc.RpcError:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)  # let the loop see the fault thread finish
    await injected
    await _until(lambda: all(s.serving for s in status().values()), REJOIN_BOUND, "rejoin")
    servers = [await call() for _ in range(30)]
    assert set(servers) == {"m0", "m1", "m2"}, servers


@pytest.mark.parametrize("fault", sorted(RECOVERY))
def test_sync_recovers_after(cluster: LocalCluster, fault: str) -> None:
    config = {**FAST, "outlier": {"base_ejection_time": 1.0}}
    with eagle.insecure_channel(cluster.endpoints, config=config) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)

        async def call() -> str:
            return str(stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=2).server)

        asyncio.run(recovery_scenario(cluster, fault, ch.status, call))


@pytest.mark.parametrize("fault", sorted(RECOVERY))
def test_aio_recovers_after(cluster: LocalCluster, fault: str) -> None:
    config = {**FAST, "outlier": {"base_ejection_time": 1.0}}

    async def main() -> None:
        async with eagle.aio.insecure_channel(cluster.endpoints, config=config) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)

            async def call() -> str:
                return str((await stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=2)).server)

            await recovery_scenario(cluster, fault, ch.status, call)

    asyncio.run(main())
