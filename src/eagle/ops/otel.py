"""OpenTelemetry metrics and traces for eagle channels (the optional ``eagle-grpc[otel]``
extra, which needs only ``opentelemetry-api``).

``opentelemetry`` is imported only when an adapter is created; ``import eagle`` never
needs it. Without it, :class:`OtelMetrics` and :class:`OtelTracing` raise an
``ImportError`` that says which package to install.

Usage::

    import eagle, eagle.ops.otel

    ch = eagle.insecure_channel("a:2379,b:2379,c:2379")
    stop = eagle.ops.otel.instrument(ch, name="kv")   # the global meter and tracer providers

The metrics are eagle's metric catalogue (:data:`eagle.ops.telemetry.CATALOGUE`), fed by
the same observer as the Prometheus adapter (:class:`eagle.ops.telemetry.MetricsObserver`):

=================================  ===============  ==========================================
instrument                         type, unit       attributes (all: ``grpc.target``)
=================================  ===============  ==========================================
``eagle.endpoint.state``           gauge, {bool}       ``eagle.endpoint``, ``eagle.endpoint.state``
``eagle.probe.duration``           histogram, s     ``eagle.endpoint``
``eagle.probes``                   counter          ``eagle.endpoint``, ``eagle.probe.result``
``eagle.endpoint.transitions``     counter          ``eagle.endpoint``, ``eagle.endpoint.state``
``eagle.lb.picks``                 counter          ``eagle.endpoint``, ``grpc.method``
``eagle.lb.picks_without_member``  counter          ``grpc.method``
``eagle.client.retries``           counter          ``eagle.endpoint``, ``grpc.method``,
                                                    ``grpc.status``
``eagle.client.retry_budget_``     counter          ``eagle.endpoint``, ``grpc.method``,
``refusals``                                        ``grpc.status``
``eagle.endpoint.ejections``       counter          ``eagle.endpoint``
``eagle.client.stream_moves``      counter          ``eagle.endpoint``
``eagle.client.call.duration``     histogram, s     ``grpc.method``, ``grpc.status``
``eagle.client.calls``             counter          ``grpc.method``, ``grpc.status``,
                                                    ``eagle.attempts``
=================================  ===============  ==========================================

``grpc.target`` is the ``name`` given to :func:`instrument` (default: the channel's
endpoints as given, comma-separated). Counters are cumulative sums read when the reader
collects (asynchronous counters); the call path only queues its counts and the call's
duration, which a background thread and every collection apply (:class:`_Deferred`);
probe durations are recorded when the probe ends.

Next to grpc's own metrics (``grpc_observability.OpenTelemetryPlugin``, gRFC A66): grpc
sees each of eagle's sub-channels as a channel whose ``grpc.target`` is one member, and
every attempt eagle makes as a call on it, so ``grpc.client.attempt.*`` and
``grpc.client.call.*`` count *attempts*. eagle's ``eagle.client.call.*`` count the calls
the application made on the eagle channel, across members, retries and hedges. No name
is recorded by both.

Traces: with a tracer provider set, each call gets a ``CLIENT`` span named
``package.Service/Method`` with OpenTelemetry's RPC attributes (``rpc.system`` ``grpc``,
``rpc.service``, ``rpc.method``, ``rpc.grpc.status_code``), the final member
(``eagle.endpoint``, ``server.address``, ``server.port``), ``eagle.attempts``, and one
``eagle.attempt`` event per attempt (member, status, how far it got, whether and why the
call went on). The span's parent is the application's current span when the call starts.
eagle neither injects nor strips metadata: a ``traceparent`` reaches the servers only if
the application's own instrumentation (e.g. a client interceptor) puts it there.

Cost: an adapter whose provider is the API's no-op (no SDK set up when
:meth:`OtelMetrics.instrument` or :meth:`OtelTracing.instrument` runs) registers nothing,
so eagle's call path is unchanged; set up the SDK before instrumenting.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import __version__
from ..core.calls import AttemptEnd, CallReport
from ..core.observers import CallTracer, Observer
from ..core.retry import Delivery
from ..endpoints import parse_endpoints
from .telemetry import (
    CALL_DURATION,
    CATALOGUE,
    CHANNEL,
    ENDPOINT,
    ENDPOINT_STATE,
    STATE,
    ChannelSet,
    Kind,
    Metric,
    MetricsObserver,
    balancer_of,
    default_name,
    grpc_method,
)

__all__ = [
    "SCOPE",
    "OtelMetrics",
    "OtelTracing",
    "instrument",
    "status_code_value",
]

log = logging.getLogger("eagle.ops.otel")

#: the instrumentation scope (meter and tracer name) of everything eagle records
SCOPE = "eagle"

#: the span event recorded for each attempt
ATTEMPT_EVENT = "eagle.attempt"

_INSTALL_HINT = (
    "eagle.ops.otel needs the opentelemetry-api package: "
    "pip install 'eagle-grpc[otel]' (or pip install opentelemetry-api)"
)


def _require_api() -> None:
    try:
        import opentelemetry.metrics
        import opentelemetry.trace  # noqa: F401
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc


def _noop_meter_provider(provider: Any) -> bool:
    """True for the API's own no-op providers: the explicit NoOpMeterProvider, and the
    proxy the API hands out while no SDK provider is set."""
    from opentelemetry import metrics

    if isinstance(provider, metrics.NoOpMeterProvider):
        return True
    try:
        from opentelemetry.metrics._internal import _ProxyMeterProvider
    except ImportError:  # a future API without the private proxy class
        return type(provider).__name__ == "_ProxyMeterProvider"
    return isinstance(provider, _ProxyMeterProvider)


def _noop_tracer_provider(provider: Any) -> bool:
    """True for the API's own no-op tracer providers (explicit, or the proxy)."""
    from opentelemetry import trace

    return isinstance(provider, trace.NoOpTracerProvider | trace.ProxyTracerProvider)


