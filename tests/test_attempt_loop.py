"""The attempt loop against real servers: grpc's connectivity state as a health signal,
request streams replayed to a new attempt from the A6 buffer (and committed when it
overflows), and what ``eagle.call_info`` tells on top of grpc's own objects."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from _support import wait_until

import eagle
import eagle.aio
from eagle.core.replay import ReplayBuffer
from eagle.testing.cluster import LocalCluster
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

CLIENT_STREAM = "/eagle.testing.v1.Echo/ClientStream"


class PreferFirst(eagle.Picker):
    """Place every call on the first candidate it may use, so a test knows where."""

    def pick(self, call: eagle.CallInfo) -> str | None:
        for ep in self.ctx.candidates:
            if ep not in call.exclude:
                return ep
        return self.ctx.candidates[0] if self.ctx.candidates else None


eagle.register_picker("test_prefer_first", PreferFirst)

#: probes too slow to notice anything during a test: what eagle sees comes from elsewhere
SLOW_PROBES = {"health": {"interval": 30.0, "timeout": 1.0}}


# ------------------------------------------------------------- connectivity signal
def test_sync_connection_loss_takes_a_member_out_at_once(cluster: LocalCluster) -> None:
    # probes are 30 s apart: what takes the member out is grpc seeing the connection
    # drop (IDLE -> the member is probed and reconnected at once, which is refused, or
    # TRANSIENT_FAILURE)
    with eagle.insecure_channel(cluster.endpoints, config=SLOW_PROBES) as ch:
        wait_until(lambda: all(s.serving for s in ch.status().values()), 10, "all SERVING")
        victim = cluster.endpoints[1]
        cluster.kill(1)
        took = wait_until(
            lambda: ch.status()[victim].state is eagle.State.UNREACHABLE, 5, "victim out"
        )
        st = ch.status()[victim]
        assert st.connection_down
        assert "refused" in (st.last_error or "").lower() or "connectivity" in (st.last_error or "")
        assert took < 3.0  # long before the next planned probe: grpc told eagle
        stub = echo_pb2_grpc.EchoStub(ch)
        servers = {stub.Unary(echo_pb2.EchoRequest(), timeout=5).server for _ in range(12)}
        assert servers == {"m0", "m2"}


def test_aio_connection_loss_takes_a_member_out_at_once(cluster: LocalCluster) -> None:
    async def main() -> float:
        async with eagle.aio.insecure_channel(cluster.endpoints, config=SLOW_PROBES) as ch:
            deadline = time.monotonic() + 10
            while not all(s.serving for s in ch.status().values()):
                assert time.monotonic() < deadline, "members never SERVING"
                await asyncio.sleep(0.02)
            victim = cluster.endpoints[2]
            cluster.kill(2)
            start = time.monotonic()
            while ch.status()[victim].state is not eagle.State.UNREACHABLE:
                assert time.monotonic() - start < 5, "victim never out"
                await asyncio.sleep(0.02)
            stub = echo_pb2_grpc.EchoStub(ch)
            servers = {
                (await stub.Unary(echo_pb2.EchoRequest(), timeout=5)).server for _ in range(12)
            }
            assert servers == {"m0", "m1"}
            return time.monotonic() - start

    assert asyncio.run(main()) < 3.0


def test_back_after_the_next_successful_probe(cluster: LocalCluster) -> None:
    config = {"health": {"interval": 0.3, "timeout": 0.5, "healthy_threshold": 3}}
    with eagle.insecure_channel(cluster.endpoints, config=config) as ch:
        wait_until(lambda: all(s.serving for s in ch.status().values()), 10, "all SERVING")
        victim = cluster.endpoints[0]
        cluster.kill(0)
        wait_until(lambda: ch.status()[victim].state is eagle.State.UNREACHABLE, 5, "out")
        cluster.restart(0)
        # a connection failure needs only one good probe, not healthy_threshold (3)
        wait_until(lambda: ch.status()[victim].serving, 15, "victim back")


# ---------------------------------------------------------------- request replay
def _messages(release: threading.Event) -> Iterator[echo_pb2.EchoRequest]:
    yield echo_pb2.EchoRequest(message="a")
    yield echo_pb2.EchoRequest(message="b")
    release.wait(10)
    yield echo_pb2.EchoRequest(message="c")


def _kill_once_placed(cluster: LocalCluster, release: threading.Event) -> None:
    """When member 0 has the call (its counter moved), kill it, then let the request
    iterator go on."""
    deadline = time.monotonic() + 10
    while cluster.stats(0).calls < 1:
        assert time.monotonic() < deadline, "the call never reached member 0"
        time.sleep(0.01)
    cluster.kill(0)
    time.sleep(0.2)  # the reset reaches the client while the iterator still waits
    release.set()


def _replay_config(idempotent: bool, buffer_size: int = 256 * 1024) -> dict[str, object]:
    retry: dict[str, object] = {"buffer_size": buffer_size}
    if idempotent:
        retry["idempotent_methods"] = [CLIENT_STREAM]
    return {**SLOW_PROBES, "policy": "test_prefer_first", "retry": retry}


@pytest.mark.parametrize("idempotent", [True, False])
def test_sync_client_stream_is_replayed_to_another_member(
    cluster: LocalCluster, idempotent: bool
) -> None:
    with eagle.insecure_channel(cluster.endpoints, config=_replay_config(idempotent)) as ch:
        wait_until(lambda: all(s.serving for s in ch.status().values()), 10, "all SERVING")
        for i in range(3):
            cluster.reset(i)
        release = threading.Event()
        killer = threading.Thread(target=_kill_once_placed, args=(cluster, release))
        killer.start()
        stub = echo_pb2_grpc.EchoStub(ch)
        try:
            resp, call = stub.ClientStream.with_call(_messages(release), timeout=10)
        except grpc.RpcError as err:
            assert not idempotent, err
            # grpc's own error, and eagle says why it was not re-sent
            assert err.code() is grpc.StatusCode.UNAVAILABLE
            info = eagle.call_info(err)
            assert info is not None and info.outcome_unknown
            assert info.give_up is eagle.GiveUp.NOT_IDEMPOTENT
        else:
            assert idempotent
            # the second member got every message, the two replayed ones included
            assert (resp.message, resp.seq, resp.server) == ("abc", 3, "m1")
            info = eagle.call_info(call)
            assert info is not None
            assert [a.endpoint for a in info.attempts] == cluster.endpoints[:2]
        finally:
            killer.join(15)


def test_sync_overflowed_request_buffer_commits_the_call(cluster: LocalCluster) -> None:
    config = _replay_config(True, buffer_size=1)
    with eagle.insecure_channel(cluster.endpoints, config=config) as ch:
        wait_until(lambda: all(s.serving for s in ch.status().values()), 10, "all SERVING")
        for i in range(3):
            cluster.reset(i)
        release = threading.Event()
        killer = threading.Thread(target=_kill_once_placed, args=(cluster, release))
        killer.start()
        fut = echo_pb2_grpc.EchoStub(ch).ClientStream.future(_messages(release), timeout=10)
        try:
            err = fut.exception(15)
        finally:
            killer.join(15)
        assert err is fut and fut.code() is grpc.StatusCode.UNAVAILABLE
        info = eagle.call_info(fut)
        assert info is not None and info.give_up is eagle.GiveUp.COMMITTED
        assert [a.endpoint for a in info.attempts] == [cluster.endpoints[0]]


@pytest.mark.parametrize("write_style", [False, True])
def test_aio_client_stream_is_replayed_to_another_member(
    cluster: LocalCluster, write_style: bool
) -> None:
    async def main() -> echo_pb2.EchoResponse:
        async with eagle.aio.insecure_channel(cluster.endpoints, config=_replay_config(True)) as ch:
            deadline = time.monotonic() + 10
            while not all(s.serving for s in ch.status().values()):
                assert time.monotonic() < deadline, "members never SERVING"
                await asyncio.sleep(0.02)
            for i in range(3):
                cluster.reset(i)
            release = threading.Event()
            killer = threading.Thread(target=_kill_once_placed, args=(cluster, release))
            killer.start()
            stub = echo_pb2_grpc.EchoStub(ch)
            try:
                if write_style:
                    call = stub.ClientStream(timeout=10)
                    await call.write(echo_pb2.EchoRequest(message="a"))
                    await call.write(echo_pb2.EchoRequest(message="b"))
                    await asyncio.to_thread(release.wait, 10)
                    await asyncio.sleep(0.3)  # the first attempt has failed by now
                    await call.write(echo_pb2.EchoRequest(message="c"))
                    await call.done_writing()
                    resp: echo_pb2.EchoResponse = await call
                else:

                    async def messages() -> object:
                        yield echo_pb2.EchoRequest(message="a")
                        yield echo_pb2.EchoRequest(message="b")
                        await asyncio.to_thread(release.wait, 10)
                        await asyncio.sleep(0.3)
                        yield echo_pb2.EchoRequest(message="c")

                    resp = await stub.ClientStream(messages(), timeout=10)
            finally:
                await asyncio.to_thread(killer.join, 15)
            info = eagle.call_info(call) if write_style else None
            if info is not None:
                assert [a.endpoint for a in info.attempts][-1] == cluster.endpoints[1]
            return resp

    resp = asyncio.run(main())
    assert (resp.message, resp.seq, resp.server) == ("abc", 3, "m1")


def test_replay_buffer_keeps_what_a_new_attempt_needs() -> None:
    buf = ReplayBuffer(limit=10)
    buf.new_attempt()
    buf.add("a", 4)
    buf.add("b", 4)
    assert not buf.overflowed and buf.taken == 2
    second = buf.new_attempt()
    assert second == 2 and buf.has(0) and buf.get(1) == "b"
    buf.add("c", 4)  # 12 bytes > 10: committed, and read messages can go
    assert buf.overflowed
    buf.consumed(1)
    assert buf.lost(0) and buf.lost(1) and buf.has(2) and buf.get(2) == "c"


# ---------------------------------------------------------------- call_info
def test_call_info_reports_the_attempts_beside_grpc_objects(shared_cluster: LocalCluster) -> None:
    with eagle.insecure_channel(shared_cluster.endpoints) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        _resp, call = stub.Unary.with_call(echo_pb2.EchoRequest(message="x"), timeout=5)
        info = eagle.call_info(call)
        assert info is not None and info.give_up is None and not info.outcome_unknown
        assert info.endpoint in shared_cluster.endpoints and info.reason == ""
        assert [a.code for a in info.attempts] == ["OK"]
        with pytest.raises(grpc.RpcError) as failed:
            stub.Unary(echo_pb2.EchoRequest(fail_code=3), timeout=5)  # INVALID_ARGUMENT
        info = eagle.call_info(failed.value)
        assert info is not None and info.give_up is eagle.GiveUp.NOT_RETRYABLE
        assert not info.outcome_unknown and not info.local
        assert info.attempts[0].delivery is eagle.Delivery.ANSWERED
    with eagle.insecure_channel("127.0.0.1:1", config={"health": {"interval": 0.1}}) as dead:
        wait_until(lambda: dead.status()["127.0.0.1:1"].state is eagle.State.UNREACHABLE, 5, "out")
        with pytest.raises(grpc.RpcError) as none:
            echo_pb2_grpc.EchoStub(dead).Unary(echo_pb2.EchoRequest(), timeout=5)
        assert isinstance(none.value, eagle.EagleRpcError)
        info = eagle.call_info(none.value)
        assert info is not None and info.local and info.give_up is eagle.GiveUp.NO_MEMBER
