"""``create -d vmwarevsphere`` end to end: vcsim for vSphere, a namespaced Debian host as the guest.

vcsim boots nothing, so the test plays the guest's cloud-init and VMware tools:
once the VM appears it reads the VM's extraConfig and installs the key the
driver put in ``guestinfo.pymachine.ssh-authorized-key`` as the host's only
authorized key (so provisioning can only succeed with the machine's own key),
then sets ``SET.guest.ipAddress`` to the test host's namespaced 10.231.x
address -- the only non-loopback address ever injected.  The engine comes
from an uploaded bundle: the host has no route out.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from tests.vcsim import (
    finish,
    inject_guest_ip,
    inventory,
    ours,
    unavailable_reason,
    vcsim_fixture,  # noqa: F401 -- registers the ``vcsim`` fixture
)

pytestmark = [
    pytest.mark.hosts,
    pytest.mark.timeout(600),
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]


def test_vsphere_create_provisions_the_guest_power_cycle_and_rm(pm, vcsim, make_test_host, tmp_path):
    from tests.bundle_cache import real_engine_bundle

    bundle = real_engine_bundle()
    host = make_test_host("vs1")
    iso = tmp_path / "guest.iso"
    iso.write_bytes(b"pymachine e2e iso\n" * 1000)

    def cloud_init(extra: dict[str, str]) -> None:
        key = extra["guestinfo.pymachine.ssh-authorized-key"]
        host.put("/root/.ssh/authorized_keys", (key + "\n").encode(), mode=0o600)

    injection = inject_guest_ip(vcsim, "vs1", host.ip, before=cloud_init)
    res = pm("create", "-d", "vmwarevsphere", *vcsim.flags(),
             "--vmwarevsphere-datacenter", "DC0", "--vmwarevsphere-datastore", "LocalDS_0",
             "--vmwarevsphere-network", "VM Network", "--vmwarevsphere-hostsystem", "DC0_H0",
             "--vmwarevsphere-boot2docker-url", str(iso), "--vmwarevsphere-ssh-user", "root",
             "--engine-bundle", str(bundle), "vs1",
             env={"PYMACHINE_VSPHERE_IP_WAIT": "60", "PYMACHINE_SSH_WAIT": "60"}, timeout=500)
    vm_ref = finish(injection)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Docker is up and running!" in res.stdout
    assert vcsim.password not in res.stdout + res.stderr
    assert vcsim.password not in (pm.store / "machines" / "vs1" / "config.json").read_text()
    assert pm.ok("ip", "vs1").stdout.strip() == host.ip
    assert pm.ok("url", "vs1").stdout.strip() == f"tcp://{host.ip}:2376"
    assert pm.ok("inspect", "-f", "{{.Driver.VMRef}}", "vs1").stdout.strip() == vm_ref
    # The guest was reached with the machine's own key, and its engine answers over TLS.
    assert pm.ok("ssh", "vs1", "--", "cat", "/etc/hostname").stdout.strip() == "vs1"
    row = pm.ok("ls", "--format", "{{.Name}} {{.DriverName}} {{.State}} {{.DockerVersion}}").stdout.split()
    assert row[:3] == ["vs1", "vmwarevsphere", "Running"] and row[3].startswith("v"), row

    pm.ok("stop", "vs1")
    assert inventory(vcsim)["vms"]["vs1"]["power"] == "poweredOff"
    assert pm.ok("status", "vs1").stdout.strip() == "Stopped"
    pm.ok("start", "vs1")
    assert inventory(vcsim)["vms"]["vs1"]["power"] == "poweredOn"
    pm.ok("kill", "vs1")
    assert pm.ok("status", "vs1").stdout.strip() == "Stopped"

    pm.ok("rm", "-y", "vs1")
    assert not (pm.store / "machines" / "vs1").exists()
    assert ours(inventory(vcsim), "vs1") == []
