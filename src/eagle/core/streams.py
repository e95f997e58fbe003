"""The stream watchdog's bookkeeping: which open streams ride on which member, and which
to end when that member leaves SERVING. The shells do the cancelling."""

from __future__ import annotations

import threading
from typing import Protocol

from .status import State, Transition

__all__ = ["LEAVING_STATES", "RESCUE_STATES", "AbortableStream", "StreamRegistry"]

#: states that end the streams riding on a member
LEAVING_STATES = frozenset({State.PARTITIONED, State.UNREACHABLE, State.NOT_SERVING, State.EJECTED})
#: states that abandon unary attempts in flight on a member (and retry them elsewhere when
#: safe). Not NOT_SERVING: a draining member still finishes the calls it has.
RESCUE_STATES = frozenset({State.PARTITIONED, State.UNREACHABLE, State.EJECTED})


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

    def attempts_to_abort(self, t: Transition) -> list[AbortableStream]:
        """Unary attempts to abandon for transition ``t`` (they will be retried)."""
        if t.new not in RESCUE_STATES:
            return []
        with self._lock:
            return list(self._attempts.pop(t.endpoint, ()))

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

    def to_abort_all(self, endpoint: str) -> list[AbortableStream]:
        """Take every stream of ``endpoint`` out of the registry (member removed)."""
        with self._lock:
            return list(self._by_member.pop(endpoint, ()))

    def to_abort(self, t: Transition) -> tuple[list[AbortableStream], str]:
        """The streams to end for transition ``t`` and the reason to give them."""
        if t.new not in LEAVING_STATES:
            return [], ""
        with self._lock:
            streams = list(self._by_member.pop(t.endpoint, ()))
        reason = f"eagle: member {t.endpoint} left rotation: {t.new} ({t.reason})"
        return streams, reason
