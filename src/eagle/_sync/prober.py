"""The sync prober: a BackgroundScheduler job, armed for the next due time, that fires
non-blocking health checks.

Each run asks the balancer which members are due and sends each a unary
``grpc.health.v1.Health/Check`` future with its own deadline, then re-arms the job for the
balancer's next wake-up (no fixed-rate tick: an idle channel wakes only when a probe is
due). The job runs in the scheduler's own thread (APScheduler's ``DebugExecutor``: the run
never blocks, so no thread pool is needed). Probes never wait on each other and use no
thread per member: results arrive on grpc's callback threads.

With ``membership.provider`` set, a due member also gets its membership view fetched
(the provider's RPCs as futures with deadline ``membership.timeout``); the results go to
the shared :class:`~eagle.providers.base.ViewFetch`, which hands the view to the
balancer. Discovery changes are applied from the tick, through ``on_discover`` (the
channel's ``update_endpoints``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
from apscheduler.executors.debug import DebugExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from ..config import Config
from ..core.balancer import Balancer
from ..core.health import ProbeOutcome, ProbeResult
from ..providers.base import CallResult, MembershipProbe, ViewFetch
from ..shell.probes import (
    HEALTH_CHECK,
    HEALTH_WATCH,
    health_request,
    outcome_of_answer,
    outcome_of_error,
    plan_watches,
    watch_ended,
)
from ..shell.scheduling import JOB_DEFAULTS, DueTimer, scheduler_logger
from ..shell.subchannels import SubChannel
from .stream_reading import messages

__all__ = ["Prober"]

log = logging.getLogger("eagle.prober")


class Prober:
    """Probes every member of one sync channel."""

    def __init__(
        self, balancer: Balancer, subs: Mapping[str, SubChannel[grpc.Channel]], config: Config
    ) -> None:
        self._bal = balancer
        self._subs = subs
        self._config = config
        self._request = health_request(config.health.service)
        self._inflight: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stopped = False
        self._scheduler: BackgroundScheduler | None = None
        self._timer: DueTimer | None = None
        #: membership probing (None when ``membership.provider`` is null)
        self.membership: MembershipProbe | None = MembershipProbe.for_balancer(balancer)
        #: applies discovery's member set (the channel sets its ``update_endpoints``)
        self.on_discover: Callable[[Sequence[str]], None] | None = None
        self._view_futs: set[Any] = set()
        #: health.mode watch: member -> its Watch stream
        self._watches: dict[str, _Watch] = {}
        self._watch_generation = -1  # the balancer's watch_generation last synced

    def start(self) -> None:
        """Start probing (first probes at once)."""
        sched = BackgroundScheduler(
            executors={"default": DebugExecutor()},
            job_defaults=JOB_DEFAULTS,
            daemon=True,
            logger=scheduler_logger(),
        )
        self._timer = DueTimer(sched, self.tick, self._bal.next_wakeup)
        self._scheduler = sched
        self._bal.on_due = self.wake
        sched.start()

    def wake(self) -> None:
        """Work became due earlier than planned: re-arm for the balancer's next wake-up."""
        timer = self._timer
        if timer is not None and not self._stopped:
            timer.arm(self._bal.next_wakeup())

    def tick(self) -> None:
        """Send the probes that are due now and run the balancer's time-driven work (the
        trigger then fires at the next wake-up)."""
        if self._stopped:
            return
        now = time.monotonic()
        mem = self.membership
        for key in self._bal.due_probes(now):
            self._probe(key)
            if mem is not None:
                self._fetch_view(key, mem)
        if mem is not None:
            self._discover(mem)
        self._bal.tick(now)
        if self._bal.watch_mode and self._bal.watch_generation != self._watch_generation:
            self._sync_watches()

    # ----------------------------------------------------------- Watch streams
    def _sync_watches(self) -> None:
        """health.mode watch: one Health/Watch stream per member in use (a thread each:
        grpc's sync API reads a stream only by blocking on it)."""
        with self._lock:
            running = {k: w.sub for k, w in self._watches.items()}
            self._watch_generation, stop, start = plan_watches(self._bal, self._subs, running)
            for key in stop:
                self._watches.pop(key).stop()
            for key, sub in start:
                w = self._watches[key] = _Watch(self._bal, key, sub, self._request)
                w.start()

    def _fetch_view(self, key: str, mem: MembershipProbe) -> None:
        sub = self._subs.get(key)
        if sub is None:
            return
        fetch = mem.begin(key)
        if fetch is None:
            return  # the last fetch of this member is still in flight
        for i, call in enumerate(fetch.calls):
            try:
                fut = sub.multicallable(call.key).future(call.request, timeout=fetch.timeout)
            except Exception as exc:  # closed channel, ...
                fetch.failed(i, "UNAVAILABLE", f"not sent: {exc}")
                continue
            with self._lock:
                self._view_futs.add(fut)
            fut.add_done_callback(functools.partial(self._view_done, fetch, i))

    def _view_done(self, fetch: ViewFetch, index: int, fut: Any) -> None:
        with self._lock:
            self._view_futs.discard(fut)
        try:
            resp = fut.result()
        except grpc.RpcError as err:
            fetch.deliver(index, CallResult.from_error(err))
        except grpc.FutureCancelledError:
            fetch.failed(index, "CANCELLED", "membership fetch cancelled")
        except Exception as exc:
            fetch.failed(index, "UNKNOWN", repr(exc))
        else:
            fetch.succeeded(index, resp)

    def _discover(self, mem: MembershipProbe) -> None:
        apply = self.on_discover
        if apply is None:
            return
        plan = mem.discovery()
        if plan is None:
            return
        try:
            apply(plan.endpoints)
        except Exception:
            log.exception("membership discovery could not set endpoints %s", plan.endpoints)

    def _probe(self, key: str) -> None:
        sub = self._subs.get(key)
        if sub is None:
            self._bal.probe_skipped(key)
            return
        start = time.monotonic()
        try:
            fut = sub.multicallable(HEALTH_CHECK).future(
                self._request, timeout=self._bal.probe_timeout(key)
            )
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
            outcome = outcome_of_answer(fut.result(), latency)
        except grpc.FutureCancelledError:
            return
        except Exception as exc:
            outcome = outcome_of_error(exc, latency)
        self._bal.on_probe(key, outcome)

    def stop(self) -> None:
        """Stop the scheduler and cancel probes in flight. Idempotent."""
        self._stopped = True
        if self._timer is not None:
            self._timer.stop()
        if self._bal.on_due == self.wake:
            self._bal.on_due = None
        if self.membership is not None:
            self.membership.close()
        sched = self._scheduler
        self._scheduler = None
        if sched is not None:
            try:
                sched.shutdown(wait=True)
            except Exception:  # already stopped (e.g. after fork)
                log.debug("scheduler shutdown failed", exc_info=True)
        with self._lock:
            futs = list(self._inflight.values()) + list(self._view_futs)
            self._inflight.clear()
            self._view_futs.clear()
            watches = list(self._watches.values())
            self._watches.clear()
        for f in futs:
            f.cancel()
        for w in watches:
            w.stop()


