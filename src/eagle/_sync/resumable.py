"""Resumable streams (sync): re-open a stream on another member after it broke, from
where the caller left off, so no message is lost or repeated.

eagle ends a stream with UNAVAILABLE when its member leaves rotation (PARTITIONED,
UNREACHABLE, NOT_SERVING, EJECTED); :func:`resumable` catches that (or any failure with
a code in ``codes``, including a stream that fails before it delivers anything), asks
the caller's ``resume`` function for the request that starts right after the last
message the caller received, and opens the stream again. eagle's picker sends it to a
member that is still SERVING.

etcd Watch, resumed from the last seen revision + 1::

    from eagle.resumable import etcd_watch_resume, resumable

    watch = channel.stream_stream("/etcdserverpb.Watch/Watch", ...)
    first = WatchRequest(create_request=WatchCreateRequest(key=b"k"))
    for resp in resumable(lambda req: watch(iter([req])), first, etcd_watch_resume):
        for ev in resp.events:
            ...  # every event exactly once, across member failures

The asyncio twin is :func:`eagle.aio.resumable.resumable`; both take their decisions
from :class:`eagle.core.resume.ResumePlan`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import grpc

from ..core.resume import ResumeFn, ResumePlan

__all__ = ["ResumableBase", "ResumableStream", "etcd_watch_resume", "resumable"]

log = logging.getLogger("eagle.resumable")

Req = TypeVar("Req")
Resp = TypeVar("Resp")

#: ``on_resume(error, request)``: called before each re-open with the error that ended
#: the last stream and the request the next one opens with.
OnResume = Callable[[grpc.RpcError, Any], None]


def etcd_watch_resume(request: Any, response: Any) -> Any:
    """The etcd ``WatchRequest`` that resumes a watch right after ``response``.

    Works with any wire-compatible etcd messages (etcd's own ``etcdserverpb`` stubs or
    eagle's subsets). After events: ``start_revision`` = the last event's
    ``mod_revision`` + 1. After the "created" response of a watch that started at the
    current revision (``start_revision`` 0): the creation revision + 1, so events that
    happen while the stream is re-opened are replayed rather than lost. A canceled watch
    (e.g. compacted) raises ``RuntimeError``: it cannot be resumed exactly. Do not ask
    for ``fragment``: a fragmented response would be resumed past the events of its
    revision still to come.
    """
    if getattr(response, "canceled", False):
        raise RuntimeError(
            f"etcd canceled the watch: {response.cancel_reason or 'no reason'} "
            f"(compact_revision={response.compact_revision})"
        )
    create = request.create_request
    if response.events:
        nxt = int(response.events[-1].kv.mod_revision) + 1
    elif getattr(response, "created", False) and create.start_revision == 0:
        nxt = int(response.header.revision) + 1
    else:
        return request
    if nxt <= create.start_revision:
        return request
    new = type(request)()
    new.CopyFrom(request)
    new.create_request.start_revision = nxt
    return new


class ResumableBase(Generic[Req, Resp]):
    """What the sync and asyncio resumable streams share: the resume plan, the stream
    currently open, and where it rides."""

    def __init__(self, open_stream: Any, plan: ResumePlan[Req, Resp], on_resume: Any) -> None:
        self._open = open_stream
        self.plan = plan
        self._on_resume = on_resume
        self._call: Any = None
        self._done = False

    @property
    def call(self) -> Any:
        """The stream currently open (what ``open_stream`` returned), or None."""
        return self._call

    @property
    def endpoint(self) -> str | None:
        """The member the current stream rides on, when eagle says (else None)."""
        return getattr(self._call, "endpoint", None)

    @property
    def resumes(self) -> int:
        """How many times the stream was re-opened."""
        return self.plan.resumes

    def _failed(self, err: BaseException) -> float | None:
        """The stream failed with ``err``: the delay before re-opening it, or None when it
        must not be re-opened (the stream is then done)."""
        code = err.code() if callable(getattr(err, "code", None)) else None  # type: ignore[attr-defined]
        delay = self.plan.on_error(code.name if code is not None else "UNKNOWN")
        if delay is None:
            self._done = True
            return None
        log.info("re-opening stream (resume #%d in %.3fs): %s", self.plan.resumes, delay, err)
        if self._on_resume is not None:
            self._on_resume(err, self.plan.request)
        return delay

    def _cancel_call(self) -> None:
        call = self._call
        if call is not None and callable(getattr(call, "cancel", None)):
            call.cancel()


class ResumableStream(ResumableBase[Req, Resp]):
    """An iterator of responses that re-opens its stream after a failure (see
    :func:`resumable`). ``cancel()`` ends it for good."""

    def __init__(
        self,
        open_stream: Callable[[Req], Iterable[Resp]],
        plan: ResumePlan[Req, Resp],
        on_resume: OnResume | None = None,
    ) -> None:
        super().__init__(open_stream, plan, on_resume)
        self._it: Iterator[Resp] | None = None
        self._cancelled = threading.Event()

    def __iter__(self) -> ResumableStream[Req, Resp]:
        return self

    def __next__(self) -> Resp:
        plan = self.plan
        while True:
            if self._done or self._cancelled.is_set():
                raise StopIteration
            try:
                if self._it is None:
                    self._call = self._open(plan.request)
                    self._it = iter(self._call)
                msg = next(self._it)
            except StopIteration:
                self._done = True
                raise
            except grpc.RpcError as err:
                self._it = None
                if self._cancelled.is_set():
                    raise StopIteration from None
                delay = self._failed(err)
                if delay is None:
                    raise
                if delay > 0 and self._cancelled.wait(delay):
                    raise StopIteration from None
                continue
            plan.delivered(msg)
            return msg

    def cancel(self) -> None:
        """End the stream and stop resuming it (from any thread)."""
        self._cancelled.set()
        self._cancel_call()


def resumable(
    open_stream: Callable[[Req], Iterable[Resp]],
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
    return ResumableStream(open_stream, plan, on_resume)
