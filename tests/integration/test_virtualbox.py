"""The virtualbox driver through the installed ``pymachine``, against the fake ``VBoxManage``.

VirtualBox cannot be installed here, so ``tests/fakes/vboxmanage.py`` stands in:
it keeps VirtualBox's state in JSON and logs every call, so these tests prove the
exact VBoxManage sequences docker-machine ran, the host-only network rules and
that failed pre-create checks leave nothing behind.  No real VM boots, so a
create stops at "waiting for SSH" unless the fake forwards SSH to a test host.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests import fake_base_image
from tests.fakes import vboxmanage

pytestmark = pytest.mark.integration


class FakeVBox:
    def __init__(self, root: Path) -> None:
        self.home = root / "vbox"
        self.bin = root / "bin"
        self.bin.mkdir()
        vboxmanage.install(self.bin)
        self.image = root / "boot2docker.iso"
        self.image.write_bytes(b"\0" * 32768 + b"\x01CD001" + b"\0" * 2041)
        self.env = {"FAKE_VBOX_HOME": str(self.home), "PYMACHINE_SSH_WAIT": "1",
                    "FAKE_VBOX_GUEST_IP": "127.0.0.1"}

    def calls(self) -> list[list[str]]:
        log = self.home / "calls.log"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def state(self) -> dict:
        path = self.home / "state.json"
        return json.loads(path.read_text()) if path.exists() else {"vms": {}, "hostonlyifs": {}, "dhcpservers": {}}

    def vms(self) -> list[str]:
        return sorted(v["name"] for v in self.state()["vms"].values())

    def reset_log(self) -> None:
        (self.home / "calls.log").unlink(missing_ok=True)


@pytest.fixture
def vbox(pm, tmp_path):
    fake = FakeVBox(tmp_path)
    pm.env["PATH"] = f"{fake.bin}{os.pathsep}{pm.env['PATH']}"
    pm.env.update(fake.env)
    pm.env["PYMACHINE_VBOX_BACKEND"] = "vboxmanage"  # never a real VirtualBox SDK on a dev host
    yield fake
    vboxmanage.kill_forwarders(fake.home)


def create_args(vbox: FakeVBox, name: str, *extra: str) -> list[str]:
    return ["create", "-d", "virtualbox", "--virtualbox-boot2docker-url", str(vbox.image),
            "--virtualbox-disk-size", "8", "--virtualbox-no-vtx-check", *extra, name]


def in_namespaces(pm, unshare: list[str], setup: str, args: list[str]) -> subprocess.CompletedProcess:
    """Run pymachine in new namespaces (needs root) after the shell ``setup`` ran there."""
    from tests.conftest import PYMACHINE

    return subprocess.run(["unshare", *unshare, "sh", "-c", f'{setup} && exec "$@"', "sh", PYMACHINE, *args],
                          capture_output=True, text=True, env=pm.env, timeout=120, check=False)


def test_create_runs_docker_machines_vboxmanage_sequence(pm, vbox):
    res = pm(*create_args(vbox, "vb1"))
    # No VM boots: the driver's part completes, then provisioning waits for SSH in vain.
    assert res.returncode == 1, res.stdout + res.stderr
    mdir = str(pm.store / "machines" / "vb1")
    cfg = json.loads((pm.store / "machines" / "vb1" / "config.json").read_text())["Driver"]
    port = cfg["SSHPort"]
    assert f"Unable to connect to 127.0.0.1:{port}" in res.stderr
    assert 1024 <= port < 65536 and cfg["IPAddress"] == "127.0.0.1" and cfg["SSHUser"] == "docker"
    assert cfg["HostOnlyCIDR"] == "192.168.56.1/24" and cfg["SSHKeyPath"] == f"{mdir}/id_rsa"
    disk = f"{mdir}/disk.vmdk"
    assert vbox.calls() == [
        ["--version"],
        ["list", "hostonlyifs"],
        ["convertfromraw", "stdin", disk, str(8 << 20), "--format", "VMDK"],
        ["createvm", "--basefolder", mdir, "--name", "vb1", "--register"],
        ["modifyvm", "vb1", "--firmware", "bios", "--bioslogofadein", "off", "--bioslogofadeout", "off",
         "--bioslogodisplaytime", "0", "--biosbootmenu", "disabled", "--ostype", "Linux26_64", "--cpus", "1",
         "--memory", "1024", "--acpi", "on", "--ioapic", "on", "--rtcuseutc", "on", "--natdnshostresolver1", "off",
         "--natdnsproxy1", "on", "--cpuhotplug", "off", "--pae", "on", "--hpet", "on", "--hwvirtex", "on",
         "--nestedpaging", "on", "--largepages", "on", "--vtxvpid", "on", "--accelerate3d", "off", "--boot1", "dvd"],
        ["modifyvm", "vb1", "--nic1", "nat", "--nictype1", "82540EM", "--cableconnected1", "on"],
        ["storagectl", "vb1", "--name", "SATA", "--add", "sata", "--hostiocache", "on"],
        ["storageattach", "vb1", "--storagectl", "SATA", "--port", "0", "--device", "0", "--type", "dvddrive",
         "--medium", f"{mdir}/boot2docker.iso"],
        ["storageattach", "vb1", "--storagectl", "SATA", "--port", "1", "--device", "0", "--type", "hdd",
         "--medium", disk],
        ["guestproperty", "set", "vb1", "/VirtualBox/GuestAdd/SharedFolders/MountPrefix", "/"],
        ["guestproperty", "set", "vb1", "/VirtualBox/GuestAdd/SharedFolders/MountDir", "/"],
        ["sharedfolder", "add", "vb1", "--name", "hosthome", "--hostpath", "/home", "--automount"],
        ["setextradata", "vb1", "VBoxInternal2/SharedFoldersEnableSymlinksCreate/hosthome", "1"],
        ["showvminfo", "vb1", "--machinereadable"],
        ["list", "hostonlyifs"],
        ["hostonlyif", "create"],
        ["list", "hostonlyifs"],
        ["hostonlyif", "ipconfig", "vboxnet0", "--ip", "192.168.56.1", "--netmask", "255.255.255.0"],
        ["list", "dhcpservers"],
        ["dhcpserver", "add", "--netname", "HostInterfaceNetworking-vboxnet0", "--ip", "192.168.56.2",
         "--netmask", "255.255.255.0", "--lowerip", "192.168.56.100", "--upperip", "192.168.56.254", "--enable"],
        ["modifyvm", "vb1", "--nic2", "hostonly", "--nictype2", "82540EM", "--nicpromisc2", "deny",
         "--hostonlyadapter2", "vboxnet0", "--cableconnected2", "on"],
        ["modifyvm", "vb1", "--natpf1", "delete", "ssh"],
        ["modifyvm", "vb1", "--natpf1", f"ssh,tcp,127.0.0.1,{port},,22"],
        ["startvm", "vb1", "--type", "headless"],
        ["guestproperty", "get", "vb1", "/VirtualBox/GuestInfo/Net/1/V4/IP"],
    ]
    # The tar-in-disk: boot2docker's magic file first, then the machine's public key.
    medium = next(m for m in vbox.state()["media"] if m["path"] == disk)
    head = bytes.fromhex(medium["head"])
    assert head.startswith(b"boot2docker, please format-me") and medium["size"] == 8 << 20
    assert oct((pm.store / "machines" / "vb1" / "id_rsa").stat().st_mode & 0o777) == "0o600"
    vm = next(iter(vbox.state()["vms"].values()))
    assert vm["state"] == "running" and vm["shares"] == {"hosthome": "/home"}


def test_stop_start_kill_rm_sequences(pm, vbox):
    created(pm(*create_args(vbox, "vb1", "--virtualbox-no-share")))
    ls = pm.ok("ls", "--format", "{{.Name}} {{.DriverName}} {{.State}}").stdout
    assert "vb1 virtualbox" in ls
    vbox.reset_log()
    pm.ok("stop", "vb1")
    assert vbox.calls() == [
        ["showvminfo", "vb1", "--machinereadable"],  # Host: already stopped?
        ["showvminfo", "vb1", "--machinereadable"],  # driver: resume if paused
        ["controlvm", "vb1", "acpipowerbutton"],
        ["showvminfo", "vb1", "--machinereadable"],  # poll until not running
    ]
    assert pm.ok("status", "vb1").stdout.strip() == "Stopped"
    saved = json.loads((pm.store / "machines" / "vb1" / "config.json").read_text())["Driver"]["SSHPort"]
    vbox.reset_log()
    pm.ok("start", "vb1")
    calls = vbox.calls()
    port = json.loads((pm.store / "machines" / "vb1" / "config.json").read_text())["Driver"]["SSHPort"]
    # The saved port when still free; on a busy host another process may have taken it meanwhile.
    assert port == saved or not port_free(saved)
    # The host-only interface and its DHCP server are reused: nothing is created again.
    assert calls == [
        ["showvminfo", "vb1", "--machinereadable"],
        ["showvminfo", "vb1", "--machinereadable"],
        ["list", "hostonlyifs"],
        ["list", "dhcpservers"],
        ["modifyvm", "vb1", "--nic2", "hostonly", "--nictype2", "82540EM", "--nicpromisc2", "deny",
         "--hostonlyadapter2", "vboxnet0", "--cableconnected2", "on"],
        ["modifyvm", "vb1", "--natpf1", "delete", "ssh"],
        ["modifyvm", "vb1", "--natpf1", f"ssh,tcp,127.0.0.1,{port},,22"],
        ["startvm", "vb1", "--type", "headless"],
        ["guestproperty", "get", "vb1", "/VirtualBox/GuestInfo/Net/1/V4/IP"],
    ]
    assert pm.ok("status", "vb1").stdout.strip() == "Running"
    vbox.reset_log()
    pm.ok("kill", "vb1")
    assert vbox.calls()[-1] == ["controlvm", "vb1", "poweroff"]
    pm.ok("start", "vb1")
    vbox.reset_log()
    pm.ok("rm", "-y", "vb1")
    assert vbox.calls() == [
        ["showvminfo", "vb1", "--machinereadable"],
        ["controlvm", "vb1", "poweroff"],
        ["unregistervm", "--delete", "vb1"],
    ]
    assert vbox.vms() == [] and not (pm.store / "machines" / "vb1").exists()
    # The shared host-only network stays for other machines, as in docker-machine.
    assert list(vbox.state()["hostonlyifs"]) == ["vboxnet0"]


def test_hostonly_interface_reused_by_second_machine_and_new_one_for_other_cidr(pm, vbox):
    created(pm(*create_args(vbox, "vb1", "--virtualbox-no-share")))
    vbox.reset_log()
    created(pm(*create_args(vbox, "vb2", "--virtualbox-no-share")))
    calls = vbox.calls()
    assert ["hostonlyif", "create"] not in calls
    assert not any(c[:2] in (["dhcpserver", "add"], ["dhcpserver", "modify"]) for c in calls)
    assert ["modifyvm", "vb2", "--nic2", "hostonly", "--nictype2", "82540EM", "--nicpromisc2", "deny",
            "--hostonlyadapter2", "vboxnet0", "--cableconnected2", "on"] in calls
    vbox.reset_log()
    created(pm(*create_args(vbox, "vb3", "--virtualbox-no-share", "--virtualbox-hostonly-cidr", "192.168.57.1/24",
                            "--virtualbox-hostonly-no-dhcp")))
    calls = vbox.calls()
    assert ["hostonlyif", "ipconfig", "vboxnet1", "--ip", "192.168.57.1", "--netmask", "255.255.255.0"] in calls
    assert ["dhcpserver", "add", "--netname", "HostInterfaceNetworking-vboxnet1", "--ip", "192.168.57.2",
            "--netmask", "255.255.255.0", "--lowerip", "192.168.57.100", "--upperip", "192.168.57.254",
            "--disable"] in calls
    assert sorted(vbox.state()["hostonlyifs"]) == ["vboxnet0", "vboxnet1"]
    assert vbox.vms() == ["vb1", "vb2", "vb3"]


def test_small_cidr_scopes_dhcp_to_subnet(pm, vbox):
    created(pm(*create_args(vbox, "vb1", "--virtualbox-no-share", "--virtualbox-hostonly-cidr", "192.168.58.129/28")))
    dhcp = vbox.state()["dhcpservers"]["HostInterfaceNetworking-vboxnet0"]
    assert (dhcp["ip"], dhcp["mask"], dhcp["lower"], dhcp["upper"]) == (
        "192.168.58.130", "255.255.255.240", "192.168.58.136", "192.168.58.142")


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def created(res):
    """A create whose driver part completed: no VM boots here, so provisioning fails reaching SSH (exit 1)."""
    assert res.returncode == 1 and "Unable to connect to" in res.stderr, res.stdout + res.stderr
    return res


def forget_provisioning_error(pm, name: str) -> None:
    """Drop the recorded SSH failure (no VM boots here), as if provisioning had succeeded."""
    path = pm.store / "machines" / name / "config.json"
    cfg = json.loads(path.read_text())
    cfg.get("Pymachine", {}).pop("LastError", None)
    path.write_text(json.dumps(cfg, indent=4))


def assert_nothing_left(pm, vbox, name: str) -> None:
    assert vbox.vms() == []
    assert not (pm.store / "machines" / name).exists()
    assert not any(c[0] in ("createvm", "hostonlyif", "convertfromraw") for c in vbox.calls())


@pytest.mark.parametrize("cidr, message", [
    ("192.168.56.0/24", "host-only cidr must be specified with a host address, not a network address"),
    ("10.9.8.1/24", "/etc/vbox/networks.conf"),
    ("192.168.99.1/24", "outside the ranges VirtualBox allows (192.168.56.0/21)"),
    ("192.168.56.1", "invalid host-only cidr"),
])
def test_bad_cidr_is_one_line_and_leaves_nothing(pm, vbox, cidr, message):
    res = pm(*create_args(vbox, "bad", "--virtualbox-hostonly-cidr", cidr))
    assert res.returncode in (1, 3), res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert_nothing_left(pm, vbox, "bad")


def test_networks_conf_and_allow_any_range_widen_the_ranges(pm, vbox, tmp_path):
    conf = tmp_path / "networks.conf"
    conf.write_text("# allowed\n* 10.0.0.0/8 192.168.0.0/16\n")
    created(pm(*create_args(vbox, "vb1", "--virtualbox-no-share", "--virtualbox-hostonly-cidr", "10.9.8.1/24"),
               env={"PYMACHINE_VBOX_NETWORKS_CONF": str(conf)}))
    assert vbox.state()["hostonlyifs"]["vboxnet0"]["ip"] == "10.9.8.1"
    created(pm(*create_args(vbox, "vb2", "--virtualbox-no-share", "--virtualbox-hostonly-cidr", "172.20.0.1/16",
                            "--virtualbox-hostonly-allow-any-range")))
    assert vbox.state()["hostonlyifs"]["vboxnet1"]["mask"] == "255.255.0.0"


def test_cidr_clashing_with_host_interface(pm, vbox):
    if os.geteuid() != 0:
        pytest.skip("needs root for a private network namespace")
    setup = "ip addr add 192.168.56.7/24 dev lo && ip link set lo up"
    proc = in_namespaces(pm, ["-n"], setup, create_args(vbox, "clash"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "host-only cidr conflicts with the network address of a host interface (lo: 192.168.56.0/24)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert_nothing_left(pm, vbox, "clash")


def test_vboxmanage_missing_is_exit_3(pm, vbox):
    os.unlink(vbox.bin / "VBoxManage")
    res = pm(*create_args(vbox, "nobox"), env={"PATH": f"{vbox.bin}{os.pathsep}/usr/bin:/bin"})
    assert res.returncode == 3
    assert res.stderr.strip().splitlines()[-1].endswith("VBoxManage not found: install VirtualBox "
                                                        "(https://www.virtualbox.org) and put VBoxManage on PATH")
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (pm.store / "machines" / "nobox").exists()


def test_vboxmanage_too_old_is_exit_3(pm, vbox):
    res = pm(*create_args(vbox, "old"), env={"FAKE_VBOX_VERSION": "4.3.40r110317"})
    assert res.returncode == 3
    assert 'We support Virtualbox starting with version 5. Your VirtualBox install is "4.3.40r110317"' in res.stderr
    assert vbox.calls() == [["--version"]]
    assert_nothing_left(pm, vbox, "old")


def test_no_vtx_is_exit_3_unless_skipped(pm, vbox, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae sse sse2\n\n")
    args = [a for a in create_args(vbox, "novtx") if a != "--virtualbox-no-vtx-check"]
    res = in_namespaces(pm, ["-m", "--propagation", "private"], f'mount --bind "{cpuinfo}" /proc/cpuinfo', args)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "This computer doesn't have VT-X/AMD-v enabled. Enabling it in the BIOS is mandatory" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert_nothing_left(pm, vbox, "novtx")


def test_failed_vboxmanage_step_rolls_back(pm, vbox):
    res = pm(*create_args(vbox, "half"), env={"FAKE_VBOX_FAIL": "storagectl"})
    assert res.returncode == 1
    assert "VBoxManage storagectl half --name SATA --add sata --hostiocache on failed: injected failure" in res.stderr
    assert vbox.vms() == []
    assert ["unregistervm", "--delete", "half"] in vbox.calls()
    assert not (pm.store / "machines" / "half").exists()


def test_not_ready_is_retried(pm, vbox):
    res = pm(*create_args(vbox, "slow", "--virtualbox-no-share"), env={"FAKE_VBOX_NOT_READY": "3"})
    calls = vbox.calls()
    assert calls[:4] == [["--version"]] * 4, calls[:5]
    assert vbox.vms() == ["slow"], res.stderr


def test_ls_without_vboxmanage_says_how_to_install(pm, vbox):
    created(pm(*create_args(vbox, "vb1", "--virtualbox-no-share")))
    forget_provisioning_error(pm, "vb1")
    rows = pm.ok("ls", "--format", "{{.Name}}|{{.State}}|{{.Error}}", env={"PATH": "/usr/bin:/bin"}).out_lines
    assert rows == [("vb1|Error|VBoxManage not found: install VirtualBox (https://www.virtualbox.org) "
                     "and put VBoxManage on PATH")]
    assert pm.ok("ls", "--format", "{{.Name}}|{{.State}}").out_lines == ["vb1|Running"]


# pymachine's base image (the default without --virtualbox-boot2docker-url) ---------------------------

def image_args(name: str, *extra: str) -> list[str]:
    return ["create", "-d", "virtualbox", "--virtualbox-no-vtx-check", *extra, name]


@pytest.mark.skipif(not fake_base_image.qemu_img_available(), reason="qemu-img (qemu-utils) not installed")
def test_default_image_is_cloned_resized_seeded_and_booted_from_disk(pm, vbox, tmp_path):
    from pymachine.machine.seed import read_seed_iso

    image = fake_base_image.make_fake_image(pm.store)
    shared = tmp_path / "shared"
    shared.mkdir()
    res = pm(*image_args("vbimg", "--virtualbox-disk-size", "100", "--virtualbox-share-folder", f"{shared}:work"))
    assert res.returncode == 1 and "Unable to connect to 127.0.0.1" in res.stderr, res.stdout + res.stderr
    assert "(image) converting disk.qcow2 to vdi..." in res.stderr
    vdi = image.exported("vdi")
    assert fake_base_image.qemu_img_info(vdi)["format"] == "vdi"
    mdir = pm.store / "machines" / "vbimg"
    disk, seed = f"{mdir}/disk.vdi", f"{mdir}/seed.iso"
    calls = vbox.calls()
    start = calls.index(["showvminfo", "vbimg", "--machinereadable"])
    assert calls[:start] == [
        ["--version"],
        ["list", "hostonlyifs"],
        ["clonemedium", "disk", str(vdi), disk, "--format", "VDI"],
        ["closemedium", "disk", str(vdi)],  # the shared cached image leaves VirtualBox's registry
        ["modifymedium", "disk", disk, "--resize", "100"],
        ["createvm", "--basefolder", str(mdir), "--name", "vbimg", "--register"],
        ["modifyvm", "vbimg", "--firmware", "bios", "--bioslogofadein", "off", "--bioslogofadeout", "off",
         "--bioslogodisplaytime", "0", "--biosbootmenu", "disabled", "--ostype", "Linux26_64", "--cpus", "1",
         "--memory", "1024", "--acpi", "on", "--ioapic", "on", "--rtcuseutc", "on", "--natdnshostresolver1", "off",
         "--natdnsproxy1", "on", "--cpuhotplug", "off", "--pae", "on", "--hpet", "on", "--hwvirtex", "on",
         "--nestedpaging", "on", "--largepages", "on", "--vtxvpid", "on", "--accelerate3d", "off", "--boot1", "disk"],
        ["modifyvm", "vbimg", "--nic1", "nat", "--nictype1", "82540EM", "--cableconnected1", "on"],
        ["storagectl", "vbimg", "--name", "SATA", "--add", "sata", "--hostiocache", "on"],
        ["storageattach", "vbimg", "--storagectl", "SATA", "--port", "0", "--device", "0", "--type", "dvddrive",
         "--medium", seed],
        ["storageattach", "vbimg", "--storagectl", "SATA", "--port", "1", "--device", "0", "--type", "hdd",
         "--medium", disk],
        ["guestproperty", "set", "vbimg", "/VirtualBox/GuestAdd/SharedFolders/MountPrefix", "/"],
        ["guestproperty", "set", "vbimg", "/VirtualBox/GuestAdd/SharedFolders/MountDir", "/"],
        ["sharedfolder", "add", "vbimg", "--name", "work", "--hostpath", str(shared), "--automount"],
        ["setextradata", "vbimg", "VBoxInternal2/SharedFoldersEnableSymlinksCreate/work", "1"],
    ]
    assert ["startvm", "vbimg", "--type", "headless"] in calls[start:]
    medium = next(m for m in vbox.state()["media"] if m["path"] == disk)
    assert (medium["source"], medium["source_format"], medium["size"]) == (str(vdi), "VDI", 100 << 20)
    files = read_seed_iso(seed)
    assert files["pymachine/fstab"] == "work /work vboxsf defaults,nofail,uid=@UID@,gid=@GID@ 0 0\n"
    assert files["pymachine/authorized_keys"] == (mdir / "id_rsa.pub").read_text()
    assert "USERNAME=docker\n" in files["pymachine/config"] and "HOSTNAME=vbimg\n" in files["pymachine/config"]
    cfg = json.loads((mdir / "config.json").read_text())["Driver"]
    assert cfg["SSHUser"] == "docker" and cfg["Boot2DockerURL"] == ""

    # A second machine reuses the exported VDI (no conversion) and is never smaller than the image.
    vbox.reset_log()
    res = pm(*image_args("vbimg2", "--virtualbox-disk-size", "8", "--virtualbox-no-share"))
    assert "converting" not in res.stderr, res.stderr
    disk2 = f"{pm.store}/machines/vbimg2/disk.vdi"
    assert ["clonemedium", "disk", str(vdi), disk2, "--format", "VDI"] in vbox.calls()
    assert ["modifymedium", "disk", disk2, "--resize", "64"] in vbox.calls()
    assert not any(c[0] == "sharedfolder" for c in vbox.calls())
    assert "pymachine/fstab" not in read_seed_iso(f"{pm.store}/machines/vbimg2/seed.iso")
    pm.ok("rm", "-y", "vbimg", "vbimg2")
    assert vbox.vms() == [] and vdi.is_file()  # the cached export stays for the next machine


@pytest.mark.skipif(not fake_base_image.qemu_img_available(), reason="qemu-img (qemu-utils) not installed")
def test_default_image_shares_the_home_folder_where_boot2docker_mounted_it(pm, vbox):
    from pymachine.machine.drivers.virtualbox import share_default
    from pymachine.machine.seed import read_seed_iso

    name, host_dir = share_default()
    if not os.path.isdir(host_dir):
        pytest.skip(f"{host_dir} does not exist here")
    fake_base_image.make_fake_image(pm.store)
    created(pm(*image_args("vbhome")))
    assert ["sharedfolder", "add", "vbhome", "--name", name, "--hostpath", host_dir, "--automount"] in vbox.calls()
    fstab = read_seed_iso(pm.store / "machines" / "vbhome" / "seed.iso")["pymachine/fstab"]
    assert fstab == f"{name} /{name} vboxsf defaults,nofail,uid=@UID@,gid=@GID@ 0 0\n"


def test_default_image_needs_virtualbox_6_1_for_dhcp_leases(pm, vbox):
    """The image has no Guest Additions: its IP comes from `dhcpserver findlease` (6.1+).
    A boot2docker ISO on the same VirtualBox 6.0 is still accepted."""
    fake_base_image.make_fake_image(pm.store)
    res = pm(*image_args("old61"), env={"FAKE_VBOX_VERSION": "6.0.24r139119"})
    assert res.returncode == 3, res.stdout + res.stderr
    assert res.stderr.strip() == (
        "pymachine's base image needs VirtualBox 6.1 or later (its IP is read from VirtualBox's DHCP leases); "
        'your VirtualBox install is "6.0.24r139119": upgrade, or pass --virtualbox-boot2docker-url')
    assert vbox.calls() == [["--version"]]
    assert_nothing_left(pm, vbox, "old61")


def test_default_image_unavailable_is_exit_3_naming_the_flag(pm, vbox):
    """No cached image and no way to build one here (no debootstrap on PATH): one line, nothing made."""
    res = pm(*image_args("noimg"), env={"PATH": fake_base_image.path_without_debootstrap(vbox.bin)})
    assert res.returncode == 3, res.stdout + res.stderr
    line = res.stderr.strip()
    assert len(line.splitlines()) == 1 and "--virtualbox-boot2docker-url" in line, res.stderr
    assert "pymachine's base image is not built yet" in line
    assert vbox.calls() == [["--version"]]
    assert_nothing_left(pm, vbox, "noimg")
    fake_base_image.assert_no_image_built(pm.store)


@pytest.mark.skipif(not fake_base_image.qemu_img_available(), reason="qemu-img (qemu-utils) not installed")
def test_cached_image_that_cannot_be_exported_is_exit_3(pm, vbox):
    """The image is cached but has no VDI copy and qemu-img is not on PATH: refused before anything exists."""
    image = fake_base_image.make_fake_image(pm.store)
    res = pm(*image_args("noexport"), env={"PATH": str(vbox.bin)})
    assert res.returncode == 3 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "needs qemu-img" in res.stderr and "--virtualbox-boot2docker-url" in res.stderr
    assert not image.exported("vdi").exists()
    assert_nothing_left(pm, vbox, "noexport")


@pytest.mark.skipif(not fake_base_image.qemu_img_available(), reason="qemu-img (qemu-utils) not installed")
@pytest.mark.parametrize("share, says", [("my share", "'my share'"), ("home", "over the guest's /home")])
def test_share_name_the_seed_cannot_hold_is_exit_3(pm, vbox, tmp_path, share, says):
    """A name with a space cannot be an fstab source; /home would hide the user's SSH key."""
    shared = tmp_path / "shared"
    shared.mkdir()
    fake_base_image.make_fake_image(pm.store)
    res = pm(*image_args("badshare", "--virtualbox-share-folder", f"{shared}:{share}"))
    assert res.returncode == 3 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "--virtualbox-share-folder" in res.stderr and says in res.stderr
    assert_nothing_left(pm, vbox, "badshare")


