"""``create`` called from Python (machine.creation.create_machine) does what ``pymachine create`` does.

Each test runs the library call in this process and the command as a user does,
against the same store, and compares what they leave: the log lines, the machine
directory, config.json, ``ls``/``env`` through the CLI, and the one-line errors
of bad input (with nothing written).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_dockerd import free_loopback_port, start_engine_for
from pymachine.machine.creation import CreateRequest, create_machine
from pymachine.machine.errors import MachineError
from pymachine.machine.store import Store

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(pm, tmp_path):
    """A real TLS dockerd whose server cert the store's CA signed (through a CLI-made 'seed' machine)."""
    handle = start_engine_for(pm, "seed", tmp_path / "d")
    try:
        yield handle
    finally:
        handle.stop()


def _config(pm, name: str) -> dict:
    return json.loads((pm.store / "machines" / name / "config.json").read_text())


def _same_shape(config: dict, name: str) -> dict:
    """config.json with the machine's own name and paths made neutral, for comparing two machines."""
    text = json.dumps(config).replace(f"/machines/{name}", "/machines/NAME").replace(f'"{name}"', '"NAME"')
    return json.loads(text)


def test_library_create_matches_the_command(pm, engine):
    flags = {"engine_label": ["tier=lib"], "engine_opt": ["log-level=warn"], "tls_san": ["docker.example.test"],
             "http_proxy": "http://127.0.0.1:3128", "engine_storage_driver": "overlay2"}
    lines: list[str] = []
    machine = create_machine(
        Store(pm.store), CreateRequest(name="lib", driver="none", driver_options={"url": engine.url}, **flags),
        lines.append, environ=pm.env,
    )
    assert machine.name == "lib" and machine.url() == engine.url
    cli = pm.ok("create", "-d", "none", "--url", engine.url, "--engine-label", "tier=lib", "--engine-opt",
                "log-level=warn", "--tls-san", "docker.example.test", "--http-proxy", "http://127.0.0.1:3128",
                "--engine-storage-driver", "overlay2", "cli")
    assert lines == cli.stdout.splitlines()  # the same steps, reported the same way
    assert _same_shape(_config(pm, "lib"), "lib") == _same_shape(_config(pm, "cli"), "cli")
    assert sorted(p.name for p in (pm.store / "machines" / "lib").iterdir()) == \
        sorted(p.name for p in (pm.store / "machines" / "cli").iterdir())
    for f in ("key.pem", "server-key.pem"):
        assert (pm.store / "machines" / "lib" / f).stat().st_mode & 0o777 == 0o600
    # The machine the library made is a machine like any other to the command.
    rows = pm.ok("ls", "--format", "{{.Name}} {{.DriverName}} {{.State}} {{.URL}}").out_lines
    assert f"lib none Running {engine.url}" in rows
    env = pm.ok("env", "lib").stdout
    assert f'export DOCKER_HOST="{engine.url}"' in env and 'export DOCKER_MACHINE_NAME="lib"' in env
    # and the library removes it as ``rm -y`` does
    from pymachine.machine.removal import remove_machine

    remove_machine(Store(pm.store), "lib", assume_yes=True)
    assert not (pm.store / "machines" / "lib").exists()
    assert "lib" not in pm.ok("ls", "-q").out_lines


def test_library_defaults_come_from_the_environment_as_the_commands_do(pm, tmp_path):
    """A required driver option left out is the command's error; an install URL given means the script."""
    url = f"tcp://127.0.0.1:{free_loopback_port()}"
    environ = dict(pm.env)
    lines: list[str] = []
    store = Store(pm.store)
    with pytest.raises(MachineError, match="--url option is required"):
        create_machine(store, CreateRequest(name="noenv", driver="none"), lines.append, environ=environ)
    assert not (pm.store / "machines" / "noenv").exists()
    # The install URL given (or $MACHINE_DOCKER_INSTALL_URL to the command) means the install script.
    create_machine(store, CreateRequest(name="script", driver="none", driver_options={"url": url},
                                        engine_install_url="https://get.docker.test"), lines.append, environ=environ)
    pm.ok("create", "-d", "none", "--url", url, "script-cli", env={"MACHINE_DOCKER_INSTALL_URL": "https://get.docker.test"})
    lib = _config(pm, "script")["HostOptions"]["EngineOptions"]
    cli = _config(pm, "script-cli")["HostOptions"]["EngineOptions"]
    assert lib == cli and lib["InstallURL"] == "https://get.docker.test"


