"""What `pymachine env` prints: shell detection and per-shell syntax.

The output is byte-identical to docker-machine 0.16 (``commands/env.go`` and
``libmachine/shell``) for every value made of ordinary characters, because
users' scripts and tests compare it.  Two deliberate differences:

* values are escaped for the target shell, so a path holding ``"``, ``$``,
  a backtick or a backslash can neither break the line nor run code
  (docker-machine pasted values in raw);
* ``pwsh`` is treated as PowerShell and ``nu`` (nushell) gets its own syntax,
  which users asked for (docker/machine#4037).

This module is on the hot path of every `env` call: standard library only.
"""

from __future__ import annotations

import ntpath
import os
import posixpath
import sys
from collections.abc import Mapping, Sequence

from pymachine.machine.errors import MachineError

# Shells with their own syntax; any other name renders like bash.
SHELLS = ("bash", "zsh", "sh", "fish", "powershell", "pwsh", "cmd", "tcsh", "emacs", "nu")
DEFAULT_SHELL = "bash"

# Printed to stdout (verbatim, already ends in a blank line) before failing
# with UnknownShell when $SHELL is empty on Unix.
UNKNOWN_SHELL_HINT = (
    "The default lines below are for a sh/bash shell, you can specify the shell "
    "you're using, with the --shell flag.\n\n"
)
# Printed to stdout (verbatim) on Windows when detection falls back to cmd.
WINDOWS_DEFAULT_NOTE = (
    "You can further specify your shell with either 'cmd' or 'powershell' with the --shell flag.\n\n"
)

_ALIASES = {"pwsh": "powershell", "pwsh.exe": "powershell", "nu.exe": "nu"}


class UnknownShell(MachineError):
    """$SHELL is empty and no --shell was given (docker-machine's wording)."""

    def __init__(self, message: str = "Error: Unknown shell") -> None:
        super().__init__(message)


def normalize_shell(shell: str) -> str:
    """Map aliases to the syntax family: ``pwsh`` is PowerShell, ``nu.exe`` is nushell."""
    return _ALIASES.get(shell, shell)


def _basename(path: str, windows: bool) -> str:
    """Go's ``filepath.Base``: trailing separators ignored, ``/`` for all-separators."""
    mod = ntpath if windows else posixpath
    seps = "\\/" if windows else "/"
    if windows:
        path = ntpath.splitdrive(path)[1]
    stripped = path.rstrip(seps)
    if not stripped:
        return "." if not path else seps[-1]
    return mod.basename(stripped)


def detect_shell(
    environ: Mapping[str, str] | None = None,
    platform: str | None = None,
    parent_names: Sequence[str] | None = None,
) -> tuple[str, str | None]:
    """Guess the user's shell as docker-machine did; returns (shell, note to print or None).

    Unix: ``basename($SHELL)``; an empty SHELL raises UnknownShell (print
    UNKNOWN_SHELL_HINT first).  Windows: SHELL set -> ``fish`` if
    ``__fish_bin_dir`` is set, else its basename; otherwise the parent and then
    grandparent process names (powershell/pwsh/cmd); otherwise ``cmd`` with
    WINDOWS_DEFAULT_NOTE.  ``parent_names`` lets callers and tests supply the
    process names; on Windows they are looked up when omitted.
    """
    env = os.environ if environ is None else environ
    plat = sys.platform if platform is None else platform
    windows = plat.startswith("win")
    shell = env.get("SHELL", "")
    if not windows:
        if not shell:
            raise UnknownShell()
        return normalize_shell(_basename(shell, False)), None
    if shell:
        if env.get("__fish_bin_dir", ""):
            return "fish", None
        return normalize_shell(_basename(shell, True)), None
    names = _windows_parent_names() if parent_names is None else parent_names
    for name in list(names)[:2]:
        low = name.lower()
        if "powershell" in low or "pwsh" in low:
            return "powershell", None
        if "cmd" in low:
            return "cmd", None
    return "cmd", WINDOWS_DEFAULT_NOTE


