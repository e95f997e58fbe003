"""The life of one call as a sans-IO state machine (the httpcore pattern).

Each shell has exactly one attempt loop, used by every call kind and by hedging::

    drv = CallDriver(balancer, method, timeout, wait_for_ready)
    while True:
        step = drv.next_step()
        SEND  -> start an attempt on step.endpoint with deadline step.timeout, then
                 drv.succeeded()                        -> the call is done, or
                 drv.failed(AttemptFailure(...)).retry  -> loop again, else the call
                                                           ends with the attempt's error
        SLEEP -> sleep step.delay
        WAIT  -> wait for the status table to change (at most step.delay)
        FAIL  -> end with eagle's own error (step.code, step.details, step.give_up)

Every decision (which member, whether to retry, whether the outcome is unknown) is made
here and comes back typed (:class:`~eagle.core.retry.GiveUp`,
:class:`~eagle.core.retry.Delivery`); time comes only from the balancer's clock.
What eagle learned about a call is summed up in a :class:`CallReport`. Observers that
follow single calls (:meth:`eagle.core.observers.Observer.on_call_start`) learn of each
attempt's end as an :class:`AttemptEnd`, and of the call's end.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .rejections import known_unapplied
from .retry import Delivery, GiveUp, pushback_from

if TYPE_CHECKING:
    from .balancer import Balancer

__all__ = [
    "FAIL",
    "SEND",
    "SLEEP",
    "WAIT",
    "AttemptEnd",
    "AttemptFailure",
    "AttemptRecord",
    "CallDriver",
    "CallReport",
    "Decision",
    "Delivery",
    "GiveUp",
    "HedgeRound",
    "Step",
    "StepKind",
]

_EMPTY: frozenset[str] = frozenset()


class StepKind(enum.Enum):
    """What the shell must do next."""

    SEND = 1
    SLEEP = 2
    WAIT = 3
    FAIL = 4


class Step:
    """One instruction to the shell."""

    __slots__ = ("code", "delay", "details", "endpoint", "give_up", "kind", "timeout", "version")

    def __init__(
        self,
        kind: StepKind,
        endpoint: str | None = None,
        timeout: float | None = None,
        delay: float = 0.0,
        code: str = "",
        details: str = "",
        version: int = 0,
        give_up: GiveUp | None = None,
    ) -> None:
        self.kind = kind
        self.endpoint = endpoint
        self.timeout = timeout
        self.delay = delay
        self.code = code
        self.details = details
        self.version = version
        self.give_up = give_up


SEND = StepKind.SEND
SLEEP = StepKind.SLEEP
WAIT = StepKind.WAIT
FAIL = StepKind.FAIL

#: how long one WAIT step lasts at most before the shell asks again
WAIT_SLICE = 0.25


@dataclass(frozen=True, slots=True)
class AttemptFailure:
    """A failed attempt as the shell saw it: grpc's status code name and details, how far
    the attempt got (:class:`Delivery`), the trailing metadata (for pushback), and whether
    eagle abandoned it because its member left rotation (no verdict on the member)."""

    code: str
    details: str | None
    delivery: Delivery
    trailing: object = None
    abandoned: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """What the core decided after a failed attempt.

    ``retry``: another attempt follows (after the SLEEP step :meth:`CallDriver.next_step`
    gives). Otherwise the call ends with the attempt's error; ``give_up`` says why it was
    not retried and ``outcome_unknown`` whether the request may have been applied.
    """

    retry: bool
    give_up: GiveUp | None = None
    outcome_unknown: bool = False


_RETRY = Decision(True)


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt of a call: the member, the outcome's code ("OK" on success) and how far
    it got (None for a success)."""

    endpoint: str
    code: str
    delivery: Delivery | None = None


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """One attempt of a call ended, as told to a call's tracers
    (:meth:`eagle.core.observers.CallTracer.on_attempt`).

    Attributes:
        endpoint: the member the attempt was sent to.
        code: its status name: "OK", grpc's code of a failure, "CANCELLED" when the
            application cancelled the call or the channel was closed under it.
        duration: seconds from the attempt's start to its end.
        delivery: how far a failed attempt got (:class:`Delivery`); None for a success
            or a cancellation.
        retried: True when the call goes on with another attempt because of this failure.
        give_up: why the call was not tried again after this attempt, when it ended the
            call with its failure (None when it succeeded, was retried, or was hedged).
        backoff: seconds the call waits before its next attempt (when ``retried``).
        hedged: one of several concurrent attempts of a hedge round whose end decided
            nothing by itself (the round's outcome is its last attempt).
    """

    endpoint: str
    code: str
    duration: float
    delivery: Delivery | None = None
    retried: bool = False
    give_up: GiveUp | None = None
    backoff: float = 0.0
    hedged: bool = False


