"""The vmwareworkstation / vmwarefusion drivers through ``pymachine``, against the fake ``vmrun``.

The disk is made by the real ``qemu-img`` (no vmware-vdiskmanager here), the
``.vmx`` is the real file the driver writes, and ``tests/fakes/vmrun.py`` reads
it, keeps power state and guest files, and logs every call.  No VM boots, so
a create stops at "waiting for SSH"; the driver's part is what is checked.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests import fake_base_image
from tests.fakes import vmrun

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img (qemu-utils) not installed")]
GUEST_IP = "127.0.0.9"  # loopback: nothing is dialled outside this machine
#: Fusion 13 on an Intel Mac / on Apple Silicon: the fake's product and the driver's host parameter.
FUSION_INTEL = {"FAKE_VMRUN_PRODUCT": "fusion13", "PYMACHINE_VMWARE_HOST": "darwin/x86_64"}
FUSION_ARM = {"FAKE_VMRUN_PRODUCT": "fusion13-arm", "PYMACHINE_VMWARE_HOST": "darwin/arm64"}


class FakeVmrun:
    def __init__(self, root: Path) -> None:
        self.home = root / "vmrun"
        self.bin = root / "bin"
        self.bin.mkdir()
        vmrun.install(self.bin)
        self.iso = root / "boot2docker.iso"
        self.iso.write_bytes(b"\0" * 34816)
        self.env = {"FAKE_VMRUN_HOME": str(self.home), "FAKE_VMRUN_GUEST_IP": GUEST_IP, "PYMACHINE_SSH_WAIT": "1"}

    def calls(self) -> list[list[str]]:
        log = self.home / "calls.log"
        return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []

    def reset_log(self) -> None:
        (self.home / "calls.log").unlink(missing_ok=True)

    def vms(self) -> dict:
        path = self.home / "state.json"
        return json.loads(path.read_text())["vms"] if path.exists() else {}


@pytest.fixture
def fake(pm, tmp_path):
    f = FakeVmrun(tmp_path)
    pm.env["PATH"] = f"{f.bin}{os.pathsep}{pm.env['PATH']}"
    pm.env.update(f.env)
    return f


def ws_args(fake: FakeVmrun, name: str, *extra: str) -> list[str]:
    return ["create", "-d", "vmwareworkstation", "--vmwareworkstation-boot2docker-url", str(fake.iso),
            "--vmwareworkstation-disk-size", "64", *extra, name]


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


def test_workstation_create_writes_vmx_disk_and_injects_key(pm, fake):
    res = pm(*ws_args(fake, "ws1", "--vmwareworkstation-cpu-count", "2", "--vmwareworkstation-memory-size", "2048"))
    assert res.returncode == 1 and f"Unable to connect to {GUEST_IP}:22" in res.stderr, res.stdout + res.stderr
    mdir = pm.store / "machines" / "ws1"
    vmx = str(mdir / "ws1.vmx")
    guest = ["-T", "ws", "-gu", "docker", "-gp", "tcuser"]
    assert fake.calls() == [
        ["-T", "ws", "start", vmx, "nogui"],
        ["-T", "ws", "getGuestIPAddress", vmx, "-wait"],
        [*guest, "directoryExistsInGuest", vmx, "/var/lib/boot2docker"],
        [*guest, "CopyFileFromHostToGuest", vmx, str(mdir / "userdata.tar"), "/home/docker/userdata.tar"],
        [*guest, "runScriptInGuest", vmx, "/bin/sh",
         ('sudo sh -c "tar xvf /home/docker/userdata.tar -C /home/docker > /var/log/userdata.log 2>&1 '
          '&& chown -R docker:staff /home/docker"')],
        [*guest, "runScriptInGuest", vmx, "/bin/sh",
         "sudo /bin/mv /home/docker/userdata.tar /var/lib/boot2docker/userdata.tar"],
        [*guest, "runScriptInGuest", vmx, "/bin/sh",
         "sudo mkdir -p /home && sudo mount -t vmhgfs .host:/hosthome /home"],
    ]
    cfg = {}
    for line in Path(vmx).read_text().splitlines():
        key, _, value = line.partition(" = ")
        cfg[key] = value.strip('"')
    assert (cfg["memsize"], cfg["numvcpus"], cfg["displayName"]) == ("2048", "2", "ws1")
    assert cfg["ethernet0.connectionType"] == "nat" and cfg["ethernet0.present"] == "TRUE"
    assert cfg["ide1:0.fileName"] == str(mdir / "boot2docker.iso") and cfg["ide1:0.deviceType"] == "cdrom-image"
    assert cfg["scsi0:0.fileName"] == "ws1.vmdk" and cfg["scsi0.virtualDev"] == "lsilogic"
    assert (cfg["sharedFolder0.hostPath"], cfg["sharedFolder0.guestName"]) == ("/home", "hosthome")
    assert cfg["bios.bootOrder"] == "cdrom,hdd"  # boot2docker boots from its ISO
    assert "ide1:1.present" not in cfg
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(mdir / "ws1.vmdk")],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "vmdk" and info["virtual-size"] == 64 << 20
    # The key the guest got is the machine's public key, in boot2docker's userdata layout.
    tar_bytes = (mdir / "userdata.tar").read_bytes()
    vm = fake.vms()[vmx]
    assert vm["files"] == {"/home/docker/userdata.tar": hashlib.sha256(tar_bytes).hexdigest()}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        assert tar.getnames() == [".ssh", ".ssh/authorized_keys", ".ssh/authorized_keys2"]
        assert tar.extractfile(".ssh/authorized_keys").read() == (mdir / "id_rsa.pub").read_bytes()
    driver = json.loads((mdir / "config.json").read_text())["Driver"]
    assert (driver["IPAddress"], driver["SSHUser"], driver["SSHPort"], driver["CPU"]) == (GUEST_IP, "docker", 22, 2)
    assert driver["SSHPassword"] == "" and "tcuser" not in (mdir / "config.json").read_text()


def test_ls_uses_one_vmrun_list_and_lifecycle_commands(pm, fake):
    created(pm(*ws_args(fake, "ws1", "--vmwareworkstation-no-share")))
    created(pm(*ws_args(fake, "ws2", "--vmwareworkstation-no-share")))
    for name in ("ws1", "ws2"):
        forget_provisioning_error(pm, name)
    vmx = str(pm.store / "machines" / "ws1" / "ws1.vmx")
    fake.reset_log()
    rows = pm.ok("ls", "--format", "{{.Name}} {{.State}} {{.URL}}").out_lines
    assert rows == [f"ws1 Running tcp://{GUEST_IP}:2376", f"ws2 Running tcp://{GUEST_IP}:2376"]
    assert fake.calls() == [["-T", "ws", "list"]], "ls asks vmrun once, never SSH"

    fake.reset_log()
    pm.ok("stop", "ws1")
    assert fake.calls() == [["-T", "ws", "list"], ["-T", "ws", "stop", vmx, "soft"]]
    assert fake.vms()[vmx]["last_stop"] == "soft"
    assert pm.ok("ls", "--format", "{{.Name}} {{.State}}").out_lines == ["ws1 Stopped", "ws2 Running"]

    fake.reset_log()
    pm.ok("start", "ws1")
    assert fake.calls() == [["-T", "ws", "list"], ["-T", "ws", "start", vmx, "nogui"],
                            ["-T", "ws", "getGuestIPAddress", vmx, "-wait"]]
    assert pm.ok("ip", "ws1").stdout.strip() == GUEST_IP

    fake.reset_log()  # a guest that ignores the soft stop is powered off
    res = pm.ok("stop", "ws1", env={"FAKE_VMRUN_FAIL": "stop soft"})
    assert fake.calls()[-2:] == [["-T", "ws", "stop", vmx, "soft"], ["-T", "ws", "stop", vmx, "hard"]]
    assert "Soft stop failed" in res.stdout + res.stderr
    assert fake.vms()[vmx]["last_stop"] == "hard"

    pm.ok("start", "ws1")
    fake.reset_log()
    pm.ok("kill", "ws1")
    assert fake.calls()[-1] == ["-T", "ws", "stop", vmx, "hard"]
    pm.ok("start", "ws1")
    fake.reset_log()
    pm.ok("rm", "-y", "ws1")
    assert fake.calls() == [["-T", "ws", "list"], ["-T", "ws", "stop", vmx, "hard"], ["-T", "ws", "deleteVM", vmx]]
    assert vmx not in fake.vms() and not (pm.store / "machines" / "ws1").exists()


def test_fusion_configdrive_and_password_kept_secret(pm, fake, tmp_path):
    drive = tmp_path / "config.iso"
    drive.write_bytes(b"\0" * 4096)
    res = pm("create", "-d", "vmwarefusion", "--vmwarefusion-boot2docker-url", str(fake.iso),
             "--vmwarefusion-configdrive-url", str(drive), "--vmwarefusion-disk-size", "16",
             "--vmwarefusion-ssh-password", "s3cret-pw", "--vmwarefusion-no-share", "fu1",
             env={"FAKE_VMRUN_GUEST_PASSWORD": "s3cret-pw", **FUSION_INTEL})
    assert res.returncode == 1 and f"Unable to connect to {GUEST_IP}:22" in res.stderr, res.stdout + res.stderr
    mdir = pm.store / "machines" / "fu1"
    calls = fake.calls()
    assert calls[0] == ["-T", "fusion", "start", str(mdir / "fu1.vmx"), "nogui"]
    assert calls[2][:6] == ["-T", "fusion", "-gu", "docker", "-gp", "s3cret-pw"]
    text = (mdir / "fu1.vmx").read_text()
    assert f'ide1:1.fileName = "{mdir / "configdrive.iso"}"' in text and "sharedFolder0" not in text
    assert "s3cret-pw" not in (mdir / "config.json").read_text()
    assert "s3cret-pw" not in res.stdout + res.stderr
    secret_files = [p for p in mdir.iterdir() if p.is_file() and b"s3cret-pw" in p.read_bytes()]
    assert len(secret_files) == 1 and secret_files[0].stat().st_mode & 0o077 == 0


def test_wrong_guest_password_rolls_back(pm, fake):
    res = pm(*ws_args(fake, "bad", "--vmwareworkstation-ssh-password", "nope"))
    assert res.returncode == 1
    assert res.stderr.strip().endswith("Invalid user name or password for the guest OS"), res.stderr
    assert fake.calls()[-1][-2:] == ["deleteVM", str(pm.store / "machines" / "bad" / "bad.vmx")]
    assert fake.vms() == {} and not (pm.store / "machines" / "bad").exists()


def test_vmdk_image_boots_with_seed_instead_of_guest_operations(pm, fake, tmp_path):
    image = tmp_path / "pymachine.vmdk"
    subprocess.run(["qemu-img", "create", "-f", "vmdk", str(image), "32M"], check=True, capture_output=True)
    created(pm("create", "-d", "vmwareworkstation", "--vmwareworkstation-boot2docker-url", str(image),
               "--vmwareworkstation-no-share", "--vmwareworkstation-disk-size", "48", "img1"))
    mdir = pm.store / "machines" / "img1"
    assert [c[2] for c in fake.calls()] == ["start", "getGuestIPAddress"]
    vmx = vmx_of(mdir / "img1.vmx")
    assert vmx["ide1:0.fileName"] == str(mdir / "seed.iso") and vmx["bios.bootOrder"] == "hdd,cdrom"
    from pymachine.machine.seed import read_seed_iso

    assert read_seed_iso(mdir / "seed.iso")["pymachine/authorized_keys"] == (mdir / "id_rsa.pub").read_text()
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(mdir / "img1.vmdk")],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "vmdk" and info["virtual-size"] == 48 << 20
    assert not (mdir / "image.vmdk").exists()


def vmx_of(path: Path) -> dict[str, str]:
    cfg = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" = ")
        cfg[key] = value.strip('"')
    return cfg


def test_default_image_disk_seed_and_hgfs_share(pm, fake, tmp_path):
    """No --*-boot2docker-url: pymachine's image, exported once to VMDK, converted at the disk size,
    booted from disk with the seed (key, hgfs fstab line) on the CD and no guest operations."""
    from pymachine.machine.drivers.vmware import share_default
    from pymachine.machine.seed import read_seed_iso

    image = fake_base_image.make_fake_image(pm.store)
    res = pm("create", "-d", "vmwareworkstation", "--vmwareworkstation-disk-size", "100", "ws-img")
    assert res.returncode == 1 and f"Unable to connect to {GUEST_IP}:22" in res.stderr, res.stdout + res.stderr
    assert "(image) converting disk.qcow2 to vmdk..." in res.stderr
    exported = image.exported("vmdk")
    assert fake_base_image.qemu_img_info(exported)["format-specific"]["data"]["create-type"] == "monolithicSparse"
    mdir = pm.store / "machines" / "ws-img"
    vmx_path = str(mdir / "ws-img.vmx")
    assert fake.calls() == [["-T", "ws", "start", vmx_path, "nogui"],
                            ["-T", "ws", "getGuestIPAddress", vmx_path, "-wait"]]
    vmx = vmx_of(mdir / "ws-img.vmx")
    assert vmx["bios.bootOrder"] == "hdd,cdrom"
    assert (vmx["scsi0:0.fileName"], vmx["scsi0.virtualDev"]) == ("ws-img.vmdk", "lsilogic")
    assert (vmx["ide1:0.fileName"], vmx["ide1:0.deviceType"]) == (str(mdir / "seed.iso"), "cdrom-image")
    assert fake.vms()[vmx_path]["boot_order"] == "hdd,cdrom" and fake.vms()[vmx_path]["disk_magic"] == "KDMV"
    disk = fake_base_image.qemu_img_info(mdir / "ws-img.vmdk")
    assert disk["format"] == "vmdk" and disk["virtual-size"] == 100 << 20
    # The machine's disk has the image's content (the fake image's marker sectors), then zeros.
    cmp = subprocess.run(["qemu-img", "compare", str(image.disk), str(mdir / "ws-img.vmdk")],
                         check=False, capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    files = read_seed_iso(mdir / "seed.iso")
    assert files["pymachine/authorized_keys"] == (mdir / "id_rsa.pub").read_text()
    assert "USERNAME=docker\n" in files["pymachine/config"]
    name, host_dir = share_default()
    if os.path.isdir(host_dir):
        assert (vmx["sharedFolder0.guestName"], vmx["sharedFolder0.hostPath"]) == (name, host_dir)
        assert files["pymachine/fstab"] == (f".host:/{name} /{name} fuse.vmhgfs-fuse "
                                            "defaults,nofail,allow_other,uid=@UID@,gid=@GID@ 0 0\n")
    else:
        assert "pymachine/fstab" not in files

    # --no-share: no shared folder in the .vmx nor in the seed; the export is reused; never below the image.
    fake.reset_log()
    res = pm("create", "-d", "vmwarefusion", "--vmwarefusion-no-share", "--vmwarefusion-disk-size", "16", "fu-img",
             env=FUSION_INTEL)
    assert res.returncode == 1 and "converting" not in res.stderr, res.stderr
    fdir = pm.store / "machines" / "fu-img"
    assert "sharedFolder0.present" not in vmx_of(fdir / "fu-img.vmx")
    assert "pymachine/fstab" not in read_seed_iso(fdir / "seed.iso")
    assert fake_base_image.qemu_img_info(fdir / "fu-img.vmdk")["virtual-size"] == 64 << 20
    for machine in ("ws-img", "fu-img"):
        forget_provisioning_error(pm, machine)
    fake.reset_log()
    pm.ok("stop", "ws-img")  # the image runs open-vm-tools: a soft stop
    assert fake.calls()[-1] == ["-T", "ws", "stop", vmx_path, "soft"] and fake.vms()[vmx_path]["last_stop"] == "soft"
    pm.ok("rm", "-y", "ws-img")
    pm.ok("rm", "-y", "fu-img", env=FUSION_INTEL)
    assert fake.vms() == {} and not (pm.store / "machines" / "ws-img").exists() and exported.is_file()


def test_guest_ip_from_the_vmnet_dhcp_lease_when_tools_do_not_answer(pm, fake, tmp_path):
    """A guest without VMware Tools: getGuestIPAddress fails, the lease of the VM's MAC names the IP."""
    leases = tmp_path / "dhcpd.leases"
    leases.write_text("lease 127.0.0.8 {\n  hardware ethernet 00:0c:29:00:00:01;\n}\n")  # another VM's
    env = {"FAKE_VMRUN_GUEST_IP": "", "FAKE_VMRUN_LEASES": str(leases), "FAKE_VMRUN_LEASE_IP": GUEST_IP,
           "PYMACHINE_VMWARE_DHCP_LEASES": str(leases)}
    image = tmp_path / "own.vmdk"
    subprocess.run(["qemu-img", "create", "-f", "vmdk", str(image), "16M"], check=True, capture_output=True)
    res = pm("create", "-d", "vmwareworkstation", "--vmwareworkstation-boot2docker-url", str(image),
             "--vmwareworkstation-no-share", "--vmwareworkstation-disk-size", "16", "lease1", env=env)
    assert f"Unable to connect to {GUEST_IP}:22" in res.stderr, res.stdout + res.stderr
    mdir = pm.store / "machines" / "lease1"
    mac = vmx_of(mdir / "lease1.vmx")["ethernet0.generatedAddress"]
    assert f"hardware ethernet {mac};" in leases.read_text()
    assert json.loads((mdir / "config.json").read_text())["Driver"]["IPAddress"] == GUEST_IP
    assert [c[2] for c in fake.calls()] == ["start", "getGuestIPAddress"]


