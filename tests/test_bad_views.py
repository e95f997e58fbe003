"""Nonsense membership views from real members: the member is judged by its health probe
alone (an untrusted view is no view), one clear warning is logged, and nothing crashes,
spins or grows."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

import eagle
from eagle import State
from eagle.testing.member_server import MemberGroup

CONFIG = {
    "health": {"interval": 0.1, "timeout": 0.5, "no_traffic_interval": None},
    "membership": {"provider": "eagle", "timeout": 1.0},
}


@pytest.fixture
def group() -> Iterator[MemberGroup]:
    g = MemberGroup(3)
    try:
        yield g
    finally:
        g.close()


def _settle(ch: eagle.Channel) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        snap = ch.status()
        if all(s.serving and s.member_id for s in snap.values()):
            return
        time.sleep(0.05)
    pytest.fail(f"members never settled: {ch.status()}")


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"member_id": ""}, "empty member id"),
        ({"cluster_id": ""}, "empty cluster id"),
        ({"members": {"m0": ["127.0.0.1:1"], "m1": ["127.0.0.1:1"]}}, "endpoint twice"),
        (
            {"members": {f"m{i}": [f"h{i}-" + "x" * 200 + ":1"] for i in range(30000)}},
            "RESOURCE_EXHAUSTED",
        ),
    ],
    ids=["empty-id", "empty-cluster", "endpoint-twice", "huge"],
)
def test_nonsense_view_is_not_trusted(
    group: MemberGroup, caplog: pytest.LogCaptureFixture, changes: dict[str, Any], why: str
) -> None:
    caplog.set_level(logging.WARNING, logger="eagle")
    group.elect(0, term=5)
    with eagle.insecure_channel(group.endpoints, config=CONFIG) as ch:
        _settle(ch)
        victim = group.endpoints[1]
        group.set_view(1, **changes)
        cpu0 = time.process_time()
        time.sleep(1.5)
        cpu = time.process_time() - cpu0
        st = ch.status()[victim]
        # judged by its health probe alone: still SERVING, but no trusted view
        assert st.state is State.SERVING, st
        views, _ = ch.balancer.membership_views()
        assert views[victim] is None
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and victim in r.getMessage()
        ]
        assert len(warnings) == 1 and why in warnings[0], warnings
        if why != "RESOURCE_EXHAUSTED":
            # (the members run in this process: for the huge view, serializing 6 MB ten
            # times a second is the servers' CPU, not the client's)
            assert cpu < 1.2, f"used {cpu:.2f}s CPU in 1.5 s"
        # the rest of the cluster is unaffected
        others = [s for ep, s in ch.status().items() if ep != victim]
        assert all(s.serving for s in others)


def test_term_going_backwards_is_reported_and_partitions(
    group: MemberGroup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="eagle")
    group.elect(0, term=5)
    with eagle.insecure_channel(group.endpoints, config=CONFIG) as ch:
        _settle(ch)
        victim = group.endpoints[1]
        group.set_view(1, term=0)  # the member lost its state
        time.sleep(1.0)
        st = ch.status()[victim]
        assert st.state is State.PARTITIONED and "trails the majority" in (st.verdict or "")
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and victim in r.getMessage()
        ]
        assert len(warnings) == 1 and "term went backwards from 5 to 0" in warnings[0]
