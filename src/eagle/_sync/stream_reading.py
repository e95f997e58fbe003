"""Read a sync response stream without grpc's 100 ms wake-ups.

grpcio's sync response streams block in ``grpc._common.wait``, which wakes the reading
thread every 100 ms (``MAXIMUM_WAIT_TIMEOUT``) so that a main thread can still take
signals (grpc/grpc#19464). The prober reads one ``Health/Watch`` stream per member on a
daemon thread of its own, where that does nothing useful: over 1,024 members it cost
about 30 % of a core (measured, grpcio 1.85) while the streams said nothing.

:func:`messages` yields the messages of a stream exactly as iterating the call does, but
waits on the call's condition with a long timeout. It relies on the layout of grpcio's
``_MultiThreadedRendezvous`` (``_state``, ``_call``, ``_response_deserializer`` and
``grpc._channel._event_handler``, unchanged since grpcio 1.2x); when the installed grpcio
differs, it falls back to plain iteration. :data:`QUIET` says which one is in use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import grpc
from grpc import _channel as grpc_channel  # private: see the module docstring
from grpc._cython import cygrpc

__all__ = ["QUIET", "messages"]

log = logging.getLogger("eagle.prober")

#: how long one wait on the stream's condition lasts (it is notified on every event, so
#: this only bounds how long a stream that grpc forgot to notify could go unread)
WAIT = 5.0

_RECEIVE = cygrpc.OperationType.receive_message

#: True when the installed grpcio has the internals :func:`messages` needs
QUIET: bool = all(
    (
        hasattr(grpc_channel, "_MultiThreadedRendezvous"),
        callable(getattr(grpc_channel, "_event_handler", None)),
        hasattr(cygrpc, "ReceiveMessageOperation"),
    )
)


def _quiet_ok(call: Any) -> bool:
    state = getattr(call, "_state", None)
    return (
        QUIET
        and isinstance(call, grpc_channel._MultiThreadedRendezvous)
        and state is not None
        and all(hasattr(state, a) for a in ("condition", "code", "due", "response"))
        and hasattr(call, "_call")
        and hasattr(call, "_response_deserializer")
    )


def messages(call: Any) -> Iterator[Any]:
    """The messages of a sync response-streaming ``call``, as ``iter(call)`` gives them
    (StopIteration at OK, the call raised as its :class:`grpc.RpcError` otherwise)."""
    if not _quiet_ok(call):
        yield from call
        return
    state = call._state
    while True:
        with state.condition:
            if state.code is None:
                handler = grpc_channel._event_handler(state, call._response_deserializer)
                state.due.add(_RECEIVE)
                operating = call._call.operate((cygrpc.ReceiveMessageOperation(0),), handler)
                if not operating:
                    state.due.discard(_RECEIVE)
            elif state.code is grpc.StatusCode.OK:
                return
            else:
                raise call
            while state.response is None and not (
                _RECEIVE not in state.due and state.code is not None
            ):
                state.condition.wait(timeout=WAIT)
            response = state.response
            if response is not None:
                state.response = None
            elif state.code is grpc.StatusCode.OK:
                return
            elif state.code is not None:
                raise call
        if response is not None:
            yield response
