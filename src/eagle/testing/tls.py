"""Real certificates and TLS test servers for eagle's TLS tests and docs.

Needs ``cryptography`` (a dev dependency)::

    ca = CertAuthority()
    server_cert = ca.issue("member.test", dns=["member.test"], ips=["127.0.0.1"])
    with TlsServer(server_cert, tmpdir) as srv:          # an echo server speaking TLS
        creds = grpc.ssl_channel_credentials(ca.cert_pem)
        ch = eagle.secure_channel([srv.endpoint], creds)

Certificates use ECDSA P-256 keys and SHA-256 signatures; a CA issues leaf certificates
for servers (``serverAuth``) or clients (``clientAuth``), valid now or already expired.
Server processes are signalled only through their own ``Popen`` handle.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertAuthority", "CertPair", "TlsServer"]

_SRC_DIR = str(Path(__file__).resolve().parents[2])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class CertPair:
    """A PEM certificate and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: str | os.PathLike[str], name: str) -> tuple[str, str]:
        """Write ``name.crt`` and ``name.key`` into ``directory``; return both paths."""
        base = Path(directory)
        cert = base / f"{name}.crt"
        key = base / f"{name}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        key.chmod(0o600)
        return str(cert), str(key)


class CertAuthority:
    """A self-signed test CA that issues server and client certificates."""

    def __init__(self, name: str = "eagle test CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate (what clients and servers trust)."""
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: str | os.PathLike[str], name: str = "ca") -> str:
        """Write the CA certificate to ``directory/name.crt``; return its path."""
        path = Path(directory) / f"{name}.crt"
        path.write_bytes(self.cert_pem)
        return str(path)

    def issue(
        self,
        common_name: str,
        *,
        dns: Sequence[str] = ("localhost",),
        ips: Sequence[str] = ("127.0.0.1",),
        client: bool = False,
        expired: bool = False,
    ) -> CertPair:
        """Issue a leaf certificate.

        ``dns`` and ``ips`` become subject alternative names (what host name checks
        match). ``client`` issues a ``clientAuth`` certificate instead of ``serverAuth``.
        ``expired`` makes one whose validity ended a day ago.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        if expired:
            not_before, not_after = now - datetime.timedelta(days=10), now - datetime.timedelta(1)
        else:
            not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(9)
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return CertPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


class TlsServer:
    """One :mod:`eagle.testing.server` process serving TLS (or mutual TLS) on loopback.

    ``client_ca`` (PEM) turns on mutual TLS: clients must present a certificate it
    signed. ``endpoint`` is ``127.0.0.1:PORT``. :meth:`close` kills the process.
    """

    def __init__(
        self,
        cert: CertPair,
        directory: str | os.PathLike[str] | None = None,
        *,
        client_ca: bytes | None = None,
        name: str = "t0",
        host: str = "127.0.0.1",
        start_timeout: float = 15.0,
    ) -> None:
        self._tmp = None if directory is not None else tempfile.TemporaryDirectory()
        base = Path(directory if directory is not None else self._tmp.name)  # type: ignore[union-attr]
        cert_path, key_path = cert.write(base, f"{name}-server")
        cmd = [
            sys.executable,
            "-m",
            "eagle.testing.server",
            "--name",
            name,
            "--host",
            host,
            "--port",
            "0",
            "--workers",
            "8",
            "--parent",
            str(os.getpid()),
            "--tls-cert",
            cert_path,
            "--tls-key",
            key_path,
        ]
        if client_ca is not None:
            ca_path = base / f"{name}-client-ca.crt"
            ca_path.write_bytes(client_ca)
            cmd += ["--tls-client-ca", str(ca_path)]
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = _SRC_DIR + (
            os.pathsep + env["PYTHONPATH"] if "PYTHONPATH" in env else ""
        )
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        self._proc = subprocess.Popen(cmd, stdout=self._out, stderr=self._err, env=env)
        self.name = name
        self.port = self._wait_ready(start_timeout)
        self.endpoint = f"{host}:{self.port}"

    def _wait_ready(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = os.pread(self._out.fileno(), 4096, 0).decode("utf-8", "replace")
            for line in data.splitlines(keepends=True):
                if line.startswith("READY ") and line.endswith("\n"):
                    return int(line.split()[1].split(",")[0])
            if self._proc.poll() is not None:
                break
            time.sleep(0.02)
        err = os.pread(self._err.fileno(), 4000, 0).decode("utf-8", "replace").strip()
        self.close()
        raise RuntimeError(f"TLS test server {self.name} did not start: {err or 'timeout'}")

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self._proc.pid

    def close(self) -> None:
        """Kill the server (by its own handle) and remove its files. Idempotent."""
        if self._proc.poll() is None:
            self._proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)
        for f in (self._out, self._err):
            if not f.closed:
                f.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> TlsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
