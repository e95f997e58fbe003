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
=======================================  =========  ===================================

``eagle_endpoint_state`` is read from the channel's status table at scrape time, so it is
never stale and follows ``update_endpoints``. Counters are fed by an
:class:`eagle.hooks.Observer`; the retry, pick and stream-move counters count the member
the attempt or stream was on.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..core.health import ProbeOutcome, ProbeResult
from ..core.observers import Observer
from ..core.status import State, Transition

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = [
    "DEFAULT_BUCKETS",
    "MetricsServer",
    "PrometheusMetrics",
    "instrument",
    "start_http_server",
]

#: probe latency buckets in seconds: loopback (sub-ms) up to a slow WAN member
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)

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

    def __init__(self, prefix: str) -> None:
        self._name = f"{prefix}_endpoint_state"
        self._lock = threading.Lock()
        self._channels: dict[str, weakref.ref[Any]] = {}

    def attach(self, name: str, channel: Any) -> None:
        with self._lock:
            old = self._channels.get(name)
            live = old() if old is not None else None
            if live is not None and live is not channel and not getattr(live, "closed", False):
                raise ValueError(f"a channel named {name!r} is already instrumented")
            self._channels[name] = weakref.ref(channel)

    def detach(self, name: str, channel: Any) -> None:
        with self._lock:
            ref = self._channels.get(name)
            if ref is not None and ref() in (channel, None):
                del self._channels[name]

    def _family(self) -> Any:
        _prometheus()
        from prometheus_client.core import GaugeMetricFamily

        return GaugeMetricFamily(
            self._name,
            "Effective state of each member: 1 for its current state, 0 for the others.",
            labels=["channel", "endpoint", "state"],
        )

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        fam = self._family()
        with self._lock:
            items = list(self._channels.items())
        for name, ref in items:
            ch = ref()
            if ch is None or getattr(ch, "closed", False):
                continue
            for endpoint, st in ch.status().items():
                for state in State:
                    fam.add_metric([name, endpoint, state.value], 1.0 if st.state is state else 0.0)
        return [fam]


class _ChannelObserver(Observer):
    """Feeds one channel's events into the shared metric families."""

    def __init__(self, metrics: PrometheusMetrics, name: str) -> None:
        self._m = metrics
        self._name = name
        # per-endpoint children, looked up once (labels() takes a lock and builds a tuple)
        self._picks: dict[str, Any] = {}

    def on_probe(self, endpoint: str, outcome: ProbeOutcome) -> None:
        m = self._m
        m.probes.labels(self._name, endpoint, outcome.result.value).inc()
        if outcome.result is not ProbeResult.UNREACHABLE:
            m.probe_duration.labels(self._name, endpoint).observe(outcome.latency)

    def on_transition(self, transition: Transition) -> None:
        self._m.transitions.labels(self._name, transition.endpoint, transition.new.value).inc()

    def on_pick(self, endpoint: str | None, method: str) -> None:
        if endpoint is None:
            self._m.no_member.labels(self._name).inc()
            return
        child = self._picks.get(endpoint)
        if child is None:
            child = self._m.picks.labels(self._name, endpoint)
            self._picks[endpoint] = child
        child.inc()

    def on_retry(self, endpoint: str, method: str, code: str) -> None:
        self._m.retries.labels(self._name, endpoint, code).inc()

    def on_budget_refusal(self, endpoint: str, method: str, code: str) -> None:
        self._m.budget_refusals.labels(self._name, endpoint).inc()

    def on_ejection(self, endpoint: str, reason: str) -> None:
        self._m.ejections.labels(self._name, endpoint).inc()

    def on_stream_move(self, endpoint: str, reason: str) -> None:
        self._m.stream_moves.labels(self._name, endpoint).inc()


class PrometheusMetrics:
    """eagle's metric families in one Prometheus registry; instrument channels with
    :meth:`instrument`.

    ``registry`` defaults to ``prometheus_client.REGISTRY``. ``prefix`` replaces
    ``eagle`` in every metric name. Raises ``ImportError`` naming the package to install
    when ``prometheus-client`` is missing.
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
        ep = ["channel", "endpoint"]
        self.probe_duration = prom.Histogram(
            f"{prefix}_probe_duration_seconds",
            "Latency of health probes that got an answer, in seconds.",
            ep,
            registry=reg,
            buckets=tuple(buckets),
        )
        self.probes = prom.Counter(
            f"{prefix}_probes",
            "Health probes by result (SERVING, NOT_SERVING, UNREACHABLE).",
            [*ep, "result"],
            registry=reg,
        )
        self.transitions = prom.Counter(
            f"{prefix}_state_transitions",
            "Changes of a member's effective state, by the state entered.",
            [*ep, "state"],
            registry=reg,
        )
        self.picks = prom.Counter(
            f"{prefix}_picks", "Attempts placed on each member.", ep, registry=reg
        )
        self.no_member = prom.Counter(
            f"{prefix}_picks_without_member",
            "Attempts for which no member could serve.",
            ["channel"],
            registry=reg,
        )
        self.retries = prom.Counter(
            f"{prefix}_retries",
            "Failed attempts on each member that eagle retried, by status code.",
            [*ep, "code"],
            registry=reg,
        )
        self.budget_refusals = prom.Counter(
            f"{prefix}_retry_budget_refusals",
            "Failed attempts that were not retried because the retry budget was spent.",
            ep,
            registry=reg,
        )
        self.ejections = prom.Counter(
            f"{prefix}_ejections", "Outlier ejections of each member.", ep, registry=reg
        )
        self.stream_moves = prom.Counter(
            f"{prefix}_stream_moves",
            "Streams the watchdog ended on a member that left SERVING.",
            ep,
            registry=reg,
        )
        self._states = _StateCollector(prefix)
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
        balancer = getattr(channel, "balancer", None)
        if balancer is None:
            raise TypeError(f"instrument: expected an eagle channel, got {type(channel).__name__}")
        self._states.attach(name, channel)
        remove_observer = balancer.add_observer(_ChannelObserver(self, name))

        def stop() -> None:
            remove_observer()
            self._states.detach(name, channel)

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
