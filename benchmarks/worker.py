"""One benchmark client in its own process: ``python -m benchmarks.worker``.

The parent (:mod:`benchmarks.procs`) writes one JSON line with the job spec to stdin.
The worker builds its channel, warms up, prints ``READY <json>`` and then obeys commands,
one per line:

* ``GO <t0> <duration> <outfile>``: run the job from monotonic time ``t0`` (the clock is
  system-wide, so every worker and the fault injector share one timeline) for
  ``duration`` seconds, write the result JSON to ``outfile`` and print ``DONE``;
* ``QUIT``: close the channel and exit.

Jobs: ``load`` (unary calls, sync threads or asyncio tasks, optionally paced), ``watch``
(an etcd watch that is re-opened when it ends), ``scale`` (probe cost and memory over
many endpoints) and ``pick`` (the cost of one ``Balancer.pick``). CPU time and peak RSS
come from ``getrusage(RUSAGE_SELF)`` of this process, so they include every thread the
client library runs (prober, grpc's pollers).

The worker exits on its own when its parent goes away or after ``max_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import resource
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from .clients import ClientSpec, build_aio_channel, build_sync_channel

monotonic = time.monotonic

#: a call slower than this counts as "hit by the fault" (the slow fault adds 200 ms; a
#: loaded shared machine alone rarely stalls a call this long)
SLOW_S = 0.19


# ------------------------------------------------------------------------ utilities


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def max_rss_kib() -> int:
    """Peak RSS of this process (VmHWM). ``ru_maxrss`` is no good here: Linux keeps the
    parent's high-water mark across fork + exec, so every worker would report at least the
    orchestrator's RSS."""
    return _status_kib("VmHWM:")


def rss_kib() -> int:
    return _status_kib("VmRSS:")


def raise_nofile() -> None:
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def sleep_until(t: float) -> None:
    while True:
        left = t - monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


def _wait_all_serving(channel: Any, deadline: float) -> None:
    """Wait (until ``deadline``) for an eagle channel to see every member SERVING."""
    while monotonic() < deadline:
        if all(s.serving for s in channel.status().values()):
            return
        time.sleep(0.02)


class SkipCounter(logging.Handler):
    """Counts APScheduler's "skipped: maximum number of running instances" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.skipped = 0

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            if "maximum number of running instances" in record.getMessage():
                self.skipped += 1


SKIPS = SkipCounter()


def _parent_watch(parent: int, max_seconds: float) -> None:
    deadline = monotonic() + max_seconds
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(3)
        if monotonic() > deadline:
            print(f"worker: exceeded max_seconds={max_seconds}", file=sys.stderr, flush=True)
            os._exit(4)


# ------------------------------------------------------------------------ requests


#: how many request messages a streaming load call sends
STREAM_MESSAGES = 3


class Method:
    """The call a load job makes, and how to tell which member answered: unary Echo, a
    client-streaming or bidi Echo of three messages, or an etcd Range."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.kind = spec.get("method", "echo")
        self.server_map: dict[str, int] = spec.get("server_map", {})
        if self.kind in ("echo_client_stream", "echo_bidi"):
            from eagle.testing.v1 import echo_pb2

            name = "ClientStream" if self.kind == "echo_client_stream" else "Bidi"
            self.path = f"/eagle.testing.v1.Echo/{name}"
            self.ser = echo_pb2.EchoRequest.SerializeToString
            self.deser = echo_pb2.EchoResponse.FromString
            self.ok = echo_pb2.EchoRequest(message="x" * 16)
            self.failing = echo_pb2.EchoRequest(message="x" * 16, fail_code=14)
        elif self.kind == "echo":
            from eagle.testing.v1 import echo_pb2

            self.path = "/eagle.testing.v1.Echo/Unary"
            self.ser = echo_pb2.EchoRequest.SerializeToString
            self.deser = echo_pb2.EchoResponse.FromString
            self.ok = echo_pb2.EchoRequest(message="x" * 16)
            # the retry storm: every member answers UNAVAILABLE (14) while this is sent
            self.failing = echo_pb2.EchoRequest(message="x" * 16, fail_code=14)
        elif self.kind == "etcd_range":
            from eagle.testing.v1 import etcdkv_pb2

            self.path = "/etcdserverpb.KV/Range"
            self.ser = etcdkv_pb2.RangeRequest.SerializeToString
            self.deser = etcdkv_pb2.RangeResponse.FromString
            self.ok = etcdkv_pb2.RangeRequest(key=b"bench/k")
            self.failing = self.ok
        else:
            raise ValueError(f"unknown method {self.kind!r}")

    def server_of(self, resp: Any) -> int:
        if self.kind.startswith("echo"):
            return self.server_map.get(resp.server, -1)
        return self.server_map.get(str(resp.header.member_id), -1)

    def multicallable(self, channel: Any) -> Any:
        """A callable ``call(request, timeout=...)`` for a sync channel (awaitable for an
        asyncio one) that makes one call and returns its (last) response."""
        if self.kind == "echo_client_stream":
            mc = channel.stream_unary(self.path, self.ser, self.deser, _registered_method=True)
            n = STREAM_MESSAGES
            return lambda req, timeout: mc(iter([req] * n), timeout=timeout)
        if self.kind == "echo_bidi":
            mc = channel.stream_stream(self.path, self.ser, self.deser, _registered_method=True)
            n = STREAM_MESSAGES
            if isinstance(channel, grpc_aio_channel_types()):

                async def bidi_aio(req: Any, timeout: float) -> Any:
                    out = [m async for m in mc(iter([req] * n), timeout=timeout)]
                    return out[-1]

                return bidi_aio

            def bidi(req: Any, timeout: float) -> Any:
                return list(mc(iter([req] * n), timeout=timeout))[-1]

            return bidi
        # the way generated stubs build it
        return channel.unary_unary(self.path, self.ser, self.deser, _registered_method=True)


