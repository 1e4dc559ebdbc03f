"""pymachine's SSH client: one paramiko connection per operation, reused for every step.

Why the details matter:
- paramiko sets no socket options, so Nagle plus delayed ACKs cost ~45 ms per command;
  we make the socket ourselves with ``TCP_NODELAY``.
- Host keys are pinned on first use into the machine's own ``known_hosts`` file (OpenSSH
  format, so the external ``ssh``/``scp`` can verify against the same file) and checked on
  every later connection.
- Only this module imports paramiko (~110 ms); ``pymachine env``/``ls`` must never load it,
  so other modules import ``machine.ssh`` lazily, inside the functions that need it.
"""

from __future__ import annotations

import logging
import secrets
import select
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Self

import paramiko
from pymachine.machine.atomic import write_atomic
from pymachine.machine.errors import CommandError, MachineError
from pymachine.machine.runner import CommandResult
from pymachine.machine.sshcommands import SSHTarget, check_key_file, wrap_command

__all__ = [
    "DEFAULT_COMMAND_TIMEOUT",
    "HostKeyChanged",
    "SSHClient",
    "SSHStats",
    "SSHTarget",
    "SSHTimeout",
    "load_private_key",
]

LOGGER = logging.getLogger("pymachine.ssh")

# paramiko logs expected failures (e.g. no banner yet while a host boots) as ERROR with a
# traceback; with no handler configured Python would print them to stderr on every retry.
# Our own one-line errors and the DEBUG log of pymachine.ssh carry what matters.
_paramiko_log = logging.getLogger("paramiko")
_paramiko_log.addHandler(logging.NullHandler())
if _paramiko_log.level == logging.NOTSET:
    _paramiko_log.setLevel(logging.CRITICAL)

DEFAULT_COMMAND_TIMEOUT = 600.0
_CHUNK = 32768


class HostKeyChanged(MachineError):
    """The server presented a different host key from the one pinned for this machine."""


class SSHTimeout(MachineError):
    """A remote command did not finish in time; its channel was closed."""


@dataclass
class SSHStats:
    """Counters for benchmarks: TCP connections opened and remote commands run."""

    connections: int = 0
    commands: int = 0


_totals = SSHStats()
_totals_lock = threading.Lock()


def total_stats() -> SSHStats:
    """Process-wide counters across every SSHClient (a copy)."""
    with _totals_lock:
        return SSHStats(_totals.connections, _totals.commands)


def _count(connections: int = 0, commands: int = 0) -> None:
    with _totals_lock:
        _totals.connections += connections
        _totals.commands += commands


def _fingerprint(key: paramiko.PKey) -> str:
    return key.fingerprint  # "SHA256:<base64 without padding>", as OpenSSH prints it


def load_private_key(path: Path) -> paramiko.PKey:
    """Load an RSA/ed25519/ecdsa private key, refusing loose permissions first."""
    check_key_file(path)
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        raise MachineError(
            f"SSH key {path} is encrypted; pymachine needs a key without a passphrase"
        ) from None
    except (paramiko.SSHException, ValueError, OSError) as exc:
        raise MachineError(f"Unable to read SSH key {path}: {exc}") from None


def _append_known_host(path: Path, name: str, key: paramiko.PKey) -> None:
    """Add one ``name type base64`` line to ``path`` atomically, keeping the file 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    old = path.read_text() if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    write_atomic(path, f"{old}{name} {key.get_name()} {key.get_base64()}\n".encode(), 0o600)


class _PinOnFirstUse(paramiko.MissingHostKeyPolicy):
    """Trust-on-first-use: only called by paramiko when no key is pinned for the host yet."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        _append_known_host(self.known_hosts, hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)
        LOGGER.debug(
            "pinned host key %s %s for %s in %s",
            key.get_name(),
            _fingerprint(key),
            hostname,
            self.known_hosts,
        )


class _Retryable(Exception):
    """A connection failure worth retrying while a host boots (refused, timeout, banner)."""


