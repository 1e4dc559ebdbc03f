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

# Windows' OpenSSH (Win32-OpenSSH) has no connection multiplexing: no Control* options there.
_CONTROL_OPTIONS = ("ControlMaster=no", "ControlPath=none")

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_WINDOWS_DRIVE = re.compile(r"[A-Za-z]:([\\/]|\Z)")


def _is_windows(windows: bool | None) -> bool:
    """The caller's platform choice, else this interpreter's (tests pass it explicitly)."""
    return os.name == "nt" if windows is None else windows


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
    target: SSHTarget, args: Sequence[str] = (), *, known_hosts: Path | None = None,
    windows: bool | None = None,
) -> list[str]:
    """argv for the system ``ssh`` client: a login shell, or ``args`` run remotely.

    The user goes through ``-l``, so it is never read as an option whatever it holds;
    the host (checked: never starts with ``-``) comes without ``--`` because OpenSSH
    goes on parsing options after it (``pymachine ssh NAME -L ... -N``, as
    docker-machine), which ``--`` would turn into a remote command.
    """
    argv = ["ssh", *_base_options(_is_windows(windows))]
    argv += _host_key_options(known_hosts or target.known_hosts)
    if target.key_path is not None:
        argv += ["-o", "IdentitiesOnly=yes", "-i", str(target.key_path)]
    argv += ["-l", target.user, "-p", str(target.port), target.host]
    return argv + list(args)


def _base_options(windows: bool) -> list[str]:
    opts = list(_SSH_BASE_OPTIONS)
    if windows:
        for opt in _CONTROL_OPTIONS:
            i = opts.index(opt)
            del opts[i - 1:i + 1]  # the value and its "-o"
    return opts


def _host_key_options(*known_hosts: Path) -> list[str]:
    files = " ".join(_config_quote(str(p)) for p in known_hosts)
    return ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={files}"]


def _config_quote(value: str) -> str:
    """Quote a path for an ssh ``-o`` option, for ssh's own tokenizer (argv_split).

    Inside double quotes ssh (8.2+) reads ``\\\\`` as one backslash, so Windows paths
    (``C:\\Users\\...``, ``\\\\server\\share``) have theirs doubled; an older ssh keeps
    them doubled, which Windows reads as one separator.
    """
    if '"' in value:
        raise MachineError(f"SSH option value may not contain a double quote: {value}")
    return '"' + value.replace("\\", "\\\\") + '"'


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


def parse_scp_arg(
    arg: str, resolve: Callable[[str], SSHTarget], *, windows: bool | None = None
) -> _Location:
    """Parse ``[[user@]machine:][path]``; a bare path or ``localhost:`` means local.

    On Windows a drive path (``C:\\dir``, ``c:/dir``) is local too, not machine ``C``.
    """
    if ":" not in arg or (_is_windows(windows) and _WINDOWS_DRIVE.match(arg)):
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
    windows: bool | None = None,
) -> list[str]:
    """argv for ``pymachine scp``: ``scp`` (or ``rsync`` with ``delta``) between machines.

    With a single remote side the options mirror Docker Machine (``-o Port=`` and
    ``-o IdentityFile=``).  With remote machines on both sides ``-3`` routes the copy
    through this host and each side becomes an ``scp://user@host:port/path`` URI,
    because a single ``-o Port=`` cannot serve two machines on different ports.
    """
    if not sources or not dest:
        raise MachineError("Improper number of arguments")
    srcs = [parse_scp_arg(s, resolve, windows=windows) for s in sources]
    dst = parse_scp_arg(dest, resolve, windows=windows)
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
            user = _uri_escape(loc.user or loc.target.user)
            argv.append(f"scp://{user}@{_bracket(loc.target.host)}:{loc.target.port}/{_uri_escape(loc.path)}")
        else:
            argv.append(f"{loc.login}:{loc.path}")
    return argv


def _uri_escape(text: str) -> str:
    """Escape what OpenSSH's ``urldecode`` changes in an ``scp://`` URI's user and path: ``%XX``
    and ``+`` (read as a space), so ``50%off`` or ``a+b`` name the file they name outside a URI."""
    return text.replace("%", "%25").replace("+", "%2B")


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


def require_tool(
    argv: Sequence[str], *, windows: bool | None = None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Resolve ``argv[0]`` on PATH, or fail with Docker Machine's one-line message.

    On Windows, ssh and scp are first taken from Windows' own OpenSSH
    (``%SystemRoot%\\System32\\OpenSSH``), which is not always on PATH.
    """
    found = None
    if _is_windows(windows) and argv[0] in ("ssh", "scp"):
        found = _windows_openssh(argv[0], os.environ if environ is None else environ)
    found = found or shutil.which(argv[0])
    if found is None:
        raise MachineError(_MISSING_TOOL.get(argv[0], f"{argv[0]} not found on PATH"))
    return [found, *argv[1:]]


def _windows_openssh(tool: str, environ: Mapping[str, str]) -> str | None:
    """``%SystemRoot%\\System32\\OpenSSH\\<tool>.exe`` if that file exists."""
    import ntpath

    root = environ.get("SystemRoot") or environ.get("SYSTEMROOT") or environ.get("windir")
    if not root:
        return None
    exe = ntpath.join(root, "System32", "OpenSSH", f"{tool}.exe")
    return exe if os.path.isfile(exe) else None
