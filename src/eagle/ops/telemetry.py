"""What eagle's metric adapters share: one catalogue of metrics, one observer that turns
eagle's events into measurements, and the member-state series read from status tables.

The Prometheus adapter (:mod:`eagle.ops.metrics`) and the OpenTelemetry adapter
(:mod:`eagle.ops.otel`) are two *sinks* for the same measurements: which event feeds which
metric, with which label values, is decided here once (:class:`MetricsObserver`); a sink
only says how a measurement is stored (a ``prometheus_client`` child, an OpenTelemetry
instrument). Neither adapter imports the other's library, and this module imports
neither.

Names: every :class:`Metric` has a Prometheus name (``eagle_…``, counters get ``_total``
from ``prometheus_client``) and an OpenTelemetry name (``eagle.…``), and every
:class:`Label` a Prometheus label name and an OpenTelemetry attribute key. The
OpenTelemetry names follow gRPC's own conventions where one fits: ``grpc.target``,
``grpc.method`` and ``grpc.status`` are gRFC A66's attributes
(https://github.com/grpc/proposal/blob/master/A66-otel-stats.md), units and histogram
buckets are A66's; eagle's own attributes (``eagle.endpoint`` …) name what gRPC has no
attribute for. See ``docs/observability.md`` for the full table.

Where the lead's subset membership and discovery events plug in: they become two more
entries in :data:`CATALOGUE` (``eagle.subset.members``, an up-down count of the members
this client uses, and ``eagle.discovery.updates``, a counter of membership lists applied)
and two more methods on :class:`MetricsObserver`; both adapters then export them without
further change.
"""

from __future__ import annotations

import enum
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.calls import CallReport
from ..core.health import ProbeOutcome, ProbeResult
from ..core.observers import CallTracer, Observer
from ..core.status import State, Transition

__all__ = [
    "A66_LATENCY_BUCKETS",
    "CATALOGUE",
    "PROBE_BUCKETS",
    "ChannelSet",
    "Kind",
    "Label",
    "Metric",
    "MetricsObserver",
    "Sink",
    "default_name",
    "grpc_method",
    "state_series",
]

