"""A real gRPC test server for eagle's tests, demo and benchmarks.

Run it as a program::

    python -m eagle.testing.server --name m0 --port 0 [--host 127.0.0.1]
    python -m eagle.testing.server --name s0 --ports 256          # scale mode
    python -m eagle.testing.server --name u0 --unix /tmp/u0.sock
    python -m eagle.testing.server --name t0 --tls-cert s.pem --tls-key s.key   # TLS
    python -m eagle.testing.server ... --tls-client-ca ca.pem               # mutual TLS

It serves ``eagle.testing.v1.Echo``, grpc's interop ``grpc.testing.TestService``
(:mod:`eagle.testing.interop_service`) and ``grpc.health.v1.Health`` and, once every
listener is bound, prints exactly one line to stdout, ``READY <port>[,<port>...]``
(or ``READY unix:/path``), then serves until SIGTERM or SIGINT.

Faults are driven from outside: signals (SIGKILL, SIGSTOP/SIGCONT) by the
harness in :mod:`eagle.testing.cluster`, and the ``Control`` RPC for drain
(health NOT_SERVING), injected delay ("slow"), counters and stats. The injected
delay applies to Echo data calls only; health checks and ``Control`` stay fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from types import FrameType
from typing import Any, Final

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from eagle.testing import interop_service
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

__all__ = [
    "ECHO_SERVICE",
    "SERVER_OPTIONS",
    "EchoService",
    "ServerState",
    "build_server",
    "main",
]

#: Full name of the Echo service; its health status follows drain/undrain.
ECHO_SERVICE: Final = "eagle.testing.v1.Echo"

#: Server channel arguments. Clients may ping as often as every 100 ms, with or
#: without calls in flight, and are never sent GOAWAY ``too_many_pings``.
#: ``so_reuseport`` is off so two servers can never silently share one port.
SERVER_OPTIONS: Final[tuple[tuple[str, int], ...]] = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 100),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.so_reuseport", 0),
)

_DEFAULT_STREAM_INTERVAL_MS: Final = 100
_STATUS_BY_VALUE: Final[dict[int, grpc.StatusCode]] = {
    code.value[0]: code for code in grpc.StatusCode
}


class ServerState:
    """Mutable state shared by every listener of one server process."""

    def __init__(self, name: str, health_servicer: Any) -> None:
        self.name = name
        self.health: Any = health_servicer
        self._lock = threading.Lock()
        self._delay_ms = 0
        self._calls = 0
        self._applied_ids: list[str] = []

    def enter_call(self) -> float:
        """Count one data call and return the injected delay in seconds."""
        with self._lock:
            self._calls += 1
            return self._delay_ms / 1000.0

    def apply_write(self, request_id: str) -> int:
        """Apply one (non-idempotent) write and return the total applied."""
        with self._lock:
            self._applied_ids.append(request_id)
            return len(self._applied_ids)

    def set_delay(self, delay_ms: int) -> None:
        """Set the delay added to every Echo data call."""
        with self._lock:
            self._delay_ms = delay_ms

    def reset(self) -> None:
        """Clear the call and write counters."""
        with self._lock:
            self._calls = 0
            self._applied_ids.clear()

    def set_serving(self, serving: bool) -> None:
        """Set the health status of the whole server and of the Echo service."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in (health.OVERALL_HEALTH, ECHO_SERVICE):
            self.health.set(service, status)

    def stats(self) -> echo_pb2.ControlResponse:
        """Return a snapshot of the counters."""
        with self._lock:
            return echo_pb2.ControlResponse(
                server=self.name,
                calls=self._calls,
                writes=len(self._applied_ids),
                applied_ids=list(self._applied_ids),
            )


class _Call:
    """Per-RPC helper: a sleep that ends early when the RPC is cancelled."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context
        self._done = threading.Event()
        if not context.add_callback(self._done.set):
            self._done.set()

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return False if the RPC ended meanwhile."""
        if seconds > 0:
            self._done.wait(seconds)
        return self.active()

    def active(self) -> bool:
        """Whether the RPC is still in flight."""
        return not self._done.is_set() and self._context.is_active()


def _fail(context: grpc.ServicerContext, fail_code: int) -> None:
    """Abort the RPC with ``fail_code`` unless it is 0 (OK)."""
    if fail_code == 0:
        return
    code = _STATUS_BY_VALUE.get(fail_code, grpc.StatusCode.UNKNOWN)
    if code is grpc.StatusCode.OK:
        return
    context.abort(code, f"injected failure {code.name}")