def test_no_ip_from_tools_or_leases_fails_within_the_bound(pm, fake, tmp_path):
    import time

    leases = tmp_path / "dhcpd.leases"
    leases.write_text("")
    image = tmp_path / "own.vmdk"
    subprocess.run(["qemu-img", "create", "-f", "vmdk", str(image), "16M"], check=True, capture_output=True)
    started = time.monotonic()
    res = pm("create", "-d", "vmwareworkstation", "--vmwareworkstation-boot2docker-url", str(image),
             "--vmwareworkstation-no-share", "--vmwareworkstation-disk-size", "16", "noip",
             env={"FAKE_VMRUN_GUEST_IP": "", "PYMACHINE_VMWARE_DHCP_LEASES": str(leases)})
    assert res.returncode == 1 and time.monotonic() - started < 60
    assert "reported no IP address within 20s" in res.stderr, res.stderr
    assert fake.vms() == {} and not (pm.store / "machines" / "noip").exists()


def test_default_image_unavailable_is_exit_3_naming_the_flag(pm, fake):
    res = pm("create", "-d", "vmwarefusion", "noimg",
             env={"PATH": fake_base_image.path_without_debootstrap(fake.bin)})
    assert res.returncode == 3, res.stdout + res.stderr
    line = res.stderr.strip()
    assert len(line.splitlines()) == 1 and "pass --vmwarefusion-boot2docker-url" in line, res.stderr
    assert fake.calls() == [] and not (pm.store / "machines" / "noimg").exists()
    fake_base_image.assert_no_image_built(pm.store)


