"""A port conflict is echoed by the command that started the host agent, not only logged.

The real agent process (``hostagent.launch``) runs against a real QEMU monitor (a QEMU with
no guest and a user network ``n0``, as in test_hostagent.py) and a local fake of the
engine's TLS API: ``GET /containers/json`` answers as Docker 26 does (trimmed to the fields
the agent reads; Docker Engine API v1.45, "ContainerList": Names, Ports[].IP/PrivatePort/
PublicPort/Type) and ``GET /events`` streams nothing until its ``until``; client
certificates are required, as a ``--tlsverify`` engine does.  The whole path through a
booted VM and ``pymachine start`` is in the VM tier (tests/vm/test_qemu_vm.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from pymachine.machine import hostagent

from tests.fixtures_dockerd import free_loopback_port, make_tls_material

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = [pytest.mark.integration, pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed")]


class _Engine(BaseHTTPRequestHandler):
    containers: ClassVar[list[dict]] = []

    def log_message(self, *_args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/containers/json"):
            body = json.dumps(self.containers).encode()
        elif self.path.startswith("/events"):
            time.sleep(1.0)  # no event within this test's look; the agent re-lists and follows again
            body = b""
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def machine(tmp_path: Path):
    """A machine directory as the qemu driver leaves it running: TLS client files, qmp.sock, qemu.pid."""
    machine_dir = tmp_path / "m"
    tls = make_tls_material(machine_dir)
    sock = machine_dir / "qmp.sock"
    qemu = subprocess.Popen([QEMU, "-machine", "none", "-nodefaults", "-display", "none", "-S",
                             "-netdev", "user,id=n0,restrict=on", "-qmp", f"unix:{sock},server=on,wait=off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls.server_cert, tls.server_key)
    ctx.load_verify_locations(tls.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Engine)
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline and qemu.poll() is None:
            time.sleep(0.05)
        assert sock.exists(), "QEMU made no QMP socket"
        (machine_dir / "qemu.pid").write_text(f"{qemu.pid}\n")
        yield machine_dir, server.server_address[1]
    finally:
        pid = hostagent._agent_pid(machine_dir)
        hostagent.stop(machine_dir)
        deadline = time.monotonic() + 10
        while pid is not None and os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid is not None and os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGKILL)
        server.shutdown()
        server.server_close()
        qemu.kill()
        qemu.wait(timeout=10)


def test_the_starting_command_echoes_this_runs_conflicts_once_the_agent_looked(machine) -> None:
    machine_dir, engine_port = machine
    free, taken = free_loopback_port(), free_loopback_port()
    _Engine.containers = [
        {"Names": ["/web"], "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": free, "Type": "tcp"}]},
        {"Names": ["/clash"], "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": taken, "Type": "tcp"}]},
    ]
    # a previous run's conflict in the same log: not this run's, never echoed again
    (machine_dir / hostagent.LOG_NAME).write_text(
        "2026-01-01T00:00:00 CONFLICT: cannot forward 127.0.0.1:1/tcp for container old: in use\n")
    echoed: list[str] = []
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        started = time.monotonic()
        assert hostagent.launch(machine_dir, engine_port) is not None
        messages = hostagent.report_conflicts(machine_dir, 20.0, echoed.append)
        waited = time.monotonic() - started
    assert echoed == messages == [
        f"CONFLICT: cannot forward 127.0.0.1:{taken}/tcp for container clash: the port is already in use on the host"]
    assert waited < 15, f"returned {waited:.1f}s after launch: it should end at the agent's first look"
    assert hostagent.is_running(machine_dir) and hostagent.synced(machine_dir)  # `start` then warns of nothing
    log = "\n".join(hostagent.log_lines(machine_dir))
    assert f"forwarding 127.0.0.1:{free}/tcp to container web" in log  # the free one is forwarded
    assert messages[0] in log  # and the conflict stays in `pymachine logs`
    assert not hostagent.port_free(hostagent.Forward("tcp", free))  # QEMU listens there now


class StepClock:
    """Stands in for the ``time`` module inside hostagent: ``sleep`` advances the clock at
    once, so the wait's bound is checked by what the loop did, not by the wall clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_no_agent_or_an_agent_that_never_reaches_the_engine_is_a_bounded_wait(machine, monkeypatch) -> None:
    machine_dir, _engine_port = machine
    clock = StepClock()
    monkeypatch.setattr(hostagent, "time", clock)
    assert hostagent.report_conflicts(machine_dir, 5.0, print) == []
    assert clock.sleeps == []  # none launched: answered at once, nothing waited for
    dead_port = free_loopback_port()  # nothing listens: the agent keeps waiting for the engine
    pid = hostagent.launch(machine_dir, dead_port)
    assert pid is not None
    assert hostagent.report_conflicts(machine_dir, 1.5, print) == []
    # It polled until its bound and no further: the agent was alive and never looked at an engine.
    assert clock.sleeps, "it never polled for the agent's first look"
    # It stopped at the first poll that reached its bound: the polls before it fell short.
    assert sum(clock.sleeps[:-1]) < 1.5 <= sum(clock.sleeps), clock.sleeps
    assert hostagent.SYNCED not in "\n".join(hostagent.log_lines(machine_dir))
    assert hostagent.is_running(machine_dir) and not hostagent.synced(machine_dir)  # what `start` warns of
    os.kill(pid, 0)  # still running: the wait ended on its deadline, not on the agent's exit
