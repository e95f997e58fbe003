"""Observers: plain callbacks for telemetry (metrics, tracing, logs of your own).

An :class:`Observer` gets told about probes, state transitions, picks, retries, retry
budget refusals, ejections, stream moves and finished calls. Subclass it and override only
the methods you need: the balancer keeps one tuple of bound methods per event and calls
only the ones that were overridden, so an event nobody observes costs one truthiness test,
with no lock and no allocation on the call path.

To follow single calls attempt by attempt (spans, per-call counts), an observer's
:meth:`Observer.on_call_start` returns a :class:`CallTracer` for the call: it learns of
every attempt's end and of the call's end. This is gRFC A66's call tracer
(https://github.com/grpc/proposal/blob/master/A66-otel-stats.md, "OpenTelemetry Plugin
Architecture"), with eagle's members and retry decisions in it.

Callbacks run on eagle's threads (probe callbacks, the caller's thread for picks and
retries) or in the event loop for ``eagle.aio``: keep them short and never block. An
exception in a callback is logged (``eagle.observers``) and otherwise ignored.

Nothing here does I/O; this module is part of the sans-IO core.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .health import ProbeOutcome

if TYPE_CHECKING:
    from .calls import AttemptEnd, CallReport
from .status import State, Transition

__all__ = ["EVENTS", "CallTracer", "Observer", "ObserverSet"]

log = logging.getLogger("eagle.observers")

#: every observer event, in the order documented in ``docs/architecture.md``
EVENTS: tuple[str, ...] = (
    "on_probe",
    "on_transition",
    "on_pick",
    "on_retry",
    "on_budget_refusal",
    "on_ejection",
    "on_stream_move",
    "on_call",
    "on_call_start",
)


class CallTracer:
    """Follows one call from its start to its end; made by :meth:`Observer.on_call_start`.

    Every method is a no-op by default. Callbacks run where the attempt or the call ended
    (the caller's thread, grpc's callback threads, or the event loop): keep them short.
    An exception in one is logged (``eagle.observers``) and otherwise ignored.
    """

    __slots__ = ()

    #: whether this class overrides :meth:`on_attempt` (set for every subclass): a call
    #: none of whose tracers does builds no :class:`AttemptEnd` at all
    traces_attempts: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.traces_attempts = cls.on_attempt is not CallTracer.on_attempt

    def on_attempt(self, attempt: AttemptEnd) -> None:
        """An attempt of the call ended (see :class:`eagle.core.calls.AttemptEnd`): its
        member, status, duration, and whether the call goes on because of it."""

    def on_end(self, report: CallReport, code: str, duration: float, attempts: int) -> None:
        """The call ended as the application saw it: final status ``code`` (name),
        ``duration`` in seconds since the call started, ``report`` as for
        :meth:`Observer.on_call`, and ``attempts``: every attempt started, hedged and
        transparent re-sends included (``report.attempts`` leaves out hedged attempts
        cancelled because another one won)."""


class Observer:
    """Base class for telemetry observers; every method is a no-op by default.

    Register one with :func:`eagle.hooks.add_observer` (or ``balancer.add_observer``).
    Only overridden methods are ever called.
    """

    def on_probe(self, endpoint: str, outcome: ProbeOutcome) -> None:
        """A health probe of ``endpoint`` finished (``outcome.result``, ``.latency`` in
        seconds, ``.error``)."""

    def on_transition(self, transition: Transition) -> None:
        """A member's effective state changed (``transition.old`` -> ``.new``)."""

    def on_pick(self, endpoint: str | None, method: str) -> None:
        """An attempt of ``method`` was placed on ``endpoint`` (None: no member could serve)."""

    def on_retry(self, endpoint: str, method: str, code: str) -> None:
        """An attempt on ``endpoint`` failed with ``code`` and the call will be retried."""

    def on_budget_refusal(self, endpoint: str, method: str, code: str) -> None:
        """An attempt on ``endpoint`` failed with ``code`` and would have been retried, but
        the retry budget was spent."""

    def on_ejection(self, endpoint: str, reason: str) -> None:
        """Outlier detection ejected ``endpoint``."""

    def on_stream_move(self, endpoint: str, reason: str) -> None:
        """The watchdog ended a stream on ``endpoint`` (it left SERVING) so it can resume
        on another member."""

    def on_call(self, report: CallReport, code: str, duration: float) -> None:
        """A call ended, as the application sees it (across all its attempts): its final
        status ``code`` (name), ``duration`` in seconds, and ``report`` (members,
        attempts, outcome unknown, why it was not retried)."""

    def on_call_start(self, method: str) -> CallTracer | None:
        """A call of ``method`` starts, in the application's thread or task (its context
        variables, e.g. the current OpenTelemetry span, are the application's). Return a
        :class:`CallTracer` to follow this call, or None. One tracer may follow many calls
        (return the same object) when it keeps no per-call state."""
        return None


def _overridden(observer: Any, name: str) -> Callable[..., None] | None:
    """The bound method ``name`` of ``observer`` unless it is :class:`Observer`'s no-op."""
    fn = getattr(observer, name, None)
    if fn is None or not callable(fn):
        return None
    base = getattr(Observer, name)
    if getattr(fn, "__func__", None) is base:
        return None
    result: Callable[..., None] = fn
    return result


