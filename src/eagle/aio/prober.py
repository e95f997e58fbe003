"""The asyncio prober: an AsyncIOScheduler job, armed for the next due time, that starts
one probe task per due member and re-arms for the balancer's next wake-up.

The asyncio twin of :mod:`eagle._sync.prober`; the schedule and the verdicts come from
the core, the membership fetch logic from :mod:`eagle.providers.base` (only the awaiting
of the provider's RPCs is here).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
from apscheduler.executors.debug import DebugExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from ..config import Config
from ..core.balancer import Balancer
from ..providers.base import CallResult, MembershipProbe, ProviderCall, ViewFetch
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
from .timers import call_in_loop

__all__ = ["AioProber"]

log = logging.getLogger("eagle.aio.prober")


class AioProber:
    """Probes every member of one asyncio channel, inside its event loop."""

    def __init__(
        self, balancer: Balancer, subs: Mapping[str, SubChannel[Any]], config: Config
    ) -> None:
        self._bal = balancer
        self._subs = subs
        self._config = config
        self._request = health_request(config.health.service)
        self._tasks: set[asyncio.Task[None]] = set()
        #: health.mode watch: member -> (its sub-channel, its Watch stream's task)
        self._watches: dict[str, tuple[SubChannel[Any], asyncio.Task[None]]] = {}
        self._watch_generation = -1  # the balancer's watch_generation last synced
        self._scheduler: AsyncIOScheduler | None = None
        self._timer: DueTimer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        #: membership probing (None when ``membership.provider`` is null)
        self.membership: MembershipProbe | None = MembershipProbe.for_balancer(balancer)
        #: applies discovery's member set (the channel sets its ``update_endpoints``)
        self.on_discover: Callable[[Sequence[str]], Awaitable[None]] | None = None

    def start(self) -> None:
        """Start probing in the running loop (first probes at once)."""
        self._loop = loop = asyncio.get_running_loop()
        sched = AsyncIOScheduler(
            event_loop=loop,
            executors={"default": DebugExecutor()},
            job_defaults=JOB_DEFAULTS,
            logger=scheduler_logger(),
        )
        self._timer = DueTimer(sched, self.tick, self._bal.next_wakeup)
        self._scheduler = sched
        self._bal.on_due = self.wake
        sched.start()

    def wake(self) -> None:
        """Work became due earlier than planned: re-arm for the balancer's next wake-up
        (thread-safe: the balancer may call it from another thread)."""
        if not self._stopped:
            call_in_loop(self._loop, self._rearm)

    def _rearm(self) -> None:
        timer = self._timer
        if timer is not None and not self._stopped:
            timer.arm(self._bal.next_wakeup())

    def tick(self) -> None:
        """Start the probes that are due now and run the balancer's time-driven work (in
        the event loop; the trigger then fires at the next wake-up)."""
        if self._stopped:
            return
        now = time.monotonic()
        mem = self.membership
        for key in self._bal.due_probes(now):
            self._spawn(self._probe(key))
            if mem is not None:
                sub = self._subs.get(key)
                fetch = mem.begin(key) if sub is not None else None
                if fetch is not None and sub is not None:
                    for i, call in enumerate(fetch.calls):
                        self._spawn(self._fetch_one(sub, fetch, i, call))
        if mem is not None and self.on_discover is not None:
            plan = mem.discovery()
            if plan is not None:
                self._spawn(self._apply_discovery(plan.endpoints))
        self._bal.tick(now)
        if self._bal.watch_mode and self._bal.watch_generation != self._watch_generation:
            self._sync_watches()

    # ----------------------------------------------------------- Watch streams
    def _sync_watches(self) -> None:
        """health.mode watch: one Health/Watch stream per member in use (a task each)."""
        running = {k: sub for k, (sub, _) in self._watches.items()}
        self._watch_generation, stop, start = plan_watches(self._bal, self._subs, running)
        for key in stop:
            self._watches.pop(key)[1].cancel()
        loop = asyncio.get_running_loop()
        for key, sub in start:
            self._watches[key] = (sub, loop.create_task(self._watch(key, sub)))

    async def _watch(self, key: str, sub: SubChannel[Any]) -> None:
        """One member's Health/Watch stream: every message is fresh health; UNIMPLEMENTED
        leaves the member to Checks; any other end re-opens it after a backoff."""
        failures = 0
        mc = sub.multicallable(HEALTH_WATCH)
        while not self._stopped:
            err: BaseException | None = None
            try:
                async for resp in mc(self._request):
                    failures = 0
                    self._bal.on_watch(key, outcome_of_answer(resp, 0.0))
            except Exception as exc:  # an AioRpcError, a closed channel, ...
                err = exc
            if self._stopped:
                return
            failures += 1
            delay = watch_ended(self._bal, key, err, failures)
            if delay is None:
                return
            await asyncio.sleep(delay)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch_one(
        self, sub: SubChannel[Any], fetch: ViewFetch, index: int, call: ProviderCall
    ) -> None:
        try:
            resp = await sub.multicallable(call.key)(call.request, timeout=fetch.timeout)
        except grpc.aio.AioRpcError as err:
            fetch.deliver(index, CallResult.from_error(err))
        except asyncio.CancelledError:
            fetch.failed(index, "CANCELLED", "membership fetch cancelled")
            raise
        except Exception as exc:
            fetch.failed(index, "UNKNOWN", repr(exc))
        else:
            fetch.succeeded(index, resp)

    async def _apply_discovery(self, endpoints: Sequence[str]) -> None:
        apply = self.on_discover
        if apply is None or self._stopped:
            return
        try:
            await apply(endpoints)
        except Exception:
            log.exception("membership discovery could not set endpoints %s", endpoints)

    async def _probe(self, key: str) -> None:
        sub = self._subs.get(key)
        if sub is None:
            self._bal.probe_skipped(key)
            return
        start = time.monotonic()
        try:
            resp = await sub.multicallable(HEALTH_CHECK)(
                self._request, timeout=self._bal.probe_timeout(key)
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            outcome = outcome_of_error(exc, time.monotonic() - start)
        else:
            outcome = outcome_of_answer(resp, time.monotonic() - start)
        if not self._stopped:
            self._bal.on_probe(key, outcome)

    async def stop(self) -> None:
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
                sched.shutdown(wait=False)  # the tick runs inline: nothing to wait for
            except Exception:
                log.debug("scheduler shutdown failed", exc_info=True)
        tasks = list(self._tasks) + [task for _, task in self._watches.values()]
        self._watches.clear()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
