"""Waiting in the asyncio shell (the twin of :mod:`eagle._sync.timers`).

asyncio's loop already runs callbacks at their time (``loop.call_later``), so this module
only holds the waiting primitive the generated sync code shares a name with.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["cancelled_within"]


async def cancelled_within(event: asyncio.Event, delay: float) -> bool:
    """Wait up to ``delay`` seconds for ``event``; True when it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), delay)
    return event.is_set()
