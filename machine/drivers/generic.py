"""The ``generic`` driver: adopt an existing host reachable over SSH.

Flags, env vars and semantics are docker-machine's: the box already exists,
so create only copies the SSH key into the machine directory; state is a TCP
dial of the SSH port; start/stop/kill are not supported; remove leaves the
host alone.  Provisioning over SSH is the Host layer's job, not this one's.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from typing import Any

from pymachine.machine import layout, urls
from pymachine.machine.drivers.base import Driver, DriverCapabilities, Flag, Log, State
from pymachine.machine.drivers.settings import Settings, setting
from pymachine.machine.errors import HostNotRunning, MachineError, PreCreateError

# A user's key must never land on (or later be overwritten by) a file pymachine keeps in the
# machine dir, e.g. a key called key.pem by the TLS client key.
RESERVED_NAMES = layout.OWN_FILES


def key_file_name(key: str) -> str:
    """The key's name inside the machine dir: its own (as Docker Machine), unless taken."""
    base = os.path.basename(key)
    if base in RESERVED_NAMES or base + ".pub" in RESERVED_NAMES or base.startswith("."):
        return "ssh-" + base.lstrip(".")
    return base


def _copy_private(src: str, dest: str) -> None:
    """Copy as a new 0600 file renamed into place: a symlink planted at ``dest`` is replaced,
    never followed."""
    from pathlib import Path

    from pymachine.machine.atomic import write_atomic

    with open(src, "rb") as fh:
        write_atomic(Path(dest), fh.read(), mode=0o600)


@dataclasses.dataclass
class GenericSettings(Settings):
    engine_port: int = setting("EnginePort", 2376)
    ssh_key: str = setting("SSHKey", "")


class GenericDriver(Driver):
    settings_class = GenericSettings
    settings: GenericSettings
    name = "generic"
    capabilities = DriverCapabilities(restart=True, own_engine_url=True)
    flags = (
        Flag("generic-engine-port", "int", 2376, "GENERIC_ENGINE_PORT", "Docker engine port"),
        Flag("generic-ip-address", "string", "", "GENERIC_IP_ADDRESS", "IP Address of machine"),
        Flag("generic-ssh-user", "string", "root", "GENERIC_SSH_USER", "SSH user"),
        Flag(
            "generic-ssh-key",
            "string",
            "",
            "GENERIC_SSH_KEY",
            "SSH private key path (if not provided, default SSH key will be used)",
        ),
        Flag("generic-ssh-port", "int", 22, "GENERIC_SSH_PORT", "SSH port"),
    )

    def set_config_from_flags(self, values: Mapping[str, Any]) -> None:
        ip = str(values.get("generic-ip-address") or "")
        if not ip:
            raise MachineError("generic driver requires the --generic-ip-address option")
        for flag in ("generic-engine-port", "generic-ssh-port"):
            port = values.get(flag)
            if not isinstance(port, int) or not 0 < port < 65536:
                raise MachineError(f"--{flag} must be a port number between 1 and 65535, got {port!r}")
        from pymachine.machine.sshcommands import check_ssh_value

        user = str(values.get("generic-ssh-user") or "root")
        key = str(values.get("generic-ssh-key") or "")
        check_ssh_value("--generic-ip-address", ip)
        check_ssh_value("--generic-ssh-user", user)
        if key:
            check_ssh_value("--generic-ssh-key", key, path=True)
        self.settings.update(
            ip_address=ip,
            ssh_user=user,
            ssh_port=int(values["generic-ssh-port"]),
            engine_port=int(values["generic-engine-port"]),
            ssh_key=os.path.expanduser(str(values.get("generic-ssh-key") or "")),
        )

    @property
    def engine_port(self) -> int:
        return int(self.settings.engine_port or 2376)

    def pre_create_check(self) -> None:
        key = self.settings.ssh_key
        if key and not os.path.isfile(key):
            raise PreCreateError(f"SSH key does not exist: {key!r}")

    def create(self, log: Log) -> None:
        key = self.settings.ssh_key
        if not key:
            log(f"({self.machine_name}) No SSH key specified. Assuming an existing key at the default location.")
            return
        dest = os.path.join(self.machine_dir, key_file_name(key))
        log(f"({self.machine_name}) Importing SSH key...")
        _copy_private(key, dest)
        if os.path.exists(key + ".pub"):
            _copy_private(key + ".pub", dest + ".pub")
        self.settings.ssh_key_path = dest

    def ssh_address(self) -> tuple[str, int, str, str]:
        key = self.settings.ssh_key_path
        return self.ip(), int(self.settings.ssh_port or 22), str(self.settings.ssh_user or "root"), key

    def state(self, timeout: float = 10.0) -> State:
        try:
            with socket.create_connection(
                (self.ip(), int(self.settings.ssh_port or 22)), timeout=min(timeout, 15.0)
            ):
                return State.RUNNING
        except OSError:
            return State.STOPPED

    def url(self) -> str:
        if self.state(timeout=5.0) != State.RUNNING:
            raise HostNotRunning()
        return self.engine_url()

    def running_url(self) -> str:
        return self.engine_url()

    def engine_url(self) -> str:
        return urls.engine_url(self.ip(), self.engine_port, self.machine_name)

    def start(self, log: Log) -> None:
        raise MachineError("generic driver does not support start")

    def stop(self, log: Log) -> None:
        raise MachineError("generic driver does not support stop")

    def kill(self, log: Log) -> None:
        raise MachineError("generic driver does not support kill")

    def restart(self, log: Log) -> None:
        from pymachine.machine.sshconnect import ssh_run

        ssh_run(self, "sudo shutdown -r now", check=False)