# ---------------------------------------------------------------------- metrics
class _Deferred:
    """Measurements taken off the call path.

    An OpenTelemetry SDK histogram record costs several microseconds (it cleans and
    hashes the attributes every time), the largest part of the adapter's cost on an
    asyncio channel's event loop; even a locked counter update is a microsecond. So the
    call path only appends to a queue: ``(tally, key)`` for a count, ``(instrument, value,
    attributes)`` for a histogram value (``deque.append`` is thread-safe and takes no
    lock). A background thread applies them every :attr:`INTERVAL` seconds, while callers
    wait on the network, and every collection applies what is queued first (the
    asynchronous instruments' callbacks drain the queues before the SDK reads its
    storage), so a reader never misses a measurement. The thread ends after a second
    with nothing to do and starts again with the next measurement. Histogram values
    recorded this way carry no exemplar (they are recorded outside the call's context).
    """

    INTERVAL = 0.1
    #: past this many queued measurements the caller applies them itself (a process
    #: forked from one with the thread has none)
    LIMIT = 65536
    #: idle wake-ups before the thread ends
    IDLE = 10

    def __init__(self) -> None:
        #: guards the tallies: applied here, read by the counters' callbacks
        self.lock = threading.Lock()
        self._counts: collections.deque[tuple[dict[tuple[str, ...], int], tuple[str, ...]]] = (
            collections.deque()
        )
        self._values: collections.deque[tuple[Any, float, dict[str, str]]] = collections.deque()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def count(self, tally: dict[tuple[str, ...], int], key: tuple[str, ...]) -> None:
        """Queue one count of ``key`` in ``tally``."""
        queue = self._counts
        queue.append((tally, key))
        if self._thread is None:
            self._start()
        if len(queue) > self.LIMIT:
            self.drain()

    def put(self, instrument: Any, value: float, attrs: dict[str, str]) -> None:
        """Queue one histogram value."""
        queue = self._values
        queue.append((instrument, value, attrs))
        if self._thread is None:
            self._start()
        if len(queue) > self.LIMIT:
            self.drain()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._run, name="eagle-otel-recorder", daemon=True)
            self._thread = thread
        thread.start()

    def drain(self) -> None:
        """Apply every queued measurement now."""
        counts = self._counts
        if counts:
            with self.lock:
                while True:
                    try:
                        tally, key = counts.popleft()
                    except IndexError:
                        break
                    tally[key] = tally.get(key, 0) + 1
        values = self._values
        while True:
            try:
                instrument, value, attrs = values.popleft()
            except IndexError:
                return
            try:
                instrument.record(value, attrs)
            except Exception:
                log.exception("eagle.ops.otel: recording a histogram value failed")

    def _busy(self) -> bool:
        return bool(self._counts) or bool(self._values)

    def _run(self) -> None:
        idle = 0
        while True:
            time.sleep(self.INTERVAL)
            if self._busy():
                idle = 0
                self.drain()
                continue
            idle += 1
            if idle < self.IDLE:
                continue
            with self._start_lock:
                if not self._busy():
                    self._thread = None
                    return


