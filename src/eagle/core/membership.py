"""Membership verdicts: compare members' views of their cluster and find the cut-off ones.

A member is judged PARTITIONED when its own view says it has no leader or no quorum,
when its cluster id differs from the majority's, or when its term or applied index
trails what a majority of members have reached by more than a threshold. A member
whose view could not be fetched gets no verdict: its health probe alone judges it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from ..config import MembershipConfig

__all__ = ["MemberView", "Verdict", "judge_views"]


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
    """The membership verdict for one member."""

    partitioned: bool
    reason: str


_OK = Verdict(False, "in quorum")


def _majority_floor(values: list[int]) -> int:
    """The largest value that a majority of the given values reach."""
    ordered = sorted(values, reverse=True)
    return ordered[len(ordered) // 2]


def judge_views(
    views: Mapping[str, MemberView | None],
    errors: Mapping[str, str],
    cfg: MembershipConfig,
) -> tuple[dict[str, Verdict], str | None]:
    """Judge every member from all the views at hand.

    Returns (verdict per endpoint that has a view, the endpoint of the leader a majority
    of members name, or None).
    """
    have = {k: v for k, v in views.items() if v is not None}
    verdicts: dict[str, Verdict] = {}
    if not have:
        return verdicts, None
    cluster_ids = Counter(v.cluster_id for v in have.values())
    cluster, _ = cluster_ids.most_common(1)[0]
    same = {k: v for k, v in have.items() if v.cluster_id == cluster}
    term_floor = _majority_floor([v.term for v in same.values()])
    applied_floor = _majority_floor([v.applied for v in same.values()])
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
            verdicts[key] = Verdict(True, f"term {v.term} trails the majority's {term_floor}")
        elif applied_floor - v.applied > cfg.max_applied_lag:
            verdicts[key] = Verdict(
                True, f"applied index {v.applied} trails the majority's {applied_floor}"
            )
        else:
            verdicts[key] = _OK
    for key, err in errors.items():
        if key in verdicts and "no leader" in err:
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
