"""The ``etcd`` discovery provider: etcd's gRPC naming registry.

``eagle.insecure_channel("etcd:///my-service", config={"discovery": {"etcd":
{"endpoints": ["10.0.0.1:2379", ...]}}})`` (or ``etcd://10.0.0.1:2379,10.0.0.2:2379/my-service``)
reads the registrations that etcd's endpoints manager writes
(``go.etcd.io/etcd/client/v3/naming/endpoints``; ``etcdctl put my-service/10.0.0.7:50051
'{"Op":0,"Addr":"10.0.0.7:50051"}'``; :class:`eagle.server.EtcdRegistration` for Python
servers) and keeps the channel's member set equal to them:

1. a linearizable ``Range`` over ``<target>/`` (with the slash: the Go reader's prefix has
   none, so ``foo`` would also match ``foo_other/...``, etcd issue 15022), paged, all at
   one revision;
2. a ``Watch`` of the same range from that revision + 1: PUT makes a key present, DELETE
   removes it (:class:`~eagle.core.discovery.NamingTable`);
3. when the watch stream fails (the member it ran on died, froze or was cut off from its
   leader), the watch resumes from the last revision seen + 1, as etcd's own clientv3
   watcher does: etcd keeps every event since then, so none is lost; when etcd answers
   that the revision was compacted (or cancels the watch for any other reason), the
   provider lists again (step 1) and watches from there.

The connection to etcd is itself an eagle channel with etcd membership on (and
``hasleader: true`` on every call with ``discovery.etcd.require_leader``), so a killed,
frozen or partitioned etcd member is routed around: the Range retries on another member
and the watch is ended on a member that left rotation (eagle's stream watchdog) or lost
its leader (etcd itself), and resumes on a good one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, cast

from ..config import DiscoveryConfig
from ..core.discovery import DiscoveryTarget, NamingTable, Resolution
from ..endpoints import parse_endpoints
from ..etcdwire.v1 import etcd_pb2
from .discovery import (
    AioDiscoverySession,
    DiscoveryProvider,
    DiscoverySession,
    register_discovery_provider,
)

if TYPE_CHECKING:
    from .._sync.channel import Channel
    from ..aio.channel import Channel as AioChannel

__all__ = [
    "DELETE_RANGE_METHOD",
    "LEASE_GRANT_METHOD",
    "LEASE_KEEPALIVE_METHOD",
    "LEASE_REVOKE_METHOD",
    "PUT_METHOD",
    "RANGE_METHOD",
    "WATCH_METHOD",
    "EtcdNamingProvider",
    "etcd_channel_config",
]

log = logging.getLogger("eagle.discovery.etcd")

RANGE_METHOD = "/etcdserverpb.KV/Range"
PUT_METHOD = "/etcdserverpb.KV/Put"
DELETE_RANGE_METHOD = "/etcdserverpb.KV/DeleteRange"
WATCH_METHOD = "/etcdserverpb.Watch/Watch"
LEASE_GRANT_METHOD = "/etcdserverpb.Lease/LeaseGrant"
LEASE_REVOKE_METHOD = "/etcdserverpb.Lease/LeaseRevoke"
LEASE_KEEPALIVE_METHOD = "/etcdserverpb.Lease/LeaseKeepAlive"

#: keys per Range page
PAGE = 5000
#: back-off between failed attempts to list or watch (doubles up to the maximum)
RETRY_INITIAL = 0.05
RETRY_MAX = 1.0


def etcd_channel_config(
    *, require_leader: bool = True, probe_interval: float = 0.5
) -> dict[str, Any]:
    """The eagle config of a channel to etcd itself: etcd membership (cut-off members out
    of rotation, ``hasleader: true`` on calls), Range/Lease calls retried elsewhere."""
    return {
        "membership": {"provider": "etcd", "etcd": {"require_leader": require_leader}},
        "health": {"interval": probe_interval, "timeout": min(0.4, probe_interval * 10)},
        "retry": {
            "idempotent_methods": [
                RANGE_METHOD,
                LEASE_GRANT_METHOD,
                LEASE_REVOKE_METHOD,
                DELETE_RANGE_METHOD,
                PUT_METHOD,
            ]
        },
    }


class _RangePager:
    """Reads every key under a naming table's prefix in pages of :data:`PAGE`, all at the
    revision of the first page; both listing loops only send :meth:`request` until
    :meth:`feed` says the last page came."""

    def __init__(self, table: NamingTable) -> None:
        self._table = table
        self._start = table.prefix
        self._revision = 0
        self._kvs: list[tuple[bytes, bytes, int]] = []

    def request(self) -> etcd_pb2.RangeRequest:
        """The next page's request."""
        return etcd_pb2.RangeRequest(
            key=self._start,
            range_end=self._table.range_end,
            limit=PAGE,
            revision=self._revision,
        )

    def feed(self, resp: etcd_pb2.RangeResponse) -> bool:
        """Take one page; True when more follow. After the last one the table holds them."""
        if self._revision == 0:
            self._revision = int(resp.header.revision)
        self._kvs += [(bytes(kv.key), bytes(kv.value), int(kv.mod_revision)) for kv in resp.kvs]
        if resp.more and resp.kvs:
            self._start = bytes(resp.kvs[-1].key) + b"\x00"
            return True
        self._table.reset(self._kvs, self._revision)
        return False