class _Sink:
    """One channel's measurements: counter tallies (read by the asynchronous counters'
    callbacks) and histogram records, with attribute dicts built once per series. Counts
    and the per-call histogram go through :class:`_Deferred`; probe durations (recorded
    on eagle's prober, not on a call) are recorded at once."""

    __slots__ = ("_attrs", "_deferred", "_hist", "_name", "_tallies")

    def __init__(self, name: str, histograms: dict[Metric, Any], deferred: _Deferred) -> None:
        self._name = name
        self._hist = histograms
        self._deferred = deferred
        self._tallies: dict[Metric, dict[tuple[str, ...], int]] = {
            m: {} for m in CATALOGUE if m.kind is Kind.COUNTER
        }
        self._attrs: dict[Metric, dict[tuple[str, ...], dict[str, str]]] = {
            m: {} for m in CATALOGUE
        }

    def attributes(self, metric: Metric, values: tuple[str, ...]) -> dict[str, str]:
        """The attribute dict of one series (made once; never mutated afterwards)."""
        cache = self._attrs[metric]
        attrs = cache.get(values)
        if attrs is None:
            attrs = {CHANNEL.otel: self._name}
            for label, value in zip(metric.labels, values, strict=True):
                attrs[label.otel] = value
            cache[values] = attrs
        return attrs

    def add(self, metric: Metric, values: tuple[str, ...]) -> None:
        self._deferred.count(self._tallies[metric], values)

    def record(self, metric: Metric, values: tuple[str, ...], value: float) -> None:
        if metric is CALL_DURATION:
            self._deferred.put(self._hist[metric], value, self.attributes(metric, values))
        else:
            self._hist[metric].record(value, self.attributes(metric, values))

    def observations(self, metric: Metric) -> list[tuple[int, dict[str, str]]]:
        """``(total, attributes)`` of every series of the counter ``metric``."""
        with self._deferred.lock:
            items = list(self._tallies[metric].items())
        return [(n, self.attributes(metric, values)) for values, n in items]


class OtelMetrics:
    """eagle's metrics as OpenTelemetry instruments of one meter provider; instrument
    channels with :meth:`instrument`.

    ``meter_provider`` defaults to the global one (``opentelemetry.metrics``). When it is
    the API's no-op (no SDK provider set up yet), ``enabled`` is False and
    :meth:`instrument` registers nothing. Raises ``ImportError`` naming the package to
    install when ``opentelemetry-api`` is missing.
    """

    def __init__(self, meter_provider: Any = None) -> None:
        _require_api()
        from opentelemetry import metrics

        provider = metrics.get_meter_provider() if meter_provider is None else meter_provider
        self.meter_provider: Any = provider
        self.enabled = not _noop_meter_provider(provider)
        self._channels = ChannelSet()
        self._lock = threading.Lock()
        self._sinks: tuple[_Sink, ...] = ()
        self._deferred = _Deferred()
        self.instruments: dict[Metric, Any] = {}
        if self.enabled:
            self._create(provider.get_meter(SCOPE, __version__))

    def _create(self, meter: Any) -> None:
        from opentelemetry.metrics import CallbackOptions, Observation

        def counter_callback(metric: Metric) -> Callable[[CallbackOptions], Iterable[Any]]:
            def callback(_options: CallbackOptions) -> Iterator[Observation]:
                self._deferred.drain()  # queued histogram values, before the SDK reads
                for sink in self._sinks:
                    for total, attrs in sink.observations(metric):
                        yield Observation(total, attrs)

            return callback

        def state_callback(_options: CallbackOptions) -> Iterator[Observation]:
            self._deferred.drain()
            keys = (CHANNEL.otel, ENDPOINT.otel, STATE.otel)
            for name, endpoint, state, value in self._channels.states():
                yield Observation(value, dict(zip(keys, (name, endpoint, state), strict=True)))

        for m in CATALOGUE:
            if m.kind is Kind.STATE:
                assert m is ENDPOINT_STATE
                inst = meter.create_observable_gauge(
                    m.otel, callbacks=[state_callback], unit=m.unit, description=m.description
                )
            elif m.kind is Kind.COUNTER:
                inst = meter.create_observable_counter(
                    m.otel, callbacks=[counter_callback(m)], unit=m.unit, description=m.description
                )
            else:
                inst = meter.create_histogram(
                    m.otel,
                    unit=m.unit,
                    description=m.description,
                    explicit_bucket_boundaries_advisory=m.buckets,
                )
            self.instruments[m] = inst

    def instrument(self, channel: Any, name: str | None = None) -> Callable[[], None]:
        """Record ``channel``'s metrics with ``grpc.target`` = ``name`` (default: its
        endpoints as given, comma-separated).

        ``channel`` is an ``eagle.Channel`` or ``eagle.aio.Channel``. Returns a function
        that stops recording it: its counters leave the export then, not when the channel
        closes (so their last counts are still collected), so call it for a channel you
        closed if you make many. ``ValueError`` when another live channel already uses
        ``name``. With a no-op meter provider nothing is registered and the function does
        nothing.
        """
        balancer = balancer_of(channel, "instrument")
        if not self.enabled:
            log.debug("eagle.ops.otel: no meter provider is set up; metrics stay off")
            return _nothing
        label = default_name(channel) if name is None else name
        self._channels.attach(label, channel)
        histograms = {m: i for m, i in self.instruments.items() if m.kind is Kind.HISTOGRAM}
        sink = _Sink(label, histograms, self._deferred)
        with self._lock:
            self._sinks = (*self._sinks, sink)
        remove_observer = balancer.add_observer(MetricsObserver(sink))

        def stop() -> None:
            remove_observer()
            self._channels.detach(label, channel)
            with self._lock:
                self._sinks = tuple(s for s in self._sinks if s is not sink)

        return stop