@pytest.mark.parametrize("extra, message", [
    (["--vmwareworkstation-boot2docker-url", "/nonexistent/b2d.iso"], "'/nonexistent/b2d.iso' does not exist"),
    (["--vmwareworkstation-boot2docker-url", __file__], "must name a .iso or .vmdk image"),
])
def test_bad_image_is_exit_3_and_leaves_nothing(pm, fake, extra, message):
    res = pm("create", "-d", "vmwareworkstation", *extra, "bad")
    assert res.returncode == 3 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert fake.calls() == [] and not (pm.store / "machines" / "bad").exists()


def test_vmrun_missing_is_exit_3(pm, fake):
    os.unlink(fake.bin / "vmrun")
    res = pm(*ws_args(fake, "novm"), env={"PATH": f"{fake.bin}{os.pathsep}/usr/bin:/bin"})
    assert res.returncode == 3
    assert (
        res.stderr.strip()
        == "Error with pre-create check: vmrun not found: install VMware Workstation and put vmrun on PATH"
        or res.stderr.strip().endswith("vmrun not found: install VMware Workstation and put vmrun on PATH")
    ), res.stderr
    assert not (pm.store / "machines" / "novm").exists()


# Fusion 13 on Apple Silicon, Workstation 17 EFI, guest IP checks, vmrun list matching ---------------

