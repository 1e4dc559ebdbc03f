"""Driver capabilities are data (``Driver.capabilities``), and each built-in driver's
declaration agrees with what its class implements; nothing in the runtime duck-types a
driver with ``hasattr``/``getattr`` any more."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from pymachine.engine.options import INSTALL_SOURCES
from pymachine.machine.drivers import registry
from pymachine.machine.drivers.base import Driver, DriverCapabilities
from pymachine.machine.errors import MachineError

ROOT = Path(__file__).resolve().parents[2]
DRIVERS = sorted(registry.BUILTIN)


def overrides(cls: type[Driver], name: str) -> bool:
    return getattr(cls, name) is not getattr(Driver, name)


@pytest.mark.parametrize("name", DRIVERS)
def test_declared_capabilities_match_the_class(name: str, tmp_path: Path) -> None:
    cls = registry.driver_class(name)
    caps = cls.capabilities
    assert (isinstance(caps, DriverCapabilities) and caps is not Driver.capabilities) or name == "none", \
        f"{name} declares no capabilities of its own"
    for action in ("start", "stop", "restart", "kill"):
        if getattr(caps, action):
            assert overrides(cls, action), f"{name} says it can {action} but does not implement {action}()"
        elif overrides(cls, action):
            # Overridden only to refuse with the driver's own message: calling it must raise, at once.
            driver = cls.new("caps", str(tmp_path))
            with pytest.raises(MachineError):
                getattr(driver, action)(lambda _m: None)
    assert caps.own_engine_url == overrides(cls, "engine_url"), name
    assert caps.install_source in INSTALL_SOURCES
    source = "".join(inspect.getsource(k) for k in cls.__mro__ if issubclass(k, Driver) and k is not Driver)
    if caps.seed:  # the driver writes the host's plan onto its seed
        assert "first_boot=" in source and "self.first_boot" in source, name
    else:
        assert "first_boot" not in source and not overrides(cls, "seed_addresses"), name
    share_flags = [f.name for f in cls.flags if "share" in f.name]
    assert caps.shares == bool(share_flags), (name, share_flags)


@pytest.mark.parametrize("name", [n for n in DRIVERS if registry.driver_class(n).capabilities.port_forwards])
def test_port_forwarding_drivers_are_reached_on_loopback(name: str, tmp_path: Path) -> None:
    driver = registry.driver_class(name).new("caps", str(tmp_path))
    assert driver.ssh_address()[0] == "127.0.0.1"


def test_the_default_install_source_is_the_declared_one(tmp_path: Path) -> None:
    from pymachine.machine.drivers.qemu import QemuDriver

    generic = registry.driver_class("generic").new("g", str(tmp_path))
    assert generic.default_install_source == "packages"
    assert QemuDriver.capabilities.install_source == "preinstalled"
    assert QemuDriver.new("q", str(tmp_path)).default_install_source == "preinstalled"  # its own image


def test_nothing_duck_types_a_driver() -> None:
    """engine_url, guest_engine_port and default_install_source are base-class methods now."""
    pattern = re.compile(r"(hasattr|getattr)\((self\.)?(machine\.)?driver\b")
    found = [f"{path.relative_to(ROOT)}:{n}" for path in (ROOT / "machine").rglob("*.py")
             for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []
