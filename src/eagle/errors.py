"""Errors eagle raises itself. They are real ``grpc.RpcError`` objects that are also
``grpc.Call``, so code written against grpcio's errors keeps working."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

__all__ = ["AioOutcomeUnknownError", "EagleRpcError", "OutcomeUnknownError"]


class EagleRpcError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """A call eagle ended itself (no member could serve it, or its stream was moved).

    ``code()`` is a ``grpc.StatusCode`` (usually UNAVAILABLE) and ``details()`` names each
    member involved and its state.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        trailing_metadata: tuple[tuple[str, str | bytes], ...] = (),
    ) -> None:
        super().__init__(details)
        self._code = code
        self._details = details
        self._trailing = trailing_metadata

    def code(self) -> grpc.StatusCode:
        """The status code."""
        return self._code

    def details(self) -> str:
        """Human-readable details naming the members and their states."""
        return self._details

    def initial_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """Always empty: no server answered."""
        return ()

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """Trailing metadata, if any."""
        return self._trailing

    def debug_error_string(self) -> str:
        """Same as details (grpcio compatibility)."""
        return self._details

    def is_active(self) -> bool:
        """Always False: the call is over."""
        return False

    def time_remaining(self) -> float | None:
        """Always None: the call is over."""
        return None

    def cancel(self) -> bool:
        """Always False: nothing to cancel."""
        return False

    def add_callback(self, callback: Callable[[], Any]) -> bool:
        """Always False: the call is over, so the callback is not registered."""
        return False

    def __str__(self) -> str:
        return (
            f"<{type(self).__name__} of RPC that terminated with:\n"
            f"\tstatus = {self._code}\n\tdetails = {self._details!r}>"
        )

    __repr__ = __str__


class OutcomeUnknownError(EagleRpcError):
    """A non-idempotent call failed after it may have reached a server: it may or may not
    have been applied, and eagle did not retry it. ``code()`` is the original code and
    ``details()`` starts with the original details; ``__cause__`` is the original error."""


class AioOutcomeUnknownError(grpc.aio.AioRpcError):  # type: ignore[misc]
    """The asyncio twin of :class:`OutcomeUnknownError` (a ``grpc.aio.AioRpcError``)."""
