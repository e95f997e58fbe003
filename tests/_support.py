"""Helpers shared by the tests (import as ``from _support import ...``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

#: probes every 0.2 s with a 0.5 s deadline, with or without calls: a frozen member is
#: out within ~1.2 s
FAST: dict[str, object] = {
    "health": {
        "interval": 0.2,
        "timeout": 0.5,
        "unhealthy_threshold": 2,
        "healthy_threshold": 1,
        "no_traffic_interval": None,
    }
}


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``pred`` until true; returns seconds waited; fails the test naming ``what``."""
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def eagle_threads() -> list[threading.Thread]:
    """Threads an eagle channel may have started (APScheduler, timers)."""
    return [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and "grpc" not in t.name.lower()
    ]