BAD = [
    # (request fields, environ additions, the CLI's argv for the same input)
    ({"name": "-bad"}, {}, ["create", "-d", "none", "--url", "tcp://127.0.0.1:9", "--", "-bad"]),
    ({"name": "b", "driver_options": {"url": "tcp://127.0.0.1:9", "nope": 1}}, {},
     ["create", "-d", "none", "--url", "tcp://127.0.0.1:9", "--nope", "1", "b"]),
    ({"name": "b", "engine_bundle": "/nonexistent/bundle.tar"}, {},
     ["create", "-d", "none", "--url", "tcp://127.0.0.1:9", "--engine-bundle", "/nonexistent/bundle.tar", "b"]),
    ({"name": "b", "engine_install_source": "bundle"}, {},
     ["create", "-d", "none", "--url", "tcp://127.0.0.1:9", "--engine-install-source", "bundle", "b"]),
    ({"name": "b", "swarm": True, "swarm_discovery": "token://abc"}, {},
     ["create", "-d", "none", "--url", "tcp://127.0.0.1:9", "--swarm", "--swarm-discovery", "token://abc", "b"]),
    ({"name": "b", "swarm": True}, {},
     ["create", "-d", "none", "--url", "tcp://127.0.0.1:9", "--swarm", "b"]),
    ({"name": "b"}, {"PYMACHINE_SSH_WAIT": "forever"},
     ["create", "-d", "none", "--url", "tcp://127.0.0.1:9", "b"]),
    ({"name": "b", "tls_san": ["bad san with spaces"]}, {},
     ["create", "-d", "none", "--url", "tcp://127.0.0.1:9", "--tls-san", "bad san with spaces", "b"]),
    ({"name": "b", "driver": "nosuchdriver"}, {}, ["create", "-d", "nosuchdriver", "b"]),
]


@pytest.mark.parametrize(("fields", "extra_env", "argv"), BAD,
                         ids=["name", "driver-option", "bundle", "bundle-source", "token", "no-manager", "ssh-wait",
                              "san", "driver"])
def test_library_bad_input_is_the_commands_one_line_error_and_writes_nothing(pm, fields, extra_env, argv):
    request = CreateRequest(**{"driver": "none", "driver_options": {"url": "tcp://127.0.0.1:9"}, **fields})
    with pytest.raises(MachineError) as err:
        create_machine(Store(pm.store), request, lambda _m: None, environ={**pm.env, **extra_env})
    message = str(err.value)
    assert "\n" not in message and message
    cli = pm(*argv, env=extra_env)
    assert cli.returncode != 0
    assert message in cli.stderr, (message, cli.stderr)
    machines = pm.store / "machines"
    assert not machines.exists() or not any(machines.iterdir())


def test_library_existing_name_is_refused_before_anything_changes(pm):
    url = "tcp://127.0.0.1:9"
    pm.ok("create", "-d", "none", "--url", url, "taken")
    before = (pm.store / "machines" / "taken" / "config.json").read_bytes()
    with pytest.raises(MachineError, match='Docker machine "taken" already exists'):
        create_machine(Store(pm.store), CreateRequest(name="taken", driver="none", driver_options={"url": url}),
                       lambda _m: None, environ=pm.env)
    assert (pm.store / "machines" / "taken" / "config.json").read_bytes() == before


def test_library_generic_create_that_never_reaches_ssh_is_kept_with_its_step(pm, tmp_path):
    """generic against a closed loopback port: as the command, the machine stays, marked with the
    failing step, for ``provision`` to retry; ``ls`` shows the same error row for both."""
    import subprocess

    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=60)
    port = str(free_loopback_port())
    environ = {**pm.env, "PYMACHINE_SSH_WAIT": "1"}
    opts = {"generic-ip-address": "127.0.0.1", "generic-ssh-port": int(port), "generic-ssh-key": str(key)}
    lines: list[str] = []
    with pytest.raises(MachineError, match="connection refused"):
        create_machine(Store(pm.store), CreateRequest(name="glib", driver="generic", driver_options=opts),
                       lines.append, environ=environ)
    cli = pm("create", "-d", "generic", "--generic-ip-address", "127.0.0.1", "--generic-ssh-port", port,
             "--generic-ssh-key", str(key), "gcli", env={"PYMACHINE_SSH_WAIT": "1"})
    assert cli.returncode == 1
    first_use = ("Creating CA: ", "Creating client certificate: ")  # the library's call came first
    assert [line.replace("glib", "gcli") for line in lines if not line.startswith(first_use)] == \
        cli.stdout.splitlines()
    rows = dict(line.split(" ", 1) for line in pm.ok("ls", "--format", "{{.Name}} {{.State}} {{.Error}}").out_lines)
    assert rows["glib"].startswith("Error provisioning failed at step ssh")
    assert rows["glib"].split(": ", 1)[0] == rows["gcli"].split(": ", 1)[0]
    assert _config(pm, "glib")["Pymachine"]["LastError"]["Step"] == "ssh"
    assert "Creating" not in _config(pm, "glib")["Pymachine"]


def test_library_create_rolls_back_on_interrupt(pm, monkeypatch):
    """Ctrl-C while the driver creates: nothing is kept, the store still loads (as the command's SIGTERM test)."""
    from pymachine.machine.drivers import none

    def interrupted(self, log):
        raise KeyboardInterrupt

    monkeypatch.setattr(none.NoneDriver, "create", interrupted)
    with pytest.raises(KeyboardInterrupt):
        create_machine(Store(pm.store), CreateRequest(name="int", driver="none",
                                                      driver_options={"url": "tcp://127.0.0.1:9"}),
                       lambda _m: None, environ=pm.env)
    assert not (pm.store / "machines" / "int").exists()
    assert pm.ok("ls", "-q").stdout == ""
    assert Path(pm.store / "certs" / "ca.pem").exists()  # the CA made on the way is kept, as the command keeps it
