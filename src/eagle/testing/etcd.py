"""A real etcd cluster on loopback, with network partitions, for eagle's tests and benchmarks.

Every member runs as its own system user (``eagle-etcd0``, ``eagle-etcd1``, ...) so that an
iptables ``owner`` match can tell one member's peer traffic from another's on the shared
loopback interface. That needs root, the ``etcd`` binary (Debian: ``etcd-server``) and
``iptables``; :func:`etcd_unavailable_reason` says whether all of them are here.

Partitions use two chains of this process's own, :data:`CHAIN_IN` (jumped to from ``INPUT``)
and :data:`CHAIN_OUT` (jumped to from ``OUTPUT``), named after its pid: iptables is one table
per machine, and several test runs (worktrees, CI jobs) may partition their own clusters at
the same time without seeing or removing each other's rules. ``partition(i)`` drops, on
``lo``:

* in ``CHAIN_OUT``: every TCP packet that member *i*'s user sends to another member's peer port,
  after tagging its connection with a conntrack mark (iptables-nft refuses ``-m owner`` in a
  chain reached from ``INPUT``, so owner rules live only here);
* in ``CHAIN_IN``: every TCP packet to or from member *i*'s peer port (the connections the
  others dialed to it, both directions), and every packet on a connection carrying its mark
  (the other direction of the connections it dialed).

The last rule matters: etcd's rafthttp streams are long-lived connections *dialed by the
receiver*, so dropping only member *i*'s own packets would still let the leader push appends to
it on the stream it opened. Dropping every packet (not only new connections) freezes the
streams that are already open, both ways, while client ports stay untouched.

Members start as ``setpriv --reuid=<uid> --regid=<gid> --clear-groups -- etcd ...``:
``setpriv`` (util-linux) switches user and then execs etcd, so the ``Popen`` pid is etcd's
own, and ``Popen`` gets no ``user=``/``group=``/``preexec_fn``, which would make CPython
``fork()`` a process full of gRPC threads instead of ``vfork()``-ing it (see
:mod:`eagle.testing.spawn_guard`). Every tool is run by the absolute path
:func:`eagle.testing.processes.find_tool` finds, never by bare name.

The client helpers (:func:`put`, :func:`get`, :func:`watch`, :func:`status`,
:func:`member_list`) work over any :class:`grpc.Channel`, eagle's own included; they speak
etcd's wire format through the subset messages in ``eagle.testing.v1.etcdkv_pb2`` and
``eagle.etcdwire.v1.etcd_pb2``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO, cast

import grpc

from eagle.etcdwire.v1 import etcd_pb2
from eagle.testing.processes import find_tool, wait_stopped
from eagle.testing.v1 import etcdkv_pb2

__all__ = [
    "CHAIN_IN",
    "CHAIN_OUT",
    "USER_PREFIX",
    "EtcdCluster",
    "EtcdClusterError",
    "EtcdMember",
    "cleanup_iptables",
    "etcd_unavailable_reason",
    "get",
    "member_list",
    "put",
    "status",
    "watch",
]

_PID = os.getpid()
#: iptables chain of this process jumped to from ``INPUT`` (port and connmark rules, no
#: ``-m owner``): ``EAGLE-<pid>-IN``.
CHAIN_IN = f"EAGLE-{_PID}-IN"
#: iptables chain of this process jumped to from ``OUTPUT`` (``-m owner`` rules).
CHAIN_OUT = f"EAGLE-{_PID}-OUT"
# any process's chains, as `iptables -S` lists them
_CHAIN_RE = re.compile(r"^-N EAGLE-(\d+)-(?:IN|OUT)$", re.MULTILINE)
#: Member *i* runs as system user ``f"{USER_PREFIX}{i}"``.
USER_PREFIX = "eagle-etcd"

HOST = "127.0.0.1"

_STATUS_PATH = "/etcdserverpb.Maintenance/Status"
_MEMBER_LIST_PATH = "/etcdserverpb.Cluster/MemberList"
_PUT_PATH = "/etcdserverpb.KV/Put"
_RANGE_PATH = "/etcdserverpb.KV/Range"
_WATCH_PATH = "/etcdserverpb.Watch/Watch"

# serialises iptables edits and user creation inside this process
_LOCK = threading.RLock()
# conntrack mark bits eagle uses to tag a partitioned member's own peer connections
_MARK_MASK = 0x0FF00000
# a random start, so that two processes partitioning at once rarely share a mark
_mark_counter = random.randrange(255)


def _next_mark() -> int:
    # 255 marks, handed out round robin: plenty for the members alive at any one time
    global _mark_counter
    with _LOCK:
        _mark_counter = _mark_counter % 255 + 1
        return _mark_counter << 20


class EtcdClusterError(RuntimeError):
    """The cluster could not be started, or a member did not become healthy in time."""


def _tool(name: str) -> str:
    exe = find_tool(name)
    if exe is None:
        raise EtcdClusterError(f"{name} not found (see etcd_unavailable_reason())")
    return exe


def etcd_unavailable_reason() -> str | None:
    """Say why :class:`EtcdCluster` cannot run here, or return ``None`` when it can."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "not a POSIX system: the etcd harness needs Linux, root and iptables"
    if os.geteuid() != 0:
        return "not root: iptables partitions need root"
    if find_tool("etcd") is None:
        return "etcd binary not found (apt-get install etcd-server)"
    if find_tool("iptables") is None:
        return "iptables not found (apt-get install iptables)"
    if find_tool("setpriv") is None:
        return "setpriv not found (apt-get install util-linux)"
    if find_tool("useradd") is None:
        return "useradd not found (apt-get install passwd)"
    return None