def grpc_aio_channel_types() -> tuple[type, ...]:
    import grpc

    return (grpc.aio.Channel,)


class ErrorSamples:
    """Distinct (code, details) of failed calls, with counts and first time (capped)."""

    def __init__(self, cap: int = 20) -> None:
        self.cap = cap
        self.items: dict[tuple[int, str], list[float]] = {}
        self.lock = threading.Lock()

    def add(self, code: int, err: Any, t: float) -> None:
        try:
            details = str(err.details())[:300]
        except Exception:
            details = repr(err)[:300]
        key = (code, details)
        with self.lock:
            item = self.items.get(key)
            if item is not None:
                item[0] += 1
            elif len(self.items) < self.cap:
                self.items[key] = [1, t]

    def as_json(self) -> list[dict[str, Any]]:
        return [
            {"code": k[0], "details": k[1], "count": int(v[0]), "first_t": round(v[1], 4)}
            for k, v in self.items.items()
        ]


def _code_value(err: Any) -> int:
    try:
        code = err.code()
    except Exception:
        return 2
    return int(code.value[0]) if code is not None else 2


# ------------------------------------------------------------------------ load job


class Recorder:
    """Per-call records of one run: start (s after t0), latency (s), code, member."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, int, int]] = []

    def as_json(self) -> dict[str, list[Any]]:
        rows = sorted(self.rows)
        return {
            "start": [round(r[0], 6) for r in rows],
            "latency": [round(r[1], 6) for r in rows],
            "code": [r[2] for r in rows],
            "server": [r[3] for r in rows],
        }


def _eagle_hooks(channel: Any, t0_box: list[float]) -> tuple[list[Any], Callable[[], Any]]:
    """Record eagle's status transitions; returns (transitions, stats getter)."""
    transitions: list[Any] = []

    def on_change(t: Any) -> None:
        transitions.append(
            [round(t.at - t0_box[0], 6), t.endpoint, str(t.old), str(t.new), t.reason]
        )

    channel.on_change(on_change)

    def stats() -> dict[str, Any]:
        s = channel.balancer.stats
        return {k: getattr(s, k) for k in vars(s)}

    return transitions, stats