def test_fusion_on_apple_silicon_writes_an_arm_vmx_the_product_accepts(pm, fake):
    """The arm64 base image on NVMe, the seed on a SATA CD, EFI, an arm guest OS, e1000e, hardware 20:
    what Fusion 13 on Apple Silicon takes (reference c2); the fake's fusion13-arm check starts it."""
    image = fake_base_image.make_fake_image(pm.store, arch="arm64")
    res = pm("create", "-d", "vmwarefusion", "--vmwarefusion-no-share", "--vmwarefusion-disk-size", "64", "fa",
             env={**FUSION_ARM, "PATH": fake_base_image.path_without_debootstrap(fake.bin)})  # never a real build
    assert res.returncode == 1 and f"Unable to connect to {GUEST_IP}:22" in res.stderr, res.stdout + res.stderr
    mdir = pm.store / "machines" / "fa"
    vmx = vmx_of(mdir / "fa.vmx")
    assert {k: vmx[k] for k in ("guestOS", "firmware", "virtualHW.version", "ethernet0.virtualDev",
                                "nvme0.present", "nvme0:0.fileName", "sata0:0.fileName", "sata0:0.deviceType",
                                "usb_xhci.present", "bios.bootOrder")} == {
        "guestOS": "arm-debian12-64", "firmware": "efi", "virtualHW.version": "20", "ethernet0.virtualDev": "e1000e",
        "nvme0.present": "TRUE", "nvme0:0.fileName": "fa.vmdk", "sata0:0.fileName": str(mdir / "seed.iso"),
        "sata0:0.deviceType": "cdrom-image", "usb_xhci.present": "TRUE", "bios.bootOrder": "hdd,cdrom"}
    assert not any(k.startswith(("ide", "scsi")) for k in vmx), "no IDE, no LSI Logic on Apple Silicon"
    state = fake.vms()[str(mdir / "fa.vmx")]
    assert state["state"] == "on" and state["firmware"] == "efi" and state["disk_magic"] == "KDMV"
    cmp = subprocess.run(["qemu-img", "compare", str(image.disk), str(mdir / "fa.vmdk")],
                         check=False, capture_output=True, text=True)
    assert cmp.returncode == 0, "the arm64 image's content is the machine's disk"
    cfg = json.loads((mdir / "config.json").read_text())["Driver"]
    assert (cfg["Arch"], cfg["Firmware"]) == ("arm", "efi")
    pm.ok("rm", "-y", "fa", env=FUSION_ARM)
    assert fake.vms() == {}


