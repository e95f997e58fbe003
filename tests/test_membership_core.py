"""Membership, sans-IO: verdicts, discovery plans, providers' parsing, the fetch logic,
the resume plan and the metadata merge, all with fake responses."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import grpc
import pytest

import eagle
from eagle.config import Config, MembershipConfig
from eagle.core.balancer import Balancer
from eagle.core.calls import SEND, AttemptFailure, CallDriver, Delivery
from eagle.core.health import ProbeOutcome, ProbeResult
from eagle.core.membership import MemberView, judge_views, judging_config, plan_discovery
from eagle.core.resume import ResumePlan
from eagle.core.status import State
from eagle.endpoints import parse_endpoints
from eagle.errors import EagleRpcError
from eagle.etcdwire.v1 import etcd_pb2
from eagle.membership.v1 import membership_pb2
from eagle.providers import (
    CallResult,
    EagleProvider,
    EtcdProvider,
    MembershipProbe,
    MembershipProvider,
    ProviderCall,
    available_providers,
    call_metadata,
    create_provider,
    register_provider,
)
from eagle.providers.etcd import endpoint_from_url, view_from_etcd
from eagle.resumable import etcd_watch_resume, resumable
from eagle.server import MembershipPublisher, server_options, view_to_proto
from eagle.shell.subchannels import WithMetadata
from eagle.testing.v1 import etcdkv_pb2

CFG = MembershipConfig(provider="eagle")


def view(
    mid: str,
    *,
    leader: str = "a",
    term: int = 5,
    cluster: str = "c",
    quorum: bool = True,
    applied: int = 100,
    members: Sequence[tuple[str, Sequence[str]]] = (),
    errors: tuple[str, ...] = (),
) -> MemberView:
    return MemberView(
        mid,
        cluster,
        leader,
        term,
        quorum,
        applied,
        tuple((m, tuple(e)) for m, e in members),
        errors,
    )


# ------------------------------------------------------------------------ verdicts
def test_healthy_cluster_names_the_leader() -> None:
    views = {"ea": view("a"), "eb": view("b"), "ec": view("c")}
    verdicts, leader = judge_views(views, {}, CFG)
    assert not any(v.partitioned for v in verdicts.values())
    assert leader == "ea"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (view("c", leader=""), "has no leader"),
        (view("c", errors=("etcdserver: no leader",)), "has no leader"),
        (view("c", quorum=False), "has no quorum"),
        (view("c", term=2, leader="b"), "term 2 trails the majority's 5"),
        (view("c", cluster="other"), "cluster id other differs from the majority's c"),
        (view("c", applied=1), "applied index 1 trails the majority's 100"),
    ],
)
def test_cut_off_member_is_partitioned(bad: MemberView, reason: str) -> None:
    cfg = MembershipConfig(provider="eagle", max_applied_lag=10)
    verdicts, leader = judge_views({"ea": view("a"), "eb": view("b"), "ec": bad}, {}, cfg)
    assert verdicts["ec"].partitioned and reason in verdicts["ec"].reason
    assert not verdicts["ea"].partitioned and not verdicts["eb"].partitioned
    assert leader == "ea"


def test_a_follower_of_the_leader_trailing_in_term_gets_one_more_view() -> None:
    # etcd 3.4 reports the term of the last applied entry: just after an election a
    # member that follows the new leader may trail for a moment
    views: dict[str, MemberView | None] = {
        "ea": view("a"),
        "eb": view("b"),
        "ec": view("c", term=2),
    }
    first, _ = judge_views(views, {}, CFG)
    assert not first["ec"].partitioned and first["ec"].term_lag
    assert "judged again" in first["ec"].reason
    second, _ = judge_views(views, {}, CFG, first)  # still trailing at the next view
    assert second["ec"].partitioned and "term 2 trails the majority's 5" in second["ec"].reason
    caught_up, _ = judge_views({**views, "ec": view("c")}, {}, CFG, first)
    assert not caught_up["ec"].partitioned and not caught_up["ec"].term_lag


def test_term_lag_within_threshold_is_trusted() -> None:
    verdicts, _ = judge_views({"ea": view("a"), "eb": view("b"), "ec": view("c", term=4)}, {}, CFG)
    assert not verdicts["ec"].partitioned


def test_no_leader_error_partitions_even_without_a_view() -> None:
    views: dict[str, MemberView | None] = {"ea": view("a"), "eb": view("b"), "ec": None}
    verdicts, _ = judge_views(views, {"ec": "UNAVAILABLE: etcdserver: no leader"}, CFG)
    assert verdicts["ec"].partitioned
    alone, leader = judge_views({"ec": None}, {"ec": "etcdserver: no leader"}, CFG)
    assert alone["ec"].partitioned and leader is None


def test_unfetchable_view_gets_no_verdict() -> None:
    views: dict[str, MemberView | None] = {"ea": view("a"), "eb": view("b"), "ec": None}
    verdicts, leader = judge_views(views, {"ec": "DEADLINE_EXCEEDED"}, CFG)
    assert "ec" not in verdicts and leader == "ea"


def test_no_majority_no_leader() -> None:
    views = {"ea": view("a", leader="a"), "eb": view("b", leader="b"), "ec": None}
    _, leader = judge_views(views, {}, CFG)
    assert leader is None


def test_etcd_specific_thresholds_win_when_set() -> None:
    plain = MembershipConfig(provider="etcd", max_term_lag=3)
    assert judging_config(plain).max_term_lag == 3
    cfg = Config.from_dict(
        {"membership": {"provider": "etcd", "max_term_lag": 3, "etcd": {"max_term_lag": 7}}}
    ).membership
    assert judging_config(cfg).max_term_lag == 7
    eagle_cfg = MembershipConfig(provider="eagle", max_term_lag=3)
    assert judging_config(eagle_cfg) is eagle_cfg


# ----------------------------------------------------------------------- discovery
ALL = (("a", ("h:1",)), ("b", ("h:2",)), ("c", ("h:3",)))


def test_discovery_adds_advertised_members() -> None:
    views: dict[str, MemberView | None] = {"h:1": view("a", members=ALL)}
    ok = judge_views(views, {}, CFG)[0]
    plan = plan_discovery(["h:1"], views, ok, frozenset())
    assert plan.add == ("h:2", "h:3") and not plan.remove
    assert plan.endpoints == ("h:1", "h:2", "h:3")


def test_discovery_knows_aliases_by_member_id() -> None:
    # the user gave "localhost:1" for member a, advertised as "h:1": no duplicate
    views: dict[str, MemberView | None] = {"localhost:1": view("a", members=ALL)}
    ok = judge_views(views, {}, CFG)[0]
    plan = plan_discovery(["localhost:1"], views, ok, frozenset())
    assert plan.add == ("h:2", "h:3")


def test_discovery_removes_members_that_left() -> None:
    two = ALL[:2]
    views: dict[str, MemberView | None] = {
        "h:1": view("a", members=two),
        "h:2": view("b", members=two),
        "h:3": view("c", members=ALL),  # still thinks it is a member
    }
    ok = judge_views(views, {}, CFG)[0]
    plan = plan_discovery(["h:1", "h:2", "h:3"], views, ok, frozenset())
    assert plan.remove == ("h:3",) and not plan.add
    # a discovered endpoint nobody advertises any more goes too, view or not
    views2: dict[str, MemberView | None] = {"h:1": view("a", members=two), "h:9": None}
    plan2 = plan_discovery(["h:1", "h:9"], views2, ok, frozenset({"h:9"}))
    assert plan2.remove == ("h:9",) and plan2.add == ("h:2",)
    # ... but an endpoint the user gave, with no view, stays
    assert plan_discovery(["h:1", "h:9"], views2, ok, frozenset()).remove == ()


def test_discovery_drops_discovered_duplicates_and_never_empties() -> None:
    views: dict[str, MemberView | None] = {
        "h:2": view("b", members=ALL),
        "alias:1": view("a", members=ALL),
        "h:1": view("a", members=ALL),
        "h:3": view("c", members=ALL),
    }
    ok = judge_views(views, {}, CFG)[0]
    plan = plan_discovery(["h:2", "h:1", "alias:1", "h:3"], views, ok, frozenset({"h:1"}))
    assert plan.remove == ("h:1",)
    gone: dict[str, MemberView | None] = {"x:1": view("x", cluster="c", members=(("y", ()),))}
    assert not plan_discovery(["x:1"], gone, judge_views(gone, {}, CFG)[0], frozenset())


def test_discovery_ignores_partitioned_views() -> None:
    lying = view("c", leader="", members=(("c", ("h:3",)), ("z", ("h:26",))))
    views: dict[str, MemberView | None] = {"h:3": lying}
    verdicts = judge_views(views, {}, CFG)[0]
    assert verdicts["h:3"].partitioned
    assert not plan_discovery(["h:3"], views, verdicts, frozenset())


# ----------------------------------------------------------------------- providers
def _status(**kw: Any) -> etcd_pb2.StatusResponse:
    header = etcd_pb2.ResponseHeader(cluster_id=17, member_id=kw.pop("member", 2), raft_term=9)
    return etcd_pb2.StatusResponse(header=header, **kw)


def test_etcd_status_parsing() -> None:
    p = EtcdProvider(MembershipConfig(provider="etcd"))
    (call,) = p.calls()
    assert call.method == "/etcdserverpb.Maintenance/Status"
    assert call.key == ("unary_unary", call.method, call.request_serializer,
                        call.response_deserializer, True)  # fmt: skip
    resp = etcd_pb2.StatusResponse.FromString(
        _status(leader=3, raftTerm=9, raftIndex=50, raftAppliedIndex=48).SerializeToString()
    )
    v, err = p.interpret([CallResult(resp)])
    assert err is None and v is not None
    assert (v.member_id, v.cluster_id, v.leader_id) == ("2", "17", "3")
    assert (v.term, v.applied, v.has_quorum, v.members) == (9, 48, True, ())
    lost, _ = p.interpret([CallResult(_status(leader=0, errors=["etcdserver: no leader"]))])
    assert lost is not None and lost.leader_id == "" and not lost.has_quorum
    verdicts, _ = judge_views({"x": lost}, {}, p.config)
    assert verdicts["x"].partitioned


def test_etcd_errors_and_discovery() -> None:
    p = EtcdProvider(MembershipConfig(provider="etcd", discover=True))
    _status_call, list_call = p.calls()
    assert list_call.method == "/etcdserverpb.Cluster/MemberList"
    members = etcd_pb2.MemberListResponse(
        members=[
            etcd_pb2.Member(ID=2, clientURLs=["http://10.0.0.2:2379"]),
            etcd_pb2.Member(ID=3, clientURLs=["https://[::1]:2379", "unix://run/e.sock"]),
            etcd_pb2.Member(ID=4, clientURLs=[]),  # not started yet
            etcd_pb2.Member(ID=5, clientURLs=["http://10.0.0.5:2379"], isLearner=True),
        ]
    )
    v, err = p.interpret([CallResult(_status(leader=2)), CallResult(members)])
    assert err is None and v is not None
    assert v.members == (("2", ("10.0.0.2:2379",)), ("3", ("[::1]:2379", "unix:run/e.sock")))
    # MemberList failing costs only the member list
    v2, _ = p.interpret([CallResult(_status(leader=2)), CallResult(code="UNAVAILABLE")])
    assert v2 is not None and v2.members == ()
    none, err2 = p.interpret(
        [CallResult(code="UNAVAILABLE", details="etcdserver: no leader"), CallResult(members)]
    )
    assert none is None and err2 is not None and "no leader" in err2
    assert endpoint_from_url("http://h:1") == "h:1" and endpoint_from_url("h:2") == "h:2"
    assert endpoint_from_url("") is None and endpoint_from_url("unix://") is None
    assert view_from_etcd(_status(leader=1, raftIndex=7)).applied == 7


def test_eagle_provider_parsing() -> None:
    p = EagleProvider(CFG)
    (call,) = p.calls()
    assert call.method == "/eagle.membership.v1.Membership/GetView"
    proto = view_to_proto(view("a", members=ALL))
    wire = membership_pb2.View.FromString(proto.SerializeToString())
    v, err = p.interpret([CallResult(wire)])
    assert err is None and v == view("a", members=ALL)
    none, err = p.interpret([CallResult(code="UNIMPLEMENTED", details="Method not found!")])
    assert none is None and err == "GetView UNIMPLEMENTED: Method not found!"


def test_require_leader_metadata() -> None:
    on = Config.from_dict({"membership": {"etcd": {"require_leader": True}}}).membership
    assert call_metadata(on) == (("hasleader", "true"),)
    assert call_metadata(MembershipConfig(provider="etcd")) == ()
    assert call_metadata(MembershipConfig()) == ()


def test_call_result_from_error() -> None:
    r = CallResult.from_error(EagleRpcError(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader"))
    assert (r.code, r.details, r.ok) == ("UNAVAILABLE", "etcdserver: no leader", False)
    assert r.error_text() == "UNAVAILABLE: etcdserver: no leader"
    assert CallResult.from_error(object()).code == "UNKNOWN"


class FixedProvider(MembershipProvider):
    name = "fixed-test"
    call = ProviderCall("/x.Y/Z", bytes, bytes, b"")

    def calls(self) -> Sequence[ProviderCall]:
        return (self.call, self.call)

    def interpret(self, results: Sequence[CallResult]) -> tuple[MemberView | None, str | None]:
        if not all(r.ok for r in results):
            return None, "; ".join(r.error_text() for r in results)
        return view(results[0].response, leader=results[1].response), None


def test_registry_and_custom_provider_in_config() -> None:
    with pytest.raises(ValueError, match="membership: must be null"):
        Config.from_dict({"membership": "registry-test"})
    register_provider("registry-test", FixedProvider)
    assert {"eagle", "etcd", "registry-test"} <= set(available_providers())
    cfg = Config.from_dict({"membership": "registry-test"})
    assert isinstance(create_provider(cfg.membership), FixedProvider)
    register_provider("registry-test", FixedProvider)  # the same factory again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_provider("registry-test", EagleProvider)
    assert create_provider(MembershipConfig()) is None


# ------------------------------------------------------------- fetch -> balancer
def _balancer(provider: str = "fixed-test", discover: bool = False) -> tuple[Balancer, list[str]]:
    register_provider("fixed-test", FixedProvider, replace=True)
    eps = parse_endpoints(["h:1", "h:2", "h:3"])
    cfg = Config.from_dict({"membership": {"provider": provider, "discover": discover}})
    bal = Balancer(eps, cfg, rng=random.Random(1))
    for e in eps:
        bal.on_probe(e.raw, ProbeOutcome(ProbeResult.SERVING, 0.001))
    return bal, [e.raw for e in eps]


def test_fetch_completes_in_any_order_and_once() -> None:
    bal, eps = _balancer()
    probe = MembershipProbe.for_balancer(bal)
    assert probe is not None and probe.timeout == 0.5
    fetches = {}
    for ep, mid in zip(eps, "abc", strict=True):
        f = probe.begin(ep)
        assert f is not None and len(f.calls) == 2
        assert probe.begin(ep) is None  # one fetch per member at a time
        fetches[ep] = (f, mid)
    for f, mid in fetches.values():
        f.succeeded(1, "a")  # second call first
        f.succeeded(1, "zzz")  # duplicate: ignored
        f.succeeded(0, mid)
    assert bal.leader == "h:1"
    assert all(s.state is State.SERVING for s in bal.snapshot().values())
    # m3 loses its leader
    f3 = probe.begin("h:3")
    assert f3 is not None
    f3.succeeded(0, "c")
    f3.succeeded(1, "")
    st = bal.snapshot()["h:3"]
    assert st.state is State.PARTITIONED and "has no leader" in (st.last_error or "")
    # then its view cannot be fetched: health alone judges it again
    f3 = probe.begin("h:3")
    assert f3 is not None
    f3.failed(0, "DEADLINE_EXCEEDED", "Deadline Exceeded")
    f3.failed(1, "DEADLINE_EXCEEDED", "Deadline Exceeded")
    assert bal.snapshot()["h:3"].state is State.SERVING
    # an error that says "no leader" is a verdict, and it sticks while others report
    f3 = probe.begin("h:3")
    assert f3 is not None
    f3.failed(0, "UNAVAILABLE", "etcdserver: no leader")
    f3.succeeded(1, "")
    f1 = probe.begin("h:1")
    assert f1 is not None
    f1.succeeded(0, "a")
    f1.succeeded(1, "a")
    assert bal.snapshot()["h:3"].state is State.PARTITIONED
    probe.close()
    assert probe.begin("h:1") is None


def test_probe_discovery_plan() -> None:
    register_provider("fixed-test", FixedProvider, replace=True)
    bal, _eps = _balancer("eagle", discover=True)
    probe = MembershipProbe.for_balancer(bal)
    assert probe is not None
    assert probe.discovery() is None  # nothing fetched yet
    members = (("a", ("h:1",)), ("b", ("h:2",)), ("c", ("h:3",)), ("d", ("h:4",)))
    f = probe.begin("h:1")
    assert f is not None
    f.succeeded(0, view_to_proto(view("a", members=members)))
    plan = probe.discovery()
    assert plan is not None and plan.add == ("h:4",)
    assert probe.discovered == {"h:4"}
    assert probe.discovery() is None  # nothing new since


# -------------------------------------------------------------------------- resume
def test_resume_plan_moves_past_delivered_messages() -> None:
    plan: ResumePlan[int, int] = ResumePlan(0, lambda req, msg: msg + 1, rng=random.Random(3))
    plan.delivered(4)
    assert plan.request == 5
    assert plan.on_error("UNAVAILABLE") == 0.0  # first re-open after progress: at once
    d2 = plan.on_error("unavailable")
    assert d2 is not None and 0.04 <= d2 <= 0.06
    assert plan.on_error("INVALID_ARGUMENT") is None
    plan.delivered(7)
    assert plan.failures == 0 and plan.request == 8 and plan.resumes == 2
    few: ResumePlan[int, int] = ResumePlan(0, lambda r, m: r, max_failures=2)
    assert few.on_error("UNAVAILABLE") is not None
    assert few.on_error("UNAVAILABLE") is not None
    assert few.on_error("UNAVAILABLE") is None
    with pytest.raises(ValueError):
        ResumePlan(0, lambda r, m: r, max_failures=0)


def _watch_resp(**kw: Any) -> etcdkv_pb2.WatchResponse:
    return etcdkv_pb2.WatchResponse(**kw)


def test_etcd_watch_resume() -> None:
    req = etcdkv_pb2.WatchRequest(create_request=etcdkv_pb2.WatchCreateRequest(key=b"k"))
    created = _watch_resp(created=True, header=etcdkv_pb2.EtcdResponseHeader(revision=41))
    after_created = etcd_watch_resume(req, created)
    assert after_created.create_request.start_revision == 42
    assert after_created.create_request.key == b"k" and req.create_request.start_revision == 0
    ev = _watch_resp(
        events=[
            etcdkv_pb2.Event(kv=etcdkv_pb2.KeyValue(key=b"k", mod_revision=50)),
            etcdkv_pb2.Event(kv=etcdkv_pb2.KeyValue(key=b"k", mod_revision=51)),
        ]
    )
    assert etcd_watch_resume(after_created, ev).create_request.start_revision == 52
    # a later "created" (the re-opened watch) does not move an explicit start back
    again = etcd_watch_resume(etcd_watch_resume(after_created, ev), created)
    assert again.create_request.start_revision == 52
    with pytest.raises(RuntimeError, match="compacted"):
        etcd_watch_resume(req, _watch_resp(canceled=True, cancel_reason="compacted"))


class FakeStream:
    """What open_stream returns: an iterator that fails after its items."""

    def __init__(self, items: list[int], code: grpc.StatusCode | None) -> None:
        self._items = iter(items)
        self._code = code
        self.cancelled = False

    def __iter__(self) -> FakeStream:
        return self

    def __next__(self) -> int:
        for item in self._items:
            return item
        if self._code is None:
            raise StopIteration
        raise EagleRpcError(self._code, "eagle: member x left rotation")

    def cancel(self) -> None:
        self.cancelled = True


def test_sync_resumable_over_fake_streams() -> None:
    opened: list[int] = []
    scripts = [([1, 2], grpc.StatusCode.UNAVAILABLE), ([], grpc.StatusCode.UNAVAILABLE),
               ([3, 4], None)]  # fmt: skip
    resumed: list[int] = []

    def open_stream(start: int) -> FakeStream:
        opened.append(start)
        items, code = scripts[len(opened) - 1]
        return FakeStream(items, code)

    stream = resumable(
        open_stream, 1, lambda req, msg: msg + 1, on_resume=lambda err, req: resumed.append(req)
    )
    assert list(stream) == [1, 2, 3, 4]
    assert opened == [1, 3, 3] and resumed == [3, 3] and stream.resumes == 2
    bad = resumable(lambda r: FakeStream([], grpc.StatusCode.PERMISSION_DENIED), 0, lambda r, m: r)
    with pytest.raises(grpc.RpcError):
        next(bad)


# ------------------------------------------------------------------ metadata merge
class RecordingCallable:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        self.calls.append((args, kwargs))
        return "ok"

    future = with_call = __call__


def test_metadata_merge_sync_and_aio_styles() -> None:
    rec = RecordingCallable()
    mc = WithMetadata(rec, (("hasleader", "true"),))
    mc("req", 1.0, None, None, None, None)  # sync style
    mc.future("req", 1.0, (("a", "1"),))
    mc.with_call("req", 1.0, [("hasleader", "false")])  # the caller's own value stays
    mc("req", timeout=1.0, metadata=grpc.aio.Metadata(("b", "2")))  # aio style
    mc("req")
    assert rec.calls[0][0][2] == (("hasleader", "true"),)
    assert rec.calls[1][0][2] == (("a", "1"), ("hasleader", "true"))
    assert rec.calls[2][0][2] == (("hasleader", "false"),)
    assert rec.calls[3][1]["metadata"] == (("b", "2"), ("hasleader", "true"))
    assert rec.calls[4][1]["metadata"] == (("hasleader", "true"),)


# -------------------------------------------------------------------- server side
def test_server_options_and_publisher() -> None:
    opts = dict(server_options())
    assert opts["grpc.keepalive_permit_without_calls"] == 1
    assert opts["grpc.http2.max_ping_strikes"] == 0
    assert opts["grpc.http2.min_ping_interval_without_data_ms"] == 100
    pub = MembershipPublisher("a", "c", leader_id="a", term=1, members={"a": ["h:1"]})
    seen: list[MemberView | None] = []
    pub.subscribe(seen.append)
    v0 = pub.version
    assert pub.set_view(term=1) == pub.view and pub.version == v0  # no change, no event
    pub.set_view(leader_id="", members=[("a", ["h:1"]), ("b", ["h:2"])])
    assert pub.version == v0 + 1 and pub.view.members[1] == ("b", ("h:2",))
    assert pub.wait_for_change(v0, 0.01) == (v0 + 1, pub.view)
    with pytest.raises(ValueError):
        pub.set_view(nonsense=1)
    assert pub.serving()
    pub.set_serving(False)
    assert not pub.serving()
    pub.close()
    assert pub.closed and seen[-1] is None and len(seen) == 2


def test_channel_rejects_unknown_provider_by_key() -> None:
    with pytest.raises(ValueError, match=r"membership: must be null, 'eagle', 'etcd'"):
        eagle.insecure_channel("127.0.0.1:1", config={"membership": "zookeeper"})


def test_answer_racing_the_per_try_deadline_counts_as_a_timeout() -> None:
    # etcd answers its own expired deadline with UNKNOWN "context deadline exceeded"
    cfg = {"retry": {"per_try_timeout": 0.5, "idempotent_methods": ["/etcdserverpb.KV/Range"]}}
    eps = parse_endpoints(["h:1", "h:2"])
    clock = [100.0]
    bal = Balancer(eps, Config.from_dict(cfg), rng=random.Random(2), clock=lambda: clock[0])
    drv = CallDriver(bal, "/etcdserverpb.KV/Range", 5.0, None)
    step = drv.next_step()
    assert step.kind is SEND and step.timeout == 0.5
    clock[0] = 100.5
    raced = AttemptFailure("UNKNOWN", "context deadline exceeded", Delivery.ANSWERED)
    assert drv.failed(raced).retry
    clock[0] = 100.6
    step = drv.next_step()
    step = drv.next_step() if step.kind is not SEND else step
    assert step.kind is SEND
    # an UNKNOWN well before the per-try deadline is not a timeout: not retried
    clock[0] = 100.7
    assert not drv.failed(AttemptFailure("UNKNOWN", "boom", Delivery.ANSWERED)).retry
