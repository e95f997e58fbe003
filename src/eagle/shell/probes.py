"""The wire details of a health probe, shared by the sync and asyncio probers."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2

from ..core.health import ProbeOutcome, ProbeResult, classify_probe
from ..core.retry import Delivery
from .outcomes import delivery_of
from .subchannels import MethodKey, SubChannel

if TYPE_CHECKING:
    from ..core.balancer import Balancer

__all__ = [
    "HEALTH_CHECK",
    "HEALTH_WATCH",
    "WATCH_BACKOFF",
    "health_request",
    "outcome_of_answer",
    "outcome_of_error",
    "plan_watches",
    "serving_status",
    "watch_backoff",
    "watch_ended",
]

log = logging.getLogger("eagle.prober")

#: the multicallable key of ``grpc.health.v1.Health/Check``
HEALTH_CHECK: MethodKey = (
    "unary_unary",
    "/grpc.health.v1.Health/Check",
    health_pb2.HealthCheckRequest.SerializeToString,
    health_pb2.HealthCheckResponse.FromString,
    True,
)


#: the multicallable key of ``grpc.health.v1.Health/Watch`` (health.mode watch)
HEALTH_WATCH: MethodKey = (
    "unary_stream",
    "/grpc.health.v1.Health/Watch",
    health_pb2.HealthCheckRequest.SerializeToString,
    health_pb2.HealthCheckResponse.FromString,
    True,
)

#: a broken Watch stream is re-opened after 1 s x 1.6 per failure in a row, at most 30 s
#: (gRPC's connection backoff; grpc-go's health client resets it on every message)
WATCH_BACKOFF = (1.0, 1.6, 30.0)


def watch_backoff(failures: int) -> float:
    """Seconds before re-opening a Watch stream that broke ``failures`` times in a row."""
    first, factor, cap = WATCH_BACKOFF
    return min(cap, first * factor ** max(0, failures - 1))


def plan_watches(
    bal: Balancer, subs: Mapping[str, SubChannel[Any]], running: Mapping[str, SubChannel[Any]]
) -> tuple[int, list[str], list[tuple[str, SubChannel[Any]]]]:
    """Which Health/Watch streams to stop and start so the members in use that want one
    (:meth:`Balancer.wants_watch`) have one on their current sub-channel. ``running``:
    member -> the sub-channel its stream is on. Returns (the generation the streams now
    match, -1 while a wanted member has no sub-channel yet; members whose stream to stop;
    (member, sub-channel) streams to start)."""
    generation = bal.watch_generation
    wanted = {k: subs.get(k) for k in bal.wants_watch()}
    stop = [k for k, sub in running.items() if wanted.get(k) is not sub]
    start = [
        (k, sub)
        for k, sub in wanted.items()
        if sub is not None and (k not in running or running[k] is not sub)
    ]
    return (-1 if None in wanted.values() else generation), stop, start


def watch_ended(bal: Balancer, key: str, err: BaseException | None, failures: int) -> float | None:
    """A member's Health/Watch stream ended (``err`` None: the server ended it), for the
    ``failures``-th time in a row: tell the balancer (the member is probed again at
    once). Returns the seconds before re-opening it, or None when the server does not
    implement Watch (the member is left to Checks)."""
    unsupported = False
    if err is None:
        ended = "the server ended the stream"
    elif isinstance(err, grpc.RpcError):
        code = err.code()
        unsupported = code is grpc.StatusCode.UNIMPLEMENTED
        ended = f"{code.name if code is not None else 'UNKNOWN'}: {err.details()}"
    else:  # a closed channel, ...
        ended = repr(err)
    log.debug("health watch of %s ended: %s", key, ended)
    bal.watch_lost(key, unsupported)
    return None if unsupported else watch_backoff(failures)


def health_request(service: str) -> Any:
    """The ``HealthCheckRequest`` for ``service`` ("" = the whole server)."""
    return health_pb2.HealthCheckRequest(service=service)


def serving_status(response: Any) -> int:
    """The raw ``status`` enum value of a ``HealthCheckResponse``."""
    return int(response.status)


def outcome_of_answer(response: Any, latency: float) -> ProbeOutcome:
    """The outcome of a ``Check`` that answered."""
    return classify_probe(None, serving_status(response), None, latency)


def outcome_of_error(exc: BaseException, latency: float) -> ProbeOutcome:
    """The outcome of a ``Check`` that failed: a grpc error (sync or asyncio, both have
    ``code()``/``details()``) is classified by its code; anything else is UNREACHABLE."""
    code = getattr(exc, "code", None)
    if callable(code) and callable(getattr(exc, "details", None)):
        status = code()
        name = status.name if status is not None else "UNKNOWN"
        details = exc.details()  # type: ignore[attr-defined]
        outcome = classify_probe(name, None, details, latency)
        if delivery_of(name, details) is Delivery.NOT_SENT:
            return dataclasses.replace(outcome, connection_failed=True)
        return outcome
    return ProbeOutcome(ProbeResult.UNREACHABLE, latency, f"probe failed: {exc!r}")
