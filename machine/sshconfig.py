"""An OpenSSH ``Host`` block for a machine, so ``ssh -F``, rsync and VS Code Remote-SSH reach it.

The block carries the machine's own pinned ``known_hosts`` with strict checking, as
``pymachine ssh`` does, so other tools get the same trust, never trust-on-first-use.
"""

from __future__ import annotations

import re

from pymachine.machine.sshcommands import SSHTarget

_NEEDS_QUOTES = re.compile(r"[\s\"#]")


def _quote(value: str) -> str:
    """ssh_config(5) takes a double-quoted argument for values with blanks or quotes."""
    if not _NEEDS_QUOTES.search(value):
        return value
    if '"' in value:
        raise ValueError(f"ssh_config cannot carry a double quote in {value!r}")
    return f'"{value}"'


def host_block(alias: str, target: SSHTarget) -> str:
    """The ``Host`` block for ``alias``; ends with a newline."""
    lines = [
        f"Host {_quote(alias)}",
        f"  HostName {target.host}",
        f"  Port {target.port}",
        f"  User {_quote(target.user)}",
    ]
    if target.key_path is not None:
        lines += [f"  IdentityFile {_quote(str(target.key_path))}", "  IdentitiesOnly yes"]
    lines += [
        f"  UserKnownHostsFile {_quote(str(target.known_hosts))}",
        "  StrictHostKeyChecking yes",
        "  PasswordAuthentication no",
        "  LogLevel ERROR",
    ]
    return "\n".join(lines) + "\n"
