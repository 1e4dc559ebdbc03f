"""Driver name -> class, imported lazily so ``env`` and ``ls`` load only what they use.

Built-in drivers are listed here by module path; third-party drivers register
through the ``pymachine.drivers`` entry-point group (consulted only for names
that are not built in, since reading entry points costs start-up time).
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

from pymachine.machine import urls
from pymachine.machine.drivers.base import Driver, Flag, State
from pymachine.machine.errors import MachineError

BUILTIN: dict[str, str] = {
    "none": "pymachine.machine.drivers.none:NoneDriver",
    "generic": "pymachine.machine.drivers.generic:GenericDriver",
    "qemu": "pymachine.machine.drivers.qemu:QemuDriver",
    "amazonec2": "pymachine.machine.drivers.amazonec2:AmazonEC2Driver",
    "digitalocean": "pymachine.machine.drivers.digitalocean:DigitalOceanDriver",
    "azure": "pymachine.machine.drivers.azure:AzureDriver",
    "virtualbox": "pymachine.machine.drivers.virtualbox:VirtualBoxDriver",
    "vmwareworkstation": "pymachine.machine.drivers.vmware:VMwareWorkstationDriver",
    "vmwarefusion": "pymachine.machine.drivers.vmware:VMwareFusionDriver",
    "vmwarevsphere": "pymachine.machine.drivers.vsphere:VSphereDriver",
    "google": "pymachine.machine.drivers.google:GoogleDriver",
    "openstack": "pymachine.machine.drivers.openstack:OpenStackDriver",
    "hyperv": "pymachine.machine.drivers.hyperv:HyperVDriver",
}

#: Drivers docker-machine shipped that pymachine does not have: loadable from a
#: store (shown in ``ls``), but not creatable.
PLANNED = ("exoscale", "rackspace", "softlayer", "vmwarevcloudair")


def _entry_point(name: str) -> str | None:
    from importlib.metadata import entry_points

    for ep in entry_points(group="pymachine.drivers"):
        if ep.name == name:
            return ep.value
    return None


def available() -> list[str]:
    """Built-in drivers whose module is present in this build."""
    from importlib.util import find_spec

    return sorted(n for n, t in BUILTIN.items() if find_spec(t.partition(":")[0]) is not None)


def driver_class(name: str) -> type[Driver]:
    target = BUILTIN.get(name)
    if target is None:
        target = _entry_point(name)
    if target is None:
        if name in PLANNED:
            raise MachineError(
                f'Driver "{name}" is not available in this pymachine build yet '
                f"(available: {', '.join(available())})"
            )
        raise MachineError(
            f'Driver "{name}" not found. Available drivers: {", ".join(available())} '
            f'(or install a plugin that registers "{name}" in the pymachine.drivers entry-point group)'
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:  # a built-in driver this build does not ship yet
            raise MachineError(
                f'Driver "{name}" is not available in this pymachine build yet '
                f"(available: {', '.join(available())})"
            ) from None
        from pymachine.machine.extras import install_hint

        hint = install_hint(exc.name or "", name)
        raise MachineError(hint or f'Driver "{name}" cannot be loaded: {exc}') from None
    except ImportError as exc:
        raise MachineError(f'Driver "{name}" cannot be loaded: {exc}') from None
    cls = getattr(module, attr)
    return cls


class UnavailableDriver(Driver):
    """Stands in for a stored machine whose driver this build lacks.

    It answers from the stored JSON alone, so such machines still list, inspect
    and remove (locally) instead of breaking the whole store.
    """

    provisionable = False
    flags: ClassVar[tuple[Flag, ...]] = ()

    def __init__(self, config: dict[str, Any], name: str, reason: str) -> None:
        super().__init__(config)
        self.name = name  # type: ignore[misc]
        self.reason = reason

    def url(self) -> str:
        return urls.engine_url(self.ip(), machine=self.name)

    def state(self, timeout: float = 10.0) -> State:
        raise MachineError(self.reason)


def load_driver(name: str, config: dict[str, Any]) -> Driver:
    try:
        cls = driver_class(name)
    except MachineError as exc:
        return UnavailableDriver(config, name, str(exc))
    return cls(config)
