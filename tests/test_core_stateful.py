"""A Hypothesis state machine over the sans-IO balancer: probes, call outcomes, clock,
membership views and member changes in any order. The status table never shows a state
that no transition produced, picks stay within the members, ejections stay within the
cap, and the version only grows."""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from eagle.config import Config
from eagle.core.balancer import Balancer
from eagle.core.health import ProbeOutcome, ProbeResult
from eagle.core.membership import MemberView
from eagle.core.status import State, Transition
from eagle.endpoints import parse_endpoints

POOL = [f"10.0.0.{i}:2379" for i in range(1, 7)]
OUTCOMES = [
    ProbeOutcome(ProbeResult.SERVING, 0.001),
    ProbeOutcome(ProbeResult.NOT_SERVING, 0.001, "health: NOT_SERVING"),
    ProbeOutcome(ProbeResult.UNREACHABLE, 0.5, "probe DEADLINE_EXCEEDED"),
]
CODES = ["OK", "OK", "UNAVAILABLE", "DEADLINE_EXCEEDED", "NOT_FOUND", "INTERNAL"]


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class BalancerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        cfg = Config.from_dict(
            {
                "outlier": {"consecutive_failures": 2, "base_ejection_time": 5, "interval": 3},
                "membership": {"provider": "eagle"},
                "policy": "p2c",
            }
        )
        self.members = list(POOL[:3])
        self.bal = Balancer(
            parse_endpoints(self.members), cfg, clock=self.clock, rng=random.Random(0)
        )
        self.last: dict[str, State] = {}
        self.version = self.bal.version
        self.bal.on_change(self._seen)

    def _seen(self, t: Transition) -> None:
        assert t.old is not t.new
        prev = self.last.get(t.endpoint, State.UNKNOWN)
        assert t.old is prev, (t, prev)
        self.last[t.endpoint] = t.new

    @rule(i=st.integers(0, 5), o=st.sampled_from(OUTCOMES))
    def probe(self, i: int, o: ProbeOutcome) -> None:
        self.bal.on_probe(POOL[i], o)

    @rule(i=st.integers(0, 5), code=st.sampled_from(CODES), latency=st.floats(0, 1))
    def call_done(self, i: int, code: str, latency: float) -> None:
        self.bal.done(POOL[i], code, latency)

    @rule(dt=st.floats(0, 10))
    def advance(self, dt: float) -> None:
        self.clock.t += dt
        self.bal.tick()

    @rule()
    def pick(self) -> None:
        ep = self.bal.pick("/s/m")
        assert ep is None or ep in self.members

    @rule(i=st.integers(0, 5), leader=st.booleans(), term=st.integers(0, 5), cid=st.booleans())
    def view(self, i: int, leader: bool, term: int, cid: bool) -> None:
        view = MemberView(
            member_id=str(i),
            cluster_id="c1" if cid else "c2",
            leader_id="1" if leader else "",
            term=term,
            has_quorum=leader,
            applied=term * 10,
        )
        self.bal.on_view(POOL[i], view)

    @precondition(lambda self: True)
    @rule(chosen=st.sets(st.integers(0, 5), min_size=1, max_size=6))
    def change_members(self, chosen: set[int]) -> None:
        self.members = [POOL[i] for i in sorted(chosen)]
        _, removed = self.bal.update_endpoints(parse_endpoints(self.members))
        for key in removed:
            self.last.pop(key, None)

    @invariant()
    def table_matches_transitions(self) -> None:
        snap = self.bal.snapshot()
        assert list(snap) == self.members
        for key, status in snap.items():
            assert status.state is self.last.get(key, State.UNKNOWN), (key, status)

    @invariant()
    def version_only_grows(self) -> None:
        assert self.bal.version >= self.version
        self.version = self.bal.version

    @invariant()
    def ejections_within_cap(self) -> None:
        ejected = sum(1 for s in self.bal.snapshot().values() if s.state is State.EJECTED)
        assert ejected <= max(1, int(0.1 * len(self.members)))


BalancerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestBalancerMachine = BalancerMachine.TestCase
