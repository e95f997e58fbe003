"""Hedged unary calls for the asyncio channel (the twin of :mod:`eagle._sync.hedging`):
the decisions come from the core's CallDriver, only the waiting is asyncio's."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from ..core.calls import SEND, CallDriver, HedgeRound
from ..shell.outcomes import final_error, report_failure

if TYPE_CHECKING:
    from .channel import UnaryUnary

__all__ = ["hedged_run"]


async def _await(call: Any) -> Any:
    return await call


async def hedged_run(
    mcall: UnaryUnary, drv: CallDriver, delay: float, request: Any, args: tuple[Any, ...]
) -> Any:
    """Run one unary call with hedging; retries after all attempts failed as usual."""
    ch = mcall._ch
    metadata, credentials, wait_for_ready, compression = args
    while True:
        step = drv.next_step()
        if step.kind is not SEND:
            await ch._pause(step)
            continue
        info: dict[asyncio.Task[Any], tuple[str, float, Any]] = {}

        def send(s: Any, info: dict[asyncio.Task[Any], tuple[str, float, Any]] = info) -> None:
            call = mcall._mc(s.endpoint)(
                request,
                timeout=s.timeout,
                metadata=metadata,
                credentials=credentials,
                wait_for_ready=wait_for_ready,
                compression=compression,
            )
            info[asyncio.ensure_future(_await(call))] = (s.endpoint, time.monotonic(), call)

        rnd = HedgeRound(drv, delay)
        send(step)
        rnd.sent()
        pending: set[asyncio.Task[Any]] = set(info)
        winner: asyncio.Task[Any] | None = None
        err: Any = None
        try:
            while winner is None and err is None:
                done, pending = await asyncio.wait(
                    pending, timeout=rnd.wait_time(), return_when=asyncio.FIRST_COMPLETED
                )
                for t in done:
                    ep, started, _ = info[t]
                    exc: Any = None if t.cancelled() else t.exception()
                    if not t.cancelled() and exc is None:
                        rnd.won(ep, started)
                        winner = t
                        break
                    code = exc.code().name if callable(getattr(exc, "code", None)) else "CANCELLED"
                    if rnd.lost(ep, started, code):
                        if exc is None:  # the whole round was cancelled
                            raise asyncio.CancelledError
                        err = exc
                if winner is None and err is None and not done:
                    hedge = rnd.hedge()  # the delay passed with no answer
                    if hedge is not None:
                        before = set(info)
                        send(hedge)
                        rnd.sent()
                        pending |= set(info) - before
        finally:
            for t in info:
                if t is not winner and not t.done():
                    info[t][2].cancel()
                    t.cancel()
        if winner is not None:
            return winner.result()
        rnd.close_lost()
        if report_failure(drv, err):
            continue
        raise final_error(drv, err)