class SyncLoad:
    def __init__(self, spec: dict[str, Any], client: ClientSpec) -> None:
        self.spec = spec
        self.client = client
        self.method = Method(spec)
        self.endpoints: list[str] = spec["endpoints"]
        self.channel = build_sync_channel(client, self.endpoints)
        self.call = self.method.multicallable(self.channel)
        self.t0_box = [monotonic()]
        self.transitions: list[Any] = []
        self.stats: Callable[[], Any] | None = None
        if client.is_eagle:
            self.transitions, self.stats = _eagle_hooks(self.channel, self.t0_box)

    def warm_up(self) -> dict[str, Any]:
        deadline = monotonic() + float(self.spec.get("ready_timeout", 10.0))
        if self.client.is_eagle:
            _wait_all_serving(self.channel, deadline)
        # a few calls per member (a fixed count: warm-up calls also feed eagle's retry
        # budget, so they must not depend on how fast the machine is); overhead runs
        # ask for a timed warm-up instead
        ok = 0
        end = monotonic() + float(self.spec.get("warmup_s", 0.0))
        want = int(self.spec.get("warmup_calls", 3 * len(self.endpoints)))
        while monotonic() < end or ok < want:
            if monotonic() > deadline:
                break
            try:
                self.call(self.method.ok, timeout=1.0)
                ok += 1
            except Exception:
                time.sleep(0.02)
        return {"warmup_ok": ok}

    def run(self, t0: float, duration: float) -> dict[str, Any]:
        spec = self.spec
        conc = int(spec.get("concurrency", 1))
        rate = float(spec.get("rate", 0.0))
        deadline = float(spec.get("deadline", 1.0))
        fail_window = spec.get("fail_window")
        fw = (t0 + fail_window[0], t0 + fail_window[1]) if fail_window else None
        interval = conc / rate if rate > 0 else 0.0
        end = t0 + duration
        self.t0_box[0] = t0
        n_before = len(self.transitions)
        recs = [Recorder() for _ in range(conc)]
        samples = ErrorSamples()
        call = self.call
        method = self.method
        ok_req, bad_req = method.ok, method.failing
        server_of = method.server_of
        import grpc

        def loop(k: int) -> None:
            rows = recs[k].rows
            append = rows.append
            nxt = t0 + (interval * k / conc if interval else 0.0)
            while True:
                if interval:
                    now = monotonic()
                    if now < nxt:
                        time.sleep(nxt - now)
                    nxt += interval
                    now = monotonic()
                    if now - nxt > interval:
                        nxt = now  # fell behind (a stuck call): no burst to catch up
                start = monotonic()
                if start >= end:
                    return
                req = bad_req if fw is not None and fw[0] <= start < fw[1] else ok_req
                try:
                    resp = call(req, timeout=deadline)
                except grpc.RpcError as err:
                    code = _code_value(err)
                    append((start - t0, monotonic() - start, code, -1))
                    samples.add(code, err, start - t0)
                except Exception as exc:
                    append((start - t0, monotonic() - start, 2, -1))
                    samples.add(2, exc, start - t0)
                else:
                    append((start - t0, monotonic() - start, 0, server_of(resp)))

        threads = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(conc)]
        sleep_until(t0)
        cpu0 = cpu_seconds()
        for th in threads:
            th.start()
        for th in threads:
            th.join(duration + deadline * 6 + 10)
        t_end = monotonic()
        cpu1 = cpu_seconds()
        merged = Recorder()
        for r in recs:
            merged.rows.extend(r.rows)
        out: dict[str, Any] = {
            "calls": merged.as_json(),
            "cpu_s": cpu1 - cpu0,
            "wall_s": t_end - t0,
            "max_rss_kib": max_rss_kib(),
            "stuck_threads": sum(1 for th in threads if th.is_alive()),
            "errors": samples.as_json(),
        }
        if self.client.is_eagle:
            out["transitions"] = self.transitions[n_before:]
            assert self.stats is not None
            out["eagle_stats"] = self.stats()
            out["final_states"] = {k: str(v.state) for k, v in self.channel.status().items()}
        return out

    def close(self) -> None:
        self.channel.close()


class AioLoad:
    """The asyncio twin of :class:`SyncLoad`; everything runs in one event loop."""

    def __init__(self, spec: dict[str, Any], client: ClientSpec) -> None:
        self.spec = spec
        self.client = client
        self.method = Method(spec)
        self.endpoints: list[str] = spec["endpoints"]
        self.loop = asyncio.new_event_loop()
        self.t0_box = [monotonic()]
        self.transitions: list[Any] = []
        self.stats: Callable[[], Any] | None = None
        self.channel: Any = None
        self.call: Any = None
        self.loop.run_until_complete(self._build())

    async def _build(self) -> None:
        self.channel = build_aio_channel(self.client, self.endpoints)
        self.call = self.method.multicallable(self.channel)
        if self.client.is_eagle:
            self.transitions, self.stats = _eagle_hooks(self.channel, self.t0_box)

    def warm_up(self) -> dict[str, Any]:
        return self.loop.run_until_complete(self._warm_up())

    async def _warm_up(self) -> dict[str, Any]:
        deadline = monotonic() + float(self.spec.get("ready_timeout", 10.0))
        if self.client.is_eagle:
            while monotonic() < deadline:
                if all(s.serving for s in self.channel.status().values()):
                    break
                await asyncio.sleep(0.02)
        ok = 0
        end = monotonic() + float(self.spec.get("warmup_s", 0.0))
        want = int(self.spec.get("warmup_calls", 3 * len(self.endpoints)))
        while monotonic() < end or ok < want:
            if monotonic() > deadline:
                break
            try:
                await self.call(self.method.ok, timeout=1.0)
                ok += 1
            except Exception:
                await asyncio.sleep(0.02)
        return {"warmup_ok": ok}

    def run(self, t0: float, duration: float) -> dict[str, Any]:
        return self.loop.run_until_complete(self._run(t0, duration))

    async def _run(self, t0: float, duration: float) -> dict[str, Any]:
        import grpc

        spec = self.spec
        conc = int(spec.get("concurrency", 1))
        rate = float(spec.get("rate", 0.0))
        deadline = float(spec.get("deadline", 1.0))
        fail_window = spec.get("fail_window")
        fw = (t0 + fail_window[0], t0 + fail_window[1]) if fail_window else None
        interval = conc / rate if rate > 0 else 0.0
        end = t0 + duration
        self.t0_box[0] = t0
        n_before = len(self.transitions)
        rec = Recorder()
        append = rec.rows.append
        samples = ErrorSamples()
        call = self.call
        method = self.method
        ok_req, bad_req = method.ok, method.failing
        server_of = method.server_of

        async def loop(k: int) -> None:
            nxt = t0 + (interval * k / conc if interval else 0.0)
            while True:
                if interval:
                    now = monotonic()
                    if now < nxt:
                        await asyncio.sleep(nxt - now)
                    nxt += interval
                    now = monotonic()
                    if now - nxt > interval:
                        nxt = now
                start = monotonic()
                if start >= end:
                    return
                req = bad_req if fw is not None and fw[0] <= start < fw[1] else ok_req
                try:
                    resp = await call(req, timeout=deadline)
                except grpc.RpcError as err:
                    code = _code_value(err)
                    append((start - t0, monotonic() - start, code, -1))
                    samples.add(code, err, start - t0)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    append((start - t0, monotonic() - start, 2, -1))
                    samples.add(2, exc, start - t0)
                else:
                    append((start - t0, monotonic() - start, 0, server_of(resp)))

        left = t0 - monotonic()
        if left > 0:
            await asyncio.sleep(left)
        cpu0 = cpu_seconds()
        tasks = [asyncio.ensure_future(loop(k)) for k in range(conc)]
        _, pending = await asyncio.wait(tasks, timeout=duration + deadline * 6 + 10)
        for t in pending:
            t.cancel()
        t_end = monotonic()
        cpu1 = cpu_seconds()
        out: dict[str, Any] = {
            "calls": rec.as_json(),
            "cpu_s": cpu1 - cpu0,
            "wall_s": t_end - t0,
            "max_rss_kib": max_rss_kib(),
            "stuck_threads": len(pending),
            "errors": samples.as_json(),
        }
        if self.client.is_eagle:
            out["transitions"] = self.transitions[n_before:]
            assert self.stats is not None
            out["eagle_stats"] = self.stats()
            out["final_states"] = {k: str(v.state) for k, v in self.channel.status().items()}
        return out

    def close(self) -> None:
        async def _close() -> None:
            await self.channel.close()

        with contextlib.suppress(Exception):
            self.loop.run_until_complete(_close())
        self.loop.close()