def _windows_parent_names() -> list[str]:
    """Exe names of our parent and grandparent (Toolhelp32 snapshot); [] on any failure."""
    try:
        import ctypes
        from ctypes import wintypes

        class _Entry(ctypes.Structure):
            _fields_ = [
                ("dwSize", wintypes.DWORD),
                ("cntUsage", wintypes.DWORD),
                ("th32ProcessID", wintypes.DWORD),
                ("th32DefaultHeapID", ctypes.c_size_t),
                ("th32ModuleID", wintypes.DWORD),
                ("cntThreads", wintypes.DWORD),
                ("th32ParentProcessID", wintypes.DWORD),
                ("pcPriClassBase", ctypes.c_long),
                ("dwFlags", wintypes.DWORD),
                ("szExeFile", ctypes.c_wchar * 260),
            ]

        k32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        k32.CreateToolhelp32Snapshot.restype = wintypes.HANDLE
        snap = k32.CreateToolhelp32Snapshot(0x2, 0)  # TH32CS_SNAPPROCESS
        if not snap or snap == wintypes.HANDLE(-1).value:
            return []
        table: dict[int, tuple[str, int]] = {}
        try:
            entry = _Entry()
            entry.dwSize = ctypes.sizeof(_Entry)
            ok = k32.Process32FirstW(snap, ctypes.byref(entry))
            while ok:
                table[entry.th32ProcessID] = (entry.szExeFile, entry.th32ParentProcessID)
                ok = k32.Process32NextW(snap, ctypes.byref(entry))
        finally:
            k32.CloseHandle(snap)
        names: list[str] = []
        pid = os.getppid()
        for _ in range(2):
            if pid not in table:
                break
            name, pid = table[pid]
            names.append(name)
        return names
    except Exception:  # noqa: BLE001 - detection is best effort, cmd is the fallback
        return []


# --- value escaping -------------------------------------------------------


def _escape(value: str, specials: str, escape_char: str = "\\") -> str:
    return "".join(escape_char + ch if ch in specials else ch for ch in value)


def _posix_quote(value: str) -> str:
    # Inside "...", only these four keep a special meaning for sh/bash/zsh.
    return '"' + _escape(value, '\\"$`') + '"'


def _fish_quote(value: str) -> str:
    return '"' + _escape(value, '\\"$') + '"'


def _powershell_quote(value: str) -> str:
    # PowerShell also treats the typographic double quotes as quote characters.
    return '"' + _escape(value, '`"$\u201c\u201d\u201e', "`") + '"'


def _tcsh_quote(value: str) -> str:
    # csh cannot escape inside "...": close the quotes and use '...' (or \" ) there.
    out = []
    for ch in value:
        if ch == '"':
            out.append('"\\""')
        elif ch in "$`!":
            out.append("\"'" + ch + "'\"" if ch != "!" else '"\\!"')
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _elisp_quote(value: str) -> str:
    return '"' + _escape(value, '\\"') + '"'


_NU_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _nu_quote(value: str) -> str:
    # The same escapes mean the same in JSON, which the nu usage hint relies on.
    return '"' + "".join(_NU_ESCAPES.get(ch, ch) for ch in value) + '"'


def render_set(shell: str, variables: Sequence[tuple[str, str]]) -> str:
    """Lines that set each (name, value), in order, in the syntax of ``shell``."""
    shell = normalize_shell(shell)
    lines = []
    for name, value in variables:
        if shell == "fish":
            lines.append(f"set -gx {name} {_fish_quote(value)};\n")
        elif shell == "powershell":
            lines.append(f"$Env:{name} = {_powershell_quote(value)}\n")
        elif shell == "cmd":
            # cmd has no quoting that SET would not keep; docker-machine's raw form.
            lines.append(f"SET {name}={value}\n")
        elif shell == "tcsh":
            lines.append(f"setenv {name} {_tcsh_quote(value)};\n")
        elif shell == "emacs":
            lines.append(f'(setenv "{name}" {_elisp_quote(value)})\n')
        elif shell == "nu":
            lines.append(f"$env.{name} = {_nu_quote(value)}\n")
        else:
            lines.append(f"export {name}={_posix_quote(value)}\n")
    return "".join(lines)


# Characters allowed in the NO_PROXY value that `-u --no-proxy` glues to the
# name (docker-machine's quirk); anything else could run as code, so drop it.
_QUIRK_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._,:/-")


def render_unset(shell: str, names: Sequence[str], no_proxy: tuple[str, str] | None = None) -> str:
    """Lines that unset ``names`` and then ``no_proxy``'s variable.

    ``no_proxy`` is (variable, current value) as ``find_no_proxy`` returns.
    docker-machine appended that current value straight after the name (its
    unset template had no delimiter), e.g. ``unset NO_PROXYlocalhost``; that is
    kept for values of plain characters and dropped otherwise.  nushell, being
    new, does not get the quirk.
    """
    shell = normalize_shell(shell)
    items = [(n, "") for n in names]
    if no_proxy is not None:
        var, value = no_proxy
        if shell == "nu" or not set(value) <= _QUIRK_SAFE:
            value = ""
        items.append((var, value))
    lines = []
    for name, tail in items:
        if shell == "fish":
            lines.append(f"set -e {name}{tail};\n")
        elif shell == "powershell":
            lines.append(f"Remove-Item Env:\\\\{name}{tail}\n")
        elif shell == "cmd":
            lines.append(f"SET {name}={tail}\n")
        elif shell == "tcsh":
            lines.append(f"unsetenv {name}{tail};\n")
        elif shell == "emacs":
            lines.append(f'(setenv "{name}" nil{tail})\n')
        elif shell == "nu":
            lines.append(f"hide-env -i {name}\n")
        else:
            lines.append(f"unset {name}{tail}\n")
    return "".join(lines)


