"""Membership verdicts: compare members' views of their cluster and find the cut-off ones.

A member is judged PARTITIONED when its own view says it has no leader or no quorum,
when its cluster id differs from the majority's, or when its term or applied index
trails what a majority of members have reached by more than a threshold. A member
whose view could not be fetched gets no verdict: its health probe alone judges it, unless
the error itself says the member has no leader.

:func:`plan_discovery` turns the trusted views' member lists into endpoints to add and
remove (``membership.discover``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, replace

from ..config import EtcdMembershipConfig, MembershipConfig
from ..endpoints import parse_endpoint

__all__ = [
    "DiscoveryPlan",
    "MemberView",
    "Verdict",
    "check_view",
    "judge_views",
    "judging_config",
    "plan_discovery",
]


@dataclass(frozen=True, slots=True)
class MemberView:
    """One member's view of its cluster, as a membership provider fetched it.

    ``leader_id`` is empty when the member knows no leader. ``members`` maps member id to
    the member's client endpoints (for discovery). ``errors`` are alarms the member reports.
    """

    member_id: str
    cluster_id: str
    leader_id: str
    term: int
    has_quorum: bool
    applied: int
    members: tuple[tuple[str, tuple[str, ...]], ...] = ()
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    """The membership verdict for one member. ``term_lag``: its term trails the
    majority's (see :func:`judge_views`)."""

    partitioned: bool
    reason: str
    term_lag: bool = False


_OK = Verdict(False, "in quorum")


