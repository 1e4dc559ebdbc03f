"""The two things pymachine asks a Docker engine directly: a TLS handshake and /version.

Standard library only (ssl + http.client): this is on the path of ``env`` and
``ls``, which must start fast.  Every call takes a timeout and is bounded.
"""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path

from machine.errors import MachineError
from machine.tlsclient import client_tls_context


def split_url(url: str) -> tuple[str, int]:
    """``tcp://host:port`` (or ``[v6]:port``) -> (host, port); parsed by hand to keep
    urllib out of ``env``'s start-up."""
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not host:
        raise MachineError(f"invalid engine URL {url!r}")
    try:
        return host, int(port_text) if port_text else 2376
    except ValueError:
        raise MachineError(f"invalid engine URL {url!r}") from None


def tls_handshake(url: str, ca: Path, cert: Path, key: Path, timeout: float = 20.0) -> None:
    """Connect and complete a mutual TLS handshake, as docker-machine's cert check did."""
    host, port = split_url(url)
    ctx = client_tls_context(ca, cert, key)
    with socket.create_connection((host, port), timeout=timeout) as raw:
        raw.settimeout(timeout)
        with ctx.wrap_socket(raw, server_hostname=host):
            pass


def engine_version(url: str, ca: Path, cert: Path, key: Path, timeout: float = 10.0) -> str:
    """The engine's version (e.g. ``20.10.24+dfsg1``) from ``GET /version`` over TLS."""
    import http.client  # ~60 ms (it pulls in the email package): not on env's path

    host, port = split_url(url)
    ctx = client_tls_context(ca, cert, key)
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
    try:
        conn.request("GET", "/version", headers={"Host": "docker"})
        resp = conn.getresponse()
        body = resp.read(1 << 20)
        if resp.status != 200:
            raise MachineError(f"engine answered HTTP {resp.status} to /version")
        return str(json.loads(body)["Version"])
    except (ValueError, KeyError):
        raise MachineError("engine sent an unreadable /version answer") from None
    finally:
        conn.close()


def describe_error(exc: BaseException) -> str:
    """A short, user-facing text for a connection/TLS failure."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"x509: {exc.verify_message}" if getattr(exc, "verify_message", None) else str(exc)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or exc.__class__.__name__