def _nothing() -> None:
    """What stopping an adapter that registered nothing does."""


# ----------------------------------------------------------------------- traces
_STATUS_VALUES: dict[str, int] = {}


def status_code_value(code: str) -> int:
    """The numeric gRPC status code of a status name (``rpc.grpc.status_code``); 2
    (UNKNOWN) for a name grpc does not know."""
    if not _STATUS_VALUES:
        import grpc

        for sc in grpc.StatusCode:
            _STATUS_VALUES[sc.name] = int(sc.value[0])
    return _STATUS_VALUES.get(code, 2)


def _server(endpoint: str) -> tuple[str, int] | None:
    """``server.address`` and ``server.port`` of a member, None when it has no port
    (a unix socket) or cannot be parsed."""
    try:
        [ep] = parse_endpoints(endpoint)
    except ValueError:
        return None
    if ep.port == 0:
        return ep.host, 0
    return ep.host, ep.port


class _CallSpan(CallTracer):
    """The span of one call: an event per attempt, attributes and status at the end."""

    __slots__ = ("_n", "_observer", "_sent_before", "span")

    def __init__(self, observer: _SpanObserver, span: Any) -> None:
        self._observer = observer
        self.span = span
        self._n = 0
        self._sent_before: Delivery | None = None

    def on_attempt(self, attempt: AttemptEnd) -> None:
        n = self._n = self._n + 1
        attrs: dict[str, Any] = {
            "eagle.endpoint": attempt.endpoint,
            "grpc.status": attempt.code,
            "rpc.grpc.status_code": status_code_value(attempt.code),
            "eagle.attempt.number": n,
            "eagle.attempt.duration": attempt.duration,
            # gRFC A72's attempt span attributes, on the attempt's event here
            "previous-rpc-attempts": n - 1,
            "transparent-retry": self._sent_before is Delivery.NOT_SENT,
        }
        if attempt.delivery is not None:
            attrs["eagle.attempt.delivery"] = attempt.delivery.name
        if attempt.retried:
            attrs["eagle.attempt.retried"] = True
            attrs["eagle.attempt.backoff"] = attempt.backoff
        if attempt.give_up is not None:
            attrs["eagle.attempt.give_up"] = attempt.give_up.name
            attrs["eagle.attempt.give_up_reason"] = attempt.give_up.value
        if attempt.hedged:
            attrs["eagle.attempt.hedged"] = True
        if not attempt.hedged:
            self._sent_before = attempt.delivery
        self.span.add_event(ATTEMPT_EVENT, attrs)

    def on_end(self, report: CallReport, code: str, duration: float, attempts: int) -> None:
        span = self.span
        span.set_attribute("rpc.grpc.status_code", status_code_value(code))
        span.set_attribute("eagle.attempts", attempts)
        endpoint = report.endpoint
        if endpoint is not None:
            span.set_attribute("eagle.endpoint", endpoint)
            server = self._observer.server_of(endpoint)
            if server is not None:
                span.set_attribute("server.address", server[0])
                if server[1]:
                    span.set_attribute("server.port", server[1])
        if report.outcome_unknown:
            span.set_attribute("eagle.outcome_unknown", True)
        if report.give_up is not None:
            span.set_attribute("eagle.give_up", report.give_up.name)
        if code != "OK":
            from opentelemetry.trace import Status, StatusCode

            reason = f"{code}: {report.reason}" if report.reason else code
            span.set_status(Status(StatusCode.ERROR, reason))
        span.end()


