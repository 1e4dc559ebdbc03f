"""quickstart called from Python (machine.quickstart.quickstart) does what ``pymachine quickstart`` does:
none driver, a real TLS dockerd, the real docker CLI driven by the variables it returns."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from fixtures_dockerd import free_loopback_port, start_engine_for
from pymachine.machine.creation import CreateRequest
from pymachine.machine.errors import MachineError
from pymachine.machine.quickstart import quickstart
from pymachine.machine.store import Store

pytestmark = pytest.mark.integration

DOCKER = "/usr/bin/docker"


@pytest.fixture
def engine(pm, tmp_path):
    handle = start_engine_for(pm, "seed", tmp_path / "d")
    try:
        yield handle
    finally:
        handle.stop()


def _exports(text: str) -> dict[str, str]:
    return dict(re.findall(r'^export (\w+)="([^"]*)"$', text, re.MULTILINE))


def test_library_quickstart_creates_then_reuses_and_matches_the_command(pm, engine):
    environ = {**pm.env, "HTTP_PROXY": "http://127.0.0.1:3128", "NO_PROXY": "localhost"}
    request = CreateRequest(name="default", driver="none", driver_options={"url": engine.url})
    lines: list[str] = []
    first = quickstart(Store(pm.store), request, lines.append, environ=environ)
    assert 'Creating machine "default" with the none driver...' in lines
    config_path = pm.store / "machines" / "default" / "config.json"
    config = json.loads(config_path.read_text())
    assert config["DriverName"] == "none"
    assert "http://127.0.0.1:3128" in json.dumps(config["HostOptions"])  # the user's proxy, as --proxy-from-env
    variables = dict(first.variables)
    assert variables["DOCKER_HOST"] == engine.url and first.url == engine.url and first.ip == "127.0.0.1"
    assert variables["DOCKER_TLS_VERIFY"] == "1" and variables["DOCKER_MACHINE_NAME"] == "default"
    assert variables["NO_PROXY"] == "localhost,127.0.0.1"

    mtime = config_path.stat().st_mtime_ns
    lines.clear()
    again = quickstart(Store(pm.store), CreateRequest(name="default", driver="none"), lines.append, environ=environ)
    assert not any(line.startswith("Creating") for line in lines)  # reused, not re-made
    assert config_path.stat().st_mtime_ns == mtime
    # The command prints the very variables the library returns.
    cli = pm.ok("quickstart", "--no-shell", env={"HTTP_PROXY": "http://127.0.0.1:3128", "NO_PROXY": "localhost"})
    assert _exports(cli.stdout) == dict(again.variables)
    assert f"# docker is configured to use the default machine with IP {again.ip}" in cli.stdout

    denv = {k: v for k, v in pm.env.items() if not k.startswith("DOCKER_")}
    denv.update(again.variables, DOCKER_CONFIG=str(pm.docker_config))
    ver = subprocess.run([DOCKER, "version", "--format", "{{.Server.Version}}"], env=denv,
                         capture_output=True, text=True, timeout=60, check=False)
    assert ver.returncode == 0, ver.stderr
    assert re.match(r"^\d+\.\d+\.\d+", ver.stdout.strip())


def test_library_quickstart_unreachable_engine_is_the_commands_error(pm):
    request = CreateRequest(name="default", driver="none",
                            driver_options={"url": f"tcp://127.0.0.1:{free_loopback_port()}"})
    with pytest.raises(MachineError, match="Error checking TLS connection"):
        quickstart(Store(pm.store), request, lambda _m: None, environ=pm.env)
    assert (pm.store / "machines" / "default").is_dir()  # created; a later run reuses it
    cli = pm("quickstart", "--no-shell", env={"PYMACHINE_QUICKSTART_DRIVER": "none"})
    assert cli.returncode != 0 and "Error checking TLS connection" in cli.stderr
    assert "Creating" not in cli.stderr


def test_library_quickstart_bad_create_input_writes_nothing(pm):
    with pytest.raises(MachineError, match="--url option is required"):
        quickstart(Store(pm.store), CreateRequest(name="default", driver="none"), lambda _m: None, environ=pm.env)
    assert not (pm.store / "machines" / "default").exists()
