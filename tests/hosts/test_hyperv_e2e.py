"""``create -d hyperv`` end to end: the fake ``powershell`` plays Hyper-V, a namespaced Debian
test host plays the generation 2 VM's guest, and pymachine provisions it for real over SSH.

On ``Start-VM`` the fake runs this test's guest hook, which does what the image's
first boot does: read the seed ISO the driver put on the VM's DVD drive (the real
file, parsed with pycdlib), create the ``docker`` user with passwordless sudo and
install the key from the seed, then report the host's address as the adapter's
IPv4 (after an IPv6 link-local one, as Hyper-V lists them).  The disk is a tiny
fake image exported to VHDX by the real qemu-img; the engine comes from an offline
``--engine-bundle``.  ``rm`` leaves no VM in the fake.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import fake_base_image
from tests.fakes import powershell as fake_ps
from tests.hosts.host import GUEST_PATH

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(900)]
DOCKER = shutil.which("docker") or "/usr/bin/docker"

HOOK = '''
import subprocess, sys
from pymachine.machine.seed import read_seed_iso

name, *dvds = sys.argv[1:]
key = read_seed_iso(dvds[0])["pymachine/authorized_keys"].strip()
setup = ("id docker >/dev/null 2>&1 || useradd -m -s /bin/bash docker; "
         "echo 'docker ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-docker && chmod 0440 /etc/sudoers.d/90-docker; "
         "install -d -m 0700 -o docker -g docker /home/docker/.ssh && cat > /home/docker/.ssh/authorized_keys && "
         "chown docker:docker /home/docker/.ssh/authorized_keys && chmod 0600 /home/docker/.ssh/authorized_keys && "
         "hostname " + name)
subprocess.run(["nsenter", "-t", "{pid}", "-m", "-u", "-n", "-p", "-r", "-w", "--", "/bin/sh", "-c", setup],
               input=key + "\\n", text=True, check=True, timeout=60, env={{"PATH": "{path}"}})
print("{ip}")
'''


def test_hyperv_create_provision_stop_start_rm(pm, make_test_host, tmp_path: Path):
    from bundle_cache import real_engine_bundle

    bundle = real_engine_bundle()
    host = make_test_host("hv-e2e1")
    fake_base_image.make_fake_image(pm.store, size_mb=64, arch="amd64")
    hook = tmp_path / "guest_hook.py"
    hook.write_text(HOOK.format(pid=host.init_pid, path=GUEST_PATH, ip=host.ip))
    state = fake_ps.install(tmp_path / "bin", tmp_path / "ps", guest_hook=[sys.executable, str(hook)])
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "FAKE_POWERSHELL_STATE": str(state),
           "PYMACHINE_SSH_WAIT": "60"}

    res = pm("create", "-d", "hyperv", "--engine-bundle", str(bundle), "hv-e2e1", env=env, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert '(hv-e2e1) Using switch "Default Switch"' in res.stdout and "Docker is up and running!" in res.stdout
    mdir = pm.store / "machines" / "hv-e2e1"
    vm = json.loads(state.read_text())["vms"]["hv-e2e1"]
    assert vm["Generation"] == 2 and vm["Firmware"]["SecureBootTemplate"] == "MicrosoftUEFICertificateAuthority"
    assert vm["DvdDrives"] == [str(mdir / "seed.iso")]
    assert host.run("cat /home/docker/.ssh/authorized_keys").stdout.strip() == (mdir / "id_rsa.pub").read_text().strip()
    assert pm.ok("url", "hv-e2e1", env=env).stdout.strip() == f"tcp://{host.ip}:2376"

    run_env = dict(pm.env)
    for line in pm.ok("env", "hv-e2e1", env=env).stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            run_env[key] = value.strip('"')
    version = subprocess.run([DOCKER, "version", "--format", "{{.Server.Version}}"], capture_output=True,
                             text=True, timeout=120, env=run_env, check=False)
    assert version.returncode == 0 and version.stdout.strip().startswith("20.10"), version.stderr

    pm.ok("stop", "hv-e2e1", env=env)
    assert pm.ok("status", "hv-e2e1", env=env).stdout.strip() == "Stopped"
    pm.ok("start", "hv-e2e1", env=env)
    assert pm.ok("status", "hv-e2e1", env=env).stdout.strip() == "Running"

    pm.ok("rm", "-y", "hv-e2e1", env=env)
    assert json.loads(state.read_text())["vms"] == {}
    assert not mdir.exists()