@pytest.mark.parametrize("extra, message, code", [
    (["--vmwarefusion-firmware", "bios"], "--vmwarefusion-firmware bios: arm VMs on Apple Silicon boot EFI only", None),
    (["--vmwarefusion-boot2docker-url", "ISO"], "boot2docker ISOs are x86-only", 3),
])
def test_fusion_on_apple_silicon_refusals_are_one_line(pm, fake, extra, message, code):
    extra = [str(fake.iso) if a == "ISO" else a for a in extra]
    res = pm("create", "-d", "vmwarefusion", *extra, "--vmwarefusion-no-share", "nope", env=FUSION_ARM)
    assert res.returncode != 0 and (code is None or res.returncode == code), res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (pm.store / "machines" / "nope").exists() and fake.calls() == []


def test_fake_fusion_arm_refuses_an_x86_vmx(pm, fake):
    """The fake is strict: docker-machine's x86 .vmx (IDE CD, LSI Logic, no EFI) is not started on
    Apple Silicon, and the failed create leaves nothing."""
    res = pm("create", "-d", "vmwarefusion", "--vmwarefusion-boot2docker-url", str(fake.iso),
             "--vmwarefusion-no-share", "--vmwarefusion-disk-size", "16", "x86",
             env={**FUSION_ARM, "PYMACHINE_VMWARE_HOST": "darwin/x86_64"})
    assert res.returncode == 1, res.stderr
    assert "is not an arm guest; Apple silicon runs arm VMs only" in res.stderr
    assert fake.vms() == {} and not (pm.store / "machines" / "x86").exists()


