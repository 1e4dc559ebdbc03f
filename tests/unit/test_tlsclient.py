"""Real mutual-TLS handshakes on loopback with the certificates pymachine generates."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pymachine.machine import certs
from pymachine.machine.certs import CertPaths, bootstrap_certificates, generate_ca, generate_server_cert
from pymachine.machine.errors import MachineError
from pymachine.machine.tlsclient import client_tls_context, server_tls_context

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tlspki")
    paths = CertPaths.in_dir(root / "certs")
    bootstrap_certificates(paths, log=lambda _m: None)
    files = {"ca": paths.ca_cert, "cert": paths.client_cert, "key": paths.client_key}
    for name, sans, swarm in (
        ("server", ["127.0.0.1"], False),
        ("wrongip", ["10.9.9.9", "node.example"], False),
        ("swarm", ["127.0.0.1"], True),
    ):
        generate_server_cert(paths, root / f"{name}.pem", root / f"{name}-key.pem", "t.m1",
                             sans, swarm_master=swarm)
        files[name], files[f"{name}_key"] = root / f"{name}.pem", root / f"{name}-key.pem"
    other = root / "other"
    other.mkdir()
    generate_ca(other / "ca.pem", other / "ca-key.pem", "intruder")
    other_paths = CertPaths.in_dir(other)
    generate_server_cert(other_paths, other / "server.pem", other / "server-key.pem", "x",
                         ["127.0.0.1"])
    files["foreign_server"], files["foreign_server_key"] = other / "server.pem", other / "server-key.pem"
    return files


@dataclass
class EchoServer:
    """One-connection TLS echo server on 127.0.0.1; records how the handshake went."""

    ctx: ssl.SSLContext
    port: int = 0
    error: BaseException | None = None
    peer_org: str | None = None
    _sock: socket.socket = field(init=False)
    _thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.settimeout(TIMEOUT)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(1)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self._sock.accept()
            conn.settimeout(TIMEOUT)
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                peer = tls.getpeercert()
                if peer:
                    self.peer_org = dict(x[0] for x in peer["subject"]).get("organizationName")
                data = tls.recv(16)
                tls.sendall(b"pong:" + data)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            self.error = exc

    def close(self) -> None:
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "server thread did not finish"
        self._sock.close()


def talk(ctx: ssl.SSLContext, port: int, hostname: str) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
        ctx.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        tls.sendall(b"ping")
        return tls.recv(16)


def serve(pki: dict[str, Path], cert: str = "server") -> EchoServer:
    return EchoServer(server_tls_context(pki["ca"], pki[cert], pki[f"{cert}_key"]))


def test_mutual_tls_handshake_succeeds(pki: dict[str, Path]) -> None:
    server = serve(pki)
    try:
        ctx = client_tls_context(pki["ca"], pki["cert"], pki["key"])
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
        assert talk(ctx, server.port, "127.0.0.1") == b"pong:ping"
    finally:
        server.close()
    assert server.error is None
    assert server.peer_org == f"{certs.current_user_org()}.<bootstrap>"


def test_localhost_dns_san_matches(pki: dict[str, Path]) -> None:
    server = serve(pki)
    try:
        ctx = client_tls_context(pki["ca"], pki["cert"], pki["key"])
        assert talk(ctx, server.port, "localhost") == b"pong:ping"
    finally:
        server.close()
    assert server.error is None


def test_chain_passes_strict_x509_checks(pki: dict[str, Path]) -> None:
    """Python 3.13 turns on VERIFY_X509_STRICT by default; our certs must survive it."""
    sctx = server_tls_context(pki["ca"], pki["server"], pki["server_key"])
    sctx.verify_flags |= ssl.VERIFY_X509_STRICT
    server = EchoServer(sctx)
    try:
        ctx = client_tls_context(pki["ca"], pki["cert"], pki["key"])
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        assert talk(ctx, server.port, "127.0.0.1") == b"pong:ping"
    finally:
        server.close()
    assert server.error is None


def test_server_rejects_client_without_certificate(pki: dict[str, Path]) -> None:
    server = serve(pki)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(pki["ca"]))
    try:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            # TLS 1.3 reports the server's refusal on the first read
            reply = talk(ctx, server.port, "127.0.0.1")
            assert reply != b"pong:ping"
            raise ConnectionError("server closed the connection")
    finally:
        server.close()
    assert isinstance(server.error, ssl.SSLError)
    assert server.peer_org is None


def test_server_rejects_client_cert_from_foreign_ca(pki: dict[str, Path]) -> None:
    server = serve(pki)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(pki["ca"]))
    ctx.load_cert_chain(str(pki["foreign_server"]), str(pki["foreign_server_key"]))
    try:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            reply = talk(ctx, server.port, "127.0.0.1")
            assert reply != b"pong:ping"
            raise ConnectionError("server closed the connection")
    finally:
        server.close()
    assert isinstance(server.error, ssl.SSLError)


def test_client_rejects_server_cert_without_dialled_ip(pki: dict[str, Path]) -> None:
    server = serve(pki, "wrongip")
    try:
        ctx = client_tls_context(pki["ca"], pki["cert"], pki["key"])
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            talk(ctx, server.port, "127.0.0.1")
        assert "mismatch" in info.value.verify_message.lower()
    finally:
        server.close()
    # the same certificate is fine for a name it does carry
    server = serve(pki, "wrongip")
    try:
        assert talk(ctx, server.port, "node.example") == b"pong:ping"
    finally:
        server.close()


def test_client_rejects_server_from_foreign_ca(pki: dict[str, Path]) -> None:
    server = serve(pki, "foreign_server")
    try:
        ctx = client_tls_context(pki["ca"], pki["cert"], pki["key"])
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            talk(ctx, server.port, "127.0.0.1")
        assert info.value.verify_code == 20  # unable to get local issuer certificate
    finally:
        server.close()


def test_client_auth_eku_decides_who_may_act_as_client(pki: dict[str, Path]) -> None:
    """A swarm master's server cert (serverAuth+clientAuth) may dial agents; a plain one may not."""
    server = serve(pki)
    try:
        ctx = client_tls_context(pki["ca"], pki["swarm"], pki["swarm_key"])
        assert talk(ctx, server.port, "127.0.0.1") == b"pong:ping"
    finally:
        server.close()
    assert server.error is None and server.peer_org == "t.m1"

    server = serve(pki)
    try:
        ctx = client_tls_context(pki["ca"], pki["server"], pki["server_key"])
        with pytest.raises((ssl.SSLError, ConnectionError)):
            reply = talk(ctx, server.port, "127.0.0.1")
            assert reply != b"pong:ping"
            raise ConnectionError("server closed the connection")
    finally:
        server.close()
    assert isinstance(server.error, ssl.SSLError)
    assert isinstance(server.error, ssl.SSLCertVerificationError)
    assert "unsuitable certificate purpose" in server.error.verify_message


def test_client_context_errors_are_one_line(pki: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(MachineError, match="Error reading CA certificate") as info:
        client_tls_context(tmp_path / "nope.pem", pki["cert"], pki["key"])
    assert "\n" not in str(info.value)
    with pytest.raises(MachineError, match="Error reading client certificate"):
        client_tls_context(pki["ca"], pki["cert"], pki["server_key"])  # mismatched key


def test_certs_reexports_client_tls_context() -> None:
    assert certs.client_tls_context is client_tls_context


def test_importing_tlsclient_does_not_import_cryptography() -> None:
    code = ("import sys, pymachine.machine.tlsclient; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, env=env, cwd=REPO)
    assert out.stdout.strip() == "[]"
    # and the control: machine.certs does pull it in, so the probe can see it
    code = code.replace("pymachine.machine.tlsclient", "pymachine.machine.certs")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, env=env, cwd=REPO)
    assert "'cryptography'" in out.stdout
