"""Bad answers from servers: the prober marks the member sensibly, logs one clear
warning, and never crashes, spins or grows without bound."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2

import eagle
from eagle import State

CONFIG = {
    "health": {
        "interval": 0.05,
        "timeout": 0.2,
        "unhealthy_threshold": 2,
        "no_traffic_interval": None,
    }
}
CHECK = "/grpc.health.v1.Health/Check"


def _server(check: Callable[[bytes, grpc.ServicerContext], bytes]) -> tuple[grpc.Server, int]:
    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {"Check": grpc.unary_unary_rpc_method_handler(check)},  # raw bytes in and out
    )
    server = grpc.server(futures.ThreadPoolExecutor(8), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[bytes, grpc.ServicerContext], bytes]], str]]:
    servers: list[grpc.Server] = []

    def start(check: Callable[[bytes, grpc.ServicerContext], bytes]) -> str:
        server, port = _server(check)
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for s in servers:
        s.stop(None)


def _watch(endpoint: str, seconds: float, caplog: pytest.LogCaptureFixture) -> eagle.EndpointStatus:
    caplog.set_level(logging.WARNING, logger="eagle")
    cpu0 = time.process_time()
    with eagle.insecure_channel(endpoint, config=CONFIG) as ch:
        time.sleep(seconds)
        status = ch.status()[endpoint]
        probes = ch.balancer.snapshot()[endpoint]
    cpu = time.process_time() - cpu0
    # at 20 probes/s the client must stay far from spinning a core
    assert cpu < 0.6 * seconds, f"prober used {cpu:.2f}s CPU in {seconds}s"
    assert probes.last_probe is not None
    return status


def _warnings(caplog: pytest.LogCaptureFixture, endpoint: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and endpoint in r.getMessage()
    ]


def test_unknown_serving_status_enum(serve, caplog) -> None:  # type: ignore[no-untyped-def]
    ep = serve(lambda req, ctx: b"\x08\x63")  # status = 99: no such enum value
    st = _watch(ep, 1.0, caplog)
    assert st.state is State.NOT_SERVING
    assert "unknown serving status 99" in (st.last_error or "")
    assert len(_warnings(caplog, ep)) == 1  # one clear warning, not one per probe


def test_server_that_never_answers(serve, caplog) -> None:  # type: ignore[no-untyped-def]
    release = threading.Event()

    def hang(req: bytes, ctx: grpc.ServicerContext) -> bytes:
        release.wait(5)
        return health_pb2.HealthCheckResponse(status=1).SerializeToString()

    ep = serve(hang)
    try:
        st = _watch(ep, 2.5, caplog)  # a first probe waits up to 1 s (it also connects)
    finally:
        release.set()
    assert st.state is State.UNREACHABLE
    assert "DEADLINE_EXCEEDED" in (st.last_error or "")
    assert len(_warnings(caplog, ep)) == 1


def test_garbage_answer(serve, caplog) -> None:  # type: ignore[no-untyped-def]
    ep = serve(lambda req, ctx: b"\xff\xff\xff\xff")
    st = _watch(ep, 1.0, caplog)
    assert st.state is State.UNREACHABLE
    assert st.last_error and "probe" in st.last_error
    assert len(_warnings(caplog, ep)) == 1


def test_huge_answer(serve, caplog) -> None:  # type: ignore[no-untyped-def]
    huge = b"\x08\x01" + b"\x7a\x80\x80\x80\x03" + b"x" * (6 << 20)  # field 15, 6 MiB
    ep = serve(lambda req, ctx: huge)
    st = _watch(ep, 1.5, caplog)
    assert st.state is State.UNREACHABLE
    assert "RESOURCE_EXHAUSTED" in (st.last_error or "")


def test_connection_closed_mid_probe(caplog: pytest.LogCaptureFixture) -> None:
    """A TCP server that accepts, reads a little and hangs up."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    lsock.settimeout(0.1)
    stop = threading.Event()

    def rude() -> None:
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except TimeoutError:
                continue
            conn.settimeout(0.5)
            with contextlib.suppress(OSError):
                conn.recv(64)
            conn.close()

    t = threading.Thread(target=rude)
    t.start()
    ep = f"127.0.0.1:{lsock.getsockname()[1]}"
    try:
        st = _watch(ep, 1.0, caplog)
    finally:
        stop.set()
        t.join(5)
        lsock.close()
    assert st.state is State.UNREACHABLE
    assert st.last_error and "UNAVAILABLE" in st.last_error
