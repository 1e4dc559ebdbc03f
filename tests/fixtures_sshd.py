"""A real OpenSSH ``sshd`` on 127.0.0.1 for SSH tests, run as root in its own mount namespace.

Why a mount namespace (``unshare -m``): root's ``~/.bashrc`` on the development machine runs
``pyenv init`` (~120 ms per command), so an empty file is bind-mounted over it for this
sshd only; and when ``/run/sshd`` (sshd's privilege-separation directory, normally made by
the service's init script) is missing, a private tmpfs over ``/run`` provides it without
touching the host.  Every mount dies with the namespace when sshd and its sessions exit.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pymachine.machine.sshcommands import SSHTarget

SSHD_BIN = "/usr/sbin/sshd"
LOOPBACK = "127.0.0.1"

# Runs inside ``unshare -m`` (private propagation), with $1 = the server's work directory.
_NAMESPACE_SCRIPT = r"""
set -e
if [ -f "$HOME_RC" ]; then mount --bind "$1/empty" "$HOME_RC"; fi
if [ ! -d /run/sshd ]; then
    mkdir -p "$1/hostrun"
    mount --rbind /run "$1/hostrun"
    mount -t tmpfs -o mode=0755 pymachine-test-run /run
    for e in "$1"/hostrun/* "$1"/hostrun/.[!.]*; do
        if [ -e "$e" ] || [ -L "$e" ]; then ln -s "$e" /run/; fi
    done
    mkdir -m 0755 /run/sshd
fi
exec "$SSHD_BIN" -D -e -f "$1/sshd_config"
"""


def unavailable_reason() -> str | None:
    """Why a real sshd cannot run here (for ``pytest.skip``), or None."""
    if os.geteuid() != 0:
        return "needs root to run sshd"
    for tool in (SSHD_BIN, "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None


def generate_key(path: Path, kind: str = "ed25519") -> str:
    """Write an unencrypted OpenSSH private key (0600) and return its public-key line."""
    if kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif kind == "ecdsa":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(kind)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    os.chmod(path, 0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode()


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 1000:
        for kid in _children(todo.pop()):
            found.append(kid)
            todo.append(kid)
    return found


class SSHD:
    """One sshd instance with its own host key, client key and authorized_keys."""

    def __init__(self, workdir: Path, *, port: int | None = None, host_key_type: str = "ed25519"):
        self.dir = workdir
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = LOOPBACK
        self.host_key_type = host_key_type
        self.host_key = self.dir / "ssh_host_key"
        self.host_public_key = generate_key(self.host_key, host_key_type)
        self.client_key = self.dir / "id_client"
        self.authorized_keys = self.dir / "authorized_keys"
        self.authorized_keys.write_text(generate_key(self.client_key) + "\n")
        (self.dir / "empty").write_text("")
        self.log = self.dir / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> Path:
        config = self.dir / "sshd_config"
        config.write_text(
            f"Port {self.port}\n"
            f"ListenAddress {self.host}\n"
            f"HostKey {self.host_key}\n"
            f"AuthorizedKeysFile {self.authorized_keys}\n"
            f"PidFile {self.dir / 'sshd.pid'}\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "UseDNS no\n"
            "PrintMotd no\n"
            "MaxStartups 50\n"
            "Subsystem sftp internal-sftp\n"
        )
        return config

    def authorize(self, public_line: str) -> None:
        with self.authorized_keys.open("a") as fh:
            fh.write(public_line + "\n")

    def new_host_key(self) -> None:
        """Replace the host key (takes effect at the next start)."""
        self.host_public_key = generate_key(self.host_key, self.host_key_type)

    def start(self, timeout: float = 10.0) -> None:
        """Start sshd and wait (bounded) until it sends its SSH banner."""
        self._write_config()
        env = dict(os.environ, HOME_RC=str(Path(pwd.getpwuid(0).pw_dir) / ".bashrc"))
        env["SSHD_BIN"] = SSHD_BIN
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private",
                 "sh", "-c", _NAMESPACE_SCRIPT, "sh", str(self.dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"sshd exited with {self.proc.returncode}: {self.log.read_text()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0) as s:
                    if s.recv(64).startswith(b"SSH-2.0-"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"sshd not ready on port {self.port} within {timeout}s")

    def stop(self) -> None:
        """Stop sshd and any session processes it forked (only those)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        stragglers = _descendants(proc.pid)
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        for pid in stragglers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def restart(self, *, new_host_key: bool = False) -> None:
        self.stop()
        if new_host_key:
            self.new_host_key()
        self.start()

    def target(
        self, *, known_hosts: Path | None = None, key: Path | None = None, user: str = "root"
    ) -> SSHTarget:
        return SSHTarget(
            host=self.host,
            port=self.port,
            user=user,
            key_path=key or self.client_key,
            known_hosts=known_hosts or self.dir / "known_hosts",
        )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
