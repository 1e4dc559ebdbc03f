"""A recording ``machine.runner.Runner`` for transcript tests.

It records every ``run``/``put``/``get`` in order, answers commands from a
table of regular expressions (or a callable), and keeps the files written by
``put`` so a later ``cat <path>`` reads them back, which makes re-running a
provisioner on "the same host" meaningful.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pymachine.machine.errors import CommandError
from pymachine.machine.runner import CommandResult

Responder = Callable[[str], CommandResult | None]

OK = CommandResult(0, "", "")
FAIL = CommandResult(1, "", "")


@dataclass
class Call:
    kind: str  # "run" | "put" | "get"
    target: str  # the command, or the remote path
    sudo: bool = False
    env: dict[str, str] | None = None
    stdin: bytes | None = None
    data: bytes | None = None
    mode: int | None = None
    check: bool = True

    def __str__(self) -> str:
        return self.target if self.kind == "run" else f"{self.kind} {self.target}"


@dataclass
class RecordingRunner:
    """``responses`` maps regex -> result (first ``re.search`` match wins), or
    is a callable returning a result or None; unmatched commands succeed."""

    responses: Mapping[str, CommandResult | Responder] | Responder | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def _answer(self, command: str) -> CommandResult:
        if callable(self.responses):
            result = self.responses(command)
            if result is not None:
                return result
        elif self.responses:
            for pattern, answer in self.responses.items():
                if re.search(pattern, command):
                    result = answer(command) if callable(answer) else answer
                    if result is not None:
                        return result
        cat = re.fullmatch(r"cat (\S+)", command)
        if cat:
            path = shlex.split(cat.group(1))[0]
            if path in self.files:
                return CommandResult(0, self.files[path].decode(), "")
            return CommandResult(1, "", f"cat: {path}: No such file or directory")
        return OK

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
        self.calls.append(
            Call("run", command, sudo=sudo, env=dict(env) if env else None, stdin=stdin, check=check)
        )
        result = self._answer(command)
        if command.startswith("cat > ") and stdin is not None and result.ok:
            self.files[command[len("cat > "):].strip()] = stdin
        if check and not result.ok:
            raise CommandError(command, result.exit_status, result.stdout, result.stderr)
        return result

    def put(self, remote_path: str, data: bytes, *, mode: int = 0o644, sudo: bool = True) -> None:
        self.calls.append(Call("put", remote_path, sudo=sudo, data=data, mode=mode))
        self.files[remote_path] = data

    def get(self, remote_path: str) -> bytes:
        self.calls.append(Call("get", remote_path))
        if remote_path not in self.files:
            raise FileNotFoundError(remote_path)
        return self.files[remote_path]

    # -- inspection helpers ------------------------------------------------

    @property
    def transcript(self) -> list[str]:
        """Every call as one line: commands as-is, files as ``put <path>``."""
        return [str(c) for c in self.calls]

    @property
    def commands(self) -> list[str]:
        return [c.target for c in self.calls if c.kind == "run"]

    def index(self, pattern: str, start: int = 0) -> int:
        """Position in ``transcript`` of the first line matching ``pattern``."""
        for i, line in enumerate(self.transcript[start:], start):
            if re.search(pattern, line):
                return i
        raise AssertionError(f"no call matches {pattern!r} in:\n" + "\n".join(self.transcript))

    def find(self, pattern: str) -> list[Call]:
        return [c for c in self.calls if re.search(pattern, str(c))]

    def put_text(self, path: str) -> str:
        puts = [c for c in self.calls if c.kind == "put" and c.target == path]
        if not puts:
            raise AssertionError(f"nothing was written to {path}")
        assert puts[-1].data is not None
        return puts[-1].data.decode()