def usage_hint(shell: str, argv: Sequence[str], *, unset: bool = False) -> str:
    """The two comment lines telling the user how to apply the output.

    ``argv[0]`` is wrapped in double quotes when it holds a space or a
    backslash, exactly as docker-machine did.  ``unset`` only matters for
    nushell, whose hint differs between setting and unsetting.
    """
    args = list(argv)
    if args and (" " in args[0] or "\\" in args[0]):
        args[0] = f'"{args[0]}"'
    line = " ".join(args)
    shell = normalize_shell(shell)
    comment = "#"
    if shell == "fish":
        cmd = f"eval ({line})"
    elif shell == "powershell":
        cmd = f"& {line} | Invoke-Expression"
    elif shell == "cmd":
        cmd = f"\t@FOR /f \"tokens=*\" %i IN ('{line}') DO @%i"
        comment = "REM"
    elif shell == "emacs":
        cmd = f'(with-temp-buffer (shell-command "{line}" (current-buffer)) (eval-buffer))'
        comment = ";;"
    elif shell == "tcsh":
        cmd = f"eval `{line}`"
        comment = ":"
    elif shell == "nu":
        # nushell cannot eval text; parse our own lines into load-env / hide-env.
        if unset:
            cmd = f"hide-env -i ...({line} | lines | parse 'hide-env -i {{name}}' | get name)"
        else:
            cmd = (
                f"{line} | lines | parse '$env.{{name}} = {{value}}' "
                "| reduce --fold {} {|it, acc| $acc | upsert $it.name ($it.value | from json)} | load-env"
            )
    else:
        cmd = f"eval $({line})"
    return f"{comment} Run this command to configure your shell: \n{comment} {cmd}\n"


def find_no_proxy(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(variable, value): ``no_proxy`` if it is non-empty, else ``NO_PROXY``."""
    env = os.environ if environ is None else environ
    value = env.get("no_proxy", "")
    if value:
        return "no_proxy", value
    return "NO_PROXY", env.get("NO_PROXY", "")


def no_proxy_update(environ: Mapping[str, str], ip: str) -> tuple[str, str]:
    """(variable, new value) with ``ip`` added once, as `env --no-proxy` prints it.

    Like docker-machine, "already there" is a substring test, so 10.0.0.1 is
    considered present in "10.0.0.10".
    """
    var, value = find_no_proxy(environ)
    if not value:
        return var, ip
    if ip in value:
        return var, value
    return var, f"{value},{ip}"


def docker_variables(
    host_url: str,
    cert_path: str,
    machine_name: str,
    *,
    windows_client: bool = False,
    no_proxy: tuple[str, str] | None = None,
) -> list[tuple[str, str]]:
    """The variables `env NAME` sets, in docker-machine's order."""
    variables = [
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_HOST", host_url),
        ("DOCKER_CERT_PATH", cert_path),
        ("DOCKER_MACHINE_NAME", machine_name),
    ]
    if windows_client:
        variables.append(("COMPOSE_CONVERT_WINDOWS_PATHS", "true"))
    if no_proxy is not None:
        variables.append(no_proxy)
    return variables


# `env -u` never unsets COMPOSE_CONVERT_WINDOWS_PATHS (docker-machine didn't).
UNSET_NAMES = ("DOCKER_TLS_VERIFY", "DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_MACHINE_NAME")


def env_output(
    shell: str,
    variables: Sequence[tuple[str, str]],
    argv: Sequence[str],
    *,
    unset: bool = False,
    no_proxy: tuple[str, str] | None = None,
) -> str:
    """The whole text `env` prints to stdout.

    Set mode: ``variables`` (see ``docker_variables``) then the usage hint.
    Unset mode: the names of ``variables`` (UNSET_NAMES when empty), then
    ``no_proxy`` = (variable, current value) if --no-proxy was given, then the hint.
    """
    if unset:
        names = [n for n, _ in variables] or list(UNSET_NAMES)
        body = render_unset(shell, names, no_proxy)
    else:
        body = render_set(shell, variables)
    return body + usage_hint(shell, argv, unset=unset)
