"""health.mode watch against real servers: the server pushes changes on a Health/Watch
stream, so a stable member costs few probes; a Check with a deadline still finds a frozen
member (stalled calls get one at once); a server without Watch falls back to Checks."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from _support import wait_until
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import eagle
import eagle.aio
from eagle._sync import stream_reading
from eagle.hooks import Observer, ProbeOutcome
from eagle.testing.cluster import LocalCluster
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

QUIET: dict[str, object] = {
    "mode": "watch",
    "interval": 0.25,
    "timeout": 0.4,
    "watch_check_interval": 3.0,
    "no_traffic_interval": None,
}
WATCH: dict[str, object] = {"health": QUIET}


class Probes(Observer):
    """Counts health results per member: Checks (latency > 0) and Watch pushes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.checks: dict[str, int] = {}
        self.pushes: dict[str, int] = {}

    def on_probe(self, endpoint: str, outcome: ProbeOutcome) -> None:
        with self.lock:
            box = self.checks if outcome.latency > 0 else self.pushes
            box[endpoint] = box.get(endpoint, 0) + 1


def test_drain_is_pushed_and_a_stable_member_costs_few_checks(cluster: LocalCluster) -> None:
    probes = Probes()
    with eagle.insecure_channel(cluster.endpoints, config=WATCH) as ch:
        eagle.hooks.add_observer(ch, probes)
        wait_until(lambda: all(s.serving for s in ch.status().values()), 10, "all SERVING")
        wait_until(lambda: len(probes.pushes) == 3, 10, "a Watch message from every member")
        with probes.lock:
            probes.checks.clear()
        time.sleep(3.2)  # a window: with mode check at 0.25 s that would be ~13 Checks each
        with probes.lock:
            checks = dict(probes.checks)
        assert all(checks.get(e, 0) <= 2 for e in cluster.endpoints), checks
        victim = cluster.endpoints[1]
        start = time.monotonic()
        cluster.drain(1)
        wait_until(lambda: ch.status()[victim].state is eagle.State.NOT_SERVING, 5, "drained")
        assert time.monotonic() - start < 1.0  # pushed, not found by a Check 3 s later
        cluster.undrain(1)
        wait_until(lambda: ch.status()[victim].serving, 5, "back")


def test_a_frozen_member_carrying_calls_is_out_within_two_seconds(cluster: LocalCluster) -> None:
    with eagle.insecure_channel(cluster.endpoints, config=WATCH) as ch:
        wait_until(lambda: all(s.serving for s in ch.status().values()), 10, "all SERVING")
        stub = echo_pb2_grpc.EchoStub(ch)
        for _ in range(6):
            stub.Unary(echo_pb2.EchoRequest(), timeout=5)
        victim = cluster.endpoints[0]
        cluster.stop(0)
        try:
            stuck = [stub.Unary.future(echo_pb2.EchoRequest(), timeout=8) for _ in range(6)]
            start = time.monotonic()
            took = wait_until(
                lambda: ch.status()[victim].state is eagle.State.UNREACHABLE, 4, "frozen out"
            )
            assert took < 2.0, f"out after {took:.2f} s"
            assert time.monotonic() - start < 4
        finally:
            cluster.cont(0)
        for f in stuck:
            f.exception(10)


def test_a_frozen_idle_member_is_out_within_five_seconds(cluster: LocalCluster) -> None:
    with eagle.insecure_channel(cluster.endpoints, config=WATCH) as ch:
        wait_until(lambda: all(s.serving for s in ch.status().values()), 10, "all SERVING")
        victim = cluster.endpoints[2]
        cluster.stop(2)
        try:
            took = wait_until(
                lambda: ch.status()[victim].state is eagle.State.UNREACHABLE, 8, "frozen out"
            )
        finally:
            cluster.cont(2)
        assert took < 5.0, f"out after {took:.2f} s"