@pytest.mark.hosts
def test_create_end_to_end_on_test_host_through_nat_forward(pm, vbox, make_test_host):
    """The fake "boots" a namespaced Debian host: the key comes from the disk's userdata tar,
    SSH goes through the fake's 127.0.0.1 NAT forward, the engine answers on the guest IP."""
    from bundle_cache import real_engine_bundle

    bundle = real_engine_bundle()
    host = make_test_host("vbe2e")
    host.run("useradd -m -s /bin/bash docker && echo 'docker ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/docker",
             check=True)
    env = {"FAKE_VBOX_GUEST_PID": str(host.init_pid), "FAKE_VBOX_SSH_TARGET": f"{host.ip}:22",
           "FAKE_VBOX_GUEST_IP": host.ip, "PYMACHINE_SSH_WAIT": "30"}
    res = pm(*create_args(vbox, "vbe2e", "--virtualbox-no-share", "--engine-bundle", str(bundle)),
             env=env, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Docker is up and running!" in res.stdout
    port = json.loads((pm.store / "machines" / "vbe2e" / "config.json").read_text())["Driver"]["SSHPort"]
    assert pm.ok("ssh", "vbe2e", "--", "id", "-un", env=env).stdout.strip() == "docker"
    assert pm.ok("ssh", "vbe2e", "--", "cat", "/etc/hostname", env=env).stdout.strip() == "vbe2e"
    assert pm.ok("url", "vbe2e", env=env).stdout.strip() == f"tcp://{host.ip}:2376"
    ls = pm.ok("ls", "--format", "{{.Name}} {{.State}} {{.DockerVersion}}", env=env).stdout.split()
    assert ls[:2] == ["vbe2e", "Running"] and ls[2].startswith("v"), ls
    vm = next(iter(vbox.state()["vms"].values()))
    assert vm["natpf1"]["ssh"] == f"ssh,tcp,127.0.0.1,{port},,22" and vm["forwarder"]
    pm.ok("rm", "-y", "vbe2e", env=env)
    assert vbox.vms() == []


def test_vboxapi_backend_answers_the_hot_paths_without_spawning_vboxmanage(pm, vbox):
    """With VirtualBox's SDK binding importable (here: the fake one, sharing the fake
    VBoxManage's VirtualBox), `ls`, `status`, `ip`, `stop` and `start` are answered in
    process; create's one-off steps still go through VBoxManage."""
    api = {"PYMACHINE_VBOX_BACKEND": "auto", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "fakes")}
    created(pm(*create_args(vbox, "vb1", "--virtualbox-no-share"), env=api))
    assert ["createvm", "--basefolder", str(pm.store / "machines" / "vb1"), "--name", "vb1", "--register"] \
        in vbox.calls()
    api_log = vbox.home / "api-calls.log"
    assert api_log.exists(), "create used the API for state and start"
    vbox.reset_log()
    assert pm.ok("ls", "--format", "{{.Name}} {{.DriverName}}", env=api).stdout.split() == ["vb1", "virtualbox"]
    assert pm.ok("status", "vb1", env=api).stdout.strip() == "Running"
    pm.ok("stop", "vb1", env=api)
    assert pm.ok("status", "vb1", env=api).stdout.strip() == "Stopped"
    assert vbox.calls() == [], "no VBoxManage process for ls, status or stop"
    ops = [json.loads(line)[0] for line in api_log.read_text().splitlines()]
    assert any("powerButton" in op for op in ops), ops
    # Forced onto the binding where none can be imported: one line naming the variable.
    res = pm("status", "vb1", env={"PYMACHINE_VBOX_BACKEND": "vboxapi", "PYTHONPATH": ""})
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1
    assert "PYMACHINE_VBOX_BACKEND" in res.stderr and "vboxapi" in res.stderr


