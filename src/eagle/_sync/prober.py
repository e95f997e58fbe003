"""The sync prober: a BackgroundScheduler tick that fires non-blocking health checks.

Every tick asks the balancer which members are due and sends each a unary
``grpc.health.v1.Health/Check`` future with its own deadline. Probes never wait on each
other and use no thread per member: results arrive on grpc's callback threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import grpc
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from ..config import Config
from ..core.balancer import Balancer
from ..core.health import ProbeOutcome, ProbeResult, classify_probe
from ..probe_calls import HEALTH_CHECK, health_request, serving_status
from ..subchannels import SubChannel

__all__ = ["Prober", "tick_period"]

log = logging.getLogger("eagle.prober")


def tick_period(config: Config) -> float:
    """How often the prober looks for due probes: a quarter of the shorter of interval and
    timeout, between 10 ms and 1 s."""
    h = config.health
    return min(1.0, max(0.01, min(h.interval, h.timeout) / 4.0))


class Prober:
    """Probes every member of one sync channel."""

    def __init__(
        self, balancer: Balancer, subs: Mapping[str, SubChannel[grpc.Channel]], config: Config
    ) -> None:
        self._bal = balancer
        self._subs = subs
        self._config = config
        self._request = health_request(config.health.service)
        self._timeout = config.health.timeout
        self._inflight: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stopped = False
        self._scheduler: BackgroundScheduler | None = None
        self.membership: Any = None  # set by the channel when membership is on

    def start(self) -> None:
        """Start probing (first probes at once)."""
        sched = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            daemon=True,
        )
        sched.add_job(
            self.tick,
            "interval",
            seconds=tick_period(self._config),
            next_run_time=datetime.now(),
            id="eagle-probe-tick",
        )
        sched.start()
        self._scheduler = sched

    def tick(self) -> None:
        """Send the probes that are due now; run the balancer's time-driven work."""
        if self._stopped:
            return
        now = time.monotonic()
        for key in self._bal.due_probes(now):
            self._probe(key)
        if self.membership is not None:
            self.membership.tick(now)
        self._bal.tick(now)

    def _probe(self, key: str) -> None:
        sub = self._subs.get(key)
        if sub is None:
            return
        start = time.monotonic()
        try:
            fut = sub.multicallable(HEALTH_CHECK).future(self._request, timeout=self._timeout)
        except Exception as exc:  # closed channel, ...
            self._bal.on_probe(
                key, ProbeOutcome(ProbeResult.UNREACHABLE, 0.0, f"probe not sent: {exc}")
            )
            return
        with self._lock:
            self._inflight[key] = fut
        fut.add_done_callback(lambda f: self._done(key, f, start))

    def _done(self, key: str, fut: Any, start: float) -> None:
        latency = time.monotonic() - start
        with self._lock:
            if self._inflight.get(key) is fut:
                del self._inflight[key]
        if self._stopped:
            return
        try:
            resp = fut.result()
        except grpc.RpcError as err:
            code = err.code()
            outcome = classify_probe(
                code.name if code is not None else "UNKNOWN", None, err.details(), latency
            )
        except grpc.FutureCancelledError:
            return
        except Exception as exc:
            outcome = ProbeOutcome(ProbeResult.UNREACHABLE, latency, f"probe failed: {exc!r}")
        else:
            outcome = classify_probe(None, serving_status(resp), None, latency)
            if outcome.error and "unknown serving status" in outcome.error:
                log.warning("member %s: %s", key, outcome.error)
        self._bal.on_probe(key, outcome)

    def stop(self) -> None:
        """Stop the scheduler and cancel probes in flight. Idempotent."""
        self._stopped = True
        sched = self._scheduler
        self._scheduler = None
        if sched is not None:
            try:
                sched.shutdown(wait=True)
            except Exception:  # already stopped (e.g. after fork)
                log.debug("scheduler shutdown failed", exc_info=True)
        with self._lock:
            futs = list(self._inflight.values())
            self._inflight.clear()
        for f in futs:
            f.cancel()