def _watch_request(table: NamingTable) -> etcd_pb2.WatchRequest:
    return etcd_pb2.WatchRequest(
        create_request=etcd_pb2.WatchCreateRequest(
            key=table.prefix,
            range_end=table.range_end,
            start_revision=table.revision + 1,
            progress_notify=True,
        )
    )


def _events(resp: Any) -> list[tuple[bool, bytes, bytes, int]]:
    return [
        (
            ev.type == etcd_pb2.Event.PUT,
            bytes(ev.kv.key),
            bytes(ev.kv.value),
            int(ev.kv.mod_revision),
        )
        for ev in resp.events
    ]


class _Cancelled(Exception):
    """etcd cancelled the watch (compaction, or another reason): list again."""


def _error_text(err: BaseException) -> str:
    code = getattr(err, "code", None)
    details = getattr(err, "details", None)
    if callable(code) and callable(details):
        try:
            c = code()
            return f"{c.name if c is not None else 'UNKNOWN'}: {details() or ''}".rstrip(": ")
        except Exception:
            pass
    return repr(err)


class EtcdNamingProvider(DiscoveryProvider):
    """Members from etcd's gRPC naming registry (see the module docstring)."""

    name = "etcd"
    polling = False

    def __init__(self, config: DiscoveryConfig, target: DiscoveryTarget) -> None:
        super().__init__(config, target)
        cfg = config.etcd
        if target.authority:
            try:
                self.endpoints = tuple(e.raw for e in parse_endpoints(target.authority))
            except ValueError as exc:
                raise ValueError(f"target {target.raw!r}: etcd endpoints: {exc}") from None
        else:
            self.endpoints = cfg.endpoints
        if not self.endpoints:
            raise ValueError(
                f"discovery.etcd.endpoints: must name etcd's endpoints for target "
                f"{target.raw!r} (or write them in it: etcd://host:2379,host:2379/target)"
            )
        self.naming_target = target.name.rstrip("/")
        NamingTable(self.naming_target)  # ValueError for an empty target
        self.channel_config = etcd_channel_config(
            require_leader=cfg.require_leader, probe_interval=cfg.probe_interval
        )
        self._lock = threading.Lock()
        self._channel: Any = None
        self._call: Any = None
        self.lists = 0
        self.watches = 0

    def describe(self) -> str:
        """``<target>/`` at the etcd endpoints."""
        return f"{self.naming_target}/ @ {','.join(self.endpoints)}"

    def _note(self, session: Any, table: NamingTable, **extra: Any) -> None:
        session.note(
            revision=table.revision,
            keys=len(table.entries),
            skipped=table.skipped,
            lists=self.lists,
            watches=self.watches,
            **extra,
        )

    # ------------------------------------------------ what both loops do on errors
    def _cancelled(self, session: Any, table: NamingTable, exc: Exception) -> bool:
        """etcd cancelled the watch (compaction, ...): note it; returns ``listed`` (False:
        list again)."""
        log.info("etcd naming %s: %s; listing again", self.naming_target, exc)
        self._note(session, table, last_watch_error=str(exc))
        return False

    def _failed(
        self, session: Any, table: NamingTable, exc: Exception, listed: bool
    ) -> Resolution | None:
        """A list or watch call failed: note it; returns the failed resolution to offer
        when nothing was ever listed."""
        what = "watch" if listed else "list"
        text = _error_text(exc)
        log.info("etcd naming %s: %s failed: %s", self.naming_target, what, text)
        self._note(session, table, last_watch_error=f"{what}: {text}")
        if not listed and table.revision == 0:
            return Resolution.failed(f"etcd {what} failed: {text}")
        return None

    # ---------------------------------------------------------------------- sync
    def watch(self, session: DiscoverySession) -> None:
        """List, then watch, until the session stops (runs in the runner's thread)."""
        from .._sync.channel import Channel

        ch = Channel(list(self.endpoints), config=self.channel_config)
        with self._lock:
            self._channel = ch
        session.on_stop(self._cancel)
        table = NamingTable(self.naming_target)
        listed = False
        delay = RETRY_INITIAL
        try:
            while not session.stopped:
                try:
                    if not listed:
                        self._list(ch, table)
                        listed = True
                        self._note(session, table)
                        session.offer(table.resolution())
                    self._watch_once(ch, table, session)
                    delay = RETRY_INITIAL
                except _Cancelled as exc:
                    listed = self._cancelled(session, table, exc)
                except Exception as exc:  # a failed call, a closed channel, ...
                    if session.stopped:
                        break
                    failed = self._failed(session, table, exc, listed)
                    if failed is not None:
                        session.offer(failed)
                    if session.wait(delay):
                        break
                    delay = min(delay * 2, RETRY_MAX)
        finally:
            ch.close()

    def _cancel(self) -> None:
        with self._lock:
            call, ch = self._call, self._channel
        if call is not None:
            with contextlib.suppress(Exception):
                call.cancel()
        if ch is not None:
            with contextlib.suppress(Exception):
                ch.close()

    def _list(self, ch: Channel, table: NamingTable) -> None:
        rng = ch.unary_unary(
            RANGE_METHOD,
            request_serializer=etcd_pb2.RangeRequest.SerializeToString,
            response_deserializer=etcd_pb2.RangeResponse.FromString,
        )
        pager = _RangePager(table)
        while pager.feed(
            cast(
                etcd_pb2.RangeResponse,
                rng(pager.request(), timeout=self.config.etcd.timeout),
            )
        ):
            pass
        self.lists += 1

    def _watch_once(self, ch: Channel, table: NamingTable, session: DiscoverySession) -> None:
        done = threading.Event()
        first = _watch_request(table)

        def requests() -> Iterator[etcd_pb2.WatchRequest]:
            yield first
            done.wait()  # keep the send side open while the watch lives

        multi = ch.stream_stream(
            WATCH_METHOD,
            request_serializer=etcd_pb2.WatchRequest.SerializeToString,
            response_deserializer=etcd_pb2.WatchResponse.FromString,
        )
        call = multi(requests())
        with self._lock:
            self._call = call
        if session.stopped:
            call.cancel()
        self.watches += 1
        try:
            for resp in cast(Iterator[etcd_pb2.WatchResponse], call):
                if self._on_response(resp, table, session):
                    session.offer(table.resolution())
        finally:
            done.set()
            with self._lock:
                self._call = None
            call.cancel()

    def _on_response(self, resp: Any, table: NamingTable, session: Any) -> bool:
        """Fold one WatchResponse in; True when the member set may have changed."""
        if resp.canceled:
            if resp.compact_revision:
                raise _Cancelled(
                    f"watch from revision {table.revision + 1} compacted "
                    f"(compact revision {resp.compact_revision})"
                )
            raise _Cancelled(f"watch cancelled: {resp.cancel_reason or 'no reason'}")
        member = str(resp.header.member_id)
        if resp.created:
            self._note(session, table, watch_member_id=member)
            return False
        events = _events(resp)
        if not events:  # a progress notification: every event up to here was sent
            table.revision = max(table.revision, int(resp.header.revision))
            self._note(session, table, watch_member_id=member)
            return False
        table.apply(events)
        self._note(session, table, watch_member_id=member)
        return True

    def close(self) -> None:
        """Cancel the watch and close the channel to etcd."""
        self._cancel()

    # ------------------------------------------------------------------- asyncio
    async def watch_async(self, session: AioDiscoverySession) -> None:
        """List, then watch, until the session stops (runs in the runner's task)."""
        from ..aio.channel import Channel as AioChannel

        ch = AioChannel(list(self.endpoints), config=self.channel_config)
        self._channel = ch
        table = NamingTable(self.naming_target)
        listed = False
        delay = RETRY_INITIAL
        try:
            while not session.stopped:
                try:
                    if not listed:
                        await self._list_async(ch, table)
                        listed = True
                        self._note(session, table)
                        await session.offer(table.resolution())
                    await self._watch_once_async(ch, table, session)
                    delay = RETRY_INITIAL
                except _Cancelled as exc:
                    listed = self._cancelled(session, table, exc)
                except Exception as exc:  # a failed call, a closed channel, ...
                    if session.stopped:
                        break
                    failed = self._failed(session, table, exc, listed)
                    if failed is not None:
                        await session.offer(failed)
                    if await session.wait(delay):
                        break
                    delay = min(delay * 2, RETRY_MAX)
        finally:
            self._channel = None
            await ch.close()

    async def _list_async(self, ch: AioChannel, table: NamingTable) -> None:
        rng = ch.unary_unary(
            RANGE_METHOD,
            request_serializer=etcd_pb2.RangeRequest.SerializeToString,
            response_deserializer=etcd_pb2.RangeResponse.FromString,
        )
        pager = _RangePager(table)
        while pager.feed(await rng(pager.request(), timeout=self.config.etcd.timeout)):
            pass
        self.lists += 1

    async def _watch_once_async(
        self, ch: AioChannel, table: NamingTable, session: AioDiscoverySession
    ) -> None:
        done = asyncio.Event()
        first = _watch_request(table)

        async def requests() -> AsyncIterator[etcd_pb2.WatchRequest]:
            yield first
            await done.wait()

        multi = ch.stream_stream(
            WATCH_METHOD,
            request_serializer=etcd_pb2.WatchRequest.SerializeToString,
            response_deserializer=etcd_pb2.WatchResponse.FromString,
        )
        call = multi(requests())
        self.watches += 1
        try:
            async for resp in call:
                if self._on_response(resp, table, session):
                    await session.offer(table.resolution())
        finally:
            done.set()
            call.cancel()

    async def close_async(self) -> None:
        """Close the channel to etcd (the runner already cancelled the watch's task)."""
        ch = self._channel
        self._channel = None
        if ch is not None:
            with contextlib.suppress(Exception):
                await ch.close()


register_discovery_provider("etcd", EtcdNamingProvider)
