"""Pure builders for SSH-related commands: argv for ssh/scp/rsync/sshfs, remote shell text.

This module never imports paramiko, so ``pymachine ssh``/``scp``/``mount`` can
hand over to the system's OpenSSH tools without paying paramiko's import cost.
Compared with Docker Machine 0.16, host keys are pinned
(``StrictHostKeyChecking=yes`` plus the machine's own ``known_hosts``) instead
of being ignored.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pymachine.machine.errors import MachineError


@dataclass
class SSHTarget:
    """Where and how to log in to a machine; ``known_hosts`` is the machine's own pin file."""

    host: str
    port: int
    user: str
    key_path: Path | None
    known_hosts: Path

    def __post_init__(self) -> None:
        # A stored config (or a flag) could carry "-oProxyCommand=..." here; refuse it
        # before any argv is built, whatever wrote it.
        check_ssh_value("SSH host", self.host)
        check_ssh_value("SSH user", self.user)
        if self.key_path is not None:
            check_ssh_value("SSH key path", str(self.key_path), path=True)

    @property
    def address(self) -> str:
        """``HOST:PORT`` as used in error messages (IPv6 hosts bracketed)."""
        return f"{_bracket(self.host)}:{self.port}"


def check_ssh_value(what: str, value: str, *, path: bool = False) -> None:
    """Refuse a user, host or key path that ssh/scp/rsync/sshfs could read as an option.

    A value starting with ``-`` becomes an option wherever a tool does not take it as
    the argument of a flag (``-oProxyCommand=...`` runs a local command), and
    whitespace, control characters, ``@`` in users or ``"`` break ``user@host`` and
    ``-o`` values.  Called when a machine is created and again for every argv.
    """
    if not value:
        raise MachineError(f"{what} may not be empty")
    if value.startswith("-"):
        raise MachineError(f"{what} may not start with '-': {value!r}")
    if any(ord(c) < 32 or ord(c) == 127 or c == '"' for c in value):
        raise MachineError(f"{what} may not contain quotes or control characters: {value!r}")
    if not path and any(c.isspace() or c in "@/" for c in value):
        raise MachineError(f"{what} may not contain whitespace, '@' or '/': {value!r}")


