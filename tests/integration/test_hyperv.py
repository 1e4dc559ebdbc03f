"""The ``hyperv`` driver against the stateful fake ``powershell`` (tests/fakes/powershell.py).

Hyper-V cannot run here: the fake keeps the VMs, switches and the caller's
rights in a JSON file and checks each cmdlet's parameters.  Creates use a tiny
fake base image (tests/fake_base_image.py) exported to VHDX by the real
``qemu-img``.  The "guest" reports an unused loopback address (127.80.0.N),
where nothing answers SSH: a local driver keeps such a machine for
``provision`` to retry, so its lifecycle can be driven afterwards.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

from tests import fake_base_image
from tests.fakes import powershell as fake_ps

pytestmark = pytest.mark.integration
ADDRESSES = itertools.count(2)


class Fake:
    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.state_file = fake_ps.install(self.bin, root / "state", guest_ip=f"127.80.0.{next(ADDRESSES) % 250 + 1}")

    @property
    def state(self) -> dict:
        return json.loads(self.state_file.read_text())

    def update(self, **values) -> None:
        state = self.state
        state.update(values)
        self.state_file.write_text(json.dumps(state))

    def scripts(self) -> list[str]:
        log = self.state_file.with_name("calls.log")
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}", "FAKE_POWERSHELL_STATE": str(self.state_file),
                "PYMACHINE_SSH_WAIT": "2"}


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    return Fake(tmp_path / "fake-ps")


@pytest.fixture
def image(pm):
    return fake_base_image.make_fake_image(pm.store, size_mb=64, arch="amd64")


def one_line_error(res) -> str:
    """The error line (the image export, done once, reports its progress on stderr before it)."""
    assert res.returncode != 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if not ln.startswith("(image) ")]
    assert len(lines) == 1, res.stderr
    return lines[0]


def forget_provisioning_error(pm, name: str) -> None:
    """Drop the recorded SSH failure (no guest boots here), as if provisioning had succeeded."""
    path = pm.store / "machines" / name / "config.json"
    cfg = json.loads(path.read_text())
    cfg.get("Pymachine", {}).pop("LastError", None)
    path.write_text(json.dumps(cfg, indent=4))


@pytest.mark.parametrize(("platform", "names", "expected"), [
    ("win32", ("powershell.exe", "pwsh.exe"), "powershell.exe"),
    ("win32", ("pwsh.exe",), "pwsh.exe"),
    ("linux", ("pwsh", "powershell.exe"), "pwsh"),
    ("darwin", ("powershell",), "powershell"),
])
def test_powershell_is_found_per_host_os(tmp_path, platform, names, expected):
    from pymachine.machine.drivers.powershell import find_powershell

    for name in names:
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    assert Path(find_powershell(platform, path=str(tmp_path))).name == expected


def test_powershell_missing_is_exit_3(pm, tmp_path):
    res = pm("create", "-d", "hyperv", "hv1", env={"PATH": str(tmp_path)})
    assert res.returncode == 3
    assert "Powershell was not found in the path" in one_line_error(res)


@pytest.mark.parametrize(
    ("state", "flags", "expect"),
    [
        ({"module": False}, [], "Hyper-V PowerShell Module is not available"),
        ({"hyperv_admin": False, "admin": False}, [], "have to be run as an Administrator"),
        ({}, ["--hyperv-virtual-switch", "Nope"], 'vswitch "Nope" not found'),
        (
            {"switches": [{"Id": "x", "Name": "Private", "SwitchType": "Private"}]},
            [],
            "no External vswitch nor Default Switch",
        ),
        (
            {"vms": {"hv1": {"Name": "hv1", "Id": "i", "State": "Off", "Generation": 2, "NetworkAdapters": []}}},
            [],
            'a Hyper-V VM named "hv1" already exists',
        ),
    ],
)
def test_precreate_checks_exit_3_and_make_nothing(pm, fake, image, state, flags, expect):
    fake.update(**state)
    before = fake.state["vms"]
    res = pm("create", "-d", "hyperv", *flags, "hv1", env=fake.env())
    assert res.returncode == 3, res.stdout + res.stderr
    assert expect in one_line_error(res)
    assert fake.state["vms"] == before
    assert not any(s.startswith("$ErrorActionPreference = 'Stop'; [Console]::OutputEncoding = [Text.Encoding]::UTF8; "
                                "Hyper-V\\New-VM") for s in fake.scripts())
    assert not (pm.store / "machines" / "hv1").exists()


def test_no_base_image_is_exit_3_naming_the_flag(pm, fake):
    env = {**fake.env(), "PATH": fake_base_image.path_without_debootstrap(fake.bin)}
    res = pm("create", "-d", "hyperv", "hv1", env=env)
    assert res.returncode == 3
    assert "--hyperv-boot2docker-url" in one_line_error(res)
    fake_base_image.assert_no_image_built(pm.store)


def test_create_builds_a_gen2_vm_from_the_vhdx_and_rm_removes_it(pm, fake, image):
    res = pm("create", "-d", "hyperv", "--hyperv-memory", "2048", "--hyperv-cpu-count", "2",
             "--hyperv-static-macaddress", "00:15:5d:01:02:03", "--hyperv-vlan-id", "7",
             "--hyperv-disable-dynamic-memory", "--hyperv-disk-size", "4096", "hv1", env=fake.env())
    guest = fake.state["guest_ip"]
    # The VM is made and running; the fake's guest address has no sshd, so provisioning fails and
    # (as for every local driver) the machine stays for `pymachine provision` to retry.
    assert res.returncode == 1 and f"{guest}:22" in res.stderr, res.stdout + res.stderr
    assert '(hv1) Using switch "Default Switch"' in res.stdout
    mdir = pm.store / "machines" / "hv1"
    vm = fake.state["vms"]["hv1"]
    assert vm["Generation"] == 2 and vm["State"] == "Running"
    assert vm["Firmware"] == {"SecureBoot": "On", "SecureBootTemplate": "MicrosoftUEFICertificateAuthority",
                              "FirstBootDevice": f"HardDiskDrive:{mdir / 'disk.vhdx'}"}
    assert vm["HardDrives"] == [str(mdir / "disk.vhdx")] and vm["DvdDrives"] == [str(mdir / "seed.iso")]
    assert vm["MemoryStartup"] == 2048 << 20 and vm["ProcessorCount"] == 2 and vm["DynamicMemoryEnabled"] is False
    adapter = vm["NetworkAdapters"][0]
    assert (adapter["SwitchName"], adapter["MacAddress"], adapter["VlanId"]) == ("Default Switch", "00155D010203", 7)
    assert fake.state["vhd_sizes"] == {str(mdir / "disk.vhdx"): 4096 << 20}
    assert fake_base_image.qemu_img_info(mdir / "disk.vhdx")["format"] == "vhdx"
    cfg = json.loads((mdir / "config.json").read_text())["Driver"]
    assert cfg["IPAddress"] == guest and cfg["VMId"] == vm["Id"]  # the IPv4, not the fe80:: listed first

    from pymachine.machine.seed import read_seed_iso

    seed = read_seed_iso(mdir / "seed.iso")
    assert (mdir / "id_rsa.pub").read_text().strip() in json.dumps(seed)

    res = pm.ok("rm", "-y", "hv1", env=fake.env())
    assert fake.state["vms"] == {}
    assert not mdir.exists()
    removal = fake.scripts()[-2:]
    assert removal[0].endswith(f"Hyper-V\\Get-VM -Id '{vm['Id']}' | Hyper-V\\Stop-VM -TurnOff")
    assert removal[1].endswith(f"Hyper-V\\Get-VM -Id '{vm['Id']}' | Hyper-V\\Remove-VM -Force")


def test_failed_create_and_missing_ip_roll_back(pm, fake, image):
    fake.update(fail={"Add-VMDvdDrive": "The operation failed because the file was not found."})
    res = pm("create", "-d", "hyperv", "hv1", env=fake.env())
    assert res.returncode == 1
    assert "Add-VMDvdDrive : The operation failed because the file was not found." in one_line_error(res)
    assert fake.state["vms"] == {} and not (pm.store / "machines" / "hv1").exists()

    fake.update(fail={}, guest_ip=None)  # no DHCP on the switch: the guest never reports an address
    res = pm("create", "-d", "hyperv", "--hyperv-wait-for-ip-timeout", "2", "hv2", env=fake.env())
    assert res.returncode == 1
    assert "no IPv4 address" in one_line_error(res) and "--hyperv-wait-for-ip-timeout" in res.stderr
    assert fake.state["vms"] == {} and not (pm.store / "machines" / "hv2").exists()


def test_ls_one_powershell_stop_falls_back_to_turnoff(pm, fake, image):
    for name in ("hv1", "hv2"):
        pm("create", "-d", "hyperv", "--hyperv-virtual-switch", "External LAN", name, env=fake.env())
        forget_provisioning_error(pm, name)
    assert fake.state["vms"]["hv1"]["NetworkAdapters"][0]["SwitchName"] == "External LAN"
    before = len(fake.scripts())
    res = pm.ok("ls", "--format", "{{.Name}} {{.State}}", env=fake.env())
    assert sorted(res.stdout.split()) == sorted(["hv1", "Running", "hv2", "Running"])
    assert len(fake.scripts()) - before == 1, fake.scripts()[before:]

    fake.update(ignore_shutdown=True)
    res = pm.ok("stop", "hv1", env=fake.env())
    assert "Graceful shutdown failed" in res.stdout
    by_id = f"Hyper-V\\Get-VM -Id '{fake.state['vms']['hv1']['Id']}' | "
    assert [s.split("; ")[-1] for s in fake.scripts()[-2:]] == [by_id + "Hyper-V\\Stop-VM",
                                                                by_id + "Hyper-V\\Stop-VM -TurnOff"]
    assert pm.ok("status", "hv1", env=fake.env()).stdout.strip() == "Stopped"
    pm.ok("start", "hv1", env=fake.env())
    assert fake.state["vms"]["hv1"]["State"] == "Running"
    pm.ok("kill", "hv2", env=fake.env())
    assert fake.state["vms"]["hv2"]["State"] == "Off"
    pm.ok("rm", "-y", "hv1", "hv2", env=fake.env())
    assert fake.state["vms"] == {}


def test_a_foreign_vm_with_the_same_name_is_never_touched(pm, fake, image):
    """Hyper-V allows duplicate names (and ``-Name`` acts on all of them): every command targets the recorded VMId."""
    pm("create", "-d", "hyperv", "hv1", env=fake.env())
    forget_provisioning_error(pm, "hv1")
    ours = fake.state["vms"]["hv1"]
    foreign = {**ours, "Id": "0e6f1a34-5c1d-4f0b-9a63-0000000f0001", "Path": "D:\\Other\\hv1", "State": "Running",
               "HardDrives": [], "DvdDrives": []}
    fake.update(vms={"hv1": ours, "someone-elses": foreign})

    def state_of(vm_id: str) -> str:
        return next(v["State"] for v in fake.state["vms"].values() if v["Id"] == vm_id)

    pm.ok("stop", "hv1", env=fake.env())
    assert (state_of(ours["Id"]), state_of(foreign["Id"])) == ("Off", "Running")
    assert pm.ok("status", "hv1", env=fake.env()).stdout.strip() == "Stopped"
    assert pm.ok("ls", "--format", "{{.Name}} {{.State}}", env=fake.env()).stdout.split() == ["hv1", "Stopped"]
    fake.update(vms={**fake.state["vms"], "someone-elses": {**foreign, "State": "Off"}})
    pm.ok("start", "hv1", env=fake.env())
    assert (state_of(ours["Id"]), state_of(foreign["Id"])) == ("Running", "Off")
    fake.update(vms={**fake.state["vms"], "someone-elses": foreign})
    pm.ok("kill", "hv1", env=fake.env())
    assert (state_of(ours["Id"]), state_of(foreign["Id"])) == ("Off", "Running")
    pm.ok("rm", "-y", "hv1", env=fake.env())
    assert [v["Id"] for v in fake.state["vms"].values()] == [foreign["Id"]]
    assert fake.state["vms"]["someone-elses"]["State"] == "Running"


def test_rm_of_a_vanished_vm_leaves_a_same_named_one_alone(pm, fake, image):
    pm("create", "-d", "hyperv", "hv1", env=fake.env())
    foreign = {**fake.state["vms"]["hv1"], "Id": "0e6f1a34-5c1d-4f0b-9a63-0000000f0002", "State": "Running"}
    fake.update(vms={"someone-elses": foreign})  # ours was deleted by hand; another VM took its name
    assert pm("status", "hv1", env=fake.env()).stdout.strip() != "Running"
    res = pm.ok("rm", "-y", "hv1", env=fake.env())
    assert "does not exist" in res.stdout + res.stderr
    assert fake.state["vms"] == {"someone-elses": foreign}


def test_fake_is_strict_about_parameters_and_cmdlets(fake):
    import subprocess

    def ps(script: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(fake.bin / "powershell.exe"), "-NoProfile", "-NonInteractive", "-Command",
                               "$ErrorActionPreference = 'Stop'; " + script], capture_output=True, text=True,
                              env={**os.environ, **fake.env()}, timeout=60, check=False)

    res = ps("Hyper-V\\New-VM -Name 'x' -Generaton 2")
    assert res.returncode == 1 and "parameter name 'Generaton'" in res.stderr
    res = ps("Hyper-V\\Get-VMFoo")
    assert res.returncode == 1 and "is not recognized as the name of a cmdlet" in res.stderr
    res = ps("Hyper-V\\Start-VM -Name 'ghost'")
    assert 'unable to find a virtual machine with name "ghost"' in res.stderr
    # docker-machine's form: trailing words joined with spaces, CRLF output
    res = subprocess.run([str(fake.bin / "powershell.exe"), "-NoProfile", "-NonInteractive", "@(Get-Module",
                          "-ListAvailable", "Hyper-V).Name", "|", "Get-Unique"], capture_output=True,
                         env={**os.environ, **fake.env()}, timeout=60, check=False)
    assert res.stdout == b"Hyper-V\r\n"


def test_own_vhdx_is_used_at_its_size_and_other_images_are_refused(pm, fake, tmp_path):
    import subprocess

    own = tmp_path / "own.vhdx"
    subprocess.run(["qemu-img", "create", "-f", "vhdx", str(own), "32M"], check=True, capture_output=True, timeout=60)
    pm("create", "-d", "hyperv", "--hyperv-boot2docker-url", str(own), "hv1", env=fake.env())
    mdir = pm.store / "machines" / "hv1"
    assert fake.state["vms"]["hv1"]["HardDrives"] == [str(mdir / "disk.vhdx")]
    assert "vhd_sizes" not in fake.state and not any("Resize-VHD" in s for s in fake.scripts())
    assert (mdir / "disk.vhdx").read_bytes()[:8] == b"vhdxfile"

    res = pm("create", "-d", "hyperv", "--hyperv-boot2docker-url", str(tmp_path / "b2d.iso"), "hv2", env=fake.env())
    assert res.returncode != 0 and "must name a .vhdx disk" in one_line_error(res)
    res = pm(
        "create", "-d", "hyperv", "--hyperv-boot2docker-url", str(tmp_path / "missing.vhdx"), "hv2", env=fake.env()
    )
    assert res.returncode == 3 and "does not exist" in one_line_error(res)
    assert "hv2" not in fake.state["vms"] and not (pm.store / "machines" / "hv2").exists()
