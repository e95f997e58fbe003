"""How both probers use APScheduler: one trigger for the next due time, re-armed.

The prober has nothing to do between probes, so it does not tick at a fixed rate. It
keeps exactly one APScheduler job whose trigger (:class:`DueTrigger`) fires at the
balancer's next wake-up (the next probe due, an ejection that ends, ...); each run is
followed by the next due time, and anything that makes work due earlier (a connection
that dropped wants a probe now) moves it forward. An idle channel therefore wakes only
when a probe is due.

APScheduler 3.x logs a WARNING each time a run is skipped because the previous run of the
same job is still going (``max_instances=1``). That cannot happen with one date job at a
time, but the records are still turned into DEBUG ones should a user's own jobs share the
logger; everything else passes unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from apscheduler.triggers.base import BaseTrigger

__all__ = ["JOB_DEFAULTS", "DueTimer", "DueTrigger", "scheduler_logger"]

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


class DueTrigger(BaseTrigger):  # type: ignore[misc]
    """An APScheduler trigger whose next fire time is the balancer's next wake-up.

    APScheduler asks a trigger for the next fire time after every run; this one answers
    with ``next_due()`` (monotonic seconds), so the job is re-armed for the next due probe
    as a side effect of running, and never runs between two due times. It never answers
    None (APScheduler would remove the job, which races with ``shutdown()``): with nothing
    due it answers an hour from now.
    """

    def __init__(self, next_due: Callable[[], float | None]) -> None:
        self._next_due = next_due

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        """The next fire time: ``now`` plus the time left to the next due wake-up, and
        after a run never ``now`` itself (APScheduler asks again until the answer is in
        the future), but a millisecond later."""
        at = self._next_due()
        left = IDLE_WAKEUP if at is None else at - time.monotonic()
        left = min(left, IDLE_WAKEUP)
        if previous_fire_time is not None:
            left = max(left, 0.001)
        return now + timedelta(seconds=max(0.0, left))

    def __str__(self) -> str:
        return "due (eagle prober)"


#: with nothing due, the prober still wakes this often (seconds)
IDLE_WAKEUP = 3600.0


class DueTimer:
    """The prober's one APScheduler job, on a :class:`DueTrigger`.

    ``run`` must not block: it runs in the scheduler's own thread or loop (APScheduler's
    ``DebugExecutor``). :meth:`arm` moves the next run forward when work became due
    earlier than planned (from any thread).
    """

    JOB_ID = "eagle-prober"

    def __init__(
        self, scheduler: Any, run: Callable[[], Any], next_due: Callable[[], float | None]
    ):
        self._scheduler = scheduler
        self._stopped = False
        self._defer_lock = threading.Lock()
        self._deferred: float | None = None
        self._deferring = False
        scheduler.add_job(run, DueTrigger(next_due), id=self.JOB_ID)

    def arm(self, at: float | None) -> None:
        """Run no later than ``at`` (monotonic seconds). Never blocks: while a run holds
        APScheduler's job store lock (a sync run happens under it, and a run over many
        members takes a while), the re-arming is handed to a helper thread, so a caller
        such as ``update_endpoints`` or a call's thread does not wait for the run."""
        if at is None or self._stopped:
            return
        # APScheduler 3.x's own lock around job store access (and sync runs)
        lock = getattr(self._scheduler, "_jobstores_lock", None)
        if lock is not None and not lock.acquire(blocking=False):
            self._defer(at)
            return
        try:
            self._arm(at)
        finally:
            if lock is not None:
                lock.release()

    def _defer(self, at: float) -> None:
        with self._defer_lock:
            if self._deferred is None or at < self._deferred:
                self._deferred = at
            if self._deferring:
                return
            self._deferring = True
        threading.Thread(target=self._arm_deferred, name="eagle-prober-arm", daemon=True).start()

    def _arm_deferred(self) -> None:
        while True:
            with self._defer_lock:
                at = self._deferred
                self._deferred = None
                if at is None or self._stopped:
                    self._deferring = False
                    return
            self._arm(at)  # waits for the run in progress to end

    def _arm(self, at: float) -> None:
        sched = self._scheduler
        try:
            job = sched.get_job(self.JOB_ID)
            when = datetime.now(sched.timezone) + timedelta(seconds=max(0.0, at - time.monotonic()))
            if job is not None and (job.next_run_time is None or when < job.next_run_time):
                sched.modify_job(self.JOB_ID, next_run_time=when)
        except Exception:  # the scheduler is shutting down
            log_debug("re-arming the prober failed", exc_info=True)

    def stop(self) -> None:
        """Plan nothing more."""
        self._stopped = True


def log_debug(msg: str, **kwargs: Any) -> None:
    """Log on the ``eagle.scheduler`` logger at DEBUG."""
    _logger.debug(msg, **kwargs)
