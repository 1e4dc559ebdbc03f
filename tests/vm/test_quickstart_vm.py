"""`pymachine quickstart` end to end on Linux with the qemu driver, as the Toolbox
shortcut would run it: the first run creates `default`, a second run reuses it,
and the printed environment drives the real docker CLI."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import PyMachine
from tests.vm.test_qemu_vm import DOCKER, image, kill_leftovers  # noqa: F401 -- `image` is a fixture

QEMU_SETTINGS = {"QEMU_RESTRICT_NETWORK": "1", "QEMU_MEMORY": "1024"}


def exports(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            out[key] = value.strip('"')
    return out


@pytest.mark.vm
@pytest.mark.timeout(1500)
def test_quickstart_creates_then_reuses_the_default_qemu_machine(pm: PyMachine, image) -> None:  # noqa: F811
    env = {**QEMU_SETTINGS, "QEMU_IMAGE": str(image.directory)}
    env.pop("PYMACHINE_QUICKSTART_DRIVER", None)  # the platform default: qemu on Linux
    try:
        first = pm("quickstart", "--no-shell", env=env, timeout=1200)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "Creating machine..." in first.stderr
        assert pm.ok("inspect", "-f", "{{.DriverName}}", "default").stdout.strip() == "qemu"
        variables = exports(first.stdout)
        assert variables["DOCKER_MACHINE_NAME"] == "default"
        assert variables["DOCKER_HOST"].startswith("tcp://127.0.0.1:")
        version = subprocess.run([DOCKER, "version", "--format", "{{.Server.Version}}"], capture_output=True,
                                 text=True, timeout=300, env={**pm.env, **variables}, check=False)
        assert version.returncode == 0, version.stderr
        assert int(version.stdout.strip().split(".")[0]) >= 26  # the image's engine (API 1.45)

        second = pm("quickstart", "--no-shell", env=env, timeout=600)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "Creating machine..." not in second.stderr
        assert exports(second.stdout)["DOCKER_HOST"] == variables["DOCKER_HOST"]
    finally:
        pm("rm", "-f", "-y", "default", timeout=120)
        kill_leftovers(pm.root)
