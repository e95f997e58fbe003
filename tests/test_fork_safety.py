"""The test harnesses never make CPython fork() a process that runs gRPC threads.

A ``Popen`` with ``user=``/``group=``/``extra_groups=``/``preexec_fn`` makes CPython fork()
instead of vfork(); a forked child of a process whose threads are inside gRPC can die before
exec (SIGSEGV, or ``ev_epoll1_linux.cc: Check failed: next_worker->state == KICKED``):
measured here with plain grpcio 1.85, 4 dead children in 3000 ``user=`` spawns while four
threads made Health calls, none in 3000 ``setpriv`` spawns. On every fork() gRPC's own
fork handler also logs "Other threads are currently calling into gRPC, skipping fork()
handlers" (978 of 1000 such spawns); a vfork() runs no fork handlers.

:class:`~eagle.testing.spawn_guard.SpawnGuard` (installed for the whole session by
conftest.py) sees every ``Popen``; these tests check that it refuses the fork-forcing
arguments, and that the harnesses start their processes without them, the etcd one while
gRPC calls run on other threads (needs root, etcd and iptables; skipped with the reason
otherwise).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from eagle.testing.cluster import LocalCluster
from eagle.testing.etcd import EtcdCluster, etcd_unavailable_reason
from eagle.testing.processes import find_tool
from eagle.testing.spawn_guard import ForkingSpawnError, SpawnGuard
from eagle.testing.tls import CertAuthority, TlsServer

TRUE = find_tool("true") or "/bin/true"


@pytest.mark.parametrize(
    ("kwargs", "forcing"),
    [
        ({"preexec_fn": os.getpid}, ("preexec_fn",)),
        ({"user": os.getuid()}, ("user",)),
        ({"group": os.getgid()}, ("group",)),
        ({"extra_groups": []}, ("extra_groups",)),
        ({"user": os.getuid(), "group": os.getgid()}, ("user", "group")),
    ],
    ids=["preexec_fn", "user", "group", "extra_groups", "user+group"],
)
def test_guard_refuses_fork_forcing_arguments(
    kwargs: dict[str, Any], forcing: tuple[str, ...]
) -> None:
    with SpawnGuard() as guard:
        with pytest.raises(ForkingSpawnError, match="setpriv"):
            subprocess.run([TRUE], **kwargs, check=True)
        # setsid and a process group are fine after vfork(): allowed
        subprocess.run([TRUE], start_new_session=True, check=True)
        subprocess.run([TRUE], process_group=0, check=True)
    spawns = guard.spawns
    assert [s.forcing for s in spawns] == [forcing, (), ()]
    assert [s.argv for s in spawns] == [(TRUE,)] * 3
    assert guard.violations == spawns[:1]
    # uninstalled: the guard sees nothing more
    subprocess.run([TRUE], check=True)
    assert len(guard.spawns) == 3


def test_local_cluster_and_tls_server_spawn_without_fork() -> None:
    ca = CertAuthority()
    with SpawnGuard() as guard:
        with LocalCluster(1) as cluster:
            cluster.restart(0)
        with tempfile.TemporaryDirectory() as tmp, TlsServer(ca.issue("member.test"), tmp):
            pass
    starts = [s for s in guard.spawns if s.argv[:1] == (sys.executable,)]
    assert len(starts) == 3, guard.spawns  # two cluster member starts and the TLS server
    assert not guard.violations


class _HealthLoad:
    """Threads that keep gRPC busy (Health calls) on an in-process server; bounded."""

    def __init__(self, threads: int = 4, max_calls: int = 100_000) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.target = f"127.0.0.1:{port}"
        self.stop = threading.Event()
        self.calls = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._max = max_calls
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        with grpc.insecure_channel(self.target) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while not self.stop.is_set():
                try:
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                except grpc.RpcError as e:
                    self.errors.append(f"{e.code()}")
                with self._lock:
                    self.calls += 1
                    if self.calls >= self._max:
                        return

    def close(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(10)
        self.server.stop(None)


@pytest.fixture
def grpc_load() -> Iterator[_HealthLoad]:
    load = _HealthLoad()
    try:
        yield load
    finally:
        load.close()


_ETCD = etcd_unavailable_reason()


@pytest.mark.etcd
@pytest.mark.skipif(_ETCD is not None, reason=f"etcd harness unavailable: {_ETCD}")
def test_etcd_members_start_while_grpc_is_busy(
    grpc_load: _HealthLoad, capfd: pytest.CaptureFixture[str]
) -> None:
    restarts, cuts = 3, 3
    with SpawnGuard() as guard, EtcdCluster(1) as cluster:
        calls_before = grpc_load.calls
        for _ in range(restarts):
            old = cluster.members[0].pid
            cluster.restart(0)  # kill, start again through setpriv, wait for a leader
            assert cluster.members[0].pid not in (None, old)
        for _ in range(cuts):  # every iptables edit is a subprocess too
            cluster.partition(0)
            cluster.heal(0)
        member = cluster.members[0]
        assert member.pid is not None
        with open(f"/proc/{member.pid}/comm") as f:
            assert f.read().strip() == "etcd"  # setpriv exec'd etcd: the pid is etcd's
        calls_during = grpc_load.calls - calls_before
    assert calls_during > 0, "gRPC was not busy while the members started"
    assert not grpc_load.errors[:1], grpc_load.errors[:5]

    setpriv, etcd = find_tool("setpriv"), find_tool("etcd")
    etcd_starts = [s for s in guard.spawns if s.argv[:1] == (setpriv,)]
    assert len(etcd_starts) == 1 + restarts
    for s in etcd_starts:
        assert f"--reuid={member.uid}" in s.argv and f"--regid={member.gid}" in s.argv
        assert "--clear-groups" in s.argv and s.argv[s.argv.index("--") + 1] == etcd
    iptables = [s for s in guard.spawns if s.argv[:1] == (find_tool("iptables"),)]
    assert len(iptables) >= 5 * cuts  # five rules added and removed per cut, and checks
    assert guard.spawns and not guard.violations

    # gRPC's fork handlers run on fork(), never on vfork(): none of them may have logged
    err = capfd.readouterr().err
    assert "skipping fork() handlers" not in err and "fork_posix" not in err, err[-2000:]
    print(f"{len(guard.spawns)} spawns during {calls_during} concurrent gRPC calls, no fork()")