@pytest.fixture
def check_only_server() -> Iterator[str]:
    """A server that implements Health/Check but not Health/Watch."""

    def check(_request: bytes, _context: grpc.ServicerContext) -> bytes:
        return health_pb2.HealthCheckResponse(status=1).SerializeToString()

    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def test_a_server_without_watch_falls_back_to_checks(check_only_server: str) -> None:
    probes = Probes()
    with eagle.insecure_channel(check_only_server, config=WATCH) as ch:
        eagle.hooks.add_observer(ch, probes)
        wait_until(lambda: ch.status()[check_only_server].serving, 10, "SERVING")
        member = ch.balancer._members[check_only_server]
        wait_until(lambda: member.watch_unsupported, 5, "Watch found UNIMPLEMENTED")
        with probes.lock:
            probes.checks.clear()
        time.sleep(1.5)
        with probes.lock:
            assert probes.checks.get(check_only_server, 0) >= 4  # Checks every 0.25 s
            assert not probes.pushes


def test_aio_drain_is_pushed_and_frozen_member_with_calls_is_out(cluster: LocalCluster) -> None:
    async def main() -> tuple[float, float]:
        async with eagle.aio.insecure_channel(cluster.endpoints, config=WATCH) as ch:
            deadline = time.monotonic() + 10
            while not all(s.serving for s in ch.status().values()):
                assert time.monotonic() < deadline, "members never SERVING"
                await asyncio.sleep(0.02)
            members = [ch.balancer._members[e] for e in cluster.endpoints]
            while not all(m.watch_live for m in members):  # the Watch streams are up
                assert time.monotonic() < deadline, "Watch streams never up"
                await asyncio.sleep(0.02)
            drained = cluster.endpoints[1]
            start = time.monotonic()
            cluster.drain(1)
            while ch.status()[drained].state is not eagle.State.NOT_SERVING:
                assert time.monotonic() - start < 5, "never drained"
                await asyncio.sleep(0.02)
            drain_took = time.monotonic() - start
            cluster.undrain(1)
            stub = echo_pb2_grpc.EchoStub(ch)
            for _ in range(6):
                await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
            frozen = cluster.endpoints[0]
            cluster.stop(0)
            try:
                calls = [stub.Unary(echo_pb2.EchoRequest(), timeout=8) for _ in range(6)]
                start = time.monotonic()
                while ch.status()[frozen].state is not eagle.State.UNREACHABLE:
                    assert time.monotonic() - start < 4, "frozen member never out"
                    await asyncio.sleep(0.02)
                freeze_took = time.monotonic() - start
            finally:
                cluster.cont(0)
            await asyncio.gather(*calls, return_exceptions=True)
            return drain_took, freeze_took

    drain_took, freeze_took = asyncio.run(main())
    assert drain_took < 1.0 and freeze_took < 2.0, (drain_took, freeze_took)


# ------------------------------------------------------------- quiet stream reading


def test_quiet_reading_is_in_use_with_the_installed_grpcio() -> None:
    """The prober's Watch reader relies on grpcio internals; an upgrade that changes them
    must show up here (the reader then falls back to plain iteration, 100 ms wake-ups)."""
    assert stream_reading.QUIET


@pytest.mark.parametrize("fail_code", [0, grpc.StatusCode.NOT_FOUND.value[0]])
def test_quiet_reading_yields_and_raises_as_iteration_does(
    cluster: LocalCluster, fail_code: int
) -> None:
    req = echo_pb2.EchoRequest(message="m", count=4, interval_ms=20, fail_code=fail_code)
    with grpc.insecure_channel(cluster.endpoints[0]) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        got: list[list[int]] = []
        errors: list[tuple[object, str | None]] = []
        for read in (iter, stream_reading.messages):
            call = stub.ServerStream(req, timeout=5)
            seqs: list[int] = []
            try:
                for resp in read(call):
                    seqs.append(resp.seq)
            except grpc.RpcError as err:
                assert err is call
                errors.append((err.code(), err.details()))
            got.append(seqs)
    assert got[0] == got[1] == [0, 1, 2, 3]
    if fail_code:
        assert len(errors) == 2 and errors[0] == errors[1]
        assert errors[0][0] is grpc.StatusCode.NOT_FOUND
    else:
        assert errors == []


