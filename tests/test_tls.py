"""TLS and mutual TLS with real certificates made in the test (``cryptography``).

A valid chain works (sync and asyncio, with the authority override for endpoints given
by IP); a wrong CA, an expired certificate and a wrong host name each leave the member
UNREACHABLE with a ``last_error`` naming the reason, and calls fail with UNAVAILABLE
whose details say why. Call credentials never show up in logs, status or errors.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from _support import wait_until

import eagle
import eagle.aio
from eagle import State
from eagle.ops.tls import explain_tls_error, load_credentials
from eagle.testing.tls import CertAuthority, CertPair, TlsServer
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

#: probes every 0.2 s, 0.5 s deadline, 2 misses: a bad member is UNREACHABLE in ~0.5 s
FAST = {"health": {"interval": 0.2, "timeout": 0.5, "unhealthy_threshold": 2}}
HOST = "member.test"
SECRET = "s3cr3t-T0KEN-4f9a2"


class Pki:
    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.ca = CertAuthority("eagle test CA")
        self.other_ca = CertAuthority("some other CA")
        # the server certificate names a host, not the IP: clients need the override
        self.server = self.ca.issue(HOST, dns=[HOST], ips=[])
        self.expired = self.ca.issue(HOST, dns=[HOST], ips=[], expired=True)
        self.client = self.ca.issue("client-1", dns=[], ips=[], client=True)
        self.ca_file = self.ca.write(tmp, "ca")
        self.other_ca_file = self.other_ca.write(tmp, "other-ca")
        self.client_cert_file, self.client_key_file = self.client.write(tmp, "client")

    def creds(self, *, ca: bytes | None = None, client: CertPair | None = None) -> object:
        return grpc.ssl_channel_credentials(
            ca if ca is not None else self.ca.cert_pem,
            client.key_pem if client else None,
            client.cert_pem if client else None,
        )


class Servers:
    def __init__(self, pki: Pki) -> None:
        self.tls = TlsServer(pki.server, pki.dir, name="tls")
        self.expired = TlsServer(pki.expired, pki.dir, name="expired")
        self.mtls = TlsServer(pki.server, pki.dir, name="mtls", client_ca=pki.ca.cert_pem)

    def close(self) -> None:
        for s in (self.tls, self.expired, self.mtls):
            s.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def servers(pki: Pki) -> Iterator[Servers]:
    s = Servers(pki)
    try:
        yield s
    finally:
        s.close()


def _echo(ch: grpc.Channel) -> echo_pb2.EchoResponse:
    stub = echo_pb2_grpc.EchoStub(ch)
    resp: echo_pb2.EchoResponse = stub.Unary(echo_pb2.EchoRequest(message="hi"), timeout=3)
    return resp


def _settled(ch: eagle.Channel, ep: str) -> eagle.EndpointStatus:
    wait_until(lambda: ch.status()[ep].state is not State.UNKNOWN, 5, f"a verdict on {ep}")
    return ch.status()[ep]


# --------------------------------------------------------------------------- works
def test_server_tls_valid_chain_with_authority_override(pki: Pki, servers: Servers) -> None:
    ep = servers.tls.endpoint
    with eagle.secure_channel([ep], pki.creds(), config=FAST, authorities={ep: HOST}) as ch:
        assert _echo(ch).server == "tls"
        assert _settled(ch, ep).state is State.SERVING


def test_mutual_tls_valid_chain(pki: Pki, servers: Servers) -> None:
    ep = servers.mtls.endpoint
    creds = pki.creds(client=pki.client)
    with eagle.secure_channel([ep], creds, config=FAST, authorities={ep: HOST}) as ch:
        # the prober uses the same credentials: without the client certificate the
        # probe could not pass the mTLS handshake
        assert _settled(ch, ep).state is State.SERVING
        assert _echo(ch).server == "mtls"


def test_aio_secure_channel_tls_and_mtls(pki: Pki, servers: Servers) -> None:
    async def run() -> tuple[str, str, State]:
        t, m = servers.tls.endpoint, servers.mtls.endpoint
        auth = {t: HOST, m: HOST}
        async with eagle.aio.secure_channel([t], pki.creds(), config=FAST, authorities=auth) as a:
            r1 = await echo_pb2_grpc.EchoStub(a).Unary(echo_pb2.EchoRequest(message="a"))
        creds = pki.creds(client=pki.client)
        async with eagle.aio.secure_channel([m], creds, config=FAST, authorities=auth) as b:
            r2 = await echo_pb2_grpc.EchoStub(b).Unary(echo_pb2.EchoRequest(message="b"))
            for _ in range(100):
                if b.status()[m].state is not State.UNKNOWN:
                    break
                await asyncio.sleep(0.02)
            state = b.status()[m].state
        return r1.server, r2.server, state

    assert asyncio.run(run()) == ("tls", "mtls", State.SERVING)


# ------------------------------------------------------------------------ failures
CASES = {
    # case: (server, credentials, authority, text grpc gives, plain-words reason)
    "wrong_ca": ("tls", "other", HOST, "unable to get local issuer certificate", "trusted CA"),
    "expired": ("expired", "ca", HOST, "certificate has expired", "has expired"),
    "wrong_host": ("tls", "ca", "wrong.test", "Hostname Verification Check failed", "host name"),
    "no_override": ("tls", "ca", None, "Hostname Verification Check failed", "host name"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tls_failure_names_the_reason(pki: Pki, servers: Servers, case: str) -> None:
    server_name, ca, authority, grpc_text, reason = CASES[case]
    server: TlsServer = getattr(servers, server_name)
    ep = server.endpoint
    creds = pki.creds(ca=pki.other_ca.cert_pem if ca == "other" else pki.ca.cert_pem)
    auth = {ep: authority} if authority else None
    with eagle.secure_channel([ep], creds, config=FAST, authorities=auth) as ch:
        wait_until(lambda: ch.status()[ep].state is State.UNREACHABLE, 5, f"{case}: UNREACHABLE")
        st = ch.status()[ep]
        assert st.last_error is not None and grpc_text in st.last_error
        assert reason in (explain_tls_error(st.last_error) or "")
        with pytest.raises(grpc.RpcError) as info:
            _echo(ch)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert grpc_text in (info.value.details() or "")


def test_mtls_without_client_certificate_fails_cleanly(pki: Pki, servers: Servers) -> None:
    ep = servers.mtls.endpoint
    with eagle.secure_channel([ep], pki.creds(), config=FAST, authorities={ep: HOST}) as ch:
        wait_until(lambda: ch.status()[ep].state is State.UNREACHABLE, 5, "UNREACHABLE")
        hint = explain_tls_error(ch.status()[ep].last_error, tls=True) or ""
        assert "client certificate" in hint
        with pytest.raises(grpc.RpcError) as info:
            _echo(ch)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_mixed_members_route_around_the_bad_one(pki: Pki, servers: Servers) -> None:
    good, bad = servers.tls.endpoint, servers.expired.endpoint
    auth = {good: HOST, bad: HOST}
    with eagle.secure_channel([good, bad], pki.creds(), config=FAST, authorities=auth) as ch:
        wait_until(lambda: ch.status()[bad].state is State.UNREACHABLE, 5, "expired out")
        assert ch.status()[good].state is State.SERVING
        assert {_echo(ch).server for _ in range(6)} == {"tls"}


# ---------------------------------------------------------------------- secrets
class _TokenAuth(grpc.AuthMetadataPlugin):  # type: ignore[misc]
    def __call__(self, context: object, callback: grpc.AuthMetadataPluginCallback) -> None:
        callback((("authorization", f"Bearer {SECRET}"),), None)


def test_call_credentials_never_leak(
    pki: Pki, servers: Servers, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    good, bad = servers.tls.endpoint, servers.expired.endpoint
    creds = grpc.composite_channel_credentials(
        pki.creds(), grpc.metadata_call_credentials(_TokenAuth(), name="token")
    )
    auth = {good: HOST, bad: HOST}
    with caplog.at_level(logging.DEBUG):
        with eagle.secure_channel([good, bad], creds, config=FAST, authorities=auth) as ch:
            wait_until(lambda: ch.status()[bad].state is State.UNREACHABLE, 5, "expired out")
            stub = echo_pb2_grpc.EchoStub(ch)
            # the token does reach the server (the echo server reflects one metadata key)
            resp = stub.Unary(echo_pb2.EchoRequest(message="meta:authorization"), timeout=3)
            assert resp.message == f"Bearer {SECRET}"
            # a call that fails everywhere: its error must not carry the token either
            errors = []
            ch.update_endpoints([bad])
            try:
                stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=3)
            except grpc.RpcError as err:
                errors.append(f"{err} {err.details()} {err.debug_error_string()}")
            assert errors, "the call to the expired member should fail"
            snap = ch.status()
            shown = repr(snap) + snap.describe() + "".join(repr(s) for s in snap.values())
            from eagle.ops.cli import status_table

            shown += status_table(snap, membership=True, tls=True)
        time.sleep(0.1)
    assert SECRET not in caplog.text
    assert SECRET not in shown
    assert SECRET not in "".join(errors)
    assert caplog.records, "expected eagle to log something at DEBUG"


# -------------------------------------------------------------------------- CLI
def test_cli_with_tls_flags(pki: Pki, servers: Servers) -> None:
    eagle_cli = [sys.executable, "-m", "eagle.ops.cli"]
    ok = subprocess.run(
        [
            *eagle_cli,
            "probe",
            "--endpoints",
            f"{servers.tls.endpoint},{servers.mtls.endpoint}",
            "--cacert",
            pki.ca_file,
            "--cert",
            pki.client_cert_file,
            "--key",
            pki.client_key_file,
            "--tls-server-name",
            HOST,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("is healthy") == 2
    bad = subprocess.run(
        [
            *eagle_cli,
            "status",
            "--endpoints",
            servers.tls.endpoint,
            "--cacert",
            pki.other_ca_file,
            "--tls-server-name",
            HOST,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 1
    assert "not signed by a trusted CA" in bad.stdout
    assert bad.stderr.strip().count("\n") == 0, bad.stderr  # one line
    assert "Traceback" not in bad.stderr
    assert "not signed by a trusted CA" in bad.stderr


def test_load_credentials_errors(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="give both --cert and --key"):
        load_credentials(pki.ca_file, pki.client_cert_file, None)
    with pytest.raises(ValueError, match="cannot read"):
        load_credentials(str(tmp_path / "missing.pem"))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ValueError, match="not a PEM file"):
        load_credentials(str(junk))
    assert load_credentials(pki.ca_file, pki.client_cert_file, pki.client_key_file) is not None


def test_explain_tls_error_texts() -> None:
    assert explain_tls_error(None) is None
    assert explain_tls_error("probe DEADLINE_EXCEEDED: Deadline Exceeded") is None
    plain = (
        "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:1.2.3.4:5: Socket closed"
    )
    assert "expect TLS" in (explain_tls_error(plain, tls=False) or "")
    assert "client certificate" in (explain_tls_error(plain, tls=True) or "")
    assert "does not speak TLS" in (explain_tls_error("SSL routines:WRONG_VERSION_NUMBER") or "")
