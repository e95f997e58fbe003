"""Retry decisions: backoff with jitter, a retry budget, and per-call attempt plans.

Nothing here sleeps or sends: the shells ask :meth:`AttemptPlan.on_failure` what to do
and then wait and re-send themselves.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

from ..config import RetryBudgetConfig, RetryConfig

__all__ = [
    "AttemptPlan",
    "Delivery",
    "GiveUp",
    "RetryBudget",
    "RetryDecision",
    "backoff_delay",
    "is_idempotent",
    "pushback_from",
]


def backoff_delay(retry_number: int, cfg: RetryConfig, rng: random.Random) -> float:
    """Delay before retry number ``retry_number`` (1-based): exponential, capped, +-jitter."""
    base = min(cfg.initial_backoff * cfg.multiplier ** (retry_number - 1), cfg.max_backoff)
    return max(0.0, base * (1.0 + cfg.jitter * (2.0 * rng.random() - 1.0)))


def is_idempotent(method: str, declared: tuple[str, ...]) -> bool:
    """Whether ``method`` (``/pkg.Service/Method``) is declared idempotent.

    Entries match the full method name, or are prefixes of it (``/etcdserverpb.KV/Range``,
    ``/etcdserverpb.KV/``); a bare method name like ``Range`` matches that method of any
    service.
    """
    return any(method.startswith(item) or method.rsplit("/", 1)[-1] == item for item in declared)


class RetryBudget:
    """Retries may add ``ratio`` of the calls in the last ``window`` seconds, plus a reserve
    that refills at ``min_per_second`` (capped at one second's worth) (Finagle, Linkerd).

    Thread-safe enough under the GIL for counters; the balancer calls it under its lock.
    """

    def __init__(self, cfg: RetryBudgetConfig, clock: Callable[[], float]) -> None:
        self.cfg = cfg
        self.clock = clock
        self._slots = max(1, round(cfg.window))
        self._width = cfg.window / self._slots
        self._calls = [0] * self._slots
        self._retries = [0] * self._slots
        self._slot_start = [0.0] * self._slots
        self._reserve = cfg.min_per_second
        self._reserve_at = clock()
        self.refused = 0

    def _slot(self, now: float) -> int:
        idx = int(now / self._width) % self._slots
        start = now - (now % self._width)
        if self._slot_start[idx] != start:
            self._slot_start[idx] = start
            self._calls[idx] = 0
            self._retries[idx] = 0
        return idx

    def _live(self, now: float) -> tuple[int, int]:
        horizon = now - self.cfg.window
        calls = retries = 0
        for i in range(self._slots):
            if self._slot_start[i] > horizon:
                calls += self._calls[i]
                retries += self._retries[i]
        return calls, retries

    def deposit(self) -> None:
        """Count one call (its first attempt)."""
        self._calls[self._slot(self.clock())] += 1

    def try_withdraw(self) -> bool:
        """Take one retry from the budget; False (and counted as refused) when spent."""
        now = self.clock()
        idx = self._slot(now)
        calls, retries = self._live(now)
        if retries + 1 <= self.cfg.ratio * calls:
            self._retries[idx] += 1
            return True
        rate = self.cfg.min_per_second
        self._reserve = min(rate, self._reserve + (now - self._reserve_at) * rate)
        self._reserve_at = now
        if self._reserve >= 1.0:
            self._reserve -= 1.0
            self._retries[idx] += 1
            return True
        self.refused += 1
        return False


class Delivery(enum.Enum):
    """How far a failed attempt got, as far as the client can tell.

    The shells classify grpc's errors (see :mod:`eagle.shell.outcomes`); the core decides
    from this alone.
    """

    #: provably never left the client (no connection): safe to re-send anywhere, for any
    #: method (gRPC A6 calls such re-sends transparent retries)
    NOT_SENT = "not sent"
    #: the server answered with a status that proves the request was not applied (see
    #: :mod:`eagle.core.rejections`): safe to re-send after a backoff, for any method
    REJECTED = "rejected unapplied"
    #: the server answered with this status: the outcome is known, whatever the code
    ANSWERED = "answered"
    #: the request may have reached the server and no status came back (connection lost
    #: mid-call, a deadline that expired without an answer): the outcome is unknown
    UNANSWERED = "unanswered"


class GiveUp(enum.Enum):
    """Why a failed call is not tried again (``CallReport.give_up``)."""

    RETRIES_OFF = "retries are off (retry.mode off)"
    LEFT_TO_GRPC = "retries are left to gRPC (retry.mode grpc)"
    MAX_ATTEMPTS = "no attempts left (retry.max_attempts)"
    NOT_RETRYABLE = "the status code is not in retry.retryable_codes"
    NOT_IDEMPOTENT = "the method is not declared idempotent and the request may have been applied"
    COMMITTED = "the call was committed (responses were delivered or the request buffer overflowed)"
    NO_TIME_LEFT = "no time left before the deadline"
    BUDGET = "the retry budget is spent"
    PUSHBACK = "the server asked not to retry (grpc-retry-pushback-ms)"
    CANCELLED = "cancelled by the application"
    NO_MEMBER = "no member can serve the call"
    DEADLINE = "the deadline passed before a member could be used"
    CLOSED = "the channel is closed"


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do after a failed attempt: retry after ``delay`` seconds, or give up for
    ``give_up``."""

    retry: bool
    delay: float = 0.0
    give_up: GiveUp | None = None

    @property
    def reason(self) -> str:
        """The reason in words ("" for a retry)."""
        return "" if self.give_up is None else self.give_up.value


_GIVE_UP: dict[GiveUp, RetryDecision] = {g: RetryDecision(False, give_up=g) for g in GiveUp}


class AttemptPlan:
    """The attempts of one call: timeouts, which members were tried, and retry decisions."""

    __slots__ = (
        "attempts",
        "budget",
        "cfg",
        "deadline",
        "idempotent",
        "max_attempts",
        "per_try",
        "rng",
        "tried",
    )

    def __init__(
        self,
        cfg: RetryConfig,
        budget: RetryBudget,
        rng: random.Random,
        deadline: float | None,
        idempotent: bool,
        max_attempts: int,
        streaming: bool = False,
    ) -> None:
        self.cfg = cfg
        #: the per-try timeout; streams have none (a long-lived stream is not an attempt
        #: that should time out)
        self.per_try = None if streaming else cfg.per_try_timeout
        self.budget = budget
        self.rng = rng
        self.deadline = deadline
        self.idempotent = idempotent
        self.max_attempts = max_attempts
        self.attempts = 0
        self.tried: set[str] = set()

    def begin(self, endpoint: str) -> None:
        """Record that an attempt starts on ``endpoint``."""
        self.attempts += 1
        self.tried.add(endpoint)

    def attempt_timeout(self, now: float) -> float | None:
        """The deadline to give the next attempt: the per-try timeout within the call's."""
        per_try = self.per_try
        if self.deadline is None:
            return per_try
        left = self.deadline - now
        return left if per_try is None or left < per_try else per_try

    def per_try_expired(self, code: str, now: float) -> bool:
        """True when a DEADLINE_EXCEEDED came from the per-try timeout, not the call's."""
        if code != "DEADLINE_EXCEEDED" or self.per_try is None:
            return False
        return self.deadline is None or now < self.deadline - 1e-3

    def on_failure(
        self,
        code: str,
        delivery: Delivery,
        now: float,
        pushback: str | None = None,
        committed: bool = False,
        moved: bool = False,
    ) -> RetryDecision:
        """Decide whether to retry a failed attempt.

        * A committed call (a stream that delivered responses, a request stream whose
          replay buffer overflowed) is never retried.
        * An attempt eagle abandoned itself because its member left rotation (``moved``:
          the watchdog's rescue of an idempotent call) does not count against
          ``max_attempts``: it is bounded by the deadline and the budget, so a call is
          not failed by a cluster whose members leave and rejoin in turn.
        * :attr:`Delivery.NOT_SENT` attempts are re-sent at once, whatever the method and
          ``retry.mode`` (gRPC A6 transparent retries).
        * :attr:`Delivery.REJECTED` attempts (the server proved it did not apply them)
          are re-sent after a backoff, whatever the method, unless retries are off; they
          are bounded by the deadline and the budget, not by ``max_attempts`` (a cluster
          may need seconds to elect a leader).
        * Others are retried only in ``retry.mode`` eagle, for idempotent methods with a
          retryable code (a per-try timeout counts as retryable).

        Every retry takes a token from the budget. A retry never starts when it could not
        begin before the call's deadline.
        """
        if committed:
            return _GIVE_UP[GiveUp.COMMITTED]
        if self.attempts >= self.max_attempts and delivery is not Delivery.REJECTED and not moved:
            return _GIVE_UP[GiveUp.MAX_ATTEMPTS]
        mode = self.cfg.mode
        if delivery is not Delivery.NOT_SENT:
            if mode == "off":
                return _GIVE_UP[GiveUp.RETRIES_OFF]
            if delivery is not Delivery.REJECTED:
                if mode == "grpc":
                    return _GIVE_UP[GiveUp.LEFT_TO_GRPC]
                if code not in self.cfg.retryable_codes and not self.per_try_expired(code, now):
                    return _GIVE_UP[GiveUp.NOT_RETRYABLE]
                if not self.idempotent:
                    return _GIVE_UP[GiveUp.NOT_IDEMPOTENT]
        delay = 0.0
        if pushback is not None:
            try:
                ms = int(pushback)
            except ValueError:
                return _GIVE_UP[GiveUp.PUSHBACK]
            if ms < 0:
                return _GIVE_UP[GiveUp.PUSHBACK]
            delay = ms / 1000.0
        elif delivery is not Delivery.NOT_SENT:
            delay = backoff_delay(self.attempts, self.cfg, self.rng)
        if self.deadline is not None and now + delay >= self.deadline:
            return _GIVE_UP[GiveUp.NO_TIME_LEFT]
        if not self.budget.try_withdraw():
            return _GIVE_UP[GiveUp.BUDGET]
        return RetryDecision(True, delay=delay)


def pushback_from(trailing: object) -> str | None:
    """The ``grpc-retry-pushback-ms`` value from trailing metadata pairs, if present."""
    if not trailing:
        return None
    try:
        for key, value in trailing:  # type: ignore[attr-defined]
            if key == "grpc-retry-pushback-ms":
                return value.decode() if isinstance(value, bytes) else str(value)
    except (TypeError, ValueError):
        return None
    return None
