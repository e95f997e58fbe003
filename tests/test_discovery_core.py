"""The sans-IO half of discovery (eagle.core.discovery): targets, the re-resolution
schedule, keep-last-good, and etcd's naming format. No sockets: a fake clock."""

from __future__ import annotations

import json
import logging

import pytest

from eagle.core.discovery import (
    MemberSet,
    NamingTable,
    Resolution,
    ResolveSchedule,
    naming_value,
    parse_naming_value,
    parse_target,
    prefix_range_end,
)

SCHEMES = ("dns", "etcd")


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_parse_target() -> None:
    t = parse_target("dns:///pods.svc:50051", SCHEMES)
    assert t is not None and (t.scheme, t.authority, t.name) == ("dns", "", "pods.svc:50051")
    t = parse_target("dns://127.0.0.1:5353/pods.svc:1", SCHEMES)
    assert t is not None and (t.authority, t.name) == ("127.0.0.1:5353", "pods.svc:1")
    t = parse_target("dns:pods:1", SCHEMES)
    assert t is not None and t.name == "pods:1"
    t = parse_target("etcd:///foo/bar/svc", SCHEMES)
    assert t is not None and t.name == "foo/bar/svc"
    t = parse_target("etcd://10.0.0.1:2379,10.0.0.2:2379/svc", SCHEMES)
    assert t is not None and t.authority == "10.0.0.1:2379,10.0.0.2:2379"
    # endpoint lists are not targets
    for text in ("10.0.0.1:50051", "a:1,b:2", "localhost:2379", "unix:/tmp/s"):
        assert parse_target(text, SCHEMES) is None
    for bad in ("dns:///", "dns://x", "dns:/// a:1"):
        with pytest.raises(ValueError, match="bad target"):
            parse_target(bad, SCHEMES)


def test_schedule_period_min_interval_and_early_requests() -> None:
    clock = Clock()
    s = ResolveSchedule(period=30.0, min_interval=5.0, clock=clock)
    assert s.wait_time() == 0.0  # the first resolution at once
    s.start()
    assert s.request() is False  # one is running
    assert s.finished(ok=True) == 130.0
    clock.t = 101.0
    assert s.request() is True  # a member failed: due at the minimum interval
    assert s.due_at == 105.0
    assert s.request() is False  # already as early as allowed
    clock.t = 105.0
    s.start()
    assert s.finished(ok=True, ttl=2.0) == 110.0  # TTL 2 s, but not before min_interval
    clock.t = 110.0
    s.start()
    assert s.finished(ok=True, ttl=20.0) == 130.0  # the TTL when shorter than the period


def test_schedule_backoff_after_failures() -> None:
    clock = Clock()
    s = ResolveSchedule(period=10.0, min_interval=0.0, clock=clock)
    waits = []
    for _ in range(8):
        s.start()
        waits.append(round(s.finished(ok=False) - clock.t, 3))
        clock.t = s.due_at
    assert waits[:4] == [1.0, 1.6, 2.56, 4.096]  # gRPC's connection backoff
    assert max(waits) == 10.0  # capped at the period
    s.start()
    assert s.finished(ok=True) - clock.t == 10.0
    s.start()
    assert s.finished(ok=False) - clock.t == 1.0  # reset by the success
    with pytest.raises(ValueError):
        ResolveSchedule(period=1.0, min_interval=2.0)


def test_member_set_keeps_the_last_good(caplog: pytest.LogCaptureFixture) -> None:
    ms = MemberSet("dns", "pods:1", clock=Clock())
    change = ms.offer(Resolution(("10.0.0.1:1", "10.0.0.2:1")))
    assert change is not None and change.added == ("10.0.0.1:1", "10.0.0.2:1")
    caplog.set_level(logging.WARNING, logger="eagle.discovery")
    assert ms.offer(Resolution.failed("SERVFAIL")) is None
    assert ms.offer(Resolution.failed("SERVFAIL")) is None
    assert ms.offer(Resolution(())) is None  # empty: keep, too
    assert ms.endpoints == ("10.0.0.1:1", "10.0.0.2:1")
    st = ms.status()
    assert st.failures == 3 and st.last_error == "empty answer (no addresses)"
    assert len([r for r in caplog.records if "SERVFAIL" in r.getMessage()]) == 1
    change = ms.offer(Resolution(("10.0.0.2:1", "10.0.0.3:1"), {"10.0.0.3:1": {"z": 1}}))
    assert change is not None
    assert (change.added, change.removed) == (("10.0.0.3:1",), ("10.0.0.1:1",))
    assert ms.metadata == {"10.0.0.3:1": {"z": 1}} and ms.status().last_error is None
    assert ms.offer(Resolution(("10.0.0.3:1", "10.0.0.2:1"))) is None  # order only


def test_naming_values() -> None:
    assert naming_value("h:1") == b'{"Op":0,"Addr":"h:1"}'
    assert json.loads(naming_value("h:1", {"a": 1})) == {
        "Op": 0,
        "Addr": "h:1",
        "Metadata": {"a": 1},
    }
    assert parse_naming_value(b'{"Op":0,"Addr":"10.0.0.7:50051","Metadata":"x"}').metadata == "x"
    assert parse_naming_value(b'{"Addr":"10.0.0.7:50051"}').addr == "10.0.0.7:50051"
    for bad in (b"nope", b"[1]", b'{"Op":0}', b'{"Addr":""}', b'{"Addr":"no-port"}'):
        with pytest.raises(ValueError):
            parse_naming_value(bad)


def test_naming_table_prefix_events_and_duplicates(caplog: pytest.LogCaptureFixture) -> None:
    t = NamingTable("foo")
    assert (t.prefix, t.range_end) == (b"foo/", b"foo0")
    assert prefix_range_end(b"a\xff") == b"b" and prefix_range_end(b"\xff") == b"\x00"
    caplog.set_level(logging.WARNING, logger="eagle.discovery")
    t.reset(
        [
            (b"foo/a", naming_value("10.0.0.1:1"), 2),
            (b"foo/b", naming_value("10.0.0.2:1"), 3),
            (b"foo/c", b"junk", 4),
            (b"foo_other/x", naming_value("10.0.0.9:1"), 5),  # etcd issue 15022
        ],
        revision=5,
    )
    assert t.resolution().endpoints == ("10.0.0.1:1", "10.0.0.2:1")
    t.reset([(b"foo/c", b"junk", 4)], revision=6)  # listed again: no second warning
    assert t.skipped == 1 and len(caplog.records) == 1
    t.reset([(b"foo/a", naming_value("10.0.0.1:1"), 2)], revision=6)
    t.apply(
        [
            (True, b"foo/b", naming_value("10.0.0.1:1"), 7),  # same address, second key
            (True, b"foo/d", naming_value("10.0.0.4:1", {"w": 2}), 8),
            (False, b"foo/a", b"", 9),
        ]
    )
    res = t.resolution()
    assert res.endpoints == ("10.0.0.1:1", "10.0.0.4:1")  # 10.0.0.1 still has foo/b
    assert res.metadata["10.0.0.4:1"] == {"w": 2} and t.revision == 9
    t.apply([(False, b"foo/b", b"", 10)])
    assert t.resolution().endpoints == ("10.0.0.4:1",)
    with pytest.raises(ValueError):
        NamingTable("/")
