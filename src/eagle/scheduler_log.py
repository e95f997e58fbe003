"""The logger eagle's APScheduler instances use.

APScheduler 3.x logs a WARNING each time an interval run is skipped because the previous
run of the same job is still going (``max_instances=1``). For the prober's tick that is
expected under load and harmless (the next tick does the work), so those records are
turned into DEBUG ones; everything else passes unchanged.
"""

from __future__ import annotations

import logging

__all__ = ["scheduler_logger"]

_SKIP = "maximum number of running instances reached"


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