class ObserverSet:
    """The observers of one balancer, kept as one immutable tuple per event.

    The tuples are replaced (never mutated) under a lock when observers come and go, so
    the call path reads them without locking.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._observers: tuple[Any, ...] = ()
        self.probe: tuple[Callable[[str, ProbeOutcome], None], ...] = ()
        self.transition: tuple[Callable[[Transition], None], ...] = ()
        self.pick: tuple[Callable[[str | None, str], None], ...] = ()
        self.retry: tuple[Callable[[str, str, str], None], ...] = ()
        self.budget_refusal: tuple[Callable[[str, str, str], None], ...] = ()
        self.ejection: tuple[Callable[[str, str], None], ...] = ()
        self.stream_move: tuple[Callable[[str, str], None], ...] = ()
        self.call: tuple[Callable[[CallReport, str, float], None], ...] = ()
        self.call_start: tuple[Callable[[str], CallTracer | None], ...] = ()

    def __len__(self) -> int:
        return len(self._observers)

    def add(self, observer: Any) -> Callable[[], None]:
        """Register ``observer`` (an :class:`Observer` or any object with some of its
        methods); returns a function that unregisters it."""
        if not any(_overridden(observer, name) for name in EVENTS):
            raise TypeError(
                f"{observer!r} implements none of the observer methods ({', '.join(EVENTS)})"
            )
        with self._lock:
            self._observers = (*self._observers, observer)
            self._rebuild()

        def remove() -> None:
            with self._lock:
                self._observers = tuple(o for o in self._observers if o is not observer)
                self._rebuild()

        return remove

    def _rebuild(self) -> None:
        def hooks(name: str) -> tuple[Any, ...]:
            found = (_overridden(o, name) for o in self._observers)
            return tuple(fn for fn in found if fn is not None)

        self.probe = hooks("on_probe")
        self.transition = hooks("on_transition")
        self.pick = hooks("on_pick")
        self.retry = hooks("on_retry")
        self.budget_refusal = hooks("on_budget_refusal")
        self.ejection = hooks("on_ejection")
        self.stream_move = hooks("on_stream_move")
        self.call = hooks("on_call")
        self.call_start = hooks("on_call_start")

    # ------------------------------------------------------------ fan-out
    @staticmethod
    def _call(fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("eagle observer %r failed", fn)

    def emit_probe(self, endpoint: str, outcome: ProbeOutcome) -> None:
        """Tell every ``on_probe`` observer."""
        for fn in self.probe:
            self._call(fn, endpoint, outcome)

    def emit_transition(self, t: Transition) -> None:
        """Tell every ``on_transition`` observer, and ``on_ejection`` ones when the new
        state is EJECTED."""
        for fn in self.transition:
            self._call(fn, t)
        if t.new is State.EJECTED:
            for ej in self.ejection:
                self._call(ej, t.endpoint, t.reason)

    def emit_pick(self, endpoint: str | None, method: str) -> None:
        """Tell every ``on_pick`` observer."""
        for fn in self.pick:
            self._call(fn, endpoint, method)

    def emit_retry(self, endpoint: str, method: str, code: str) -> None:
        """Tell every ``on_retry`` observer."""
        for fn in self.retry:
            self._call(fn, endpoint, method, code)

    def emit_budget_refusal(self, endpoint: str, method: str, code: str) -> None:
        """Tell every ``on_budget_refusal`` observer."""
        for fn in self.budget_refusal:
            self._call(fn, endpoint, method, code)

    def emit_stream_move(self, endpoint: str, reason: str) -> None:
        """Tell every ``on_stream_move`` observer."""
        for fn in self.stream_move:
            self._call(fn, endpoint, reason)

    def emit_call(self, report: CallReport, code: str, duration: float) -> None:
        """Tell every ``on_call`` observer."""
        for fn in self.call:
            self._call(fn, report, code, duration)

    def start_call(self, method: str) -> tuple[CallTracer, ...] | None:
        """Ask every ``on_call_start`` observer for a tracer of a new call of ``method``;
        None when none wants to follow it."""
        out: tuple[CallTracer, ...] | None = None
        for fn in self.call_start:
            try:
                tracer = fn(method)
            except Exception:
                log.exception("eagle observer %r failed", fn)
                continue
            if tracer is not None:
                out = (tracer,) if out is None else (*out, tracer)
        return out

    @staticmethod
    def attempt_tracers(tracers: tuple[CallTracer, ...]) -> tuple[CallTracer, ...] | None:
        """The tracers of a call that follow its attempts (None when none does)."""
        if len(tracers) == 1:
            return tracers if getattr(tracers[0], "traces_attempts", True) else None
        out = tuple(t for t in tracers if getattr(t, "traces_attempts", True))
        return out or None

    @staticmethod
    def trace_attempt(tracers: tuple[CallTracer, ...], attempt: AttemptEnd) -> None:
        """Tell a call's tracers that one of its attempts ended."""
        for t in tracers:
            try:
                t.on_attempt(attempt)
            except Exception:
                log.exception("eagle call tracer %r failed", t)

    @staticmethod
    def trace_end(
        tracers: tuple[CallTracer, ...],
        report: CallReport,
        code: str,
        duration: float,
        attempts: int,
    ) -> None:
        """Tell a call's tracers that it ended."""
        for t in tracers:
            try:
                t.on_end(report, code, duration, attempts)
            except Exception:
                log.exception("eagle call tracer %r failed", t)
