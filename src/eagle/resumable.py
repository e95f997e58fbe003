"""Resumable streams: re-open a stream on another member after it broke, from where the
caller left off, so no message is lost or repeated.

This is the public home of the sync helpers (:mod:`eagle._sync.resumable`); the asyncio
twins are in :mod:`eagle.aio.resumable`.
"""

from __future__ import annotations

from ._sync.resumable import ResumableStream, etcd_watch_resume, resumable

__all__ = ["ResumableStream", "etcd_watch_resume", "resumable"]
