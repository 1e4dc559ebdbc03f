"""TLS contexts for talking to a machine's Docker daemon.

This module uses only the standard ``ssl`` module on purpose: it sits on the
hot path of ``pymachine env``/``ls``, and importing ``cryptography`` there would
cost tens of milliseconds per command. Certificate *generation* lives in
:mod:`machine.certs`.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pymachine.machine.errors import MachineError

__all__ = ["client_tls_context", "server_tls_context"]


def _describe(exc: BaseException) -> str:
    """One line, no paths to key material beyond what the caller passed."""
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def client_tls_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """Mutual-TLS client context, as Docker's ``--tlsverify`` mode behaves.

    The server must chain to ``ca`` (and only to it: system roots are not
    loaded, so a stray ``SSL_CERT_FILE`` cannot widen trust), its SANs must
    cover the dialled host, and we present ``cert``/``key`` as client identity.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise MachineError(f"Error reading CA certificate {ca}: {_describe(exc)}") from exc
    try:
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (OSError, ssl.SSLError) as exc:
        raise MachineError(
            f"Error reading client certificate {cert} / key {key}: {_describe(exc)}"
        ) from exc
    return ctx


def server_tls_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """Server context that requires a client certificate signed by ``ca``.

    This mirrors ``dockerd --tlsverify``; it lets tests and local fakes stand
    up a daemon-like TLS endpoint from the same files pymachine generates.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=str(ca))
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (OSError, ssl.SSLError) as exc:
        raise MachineError(f"Error loading server TLS files: {_describe(exc)}") from exc
    return ctx
