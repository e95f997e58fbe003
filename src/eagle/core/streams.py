"""The stream watchdog's bookkeeping: which open streams ride on which member, and which
to end when that member leaves SERVING. The shells do the cancelling."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol

from .status import EndpointStatus, State, Transition

__all__ = [
    "LEAVING_STATES",
    "RESCUE_STATES",
    "AbortableStream",
    "StreamRegistry",
    "members_to_leave",
]

#: states that end the streams riding on a member
LEAVING_STATES = frozenset({State.PARTITIONED, State.UNREACHABLE, State.NOT_SERVING, State.EJECTED})
#: states that abandon unary attempts in flight on a member (and retry them elsewhere when
#: safe). Not NOT_SERVING: a draining member still finishes the calls it has.
RESCUE_STATES = frozenset({State.PARTITIONED, State.UNREACHABLE, State.EJECTED})


def members_to_leave(
    t: Transition, carrying: Mapping[str, EndpointStatus], others_serve: bool
) -> list[tuple[str, str]]:
    """The members whose streams (and rescuable attempts) the watchdog ends after
    transition ``t``, each with the reason to give.

    ``carrying`` holds the status of the members that carry streams or rescuable
    attempts (the others have nothing to end); ``others_serve`` says whether a member
    other than ``t.endpoint`` is SERVING.

    Moving a stream only helps when another member serves: when ``t`` takes a member out
    of SERVING while another member is SERVING, its streams end so they can resume there.
    When no member serves (a cluster-wide election, say), streams stay where they are, as
    they would on a plain channel; they move as soon as a member serves again.
    """
    if t.new in LEAVING_STATES:
        if not others_serve:
            return []
        return [(t.endpoint, f"eagle: member {t.endpoint} left rotation: {t.new} ({t.reason})")]
    if t.new is State.SERVING:
        return [
            (
                key,
                f"eagle: member {key} is {st.state} ({st.last_error or st.verdict or '-'}) "
                f"and {t.endpoint} serves again",
            )
            for key, st in carrying.items()
            if key != t.endpoint and st.state in LEAVING_STATES
        ]
    return []


class AbortableStream(Protocol):
    """What the registry needs of a stream: a way to end it with a reason."""

    def abort(self, reason: str) -> None:
        """End the stream; the caller sees UNAVAILABLE with ``reason`` in the details."""


class StreamRegistry:
    """Open streams by member. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_member: dict[str, set[AbortableStream]] = {}
        self._attempts: dict[str, set[AbortableStream]] = {}

    def add_attempt(self, endpoint: str, attempt: AbortableStream) -> None:
        """Register a unary attempt in flight on ``endpoint`` (idempotent calls only)."""
        with self._lock:
            self._attempts.setdefault(endpoint, set()).add(attempt)

    def remove_attempt(self, endpoint: str, attempt: AbortableStream) -> None:
        """Forget a unary attempt (it finished)."""
        with self._lock:
            attempts = self._attempts.get(endpoint)
            if attempts is not None:
                attempts.discard(attempt)

    def take_attempts(self, endpoint: str, state: State) -> list[AbortableStream]:
        """Unary attempts on ``endpoint`` to abandon now that it is in ``state`` (they will
        be retried elsewhere): none for a draining (NOT_SERVING) member, which still
        finishes its calls."""
        if state not in RESCUE_STATES:
            return []
        with self._lock:
            return list(self._attempts.pop(endpoint, ()))

    def add(self, endpoint: str, stream: AbortableStream) -> None:
        """Register an open stream on ``endpoint``."""
        with self._lock:
            self._by_member.setdefault(endpoint, set()).add(stream)

    def remove(self, endpoint: str, stream: AbortableStream) -> None:
        """Forget a stream (it ended or moved)."""
        with self._lock:
            streams = self._by_member.get(endpoint)
            if streams is not None:
                streams.discard(stream)

    def count(self, endpoint: str | None = None) -> int:
        """Open streams on ``endpoint`` (or on all members)."""
        with self._lock:
            if endpoint is not None:
                return len(self._by_member.get(endpoint, ()))
            return sum(len(s) for s in self._by_member.values())

    def carriers(self) -> set[str]:
        """The members that carry open streams or rescuable attempts."""
        with self._lock:
            return {k for k, v in self._by_member.items() if v} | {
                k for k, v in self._attempts.items() if v
            }

    def take(self, endpoint: str) -> list[AbortableStream]:
        """Take every stream of ``endpoint`` out of the registry (they are about to end)."""
        with self._lock:
            return list(self._by_member.pop(endpoint, ()))
