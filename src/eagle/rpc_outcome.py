"""Report a grpc error (sync ``grpc.RpcError`` or ``grpc.aio.AioRpcError``) to a call's
driver. Both error kinds expose ``code()``, ``details()`` and ``trailing_metadata()``."""

from __future__ import annotations

from typing import Any

from .core.calls import CallDriver

__all__ = ["report_failure"]


def report_failure(drv: CallDriver, err: Any, may_retry: bool = True) -> bool:
    """Tell ``drv`` an attempt failed with ``err``; True when the call should go on."""
    code = err.code()
    try:
        trailing = err.trailing_metadata()
    except Exception:
        trailing = None
    return drv.failed(
        code.name if code is not None else "UNKNOWN", err.details(), trailing, may_retry=may_retry
    )
