"""Choose a provisioner from a host's ``/etc/os-release``.

Docker Machine iterated a Go map, so with overlapping rules the winner was
random; here the candidates are tried in a fixed order, most specific first.
"""

from __future__ import annotations

from pymachine.machine.errors import MachineError
from pymachine.machine.runner import Runner
from pymachine.provisioners.base import Provisioner
from pymachine.provisioners.debian import DebianProvisioner, UbuntuProvisioner
from pymachine.provisioners.others import (
    AlpineProvisioner,
    ArchProvisioner,
    Boot2DockerProvisioner,
    CoreOSProvisioner,
    SuseProvisioner,
)
from pymachine.provisioners.redhat import (
    AlmaLinuxProvisioner,
    CentOSProvisioner,
    FedoraProvisioner,
    OracleLinuxProvisioner,
    RedHatProvisioner,
    RockyProvisioner,
)

PROVISIONERS: tuple[type[Provisioner], ...] = (
    Boot2DockerProvisioner,
    CoreOSProvisioner,
    UbuntuProvisioner,
    DebianProvisioner,
    RedHatProvisioner,
    CentOSProvisioner,
    RockyProvisioner,
    AlmaLinuxProvisioner,
    FedoraProvisioner,
    OracleLinuxProvisioner,
    ArchProvisioner,
    SuseProvisioner,
    AlpineProvisioner,
)

_ESCAPABLE = '\\"$`'


class UnknownOSError(MachineError):
    def __init__(self, info: dict[str, str]) -> None:
        label = info.get("PRETTY_NAME") or info.get("NAME") or info.get("ID") or "unknown"
        super().__init__(f"OS type not recognized: {label}")
        self.info = info


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        body, out, i = value[1:-1], [], 0
        while i < len(body):
            if body[i] == "\\" and i + 1 < len(body) and body[i + 1] in _ESCAPABLE:
                out.append(body[i + 1])
                i += 2
            else:
                out.append(body[i])
                i += 1
        return "".join(out)
    return value


def parse_os_release(text: str) -> dict[str, str]:
    """``KEY=value`` lines; quotes stripped (with the shell escapes os-release
    allows inside double quotes); comments, blanks and junk lines ignored."""
    info: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if key.isidentifier():
            info[key] = _unquote(value.strip())
    return info


def select_provisioner(info: dict[str, str]) -> type[Provisioner]:
    for candidate in PROVISIONERS:
        if candidate.matches(info):
            return candidate
    raise UnknownOSError(info)


def detect(runner: Runner) -> Provisioner:
    """Read the host's os-release over ``runner`` and return a ready provisioner."""
    text = runner.run("cat /etc/os-release", check=False).stdout
    if not text.strip():
        text = runner.run("cat /usr/lib/os-release", check=False).stdout
    info = parse_os_release(text)
    return select_provisioner(info)(info)
