"""A real DNS server on loopback (dnsmasq) whose records tests change under load.

``DnsServer({"pods.eagle.test": ["127.0.0.2", "127.0.0.3"]})`` starts
``dnsmasq --keep-in-foreground`` on ``127.0.0.1`` and a free high port, answering only
from its own hosts file (``--no-resolv --no-hosts --addn-hosts=<file>``: nothing is
forwarded anywhere). :meth:`DnsServer.set` rewrites the file and sends SIGHUP, which
makes dnsmasq re-read it and clear its cache; :meth:`DnsServer.stop` ends the process
(an outage) and :meth:`DnsServer.start` brings it back on the same port. dnsmasq is
started with ``subprocess.Popen`` (no fork of this gRPC-threaded process: no
``preexec_fn``/``user=``) and ended by its own pid. Needs ``dnsmasq`` (Debian package
``dnsmasq``; :func:`dnsmasq_unavailable_reason` says why not) and ``dnspython`` to check
answers.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType

from eagle.testing.processes import find_tool

__all__ = ["DnsServer", "DnsServerError", "dnsmasq_unavailable_reason"]

HOST = "127.0.0.1"


class DnsServerError(RuntimeError):
    """dnsmasq could not start or answer."""


def _dnsmasq() -> str | None:
    try:
        return find_tool("dnsmasq")
    except Exception:
        return None


def dnsmasq_unavailable_reason() -> str | None:
    """Why :class:`DnsServer` cannot run here (None: it can)."""
    if _dnsmasq() is None:
        return "dnsmasq is not installed (Debian: apt-get install dnsmasq)"
    try:
        import dns.resolver  # noqa: F401
    except ImportError:
        return "dnspython is not installed (pip install 'eagle-grpc[dns]')"
    return None


def _free_udp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((HOST, 0))
            port = int(u.getsockname()[1])
            if port < 20000:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((HOST, port))
                except OSError:
                    continue
            return port
    raise DnsServerError("no free port for dnsmasq")


class DnsServer:
    """dnsmasq on 127.0.0.1 serving A/AAAA records from a file (see the module docstring).

    ``records`` maps a name to its addresses (IPv4 and/or IPv6); ``ttl`` is the TTL of
    every answer (dnsmasq's ``--local-ttl``). ``srv`` maps an SRV name
    (``_grpc._tcp.svc.test``) to ``(target host, port)`` pairs; SRV records are fixed for
    the server's life (dnsmasq reads them from its command line).
    """

    def __init__(
        self,
        records: Mapping[str, Sequence[str]] | None = None,
        *,
        srv: Mapping[str, Sequence[tuple[str, int]]] | None = None,
        ttl: int = 1,
        start: bool = True,
        start_timeout: float = 10.0,
    ) -> None:
        reason = dnsmasq_unavailable_reason()
        if reason is not None:
            raise DnsServerError(reason)
        self.ttl = ttl
        self.srv = {name: tuple(targets) for name, targets in (srv or {}).items()}
        self.start_timeout = start_timeout
        self._dir = tempfile.mkdtemp(prefix="eagle-dns-")
        os.chmod(self._dir, 0o755)  # dnsmasq re-reads the file as its own user
        self.hosts_file = os.path.join(self._dir, "hosts")
        self.log_path = os.path.join(self._dir, "dnsmasq.log")
        self.port = _free_udp_port()
        self._records: dict[str, tuple[str, ...]] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._write(records or {})
        atexit.register(self.close)
        if start:
            self.start()

    @property
    def nameserver(self) -> str:
        """``127.0.0.1:<port>``, as ``discovery.dns.nameservers`` takes it."""
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running dnsmasq's pid, or None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def records(self) -> dict[str, tuple[str, ...]]:
        """The records being served."""
        return dict(self._records)

    def _write(self, records: Mapping[str, Sequence[str]]) -> None:
        lines = []
        for name, addrs in records.items():
            lines += [f"{addr} {name}" for addr in addrs]
        tmp = self.hosts_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.hosts_file)
        self._records = {k: tuple(v) for k, v in records.items()}

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start dnsmasq (again, on the same port) and wait until it answers."""
        with self._lock:
            if self._closed:
                raise DnsServerError("DNS server is closed")
            if self.pid is not None:
                return
            argv = [
                str(_dnsmasq()),
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--local=/#/",  # every name is local: NODATA/NXDOMAIN, never REFUSED
                f"--addn-hosts={self.hosts_file}",
                f"--listen-address={HOST}",
                "--bind-interfaces",
                f"--port={self.port}",
                f"--local-ttl={self.ttl}",
                "--cache-size=0",
                "--pid-file=",
                "--log-facility=-",
                "--log-queries",
                "--user=root",
                "--group=root",
            ]
            argv += [
                f"--srv-host={name},{host},{port}"
                for name, targets in self.srv.items()
                for host, port in targets
            ]
            log = open(self.log_path, "ab")  # noqa: SIM115 - closed after the process ends
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                )
            finally:
                log.close()
        self._wait_answering()

    def _wait_answering(self) -> None:
        import dns.exception
        import dns.message
        import dns.query

        deadline = time.monotonic() + self.start_timeout
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                raise DnsServerError(f"dnsmasq exited early:\n{self.log_tail()}")
            try:
                q = dns.message.make_query("ready.eagle.invalid", "A")
                dns.query.udp(q, HOST, port=self.port, timeout=0.2)
                return
            except (dns.exception.DNSException, OSError):
                if time.monotonic() > deadline:
                    raise DnsServerError(
                        f"dnsmasq not answering after {self.start_timeout} s:\n{self.log_tail()}"
                    ) from None

    def stop(self) -> None:
        """End dnsmasq (SIGTERM, then SIGKILL), by its pid: a DNS outage."""
        with self._lock:
            proc = self._proc
            self._proc = None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def close(self) -> None:
        """Stop dnsmasq and remove its files. Idempotent."""
        if self._closed:
            return
        self.stop()
        self._closed = True
        for path in (self.hosts_file, self.log_path):
            with contextlib.suppress(OSError):
                os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(self._dir)
        atexit.unregister(self.close)

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------- records
    def set(self, name: str, addrs: Sequence[str], *, wait: float = 5.0) -> None:
        """Serve ``addrs`` for ``name`` (others unchanged): rewrite the file, SIGHUP, and
        wait until dnsmasq answers with the new set."""
        records = dict(self._records)
        records[name] = tuple(addrs)
        self.set_records(records, wait=wait)

    def set_records(self, records: Mapping[str, Sequence[str]], *, wait: float = 5.0) -> None:
        """Serve exactly ``records``: rewrite the file, SIGHUP, wait for the new answers."""
        self._write(records)
        pid = self.pid
        if pid is None:
            return  # stopped: the new records are served once it starts
        os.kill(pid, signal.SIGHUP)
        if wait > 0:
            for name, addrs in self._records.items():
                self.wait_answer(name, addrs, wait)

    def query(self, name: str) -> tuple[str, ...]:
        """The A and AAAA addresses dnsmasq answers for ``name`` now (sorted)."""
        import dns.message
        import dns.query
        import dns.rdatatype

        out: list[str] = []
        for rdtype in ("A", "AAAA"):
            q = dns.message.make_query(name, rdtype)
            resp = dns.query.udp(q, HOST, port=self.port, timeout=1.0)
            for rrset in resp.answer:
                if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    out += [rd.address for rd in rrset]
        return tuple(sorted(out))

    def wait_answer(self, name: str, addrs: Sequence[str], timeout: float = 5.0) -> None:
        """Wait until ``name`` resolves to exactly ``addrs``."""
        want = tuple(sorted(addrs))
        deadline = time.monotonic() + timeout
        got: tuple[str, ...] = ()
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                got = self.query(name)
                if got == want:
                    return
            time.sleep(0.02)
        raise DnsServerError(f"{name} still answers {got}, not {want}, after {timeout} s")

    def log_tail(self, lines: int = 20) -> str:
        """The end of dnsmasq's log."""
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except OSError:
            return ""
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
