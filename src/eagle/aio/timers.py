"""Waiting in the asyncio shell (the twin of :mod:`eagle._sync.timers`).

asyncio's loop already runs callbacks at their time (``loop.call_later``), so this module
only holds the waiting primitive the generated sync code shares a name with.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

__all__ = ["call_in_loop", "cancelled_within"]


def call_in_loop(loop: asyncio.AbstractEventLoop | None, fn: Callable[[], None]) -> None:
    """Run ``fn`` in ``loop`` from any thread: at once when called in it, else soon;
    nothing when the loop is not there (yet) or closed."""
    if loop is None or loop.is_closed():
        return
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        fn()
    else:
        loop.call_soon_threadsafe(fn)


async def cancelled_within(event: asyncio.Event, delay: float) -> bool:
    """Wait up to ``delay`` seconds for ``event``; True when it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), delay)
    return event.is_set()
