"""The per-machine host agent: a local VM's published container ports answer on 127.0.0.1.

With docker-machine and VirtualBox, ``docker run -p 8080:80`` answered at
``$(docker-machine ip):8080``; Lima and Colima answer at ``localhost:8080``.  A qemu
machine on user networking has no address the host can reach, so this agent, one small
process per running machine (as Lima's host agent), follows the engine's container
events over its TLS API and adds or removes QEMU user-network forwards through QMP
(``hostfwd_add``): bound to 127.0.0.1 only, never reachable from other machines, and
no root needed.

It is started (detached) when the VM starts and ends by itself when the VM's monitor
goes away; ``stop`` signals it without waiting, and ``ls``/``env`` never touch it.  What it
does, including ports it could not take because something on the host holds them, goes
to ``hostagent.log`` in the machine directory (``pymachine logs NAME``).  The command
that started the VM (``start``, ``create``) also echoes on stderr the conflicts the agent met on
its first look at the engine (:func:`report_conflicts`, a bounded wait); a conflict that comes
later, with a container started afterwards, is in ``logs``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymachine.machine import layout

if TYPE_CHECKING:
    import http.client

LOG_NAME = layout.HOSTAGENT_LOG
PID_NAME = layout.HOSTAGENT_PID
SYNC_INTERVAL = 30.0  # a full resync at least this often (missed events cannot last)
ENGINE_RETRY = 1.0  # while the engine is not up yet
LOOPBACK = "127.0.0.1"
_LOG_LIMIT = 1 << 20  # the log is cut back to its last half past 1 MiB
STARTED = "host agent started"
SYNCED = "following the engine's container events"
CONFLICT = "CONFLICT: "

Log = Callable[[str], None]


@dataclass(frozen=True, order=True)
class Forward:
    """One published host port; the guest publishes it on the same port number."""

    proto: str
    port: int

    def __str__(self) -> str:
        return f"{LOOPBACK}:{self.port}/{self.proto}"


def published(containers: Sequence[Mapping[str, Any]]) -> dict[Forward, str]:
    """The host ports ``docker ps`` shows as published, each with one container's name.

    Ports the engine bound to the guest's own loopback stay inside the guest."""
    wanted: dict[Forward, str] = {}
    for container in containers:
        name = ((container.get("Names") or ["?"])[0] or "?").lstrip("/")
        for port in container.get("Ports") or []:
            public = port.get("PublicPort")
            proto = port.get("Type") or "tcp"
            if not public or proto not in ("tcp", "udp"):
                continue
            if (port.get("IP") or "") in ("127.0.0.1", "::1"):
                continue
            wanted.setdefault(Forward(proto, int(public)), name)
    return wanted


def port_free(forward: Forward) -> bool:
    """Whether 127.0.0.1:PORT can be bound now (what QEMU will try)."""
    kind = socket.SOCK_STREAM if forward.proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as probe:
        if os.name != "nt":
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, forward.port))
        except OSError:
            return False
    return True


class QemuForwarder:
    """Adds and removes user-network forwards of a running QEMU through its QMP socket."""

    def __init__(self, qmp_path: str, netdev: str = "n0", timeout: float = 5.0) -> None:
        self.qmp_path = qmp_path
        self.netdev = netdev
        self.timeout = timeout

    def _hmp(self, command_line: str) -> str:
        from pymachine.machine.qmp import qmp_command

        out = qmp_command(self.qmp_path, "human-monitor-command", {"command-line": command_line},
                          timeout=self.timeout)
        return str(out or "").strip()

    def add(self, forward: Forward) -> str | None:
        """None when added, else QEMU's reason."""
        out = self._hmp(f"hostfwd_add {self.netdev} {forward.proto}:{LOOPBACK}:{forward.port}-:{forward.port}")
        return out or None

    def remove(self, forward: Forward) -> None:
        self._hmp(f"hostfwd_remove {self.netdev} {forward.proto}:{LOOPBACK}:{forward.port}")


