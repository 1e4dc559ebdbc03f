"""The small interface every driver implements, and flags declared as data.

As libmachine did, a driver's state is the JSON object stored under
``Driver`` in ``config.json``; pymachine keeps it as the driver's typed
settings (``self.settings``, machine/drivers/settings.py), which keep fields
they do not know and the key order, so a load/save round trip changes nothing.  Drivers never run provisioning
commands: they create, start and stop the box and say how to reach it.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pymachine.machine.drivers.settings import Settings
from pymachine.machine.errors import MachineError

if TYPE_CHECKING:  # pragma: no cover
    from pymachine.machine.firstboot import FirstBoot

Log = Callable[[str], None]


class State(str, enum.Enum):  # noqa: UP042 - StrEnum changes str()/format() of the members
    NONE = ""
    RUNNING = "Running"
    PAUSED = "Paused"
    SAVED = "Saved"
    STOPPED = "Stopped"
    STOPPING = "Stopping"
    STARTING = "Starting"
    ERROR = "Error"
    TIMEOUT = "Timeout"

    def __str__(self) -> str:
        return self.value


class Flag:
    """One create flag, as libmachine's mcnflag: name, kind, default, env var, help."""

    __slots__ = ("default", "env", "help", "kind", "name", "secret")

    def __init__(self, name: str, kind: str, default: Any = None, env: str | None = None,
                 help: str = "", secret: bool = False) -> None:
        self.name = name
        self.kind = kind  # "string" | "int" | "bool" | "list"
        self.default = default
        self.env = env
        self.help = help
        self.secret = secret  # never logged; not written to config.json in clear

    def __repr__(self) -> str:
        return f"Flag({self.name!r}, {self.kind!r}, {self.default!r}, {self.env!r})"

    def env_default(self, environ: Mapping[str, str]) -> Any:
        if not self.env or self.env not in environ:
            return self.default
        raw = environ[self.env]
        if self.kind == "int":
            try:
                return int(raw)
            except ValueError:
                raise MachineError(f"environment variable {self.env}={raw!r} is not a number") from None
        if self.kind == "bool":
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if self.kind == "list":
            return [v for v in raw.split(",") if v]
        return raw


@dataclass(frozen=True)
class DriverCapabilities:
    """What a driver can do, declared as data on its class (never found by ``hasattr``).

    tests/unit/test_firstboot_capabilities.py checks each built-in driver's
    declaration against what its class implements.
    """

    start: bool = False
    stop: bool = False
    restart: bool = False
    kill: bool = False
    #: Boots a seed volume whose first-boot script installs ``Driver.first_boot``
    #: (the engine's TLS files, drop-in and proxy) before the engine first starts.
    seed: bool = False
    #: Shares host folders into the machine.
    shares: bool = False
    #: Reaches the machine through host-side port forwards on 127.0.0.1 (SSH, engine).
    port_forwards: bool = False
    #: Knows its engine URL without asking its hypervisor or cloud (overrides ``engine_url``).
    own_engine_url: bool = False
    #: The engine install source when the user names none (``--engine-install-source``).
    install_source: str = "packages"


