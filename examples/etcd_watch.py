"""An etcd Watch that survives partitioned, frozen and crashed members, through eagle.

eagle's ``etcd`` membership provider asks every member for ``Maintenance.Status``; a
member cut off from its peers loses its leader and eagle marks it PARTITIONED, ending the
streams on it with UNAVAILABLE. :func:`eagle.resumable.resumable` re-opens the watch on
another member from the last revision it delivered + 1
(:func:`eagle.resumable.etcd_watch_resume`), so every event arrives exactly once.

Watch a key of your own cluster::

    python examples/etcd_watch.py --endpoints 10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379 \\
        --key config/feature-x

Or see it survive a partition on a throwaway local cluster (root, etcd and iptables
needed: it starts three etcd members on loopback, puts a key every 50 ms, cuts off the
member that carries the watch, then heals it)::

    sudo python examples/etcd_watch.py --demo

With your own etcd stubs, the recipe is the same; use your ``etcdserverpb`` messages::

    channel = eagle.insecure_channel(endpoints, config={
        "membership": "etcd",
        "health": {"interval": 0.3},
    })
    watch = etcdserverpb.WatchStub(channel).Watch
    first = WatchRequest(create_request=WatchCreateRequest(key=b"k"))
    for resp in resumable(lambda req: watch(iter([req])), first, etcd_watch_resume):
        for ev in resp.events:
            handle(ev)
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Iterator

import grpc

import eagle
from eagle.resumable import ResumableStream, etcd_watch_resume, resumable
from eagle.testing.v1 import etcdkv_pb2 as kv

WATCH = "/etcdserverpb.Watch/Watch"

CONFIG = {
    "membership": "etcd",  # judge members by etcd's own view: leader, term, applied index
    "health": {"interval": 0.3},  # probe (and fetch views) every 0.3 s
}


def watch_key(
    channel: eagle.Channel, key: bytes, start_revision: int = 0
) -> ResumableStream[kv.WatchRequest, kv.WatchResponse]:
    """A resumable watch of ``key`` (from ``start_revision``; 0 = from now)."""
    multi = channel.stream_stream(
        WATCH, kv.WatchRequest.SerializeToString, kv.WatchResponse.FromString
    )
    first = kv.WatchRequest(
        create_request=kv.WatchCreateRequest(key=key, start_revision=start_revision)
    )
    return resumable(
        lambda req: multi(iter([req])),
        first,
        etcd_watch_resume,
        on_resume=lambda err, req: print(
            f"  watch ended ({err.details()}); resuming from revision "
            f"{req.create_request.start_revision}",
            flush=True,
        ),
    )


def events(stream: ResumableStream[kv.WatchRequest, kv.WatchResponse]) -> Iterator[kv.Event]:
    """Every event of the watch, in order, exactly once."""
    for resp in stream:
        yield from resp.events


def run(endpoints: str, key: str) -> int:
    """Watch ``key`` until interrupted, printing every event."""
    with eagle.insecure_channel(endpoints, config=CONFIG) as channel:
        stream = watch_key(channel, key.encode())
        try:
            for ev in events(stream):
                kind = "DELETE" if ev.type == kv.Event.DELETE else "PUT"
                where = f"revision {ev.kv.mod_revision}, via {stream.endpoint}"
                print(
                    f"{kind} {ev.kv.key.decode()} = {ev.kv.value.decode()!r} ({where})", flush=True
                )
        except KeyboardInterrupt:
            stream.cancel()
    return 0


def demo() -> int:
    """Partition the member carrying a watch on a local cluster and count the events."""
    from eagle.testing.etcd import EtcdCluster, etcd_unavailable_reason, put

    reason = etcd_unavailable_reason()
    if reason is not None:
        print(f"--demo needs a local etcd cluster: {reason}", file=sys.stderr)
        return 2
    key = b"demo-key"
    with EtcdCluster(3) as cluster, eagle.insecure_channel(cluster.endpoints, config=CONFIG) as ch:
        while not all(s.serving for s in ch.status().values()):
            time.sleep(0.05)
        leader = cluster.endpoints[cluster.leader()]
        stream = watch_key(ch, key)
        while True:  # put the watch on a follower, so the writer's member stays up
            created = next(stream)
            if stream.endpoint != leader:
                break
            stream.cancel()
            stream = watch_key(ch, key)
        print(f"watching {key.decode()} on {stream.endpoint} (revision {created.header.revision})")
        seen: list[int] = []
        reader = threading.Thread(
            target=lambda: seen.extend(int(e.kv.mod_revision) for e in events(stream)),
            daemon=True,
        )
        reader.start()
        written: list[int] = []
        stop = threading.Event()

        def writer() -> None:
            with grpc.insecure_channel(leader) as plain:
                n = 0
                while not stop.is_set():
                    written.append(put(plain, key, str(n)))
                    n += 1
                    stop.wait(0.05)

        wthread = threading.Thread(target=writer, daemon=True)
        wthread.start()
        time.sleep(1)
        cut_ep = str(stream.endpoint)
        cut = cluster.endpoints.index(cut_ep)
        print(f"cutting {cut_ep} off from its peers")
        t0 = time.monotonic()
        cluster.partition(cut)
        try:
            while stream.endpoint in (cut_ep, None) and time.monotonic() - t0 < 10:
                time.sleep(0.01)
            print(f"  resumed on {stream.endpoint} {time.monotonic() - t0:.2f} s after the cut")
            time.sleep(2)
        finally:
            cluster.heal(cut)
        stop.set()
        wthread.join()
        deadline = time.monotonic() + 5
        while (not seen or seen[-1] < written[-1]) and time.monotonic() < deadline:
            time.sleep(0.05)
        stream.cancel()
        missed = set(written) - set(seen)
        dups = len(seen) - len(set(seen))
        print(f"{len(written)} puts, {len(seen)} events, {len(missed)} missed, {dups} duplicated")
        return 0 if not missed and not dups else 1


def main() -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", help="comma-separated etcd client endpoints")
    parser.add_argument("--key", default="eagle-example", help="key to watch")
    parser.add_argument("--demo", action="store_true", help="run the local partition demo")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.demo:
        return demo()
    if not args.endpoints:
        parser.error("--endpoints is required (or use --demo)")
    return run(args.endpoints, args.key)


if __name__ == "__main__":
    raise SystemExit(main())