@pytest.mark.skipif(not fake_base_image.qemu_img_available(), reason="qemu-img (qemu-utils) not installed")
@pytest.mark.parametrize("failing", ["createvm", "storagectl"])
def test_default_image_leaves_nothing_in_virtualboxs_media_registry(pm, vbox, failing):
    """Cloning registers the cached VDI and the machine's copy in VirtualBox's global media
    registry: a create (failed before or after the VM exists) and an rm leave neither there."""
    fake_base_image.make_fake_image(pm.store)
    res = pm(*image_args("vbreg", "--virtualbox-no-share"), env={"FAKE_VBOX_FAIL": failing})
    assert res.returncode == 1 and f"injected failure of '{failing}'" in res.stderr.strip().splitlines()[-1]
    assert vbox.state().get("registered") == []
    assert vbox.vms() == [] and not (pm.store / "machines" / "vbreg").exists()
    created(pm(*image_args("vbreg2", "--virtualbox-no-share")))  # the VM exists (provisioning cannot reach it)
    mdir = pm.store / "machines" / "vbreg2"
    assert vbox.state()["registered"] == [f"{mdir}/disk.vdi"], "only the attached copy stays registered"
    pm.ok("rm", "-y", "vbreg2")
    assert vbox.state()["registered"] == []


# VirtualBox 6.1-7.2 on Linux, Windows and macOS (Intel, Apple Silicon) ---------------------------------
# The fake VBoxManage plays each version/host as /work/shared/reference/virtualbox7-vmware.md documents
# it; the driver is told the same host through PYMACHINE_VBOX_HOST (its host parameter's default).