class EchoService(echo_pb2_grpc.EchoServicer):
    """The ``eagle.testing.v1.Echo`` servicer."""

    def __init__(self, state: ServerState) -> None:
        self._state = state

    def _begin(self, context: grpc.ServicerContext) -> _Call:
        call = _Call(context)
        call.sleep(self._state.enter_call())
        return call

    def Unary(
        self, request: echo_pb2.EchoRequest, context: grpc.ServicerContext
    ) -> echo_pb2.EchoResponse:
        """Echo the message after ``sleep_ms``; fail with ``fail_code`` if set."""
        call = self._begin(context)
        call.sleep(request.sleep_ms / 1000.0)
        message = request.message
        if message.startswith("meta:"):
            # reflect the value of one request metadata key, and echo it as trailer
            wanted = message[len("meta:") :]
            found = [str(v) for k, v in context.invocation_metadata() if k == wanted]
            message = ",".join(found)
            context.set_trailing_metadata((("echo-" + wanted, message),))
        elif message.startswith("pushback:"):
            context.set_trailing_metadata(
                (("grpc-retry-pushback-ms", message[len("pushback:") :]),)
            )
        _fail(context, request.fail_code)
        return echo_pb2.EchoResponse(message=message, server=self._state.name, seq=0)

    def ServerStream(
        self, request: echo_pb2.EchoRequest, context: grpc.ServicerContext
    ) -> Iterator[echo_pb2.EchoResponse]:
        """Send ``count`` responses, ``interval_ms`` apart (count 0: until cancelled).

        An endless stream uses 100 ms when ``interval_ms`` is 0. With ``fail_code``
        set the stream ends with that status after ``count`` responses.
        """
        call = self._begin(context)
        if not call.sleep(request.sleep_ms / 1000.0):
            return
        endless = request.count == 0 and request.fail_code == 0
        interval_ms = request.interval_ms
        if endless and interval_ms == 0:
            interval_ms = _DEFAULT_STREAM_INTERVAL_MS
        seq = 0
        while endless or seq < request.count:
            if seq > 0 and not call.sleep(interval_ms / 1000.0):
                return
            if not call.active():
                return
            yield echo_pb2.EchoResponse(message=request.message, server=self._state.name, seq=seq)
            seq += 1
        _fail(context, request.fail_code)

    def ClientStream(
        self, request_iterator: Iterator[echo_pb2.EchoRequest], context: grpc.ServicerContext
    ) -> echo_pb2.EchoResponse:
        """Concatenate every message; ``seq`` is the number of messages."""
        call = self._begin(context)
        parts: list[str] = []
        for request in request_iterator:
            call.sleep(request.sleep_ms / 1000.0)
            _fail(context, request.fail_code)
            parts.append(request.message)
        return echo_pb2.EchoResponse(
            message="".join(parts), server=self._state.name, seq=len(parts)
        )

    def Bidi(
        self, request_iterator: Iterator[echo_pb2.EchoRequest], context: grpc.ServicerContext
    ) -> Iterator[echo_pb2.EchoResponse]:
        """Echo each message as it arrives, numbering them from 0."""
        call = self._begin(context)
        for seq, request in enumerate(request_iterator):
            if not call.sleep(request.sleep_ms / 1000.0):
                return
            _fail(context, request.fail_code)
            yield echo_pb2.EchoResponse(message=request.message, server=self._state.name, seq=seq)

    def Write(
        self, request: echo_pb2.WriteRequest, context: grpc.ServicerContext
    ) -> echo_pb2.WriteResponse:
        """Apply a non-idempotent write; return how many writes were applied."""
        self._begin(context)
        applied = self._state.apply_write(request.request_id)
        return echo_pb2.WriteResponse(server=self._state.name, applied=applied)

    def Control(
        self, request: echo_pb2.ControlRequest, context: grpc.ServicerContext
    ) -> echo_pb2.ControlResponse:
        """Drive faults: serving, not_serving, delay, reset, stats."""
        action = request.action
        if action == "serving":
            self._state.set_serving(True)
        elif action == "not_serving":
            self._state.set_serving(False)
        elif action == "delay":
            self._state.set_delay(request.delay_ms)
        elif action == "reset":
            self._state.reset()
        elif action != "stats":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown action {action!r}")
        return self._state.stats()


class BindError(RuntimeError):
    """A listener could not be bound."""


