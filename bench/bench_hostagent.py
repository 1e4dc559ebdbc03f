"""Benchmark the host agent (machine/hostagent.py) against issue 15's "Speed" goals.

1. What the agent adds to ``create``/``start``: the wall time of ``hostagent.launch``, the
   call the qemu driver makes right after QEMU is up (``QemuDriver._start_host_agent``; it
   must not wait), median of N, against launching ``python -c pass`` the same way (detached,
   stdin from /dev/null, output to the machine's log).  Goal: <= 0.5 s.  The agent then runs
   beside the boot on the same CPUs, so its CPU time (start-up, first sync, idle retries while
   the guest's engine is not up yet) is printed too: an upper bound on what it can take from
   the boot.  ``start`` also waits for the agent's first look at the engine (to echo port
   conflicts): how long after the engine starts answering that wait ends is the last row.
2. From a container's ``start`` event on the engine to its published port answering on
   127.0.0.1 (QEMU's user-network forward listening), median and max of N events, against
   the floor of adding the same forward from this process through QMP; and from the ``die``
   event (the container gone from the list) to the port refusing connections.  Goal: <= 1 s.

The agent is the real one (``hostagent.launch``: its own process), QEMU is a real QEMU with
no guest and a user network ``n0`` (as tests/integration/test_hostagent.py's ``qemu_monitor``),
and the engine is a local fake of Docker's TLS API built from the Docker Engine API v1.45
reference ("ContainerList" ``GET /containers/json``; "SystemEvents" ``GET /events``: a
chunked stream of one JSON object per line, honouring ``filters`` and ``until``), requiring
client certificates as a ``--tlsverify`` engine does.

Run from the repository root: ``.venv/bin/python -m bench.bench_hostagent`` (``--runs``,
``--events``).  Everything it dials is 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pymachine.machine import hostagent
from pymachine.machine.qmp import qmp_command

from tests.fixtures_dockerd import TLSFiles, free_loopback_port, make_tls_material

QEMU = shutil.which("qemu-system-x86_64")
LAUNCH_GOAL = 0.5
FORWARD_GOAL = 1.0
WAIT_LIMIT = 10.0  # any single wait for a forward to come or go
POLL = 0.005
IDLE_SPAN = 5.0  # seconds the idle agent's CPU is sampled over
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# ----------------------------------------------------------------------------- fake engine


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An agent stopped mid-request (TLS EOF, reset) is expected here; anything else is shown."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class FakeEngine:
    """Docker's container list and event stream over TLS, driven by the benchmark."""

    def __init__(self, tls: TLSFiles, port: int = 0) -> None:
        self.lock = threading.Condition()
        self.containers: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.streams = 0  # /events requests being served now
        self.closing = False
        engine = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # /events is chunked, as Docker sends it
            disable_nagle_algorithm = True  # Go's net package sets TCP_NODELAY on every connection

            def log_message(self, *_args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path.endswith("/containers/json"):
                    with engine.lock:
                        body = json.dumps(engine.containers).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif url.path.endswith("/events"):
                    engine.stream(self, parse_qs(url.query))
                else:
                    self.send_error(404)

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls.server_cert, tls.server_key)
        ctx.load_verify_locations(tls.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.server = _QuietServer(("127.0.0.1", port), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def stream(self, handler: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> None:
        """Events from now on matching ``filters`` until ``until`` (or the engine closes)."""
        filters = json.loads(query.get("filters", ["{}"])[0] or "{}")
        until = float(query.get("until", [str(time.time() + 60)])[0])
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        handler.wfile.flush()
        with self.lock:
            seen = len(self.events)
            self.streams += 1
            self.lock.notify_all()
        try:
            while True:
                with self.lock:
                    while len(self.events) == seen and not self.closing and time.time() < until:
                        self.lock.wait(timeout=min(0.5, max(0.01, until - time.time())))
                    if self.closing or (len(self.events) == seen and time.time() >= until):
                        break
                    new, seen = self.events[seen:], len(self.events)
                for event in new:
                    if all(event.get(k) in v for k, v in (("Type", filters.get("type")),
                                                          ("Action", filters.get("event"))) if v):
                        data = json.dumps(event).encode() + b"\n"
                        handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                        handler.wfile.flush()
            handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the agent went away
        finally:
            with self.lock:
                self.streams -= 1
            handler.close_connection = True

    def emit(self, action: str, name: str) -> None:
        """One container event as Docker 26 sends it (trimmed: Type, Action, Actor, time)."""
        now = time.time_ns()
        cid = (name.encode().hex() * 64)[:64]
        event = {"status": action, "id": cid, "from": "nginx", "Type": "container", "Action": action,
                 "Actor": {"ID": cid, "Attributes": {"image": "nginx", "name": name}}, "scope": "local",
                 "time": now // 10**9, "timeNano": now}
        with self.lock:
            self.events.append(event)
            self.lock.notify_all()

    def publish(self, name: str, port: int | None) -> None:
        """The container list with ``name`` publishing ``port`` (None: the container is gone)."""
        with self.lock:
            self.containers = [c for c in self.containers if c["Names"] != [f"/{name}"]]
            if port is not None:
                self.containers.append({"Names": [f"/{name}"], "State": "running", "Ports": [
                    {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": port, "Type": "tcp"},
                    {"IP": "::", "PrivatePort": 80, "PublicPort": port, "Type": "tcp"}]})

    def wait_for_stream(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.streams == 0 and time.monotonic() < deadline:
                self.lock.wait(timeout=0.1)
            return self.streams > 0

    def close(self) -> None:
        with self.lock:
            self.closing = True
            self.lock.notify_all()
        self.server.shutdown()
        self.server.server_close()


# ----------------------------------------------------------------------------- machine directory


@contextlib.contextmanager
def machine_dir(root: Path, name: str) -> Iterator[tuple[Path, TLSFiles]]:
    """A machine directory as the qemu driver leaves it running: TLS files, qmp.sock, qemu.pid."""
    if QEMU is None:
        raise SystemExit("qemu-system-x86_64 is not installed: scripts/setup.sh installs it")
    mdir = root / name
    tls = make_tls_material(mdir)
    sock = mdir / "qmp.sock"
    qemu = subprocess.Popen([QEMU, "-machine", "none", "-nodefaults", "-display", "none", "-S",
                             "-netdev", "user,id=n0,restrict=on", "-qmp", f"unix:{sock},server=on,wait=off"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline and qemu.poll() is None:
            time.sleep(0.02)
        if not sock.exists():
            raise SystemExit("QEMU made no QMP socket")
        (mdir / "qemu.pid").write_text(f"{qemu.pid}\n")
        yield mdir, tls
    finally:
        stop_agent(mdir)
        qemu.kill()
        qemu.wait(timeout=10)


def stop_agent(mdir: Path) -> None:
    """``hostagent.stop`` (SIGTERM, no wait), then a bounded wait for the process to end."""
    pid = hostagent._agent_pid(mdir)
    hostagent.stop(mdir)
    if pid is None:
        return
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        return b") Z " not in Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (proc(5): fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _wait_log(mdir: Path, needle: str, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(needle in line for line in hostagent.log_lines(mdir)):
            return time.monotonic()
        time.sleep(0.01)
    return None


# ----------------------------------------------------------------------------- 1. launch


def _launch_baseline(mdir: Path) -> subprocess.Popen[bytes]:
    """``python -c pass`` started exactly as ``hostagent.launch`` starts the agent (log, pid file)."""
    with contextlib.suppress(OSError):
        (mdir / "baseline.log").stat()
    with open(os.devnull, "rb") as devnull, open(mdir / "baseline.log", "ab") as logfile:
        proc = subprocess.Popen([sys.executable, "-c", "pass"], stdin=devnull, stdout=logfile, stderr=logfile,
                                close_fds=True, start_new_session=True)
    (mdir / "baseline.pid").write_text(f"{proc.pid} 0\n")
    return proc


def _rusage_cpu(argv: list[str]) -> float:
    """CPU seconds (user + system) a child used from start to exit."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _, _, usage = os.wait4(proc.pid, 0)
    finally:
        proc.returncode = 0  # reaped here
    return usage.ru_utime + usage.ru_stime


def bench_launch(root: Path, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with machine_dir(root, "launch") as (mdir, tls):
        engine = FakeEngine(tls)
        try:
            base, agent, first_sync, sync_cpu = [], [], [], []
            for _ in range(runs):
                t = time.perf_counter()
                proc = _launch_baseline(mdir)
                base.append(time.perf_counter() - t)
                proc.wait(timeout=30)  # the clock has stopped: launch never waits

                (mdir / hostagent.LOG_NAME).unlink(missing_ok=True)
                t = time.perf_counter()
                pid = hostagent.launch(mdir, engine.port)
                agent.append(time.perf_counter() - t)
                t_mono = time.monotonic() - agent[-1]
                synced = _wait_log(mdir, hostagent.SYNCED, WAIT_LIMIT)
                if pid is None or synced is None:
                    raise SystemExit(f"the agent did not sync with the fake engine: {hostagent.log_lines(mdir)}")
                first_sync.append(synced - t_mono)
                sync_cpu.append(_cpu_seconds(pid))
                stop_agent(mdir)
            out.update(base=base, agent=agent, first_sync=first_sync, sync_cpu=sync_cpu)
        finally:
            engine.close()

        # start-up alone: a machine whose VM is gone makes the agent log and exit at once
        gone = root / "gone"
        gone.mkdir()
        runs_cpu = max(3, runs // 2)
        out["cpu_pass"] = [_rusage_cpu([sys.executable, "-c", "pass"]) for _ in range(runs_cpu)]
        out["cpu_startup"] = [_rusage_cpu([sys.executable, "-m", "pymachine.machine.hostagent", str(gone), "1"])
                              for _ in range(runs_cpu)]

        # idle retries while the guest's engine is not up: nothing listens on the engine port
        dead = free_loopback_port()
        pid = hostagent.launch(mdir, dead)
        if pid is None or _wait_log(mdir, "waiting for the engine", WAIT_LIMIT) is None:
            raise SystemExit("the agent did not start waiting for the engine")
        c0, t0 = _cpu_seconds(pid), time.monotonic()
        time.sleep(IDLE_SPAN)
        out["idle_cpu_per_s"] = (_cpu_seconds(pid) - c0) / (time.monotonic() - t0)

        # start: report_conflicts ends after the agent's first look; how long after the engine answers?
        after_engine = []
        for i in range(max(3, runs // 3)):
            stop_agent(mdir)
            port = free_loopback_port()
            hostagent.launch(mdir, port)
            if _wait_log(mdir, f"waiting for the engine at 127.0.0.1:{port}", WAIT_LIMIT) is None:
                raise SystemExit("the agent did not start waiting for the engine")
            time.sleep(0.2 + 0.37 * i % 1.0)  # the engine comes up at some point of the agent's retry cycle
            late = FakeEngine(tls, port)
            t = time.monotonic()
            try:
                hostagent.report_conflicts(mdir, 15.0, lambda _m: None)
                after_engine.append(time.monotonic() - t)
            finally:
                stop_agent(mdir)
                late.close()
        out["after_engine"] = after_engine
    return out


# ----------------------------------------------------------------------------- 2. events


def _wait_port(port: int, answering: bool, limit: float) -> float | None:
    """Seconds until 127.0.0.1:PORT accepts (``answering``) or refuses connections; None past ``limit``."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                up = True
        except OSError:
            up = False
        if up == answering:
            return time.perf_counter() - start
        time.sleep(POLL)
    return None


def bench_events(root: Path, events: int) -> dict[str, list[float]]:
    with machine_dir(root, "events") as (mdir, tls):
        qmp = str(mdir / "qmp.sock")
        # the floor: this process adds the forward through QMP itself, no agent running
        floor = []
        forwarder = hostagent.QemuForwarder(qmp)
        for _ in range(events):
            forward = hostagent.Forward("tcp", free_loopback_port())
            t = time.perf_counter()
            if forwarder.add(forward) is not None:
                raise SystemExit(f"QEMU refused {forward}")
            seen = _wait_port(forward.port, True, WAIT_LIMIT)
            floor.append(time.perf_counter() - t if seen is not None else float("nan"))
            forwarder.remove(forward)
        if "hostfwd" in str(qmp_command(qmp, "human-monitor-command", {"command-line": "info usernet"})):
            raise SystemExit("a forward of the floor runs was left behind")

        engine = FakeEngine(tls)
        try:
            pid = hostagent.launch(mdir, engine.port)
            if pid is None or _wait_log(mdir, hostagent.SYNCED, WAIT_LIMIT) is None:
                raise SystemExit(f"the agent did not sync: {hostagent.log_lines(mdir)}")
            if not engine.wait_for_stream(WAIT_LIMIT):
                raise SystemExit("the agent does not follow /events")
            add, remove = [], []
            for i in range(events):
                name, port = f"web{i}", free_loopback_port()
                engine.publish(name, port)  # running, then the event: Docker's order
                t = time.perf_counter()
                engine.emit("start", name)
                up = _wait_port(port, True, WAIT_LIMIT)
                add.append(time.perf_counter() - t if up is not None else float("inf"))
                time.sleep(0.05)
                engine.publish(name, None)  # `docker rm -f`: gone from the list, then die (and destroy)
                t = time.perf_counter()
                engine.emit("die", name)
                engine.emit("destroy", name)
                down = _wait_port(port, False, WAIT_LIMIT)
                remove.append(time.perf_counter() - t if down is not None else float("inf"))
                time.sleep(0.05)
            log = hostagent.log_lines(mdir)
            if sum("forwarding 127.0.0.1:" in line for line in log) < events:
                raise SystemExit("the agent's log does not show every forward")
        finally:
            engine.close()
    return {"floor": floor, "add": add, "remove": remove}


# ----------------------------------------------------------------------------- report


def _ms(value: float) -> str:
    return f"{value * 1000:8.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="launches measured (default 15)")
    parser.add_argument("--events", type=int, default=20, help="container start/die events (default 20)")
    args = parser.parse_args()
    med: Callable[[list[float]], float] = statistics.median
    with tempfile.TemporaryDirectory(prefix="pm-bench-agent-") as tmp:
        root = Path(tmp)
        print(f"launch x{args.runs}...", flush=True)
        launch = bench_launch(root, args.runs)
        print(f"events x{args.events}...", flush=True)
        ev = bench_events(root, args.events)

    base, agent = med(launch["base"]), med(launch["agent"])
    added = med(launch["agent"]) - base
    print(f"\n1. launch as the qemu driver does (median of {args.runs})")
    print(f"  python -c pass, same Popen (baseline)   {_ms(base)}")
    print(f"  hostagent.launch                         {_ms(agent)}   {agent / base:4.2f}x baseline, "
          f"max {_ms(max(launch['agent'])).strip()}; goal <= {LAUNCH_GOAL}s: "
          f"{'met' if max(launch['agent']) <= LAUNCH_GOAL else 'NOT met'} ({added * 1000:+.1f} ms vs baseline)")
    cpu_pass, cpu_start = med(launch["cpu_pass"]), med(launch["cpu_startup"])
    print(f"  CPU: python -c pass                      {_ms(cpu_pass)}")
    print(f"  CPU: agent start-up (exits at once)      {_ms(cpu_start)}   {cpu_start / cpu_pass:4.2f}x baseline")
    print(f"  CPU: agent to its first sync             {_ms(med(launch['sync_cpu']))}   "
          f"(wall {_ms(med(launch['first_sync'])).strip()} from launch)")
    print(f"  CPU: agent waiting for the engine        {_ms(launch['idle_cpu_per_s'])} per second "
          f"(resolution {1000 / CLK_TCK / IDLE_SPAN:.0f} ms/s)")
    after = launch["after_engine"]
    print(f"  start: report_conflicts ends after the engine answers: median {_ms(med(after)).strip()}, "
          f"max {_ms(max(after)).strip()} (n={len(after)}; retry interval {hostagent.ENGINE_RETRY}s)")

    floor = med(ev["floor"])
    print(f"\n2. forward latency (n={args.events} events, 127.0.0.1 port accepting / refusing)")
    print(f"  {'':40}{'median':>11}{'max':>11}")
    print(f"  {'QMP hostfwd_add from here (floor)':40}{_ms(floor)}{_ms(max(ev['floor']))}")
    for label, key in (("start event -> port answers", "add"), ("die event -> port refuses", "remove")):
        values = ev[key]
        worst = max(values)
        print(f"  {label:40}{_ms(med(values))}{_ms(worst)}   {med(values) / floor:5.1f}x floor; "
              f"goal <= {FORWARD_GOAL}s: {'met' if worst <= FORWARD_GOAL else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
