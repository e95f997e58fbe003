"""The wire details of a health probe, shared by the sync and asyncio probers."""

from __future__ import annotations

from typing import Any

from grpc_health.v1 import health_pb2

from .subchannels import MethodKey

__all__ = ["HEALTH_CHECK", "health_request", "serving_status"]

#: the multicallable key of ``grpc.health.v1.Health/Check``
HEALTH_CHECK: MethodKey = (
    "unary_unary",
    "/grpc.health.v1.Health/Check",
    health_pb2.HealthCheckRequest.SerializeToString,
    health_pb2.HealthCheckResponse.FromString,
    True,
)


def health_request(service: str) -> Any:
    """The ``HealthCheckRequest`` for ``service`` ("" = the whole server)."""
    return health_pb2.HealthCheckRequest(service=service)


def serving_status(response: Any) -> int:
    """The raw ``status`` enum value of a ``HealthCheckResponse``."""
    return int(response.status)
