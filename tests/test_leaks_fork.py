"""Leaks and fork: open and close 1000 channels; a channel used after os.fork()."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading

import pytest

import eagle
import eagle.aio
from eagle.testing.cluster import LocalCluster
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

N = 1000
CONFIG = {"health": {"interval": 0.05, "timeout": 0.5}}


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _threads() -> int:
    return sum(1 for t in threading.enumerate() if "_poll_wrapper" not in t.name)


def test_sync_open_close_1000_channels(shared_cluster: LocalCluster) -> None:
    def cycle(n: int) -> None:
        for i in range(n):
            ch = eagle.insecure_channel(shared_cluster.endpoints, config=CONFIG)
            if i % 50 == 0:  # some of them carry real calls
                echo_pb2_grpc.EchoStub(ch).Unary(echo_pb2.EchoRequest(), timeout=5)
            ch.close()

    cycle(50)  # warm up grpc's and Python's own caches
    gc.collect()
    base_threads, base_fds, base_rss = _threads(), fds(), rss_kib()
    cycle(N)
    gc.collect()
    assert _threads() == base_threads
    assert fds() <= base_fds + 2, (base_fds, fds())
    grown = rss_kib() - base_rss
    assert grown < 20 * 1024, f"RSS grew by {grown} KiB over {N} channels"


def test_aio_open_close_1000_channels(shared_cluster: LocalCluster) -> None:
    async def cycle(n: int) -> None:
        for i in range(n):
            ch = eagle.aio.insecure_channel(shared_cluster.endpoints, config=CONFIG)
            if i % 50 == 0:
                await echo_pb2_grpc.EchoStub(ch).Unary(echo_pb2.EchoRequest(), timeout=5)
            await ch.close()
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not left, left[:3]

    async def main() -> tuple[int, int, int, int, int, int]:
        await cycle(50)
        gc.collect()
        before = (_threads(), fds(), rss_kib())
        await cycle(N)
        gc.collect()
        return (*before, _threads(), fds(), rss_kib())

    t0, f0, r0, t1, f1, r1 = asyncio.run(main())
    assert t1 == t0
    assert f1 <= f0 + 2, (f0, f1)
    assert r1 - r0 < 20 * 1024, f"RSS grew by {r1 - r0} KiB over {N} channels"


def test_close_from_many_threads_is_safe(shared_cluster: LocalCluster) -> None:
    ch = eagle.insecure_channel(shared_cluster.endpoints, config=CONFIG)
    errors: list[BaseException] = []

    def close() -> None:
        try:
            ch.close()
        except BaseException as exc:  # pragma: no cover - the failure we look for
            errors.append(exc)

    threads = [threading.Thread(target=close) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors and ch.closed


FORK_SCRIPT = """
import os, sys
import eagle
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc
import time
ch = eagle.insecure_channel(sys.argv[1].split(","), config={"health": {"interval": 5.0}})
stub = echo_pb2_grpc.EchoStub(ch)
stub.Unary(echo_pb2.EchoRequest(), timeout=5)
# fork between probes: grpcio's own post-fork handler can deadlock on a lock a thread
# held for an RPC in flight at the fork (grpc supports fork only with no RPC active)
deadline = time.monotonic() + 10
while any(s.last_probe is None for s in ch.status().values()) and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.2)
r, w = os.pipe()
pid = os.fork()
if pid == 0:  # child: report through the pipe, then leave at once
    os.close(r)
    try:
        stub.Unary(echo_pb2.EchoRequest(), timeout=2)
        msg = b"no error"
    except eagle.ForkedChannelError as exc:
        msg = b"clear:" + str(exc).encode()
    except BaseException as exc:
        msg = b"other:" + repr(exc).encode()
    try:
        ch.close()
    except BaseException as exc:
        msg += b" close failed: " + repr(exc).encode()
    os.write(w, msg)
    os._exit(0)
os.close(w)
with os.fdopen(r, "rb") as f:
    got = f.read().decode()
_, status = os.waitpid(pid, 0)
assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
print(got)
print("parent:", stub.Unary(echo_pb2.EchoRequest(), timeout=5).server)
ch.close()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_channel_used_after_fork_raises_a_clear_error(shared_cluster: LocalCluster) -> None:
    """Run in a fresh interpreter with grpcio's documented fork settings
    (GRPC_ENABLE_FORK_SUPPORT, poll strategy): without them grpcio itself may abort a
    child forked while its threads run, before eagle's code is reached."""
    env = dict(os.environ, GRPC_ENABLE_FORK_SUPPORT="true", GRPC_POLL_STRATEGY="poll")
    proc = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, ",".join(shared_cluster.endpoints)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "clear:" in out and "os.fork()" in out, out
    assert "close failed" not in out
    assert "parent: m" in out  # the parent's channel keeps working
