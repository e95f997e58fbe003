"""Run by tests/test_otel.py in a process of its own: grpc's OpenTelemetry plugin
(``grpc_observability``) is registered for the whole process, next to eagle's adapter, so
it must not touch the pytest process.

Three scenarios on real servers (a member killed, a member drained with streams open, a
retry storm where every member answers UNAVAILABLE), each on its own LocalCluster so its
members are its own ``grpc.target`` values in grpc's series. Prints one JSON document:
what the application saw, every metric point of the SDK reader (eagle's and grpc's), and
every finished span.

    python tests/_otel_scenarios.py
"""

from __future__ import annotations

import collections
import json
import sys
import time
from typing import Any

import grpc
import grpc_observability
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import eagle
import eagle.ops.otel
from eagle.testing.cluster import LocalCluster
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

UNARY = "/eagle.testing.v1.Echo/Unary"
#: every load loop below is bounded by this many calls and by this deadline
CALLS = 40
SCENARIO_DEADLINE_S = 60.0

FAST_HEALTH = {"interval": 0.1, "timeout": 0.3, "unhealthy_threshold": 1}


def wait_for(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


class App:
    """What the application saw, per scenario."""

    def __init__(self) -> None:
        self.codes: collections.Counter[str] = collections.Counter()
        self.give_ups: collections.Counter[str] = collections.Counter()
        self.attempts = 0
        self.per_call: collections.Counter[str] = collections.Counter()

    def call(self, stub: Any, request: echo_pb2.EchoRequest) -> None:
        try:
            _, call = stub.Unary.with_call(request, timeout=3)
        except grpc.RpcError as err:
            self.failed(err)
            return
        self.succeeded(call)

    def wait(self, future: Any) -> None:
        try:
            future.result(timeout=10)
        except grpc.RpcError as err:
            self.failed(err)
            return
        self.succeeded(future)

    def failed(self, err: Any) -> None:
        self.codes[err.code().name] += 1
        report = eagle.call_info(err)
        assert report is not None
        self.attempts += len(report.attempts)
        self.per_call[str(len(report.attempts))] += 1
        if report.give_up is not None:
            self.give_ups[report.give_up.name] += 1

    def succeeded(self, call: Any) -> None:
        self.codes["OK"] += 1
        report = eagle.call_info(call)
        assert report is not None
        self.attempts += len(report.attempts)
        self.per_call[str(len(report.attempts))] += 1

    def as_json(self, cluster: LocalCluster, **extra: Any) -> dict[str, Any]:
        return {
            "endpoints": cluster.endpoints,
            "codes": dict(self.codes),
            "give_ups": dict(self.give_ups),
            "attempts": self.attempts,
            "per_call": dict(self.per_call),
            **extra,
        }


def snapshot(reader: InMemoryMetricReader, name: str) -> list[dict[str, Any]]:
    """eagle's points for the channel ``name``, collected now (the state gauge is read
    from open channels only)."""
    return [
        p for p in _points(reader) if p["scope"] == "eagle" and p["attrs"]["grpc.target"] == name
    ]


def kill(
    meters: MeterProvider, tracers: TracerProvider, reader: InMemoryMetricReader
) -> dict[str, Any]:
    """Calls before and after member 0 is SIGKILLed, and three slow ones in flight (one on
    each member, round robin) when it is: the one on member 0 is re-sent elsewhere."""
    app = App()
    config = {"health": FAST_HEALTH, "retry": {"idempotent_methods": [UNARY]}}
    with LocalCluster(3) as cluster, eagle.insecure_channel(cluster.endpoints, config=config) as ch:
        eagle.ops.otel.instrument(ch, "kill", meter_provider=meters, tracer_provider=tracers)
        stub = echo_pb2_grpc.EchoStub(ch)  # type: ignore[no-untyped-call]
        wait_for(lambda: all(s.serving for s in ch.status().values()), 10, "all serving")
        for i in range(CALLS // 2):
            app.call(stub, echo_pb2.EchoRequest(message=f"k{i}"))
        slow = echo_pb2.EchoRequest(message="slow", sleep_ms=300)
        in_flight = [stub.Unary.future(slow, timeout=5) for _ in range(3)]
        cluster.kill(0)
        for future in in_flight:
            app.wait(future)
        for i in range(CALLS // 2 - 3):
            app.call(stub, echo_pb2.EchoRequest(message=f"l{i}"))
        killed = cluster.endpoints[0]
        wait_for(lambda: ch.status()[killed].state is eagle.State.UNREACHABLE, 10, "kill seen")
        return app.as_json(cluster, killed=killed, after_kill=snapshot(reader, "kill"))


def drain(
    meters: MeterProvider, tracers: TracerProvider, reader: InMemoryMetricReader
) -> dict[str, Any]:
    """Streams open on every member, member 1 drained: its stream moves, calls avoid it."""
    app = App()
    config = {"health": FAST_HEALTH}
    with LocalCluster(3) as cluster, eagle.insecure_channel(cluster.endpoints, config=config) as ch:
        eagle.ops.otel.instrument(ch, "drain", meter_provider=meters, tracer_provider=tracers)
        stub = echo_pb2_grpc.EchoStub(ch)  # type: ignore[no-untyped-call]
        wait_for(lambda: all(s.serving for s in ch.status().values()), 10, "all serving")
        streams = []
        for _ in range(3):  # round robin: one endless stream per member
            s = stub.ServerStream(echo_pb2.EchoRequest(count=0, interval_ms=50), timeout=30)
            next(s)
            streams.append(s)
        for i in range(CALLS // 2):
            app.call(stub, echo_pb2.EchoRequest(message=f"d{i}"))
        drained = cluster.endpoints[1]
        cluster.drain(1)
        wait_for(lambda: ch.status()[drained].state is eagle.State.NOT_SERVING, 10, "drain seen")
        at_drain = snapshot(reader, "drain")
        for i in range(CALLS // 2):
            app.call(stub, echo_pb2.EchoRequest(message=f"e{i}"))
        for s in streams:
            s.cancel()
        return app.as_json(
            cluster, drained=drained, at_drain=at_drain, end=snapshot(reader, "drain")
        )


def storm(
    meters: MeterProvider, tracers: TracerProvider, reader: InMemoryMetricReader
) -> dict[str, Any]:
    """Every member answers UNAVAILABLE; Unary is declared idempotent, so eagle retries
    until attempts or the retry budget run out."""
    app = App()
    config = {
        "health": {"interval": 0.2},
        "retry": {
            "idempotent_methods": [UNARY],
            "max_attempts": 3,
            "initial_backoff": 0.001,
            "max_backoff": 0.005,
            "budget": {"ratio": 0.1, "min_per_second": 2.0, "window": 10.0},
        },
        "outlier": {
            "consecutive_failures": 5,
            "base_ejection_time": 30.0,
            "max_ejection_percent": 34,
        },
    }
    with LocalCluster(3) as cluster, eagle.insecure_channel(cluster.endpoints, config=config) as ch:
        eagle.ops.otel.instrument(ch, "storm", meter_provider=meters, tracer_provider=tracers)
        stub = echo_pb2_grpc.EchoStub(ch)  # type: ignore[no-untyped-call]
        wait_for(lambda: all(s.serving for s in ch.status().values()), 10, "all serving")
        for i in range(CALLS):
            app.call(stub, echo_pb2.EchoRequest(message=f"s{i}", fail_code=14))
        ejected = [ep for ep, st in ch.status().items() if st.state is eagle.State.EJECTED]
        return app.as_json(cluster, ejected=ejected, end=snapshot(reader, "storm"))


def _points(reader: InMemoryMetricReader) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    data = reader.get_metrics_data()
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for dp in m.data.data_points:
                    row: dict[str, Any] = {
                        "scope": sm.scope.name,
                        "name": m.name,
                        "unit": m.unit,
                        "attrs": dict(dp.attributes or {}),
                    }
                    if isinstance(dp, HistogramDataPoint):
                        row.update(
                            count=dp.count,
                            sum=dp.sum,
                            bounds=list(dp.explicit_bounds),
                            buckets=list(dp.bucket_counts),
                        )
                    else:
                        row["value"] = dp.value
                    out.append(row)
    return out


def _grpc_attempts(reader: InMemoryMetricReader, targets: list[str]) -> int:
    return sum(
        p["value"]
        for p in _points(reader)
        if p["name"] == "grpc.client.attempt.started"
        and p["attrs"].get("grpc.method") == UNARY[1:]
        and p["attrs"].get("grpc.target") in targets
    )


def main() -> int:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    spans = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(spans))
    plugin = grpc_observability.OpenTelemetryPlugin(meter_provider=meters)
    plugin.register_global()
    started = time.monotonic()
    scenarios: dict[str, Any] = {}
    try:
        for name, run in (("kill", kill), ("drain", drain), ("storm", storm)):
            scenarios[name] = run(meters, tracers, reader)
            assert time.monotonic() - started < 3 * SCENARIO_DEADLINE_S
        # grpc's plugin exports its measurements in batches (every 0.5 s): wait until it
        # counted as many Unary attempts as the application's reports hold, or give up
        # after the deadline (the test then shows both numbers)
        want = sum(s["attempts"] for s in scenarios.values())
        targets = [ep for s in scenarios.values() for ep in s["endpoints"]]
        deadline = time.monotonic() + 10
        while _grpc_attempts(reader, targets) < want and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        plugin.deregister_global()
    doc = {
        "scenarios": scenarios,
        "points": _points(reader),
        "spans": [
            {
                "name": s.name,
                "kind": s.kind.name,
                "trace_id": s.context.trace_id,
                "parent": None if s.parent is None else s.parent.span_id,
                "attrs": dict(s.attributes or {}),
                "status": s.status.status_code.name,
                "status_description": s.status.description,
                "events": [{"name": e.name, "attrs": dict(e.attributes or {})} for e in s.events],
            }
            for s in spans.get_finished_spans()
        ],
    }
    json.dump(doc, sys.stdout)
    meters.shutdown()
    tracers.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
