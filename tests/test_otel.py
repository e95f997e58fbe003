"""OpenTelemetry: eagle's metrics and spans next to grpc's own A66 metrics.

* grpc's ``OpenTelemetryPlugin`` is process-global, so the scenarios that register it (a
  member killed, a member drained, a retry storm, all on real servers) run in a process
  of their own (``tests/_otel_scenarios.py``) and hand their data back as JSON;
* spans, the application's own ``traceparent`` through eagle, the no-op cost, the shared
  catalogue of both adapters and the CLI's OTel view run here, with providers passed in
  (the global ones are never set in this process).
"""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import prometheus_client
import pytest
from _support import wait_until
from opentelemetry import propagate, trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode

import eagle
import eagle.aio
import eagle.ops.metrics
import eagle.ops.otel
from eagle.core.balancer import Balancer
from eagle.core.calls import AttemptFailure, CallDriver
from eagle.core.health import ProbeOutcome, ProbeResult
from eagle.core.retry import Delivery
from eagle.endpoints import parse_endpoints
from eagle.ops import telemetry
from eagle.ops.cli import main as cli_main
from eagle.testing.cluster import LocalCluster
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs"
UNARY = "eagle.testing.v1.Echo/Unary"


# ------------------------------------------------------------- grpc's plugin beside eagle
@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    """The three scenarios, run once in their own process with grpc's plugin registered."""
    pytest.importorskip(
        "grpc_observability", reason="grpcio-observability is installed by `make venv`"
    )
    out = subprocess.run(
        [sys.executable, str(HERE / "_otel_scenarios.py")],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def _match(p: dict[str, Any], name: str, attrs: dict[str, Any]) -> bool:
    return p["name"] == name and all(p["attrs"].get(k) == v for k, v in attrs.items())


def total(points: list[dict[str, Any]], name: str, **attrs: Any) -> float:
    """Sum of the counter values (or histogram counts) of ``name`` whose attributes
    include ``attrs`` (dots in attribute names are written as ``__``)."""
    want = {k.replace("__", "."): v for k, v in attrs.items()}
    return sum(p.get("value", p.get("count", 0)) for p in points if _match(p, name, want))


def grpc_attempts(world: dict[str, Any], target: str) -> float:
    """grpc's count of Unary attempts on the sub-channel of the member ``target``."""
    points = world["points"]
    return total(points, "grpc.client.attempt.started", grpc__method=UNARY, grpc__target=target)


def states(points: list[dict[str, Any]]) -> dict[str, str]:
    """The state each member is in, from the one-hot ``eagle.endpoint.state`` gauge."""
    out: dict[str, str] = {}
    for p in points:
        if p["name"] == "eagle.endpoint.state" and p["value"] == 1:
            ep = p["attrs"]["eagle.endpoint"]
            assert ep not in out, f"{ep} is in two states"
            out[ep] = p["attrs"]["eagle.endpoint.state"]
    return out


SCENARIOS = ("kill", "drain", "storm")


def test_both_series_present_with_the_documented_names(world: dict[str, Any]) -> None:
    points = world["points"]
    text = (DOCS / "observability.md").read_text()
    grpc_names = {p["name"] for p in points if p["scope"] == "grpc-python"}
    assert {"grpc.client.attempt.started", "grpc.client.attempt.duration"} <= grpc_names
    eagle_points = [p for p in points if p["scope"] == "eagle"]
    documented = {m.otel for m in telemetry.CATALOGUE}
    seen = {p["name"] for p in eagle_points}
    # every instrument but the state gauge (read from open channels only, so checked in
    # the snapshots) and the no-member picks (no scenario has a pick without a member)
    assert seen == documented - {"eagle.endpoint.state", "eagle.lb.picks_without_member"}
    for name in documented:
        assert f"`{name}`" in text, f"docs/observability.md does not document {name}"
    for p in eagle_points:
        assert p["attrs"]["grpc.target"] in SCENARIOS
        assert p["unit"] == next(m.unit for m in telemetry.CATALOGUE if m.otel == p["name"])
    for name in SCENARIOS:
        endpoints = world["scenarios"][name]["endpoints"]
        # grpc sees each member's sub-channel as a channel whose target is the member
        for ep in endpoints:
            assert grpc_attempts(world, ep) >= 1
        # no name is recorded by both: eagle's series never carry a member as grpc.target
        assert not any(
            p["scope"] == "eagle" and p["attrs"]["grpc.target"] in endpoints for p in points
        )
    assert not any(p["scope"] == "eagle" and p["name"].startswith("grpc.") for p in points), (
        "eagle must not record under grpc's names"
    )


@pytest.mark.parametrize("name", SCENARIOS)
def test_call_counts_match_what_the_application_made(world: dict[str, Any], name: str) -> None:
    sc = world["scenarios"][name]
    points = world["points"]
    calls = total(points, "eagle.client.call.duration", grpc__target=name, grpc__method=UNARY)
    assert calls == sum(sc["codes"].values()) > 0
    for code, n in sc["codes"].items():
        got = total(
            points,
            "eagle.client.call.duration",
            grpc__target=name,
            grpc__method=UNARY,
            grpc__status=code,
        )
        assert got == n, (code, got, n)
    assert total(points, "eagle.client.calls", grpc__target=name, grpc__method=UNARY) == calls
    # the calls by how many attempts each made: as the application's reports say
    by_attempts = {
        p["attrs"]["eagle.attempts"]: p["value"]
        for p in points
        if _match(p, "eagle.client.calls", {"grpc.target": name, "grpc.method": UNARY})
        and p["value"]
    }
    by_attempts_app: collections.Counter[str] = collections.Counter()
    for n, count in sc["per_call"].items():
        by_attempts_app[n] += count
    assert by_attempts == dict(by_attempts_app)


def attempts_counted(points: list[dict[str, Any]], name: str) -> float:
    """The attempts ``eagle.client.calls`` counts: each series' attempts times its calls."""
    return sum(
        int(p["attrs"]["eagle.attempts"]) * p["value"]
        for p in points
        if _match(p, "eagle.client.calls", {"grpc.target": name, "grpc.method": UNARY})
    )


@pytest.mark.parametrize("name", SCENARIOS)
def test_attempt_counts_match_grpcs(world: dict[str, Any], name: str) -> None:
    sc = world["scenarios"][name]
    points = world["points"]
    attempts = attempts_counted(points, name)
    picks = total(points, "eagle.lb.picks", grpc__target=name, grpc__method=UNARY)
    by_grpc = sum(grpc_attempts(world, ep) for ep in sc["endpoints"])
    assert attempts == picks == by_grpc == sc["attempts"], (attempts, picks, by_grpc)
    # member by member: eagle's picks are grpc's attempts on that member's sub-channel
    for ep in sc["endpoints"]:
        mine = total(
            points, "eagle.lb.picks", grpc__target=name, eagle__endpoint=ep, grpc__method=UNARY
        )
        assert mine == grpc_attempts(world, ep), ep


def test_kill(world: dict[str, Any]) -> None:
    sc = world["scenarios"]["kill"]
    points = world["points"]
    killed = sc["killed"]
    seen = states(sc["after_kill"])
    assert seen[killed] == "UNREACHABLE"
    assert all(seen[ep] == "SERVING" for ep in sc["endpoints"] if ep != killed)
    assert (
        total(
            points,
            "eagle.endpoint.transitions",
            grpc__target="kill",
            eagle__endpoint=killed,
            eagle__endpoint__state="UNREACHABLE",
        )
        >= 1
    )
    # every call succeeded: the slow call in flight on the killed member lost its
    # connection, and eagle re-sent it (declared idempotent) to another member; grpc saw
    # that attempt fail on the killed member's sub-channel
    assert sc["codes"] == {"OK": 40}
    assert sc["attempts"] > 40
    failed_there = total(
        points,
        "grpc.client.attempt.duration",
        grpc__target=killed,
        grpc__method=UNARY,
        grpc__status="UNAVAILABLE",
    )
    assert failed_there == sc["attempts"] - 40


def test_drain(world: dict[str, Any]) -> None:
    sc = world["scenarios"]["drain"]
    drained = sc["drained"]
    assert states(sc["at_drain"])[drained] == "NOT_SERVING"
    end = sc["end"]
    assert states(end)[drained] == "NOT_SERVING"
    assert (
        total(
            end,
            "eagle.endpoint.transitions",
            eagle__endpoint=drained,
            eagle__endpoint__state="NOT_SERVING",
        )
        == 1
    )
    assert (
        total(end, "eagle.probes", eagle__endpoint=drained, eagle__probe__result="NOT_SERVING") >= 1
    )
    assert total(end, "eagle.probe.duration", eagle__endpoint=drained) >= 1
    # the stream on the drained member was moved; calls after the drain avoid it
    assert total(end, "eagle.client.stream_moves", eagle__endpoint=drained) == 1
    before = total(sc["at_drain"], "eagle.lb.picks", eagle__endpoint=drained, grpc__method=UNARY)
    after = total(end, "eagle.lb.picks", eagle__endpoint=drained, grpc__method=UNARY)
    assert before >= 1 and after == before
    assert sc["codes"] == {"OK": 40}


def test_retry_storm(world: dict[str, Any]) -> None:
    sc = world["scenarios"]["storm"]
    points = world["points"]
    calls = sum(sc["codes"].values())
    assert sc["codes"] == {"UNAVAILABLE": calls}
    retries = total(
        points, "eagle.client.retries", grpc__target="storm", grpc__status="UNAVAILABLE"
    )
    assert retries == sc["attempts"] - calls > 0  # no hedging: every extra attempt is a retry
    refusals = total(points, "eagle.client.retry_budget_refusals", grpc__target="storm")
    assert refusals == sc["give_ups"].get("BUDGET", 0) > 0
    assert sum(sc["give_ups"].values()) == calls
    # outlier detection ejected a member (max_ejection_percent 34: one of three)
    assert len(sc["ejected"]) == 1
    [ejected] = sc["ejected"]
    assert total(points, "eagle.endpoint.ejections", eagle__endpoint=ejected) == 1
    assert states(sc["end"])[ejected] == "EJECTED"
    # the duration histogram's buckets are gRFC A66's latency buckets
    [hist] = [
        p
        for p in points
        if _match(p, "eagle.client.call.duration", {"grpc.target": "storm", "grpc.method": UNARY})
    ]
    assert hist["bounds"] == list(telemetry.A66_LATENCY_BUCKETS)
    # the storm's calls gave up after 3 attempts (max_attempts) or when the budget was spent
    assert total(points, "eagle.client.calls", grpc__target="storm", eagle__attempts="3") == (
        sc["per_call"].get("3", 0)
    )


def _spans(world: dict[str, Any], target: str) -> list[dict[str, Any]]:
    return [
        s for s in world["spans"] if s["attrs"].get("grpc.target") == target and s["name"] == UNARY
    ]


def test_spans_follow_the_rpc_conventions_with_an_event_per_attempt(world: dict[str, Any]) -> None:
    for name in SCENARIOS:
        sc = world["scenarios"][name]
        spans = _spans(world, name)
        assert len(spans) == sum(sc["codes"].values())
        assert sum(len(s["events"]) for s in spans) == sc["attempts"]
        for s in spans:
            a = s["attrs"]
            assert s["kind"] == "CLIENT"
            assert a["rpc.system"] == "grpc"
            assert a["rpc.service"] == "eagle.testing.v1.Echo"
            assert a["rpc.method"] == "Unary"
            assert a["eagle.attempts"] == len(s["events"])
            numbers = [e["attrs"]["eagle.attempt.number"] for e in s["events"]]
            assert numbers == list(range(1, len(numbers) + 1))
            if a["rpc.grpc.status_code"] == 0:
                assert s["status"] == "UNSET"
                assert s["events"][-1]["attrs"]["grpc.status"] == "OK"
            else:
                assert s["status"] == "ERROR"
            for e in s["events"][:-1]:
                assert e["name"] == "eagle.attempt"
                assert e["attrs"]["eagle.attempt.retried"] is True
    # the storm: every attempt but each call's last was retried; the last says why not
    give_ups: collections.Counter[str] = collections.Counter()
    for s in _spans(world, "storm"):
        assert s["attrs"]["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
        last = s["events"][-1]["attrs"]
        assert "eagle.attempt.retried" not in last
        assert last["eagle.attempt.give_up"] == s["attrs"]["eagle.give_up"]
        assert s["status_description"].startswith("UNAVAILABLE: ")
        give_ups[last["eagle.attempt.give_up"]] += 1
        for e in s["events"]:
            assert e["attrs"]["eagle.attempt.delivery"] == "ANSWERED"
            assert e["attrs"]["rpc.grpc.status_code"] == 14
    assert dict(give_ups) == world["scenarios"]["storm"]["give_ups"]
    # the kill: the attempt in flight on the killed member failed and went elsewhere
    killed = world["scenarios"]["kill"]["killed"]
    moved = [s for s in _spans(world, "kill") if len(s["events"]) > 1]
    assert len(moved) == world["scenarios"]["kill"]["attempts"] - 40
    assert moved, "no call was moved off the killed member"
    for s in moved:
        assert s["status"] == "UNSET"
        first, last = s["events"][0]["attrs"], s["events"][-1]["attrs"]
        assert first["eagle.endpoint"] == killed
        assert first["grpc.status"] == "UNAVAILABLE"
        assert first["eagle.attempt.delivery"] in ("UNANSWERED", "NOT_SENT")
        assert first["eagle.attempt.retried"] is True
        assert last["grpc.status"] == "OK" and last["eagle.endpoint"] != killed
        assert last["previous-rpc-attempts"] == len(s["events"]) - 1
        assert s["attrs"]["eagle.endpoint"] == last["eagle.endpoint"]


# --------------------------------------------------------------------------- traces
@pytest.fixture
def cluster3() -> Iterator[LocalCluster]:
    with LocalCluster(3) as c:
        yield c


@pytest.fixture
def tracing() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


class _Carrier(list[tuple[str, str]]):
    """grpc metadata as an OpenTelemetry text map carrier."""

    def __setitem__(self, key: Any, value: Any) -> None:  # type: ignore[override]
        self.append((key, value))


class _Details(grpc.ClientCallDetails):  # type: ignore[misc]
    def __init__(self, base: Any, metadata: Any) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = base.wait_for_ready
        self.compression = base.compression


def _inject(details: Any) -> _Details:
    carrier = _Carrier(details.metadata or ())
    propagate.inject(carrier)  # the W3C traceparent of the application's current span
    return _Details(details, carrier)


class TraceparentInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """The application's own instrumentation: injects its current span's traceparent."""

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_inject(details), request)


class AioTraceparentInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """The same for ``grpc.aio`` (whose call details are a named tuple)."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        carrier = _Carrier(tuple(details.metadata or ()))
        propagate.inject(carrier)
        return await continuation(details._replace(metadata=carrier), request)


def _traceparent_ids(value: str) -> tuple[int, int]:
    version, trace_id, span_id, _flags = value.split("-")
    assert version == "00"
    return int(trace_id, 16), int(span_id, 16)


def _eagle_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == UNARY]


def test_span_parent_and_the_applications_traceparent_sync(
    cluster3: LocalCluster, tracing: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = tracing
    app_tracer = provider.get_tracer("app")
    with eagle.insecure_channel(cluster3.endpoints) as ch:
        stop = eagle.ops.otel.instrument(ch, "echo", tracer_provider=provider, metrics=False)
        plain = echo_pb2_grpc.EchoStub(ch)
        traced = echo_pb2_grpc.EchoStub(grpc.intercept_channel(ch, TraceparentInterceptor()))
        with app_tracer.start_as_current_span("app") as app_span:
            reply = traced.Unary(echo_pb2.EchoRequest(message="meta:traceparent"), timeout=5)
            bare = plain.Unary(echo_pb2.EchoRequest(message="meta:traceparent"), timeout=5)
            own = plain.Unary(
                echo_pb2.EchoRequest(message="meta:x-app"), timeout=5, metadata=(("x-app", "v1"),)
            )
        stop()
        plain.Unary(echo_pb2.EchoRequest(message="after stop"), timeout=5)
    ctx = app_span.get_span_context()
    # the server got the application's traceparent, unchanged: eagle injected nothing
    assert _traceparent_ids(reply.message) == (ctx.trace_id, ctx.span_id)
    assert bare.message == ""  # no interceptor, no traceparent: eagle adds none
    assert own.message == "v1"  # and strips nothing
    spans = _eagle_spans(exporter)
    assert len(spans) == 3  # none after stop()
    for s in spans:
        assert s.kind is SpanKind.CLIENT
        assert s.parent is not None and s.parent.span_id == ctx.span_id
        assert s.context.trace_id == ctx.trace_id
        assert s.attributes is not None
        assert s.attributes["rpc.grpc.status_code"] == 0
        assert s.attributes["server.address"] == "127.0.0.1"
        assert f"127.0.0.1:{s.attributes['server.port']}" == s.attributes["eagle.endpoint"]
        assert s.status.status_code is StatusCode.UNSET


def test_span_parent_and_the_applications_traceparent_aio(
    cluster3: LocalCluster, tracing: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = tracing
    app_tracer = provider.get_tracer("app")

    async def run() -> tuple[str, str, Any]:
        async with eagle.aio.insecure_channel(
            cluster3.endpoints, interceptors=[AioTraceparentInterceptor()]
        ) as ch:
            eagle.ops.otel.instrument(ch, "echo-aio", tracer_provider=provider, metrics=False)
            stub = echo_pb2_grpc.EchoStub(ch)

            async def one(tag: str) -> tuple[str, Any]:
                with app_tracer.start_as_current_span(tag) as span:
                    r = await stub.Unary(echo_pb2.EchoRequest(message="meta:traceparent"))
                    return r.message, span.get_span_context()

            (m1, c1), (m2, c2) = await asyncio.gather(one("a"), one("b"))
            return m1, m2, (c1, c2)

    m1, m2, (c1, c2) = asyncio.run(run())
    assert _traceparent_ids(m1) == (c1.trace_id, c1.span_id)
    assert _traceparent_ids(m2) == (c2.trace_id, c2.span_id)
    parents = {s.parent.span_id for s in _eagle_spans(exporter) if s.parent is not None}
    assert parents == {c1.span_id, c2.span_id}  # each task's call under its own span


def test_sampled_out_calls_get_no_tracer(cluster3: LocalCluster) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with eagle.insecure_channel(cluster3.endpoints) as ch:
        eagle.ops.otel.instrument(ch, tracer_provider=provider, metrics=False)
        [observer] = ch.balancer.observers._observers
        assert observer.on_call_start("/eagle.testing.v1.Echo/Unary") is None
        echo_pb2_grpc.EchoStub(ch).Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
    assert exporter.get_finished_spans() == ()


def test_hedged_call_counts_every_attempt(
    cluster3: LocalCluster, tracing: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = tracing
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    config = {
        "hedging": {"delay": 0.02, "max_attempts": 2},
        "retry": {"idempotent_methods": ["/" + UNARY]},
    }
    cluster3.slow(0, 300)
    with eagle.insecure_channel(cluster3.endpoints, config=config) as ch:
        eagle.ops.otel.instrument(ch, "hedge", meter_provider=meters, tracer_provider=provider)
        wait_until(lambda: all(s.serving for s in ch.status().values()), 10, "all serving")
        stub = echo_pb2_grpc.EchoStub(ch)
        for _ in range(6):  # round robin: two of them start on the slow member
            stub.Unary(echo_pb2.EchoRequest(message="h"), timeout=5)
    hedged = [
        s for s in _eagle_spans(exporter) if s.attributes and s.attributes["eagle.attempts"] == 2
    ]
    assert hedged, "no call was hedged"
    for s in hedged:
        # the winner's event; the loser was cancelled when the winner answered
        assert [e.attributes["grpc.status"] for e in s.events if e.attributes] == ["OK"]
    data = reader.get_metrics_data()
    assert data is not None
    calls = {
        dp.attributes["eagle.attempts"]: dp.value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "eagle.client.calls"
        for dp in m.data.data_points
        if isinstance(dp, NumberDataPoint) and dp.attributes
    }
    # every call counted, the hedged ones with both attempts (the cancelled one included)
    want = {"1": 6 - len(hedged), "2": len(hedged)}
    assert calls == {k: v for k, v in want.items() if v}
    meters.shutdown()


# ---------------------------------------------------------------------------- cost
def test_noop_providers_register_nothing() -> None:
    with eagle.insecure_channel("127.0.0.1:1") as ch:
        stop = eagle.ops.otel.instrument(
            ch, meter_provider=NoOpMeterProvider(), tracer_provider=NoOpTracerProvider()
        )
        assert len(ch.balancer.observers) == 0
        assert not ch.balancer.observers.call_start and not ch.balancer.observers.pick
        stop()


def test_global_noop_api_registers_nothing_and_needs_no_sdk() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry.sdk'] = None  # the API alone, as with eagle-grpc[otel]\n"
        "import eagle, eagle.ops.otel\n"
        "with eagle.insecure_channel('127.0.0.1:1') as ch:\n"
        "    stop = eagle.ops.otel.instrument(ch, 'x')\n"
        "    print(len(ch.balancer.observers), bool(ch.balancer.observers.call_start))\n"
        "    stop()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "False"]


def test_import_eagle_needs_no_opentelemetry() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if it were not installed\n"
        "import eagle, eagle.ops.otel\n"
        "try:\n"
        "    eagle.ops.otel.OtelMetrics()\n"
        "except ImportError as exc:\n"
        "    print('ERR', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "ERR eagle.ops.otel needs the opentelemetry-api package" in out.stdout
    assert "eagle-grpc[otel]" in out.stdout
    plain = subprocess.run(
        [sys.executable, "-c", "import sys, eagle; print('opentelemetry' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert plain.stdout.strip() == "False"


# --------------------------------------------------------------- one instrumentation path
class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _CoreChannel:
    """Just what the adapters read from a channel, over a sans-IO balancer."""

    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer
        self.closed = False

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(ep.raw for ep in self.balancer.endpoints)

    def status(self) -> Any:
        return self.balancer.snapshot()


def test_prometheus_and_otel_show_the_same_numbers() -> None:
    clock = _Clock()
    config = eagle.load_config(
        {
            "outlier": {"consecutive_failures": 1, "max_ejection_percent": 50},
            "retry": {
                "idempotent_methods": ["/s.S/M"],
                "budget": {"ratio": 0.0, "min_per_second": 1.0},
            },
        }
    )
    bal = Balancer(parse_endpoints("a:1,b:1"), config, clock=clock)
    ch = _CoreChannel(bal)
    registry = prometheus_client.CollectorRegistry()
    eagle.ops.metrics.PrometheusMetrics(registry).instrument(ch, "core")
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    eagle.ops.otel.OtelMetrics(meters).instrument(ch, "core")

    ok = ProbeOutcome(ProbeResult.SERVING, 0.002)
    refused = ProbeOutcome(ProbeResult.UNREACHABLE, 0.001, "refused", connection_failed=True)
    for ep in ("a:1", "b:1"):
        bal.on_probe(ep, ok)
    for _ in range(3):  # calls that succeed
        drv = CallDriver(bal, "/s.S/M", timeout=5.0, wait_for_ready=False)
        drv.next_step()
        clock.now += 0.01
        drv.succeeded()
        drv.finished("OK")
    drv = CallDriver(bal, "/s.S/M", timeout=5.0, wait_for_ready=False)  # retried, then budget
    for _ in range(3):
        if drv.next_step().kind.name != "SEND":
            continue
        failure = AttemptFailure("UNAVAILABLE", "x", Delivery.ANSWERED)
        if not drv.failed(failure).retry:
            break
        drv.next_step()  # the backoff
    drv.finished("UNAVAILABLE")
    bal.mark_stream_move("a:1", "left rotation")
    for ep in ("a:1", "b:1"):
        bal.on_probe(ep, refused)
    bal.pick("/s.S/M")  # no member

    data = reader.get_metrics_data()
    assert data is not None
    otel: dict[str, list[Any]] = collections.defaultdict(list)
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                otel[m.name].extend(m.data.data_points)
    for metric in telemetry.CATALOGUE:
        prom_name = f"eagle_{metric.prom}"
        points = otel[metric.otel]
        samples = [s for fam in registry.collect() if fam.name == prom_name for s in fam.samples]
        if metric.kind is telemetry.Kind.COUNTER:
            want = sum(s.value for s in samples if s.name == f"{prom_name}_total")
            assert sum(p.value for p in points) == want, metric.key
        elif metric.kind is telemetry.Kind.HISTOGRAM:
            count = sum(s.value for s in samples if s.name == f"{prom_name}_count")
            total_sum = sum(s.value for s in samples if s.name == f"{prom_name}_sum")
            assert sum(p.count for p in points) == count, metric.key
            assert sum(p.sum for p in points) == pytest.approx(total_sum), metric.key
            want = count
        else:
            on = {
                (p.attributes["eagle.endpoint"], p.attributes["eagle.endpoint.state"])
                for p in points
                if p.value == 1
            }
            prom_on = {(s.labels["endpoint"], s.labels["state"]) for s in samples if s.value == 1}
            assert on == prom_on
            assert {ep for ep, _ in on} == {"a:1", "b:1"}
            want = len(on)
        assert want > 0, f"the test made no {metric.key} event"
    meters.shutdown()


# --------------------------------------------------------------------------- the CLI
def test_cli_status_otel_view(cluster3: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    cluster3.drain(1)
    code = cli_main(["status", "--endpoints", cluster3.target, "--otel", "--wait", "5"])
    out = capsys.readouterr().out
    assert code == 0
    eps = cluster3.endpoints
    for i, ep in enumerate(eps):
        state = "NOT_SERVING" if i == 1 else "SERVING"
        line = (
            f'eagle.endpoint.state{{grpc.target="eagle-status",eagle.endpoint="{ep}",'
            f'eagle.endpoint.state="{state}"}} 1'
        )
        assert line in out, out
        assert f'eagle.probes{{grpc.target="eagle-status",eagle.endpoint="{ep}"' in out
    code = cli_main(
        ["status", "--endpoints", cluster3.target, "--otel", "--wait", "5", "-w", "json"]
    )
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    gauge = [p for p in doc["otel"] if p["name"] == "eagle.endpoint.state" and p["value"] == 1]
    assert {
        p["attributes"]["eagle.endpoint"]: p["attributes"]["eagle.endpoint.state"] for p in gauge
    } == {
        eps[0]: "SERVING",
        eps[1]: "NOT_SERVING",
        eps[2]: "SERVING",
    }
    # the CLI set no global provider: still the API's proxy
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def test_deferred_values_are_recorded_and_the_thread_ends_when_idle() -> None:
    from eagle.ops.otel import _Deferred

    class Quick(_Deferred):
        INTERVAL = 0.01
        IDLE = 3

    class Instrument:
        def __init__(self) -> None:
            self.values: list[float] = []

        def record(self, value: float, attrs: dict[str, str]) -> None:
            self.values.append(value)

    inst = Instrument()
    deferred = Quick()
    for i in range(100):
        deferred.put(inst, float(i), {"k": "v"})
    wait_until(lambda: len(inst.values) == 100, 5, "the background thread to record")
    assert inst.values == [float(i) for i in range(100)]
    wait_until(lambda: deferred._thread is None, 5, "the idle thread to end")
    deferred.put(inst, 100.0, {"k": "v"})  # starts again
    wait_until(lambda: len(inst.values) == 101, 5, "a value after the restart")


# ------------------------------------------------------------------ the core's call hooks
class _Follow(eagle.hooks.CallTracer):
    def __init__(self, method: str, log: list[tuple[Any, ...]]) -> None:
        self.method = method
        self.log = log

    def on_attempt(self, attempt: eagle.hooks.AttemptEnd) -> None:
        self.log.append(
            (
                "attempt",
                attempt.endpoint,
                attempt.code,
                attempt.retried,
                attempt.give_up,
                attempt.delivery,
            )
        )

    def on_end(self, report: Any, code: str, duration: float, attempts: int) -> None:
        self.log.append(("end", code, attempts, len(report.attempts)))


class _Starts(eagle.hooks.Observer):
    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    def on_call_start(self, method: str) -> eagle.hooks.CallTracer:
        self.log.append(("start", method))
        return _Follow(method, self.log)


def test_call_tracer_sees_every_attempt_once_with_the_decision() -> None:
    clock = _Clock()
    config = eagle.load_config(
        {
            "retry": {"idempotent_methods": ["/s.S/M"], "max_attempts": 2},
            "outlier": {"enabled": False},
        }
    )
    bal = Balancer(parse_endpoints("a:1,b:1"), config, clock=clock)
    for ep in ("a:1", "b:1"):
        bal.on_probe(ep, ProbeOutcome(ProbeResult.SERVING, 0.001))
    # no observer follows calls: the driver asks nobody
    plain = CallDriver(bal, "/s.S/M", timeout=5.0, wait_for_ready=False)
    assert plain._tracers is None and plain._trace_attempts is None
    starts = _Starts()
    bal.add_observer(starts)
    drv = CallDriver(bal, "/s.S/M", timeout=5.0, wait_for_ready=False)
    first = drv.next_step().endpoint
    failure = AttemptFailure("UNAVAILABLE", "x", Delivery.ANSWERED)
    assert drv.failed(failure).retry
    assert drv.next_step().kind.name == "SLEEP"
    second = drv.next_step().endpoint
    assert second != first
    decision = drv.failed(failure)
    assert not decision.retry
    drv.finished("UNAVAILABLE")
    assert starts.log == [
        ("start", "/s.S/M"),
        ("attempt", first, "UNAVAILABLE", True, None, Delivery.ANSWERED),
        ("attempt", second, "UNAVAILABLE", False, eagle.GiveUp.MAX_ATTEMPTS, Delivery.ANSWERED),
        ("end", "UNAVAILABLE", 2, 2),
    ]
    # cancelled while waiting out the backoff: no attempt was in flight, none is traced
    starts.log.clear()
    drv = CallDriver(bal, "/s.S/M", timeout=5.0, wait_for_ready=False)
    first = drv.next_step().endpoint
    assert drv.failed(failure).retry
    drv.cancelled()
    drv.finished("CANCELLED")
    assert [e[0] for e in starts.log] == ["start", "attempt", "end"]
    assert starts.log[-1][:3] == ("end", "CANCELLED", 1)
    # a tracer that does not follow attempts gets no AttemptEnd built for it
    assert not eagle.hooks.CallTracer.traces_attempts and _Follow.traces_attempts
