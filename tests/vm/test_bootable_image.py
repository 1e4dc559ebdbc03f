"""pymachine's base image boots on its own: the disk VirtualBox, VMware and vSphere get.

Those hypervisors cannot run here, so their hardware is imitated under QEMU
and each export is booted through the PC firmware, no ``-kernel``: SeaBIOS
(SYSLINUX's MBR) and OVMF (Debian's ``ovmf``: UEFI through the ESP's signed
shim and GRUB; on VirtualBox-like hardware with Secure Boot enforcing and
Microsoft's keys enrolled, as on a stock UEFI PC):

- the VDI (what the virtualbox driver clones) from an AHCI SATA disk with an
  e1000 NIC and the NoCloud seed on a SATA CD-ROM, the way that driver wires
  its VM;
- the VMDK (what the vmware drivers convert) from a VMware PVSCSI disk with a
  vmxnet3 NIC and the seed on an IDE CD-ROM, VMware's paravirtual hardware,
  and through UEFI from an NVMe disk (VMware's EFI default; Debian's OVMF
  has no PVSCSI driver).

The raw export (the flat extent the vmwarevsphere driver uploads) and all
three exports are proven to hold the very same disk as the qcow2 with
``qemu-img compare``.

The guest's network is restricted: it reaches nothing but its SSH forward
on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from pymachine.engine import images
from pymachine.machine import certs, seed
from pymachine.machine.drivers.qemu import free_port
from pymachine.machine.qmp import qmp_command
from pymachine.machine.ssh import SSHClient
from pymachine.machine.sshcommands import SSHTarget

from tests.vm_image import cached_image, missing_prerequisites

QEMU = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
BOOT_TIMEOUT = 480.0  # TCG boot to sshd: 60-120 s idle, over 200 s on a loaded 2-core host
POWEROFF_TIMEOUT = 120.0
GUEST_DISK = 4 << 30


@pytest.fixture(scope="module")
def image() -> images.ImageInfo:
    reason = missing_prerequisites()
    if reason:
        pytest.skip(reason)
    return cached_image()


def _read_sector0(disk: Path, fmt: str, tmp_path: Path) -> bytes:
    out = tmp_path / f"mbr-{fmt}.bin"
    subprocess.run(["qemu-img", "dd", "-f", fmt, "-O", "raw", "bs=512", "count=1", f"if={disk}", f"of={out}"],
                   check=True, capture_output=True, timeout=60)
    return out.read_bytes()


@pytest.mark.vm
@pytest.mark.timeout(600)
def test_exported_vmdk_and_vdi_hold_the_same_bootable_disk(image: images.ImageInfo, tmp_path: Path) -> None:
    vmdk = images.export_image(image, "vmdk", print)
    vdi = images.export_image(image, "vdi", print)
    raw = images.export_image(image, "raw", print)
    assert (vmdk, vdi, raw) == (image.exported("vmdk"), image.exported("vdi"), image.exported("raw"))
    for path, fmt in ((vmdk, "vmdk"), (vdi, "vdi"), (raw, "raw")):
        info = subprocess.run(["qemu-img", "info", str(path)], capture_output=True, text=True, timeout=60, check=True)
        assert f"file format: {fmt}" in info.stdout
        # Same guest-visible bytes as the qcow2 the qemu driver boots, sector for sector.
        same = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", fmt, str(image.disk), str(path)],
                              capture_output=True, text=True, timeout=600)
        assert same.returncode == 0, same.stdout + same.stderr
    assert b'ddb.adapterType = "lsilogic"' in vmdk.read_bytes()[:64 << 10]
    # A second export is the cached file, not a new conversion.
    mtime = vmdk.stat().st_mtime_ns
    assert images.export_image(image, "vmdk", print) == vmdk and vmdk.stat().st_mtime_ns == mtime

    mbr = _read_sector0(vdi, "vdi", tmp_path)
    assert mbr[510:512] == b"\x55\xaa"
    assert mbr[:440] == Path(images.SYSLINUX_MBR).read_bytes()[:440], "SYSLINUX's MBR boot code"
    entries = [mbr[446 + 16 * i: 462 + 16 * i] for i in range(4)]
    assert entries[0][0] == 0x80 and entries[0][4] == 0xEF, "partition 1: the active FAT ESP (boot partition)"
    assert entries[1][0] == 0x00 and entries[1][4] == 0x83, "partition 2: the Linux root"
    boot_start = int.from_bytes(entries[0][8:12], "little")
    root_start = int.from_bytes(entries[1][8:12], "little")
    root_sectors = int.from_bytes(entries[1][12:16], "little")
    assert boot_start * 512 == images.PART_ALIGN
    assert (root_start + root_sectors) * 512 == image.virtual_size, "the root is last, ending at the disk's end"


#: (disk controller + disk, CD-ROM, NIC) devices per hypervisor being imitated.
HARDWARE = {
    "virtualbox": (
        ["-device", "ahci,id=sata", "-device", "ide-hd,drive=disk0,bus=sata.0,bootindex=0",
         "-device", "ide-cd,drive=cd0,bus=sata.1"],
        "e1000", "vboxsf", "Users", "/Users",
    ),
    "vmware": (
        ["-device", "pvscsi,id=scsi0", "-device", "scsi-hd,drive=disk0,bus=scsi0.0,bootindex=0",
         "-device", "ide-cd,drive=cd0,bus=ide.1"],
        "vmxnet3", "fuse.vmhgfs-fuse", ".host:/hosthome", "/hosthome",
    ),
    # VMware's EFI VMs (Fusion on Apple Silicon, Workstation 17's newer guests) put the disk on
    # NVMe and the CD-ROM on SATA; Debian's OVMF has no PVSCSI driver, so this is the VMware EFI
    # hardware QEMU can imitate.
    "vmware-nvme": (
        ["-device", "nvme,serial=pymachine,drive=disk0,bootindex=0",
         "-device", "ahci,id=sata", "-device", "ide-cd,drive=cd0,bus=sata.0"],
        "vmxnet3", "fuse.vmhgfs-fuse", ".host:/hosthome", "/hosthome",
    ),
}
#: The root partition's device and the disk controller's kernel driver, per hardware.
ROOT_DEVICE = {"virtualbox": ("/dev/sda2", "ahci"), "vmware": ("/dev/sda2", "vmw_pvscsi"),
               "vmware-nvme": ("/dev/nvme0n1p2", "nvme")}


OVMF_DIR = Path("/usr/share/OVMF")
#: (machine type, pflash code, pflash vars template, extra args) per firmware; Secure Boot needs SMM (q35).
FIRMWARE: dict[str, tuple[str, str | None, str | None, list[str]]] = {
    "bios": ("pc", None, None, []),
    "uefi": ("pc", "OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd", []),
    "uefi-secureboot": ("q35,smm=on", "OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd",
                        ["-global", "driver=cfi.pflash01,property=secure,value=on"]),
}


class _Guest:
    """A QEMU process with a hypervisor's hardware booting a disk through the firmware."""

    def __init__(self, tmp_path: Path, disk: Path, disk_format: str, hardware: str = "virtualbox",
                 firmware: str = "bios") -> None:
        machine, code, vars_template, fw_args = FIRMWARE[firmware]
        if code:
            vars_copy = tmp_path / "efivars.fd"
            shutil.copyfile(OVMF_DIR / vars_template, vars_copy)
            fw_args = [*fw_args, "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_DIR / code}",
                       "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
        devices, nic, share_type, share_source, share_dir = HARDWARE[hardware]
        self.share_line = f"{share_source} {share_dir} {share_type} defaults,nofail,"
        self.dir = tmp_path
        self.key = tmp_path / "id_rsa"
        certs.generate_ssh_keypair(self.key)
        self.seed = tmp_path / "seed.iso"
        seed.write_seed_iso(self.seed, hostname="fwboot", user="docker",
                            ssh_pubkey=Path(str(self.key) + ".pub").read_text(), proxy=None,
                            instance_id=str(uuid.uuid4()), shares=[(share_type, share_source, share_dir)])
        self.overlay = tmp_path / "overlay.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(disk), "-F", disk_format,
                        str(self.overlay), str(GUEST_DISK)], check=True, timeout=60)
        self.port = free_port()
        self.qmp = tmp_path / "qmp.sock"
        self.console = tmp_path / "console.log"
        self.argv = [
            QEMU, "-machine", machine, "-accel", "tcg", "-m", "1024", "-smp", "2", "-nodefaults", "-display", "none",
            *fw_args,
            "-serial", f"file:{self.console}", "-qmp", f"unix:{self.qmp},server=on,wait=off",
            "-drive", f"if=none,id=disk0,file={self.overlay},format=qcow2",
            "-drive", f"if=none,id=cd0,file={self.seed},format=raw,media=cdrom,readonly=on",
            *devices,
            "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:22",
            "-device", f"{nic},netdev=n0",
        ]
        assert "-kernel" not in self.argv
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)

    def ssh(self) -> SSHClient:
        target = SSHTarget("127.0.0.1", self.port, "docker", self.key, self.dir / "known_hosts")
        return SSHClient.connect(target, timeout=20.0, wait=BOOT_TIMEOUT)

    def console_tail(self) -> str:
        try:
            return "\n".join(self.console.read_text(errors="replace").splitlines()[-40:])
        except OSError:
            return "(no console output)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.mark.vm
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("hardware, fmt, firmware", [
    ("virtualbox", "vdi", "bios"), ("vmware", "vmdk", "bios"),
    ("virtualbox", "vdi", "uefi-secureboot"), ("vmware-nvme", "vmdk", "uefi"),
])
def test_export_boots_through_the_firmware_on_the_hypervisors_hardware(image: images.ImageInfo, tmp_path: Path,
                                                                       hardware: str, fmt: str,
                                                                       firmware: str) -> None:
    if firmware != "bios" and not (OVMF_DIR / FIRMWARE[firmware][1]).is_file():
        pytest.skip("Debian's ovmf is not installed")
    disk = images.export_image(image, fmt, print)
    guest = _Guest(tmp_path, disk, fmt, hardware, firmware)
    try:
        started = time.monotonic()
        try:
            conn = guest.ssh()
        except Exception as exc:  # noqa: BLE001 - show the guest's console with the failure
            pytest.fail(f"no SSH within {BOOT_TIMEOUT:g}s ({exc}); console:\n{guest.console_tail()}")
        print(f"\n[timing] {firmware} boot of the {fmt} on {hardware} hardware to SSH: "
              f"{time.monotonic() - started:.1f}s")
        with conn:
            def out(command: str, sudo: bool = False) -> str:
                return conn.run(command, sudo=sudo, timeout=120).stdout.strip()

            cmdline = out("cat /proc/cmdline")
            assert "BOOT_IMAGE=/vmlinuz" in cmdline, f"not booted from the boot partition: {cmdline}"
            efi = out("test -d /sys/firmware/efi && echo uefi || echo bios")
            assert efi == ("bios" if firmware == "bios" else "uefi")
            if firmware == "uefi-secureboot":  # shim (Microsoft-signed) -> GRUB -> kernel, all verified
                assert "Secure boot enabled" in out("dmesg | grep -i 'secure boot' || true", sudo=True)
            assert f"root=LABEL={images.ROOT_LABEL}" in cmdline
            root_dev, driver = ROOT_DEVICE[hardware]
            assert out("findmnt -n -o SOURCE /") == root_dev, "root on the disk's second partition"
            # The disk's controller has its driver (q35, for Secure Boot, adds its own AHCI).
            assert int(out(f"ls /sys/bus/pci/drivers/{driver} | grep -c '^0000:' || true")) >= 1
            assert out("hostname") == "fwboot"
            # The first boot grew the root partition and filesystem to the 4 GiB disk.
            assert int(out(f"lsblk -bno SIZE {root_dev}")) > GUEST_DISK - (200 << 20)
            assert int(out("df -B1 --output=size / | tail -1")) > GUEST_DISK - (400 << 20)
            # The engine is up, configured by nothing but the image: answers on its socket.
            deadline = time.monotonic() + 180
            while out("systemctl is-active docker || true") != "active" and time.monotonic() < deadline:
                time.sleep(2)
            assert out("docker version --format '{{.Server.Os}}'", sudo=True) == "linux"
            # The engine, its CLI and both plugins, current enough for Docker 29 clients (API >= 1.44).
            api = out("docker version --format '{{.Server.APIVersion}}'", sudo=True)
            assert tuple(int(x) for x in api.split(".")) >= (1, 44), api
            assert "Docker Compose version" in out("docker compose version")
            assert "github.com/docker/buildx" in out("docker buildx version")
            # DNS comes from whatever the NIC's DHCP lease says (systemd-resolved), not a QEMU-only
            # address: QEMU's restricted network offers none, so none is known.
            assert out("readlink /etc/resolv.conf") == "../run/systemd/resolve/stub-resolv.conf"
            assert "No DNS servers known" in out("cat /run/systemd/resolve/resolv.conf")
            # The home share is in fstab with nofail: absent under QEMU, and boot went on.
            fstab = out("cat /etc/fstab")
            assert guest.share_line in fstab, fstab
            assert out("systemctl is-system-running || true") in ("running", "degraded")
            # A kernel installed later (apt upgrade) reaches the SYSLINUX boot partition through
            # Debian's kernel hooks: a "newer" kernel, marked by one extra byte, is copied there.
            out("cp /boot/vmlinuz-$(uname -r) /boot/vmlinuz-99.0-test && printf x >> /boot/vmlinuz-99.0-test && "
                "cp /boot/initrd.img-$(uname -r) /boot/initrd.img-99.0-test", sudo=True)
            assert "now boots kernel 99.0-test" in out(
                "/etc/kernel/postinst.d/zz-pymachine-boot-sync 99.0-test", sudo=True)
            synced = out("m=$(mktemp -d) && mount -t vfat -o ro LABEL=PYMBOOT $m && "
                         "sha256sum $m/vmlinuz /boot/vmlinuz-99.0-test | cut -d' ' -f1; umount $m", sudo=True)
            first, second = synced.split()
            assert first == second, "the boot partition's kernel is the newest one in /boot"
        # ACPI power button (VBoxManage controlvm acpipowerbutton): the guest powers itself off.
        qmp_command(str(guest.qmp), "system_powerdown")
        try:
            guest.proc.wait(timeout=POWEROFF_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no power-off within {POWEROFF_TIMEOUT:g}s of the ACPI button; console:\n"
                        f"{guest.console_tail()}")
        assert guest.proc.returncode == 0
    finally:
        guest.stop()