def test_quiet_reading_ends_at_once_when_cancelled(cluster: LocalCluster) -> None:
    with grpc.insecure_channel(cluster.endpoints[0]) as ch:
        call = echo_pb2_grpc.EchoStub(ch).ServerStream(
            echo_pb2.EchoRequest(count=0, interval_ms=60_000), timeout=30
        )
        seen: list[int] = []
        ended: list[BaseException] = []

        def read() -> None:
            try:
                for resp in stream_reading.messages(call):
                    seen.append(resp.seq)
            except grpc.RpcError as err:
                ended.append(err)

        t = threading.Thread(target=read)
        t.start()
        wait_until(lambda: seen == [0], 5, "the first message")
        start = time.monotonic()
        call.cancel()
        t.join(5)
        assert not t.is_alive() and time.monotonic() - start < 1.0  # not WAIT (5 s) later
        assert ended and ended[0] is call and call.code() is grpc.StatusCode.CANCELLED


@pytest.fixture
def strict_ping_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[int]]]:
    """A server that enforces a ping floor (1000 ms, or the test's indirect parameter)
    with grpc's default strike limit (2), as etcd enforces 5 s: a client that pings faster
    gets GOAWAY ``too_many_pings``. Yields its address and a list whose length counts the
    Watch streams opened."""
    floor_ms: int = getattr(request, "param", 1000)
    opened: list[int] = []

    class Counting(health.HealthServicer):
        def Watch(self, request: Any, context: Any, send_response_callback: Any = None) -> Any:
            opened.append(1)
            return super().Watch(request, context, send_response_callback)

    server = grpc.server(
        futures.ThreadPoolExecutor(8),
        options=[
            ("grpc.http2.min_ping_interval_without_data_ms", floor_ms),
            ("grpc.http2.max_ping_strikes", 2),
        ],
    )
    servicer = Counting()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", opened
    finally:
        servicer.enter_graceful_shutdown()
        server.stop(None)


def test_watch_streams_with_keepalive_above_the_servers_floor_draw_no_goaway(
    strict_ping_server: tuple[str, list[int]],
) -> None:
    """keepalive.time above the server's floor (by a margin for receive-time jitter, as the
    330 s default sits above the usual 300 s) keeps a quiet Watch stream up: no
    ``too_many_pings`` GOAWAY (which would end the stream and make the prober re-open it)."""
    address, opened = strict_ping_server
    # no Check for 30 s: a Check's answer is data, which would wipe the server's strikes
    cfg = {"health": {**QUIET, "watch_check_interval": 30.0}, "keepalive": {"time": 1.5}}
    with eagle.insecure_channel(address, config=cfg) as ch:
        wait_until(lambda: len(opened) >= 1, 10, "the Watch stream")
        member = ch.balancer._members[address]
        wait_until(lambda: member.watch_live, 5, "the first Watch message")
        # the sub-channel does ping (every 1.5 s): a quiet stream here is not one unpinged
        [ep] = ch.balancer.endpoints
        assert ("grpc.keepalive_time_ms", 1500) in ch._sub_options(ep)
        time.sleep(8.0)  # 5 pings; a third strike would have ended the stream
        assert len(opened) == 1 and member.watch_live
        assert ch.status()[address].serving


@pytest.mark.parametrize("strict_ping_server", [2000], indirect=True)
def test_watch_streams_pinging_below_the_servers_floor_are_ended(
    strict_ping_server: tuple[str, list[int]],
) -> None:
    """The control for the test above: the floor is enforced, so a client pinging twice as
    often is sent GOAWAY and its Watch stream is opened again. (A grpc client sends at
    most one ping a second whatever ``keepalive.time`` says, hence a 2 s floor here.)"""
    address, opened = strict_ping_server
    cfg = {"health": {**QUIET, "watch_check_interval": 30.0}, "keepalive": {"time": 1.0}}
    with eagle.insecure_channel(address, config=cfg) as ch:
        wait_until(lambda: len(opened) >= 2, 15, "a second Watch stream after GOAWAY")
        wait_until(lambda: ch.status()[address].serving, 10, "the member serving again")
