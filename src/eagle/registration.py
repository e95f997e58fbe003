"""Registering a Python server in etcd's gRPC naming registry (exported by
:mod:`eagle.server`).

:class:`EtcdRegistration` writes ``<target>/<address>`` with the value etcd's endpoints
manager writes (``{"Op":0,"Addr":"<address>"}``, plus ``"Metadata"`` when given;
``go.etcd.io/etcd/client/v3/naming/endpoints``), on a lease with a TTL that it keeps
alive (``LeaseKeepAlive`` every third of the TTL). If the lease is lost (the keepalive
answers TTL 0: it expired while etcd was unreachable, or someone revoked it), it grants
a new lease and writes the key again. :meth:`~EtcdRegistration.stop` deletes the key
and revokes the lease, so clients drop the server at once; a server that dies without
stopping disappears when its lease expires (after at most TTL + 1 s, etcd's bound).

The connection to etcd is an eagle channel with etcd membership on, so registration
keeps working while an etcd member is down or cut off. ::

    server.start()
    reg = EtcdRegistration(["10.0.0.1:2379", "10.0.0.2:2379"], "my-service",
                           "10.0.0.7:50051", ttl=10).start()
    ...
    reg.stop()
    server.stop(5)
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, cast

import grpc

from .core.discovery import naming_prefix, naming_value, parse_naming_value
from .endpoints import parse_endpoint, parse_endpoints
from .etcdwire.v1 import etcd_pb2
from .providers.etcd_naming import (
    DELETE_RANGE_METHOD,
    LEASE_GRANT_METHOD,
    LEASE_KEEPALIVE_METHOD,
    LEASE_REVOKE_METHOD,
    PUT_METHOD,
    etcd_channel_config,
)

__all__ = ["EtcdRegistration"]

log = logging.getLogger("eagle.server.registration")

#: back-off between failed attempts to (re-)register
_RETRY = 0.2


class EtcdRegistration:
    """Keeps ``address`` registered under ``target`` in etcd (see the module docstring).

    Args:
        etcd_endpoints: etcd client endpoints (``host:port``; a list or ``"a:1,b:2"``).
        target: the naming target clients use (``etcd:///<target>``).
        address: this server's address as clients should dial it (``host:port``).
        ttl: lease TTL in whole seconds (etcd's unit), >= 1.
        metadata: any JSON value stored as ``Metadata`` (shown in clients' ``status()``).
        key: the key to write (default ``<target>/<address>``; must start with
            ``<target>/``).
        timeout: deadline of each unary call to etcd.
    """

    def __init__(
        self,
        etcd_endpoints: str | Sequence[str],
        target: str,
        address: str,
        *,
        ttl: int = 10,
        metadata: Any = None,
        key: str | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.endpoints = tuple(e.raw for e in parse_endpoints(etcd_endpoints))
        prefix = naming_prefix(target)
        try:
            parse_endpoint(address)
        except ValueError as exc:
            raise ValueError(f"address: {exc}") from None
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
            raise ValueError(f"ttl: must be a whole number of seconds >= 1, got {ttl!r}")
        if not timeout > 0:
            raise ValueError(f"timeout: must be > 0, got {timeout!r}")
        self.target = target.rstrip("/")
        self.address = address
        self.ttl = ttl
        self.timeout = timeout
        self.key = (key if key is not None else prefix.decode() + address).encode()
        if not self.key.startswith(prefix) or self.key == prefix:
            raise ValueError(f"key: must start with {prefix.decode()!r} and name an entry")
        self.value = naming_value(address, metadata)
        parse_naming_value(self.value)  # what clients will read: must parse
        self.lease_id = 0
        #: how many times the key was written (1 after start; more after lost leases)
        self.registrations = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._call: Any = None
        self._channel: Any = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> EtcdRegistration:
        """Register now (raises ``grpc.RpcError`` when etcd cannot be reached within
        the timeout) and keep the lease alive in a daemon thread. Returns self."""
        from ._sync.channel import Channel

        if self._channel is not None:
            return self
        self._channel = Channel(list(self.endpoints), config=etcd_channel_config())
        try:
            self._register()
        except BaseException:
            self._channel.close()
            self._channel = None
            raise
        self._thread = threading.Thread(
            target=self._keepalive_loop, name="eagle-etcd-registration", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the keepalive, delete the key and revoke the lease. Idempotent; errors
        are logged (the lease then expires by itself)."""
        if self._stop.is_set():
            return
        self._stop.set()
        with self._lock:
            call = self._call
        if call is not None:
            with contextlib.suppress(Exception):
                call.cancel()
        if self._thread is not None:
            self._thread.join(self.timeout + 1.0)
        ch = self._channel
        if ch is None:
            return
        try:
            self._unary(DELETE_RANGE_METHOD, etcd_pb2.DeleteRangeRequest(key=self.key))
            if self.lease_id:
                self._unary(LEASE_REVOKE_METHOD, etcd_pb2.LeaseRevokeRequest(ID=self.lease_id))
        except grpc.RpcError as exc:
            log.warning("etcd registration %s: could not deregister: %s", self.key, exc)
        finally:
            ch.close()
            self._channel = None

    def __enter__(self) -> EtcdRegistration:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------- calls
    _TYPES: dict[str, tuple[Any, Any]] = {
        PUT_METHOD: (etcd_pb2.PutRequest, etcd_pb2.PutResponse),
        DELETE_RANGE_METHOD: (etcd_pb2.DeleteRangeRequest, etcd_pb2.DeleteRangeResponse),
        LEASE_GRANT_METHOD: (etcd_pb2.LeaseGrantRequest, etcd_pb2.LeaseGrantResponse),
        LEASE_REVOKE_METHOD: (etcd_pb2.LeaseRevokeRequest, etcd_pb2.LeaseRevokeResponse),
    }

    def _unary(self, method: str, request: Any) -> Any:
        req_t, resp_t = self._TYPES[method]
        mc = self._channel.unary_unary(
            method,
            request_serializer=req_t.SerializeToString,
            response_deserializer=resp_t.FromString,
        )
        return mc(request, timeout=self.timeout)

    def _register(self) -> None:
        grant = cast(
            etcd_pb2.LeaseGrantResponse,
            self._unary(LEASE_GRANT_METHOD, etcd_pb2.LeaseGrantRequest(TTL=self.ttl)),
        )
        if grant.error:
            raise RuntimeError(f"etcd refused a lease: {grant.error}")
        self._unary(PUT_METHOD, etcd_pb2.PutRequest(key=self.key, value=self.value, lease=grant.ID))
        self.lease_id = int(grant.ID)
        self.registrations += 1
        log.info(
            "registered %s in etcd (lease %x, ttl %d s)", self.key.decode(), grant.ID, self.ttl
        )

    # --------------------------------------------------------------- keepalive
    def _keepalive_loop(self) -> None:
        while not self._stop.is_set():
            try:
                lost = self._keepalive_stream()
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    return
                log.info("etcd registration %s: keepalive stream failed: %s", self.key, exc)
                lost = False
            if self._stop.is_set():
                return
            if lost:
                log.warning("etcd registration %s: lease lost; registering again", self.key)
                while not self._stop.is_set():
                    try:
                        self._register()
                        break
                    except (grpc.RpcError, RuntimeError) as exc:
                        log.info("etcd registration %s: register failed: %s", self.key, exc)
                        self._stop.wait(_RETRY)
            else:
                self._stop.wait(_RETRY)

    def _keepalive_stream(self) -> bool:
        """Keep the lease alive over one LeaseKeepAlive stream; True when etcd says the
        lease is gone (TTL 0), False when the stream ended otherwise."""
        lease = self.lease_id
        interval = max(0.1, self.ttl / 3.0)
        stop = self._stop
        ended = threading.Event()

        def requests() -> Iterator[etcd_pb2.LeaseKeepAliveRequest]:
            while not stop.is_set() and not ended.is_set():
                yield etcd_pb2.LeaseKeepAliveRequest(ID=lease)
                if stop.wait(interval) or ended.is_set():
                    return

        multi = self._channel.stream_stream(
            LEASE_KEEPALIVE_METHOD,
            request_serializer=etcd_pb2.LeaseKeepAliveRequest.SerializeToString,
            response_deserializer=etcd_pb2.LeaseKeepAliveResponse.FromString,
        )
        call = multi(requests())
        with self._lock:
            self._call = call
        try:
            last_ok = time.monotonic()
            for resp in cast(Iterator[etcd_pb2.LeaseKeepAliveResponse], call):
                if resp.TTL <= 0:
                    return True
                last_ok = time.monotonic()
            # the stream ended: the lease may have run out meanwhile
            return time.monotonic() - last_ok > self.ttl
        finally:
            ended.set()
            with self._lock:
                self._call = None
            call.cancel()
