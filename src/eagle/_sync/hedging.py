"""Hedged unary calls for the sync channel: if the first attempt has not answered after
``hedging.delay``, a second goes to another member; the first success wins and the rest
are cancelled. The decisions (whether, where, budget) come from the core's CallDriver."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import grpc

from ..core.calls import SEND, CallDriver, HedgeRound
from ..shell.outcomes import final_error, report_failure

if TYPE_CHECKING:
    from .channel import UnaryUnary

__all__ = ["hedged_call"]


class _Answers:
    """Attempts of one round that finished, in the order they finished."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.done: list[tuple[Any, str, float]] = []

    def watch(self, fut: Any, ep: str, started: float) -> None:
        def finished(_f: Any) -> None:
            with self.cond:
                self.done.append((fut, ep, started))
                self.cond.notify_all()

        fut.add_done_callback(finished)


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
        rnd = HedgeRound(drv, delay)
        answers = _Answers()
        futures: list[Any] = []

        def send(
            s: Any,
            rnd: HedgeRound = rnd,
            answers: _Answers = answers,
            futures: list[Any] = futures,
        ) -> None:
            fut = mcall._mc(s.endpoint).future(
                request, s.timeout, metadata, credentials, wait_for_ready, compression
            )
            futures.append(fut)
            rnd.sent()
            answers.watch(fut, s.endpoint, time.monotonic())

        send(step)
        seen = 0
        winner: Any = None
        last_err: Any = None
        while winner is None and last_err is None:
            with answers.cond:
                if seen == len(answers.done):
                    answers.cond.wait(rnd.wait_time())
                fresh = answers.done[seen:]
                seen = len(answers.done)
            for fut, ep, started in fresh:
                code = fut.code()
                if code is grpc.StatusCode.OK:
                    rnd.won(ep, started)
                    winner = fut
                    break
                if rnd.lost(ep, started, code.name if code is not None else "CANCELLED"):
                    last_err = fut.exception()
            if winner is None and last_err is None and not fresh:
                hedge = rnd.hedge()  # the delay passed with no answer
                if hedge is not None:
                    send(hedge)
        for fut in futures:
            if fut is not winner:
                fut.cancel()
        if winner is not None:
            return (winner.result(), winner) if with_call else winner.result()
        rnd.close_lost()
        err = last_err
        if report_failure(drv, err):
            continue
        raise final_error(drv, err)
