"""Benchmark ``create -d generic`` and ``provision`` on a namespaced Debian host.

Prints, for one create through the test proxy: per-phase wall time (SSH
connect, OS detection, preparation, engine install, certificates, daemon
configuration + restart, engine ready), the number of SSH connections and
remote commands, then the wall time of re-provisioning the same host (engine
already installed; goal <= 3 s) and of ``env``.  Ratios are against a bare
``ssh root@host true`` with the system OpenSSH client, measured in the same run.

Run as root from the repository root: ``.venv/bin/python -m bench.bench_generic``.
Everything it dials is inside the network namespace it creates (the host's
address and the proxy on the host-side veth); the proxy alone reaches
Debian's archive, so the install phase mostly measures that download.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pymachine.machine import ssh
from pymachine.machine.cli import main as cli

from tests.hosts.host import TestHost, cleanup_stale
from tests.hosts.proxy import HttpProxy
from tests.hosts.rootfs import build_rootfs

PYMACHINE = str(Path(sys.executable).parent / "pymachine")
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
PROVISION_GOAL = 3.0
# provision has no SSH wait line: its first phase is load + connect.
# (phase, the progress line that starts it); each phase ends where the next begins.
PHASES = (
    ("local CA/client certs", None),
    ("ssh connect", "Waiting for SSH to be available..."),
    ("detect OS", "Detecting the provisioner..."),
    ("prepare (server cert, hostname, apt proxy)", "Provisioning with "),
    ("install engine", "Installing Docker..."),
    ("certs to host", "Copying certs to the remote machine..."),
    ("daemon config + restart", "Setting Docker configuration on the remote daemon..."),
    ("engine ready (TLS /version)", "Checking connection to Docker..."),
    ("", "Docker is up and running!"),
)
_SSH_RECORD = re.compile(r"^ssh \S+ \[(?P<secs>[0-9.]+)s\] exit=(?P<exit>-?\d+): (?P<cmd>.*)$", re.DOTALL)


class _Marks(io.TextIOBase):
    """A stdout stand-in stamping each complete line with the time it was written."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self._buf = ""

    def write(self, text: str) -> int:
        self._buf += text
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self.lines.append((time.monotonic(), line))
        return len(text)

    def first(self, prefix: str) -> float | None:
        return next((t for t, line in self.lines if line.startswith(prefix)), None)


class _Records(logging.Handler):
    """Collects pymachine.ssh debug records: one per remote command, with its timing."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.commands: list[tuple[float, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = _SSH_RECORD.match(record.getMessage())
        if record.name == "pymachine.ssh" and match:
            self.commands.append((float(match["secs"]), int(match["exit"]), match["cmd"]))


@contextlib.contextmanager
def in_process() -> Iterator[tuple[_Marks, _Records]]:
    """Run ``cli.main`` here with stdout stamped and the SSH debug log captured.

    A handler on the root logger first makes ``--debug``'s basicConfig a no-op,
    so nothing is printed; the records are what ``--debug`` would have shown.
    """
    marks, records = _Marks(), _Records()
    root = logging.getLogger()
    old_level, old_stdout = root.level, sys.stdout
    root.addHandler(records)
    root.setLevel(logging.DEBUG)
    sys.stdout = marks
    try:
        yield marks, records
    finally:
        sys.stdout = old_stdout
        root.removeHandler(records)
        root.setLevel(old_level)


def run_cli(argv: list[str]) -> tuple[float, _Marks, _Records, ssh.SSHStats]:
    before = ssh.total_stats()
    with in_process() as (marks, records):
        started = time.monotonic()
        status = cli.main(argv)
        elapsed = time.monotonic() - started
    after = ssh.total_stats()
    if status != 0:
        tail = "\n".join(line for _, line in marks.lines[-5:])
        raise SystemExit(f"pymachine {' '.join(argv)} failed ({status}):\n{tail}")
    stats = ssh.SSHStats(after.connections - before.connections, after.commands - before.commands)
    marks.lines.insert(0, (started, "<start>"))
    return elapsed, marks, records, stats


def wall(argv: list[str], env: dict[str, str], runs: int = RUNS) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, timeout=300, check=False)
        times.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.decode(errors='replace')}")
    return times


def phase_table(marks: _Marks, total: float, phases=PHASES) -> list[tuple[str, float]]:
    """Each phase runs from its start line to the next phase's line that was printed."""
    start = marks.lines[0][0]
    points = [(name, start if prefix is None else marks.first(prefix)) for name, prefix in phases]
    present = [(name, t) for name, t in points if t is not None]
    rows = [(name, t1 - t0) for (name, t0), (_next, t1) in itertools.pairwise(present)]
    rows.append(("after (save, message)", start + total - present[-1][1]))
    return rows


