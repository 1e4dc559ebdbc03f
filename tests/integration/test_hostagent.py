"""The host agent's parts: which ports are published, the sync with conflicts, and real
QEMU user-network forwards added and removed through QMP (a QEMU with no guest: the
host side of a forward is QEMU's own listening socket, which is what is checked).

The whole path (a container published in a booted VM answering on the host) is in the
VM tier, tests/vm/test_qemu_vm.py.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from pymachine.machine.hostagent import Forward, PortSync, QemuForwarder, port_free, published

QEMU = shutil.which("qemu-system-x86_64")

# ``GET /containers/json`` as Docker 26 answers it (trimmed to the fields read).
CONTAINERS = [
    {"Names": ["/web"], "Ports": [
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
        {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
        {"PrivatePort": 443, "Type": "tcp"}]},  # exposed, not published
    {"Names": ["/dns"], "Ports": [{"IP": "0.0.0.0", "PrivatePort": 53, "PublicPort": 5353, "Type": "udp"}]},
    {"Names": ["/local"], "Ports": [{"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 9090, "Type": "tcp"}]},
    {"Names": ["/sctp"], "Ports": [{"IP": "0.0.0.0", "PrivatePort": 1, "PublicPort": 7000, "Type": "sctp"}]},
]


def test_published_ports_are_the_public_ones_once() -> None:
    assert published(CONTAINERS) == {Forward("tcp", 8080): "web", Forward("udp", 5353): "dns"}
    assert published([]) == {}


class RecordingForwarder:
    def __init__(self) -> None:
        self.added: list[Forward] = []
        self.removed: list[Forward] = []

    def add(self, forward: Forward) -> str | None:
        self.added.append(forward)
        return None

    def remove(self, forward: Forward) -> None:
        self.removed.append(forward)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sync_adds_removes_and_reports_a_taken_port_once() -> None:
    lines: list[str] = []
    fwd = RecordingForwarder()
    sync = PortSync(fwd, lines.append)  # type: ignore[arg-type]
    free, taken = _free_port(), _free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        wanted = {Forward("tcp", free): "web", Forward("tcp", taken): "api"}
        sync.apply(wanted)
        sync.apply(wanted)  # nothing changes: no duplicate add, no second conflict line
        assert fwd.added == [Forward("tcp", free)]
        conflicts = [line for line in lines if line.startswith("CONFLICT")]
        assert conflicts == [f"CONFLICT: cannot forward 127.0.0.1:{taken}/tcp for container api: "
                             "the port is already in use on the host"]
    sync.apply(wanted)  # the holder is gone: the port is taken now
    assert fwd.added == [Forward("tcp", free), Forward("tcp", taken)]
    sync.apply({})
    assert sorted(fwd.removed) == sorted([Forward("tcp", free), Forward("tcp", taken)])
    assert any(f"stopped forwarding 127.0.0.1:{free}/tcp (web" in line for line in lines)


@pytest.fixture
def qemu_monitor(tmp_path: Path):
    if QEMU is None:
        pytest.fail("qemu-system-x86_64 is not installed: scripts/setup.sh installs it")
    sock = tmp_path / "qmp.sock"
    proc = subprocess.Popen([QEMU, "-machine", "none", "-nodefaults", "-display", "none", "-S",
                             "-netdev", "user,id=n0,restrict=on", "-qmp", f"unix:{sock},server=on,wait=off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert sock.exists(), proc.stderr.read() if proc.poll() is not None else "no QMP socket"
        yield str(sock)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_qemu_forwards_bind_loopback_and_go_away(qemu_monitor: str) -> None:
    forwarder = QemuForwarder(qemu_monitor)
    forward = Forward("tcp", _free_port())
    assert forwarder.add(forward) is None
    assert not port_free(forward), "QEMU listens on 127.0.0.1:PORT for the forward"
    with socket.create_connection(("127.0.0.1", forward.port), timeout=5):
        pass
    # loopback only: the same port on another local address is not QEMU's
    with socket.socket() as other:
        other.bind(("127.0.0.2", forward.port))
    forwarder.remove(forward)
    assert port_free(forward)


def test_qemu_refuses_a_taken_port_with_a_reason(qemu_monitor: str) -> None:
    forward = Forward("tcp", _free_port())
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", forward.port))
        holder.listen()
        reason = QemuForwarder(qemu_monitor).add(forward)
    assert reason and "forward" in reason.lower()
