"""Fork safety: a channel created before ``os.fork()`` refuses calls in the child.

grpcio's channels and APScheduler's thread do not survive a fork, so instead of hanging
the child gets a clear :class:`ForkedChannelError`. Create a new channel after forking.
"""

from __future__ import annotations

import os

__all__ = ["ForkedChannelError", "generation"]

_generation = 0


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


def generation() -> int:
    """How many forks this process descends from (since eagle was imported)."""
    return _generation


class ForkedChannelError(RuntimeError):
    """A channel created before ``os.fork()`` was used in the child process."""