class EngineEvents:
    """The engine's container list and event stream over its TLS API."""

    def __init__(self, host: str, port: int, ca: Path, cert: Path, key: Path) -> None:
        from pymachine.machine.tlsclient import client_tls_context

        self.host, self.port = host, port
        self.context = client_tls_context(ca, cert, key)

    def _connection(self, timeout: float) -> http.client.HTTPSConnection:
        import http.client

        return http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=timeout)

    def containers(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        conn = self._connection(timeout)
        try:
            conn.request("GET", "/containers/json")
            resp = conn.getresponse()
            body = resp.read(8 << 20)
            if resp.status != 200:
                raise OSError(f"engine answered {resp.status} to /containers/json")
            data = json.loads(body)
            return data if isinstance(data, list) else []
        finally:
            conn.close()

    def follow(self, duration: float) -> Iterator[dict[str, Any]]:
        """Container start/stop events for at most ``duration`` seconds."""
        from urllib.parse import quote

        filters = quote(json.dumps({"type": ["container"], "event": ["start", "die", "stop", "kill", "pause",
                                                                      "unpause", "destroy"]}))
        until = int(time.time() + duration)
        conn = self._connection(duration + 10.0)
        try:
            conn.request("GET", f"/events?filters={filters}&until={until}")
            resp = conn.getresponse()
            if resp.status != 200:
                raise OSError(f"engine answered {resp.status} to /events")
            while True:
                line = resp.readline(1 << 16)
                if not line:
                    return
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    yield event
        finally:
            conn.close()


class PortSync:
    """Keeps QEMU's forwards equal to the engine's published ports; logs every change."""

    def __init__(self, forwarder: QemuForwarder, log: Log) -> None:
        self.forwarder = forwarder
        self.log = log
        self.active: dict[Forward, str] = {}
        self.conflicts: dict[Forward, str] = {}

    def apply(self, wanted: dict[Forward, str]) -> None:
        for forward in sorted(set(self.active) - set(wanted)):
            name = self.active.pop(forward)
            try:
                self.forwarder.remove(forward)
            finally:
                self.log(f"stopped forwarding {forward} ({name} no longer publishes it)")
        for forward in sorted(set(self.conflicts) - set(wanted)):
            del self.conflicts[forward]
        for forward, name in sorted(wanted.items()):
            if forward in self.active:
                continue
            reason = None if port_free(forward) else "the port is already in use on the host"
            if reason is None:
                reason = self.forwarder.add(forward)
            if reason is None:
                self.active[forward] = name
                self.conflicts.pop(forward, None)
                self.log(f"forwarding {forward} to container {name}")
            elif self.conflicts.get(forward) != name:
                self.conflicts[forward] = name
                self.log(f"{CONFLICT}cannot forward {forward} for container {name}: {reason}")


def _vm_alive(machine_dir: Path, qmp_path: str) -> bool:
    """QEMU still runs: its monitor socket is there and its pidfile names a live process."""
    if not os.path.exists(qmp_path):
        return False
    try:
        pid = int((machine_dir / layout.QEMU_PID).read_text().strip())
    except (OSError, ValueError):
        return True  # written by QEMU a moment after the socket
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def run(machine_dir: Path, engine_port: int, log: Log, *, max_runtime: float | None = None) -> int:
    """The agent's loop: until the VM is gone (or ``max_runtime``)."""
    qmp_path = str(machine_dir / layout.QMP_SOCKET)
    sync = PortSync(QemuForwarder(qmp_path), log)
    engine: EngineEvents | None = None
    started = time.monotonic()
    log(f"{STARTED} (pid {os.getpid()}): forwarding published ports to {LOOPBACK}")
    waiting_logged = reached = False
    while max_runtime is None or time.monotonic() - started < max_runtime:
        if not _vm_alive(machine_dir, qmp_path):
            log("the VM stopped: host agent exits")
            return 0
        try:
            if engine is None:  # the machine's client certificates arrive during create
                engine = EngineEvents(LOOPBACK, engine_port, machine_dir / layout.CA_CERT,
                                      machine_dir / layout.CLIENT_CERT, machine_dir / layout.CLIENT_KEY)
            sync.apply(published(engine.containers()))
            if waiting_logged or not reached:
                log(f"{SYNCED} at {LOOPBACK}:{engine_port}")
                waiting_logged, reached = False, True
            for _event in engine.follow(SYNC_INTERVAL):
                sync.apply(published(engine.containers()))
        except Exception as exc:  # noqa: BLE001 - the engine not up yet, or QEMU going away
            from pymachine.machine.qmp import QMPError

            if isinstance(exc, QMPError):
                if _vm_alive(machine_dir, qmp_path):
                    log(f"QEMU's monitor refused a forward: {exc}")
            elif not waiting_logged:
                log(f"waiting for the engine at {LOOPBACK}:{engine_port} ({exc.__class__.__name__})")
                waiting_logged = True
            time.sleep(ENGINE_RETRY)
    return 0


def _file_log(path: Path) -> Log:
    def log(line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        try:
            if path.exists() and path.stat().st_size > _LOG_LIMIT:
                tail = path.read_bytes()[-_LOG_LIMIT // 2:]
                path.write_bytes(tail)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(f"{stamp} {line}\n")
        except OSError:
            pass

    return log


# -- process management (used by the driver; never waits) --------------------------------------
def _pid_file(machine_dir: Path) -> tuple[int, int] | None:
    """(agent pid, size of the log when it was launched) from the pid file."""
    try:
        fields = (machine_dir / PID_NAME).read_text().split()
        return int(fields[0]), int(fields[1]) if len(fields) > 1 else 0
    except (OSError, ValueError, IndexError):
        return None


def _agent_pid(machine_dir: Path) -> int | None:
    found = _pid_file(machine_dir)
    if found is None:
        return None
    pid = found[0]
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # Linux: make sure the pid is still our agent, not a reused number
        try:
            return pid if b"pymachine.machine.hostagent" in cmdline.read_bytes() else None
        except OSError:
            return None
    try:
        os.kill(pid, 0)  # elsewhere: alive is all we can tell cheaply
    except OSError:
        return None
    return pid


def launch(machine_dir: Path, engine_port: int) -> int | None:
    """Start the agent for ``machine_dir`` unless one runs; returns its pid; never waits."""
    existing = _agent_pid(machine_dir)
    if existing is not None:
        return existing
    try:
        offset = (machine_dir / LOG_NAME).stat().st_size  # where this run's lines begin
    except OSError:
        offset = 0
    kwargs: dict[str, Any] = {}
    if os.name == "nt":
        kwargs["creationflags"] = 0x00000008 | 0x00000200  # DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP
    else:
        kwargs["start_new_session"] = True
    with open(os.devnull, "rb") as devnull, open(machine_dir / LOG_NAME, "ab") as logfile:
        proc = subprocess.Popen([sys.executable, "-m", "pymachine.machine.hostagent", str(machine_dir),
                                 str(engine_port)],
                                stdin=devnull, stdout=logfile, stderr=logfile, close_fds=True, **kwargs)
    (machine_dir / PID_NAME).write_text(f"{proc.pid} {offset}\n")
    return proc.pid


def _lines_since(machine_dir: Path, offset: int) -> list[str]:
    try:
        with open(machine_dir / LOG_NAME, "rb") as fh:
            if fh.seek(0, os.SEEK_END) < offset:  # cut back since: this run's lines are all that is left
                offset = 0
            fh.seek(offset)
            data = fh.read(_LOG_LIMIT)
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()


def _exists(pid: int) -> bool:
    """The process is there (just launched, it may not show the agent's command line yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    if not os.path.isdir("/proc/self"):
        return True  # macOS, Windows: alive is all we can tell
    try:
        return b") Z " not in Path(f"/proc/{pid}/stat").read_bytes()  # a zombie has ended
    except OSError:
        return False


def report_conflicts(machine_dir: Path, wait: float, echo: Log) -> list[str]:
    """Echo the ports this run of the agent could not forward, as they are in its log.

    Waits (at most ``wait`` seconds, polling the log) for the agent's first look at
    the engine, when containers the engine restarted at boot have been seen; returns
    at once when no agent runs.  Returns the messages echoed.
    """
    found = _pid_file(machine_dir)
    if found is None:
        return []
    deadline = time.monotonic() + wait
    while True:
        lines = _lines_since(machine_dir, found[1])
        if any(SYNCED in line for line in lines) or time.monotonic() >= deadline or not _exists(found[0]):
            break
        time.sleep(0.2)
    messages = [line[line.index(CONFLICT):] for line in lines if CONFLICT in line]
    for message in messages:
        echo(message)
    return messages


def is_running(machine_dir: Path) -> bool:
    """This machine's agent process is alive."""
    return _agent_pid(machine_dir) is not None


def synced(machine_dir: Path) -> bool:
    """This run of the agent has reached the engine (its first look at the containers)."""
    found = _pid_file(machine_dir)
    return found is not None and any(SYNCED in line for line in _lines_since(machine_dir, found[1]))


def stop(machine_dir: Path) -> None:
    """Signal the agent to end (it also ends by itself once the VM is gone); never waits."""
    import signal

    pid = _agent_pid(machine_dir)
    if pid is not None:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(OSError):
        (machine_dir / PID_NAME).unlink()


def log_lines(machine_dir: Path) -> list[str]:
    try:
        return (machine_dir / LOG_NAME).read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isdigit():
        sys.stderr.write("usage: python -m pymachine.machine.hostagent MACHINE_DIR ENGINE_PORT\n")
        return 2
    machine_dir = Path(args[0])
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return run(machine_dir, int(args[1]), _file_log(machine_dir / LOG_NAME))


if __name__ == "__main__":
    sys.exit(main())