# ------------------------------------------------------------------------ watch job


class WatchJob:
    """An etcd watch on one key that is re-opened from the next revision when it ends.

    ``variant``: ``plain`` (a grpc channel to the victim only), ``hasleader`` (grpc
    round_robin over every member, ``hasleader: true`` metadata) or ``eagle`` (an eagle
    channel with the ``etcd`` config). The first watch is placed on the victim member: a
    watch whose response header names another member is cancelled and opened again.
    """

    def __init__(self, spec: dict[str, Any], client: ClientSpec) -> None:
        import grpc

        from eagle.testing.v1 import etcdkv_pb2

        self.pb = etcdkv_pb2
        self.spec = spec
        self.client = client
        self.variant = client.extra.get("variant", "plain")
        self.endpoints: list[str] = spec["endpoints"]
        self.victim_id = int(spec["victim_member_id"])
        self.key = spec.get("key", "bench/w").encode()
        if self.variant == "plain":
            self.channel = grpc.insecure_channel(
                self.endpoints[0], options=[("grpc.enable_http_proxy", 0)]
            )
        elif self.variant == "hasleader":
            from .clients import grpc_target_and_options

            target, options = grpc_target_and_options("rr_hc", self.endpoints)
            self.channel = grpc.insecure_channel(target, options=options)
        else:
            self.channel = build_sync_channel(client, self.endpoints)
        self.metadata = (("hasleader", "true"),) if client.extra.get("hasleader") else None
        self.multi = self.channel.stream_stream(
            "/etcdserverpb.Watch/Watch",
            request_serializer=etcdkv_pb2.WatchRequest.SerializeToString,
            response_deserializer=etcdkv_pb2.WatchResponse.FromString,
        )
        self.t0 = monotonic()
        self.events: list[tuple[int, float]] = []
        self.errors: list[tuple[float, int, str]] = []
        self.opens: list[tuple[float, int]] = []  # (time, member id answering)
        self.last_rev = 0
        self.call: Any = None
        self.it: Any = None
        self.done: threading.Event | None = None
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.transitions: list[Any] = []
        if client.is_eagle:
            self.t0_box = [self.t0]
            self.transitions, _ = _eagle_hooks(self.channel, self.t0_box)

    def _open(self, start_revision: int) -> tuple[Any, Any, Any]:
        done = threading.Event()
        pb = self.pb

        def requests() -> Any:
            yield pb.WatchRequest(
                create_request=pb.WatchCreateRequest(key=self.key, start_revision=start_revision)
            )
            done.wait()

        call = self.multi(requests(), metadata=self.metadata)
        it = iter(call)
        first = next(it)  # the "created" response (raises RpcError if the open fails)
        return call, it, (done, first)

    def warm_up(self) -> dict[str, Any]:
        deadline = monotonic() + float(self.spec.get("ready_timeout", 20.0))
        if self.client.is_eagle:
            _wait_all_serving(self.channel, deadline)
        tries = 0
        placed = False
        while monotonic() < deadline and not placed:
            tries += 1
            try:
                call, it, (done, first) = self._open(0)
            except Exception:
                time.sleep(0.1)
                continue
            if first.header.member_id == self.victim_id:
                self.call, self.it, self.done = call, it, done
                self.opens.append((monotonic() - self.t0, int(first.header.member_id)))
                placed = True
            else:
                call.cancel()
                done.set()
        return {"placed_on_victim": placed, "placement_tries": tries}

    def _reader(self) -> None:
        import grpc

        while not self.stop.is_set():
            it = self.it if self.it is not None else iter(())
            try:
                for resp in it:
                    now = monotonic()
                    if resp.canceled:
                        self.errors.append((now - self.t0, -1, resp.cancel_reason or "canceled"))
                        break
                    for ev in resp.events:
                        rev = int(ev.kv.mod_revision)
                        self.events.append((rev, now - self.t0))
                        self.last_rev = max(self.last_rev, rev)
            except grpc.RpcError as err:
                if self.stop.is_set():
                    return
                self.errors.append((monotonic() - self.t0, _code_value(err), str(err.details())))
            if self.done is not None:
                self.done.set()
            if self.stop.is_set():
                return
            # re-open from the next revision, on whatever member the channel picks
            while not self.stop.is_set():
                time.sleep(0.05)
                try:
                    call, it, (done, first) = self._open(self.last_rev + 1 if self.last_rev else 0)
                except grpc.RpcError as err:
                    self.errors.append(
                        (monotonic() - self.t0, _code_value(err), str(err.details()))
                    )
                    continue
                except Exception as exc:
                    self.errors.append((monotonic() - self.t0, 2, repr(exc)))
                    continue
                self.call, self.it, self.done = call, it, done
                self.opens.append((monotonic() - self.t0, int(first.header.member_id)))
                for ev in first.events:
                    rev = int(ev.kv.mod_revision)
                    self.events.append((rev, monotonic() - self.t0))
                    self.last_rev = max(self.last_rev, rev)
                break

    def run(self, t0: float, duration: float) -> dict[str, Any]:
        # shift recorded times onto the shared t0
        shift = self.t0 - t0
        self.t0 = t0
        if self.client.is_eagle:
            self.t0_box[0] = t0
        self.opens = [(t + shift, m) for t, m in self.opens]
        sleep_until(t0)
        cpu0 = cpu_seconds()
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()
        sleep_until(t0 + duration)
        self.stop.set()
        if self.call is not None:
            self.call.cancel()
        if self.done is not None:
            self.done.set()
        self.thread.join(5)
        cpu1 = cpu_seconds()
        return {
            "events": self.events,
            "errors": self.errors,
            "opens": self.opens,
            "cpu_s": cpu1 - cpu0,
            "max_rss_kib": max_rss_kib(),
            "transitions": self.transitions,
        }

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(Exception):
            if self.call is not None:
                self.call.cancel()
        self.channel.close()


