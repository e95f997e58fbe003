"""Active health: probe outcomes and the threshold rules that turn them into states."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .status import State

__all__ = ["HealthRecord", "ProbeOutcome", "ProbeResult", "classify_probe"]

# grpc.health.v1 HealthCheckResponse.ServingStatus values
_SERVING = 1
_NOT_SERVING = 2
_SERVICE_UNKNOWN = 3


class ProbeResult(enum.Enum):
    """What one probe found."""

    SERVING = "SERVING"
    NOT_SERVING = "NOT_SERVING"
    UNREACHABLE = "UNREACHABLE"


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """The outcome of one health probe. ``connection_failed``: the probe could not even
    connect (refused, no route): the member is out at once, not after
    ``unhealthy_threshold`` misses."""

    result: ProbeResult
    latency: float
    error: str | None = None
    connection_failed: bool = False


def classify_probe(
    code: str | None, serving_status: int | None, details: str | None, latency: float
) -> ProbeOutcome:
    """Map a health ``Check`` answer onto a :class:`ProbeOutcome`.

    ``code`` is the gRPC status code name (None or "OK" on success), ``serving_status`` the
    ``HealthCheckResponse.status`` value. UNIMPLEMENTED (no health service) counts as
    SERVING, as in grpc-go's health client. SERVICE_UNKNOWN counts as NOT_SERVING; so does
    an unknown enum value, which is also named in the error.
    """
    if code in (None, "OK"):
        if serving_status == _SERVING:
            return ProbeOutcome(ProbeResult.SERVING, latency)
        if serving_status == _NOT_SERVING:
            return ProbeOutcome(ProbeResult.NOT_SERVING, latency, "health: NOT_SERVING")
        if serving_status == _SERVICE_UNKNOWN:
            return ProbeOutcome(ProbeResult.NOT_SERVING, latency, "health: SERVICE_UNKNOWN")
        return ProbeOutcome(
            ProbeResult.NOT_SERVING, latency, f"health: unknown serving status {serving_status!r}"
        )
    if code == "UNIMPLEMENTED":
        return ProbeOutcome(ProbeResult.SERVING, latency)
    if code == "NOT_FOUND":
        # grpcio's health servicer answers NOT_FOUND for a service it does not know
        return ProbeOutcome(ProbeResult.NOT_SERVING, latency, "health: service unknown (NOT_FOUND)")
    text = f"probe {code}"
    if details:
        text += f": {details}"
    return ProbeOutcome(ProbeResult.UNREACHABLE, latency, text)


class HealthRecord:
    """Mutable per-endpoint health state with flap damping.

    First success from UNKNOWN marks SERVING at once; later recoveries need
    ``healthy_threshold`` successes in a row. An explicit NOT_SERVING applies at once (the
    server said so: drain). UNREACHABLE needs ``unhealthy_threshold`` misses in a row, or
    one connection failure (:meth:`force_down`), after which the first success is enough:
    the connection works again.
    """

    __slots__ = (
        "connection_down",
        "consecutive_failures",
        "consecutive_successes",
        "healthy_threshold",
        "last_error",
        "last_latency",
        "last_probe",
        "state",
        "unhealthy_threshold",
    )

    def __init__(self, unhealthy_threshold: int, healthy_threshold: int) -> None:
        self.state = State.UNKNOWN
        self.unhealthy_threshold = unhealthy_threshold
        self.healthy_threshold = healthy_threshold
        self.consecutive_failures = 0
        self.consecutive_successes = 0
        self.last_probe: float | None = None
        self.last_latency: float | None = None
        self.last_error: str | None = None
        self.connection_down = False

    def force_down(self, error: str, now: float) -> State:
        """The connection failed (refused, reset, grpc's TRANSIENT_FAILURE): UNREACHABLE at
        once; the next successful probe brings the member back."""
        self.state = State.UNREACHABLE
        self.connection_down = True
        self.consecutive_successes = 0
        self.consecutive_failures = max(self.consecutive_failures, self.unhealthy_threshold)
        # keep what the last failed probe said: it names the cause (e.g. refused)
        previous = self.last_error
        self.last_error = error if not previous or error in previous else f"{error}; {previous}"
        return self.state

    def apply(self, outcome: ProbeOutcome, now: float) -> State:
        """Fold one probe outcome in and return the (possibly new) health state."""
        self.last_probe = now
        self.last_latency = outcome.latency
        if outcome.result is ProbeResult.SERVING:
            self.consecutive_successes += 1
            self.consecutive_failures = 0
            if self.state is not State.SERVING and (
                self.state is State.UNKNOWN
                or self.connection_down
                or self.consecutive_successes >= self.healthy_threshold
            ):
                self.state = State.SERVING
                self.last_error = None
            self.connection_down = False
            return self.state
        if outcome.connection_failed:
            self.consecutive_failures += 1
            self.force_down(outcome.error or "probe: connection failed", now)
            self.last_error = outcome.error
            return self.state
        self.consecutive_successes = 0
        self.consecutive_failures += 1
        self.last_error = outcome.error
        if outcome.result is ProbeResult.NOT_SERVING:
            self.state = State.NOT_SERVING
        elif self.consecutive_failures >= self.unhealthy_threshold:
            self.state = State.UNREACHABLE
        return self.state
