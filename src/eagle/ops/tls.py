"""TLS helpers: channel credentials from PEM files, and plain-words reasons for TLS errors.

grpcio reports a failed TLS handshake inside a long ``UNAVAILABLE`` detail string, e.g.
``... Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: ...
CERTIFICATE_VERIFY_FAILED: certificate has expired``. :func:`explain_tls_error` turns
such text into a short reason (used by the ``eagle`` CLI); eagle's status table and
call errors keep grpc's full text, which already names the cause.
"""

from __future__ import annotations

import os

import grpc

__all__ = ["explain_tls_error", "load_credentials"]


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ValueError(f"{what} {os.fspath(path)!r}: cannot read: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{what} {os.fspath(path)!r}: not a PEM file")
    return data


def load_credentials(
    cacert: str | os.PathLike[str] | None = None,
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
) -> grpc.ChannelCredentials:
    """``grpc.ssl_channel_credentials`` from PEM files.

    ``cacert``: the CA bundle to verify servers with (None: the system roots).
    ``cert`` and ``key``: the client certificate and key for mutual TLS (both or
    neither). Raises ``ValueError`` naming the file when one cannot be read or is not
    PEM. The key's content never appears in errors.
    """
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs its key: give both --cert and --key")
    root = _read(cacert, "CA file") if cacert is not None else None
    chain = _read(cert, "certificate file") if cert is not None else None
    private = _read(key, "key file") if key is not None else None
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=private, certificate_chain=chain
    )


#: (marker in grpc's text, reason in plain words), first match wins
_REASONS: tuple[tuple[str, str], ...] = (
    ("certificate has expired", "TLS: the server's certificate has expired"),
    ("certificate is not yet valid", "TLS: the server's certificate is not valid yet"),
    (
        "unable to get local issuer certificate",
        "TLS: the server's certificate is not signed by a trusted CA (check --cacert)",
    ),
    (
        "self signed certificate",
        "TLS: the server's certificate is self-signed and not trusted (check --cacert)",
    ),
    (
        "self-signed certificate",
        "TLS: the server's certificate is self-signed and not trusted (check --cacert)",
    ),
    (
        "hostname verification check failed",
        "TLS: the server's certificate does not match the host name "
        "(set --tls-server-name / authorities=)",
    ),
    (
        "no match found for server name",
        "TLS: the server's certificate does not match the host name "
        "(set --tls-server-name / authorities=)",
    ),
    ("wrong_version_number", "TLS: the server does not speak TLS (a plaintext server?)"),
    ("unsupported certificate purpose", "TLS: a certificate is not valid for this use"),
    ("certificate_verify_failed", "TLS: the server's certificate failed verification"),
    ("handshake failed", "TLS: the handshake failed"),
)


def explain_tls_error(text: str | None, tls: bool = True) -> str | None:
    """A short plain-words reason for a TLS failure found in ``text`` (grpc's status
    details or eagle's ``last_error``), or None when it is not a recognised TLS error.

    With ``tls`` True (the channel uses TLS) a connection closed during connect gets the
    hint that the server may require a client certificate; with ``tls`` False it gets
    the hint that the server may expect TLS.
    """
    if not text:
        return None
    low = text.lower()
    for marker, reason in _REASONS:
        if marker in low:
            return reason
    if "socket closed" in low and "failed to connect" in low:
        if tls:
            return (
                "connection closed during the TLS handshake "
                "(does the server require a client certificate? give --cert/--key)"
            )
        return "connection closed while connecting (does the server expect TLS? give --cacert)"
    return None