# ------------------------------------------------------------------------ scale job


def all_probed(ch: Any) -> bool:
    """Every member the channel uses (all, or its subset) has had a probe answer (or
    failure)."""
    bal = ch.balancer
    for k in bal.in_use:
        st = bal.status_of(k)
        if st is not None and st.last_probe is None:
            return False
    return True


def _states(ch: Any) -> dict[str, int]:
    """How many members in use are in each state."""
    bal = ch.balancer
    return dict(Counter(str(s.state) for s in map(bal.status_of, bal.in_use) if s is not None))


def _import_bare() -> None:
    """What any client process of this kind has loaded before it makes a channel: the
    RSS before a scale job's channel ("the bare process") includes these."""
    import grpc
    import grpc.aio  # noqa: F401
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: F401

    import eagle
    import eagle.aio  # noqa: F401


def _scale_sync(spec: dict[str, Any], client: ClientSpec) -> dict[str, Any]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    _import_bare()
    endpoints: list[str] = spec["endpoints"]
    n = len(endpoints)
    window = float(spec.get("window", 5.0))
    gc.collect()
    rss0 = rss_kib()
    cpu_a = cpu_seconds()
    t_start = monotonic()
    out: dict[str, Any] = {"n": n, "client": client.label}
    keep: list[Any] = []
    if client.is_eagle:
        ch = build_sync_channel(client, endpoints)
        keep.append(ch)
        deadline = t_start + 60
        while monotonic() < deadline:
            if all_probed(ch):
                break
            time.sleep(0.01 if n <= 1024 else 0.1)
        out["all_probed_s"] = monotonic() - t_start
        out["startup_cpu_s"] = cpu_seconds() - cpu_a
        time.sleep(float(spec.get("settle", 1.0)))  # let the jittered schedule spread out
        rss1 = rss_kib()
        skipped0 = SKIPS.skipped
        c0 = cpu_seconds()
        t0 = monotonic()
        time.sleep(window)
        elapsed = monotonic() - t0
        c1 = cpu_seconds()
        out["states"] = _states(ch)
        out["in_use"] = len(ch.balancer.in_use)
        st = [ch.balancer.status_of(k) for k in ch.balancer.in_use]
        lat = sorted(s.last_latency for s in st if s is not None and s.last_latency is not None)
        out["probe_latency_p50_ms"] = 1000 * lat[len(lat) // 2] if lat else None
        out["probe_latency_max_ms"] = 1000 * lat[-1] if lat else None
        out["ticks_skipped"] = SKIPS.skipped - skipped0
        out["cpu_per_s"] = (c1 - c0) / elapsed
        rss2 = rss_kib()
        ch.close()
    else:
        # bare grpcio: one channel per endpoint, each connected by one health Check; with
        # variant "watch", each then also holds one Health/Watch stream open, with the
        # keepalive of scale-watch-ka: what grpcio alone costs a sync client that keeps a
        # stream open to every member (each such channel runs a thread that wakes every
        # 200 ms), eagle's floor in sync watch mode
        watch = client.extra.get("variant") == "watch"
        opts: list[tuple[str, int]] = [("grpc.enable_http_proxy", 0)]
        if watch:
            opts += [
                ("grpc.keepalive_time_ms", 1000),
                ("grpc.keepalive_timeout_ms", 1000),
                ("grpc.http2.ping_timeout_ms", 1000),
                ("grpc.http2.max_pings_without_data", 0),
            ]
        chans = [grpc.insecure_channel(e, options=opts) for e in endpoints]
        keep.extend(chans)
        req = health_pb2.HealthCheckRequest(service="")
        futs = [health_pb2_grpc.HealthStub(c).Check.future(req, timeout=30) for c in chans]
        ok = 0
        for f in futs:
            with contextlib.suppress(Exception):
                f.result()
                ok += 1
        out["connected"] = ok
        if watch:
            streams = [health_pb2_grpc.HealthStub(c).Watch(req) for c in chans]
            keep.extend(streams)
            out["streams_open"] = sum(1 for s in streams if next(s, None) is not None)
        out["all_probed_s"] = monotonic() - t_start
        out["startup_cpu_s"] = cpu_seconds() - cpu_a
        time.sleep(float(spec.get("settle", 1.0)))
        rss1 = rss_kib()
        c0 = cpu_seconds()
        t0 = monotonic()
        time.sleep(window)
        elapsed = monotonic() - t0
        out["cpu_per_s"] = (cpu_seconds() - c0) / elapsed
        rss2 = rss_kib()
        for c in chans:
            c.close()
    out["rss_before_kib"] = rss0
    out["rss_after_kib"] = max(rss1, rss2)
    out["rss_growth_mib"] = (max(rss1, rss2) - rss0) / 1024
    out["kib_per_endpoint"] = (max(rss1, rss2) - rss0) / n
    out["max_rss_kib"] = max_rss_kib()
    return out


def _scale_aio(spec: dict[str, Any], client: ClientSpec) -> dict[str, Any]:
    endpoints: list[str] = spec["endpoints"]
    n = len(endpoints)
    window = float(spec.get("window", 5.0))

    _import_bare()

    async def main() -> dict[str, Any]:
        gc.collect()
        rss0 = rss_kib()
        cpu_a = cpu_seconds()
        t_start = monotonic()
        out: dict[str, Any] = {"n": n, "client": client.label}
        ch = build_aio_channel(client, endpoints)
        deadline = t_start + 60
        while monotonic() < deadline:
            if all_probed(ch):
                break
            await asyncio.sleep(0.01 if n <= 1024 else 0.1)
        out["all_probed_s"] = monotonic() - t_start
        out["startup_cpu_s"] = cpu_seconds() - cpu_a
        await asyncio.sleep(float(spec.get("settle", 1.0)))
        rss1 = rss_kib()
        skipped0 = SKIPS.skipped
        c0 = cpu_seconds()
        t0 = monotonic()
        await asyncio.sleep(window)
        elapsed = monotonic() - t0
        c1 = cpu_seconds()
        out["states"] = _states(ch)
        out["in_use"] = len(ch.balancer.in_use)
        st = [ch.balancer.status_of(k) for k in ch.balancer.in_use]
        lat = sorted(s.last_latency for s in st if s is not None and s.last_latency is not None)
        out["probe_latency_p50_ms"] = 1000 * lat[len(lat) // 2] if lat else None
        out["probe_latency_max_ms"] = 1000 * lat[-1] if lat else None
        out["ticks_skipped"] = SKIPS.skipped - skipped0
        out["cpu_per_s"] = (c1 - c0) / elapsed
        rss2 = rss_kib()
        await ch.close()
        out["rss_before_kib"] = rss0
        out["rss_after_kib"] = max(rss1, rss2)
        out["rss_growth_mib"] = (max(rss1, rss2) - rss0) / 1024
        out["kib_per_endpoint"] = (max(rss1, rss2) - rss0) / n
        out["max_rss_kib"] = max_rss_kib()
        return out

    return asyncio.run(main())


# ------------------------------------------------------------------------ detect job

#: what each watched member must reach to count as detected
_DETECTED = {"crash": ("UNREACHABLE",), "drain": ("NOT_SERVING",), "freeze": ("UNREACHABLE",)}


def _detect_poll(ch: Any, watch: dict[str, str], seen: dict[str, float]) -> bool:
    now = monotonic()
    for fault, ep in watch.items():
        st = ch.balancer.status_of(ep)
        if fault not in seen and st is not None and st.state.name in _DETECTED[fault]:
            seen[fault] = now
    return len(seen) == len(watch)


def detect_cost(spec: dict[str, Any], client: ClientSpec) -> dict[str, Any]:
    """Detection over many members: build the channel, wait until every member was probed
    and the watched ones serve, settle, then write ``ready_file``; the parent injects the
    faults (crash, drain, freeze of one member each) and this polls the channel's status
    every 10 ms until each watched member reached its state (or ``timeout``). Times are
    monotonic (system-wide), so the parent subtracts its fault times."""
    endpoints: list[str] = spec["endpoints"]
    watch: dict[str, str] = spec["watch"]
    settle = float(spec.get("settle", 2.0))
    timeout = float(spec.get("timeout", 15.0))
    ready_file = spec["ready_file"]

    def ready(ch: Any) -> bool:
        serving = (ch.balancer.status_of(ep) for ep in watch.values())
        return all(s is not None and s.serving for s in serving) and all_probed(ch)

    def announce() -> float:
        with open(ready_file, "w") as f:
            f.write("ready")
        return monotonic()

    seen: dict[str, float] = {}
    if client.mode == "aio":

        async def main() -> float:
            ch = build_aio_channel(client, endpoints)
            deadline = monotonic() + 90
            while not ready(ch):
                if monotonic() > deadline:
                    raise RuntimeError("members never all probed and serving")
                await asyncio.sleep(0.05)
            await asyncio.sleep(settle)
            t_ready = announce()
            while not _detect_poll(ch, watch, seen) and monotonic() < t_ready + timeout:
                await asyncio.sleep(0.01)
            await ch.close()
            return t_ready

        t_ready = asyncio.run(main())
    else:
        ch = build_sync_channel(client, endpoints)
        deadline = monotonic() + 90
        while not ready(ch):
            if monotonic() > deadline:
                raise RuntimeError("members never all probed and serving")
            time.sleep(0.05)
        time.sleep(settle)
        t_ready = announce()
        while not _detect_poll(ch, watch, seen) and monotonic() < t_ready + timeout:
            time.sleep(0.01)
        ch.close()
    return {"client": client.label, "n": len(endpoints), "ready_at": t_ready, "seen": seen}


# ------------------------------------------------------------------------ idle job


def idle_cost(spec: dict[str, Any], client: ClientSpec, window: float) -> dict[str, Any]:
    """CPU of this process while one ready channel over the endpoints does nothing."""
    endpoints: list[str] = spec["endpoints"]
    settle = float(spec.get("settle", 2.0))
    method = Method({"method": "echo"})

    def measure(sleep: Callable[[float], Any]) -> dict[str, Any]:
        c0 = cpu_seconds()
        t0 = monotonic()
        sleep(window)
        elapsed = monotonic() - t0
        return {"cpu_s": cpu_seconds() - c0, "elapsed_s": elapsed}

    if client.mode == "aio":

        async def main() -> dict[str, Any]:
            ch = build_aio_channel(client, endpoints)
            deadline = monotonic() + 30
            if client.is_eagle:
                while not all(s.serving for s in ch.status().values()):
                    if monotonic() > deadline:
                        raise RuntimeError("members never SERVING")
                    await asyncio.sleep(0.02)
            for _ in range(len(endpoints)):
                await method.multicallable(ch)(method.ok, timeout=5)
            await asyncio.sleep(settle)
            c0 = cpu_seconds()
            t0 = monotonic()
            await asyncio.sleep(window)
            res = {"cpu_s": cpu_seconds() - c0, "elapsed_s": monotonic() - t0}
            await ch.close()
            return res

        res = asyncio.run(main())
    else:
        ch = build_sync_channel(client, endpoints)
        deadline = monotonic() + 30
        if client.is_eagle:
            while not all(s.serving for s in ch.status().values()):
                if monotonic() > deadline:
                    raise RuntimeError("members never SERVING")
                time.sleep(0.02)
        call = method.multicallable(ch)
        for _ in range(len(endpoints)):
            call(method.ok, timeout=5)
        time.sleep(settle)
        res = measure(time.sleep)
        ch.close()
    res["cpu_pct"] = 100.0 * res["cpu_s"] / res["elapsed_s"]
    res["client"] = client.label
    return res


# ------------------------------------------------------------------------ pick job


def pick_cost(spec: dict[str, Any]) -> dict[str, Any]:
    """µs per ``Balancer.pick`` (and per pick + done) over N SERVING members.

    Every case (N, policy) is built first; then 7 rounds each time every case once, in
    turn, so a burst of load from elsewhere on the machine hits all sizes alike; the
    best round of each case is kept.
    """
    from eagle import Config, parse_endpoints
    from eagle.core.balancer import Balancer
    from eagle.core.health import ProbeOutcome, ProbeResult

    method = "/eagle.testing.v1.Echo/Unary"
    budget = float(spec.get("seconds_per_case", 0.4))
    rounds = 7
    cases = []
    for n in spec["sizes"]:
        eps = parse_endpoints(
            [f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}:2379" for i in range(n)]
        )
        for policy in spec["policies"]:
            bal = Balancer(eps, Config.from_dict({"policy": policy}))
            for ep in eps:
                bal.on_probe(ep.raw, ProbeOutcome(ProbeResult.SERVING, 0.001))
            pick, done = bal.pick, bal.done
            for _ in range(2000):
                ep = pick(method)
                if ep is not None:
                    done(ep, "OK", 0.001)
            t = time.perf_counter()
            for _ in range(1000):
                pick(method)
            per = (time.perf_counter() - t) / 1000
            loops = max(1000, int(budget / rounds / max(per, 1e-7)))
            cases.append([n, policy, pick, done, loops, float("inf"), float("inf")])
    for _ in range(rounds):
        for case in cases:
            _, _, pick, done, loops = case[:5]
            t = time.perf_counter()
            for _ in range(loops):
                pick(method)
            case[5] = min(case[5], (time.perf_counter() - t) / loops)
            half = loops // 2
            t = time.perf_counter()
            for _ in range(half):
                ep = pick(method)
                done(ep, "OK", 0.001)
            case[6] = min(case[6], (time.perf_counter() - t) / half)
    return {
        "cases": [
            {
                "n": c[0],
                "policy": c[1],
                "pick_us": c[5] * 1e6,
                "pick_done_us": c[6] * 1e6,
                "loops": c[4],
            }
            for c in cases
        ]
    }


# ------------------------------------------------------------------------ main


def _build_job(spec: dict[str, Any]) -> Any:
    client = ClientSpec.from_json(spec["client"]) if "client" in spec else None
    job = spec["job"]
    if job == "load":
        assert client is not None
        return AioLoad(spec, client) if client.mode == "aio" else SyncLoad(spec, client)
    if job == "watch":
        assert client is not None
        return WatchJob(spec, client)
    return None


def main() -> int:
    line = sys.stdin.readline()
    if not line:
        return 2
    spec = json.loads(line)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    logging.getLogger().addHandler(SKIPS)
    threading.Thread(
        target=_parent_watch,
        args=(int(spec["parent"]), float(spec.get("max_seconds", 900))),
        daemon=True,
    ).start()
    if spec["job"] in ("scale", "detect"):
        raise_nofile()
    job = _build_job(spec)
    info: dict[str, Any] = {}
    if job is not None:
        info = job.warm_up()
    print("READY " + json.dumps(info), flush=True)
    for cmd in sys.stdin:
        parts = cmd.split()
        if not parts:
            continue
        if parts[0] == "QUIT":
            break
        if parts[0] != "GO":
            print(f"ERROR unknown command {cmd!r}", flush=True)
            continue
        t0, duration, outfile = float(parts[1]), float(parts[2]), parts[3]
        try:
            if spec["job"] in ("load", "watch"):
                result = job.run(t0, duration)
            elif spec["job"] == "scale":
                client = ClientSpec.from_json(spec["client"])
                sleep_until(t0)
                if client.mode == "aio":
                    result = _scale_aio(spec, client)
                else:
                    result = _scale_sync(spec, client)
            elif spec["job"] == "pick":
                sleep_until(t0)
                result = pick_cost(spec)
            elif spec["job"] == "detect":
                sleep_until(t0)
                result = detect_cost(spec, ClientSpec.from_json(spec["client"]))
            elif spec["job"] == "idle":
                sleep_until(t0)
                result = idle_cost(spec, ClientSpec.from_json(spec["client"]), duration)
            else:
                raise ValueError(f"unknown job {spec['job']!r}")
        except Exception as exc:
            import traceback

            traceback.print_exc()
            print("ERROR " + json.dumps(repr(exc)), flush=True)
            continue
        with open(outfile, "w") as f:
            json.dump(result, f)
        print("DONE", flush=True)
    if job is not None:
        with contextlib.suppress(Exception):
            job.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