class SSHClient:
    """A live SSH connection implementing ``machine.runner.Runner``."""

    def __init__(
        self, client: paramiko.SSHClient, target: SSHTarget, logger: logging.Logger
    ) -> None:
        self._client = client
        self.target = target
        self._log = logger
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.Lock()
        self.stats = SSHStats(connections=1)

    # ----------------------------------------------------------------- connecting
    @classmethod
    def connect(
        cls,
        target: SSHTarget,
        *,
        timeout: float = 10.0,
        wait: float = 0.0,
        log: logging.Logger | None = None,
        host_key_hint: str | None = None,
    ) -> SSHClient:
        """Open the connection, retrying for up to ``wait`` seconds while the host comes up.

        Each attempt may take up to ``timeout`` seconds, so the worst case is about
        ``wait + timeout``.  ``host_key_hint`` is appended to the host-key-changed error
        (default: which file to remove).
        """
        logger = log or LOGGER
        pkey = load_private_key(target.key_path) if target.key_path is not None else None
        deadline = time.monotonic() + max(wait, 0.0)
        delay = 0.2
        max_attempts = int(max(wait, 0.0) / 0.2) + 2  # hard bound on top of the deadline
        for attempt in range(1, max_attempts + 1):
            try:
                client = cls._connect_once(target, pkey, timeout, host_key_hint)
                return cls(client, target, logger)
            except _Retryable as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or attempt == max_attempts:
                    raise MachineError(str(exc)) from None
                logger.debug("ssh %s: %s; retrying", target.address, exc)
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")  # the loop always returns or raises

    @staticmethod
    def _connect_once(
        target: SSHTarget, pkey: paramiko.PKey | None, timeout: float, hint: str | None
    ) -> paramiko.SSHClient:
        where = f"Unable to connect to {target.address}"
        try:
            sock = socket.create_connection((target.host, target.port), timeout=timeout)
        except ConnectionRefusedError:
            raise _Retryable(f"{where}: connection refused") from None
        except TimeoutError:
            raise _Retryable(f"{where}: timed out after {timeout:g}s") from None
        except OSError as exc:
            raise _Retryable(f"{where}: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _count(connections=1)
        started = time.monotonic()

        client = paramiko.SSHClient()
        if target.known_hosts.exists():
            try:
                client.get_host_keys().load(str(target.known_hosts))
            except (OSError, paramiko.SSHException, ValueError) as exc:
                sock.close()
                raise MachineError(f"Unable to read {target.known_hosts}: {exc}") from None
        client.set_missing_host_key_policy(_PinOnFirstUse(target.known_hosts))
        try:
            client.connect(
                target.host,
                port=target.port,
                username=target.user,
                pkey=pkey,
                sock=sock,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                allow_agent=False,
                look_for_keys=False,
            )
            return client
        except BaseException as exc:
            client.close()
            sock.close()
            if isinstance(exc, paramiko.BadHostKeyException):
                hint = hint or f"If the host was rebuilt, remove {target.known_hosts}"
                raise HostKeyChanged(
                    f"Host key for {target.address} has changed (expected "
                    f"{_fingerprint(exc.expected_key)}, got {_fingerprint(exc.key)}). {hint}"
                ) from None
            if isinstance(exc, paramiko.AuthenticationException) or (
                pkey is None and "No authentication methods" in str(exc)
            ):
                key = f"with key {target.key_path}" if pkey is not None else "without a key"
                raise MachineError(
                    f"SSH authentication failed for {target.user}@{target.address} {key}"
                ) from None
            if isinstance(exc, TimeoutError):
                raise _Retryable(f"{where}: timed out after {timeout:g}s") from None
            if isinstance(exc, (paramiko.SSHException, EOFError, OSError)):
                msg = str(exc) or type(exc).__name__
                if isinstance(exc, EOFError) or "banner" in msg or "No existing session" in msg:
                    if time.monotonic() - started >= timeout * 0.9:
                        msg = f"no SSH banner within {timeout:g}s"
                    else:
                        msg = "connection closed during the SSH handshake"
                raise _Retryable(f"{where}: {msg}") from None
            raise

    # ------------------------------------------------------------------- commands
    @property
    def transport(self) -> paramiko.Transport:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise MachineError(f"SSH connection to {self._who} was lost")
        return transport

    @property
    def _who(self) -> str:
        return f"{self.target.user}@{self.target.address}"

    def run(
        self,
        command: str,
        *,
        sudo: bool = False,
        check: bool = True,
        stdin: bytes | None = None,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
    ) -> CommandResult:
        """Run ``command`` in the login user's shell; see ``machine.runner.Runner.run``."""
        text = wrap_command(command, user=self.target.user, sudo=sudo, env=env)
        # Exported values (proxy URLs may carry passwords) stay out of the debug log.
        shown = (
            wrap_command(command, user=self.target.user, sudo=sudo, env=dict.fromkeys(env, "***"))
            if env
            else text
        )
        status, out, err = self._exec(
            text, stdin=stdin, timeout=timeout, label=command, shown=shown
        )
        result = CommandResult(status, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and status != 0:
            raise CommandError(command, status, result.stdout, result.stderr)
        return result

    def _exec(
        self,
        text: str,
        *,
        stdin: bytes | None,
        timeout: float | None,
        label: str,
        shown: str | None = None,
    ) -> tuple[int, bytes, bytes]:
        """Run shell text on a fresh channel of the shared connection; return raw output."""
        limit = DEFAULT_COMMAND_TIMEOUT if timeout is None else timeout
        started = time.monotonic()
        deadline = started + limit
        self.stats.commands += 1
        _count(commands=1)
        try:
            chan = self.transport.open_session(timeout=min(limit, 30.0))
        except paramiko.SSHException as exc:
            raise MachineError(f"SSH connection to {self._who} failed: {exc}") from None
        out: list[bytes] = []
        err: list[bytes] = []
        try:
            chan.settimeout(min(limit, 30.0))
            chan.exec_command(text)
            pending = memoryview(stdin or b"")
            if not pending:
                chan.shutdown_write()
            while not (chan.eof_received or chan.closed):
                self._drain(chan, out, err)
                if pending and chan.send_ready():
                    sent = chan.send(bytes(pending[:_CHUNK]))
                    pending = pending[sent:]
                    if not pending:
                        chan.shutdown_write()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SSHTimeout(f"command timed out after {limit:g}s: {label}")
                select.select([chan], [], [], min(remaining, 0.005 if pending else 1.0))
            self._drain(chan, out, err)
            if not chan.status_event.wait(max(deadline - time.monotonic(), 0)):
                raise SSHTimeout(f"command timed out after {limit:g}s: {label}")
            self._drain(chan, out, err)
            status = chan.recv_exit_status()
        except (OSError, paramiko.SSHException) as exc:
            raise MachineError(f"SSH command failed on {self._who}: {exc}: {label}") from None
        finally:
            chan.close()
        if status == -1:  # paramiko's value when the channel closed without an exit status
            raise MachineError(f"SSH connection to {self._who} was lost while running: {label}")
        elapsed = time.monotonic() - started
        self._log.debug("ssh %s [%.3fs] exit=%d: %s", self._who, elapsed, status, shown or text)
        return status, b"".join(out), b"".join(err)

    @staticmethod
    def _drain(chan: paramiko.Channel, out: list[bytes], err: list[bytes]) -> None:
        while chan.recv_ready():
            out.append(chan.recv(_CHUNK))
        while chan.recv_stderr_ready():
            err.append(chan.recv_stderr(_CHUNK))

    # ---------------------------------------------------------------------- files
    def _sftp_client(self) -> paramiko.SFTPClient:
        with self._lock:
            if self._sftp is None:
                try:
                    self._sftp = self._client.open_sftp()
                except paramiko.SSHException as exc:
                    raise MachineError(f"Unable to start SFTP on {self._who}: {exc}") from None
            return self._sftp

    def put(self, remote_path: str, data: bytes, *, mode: int = 0o644, sudo: bool = True) -> None:
        """Write a remote file atomically: SFTP to a private temp file, then one ``mv``.

        The final rename happens in the destination directory, so readers never see a
        half-written file; the temp file is 0600 so secrets never sit world-readable.
        """
        dest = PurePosixPath(remote_path)
        token = secrets.token_hex(6)
        updir = f"/tmp/.pymachine-put-{token}"  # 0700: nobody else can open the data
        upload = f"{updir}/data"
        staged = str(dest.parent / f".{dest.name}.pymachine-{token}")
        sftp = self._sftp_client()
        try:
            sftp.mkdir(updir, mode=0o700)
            with sftp.open(upload, "wb") as fh:
                fh.set_pipelined(True)
                fh.write(data)
        except OSError as exc:
            self.run(f"rm -rf {shlex.quote(updir)}", check=False)
            raise MachineError(f"Unable to upload {remote_path} to {self._who}: {exc}") from None
        q = shlex.quote
        steps = [
            f"mkdir -p {q(str(dest.parent))}",
            f"mv -f {q(upload)} {q(staged)}",
            f"rmdir {q(updir)}",
            f"chmod {mode:o} {q(staged)}",
        ]
        if sudo and self.target.user != "root":
            steps.append(f"chown 0:0 {q(staged)}")
        steps.append(f"mv -f {q(staged)} {q(remote_path)}")
        script = " && ".join(steps)
        self._log.debug(
            "ssh %s put %s (%d bytes, mode 0%o)", self._who, remote_path, len(data), mode
        )
        result = self.run(script, sudo=sudo, check=False)
        if not result.ok:
            self.run(f"rm -rf {q(updir)} {q(staged)}", sudo=sudo, check=False)
            raise CommandError(
                f"write {remote_path}", result.exit_status, result.stdout, result.stderr
            )

    def get(self, remote_path: str) -> bytes:
        """Read a remote file (over SFTP; through ``sudo cat`` if the login user may not)."""
        try:
            with self._sftp_client().open(remote_path, "rb") as fh:
                fh.prefetch()
                data = fh.read()
        except FileNotFoundError:
            raise MachineError(f"No such file on {self._who}: {remote_path}") from None
        except PermissionError:
            if self.target.user == "root":
                raise MachineError(
                    f"Permission denied reading {remote_path} on {self._who}"
                ) from None
            text = wrap_command(f"cat {shlex.quote(remote_path)}", user=self.target.user, sudo=True)
            status, data, err = self._exec(
                text, stdin=None, timeout=None, label=f"cat {remote_path}"
            )
            if status != 0:
                raise CommandError(
                    f"cat {remote_path}", status, "", err.decode(errors="replace")
                ) from None
        self._log.debug("ssh %s get %s (%d bytes)", self._who, remote_path, len(data))
        return data

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        with self._lock:
            if self._sftp is not None:
                self._sftp.close()
                self._sftp = None
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
