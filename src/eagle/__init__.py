"""eagle: health-aware, fault-tolerant drop-in gRPC channels over replicated services.

>>> import eagle
>>> ch = eagle.insecure_channel("10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379")  # doctest: +SKIP
>>> ch.status()["10.0.0.1:2379"].state  # doctest: +SKIP
<State.SERVING: 'SERVING'>
"""

from __future__ import annotations

import logging

from . import aio, hooks
from ._sync.channel import Channel, insecure_channel, secure_channel
from .config import Config, load_config
from .core.calls import AttemptRecord, CallReport
from .core.pickers import (
    CallInfo,
    CallOutcome,
    PickContext,
    Picker,
    available_pickers,
    register_picker,
)
from .core.retry import Delivery, GiveUp
from .core.status import EndpointStatus, State, StatusSnapshot, Transition
from .endpoints import Endpoint, parse_endpoints
from .errors import AioEagleRpcError, EagleRpcError
from .shell.forking import ForkedChannelError
from .shell.outcomes import call_info

__all__ = [
    "AioEagleRpcError",
    "AttemptRecord",
    "CallInfo",
    "CallOutcome",
    "CallReport",
    "Channel",
    "Config",
    "Delivery",
    "EagleRpcError",
    "Endpoint",
    "EndpointStatus",
    "ForkedChannelError",
    "GiveUp",
    "PickContext",
    "Picker",
    "State",
    "StatusSnapshot",
    "Transition",
    "aio",
    "available_pickers",
    "call_info",
    "hooks",
    "insecure_channel",
    "load_config",
    "parse_endpoints",
    "register_picker",
    "secure_channel",
]

__version__ = "0.1.0"

# a library never prints: without the application's own logging setup eagle stays silent
# (Python's last-resort handler would print its warnings to stderr)
logging.getLogger("eagle").addHandler(logging.NullHandler())