MATRIX = [  # (VBoxManage --version, host OS, host CPU): combinations VirtualBox ships (reference a12)
    ("6.1.50r161033", "linux", "x86_64"),
    ("7.0.20r163906", "win32", "x86_64"),
    ("7.0.20r163906", "darwin", "x86_64"),
    ("7.1.8r168469", "linux", "x86_64"),
    ("7.1.8r168469", "darwin", "arm64"),
    ("7.2.4r170995", "darwin", "x86_64"),
    ("7.2.4r170995", "darwin", "arm64"),
    ("7.2.4r170995", "win32", "x86_64"),
]
NET = "pymachine-192.168.56.0-24"


def host_env(version: str, host_os: str, arch: str) -> dict[str, str]:
    return {"FAKE_VBOX_VERSION": version, "FAKE_VBOX_HOST_OS": host_os, "FAKE_VBOX_HOST_ARCH": arch,
            "PYMACHINE_VBOX_HOST": f"{host_os}/{arch}"}


def fake_vdi(path: Path, size: int = 8 << 20) -> Path:
    """A VDI header VirtualBox (and the fake) recognises: magic 0xbeda107f at 0x40, disk size at 0x170."""
    head = bytearray(0x200)
    head[0:0x40] = b"<<< Oracle VM VirtualBox Disk Image >>>\n".ljust(0x40, b"\0")
    head[0x40:0x44] = (0xBEDA107F).to_bytes(4, "little")
    head[0x170:0x178] = size.to_bytes(8, "little")
    path.write_bytes(bytes(head))
    return path