def _majority_floor(values: list[int]) -> int:
    """The largest value that a majority of the given values reach."""
    ordered = sorted(values, reverse=True)
    return ordered[len(ordered) // 2]


def judge_views(
    views: Mapping[str, MemberView | None],
    errors: Mapping[str, str],
    cfg: MembershipConfig,
    previous: Mapping[str, Verdict] | None = None,
) -> tuple[dict[str, Verdict], str | None]:
    """Judge every member from all the views at hand.

    A member whose term trails the majority's is PARTITIONED at once when it does not
    follow the leader the majority follows (a cut-off old leader, say). One that follows
    that leader is given one more view: etcd 3.4's ``Status`` reports the term of the last
    entry a member applied, which trails for a moment after every election; only when
    its next view (``previous``: the last verdicts) still trails is it PARTITIONED.

    Returns (verdict per endpoint that has a view, the endpoint of the leader a majority
    of members name, or None).
    """
    previous = previous or {}
    have = {k: v for k, v in views.items() if v is not None}
    verdicts: dict[str, Verdict] = {}
    if not have:
        for key, err in errors.items():
            if "no leader" in err:
                verdicts[key] = Verdict(True, f"no leader: {err}")
        return verdicts, None
    cluster_ids = Counter(v.cluster_id for v in have.values())
    cluster, _ = cluster_ids.most_common(1)[0]
    same = {k: v for k, v in have.items() if v.cluster_id == cluster}
    term_floor = _majority_floor([v.term for v in same.values()])
    applied_floor = _majority_floor([v.applied for v in same.values()])
    # the leader a majority of the members with quorum follow: a member that follows it
    # is connected to the current leader, whatever term it reports (etcd 3.4's Status
    # reports the term of the last entry it applied, which trails just after an election)
    followed = Counter(v.leader_id for v in same.values() if v.leader_id and v.has_quorum)
    current = None
    if followed:
        lid, count = followed.most_common(1)[0]
        if count * 2 > len(views):
            current = lid
    for key, v in have.items():
        if v.cluster_id != cluster:
            verdicts[key] = Verdict(
                True, f"cluster id {v.cluster_id} differs from the majority's {cluster}"
            )
        elif not v.leader_id or any("no leader" in e for e in v.errors):
            verdicts[key] = Verdict(True, f"member {v.member_id} has no leader")
        elif not v.has_quorum:
            verdicts[key] = Verdict(True, f"member {v.member_id} has no quorum")
        elif term_floor - v.term > cfg.max_term_lag:
            lag = f"term {v.term} trails the majority's {term_floor}"
            before = previous.get(key)
            if v.leader_id == current and not (before is not None and before.term_lag):
                verdicts[key] = Verdict(False, f"{lag} (follows the leader: judged again)", True)
            else:
                verdicts[key] = Verdict(True, lag, True)
        elif applied_floor - v.applied > cfg.max_applied_lag:
            verdicts[key] = Verdict(
                True, f"applied index {v.applied} trails the majority's {applied_floor}"
            )
        else:
            verdicts[key] = _OK
    for key, err in errors.items():
        # an error that says "no leader" is a verdict of its own, with or without a view
        if "no leader" in err:
            verdicts[key] = Verdict(True, f"no leader: {err}")
    # the leader a majority of trusted members name
    named = Counter(v.leader_id for k, v in same.items() if not verdicts[k].partitioned)
    leader: str | None = None
    if named:
        lid, count = named.most_common(1)[0]
        if lid and count * 2 > len(views):
            for k, v in same.items():
                if v.member_id == lid:
                    leader = k
                    break
    return verdicts, leader


_ETCD_DEFAULTS = EtcdMembershipConfig()


def judging_config(cfg: MembershipConfig) -> MembershipConfig:
    """The thresholds :func:`judge_views` should use for ``cfg``.

    With provider ``etcd``, a lag threshold set under ``membership.etcd`` (one that differs
    from its default) overrides the general one: the more specific setting wins.
    """
    if cfg.provider != "etcd":
        return cfg
    etcd = cfg.etcd
    term = cfg.max_term_lag
    applied = cfg.max_applied_lag
    if etcd.max_term_lag != _ETCD_DEFAULTS.max_term_lag:
        term = etcd.max_term_lag
    if etcd.max_applied_lag != _ETCD_DEFAULTS.max_applied_lag:
        applied = etcd.max_applied_lag
    if term == cfg.max_term_lag and applied == cfg.max_applied_lag:
        return cfg
    return replace(cfg, max_term_lag=term, max_applied_lag=applied)


@dataclass(frozen=True, slots=True)
class DiscoveryPlan:
    """Endpoints discovery wants added and removed, and the member set they give."""

    add: tuple[str, ...]
    remove: tuple[str, ...]
    endpoints: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


_NO_CHANGE = DiscoveryPlan((), (), ())


def _valid_endpoint(text: str) -> bool:
    try:
        parse_endpoint(text)
    except ValueError:
        return False
    return True


def plan_discovery(
    current: Sequence[str],
    views: Mapping[str, MemberView | None],
    verdicts: Mapping[str, Verdict],
    discovered: Set[str],
) -> DiscoveryPlan:
    """Compare the member set with what the members advertise.

    The member list comes from the most advanced trusted view (not PARTITIONED, highest
    term, then applied index) that lists members. Each endpoint's identity is the member
    id its own view reports, else the member that advertises it.

    * add: for each listed member that no current endpoint stands for, its first valid
      advertised endpoint;
    * remove: an endpoint whose own view (same cluster) names a member that is no longer
      listed; an endpoint that discovery added and that is neither listed nor known; and a
      discovered endpoint that stands for the same member as another endpoint (duplicate).

    Endpoints the user gave are only removed when their member provably left the
    cluster. The plan never empties the member set.
    """
    trusted = [
        v
        for k, v in views.items()
        if v is not None and v.members and k in verdicts and not verdicts[k].partitioned
    ]
    if not trusted:
        return _NO_CHANGE
    ref = max(trusted, key=lambda v: (v.term, v.applied))
    listed = {mid: eps for mid, eps in ref.members}
    advertised = {ep: mid for mid, eps in ref.members for ep in eps}
    identity: dict[str, str] = {}
    for key in current:
        v = views.get(key)
        if v is not None and v.member_id:
            identity[key] = v.member_id
        elif key in advertised:
            identity[key] = advertised[key]
    covered = set(identity.values())
    now = set(current)
    add: list[str] = []
    for mid, eps in ref.members:
        if mid in covered:
            continue
        for ep in eps:
            if ep not in now and _valid_endpoint(ep):
                add.append(ep)
                now.add(ep)
                break
    remove: list[str] = []
    owner: dict[str, str] = {}
    # endpoints the user gave claim their member first, so a duplicate is a discovered one
    for key in sorted(current, key=lambda k: k in discovered):
        who = identity.get(key)
        if who is None:
            if key in discovered:
                remove.append(key)
            continue
        if who not in listed:
            v = views.get(key)
            if key in discovered or (v is not None and v.cluster_id == ref.cluster_id):
                remove.append(key)
            continue
        if who in owner and key in discovered:
            remove.append(key)
            continue
        owner.setdefault(who, key)
    gone = set(remove)
    kept = [k for k in current if k not in gone]
    if not kept and not add:
        return _NO_CHANGE
    if not add and not remove:
        return _NO_CHANGE
    return DiscoveryPlan(tuple(add), tuple(remove), (*kept, *add))


def check_view(view: MemberView, previous: MemberView | None) -> tuple[str | None, bool]:
    """Check a fetched view against nonsense: returns (the problem or None, trust it?).

    Empty ids and a member or endpoint listed twice make the view untrusted: the member
    is then judged by its health probe alone, as when its view cannot be fetched. A term
    that went backwards (Raft terms never do: the member lost its state) is reported but
    the view is still judged, so a term that now trails the majority's partitions it.
    """
    if not view.member_id:
        return "view has an empty member id", False
    if not view.cluster_id:
        return "view has an empty cluster id", False
    ids = [mid for mid, _ in view.members]
    if any(not mid for mid in ids):
        return "view lists a member with an empty id", False
    if len(ids) != len(set(ids)):
        return "view lists a member twice", False
    endpoints = [ep for _, eps in view.members for ep in eps]
    if len(endpoints) != len(set(endpoints)):
        return "view lists an endpoint twice", False
    if (
        previous is not None
        and previous.member_id == view.member_id
        and previous.cluster_id == view.cluster_id
        and view.term < previous.term
    ):
        return f"term went backwards from {previous.term} to {view.term}", True
    return None, True