def restart_seconds(records: _Records) -> float:
    pattern = re.compile(r"(/etc/init\.d/docker start|systemctl restart docker|rc-service docker restart)")
    return sum(secs for secs, _status, cmd in records.commands if pattern.search(cmd))


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench_generic needs root (network namespaces)")
    for item in cleanup_stale():
        print(f"removed stale {item}", file=sys.stderr)
    rootfs = build_rootfs()
    with tempfile.TemporaryDirectory(prefix="pm-bench-generic-") as tmp, HttpProxy() as proxy:
        t = Path(tmp)
        os.chmod(t, 0o700)
        key = t / "id_rsa"
        subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "",
                        "-f", str(key)], check=True, capture_output=True, timeout=60)  # fmt: skip
        store = t / "store"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "MACHINE_"))}
        env.update(MACHINE_STORAGE_PATH=str(store), HOME=str(t), SHELL="/bin/bash",
                   DOCKER_CONFIG=str(t / "docker"))  # fmt: skip
        with TestHost.start(rootfs, "bench1", key.with_suffix(".pub").read_text(), proxy=proxy) as host:
            ssh_true = wall(host.ssh_argv(key, "true"), env, runs=5)
            base = statistics.median(ssh_true)
            url = proxy.url_for(host)
            total, marks, records, stats = run_cli([
                "--debug", "-s", str(store), "create", "-d", "generic",
                "--generic-ip-address", host.ip, "--generic-ssh-key", str(key),
                "--http-proxy", url, "--https-proxy", url, "bench1",
            ])  # fmt: skip
            print(f"baseline: ssh root@{host.ip} true (OpenSSH)  {base * 1000:8.1f} ms (median of 5)")
            print(f"\ncreate -d generic through the proxy: {total:7.2f} s  ({total / base:5.0f}x baseline)")
            for name, secs in phase_table(marks, total):
                print(f"  {name:<44} {secs:7.2f} s")
            print(f"  {'  of which the engine (re)start command':<44} {restart_seconds(records):7.2f} s")
            logged = len(records.commands)
            print(f"  SSH connections {stats.connections}, remote commands {stats.commands} "
                  f"(--debug logged {logged}{'' if logged == stats.commands else ' - MISMATCH'}); "
                  f"remote command time {sum(s for s, _, _ in records.commands):.2f} s")  # fmt: skip

            prov = wall([PYMACHINE, "provision", "bench1"], env)
            p_total, _marks, p_records, p_stats = run_cli(["--debug", "-s", str(store), "provision", "bench1"])
            med = statistics.median(prov)
            verdict = "ok" if med <= PROVISION_GOAL else "OVER GOAL"
            print(f"\nprovision (engine installed), pymachine command: median {med:.2f} s of {len(prov)} "
                  f"({', '.join(f'{x:.2f}' for x in prov)})  {med / base:5.1f}x baseline; goal <= "
                  f"{PROVISION_GOAL:g} s: {verdict}")  # fmt: skip
            provision_phases = (("load + ssh connect", None), *PHASES[2:])
            for name, secs in phase_table(_marks, p_total, provision_phases):
                print(f"  {name:<44} {secs:7.2f} s")
            print(f"  in process: {p_total:.2f} s, SSH connections {p_stats.connections}, remote commands "
                  f"{p_stats.commands}, engine (re)start {restart_seconds(p_records):.2f} s")  # fmt: skip
            slow = sorted(p_records.commands, reverse=True)[:3]
            for secs, _status, cmd in slow:
                print(f"    slowest: {secs:6.3f} s  {cmd[:90]}")
            env_t = statistics.median(wall([PYMACHINE, "env", "bench1"], env, runs=5))
            print(f"\nenv bench1 (TLS check): {env_t * 1000:.1f} ms  {env_t / base:4.1f}x baseline")


if __name__ == "__main__":
    main()