class _SpanObserver(Observer):
    """Starts a span for every call of one channel."""

    def __init__(self, tracer: Any, name: str) -> None:
        from opentelemetry.trace import SpanKind

        self._tracer = tracer
        self._name = name
        self._kind = SpanKind.CLIENT
        self._methods: dict[str, tuple[str, dict[str, str]]] = {}
        self._servers: dict[str, tuple[str, int] | None] = {}

    def server_of(self, endpoint: str) -> tuple[str, int] | None:
        if endpoint not in self._servers:
            if len(self._servers) >= 4096:
                return _server(endpoint)
            self._servers[endpoint] = _server(endpoint)
        return self._servers[endpoint]

    def _method(self, method: str) -> tuple[str, dict[str, str]]:
        found = self._methods.get(method)
        if found is None:
            full = grpc_method(method)
            service, _, name = full.rpartition("/")
            attrs = {
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": name,
                "grpc.target": self._name,
            }
            found = (full, attrs)
            if len(self._methods) < 4096:
                self._methods[method] = found
        return found

    def on_call_start(self, method: str) -> CallTracer | None:
        span_name, attrs = self._method(method)
        span = self._tracer.start_span(span_name, kind=self._kind, attributes=attrs)
        if not span.is_recording():
            return None  # sampled out: nothing more to record
        return _CallSpan(self, span)


class OtelTracing:
    """A span per call of the instrumented channels; instrument them with
    :meth:`instrument`.

    ``tracer_provider`` defaults to the global one (``opentelemetry.trace``). When it is
    the API's no-op (no SDK provider set up yet), ``enabled`` is False and
    :meth:`instrument` registers nothing. Raises ``ImportError`` naming the package to
    install when ``opentelemetry-api`` is missing.
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        _require_api()
        from opentelemetry import trace

        provider = trace.get_tracer_provider() if tracer_provider is None else tracer_provider
        self.tracer_provider: Any = provider
        self.enabled = not _noop_tracer_provider(provider)
        self._tracer = provider.get_tracer(SCOPE, __version__) if self.enabled else None

    def instrument(self, channel: Any, name: str | None = None) -> Callable[[], None]:
        """Trace every call of ``channel`` (spans carry ``grpc.target`` = ``name``,
        default: its endpoints as given). Returns a function that stops it. With a no-op
        tracer provider nothing is registered and the function does nothing."""
        balancer = balancer_of(channel, "instrument")
        if self._tracer is None:
            log.debug("eagle.ops.otel: no tracer provider is set up; traces stay off")
            return _nothing
        label = default_name(channel) if name is None else name
        remove: Callable[[], None] = balancer.add_observer(_SpanObserver(self._tracer, label))
        return remove


# ------------------------------------------------------------------ one call does it
_DEFAULT_METRICS: dict[int, OtelMetrics] = {}
_DEFAULT_LOCK = threading.Lock()


def _metrics_for(meter_provider: Any) -> OtelMetrics:
    """One :class:`OtelMetrics` per meter provider (its instruments are made once)."""
    from opentelemetry import metrics

    provider = metrics.get_meter_provider() if meter_provider is None else meter_provider
    with _DEFAULT_LOCK:
        found = _DEFAULT_METRICS.get(id(provider))
        if found is not None and found.meter_provider is provider:
            return found
        made = OtelMetrics(provider)
        if made.enabled:
            _DEFAULT_METRICS[id(provider)] = made
        return made


def instrument(
    channel: Any,
    name: str | None = None,
    *,
    meter_provider: Any = None,
    tracer_provider: Any = None,
    metrics: bool = True,
    traces: bool = True,
) -> Callable[[], None]:
    """Record ``channel``'s metrics and trace its calls with OpenTelemetry.

    ``meter_provider`` and ``tracer_provider`` default to the global ones; a provider
    that is the API's no-op is skipped at no cost. ``name`` is the ``grpc.target`` of
    every series and span (default: the channel's endpoints as given, comma-separated).
    Returns a function that stops both. See :class:`OtelMetrics` and
    :class:`OtelTracing`.
    """
    _require_api()
    stops: list[Callable[[], None]] = []
    try:
        if metrics:
            stops.append(_metrics_for(meter_provider).instrument(channel, name))
        if traces:
            stops.append(OtelTracing(tracer_provider).instrument(channel, name))
    except BaseException:
        for stop in stops:
            stop()
        raise

    def stop_all() -> None:
        for stop in stops:
            stop()

    return stop_all
