"""Resumable streams (asyncio): the twin of :mod:`eagle.resumable`.

::

    from eagle.aio.resumable import resumable
    from eagle.resumable import etcd_watch_resume

    watch = channel.stream_stream("/etcdserverpb.Watch/Watch", ...)
    async for resp in resumable(lambda req: watch(iter([req])), first, etcd_watch_resume):
        ...

The resume position and the re-open decisions come from
:class:`eagle.core.resume.ResumePlan`, as in the sync helper.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import TypeVar

import grpc

from .._sync.resumable import OnResume, ResumableBase
from ..core.resume import ResumeFn, ResumePlan

__all__ = ["AsyncResumableStream", "resumable"]


Req = TypeVar("Req")
Resp = TypeVar("Resp")


class AsyncResumableStream(ResumableBase[Req, Resp]):
    """An async iterator of responses that re-opens its stream after a failure (see
    :func:`resumable`). ``cancel()`` ends it for good."""

    def __init__(
        self,
        open_stream: Callable[[Req], AsyncIterable[Resp]],
        plan: ResumePlan[Req, Resp],
        on_resume: OnResume | None = None,
    ) -> None:
        super().__init__(open_stream, plan, on_resume)
        self._it: AsyncIterator[Resp] | None = None
        self._cancelled = asyncio.Event()

    def __aiter__(self) -> AsyncResumableStream[Req, Resp]:
        return self

    async def __anext__(self) -> Resp:
        plan = self.plan
        while True:
            if self._done or self._cancelled.is_set():
                raise StopAsyncIteration
            try:
                if self._it is None:
                    self._call = self._open(plan.request)
                    self._it = aiter(self._call)
                msg = await anext(self._it)
            except StopAsyncIteration:
                self._done = True
                raise
            except grpc.RpcError as err:
                self._it = None
                if self._cancelled.is_set():
                    raise StopAsyncIteration from None
                delay = self._failed(err)
                if delay is None:
                    raise
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._cancelled.wait(), delay)
                continue
            plan.delivered(msg)
            return msg

    def cancel(self) -> None:
        """End the stream and stop resuming it."""
        self._cancelled.set()
        self._cancel_call()


def resumable(
    open_stream: Callable[[Req], AsyncIterable[Resp]],
    request: Req,
    resume: ResumeFn[Req, Resp],
    *,
    codes: Iterable[str] = ("UNAVAILABLE",),
    max_failures: int = 10,
    on_resume: OnResume | None = None,
) -> AsyncResumableStream[Req, Resp]:
    """Async-iterate over a stream that is re-opened whenever it fails with a code in
    ``codes`` (see :func:`eagle.resumable.resumable` for the arguments);
    ``open_stream`` returns a ``grpc.aio`` call (or any async iterable of responses)."""
    plan: ResumePlan[Req, Resp] = ResumePlan(
        request, resume, codes=codes, max_failures=max_failures
    )
    return AsyncResumableStream(open_stream, plan, on_resume)
