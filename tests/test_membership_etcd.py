"""Membership-aware keepalive against a real 3-member etcd cluster (the issue's proof).

* An etcd Watch through eagle (membership ``etcd``, ``health.interval`` 0.3 s) rides on a
  follower; a plain client puts a key every 50 ms through the leader; the follower is cut
  off from its peers with iptables. eagle ends the watch with UNAVAILABLE and the
  resumable helper re-opens it on another member from the last seen revision + 1: the
  watcher gets every put exactly once. Linearizable reads through eagle stop going to the
  cut member once it is PARTITIONED and at most 1 % fail. After the heal the member
  returns to SERVING.
* A follower carrying a watch is frozen with SIGSTOP: the watch is ended within the
  prober's detection bound and resumed elsewhere, again without losing an event.

Needs root, etcd and iptables (CI has them); skipped with the reason otherwise.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from _etcd_history import assert_exactly_once
from _support import wait_until

import eagle
from eagle.resumable import etcd_watch_resume, resumable
from eagle.testing.etcd import (
    EtcdCluster,
    cleanup_iptables,
    etcd_unavailable_reason,
    put,
)
from eagle.testing.v1 import etcdkv_pb2 as kv

_REASON = etcd_unavailable_reason()
pytestmark = [
    pytest.mark.etcd,
    pytest.mark.skipif(_REASON is not None, reason=f"etcd harness unavailable: {_REASON}"),
]

RANGE = "/etcdserverpb.KV/Range"
WATCH = "/etcdserverpb.Watch/Watch"

HEALTH = {"interval": 0.3, "timeout": 0.4, "unhealthy_threshold": 2, "jitter": 0.1}
#: the watcher's channel
WATCH_CONFIG: dict[str, Any] = {"membership": {"provider": "etcd"}, "health": HEALTH}
#: the readers' channel: Range is idempotent, a hung attempt is cut after 0.5 s and
#: retried elsewhere, and etcd refuses calls on a member without a leader (hasleader).
#: Those refusals may get the cut member ejected by outlier detection before its Status
#: says PARTITIONED; a short ejection lets it return soon after the heal.
READ_CONFIG: dict[str, Any] = {
    "membership": {"provider": "etcd", "etcd": {"require_leader": True}},
    "health": HEALTH,
    "retry": {"idempotent_methods": [RANGE], "per_try_timeout": 0.5, "max_attempts": 4},
    "outlier": {"base_ejection_time": 1.0},
}
#: the target of the issue is 2.5 s from the cut to the resumed watch; allow slow CI a bit
CUT_TO_RESUME_BOUND = 3.5


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    c = EtcdCluster(3)
    try:
        yield c
    finally:
        c.close()
        cleanup_iptables()


@dataclass
class Watcher:
    """A resumable etcd watch through eagle, read on a thread."""

    stream: Any
    revisions: list[int] = field(default_factory=list)
    resumed_at: list[float] = field(default_factory=list)  # on_resume calls
    first_after_resume: float | None = None
    endpoints: list[str] = field(default_factory=list)  # member of each stream
    error: BaseException | None = None

    def run(self) -> None:
        try:
            for resp in self.stream:
                if self.stream.resumes and self.first_after_resume is None:
                    self.first_after_resume = time.monotonic()
                    self.endpoints.append(self.stream.endpoint)
                self.revisions.extend(int(ev.kv.mod_revision) for ev in resp.events)
        except BaseException as exc:  # the test asserts on it
            self.error = exc


def _open_watch(ch: eagle.Channel, key: bytes, avoid: str) -> tuple[Watcher, threading.Thread]:
    """A resumable watch on ``key`` whose first stream is not on ``avoid`` (the leader)."""
    multi = ch.stream_stream(WATCH, kv.WatchRequest.SerializeToString, kv.WatchResponse.FromString)
    first = kv.WatchRequest(create_request=kv.WatchCreateRequest(key=key))
    resumed_at: list[float] = []
    for _ in range(10):
        stream = resumable(
            lambda req: multi(iter([req])),
            first,
            etcd_watch_resume,
            on_resume=lambda err, req: resumed_at.append(time.monotonic()),
        )
        created = next(stream)
        assert created.created
        if stream.endpoint != avoid:
            w = Watcher(stream, resumed_at=resumed_at, endpoints=[str(stream.endpoint)])
            t = threading.Thread(target=w.run, name="watcher", daemon=True)
            t.start()
            return w, t
        stream.cancel()
    raise AssertionError("the watch never landed on a follower")


class Writer:
    """Puts ``key`` every 50 ms through one member, with a plain grpcio channel."""

    def __init__(self, endpoint: str, key: bytes) -> None:
        self.revisions: list[int] = []
        self.failures = 0
        self._stop = threading.Event()
        self._endpoint = endpoint
        self._key = key
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with grpc.insecure_channel(self._endpoint) as ch:
            n = 0
            while not self._stop.is_set():
                try:
                    self.revisions.append(put(ch, self._key, str(n), timeout=2.0))
                except grpc.RpcError:
                    self.failures += 1
                n += 1
                self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_partition_moves_the_watch_and_reads(cluster: EtcdCluster) -> None:
    leader = cluster.leader()
    lead_ep = cluster.endpoints[leader]
    key = f"eagle-watch-{uuid.uuid4().hex[:8]}".encode()
    with (
        eagle.insecure_channel(cluster.endpoints, config=WATCH_CONFIG) as wch,
        eagle.insecure_channel(cluster.endpoints, config=READ_CONFIG) as rch,
    ):
        for ch in (wch, rch):
            wait_until(
                lambda ch=ch: all(s.serving for s in ch.status().values()), 10, "all SERVING"
            )
        watcher, wthread = _open_watch(wch, key, avoid=lead_ep)
        cut_ep = watcher.endpoints[0]
        cut = cluster.endpoints.index(cut_ep)
        writer = Writer(lead_ep, key)

        # linearizable reads through eagle, recording the member of every attempt
        attempts: list[tuple[float, str, str]] = []  # (start, member, code)
        orig_done = rch.balancer.done

        def done(endpoint: str, code: str, latency: float, details: str | None = None) -> None:
            attempts.append((time.monotonic() - latency, endpoint, code))
            orig_done(endpoint, code, latency, details)

        rch.balancer.done = done  # type: ignore[method-assign]
        left_at: list[float] = []
        rch.on_change(
            lambda t: left_at.append(t.at) if t.endpoint == cut_ep and not left_at else None
        )
        read = rch.unary_unary(
            RANGE, kv.RangeRequest.SerializeToString, kv.RangeResponse.FromString
        )
        reads = {"ok": 0, "failed": 0}
        read_errors: list[str] = []
        stop_reads = threading.Event()

        def reader() -> None:
            while not stop_reads.is_set():
                try:
                    read(kv.RangeRequest(key=key), timeout=3.0)
                    reads["ok"] += 1
                except grpc.RpcError as err:
                    reads["failed"] += 1
                    read_errors.append(f"{time.monotonic():.2f} {err.code()}: {err.details()}")
                stop_reads.wait(0.01)

        rthread = threading.Thread(target=reader, name="reader", daemon=True)
        rthread.start()
        try:
            time.sleep(1.0)
            t_cut = time.monotonic()
            cluster.partition(cut)
            wait_until(lambda: watcher.first_after_resume is not None, 10, "watch resumed")
            wait_until(lambda: bool(left_at), 5, "reads channel sees the cut")
            assert watcher.first_after_resume is not None
            cut_to_end = watcher.resumed_at[0] - t_cut
            cut_to_resume = watcher.first_after_resume - t_cut
            print(
                f"\npartition: cut->ended {cut_to_end:.2f}s, cut->resumed {cut_to_resume:.2f}s "
                f"on {watcher.endpoints[-1]} (cut {cut_ep}); "
                f"reads channel: cut->out of rotation {left_at[0] - t_cut:.2f}s"
            )
            assert wch.status()[cut_ep].state is eagle.State.PARTITIONED
            assert "no leader" in (wch.status()[cut_ep].last_error or "")
            assert cut_to_resume <= CUT_TO_RESUME_BOUND
            assert watcher.endpoints[-1] != cut_ep
            time.sleep(1.5)  # reads and puts go on while the member stays cut off
            t_heal = time.monotonic()
            late = [a for a in attempts if a[1] == cut_ep and left_at[0] + 0.05 < a[0] < t_heal]
            assert not late, f"reads still went to the cut member: {late[:5]}"
        finally:
            cluster.heal(cut)
        for ch, name in ((wch, "watch"), (rch, "reads")):
            wait_until(
                lambda ch=ch: ch.status()[cut_ep].state is eagle.State.SERVING,
                10,
                f"{name} channel: healed member SERVING (status: {ch.status()[cut_ep]})",
            )
        t_back = time.monotonic()
        wait_until(
            lambda: any(a[1] == cut_ep and a[0] > t_back and a[2] == "OK" for a in attempts),
            5,
            "reads reach the healed member again",
        )
        stop_reads.set()
        rthread.join(10)
        writer.stop()
        last = max(writer.revisions)
        wait_until(lambda: bool(watcher.revisions) and watcher.revisions[-1] >= last, 10, "catchup")
        watcher.stream.cancel()
        wthread.join(5)
        total = reads["ok"] + reads["failed"]
        print(
            f"reads: {total} ({reads['failed']} failed); puts: {len(writer.revisions)} "
            f"({writer.failures} failed); events: {len(watcher.revisions)}"
        )
        for line in read_errors:
            print("read failed:", line)
        print(f"cut at {t_cut:.2f}, out of rotation at {left_at[0]:.2f}, healed at {t_heal:.2f}")
        assert total > 100 and reads["failed"] <= total * 0.01
        assert_exactly_once(watcher, writer.revisions, lead_ep, key)


def test_frozen_member_ends_and_resumes_the_watch(cluster: EtcdCluster) -> None:
    leader = cluster.leader()
    lead_ep = cluster.endpoints[leader]
    key = f"eagle-freeze-{uuid.uuid4().hex[:8]}".encode()
    # worst case: a probe answered just before the freeze, the next one is skipped while
    # the one in flight times out, then one more miss
    bound = HEALTH["interval"] * (HEALTH["unhealthy_threshold"] + 1) * (1 + HEALTH["jitter"])
    bound += HEALTH["timeout"] + 0.6
    with eagle.insecure_channel(cluster.endpoints, config=WATCH_CONFIG) as wch:
        wait_until(lambda: all(s.serving for s in wch.status().values()), 10, "all SERVING")
        watcher, wthread = _open_watch(wch, key, avoid=lead_ep)
        frozen_ep = watcher.endpoints[0]
        frozen = cluster.endpoints.index(frozen_ep)
        writer = Writer(lead_ep, key)
        try:
            time.sleep(0.6)
            t_stop = time.monotonic()
            cluster.stop(frozen)
            wait_until(lambda: watcher.first_after_resume is not None, 10, "watch resumed")
            assert watcher.first_after_resume is not None
            ended = watcher.resumed_at[0] - t_stop
            resumed = watcher.first_after_resume - t_stop
            print(
                f"\nfreeze: stop->ended {ended:.2f}s (bound {bound:.2f}s), "
                f"stop->resumed {resumed:.2f}s on {watcher.endpoints[-1]}"
            )
            assert ended <= bound
            assert wch.status()[frozen_ep].state is eagle.State.UNREACHABLE
            assert watcher.endpoints[-1] != frozen_ep
            time.sleep(0.5)
        finally:
            cluster.cont(frozen)
        wait_until(lambda: wch.status()[frozen_ep].state is eagle.State.SERVING, 10, "back")
        writer.stop()
        last = max(writer.revisions)
        wait_until(lambda: bool(watcher.revisions) and watcher.revisions[-1] >= last, 10, "catchup")
        watcher.stream.cancel()
        wthread.join(5)
        assert_exactly_once(watcher, writer.revisions, lead_ep, key)


def test_discovery_from_member_list(cluster: EtcdCluster) -> None:
    seed = cluster.endpoints[1]
    config = {**WATCH_CONFIG, "membership": {"provider": "etcd", "discover": True}}
    with eagle.insecure_channel([seed], config=config) as ch:
        wait_until(lambda: set(ch.endpoints) == set(cluster.endpoints), 10, "all members found")
        wait_until(lambda: all(s.serving for s in ch.status().values()), 10, "all SERVING")
        ids = {s.member_id for s in ch.status().values()}
        assert len(ids) == 3 and ch.balancer.leader == cluster.endpoints[cluster.leader()]
