"""The ``none`` driver: a record of an engine that already exists at ``--url``.

Semantics are docker-machine's: always Running, no SSH, no provisioning, and
start/stop/restart/kill are refused.  ``IPAddress`` is the URL's host *with*
its port, as docker-machine stored it (so ``ip`` prints ``127.0.0.1:2376``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pymachine.machine.drivers.base import Driver, DriverCapabilities, Flag, Log, State
from pymachine.machine.drivers.settings import Settings, setting
from pymachine.machine.errors import MachineError


def _check_url(url: str):
    """Refuse a URL that ``env``, ``ls`` or a TLS dial would choke on later: all at create."""
    from urllib.parse import urlsplit

    bad = f"--url {url!r} is not a URL like tcp://HOST:PORT"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise MachineError(f"{bad} (it contains whitespace or a control character)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # "Port out of range 0-65535", "Invalid IPv6 URL", ...
        raise MachineError(f"{bad}: {exc}") from None
    if not parts.scheme or not parts.netloc or not parts.hostname:
        raise MachineError(bad)
    if port == 0:
        raise MachineError(f"{bad}: port 0")
    return parts


@dataclasses.dataclass
class NoneSettings(Settings):
    url: str = setting("URL", "")


class NoneDriver(Driver):
    settings_class = NoneSettings
    settings: NoneSettings
    name = "none"
    capabilities = DriverCapabilities()
    provisionable = False
    flags = (Flag("url", "string", "", None, "URL of host when no driver is selected"),)

    def set_config_from_flags(self, values: Mapping[str, Any]) -> None:
        url = str(values.get("url") or "")
        if not url:
            raise MachineError("--url option is required when no driver is selected")
        parts = _check_url(url)
        self.settings.url = url
        self.settings.ip_address = parts.netloc

    def create(self, log: Log) -> None:
        return None

    def url(self) -> str:
        return self.settings.url

    def state(self, timeout: float = 10.0) -> State:
        return State.RUNNING

    def local_state(self) -> State | None:
        return State.RUNNING

    def ssh_address(self) -> tuple[str, int, str, str]:
        raise MachineError("hosts without a driver have no SSH access")

    def start(self, log: Log) -> None:
        raise MachineError("hosts without a driver cannot be started")

    def stop(self, log: Log) -> None:
        raise MachineError("hosts without a driver cannot be stopped")

    def restart(self, log: Log) -> None:
        raise MachineError("hosts without a driver cannot be restarted")

    def kill(self, log: Log) -> None:
        raise MachineError("hosts without a driver cannot be killed")
