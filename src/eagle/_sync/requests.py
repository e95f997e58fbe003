"""Request messages of client-streaming and bidi calls, replayable by a new attempt
(the sync side of :mod:`eagle.core.replay`).

The application's request iterator is read once, by whichever attempt is current; every
attempt gets its own iterator (:meth:`RequestSource.for_attempt`) that replays the
messages taken so far, then shares the new ones. grpc reads each attempt's iterator on a
thread of its own, so the buffer is guarded by a condition.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..core.replay import ReplayBuffer, message_size

__all__ = ["RequestSource"]


class RequestSource:
    """The application's request iterator, shared by the attempts of one call."""

    def __init__(
        self,
        source: Any,
        serializer: Callable[[Any], bytes] | None,
        limit: int,
    ) -> None:
        self._source: Iterator[Any] = iter(source)
        self._serializer = serializer
        self._cond = threading.Condition()
        self._pulling = False
        self.buffer = ReplayBuffer(limit)

    @property
    def replayable(self) -> bool:
        """True while a new attempt can still be given every message taken so far."""
        return not self.buffer.overflowed

    def for_attempt(self) -> Iterator[Any]:
        """The request iterator of a new attempt (it becomes the current one)."""
        with self._cond:
            number = self.buffer.new_attempt()
            self._cond.notify_all()
        return self._iterate(number)

    def _iterate(self, number: int) -> Iterator[Any]:
        buf = self.buffer
        cond = self._cond
        index = 0
        while True:
            with cond:
                while True:
                    if buf.has(index):
                        msg = buf.get(index)
                        if buf.current == number:
                            buf.consumed(index)
                        break
                    if buf.error is not None:
                        raise buf.error
                    if buf.ended or buf.current != number or buf.lost(index):
                        return  # the source is done, or a newer attempt took over
                    if not self._pulling:
                        self._pulling = True
                        msg = None
                        break
                    cond.wait()
                pulled = not buf.has(index)
            if pulled:
                msg = self._pull()
                if msg is _END:
                    return
                with cond:
                    if buf.current == number:
                        buf.consumed(index)
            index += 1
            yield msg

    def _pull(self) -> Any:
        """Take the next message from the application (outside the lock: it may block)."""
        buf = self.buffer
        try:
            msg = next(self._source)
        except StopIteration:
            with self._cond:
                buf.ended = True
                self._pulling = False
                self._cond.notify_all()
            return _END
        except BaseException as exc:
            with self._cond:
                buf.error = exc
                self._pulling = False
                self._cond.notify_all()
            raise
        size = message_size(msg, self._serializer)
        with self._cond:
            buf.add(msg, size)
            self._pulling = False
            self._cond.notify_all()
        return msg


_END = object()
