"""Start a real, private dockerd listening with TLS on loopback, for tests.

Reusable by any test: ``make_tls_material(dir)`` makes a CA, a server cert
(IP SAN 127.0.0.1) and a client cert with the openssl CLI, and
``start_dockerd(...)`` runs ``/usr/sbin/dockerd`` with private roots, no
iptables/bridge and ``vfs``, listening on a unix socket and on
``tcp://127.0.0.1:PORT`` with ``--tlsverify``.  ``DockerdHandle.stop()``
kills it (and its managed containerd) and removes its short runtime dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class TLSFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_tls_material(directory: Path) -> TLSFiles:
    """CA + server cert (SAN IP:127.0.0.1, serverAuth) + client cert (clientAuth), EC P-256."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for name in ("ca-key.pem", "server-key.pem", "key.pem"):
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name, cwd=d)
        (d / name).chmod(0o600)
    _openssl("req", "-x509", "-new", "-key", "ca-key.pem", "-sha256", "-days", "2", "-subj", "/CN=pymachine-test-ca",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-out", "ca.pem", cwd=d)
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    )
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n")
    for key, csr, cert, subj, ext in (
        ("server-key.pem", "server.csr", "server.pem", "/CN=127.0.0.1", "server.ext"),
        ("key.pem", "client.csr", "cert.pem", "/CN=client", "client.ext"),
    ):
        _openssl("req", "-new", "-key", key, "-subj", subj, "-out", csr, cwd=d)
        _openssl("x509", "-req", "-in", csr, "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
                 "-days", "2", "-sha256", "-extfile", ext, "-out", cert, cwd=d)
    return TLSFiles(d / "ca.pem", d / "server.pem", d / "server-key.pem", d / "cert.pem", d / "key.pem")


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_ok(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            head = s.recv(64)
        return head.split(b" ", 2)[1:2] == [b"200"]
    except (OSError, IndexError):
        return False


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class DockerdHandle:
    url: str
    port: int
    pid: int
    socket: Path
    runtime_dir: Path
    log: Path
    _proc: subprocess.Popen = field(repr=False)

    def stop(self) -> None:
        """Terminate dockerd (then its containerd), unmount leftovers, remove the runtime dir."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        for pid in _pids_mentioning(str(self.runtime_dir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for mount in _mounts_under(self.runtime_dir):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True, timeout=10)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (our private runtime dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root)
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split(" ")[1]
        if target == prefix or target.startswith(prefix + "/"):
            mounts.append(target)
    return sorted(mounts, key=len, reverse=True)


def start_dockerd(
    tmpdir: Path, ca: Path, server_cert: Path, server_key: Path, port: int | None = None,
    *, address: str = "127.0.0.1", netns: str | None = None,
) -> DockerdHandle:
    """Start dockerd with TLS on ``address``:``port`` (a free one if None) and wait until it answers.

    With ``netns`` it runs inside that network namespace (``nsenter --net``, which
    execs dockerd, so the pid is dockerd's; ``ip netns exec`` would remount /sys and
    hide the cgroups); readiness is then its unix socket alone.

    Data and log go under ``tmpdir``; the unix socket, exec-root and pidfile
    go under a short /tmp dir because socket paths are limited to 108 bytes.
    Raises RuntimeError (with the log tail) if it does not come up in time.
    """
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    runtime = Path(tempfile.mkdtemp(prefix="pmd-", dir="/tmp"))
    port = port or free_loopback_port()
    sock = runtime / "sock"
    log = tmpdir / "dockerd.log"
    config = runtime / "daemon.json"  # never read the host's /etc/docker/daemon.json
    config.write_text(json.dumps({}))
    ns = f"pmtest-{runtime.name}"
    argv = [
        *(("nsenter", f"--net=/run/netns/{netns}") if netns else ()),
        DOCKERD, "--config-file", str(config),
        "--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=vfs",
        "--data-root", str(tmpdir / "data"), "--exec-root", str(runtime / "exec"),
        "--pidfile", str(runtime / "pid"),
        "--containerd-namespace", ns, "--containerd-plugins-namespace", ns + "-plugins",
        "-H", f"unix://{sock}", "-H", f"tcp://{address}:{port}",
        "--tlsverify", "--tlscacert", str(ca), "--tlscert", str(server_cert), "--tlskey", str(server_key),
    ]
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
    except OSError:
        shutil.rmtree(runtime, ignore_errors=True)
        raise
    handle = DockerdHandle(f"tcp://{address}:{port}", port, proc.pid, sock, runtime, log, proc)
    deadline = time.monotonic() + START_TIMEOUT
    for _ in range(int(START_TIMEOUT / 0.1)):
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        if _http_ok(sock) and (netns is not None or _tcp_open(port)):
            return handle
        time.sleep(0.1)
    handle.stop()
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"dockerd did not come up on {handle.url} (exit {proc.poll()}):\n{tail}")


def start_engine_for(pm, name: str, workdir: Path):
    """Create none machine ``name`` and start a real TLS dockerd with its server cert."""
    port = free_loopback_port()
    pm.ok("create", "-d", "none", "--url", f"tcp://127.0.0.1:{port}", name)
    mdir = pm.store / "machines" / name
    return start_dockerd(workdir, mdir / "ca.pem", mdir / "server.pem", mdir / "server-key.pem", port=port)
