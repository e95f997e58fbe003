"""A plain hook API for telemetry stacks other than Prometheus.

Subclass :class:`Observer`, override the events you care about, and register it on a
channel (sync or asyncio)::

    class Log(eagle.hooks.Observer):
        def on_transition(self, t):
            print(t)

    unsubscribe = eagle.hooks.add_observer(ch, Log())

Events (all arguments are plain values; endpoints are keyed as the user gave them):

==================================================  ==========================================
``on_probe(endpoint, outcome)``                      a health probe finished; ``outcome.result``
                                                     (:class:`ProbeResult`), ``.latency`` (s),
                                                     ``.error``
``on_transition(transition)``                        a member changed state (:class:`Transition`)
``on_pick(endpoint, method)``                        an attempt was placed (None: no member)
``on_retry(endpoint, method, code)``                 a failed attempt will be retried
``on_budget_refusal(endpoint, method, code)``        a retry was refused: the budget is spent
``on_ejection(endpoint, reason)``                    outlier detection ejected a member
``on_stream_move(endpoint, reason)``                 the watchdog ended a stream on a member
``on_call(report, code, duration)``                  a call ended as the application saw it
                                                     (all attempts): final code, seconds, and
                                                     its :class:`eagle.CallReport`
``on_call_start(method)``                            a call starts (in the application's thread
                                                     or task); return a :class:`CallTracer` to
                                                     follow it attempt by attempt, or None
==================================================  ==========================================

A :class:`CallTracer` learns of each attempt's end (``on_attempt(attempt)``, an
:class:`AttemptEnd`: member, status, duration, whether the call goes on) and of the
call's end (``on_end(report, code, duration, attempts)``); see :mod:`eagle.ops.otel` for
one that makes OpenTelemetry spans.

Only overridden methods are called, so observing probes and transitions costs nothing
per call. Callbacks run on eagle's or grpc's threads (or in the event loop for
``eagle.aio``): keep them short, never block. Exceptions are logged and ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .core.calls import AttemptEnd
from .core.health import ProbeOutcome, ProbeResult
from .core.observers import EVENTS, CallTracer, Observer
from .core.status import State, Transition

__all__ = [
    "EVENTS",
    "AttemptEnd",
    "CallTracer",
    "Observer",
    "ProbeOutcome",
    "ProbeResult",
    "State",
    "Transition",
    "add_observer",
]


def add_observer(channel: Any, observer: Observer) -> Callable[[], None]:
    """Register ``observer`` on an eagle channel (``eagle.Channel`` or
    ``eagle.aio.Channel``); returns a function that unregisters it.

    Raises ``TypeError`` when ``channel`` is not an eagle channel or ``observer``
    implements none of the observer methods.
    """
    balancer = getattr(channel, "balancer", None)
    if balancer is None or not hasattr(balancer, "add_observer"):
        raise TypeError(f"add_observer: expected an eagle channel, got {type(channel).__name__}")
    remove: Callable[[], None] = balancer.add_observer(observer)
    return remove
