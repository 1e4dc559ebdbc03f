"""Error types shared by every layer.

Each error carries the process exit code the CLI should use, so the CLI never
has to guess: 1 for ordinary failures and 3 for pre-create check failures,
as Docker Machine 0.16 did.
"""

from __future__ import annotations


class MachineError(Exception):
    """A failure to report to the user as one line, then exit non-zero."""

    exit_code = 1


class PreCreateError(MachineError):
    """A pre-create check failed: nothing was created (exit code 3)."""

    exit_code = 3


def quoted(name: str) -> str:
    """``"name"``, escaped like Go's ``%q`` when it holds control characters or quotes, so
    a hostile name (``"a\n"``) cannot split a one-line error (docker-machine used %q)."""
    if name.isprintable() and '"' not in name and "\\" not in name:
        return f'"{name}"'
    import json

    return json.dumps(name, ensure_ascii=False)


class MachineNotFound(MachineError):
    def __init__(self, name: str, argv0: str = "pymachine") -> None:
        super().__init__(
            f'Docker machine {quoted(name)} does not exist. Use "{argv0} ls" to list machines. '
            f'Use "{argv0} create" to add a new one.'
        )
        self.name = name


class HostNotRunning(MachineError):
    def __init__(self, message: str = "Host is not running") -> None:
        super().__init__(message)


class CommandError(MachineError):
    """A remote (or local) command exited non-zero."""

    def __init__(self, command: str, exit_status: int, stdout: str = "", stderr: str = "") -> None:
        detail = (stderr or stdout).strip().splitlines()
        tail = detail[-1] if detail else ""
        super().__init__(f"command failed (exit {exit_status}): {command}" + (f": {tail}" if tail else ""))
        self.command = command
        self.exit_status = exit_status
        self.stdout = stdout
        self.stderr = stderr
