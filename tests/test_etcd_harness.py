"""The real etcd cluster harness (eagle.testing.etcd): members, KV/Watch helpers, partitions.

Needs root, etcd (Debian etcd-server) and iptables; skipped, with the reason, otherwise.
Timings measured here (etcd 3.4.23, heartbeat 100 ms, election timeout 1000 ms, pre-vote on):
a partitioned follower reports ``leader == 0`` with ``errors == ["etcdserver: no leader"]``
about 1.6 s after ``partition()``; a ``hasleader`` watch on it ends with UNAVAILABLE
"etcdserver: no leader" about 3.8 s after; once healed it has a leader again within ~0.6 s.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eagle.testing.etcd import (
    CHAIN_IN,
    CHAIN_OUT,
    EtcdCluster,
    cleanup_iptables,
    etcd_unavailable_reason,
    get,
    member_list,
    put,
    status,
    watch,
)

_REASON = etcd_unavailable_reason()
pytestmark = [
    pytest.mark.etcd,
    pytest.mark.skipif(_REASON is not None, reason=f"etcd harness unavailable: {_REASON}"),
]


def _iptables_rules() -> str:
    return subprocess.run(
        ["iptables", "-w", "5", "-S"], capture_output=True, text=True, check=True
    ).stdout


def _assert_no_eagle_chains() -> None:
    rules = _iptables_rules()
    assert "EAGLE" not in rules, rules


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"  # a zombie is not running
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    c = EtcdCluster(3)
    pids = [m.pid for m in c.members]
    try:
        yield c
    finally:
        c.close()
    assert not [p for p in pids if p is not None and _pid_alive(p)]
    _assert_no_eagle_chains()


@pytest.fixture(scope="module")
def channels(cluster: EtcdCluster) -> Iterator[list[grpc.Channel]]:
    chs = [grpc.insecure_channel(e) for e in cluster.endpoints]
    yield chs
    for ch in chs:
        ch.close()


def _wait_for(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    """Poll ``pred()`` until true; return the seconds it took. Fails the test on timeout."""
    t0 = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


def test_members_run_as_their_own_users(cluster: EtcdCluster, channels: list[grpc.Channel]) -> None:
    members = cluster.members
    assert len(members) == 3
    assert len({m.user for m in members}) == 3
    assert len({m.uid for m in members}) == 3
    assert cluster.endpoints == [f"127.0.0.1:{m.client_port}" for m in members]
    for m in members:
        assert m.pid is not None
        # the PID we keep is etcd itself, running as the member's user
        with open(f"/proc/{m.pid}/comm") as f:
            assert f.read().strip() == "etcd"
        with open(f"/proc/{m.pid}/status") as f:
            uid_line = next(line for line in f if line.startswith("Uid:"))
        assert [int(x) for x in uid_line.split()[1:]] == [m.uid] * 4
        assert os.stat(m.data_dir).st_uid == m.uid
        assert m.member_id
    listed = member_list(channels[0])
    assert {(x.name, x.ID) for x in listed.members} == {(m.name, m.member_id) for m in members}
    assert all(
        x.clientURLs == [m.client_url] for m in members for x in listed.members if x.name == m.name
    )


def test_put_get_through_every_member(cluster: EtcdCluster, channels: list[grpc.Channel]) -> None:
    for i, writer in enumerate(channels):
        rev = put(writer, f"harness/k{i}", f"v{i}")
        for reader in channels:
            assert get(reader, f"harness/k{i}") == (f"v{i}".encode(), rev)
    assert get(channels[0], "harness/missing") == (None, 0)


def test_etcd_answers_grpc_health(cluster: EtcdCluster, channels: list[grpc.Channel]) -> None:
    # etcd 3.4 does serve grpc.health.v1: Check("") is SERVING, an unknown service is NOT_FOUND.
    # (It stays SERVING on a partitioned member; see test_partition_follower.)
    stub = health_pb2_grpc.HealthStub(channels[0])
    resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(health_pb2.HealthCheckRequest(service="etcdserverpb.KV"), timeout=2)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_watch_sees_put_through_another_member(
    cluster: EtcdCluster, channels: list[grpc.Channel]
) -> None:
    call, events = watch(channels[0], "harness/watched")
    got: list[tuple[bytes, bytes, int]] = []
    done = threading.Event()

    def consume() -> None:
        try:
            for ev in events:
                got.append((bytes(ev.kv.key), bytes(ev.kv.value), ev.kv.mod_revision))
                done.set()
        except grpc.RpcError:
            pass

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    try:
        # the watch is created asynchronously: keep putting until an event shows up
        deadline = time.monotonic() + 5
        rev = 0
        while not done.is_set() and time.monotonic() < deadline:
            rev = put(channels[1], "harness/watched", "hello")
            done.wait(0.3)
        assert done.is_set(), "no watch event within 5 s"
        key, value, mod_rev = got[0]
        assert (key, value) == (b"harness/watched", b"hello")
        assert 0 < mod_rev <= rev
    finally:
        call.cancel()
        t.join(5)
    # replay from a revision: the same event comes back
    call2, events2 = watch(channels[2], "harness/watched", start_revision=got[0][2])
    try:
        first = next(events2)
        assert (bytes(first.kv.value), first.kv.mod_revision) == (b"hello", got[0][2])
    finally:
        call2.cancel()


def test_partition_follower(cluster: EtcdCluster, channels: list[grpc.Channel]) -> None:
    f = cluster.followers()[0]
    other = next(i for i in range(3) if i != f)
    cut, ok = channels[f], channels[other]
    rev0 = put(ok, "harness/p", "before")
    _wait_for(lambda: get(cut, "harness/p", serializable=True)[0] == b"before", 5)

    # a watch that asks for a leader (clientv3's WithRequireLeader) on the member to be cut
    hl_call, hl_events = watch(cut, "harness/p", metadata=[("hasleader", "true")])
    hl_end: list[tuple[grpc.StatusCode, str, float]] = []

    def consume() -> None:
        try:
            for _ in hl_events:
                pass
        except grpc.RpcError as e:
            hl_end.append((e.code(), e.details() or "", time.monotonic()))

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()

    t0 = time.monotonic()
    cluster.partition(f)
    try:
        rules = _iptables_rules()
        assert f"-A INPUT -j {CHAIN_IN}" in rules and f"-A OUTPUT -j {CHAIN_OUT}" in rules
        assert cluster.members[f].partitioned

        # the cut member notices within ~2 s (measured ~1.6 s): leader 0 + "no leader"
        took = _wait_for(lambda: status(cut, timeout=1).leader == 0, 5)
        st = status(cut, timeout=1)
        assert st.leader == 0 and "etcdserver: no leader" in list(st.errors)
        print(f"\npartitioned follower m{f} reported leader 0 after {took:.2f} s")
        # ...while grpc.health.v1 still says SERVING: health alone cannot see a partition
        health = health_pb2_grpc.HealthStub(cut).Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        # the majority side still has a leader and takes writes
        rev1 = put(ok, "harness/p", "during", timeout=5)
        assert rev1 > rev0
        # the cut member's linearizable read hangs until the deadline...
        t_get = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            get(cut, "harness/p", timeout=1.0)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t_get >= 0.9
        # ...its serializable read is stale: raft traffic really is cut both ways
        assert get(cut, "harness/p", serializable=True) == (b"before", rev0)

        # the hasleader watch is ended by etcd (measured ~3.8 s after the cut)
        consumer.join(10)
        assert hl_end, "hasleader watch still open 10 s after the partition"
        code, details, ended = hl_end[0]
        assert code == grpc.StatusCode.UNAVAILABLE and "no leader" in details
        print(f"hasleader watch ended {ended - t0:.2f} s after partition(): {details}")
    finally:
        hl_call.cancel()
        cluster.heal(f)
    assert not cluster.members[f].partitioned
    _assert_no_eagle_chains()  # heal removed the rules, and the now-empty chains

    t1 = time.monotonic()
    back = _wait_for(lambda: status(cut, timeout=1).leader != 0, 10)
    assert get(cut, "harness/p", timeout=5) == (b"during", rev1)
    print(f"healed m{f}: leader back after {back:.2f} s, caught up {time.monotonic() - t1:.2f} s")
    cluster.wait_healthy(timeout=10)


def test_stop_cont_kill_restart(cluster: EtcdCluster, channels: list[grpc.Channel]) -> None:
    f = cluster.followers()[0]
    other = next(i for i in range(3) if i != f)
    cluster.stop(f)
    try:
        assert cluster.members[f].stopped
        with pytest.raises(grpc.RpcError) as err:
            status(channels[f], timeout=0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        cluster.cont(f)
    assert status(channels[f], timeout=2).leader != 0

    old_pid = cluster.members[f].pid
    cluster.kill(f)
    assert cluster.members[f].pid is None
    assert old_pid is not None and not _pid_alive(old_pid)
    rev = put(channels[other], "harness/r", "while-down")
    cluster.restart(f)  # same ports and data dir; waits for a leader
    assert cluster.members[f].pid not in (None, old_pid)
    assert get(channels[f], "harness/r", timeout=5) == (b"while-down", rev)


def test_close_cleans_up_after_a_failure() -> None:
    pids: list[int | None] = []
    data_dirs: list[str] = []
    cluster = EtcdCluster(size=1)
    with pytest.raises(RuntimeError, match="boom"), cluster as c:
        c.partition(0)
        pids = [m.pid for m in c.members]
        data_dirs = [m.data_dir for m in c.members]
        assert CHAIN_IN in _iptables_rules()
        raise RuntimeError("boom")
    cluster.close()  # idempotent
    assert pids and not [p for p in pids if p is not None and _pid_alive(p)]
    assert not any(os.path.exists(d) for d in data_dirs)
    _assert_no_eagle_chains()


def test_cleanup_iptables_removes_leftovers() -> None:
    # what a crashed run leaves behind: the chains, a rule, the jumps
    for chain, parent in ((CHAIN_IN, "INPUT"), (CHAIN_OUT, "OUTPUT")):
        subprocess.run(["iptables", "-w", "5", "-N", chain], check=False, capture_output=True)
        subprocess.run(["iptables", "-w", "5", "-I", parent, "-j", chain], check=True)
    subprocess.run(
        ["iptables", "-w", "5", "-A", CHAIN_IN, "-i", "lo", "-p", "tcp", "--dport", "9"],
        check=True,
    )
    try:
        assert cleanup_iptables() is True
        _assert_no_eagle_chains()
        assert cleanup_iptables() is False
    finally:
        cleanup_iptables()