def vdi_args(image: Path, name: str, *extra: str) -> list[str]:
    return ["create", "-d", "virtualbox", "--virtualbox-boot2docker-url", str(image), "--virtualbox-disk-size", "8",
            "--virtualbox-no-vtx-check", "--virtualbox-no-share", *extra, name]


def network_calls(name: str, host_os: str, version: str, first: bool) -> list[list[str]]:
    """What start runs to attach NIC 2: a host-only network on macOS 7.x, an interface + DHCP elsewhere."""
    if host_os == "darwin" and not version.startswith("6."):
        return [["list", "hostonlynets"],
                *([["hostonlynet", "add", f"--name={NET}", "--netmask=255.255.255.0", "--lower-ip=192.168.56.1",
                    "--upper-ip=192.168.56.254", "--enable"]] if first else []),
                ["modifyvm", name, "--nic2", "hostonlynet", "--nictype2", "82540EM", "--nicpromisc2", "deny",
                 "--host-only-net2", NET, "--cableconnected2", "on"]]
    return [["list", "hostonlyifs"],
            *([["hostonlyif", "create"], ["list", "hostonlyifs"],
               ["hostonlyif", "ipconfig", "vboxnet0", "--ip", "192.168.56.1", "--netmask", "255.255.255.0"]]
              if first else []),
            ["list", "dhcpservers"],
            *([["dhcpserver", "add", "--netname", "HostInterfaceNetworking-vboxnet0", "--ip", "192.168.56.2",
                "--netmask", "255.255.255.0", "--lowerip", "192.168.56.100", "--upperip", "192.168.56.254",
                "--enable"]] if first else []),
            ["modifyvm", name, "--nic2", "hostonly", "--nictype2", "82540EM", "--nicpromisc2", "deny",
             "--hostonlyadapter2", "vboxnet0", "--cableconnected2", "on"]]


def machine_settings(arch: str, host_os: str) -> list[str]:
    dns = ["--natdnshostresolver1", "off", "--natdnsproxy1", "on"]
    if arch == "arm64":  # reference b step 2: EFI, ARMv8 chipset, ARM64 type, no x86-only option
        return ["--firmware", "efi", "--chipset", "armv8virtual", "--ostype", "Debian12_arm64", "--cpus", "1",
                "--memory", "1024", "--acpi", "on", "--rtcuseutc", "on", *dns, "--boot1", "disk"]
    return ["--firmware", "bios", "--bioslogofadein", "off", "--bioslogofadeout", "off",
            "--bioslogodisplaytime", "0", "--biosbootmenu", "disabled", "--ostype", "Linux26_64", "--cpus", "1",
            "--memory", "1024", "--acpi", "on", "--ioapic", "on", "--rtcuseutc", "on", *dns,
            "--cpuhotplug", "off", "--pae", "on", "--hpet", "on", "--hwvirtex", "on", "--nestedpaging", "on",
            "--largepages", "on", "--vtxvpid", "on", "--accelerate3d", "off", "--boot1", "disk",
            *(["--longmode", "on"] if host_os == "win32" else [])]


