"""A local cluster of real gRPC test servers, with real fault injection.

:class:`LocalCluster` starts :mod:`eagle.testing.server` processes on loopback
and injects faults into them::

    with LocalCluster(3) as cluster:
        ch = eagle.insecure_channel(cluster.endpoints)
        cluster.kill(0)      # crash: SIGKILL
        cluster.restart(0)   # same port again
        cluster.stop(1)      # hang: SIGSTOP (cont(1) resumes)
        cluster.drain(2)     # health NOT_SERVING (undrain(2) restores)
        cluster.slow(2, 300) # +300 ms on every Echo data call, health stays fast

Only processes the cluster started are ever signalled, always by their own
``Popen`` handle (never by name), and :meth:`LocalCluster.close` also runs at
interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Final

import grpc

from eagle.testing.processes import wait_stopped
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

__all__ = [
    "LOCAL_CHANNEL_OPTIONS",
    "ClusterError",
    "LocalCluster",
    "Member",
]

#: Options for plain channels to local members: never route loopback via a proxy.
LOCAL_CHANNEL_OPTIONS: Final[tuple[tuple[str, int], ...]] = (("grpc.enable_http_proxy", 0),)

_SRC_DIR: Final = str(Path(__file__).resolve().parents[2])
_RESTART_BIND_TIMEOUT_S: Final = 3.0
_STDERR_TAIL: Final = 4000


class ClusterError(RuntimeError):
    """A member failed to start, or the cluster is used after close."""


@dataclass(frozen=True)
class Member:
    """A snapshot of one member (one server process) of a :class:`LocalCluster`."""

    index: int
    name: str
    #: pid of the current process, or of the last one if it is not running
    pid: int
    #: first bound port (0 for a unix-socket member)
    port: int
    ports: tuple[int, ...]
    endpoints: tuple[str, ...]
    running: bool
    stopped: bool


def _format_endpoint(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


class _Child:
    """Internal, mutable record of one member."""

    def __init__(
        self,
        index: int,
        name: str,
        ports: list[int],
        unix_path: str | None,
        host: str | None = None,
    ) -> None:
        self.host = host  # this member's own bind address (None: the cluster's)
        self.index = index
        self.name = name
        self.ports = ports  # what to bind; 0 = any free port
        self.n_ports = len(ports)
        self.unix_path = unix_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdout: IO[bytes] | None = None
        self.stderr: IO[bytes] | None = None
        self.stopped = False
        self.last_pid = 0

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def endpoints(self, host: str) -> list[str]:
        if self.unix_path is not None:
            return [f"unix:{self.unix_path}"]
        return [_format_endpoint(self.host or host, p) for p in self.ports]

    def stderr_tail(self) -> str:
        if self.stderr is None:
            return ""
        fd = self.stderr.fileno()
        size = os.fstat(fd).st_size
        start = max(0, size - _STDERR_TAIL)
        return os.pread(fd, size - start, start).decode("utf-8", "replace").strip()

    def ready_line(self) -> str | None:
        if self.stdout is None:
            return None
        data = os.pread(self.stdout.fileno(), 65536, 0)
        for line in data.decode("utf-8", "replace").splitlines(keepends=True):
            if line.startswith("READY ") and line.endswith("\n"):
                return line[len("READY ") :].strip()
        return None

    def close_files(self) -> None:
        for f in (self.stdout, self.stderr):
            if f is not None:
                f.close()
        self.stdout = self.stderr = None


class LocalCluster:
    """Real ``eagle.testing.server`` processes on loopback, with fault injection.

    ``LocalCluster(n)`` starts ``n`` members, one process and one port each;
    ``endpoints[i]`` belongs to member ``i``. With ``ports_per_member=k``
    (or :meth:`many_ports`) each process listens on ``k`` ports, and
    ``endpoints`` lists every port of every member in order; faults then hit
    all the ports of a member together. Member fault methods take a member
    index.

    The constructor starts every member (in parallel) and waits until each
    prints ``READY``; on failure it cleans up and raises :class:`ClusterError`
    with the child's stderr.
    """

    def __init__(
        self,
        n: int = 3,
        *,
        ports_per_member: int = 1,
        host: str = "127.0.0.1",
        names: Sequence[str] | None = None,
        unix: bool = False,
        workers: int = 64,
        start_timeout: float = 15.0,
        control_timeout: float = 5.0,
        hosts: Sequence[str] | None = None,
        port: int = 0,
        extra_args: Sequence[str] = (),
    ) -> None:
        """``hosts`` gives each member its own bind address (e.g. ``127.0.0.2``,
        ``127.0.0.3``: all of 127/8 is loopback), ``port`` a fixed port for every member
        (0: each picks a free one), ``extra_args`` more ``eagle.testing.server`` options."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if ports_per_member < 1:
            raise ValueError(f"ports_per_member must be >= 1, got {ports_per_member}")
        if unix and ports_per_member != 1:
            raise ValueError("unix members listen on exactly one socket")
        if names is not None and len(names) != n:
            raise ValueError(f"got {len(names)} names for {n} members")
        if hosts is not None and len(hosts) != n:
            raise ValueError(f"got {len(hosts)} hosts for {n} members")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, got {port}")
        self.extra_args = tuple(extra_args)
        self.host = host
        self.workers = workers
        self.start_timeout = start_timeout
        self.control_timeout = control_timeout
        self._lock = threading.RLock()
        self._closed = False
        self._unix_dir = tempfile.mkdtemp(prefix="eagle-cluster-") if unix else None
        member_names = list(names) if names is not None else [f"m{i}" for i in range(n)]
        self._children: list[_Child] = []
        for i, name in enumerate(member_names):
            unix_path = os.path.join(self._unix_dir, f"{name}.sock") if self._unix_dir else None
            host_i = hosts[i] if hosts is not None else None
            self._children.append(_Child(i, name, [port] * ports_per_member, unix_path, host_i))
        atexit.register(self.close)
        try:
            for child in self._children:
                self._spawn(child, bind_timeout=0.0)
            deadline = time.monotonic() + start_timeout
            for child in self._children:
                self._wait_ready(child, deadline)
        except BaseException:
            self.close()
            raise

    @classmethod
    def many_ports(
        cls,
        n_ports: int,
        *,
        name: str = "scale",
        host: str = "127.0.0.1",
        workers: int = 64,
        start_timeout: float = 30.0,
        control_timeout: float = 5.0,
    ) -> LocalCluster:
        """Start ONE server process listening on ``n_ports`` ports (scale mode).

        ``endpoints`` has ``n_ports`` entries; the cluster has one member
        (index 0), so faults affect every port at once.
        """
        return cls(
            1,
            ports_per_member=n_ports,
            host=host,
            names=[name],
            workers=workers,
            start_timeout=start_timeout,
            control_timeout=control_timeout,
        )

    # -- context manager -------------------------------------------------

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __len__(self) -> int:
        """Number of members (processes)."""
        return len(self._children)

    # -- views -----------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        """Every endpoint, e.g. ``"127.0.0.1:PORT"``, members in order."""
        return [e for child in self._children for e in child.endpoints(self.host)]

    @property
    def target(self) -> str:
        """The endpoints as one comma-separated string."""
        return ",".join(self.endpoints)

    @property
    def members(self) -> list[Member]:
        """A snapshot of every member."""
        return [self.member(i) for i in range(len(self._children))]

    def member(self, i: int) -> Member:
        """A snapshot of member ``i``."""
        child = self._children[i]
        return Member(
            index=i,
            name=child.name,
            pid=child.last_pid,
            port=0 if child.unix_path is not None else child.ports[0],
            ports=() if child.unix_path is not None else tuple(child.ports),
            endpoints=tuple(child.endpoints(self.host)),
            running=child.running(),
            stopped=child.stopped and child.running(),
        )

    # -- process faults --------------------------------------------------

    def kill(self, i: int) -> None:
        """Crash member ``i``: SIGKILL and reap it. No-op if it is not running."""
        with self._lock:
            self._check_open()
            self._kill(self._children[i])

    def stop(self, i: int) -> None:
        """Hang member ``i`` with SIGSTOP (sockets stay open, nothing answers)."""
        with self._lock:
            self._check_open()
            child = self._children[i]
            proc = self._running_proc(child)
            proc.send_signal(signal.SIGSTOP)
            child.stopped = True
            self._wait_state(child, proc.pid, stopped=True)

    def cont(self, i: int) -> None:
        """Resume member ``i`` after :meth:`stop` (SIGCONT)."""
        with self._lock:
            self._check_open()
            child = self._children[i]
            proc = self._running_proc(child)
            proc.send_signal(signal.SIGCONT)
            child.stopped = False
            self._wait_state(child, proc.pid, stopped=False)

    def restart(self, i: int) -> None:
        """(Kill if needed and) start member ``i`` again on the same port(s).

        A busy port is retried for a few seconds; raises :class:`ClusterError`
        if the member cannot come back.
        """
        with self._lock:
            self._check_open()
            child = self._children[i]
            self._kill(child)
            self._spawn(child, bind_timeout=_RESTART_BIND_TIMEOUT_S)
            self._wait_ready(child, time.monotonic() + self.start_timeout + _RESTART_BIND_TIMEOUT_S)

    def pid(self, i: int) -> int:
        """pid of member ``i``'s current (or last) process."""
        return self._children[i].last_pid

    def alive(self, i: int) -> bool:
        """Whether member ``i``'s process is running (possibly stopped)."""
        return self._children[i].running()

    # -- Control RPC faults ----------------------------------------------

    def channel(self, i: int, endpoint: int = 0) -> grpc.Channel:
        """A new plain ``grpc`` channel to member ``i`` (its ``endpoint``-th port).

        The caller closes it.
        """
        target = self._children[i].endpoints(self.host)[endpoint]
        return grpc.insecure_channel(target, options=list(LOCAL_CHANNEL_OPTIONS))

    def control(self, i: int, action: str, delay_ms: int = 0) -> echo_pb2.ControlResponse:
        """Send one ``Control`` RPC to member ``i`` and return its answer."""
        self._check_open()
        self._running_proc(self._children[i])
        with self.channel(i) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)  # type: ignore[no-untyped-call]
            request = echo_pb2.ControlRequest(action=action, delay_ms=delay_ms)
            response: echo_pb2.ControlResponse = stub.Control(
                request, timeout=self.control_timeout, wait_for_ready=True
            )
            return response

    def drain(self, i: int) -> None:
        """Set member ``i``'s health (``""`` and the Echo service) to NOT_SERVING."""
        self.control(i, "not_serving")

    def undrain(self, i: int) -> None:
        """Set member ``i``'s health back to SERVING."""
        self.control(i, "serving")

    def slow(self, i: int, ms: int) -> None:
        """Add ``ms`` milliseconds to every Echo data call on member ``i`` (0 clears)."""
        if ms < 0:
            raise ValueError(f"ms must be >= 0, got {ms}")
        self.control(i, "delay", delay_ms=ms)

    def stats(self, i: int) -> echo_pb2.ControlResponse:
        """Member ``i``'s counters: calls, writes, applied_ids."""
        return self.control(i, "stats")

    def reset(self, i: int) -> echo_pb2.ControlResponse:
        """Clear member ``i``'s counters; returns the (cleared) stats."""
        return self.control(i, "reset")

    # -- cleanup ---------------------------------------------------------

    def close(self) -> None:
        """SIGCONT then SIGKILL every process this cluster started, and reap it.

        Idempotent; also registered with :mod:`atexit`.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for child in self._children:
                self._kill(child)
            if self._unix_dir is not None:
                shutil.rmtree(self._unix_dir, ignore_errors=True)
        atexit.unregister(self.close)

    # -- internals -------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClusterError("the cluster is closed")

    def _running_proc(self, child: _Child) -> subprocess.Popen[bytes]:
        proc = child.proc
        if proc is None or proc.poll() is not None:
            raise ClusterError(f"member {child.index} ({child.name}) is not running")
        return proc

    def _spawn(self, child: _Child, *, bind_timeout: float) -> None:
        cmd = [
            sys.executable,
            "-m",
            "eagle.testing.server",
            "--name",
            child.name,
            "--workers",
            str(self.workers),
            "--parent",
            str(os.getpid()),
            "--bind-timeout",
            str(bind_timeout),
        ]
        if child.unix_path is not None:
            cmd += ["--unix", child.unix_path]
        elif all(p == 0 for p in child.ports):
            host = child.host or self.host
            cmd += ["--host", host, "--port", "0", "--ports", str(child.n_ports)]
        else:
            host = child.host or self.host
            cmd += ["--host", host, "--port", ",".join(map(str, child.ports))]
        cmd += self.extra_args
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        pythonpath = env.get("PYTHONPATH")
        env["PYTHONPATH"] = _SRC_DIR + (os.pathsep + pythonpath if pythonpath else "")
        child.close_files()
        child.stdout = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close_files)
        child.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        child.stopped = False
        child.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=child.stdout,
            stderr=child.stderr,
            env=env,
            close_fds=True,
        )
        child.last_pid = child.proc.pid

    def _wait_ready(self, child: _Child, deadline: float) -> None:
        proc = child.proc
        assert proc is not None
        while True:
            ready = child.ready_line()
            if ready is not None:
                break
            rc = proc.poll()
            if rc is not None:
                raise ClusterError(
                    f"member {child.index} ({child.name}) exited with code {rc} before READY;"
                    f" stderr:\n{child.stderr_tail()}"
                )
            if time.monotonic() >= deadline:
                tail = child.stderr_tail()
                self._kill(child)
                raise ClusterError(
                    f"member {child.index} ({child.name}) not READY within"
                    f" {self.start_timeout:.1f}s; stderr:\n{tail}"
                )
            time.sleep(0.01)
        if child.unix_path is not None:
            return
        ports = [int(p) for p in ready.split(",")]
        if len(ports) != child.n_ports or any(
            want not in (0, got) for want, got in zip(child.ports, ports, strict=True)
        ):
            self._kill(child)
            raise ClusterError(
                f"member {child.index} ({child.name}) bound {ports}, expected {child.ports}"
            )
        child.ports = ports

    def _kill(self, child: _Child) -> None:
        proc = child.proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                    proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        child.stopped = False
        child.close_files()

    @staticmethod
    def _wait_state(child: _Child, pid: int, *, stopped: bool, timeout: float = 5.0) -> None:
        """Wait until every thread of the process is (not) stopped: ``kill()`` returns before
        a SIGSTOP has parked them all (see :mod:`eagle.testing.processes`)."""
        if not wait_stopped(pid, stopped=stopped, timeout=timeout):
            state = "stopped" if stopped else "running"
            raise ClusterError(f"member {child.index} (pid {pid}) not {state} after {timeout} s")
