"""The clients the suite compares, and every eagle configuration it uses.

A :class:`ClientSpec` is plain data (it crosses into a worker subprocess as JSON). The
worker builds the real channel from it with :func:`build_sync_channel` or
:func:`build_aio_channel`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# --------------------------------------------------------------------- eagle configs

ECHO_UNARY = "/eagle.testing.v1.Echo/Unary"
ETCD_RANGE = "/etcdserverpb.KV/Range"

#: Every eagle configuration the suite uses, by name. The report prints each one.
EAGLE_CONFIGS: dict[str, dict[str, Any]] = {
    # eagle's own defaults: what a user gets with config=None
    "default": {},
    # issue 2 / issue 5 hang target: health.interval 0.2 s, everything else default
    "hi0.2": {"health": {"interval": 0.2}},
    # the same with Echo/Unary declared idempotent (it is a read): eagle then abandons an
    # attempt stuck on a member the prober has taken out and re-sends it elsewhere
    "hi0.2-idem": {"health": {"interval": 0.2}, "retry": {"idempotent_methods": [ECHO_UNARY]}},
    # issue 3 / issue 5 hang target: per-try timeout; a per-try timeout is only retried for
    # methods declared idempotent (eagle never re-sends a call that may have reached a
    # server otherwise), so Echo/Unary is declared idempotent
    "pertry": {
        "health": {"interval": 0.2},
        "retry": {"per_try_timeout": 0.25, "idempotent_methods": [ECHO_UNARY]},
    },
    # issue 3 slow target: power of two choices on peak-EWMA latency
    "p2c": {"policy": "p2c"},
    # retry storm: Echo/Unary declared idempotent so server-side UNAVAILABLE is retried
    # (without it eagle never retries an attempt that reached a server: 1.0 attempts/call)
    "idem": {"retry": {"idempotent_methods": [ECHO_UNARY]}},
    # partition: etcd membership-aware health, linearizable Range declared idempotent
    "etcd": {
        "membership": "etcd",
        "health": {"interval": 0.2},
        "retry": {"idempotent_methods": [ETCD_RANGE]},
    },
    # scale: every endpoint probed once a second (no_traffic_interval off: the scale
    # windows make no calls, and the row measures probing at 1 s)
    "scale": {"health": {"interval": 1.0, "no_traffic_interval": None}},
    # scale, health.mode watch for any server: Health/Watch streams push drains, a Check
    # with a deadline every watch_check_interval (2.5 s) finds frozen members, Checks at once
    # on members whose calls stall
    "scale-watch": {"health": {"mode": "watch", "no_traffic_interval": None}},
    # scale, health.mode watch where the servers allow HTTP/2 pings every second (the
    # test servers permit them every 100 ms): keepalive breaks the Watch stream of a
    # frozen member within ~2 s, so a Check every 30 s is enough
    "scale-watch-ka": {
        "health": {"mode": "watch", "no_traffic_interval": None, "watch_check_interval": 30.0},
        "keepalive": {"time": 1.0, "timeout": 1.0},
    },
    # the fault matrix with subsetting on, as a user would turn it on (A68 random
    # subsetting, the default size of 20: the 3 members are all in it)
    "subset": {"subset": {"mode": "random"}},
    # subsetting at 10,000 endpoints: A68 random subsetting, 20 members, health.mode watch
    "scale-subset": {
        "subset": {"mode": "random", "size": 20},
        "health": {"mode": "watch", "no_traffic_interval": None},
    },
}

# --------------------------------------------------------------------- grpcio setups

#: never route loopback through an http proxy from the environment
LOCAL_OPTIONS: list[tuple[str, Any]] = [("grpc.enable_http_proxy", 0)]

_RR = {"loadBalancingConfig": [{"round_robin": {}}]}
_RR_HC = {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
_RETRY_POLICY = {
    "maxAttempts": 3,
    "initialBackoff": "0.025s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
_RR_HC_RETRY = {**_RR_HC, "methodConfig": [{"name": [{}], "retryPolicy": _RETRY_POLICY}]}
_RR_HC_RETRY_THROTTLE = {**_RR_HC_RETRY, "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}}

#: keepalive tuned to catch a frozen member: ping every second, fail after 1 s without an
#: ack (grpcio 1.85 needs grpc.http2.ping_timeout_ms for that, see DESIGN.md). The test
#: servers permit pings every 100 ms, with or without calls.
_TUNED_KEEPALIVE: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 1000),
    ("grpc.http2.ping_timeout_ms", 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]

#: grpcio setups by name: (target kind, service config or None, extra options)
GRPC_SETUPS: dict[str, tuple[str, dict[str, Any] | None, list[tuple[str, Any]]]] = {
    "plain": ("first", None, []),
    "pick_first": ("multi", None, []),
    "rr": ("multi", _RR, []),
    "rr_hc": ("multi", _RR_HC, []),
    "rr_hc_tuned": ("multi", _RR_HC, _TUNED_KEEPALIVE),
    "rr_retry": ("multi", _RR_HC_RETRY, [("grpc.enable_retries", 1)]),
    "rr_retry_throttle": ("multi", _RR_HC_RETRY_THROTTLE, [("grpc.enable_retries", 1)]),
}

GRPC_DESCRIPTIONS = {
    "plain": "one `grpc.insecure_channel` to the first endpoint (the one faults hit)",
    "pick_first": "`ipv4:a,b,c` multi-address target, default `pick_first` policy",
    "rr": "`ipv4:a,b,c` + `round_robin` (no health checking)",
    "rr_hc": "`ipv4:a,b,c` + `round_robin` + `healthCheckConfig` (health `Watch` stream)",
    "rr_hc_tuned": "`rr_hc` + keepalive 1 s, `keepalive_timeout_ms` 1000, "
    "`grpc.http2.ping_timeout_ms` 1000, pings without calls: the strongest native setup",
    "rr_retry": "`rr_hc` + gRPC `retryPolicy` (maxAttempts 3, 25 ms x2 backoff, UNAVAILABLE)",
    "rr_retry_throttle": "`rr_retry` + `retryThrottling` (maxTokens 10, tokenRatio 0.1)",
}


def grpc_target_and_options(setup: str, endpoints: list[str]) -> tuple[str, list[tuple[str, Any]]]:
    """The target string and channel options of one grpcio setup over ``endpoints``."""
    kind, service_config, extra = GRPC_SETUPS[setup]
    target = endpoints[0] if kind == "first" else "ipv4:" + ",".join(endpoints)
    options = list(LOCAL_OPTIONS) + list(extra)
    if service_config is not None:
        options.append(("grpc.service_config", json.dumps(service_config)))
    return target, options


# --------------------------------------------------------------------- client specs


@dataclass(frozen=True)
class ClientSpec:
    """One client: eagle (with a named config) or a grpcio setup, sync or asyncio."""

    label: str
    family: str  # eagle | grpc
    mode: str = "sync"  # sync | aio
    config: str | None = None  # eagle: a key of EAGLE_CONFIGS
    setup: str | None = None  # grpc: a key of GRPC_SETUPS
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClientSpec:
        return cls(**data)

    @property
    def is_eagle(self) -> bool:
        return self.family == "eagle"

    def describe(self) -> str:
        if self.is_eagle:
            shell = "eagle.aio.insecure_channel" if self.mode == "aio" else "eagle.insecure_channel"
            otel = self.extra.get("otel")
            extra = f" + `eagle.ops.otel` ({otel}, SDK providers)" if otel else ""
            return f"`{shell}`, config `{self.config}`{extra}"
        assert self.setup is not None
        prefix = "grpc.aio: " if self.mode == "aio" else ""
        return prefix + GRPC_DESCRIPTIONS[self.setup]


def eagle(mode: str, config: str = "default", otel: str | None = None) -> ClientSpec:
    """An eagle client; ``otel`` ("metrics", "traces" or "both") instruments its channel
    with :mod:`eagle.ops.otel` over a real OpenTelemetry SDK (see :func:`instrument_otel`)."""
    label = f"eagle-{mode}" + ("" if config == "default" else f"[{config}]")
    if otel is None:
        return ClientSpec(label=label, family="eagle", mode=mode, config=config)
    return ClientSpec(
        label=f"{label}+otel-{otel}",
        family="eagle",
        mode=mode,
        config=config,
        extra={"otel": otel},
    )


#: what an instrumented benchmark channel keeps alive (its SDK providers)
_OTEL_PROVIDERS: list[Any] = []


def instrument_otel(kind: str, channel: Any) -> None:
    """Instrument ``channel`` with eagle's OpenTelemetry adapter as an application would:
    an SDK meter provider whose periodic reader collects every second (into an exporter
    that drops the data, so only the SDK's own work is measured), and for traces an SDK
    tracer provider sampling every call, spans batched into an exporter that drops them."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    import eagle.ops.otel

    class DropMetrics(MetricExporter):  # type: ignore[misc]
        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kw: Any) -> Any:
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kw: Any) -> None:
            return None

    class DropSpans(SpanExporter):  # type: ignore[misc]
        def export(self, spans: Any) -> Any:
            return SpanExportResult.SUCCESS

    meters = tracers = None
    if kind in ("metrics", "both"):
        reader = PeriodicExportingMetricReader(DropMetrics(), export_interval_millis=1000)
        meters = MeterProvider(metric_readers=[reader])
    if kind in ("traces", "both"):
        tracers = TracerProvider()
        tracers.add_span_processor(BatchSpanProcessor(DropSpans()))
    _OTEL_PROVIDERS.extend(p for p in (meters, tracers) if p is not None)
    eagle.ops.otel.instrument(
        channel,
        "bench",
        meter_provider=meters,
        tracer_provider=tracers,
        metrics=meters is not None,
        traces=tracers is not None,
    )


