"""The one interface through which provisioning touches a host.

Provisioners and the engine installer only ever call ``Runner.run`` and
``Runner.put``.  The SSH client implements it for real hosts; tests implement
it with a recorder to check command transcripts.  Keeping the surface this
small is what lets the same provisioning code run against real hosts and be
checked as data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class Runner(Protocol):
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
        """Run a shell command on the host.

        ``sudo`` wraps it as ``sudo -E sh -c '<command>'`` unless the login user
        is root; ``env`` is exported for the command only (it is how proxy
        settings reach apt/yum/curl); with ``check`` a non-zero exit raises
        ``machine.errors.CommandError``.
        """
        ...

    def put(self, remote_path: str, data: bytes, *, mode: int = 0o644, sudo: bool = True) -> None:
        """Write ``data`` to ``remote_path`` atomically (temp file + rename), creating parents."""
        ...

    def get(self, remote_path: str) -> bytes:
        """Read a remote file."""
        ...