# Docker Machine's external-client options (libmachine/ssh/client.go), except that the
# host key is verified against the machine's pinned key instead of being ignored, and
# LogLevel is ERROR rather than QUIET: quiet hid why a changed host key was refused
# (exit 255 and nothing), while ERROR still keeps banners and INFO chatter out.
_LOG_LEVEL = "LogLevel=ERROR"
_SSH_BASE_OPTIONS = (
    "-F", "/dev/null",
    "-o", "ConnectionAttempts=3",
    "-o", "ConnectTimeout=10",
    "-o", "ControlMaster=no",
    "-o", "ControlPath=none",
    "-o", _LOG_LEVEL,
    "-o", "PasswordAuthentication=no",
    "-o", "ServerAliveInterval=60",
)  # fmt: skip

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_key_file(path: Path) -> None:
    """Refuse a missing, unreadable or group/other-accessible private key, as Docker Machine did."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MachineError(f"No SSH key found at {path}") from None
    if os.name == "nt":  # POSIX permission bits mean nothing there
        return
    perm = stat.S_IMODE(st.st_mode)
    if perm & 0o400 == 0:
        raise MachineError(f"'{path}' is not readable")
    if perm & 0o077:
        raise MachineError(f"permissions 0{perm:o} for '{path}' are too open")


def wrap_command(
    command: str, *, user: str, sudo: bool = False, env: Mapping[str, str] | None = None
) -> str:
    """The shell text actually sent for ``Runner.run``.

    ``env`` is exported first so that it reaches the command through ``sudo -E``;
    ``sudo`` is dropped when already logged in as root.
    """
    text = command
    if sudo and user != "root":
        text = f"sudo -E sh -c {shlex.quote(command)}"
    if env:
        exports = []
        for key, value in env.items():
            if not _ENV_NAME.match(key):
                raise ValueError(f"invalid environment variable name: {key!r}")
            exports.append(f"export {key}={shlex.quote(value)}")
        text = "; ".join(exports) + "; " + text
    return text


def ssh_argv(
    target: SSHTarget, args: Sequence[str] = (), *, known_hosts: Path | None = None
) -> list[str]:
    """argv for the system ``ssh`` client: a login shell, or ``args`` run remotely.

    The user goes through ``-l`` and the host after ``--``, so neither can be read
    as an option whatever it holds.
    """
    argv = ["ssh", *_SSH_BASE_OPTIONS]
    argv += _host_key_options(known_hosts or target.known_hosts)
    if target.key_path is not None:
        argv += ["-o", "IdentitiesOnly=yes", "-i", str(target.key_path)]
    argv += ["-l", target.user, "-p", str(target.port), "--", target.host]
    return argv + list(args)


def _host_key_options(*known_hosts: Path) -> list[str]:
    files = " ".join(_config_quote(str(p)) for p in known_hosts)
    return ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={files}"]


def _config_quote(value: str) -> str:
    """Quote a value for an ssh ``-o`` option (ssh's own tokenizer honours double quotes)."""
    if '"' in value:
        raise MachineError(f"SSH option value may not contain a double quote: {value}")
    return f'"{value}"'


@dataclass(frozen=True)
class _Location:
    """One scp argument: a local path, or a path on a machine."""

    path: str
    target: SSHTarget | None = None
    user: str | None = None

    @property
    def login(self) -> str:
        assert self.target is not None
        return f"{self.user or self.target.user}@{_bracket(self.target.host)}"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse_scp_arg(arg: str, resolve: Callable[[str], SSHTarget]) -> _Location:
    """Parse ``[[user@]machine:][path]``; a bare path or ``localhost:`` means local."""
    if ":" not in arg:
        return _Location(arg)
    host, path = arg.split(":", 1)
    if host == "localhost":
        return _Location(path)
    user = None
    if "@" in host:
        user, host = host.split("@", 1)
        if user:
            check_ssh_value("SSH user", user)
    return _Location(path, resolve(host), user or None)


def scp_argv(
    sources: Sequence[str],
    dest: str,
    *,
    recursive: bool = False,
    quiet: bool = False,
    delta: bool = False,
    resolve: Callable[[str], SSHTarget],
) -> list[str]:
    """argv for ``pymachine scp``: ``scp`` (or ``rsync`` with ``delta``) between machines.

    With a single remote side the options mirror Docker Machine (``-o Port=`` and
    ``-o IdentityFile=``).  With remote machines on both sides ``-3`` routes the copy
    through this host and each side becomes an ``scp://user@host:port/path`` URI,
    because a single ``-o Port=`` cannot serve two machines on different ports.
    """
    if not sources or not dest:
        raise MachineError("Improper number of arguments")
    srcs = [parse_scp_arg(s, resolve) for s in sources]
    dst = parse_scp_arg(dest, resolve)
    remotes = [loc for loc in [*srcs, dst] if loc.target is not None]
    targets = _unique_targets(remotes)
    if delta:
        return _rsync_argv(srcs, dst, targets, recursive=recursive, quiet=quiet)

    both_sides = dst.target is not None and any(s.target is not None for s in srcs)
    third_party = both_sides or len(targets) > 1
    argv = ["scp", "-o", _LOG_LEVEL]
    argv += _host_key_options(*(t.known_hosts for t in targets))
    if third_party:
        argv.append("-3")
    if recursive:
        argv.append("-r")
    if quiet:
        argv.append("-q")
    argv += _identity_options(targets)
    if targets and not third_party:
        argv += ["-o", f"Port={targets[0].port}"]
    argv.append("--")  # operands only from here: a path or login starting with "-" stays one
    for loc in [*srcs, dst]:
        if loc.target is None:
            argv.append(loc.path)
        elif third_party:
            # In an scp URI the path after the first "/" is relative to the login's home.
            argv.append(f"scp://{loc.login}:{loc.target.port}/{loc.path}")
        else:
            argv.append(f"{loc.login}:{loc.path}")
    return argv


def _unique_targets(remotes: Sequence[_Location]) -> list[SSHTarget]:
    seen: list[SSHTarget] = []
    for loc in remotes:
        if loc.target is not None and loc.target not in seen:
            seen.append(loc.target)
    return seen


def _identity_options(targets: Sequence[SSHTarget]) -> list[str]:
    opts: list[str] = []
    # Only skip ssh-agent when every machine involved has its own key (as Docker Machine).
    if targets and all(t.key_path is not None for t in targets):
        opts += ["-o", "IdentitiesOnly=yes"]
    for t in targets:
        if t.key_path is not None:
            opts += ["-o", f"IdentityFile={_config_quote(str(t.key_path))}"]
    return opts


def _rsync_argv(
    srcs: Sequence[_Location],
    dst: _Location,
    targets: Sequence[SSHTarget],
    *,
    recursive: bool,
    quiet: bool,
) -> list[str]:
    if len(targets) > 1 or (dst.target is not None and any(s.target for s in srcs)):
        raise MachineError("--delta cannot copy between two remote machines")
    ssh = ["ssh", "-o", _LOG_LEVEL]
    if targets:
        t = targets[0]
        ssh += _host_key_options(t.known_hosts)
        ssh += _identity_options(targets)
        ssh += ["-o", f"Port={t.port}"]
    argv = ["rsync"]
    if not quiet:
        argv.append("--progress")
    argv += ["-e", shlex.join(ssh)]
    if recursive:
        argv.append("-r")
    argv.append("--")
    for loc in [*srcs, dst]:
        argv.append(loc.path if loc.target is None else f"{loc.login}:{loc.path}")
    return argv


def _fuse_escape(value: str) -> str:
    """Escape a value inside a FUSE ``-o`` list, where commas separate options."""
    return value.replace("\\", "\\\\").replace(",", "\\,")


def sshfs_argv(target: SSHTarget, remote_path: str, local_dir: str | Path) -> list[str]:
    """argv for ``pymachine mount``: ``sshfs`` with the machine's key and pinned host key."""
    argv = [
        "sshfs",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={_fuse_escape(str(target.known_hosts))}",
        "-o", _LOG_LEVEL,
    ]  # fmt: skip
    if target.key_path is not None:
        argv += ["-o", "IdentitiesOnly=yes"]
    argv += ["-o", f"Port={target.port}"]
    if target.key_path is not None:
        argv += ["-o", f"IdentityFile={_fuse_escape(str(target.key_path))}"]
    # sshfs (FUSE's option parser) ends options at "--" too.
    argv += ["--", f"{target.user}@{_bracket(target.host)}:{remote_path}", str(local_dir)]
    return argv


def unmount_argv(local_dir: str | Path) -> list[str]:
    """argv for ``pymachine mount -u``."""
    return ["fusermount", "-u", "--", str(local_dir)]


_MISSING_TOOL = {
    "ssh": "You must have a copy of the ssh binary locally to use the external SSH client",
    "scp": "You must have a copy of the scp binary locally to use the scp feature",
    "rsync": "You must have a copy of the rsync binary locally to use the --delta option",
    "sshfs": "You must have a copy of the sshfs binary locally to use the mount feature",
    "fusermount": "You must have a copy of the fusermount binary locally to use the mount feature",
}


def require_tool(argv: Sequence[str]) -> list[str]:
    """Resolve ``argv[0]`` on PATH, or fail with Docker Machine's one-line message."""
    found = shutil.which(argv[0])
    if found is None:
        raise MachineError(_MISSING_TOOL.get(argv[0], f"{argv[0]} not found on PATH"))
    return [found, *argv[1:]]
