"""eagle's own membership protocol end to end: real gRPC members publish views through
``eagle.server``; eagle judges them, ends streams on cut-off members and the resumable
helper re-opens them elsewhere (sync and asyncio, server-streaming and bidi); pick_leader
follows the leader; discovery and ``update_endpoints`` change the member set."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest
from _support import wait_until
from grpc_health.v1 import health_pb2, health_pb2_grpc

import eagle
from eagle.aio.resumable import resumable as aio_resumable
from eagle.membership.v1 import membership_pb2, membership_pb2_grpc
from eagle.resumable import resumable
from eagle.server import MembershipPublisher, server_options
from eagle.testing.member_server import MemberGroup
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

#: probe (and fetch views) every 0.1 s
FAST: dict[str, Any] = {
    "membership": "eagle",
    "health": {
        "interval": 0.1,
        "timeout": 0.3,
        "healthy_threshold": 1,
        "no_traffic_interval": None,
    },
}
#: how long a changed view may take to reach a verdict (several probe rounds)
VERDICT_WITHIN = 3.0

Req = echo_pb2.EchoRequest


@pytest.fixture(scope="module")
def group() -> Iterator[MemberGroup]:
    with MemberGroup(3) as g:
        yield g


@pytest.fixture(autouse=True)
def _fresh_views(group: MemberGroup) -> Iterator[None]:
    group.reset()
    yield
    group.reset()


def _all_serving(ch: Any, n: int = 3) -> Callable[[], bool]:
    def check() -> bool:
        snap = ch.status()
        return len(snap) == n and all(s.state is eagle.State.SERVING for s in snap.values())

    return check


def _state(ch: Any, ep: str) -> eagle.State:
    return ch.status()[ep].state


def _keep(req: Any, msg: Any) -> Any:
    return req


# ------------------------------------------------------------------------ verdicts
@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"leader_id": ""}, "has no leader"),
        ({"term": 0}, "term 0 trails the majority's 3"),
        ({"cluster_id": "elsewhere"}, "cluster id elsewhere differs"),
        ({"has_quorum": False}, "has no quorum"),
    ],
)
def test_cut_off_member_is_partitioned_then_returns(
    group: MemberGroup, changes: dict[str, Any], reason: str
) -> None:
    group.elect(0, term=3)
    with eagle.insecure_channel(group.endpoints, config=FAST) as ch:
        wait_until(_all_serving(ch), 5, "all members SERVING")
        ep = group.endpoints[1]
        group.set_view(1, **changes)
        wait_until(lambda: _state(ch, ep) is eagle.State.PARTITIONED, VERDICT_WITHIN, "verdict")
        st = ch.status()[ep]
        assert reason in (st.last_error or "") and st.health is eagle.State.SERVING
        assert st.member_id == "m1"
        # calls avoid it
        stub = echo_pb2_grpc.EchoStub(ch)
        assert {stub.Unary(Req(message="x"), timeout=5).server for _ in range(6)} == {"m0", "m2"}
        group.reset(term=3)
        wait_until(lambda: _state(ch, ep) is eagle.State.SERVING, VERDICT_WITHIN, "return")


# ------------------------------------------------------------- streams move (sync)
def _moved_sync(group: MemberGroup, rs: Any, errors: list[grpc.RpcError], cut: Any) -> float:
    """Read ``rs`` until its messages come from another member after ``cut(i)``."""
    first = next(rs)
    ep0 = rs.endpoint
    i = group.index_of(ep0)
    assert first.server == f"m{i}"
    cut(i)
    t0 = time.monotonic()
    deadline = t0 + 10
    for msg in rs:
        if msg.server != f"m{i}":
            break
        assert time.monotonic() < deadline, "stream never moved"
    moved = time.monotonic() - t0
    assert len(errors) == 1, errors
    err = errors[0]
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    details = err.details() or ""
    assert ep0 in details and "PARTITIONED" in details, details
    assert rs.endpoint != ep0 and rs.resumes == 1
    rs.cancel()
    return moved


def test_sync_server_stream_is_ended_and_resumed(group: MemberGroup) -> None:
    with eagle.insecure_channel(group.endpoints, config=FAST) as ch:
        wait_until(_all_serving(ch), 5, "all members SERVING")
        stub = echo_pb2_grpc.EchoStub(ch)
        errors: list[grpc.RpcError] = []
        rs = resumable(
            stub.ServerStream,
            Req(message="s", interval_ms=20),
            _keep,
            on_resume=lambda err, req: errors.append(err),
        )
        moved = _moved_sync(group, rs, errors, lambda i: group.set_view(i, leader_id=""))
        assert moved < VERDICT_WITHIN
        assert "has no leader" in (errors[0].details() or "")


def test_sync_bidi_stream_is_ended_and_resumed(group: MemberGroup) -> None:
    group.elect(0, term=5)
    with eagle.insecure_channel(group.endpoints, config=FAST) as ch:
        wait_until(_all_serving(ch), 5, "all members SERVING")
        stub = echo_pb2_grpc.EchoStub(ch)

        def requests() -> Iterator[echo_pb2.EchoRequest]:
            n = 0
            while True:
                yield Req(message=str(n))
                n += 1
                time.sleep(0.02)

        errors: list[grpc.RpcError] = []
        rs = resumable(
            lambda req: stub.Bidi(requests()),
            Req(),
            _keep,
            on_resume=lambda err, req: errors.append(err),
        )
        _moved_sync(group, rs, errors, lambda i: group.set_view(i, term=1))
        assert "term 1 trails the majority's 5" in (errors[0].details() or "")


# ------------------------------------------------------------- streams move (aio)
async def _moved_aio(
    group: MemberGroup, rs: Any, errors: list[grpc.RpcError], cut: Callable[[int], Any]
) -> None:
    first = await anext(rs)
    ep0 = rs.endpoint
    i = group.index_of(ep0)
    assert first.server == f"m{i}"
    cut(i)
    deadline = time.monotonic() + 10
    async for msg in rs:
        if msg.server != f"m{i}":
            break
        assert time.monotonic() < deadline, "stream never moved"
    assert len(errors) == 1, errors
    assert errors[0].code() is grpc.StatusCode.UNAVAILABLE
    details = errors[0].details() or ""
    assert ep0 in details and "PARTITIONED" in details, details
    assert rs.endpoint != ep0 and rs.resumes == 1
    rs.cancel()


async def _aio_serving(ch: Any) -> None:
    deadline = time.monotonic() + 5
    while not _all_serving(ch)():
        assert time.monotonic() < deadline, f"not all SERVING: {ch.status()}"
        await asyncio.sleep(0.02)


def test_aio_server_stream_is_ended_and_resumed(group: MemberGroup) -> None:
    async def main() -> None:
        async with eagle.aio.insecure_channel(group.endpoints, config=FAST) as ch:
            await _aio_serving(ch)
            stub = echo_pb2_grpc.EchoStub(ch)
            errors: list[grpc.RpcError] = []
            rs = aio_resumable(
                stub.ServerStream,
                Req(message="s", interval_ms=20),
                _keep,
                on_resume=lambda err, req: errors.append(err),
            )
            await _moved_aio(group, rs, errors, lambda i: group.set_view(i, cluster_id="other"))
            assert "cluster id other differs" in (errors[0].details() or "")

    asyncio.run(main())


def test_aio_bidi_stream_is_ended_and_resumed(group: MemberGroup) -> None:
    async def main() -> None:
        async with eagle.aio.insecure_channel(group.endpoints, config=FAST) as ch:
            await _aio_serving(ch)
            stub = echo_pb2_grpc.EchoStub(ch)

            async def requests() -> AsyncIterator[echo_pb2.EchoRequest]:
                n = 0
                while True:
                    yield Req(message=str(n))
                    n += 1
                    await asyncio.sleep(0.02)

            errors: list[grpc.RpcError] = []
            rs = aio_resumable(
                lambda req: stub.Bidi(requests()),
                Req(),
                _keep,
                on_resume=lambda err, req: errors.append(err),
            )
            await _moved_aio(group, rs, errors, lambda i: group.set_view(i, leader_id=""))

    asyncio.run(main())


# ----------------------------------------------------------------- leader picking
def test_pick_leader_follows_the_leader(group: MemberGroup) -> None:
    config = {**FAST, "policy": "pick_leader"}
    with eagle.insecure_channel(group.endpoints, config=config) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        wait_until(lambda: ch.balancer.leader == group.endpoints[0], 5, "leader m0 known")
        assert {stub.Unary(Req(message="x"), timeout=5).server for _ in range(8)} == {"m0"}
        group.elect(2)
        wait_until(lambda: ch.balancer.leader == group.endpoints[2], 5, "leader m2 known")
        assert {stub.Unary(Req(message="x"), timeout=5).server for _ in range(8)} == {"m2"}
        # the leader is cut off: no majority names a leader it can use; calls go on elsewhere
        group.set_view(2, leader_id="")
        group.set_view(0, leader_id="")
        group.set_view(1, leader_id="")
        wait_until(lambda: ch.balancer.leader is None, 5, "no leader")


def test_pick_leader_aio(group: MemberGroup) -> None:
    async def main() -> None:
        config = {**FAST, "policy": "pick_leader"}
        group.elect(1)
        async with eagle.aio.insecure_channel(group.endpoints, config=config) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)
            deadline = time.monotonic() + 5
            while ch.balancer.leader != group.endpoints[1]:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            servers = {(await stub.Unary(Req(message="x"), timeout=5)).server for _ in range(8)}
            assert servers == {"m1"}

    asyncio.run(main())


# ----------------------------------------------------------------------- discovery
def test_discovery_adds_and_removes_members(group: MemberGroup) -> None:
    e0, e1, e2 = group.endpoints
    config = {**FAST, "membership": {"provider": "eagle", "discover": True}}
    with eagle.insecure_channel([e0], config=config) as ch:
        wait_until(lambda: set(ch.endpoints) == {e0, e1, e2}, 5, "discovery adds m1, m2")
        wait_until(_all_serving(ch), 5, "all SERVING")
        stub = echo_pb2_grpc.EchoStub(ch)
        assert {stub.Unary(Req(message="x"), timeout=5).server for _ in range(9)} == {
            "m0",
            "m1",
            "m2",
        }
        # a stream on m2, then m2 leaves the cluster
        rs = stub.ServerStream(Req(message="s", interval_ms=20))
        while rs.endpoint != e2:
            rs.cancel()
            rs = stub.ServerStream(Req(message="s", interval_ms=20))
        assert next(rs).server == "m2"
        two = group.members([0, 1])
        for i in range(3):
            group.set_view(i, members=two)
        wait_until(lambda: set(ch.endpoints) == {e0, e1}, 5, "discovery removes m2")
        with pytest.raises(grpc.RpcError) as err:
            for _ in rs:
                pass
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        assert f"member {e2} left the members in use" in (err.value.details() or "")
        # m2 comes back: a fresh sub-channel, calls reach it again
        group.reset()
        wait_until(lambda: set(ch.endpoints) == {e0, e1, e2}, 5, "discovery re-adds m2")
        wait_until(_all_serving(ch), 5, "all SERVING again")
        assert "m2" in {stub.Unary(Req(message="x"), timeout=5).server for _ in range(9)}


def test_discovery_aio(group: MemberGroup) -> None:
    e0, e1, e2 = group.endpoints
    config = {**FAST, "membership": {"provider": "eagle", "discover": True}}

    async def main() -> None:
        async with eagle.aio.insecure_channel([e1], config=config) as ch:
            deadline = time.monotonic() + 5
            while set(ch.endpoints) != {e0, e1, e2} or not _all_serving(ch)():
                assert time.monotonic() < deadline, ch.status()
                await asyncio.sleep(0.02)
            stub = echo_pb2_grpc.EchoStub(ch)
            servers = {(await stub.Unary(Req(message="x"), timeout=5)).server for _ in range(9)}
            assert servers == {"m0", "m1", "m2"}

    asyncio.run(main())


# ---------------------------------------------------------------- update_endpoints
def test_update_endpoints_leaves_calls_on_staying_members_alone(group: MemberGroup) -> None:
    e0, e1, e2 = group.endpoints
    config = {**FAST, "policy": "pick_leader"}
    with eagle.insecure_channel([e0, e1], config=config) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        wait_until(lambda: ch.balancer.leader == e0, 5, "leader m0 known")
        stream = stub.ServerStream(Req(message="s", interval_ms=20))
        assert next(stream).server == "m0"
        slow = stub.Unary.future(Req(message="slow", sleep_ms=400), timeout=5)
        time.sleep(0.05)
        ch.update_endpoints([e0, e2])
        assert ch.endpoints == (e0, e2)
        assert slow.result().server == "m0"  # in flight on m0: undisturbed
        assert [next(stream).server for _ in range(5)] == ["m0"] * 5  # still open
        assert stream.is_active()
        wait_until(_all_serving(ch, 2), 5, "m2 probed")
        stream.cancel()
        with pytest.raises(ValueError, match="duplicate"):
            ch.update_endpoints([e0, e0])


def test_update_endpoints_aio(group: MemberGroup) -> None:
    e0, e1, e2 = group.endpoints
    config = {**FAST, "policy": "pick_leader"}

    async def main() -> None:
        async with eagle.aio.insecure_channel([e0, e1], config=config) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)
            deadline = time.monotonic() + 5
            while ch.balancer.leader != e0:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            stream = stub.ServerStream(Req(message="s", interval_ms=20))
            assert (await stream.read()).server == "m0"
            slow = stub.Unary(Req(message="slow", sleep_ms=400), timeout=5)
            await asyncio.sleep(0.05)
            await ch.update_endpoints([e2, e0])
            assert ch.endpoints == (e2, e0)
            assert (await slow).server == "m0"
            for _ in range(5):
                assert (await stream.read()).server == "m0"
            stream.cancel()

    asyncio.run(main())


# ------------------------------------------------------------------ require_leader
def test_require_leader_adds_hasleader_metadata(group: MemberGroup) -> None:
    # provider etcd over non-etcd members: no views (Status is UNIMPLEMENTED), health rules
    config = {
        "membership": {"etcd": {"require_leader": True}},
        "health": {"interval": 0.1, "timeout": 0.3, "no_traffic_interval": None},
    }
    with eagle.insecure_channel(group.endpoints, config=config) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        assert stub.Unary(Req(message="meta:hasleader"), timeout=5).message == "true"
        _, call = stub.Unary.with_call(
            Req(message="meta:x-user"), timeout=5, metadata=(("x-user", "u"),)
        )
        assert dict(call.trailing_metadata())["echo-x-user"] == "u"
        assert stub.Unary.future(Req(message="meta:hasleader")).result().message == "true"
        wait_until(_all_serving(ch), 5, "members SERVING on health alone")

    async def main() -> None:
        async with eagle.aio.insecure_channel(group.endpoints, config=config) as ach:
            astub = echo_pb2_grpc.EchoStub(ach)
            resp = await astub.Unary(Req(message="meta:hasleader"), timeout=5)
            assert resp.message == "true"

    asyncio.run(main())


# ------------------------------------------------------------------- server side
def test_watch_view_and_health_on_a_sync_server(group: MemberGroup) -> None:
    with grpc.insecure_channel(group.endpoints[0]) as plain:
        mstub = membership_pb2_grpc.MembershipStub(plain)
        watch = mstub.WatchView(membership_pb2.WatchViewRequest(), timeout=10)
        first = next(watch)
        assert (first.member_id, first.leader_id, first.term) == ("m0", "m0", 1)
        assert [m.id for m in first.members] == ["m0", "m1", "m2"]
        group.set_view(0, term=7)
        assert next(watch).term == 7
        watch.cancel()
        view = mstub.GetView(membership_pb2.GetViewRequest(), timeout=5)
        assert view.term == 7
        hstub = health_pb2_grpc.HealthStub(plain)
        check = hstub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert check.status == health_pb2.HealthCheckResponse.SERVING


def test_aio_server_publishes_views_eagle_judges() -> None:
    async def main() -> None:
        pub = MembershipPublisher("solo", "c9", leader_id="solo", term=2)
        server = grpc.aio.server(options=server_options())
        pub.add_to_aio_server(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ep = f"127.0.0.1:{port}"
        try:
            async with grpc.aio.insecure_channel(ep) as plain:
                mstub = membership_pb2_grpc.MembershipStub(plain)
                watch = mstub.WatchView(membership_pb2.WatchViewRequest(), timeout=10)
                assert (await watch.read()).leader_id == "solo"
                # a change from another thread reaches the stream
                threading.Thread(target=pub.set_view, kwargs={"term": 3}).start()
                assert (await watch.read()).term == 3
                watch.cancel()
                hstub = health_pb2_grpc.HealthStub(plain)
                pub.set_serving(False)
                await asyncio.sleep(0.05)
                resp = await hstub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
                pub.set_serving(True)
            async with eagle.aio.insecure_channel([ep], config=FAST) as ch:
                deadline = time.monotonic() + 5
                while _state(ch, ep) is not eagle.State.SERVING:
                    assert time.monotonic() < deadline, ch.status()
                    await asyncio.sleep(0.02)
                pub.set_view(leader_id="")
                while _state(ch, ep) is not eagle.State.PARTITIONED:
                    assert time.monotonic() < deadline, ch.status()
                    await asyncio.sleep(0.02)
        finally:
            pub.close()
            await server.stop(None)

    asyncio.run(main())
