"""Server answers that prove a request was rejected before it was applied.

Most statuses a server sends say nothing about whether a request took effect: a server
may apply a write and still answer UNAVAILABLE. A few answers are known to come from
code that runs before the request reaches the part that applies it; a request rejected
that way can be sent again after a backoff, even when its method is not idempotent, and
its outcome is never "unknown". Each entry names the code, a fragment of the details
that identifies the answer, and the source that shows where the server returns it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["UNAPPLIED_ANSWERS", "UnappliedAnswer", "known_unapplied"]


@dataclass(frozen=True, slots=True)
class UnappliedAnswer:
    """One answer known to leave the request unapplied."""

    code: str
    #: lower-case fragment of the status details that identifies the answer
    fragment: str
    #: where the server returns it, before the request is applied
    source: str


UNAPPLIED_ANSWERS: tuple[UnappliedAnswer, ...] = (
    UnappliedAnswer(
        "UNAVAILABLE",
        "etcdserver: no leader",
        "etcd server/etcdserver/api/v3rpc/interceptor.go: the unary and stream interceptors "
        "return rpctypes.ErrGRPCNoLeader for a request with `hasleader` metadata while the "
        "member has no leader, before the request reaches the KV server or raft",
    ),
)


def known_unapplied(code: str, details: str | None) -> UnappliedAnswer | None:
    """The table entry that proves an answer (``code``, ``details``) left its request
    unapplied, or None."""
    if not details:
        return None
    low = details.lower()
    for entry in UNAPPLIED_ANSWERS:
        if entry.code == code and entry.fragment in low:
            return entry
    return None
