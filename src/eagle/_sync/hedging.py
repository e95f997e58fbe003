"""Hedged unary calls for the sync channel: if the first attempt has not answered after
``hedging.delay``, a second goes to another member; the first success wins and the rest
are cancelled. The decisions (whether, where, budget) come from the core's CallDriver."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import grpc

from ..core.calls import SEND, CallDriver
from ..rpc_outcome import final_error, report_failure

if TYPE_CHECKING:
    from .channel import UnaryUnary

__all__ = ["hedged_call"]


class _Race:
    """Attempts in flight; wakes the caller when one finishes."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.attempts: list[tuple[Any, str, float]] = []
        self.finished: list[tuple[Any, str, float]] = []

    def launch(self, fut: Any, ep: str) -> None:
        entry = (fut, ep, time.monotonic())
        with self.cond:
            self.attempts.append(entry)
        fut.add_done_callback(lambda _f: self._done(entry))

    def _done(self, entry: tuple[Any, str, float]) -> None:
        with self.cond:
            self.finished.append(entry)
            self.cond.notify_all()

    def pending(self) -> int:
        return len(self.attempts) - len(self.finished)


def hedged_call(
    mcall: UnaryUnary,
    drv: CallDriver,
    delay: float,
    request: Any,
    metadata: Any,
    credentials: Any,
    wait_for_ready: bool | None,
    compression: Any,
    with_call: bool,
) -> Any:
    """Run one unary call with hedging; retries after all attempts failed as usual."""
    ch = mcall._ch
    while True:
        step = drv.next_step()
        if step.kind is not SEND:
            ch._pause(step)
            continue
        race = _Race()

        def send(s: Any, race: _Race = race) -> None:
            race.launch(
                mcall._mc(s.endpoint).future(
                    request, s.timeout, metadata, credentials, wait_for_ready, compression
                ),
                s.endpoint,
            )

        send(step)
        can_hedge = True
        seen = 0
        winner: tuple[Any, str, float] | None = None
        failures: list[tuple[Any, str, float]] = []
        while True:
            with race.cond:
                if seen == len(race.finished):
                    race.cond.wait(delay if can_hedge else None)
                fresh = race.finished[seen:]
                seen = len(race.finished)
            for entry in fresh:
                if entry[0].code() is grpc.StatusCode.OK:
                    winner = entry
                    break
                failures.append(entry)
            if winner is not None or race.pending() == 0:
                break
            if not fresh and can_hedge:  # the delay passed with no answer: hedge
                hedge = drv.hedge_step()
                if hedge is None:
                    can_hedge = False
                else:
                    send(hedge)
        for fut, _ep, _started in race.attempts:
            if fut is not (winner[0] if winner else None):
                fut.cancel()
        if winner is not None:
            fut, ep, started = winner
            drv.settle(ep, started, "OK")
            return (fut.result(), fut) if with_call else fut.result()
        for fut, ep, started in failures[:-1]:
            code = fut.code()
            drv.settle(ep, started, code.name if code is not None else "UNKNOWN")
        fut, ep, started = failures[-1]
        drv.endpoint, drv.started = ep, started
        err = fut.exception()
        if report_failure(drv, err):
            continue
        raise final_error(drv, err)