def test_workstation_efi_firmware_option(pm, fake):
    res = pm(*ws_args(fake, "efi1", "--vmwareworkstation-firmware", "efi", "--vmwareworkstation-no-share"))
    assert res.returncode == 1 and f"Unable to connect to {GUEST_IP}:22" in res.stderr, res.stdout + res.stderr
    mdir = pm.store / "machines" / "efi1"
    vmx = vmx_of(mdir / "efi1.vmx")
    assert (vmx["firmware"], vmx["guestOS"], vmx["scsi0.virtualDev"]) == ("efi", "other3xlinux-64", "lsilogic")
    assert fake.vms()[str(mdir / "efi1.vmx")]["firmware"] == "efi"
    res = pm(*ws_args(fake, "bios1", "--vmwareworkstation-no-share"))
    assert res.returncode == 1
    assert "firmware" not in vmx_of(pm.store / "machines" / "bios1" / "bios1.vmx"), "BIOS stays the default"
    res = pm(*ws_args(fake, "bad", "--vmwareworkstation-firmware", "uefi"))
    assert res.returncode != 0 and res.stderr.strip() == \
        "--vmwareworkstation-firmware must be bios or efi, got 'uefi'", res.stderr
    assert not (pm.store / "machines" / "bad").exists()


@pytest.mark.parametrize("answer", ["172.17.0.1", "127.0.0.1", "10.9.9.9"], ids=["docker0", "gateway", "off-subnet"])
def test_implausible_guest_ip_answer_is_ignored_for_the_lease(pm, fake, tmp_path, answer):
    """open-vm-tools may name docker0 (172.17.0.1) or a gateway; an address outside vmnet8's subnet is
    not the NAT NIC's either: the vmnet DHCP lease of the VM's MAC is used instead."""
    leases, conf = tmp_path / "dhcpd.leases", tmp_path / "dhcpd.conf"
    leases.write_text("")
    conf.write_text("allow unknown-clients;\nsubnet 127.0.0.0 netmask 255.0.0.0 {\n  range 127.0.0.2 127.0.0.254;\n}\n")
    env = {"FAKE_VMRUN_GUEST_IP": answer, "FAKE_VMRUN_LEASES": str(leases), "FAKE_VMRUN_LEASE_IP": GUEST_IP,
           "PYMACHINE_VMWARE_DHCP_LEASES": str(leases), "PYMACHINE_VMWARE_DHCP_CONF": str(conf)}
    res = pm(*ws_args(fake, "ip1", "--vmwareworkstation-no-share"), env=env)
    assert res.returncode == 1 and f"Unable to connect to {GUEST_IP}:22" in res.stderr, res.stdout + res.stderr
    assert json.loads((pm.store / "machines" / "ip1" / "config.json").read_text())["Driver"]["IPAddress"] == GUEST_IP


