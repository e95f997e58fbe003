"""The life of one call as a sans-IO state machine (the httpcore pattern).

Both shells drive every call with the same loop::

    drv = CallDriver(balancer, method, timeout, wait_for_ready)
    while True:
        step = drv.next_step()
        if step.kind is SEND:     send to step.endpoint with deadline step.timeout
                                  -> drv.succeeded() and return, or
                                  -> drv.failed(code, details, trailing): True = loop again
        elif step.kind is SLEEP:  sleep step.delay
        elif step.kind is WAIT:   wait for the status table to change (up to step.delay)
        else:                     raise an error with step.code and step.details

so picking, retry and deadline logic exist once, here.
"""

from __future__ import annotations

import enum
import time
from typing import TYPE_CHECKING

from .health import never_reached
from .retry import pushback_from

if TYPE_CHECKING:
    from .balancer import Balancer

__all__ = ["FAIL", "SEND", "SLEEP", "WAIT", "CallDriver", "HedgeRound", "Step", "StepKind"]

_EMPTY: frozenset[str] = frozenset()


class StepKind(enum.Enum):
    """What the shell must do next."""

    SEND = 1
    SLEEP = 2
    WAIT = 3
    FAIL = 4


class Step:
    """One instruction to the shell."""

    __slots__ = ("code", "delay", "details", "endpoint", "kind", "timeout", "version")

    def __init__(
        self,
        kind: StepKind,
        endpoint: str | None = None,
        timeout: float | None = None,
        delay: float = 0.0,
        code: str = "",
        details: str = "",
        version: int = 0,
    ) -> None:
        self.kind = kind
        self.endpoint = endpoint
        self.timeout = timeout
        self.delay = delay
        self.code = code
        self.details = details
        self.version = version


SEND = StepKind.SEND
SLEEP = StepKind.SLEEP
WAIT = StepKind.WAIT
FAIL = StepKind.FAIL

#: codes that do not prove a server rejected the call (it may have been applied)
OUTCOME_UNKNOWN_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN", "INTERNAL"})

#: how long one WAIT step lasts at most before the shell asks again
WAIT_SLICE = 0.25


