"""One timer thread per sync channel.

Calls that must not block a thread (``future()``, streams) still need to wait: a retry's
backoff, a hedging delay, a wait for a member. Instead of a thread per wait
(``threading.Timer``), each channel runs the callbacks of all of them, at their time, on
one daemon thread started on first use. The connectivity watcher's polls run there too.
Callbacks must be short and never block.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

__all__ = ["TimerHandle", "Timers", "cancelled_within"]

log = logging.getLogger("eagle.timers")


class TimerHandle:
    """A scheduled callback; :meth:`cancel` stops it (and its repeats)."""

    __slots__ = ("cancelled", "fn", "period")

    def __init__(self, fn: Callable[[], object], period: float | None) -> None:
        self.fn = fn
        self.period = period
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run the callback (again)."""
        self.cancelled = True


class Timers:
    """Runs callbacks at their time on one daemon thread."""

    def __init__(self, name: str = "eagle-timers") -> None:
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def call_later(self, delay: float, fn: Callable[[], object]) -> TimerHandle:
        """Run ``fn()`` once, ``delay`` seconds from now."""
        return self._add(max(0.0, delay), TimerHandle(fn, None))

    def call_every(self, period: float, fn: Callable[[], object]) -> TimerHandle:
        """Run ``fn()`` every ``period`` seconds, first one period from now."""
        return self._add(period, TimerHandle(fn, period))

    def _add(self, delay: float, handle: TimerHandle) -> TimerHandle:
        with self._cond:
            if self._stopped:
                handle.cancelled = True
                return handle
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), handle))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            elif self._heap[0][2] is handle:
                self._cond.notify()
        return handle

    def _loop(self) -> None:
        cond = self._cond
        heap = self._heap
        while True:
            with cond:
                while True:
                    if self._stopped:
                        return
                    if heap:
                        wait = heap[0][0] - time.monotonic()
                        if wait <= 0:
                            at, _, handle = heapq.heappop(heap)
                            break
                        cond.wait(wait)
                    else:
                        cond.wait()
                if handle.period is not None and not handle.cancelled:
                    nxt = max(at + handle.period, time.monotonic())
                    heapq.heappush(heap, (nxt, next(self._seq), handle))
            if handle.cancelled:
                continue
            try:
                handle.fn()
            except Exception:
                log.exception("eagle: timer callback %r failed", handle.fn)

    def stop(self) -> None:
        """Drop every pending callback and end the thread (it finishes the one running)."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)


def cancelled_within(event: threading.Event, delay: float) -> bool:
    """Wait up to ``delay`` seconds for ``event``; True when it was set."""
    return event.wait(delay)