# --------------------------------------------------------------------------- iptables


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [_tool("iptables"), "-w", "5", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if check and proc.returncode != 0:
        raise EtcdClusterError(f"iptables {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def _chain_exists(chain: str) -> bool:
    return _iptables("-S", chain, check=False).returncode == 0


def _ensure_chains() -> None:
    with _LOCK:
        for chain, parent in ((CHAIN_IN, "INPUT"), (CHAIN_OUT, "OUTPUT")):
            if not _chain_exists(chain):
                _iptables("-N", chain)
            if _iptables("-C", parent, "-j", chain, check=False).returncode != 0:
                _iptables("-I", parent, "1", "-j", chain)


def _chain_rule_count(chain: str) -> int:
    proc = _iptables("-S", chain, check=False)
    if proc.returncode != 0:
        return 0
    return sum(1 for line in proc.stdout.splitlines() if line.startswith("-A "))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_chains(pid: int) -> bool:
    removed = False
    for chain, parent in ((f"EAGLE-{pid}-IN", "INPUT"), (f"EAGLE-{pid}-OUT", "OUTPUT")):
        for _ in range(100):  # a jump rule may have been added more than once
            if _iptables("-D", parent, "-j", chain, check=False).returncode != 0:
                break
            removed = True
        if _chain_exists(chain):
            _iptables("-F", chain, check=False)
            _iptables("-X", chain, check=False)
            removed = True
    return removed


def cleanup_iptables() -> bool:
    """Remove this process's chains and their jump rules, and those a dead process left.

    Safe to call at any time: it removes every partition of *this* process (including those
    of other clusters in it) and the chains of processes that no longer exist (a crashed
    run), but never the chains of another live process. Returns ``True`` if anything was
    removed.
    """
    if find_tool("iptables") is None:
        return False
    with _LOCK:
        listed = _iptables("-S", check=False).stdout
        dead = {int(pid) for pid in _CHAIN_RE.findall(listed) if not _pid_alive(int(pid))}
        removed = False
        for pid in sorted({_PID} | dead):
            removed = _remove_chains(pid) or removed
        return removed


def _remove_chains_if_empty() -> None:
    with _LOCK:
        if _chain_rule_count(CHAIN_IN) == 0 and _chain_rule_count(CHAIN_OUT) == 0:
            cleanup_iptables()


# --------------------------------------------------------------------------- users, ports


def _ensure_user(name: str) -> pwd.struct_passwd:
    with _LOCK:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        proc = subprocess.run(
            [
                _tool("useradd"),
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        # exit code 9: created concurrently by someone else
        if proc.returncode not in (0, 9):
            raise EtcdClusterError(f"useradd {name} failed: {proc.stderr.strip()}")
        return pwd.getpwnam(name)


def _free_ports(n: int) -> list[int]:
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------- members


@dataclass(frozen=True)
class EtcdMember:
    """A snapshot of one member of an :class:`EtcdCluster`."""

    index: int
    name: str
    user: str
    uid: int
    gid: int
    pid: int | None
    """PID of the etcd process itself (``None`` while killed)."""
    client_port: int
    peer_port: int
    data_dir: str
    member_id: int | None
    """etcd's member ID, once the member has answered ``Maintenance.Status``."""
    partitioned: bool
    stopped: bool

    @property
    def endpoint(self) -> str:
        """The client endpoint, ``"127.0.0.1:port"``."""
        return f"{HOST}:{self.client_port}"

    @property
    def client_url(self) -> str:
        """The client URL, ``"http://127.0.0.1:port"``."""
        return f"http://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        """The peer URL, ``"http://127.0.0.1:port"``."""
        return f"http://{HOST}:{self.peer_port}"


class _Member:
    def __init__(self, index: int, name: str, pw: pwd.struct_passwd, client: int, peer: int):
        self.index = index
        self.name = name
        self.user = pw.pw_name
        self.uid = pw.pw_uid
        self.gid = pw.pw_gid
        self.client_port = client
        self.peer_port = peer
        self.data_dir = ""
        self.log_path = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None
        self.member_id: int | None = None
        self.rules: list[tuple[str, ...]] = []  # (chain, *spec) this cluster added
        # Fixed for the member's life: connections marked in one partition keep the mark after
        # heal, so a mark must never be handed to another live member.
        self.mark = _next_mark()
        self.stopped = False

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.client_port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def snapshot(self) -> EtcdMember:
        return EtcdMember(
            index=self.index,
            name=self.name,
            user=self.user,
            uid=self.uid,
            gid=self.gid,
            pid=self.proc.pid if self.alive() and self.proc is not None else None,
            client_port=self.client_port,
            peer_port=self.peer_port,
            data_dir=self.data_dir,
            member_id=self.member_id,
            partitioned=bool(self.rules),
            stopped=self.stopped,
        )

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 8192))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class EtcdCluster:
    """A real etcd cluster on 127.0.0.1 that tests can partition, freeze, kill and restart.

    ``with EtcdCluster() as c:`` starts ``size`` members, each as its own system user with its
    own data dir, and waits until every member reports a leader. :meth:`close` (also run at
    exit, and by ``__exit__``) removes all iptables rules and ends every process it started.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        pre_vote: bool = True,
        startup_timeout: float = 20.0,
        extra_args: Sequence[str] = (),
        start: bool = True,
    ) -> None:
        """Create (and by default start) a cluster.

        ``pre_vote`` defaults to on (etcd 3.5's default) so a healed member does not depose the
        leader with a term it inflated while cut off. ``extra_args`` are appended to every
        etcd command line. With ``start=False`` call :meth:`start` yourself.
        """
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        reason = etcd_unavailable_reason()
        if reason is not None:
            raise EtcdClusterError(f"etcd harness unavailable: {reason}")
        self.size = size
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.pre_vote = pre_vote
        self.startup_timeout = startup_timeout
        self.extra_args = tuple(extra_args)
        self._etcd = _tool("etcd")
        self._setpriv = _tool("setpriv")
        self._token = f"eagle-{uuid.uuid4().hex[:12]}"
        self._members: list[_Member] = []
        self._tmp: str | None = None
        self._closed = False
        self._started = False
        self._lock = threading.RLock()
        if start:
            self.start()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start all members and wait until each one reports a leader (idempotent)."""
        with self._lock:
            if self._closed:
                raise EtcdClusterError("cluster is closed")
            if self._started:
                return
            self._started = True
            atexit.register(self.close)  # a strong ref: closed at exit at the latest
            try:
                for attempt in range(3):
                    try:
                        self._start_once()
                        return
                    except EtcdClusterError as e:
                        # a free port can be taken between picking it and etcd binding it
                        if "address already in use" not in str(e) or attempt == 2:
                            raise
                        self._discard_members()
            except BaseException:
                self.close()
                raise

    def _start_once(self) -> None:
        ports = _free_ports(2 * self.size)
        self._tmp = tempfile.mkdtemp(prefix="eagle-etcd-")
        os.chmod(self._tmp, 0o755)
        for i in range(self.size):
            pw = _ensure_user(f"{USER_PREFIX}{i}")
            m = _Member(i, f"m{i}", pw, ports[2 * i], ports[2 * i + 1])
            m.data_dir = os.path.join(self._tmp, m.name)
            os.mkdir(m.data_dir, 0o700)
            os.chown(m.data_dir, m.uid, m.gid)
            m.log_path = os.path.join(self._tmp, f"{m.name}.log")
            self._members.append(m)
        for m in self._members:
            self._spawn(m)
        self.wait_healthy(timeout=self.startup_timeout)

    def _discard_members(self, forget: bool = True) -> None:
        for m in self._members:
            self._terminate(m)
            if m.log is not None:
                m.log.close()
                m.log = None
        if forget:
            self._members = []
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _command(self, m: _Member) -> list[str]:
        initial = ",".join(f"{o.name}=http://{HOST}:{o.peer_port}" for o in self._members)
        return [
            "--name",
            m.name,
            "--data-dir",
            m.data_dir,
            "--listen-client-urls",
            f"http://{HOST}:{m.client_port}",
            "--advertise-client-urls",
            f"http://{HOST}:{m.client_port}",
            "--listen-peer-urls",
            f"http://{HOST}:{m.peer_port}",
            "--initial-advertise-peer-urls",
            f"http://{HOST}:{m.peer_port}",
            "--initial-cluster",
            initial,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            self._token,
            "--heartbeat-interval",
            str(self.heartbeat_ms),
            "--election-timeout",
            str(self.election_ms),
            f"--pre-vote={'true' if self.pre_vote else 'false'}",
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
            "--log-level",
            "info",
            *self.extra_args,
        ]

    def _spawn(self, m: _Member) -> None:
        argv = [
            self._setpriv,
            f"--reuid={m.uid}",
            f"--regid={m.gid}",
            "--clear-groups",
        ]
        # The parent-death signal fires when the *thread* that forked exits; only ask for it
        # from the main thread, whose end is the end of the process anyway.
        if threading.current_thread() is threading.main_thread():
            argv.append("--pdeathsig=KILL")
        argv += ["--", self._etcd, *self._command(m)]
        log = open(m.log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        try:
            # setpriv execs etcd, so Popen's pid is etcd's pid. No user=/group=/preexec_fn:
            # those make CPython fork() this gRPC-threaded process instead of vfork()
            # (eagle.testing.spawn_guard); start_new_session (setsid) keeps vfork.
            m.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=m.data_dir,
                start_new_session=True,  # a ^C in the terminal goes to pytest only
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
        except BaseException:
            log.close()
            raise
        m.log = log
        m.stopped = False

    def wait_healthy(
        self, indices: Sequence[int] | None = None, timeout: float = 20.0
    ) -> dict[int, etcd_pb2.StatusResponse]:
        """Wait until the given members (default: all) answer Status with a leader and no errors.

        Returns each member's last ``StatusResponse``. Raises :class:`EtcdClusterError` with
        the members' log tails on timeout or when an etcd process exits.
        """
        targets = [self._member(i) for i in (range(self.size) if indices is None else indices)]
        deadline = time.monotonic() + timeout
        done: dict[int, etcd_pb2.StatusResponse] = {}
        last_error: dict[int, str] = {}
        channels = {m.index: grpc.insecure_channel(m.endpoint) for m in targets}
        try:
            while True:
                for m in targets:
                    if m.index in done:
                        continue
                    if m.proc is None or m.proc.poll() is not None:
                        code = None if m.proc is None else m.proc.returncode
                        raise EtcdClusterError(
                            f"etcd member {m.name} exited (code {code}) before it became "
                            f"healthy; log tail:\n{m.log_tail()}"
                        )
                    try:
                        resp = status(channels[m.index], timeout=1.0)
                    except grpc.RpcError as e:
                        last_error[m.index] = f"{e.code()}: {e.details()}"
                        continue
                    m.member_id = resp.header.member_id or m.member_id
                    if resp.leader != 0 and not resp.errors:
                        done[m.index] = resp
                    else:
                        last_error[m.index] = f"leader={resp.leader} errors={list(resp.errors)}"
                if len(done) == len(targets):
                    return done
                if time.monotonic() >= deadline:
                    pending = [m for m in targets if m.index not in done]
                    detail = "\n".join(
                        f"--- {m.name} ({m.endpoint}): {last_error.get(m.index, '?')}\n"
                        f"{m.log_tail()}"
                        for m in pending
                    )
                    raise EtcdClusterError(
                        f"etcd members {[m.name for m in pending]} not healthy after "
                        f"{timeout:.0f} s:\n{detail}"
                    )
                time.sleep(0.1)
        finally:
            for ch in channels.values():
                ch.close()

    def close(self) -> None:
        """Heal every partition, end every etcd process, remove the temp dir. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(Exception):
                atexit.unregister(self.close)
            errors: list[str] = []
            try:
                self.heal_all()
            except Exception as e:  # keep going: processes and files must still go
                errors.append(f"heal_all: {e}")
            with contextlib.suppress(Exception):
                _remove_chains_if_empty()
            self._discard_members(forget=False)  # members stay inspectable, pid None
            if errors:
                raise EtcdClusterError("; ".join(errors))

    @staticmethod
    def _terminate(m: _Member, grace: float = 5.0) -> None:
        proc = m.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        m.stopped = False

    def __enter__(self) -> EtcdCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._started else "new"
        return f"<EtcdCluster {state} {self.endpoints}>"

    # ------------------------------------------------------------------ views

    @property
    def endpoints(self) -> list[str]:
        """Client endpoints, ``["127.0.0.1:port", ...]``, in member order."""
        return [m.endpoint for m in self._members]

    @property
    def members(self) -> list[EtcdMember]:
        """Snapshots of the members, in member order."""
        with self._lock:
            return [m.snapshot() for m in self._members]

    def _member(self, i: int) -> _Member:
        if not 0 <= i < len(self._members):
            raise IndexError(f"no member {i} (cluster has {len(self._members)})")
        return self._members[i]

    def statuses(self, timeout: float = 1.0) -> dict[int, etcd_pb2.StatusResponse | None]:
        """``Maintenance.Status`` of every member (``None`` where the call failed)."""
        out: dict[int, etcd_pb2.StatusResponse | None] = {}
        for m in self._members:
            with grpc.insecure_channel(m.endpoint) as ch:
                try:
                    resp = status(ch, timeout=timeout)
                except grpc.RpcError:
                    out[m.index] = None
                    continue
            m.member_id = resp.header.member_id or m.member_id
            out[m.index] = resp
        return out

    def leader(self, timeout: float = 5.0) -> int:
        """Index of the member that a majority reports as leader (waits up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.statuses(timeout=1.0)
            votes: dict[int, int] = {}
            for resp in st.values():
                if resp is not None and resp.leader:
                    votes[resp.leader] = votes.get(resp.leader, 0) + 1
            for m in self._members:
                if m.member_id is not None and votes.get(m.member_id, 0) > self.size // 2:
                    return m.index
            if time.monotonic() >= deadline:
                raise EtcdClusterError(f"no leader agreed by a majority: {votes}")
            time.sleep(0.1)

    def followers(self, timeout: float = 5.0) -> list[int]:
        """Indices of the members that are not the current leader."""
        lead = self.leader(timeout=timeout)
        return [m.index for m in self._members if m.index != lead]

    # ------------------------------------------------------------------ faults

    def partition(self, i: int) -> None:
        """Cut member ``i`` off from its peers (both ways); its client port stays reachable.

        Five rules, all on ``lo`` (see the module docstring): in ``CHAIN_OUT`` the member's own
        packets to the other peer ports are connmarked and dropped; in ``CHAIN_IN`` everything
        to or from its peer port is dropped (connections the others dialed to it), and so is
        everything on a connmarked connection (the replies on connections it dialed, which
        would otherwise still carry the leader's appends to it).
        """
        with self._lock:
            m = self._member(i)
            if m.rules:
                return
            _ensure_chains()
            mark = f"{m.mark:#x}/{_MARK_MASK:#x}"
            peer = str(m.peer_port)
            others = ",".join(str(o.peer_port) for o in self._members if o is not m)
            rules: list[tuple[str, ...]] = []
            if others:
                own: tuple[str, ...] = ("-o", "lo", "-p", "tcp", "-m", "owner")
                own += ("--uid-owner", str(m.uid), "-m", "multiport", "--dports", others)
                rules += [
                    (CHAIN_OUT, *own, "-j", "CONNMARK", "--set-xmark", mark),
                    (CHAIN_OUT, *own, "-j", "DROP"),
                ]
            rules += [
                (CHAIN_IN, "-i", "lo", "-p", "tcp", "--dport", peer, "-j", "DROP"),
                (CHAIN_IN, "-i", "lo", "-p", "tcp", "--sport", peer, "-j", "DROP"),
                (CHAIN_IN, "-i", "lo", "-p", "tcp", "-m", "connmark", "--mark", mark, "-j", "DROP"),
            ]
            try:
                for rule in rules:
                    _iptables("-A", *rule)
                    m.rules.append(rule)
            except BaseException:
                self.heal(i)
                raise

    def heal(self, i: int) -> None:
        """Remove member ``i``'s partition rules (no-op if it is not partitioned).

        Once no eagle rule is left, the chains and their jump rules go too.
        """
        with self._lock:
            m = self._member(i)
            if not m.rules:
                return
            failed: list[str] = []
            while m.rules:
                rule = m.rules.pop()
                proc = _iptables("-D", *rule, check=False)
                # "does not exist" means someone (cleanup_iptables) already removed it
                if proc.returncode != 0 and _chain_exists(rule[0]):
                    failed.append(proc.stderr.strip())
            if failed:
                raise EtcdClusterError(f"could not remove iptables rules: {failed}")
            _remove_chains_if_empty()  # leave no trace once nothing is partitioned

    def heal_all(self) -> None:
        """Remove every partition rule this cluster added."""
        errors: list[str] = []
        for m in self._members:
            try:
                self.heal(m.index)
            except EtcdClusterError as e:
                errors.append(str(e))
        if errors:
            raise EtcdClusterError("; ".join(errors))

    def _signal(self, i: int, sig: signal.Signals) -> _Member:
        m = self._member(i)
        if m.proc is None or m.proc.poll() is not None:
            raise EtcdClusterError(f"member {m.name} is not running")
        os.kill(m.proc.pid, sig)
        return m

    def stop(self, i: int, timeout: float = 5.0) -> None:
        """Freeze member ``i`` with SIGSTOP (its sockets stay open; nothing answers).

        Returns once every etcd thread is stopped: ``kill()`` returns before that, and on a
        busy CPU the other threads can go on answering for a while (see
        :mod:`eagle.testing.processes`).
        """
        with self._lock:
            m = self._signal(i, signal.SIGSTOP)
            m.stopped = True
            self._wait_stopped(m, stopped=True, timeout=timeout)

    def cont(self, i: int, timeout: float = 5.0) -> None:
        """Resume member ``i`` with SIGCONT; returns once no etcd thread is stopped."""
        with self._lock:
            m = self._signal(i, signal.SIGCONT)
            m.stopped = False
            self._wait_stopped(m, stopped=False, timeout=timeout)

    @staticmethod
    def _wait_stopped(m: _Member, *, stopped: bool, timeout: float) -> None:
        assert m.proc is not None
        if not wait_stopped(m.proc.pid, stopped=stopped, timeout=timeout):
            state = "stopped" if stopped else "running"
            raise EtcdClusterError(f"member {m.name} (pid {m.proc.pid}) not {state} in {timeout} s")

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` and reap it (its ports and data dir are kept for restart)."""
        with self._lock:
            m = self._member(i)
            if m.proc is not None and m.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(m.proc.pid, signal.SIGKILL)
                m.proc.wait(timeout=10)
            m.stopped = False

    def terminate(self, i: int, grace: float = 5.0) -> None:
        """Stop member ``i`` gracefully (SIGTERM, SIGKILL after ``grace`` seconds)."""
        with self._lock:
            self._terminate(self._member(i), grace)

    def restart(self, i: int, *, wait: bool = True, timeout: float = 20.0) -> None:
        """Kill member ``i`` if running and start it again with the same ports and data dir.

        With ``wait`` (the default), return once it reports a leader again.
        """
        with self._lock:
            if self._closed:
                raise EtcdClusterError("cluster is closed")
            m = self._member(i)
            self.kill(i)
            self._spawn(m)
        if wait:
            self.wait_healthy([i], timeout=timeout)


# --------------------------------------------------------------------------- client helpers


def _b(x: str | bytes) -> bytes:
    return x.encode() if isinstance(x, str) else x


def put(channel: grpc.Channel, key: str | bytes, value: str | bytes, timeout: float = 5.0) -> int:
    """Put ``key = value`` through ``/etcdserverpb.KV/Put``; return the new store revision."""
    call = channel.unary_unary(
        _PUT_PATH,
        request_serializer=etcdkv_pb2.PutRequest.SerializeToString,
        response_deserializer=etcdkv_pb2.PutResponse.FromString,
    )
    resp = cast(
        etcdkv_pb2.PutResponse,
        call(etcdkv_pb2.PutRequest(key=_b(key), value=_b(value)), timeout=timeout),
    )
    return int(resp.header.revision)


def get(
    channel: grpc.Channel, key: str | bytes, timeout: float = 5.0, serializable: bool = False
) -> tuple[bytes | None, int]:
    """Read ``key`` through ``/etcdserverpb.KV/Range``; return ``(value, mod_revision)``.

    ``(None, 0)`` when the key does not exist. Reads are linearizable unless ``serializable``
    (a member-local, possibly stale read that works without a leader).
    """
    call = channel.unary_unary(
        _RANGE_PATH,
        request_serializer=etcdkv_pb2.RangeRequest.SerializeToString,
        response_deserializer=etcdkv_pb2.RangeResponse.FromString,
    )
    resp = cast(
        etcdkv_pb2.RangeResponse,
        call(etcdkv_pb2.RangeRequest(key=_b(key), serializable=serializable), timeout=timeout),
    )
    if not resp.kvs:
        return None, 0
    kv = resp.kvs[0]
    return bytes(kv.value), int(kv.mod_revision)


Metadata = Sequence[tuple[str, str | bytes]]


def watch(
    channel: grpc.Channel,
    key: str | bytes,
    start_revision: int = 0,
    metadata: Metadata | None = None,
    timeout: float | None = None,
) -> tuple[grpc.Call, Iterator[etcdkv_pb2.Event]]:
    """Open ``/etcdserverpb.Watch/Watch`` on ``key`` (from ``start_revision``; 0 = now).

    Returns ``(call, events)``: ``call`` is the grpc stream (``call.cancel()`` ends it) and
    ``events`` yields each :class:`etcdkv_pb2.Event` as it arrives, raising
    :class:`grpc.RpcError` when the stream fails and :class:`EtcdClusterError` if etcd cancels
    the watch (e.g. a compacted ``start_revision``). Pass ``metadata=[("hasleader", "true")]``
    to make etcd end the stream when the member loses its leader.
    """
    done = threading.Event()

    def requests() -> Iterator[etcdkv_pb2.WatchRequest]:
        yield etcdkv_pb2.WatchRequest(
            create_request=etcdkv_pb2.WatchCreateRequest(key=_b(key), start_revision=start_revision)
        )
        # keep the send side open (a half-close is harmless to etcd, but explicit is better)
        done.wait()

    multi = channel.stream_stream(
        _WATCH_PATH,
        request_serializer=etcdkv_pb2.WatchRequest.SerializeToString,
        response_deserializer=etcdkv_pb2.WatchResponse.FromString,
    )
    call = multi(
        requests(),
        timeout=timeout,
        metadata=tuple(metadata) if metadata is not None else None,
    )
    if not call.add_callback(done.set):
        done.set()  # already over

    def events() -> Iterator[etcdkv_pb2.Event]:
        try:
            for resp in cast(Iterator[etcdkv_pb2.WatchResponse], call):
                if resp.canceled:
                    raise EtcdClusterError(
                        f"etcd canceled the watch: {resp.cancel_reason or 'no reason'} "
                        f"(compact_revision={resp.compact_revision})"
                    )
                yield from resp.events
        finally:
            done.set()

    return call, events()


def status(channel: grpc.Channel, timeout: float = 2.0) -> etcd_pb2.StatusResponse:
    """Call ``/etcdserverpb.Maintenance/Status`` (answered locally, even without a leader)."""
    call = channel.unary_unary(
        _STATUS_PATH,
        request_serializer=etcd_pb2.StatusRequest.SerializeToString,
        response_deserializer=etcd_pb2.StatusResponse.FromString,
    )
    return cast(etcd_pb2.StatusResponse, call(etcd_pb2.StatusRequest(), timeout=timeout))


def member_list(
    channel: grpc.Channel, timeout: float = 2.0, linearizable: bool = False
) -> etcd_pb2.MemberListResponse:
    """Call ``/etcdserverpb.Cluster/MemberList`` (``linearizable`` needs etcd >= 3.5)."""
    call = channel.unary_unary(
        _MEMBER_LIST_PATH,
        request_serializer=etcd_pb2.MemberListRequest.SerializeToString,
        response_deserializer=etcd_pb2.MemberListResponse.FromString,
    )
    return cast(
        etcd_pb2.MemberListResponse,
        call(etcd_pb2.MemberListRequest(linearizable=linearizable), timeout=timeout),
    )
