"""The ``eagle`` membership provider: eagle's own ``eagle.membership.v1`` protocol.

A member serves ``eagle.membership.v1.Membership`` (see :mod:`eagle.server` for a
Python helper) and answers ``GetView`` with its :class:`View`: its own id, the cluster
id, the leader it follows, its term, whether it has quorum, its applied progress and
the members with their client endpoints. eagle polls ``GetView`` with a deadline (a
stalled ``WatchView`` stream would never notice a frozen member).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.membership import MemberView
from ..membership.v1 import membership_pb2
from .base import CallResult, MembershipProvider, ProviderCall, register_provider

__all__ = ["GET_VIEW_METHOD", "WATCH_VIEW_METHOD", "EagleProvider", "view_from_proto"]

GET_VIEW_METHOD = "/eagle.membership.v1.Membership/GetView"
WATCH_VIEW_METHOD = "/eagle.membership.v1.Membership/WatchView"

_GET_VIEW_CALL = ProviderCall(
    GET_VIEW_METHOD,
    membership_pb2.GetViewRequest.SerializeToString,
    membership_pb2.View.FromString,
    membership_pb2.GetViewRequest(),
)


def view_from_proto(view: Any) -> MemberView:
    """A :class:`MemberView` from an ``eagle.membership.v1.View`` message."""
    return MemberView(
        member_id=view.member_id,
        cluster_id=view.cluster_id,
        leader_id=view.leader_id,
        term=int(view.term),
        has_quorum=bool(view.has_quorum),
        applied=int(view.applied),
        members=tuple((m.id, tuple(m.endpoints)) for m in view.members),
    )


class EagleProvider(MembershipProvider):
    """Membership views from ``eagle.membership.v1.Membership/GetView``."""

    name = "eagle"

    def calls(self) -> Sequence[ProviderCall]:
        """One ``GetView`` call."""
        return (_GET_VIEW_CALL,)

    def interpret(self, results: Sequence[CallResult]) -> tuple[MemberView | None, str | None]:
        """The view, or the error text of the failed call."""
        r = results[0]
        if not r.ok:
            return None, f"GetView {r.error_text()}"
        return view_from_proto(r.response), None


register_provider("eagle", EagleProvider)
