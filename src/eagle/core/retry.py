"""Retry decisions: backoff with jitter, a retry budget, and per-call attempt plans.

Nothing here sleeps or sends: the shells ask :meth:`AttemptPlan.on_failure` what to do
and then wait and re-send themselves.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ..config import RetryBudgetConfig, RetryConfig

__all__ = [
    "AttemptPlan",
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


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do after a failed attempt: retry after ``delay`` seconds, or give up."""

    retry: bool
    delay: float = 0.0
    reason: str = ""


_GIVE_UP_NO_TIME = RetryDecision(False, reason="no time left before the deadline")


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
        reached: bool,
        now: float,
        pushback: str | None = None,
        min_attempt_time: float = 0.0,
    ) -> RetryDecision:
        """Decide whether to retry a failed attempt.

        ``reached`` is False only when the attempt provably never reached a server; such
        attempts are always safe to re-send. Others are retried only for idempotent methods
        with a retryable code (a per-try timeout counts as retryable). Every retry takes a
        token from the budget. A retry never starts when it could not finish by the call's
        deadline (``min_attempt_time`` is the expected attempt latency).
        """
        if self.cfg.mode == "off":
            return RetryDecision(False, reason="retries are off")
        if self.attempts >= self.max_attempts:
            return RetryDecision(False, reason=f"gave up after {self.attempts} attempts")
        if reached:
            if self.cfg.mode == "grpc":
                return RetryDecision(False, reason="retry.mode grpc: left to gRPC")
            retryable = code in self.cfg.retryable_codes or self.per_try_expired(code, now)
            if not retryable:
                return RetryDecision(False, reason=f"{code} is not retryable")
            if not self.idempotent:
                return RetryDecision(False, reason="not idempotent and may have reached a server")
        delay = 0.0
        if pushback is not None:
            try:
                ms = int(pushback)
            except ValueError:
                return RetryDecision(False, reason=f"server pushback {pushback!r}: no retry")
            if ms < 0:
                return RetryDecision(False, reason="server pushback asks for no retry")
            delay = ms / 1000.0
        elif reached:
            delay = backoff_delay(self.attempts, self.cfg, self.rng)
        if self.deadline is not None and now + delay + min_attempt_time >= self.deadline:
            return _GIVE_UP_NO_TIME
        if not self.budget.try_withdraw():
            return RetryDecision(False, reason="retry budget exhausted")
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