@pytest.mark.parametrize("version, host_os, arch", MATRIX, ids=["-".join(c) for c in MATRIX])
def test_lifecycle_over_the_version_host_matrix(pm, vbox, tmp_path, version, host_os, arch):
    env = host_env(version, host_os, arch)
    pm.env.update(env)
    image = fake_vdi(tmp_path / "arm64.vdi" if arch == "arm64" else tmp_path / "x86.vdi")
    res = pm(*vdi_args(image, "m1"))
    # No VM boots: the driver's part completes, then provisioning waits for SSH in vain.
    assert res.returncode == 1 and "Unable to connect to 127.0.0.1" in res.stderr, res.stdout + res.stderr
    mdir = pm.store / "machines" / "m1"
    cfg = json.loads((mdir / "config.json").read_text())["Driver"]
    port = cfg["SSHPort"]
    vmnet = host_os == "darwin" and not version.startswith("6.")
    platform = ["--platform-architecture", "arm" if arch == "arm64" else "x86"] if version >= "7.1" else []
    ctl = "VirtIO" if arch == "arm64" else "SATA"
    storagectl = (["storagectl", "m1", "--name", "VirtIO", "--add", "virtio-scsi", "--controller", "VirtIO",
                   "--bootable", "on"] if arch == "arm64" else
                  ["storagectl", "m1", "--name", "SATA", "--add", "sata", "--hostiocache", "on"])
    disk, seed = f"{mdir}/disk.vdi", f"{mdir}/seed.iso"
    def forward() -> list[list[str]]:
        """Start's last steps; the NAT port is the saved one unless another process took it meanwhile."""
        now = json.loads((mdir / "config.json").read_text())["Driver"]["SSHPort"]
        assert now == port or not port_free(port)
        return [["modifyvm", "m1", "--natpf1", "delete", "ssh"],
                ["modifyvm", "m1", "--natpf1", f"ssh,tcp,127.0.0.1,{now},,22"],
                ["startvm", "m1", "--type", "headless"],
                ["guestproperty", "get", "m1", "/VirtualBox/GuestInfo/Net/1/V4/IP"]]

    assert vbox.calls() == [
        ["--version"],
        ["list", "hostonlynets" if vmnet else "hostonlyifs"],
        ["clonemedium", "disk", f"{mdir}/image.vdi", disk, "--format", "VDI"],  # the flag's image, copied in
        ["closemedium", "disk", f"{mdir}/image.vdi"],
        ["modifymedium", "disk", disk, "--resize", "8"],
        ["createvm", "--basefolder", str(mdir), "--name", "m1", *platform, "--register"],
        ["modifyvm", "m1", *machine_settings(arch, host_os)],
        ["modifyvm", "m1", "--nic1", "nat", "--nictype1", "82540EM", "--cableconnected1", "on"],
        storagectl,
        ["storageattach", "m1", "--storagectl", ctl, "--port", "0", "--device", "0", "--type", "dvddrive",
         "--medium", seed],
        ["storageattach", "m1", "--storagectl", ctl, "--port", "1", "--device", "0", "--type", "hdd",
         "--medium", disk],
        ["guestproperty", "set", "m1", "/VirtualBox/GuestAdd/SharedFolders/MountPrefix", "/"],
        ["guestproperty", "set", "m1", "/VirtualBox/GuestAdd/SharedFolders/MountDir", "/"],
        ["showvminfo", "m1", "--machinereadable"],
        *network_calls("m1", host_os, version, first=True),
        *forward(),
    ]
    vm = next(iter(vbox.state()["vms"].values()))
    assert vm["arch"] == ("arm" if arch == "arm64" else "x86") and vm["state"] == "running"
    assert cfg["PlatformArchitecture"] == vm["arch"] and cfg["IPAddress"] == "127.0.0.1"
    if vmnet:
        assert cfg["HostOnlyNetwork"] == NET and vbox.state()["hostonlyifs"] == {}
        assert vbox.state()["dhcpservers"] == {}, "vmnet serves DHCP on a host-only network, not VirtualBox"

    vbox.reset_log()
    pm.ok("stop", "m1")
    assert vbox.calls() == [
        ["showvminfo", "m1", "--machinereadable"],
        ["showvminfo", "m1", "--machinereadable"],
        ["controlvm", "m1", "acpipowerbutton"],
        ["showvminfo", "m1", "--machinereadable"],
    ]
    vbox.reset_log()
    pm.ok("start", "m1")
    # A new process: macOS asks the version to pick the network kind; the network/DHCP is reused as is.
    assert vbox.calls() == [
        ["showvminfo", "m1", "--machinereadable"],
        ["showvminfo", "m1", "--machinereadable"],
        *([["--version"]] if host_os == "darwin" else []),
        *network_calls("m1", host_os, version, first=False),
        *forward(),
    ]
    vbox.reset_log()
    pm.ok("restart", "m1")
    calls = vbox.calls()
    assert calls[calls.index(["controlvm", "m1", "acpipowerbutton"]) + 1:] == [
        ["showvminfo", "m1", "--machinereadable"],
        ["showvminfo", "m1", "--machinereadable"],
        *([["--version"]] if host_os == "darwin" else []),
        *network_calls("m1", host_os, version, first=False),
        *forward(),
    ], calls
    vbox.reset_log()
    pm.ok("kill", "m1")
    assert vbox.calls()[-1] == ["controlvm", "m1", "poweroff"]
    assert pm.ok("status", "m1").stdout.strip() == "Stopped"
    pm.ok("start", "m1")
    vbox.reset_log()
    pm.ok("rm", "-y", "m1")
    assert vbox.calls() == [
        ["showvminfo", "m1", "--machinereadable"],
        ["controlvm", "m1", "poweroff"],
        ["unregistervm", "--delete", "m1"],
        *([["list", "vms"], ["hostonlynet", "remove", f"--name={NET}"]] if vmnet else []),
    ]
    assert vbox.vms() == [] and not mdir.exists()
    if vmnet:  # pymachine's own host-only network goes with its last machine
        assert vbox.state()["hostonlynets"] == {}
    else:  # the host-only interface stays for other machines, as in docker-machine
        assert list(vbox.state()["hostonlyifs"]) == ["vboxnet0"]


