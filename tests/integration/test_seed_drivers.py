"""The first-boot seed of VirtualBox and VMware machines, created through ``pymachine`` against
the fake ``VBoxManage`` and ``vmrun``: it carries the engine's final TLS files, drop-in and proxy,
and provisioning the booted machine then changes nothing and restarts no engine.

No VM boots here, so the test plays the guest: it installs the seed's files where the image's
first-boot script (engine/images.py FIRSTBOOT_SCRIPT, parsed here, not restated) installs them,
and the engine is up.  Provisioning then runs over a strict RecordingRunner that answers like
pymachine's image (systemd, docker.io, ext4): any command nobody expected fails the test.  A
control run against a guest whose first boot had no engine files proves the same test sees a
restart when there is one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from pymachine.machine.runner import CommandResult
from pymachine.machine.seed import read_seed_iso

from tests import fake_base_image
from tests.fakes import vboxmanage, vmrun
from tests.unit.transcript import HOST_CHANGES, RecordingRunner

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not fake_base_image.qemu_img_available(), reason="qemu-img (qemu-utils) not installed"),
]

PROXY = "http://127.0.0.1:3128"  # never dialled: provisioning runs over the recording runner
ENGINE_FILES = ("/etc/docker/ca.pem", "/etc/docker/server.pem", "/etc/docker/server-key.pem",
                "/etc/systemd/system/docker.service.d/10-machine.conf")


def first_boot_installs(seed: dict[str, str]) -> dict[str, bytes]:
    """{guest path: content} of what the image's first-boot script installs from this seed:
    every ``install -m MODE $seed/pymachine/NAME /guest/path`` line whose file the seed has."""
    from pymachine.engine.images import FIRSTBOOT_SCRIPT

    out = {}
    for name, guest in re.findall(r"install -m \S+ \$seed/pymachine/(\S+) (/\S+)", FIRSTBOOT_SCRIPT):
        if f"pymachine/{name}" in seed:
            out[guest] = seed[f"pymachine/{name}"].encode()
    return out


def booted_image(files: dict[str, bytes]) -> RecordingRunner:
    """pymachine's image after its first boot: systemd, docker.io's dockerd, ext4, engine up."""
    answers = {
        r"^test -d /run/systemd/system$": CommandResult(0, "", ""),
        r"command -v dockerd": CommandResult(0, "/usr/sbin/dockerd\n", ""),
        r"^stat -f": CommandResult(0, "ext2/ext3\n", ""),
        r"^id -un": CommandResult(0, "docker\n/home/docker\n", ""),
        r"^systemctl is-active --quiet docker\.service$": CommandResult(0, "", ""),
        r"^systemctl is-enabled --quiet docker\.service$": CommandResult(0, "", ""),  # the image enables it
    }
    return RecordingRunner(answers, files={"/etc/hosts": b"127.0.0.1 localhost\n", **files}, accept=HOST_CHANGES)


def provision_booted(store: Path, name: str, guest: RecordingRunner) -> bool:
    """Provision machine ``name`` as ``create`` does after boot (the seeded server cert kept when it
    covers the address) over ``guest``; True when the engine configuration changed."""
    from pymachine.machine.host import Machine
    from pymachine.machine.provision import provision_plan
    from pymachine.machine.store import Store
    from pymachine.provisioners.debian import DebianProvisioner

    machine = Machine.load(Store(store), name)
    plan = provision_plan(machine, lambda _m: None, new_certs=False)
    prov = DebianProvisioner({"ID": "debian"}, sleep=lambda _s: None)
    prov.provision(guest, plan)
    assert guest.unexpected == []
    return prov.changed


def assert_seed_carries_the_plan(mdir: Path, store: Path, guest_ip: str) -> dict[str, str]:
    from pymachine.machine import certs

    seed = read_seed_iso(mdir / "seed.iso")
    assert seed["pymachine/docker-ca.pem"] == (store / "certs" / "ca.pem").read_text()
    assert seed["pymachine/docker-server.pem"] == (mdir / "server.pem").read_text()
    assert seed["pymachine/docker-server-key.pem"] == (mdir / "server-key.pem").read_text()
    dropin = seed["pymachine/docker-machine.conf"]
    assert "--tlsverify" in dropin and "-H tcp://0.0.0.0:2376" in dropin and "--tlscacert /etc/docker/ca.pem" in dropin
    assert f"HTTP_PROXY={PROXY}" in dropin
    assert f'Environment="HTTP_PROXY={PROXY}"' in seed["pymachine/docker-proxy.conf"]
    assert f'Acquire::http::Proxy "{PROXY}";' in seed["pymachine/apt-proxy.conf"]
    assert f'http_proxy="{PROXY}"' in seed["pymachine/environment"]
    # The seed's server certificate already covers the address the guest got when it booted.
    assert certs.cert_covers_host(mdir / "server.pem", guest_ip)
    assert oct((mdir / "seed.iso").stat().st_mode & 0o777) == "0o600"  # it carries the server key
    return seed


def assert_provisioning_restarts_nothing(store: Path, name: str, seed: dict[str, str]) -> None:
    installed = first_boot_installs(seed)
    assert set(ENGINE_FILES) <= set(installed)  # the image's script installs every engine file
    guest = booted_image(installed)
    assert provision_booted(store, name, guest) is False
    assert not [c.target for c in guest.calls if c.kind == "put" and c.target in ENGINE_FILES]
    assert not guest.find(r"systemctl (restart|stop) docker|disable --now docker\.socket")
    assert "systemctl is-active --quiet docker.service" in guest.commands

    # Control: a guest whose first boot installed no engine files gets them and one restart.
    plain = booted_image({k: v for k, v in installed.items() if k not in ENGINE_FILES})
    assert provision_booted(store, name, plain) is True
    assert plain.find(r"systemctl restart docker\.service")


def test_virtualbox_seed_starts_the_engine_configured_and_provisioning_restarts_nothing(pm, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    vboxmanage.install(bin_dir)
    guest_ip = "192.168.56.101"  # in the default host-only network's DHCP pool; never dialled here
    pm.env.update(PATH=f"{bin_dir}{os.pathsep}{pm.env['PATH']}", FAKE_VBOX_HOME=str(tmp_path / "vbox"),
                  FAKE_VBOX_GUEST_IP=guest_ip, PYMACHINE_SSH_WAIT="1", PYMACHINE_VBOX_BACKEND="vboxmanage")
    fake_base_image.make_fake_image(pm.store)
    try:
        res = pm("create", "-d", "virtualbox", "--virtualbox-no-vtx-check", "--virtualbox-no-share",
                 "--engine-env", f"HTTP_PROXY={PROXY}", "vbseed")
        # No VM boots: the driver's part completes, then provisioning cannot reach SSH (exit 1).
        assert res.returncode == 1 and "Unable to connect to 127.0.0.1" in res.stderr, res.stdout + res.stderr
        mdir = pm.store / "machines" / "vbseed"
        assert json.loads((mdir / "config.json").read_text())["Driver"]["IPAddress"] == guest_ip
        seed = assert_seed_carries_the_plan(mdir, pm.store, guest_ip)
        assert_provisioning_restarts_nothing(pm.store, "vbseed", seed)
        pm.ok("rm", "-y", "vbseed")
    finally:
        vboxmanage.kill_forwarders(tmp_path / "vbox")


def test_vmware_seed_starts_the_engine_configured_and_provisioning_restarts_nothing(pm, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    vmrun.install(bin_dir)
    guest_ip = "127.0.0.9"  # loopback: nothing is dialled outside this machine
    dhcpd = tmp_path / "vmnet8-dhcpd.conf"  # vmnet8's NAT subnet, as VMware's dhcpd.conf declares it
    dhcpd.write_text("subnet 127.0.0.0 netmask 255.255.255.0 {\n\trange 127.0.0.128 127.0.0.254;\n}\n")
    pm.env.update(PATH=f"{bin_dir}{os.pathsep}{pm.env['PATH']}", FAKE_VMRUN_HOME=str(tmp_path / "vmrun"),
                  FAKE_VMRUN_GUEST_IP=guest_ip, PYMACHINE_SSH_WAIT="1", PYMACHINE_VMWARE_DHCP_CONF=str(dhcpd))
    monkeypatch.setenv("PYMACHINE_VMWARE_DHCP_CONF", str(dhcpd))  # provisioning below runs in this process
    fake_base_image.make_fake_image(pm.store)
    res = pm("create", "-d", "vmwareworkstation", "--vmwareworkstation-no-share",
             "--engine-env", f"HTTP_PROXY={PROXY}", "wsseed")
    assert res.returncode == 1 and f"Unable to connect to {guest_ip}:22" in res.stderr, res.stdout + res.stderr
    mdir = pm.store / "machines" / "wsseed"
    seed = assert_seed_carries_the_plan(mdir, pm.store, guest_ip)
    assert_provisioning_restarts_nothing(pm.store, "wsseed", seed)
    pm.ok("rm", "-y", "wsseed")


def test_a_guest_whose_address_cannot_be_known_before_boot_starts_its_engine_once(pm, tmp_path, monkeypatch):
    """VMware without a readable vmnet8 dhcpd.conf (and vSphere, whose network is the datacenter's):
    no address is known before boot, so the seed's certificate cannot name the guest.  The seeded
    drop-in then holds docker.service back (a condition on a path nothing creates: systemd skips
    the unit); provisioning delivers the certificate for the address the guest got, replaces the
    drop-in with the final one and starts the engine: one start, already configured, no restart
    of a running engine."""
    from pymachine.machine.firstboot import HOLD_UNTIL_PROVISIONED

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    vmrun.install(bin_dir)
    guest_ip = "127.0.0.9"  # loopback: nothing is dialled outside this machine
    missing = tmp_path / "no-such-dhcpd.conf"
    pm.env.update(PATH=f"{bin_dir}{os.pathsep}{pm.env['PATH']}", FAKE_VMRUN_HOME=str(tmp_path / "vmrun"),
                  FAKE_VMRUN_GUEST_IP=guest_ip, PYMACHINE_SSH_WAIT="1", PYMACHINE_VMWARE_DHCP_CONF=str(missing))
    monkeypatch.setenv("PYMACHINE_VMWARE_DHCP_CONF", str(missing))
    fake_base_image.make_fake_image(pm.store)
    res = pm("create", "-d", "vmwareworkstation", "--vmwareworkstation-no-share", "wshold")
    assert res.returncode == 1 and f"Unable to connect to {guest_ip}:22" in res.stderr, res.stdout + res.stderr
    mdir = pm.store / "machines" / "wshold"
    seed = read_seed_iso(mdir / "seed.iso")
    dropin = seed["pymachine/docker-machine.conf"]
    assert dropin.endswith(HOLD_UNTIL_PROVISIONED) and "--tlsverify" in dropin

    # systemd reads the held drop-in as valid unit syntax (systemd-analyze verify, offline).
    units = tmp_path / "units"
    (units / "docker.service.d").mkdir(parents=True)
    (units / "docker.service").write_text("[Unit]\nDescription=stand-in\n[Service]\nExecStart=/bin/true\n")
    (units / "docker.service.d" / "10-machine.conf").write_text(dropin.replace("/usr/sbin/dockerd", "/bin/true"))
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", str(units / "docker.service")],
                            capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"})
    assert "Unknown key" not in verify.stderr and "Unknown section" not in verify.stderr, verify.stderr

    # The booted guest: the seed's files installed, docker.service skipped by the condition.
    installed = first_boot_installs(seed)
    guest = booted_image(installed)
    guest.responses = {**guest.responses,
                       r"^systemctl is-active --quiet docker\.service$": CommandResult(3, "", "")}
    assert provision_booted(pm.store, "wshold", guest) is True
    from pymachine.machine import certs

    assert certs.cert_covers_host(mdir / "server.pem", guest_ip)  # the certificate came after boot
    final = guest.files["/etc/systemd/system/docker.service.d/10-machine.conf"].decode()
    assert final == dropin[:-len(HOLD_UNTIL_PROVISIONED)]  # the seeded drop-in, released
    assert "ConditionPathExists" not in final
    assert len(guest.find(r"systemctl restart docker\.service")) == 1  # the engine's one start
    pm.ok("rm", "-y", "wshold")
