"""Typed driver settings (machine/drivers/settings.py), for every built-in driver.

A stored ``Driver`` object must round-trip byte for byte (unknown keys kept, key
order kept), a wrongly typed field must be one clear error (an error row in ``ls``,
never a traceback), and the declared Python types must agree with the JSON kinds
the loader checks.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import types
import typing
from pathlib import Path

import pytest
from pymachine.machine.drivers.registry import BUILTIN, load_driver
from pymachine.machine.drivers.settings import Settings, SettingsError, _specs
from pymachine.machine.store import dump_json

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "dm0162-store"


def _driver_class(name: str):
    module, _, attr = BUILTIN[name].partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as exc:  # a driver whose module is not in this build
        pytest.skip(f"{name}: {exc}")


def _typed() -> list[str]:
    out = []
    for name in sorted(BUILTIN):
        module, _, attr = BUILTIN[name].partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except ImportError:
            continue
        if issubclass(cls.settings_class, Settings):
            out.append(name)
    return out


TYPED = _typed()


def test_every_builtin_driver_declares_its_own_settings():
    assert sorted(BUILTIN) == TYPED
    for name in TYPED:
        assert _driver_class(name).settings_class is not Settings, f"{name} declares no fields of its own"


def _wrong_value(kind: type):
    """A JSON value of another kind than ``kind`` (what a hand edit could leave)."""
    return {str: 7, int: "22", bool: "yes", float: "1.5", list: "a,b", dict: [1]}[kind]


@pytest.mark.parametrize("name", TYPED)
def test_round_trip_keeps_unknown_fields_and_key_order_byte_for_byte(name):
    cls = _driver_class(name)
    fresh = cls.new("m1", "/store").config
    keys = list(fresh)
    # another tool's field in the middle, and the keys in an order no declaration has
    mixed = dict(reversed(list(fresh.items())))
    items = list(mixed.items())
    items.insert(len(items) // 2, ("ZFutureField", {"nested": [1, "two", None], "x": 1.5}))
    stored = dump_json(dict(items))

    driver = load_driver(name, json.loads(stored))
    assert type(driver) is cls
    assert dump_json(driver.config) == stored
    assert driver.settings.unknown() == {"ZFutureField": {"nested": [1, "two", None], "x": 1.5}}
    # a change to one field rewrites that value only, in its place
    driver.settings.ip_address = "10.9.8.7"
    again = driver.config
    assert list(again) == [k for k, _ in items] and again["IPAddress"] == "10.9.8.7"
    assert {k: v for k, v in again.items() if k != "IPAddress"} == {k: v for k, v in items if k != "IPAddress"}
    # a new machine's keys come in the declared order: the base fields first, as docker-machine's
    assert keys[:9] == ["IPAddress", "MachineName", "SSHUser", "SSHPort", "SSHKeyPath", "StorePath",
                        "SwarmMaster", "SwarmHost", "SwarmDiscovery"]


@pytest.mark.parametrize("name", TYPED)
def test_each_wrongly_typed_field_is_one_clear_error(name):
    cls = _driver_class(name)
    good = cls.new("m1", "/store").config
    for spec in _specs(cls.settings_class)[0].values():
        bad = {**good, spec.key: _wrong_value(spec.kind)}
        with pytest.raises(SettingsError) as err:
            load_driver(name, bad)
        message = str(err.value)
        assert message.startswith(f"config.json field Driver.{spec.key} must be "), message
        assert "\n" not in message and json.dumps(_wrong_value(spec.kind)) in message


@pytest.mark.parametrize("name", TYPED)
def test_declared_types_agree_with_the_checked_kinds(name):
    settings_class = _driver_class(name).settings_class
    module = importlib.import_module(settings_class.__module__)
    hints = typing.get_type_hints(settings_class, vars(module))
    for spec in _specs(settings_class)[0].values():
        hint = inner = hints[spec.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
            assert spec.nullable, f"{spec.key}: {hint} may be None but the loader refuses null"
        where = f"{settings_class.__name__}.{spec.name}: {hint}"
        assert (typing.get_origin(inner) or inner) is spec.kind, f"{where} is checked as {spec.kind}"
        if spec.kind is list:
            (item,) = typing.get_args(inner)
            assert (typing.get_origin(item) or item) is spec.item, f"{where}: items checked as {spec.item}"


def test_assignment_is_checked_and_unknown_names_refused():
    settings = _driver_class("generic").settings_class.fresh("m1", "/store")
    settings.ssh_port = 2222
    with pytest.raises(SettingsError, match=r'Driver\.SSHPort must be a whole number, not "2222"'):
        settings.ssh_port = "2222"
    with pytest.raises(SettingsError, match=r"Driver\.SwarmMaster must be true or false, not 1"):
        settings.update(swarm_master=1)
    with pytest.raises(AttributeError, match="no setting 'ssh_prot'"):
        settings.update(ssh_prot=22)
    assert settings.to_json()["SSHPort"] == 2222
    # the JSON view refuses writes: a write there would be lost, never seen by the settings
    driver = load_driver("generic", settings.to_json())
    with pytest.raises(TypeError, match=r"change driver\.settings"):
        driver.config["SSHPort"] = 22
    with pytest.raises(TypeError, match=r"change driver\.settings"):
        driver.config.update(SSHPort=22)
    assert driver.settings.ssh_port == 2222 and json.loads(json.dumps(driver.config))["SSHPort"] == 2222


def test_absent_fields_are_written_only_once_set_and_then_last():
    """Keys pymachine adds during create (``absent``) appear when set, after the others,
    exactly as a dict did; a field an older config lacks stays out until set."""
    cls = _driver_class("digitalocean")
    fresh = cls.new("m1", "/store")
    assert "CreateTag" not in fresh.config
    fresh.settings.create_tag = "pymachine-create-0011"
    assert list(fresh.config)[-1] == "CreateTag"

    old = {k: v for k, v in cls.new("m1", "/store").config.items() if k != "Monitoring"}
    loaded = load_driver("digitalocean", old)
    assert loaded.settings.monitoring is False and loaded.config == old
    loaded.settings.monitoring = True
    assert list(loaded.config)[-1] == "Monitoring"


def test_null_lists_and_objects_load_as_go_writes_them():
    """Go writes a nil slice or map as null: it loads as empty (or None where the field's type
    says so) and is written back as null until something is put in it."""
    cls = _driver_class("amazonec2")
    stored = {**cls.new("m1", "/store").config, "SecurityGroupNames": None, "PymachineCreated": None,
              "SecurityGroupIds": None}
    driver = load_driver("amazonec2", stored)
    assert driver.settings.security_group_names == [] and driver.settings.pymachine_created == {}
    assert driver.settings.security_group_ids is None
    assert dump_json(driver.config) == dump_json(stored)
    driver.settings.security_group_names = ["web"]
    assert driver.config["SecurityGroupNames"] == ["web"] and driver.config["PymachineCreated"] is None
    with pytest.raises(SettingsError, match=r"Driver\.SecurityGroupNames must be a list of strings, not \[1\]"):
        load_driver("amazonec2", {**stored, "SecurityGroupNames": [1]})


@pytest.mark.parametrize("machine", ["gen1", "local1"])
def test_docker_machine_0162_driver_objects_round_trip_byte_for_byte(machine):
    data = json.loads((FIXTURE / "machines" / machine / "config.json").read_text())
    stored = dump_json(data["Driver"])
    driver = load_driver(data["DriverName"], json.loads(stored))
    assert dump_json(driver.config) == stored
    assert driver.settings.unknown() == {}, "every key docker-machine wrote is declared"


def test_settings_base_is_a_dataclass_of_docker_machines_base_driver():
    assert [f.metadata["key"] for f in dataclasses.fields(Settings)] == [
        "IPAddress", "MachineName", "SSHUser", "SSHPort", "SSHKeyPath", "StorePath",
        "SwarmMaster", "SwarmHost", "SwarmDiscovery"]


@pytest.mark.integration
def test_ls_shows_a_wrongly_typed_driver_field_as_one_error_row(pm):
    """Through the CLI: the bad machine is one row naming the field, the good one still lists,
    and ``rm -f`` removes the bad one."""
    pm.ok("create", "-d", "none", "--url", "tcp://127.0.0.1:2", "good")
    pm.ok("create", "-d", "none", "--url", "tcp://127.0.0.1:2", "bad")
    config = pm.store / "machines" / "bad" / "config.json"
    data = json.loads(config.read_text())
    data["Driver"]["SSHPort"] = "22"
    config.write_text(json.dumps(data))

    res = pm("ls", "--format", "{{.Name}}|{{.State}}|{{.Error}}")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    rows = dict(line.split("|", 1) for line in res.stdout.splitlines())
    assert rows["bad"] == 'Error|config.json field Driver.SSHPort must be a whole number, not "22"'
    assert not rows["good"].startswith("Error")
    assert '"SSHPort": "22"' in pm.ok("inspect", "bad").stdout  # inspect shows what is stored
    res = pm("url", "bad")
    assert res.returncode == 1 and res.stderr.strip().endswith('must be a whole number, not "22"'), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    pm.ok("rm", "-f", "bad")
    assert not (pm.store / "machines" / "bad").exists()
