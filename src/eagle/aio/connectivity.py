"""Each sub-channel's grpc connectivity state as a health signal (asyncio shell).

grpc knows the moment a member's connection breaks or cannot be made: its sub-channel
goes IDLE (the connection dropped) or TRANSIENT_FAILURE (connecting failed). The balancer
takes a member in TRANSIENT_FAILURE or SHUTDOWN out of rotation at once, and probes a
member whose connection dropped at once (see ``Balancer.on_connectivity``).

grpc.aio reports state changes without polling (``wait_for_state_change``), so each
sub-channel gets one small task that waits for the next change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import grpc

from ..core.balancer import Balancer
from ..shell.subchannels import SubChannel

__all__ = ["ConnectivityWatcher"]

log = logging.getLogger("eagle.aio.connectivity")


class ConnectivityWatcher:
    """Watches the sub-channels of one asyncio channel and reports state changes."""

    def __init__(self, balancer: Balancer, subs: Mapping[str, SubChannel[Any]]) -> None:
        self._bal = balancer
        self._subs = subs
        self._tasks: dict[str, tuple[SubChannel[Any], asyncio.Task[None]]] = {}
        self._stopped = False

    def start(self) -> None:
        """Watch every current sub-channel (call again after the member set changed)."""
        if self._stopped:
            return
        for key, (sub, task) in list(self._tasks.items()):
            if self._subs.get(key) is not sub:
                task.cancel()
                del self._tasks[key]
        loop = asyncio.get_running_loop()
        for key, sub in self._subs.items():
            if key not in self._tasks:
                self._tasks[key] = (sub, loop.create_task(self._watch(key, sub)))

    async def _watch(self, key: str, sub: SubChannel[Any]) -> None:
        ch = sub.channel
        last: grpc.ChannelConnectivity | None = None
        try:
            while not self._stopped:
                state = ch.get_state(False)
                if state is not last:
                    if (
                        state is grpc.ChannelConnectivity.IDLE
                        and last is grpc.ChannelConnectivity.READY
                    ):
                        ch.get_state(True)  # the connection dropped: reconnect now
                    self._bal.on_connectivity(key, state.name)
                    last = state
                await ch.wait_for_state_change(state)
        except asyncio.CancelledError:
            raise
        except Exception:  # the sub-channel was closed
            log.debug("connectivity watch of %s ended", key, exc_info=True)

    async def stop(self) -> None:
        """Stop watching."""
        self._stopped = True
        tasks = [task for _, task in self._tasks.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
