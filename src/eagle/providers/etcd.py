"""The ``etcd`` membership provider (etcd v3 API, 3.4 and later).

Each view comes from ``/etcdserverpb.Maintenance/Status`` (answered locally by the
member, even when it is cut off) and, with ``membership.discover``, from
``/etcdserverpb.Cluster/MemberList``. Messages are eagle's own wire-compatible subsets
(:mod:`eagle.etcdwire.v1.etcd_pb2`), so they never clash with a user's etcd stubs.

* member and cluster ids are decimal strings (``str(uint64)``);
* ``leader == 0``, or an error or alarm saying "no leader", means no leader, which
  :func:`~eagle.core.membership.judge_views` turns into PARTITIONED;
* term is ``raftTerm``, applied progress ``raftAppliedIndex`` (``raftIndex`` when the
  member does not report it);
* discovery endpoints are the members' ``clientURLs`` with the scheme stripped
  (``http://10.0.0.1:2379`` -> ``10.0.0.1:2379``, ``unix://p`` -> ``unix:p``);
  learners and members that have not started yet are left out.

With ``membership.etcd.require_leader`` the channel sends ``hasleader: true`` on every
application call, so etcd itself refuses calls (and ends watches) on a member that has
lost its leader.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from ..core.membership import MemberView
from ..etcdwire.v1 import etcd_pb2
from .base import CallResult, MembershipProvider, Metadata, ProviderCall, register_provider

__all__ = [
    "MEMBER_LIST_METHOD",
    "REQUIRE_LEADER_METADATA",
    "STATUS_METHOD",
    "EtcdProvider",
    "endpoint_from_url",
    "view_from_etcd",
]

STATUS_METHOD = "/etcdserverpb.Maintenance/Status"
MEMBER_LIST_METHOD = "/etcdserverpb.Cluster/MemberList"
#: what ``membership.etcd.require_leader`` adds to every call
REQUIRE_LEADER_METADATA: Metadata = (("hasleader", "true"),)

_STATUS_CALL = ProviderCall(
    STATUS_METHOD,
    etcd_pb2.StatusRequest.SerializeToString,
    etcd_pb2.StatusResponse.FromString,
    etcd_pb2.StatusRequest(),
)
_MEMBER_LIST_CALL = ProviderCall(
    MEMBER_LIST_METHOD,
    etcd_pb2.MemberListRequest.SerializeToString,
    etcd_pb2.MemberListResponse.FromString,
    etcd_pb2.MemberListRequest(),
)


def endpoint_from_url(url: str) -> str | None:
    """An eagle endpoint from an etcd client URL, or None when it has no address.

    ``http(s)://host:port`` -> ``host:port``; ``unix(s)://path`` -> ``unix:path``; a
    URL without a scheme is returned as it is.
    """
    url = url.strip()
    if not url:
        return None
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    if scheme.lower() in ("unix", "unixs"):
        return f"unix:{rest}" if rest else None
    netloc = urlsplit(url).netloc
    return netloc or None


def _members(resp: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    out: list[tuple[str, tuple[str, ...]]] = []
    for m in resp.members:
        if m.isLearner:
            continue
        eps = tuple(e for e in (endpoint_from_url(u) for u in m.clientURLs) if e)
        if eps:
            out.append((str(m.ID), eps))
    return tuple(out)


def view_from_etcd(status: Any, member_list: Any | None = None) -> MemberView:
    """A :class:`MemberView` from a ``StatusResponse`` (and a ``MemberListResponse``)."""
    header = status.header
    term = int(status.raftTerm or header.raft_term)
    applied = int(status.raftAppliedIndex or status.raftIndex)
    leader = int(status.leader)
    return MemberView(
        member_id=str(header.member_id),
        cluster_id=str(header.cluster_id),
        leader_id=str(leader) if leader else "",
        term=term,
        has_quorum=leader != 0,
        applied=applied,
        members=_members(member_list) if member_list is not None else (),
        errors=tuple(str(e) for e in status.errors),
    )


class EtcdProvider(MembershipProvider):
    """Membership views from etcd's ``Maintenance.Status`` (+ ``Cluster.MemberList``)."""

    name = "etcd"

    def calls(self) -> Sequence[ProviderCall]:
        """Status, plus MemberList when discovery is on."""
        if self.config.discover:
            return (_STATUS_CALL, _MEMBER_LIST_CALL)
        return (_STATUS_CALL,)

    def interpret(self, results: Sequence[CallResult]) -> tuple[MemberView | None, str | None]:
        """Status decides; a failed MemberList only costs the view its member list."""
        status = results[0]
        if not status.ok:
            return None, f"etcd Status {status.error_text()}"
        member_list = results[1].response if len(results) > 1 and results[1].ok else None
        return view_from_etcd(status.response, member_list), None

    def call_metadata(self) -> Metadata:
        """``hasleader: true`` when ``membership.etcd.require_leader`` is set."""
        return REQUIRE_LEADER_METADATA if self.config.etcd.require_leader else ()


register_provider("etcd", EtcdProvider)
