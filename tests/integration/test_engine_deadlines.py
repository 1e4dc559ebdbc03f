"""An engine that trickles bytes cannot hold ``version``, env's handshake or the readiness wait.

A per-read timeout never fires when one byte arrives every 50 ms; each call must
give up at its *total* deadline.  The servers here are real TLS endpoints on
loopback, built from the certificates pymachine generates.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from pymachine.machine import dockerapi
from pymachine.machine.certs import CertPaths, bootstrap_certificates, generate_server_cert
from pymachine.machine.errors import MachineError
from pymachine.machine.tlsclient import server_tls_context

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

DRIP = 0.05  # seconds between bytes


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("pki")
    paths = CertPaths.in_dir(root / "certs")
    bootstrap_certificates(paths, log=lambda _m: None)
    generate_server_cert(paths, root / "server.pem", root / "server-key.pem", "t.m", ["127.0.0.1"])
    return SimpleNamespace(ca_cert=paths.ca_cert, client_cert=paths.client_cert,
                           client_key=paths.client_key, server=root / "server.pem",
                           server_key=root / "server-key.pem")


class Trickler:
    """Loopback server; ``mode`` 'http' completes TLS then drips an endless HTTP answer,
    'handshake' relays a real TLS server's handshake to the client one byte at a time."""

    def __init__(self, pki: SimpleNamespace, mode: str) -> None:
        self.ctx = server_tls_context(pki.ca_cert, pki.server, pki.server_key)
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self._spawn(self._accept)

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"

    def _spawn(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.5)
        try:
            if self.mode == "http":
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(0.5)
                    tls.recv(4096)
                    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100000:
                        if self.stop.is_set():
                            return
                        tls.sendall(bytes([byte]))
                        time.sleep(DRIP)
            else:
                self._relay_slowly(conn)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def _relay_slowly(self, client: socket.socket) -> None:
        """A real TLS server behind a relay that passes its bytes on one at a time."""
        a, b = socket.socketpair()
        self._spawn(self._real_tls, b)
        a.settimeout(0.1)
        client.settimeout(0.1)
        while not self.stop.is_set():
            try:
                data = client.recv(65536)
                if not data:
                    return
                a.sendall(data)
            except TimeoutError:
                pass
            try:
                data = a.recv(65536)
            except TimeoutError:
                continue
            for byte in data:
                if self.stop.is_set():
                    return
                client.sendall(bytes([byte]))
                time.sleep(DRIP)

    def _real_tls(self, sock: socket.socket) -> None:
        try:
            with self.ctx.wrap_socket(sock, server_side=True):
                self.stop.wait(30)
        except (OSError, ssl.SSLError):
            pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for t in self.threads:
            t.join(timeout=5)


@pytest.fixture(params=["http", "handshake"])
def trickler(request, pki):
    server = Trickler(pki, request.param)
    yield server
    server.close()


def _elapsed(fn) -> float:
    start = time.monotonic()
    with pytest.raises((OSError, MachineError)):
        fn()
    return time.monotonic() - start


def test_engine_version_gives_up_at_its_total_deadline(trickler, pki):
    took = _elapsed(lambda: dockerapi.engine_version(trickler.url, pki.ca_cert, pki.client_cert,
                                                      pki.client_key, timeout=1.0))
    assert took < 2.5, f"engine_version took {took:.1f}s with a 1s deadline"


def test_tls_handshake_gives_up_at_its_total_deadline(pki):
    server = Trickler(pki, "handshake")
    try:
        took = _elapsed(lambda: dockerapi.tls_handshake(server.url, pki.ca_cert, pki.client_cert,
                                                         pki.client_key, timeout=1.0))
    finally:
        server.close()
    assert took < 2.5, f"tls_handshake took {took:.1f}s with a 1s deadline"


def test_engine_readiness_wait_is_bounded(trickler, pki):
    from pymachine.machine.provision import wait_for_engine

    machine = SimpleNamespace(driver=SimpleNamespace(engine_url=lambda: trickler.url),
                              tls=lambda: pki)
    start = time.monotonic()
    with pytest.raises(MachineError, match="did not answer within 2s"):
        wait_for_engine(machine, timeout=2.0)
    took = time.monotonic() - start
    assert took < 4.5, f"wait_for_engine took {took:.1f}s with a 2s deadline"


def test_a_prompt_engine_still_answers(pki, tmp_path: Path):
    """Control: the deadline does not break a normal answer."""
    ctx = server_tls_context(pki.ca_cert, pki.server, pki.server_key)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)

    def serve() -> None:
        conn, _ = sock.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(4096)
            body = b'{"Version": "27.1.0"}'
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    url = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    assert dockerapi.engine_version(url, pki.ca_cert, pki.client_cert, pki.client_key, timeout=5) == "27.1.0"
    t.join(timeout=5)
    sock.close()
