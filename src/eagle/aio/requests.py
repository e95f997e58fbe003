"""Request messages of client-streaming and bidi calls, replayable by a new attempt
(the asyncio side of :mod:`eagle.core.replay`).

The application's messages come from its request iterator (sync or async) or from its
``write()`` / ``done_writing()`` calls; they are taken once, by whichever attempt is
current, and every attempt reads them through its own async iterator
(:meth:`RequestSource.for_attempt`), which replays the messages taken so far. Everything
runs in the channel's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..core.replay import ReplayBuffer, message_size

__all__ = ["RequestSource"]


class RequestSource:
    """The request messages of one call, shared by its attempts."""

    def __init__(
        self,
        source: Any,
        serializer: Callable[[Any], bytes] | None,
        limit: int,
    ) -> None:
        self._serializer = serializer
        self._aiter: AsyncIterator[Any] | None = None
        self._iter: Any = None
        if source is None:
            self.writer = True  # the application calls write() / done_writing()
        elif hasattr(source, "__aiter__"):
            self.writer = False
            self._aiter = source.__aiter__()
        else:
            self.writer = False
            self._iter = iter(source)
        self.buffer = ReplayBuffer(limit)
        self._changed: asyncio.Future[None] | None = None
        self._pulling = False
        #: set by done_writing()
        self.done_writing = False
        #: how many messages the current attempt has read
        self._read_by_current = 0

    @property
    def replayable(self) -> bool:
        """True while a new attempt can still be given every message taken so far."""
        return not self.buffer.overflowed

    def wake(self) -> None:
        """Wake whoever waits in :meth:`changed` (also called when the call ends)."""
        fut = self._changed
        self._changed = None
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def changed(self) -> None:
        """Wait for the next change: a message written or read, or the call's end."""
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._changed)

    def read_by_current(self, index: int) -> bool:
        """True once the current attempt has read message ``index``."""
        return self._read_by_current > index

    # ------------------------------------------------------------ write() style
    def write(self, message: Any) -> int:
        """Record a message the application wrote; returns its index."""
        index = self.buffer.taken
        self.buffer.add(message, message_size(message, self._serializer))
        self.wake()
        return index

    def end(self) -> None:
        """The application called ``done_writing()``."""
        self.done_writing = True
        self.buffer.ended = True
        self.wake()

    # -------------------------------------------------------------- attempts
    def for_attempt(self) -> AsyncIterator[Any]:
        """The request iterator of a new attempt (it becomes the current one)."""
        number = self.buffer.new_attempt()
        self._read_by_current = 0
        self.wake()
        return self._iterate(number)

    async def _iterate(self, number: int) -> AsyncIterator[Any]:
        buf = self.buffer
        index = 0
        while True:
            if buf.has(index):
                msg = buf.get(index)
            elif buf.error is not None:
                raise buf.error
            elif buf.ended or buf.current != number or buf.lost(index):
                return
            elif self.writer or self._pulling:
                await self.changed()
                continue
            else:
                self._pulling = True
                try:
                    msg = await self._pull()
                finally:
                    self._pulling = False
                    self.wake()
                if msg is _END:
                    return
            if buf.current == number:
                buf.consumed(index)
                self._read_by_current = index + 1
                self.wake()
            index += 1
            yield msg

    async def _pull(self) -> Any:
        buf = self.buffer
        try:
            if self._aiter is not None:
                msg = await self._aiter.__anext__()
            else:
                msg = next(self._iter)
        except (StopIteration, StopAsyncIteration):
            buf.ended = True
            return _END
        except BaseException as exc:
            buf.error = exc
            raise
        buf.add(msg, message_size(msg, self._serializer))
        return msg


_END = object()
