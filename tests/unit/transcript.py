"""A recording ``machine.runner.Runner`` for transcript tests.

It records every ``run``/``put``/``get`` in order, answers commands from a
table of regular expressions (or a callable), and keeps the files written by
``put`` so a later ``cat <path>`` reads them back, which makes re-running a
provisioner on "the same host" meaningful.

It is strict, as libmachine's ``provisiontest.FakeSSHCommander``: a command
no response matches (and that is not a ``cat`` of a file it holds or a
``cat > path`` upload) fails the test with ``UnexpectedCommand``, an
AssertionError the code under test does not catch as a command failure.
Each test therefore says what the host answers to every command it expects.
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


#: Commands that change a host and, on a healthy one, exit 0 with no output: the
#: only commands a test may leave unanswered, by passing ``accept=HOST_CHANGES``.
#: Probes (whose output or exit status the provisioner decides on: ``command -v``,
#: ``test -d``, ``systemctl is-active``, ``stat``, ``id``...) are never here: each
#: test answers them as the host it models would.
HOST_CHANGES: tuple[str, ...] = (
    r"^hostname \S+ && printf '%s\\n' \S+ > /etc/hostname$",
    r"^hostnamectl set-hostname \S+$",
    r"^/usr/bin/sethostname \S+ && printf '%s\\n' \S+ > /var/lib/boot2docker/etc/hostname$",
    r"^systemctl (daemon-reload|(enable|restart|stop|start) docker\.service|disable --now docker\.socket)$",
    r"^/etc/init\.d/docker (start|stop|restart)( \|\| true)?$",
    r"^rc-service docker (start|stop|restart)$",
    r"^rc-update add docker default$",
    r"^DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=\d+ "
    r".* (update|install -y --no-install-recommends [\w. -]+)$",
    r"^if command -v dnf >/dev/null 2>&1; then dnf -y install [\w. -]+; else yum -y install [\w. -]+; fi$",
    r"^zypper -n in docker$",
    r"^pacman -Sy --noconfirm --noprogressbar --needed docker$",
    r"^apk add --no-cache docker$",
    r"^SUSEConnect -p sle-module-containers/[\d.]+/\"\$\(uname -m\)\"$",
    r"^if ! type docker; then curl -sSL \S+ \| sh -; fi$",
    r"^rm -f /etc/(apt/apt\.conf\.d/\d+pymachine-proxy|yum\.conf\.d/\S+)$",
    r"^chown \w+: /(root|home/\w+)/\.docker /(root|home/\w+)/\.docker/config\.json$",
)


class UnexpectedCommand(AssertionError):
    """A command the test did not expect: the fake has no honest answer for it."""


@dataclass
class RecordingRunner:
    """``responses`` maps regex -> result (first ``re.search`` match wins), or
    is a callable returning a result or None; unmatched commands fail the test
    (they are also kept in ``unexpected``, in case the code swallows the error)."""

    responses: Mapping[str, CommandResult | Responder] | Responder | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    accept: tuple[str, ...] = ()  # regexes answered OK after ``responses`` (see HOST_CHANGES)

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
        if re.fullmatch(r"cat > \S+", command):
            return OK  # an upload through stdin, kept in ``files`` by ``run``
        if any(re.search(pattern, command) for pattern in self.accept):
            return OK
        self.unexpected.append(command)
        raise UnexpectedCommand(f"unexpected command (no response matches): {command!r}")

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
