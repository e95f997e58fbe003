"""eagle for asyncio: the same channel as :mod:`eagle`, as a ``grpc.aio.Channel``.

>>> import eagle.aio
>>> async def main():  # doctest: +SKIP
...     async with eagle.aio.insecure_channel("a:50051,b:50051") as ch:
...         print(ch.status())
"""

from __future__ import annotations

from ..errors import AioEagleRpcError as EagleRpcError
from .channel import Channel, insecure_channel, secure_channel

__all__ = ["Channel", "EagleRpcError", "insecure_channel", "secure_channel"]
