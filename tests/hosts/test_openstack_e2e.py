"""``create -d openstack`` end to end: the Keystone + Nova + Neutron fake hands out a namespaced
Debian test host as the server (its floating IP), and pymachine provisions it for real over SSH.

Like cloud-init on an OpenStack image, the fake installs the server's key pair
into the host's ``/root/.ssh/authorized_keys`` when it builds; ``--openstack-ssh-user``
stays docker-machine's default ``root``.  The engine comes from an offline
``--engine-bundle``.  Stop/start are Nova actions (the host keeps running);
``rm`` leaves no server, key pair, security group, port or floating IP.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fakes.openstack import DOMAIN, PASSWORD, PROJECT, USER, FakeOpenStack

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


def test_openstack_create_provision_stop_start_rm(pm, make_test_host, tmp_path: Path):
    from bundle_cache import real_engine_bundle

    bundle = real_engine_bundle()
    host = make_test_host("os-e2e1")
    installed: list[str] = []

    def cloud_init(server, public_keys):
        """The fixed address is never reachable here; the key lands on the host that plays the server."""
        host.put("/root/.ssh/authorized_keys", ("\n".join(public_keys) + "\n").encode(), mode=0o600)
        installed.extend(public_keys)
        return "10.0.0.5"  # tenant network address: recorded by Nova, never dialled

    def floating(server, keys):
        return host.ip

    with FakeOpenStack(tmp_path / "fake-os", address_for=cloud_init, floating_for=floating) as fake:
        env = {"OS_AUTH_URL": fake.auth_url, "OS_USERNAME": USER, "OS_PASSWORD": PASSWORD,
               "OS_TENANT_NAME": PROJECT, "OS_DOMAIN_NAME": DOMAIN, "OS_CACERT": str(fake.ca_cert),
               "PYMACHINE_SSH_WAIT": "60"}
        res = pm("create", "-d", "openstack", "--openstack-flavor-name", "m1.small", "--openstack-image-name",
                 "debian-12", "--openstack-net-name", "private", "--openstack-floatingip-pool", "public",
                 "--engine-bundle", str(bundle), "os-e2e1", env=env, timeout=600)
        assert res.returncode == 0, res.stdout + res.stderr
        for phase in ("(os-e2e1) Creating key pair...", "(os-e2e1) Creating machine...",
                      "(os-e2e1) Assigning floating IP from pool public...", "Docker is up and running!"):
            assert phase in res.stdout
        mdir = pm.store / "machines" / "os-e2e1"
        assert installed == [(mdir / "id_rsa.pub").read_text().strip()]
        cfg = json.loads((mdir / "config.json").read_text())["Driver"]
        assert cfg["IPAddress"] == host.ip and cfg["MachineId"] in fake.servers
        assert PASSWORD not in (mdir / "config.json").read_text()

        version = docker(pm, "os-e2e1", "version", "--format", "{{.Server.Version}}")
        assert version.returncode == 0 and version.stdout.strip().startswith("20.10"), version.stderr
        assert pm.ok("url", "os-e2e1").stdout.strip() == f"tcp://{host.ip}:2376"

        pm.ok("stop", "os-e2e1")
        assert pm.ok("status", "os-e2e1").stdout.strip() == "Stopped"
        pm.ok("start", "os-e2e1")
        assert pm.ok("status", "os-e2e1").stdout.strip() == "Running"

        pm.ok("rm", "-y", "os-e2e1")
        assert fake.nothing_left() == []
        assert not mdir.exists()
