"""Reach a driver's machine over SSH: the helpers drivers may use, as libmachine's
``drivers/utils.go`` (``RunSSHCommandFromDriver``) sat at the driver layer.

They need only the driver's SSH address and machine directory (for the pinned
``known_hosts``), never the host, the store or a provisioner, so a driver that
must run a command in its guest (a reboot, reading its address) stays below
provisioning.  ``machine.provision`` uses the same helpers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pymachine.machine import layout
from pymachine.machine.errors import MachineError

if TYPE_CHECKING:  # pragma: no cover
    from pymachine.machine.drivers.base import Driver
    from pymachine.machine.runner import CommandResult
    from pymachine.machine.ssh import SSHClient
    from pymachine.machine.sshcommands import SSHTarget


def ssh_target(driver: Driver) -> SSHTarget:
    from pymachine.machine.sshcommands import SSHTarget

    host, port, user, key = driver.ssh_address()
    if not host:
        raise MachineError(f'Host "{driver.machine_name}" has no address yet')
    known = Path(driver.machine_dir) / layout.KNOWN_HOSTS
    return SSHTarget(host=host, port=port, user=user, key_path=Path(key) if key else None, known_hosts=known)


def connect(driver: Driver, wait: float = 0.0) -> SSHClient:
    from pymachine.machine.ssh import SSHClient

    return SSHClient.connect(ssh_target(driver), timeout=10.0, wait=wait)


def ssh_run(driver: Driver, command: str, check: bool = True) -> CommandResult:
    with connect(driver) as client:
        return client.run(command, check=check)