#: call kinds a load job can make besides unary Echo: label suffix -> worker method
STREAM_METHODS = {"cstream": "echo_client_stream", "bidi": "echo_bidi"}


def streamed(client: ClientSpec, kind: str) -> ClientSpec:
    """``client`` making client-streaming (``cstream``) or bidi (``bidi``) Echo calls."""
    return ClientSpec(
        label=f"{client.label}{{{kind}}}",
        family=client.family,
        mode=client.mode,
        config=client.config,
        setup=client.setup,
        extra={**client.extra, "method": STREAM_METHODS[kind]},
    )


def grpc_client(setup: str, mode: str = "sync") -> ClientSpec:
    name = setup.replace("_", "-")
    label = f"grpc-{name}" if mode == "sync" else f"grpc-aio-{name}"
    return ClientSpec(label=label, family="grpc", mode=mode, setup=setup)


#: the native clients every fault scenario compares against (issue 5)
NATIVE = [
    grpc_client("plain"),
    grpc_client("pick_first"),
    grpc_client("rr_hc"),
    grpc_client("rr_hc_tuned"),
]

#: the baseline every ratio in the fault matrix is taken against
BASELINE = "grpc-rr-hc"


def matches(label: str, wanted: list[str] | None) -> bool:
    """Whether ``label`` is selected by ``--clients`` (names or prefixes; None = all)."""
    if not wanted:
        return True
    return any(label == w or label.startswith(w) for w in wanted)


