"""The wire details of a health probe, shared by the sync and asyncio probers."""

from __future__ import annotations

import dataclasses
from typing import Any

from grpc_health.v1 import health_pb2

from ..core.health import ProbeOutcome, ProbeResult, classify_probe
from ..core.retry import Delivery
from .outcomes import delivery_of
from .subchannels import MethodKey

__all__ = [
    "HEALTH_CHECK",
    "HEALTH_WATCH",
    "WATCH_BACKOFF",
    "health_request",
    "outcome_of_answer",
    "outcome_of_error",
    "serving_status",
    "watch_backoff",
]

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