def fake_vbm(vbox: FakeVBox, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """One call of the fake VBoxManage itself (to set up what another tool or a user made before)."""
    return subprocess.run([str(vbox.bin / "VBoxManage"), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "FAKE_VBOX_HOME": str(vbox.home), **env}, check=False)


MAC_ARM = host_env("7.2.4r170995", "darwin", "arm64")


def test_macos_hostonly_network_reused_by_subnet_and_removed_with_its_last_machine(pm, vbox, tmp_path):
    pm.env.update(MAC_ARM)
    image = fake_vdi(tmp_path / "arm64.vdi")
    assert pm(*vdi_args(image, "m1")).returncode == 1
    vbox.reset_log()
    res = pm(*vdi_args(image, "m2"))
    assert res.returncode == 1 and "Unable to connect" in res.stderr, res.stderr
    assert not any(c[:2] == ["hostonlynet", "add"] for c in vbox.calls()), "same subnet: reused"
    assert ["modifyvm", "m2", "--nic2", "hostonlynet", "--nictype2", "82540EM", "--nicpromisc2", "deny",
            "--host-only-net2", NET, "--cableconnected2", "on"] in vbox.calls()
    # Another CIDR inside the allowed 192.168.56.0/21 gets its own network.
    res = pm(*vdi_args(image, "m3", "--virtualbox-hostonly-cidr", "192.168.57.1/24"))
    assert res.returncode == 1 and "Unable to connect" in res.stderr, res.stderr
    nets = vbox.state()["hostonlynets"]
    assert sorted(nets) == [NET, "pymachine-192.168.57.0-24"]
    assert (nets["pymachine-192.168.57.0-24"]["lower"], nets["pymachine-192.168.57.0-24"]["upper"]) == (
        "192.168.57.1", "192.168.57.254")
    vbox.reset_log()
    pm.ok("rm", "-y", "m1")
    assert [c for c in vbox.calls() if c[0] == "hostonlynet"] == [], "m2 still uses it"
    assert NET in vbox.state()["hostonlynets"]
    pm.ok("rm", "-y", "m2", "m3")
    assert vbox.state()["hostonlynets"] == {}


def test_macos_hostonly_network_made_by_someone_else_is_reused_and_kept(pm, vbox, tmp_path):
    """Vagrant's (or the user's) network of the same subnet is used as it is and never removed."""
    assert fake_vbm(vbox, MAC_ARM, "hostonlynet", "add", "--name=vagrantnet-vbox1", "--netmask=255.255.255.0",
                    "--lower-ip=192.168.56.1", "--upper-ip=192.168.56.254").returncode == 0
    vbox.reset_log()
    pm.env.update(MAC_ARM)
    res = pm(*vdi_args(fake_vdi(tmp_path / "arm64.vdi"), "m1"))
    assert res.returncode == 1 and "Unable to connect" in res.stderr, res.stderr
    assert not any(c[:2] == ["hostonlynet", "add"] for c in vbox.calls())
    assert ["modifyvm", "m1", "--nic2", "hostonlynet", "--nictype2", "82540EM", "--nicpromisc2", "deny",
            "--host-only-net2", "vagrantnet-vbox1", "--cableconnected2", "on"] in vbox.calls()
    pm.ok("rm", "-y", "m1")
    assert list(vbox.state()["hostonlynets"]) == ["vagrantnet-vbox1"]


@pytest.mark.parametrize("env", [MAC_ARM, host_env("7.2.4r170995", "linux", "x86_64")], ids=["macos", "linux"])
def test_hostonly_cidr_overlapping_an_existing_network_is_a_clash(pm, vbox, tmp_path, env):
    """A /21 host-only network exists: a /24 inside it is refused before anything is made, on both kinds."""
    if env["FAKE_VBOX_HOST_OS"] == "darwin":
        made = fake_vbm(vbox, env, "hostonlynet", "add", "--name=wide", "--netmask=255.255.248.0",
                        "--lower-ip=192.168.56.1", "--upper-ip=192.168.63.254")
    else:
        assert fake_vbm(vbox, env, "hostonlyif", "create").returncode == 0
        made = fake_vbm(vbox, env, "hostonlyif", "ipconfig", "vboxnet0", "--ip", "192.168.56.1",
                        "--netmask", "255.255.248.0")
    assert made.returncode == 0, made.stderr
    vbox.reset_log()
    pm.env.update(env)
    res = pm(*vdi_args(fake_vdi(tmp_path / "disk.vdi"), "clash"))
    assert res.returncode == 3, res.stdout + res.stderr
    assert res.stderr.strip() == ("host-only cidr 192.168.56.1/24 overlaps VirtualBox's host-only network "
                                  "192.168.56.0/21: use 192.168.56.0/21 itself or a separate range")
    assert_nothing_left(pm, vbox, "clash")
    assert not any(c[0] in ("hostonlynet", "dhcpserver") for c in vbox.calls())


def test_macos_hostonly_network_outside_the_allowed_ranges_is_refused(pm, vbox, tmp_path):
    pm.env.update(MAC_ARM)
    res = pm(*vdi_args(fake_vdi(tmp_path / "arm64.vdi"), "far", "--virtualbox-hostonly-cidr", "192.168.99.1/24"))
    assert res.returncode == 3 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "outside the ranges VirtualBox allows (192.168.56.0/21)" in res.stderr
    assert_nothing_left(pm, vbox, "far")
    res = pm(*vdi_args(fake_vdi(tmp_path / "arm64.vdi"), "far", "--virtualbox-hostonly-cidr", "192.168.99.1/24",
                       "--virtualbox-hostonly-allow-any-range"))
    assert res.returncode == 1 and "Unable to connect" in res.stderr, res.stderr
    assert list(vbox.state()["hostonlynets"]) == ["pymachine-192.168.99.0-24"]


def test_macos_cidr_clashing_with_host_interface(pm, vbox, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root for a private network namespace")
    pm.env.update(MAC_ARM)
    setup = "ip addr add 192.168.56.7/24 dev lo && ip link set lo up"
    proc = in_namespaces(pm, ["-n"], setup, vdi_args(fake_vdi(tmp_path / "arm64.vdi"), "clash"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stderr.strip() == ("host-only cidr conflicts with the network address of a host interface "
                                   "(lo: 192.168.56.0/24)")
    assert_nothing_left(pm, vbox, "clash")


@pytest.mark.parametrize("version", ["6.0.24r139119", "6.1.50r161033", "7.2.4r170995"])
def test_dhcp_server_already_right_is_kept_in_both_list_formats(pm, vbox, version):
    """A DHCP server with an in-pool address (.5) and pymachine's range: `list dhcpservers` is read in
    the pre-6.1 and the 6.1+ format alike, and no `dhcpserver modify` resets it."""
    env = host_env(version, "linux", "x86_64")
    for args in (["hostonlyif", "create"],
                 ["hostonlyif", "ipconfig", "vboxnet0", "--ip", "192.168.56.1", "--netmask", "255.255.255.0"],
                 ["dhcpserver", "add", "--netname", "HostInterfaceNetworking-vboxnet0", "--ip", "192.168.56.5",
                  "--netmask", "255.255.255.0", "--lowerip", "192.168.56.100", "--upperip", "192.168.56.254",
                  "--enable"]):
        assert fake_vbm(vbox, env, *args).returncode == 0
    listing = fake_vbm(vbox, env, "list", "dhcpservers").stdout
    assert ("Dhcpd IP:       192.168.56.5" in listing) == (version >= "6.1"), listing
    vbox.reset_log()
    pm.env.update(env)
    res = pm(*create_args(vbox, "d1", "--virtualbox-no-share"))  # the boot2docker ISO: 6.0 still takes it
    assert res.returncode == 1 and "Unable to connect" in res.stderr, res.stderr
    assert ["list", "dhcpservers"] in vbox.calls()
    assert not any(c[0] == "dhcpserver" for c in vbox.calls()), vbox.calls()
    assert vbox.state()["dhcpservers"]["HostInterfaceNetworking-vboxnet0"]["ip"] == "192.168.56.5"
    # A range that differs is corrected with one modify, the in-pool server address kept.
    assert fake_vbm(vbox, env, "dhcpserver", "modify", "--netname", "HostInterfaceNetworking-vboxnet0",
                    "--lowerip", "192.168.56.50").returncode == 0
    pm.ok("stop", "d1")
    vbox.reset_log()
    pm.ok("start", "d1")
    assert [c for c in vbox.calls() if c[0] == "dhcpserver"] == [
        ["dhcpserver", "modify", "--netname", "HostInterfaceNetworking-vboxnet0", "--ip", "192.168.56.5",
         "--netmask", "255.255.255.0", "--lowerip", "192.168.56.100", "--upperip", "192.168.56.254", "--enable"]]


def crash_holding_saved_state(vbox: FakeVBox, name: str) -> None:
    """What VirtualBox 7.x shows when the VM process died while it held a saved state (reference a8)."""
    path = vbox.home / "state.json"
    state = json.loads(path.read_text())
    vm = next(v for v in state["vms"].values() if v["name"] == name)
    vboxmanage.stop_forwarder(vm)
    vm["state"] = "aborted-saved"
    path.write_text(json.dumps(state))


@pytest.mark.parametrize("version, host_os, arch", [("7.0.20r163906", "linux", "x86_64"),
                                                    ("7.2.4r170995", "darwin", "arm64")])
def test_aborted_saved_vm_is_shown_saved_started_afresh_and_really_removed(pm, vbox, tmp_path, version, host_os,
                                                                           arch):
    pm.env.update(host_env(version, host_os, arch))
    image = fake_vdi(tmp_path / "disk.vdi")
    assert pm(*vdi_args(image, "ab")).returncode == 1
    crash_holding_saved_state(vbox, "ab")
    assert pm.ok("status", "ab").stdout.strip() == "Saved"
    vbox.reset_log()
    pm.ok("start", "ab")
    calls = vbox.calls()
    assert calls[:3] == [["showvminfo", "ab", "--machinereadable"], ["showvminfo", "ab", "--machinereadable"],
                         ["discardstate", "ab"]], calls
    assert ["startvm", "ab", "--type", "headless"] in calls
    assert pm.ok("status", "ab").stdout.strip() == "Running"
    # rm -f of a crashed VM: no "poweroff" of a VM that is not running, and VirtualBox forgets it.
    crash_holding_saved_state(vbox, "ab")
    vbox.reset_log()
    res = pm("rm", "-f", "-y", "ab")
    assert res.returncode == 0 and "Successfully removed ab" in res.stdout, res.stdout + res.stderr
    assert vbox.calls()[:3] == [["showvminfo", "ab", "--machinereadable"], ["discardstate", "ab"],
                                ["unregistervm", "--delete", "ab"]]
    assert vbox.vms() == [] and not (pm.store / "machines" / "ab").exists()


def test_arm_host_without_an_arm64_image_or_with_old_virtualbox_is_exit_3(pm, vbox, tmp_path):
    pm.env.update(MAC_ARM)
    fake_base_image.make_fake_image(pm.store, arch="amd64")  # an amd64 image is no use on an ARM VM
    res = pm(*image_args("noarm", "--virtualbox-no-share"),
             env={"PATH": fake_base_image.path_without_debootstrap(vbox.bin)})
    assert res.returncode == 3 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "pymachine image build --arch arm64" in res.stderr and "--virtualbox-boot2docker-url" in res.stderr
    res = pm(*create_args(vbox, "noarm"))  # a boot2docker ISO is x86-only
    assert res.returncode == 3 and "boot2docker ISOs are x86-only" in res.stderr.strip(), res.stderr
    res = pm(*vdi_args(fake_vdi(tmp_path / "arm64.vdi"), "noarm"),
             env=host_env("7.0.20r163906", "darwin", "arm64"))
    assert res.returncode == 3, res.stderr
    assert res.stderr.strip() == ('VirtualBox runs VMs on an arm64 host from 7.1 on; your VirtualBox install is '
                                  '"7.0.20r163906": upgrade to VirtualBox 7.1 or later (the macOSArm64 build on '
                                  'Apple Silicon)')
    assert_nothing_left(pm, vbox, "noarm")
    from pymachine.engine import images

    cache = images.store_cache_dir(pm.store)
    assert sorted(p.name for p in cache.iterdir()) == [images.recipe_hash("amd64")], "no arm64 build begun"
    shared = fake_base_image.user_image_dir(pm.store)
    assert not shared.exists() or not any(shared.iterdir()), "no arm64 build begun in the user's cache"


@pytest.mark.skipif(not fake_base_image.qemu_img_available(), reason="qemu-img (qemu-utils) not installed")
def test_arm_vm_boots_the_arm64_base_image(pm, vbox):
    """On Apple Silicon the default image is the arm64 one (issue 17's arch=), exported to VDI."""
    pm.env.update(MAC_ARM)
    image = fake_base_image.make_fake_image(pm.store, arch="arm64")
    res = pm(*image_args("armimg", "--virtualbox-no-share"),
             env={"PATH": fake_base_image.path_without_debootstrap(vbox.bin)})  # never a real build
    assert res.returncode == 1 and "Unable to connect" in res.stderr, res.stdout + res.stderr
    disk = f"{pm.store}/machines/armimg/disk.vdi"
    calls = vbox.calls()
    assert ["clonemedium", "disk", str(image.exported("vdi")), disk, "--format", "VDI"] in calls
    assert ["createvm", "--basefolder", f"{pm.store}/machines/armimg", "--name", "armimg",
            "--platform-architecture", "arm", "--register"] in calls
    pm.ok("rm", "-y", "armimg")
    assert vbox.vms() == [] and vbox.state()["hostonlynets"] == {}


# The fake itself: what it refuses, because the real tool does (reference sections in the fake) ------

def test_fake_refuses_what_virtualbox_refuses(vbox, tmp_path):
    def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
        return fake_vbm(vbox, env, *args)

    mac70 = host_env("7.0.20r163906", "darwin", "x86_64")
    gone = run(mac70, "hostonlyif", "create")
    assert gone.returncode == 1 and "VBoxNetAdpCtl add 2>&1' - exit status: 34304" in gone.stderr
    assert run(mac70, "list", "hostonlyifs").returncode == 2
    linux70 = host_env("7.0.20r163906", "linux", "x86_64")
    assert run(linux70, "hostonlynet", "add", "--name=x", "--netmask=255.255.255.0", "--lower-ip=192.168.56.1",
               "--upper-ip=192.168.56.9").returncode == 2, "host-only networks exist on macOS builds only"
    made = run(linux70, "createvm", "--name", "v70", "--platform-architecture", "x86", "--register")
    assert made.returncode == 2 and "Invalid parameter '--platform-architecture'" in made.stderr
    arm = host_env("7.1.8r168469", "darwin", "arm64")
    assert run(arm, "createvm", "--name", "a1", "--register").returncode == 0  # no platform: the host's (ARM)
    res = run(arm, "modifyvm", "a1", "--cpus", "2", "--pae", "on")
    assert res.returncode == 2 and "--pae" in res.stderr
    info = run(arm, "showvminfo", "a1", "--machinereadable").stdout
    assert 'platformArchitecture="ARM"' in info and "cpus=1" in info, "the failed call saved nothing"
    assert run(arm, "storagectl", "a1", "--name", "SATA", "--add", "sata").returncode == 1  # 7.1: VirtIO-SCSI only
    assert run(host_env("7.2.4r170995", "darwin", "arm64"), "storagectl", "a1", "--name", "SATA",
               "--add", "sata").returncode == 0
    assert run(arm, "modifyvm", "a1", "--nic-type1", "virtio", "--nic1", "nat").returncode == 0
    assert run(host_env("6.1.50r161033", "linux", "x86_64"), "modifyvm", "a1", "--nic-type1",
               "virtio").returncode == 2, "6.1 knows only the old spellings"
    assert run(arm, "frobnicate", "a1").returncode == 2
    assert run(arm, "modifyvm", "a1", "--no-such-option", "on").returncode == 2
    crash_holding_saved_state(vbox, "a1")
    stuck = run(arm, "modifyvm", "a1", "--cpus", "2")
    assert stuck.returncode == 1 and "The machine is not mutable (state is Aborted-Saved)" in stuck.stderr
    assert "is not currently running" in run(arm, "controlvm", "a1", "poweroff").stderr


def test_macos_guest_ip_read_in_the_guest_over_the_nat_ssh_forward(vbox, tmp_path, monkeypatch):
    """No Guest Additions and no VirtualBox DHCP lease on a macOS host-only network: the driver asks the
    guest itself (`ip -4 -o addr show` over SSH) for its address inside the host-only CIDR.  A real sshd
    on 127.0.0.1 stands in for the guest behind the NAT forward; the CIDR is loopback's, so its answer
    (this machine's 127.0.0.1/8) is the "guest" address and nothing outside this machine is dialled."""
    from pymachine.machine.drivers.hostplatform import HostPlatform
    from pymachine.machine.drivers.vboxmanage import VBoxManageCLI
    from pymachine.machine.drivers.virtualbox import VirtualBoxDriver

    from tests.fixtures_sshd import SSHD, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    for key, value in {**MAC_ARM, "FAKE_VBOX_HOME": str(vbox.home)}.items():
        monkeypatch.setenv(key, value)
    cli = VBoxManageCLI(str(vbox.bin / "VBoxManage"))
    cli.run(["createvm", "--name", "g1", "--register"])
    cli.run(["hostonlynet", "add", "--name=net1", "--netmask=255.0.0.0", "--lower-ip=127.0.0.2",
             "--upper-ip=127.255.255.254"])
    cli.run(["modifyvm", "g1", "--nic2", "hostonlynet", "--host-only-net2", "net1"])
    store = tmp_path / "store"
    driver = VirtualBoxDriver.new("g1", str(store))
    driver.backend, driver.host = cli, HostPlatform("darwin", "arm64")
    os.makedirs(driver.machine_dir)
    with SSHD(tmp_path / "sshd") as sshd:
        driver.settings.update(ssh_port=sshd.port, ssh_key_path=str(sshd.client_key), ssh_user="root",
                               host_only_cidr="127.0.0.2/8")
        assert driver.guest_ip() == "127.0.0.1"
        driver.settings.host_only_cidr = "192.168.56.1/24"
        assert driver.guest_ip() == "", "no address of the guest lies in that network"
    assert driver.guest_ip() == "", "the guest's sshd is not up (yet): no answer, wait_for_ip asks again"
    assert not any(c[:2] == ["dhcpserver", "findlease"] for c in vbox.calls())


def test_every_vmstate_word_has_a_state():
    """Each VMState word VBoxManage prints (the API's MachineState names, 7.x included) maps to a state,
    so `ls` never shows a blank one."""
    from pymachine.machine.drivers.base import State
    from pymachine.machine.drivers.vbox_api import MACHINE_STATES
    from pymachine.machine.drivers.virtualbox import STATE_MAP

    words = {word for _name, word in MACHINE_STATES}
    assert words - set(STATE_MAP) == set()
    assert STATE_MAP["aborted-saved"] == State.SAVED and STATE_MAP["gurumeditation"] == State.ERROR


def test_windows_host_has_no_networks_conf_range_check(pm, vbox, tmp_path):
    """networks.conf is a Linux/macOS file: on a Windows host any range is VirtualBox's to refuse."""
    pm.env.update(host_env("7.2.4r170995", "win32", "x86_64"))
    res = pm(*vdi_args(fake_vdi(tmp_path / "x86.vdi"), "w1", "--virtualbox-hostonly-cidr", "10.9.8.1/24"))
    assert res.returncode == 1 and "Unable to connect" in res.stderr, res.stderr
    assert ["hostonlyif", "ipconfig", "vboxnet0", "--ip", "10.9.8.1", "--netmask", "255.255.255.0"] in vbox.calls()
    assert ["modifyvm", "w1", *machine_settings("x86_64", "win32")] in vbox.calls()  # --longmode on, as docker-machine
