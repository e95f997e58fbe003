"""Prometheus metrics for eagle channels (the optional ``eagle-grpc[prometheus]`` extra).

``prometheus-client`` is imported only when an exporter is created; ``import eagle`` never
needs it. Without it, :class:`PrometheusMetrics` raises an ``ImportError`` that says which
package to install.

Usage::

    import eagle, eagle.ops.metrics

    ch = eagle.insecure_channel("a:2379,b:2379,c:2379")
    eagle.ops.metrics.instrument(ch, name="kv")           # default prometheus registry
    server = eagle.ops.metrics.start_http_server(9464)    # or your own exposition

Exported metrics (every series has the labels ``channel``, the ``name`` given to
:func:`instrument`, and ``endpoint``, the endpoint as given to the channel):

=======================================  =========  ===================================
name                                     type       labels besides channel, endpoint
=======================================  =========  ===================================
``eagle_endpoint_state``                 gauge      ``state``: one series per state,
                                                    1 for the member's current state
``eagle_probe_duration_seconds``         histogram  (probes that got an answer)
``eagle_probes_total``                   counter    ``result``: SERVING, NOT_SERVING,
                                                    UNREACHABLE
``eagle_state_transitions_total``        counter    ``state``: the state entered
``eagle_picks_total``                    counter
``eagle_picks_without_member_total``     counter    (no ``endpoint`` label)
``eagle_retries_total``                  counter    ``code``: status of the failed attempt
``eagle_retry_budget_refusals_total``    counter
``eagle_ejections_total``                counter
``eagle_stream_moves_total``             counter
``eagle_client_call_duration_seconds``   histogram  ``method``, ``code`` (no
                                                    ``endpoint``): calls as the
                                                    application saw them
``eagle_client_calls_total``            counter    ``method``, ``code``, ``attempts``
                                                    (no ``endpoint``): calls by how
                                                    many attempts each made
=======================================  =========  ===================================

``eagle_endpoint_state`` is read from the channel's status table at scrape time, so it is
never stale and follows ``update_endpoints``. Counters and histograms are fed by
:class:`eagle.ops.telemetry.MetricsObserver`, the same observer that feeds the
OpenTelemetry adapter (:mod:`eagle.ops.otel`); the retry, pick and stream-move counters
count the member the attempt or stream was on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .telemetry import (
    CATALOGUE,
    ENDPOINT_STATE,
    PROBE_BUCKETS,
    PROBE_DURATION,
    ChannelSet,
    Kind,
    Metric,
    MetricsObserver,
    balancer_of,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric as PromMetric

__all__ = [
    "DEFAULT_BUCKETS",
    "MetricsServer",
    "PrometheusMetrics",
    "instrument",
    "start_http_server",
]

#: probe latency buckets in seconds: loopback (sub-ms) up to a slow WAN member
DEFAULT_BUCKETS: tuple[float, ...] = PROBE_BUCKETS

_INSTALL_HINT = (
    "eagle.ops.metrics needs the prometheus-client package: "
    "pip install 'eagle-grpc[prometheus]' (or pip install prometheus-client)"
)


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return prometheus_client


class _StateCollector:
    """Reads every instrumented channel's status table at scrape time."""

    def __init__(self, prefix: str, channels: ChannelSet) -> None:
        self._name = f"{prefix}_{ENDPOINT_STATE.prom}"
        self._channels = channels

    def _family(self) -> Any:
        _prometheus()
        from prometheus_client.core import GaugeMetricFamily

        return GaugeMetricFamily(
            self._name,
            ENDPOINT_STATE.description,
            labels=["channel", *(label.prom for label in ENDPOINT_STATE.labels)],
        )

    def describe(self) -> Iterable[PromMetric]:
        return [self._family()]

    def collect(self) -> Iterable[PromMetric]:
        fam = self._family()
        for name, endpoint, state, value in self._channels.states():
            fam.add_metric([name, endpoint, state], value)
        return [fam]


class _Sink:
    """One channel's measurements into the shared Prometheus families."""

    __slots__ = ("_children", "_families", "_kept", "_name")

    def __init__(self, metrics: PrometheusMetrics, name: str) -> None:
        self._families = metrics.families
        self._name = name
        self._kept = {m: m.prom_kept for m in metrics.families}
        # children by label values, looked up once (labels() takes a lock and builds a tuple)
        self._children: dict[Metric, dict[tuple[str, ...], Any]] = {m: {} for m in metrics.families}

    def _child(self, metric: Metric, values: tuple[str, ...]) -> Any:
        children = self._children[metric]
        child = children.get(values)
        if child is None:
            kept = self._kept[metric]
            child = self._families[metric].labels(self._name, *(values[i] for i in kept))
            children[values] = child
        return child

    def add(self, metric: Metric, values: tuple[str, ...]) -> None:
        self._child(metric, values).inc()

    def record(self, metric: Metric, values: tuple[str, ...], value: float) -> None:
        self._child(metric, values).observe(value)


