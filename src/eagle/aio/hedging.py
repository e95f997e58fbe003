"""Hedged unary calls for the asyncio channel (the twin of :mod:`eagle._sync.hedging`):
the decisions come from the core's CallDriver, only the waiting is asyncio's."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from ..core.calls import SEND, CallDriver
from ..rpc_outcome import final_error, report_failure

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

        send(step)
        pending: set[asyncio.Task[Any]] = set(info)
        can_hedge = True
        winner: asyncio.Task[Any] | None = None
        failures: list[asyncio.Task[Any]] = []
        try:
            while pending:
                done, pending = await asyncio.wait(
                    pending,
                    timeout=delay if can_hedge else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for t in done:
                    if not t.cancelled() and t.exception() is None:
                        winner = t
                        break
                    failures.append(t)
                if winner is not None:
                    break
                if not done and can_hedge:
                    hedge = drv.hedge_step()
                    if hedge is None:
                        can_hedge = False
                    else:
                        before = set(info)
                        send(hedge)
                        pending |= set(info) - before
        finally:
            for t in info:
                if t is not winner and not t.done():
                    info[t][2].cancel()
                    t.cancel()
        if winner is not None:
            ep, started, _ = info[winner]
            drv.settle(ep, started, "OK")
            return winner.result()
        for t in failures[:-1]:
            ep, started, _ = info[t]
            exc: Any = None if t.cancelled() else t.exception()
            drv.settle(ep, started, exc.code().name if hasattr(exc, "code") else "CANCELLED")
        last = failures[-1]
        drv.endpoint, drv.started = info[last][0], info[last][1]
        err = last.exception()
        if report_failure(drv, err):
            continue
        raise final_error(drv, err)
