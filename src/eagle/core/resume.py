"""Where a resumable stream stands, sans-IO: the request that re-opens it just after the
last message the caller got, and whether (and when) to re-open it after a failure.

The sync (:mod:`eagle.resumable`) and asyncio (:mod:`eagle.aio.resumable`) helpers
only open streams, read them and sleep; every decision is made here.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

__all__ = ["ResumeFn", "ResumePlan"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")

#: ``resume(request, message) -> request``: the request that re-opens the stream just
#: after ``message``, given the request the current stream was opened with.
ResumeFn = Callable[[Req, Resp], Req]


class ResumePlan(Generic[Req, Resp]):
    """The resume position and the re-open decisions of one resumable stream.

    * :meth:`delivered` moves the position past a message the caller received (the
      caller-supplied ``resume`` function computes the new request);
    * :meth:`on_error` says whether to re-open after an error: the status code must be
      in ``codes``; the first re-open after progress happens at once, then the delay
      grows from ``initial_backoff`` by ``multiplier`` up to ``max_backoff`` (+-20 %
      jitter); after ``max_failures`` failures in a row without a message it gives up.
    """

    def __init__(
        self,
        request: Req,
        resume: ResumeFn[Req, Resp],
        *,
        codes: Iterable[str] = ("UNAVAILABLE",),
        max_failures: int = 10,
        initial_backoff: float = 0.05,
        max_backoff: float = 2.0,
        multiplier: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if max_failures < 1:
            raise ValueError(f"max_failures: must be >= 1, got {max_failures!r}")
        self.request = request
        self._resume = resume
        self.codes = frozenset(c.upper() for c in codes)
        self.max_failures = max_failures
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.multiplier = multiplier
        self._rng = rng or random.Random()
        #: messages delivered to the caller, over all streams
        self.delivered_count = 0
        #: how many times the stream was re-opened
        self.resumes = 0
        #: failures in a row without a message in between
        self.failures = 0

    def delivered(self, message: Resp) -> None:
        """The caller got ``message``: resume after it from now on."""
        self.request = self._resume(self.request, message)
        self.delivered_count += 1
        self.failures = 0

    def on_error(self, code: str) -> float | None:
        """The stream failed with status ``code`` (name): the delay before re-opening it
        with :attr:`request`, or None to give up and raise the error."""
        if code.upper() not in self.codes:
            return None
        self.failures += 1
        if self.failures > self.max_failures:
            return None
        self.resumes += 1
        if self.failures == 1:
            return 0.0
        base = min(self.initial_backoff * self.multiplier ** (self.failures - 2), self.max_backoff)
        return base * (1.0 + 0.2 * (2.0 * self._rng.random() - 1.0))
