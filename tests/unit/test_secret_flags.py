"""``Flag.secret`` has a meaning: a flag marked secret never reaches config.json in clear
(drivers keep such values in the machine's 0600 secrets.json), and every flag that names a
password, secret, token or access key is marked."""

from __future__ import annotations

import json
import re

import pytest
from pymachine.machine.drivers.registry import BUILTIN, driver_class

#: What a driver needs before it accepts its flags at all.
REQUIRED = {
    "azure": {"azure-subscription-id": "00000000-0000-0000-0000-000000000000"},
    "vmwarevsphere": {"vmwarevsphere-vcenter": "127.0.0.1", "vmwarevsphere-username": "u"},
    "generic": {"generic-ip-address": "127.0.0.1"},
    "none": {"url": "tcp://127.0.0.1:2376"},
}
SECRET_NAME = re.compile(r"password|secret|token|access-key")


def drivers():
    for name in sorted(BUILTIN):
        try:
            yield name, driver_class(name)
        except Exception:  # noqa: BLE001 -- a driver this build lacks
            continue


@pytest.mark.parametrize(("name", "cls"), list(drivers()), ids=lambda v: v if isinstance(v, str) else "")
def test_secret_flags_stay_out_of_config_json(name, cls, tmp_path):
    secret = [f for f in cls.flags if f.secret]
    for flag in cls.flags:
        if SECRET_NAME.search(flag.name):
            assert flag.secret, f"--{flag.name} looks secret but is not marked secret=True"
    if not secret:
        return
    driver = cls.new("x", str(tmp_path))
    values = {f.name: f.default for f in cls.flags}
    values.update(REQUIRED.get(name, {}))
    for flag in secret:
        values[flag.name] = f"SENTINEL-{flag.name}"
    driver.set_config_from_flags(values)
    stored = json.dumps(driver.config)
    assert [f.name for f in secret if f"SENTINEL-{f.name}" in stored] == []
