"""Each sub-channel's grpc connectivity state as a health signal (sync shell).

grpc knows the moment a member's connection breaks or cannot be made: its sub-channel
goes IDLE (the connection dropped) or TRANSIENT_FAILURE (connecting failed). The balancer
takes a member in TRANSIENT_FAILURE or SHUTDOWN out of rotation at once, and probes a
member whose connection dropped at once (see ``Balancer.on_connectivity``).

The sync grpc API only offers ``subscribe()``, which starts a polling thread per channel;
instead one periodic job on the channel's timer thread reads every sub-channel's state
(about 2 us each), every 50 ms for small channels and less often for large ones, so that
it costs at most a fraction of a percent of a core.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import grpc
from grpc import _common as _grpc_common

from ..core.balancer import Balancer
from ..shell.subchannels import SubChannel
from .timers import TimerHandle, Timers

__all__ = ["ConnectivityWatcher", "poll_period"]

log = logging.getLogger("eagle.connectivity")

_STATES: Mapping[Any, grpc.ChannelConnectivity] = (
    _grpc_common.CYGRPC_CONNECTIVITY_STATE_TO_CHANNEL_CONNECTIVITY
)


#: seconds between two polls while the channel carries no calls
IDLE_POLL = 1.0


def poll_period(members: int, active: bool = True) -> float:
    """Seconds between two polls of ``members`` sub-channels: 100 ms while the channel
    carries calls, growing with the channel so a poll round costs about 1 % of the
    period (at most 1 s), and :data:`IDLE_POLL` while it carries none (a member that dies
    then is found by its next probe, or by grpc when a call comes)."""
    if not active:
        return IDLE_POLL
    return min(1.0, max(0.1, members * 0.0005))


class ConnectivityWatcher:
    """Polls the sub-channels of one sync channel and reports state changes."""

    def __init__(
        self, balancer: Balancer, subs: Mapping[str, SubChannel[grpc.Channel]], timers: Timers
    ) -> None:
        self._bal = balancer
        self._subs = subs
        self._timers = timers
        self._last: dict[str, grpc.ChannelConnectivity] = {}
        self._handle: TimerHandle | None = None
        self._stopped = False

    def start(self) -> None:
        """Start polling."""
        self._reschedule()

    def _reschedule(self) -> None:
        if self._stopped:
            return
        period = poll_period(len(self._subs), self._bal.active())
        self._handle = self._timers.call_later(period, self.poll)

    def stop(self) -> None:
        """Stop polling."""
        self._stopped = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def poll(self) -> None:
        """Read every sub-channel's state once and report the changes."""
        last = self._last
        subs = list(self._subs.items())
        for key, sub in subs:
            raw = getattr(sub.channel, "_channel", None)
            if raw is None:
                continue
            try:
                state = _STATES[raw.check_connectivity_state(False)]
            except Exception:  # closed meanwhile
                continue
            before = last.get(key)
            if state is before:
                continue
            last[key] = state
            if state is grpc.ChannelConnectivity.IDLE and before is grpc.ChannelConnectivity.READY:
                # the connection dropped: reconnect now rather than at the next call
                try:
                    raw.check_connectivity_state(True)
                except Exception:
                    log.debug("reconnect of %s failed", key, exc_info=True)
            self._bal.on_connectivity(key, state.name)
        if len(last) > len(subs):
            for key in [k for k in last if k not in self._subs]:
                del last[key]
        self._reschedule()
