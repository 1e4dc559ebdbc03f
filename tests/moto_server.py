"""moto's EC2 server on loopback, and a small fault-injecting proxy in front of it.

``moto_server`` runs from the venv on 127.0.0.1:<free port>; readiness is
bounded and the process is killed at teardown.  ``ApiProxy`` forwards every
request to moto, counts API actions (so a test can prove ``ls`` made one
DescribeInstances call) and can answer the first N calls of an action with
EC2's ``RequestLimitExceeded`` throttling error.  moto invents public IPs for
instances: tests must only ever dial the private addresses they pinned.

Import the fixtures into a test module: ``from moto_server import moto, moto_server``.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import pytest

MOTO_BIN = Path(sys.executable).parent / "moto_server"
READY_TIMEOUT = 30.0
THROTTLED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code>'
    b"<Message>Request limit exceeded.</Message></Error></Errors><RequestID>pmt-throttle</RequestID></Response>"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    def __init__(self, port: int, proc: subprocess.Popen) -> None:
        self.port = port
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"

    def client(self, service: str = "ec2", region: str = "us-east-1", **kw):
        import boto3

        kw.setdefault("aws_access_key_id", "testing")
        kw.setdefault("aws_secret_access_key", "testing")
        return boto3.client(service, endpoint_url=self.url, region_name=region, **kw)

    def reset(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", "/moto-api/reset")
            assert conn.getresponse().status == 200
        finally:
            conn.close()


@contextmanager
def start_moto_server(env: dict[str, str] | None = None) -> Iterator[MotoServer]:
    """Start ``moto_server`` on a free loopback port; stop it (and its children) on exit."""
    if not MOTO_BIN.exists():
        pytest.skip(f"moto_server not installed at {MOTO_BIN}")
    port = free_port()
    proc = subprocess.Popen(
        [str(MOTO_BIN), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true", **(env or {})},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode} before answering")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", "/moto-api/data.json")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            finally:
                conn.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not answer on 127.0.0.1:{port} within {READY_TIMEOUT:g}s")
            time.sleep(0.1)
        yield MotoServer(port, proc)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


class ApiProxy:
    """Forwards to moto; counts actions; throttles the first ``throttle[action]`` calls."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.calls: Counter[str] = Counter()
        self.throttle: dict[str, int] = {}
        self.throttled: Counter[str] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                self._forward()

            def do_GET(self) -> None:
                self._forward()

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                action = proxy._action(self.path, body)
                with proxy._lock:
                    proxy.calls[action] += 1
                    throttle = proxy.throttled[action] < proxy.throttle.get(action, 0)
                    if throttle:
                        proxy.throttled[action] += 1
                if throttle:
                    self._reply(503, THROTTLED, "text/xml")
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "host")}
                    headers["Host"] = f"127.0.0.1:{proxy.upstream_port}"
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self._reply(resp.status, data, resp.getheader("Content-Type") or "text/xml")
                finally:
                    conn.close()

            def _reply(self, status: int, data: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def _action(path: str, body: bytes) -> str:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace")) if body else {}
        return (form.get("Action") or query.get("Action") or [""])[0]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server per test session (reset per test by the ``moto`` fixture)."""
    with start_moto_server() as server:
        yield server


@pytest.fixture
def moto(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A freshly reset moto; this process never dials the instance metadata service."""
    moto_server.reset()
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return moto_server


@pytest.fixture
def api_proxy(moto: MotoServer) -> Iterator[ApiProxy]:
    with ApiProxy(moto.port) as proxy:
        yield proxy