class CallDriver:
    """Decides, attempt by attempt, where a call goes and whether to try again."""

    __slots__ = (
        "_bal",
        "_delay",
        "_method",
        "_wait",
        "endpoint",
        "plan",
        "started",
        "unknown_outcome",
    )

    def __init__(
        self,
        balancer: Balancer,
        method: str,
        timeout: float | None,
        wait_for_ready: bool | None,
        now: float | None = None,
        streaming: bool = False,
    ) -> None:
        self._bal = balancer
        self._method = method
        self._wait = bool(wait_for_ready)
        deadline = None if timeout is None else (time.monotonic() if now is None else now) + timeout
        self.plan = balancer.plan(method, deadline, streaming)
        self._delay = 0.0
        self.endpoint: str | None = None
        self.started = 0.0
        #: set when the call failed after it may have reached a server and was not retried
        self.unknown_outcome: str | None = None

    @property
    def deadline(self) -> float | None:
        """The call's deadline on the monotonic clock, or None."""
        return self.plan.deadline

    def next_step(self, now: float | None = None) -> Step:
        """What to do next: SEND, SLEEP, WAIT or FAIL."""
        if self._delay > 0.0:
            d = self._delay
            self._delay = 0.0
            return Step(SLEEP, delay=d)
        plan = self.plan
        if now is None:
            now = time.monotonic()
        ep = self._bal.pick(self._method, plan.tried or _EMPTY)
        deadline = plan.deadline
        if ep is None:
            if self._wait:
                left = None if deadline is None else deadline - now
                if left is None or left > 0:
                    return Step(
                        WAIT,
                        delay=WAIT_SLICE if left is None else min(left, WAIT_SLICE),
                        version=self._bal.version,
                    )
                return Step(
                    FAIL,
                    code="DEADLINE_EXCEEDED",
                    details="eagle: deadline passed waiting for a member: "
                    + self._bal.snapshot().describe(),
                )
            return Step(FAIL, code="UNAVAILABLE", details=self._bal.describe_unavailable())
        timeout = None
        if deadline is not None or plan.per_try is not None:
            timeout = plan.attempt_timeout(now)
            if timeout is not None and timeout <= 0:
                return Step(
                    FAIL,
                    code="DEADLINE_EXCEEDED",
                    details=f"eagle: deadline exceeded after {plan.attempts} attempt(s)",
                )
        plan.begin(ep)
        self._bal.stats.attempts += 1
        self.endpoint = ep
        self.started = now
        return Step(SEND, ep, timeout)

    def hedge_delay(self) -> float | None:
        """The hedging delay for this call, or None when it must not be hedged (hedging off,
        or the method is not declared idempotent)."""
        delay = self._bal.config.hedging.delay
        return delay if delay is not None and self.plan.idempotent else None

    def hedge_step(self, now: float | None = None) -> Step | None:
        """A SEND step for a hedged attempt on another member, or None when no more hedges
        are allowed (``hedging.max_attempts``, the retry budget, no other member, or no time
        left)."""
        plan = self.plan
        if plan.attempts >= min(self._bal.config.hedging.max_attempts, plan.max_attempts):
            return None
        if now is None:
            now = time.monotonic()
        ep = self._bal.pick(self._method, plan.tried)
        if ep is None or ep in plan.tried:
            return None
        timeout = plan.attempt_timeout(now)
        if timeout is not None and timeout <= 0:
            return None
        if not plan.budget.try_withdraw():
            return None
        plan.begin(ep)
        self._bal.stats.attempts += 1
        self._bal.note_retry(True, ep, self._method, "HEDGE", "hedged attempt")
        return Step(SEND, ep, timeout)

    def settle(self, endpoint: str, started: float, code: str, now: float | None = None) -> None:
        """Report the outcome of one of several concurrent (hedged) attempts."""
        self.endpoint = endpoint
        self.started = started
        if code == "OK":
            self.succeeded(now)
        elif code != "CANCELLED":
            self._bal.done(endpoint, code, (time.monotonic() if now is None else now) - started)

    def succeeded(self, now: float | None = None) -> None:
        """Report that the attempt in flight succeeded."""
        ep = self.endpoint
        if ep is not None:
            self._bal.done(ep, "OK", (time.monotonic() if now is None else now) - self.started)

    def _retry_code(self, code: str, now: float) -> str:
        """The code to judge a retry by. An attempt that used up its per-try timeout
        timed out, whatever the server's answer raced the client's deadline with (a
        grpc-go server such as etcd answers its own expired deadline with UNKNOWN
        "context deadline exceeded")."""
        per_try = self.plan.per_try
        if (
            per_try is not None
            and code != "DEADLINE_EXCEEDED"
            and now - self.started >= per_try - 2e-3
        ):
            return "DEADLINE_EXCEEDED"
        return code

    def failed(
        self,
        code: str,
        details: str | None,
        trailing: object = None,
        now: float | None = None,
        may_retry: bool = True,
    ) -> bool:
        """Report that the attempt in flight failed; True when the call should go on.

        ``may_retry`` False reports the failure without retrying (e.g. a stream that has
        already delivered messages).
        """
        ep = self.endpoint
        if now is None:
            now = time.monotonic()
        if ep is not None:
            self._bal.done(ep, code, now - self.started, details)
        if not may_retry:
            return False
        pushback = pushback_from(trailing) if trailing else None
        reached = not never_reached(code, details)
        decision = self.plan.on_failure(self._retry_code(code, now), reached, now, pushback)
        self._bal.note_retry(decision.retry, ep, self._method, code, decision.reason)
        if decision.retry:
            self._delay = decision.delay
            return True
        if reached and not self.plan.idempotent and code in OUTCOME_UNKNOWN_CODES:
            self.unknown_outcome = (
                f"eagle: outcome unknown: the call may have been applied by {ep}; "
                "not retried because its method is not declared idempotent"
            )
        return False


class HedgeRound:
    """The bookkeeping of one round of a hedged call, shared by both shells.

    The shell sends the round's first attempt, then waits up to :meth:`wait_time` for an
    answer. When none came, :meth:`hedge` gives the next attempt to send (or None: no more
    hedges this round). Each answer is reported with :meth:`won` or :meth:`lost`; when
    every attempt of the round lost, :meth:`close_lost` reports all but the last to the
    balancer and points the driver at the last, whose error the shell then hands to
    ``CallDriver.failed`` to decide about a retry.
    """

    __slots__ = ("_drv", "_lost", "can_hedge", "delay", "out")

    def __init__(self, drv: CallDriver, delay: float) -> None:
        self._drv = drv
        self.delay = delay
        self.can_hedge = True
        self.out = 0
        self._lost: list[tuple[str, float, str]] = []

    def sent(self) -> None:
        """An attempt of this round is now in flight."""
        self.out += 1

    def wait_time(self) -> float | None:
        """How long to wait for an answer before hedging (None: until one comes)."""
        return self.delay if self.can_hedge else None

    def hedge(self) -> Step | None:
        """No answer within the delay: the SEND step of a hedged attempt, or None."""
        step = self._drv.hedge_step() if self.can_hedge else None
        if step is None:
            self.can_hedge = False
        return step

    def won(self, endpoint: str, started: float) -> None:
        """The attempt on ``endpoint`` answered first."""
        self._drv.settle(endpoint, started, "OK")

    def lost(self, endpoint: str, started: float, code: str) -> bool:
        """The attempt on ``endpoint`` failed with ``code``; True when none is left out."""
        self.out -= 1
        self._lost.append((endpoint, started, code))
        return self.out <= 0

    def close_lost(self) -> None:
        """Every attempt failed: report all but the last; the driver now holds the last."""
        for endpoint, started, code in self._lost[:-1]:
            self._drv.settle(endpoint, started, code)
        self._drv.endpoint, self._drv.started, _ = self._lost[-1]
