"""How both probers use APScheduler: one trigger for the next due time, re-armed.

The prober has nothing to do between probes, so it does not tick at a fixed rate. It
keeps exactly one APScheduler ``date`` job, set for the balancer's next wake-up (the next
probe due, an ejection that ends, ...); each run re-arms it for the next one, and
anything that makes work due earlier (a connection that dropped wants a probe now) moves
it forward. An idle channel therefore wakes only when a probe is due.

APScheduler 3.x logs a WARNING each time a run is skipped because the previous run of the
same job is still going (``max_instances=1``). That cannot happen with one date job at a
time, but the records are still turned into DEBUG ones should a user's own jobs share the
logger; everything else passes unchanged.
"""

from __future__ import annotations

import inspect
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

__all__ = ["JOB_DEFAULTS", "DueTimer", "scheduler_logger"]

_SKIP = "maximum number of running instances reached"

#: one run at a time; a late run is coalesced and still runs, never dropped
JOB_DEFAULTS: dict[str, Any] = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}


class _QuietSkips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and _SKIP in record.getMessage():
            record.levelno = logging.DEBUG
            record.levelname = "DEBUG"
            return logging.getLogger("eagle.scheduler").isEnabledFor(logging.DEBUG)
        return True


_logger = logging.getLogger("eagle.scheduler")
_logger.addFilter(_QuietSkips())


def scheduler_logger() -> logging.Logger:
    """The ``eagle.scheduler`` logger, with skip warnings demoted to DEBUG."""
    return _logger


class DueTimer:
    """One APScheduler ``date`` job that runs ``run`` at the next due time.

    :meth:`arm` sets (or moves forward) the time on the monotonic clock; ``run`` re-arms
    for the next one. A job that was replaced by an earlier one is not removed (it may be
    running already, and APScheduler removes a date job itself once it ran): it carries a
    token and does nothing when it fires. Thread-safe (the sync prober's callbacks arrive
    on grpc's threads). ``run`` may be a coroutine function (the asyncio prober).
    """

    def __init__(self, scheduler: Any, run: Callable[[], Any]) -> None:
        self._scheduler = scheduler
        self._run = run
        self._lock = threading.Lock()
        self._at = math.inf
        self._gen = 0
        self._stopped = False
        self._target: Callable[..., Any] = (
            self._fire_async if inspect.iscoroutinefunction(run) else self._fire
        )

    def _take(self, gen: int) -> bool:
        with self._lock:
            if gen != self._gen or self._stopped:
                return False  # replaced by an earlier one, or stopped
            self._at = math.inf
            return True

    def _fire(self, gen: int) -> None:
        if self._take(gen):
            self._run()

    async def _fire_async(self, gen: int) -> None:
        if self._take(gen):
            await self._run()

    def arm(self, at: float | None) -> None:
        """Run at ``at`` (monotonic seconds), unless a run is already planned as early."""
        if at is None:
            return
        # APScheduler takes its own lock in add_job (and holds it while a run is going on
        # in its thread), so never call it while holding ours
        with self._lock:
            if self._stopped or at >= self._at:
                return
            self._at = at
            self._gen += 1
            gen = self._gen
        when = datetime.now() + timedelta(seconds=max(0.0, at - time.monotonic()))
        self._scheduler.add_job(self._target, "date", run_date=when, args=(gen,))

    def stop(self) -> None:
        """Plan nothing more (jobs still pending do nothing when they fire)."""
        with self._lock:
            self._stopped = True
