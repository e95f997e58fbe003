"""How both probers use APScheduler: the job settings, the tick period, and the logger.

APScheduler 3.x logs a WARNING each time an interval run is skipped because the previous
run of the same job is still going (``max_instances=1``). For the prober's tick that is
expected under load and harmless (the next tick does the work), so those records are
turned into DEBUG ones; everything else passes unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..config import Config

__all__ = ["JOB_DEFAULTS", "add_probe_tick", "scheduler_logger", "tick_period"]

_SKIP = "maximum number of running instances reached"

#: one tick at a time; a late tick is coalesced, never dropped
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


def tick_period(config: Config) -> float:
    """How often the prober looks for due probes: a quarter of the shorter of interval and
    timeout, between 10 ms and 1 s."""
    h = config.health
    return min(1.0, max(0.01, min(h.interval, h.timeout) / 4.0))


def add_probe_tick(scheduler: Any, tick: Callable[[], Any], config: Config) -> None:
    """Schedule the prober's ``tick`` on ``scheduler`` (first run at once) and start it."""
    scheduler.add_job(
        tick,
        "interval",
        seconds=tick_period(config),
        next_run_time=datetime.now(),
        id="eagle-probe-tick",
    )
    scheduler.start()
