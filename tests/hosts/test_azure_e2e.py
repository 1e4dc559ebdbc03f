"""``create -d azure`` end to end: the fake ARM for the cloud, a namespaced Debian host for the VM.

The fake plays Azure (tokens, LROs, tagged resources) and hands out the test
host's namespaced address as the VM's public IP; when the VM is provisioned it
acts as the Azure Linux agent and installs the machine's SSH key on the host.
Everything after that is real: SSH provisioning, the engine from an offline
bundle, TLS, and the docker CLI.  The host has only root, hence
``--azure-ssh-user root``.  Power state lives in the fake only: stopping the
"VM" does not stop the host.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fakes.azure_arm import CLIENT_ID, CLIENT_SECRET, SUBSCRIPTION, FakeARM

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(900)]
DOCKER = shutil.which("docker") or "/usr/bin/docker"


def docker(pm, name: str, env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real docker CLI with the environment printed by ``pymachine env NAME``."""
    run_env = {**pm.env, **env}
    for line in pm.ok("env", name, env=env).stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            run_env[key] = value.strip('"')
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, env=run_env, check=False)


def test_azure_create_env_stop_start_rm_on_a_test_host(pm, make_test_host, tmp_path: Path):
    from bundle_cache import real_engine_bundle

    bundle = real_engine_bundle()
    host = make_test_host("az1")
    installed: list[str] = []

    def agent(vm, admin_user, keys, custom_data) -> None:
        """What the Azure Linux agent does on first boot: authorise the VM's SSH keys for the admin user."""
        assert admin_user == "root"
        host.put("/root/.ssh/authorized_keys", ("\n".join(keys) + "\n").encode(), mode=0o600)
        installed.extend(keys)

    with FakeARM(tmp_path / "arm", public_ip=host.ip, on_vm_create=agent) as fake:
        env = {
            "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION, "AZURE_CLIENT_ID": CLIENT_ID, "AZURE_CLIENT_SECRET": CLIENT_SECRET,
            "AZURE_ARM_ENDPOINT": fake.url, "AZURE_AUTHORITY_HOST": fake.url, "AZURE_CA_FILE": str(fake.ca_cert),
            "PYMACHINE_AZURE_POLL_INTERVAL": "0.05", "PYMACHINE_SSH_WAIT": "60",
        }
        res = pm("create", "-d", "azure", "--azure-ssh-user", "root", "--azure-location", "westeurope",
                 "--engine-bundle", str(bundle), "az1", env=env, timeout=600)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Docker is up and running!" in res.stdout
        mdir = pm.store / "machines" / "az1"
        # The host trusts exactly the key pymachine generated for this machine.
        assert installed == [(mdir / "id_rsa.pub").read_text().strip()]
        assert host.run("cat /root/.ssh/authorized_keys").stdout.strip() == installed[0]
        cfg = json.loads((mdir / "config.json").read_text())
        assert cfg["DriverName"] == "azure"
        assert cfg["Driver"]["IPAddress"] == host.ip and cfg["Driver"]["Location"] == "westeurope"
        assert CLIENT_SECRET not in (mdir / "config.json").read_text()

        assert pm.ok("url", "az1", env=env).stdout.strip() == f"tcp://{host.ip}:2376"
        version = docker(pm, "az1", env, "version", "--format", "{{.Server.Version}}")
        assert version.returncode == 0, version.stderr
        assert version.stdout.strip().startswith("20.10")
        assert docker(pm, "az1", env, "info", "--format", "{{.Name}}").stdout.strip() == "az1"

        res = pm.ok("stop", "az1", env=env)
        assert "NOTICE: Stopping an Azure Virtual Machine is just going to power it off, not deallocate." in res.stdout
        assert pm.ok("status", "az1", env=env).stdout.strip() == "Stopped"
        assert fake.vm("az1")["power"] == "stopped"
        pm.ok("start", "az1", env=env)
        assert pm.ok("status", "az1", env=env).stdout.strip() == "Running"
        assert docker(pm, "az1", env, "ps").returncode == 0

        assert fake.tagged("az1"), "resources carry the machine tag"
        pm.ok("rm", "-y", "az1", env=env)
        assert not mdir.exists()
        assert fake.all_ids() == [], "rm leaves nothing behind in Azure"