class Driver:
    """Base class: docker-machine's BaseDriver fields plus the lifecycle interface."""

    name: ClassVar[str] = ""
    flags: ClassVar[tuple[Flag, ...]] = ()
    capabilities: ClassVar[DriverCapabilities] = DriverCapabilities()
    #: Set by the host before ``create`` for a driver with ``capabilities.seed``.
    first_boot: FirstBoot | None = None
    #: False for drivers whose hosts are never provisioned over SSH (none).
    provisionable: ClassVar[bool] = True
    default_ssh_user: ClassVar[str] = "root"
    #: Cloud drivers: a create whose host never becomes reachable over SSH removes
    #: everything it made (no resources left running up a bill).  Local and generic
    #: hosts keep the machine, marked with the failing step, for ``provision`` to retry.
    rollback_unreachable: ClassVar[bool] = False

    #: The driver's typed settings (a Settings subclass with its own fields).
    settings_class: ClassVar[type[Settings]] = Settings
    settings: Settings

    def __init__(self, config: Mapping[str, Any]) -> None:
        """``config`` is the stored ``Driver`` object; a wrongly typed field raises SettingsError."""
        self.settings = self.settings_class.from_json(config)

    @property
    def config(self) -> dict[str, Any]:
        """The settings as config.json's ``Driver`` object (a new dict: change ``settings``)."""
        return self.settings.to_json()

    @classmethod
    def new(cls, machine_name: str, store_path: str) -> Driver:
        return cls(cls.settings_class.fresh(machine_name, store_path).to_json())

    # Common fields -----------------------------------------------------------------------
    @property
    def machine_name(self) -> str:
        return self.settings.machine_name

    @property
    def store_path(self) -> str:
        return self.settings.store_path

    @property
    def machine_dir(self) -> str:
        return os.path.join(self.store_path, "machines", self.machine_name)

    def ip(self) -> str:
        return self.settings.ip_address

    def ssh_address(self) -> tuple[str, int, str, str]:
        """(host, port, user, key path) to reach the machine over SSH."""
        s = self.settings
        return self.ip(), s.ssh_port or 22, s.ssh_user or self.default_ssh_user, s.ssh_key_path

    # Interface ---------------------------------------------------------------------------
    def set_config_from_flags(self, values: Mapping[str, Any]) -> None:
        """Take the parsed ``--<driver>-*`` values (keys are flag names)."""

    def pre_create_check(self) -> None:
        """Raise PreCreateError if the machine cannot be created; must not create anything."""

    def create(self, log: Log) -> None:
        raise MachineError(f"driver {self.name} cannot create machines")

    def url(self) -> str:
        raise NotImplementedError

    def running_url(self) -> str:
        """The URL when the caller has just seen the state Running (skips a second check)."""
        return self.url()

    def engine_url(self) -> str:
        """The engine URL without a state query where the driver knows it
        (``capabilities.own_engine_url``); else ``url()``."""
        return self.url()

    def guest_engine_port(self) -> int:
        """The port the engine listens on inside the machine (not a host-side forward)."""
        from urllib.parse import urlsplit

        from pymachine.machine.urls import ENGINE_PORT

        return urlsplit(self.engine_url()).port or ENGINE_PORT

    @property
    def default_install_source(self) -> str:
        """The engine install source when the user names none."""
        return self.capabilities.install_source

    def seed_addresses(self) -> list[str]:
        """Addresses the engine may be reached at once booted, known before the first boot
        (``capabilities.seed``): the seed's server certificate covers them all.  A driver
        that picks an address or port at create fixes it here, before the seed is rendered."""
        return []

    def state(self, timeout: float = 10.0) -> State:
        raise NotImplementedError

    @classmethod
    def batch_states(cls, drivers: list[Driver], timeout: float) -> dict[str, State]:
        """States of many machines of this driver at once, keyed by machine name.

        ``ls`` calls this once per driver class; cloud drivers override it with one
        list call per account and region instead of one call per machine.  Names
        missing from the answer fall back to ``state()``.
        """
        return {}

    def local_state(self) -> State | None:
        """State from local evidence only (pidfiles, saved data): no network, no SDK.

        Used by ``ls`` for hosts that do not answer within the deadline.
        """
        return None

    def start(self, log: Log) -> None:
        raise MachineError(f"{self.name} driver does not support start")

    def stop(self, log: Log) -> None:
        raise MachineError(f"{self.name} driver does not support stop")

    def restart(self, log: Log) -> None:
        raise MachineError(f"{self.name} driver does not support restart")

    def kill(self, log: Log) -> None:
        raise MachineError(f"{self.name} driver does not support kill")

    def remove(self, log: Log) -> None:
        """Remove everything the driver made outside the machine directory."""