def test_vmrun_list_matched_after_realpath_and_case_folding(pm, fake, tmp_path):
    """The store reached through a symlink (macOS's /tmp is /private/tmp) and vmrun printing the real
    path; a path printed in other case matches where the host's file system folds case (macOS), not on Linux."""
    link = tmp_path / "linked-store"
    pm.store.mkdir(exist_ok=True)
    link.symlink_to(pm.store)
    env = {"MACHINE_STORAGE_PATH": str(link)}
    res = pm(*ws_args(fake, "ws1", "--vmwareworkstation-no-share"), env=env)
    assert res.returncode == 1 and f"Unable to connect to {GUEST_IP}:22" in res.stderr, res.stderr
    forget_provisioning_error(pm, "ws1")
    assert pm.ok("status", "ws1", env=env).stdout.strip() == "Running"
    real = {**env, "FAKE_VMRUN_LIST_REALPATH": "1"}
    assert fake.calls()[-1] == ["-T", "ws", "list"]
    assert pm.ok("status", "ws1", env=real).stdout.strip() == "Running"
    assert pm.ok("ls", "--format", "{{.Name}} {{.State}}", env=real).stdout.split() == ["ws1", "Running"]
    upper = {**env, "FAKE_VMRUN_LIST_UPPER": "1"}
    assert pm.ok("status", "ws1", env=upper).stdout.strip() == "Stopped", "Linux file systems keep case"
    res = pm("create", "-d", "vmwarefusion", "--vmwarefusion-boot2docker-url", str(fake.iso),
             "--vmwarefusion-no-share", "--vmwarefusion-disk-size", "16", "fu1", env={**env, **FUSION_INTEL})
    assert res.returncode == 1 and f"Unable to connect to {GUEST_IP}:22" in res.stderr, res.stderr
    forget_provisioning_error(pm, "fu1")
    both = {**env, **FUSION_INTEL, "FAKE_VMRUN_LIST_UPPER": "1", "FAKE_VMRUN_LIST_REALPATH": "1"}
    assert pm.ok("status", "fu1", env=both).stdout.strip() == "Running", "APFS folds case"
    pm.ok("rm", "-y", "-f", "fu1", env=both)  # matched as running: stopped hard, then deleted for real
    assert [Path(p).name for p in fake.vms()] == ["ws1.vmx"]


def test_vmx_key_normalises_what_vmrun_list_prints_per_host():
    """Windows: back slashes, drive letter and case do not matter; Linux keeps case; macOS folds it."""
    from pymachine.machine.drivers.hostplatform import HostPlatform
    from pymachine.machine.drivers.vmware import VMwareDriver, vmx_key

    win, linux, mac = HostPlatform("win32", "x86_64"), HostPlatform("linux", "x86_64"), HostPlatform("darwin", "arm64")
    listed = "Total running VMs: 1\nc:/Users/Me/.docker/machine/machines/W1/W1.vmx\n"
    assert vmx_key(r"C:\Users\me\.docker\machine\machines\w1\w1.vmx", win) in VMwareDriver.running_vmx(listed, win)
    assert vmx_key("/srv/m/A.vmx", linux) != vmx_key("/srv/m/a.vmx", linux)
    assert vmx_key("/srv/m/A.vmx", mac) == vmx_key("/srv/m/a.vmx", mac)
