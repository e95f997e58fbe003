"""Metrics and hooks: the Prometheus exporter scraped over HTTP after real traffic and real
faults, the plain observer API, and the lazy ``prometheus-client`` import."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator

import grpc
import prometheus_client  # the `prometheus` extra, installed by make test
import pytest
from _support import wait_until
from prometheus_client.parser import text_string_to_metric_families

import eagle
import eagle.hooks
import eagle.ops.metrics
from eagle.core.balancer import Balancer
from eagle.core.health import ProbeOutcome, ProbeResult
from eagle.endpoints import parse_endpoints
from eagle.testing.cluster import LocalCluster
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

#: the prober stays out of the way (one probe at start, the next after 30 s), so the
#: killed member is found by real calls: retries, then ejection after 2 failures
CALLS_FIND_IT: dict[str, object] = {
    "health": {"interval": 30.0, "timeout": 0.5},
    "outlier": {"consecutive_failures": 2, "base_ejection_time": 30.0, "max_ejection_percent": 50},
    "retry": {"idempotent_methods": ["/eagle.testing.v1.Echo/Unary"], "per_try_timeout": 0.3},
}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    total = 0.0
    for (n, lab), v in samples.items():
        d = dict(lab)
        if n == name and all(d.get(k) == val for k, val in labels.items()):
            total += v
    return total


@pytest.fixture
def registry() -> prometheus_client.CollectorRegistry:
    return prometheus_client.CollectorRegistry()


@pytest.fixture
def cluster3() -> Iterator[LocalCluster]:
    with LocalCluster(3) as c:
        yield c


def test_exporter_after_traffic_and_faults(
    cluster3: LocalCluster, registry: prometheus_client.CollectorRegistry
) -> None:
    metrics = eagle.ops.metrics.PrometheusMetrics(registry)
    eps = cluster3.endpoints
    ch = eagle.insecure_channel(eps, config=CALLS_FIND_IT)
    nobudget = eagle.insecure_channel(
        eps,
        config={
            "health": {"interval": 30.0, "timeout": 0.5},
            "outlier": {"enabled": False},
            "retry": {
                "budget": {"ratio": 0.0, "min_per_second": 0.0},
                "idempotent_methods": ["/eagle.testing.v1.Echo/Unary"],
                "per_try_timeout": 0.3,
            },
        },
    )
    streams = eagle.insecure_channel(
        eps, config={"health": {"interval": 0.2, "timeout": 0.5, "no_traffic_interval": None}}
    )
    server = metrics.start_http_server(0)
    try:
        stop_main = metrics.instrument(ch, "main")
        metrics.instrument(nobudget, "nobudget")
        metrics.instrument(streams, "streams")
        with pytest.raises(ValueError, match="already instrumented"):
            metrics.instrument(nobudget, "main")
        wait_until(
            lambda: (
                all(s.serving for s in ch.status().values())
                and all(s.serving for s in nobudget.status().values())
            ),
            5,
            "every member SERVING",
        )
        # the probes of the "streams" channel (every 0.2 s) all land in the histogram
        wait_until(
            lambda: all(
                _value(_scrape(server.url), "eagle_probe_duration_seconds_count", endpoint=ep)
                for ep in eps
            ),
            5,
            "a probe of every member in the histogram",
        )
        stub = echo_pb2_grpc.EchoStub(ch)
        for _ in range(30):
            stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
        before = _scrape(server.url)
        assert _value(before, "eagle_picks_total", channel="main") == 30
        for ep in eps:
            assert (
                _value(before, "eagle_endpoint_state", channel="main", endpoint=ep, state="SERVING")
                == 1
            )
            assert _value(before, "eagle_probe_duration_seconds_count", endpoint=ep) >= 1
            assert _value(before, "eagle_probes_total", endpoint=ep, result="SERVING") >= 1

        # a stream on some member, then drain that member: the watchdog moves the stream
        wait_until(lambda: all(s.serving for s in streams.status().values()), 5, "SERVING")
        stream = echo_pb2_grpc.EchoStub(streams).ServerStream(
            echo_pb2.EchoRequest(message="s", interval_ms=20), timeout=20
        )
        first = next(stream)
        on = stream.endpoint
        assert on is not None
        done = threading.Event()

        def drain_stream() -> None:
            try:
                for _ in stream:
                    pass
            except grpc.RpcError:
                pass
            done.set()

        threading.Thread(target=drain_stream, daemon=True).start()
        victim = eps.index(on)
        assert first.server == f"m{victim}"
        cluster3.drain(victim)
        assert done.wait(5), "the stream on the drained member was not ended"
        cluster3.undrain(victim)

        # crash a member: calls find it refused, retry elsewhere, and it leaves rotation at
        # once (a connection failure is a health signal)
        dead = eps[(victim + 1) % 3]
        cluster3.kill(eps.index(dead))
        for _ in range(30):
            stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
        # freeze another: calls time out there, and outlier detection ejects it; with no
        # retry budget, the timed-out calls are refused a retry
        frozen = eps[(victim + 2) % 3]
        cluster3.stop(eps.index(frozen))
        nb_stub = echo_pb2_grpc.EchoStub(nobudget)
        refused = 0
        try:
            for _ in range(30):
                stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
            for _ in range(12):
                try:
                    nb_stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
                except grpc.RpcError as err:
                    assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED
                    refused += 1
        finally:
            cluster3.cont(eps.index(frozen))
        assert refused >= 1

        after = _scrape(server.url)
        assert _value(after, "eagle_stream_moves_total", channel="streams", endpoint=on) == 1
        assert (
            _value(after, "eagle_retries_total", channel="main", endpoint=dead, code="UNAVAILABLE")
            >= 1
        )
        state = _value(
            after, "eagle_endpoint_state", channel="main", endpoint=dead, state="UNREACHABLE"
        )
        assert state == 1
        assert _value(after, "eagle_ejections_total", channel="main", endpoint=dead) == 0
        assert _value(after, "eagle_ejections_total", channel="main", endpoint=frozen) == 1
        assert (
            _value(after, "eagle_endpoint_state", channel="main", endpoint=frozen, state="EJECTED")
            == 1
        )
        assert _value(after, "eagle_state_transitions_total", endpoint=frozen, state="EJECTED") == 1
        assert (
            _value(
                after,
                "eagle_state_transitions_total",
                channel="streams",
                endpoint=on,
                state="NOT_SERVING",
            )
            == 1
        )
        assert _value(after, "eagle_picks_total", channel="main") >= 60
        assert (
            _value(after, "eagle_retry_budget_refusals_total", channel="nobudget", endpoint=frozen)
            == refused
        )
        assert _value(after, "eagle_retries_total", channel="nobudget") == 0
        # the balancer's own counters agree with the exported ones
        assert ch.balancer.stats.ejections == 1
        assert streams.balancer.stats.stream_moves == 1
        assert nobudget.balancer.stats.budget_refusals == refused
        # each state series is one-hot
        for ep in eps:
            assert _value(after, "eagle_endpoint_state", channel="main", endpoint=ep) == 1

        stop_main()
        gone = _scrape(server.url)
        assert _value(gone, "eagle_endpoint_state", channel="main") == 0
        assert _value(gone, "eagle_endpoint_state", channel="nobudget") == 3
        assert _value(gone, "eagle_picks_total", channel="main") >= 60  # counters stay
    finally:
        server.close()
        ch.close()
        nobudget.close()
        streams.close()


def test_instrument_default_registry_helpers() -> None:
    reg = prometheus_client.CollectorRegistry()
    fast = {"health": {"interval": 0.1, "timeout": 0.2}}
    with eagle.insecure_channel("127.0.0.1:1", config=fast) as ch:  # nothing listens there
        stop = eagle.ops.metrics.instrument(ch, "helper", registry=reg)
        wait_until(lambda: ch.status()["127.0.0.1:1"].state is eagle.State.UNREACHABLE, 5, "out")
        text = prometheus_client.generate_latest(reg).decode()
        assert (
            'eagle_endpoint_state{channel="helper",endpoint="127.0.0.1:1",state="UNREACHABLE"} 1.0'
            in text
        )
        # a second call reuses the same families in that registry
        with eagle.insecure_channel("127.0.0.1:2") as ch2:
            eagle.ops.metrics.instrument(ch2, "helper2", registry=reg)
        stop()
    with eagle.ops.metrics.start_http_server(0, registry=reg) as srv:
        assert srv.host == "127.0.0.1"
        assert "eagle_probes_total" in urllib.request.urlopen(srv.url, timeout=5).read().decode()


def test_import_eagle_needs_no_prometheus_client() -> None:
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None  # as if it were not installed\n"
        "import eagle, eagle.ops.metrics, eagle.hooks\n"
        "ch = eagle.insecure_channel('127.0.0.1:1')\n"
        "try:\n"
        "    eagle.ops.metrics.PrometheusMetrics()\n"
        "except ImportError as exc:\n"
        "    print('ERR', exc)\n"
        "ch.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "ERR eagle.ops.metrics needs the prometheus-client package" in out.stdout
    assert "eagle-grpc[prometheus]" in out.stdout
    plain = subprocess.run(
        [sys.executable, "-c", "import sys, eagle; print('prometheus_client' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert plain.stdout.strip() == "False"


# ------------------------------------------------------------------ hooks (sans-IO)
class _Recorder(eagle.hooks.Observer):
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def on_probe(self, endpoint: str, outcome: ProbeOutcome) -> None:
        self.events.append(("probe", endpoint, outcome.result))

    def on_transition(self, transition: eagle.Transition) -> None:
        self.events.append(("transition", transition.endpoint, transition.new))

    def on_pick(self, endpoint: str | None, method: str) -> None:
        self.events.append(("pick", endpoint, method))

    def on_retry(self, endpoint: str, method: str, code: str) -> None:
        self.events.append(("retry", endpoint, code))

    def on_budget_refusal(self, endpoint: str, method: str, code: str) -> None:
        self.events.append(("refusal", endpoint, code))

    def on_ejection(self, endpoint: str, reason: str) -> None:
        self.events.append(("ejection", endpoint))

    def on_stream_move(self, endpoint: str, reason: str) -> None:
        self.events.append(("move", endpoint, reason))


def _balancer(**cfg: object) -> Balancer:
    return Balancer(parse_endpoints("a:1,b:1"), eagle.load_config(dict(cfg)), clock=lambda: 100.0)


def test_observer_events_from_the_core() -> None:
    bal = _balancer(outlier={"consecutive_failures": 1, "max_ejection_percent": 50})
    rec = _Recorder()
    remove = bal.add_observer(rec)
    bal.on_probe("a:1", ProbeOutcome(ProbeResult.SERVING, 0.002))
    bal.on_probe("b:1", ProbeOutcome(ProbeResult.SERVING, 0.002))
    ep = bal.pick("/s/M")
    bal.note_retry(True, "a:1", "/s/M", "UNAVAILABLE", None)
    bal.note_retry(False, "a:1", "/s/M", "UNAVAILABLE", eagle.GiveUp.BUDGET)
    bal.note_retry(False, "a:1", "/s/M", "INTERNAL", eagle.GiveUp.NOT_RETRYABLE)
    bal.mark_stream_move("b:1", "left rotation")
    bal.done("a:1", "UNAVAILABLE", 0.01)  # one failure ejects (consecutive_failures 1)
    assert ("probe", "a:1", ProbeResult.SERVING) in rec.events
    assert ("transition", "a:1", eagle.State.SERVING) in rec.events
    assert ("pick", ep, "/s/M") in rec.events
    assert ("retry", "a:1", "UNAVAILABLE") in rec.events
    assert ("refusal", "a:1", "UNAVAILABLE") in rec.events
    assert not any(e[0] == "refusal" and e[2] == "INTERNAL" for e in rec.events)
    assert ("move", "b:1", "left rotation") in rec.events
    assert ("ejection", "a:1") in rec.events
    assert ("transition", "a:1", eagle.State.EJECTED) in rec.events
    assert bal.stats.budget_refusals == 1 and bal.stats.retries == 1
    remove()
    n = len(rec.events)
    bal.pick("/s/M")
    assert len(rec.events) == n
    assert len(bal.observers) == 0


def test_only_overridden_events_are_wired() -> None:
    class Transitions(eagle.hooks.Observer):
        def on_transition(self, transition: eagle.Transition) -> None:
            pass

    bal = _balancer()
    bal.add_observer(Transitions())
    obs = bal.observers
    assert obs.transition and not obs.pick and not obs.probe and not obs.retry
    with pytest.raises(TypeError, match="implements none"):
        bal.add_observer(eagle.hooks.Observer())

    class DuckTyped:  # any object with some of the methods works
        def on_pick(self, endpoint: str | None, method: str) -> None:
            pass

    bal.add_observer(DuckTyped())  # type: ignore[arg-type]
    assert len(obs.pick) == 1


def test_failing_observer_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(eagle.hooks.Observer):
        def on_pick(self, endpoint: str | None, method: str) -> None:
            raise RuntimeError("observer bug")

    bal = _balancer()
    bal.add_observer(Broken())
    with caplog.at_level(logging.ERROR, logger="eagle.observers"):
        assert bal.pick("/s/M") in ("a:1", "b:1")
    assert "observer bug" in caplog.text


def test_add_observer_on_channels() -> None:
    rec = _Recorder()
    with eagle.insecure_channel(
        "127.0.0.1:1",
        config={"health": {"interval": 0.1, "timeout": 0.2, "no_traffic_interval": None}},
    ) as ch:
        remove = eagle.hooks.add_observer(ch, rec)
        wait_until(lambda: any(e[0] == "probe" for e in rec.events), 5, "a probe event")
        remove()
    with pytest.raises(TypeError, match="expected an eagle channel"):
        eagle.hooks.add_observer(object(), rec)


def test_aio_channel_observer() -> None:
    import asyncio

    import eagle.aio

    async def run() -> list[tuple[object, ...]]:
        rec = _Recorder()
        async with eagle.aio.insecure_channel(
            "127.0.0.1:1", config={"health": {"interval": 0.1, "no_traffic_interval": None}}
        ) as ch:
            eagle.hooks.add_observer(ch, rec)
            for _ in range(100):
                if any(e[0] == "probe" for e in rec.events):
                    break
                await asyncio.sleep(0.02)
        return rec.events

    events = asyncio.run(run())
    assert any(e[0] == "probe" and e[1] == "127.0.0.1:1" for e in events)
