"""The two things pymachine asks a Docker engine directly: a TLS handshake and /version.

Standard library only (ssl + http.client): this is on the path of ``env`` and
``ls``, which must start fast.  Every call takes a timeout that bounds the *whole*
call (connect, handshake, request, answer), not each read: an engine (or anything
squatting on its port) that trickles one byte a second cannot hold a command for
minutes.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from pathlib import Path

from pymachine.machine.errors import MachineError
from pymachine.machine.tlsclient import client_tls_context


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
    deadline = time.monotonic() + timeout
    _connect_tls(url, tls_context(ca, cert, key), deadline).close()


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def _connect_tls(url: str, ctx: ssl.SSLContext, deadline: float) -> ssl.SSLSocket:
    """A TLS connection whose connect and handshake together finish by ``deadline``.

    CPython's handshake treats the socket timeout as a deadline for the whole
    handshake (not per read), so the remaining budget is all it gets.
    """
    host, port = split_url(url)
    raw = socket.create_connection((host, port), timeout=_remaining(deadline))
    try:
        raw.settimeout(_remaining(deadline))
        return ctx.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise


_CONTEXTS: dict[tuple[str, str, str], ssl.SSLContext] = {}
_CONTEXTS_LOCK = threading.Lock()


def tls_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """One client context per certificate set: ``ls`` over 50 machines sharing the
    store's CA and client cert parses those files once, not 50 times."""
    k = (str(ca), str(cert), str(key))
    with _CONTEXTS_LOCK:
        ctx = _CONTEXTS.get(k)
        if ctx is None:
            ctx = _CONTEXTS[k] = client_tls_context(ca, cert, key)
        return ctx


def engine_version(url: str, ca: Path, cert: Path, key: Path, timeout: float = 10.0) -> str:
    """The engine's version (e.g. ``20.10.24+dfsg1``) from ``GET /version`` over TLS.

    One request on a fresh connection, written by hand: http.client would add ~60 ms
    of imports (the email package) to every ``ls``.
    """
    data = https_get(url, "/version", tls_context(ca, cert, key), timeout)
    try:
        return str(json.loads(data)["Version"])
    except (ValueError, KeyError, TypeError):
        raise MachineError("engine sent an unreadable /version answer") from None


def https_get(url: str, path: str, ctx: ssl.SSLContext, timeout: float, limit: int = 1 << 20) -> bytes:
    """GET ``path`` with ``Connection: close``; returns the body of a 200 answer.

    ``timeout`` bounds the whole exchange; ``limit`` bounds what is read.
    """
    deadline = time.monotonic() + timeout
    with _connect_tls(url, ctx, deadline) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            conn.settimeout(_remaining(deadline))
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    head, sep, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not sep:
        raise MachineError(f"engine sent no complete HTTP answer to {path}")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "200":
        raise MachineError(f"engine answered {lines[0]!r} to {path}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        try:
            body = _dechunk(body)
        except ValueError:
            raise MachineError(f"engine sent a malformed chunked answer to {path}") from None
    return body


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return bytes(out)


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
