"""The table of answers proven to leave a request unapplied (``eagle.core.rejections``):
what it matches, for which methods, and what a call driver does with a match."""

from __future__ import annotations

import random

import pytest

from eagle.config import Config
from eagle.core.balancer import Balancer
from eagle.core.calls import SEND, SLEEP, AttemptFailure, CallDriver, Delivery
from eagle.core.health import ProbeOutcome, ProbeResult
from eagle.core.rejections import ETCD_CORE, UNAPPLIED_ANSWERS, known_unapplied
from eagle.core.retry import GiveUp
from eagle.endpoints import parse_endpoints

PUT = "/etcdserverpb.KV/Put"
RANGE = "/etcdserverpb.KV/Range"
PROMOTE = "/etcdserverpb.Cluster/MemberPromote"
LOCK = "/v3lockpb.Lock/Lock"

# (code, details as etcd sends them): each must be in the table, for a Put
IN_TABLE = [
    ("UNAVAILABLE", "etcdserver: no leader"),
    ("UNAVAILABLE", "etcdserver: not capable"),
    ("UNAVAILABLE", "etcdserver: rpc not supported for learner"),
    ("RESOURCE_EXHAUSTED", "etcdserver: too many requests"),
    ("UNKNOWN", "raft proposal dropped"),
    ("UNAVAILABLE", "etcdserver: leader changed"),
]

# answers that may have been applied, or that another attempt cannot change
NOT_IN_TABLE = [
    ("UNAVAILABLE", "etcdserver: request timed out"),
    ("UNAVAILABLE", "etcdserver: request timed out, possibly due to previous leader failure"),
    ("UNAVAILABLE", "etcdserver: request timed out, possibly due to connection lost"),
    ("UNAVAILABLE", "etcdserver: server stopped"),
    ("UNKNOWN", "raft: stopped"),
    ("DEADLINE_EXCEEDED", "context deadline exceeded"),
    ("UNKNOWN", "context deadline exceeded"),
    ("INVALID_ARGUMENT", "etcdserver: request is too large"),
    ("RESOURCE_EXHAUSTED", "grpc: received message larger than max (5 vs. 4)"),
    ("RESOURCE_EXHAUSTED", "etcdserver: mvcc: database space exceeded"),
    ("UNAUTHENTICATED", "etcdserver: invalid auth token"),
    ("INVALID_ARGUMENT", "etcdserver: revision of auth store is old"),
    ("PERMISSION_DENIED", "etcdserver: permission denied"),
    ("INVALID_ARGUMENT", "etcdserver: key is not provided"),
    ("INVALID_ARGUMENT", "etcdserver: duplicate key given in txn request"),
    ("UNAVAILABLE", "etcdserver: unhealthy cluster"),
    ("FAILED_PRECONDITION", "etcdserver: not leader"),
    ("UNAVAILABLE", "Socket closed"),
]


@pytest.mark.parametrize(("code", "details"), IN_TABLE)
def test_listed_answers_prove_a_put_unapplied(code: str, details: str) -> None:
    entry = known_unapplied(code, details, PUT)
    assert entry is not None and entry.fragment in details
    # grpc may prefix or wrap the text; the match ignores case
    assert known_unapplied(code, f"rpc error: {details.upper()}", PUT) is entry
    # the code is part of the proof: the same text with another code proves nothing
    other = "INTERNAL" if code != "INTERNAL" else "UNKNOWN"
    assert known_unapplied(other, details, PUT) is None


@pytest.mark.parametrize(("code", "details"), NOT_IN_TABLE)
def test_answers_that_may_have_been_applied_are_not_listed(code: str, details: str) -> None:
    assert known_unapplied(code, details, PUT) is None
    assert known_unapplied(code, details, RANGE) is None


def test_every_entry_is_sourced_and_matched_by_its_own_text() -> None:
    assert len(UNAPPLIED_ANSWERS) == len(IN_TABLE)
    for entry in UNAPPLIED_ANSWERS:
        assert entry.fragment == entry.fragment.lower()
        assert ".go" in entry.source and "etcd" in entry.source
        assert (entry.code, entry.fragment) in IN_TABLE
    assert known_unapplied("UNAVAILABLE", None, PUT) is None
    assert known_unapplied("UNAVAILABLE", "", PUT) is None