@dataclass(frozen=True, slots=True)
class CallReport:
    """What eagle knows about a finished call, on top of what grpc shows.

    Read it with :func:`eagle.call_info` from an error, a future or a call object.

    Attributes:
        method: the full method name.
        endpoint: the member of the last attempt (None when no attempt was made).
        attempts: every attempt, in order.
        outcome_unknown: True when the call failed after its request may have reached a
            server and no status came back (a connection lost mid-call, a deadline that
            expired without an answer): it may or may not have been applied.
        give_up: why the call was not tried again (None when it succeeded).
        local: True when the error was made by eagle itself (no member could serve the
            call, the channel was closed) rather than by an attempt.
    """

    method: str
    endpoint: str | None
    attempts: tuple[AttemptRecord, ...]
    outcome_unknown: bool = False
    give_up: GiveUp | None = None
    local: bool = False

    @property
    def reason(self) -> str:
        """Why the call was not tried again, in words ("" when it succeeded)."""
        return "" if self.give_up is None else self.give_up.value


class CallDriver:
    """Decides, attempt by attempt, where a call goes and whether to try again."""

    __slots__ = (
        "_bal",
        "_clock",
        "_delay",
        "_give_up",
        "_inflight",
        "_local",
        "_method",
        "_records",
        "_start",
        "_trace_attempts",
        "_tracers",
        "_unknown",
        "_wait",
        "endpoint",
        "plan",
        "started",
    )

    def __init__(
        self,
        balancer: Balancer,
        method: str,
        timeout: float | None,
        wait_for_ready: bool | None,
        streaming: bool = False,
    ) -> None:
        self._bal = balancer
        self._clock = balancer.clock
        self._method = method
        self._wait = bool(wait_for_ready)
        self._start = start = self._clock()
        deadline = None if timeout is None else start + timeout
        self.plan = balancer.plan(method, deadline, streaming, start)
        self._delay = 0.0
        self.endpoint: str | None = None
        self.started = 0.0
        self._records: list[AttemptRecord] | None = None
        self._give_up: GiveUp | None = None
        self._unknown = False
        self._local = False
        self._inflight = False  # an attempt was sent and its end not yet traced
        observers = balancer.observers
        tracers = observers.start_call(method) if observers.call_start else None
        self._tracers = tracers
        self._trace_attempts = None if tracers is None else observers.attempt_tracers(tracers)

    @property
    def method(self) -> str:
        """The call's full method name."""
        return self._method

    @property
    def deadline(self) -> float | None:
        """The call's deadline on the balancer's clock, or None."""
        return self.plan.deadline

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without one."""
        deadline = self.plan.deadline
        return None if deadline is None else max(0.0, deadline - self._clock())

    def next_step(self) -> Step:
        """What to do next: SEND, SLEEP, WAIT or FAIL.

        A call made with time left always gets at least one real attempt: the first
        attempt is sent even when little or no time is left (grpc then ends it with its
        own DEADLINE_EXCEEDED), later ones only with time left.
        """
        if self._delay > 0.0:
            d = self._delay
            self._delay = 0.0
            return Step(SLEEP, delay=d)
        plan = self.plan
        now = self._clock()
        ep = self._bal.pick(self._method, plan.tried or _EMPTY)
        deadline = plan.deadline
        if ep is None:
            if self._wait or self._bal.awaiting_members:
                left = None if deadline is None else deadline - now
                if left is None or left > 0:
                    return Step(
                        WAIT,
                        delay=WAIT_SLICE if left is None else min(left, WAIT_SLICE),
                        version=self._bal.version,
                    )
                return self._fail(
                    "DEADLINE_EXCEEDED",
                    "Deadline Exceeded (eagle: no member became available: "
                    + self._bal.snapshot().describe()
                    + ")",
                    GiveUp.DEADLINE,
                )
            return self._fail("UNAVAILABLE", self._bal.describe_unavailable(), GiveUp.NO_MEMBER)
        timeout = None
        if deadline is not None or plan.per_try is not None:
            timeout = plan.attempt_timeout(now)
            if timeout is not None and timeout <= 0 and plan.attempts > 0:
                return self._fail(
                    "DEADLINE_EXCEEDED", "Deadline Exceeded", GiveUp.NO_TIME_LEFT, release=ep
                )
        plan.begin(ep)
        self._bal.stats.attempts += 1
        self.endpoint = ep
        self.started = now
        self._inflight = True
        return Step(SEND, ep, timeout)

    def _fail(self, code: str, details: str, give_up: GiveUp, release: str | None = None) -> Step:
        if release is not None:
            self._bal.release(release)
        self._give_up = give_up
        self._local = True
        return Step(FAIL, code=code, details=details, give_up=give_up)

    # ------------------------------------------------------------------ outcomes
    def _record(self, endpoint: str, code: str, delivery: Delivery | None) -> None:
        records = self._records
        if records is None:
            records = self._records = []
        records.append(AttemptRecord(endpoint, code, delivery))

    def _trace(
        self,
        endpoint: str,
        code: str,
        delivery: Delivery | None = None,
        decision: Decision | None = None,
        backoff: float = 0.0,
        started: float | None = None,
    ) -> None:
        """Tell the call's tracers that an attempt ended: the attempt in flight (once),
        or with ``started`` one attempt of a hedge round."""
        tracers = self._trace_attempts
        if tracers is None:
            return
        hedged = started is not None
        if not hedged:
            if not self._inflight:
                return
            self._inflight = False
            started = self.started
        assert started is not None
        end = AttemptEnd(
            endpoint,
            code,
            self._clock() - started,
            delivery,
            decision is not None and decision.retry,
            None if decision is None else decision.give_up,
            backoff,
            hedged,
        )
        self._bal.observers.trace_attempt(tracers, end)

    def succeeded(self) -> None:
        """Report that the attempt in flight succeeded."""
        ep = self.endpoint
        if ep is not None:
            if self._records is not None:
                self._record(ep, "OK", None)
            self._bal.done(ep, "OK", self._clock() - self.started)
            if self._trace_attempts is not None:
                self._trace(ep, "OK")

    def cancelled(self) -> None:
        """Report that the application cancelled the call (its attempt in flight, if any,
        was cancelled): not a failure of the member."""
        ep = self.endpoint
        self._give_up = GiveUp.CANCELLED
        if ep is not None:
            self._record(ep, "CANCELLED", None)
            self._bal.release(ep, self._clock() - self.started)
            if self._trace_attempts is not None:
                self._trace(ep, "CANCELLED")

    def closed(self) -> None:
        """Report that the call ended because the channel was closed."""
        self._give_up = GiveUp.CLOSED
        self._local = True
        ep = self.endpoint
        if ep is not None:
            self._bal.release(ep, self._clock() - self.started)
            if self._trace_attempts is not None:
                self._trace(ep, "CANCELLED")

    def classify(self, failure: AttemptFailure) -> Delivery:
        """The delivery the core judges ``failure`` by: an answer that proves the request
        was rejected unapplied (see :mod:`eagle.core.rejections`) counts as REJECTED."""
        if failure.delivery is Delivery.ANSWERED and known_unapplied(
            failure.code, failure.details, self._method
        ):
            return Delivery.REJECTED
        return failure.delivery

    def failed(self, failure: AttemptFailure, committed: bool = False) -> Decision:
        """Report that the attempt in flight failed; the decision says whether the call
        goes on. ``committed`` marks a call that must not be re-sent (a stream that has
        delivered responses, a request stream whose replay buffer overflowed)."""
        ep = self.endpoint
        now = self._clock()
        delivery = self.classify(failure)
        if ep is not None:
            self._record(ep, failure.code, delivery)
            self._bal.attempt_failed(ep, failure, delivery, now - self.started)
        pushback = pushback_from(failure.trailing) if failure.trailing else None
        code = self._retry_code(failure.code, now)
        rd = self.plan.on_failure(code, delivery, now, pushback, committed, failure.abandoned)
        self._bal.note_retry(rd.retry, ep, self._method, failure.code, rd.give_up)
        if rd.retry:
            self._delay = rd.delay
            if self._trace_attempts is not None and ep is not None:
                self._trace(ep, failure.code, delivery, _RETRY, rd.delay)
            return _RETRY
        self._give_up = rd.give_up
        self._unknown = delivery is Delivery.UNANSWERED
        decision = Decision(False, rd.give_up, self._unknown)
        if self._trace_attempts is not None and ep is not None:
            self._trace(ep, failure.code, delivery, decision)
        return decision

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

    def finished(self, code: str) -> None:
        """The call ended with status ``code`` (a ``grpc.StatusCode`` name): ``on_call``
        observers learn of it, as the application saw it."""
        observers = self._bal.observers
        tracers = self._tracers
        if observers.call or tracers is not None:
            report = self.report()
            duration = self._clock() - self._start
            if observers.call:
                observers.emit_call(report, code, duration)
            if tracers is not None:
                observers.trace_end(tracers, report, code, duration, self.plan.attempts)

    def report(self) -> CallReport:
        """What eagle knows about the call so far (see :class:`CallReport`)."""
        records = tuple(self._records or ())
        if not records and self.endpoint is not None and self._give_up is None:
            records = (AttemptRecord(self.endpoint, "OK", None),)
        return CallReport(
            method=self._method,
            endpoint=self.endpoint,
            attempts=records,
            outcome_unknown=self._unknown,
            give_up=self._give_up,
            local=self._local,
        )

    # ------------------------------------------------------------------ hedging
    def hedge_delay(self) -> float | None:
        """The hedging delay for this call, or None when it must not be hedged (hedging off,
        or the method is not declared idempotent)."""
        delay = self._bal.config.hedging.delay
        return delay if delay is not None and self.plan.idempotent else None

    def hedge_step(self) -> Step | None:
        """A SEND step for a hedged attempt on another member, or None when no more hedges
        are allowed (``hedging.max_attempts``, the retry budget, no other member, or no time
        left)."""
        plan = self.plan
        if plan.attempts >= min(self._bal.config.hedging.max_attempts, plan.max_attempts):
            return None
        now = self._clock()
        ep = self._bal.pick(self._method, plan.tried)
        if ep is None:
            return None
        if ep in plan.tried:
            self._bal.release(ep)
            return None
        timeout = plan.attempt_timeout(now)
        if (timeout is not None and timeout <= 0) or not plan.budget.try_withdraw():
            self._bal.release(ep)
            return None
        plan.begin(ep)
        self._bal.stats.attempts += 1
        self._bal.note_retry(True, ep, self._method, "HEDGE", None)
        return Step(SEND, ep, timeout)

    def settle(self, endpoint: str, started: float, failure: AttemptFailure | None) -> None:
        """Report the outcome of one of several concurrent (hedged) attempts: None for a
        success, else its failure (a cancelled loser is not a failure of its member)."""
        self.endpoint = endpoint
        self.started = started
        if failure is None:
            self.succeeded()
        elif failure.code == "CANCELLED" and failure.delivery is not Delivery.ANSWERED:
            self._bal.release(endpoint, self._clock() - started)
            if self._trace_attempts is not None:
                self._trace(endpoint, "CANCELLED", started=started)
        else:
            delivery = self.classify(failure)
            self._record(endpoint, failure.code, delivery)
            self._bal.attempt_failed(endpoint, failure, delivery, self._clock() - started)
            if self._trace_attempts is not None:
                self._trace(endpoint, failure.code, delivery, started=started)


class HedgeRound:
    """The bookkeeping of one round of a hedged call, shared by both shells.

    The shell sends the round's first attempt, then waits up to :meth:`wait_time` for an
    answer. When none came, :meth:`hedge` gives the next attempt to send (or None: no more
    hedges this round). Each attempt sent is recorded with :meth:`sent`, each answer with
    :meth:`won` or :meth:`lost`. The winner is left for the call to report (the shell
    hands its outcome to the core as for any attempt); the attempts still out when one
    wins are cancelled by the shell and released here, not counted against their members.
    When every attempt of the round lost, :meth:`close_lost` reports all but the last to
    the balancer and points the driver at the last, whose failure the shell then hands to
    :meth:`CallDriver.failed` to decide about a retry.
    """

    __slots__ = ("_drv", "_lost", "_out", "can_hedge", "delay")

    def __init__(self, drv: CallDriver, delay: float) -> None:
        self._drv = drv
        self.delay = delay
        self.can_hedge = True
        self._out: dict[str, float] = {}  # attempts in flight: endpoint -> started
        self._lost: list[tuple[str, float, AttemptFailure]] = []

    @property
    def out(self) -> int:
        """How many attempts of the round are in flight."""
        return len(self._out)

    def sent(self, endpoint: str, started: float) -> None:
        """An attempt of this round is now in flight on ``endpoint``."""
        self._out[endpoint] = started

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
        """The attempt on ``endpoint`` answered first: the driver now holds it (the call
        reports its success once); the others still out are released."""
        self._out.pop(endpoint, None)
        bal = self._drv._bal
        now = self._drv._clock()
        for other, began in self._out.items():
            bal.release(other, now - began)
        self._out.clear()
        self._drv.endpoint, self._drv.started = endpoint, started

    def lost(self, endpoint: str, started: float, failure: AttemptFailure) -> bool:
        """The attempt on ``endpoint`` failed; True when none of the round is left out."""
        self._out.pop(endpoint, None)
        self._lost.append((endpoint, started, failure))
        return not self._out

    def close_lost(self) -> AttemptFailure:
        """Every attempt failed: report all but the last; the driver now holds the last,
        whose failure is returned."""
        for endpoint, started, failure in self._lost[:-1]:
            self._drv.settle(endpoint, started, failure)
        endpoint, started, failure = self._lost[-1]
        self._drv.endpoint, self._drv.started = endpoint, started
        return failure
