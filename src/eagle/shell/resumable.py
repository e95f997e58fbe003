"""What the sync and asyncio resumable streams share (:mod:`eagle.resumable`,
:mod:`eagle.aio.resumable`): the resume plan, the stream currently open, where it rides,
and the etcd Watch resume function.

The decisions themselves (where to resume, whether and when to re-open) are the core's
:class:`eagle.core.resume.ResumePlan`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import grpc

from ..core.resume import ResumePlan

__all__ = ["OnResume", "ResumableBase", "etcd_watch_resume"]

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