class PrometheusMetrics:
    """eagle's metric families in one Prometheus registry; instrument channels with
    :meth:`instrument`.

    ``registry`` defaults to ``prometheus_client.REGISTRY``. ``prefix`` replaces
    ``eagle`` in every metric name; ``buckets`` are the probe duration buckets. Raises
    ``ImportError`` naming the package to install when ``prometheus-client`` is missing.
    The families are eagle's metric catalogue (:data:`eagle.ops.telemetry.CATALOGUE`);
    ``families`` maps each catalogue entry to its family, also reachable as an attribute
    named by the entry's key (``probes``, ``picks``, ``retries`` ...).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        prefix: str = "eagle",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        prom = _prometheus()
        self.registry: CollectorRegistry = prom.REGISTRY if registry is None else registry
        reg = self.registry
        self.families: dict[Metric, Any] = {}
        for m in CATALOGUE:
            if m.kind is Kind.STATE:
                continue
            labels = ["channel", *(m.labels[i].prom for i in m.prom_kept)]
            name = f"{prefix}_{m.prom}"
            if m.kind is Kind.COUNTER:
                fam = prom.Counter(name, m.description, labels, registry=reg)
            else:
                bounds = tuple(buckets) if m is PROBE_DURATION else m.buckets
                fam = prom.Histogram(name, m.description, labels, registry=reg, buckets=bounds)
            self.families[m] = fam
            setattr(self, m.key, fam)
        self._channels = ChannelSet()
        self._states = _StateCollector(prefix, self._channels)
        reg.register(self._states)
        if prefix == "eagle":
            with _DEFAULT_LOCK:
                _DEFAULT.setdefault(id(reg), self)

    def instrument(self, channel: Any, name: str = "default") -> Callable[[], None]:
        """Export ``channel``'s metrics under the label ``channel=name``.

        ``channel`` is an ``eagle.Channel`` or ``eagle.aio.Channel``. Returns a function
        that stops exporting it (its counters keep their last values). ``ValueError`` when
        another live channel already uses ``name``.
        """
        balancer = balancer_of(channel, "instrument")
        self._channels.attach(name, channel)
        remove_observer = balancer.add_observer(MetricsObserver(_Sink(self, name)))

        def stop() -> None:
            remove_observer()
            self._channels.detach(name, channel)

        return stop

    def generate_latest(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        data: bytes = _prometheus().generate_latest(self.registry)
        return data

    def start_http_server(self, port: int = 0, addr: str = "127.0.0.1") -> MetricsServer:
        """Serve ``/metrics`` for this registry on ``addr:port`` (0 = a free port) in a
        daemon thread. Binds loopback by default; pass ``addr="0.0.0.0"`` to expose it."""
        httpd, thread = _prometheus().start_http_server(port, addr=addr, registry=self.registry)
        return MetricsServer(httpd, thread)


class MetricsServer:
    """A running ``/metrics`` HTTP server; :meth:`close` stops it."""

    def __init__(self, httpd: Any, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.host: str = str(httpd.server_address[0])
        self.port: int = int(httpd.server_address[1])

    @property
    def url(self) -> str:
        """The URL of the metrics page."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_DEFAULT: dict[int, PrometheusMetrics] = {}
_DEFAULT_LOCK = threading.Lock()


def _metrics_for(registry: CollectorRegistry | None) -> PrometheusMetrics:
    prom = _prometheus()
    reg = prom.REGISTRY if registry is None else registry
    with _DEFAULT_LOCK:
        m = _DEFAULT.get(id(reg))
        if m is not None and m.registry is reg:
            return m
        _DEFAULT.pop(id(reg), None)
    return PrometheusMetrics(reg)


def instrument(
    channel: Any, name: str = "default", registry: CollectorRegistry | None = None
) -> Callable[[], None]:
    """Export ``channel``'s metrics to ``registry`` (default: the global Prometheus
    registry), creating eagle's metric families there on first use. Returns a function
    that stops exporting it. See :class:`PrometheusMetrics`."""
    return _metrics_for(registry).instrument(channel, name)


def start_http_server(
    port: int = 0, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``registry`` (default: the global one) on ``http://addr:port/metrics`` in a
    daemon thread (0 = a free port). Binds loopback unless ``addr`` says otherwise."""
    prom = _prometheus()
    reg = prom.REGISTRY if registry is None else registry
    httpd, thread = prom.start_http_server(port, addr=addr, registry=reg)
    return MetricsServer(httpd, thread)
