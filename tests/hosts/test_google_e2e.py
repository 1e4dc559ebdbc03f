"""``create -d google`` end to end: the Compute Engine v1 fake hands out a namespaced Debian
test host as the instance, and pymachine provisions it for real over SSH.

Like Google's guest agent, the fake installs the ``ssh-keys`` metadata entries
for their user on first boot; the host has only root, hence
``--google-username root``.  The engine comes from an offline ``--engine-bundle``.
Stop/start go through the fake's instance operations (the host itself keeps
running) and show in ``ls``; ``rm`` leaves no instance, disk or firewall rule.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fakes.gce import PROJECT, FakeGCE

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(900)]
DOCKER = shutil.which("docker") or "/usr/bin/docker"


def docker(pm, name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real docker CLI with the environment printed by ``pymachine env NAME``."""
    env = dict(pm.env)
    for line in pm.ok("env", name).stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.strip('"')
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def test_google_create_provision_stop_start_rm(pm, make_test_host, tmp_path: Path):
    from bundle_cache import real_engine_bundle

    bundle = real_engine_bundle()
    host = make_test_host("gce-e2e1")
    handed_out: list[str] = []

    def guest_agent(instance, keys):
        """First boot: the agent authorises each ``user:key`` entry for its user (root here)."""
        users = {k.partition(":")[0] for k in keys}
        assert users == {"root"}, keys
        host.put("/root/.ssh/authorized_keys",
                 ("\n".join(k.partition(":")[2] for k in keys) + "\n").encode(), mode=0o600)
        handed_out.append(host.ip)
        return host.ip

    with FakeGCE(tmp_path / "fake-gce", address_for=guest_agent) as fake:
        sa = fake.service_account_file(tmp_path / "sa.json")
        res = pm("create", "-d", "google", "--google-project", PROJECT, "--google-credentials", str(sa),
                 "--google-api-url", fake.url + "/compute/v1", "--google-ca-cert", str(fake.ca_cert),
                 "--google-username", "root", "--engine-bundle", str(bundle), "gce-e2e1",
                 env={"PYMACHINE_SSH_WAIT": "60"}, timeout=600)
        assert res.returncode == 0, res.stdout + res.stderr
        for phase in ("(gce-e2e1) Opening firewall ports", "(gce-e2e1) Creating instance",
                      "(gce-e2e1) Waiting for Instance", "Docker is up and running!"):
            assert phase in res.stdout
        assert handed_out == [host.ip]
        inst = fake.instances[("us-central1-a", "gce-e2e1")]
        mdir = pm.store / "machines" / "gce-e2e1"
        machine_pub = (mdir / "id_rsa.pub").read_text().split()[:2]
        assert host.run("cat /root/.ssh/authorized_keys").stdout.split()[:2] == machine_pub
        cfg = json.loads((mdir / "config.json").read_text())
        assert cfg["Driver"]["IPAddress"] == host.ip and cfg["Driver"]["InstanceID"] == inst["id"]
        assert "private_key" not in (mdir / "config.json").read_text()

        version = docker(pm, "gce-e2e1", "version", "--format", "{{.Server.Version}}")
        assert version.returncode == 0 and version.stdout.strip().startswith("20.10"), version.stderr
        assert pm.ok("url", "gce-e2e1").stdout.strip() == f"tcp://{host.ip}:2376"

        pm.ok("stop", "gce-e2e1")
        assert inst["status"] == "TERMINATED"
        assert pm.ok("status", "gce-e2e1").stdout.strip() == "Stopped"
        pm.ok("start", "gce-e2e1")
        assert pm.ok("status", "gce-e2e1").stdout.strip() == "Running"

        pm.ok("rm", "-y", "gce-e2e1")
        assert fake.instances == {} and fake.disks == {} and fake.firewalls == {}
        assert not mdir.exists()