def test_scopes_follow_the_producers() -> None:
    # MemberPromote answers "no leader" from waitLeader after forwarded attempts that may
    # have reached the leader: not proof there; the interceptor's answer is for others
    assert known_unapplied("UNAVAILABLE", "etcdserver: no leader", PROMOTE) is None
    assert known_unapplied("UNAVAILABLE", "etcdserver: no leader", LOCK) is not None
    # composite services make several requests through etcd's in-process client: a
    # dropped proposal may follow an applied one
    assert known_unapplied("UNKNOWN", "raft proposal dropped", LOCK) is None
    assert known_unapplied("UNKNOWN", "raft proposal dropped", PROMOTE) is not None
    assert known_unapplied("RESOURCE_EXHAUSTED", "etcdserver: too many requests", LOCK) is None
    # interceptor answers hold for every method, also for a method eagle does not know
    assert known_unapplied("UNAVAILABLE", "etcdserver: not capable", None) is not None
    assert known_unapplied("UNAVAILABLE", "etcdserver: not capable", "/any.S/m") is not None
    # scoped entries need the method
    assert known_unapplied("UNAVAILABLE", "etcdserver: leader changed", None) is None
    assert known_unapplied("UNAVAILABLE", "etcdserver: no leader", None) is None
    scoped = [e for e in UNAPPLIED_ANSWERS if e.methods != ("",)]
    assert scoped and all(e.methods == (ETCD_CORE,) for e in scoped)


# ------------------------------------------------------------------ the call driver
class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


OK = ProbeOutcome(ProbeResult.SERVING, 0.001)


def _balancer() -> tuple[Balancer, Clock]:
    clock = Clock()
    eps = parse_endpoints([f"10.0.0.{i + 1}:2379" for i in range(3)])
    cfg = Config.from_dict({"retry": {"max_attempts": 2}})
    bal = Balancer(eps, cfg, clock=clock, rng=random.Random(3))
    for e in eps:
        bal.on_probe(e.raw, OK)
    return bal, clock


def _fail_until_given_up(
    drv: CallDriver, clock: Clock, failure: AttemptFailure, limit: int = 50
) -> tuple[int, GiveUp | None, bool]:
    """Fail every attempt with ``failure``; return (attempts, give_up, outcome_unknown)."""
    attempts = 0
    for _ in range(limit):
        step = drv.next_step()
        if step.kind is SLEEP:
            clock.t += step.delay
            continue
        assert step.kind is SEND
        attempts += 1
        clock.t += 0.01
        decision = drv.failed(failure)
        if not decision.retry:
            return attempts, decision.give_up, decision.outcome_unknown
    raise AssertionError(f"still retrying after {limit} steps")


@pytest.mark.parametrize(("code", "details"), IN_TABLE)
def test_a_listed_answer_retries_a_write_past_max_attempts(code: str, details: str) -> None:
    bal, clock = _balancer()
    drv = CallDriver(bal, PUT, timeout=2.0, wait_for_ready=False)
    failure = AttemptFailure(code, details, Delivery.ANSWERED)
    attempts, give_up, unknown = _fail_until_given_up(drv, clock, failure)
    # bounded by the deadline and the budget, not by max_attempts (2)
    assert attempts > 2
    assert give_up in (GiveUp.NO_TIME_LEFT, GiveUp.BUDGET)
    assert not unknown and not drv.report().outcome_unknown


def test_an_unlisted_answer_ends_a_write_at_once_with_a_known_outcome() -> None:
    bal, clock = _balancer()
    drv = CallDriver(bal, PUT, timeout=2.0, wait_for_ready=False)
    timed_out = AttemptFailure("UNAVAILABLE", "etcdserver: request timed out", Delivery.ANSWERED)
    attempts, give_up, unknown = _fail_until_given_up(drv, clock, timed_out)
    assert (attempts, give_up) == (1, GiveUp.NOT_IDEMPOTENT)
    assert not unknown  # answered: eagle reports what the server said


def test_no_leader_does_not_retry_member_promote() -> None:
    bal, clock = _balancer()
    drv = CallDriver(bal, PROMOTE, timeout=2.0, wait_for_ready=False)
    no_leader = AttemptFailure("UNAVAILABLE", "etcdserver: no leader", Delivery.ANSWERED)
    attempts, give_up, _ = _fail_until_given_up(drv, clock, no_leader)
    assert (attempts, give_up) == (1, GiveUp.NOT_IDEMPOTENT)
    assert drv.classify(no_leader) is Delivery.ANSWERED
    put = CallDriver(bal, PUT, timeout=2.0, wait_for_ready=False)
    assert put.classify(no_leader) is Delivery.REJECTED