def build_sync_channel(spec: ClientSpec, endpoints: list[str]) -> Any:
    """Build the sync channel a spec describes."""
    import grpc

    if spec.is_eagle:
        import eagle as eagle_mod

        assert spec.config is not None
        channel = eagle_mod.insecure_channel(
            endpoints, config=EAGLE_CONFIGS[spec.config], options=LOCAL_OPTIONS
        )
        if spec.extra.get("otel"):
            instrument_otel(spec.extra["otel"], channel)
        return channel
    assert spec.setup is not None
    target, options = grpc_target_and_options(spec.setup, endpoints)
    return grpc.insecure_channel(target, options=options)


def build_aio_channel(spec: ClientSpec, endpoints: list[str]) -> Any:
    """Build the asyncio channel a spec describes (call inside the running loop)."""
    import grpc

    if spec.is_eagle:
        import eagle as eagle_mod

        assert spec.config is not None
        channel = eagle_mod.aio.insecure_channel(
            endpoints, config=EAGLE_CONFIGS[spec.config], options=LOCAL_OPTIONS
        )
        if spec.extra.get("otel"):
            instrument_otel(spec.extra["otel"], channel)
        return channel
    assert spec.setup is not None
    target, options = grpc_target_and_options(spec.setup, endpoints)
    return grpc.aio.insecure_channel(target, options=options)