#: probe latency buckets in seconds: loopback (sub-ms) up to a slow WAN member
PROBE_BUCKETS: tuple[float, ...] = (
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

#: gRFC A66 "Latency" buckets (seconds), for call durations
A66_LATENCY_BUCKETS: tuple[float, ...] = (
    0,
    0.00001,
    0.00005,
    0.0001,
    0.0003,
    0.0006,
    0.0008,
    0.001,
    0.002,
    0.003,
    0.004,
    0.005,
    0.006,
    0.008,
    0.01,
    0.013,
    0.016,
    0.02,
    0.025,
    0.03,
    0.04,
    0.05,
    0.065,
    0.08,
    0.1,
    0.13,
    0.16,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.65,
    0.8,
    1,
    2,
    5,
    10,
    20,
    50,
    100,
)


class Kind(enum.Enum):
    """How a metric is measured."""

    #: a monotonic count of events
    COUNTER = "counter"
    #: a distribution of values (durations, attempts per call)
    HISTOGRAM = "histogram"
    #: read from the status tables when collected: 1 for a member's current state, 0 for
    #: the others
    STATE = "state"


@dataclass(frozen=True, eq=False)
class Label:
    """One label: its Prometheus name and its OpenTelemetry attribute key."""

    prom: str
    otel: str


#: the channel: the ``name`` given to ``instrument`` (gRFC A66 ``grpc.target``)
CHANNEL = Label("channel", "grpc.target")
#: the member, as given to the channel
ENDPOINT = Label("endpoint", "eagle.endpoint")
#: the full method name without the leading slash (A66 ``grpc.method``)
METHOD = Label("method", "grpc.method")
#: a status code name (A66 ``grpc.status``); ``HEDGE`` for a hedged attempt sent
STATUS = Label("code", "grpc.status")
#: a member state (``eagle.State`` value)
STATE = Label("state", "eagle.endpoint.state")
#: a probe result (``eagle.ProbeResult`` value)
RESULT = Label("result", "eagle.probe.result")
#: how many attempts a call made: "0" ... "9", then "10+"
ATTEMPTS = Label("attempts", "eagle.attempts")


@dataclass(frozen=True, eq=False)
class Metric:
    """One metric of the catalogue.

    ``labels`` are the values :class:`MetricsObserver` passes, in order; every sink puts
    the channel label first. ``prom_labels`` are the ones the Prometheus adapter keeps
    (its label sets predate the OpenTelemetry adapter and stay as they were).
    Compared by identity, so sinks can key dicts by it cheaply.
    """

    key: str
    kind: Kind
    prom: str
    otel: str
    unit: str
    description: str
    labels: tuple[Label, ...] = ()
    prom_labels: tuple[Label, ...] | None = None
    buckets: tuple[float, ...] = ()

    @property
    def prom_kept(self) -> tuple[int, ...]:
        """Indices of the label values the Prometheus adapter keeps."""
        kept = self.labels if self.prom_labels is None else self.prom_labels
        return tuple(i for i, label in enumerate(self.labels) if label in kept)


ENDPOINT_STATE = Metric(
    "endpoint_state",
    Kind.STATE,
    "endpoint_state",
    "eagle.endpoint.state",
    "{bool}",
    "Effective state of each member: 1 for its current state, 0 for the others.",
    (ENDPOINT, STATE),
)
PROBE_DURATION = Metric(
    "probe_duration",
    Kind.HISTOGRAM,
    "probe_duration_seconds",
    "eagle.probe.duration",
    "s",
    "Latency of health probes that got an answer, in seconds.",
    (ENDPOINT,),
    buckets=PROBE_BUCKETS,
)
PROBES = Metric(
    "probes",
    Kind.COUNTER,
    "probes",
    "eagle.probes",
    "{probe}",
    "Health probes by result (SERVING, NOT_SERVING, UNREACHABLE).",
    (ENDPOINT, RESULT),
)
TRANSITIONS = Metric(
    "transitions",
    Kind.COUNTER,
    "state_transitions",
    "eagle.endpoint.transitions",
    "{transition}",
    "Changes of a member's effective state, by the state entered.",
    (ENDPOINT, STATE),
)
PICKS = Metric(
    "picks",
    Kind.COUNTER,
    "picks",
    "eagle.lb.picks",
    "{attempt}",
    "Attempts placed on each member (retries and hedges included).",
    (ENDPOINT, METHOD),
    prom_labels=(ENDPOINT,),
)
NO_MEMBER = Metric(
    "no_member",
    Kind.COUNTER,
    "picks_without_member",
    "eagle.lb.picks_without_member",
    "{pick}",
    "Attempts for which no member could serve.",
    (METHOD,),
    prom_labels=(),
)
RETRIES = Metric(
    "retries",
    Kind.COUNTER,
    "retries",
    "eagle.client.retries",
    "{retry}",
    "Failed attempts on each member that eagle retried, by status code (HEDGE: a hedged "
    "attempt was sent).",
    (ENDPOINT, METHOD, STATUS),
    prom_labels=(ENDPOINT, STATUS),
)
BUDGET_REFUSALS = Metric(
    "budget_refusals",
    Kind.COUNTER,
    "retry_budget_refusals",
    "eagle.client.retry_budget_refusals",
    "{retry}",
    "Failed attempts that were not retried because the retry budget was spent.",
    (ENDPOINT, METHOD, STATUS),
    prom_labels=(ENDPOINT,),
)
EJECTIONS = Metric(
    "ejections",
    Kind.COUNTER,
    "ejections",
    "eagle.endpoint.ejections",
    "{ejection}",
    "Outlier ejections of each member.",
    (ENDPOINT,),
)
STREAM_MOVES = Metric(
    "stream_moves",
    Kind.COUNTER,
    "stream_moves",
    "eagle.client.stream_moves",
    "{stream}",
    "Streams the watchdog ended on a member that left SERVING.",
    (ENDPOINT,),
)
CALL_DURATION = Metric(
    "call_duration",
    Kind.HISTOGRAM,
    "client_call_duration_seconds",
    "eagle.client.call.duration",
    "s",
    "Duration of calls as the application saw them, across all their attempts (retries "
    "and hedges), by final status.",
    (METHOD, STATUS),
    buckets=A66_LATENCY_BUCKETS,
)
CALLS = Metric(
    "calls",
    Kind.COUNTER,
    "client_calls",
    "eagle.client.calls",
    "{call}",
    "Calls as the application saw them, by final status and by how many attempts each "
    "made (the first, retries, hedges and transparent re-sends; 10+ for ten or more).",
    (METHOD, STATUS, ATTEMPTS),
)

#: every metric both adapters export, in the order the docs list them
CATALOGUE: tuple[Metric, ...] = (
    ENDPOINT_STATE,
    PROBE_DURATION,
    PROBES,
    TRANSITIONS,
    PICKS,
    NO_MEMBER,
    RETRIES,
    BUDGET_REFUSALS,
    EJECTIONS,
    STREAM_MOVES,
    CALL_DURATION,
    CALLS,
)


class Sink(Protocol):
    """Where one instrumented channel's measurements go (one per adapter and channel)."""

    def add(self, metric: Metric, values: tuple[str, ...]) -> None:
        """Count one event of the counter ``metric`` with these label values."""

    def record(self, metric: Metric, values: tuple[str, ...], value: float) -> None:
        """Record ``value`` in the histogram ``metric`` with these label values."""


_METHODS: dict[str, str] = {}


def grpc_method(method: str) -> str:
    """A66's ``grpc.method``: the full method name without its leading slash."""
    name = _METHODS.get(method)
    if name is None:
        name = method[1:] if method.startswith("/") else method
        if len(_METHODS) < 4096:
            _METHODS[method] = name
    return name


#: the ``eagle.attempts`` values, by number of attempts
_ATTEMPT_VALUES: tuple[str, ...] = tuple(str(n) for n in range(10))


class _CallMetrics(CallTracer):
    """Counts a call and records its duration when it ends; one per channel follows
    every call (it keeps no per-call state, and follows no attempt).

    The duration is the one synchronous measurement per call: the attempts per call are
    a label of the calls counter, not a second histogram, because an OpenTelemetry SDK
    histogram record costs the call path several microseconds (see benchmarks/otel.py).
    """

    __slots__ = ("_sink",)

    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def on_end(self, report: CallReport, code: str, duration: float, attempts: int) -> None:
        method = grpc_method(report.method)
        sink = self._sink
        sink.record(CALL_DURATION, (method, code), duration)
        n = _ATTEMPT_VALUES[attempts] if attempts < 10 else "10+"
        sink.add(CALLS, (method, code, n))


class MetricsObserver(Observer):
    """Turns one channel's observer events into measurements for ``sink``: the one
    mapping from eagle's events to its metrics, shared by every adapter."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._calls = _CallMetrics(sink)

    def on_probe(self, endpoint: str, outcome: ProbeOutcome) -> None:
        self._sink.add(PROBES, (endpoint, outcome.result.value))
        if outcome.result is not ProbeResult.UNREACHABLE:
            self._sink.record(PROBE_DURATION, (endpoint,), outcome.latency)

    def on_transition(self, transition: Transition) -> None:
        self._sink.add(TRANSITIONS, (transition.endpoint, transition.new.value))

    def on_pick(self, endpoint: str | None, method: str) -> None:
        if endpoint is None:
            self._sink.add(NO_MEMBER, (grpc_method(method),))
        else:
            self._sink.add(PICKS, (endpoint, grpc_method(method)))

    def on_retry(self, endpoint: str, method: str, code: str) -> None:
        self._sink.add(RETRIES, (endpoint, grpc_method(method), code))

    def on_budget_refusal(self, endpoint: str, method: str, code: str) -> None:
        self._sink.add(BUDGET_REFUSALS, (endpoint, grpc_method(method), code))

    def on_ejection(self, endpoint: str, reason: str) -> None:
        self._sink.add(EJECTIONS, (endpoint,))

    def on_stream_move(self, endpoint: str, reason: str) -> None:
        self._sink.add(STREAM_MOVES, (endpoint,))

    def on_call_start(self, method: str) -> CallTracer:
        return self._calls


def state_series(channel: Any) -> Iterator[tuple[str, str, float]]:
    """``(endpoint, state, value)`` for every member of ``channel`` and every state: 1.0
    for the member's current state, 0.0 for the others (the ``endpoint_state`` series)."""
    for endpoint, st in channel.status().items():
        for state in State:
            yield endpoint, state.value, 1.0 if st.state is state else 0.0


def default_name(channel: Any) -> str:
    """The channel label when none is given: its endpoints as given, comma-separated
    (as a multi-address grpc target), taken when the channel is instrumented."""
    return ",".join(channel.endpoints)


class ChannelSet:
    """The instrumented channels of one adapter, by name, held weakly (a channel that is
    closed or collected drops out); read when the state series are collected."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[str, weakref.ref[Any]] = {}

    def attach(self, name: str, channel: Any) -> None:
        """Add ``channel`` as ``name``; ``ValueError`` when another live channel has it."""
        with self._lock:
            old = self._channels.get(name)
            live = old() if old is not None else None
            if live is not None and live is not channel and not getattr(live, "closed", False):
                raise ValueError(f"a channel named {name!r} is already instrumented")
            self._channels[name] = weakref.ref(channel)

    def detach(self, name: str, channel: Any) -> None:
        """Remove ``channel`` (if it still holds ``name``)."""
        with self._lock:
            ref = self._channels.get(name)
            if ref is not None and ref() in (channel, None):
                del self._channels[name]

    def live(self) -> list[tuple[str, Any]]:
        """Every open channel, with its name."""
        with self._lock:
            items = list(self._channels.items())
        out = []
        for name, ref in items:
            ch = ref()
            if ch is not None and not getattr(ch, "closed", False):
                out.append((name, ch))
        return out

    def states(self) -> Iterator[tuple[str, str, str, float]]:
        """``(channel name, endpoint, state, value)`` for every open channel."""
        for name, ch in self.live():
            for endpoint, state, value in state_series(ch):
                yield name, endpoint, state, value


def balancer_of(channel: Any, what: str) -> Any:
    """The balancer of an eagle channel; ``TypeError`` naming ``what`` otherwise."""
    balancer = getattr(channel, "balancer", None)
    if balancer is None:
        raise TypeError(f"{what}: expected an eagle channel, got {type(channel).__name__}")
    return balancer
