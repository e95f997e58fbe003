"""The request messages of a client-streaming or bidi call, kept so that a new attempt
can replay them (gRPC A6's retry buffer).

Every attempt of a request-streaming call reads the request messages through its own
cursor over one :class:`ReplayBuffer`: messages already taken from the application are
replayed from the buffer, later ones are taken from the application's iterator (or its
``write()`` calls) once and shared. Only the current attempt may take new messages, so a
failed attempt that grpc is still feeding never steals one.

The buffer holds at most ``limit`` bytes (A6: ``grpc.per_rpc_retry_buffer_size``, 256 KiB
in grpc core). Once more were taken the call is *committed*: it can no longer be re-sent,
and messages are dropped as soon as the current attempt has read them.

Sans-IO: no locking and no waiting here; the shells add both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["DEFAULT_LIMIT", "ReplayBuffer", "message_size"]

#: grpc core's default per-RPC retry buffer (GRPC_ARG_PER_RPC_RETRY_BUFFER_SIZE)
DEFAULT_LIMIT = 256 * 1024


def message_size(message: Any, serializer: Callable[[Any], bytes] | None) -> int:
    """The size of ``message`` on the wire, as well as it can be known cheaply."""
    size = getattr(message, "ByteSize", None)
    if callable(size):
        return int(size())
    if isinstance(message, bytes | bytearray | memoryview):
        return len(message)
    if serializer is not None:
        return len(serializer(message))
    return 0


class ReplayBuffer:
    """The request messages taken so far, and which attempt may take more."""

    __slots__ = ("_base", "_items", "bytes", "current", "ended", "error", "limit", "overflowed")

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._items: list[Any] = []
        self._base = 0  # index of _items[0] (messages before it were dropped)
        self.bytes = 0
        self.overflowed = False
        #: the source has no more messages (the iterator ended, or ``done_writing()``)
        self.ended = False
        #: the exception the application's iterator raised, if any
        self.error: BaseException | None = None
        #: the attempt number allowed to take new messages from the source
        self.current = 0

    @property
    def taken(self) -> int:
        """How many messages were taken from the source so far."""
        return self._base + len(self._items)

    def has(self, index: int) -> bool:
        """True when message ``index`` was already taken (and is still kept)."""
        return self._base <= index < self._base + len(self._items)

    def get(self, index: int) -> Any:
        """Message ``index`` (it must have been taken)."""
        return self._items[index - self._base]

    def lost(self, index: int) -> bool:
        """True when message ``index`` was taken but dropped (only after overflow)."""
        return index < self._base

    def add(self, message: Any, size: int) -> None:
        """Record a message taken from the source."""
        self._items.append(message)
        self.bytes += size
        if self.bytes > self.limit:
            self.overflowed = True

    def consumed(self, index: int) -> None:
        """The current attempt has read message ``index``; once the buffer overflowed the
        messages up to it are dropped (no attempt can replay them any more)."""
        if self.overflowed and index >= self._base:
            drop = index + 1 - self._base
            del self._items[:drop]
            self._base += drop

    def new_attempt(self) -> int:
        """A new attempt starts reading from message 0; returns its number."""
        self.current += 1
        return self.current