class _Watch:
    """One member's ``Health/Watch`` stream, read on a thread of its own: every message is
    fresh health; UNIMPLEMENTED leaves the member to Checks; any other end re-opens the
    stream after a backoff."""

    def __init__(self, bal: Balancer, key: str, sub: SubChannel[grpc.Channel], request: Any):
        self._bal = bal
        self.key = key
        self.sub = sub
        self._request = request
        self._stop = threading.Event()
        self._call: Any = None
        self._thread = threading.Thread(target=self._run, name=f"eagle-watch {key}", daemon=True)

    def start(self) -> None:
        """Open the stream."""
        self._thread.start()

    def stop(self) -> None:
        """Close the stream for good."""
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()

    def _run(self) -> None:
        failures = 0
        mc = self.sub.multicallable(HEALTH_WATCH)
        while not self._stop.is_set():
            err: BaseException | None = None
            try:
                self._call = call = mc(self._request)
                for resp in messages(call):
                    failures = 0
                    self._bal.on_watch(self.key, outcome_of_answer(resp, 0.0))
            except Exception as exc:  # an RpcError, a closed channel, ...
                err = exc
            if self._stop.is_set():
                return
            failures += 1
            delay = watch_ended(self._bal, self.key, err, failures)
            if delay is None or self._stop.wait(delay):
                return
