"""Subsetting in the channels, against real servers: only the subset's members get
connections, probes and calls; a member that dies is replaced; membership changes move
as few members as the algorithm allows."""

from __future__ import annotations

import asyncio
import time

import grpc
from _support import wait_until

import eagle
import eagle.aio
from eagle.testing.cluster import LocalCluster
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

UNARY = "/eagle.testing.v1.Echo/Unary"
CONFIG: dict[str, object] = {
    "subset": {"mode": "random", "size": 3, "seed": 7},
    "health": {"interval": 0.2, "timeout": 0.5, "no_traffic_interval": None},
    "retry": {"idempotent_methods": [UNARY]},
}


def connections_to(port: int) -> int:
    """Established TCP connections whose remote end is ``port`` on this machine (the
    client's side of a connection to a member listening there)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    remote, state = parts[2], parts[3]
                    if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                        count += 1
        except FileNotFoundError:
            continue
    return count


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def _subset_members(ch: eagle.Channel | eagle.aio.Channel) -> tuple[str, ...]:
    sub = ch.balancer.subset
    assert sub is not None
    return sub.members


def test_only_subset_members_get_connections_probes_and_calls() -> None:
    with LocalCluster(6) as cluster, eagle.insecure_channel(cluster.endpoints, config=CONFIG) as ch:
        members = _subset_members(ch)
        assert len(members) == 3
        wait_until(lambda: all(ch.status()[m].serving for m in members), 10, "subset SERVING")
        for i in range(6):
            cluster.reset(i)
        stub = echo_pb2_grpc.EchoStub(ch)
        served = {
            stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5).server for _ in range(30)
        }
        names = {f"m{cluster.endpoints.index(m)}" for m in members}
        assert served == names
        outside = [e for e in cluster.endpoints if e not in members]
        for e in outside:
            i = cluster.endpoints.index(e)
            assert cluster.stats(i).calls == 0
            # the harness's own Control channel (reset, stats) to that port closes
            # asynchronously; a connection of eagle's would stay
            wait_until(
                lambda e=e: connections_to(_port(e)) == 0, 3, f"no connection to {e} (outside)"
            )
            st = ch.status()[e]
            assert st.state is eagle.State.UNKNOWN and st.last_probe is None
            assert st.subset == "outside subset"
        for m in members:
            assert connections_to(_port(m)) >= 1
            assert ch.status()[m].subset is not None and "random subset rank" in (
                ch.status()[m].subset or ""
            )


def test_a_dead_subset_member_is_replaced_and_calls_go_on() -> None:
    with LocalCluster(6) as cluster, eagle.insecure_channel(cluster.endpoints, config=CONFIG) as ch:
        members = _subset_members(ch)
        wait_until(lambda: all(ch.status()[m].serving for m in members), 10, "subset SERVING")
        victim = members[0]
        cluster.kill(cluster.endpoints.index(victim))
        stub = echo_pb2_grpc.EchoStub(ch)
        failed = 0
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            try:
                stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
            except grpc.RpcError:
                failed += 1
        assert failed == 0
        now = _subset_members(ch)
        assert victim not in now and len(now) == 3
        wait_until(lambda: all(ch.status()[m].serving for m in _subset_members(ch)), 10, "SERVING")
        replacement = next(m for m in _subset_members(ch) if m not in members)
        assert ch.status()[replacement].subset == f"replaces {victim} (UNREACHABLE)"
        assert "replaced by" in (ch.status()[victim].subset or "")


def test_membership_changes_move_at_most_one_subset_member() -> None:
    with LocalCluster(6) as cluster:
        eps = cluster.endpoints
        with eagle.insecure_channel(eps[:5], config=CONFIG) as ch:
            before = set(_subset_members(ch))
            ch.update_endpoints(eps)  # one member added
            added = set(_subset_members(ch))
            assert len(added - before) <= 1
            gone = next(e for e in eps if e not in added)
            ch.update_endpoints([e for e in eps if e != gone])  # one outside member removed
            assert set(_subset_members(ch)) == added
            inside = next(iter(added))
            ch.update_endpoints([e for e in eps if e not in (gone, inside)])  # a subset member
            after = set(_subset_members(ch))
            assert len(added - after) == 1 and len(after) == 3
            wait_until(lambda: all(ch.status()[m].serving for m in after), 10, "SERVING")
            stub = echo_pb2_grpc.EchoStub(ch)
            served = {stub.Unary(echo_pb2.EchoRequest(), timeout=5).server for _ in range(24)}
            assert served == {f"m{eps.index(m)}" for m in after}


def test_aio_only_subset_members_get_calls() -> None:
    async def main(cluster: LocalCluster) -> None:
        async with eagle.aio.insecure_channel(cluster.endpoints, config=CONFIG) as ch:
            members = _subset_members(ch)
            deadline = time.monotonic() + 10
            while not all(ch.status()[m].serving for m in members):
                assert time.monotonic() < deadline, "subset never SERVING"
                await asyncio.sleep(0.02)
            stub = echo_pb2_grpc.EchoStub(ch)
            served = {
                (await stub.Unary(echo_pb2.EchoRequest(), timeout=5)).server for _ in range(24)
            }
            assert served == {f"m{cluster.endpoints.index(m)}" for m in members}
            assert connections_to(_port(members[0])) >= 1  # the count sees connections
            for e in cluster.endpoints:
                if e not in members:
                    assert connections_to(_port(e)) == 0

    with LocalCluster(6) as cluster:
        asyncio.run(main(cluster))


def test_replaced_members_take_no_calls_even_when_most_probed_members_are_out() -> None:
    """Three of six members drained, the first three of a subset of 2's order: the subset
    is the next two, and the drained ones stay probed (to come back). They must not count
    as candidates: with them, 2 SERVING of 5 probed is below the panic threshold, and a
    picker in panic spreads calls over NOT_SERVING members too."""
    with LocalCluster(6) as cluster:
        eps = cluster.endpoints
        cfg = {
            "subset": {"mode": "random", "size": 2, "seed": 11},
            "health": {"interval": 0.2, "timeout": 0.4, "no_traffic_interval": None},
        }
        with eagle.insecure_channel(eps, config=cfg) as ch:
            plan = ch.balancer._plan
            assert plan is not None
            order = plan.ranking(eps).order
            drained = list(order[:3])
            stub = echo_pb2_grpc.EchoStub(ch)
            wait_until(lambda: all(ch.status()[m].serving for m in ch.balancer.in_use), 10, "up")
            for ep in drained:
                cluster.drain(eps.index(ep))
            wait_until(
                lambda: all(ch.status()[ep].state is eagle.State.NOT_SERVING for ep in drained),
                10,
                "the drained members out",
            )
            wait_until(lambda: all(ch.status()[ep].serving for ep in order[3:5]), 10, "replaced")
            assert set(_subset_members(ch)) == set(order[3:5])
            assert set(drained) <= ch.balancer.in_use  # still probed, to come back
            served = []
            for _ in range(30):
                _, call = stub.Unary.with_call(echo_pb2.EchoRequest(), timeout=2)
                served.append(eagle.call_info(call).endpoint)
            assert set(served) == set(order[3:5])
