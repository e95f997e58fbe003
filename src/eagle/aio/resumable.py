"""Resumable streams: re-open a stream on another member after it broke, from where the
caller left off, so no message is lost or repeated.

eagle ends a stream with UNAVAILABLE when its member leaves rotation (PARTITIONED,
UNREACHABLE, NOT_SERVING, EJECTED); :func:`resumable` catches that (or any failure with
a code in ``codes``, including a stream that fails before it delivers anything), asks
the caller's ``resume`` function for the request that starts right after the last
message the caller received, and opens the stream again. eagle's picker sends it to a
member that is still SERVING.

etcd Watch, resumed from the last seen revision + 1::

    from eagle.aio.resumable import etcd_watch_resume, resumable

    watch = channel.stream_stream("/etcdserverpb.Watch/Watch", ...)
    first = WatchRequest(create_request=WatchCreateRequest(key=b"k"))
    async for resp in resumable(lambda req: watch(iter([req])), first, etcd_watch_resume):
        for ev in resp.events:
            ...  # every event exactly once, across member failures

The asyncio shell's module is the source; the sync shell's one is generated from it by
``scripts/unasync.py`` (``make unasync``; ``make test`` checks it is up to date). Both
take their decisions from :class:`eagle.core.resume.ResumePlan`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable

import grpc

from ..core.resume import ResumeFn, ResumePlan
from ..shell.resumable import OnResume, Req, Resp, ResumableBase, etcd_watch_resume, log
from .timers import cancelled_within

__all__ = ["ResumableStream", "etcd_watch_resume", "resumable"]


class ResumableStream(ResumableBase[Req, Resp]):
    """An iterator of responses that re-opens its stream after a failure (see
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

    def __aiter__(self) -> ResumableStream[Req, Resp]:
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
                if delay > 0 and await cancelled_within(self._cancelled, delay):
                    raise StopAsyncIteration from None
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
) -> ResumableStream[Req, Resp]:
    """Iterate over a stream that is re-opened whenever it fails with a code in
    ``codes``.

    ``open_stream(request)`` opens the stream (e.g. ``lambda r: stub.Watch(iter([r]))``
    for a bidi method, ``stub.Subscribe`` for a server-streaming one) and returns an
    iterable of responses. ``resume(request, response)`` returns the request that
    re-opens the stream right after ``response``; it is called for every response the
    caller receives. The first re-open after progress is immediate; repeated failures
    back off, and after ``max_failures`` in a row the error is raised.
    ``on_resume(error, request)`` is called before every re-open.
    """
    plan: ResumePlan[Req, Resp] = ResumePlan(
        request, resume, codes=codes, max_failures=max_failures
    )
    log.debug("resumable stream from %r", request)
    return ResumableStream(open_stream, plan, on_resume)


#: the name this class had before eagle 0.2
AsyncResumableStream = ResumableStream
