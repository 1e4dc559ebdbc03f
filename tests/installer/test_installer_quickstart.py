"""``pymachine quickstart`` end to end: none driver, a real TLS dockerd, the real docker CLI."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from fixtures_dockerd import free_loopback_port, start_engine_for

pytestmark = pytest.mark.integration

DOCKER = "/usr/bin/docker"  # CLI 20.10, same as the test dockerd


def _exports(text: str) -> dict[str, str]:
    return dict(re.findall(r'^export (\w+)="([^"]*)"$', text, re.MULTILINE))


@pytest.fixture
def engine(pm, tmp_path):
    """A dockerd whose server cert is signed by the store's CA (via a throwaway 'seed' machine)."""
    handle = start_engine_for(pm, "seed", tmp_path / "d")
    try:
        yield handle
    finally:
        handle.stop()


def test_quickstart_creates_then_reuses_default_and_env_drives_docker(pm, engine):
    env = {"PYMACHINE_QUICKSTART_DRIVER": "none", "HTTP_PROXY": "http://127.0.0.1:3128",
           "NO_PROXY": "localhost"}
    first = pm.ok("quickstart", "--no-shell", "--url", engine.url, env=env)
    assert 'Creating machine "default" with the none driver' in first.stderr
    config = json.loads((pm.store / "machines" / "default" / "config.json").read_text())
    assert config["DriverName"] == "none"
    assert "http://127.0.0.1:3128" in json.dumps(config["HostOptions"])  # --proxy-from-env was passed
    exports = _exports(first.stdout)
    assert exports["DOCKER_HOST"] == engine.url
    assert exports["DOCKER_TLS_VERIFY"] == "1"
    assert exports["DOCKER_MACHINE_NAME"] == "default"
    assert exports["NO_PROXY"] == "localhost,127.0.0.1"
    assert "# docker is configured to use the default machine with IP 127.0.0.1" in first.stdout

    mtime = (pm.store / "machines" / "default" / "config.json").stat().st_mtime_ns
    second = pm.ok("quickstart", "--no-shell", env=env)  # no --url needed: reuses default
    assert "Creating" not in second.stderr
    assert (pm.store / "machines" / "default" / "config.json").stat().st_mtime_ns == mtime
    assert _exports(second.stdout)["DOCKER_HOST"] == engine.url

    # the printed environment drives the real docker CLI
    denv = {k: v for k, v in pm.env.items() if not k.startswith("DOCKER_")}
    denv.update(exports, DOCKER_CONFIG=str(pm.docker_config))
    ver = subprocess.run([DOCKER, "version", "--format", "{{.Server.Version}}"], env=denv,
                         capture_output=True, text=True, timeout=60, check=False)
    assert ver.returncode == 0, ver.stderr
    assert re.match(r"^\d+\.\d+\.\d+", ver.stdout.strip())


def test_quickstart_runs_a_command_and_a_shell_with_the_environment(pm, engine):
    env = {"PYMACHINE_QUICKSTART_DRIVER": "none", "ALL_PROXY": "http://127.0.0.1:9"}
    res = pm.ok("quickstart", "--url", engine.url, "--", DOCKER, "info", "--format", "{{.Name}}", env=env)
    assert res.stdout.strip().splitlines()[-1]  # the daemon's name, printed after env + banner
    assert "# docker is configured" in res.stdout
    shell = pm("quickstart", "--shell", "/bin/sh",
               input='echo "HOST=$DOCKER_HOST ALL=${ALL_PROXY-unset}"; exit 7\n', env=env)
    assert shell.returncode == 7  # exec'd: the shell's own exit status
    assert f"HOST={engine.url} ALL=unset" in shell.stdout  # non-SOCKS ALL_PROXY is dropped, as Toolbox did


def test_quickstart_reports_unreachable_engine_in_one_line(pm):
    env = {"PYMACHINE_QUICKSTART_DRIVER": "none"}
    res = pm("quickstart", "--no-shell", "--url", f"tcp://127.0.0.1:{free_loopback_port()}", env=env)
    assert res.returncode != 0
    assert "Error checking TLS connection" in res.stderr
    assert (pm.store / "machines" / "default").is_dir()  # created; a later run will reuse it
