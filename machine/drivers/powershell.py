"""Running PowerShell for the ``hyperv`` driver: find it per OS, quote values, read JSON answers.

docker-machine ran ``powershell.exe -NoProfile -NonInteractive <words>`` and
read plain text, showing only "exit status 1" on failure.  pymachine passes
one ``-Command`` script per operation (``$ErrorActionPreference = 'Stop'`` so
the first failing cmdlet ends it with exit 1), asks for JSON where it reads
objects (``ConvertTo-Json -Compress @(...)``: Windows PowerShell 5.1 has no
``-AsArray``; enums are cast to strings because their numbers differ between
Windows releases), and reports the cmdlet's own error line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Any

from pymachine.machine.errors import MachineError

PRELUDE = "$ErrorActionPreference = 'Stop'; [Console]::OutputEncoding = [Text.Encoding]::UTF8; "
CALL_TIMEOUT = 120.0


def candidates(platform: str = sys.platform) -> tuple[str, ...]:
    """Executable names to look for: Windows PowerShell first on Windows (every Hyper-V host has it)."""
    if platform == "win32":
        return ("powershell.exe", "pwsh.exe")
    return ("pwsh", "powershell")


def find_powershell(platform: str = sys.platform, path: str | None = None) -> str:
    for name in candidates(platform):
        found = shutil.which(name, path=path)
        if found:
            return found
    raise MachineError(f"Powershell was not found in the path (looked for {' and '.join(candidates(platform))})")


def quote(value: str) -> str:
    """A PowerShell single-quoted string literal (``'`` doubled; nothing inside is expanded)."""
    return "'" + str(value).replace("'", "''") + "'"


def error_line(stderr: str) -> str:
    """The message line of a PowerShell error record (the first non-empty line before ``At line:``)."""
    for line in stderr.replace("\r", "").splitlines():
        text = line.strip()
        if text and not text.startswith(("At line:", "+ ", "+\t")):
            return text
    return ""


class PowerShell:
    """One ``powershell -NoProfile -NonInteractive -Command <script>`` per call, bounded in time."""

    def __init__(self, executable: str) -> None:
        self.executable = executable

    def run(self, script: str, timeout: float = CALL_TIMEOUT) -> str:
        argv = [self.executable, "-NoProfile", "-NonInteractive", "-Command", PRELUDE + script]
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise MachineError(f"PowerShell did not finish within {timeout:g}s") from None
        except OSError as exc:
            raise MachineError(f"cannot run {self.executable}: {exc.strerror or exc}") from None
        stdout = proc.stdout.decode("utf-8", errors="replace").replace("\r\n", "\n")
        if proc.returncode != 0:
            message = error_line(proc.stderr.decode("utf-8", errors="replace")) or f"exit status {proc.returncode}"
            raise MachineError(message)
        return stdout

    def json(self, pipeline: str, timeout: float = CALL_TIMEOUT) -> list[dict[str, Any]]:
        """The pipeline's objects as a list (``@()`` keeps one result a list and none ``[]``)."""
        out = self.run(f"ConvertTo-Json -Compress @({pipeline})", timeout).strip()
        if not out:
            return []
        try:
            data = json.loads(out)
        except ValueError:
            raise MachineError(f"PowerShell answered something that is not JSON: {out[:120]!r}") from None
        if isinstance(data, dict):  # ConvertTo-Json unwraps a one-element array given through a pipe
            data = [data]
        return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []
