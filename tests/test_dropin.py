"""eagle channels are drop-in grpc channels: stubs, all call kinds, metadata, errors."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from _support import FAST, wait_until
from grpc_health.v1 import health_pb2, health_pb2_grpc

import eagle
import eagle.aio
from eagle.testing.cluster import LocalCluster
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc


def req(message: str = "hi", **kw: Any) -> echo_pb2.EchoRequest:
    return echo_pb2.EchoRequest(message=message, **kw)


def reqs(*messages: str) -> Iterator[echo_pb2.EchoRequest]:
    return iter([req(m) for m in messages])


class _Tag(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self.seen: list[str] = []

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.seen.append(details.method)
        meta = [*list(details.metadata or []), ("x-tag", "intercepted")]
        return continuation(_Details(details, meta), request)


class _Details(grpc.ClientCallDetails):  # type: ignore[misc]
    def __init__(self, base: Any, metadata: Any) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = base.wait_for_ready
        self.compression = base.compression


def test_sync_stubs_all_call_kinds(shared_cluster: LocalCluster) -> None:
    with eagle.insecure_channel(shared_cluster.endpoints, config=FAST) as ch:
        assert isinstance(ch, grpc.Channel)
        stub = echo_pb2_grpc.EchoStub(ch)
        servers = {stub.Unary(req(), timeout=5).server for _ in range(9)}
        assert servers == {"m0", "m1", "m2"}  # spread over every member
        resp, call = stub.Unary.with_call(req("w"), timeout=5)
        assert resp.message == "w" and call.code() is grpc.StatusCode.OK
        fut = stub.Unary.future(req("f"), timeout=5)
        assert fut.result().message == "f" and fut.code() is grpc.StatusCode.OK
        assert isinstance(fut, grpc.Future) and isinstance(fut, grpc.Call)
        stream = stub.ServerStream(req(count=3), timeout=5)
        assert isinstance(stream, grpc.Call)
        assert [m.seq for m in stream] == [0, 1, 2]
        assert stub.ClientStream(reqs("a", "b"), timeout=5).message == "ab"
        cs_resp, cs_call = stub.ClientStream.with_call(reqs("c"), timeout=5)
        assert cs_resp.message == "c" and cs_call.code() is grpc.StatusCode.OK
        assert stub.ClientStream.future(reqs("d", "e"), timeout=5).result().message == "de"
        assert [m.message for m in stub.Bidi(reqs("x", "y"), timeout=5)] == ["x", "y"]
        health = health_pb2_grpc.HealthStub(ch)
        got = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert got.status == health_pb2.HealthCheckResponse.SERVING


def test_sync_passes_metadata_timeouts_compression_and_credentials(
    shared_cluster: LocalCluster,
) -> None:
    with eagle.insecure_channel(shared_cluster.endpoints, config=FAST) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        resp, call = stub.Unary.with_call(
            req("meta:x-user"),
            timeout=5,
            metadata=(("x-user", "alice"),),
            compression=grpc.Compression.Gzip,
            wait_for_ready=True,
        )
        assert resp.message == "alice"
        assert ("echo-x-user", "alice") in tuple(call.trailing_metadata())
        with pytest.raises(grpc.RpcError) as err:
            stub.Unary(req(sleep_ms=2000), timeout=0.2)
        assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        # call credentials need a secure channel in grpcio; local_channel_credentials
        # do not allow them on an insecure one, so pass them and expect grpcio's own error
        creds = grpc.access_token_call_credentials("token")
        with pytest.raises(grpc.RpcError) as cred_err:
            stub.Unary(req(), timeout=5, credentials=creds)
        assert isinstance(cred_err.value, grpc.Call)


def test_sync_errors_are_the_servers_own(shared_cluster: LocalCluster) -> None:
    with eagle.insecure_channel(shared_cluster.endpoints, config=FAST) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.Unary(req(fail_code=grpc.StatusCode.NOT_FOUND.value[0]), timeout=5)
        assert isinstance(err.value, grpc.Call)
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        assert err.value.details() == "injected failure NOT_FOUND"
        fut = stub.Unary.future(req(fail_code=grpc.StatusCode.ALREADY_EXISTS.value[0]), timeout=5)
        exc = fut.exception()
        assert isinstance(exc, grpc.RpcError) and exc.code() is grpc.StatusCode.ALREADY_EXISTS
        stream = stub.ServerStream(req(count=1, fail_code=grpc.StatusCode.ABORTED.value[0]))
        with pytest.raises(grpc.RpcError) as serr:
            list(stream)
        assert serr.value.code() is grpc.StatusCode.ABORTED


def test_intercept_channel_on_top(shared_cluster: LocalCluster) -> None:
    with eagle.insecure_channel(shared_cluster.endpoints, config=FAST) as ch:
        tag = _Tag()
        stub = echo_pb2_grpc.EchoStub(grpc.intercept_channel(ch, tag))
        assert stub.Unary(req("meta:x-tag"), timeout=5).message == "intercepted"
        assert tag.seen == ["/eagle.testing.v1.Echo/Unary"]


def test_multicallables_are_cached_per_method_and_member(shared_cluster: LocalCluster) -> None:
    with eagle.insecure_channel(shared_cluster.endpoints, config=FAST) as ch:
        stub1 = echo_pb2_grpc.EchoStub(ch)
        stub2 = echo_pb2_grpc.EchoStub(ch)
        for _ in range(6):
            stub1.Unary(req(), timeout=5)
            stub2.Unary(req(), timeout=5)
        for sub in ch._subs.values():
            unary_keys = [k for k in sub._cache if k[1] == "/eagle.testing.v1.Echo/Unary"]
            assert len(unary_keys) == 1
        assert len(ch._subs) == 3


def test_future_cancel(shared_cluster: LocalCluster) -> None:
    with eagle.insecure_channel(shared_cluster.endpoints, config=FAST) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        fut = stub.Unary.future(req(sleep_ms=3000), timeout=10)
        assert fut.cancel()
        assert fut.cancelled() and fut.done()
        with pytest.raises(grpc.FutureCancelledError):
            fut.result()
        done = threading.Event()
        fut2 = stub.Unary.future(req(), timeout=5)
        fut2.add_done_callback(lambda f: done.set())
        assert done.wait(5) and fut2.result().message == "hi"


def test_status_and_on_change(shared_cluster: LocalCluster) -> None:
    with eagle.insecure_channel(shared_cluster.endpoints, config=FAST) as ch:
        wait_until(lambda: all(s.serving for s in ch.status().values()), 5, "all SERVING")
        snap = ch.status()
        assert list(snap) == shared_cluster.endpoints
        for st in snap.values():
            assert st.state is eagle.State.SERVING
            assert st.last_probe is not None and st.last_latency is not None
            assert st.consecutive_failures == 0 and st.last_error is None


async def _agen(*messages: str) -> AsyncIterator[echo_pb2.EchoRequest]:
    for m in messages:
        yield req(m)


def test_aio_stubs_all_call_kinds(shared_cluster: LocalCluster) -> None:
    async def main() -> None:
        async with eagle.aio.insecure_channel(shared_cluster.endpoints, config=FAST) as ch:
            assert isinstance(ch, grpc.aio.Channel)
            stub = echo_pb2_grpc.EchoStub(ch)
            servers = {(await stub.Unary(req(), timeout=5)).server for _ in range(9)}
            assert servers == {"m0", "m1", "m2"}
            call = stub.Unary(req("meta:x-user"), timeout=5, metadata=(("x-user", "bob"),))
            assert (await call).message == "bob"
            assert await call.code() is grpc.StatusCode.OK
            assert ("echo-x-user", "bob") in tuple(await call.trailing_metadata())
            assert [m.seq async for m in stub.ServerStream(req(count=3), timeout=5)] == [0, 1, 2]
            assert (await stub.ClientStream(_agen("a", "b"), timeout=5)).message == "ab"
            assert [m.message async for m in stub.Bidi(_agen("x", "y"), timeout=5)] == ["x", "y"]
            bidi = stub.Bidi(timeout=5)
            await bidi.write(req("rw"))
            assert (await bidi.read()).message == "rw"
            await bidi.done_writing()
            assert await bidi.read() is grpc.aio.EOF
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Unary(req(fail_code=grpc.StatusCode.NOT_FOUND.value[0]), timeout=5)
            assert err.value.code() is grpc.StatusCode.NOT_FOUND
            assert err.value.details() == "injected failure NOT_FOUND"
            with pytest.raises(grpc.aio.AioRpcError) as slow:
                await stub.Unary(req(sleep_ms=2000), timeout=0.2)
            assert slow.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            pending = stub.Unary(req(sleep_ms=3000), timeout=10)
            await asyncio.sleep(0.05)
            assert pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            health = health_pb2_grpc.HealthStub(ch)
            got = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert got.status == health_pb2.HealthCheckResponse.SERVING
            await ch.channel_ready()
            assert ch.get_state() is grpc.ChannelConnectivity.READY

    asyncio.run(main())


def test_aio_channel_created_outside_a_loop(shared_cluster: LocalCluster) -> None:
    ch = eagle.aio.insecure_channel(shared_cluster.endpoints, config=FAST)

    async def main() -> str:
        stub = echo_pb2_grpc.EchoStub(ch)
        try:
            return str((await stub.Unary(req("late"), timeout=5)).message)
        finally:
            await ch.close()

    assert asyncio.run(main()) == "late"
