"""``create -d digitalocean`` end to end: the DigitalOcean v2 fake hands out a namespaced
Debian test host as the droplet, and pymachine provisions it for real over SSH.

Like DigitalOcean's cloud-init, the fake puts the SSH keys named in the droplet
request into the host's ``/root/.ssh/authorized_keys``; so only the key that
pymachine generated and uploaded lets it in.  The engine comes from an offline
``--engine-bundle`` (the host has no route out).  Stop/start go through the
fake's droplet actions and show in ``ls``; ``rm`` leaves no droplet or key.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.fakes.digitalocean import FakeDigitalOcean

pytestmark = pytest.mark.hosts
DOCKER = shutil.which("docker") or "/usr/bin/docker"
TOKEN = "fake-do-token"


def docker(pm, name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real docker CLI with the environment printed by ``pymachine env NAME``."""
    env = dict(pm.env)
    for line in pm.ok("env", name).stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.strip('"')
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def ls_row(pm, name: str) -> list[str]:
    for row in pm.ok("ls", "--format", "{{.Name}}|{{.State}}|{{.DockerVersion}}|{{.URL}}").stdout.splitlines():
        if row.startswith(name + "|"):
            return row.split("|")
    raise AssertionError(f"{name} not listed")


def test_digitalocean_create_provision_stop_start_rm(pm, make_test_host, tmp_path):
    from bundle_cache import real_engine_bundle

    bundle = real_engine_bundle()
    host = make_test_host("do-e2e1")
    handed_out: list[str] = []

    def boot(droplet, public_keys):
        host.put("/root/.ssh/authorized_keys", ("\n".join(public_keys) + "\n").encode(), mode=0o600)
        handed_out.append(host.ip)
        return host.ip

    with FakeDigitalOcean(tmp_path / "fake-do", address_for=boot) as fake:
        res = pm("create", "-d", "digitalocean", "--digitalocean-api-url", fake.url,
                 "--digitalocean-ca-cert", str(fake.ca_cert), "--digitalocean-image", "debian-12-x64",
                 "--engine-bundle", str(bundle), "do-e2e1",
                 env={"DIGITALOCEAN_ACCESS_TOKEN": TOKEN}, timeout=600)
        assert res.returncode == 0, res.stdout + res.stderr
        for phase in ("(do-e2e1) Creating SSH key...", "(do-e2e1) Creating Digital Ocean droplet...",
                      "(do-e2e1) Waiting for IP address to be assigned to the Droplet...",
                      "Provisioning with debian", "Docker is up and running!"):
            assert phase in res.stdout
        assert handed_out == [host.ip]
        [droplet] = fake.droplets.values()
        [key] = fake.keys.values()
        assert key["name"] == "do-e2e1" and "pymachine-machine:do-e2e1" in droplet["tags"]
        # The host trusts exactly the key pymachine generated and uploaded.
        machine_pub = (pm.store / "machines" / "do-e2e1" / "id_rsa.pub").read_text().strip()
        assert host.run("cat /root/.ssh/authorized_keys").stdout.strip() == machine_pub == key["public_key"]
        assert TOKEN not in (pm.store / "machines" / "do-e2e1" / "config.json").read_text()

        version = docker(pm, "do-e2e1", "version", "--format", "{{.Server.Version}}")
        assert version.returncode == 0 and version.stdout.strip().startswith("20.10"), version.stderr
        assert pm.ok("ssh", "do-e2e1", "--", "cat", "/etc/hostname").stdout.strip() == "do-e2e1"
        _, state, dv, url = ls_row(pm, "do-e2e1")
        assert (state, url) == ("Running", f"tcp://{host.ip}:2376") and dv.startswith("v20.10")

        pm.ok("stop", "do-e2e1")
        assert droplet["status"] == "off"
        assert ls_row(pm, "do-e2e1")[1] == "Stopped"
        pm.ok("start", "do-e2e1")
        assert droplet["status"] == "active"
        assert ls_row(pm, "do-e2e1")[1:3] == ["Running", dv]
        kinds = [c.body["type"] for c in fake.calls("POST", f"/v2/droplets/{droplet['id']}/actions")]
        assert kinds == ["shutdown", "power_on"]

        pm.ok("rm", "-y", "do-e2e1")
        assert fake.droplets == {} and fake.keys == {}
        assert not (pm.store / "machines" / "do-e2e1").exists()