def build_server(
    name: str,
    addresses: Sequence[str],
    *,
    workers: int = 64,
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.Server, ServerState, list[int]]:
    """Build (not start) a server bound to ``addresses``.

    Returns the server, its shared state and the bound port of each address
    (for ``unix:`` addresses the value grpc returns, not a TCP port).
    Raises :class:`BindError` if any address cannot be bound. With
    ``credentials`` (``grpc.ssl_server_credentials``) every listener serves TLS.
    """
    pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"echo-{name}")
    server = grpc.server(pool, options=list(SERVER_OPTIONS))
    health_servicer = health.HealthServicer()
    state = ServerState(name, health_servicer)
    state.set_serving(True)
    echo_pb2_grpc.add_EchoServicer_to_server(EchoService(state), server)  # type: ignore[no-untyped-call]
    interop_service.add_to_server(server, server_id=name)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound: list[int] = []
    for address in addresses:
        try:
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            server.stop(None)
            pool.shutdown(wait=False)
            raise BindError(f"cannot bind {address}: {exc}") from exc
        if port == 0:
            server.stop(None)
            pool.shutdown(wait=False)
            raise BindError(f"cannot bind {address}")
        bound.append(port)
    return server, state, bound


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _raise_fd_limit() -> None:
    """Lift the soft open-files limit to the hard one (scale mode needs fds)."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _parse_ports(text: str) -> list[int]:
    try:
        ports = [int(p) for p in text.split(",") if p.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad port list {text!r}") from exc
    if not ports or any(not 0 <= p <= 65535 for p in ports):
        raise argparse.ArgumentTypeError(f"bad port list {text!r}")
    return ports


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m eagle.testing.server", description="eagle test gRPC server"
    )
    parser.add_argument("--name", default="m0", help="server name reported in responses")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument(
        "--port",
        type=_parse_ports,
        default=[0],
        help="port, or comma-separated ports, to bind (0 = any free port)",
    )
    parser.add_argument(
        "--ports", type=int, default=1, help="scale mode: bind this many free ports (with --port 0)"
    )
    parser.add_argument("--unix", default=None, help="listen on this unix socket path instead")
    parser.add_argument("--workers", type=int, default=64, help="server thread pool size")
    parser.add_argument(
        "--bind-timeout",
        type=float,
        default=0.0,
        help="keep retrying a busy fixed port for this many seconds",
    )
    parser.add_argument("--parent", type=int, default=0, help="exit when this parent pid goes away")
    parser.add_argument(
        "--tls-cert", default=None, help="serve TLS with this PEM certificate (chain) file"
    )
    parser.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    parser.add_argument(
        "--tls-client-ca",
        default=None,
        help="mutual TLS: require client certificates signed by this PEM CA file",
    )
    parser.add_argument(
        "--etcd-register",
        default=None,
        metavar="ENDPOINTS",
        help="register the first bound address in etcd's naming registry (etcd client "
        "endpoints, comma-separated) under --etcd-target, on a lease (eagle.server)",
    )
    parser.add_argument("--etcd-target", default="eagle-test", help="naming target")
    parser.add_argument("--etcd-ttl", type=int, default=2, help="lease TTL in seconds")
    return parser


def _server_credentials(
    cert: str | None, key: str | None, client_ca: str | None
) -> grpc.ServerCredentials | None:
    """TLS server credentials from PEM files, or None for plaintext."""
    if cert is None and key is None and client_ca is None:
        return None
    if cert is None or key is None:
        raise ValueError("--tls-cert and --tls-key must be given together")
    with open(cert, "rb") as f:
        cert_pem = f.read()
    with open(key, "rb") as f:
        key_pem = f.read()
    ca_pem = None
    if client_ca is not None:
        with open(client_ca, "rb") as f:
            ca_pem = f.read()
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=ca_pem is not None
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT (or until ``--parent`` exits)."""
    args = _parser().parse_args(argv)
    ports: list[int] = args.port
    if args.unix is not None:
        addresses = [f"unix:{args.unix}"]
    elif ports == [0]:
        if args.ports < 1:
            print("--ports must be >= 1", file=sys.stderr)
            return 2
        addresses = [f"{_format_host(args.host)}:0"] * args.ports
    else:
        addresses = [f"{_format_host(args.host)}:{p}" for p in ports]
    if len(addresses) > 200:
        _raise_fd_limit()
    try:
        credentials = _server_credentials(args.tls_cert, args.tls_key, args.tls_client_ca)
    except (OSError, ValueError) as exc:
        print(f"eagle.testing.server {args.name}: {exc}", file=sys.stderr, flush=True)
        return 2

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    deadline = time.monotonic() + max(0.0, args.bind_timeout)
    while True:
        try:
            server, state, bound = build_server(
                args.name, addresses, workers=args.workers, credentials=credentials
            )
            break
        except BindError as exc:
            if time.monotonic() >= deadline or stop.is_set():
                print(f"eagle.testing.server {args.name}: {exc}", file=sys.stderr, flush=True)
                return 3
            time.sleep(0.05)

    server.start()
    registration = None
    if args.etcd_register and args.unix is None:
        from eagle.registration import EtcdRegistration

        address = f"{_format_host(args.host)}:{bound[0]}"
        registration = EtcdRegistration(
            args.etcd_register, args.etcd_target, address, ttl=args.etcd_ttl
        ).start()
    ready = f"unix:{args.unix}" if args.unix is not None else ",".join(map(str, bound))
    print(f"READY {ready}", flush=True)

    while not stop.wait(0.25):
        if args.parent and os.getppid() != args.parent:
            break
    if registration is not None:
        registration.stop()
    state.health.enter_graceful_shutdown()
    server.stop(grace=0.5).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
