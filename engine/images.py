"""pymachine's own base VM image: Debian 13 with the engine preinstalled, per arch.

The image is what makes local VMs work offline: the guest boots with
``docker.io`` and ``openssh-server`` already on disk, so create only has to
inject a key (NoCloud ``cidata`` seed, read by a small first-boot unit) and
configure TLS.  It is built from Debian's archive with ``debootstrap``.
Debian 13 (trixie) because its docker.io 26.1 speaks API 1.45: Docker 29
clients refuse anything below 1.44 (bookworm's 20.10 is 1.41).  The image
carries the engine, the CLI and the Compose and buildx CLI plugins.

Two architectures: amd64 and arm64 (``arch=``, default the host's).  A
foreign arch is built through binfmt_misc and Debian's qemu-user-static.

The disk boots on its own, through BIOS and UEFI: an MBR with SYSLINUX's boot
code (amd64), a small FAT partition holding SYSLINUX, the kernel, the initrd
and an EFI System tree (Debian's signed shim as ``EFI/BOOT/BOOTX64.EFI`` or
``BOOTAA64.EFI`` and its signed GRUB, so Secure Boot may stay on), and
the ext4 root (label ``pymachine-root``) as the last partition, so the
first-boot script can grow it to the machine's disk size.  Nothing is
mounted to build it: ``mke2fs -d`` fills the root, mtools fills the FAT and
``syslinux`` installs into the FAT image file.  SYSLINUX on FAT rather than
GRUB because it installs into an unmounted image file with no device map.
The initrd carries the storage drivers of QEMU (virtio), VirtualBox (AHCI,
PIIX), VMware (LSI Logic, PVSCSI, NVMe) and vSphere, so the same disk boots
on each; ``export_image`` converts it to VMDK or VDI for those hypervisors.
The kernel and initrd are also copied next to the disk so QEMU can boot them
directly (faster under emulation than going through the firmware).

A normal user on Linux builds it too, without root: mmdebstrap's unshare mode
and a user namespace run these same steps (``engine.userns_build``).  Its
root filesystem comes from mmdebstrap rather than debootstrap, so such a
build has a recipe hash of its own (a ``mode`` part added only then; root
builds keep theirs): a root build never serves as a user's image or the reverse.

Images are cached under ``<cache>/images/<recipe hash>/``: the hash
covers everything that decides the content, so changing the recipe rebuilds
and an unchanged recipe reuses.  ``<cache>`` is the user's cache directory
(machine/cachedir.py: XDG on Linux, ``~/Library/Caches`` on macOS,
``%LOCALAPPDATA%`` on Windows, ``PYMACHINE_CACHE_DIR``), shared by every store:
one build serves them all.  Images a store kept in its own ``cache/images``
before (or that an installer seeded there) are still found there, read in
place, never moved: a qemu overlay names its base image by path.  Builds
happen in a temp dir under a lock in the shared directory and are renamed
into place, so a half-built image is never visible and two stores creating
at once build once.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from pymachine.engine import userns_build
from pymachine.engine.binfmt import BINFMT_CONF_DIRS, foreign_binaries
from pymachine.machine.errors import MachineError

Log = Callable[[str], None]

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "systemd-sysv",
    "udev",
    "dbus",  # systemd-logind needs it to act on the ACPI power button (stop)
    "openssh-server",
    "e2fsprogs",
    "iproute2",
    "ca-certificates",
    "sudo",
    "procps",
    "kmod",
    "iptables",
    "docker.io",  # 26.1 (API 1.45) in trixie
    "docker-cli",
    "docker-compose",  # the Compose v2 CLI plugin (/usr/libexec/docker/cli-plugins)
    "docker-buildx",
    "apparmor",  # Debian's kernel enables AppArmor: dockerd needs apparmor_parser for docker-default
    "fdisk",  # sfdisk: the first boot grows the root partition to the machine's disk size
    "systemd-resolved",  # DNS from DHCP: QEMU, VirtualBox and VMware NAT each put it elsewhere
    "open-vm-tools",  # VMware/vSphere: guest IP, graceful power-off, shared folders (inert elsewhere)
    "fuse3",  # mount.fuse3 for open-vm-tools' vmhgfs-fuse shared folders
)
#: The architectures the image is built for (Debian's names).
ARCHES = ("amd64", "arm64")
_MACHINE_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class _ArchSpec(TypedDict):
    kernel: str
    efi_debs: tuple[str, ...]
    efi_files: dict[str, str]  # path in the .debs -> name on the EFI partition
    console: str
    qemu_arch: str


#: Per arch: the kernel package, the packages holding the signed shim and GRUB, the
#: files they ship (shim, its MOK manager, GRUB) and UEFI's removable-media name for shim.
_ARCH: dict[str, _ArchSpec] = {
    "amd64": {
        "kernel": "linux-image-amd64",
        "efi_debs": ("shim-signed", "shim-helpers-amd64-signed", "grub-efi-amd64-signed"),
        "efi_files": {"usr/lib/shim/shimx64.efi.signed": "BOOTX64.EFI",
                      "usr/lib/shim/mmx64.efi.signed": "mmx64.efi",
                      "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed": "grubx64.efi"},
        "console": "console=tty0 console=ttyS0,115200",
        "qemu_arch": "x86_64",
    },
    "arm64": {
        "kernel": "linux-image-arm64",
        "efi_debs": ("shim-signed", "shim-helpers-arm64-signed", "grub-efi-arm64-signed"),
        "efi_files": {"usr/lib/shim/shimaa64.efi.signed": "BOOTAA64.EFI",
                      "usr/lib/shim/mmaa64.efi.signed": "mmaa64.efi",
                      "usr/lib/grub/arm64-efi-signed/grubaa64.efi.signed": "grubaa64.efi"},
        "console": "console=tty0 console=ttyAMA0,115200",
        "qemu_arch": "aarch64",
    },
}
#: Kernel modules the initrd needs to find an ext4 root on each hypervisor's disk controller.
INITRD_MODULES = (
    "virtio_pci", "virtio_blk", "virtio_scsi",  # QEMU
    "ahci", "ata_piix", "sd_mod",  # VirtualBox SATA/IDE, VMware IDE
    "mptspi", "mptsas", "vmw_pvscsi", "nvme",  # VMware LSI Logic, PVSCSI, NVMe
    "crc32c_generic", "ext4",
)
#: Modules that exist only on x86 (PC IDE, LSI Logic, PVSCSI): left out of the arm64 initrd.
_X86_ONLY_MODULES = ("ata_piix", "mptspi", "mptsas", "vmw_pvscsi")
ROOT_LABEL = "pymachine-root"
BOOT_LABEL = "PYMBOOT"
#: The FAT boot partition: SYSLINUX, one kernel and its initrd (about 40 MB) with room to spare.
BOOT_PART_BYTES = 128 << 20
PART_ALIGN = 1 << 20
SYSLINUX_MBR = "/usr/lib/syslinux/mbr/mbr.bin"
#: The kernel command line for every boot path (SYSLINUX, GRUB and QEMU's -kernel) on amd64.
KERNEL_CMDLINE = f"root=LABEL={ROOT_LABEL} rw console=tty0 console=ttyS0,115200"
SYSLINUX_CFG = f"""DEFAULT pymachine
PROMPT 0
TIMEOUT 0
SERIAL 0 115200
LABEL pymachine
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND {KERNEL_CMDLINE}
"""
#: GRUB's menu for the UEFI path: Debian's signed GRUB reads it from its prefix
#: (``EFI/debian``) or beside itself (``$cmdpath``); the kernel is the same file
#: SYSLINUX boots, kept current by the boot-sync hook.
GRUB_CFG = """set default=0
set timeout=0
menuentry pymachine {
  linux /vmlinuz @CMDLINE@
  initrd /initrd.img
}
"""
DISK_NAME = "disk.qcow2"
#: Formats ``export_image`` converts to, and qemu-img's options for each.
EXPORT_FORMATS = {
    "vmdk": ("vmdk", ["-o", "subformat=monolithicSparse,adapter_type=lsilogic"]),  # VMware, vSphere
    "vdi": ("vdi", []),  # VirtualBox
    "raw": ("raw", []),  # anything else (dd to a disk)
    "vhdx": ("vhdx", ["-o", "subformat=dynamic"]),  # Hyper-V (generation 2 boots it through UEFI)
}
KERNEL_NAME = "vmlinuz"
INITRD_NAME = "initrd.img"
MANIFEST_NAME = "manifest.json"
BUILD_LOCK_TIMEOUT = 1800.0
STALE_LOAD_SECONDS = 6 * 3600.0
#: Per debootstrap/apt step; a foreign arch under qemu-user on a loaded 2-core host needs more than 30 min.
DEBOOTSTRAP_TIMEOUT = 3600.0

#: The image reads pymachine's own files on the NoCloud seed instead of running
#: cloud-init: measured under TCG, cloud-init's four Python stages put 62 s on
#: the way to SSH and 100 s more of CPU behind it; this script takes about a
#: second.  The same seed still carries user-data/meta-data, so images that
#: do have cloud-init (any cloud image passed with --qemu-image) work too.
FIRSTBOOT_SCRIPT = r"""#!/bin/sh
# pymachine first boot: user, SSH key, host keys, hostname, proxy and engine files, shares.
set -eu
seed=/run/pymachine-seed
dev=""
i=0
while [ $i -lt 60 ]; do
    dev=$(blkid -L cidata 2>/dev/null || blkid -L CIDATA 2>/dev/null || true)
    [ -n "$dev" ] && break
    i=$((i + 1)); sleep 0.5
done
[ -n "$dev" ] || { echo "pymachine-firstboot: no cidata seed volume" >&2; exit 1; }
mkdir -p $seed
mount -o ro -t iso9660 "$dev" $seed
trap 'umount $seed' EXIT
[ -f $seed/pymachine/config ] || { echo "pymachine-firstboot: the seed has no pymachine/config" >&2; exit 1; }
. $seed/pymachine/config
state=/var/lib/pymachine
if [ "$(cat $state/instance-id 2>/dev/null || true)" = "$INSTANCE_ID" ]; then exit 0; fi
# The host key pymachine made and already pinned (no trust on first use, no key
# generation under emulation); an older seed without one gets fresh keys.
if [ -f $seed/pymachine/ssh_host_ed25519_key ]; then
    rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
    install -m 0600 $seed/pymachine/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key
    install -m 0644 $seed/pymachine/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ed25519_key.pub
fi
ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -A
printf '%s\n' "$HOSTNAME" > /etc/hostname
hostname "$HOSTNAME"
sed -i '/^127\.0\.1\.1[[:space:]]/d' /etc/hosts
printf '127.0.1.1\t%s\n' "$HOSTNAME" >> /etc/hosts
if ! id "$USERNAME" >/dev/null 2>&1; then
    getent group "$USERNAME" >/dev/null || groupadd "$USERNAME"
    useradd -m -s /bin/bash -g "$USERNAME" -G sudo -c pymachine "$USERNAME"
fi
home=$(getent passwd "$USERNAME" | cut -d: -f6)
install -d -m 0700 -o "$USERNAME" -g "$USERNAME" "$home/.ssh"
install -m 0600 -o "$USERNAME" -g "$USERNAME" $seed/pymachine/authorized_keys "$home/.ssh/authorized_keys"
printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$USERNAME" > /etc/sudoers.d/90-pymachine
chmod 0440 /etc/sudoers.d/90-pymachine
if [ -f $seed/pymachine/apt-proxy.conf ]; then
    install -m 0644 $seed/pymachine/apt-proxy.conf /etc/apt/apt.conf.d/90pymachine-proxy
    cat $seed/pymachine/environment >> /etc/environment
    install -d /etc/systemd/system/docker.service.d
    install -m 0644 $seed/pymachine/docker-proxy.conf /etc/systemd/system/docker.service.d/10-pymachine-proxy.conf
    reload=1
fi
# The engine's final TLS files and drop-in, byte for byte what provisioning
# writes: docker.service (ordered after this unit) starts once, configured.
if [ -f $seed/pymachine/docker-machine.conf ]; then
    install -d -m 0755 /etc/docker /etc/systemd/system/docker.service.d
    install -m 0644 $seed/pymachine/docker-ca.pem /etc/docker/ca.pem
    install -m 0644 $seed/pymachine/docker-server.pem /etc/docker/server.pem
    install -m 0600 $seed/pymachine/docker-server-key.pem /etc/docker/server-key.pem
    mode=0644
    grep -q '^Environment=' $seed/pymachine/docker-machine.conf && mode=0600
    install -m $mode $seed/pymachine/docker-machine.conf /etc/systemd/system/docker.service.d/10-machine.conf
    reload=1
fi
[ -z "${reload:-}" ] || systemctl daemon-reload
# Shared folders (VirtualBox vboxsf, VMware vmhgfs): fstab lines with nofail, owned by the
# user.  Last and never fatal: a share that cannot be set up must not undo the first boot.
if [ -f $seed/pymachine/fstab ]; then
    uid=$(id -u "$USERNAME"); gid=$(id -g "$USERNAME")
    sed -e "s/@UID@/$uid/g" -e "s/@GID@/$gid/g" $seed/pymachine/fstab | while read -r src dir rest; do
        [ -n "$src" ] || continue
        grep -qF "$src $dir " /etc/fstab || printf '%s %s %s\n' "$src" "$dir" "$rest" >> /etc/fstab || continue
        mkdir -p "$dir" || continue
        mount "$dir" 2>/dev/null || echo "pymachine-firstboot: shared folder $src not mounted (no such share here)" >&2
    done || echo "pymachine-firstboot: could not set up the shared folders" >&2
fi
mkdir -p $state
printf '%s\n' "$INSTANCE_ID" > $state/instance-id
"""
#: Keeps the FAT boot partition's kernel and initrd in step with /boot: run by Debian's
#: kernel postinst hooks (after initramfs-tools made the initrd) and by update-initramfs.
BOOT_SYNC_SCRIPT = r"""#!/bin/sh
# pymachine: copy the newest kernel and its initrd to the SYSLINUX boot partition.
set -eu
[ -d /run/systemd/system ] || exit 0  # not a booted guest (the image build's chroot)
version=$(ls /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V | tail -n 1)
[ -n "$version" ] && [ -f "/boot/initrd.img-$version" ] || exit 0
dev=$(blkid -L PYMBOOT) || exit 0
mnt=$(mktemp -d)
mount -t vfat "$dev" "$mnt"
trap 'umount "$mnt"; rmdir "$mnt"' EXIT
cp "/boot/vmlinuz-$version" "$mnt/vmlinuz.new"
cp "/boot/initrd.img-$version" "$mnt/initrd.new"
mv "$mnt/vmlinuz.new" "$mnt/vmlinuz"
mv "$mnt/initrd.new" "$mnt/initrd.img"
sync
echo "pymachine: boot partition now boots kernel $version"
"""
#: Grows the root partition (the last one) to the disk, then the filesystem, once: a unit of
#: its own beside the first boot, so neither waits for the other (about 4 s under TCG).
GROWROOT_SCRIPT = r"""#!/bin/sh
# pymachine: grow the root partition and filesystem to the machine's disk size (once).
set -eu
root=$(readlink -f "$(findmnt -n -o SOURCE /)")
part=/sys/class/block/${root#/dev/}
if [ -f "$part/partition" ]; then
    disk=/dev/$(basename "$(readlink -f "$part/..")")
    num=$(cat "$part/partition")
    echo ', +' | sfdisk --force --no-reread --no-tell-kernel -q -N "$num" "$disk" >/dev/null 2>&1 \
        && partx -u -n "$num" "$disk" \
        || echo "pymachine-growroot: could not grow the root partition" >&2
else
    echo "pymachine-growroot: the root $root is not a partition; not growing it" >&2
fi
resize2fs "$root" >/dev/null 2>&1 || echo "pymachine-growroot: could not grow the root filesystem" >&2
mkdir -p /var/lib/pymachine
touch /var/lib/pymachine/root-grown
"""
# Both first-boot units run early, beside systemd's own early boot (as cloud-init's local
# stage does), not after basic.target: measured under TCG with 2 vCPUs this takes the
# first boot off the way to the engine (create to "Docker is up" 46 s -> 40 s).  sshd
# waits for them (its host key, the user's key, a grown disk); the engine waits for its
# seeded TLS files; networking does not wait (the hostname it sends is not used).
def _early_oneshot_unit(description: str, script: str, condition: str = "") -> str:
    """A first-boot unit that runs once, early, before sshd and the engine (see above)."""
    return (f"[Unit]\nDescription={description}\nDefaultDependencies=no\n"
            "After=systemd-remount-fs.service local-fs.target\n"
            "Before=ssh.service docker.service shutdown.target\nConflicts=shutdown.target\n"
            f"{condition}\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart={script}\n"
            "TimeoutStartSec=120\n\n[Install]\nWantedBy=sysinit.target\n")


FIRSTBOOT_UNIT = _early_oneshot_unit("pymachine first boot (user, SSH key, hostname from the cidata seed)",
                                     "/usr/local/sbin/pymachine-firstboot")
GROWROOT_UNIT = _early_oneshot_unit("pymachine: grow the root filesystem to the disk (first boot)",
                                    "/usr/local/sbin/pymachine-growroot",
                                    "ConditionPathExists=!/var/lib/pymachine/root-grown\n")

_FILES: dict[str, tuple[str, int]] = {
    "etc/systemd/network/80-pymachine-dhcp.network": (
        "# pymachine: DHCP on every wired link (QEMU user networking answers).\n"
        + "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n",
        0o644,
    ),
    "etc/fstab": (f"LABEL={ROOT_LABEL} / ext4 defaults,errors=remount-ro 0 1\n", 0o644),
    "etc/hostname": ("pymachine\n", 0o644),
    "etc/hosts": ("127.0.0.1\tlocalhost\n127.0.1.1\tpymachine\n::1\tlocalhost ip6-localhost ip6-loopback\n", 0o644),
    "usr/local/sbin/pymachine-firstboot": (FIRSTBOOT_SCRIPT, 0o755),
    "etc/systemd/system/pymachine-firstboot.service": (FIRSTBOOT_UNIT, 0o644),
    "usr/local/sbin/pymachine-growroot": (GROWROOT_SCRIPT, 0o755),
    "etc/systemd/system/pymachine-growroot.service": (GROWROOT_UNIT, 0o644),
    "usr/local/sbin/pymachine-boot-sync": (BOOT_SYNC_SCRIPT, 0o755),
    "etc/kernel/postinst.d/zz-pymachine-boot-sync": ("#!/bin/sh\nexec /usr/local/sbin/pymachine-boot-sync\n", 0o755),
    "etc/initramfs/post-update.d/zz-pymachine-boot-sync": (
        "#!/bin/sh\nexec /usr/local/sbin/pymachine-boot-sync\n", 0o755),
    "etc/ssh/sshd_config.d/50-pymachine.conf": (
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\nPrintMotd no\n",
        0o644,
    ),
    # pam_env gives SSH sessions this PATH (as on Ubuntu and boot2docker): `pymachine ssh
    # dev dockerd --version` finds Debian's /usr/sbin/dockerd as the docker user.
    "etc/environment": ('PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"\n', 0o644),
    # sshd no longer waits for the engine: provisioning starts while the engine is still
    # starting and joins that start (``systemctl start``) instead of restarting it.
    "etc/systemd/system/docker.service.d/05-pymachine-timeout.conf": ("[Service]\nTimeoutStartSec=150\n", 0o644),
    "etc/initramfs-tools/conf.d/pymachine.conf": ("MODULES=list\nCOMPRESS=gzip\n", 0o644),
    # Legacy PC devices QEMU's and VirtualBox's PC chipsets still model: probing them is boot
    # time spent under emulation for hardware no pymachine guest uses.
    "etc/modprobe.d/pymachine-blacklist.conf": ("blacklist floppy\nblacklist pcspkr\n", 0o644),
    "etc/initramfs-tools/modules": ("".join(m + "\n" for m in INITRD_MODULES), 0o644),
}
#: Units that only cost boot time on a short-lived local VM.
_MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-networkd-wait-online.service",
    # Early boot work no pymachine guest uses; under TCG each costs a process start that
    # competes with the way to the engine (the kernel still loads these modules on demand).
    "modprobe@drm.service",
    "modprobe@efi_pstore.service",
    "modprobe@configfs.service",
    "modprobe@fuse.service",
    "sys-kernel-config.mount",
    "systemd-pstore.service",
    "systemd-network-generator.service",
)
#: Generators systemd runs at every boot and every daemon-reload (the first boot reloads
#: once): none applies to a pymachine guest.  Kept: fstab, getty (the serial console) and
#: debug (the qemu driver's ``systemd.mask=`` on the kernel command line).
_MASKED_GENERATORS = (
    "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator",
    "systemd-rc-local-generator",
    "systemd-run-generator",
    "systemd-ssh-generator",
    "systemd-system-update-generator",
    "systemd-sysv-generator",
    "systemd-tpm2-generator",
)
_ENABLED_UNITS = ("systemd-networkd.service", "systemd-resolved.service", "ssh.service", "docker.service",
                  "pymachine-firstboot.service", "pymachine-growroot.service")


@dataclass(frozen=True)
class ImageInfo:
    """A built image: its directory, files and manifest."""

    directory: Path
    manifest: dict[str, Any]

    @property
    def disk(self) -> Path:
        return self.directory / DISK_NAME

    @property
    def kernel(self) -> Path:
        return self.directory / KERNEL_NAME

    @property
    def initrd(self) -> Path:
        return self.directory / INITRD_NAME

    def exported(self, fmt: str) -> Path:
        """Where ``export_image`` keeps this image converted to ``fmt``."""
        return self.directory / f"disk.{fmt}"

    @property
    def recipe(self) -> str:
        return str(self.manifest.get("recipe", self.directory.name))

    @property
    def virtual_size(self) -> int:
        return int(self.manifest.get("virtual_size", 0))

    @property
    def arch(self) -> str:
        """The image's architecture (images built before arm64 existed are amd64)."""
        return str(self.manifest.get("arch", "amd64"))


@dataclass(frozen=True)
class ImageCache:
    """Where a store finds images: ``directory`` (the user's, shared; builds, loads and
    downloads go there) first, then the store's own older ``legacy`` directory (read only)."""

    directory: Path
    legacy: Path | None = None
    #: The store using the cache: noted in the cache's list of stores when it takes an image.
    store: Path | None = None

    @property
    def dirs(self) -> tuple[Path, ...]:
        """The directories searched, shared first; one directory reached two ways counts once."""
        if self.legacy is None or os.path.realpath(self.legacy) == os.path.realpath(self.directory):
            return (self.directory,)
        return (self.directory, self.legacy)


def _as_cache(cache: ImageCache | str | os.PathLike[str]) -> ImageCache:
    """A bare directory (the test harness's image cache, say) is a cache of its own."""
    return cache if isinstance(cache, ImageCache) else ImageCache(Path(cache))


def store_cache_dir(store_path: str | os.PathLike[str]) -> Path:
    """A store's own image directory: where images lived before the user's cache (still read)."""
    return Path(store_path) / "cache" / "images"


def user_image_dir() -> Path:
    """The user's image directory, shared by every store."""
    from pymachine.machine.cachedir import user_cache_dir

    return user_cache_dir() / "images"


def default_cache_dir(store_path: str | os.PathLike[str]) -> ImageCache:
    """The image cache a store's creates and ``image`` commands use: the user's, then the store's own."""
    from pymachine.machine.cachedir import user_cache_dir

    return ImageCache(user_cache_dir() / "images", store_cache_dir(store_path), Path(store_path))


def _note_store(cache: ImageCache | Path) -> None:
    """Note the cache's store in the user's cache (``stores.json``) when it takes an image from it,
    so ``image prune`` consults its machines; a cache that cannot be written only skips the note."""
    if isinstance(cache, ImageCache) and cache.store is not None:
        from pymachine.machine.cachedir import record_store

        with suppress(OSError, MachineError):
            record_store(cache.directory.parent, cache.store)


def host_arch() -> str:
    """This host's architecture in Debian's naming (amd64, arm64)."""
    machine = platform.machine().lower()
    return _MACHINE_ARCH.get(machine, machine)


def check_arch(arch: str | None = None) -> str:
    """``arch`` (default: the host's) if an image can be made for it; else a one-line error."""
    arch = arch or host_arch()
    if arch not in ARCHES:
        raise MachineError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHES)}")
    return arch


def kernel_cmdline(arch: str | None = None) -> str:
    """The guest kernel's command line on ``arch`` (its serial console differs)."""
    return f"root=LABEL={ROOT_LABEL} rw {_ARCH[check_arch(arch)]['console']}"


def recipe_hash(arch: str | None = None, mode: str | None = None) -> str:
    """Hash of everything that decides the image's content for ``arch`` (default: the host's),
    built in ``mode`` (default: this process's, ``userns_build.build_mode``)."""
    arch = check_arch(arch)
    mode = mode or userns_build.build_mode()
    digest = hashlib.sha256()
    for part in (
        "pymachine-image-v2",
        arch,
        json.dumps(_ARCH[arch], sort_keys=True),
        GRUB_CFG,
        SUITE,
        MIRROR,
        ",".join(PACKAGES),
        ",".join(_initrd_modules(arch)),
        SYSLINUX_CFG,
        str(BOOT_PART_BYTES),
        json.dumps(_FILES, sort_keys=True),  # includes the first-boot script and unit
        ",".join(_MASKED_UNITS),
        ",".join(_MASKED_GENERATORS),
        ",".join(_ENABLED_UNITS),
        inspect.getsource(_stamp_updated),
        inspect.getsource(_debootstrap_command),
        inspect.getsource(_apt_install),
        inspect.getsource(_customise),
        inspect.getsource(_make_disk),
        inspect.getsource(_make_boot_fat),
        inspect.getsource(_partition_table),
        inspect.getsource(_fetch_efi_loaders),
        inspect.getsource(_initrd_modules),
        *(userns_build.recipe_parts() if mode == userns_build.MODE_USER else ()),
    ):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _read_manifest(directory: Path) -> ImageInfo | None:
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    info = ImageInfo(directory, manifest)
    if not (info.disk.is_file() and info.kernel.is_file() and info.initrd.is_file()):
        return None
    return info


def find_image(cache: ImageCache | Path, arch: str | None = None) -> ImageInfo | None:
    """The cached image for the current recipe on ``arch`` (default: the host's), or None."""
    key = recipe_hash(arch)
    for directory in _as_cache(cache).dirs:
        found = _read_manifest(directory / key)
        if found is not None:
            _note_store(cache)
            return found
    return None


def list_images(cache: ImageCache | Path) -> list[ImageInfo]:
    """Every complete image in the cache's directories (shared first; a recipe in both is listed twice)."""
    found: list[ImageInfo | None] = []
    for directory in _as_cache(cache).dirs:
        if directory.is_dir():
            found += [_read_manifest(d) for d in sorted(directory.iterdir())
                      if d.is_dir() and not d.name.startswith(".")]
    return [i for i in found if i is not None]


# ----------------------------------------------------------------------------- building


def _apt_proxy_env() -> dict[str, str]:
    """The host's apt proxy (if any) as http_proxy for debootstrap."""
    if os.environ.get("http_proxy") or os.environ.get("HTTP_PROXY"):
        return {}
    try:
        out = subprocess.run(
            ["apt-config", "shell", "P", "Acquire::http::Proxy"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    value = out.strip().partition("=")[2].strip("'\"")
    return {"http_proxy": value} if value.startswith("http") else {}


#: Where a failed build step's full output is kept (set while building).
_failure_log: Path | None = None


def _run(argv: list[str], *, timeout: float, env: dict[str, str] | None = None, what: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              env={**os.environ, **(env or {})})
    except FileNotFoundError:
        raise MachineError(
            f"{what}: {argv[0]} not found (install Debian's debootstrap, e2fsprogs, qemu-utils)"
        ) from None
    except subprocess.TimeoutExpired:
        raise MachineError(f"{what}: timed out after {timeout:g}s") from None
    if proc.returncode != 0:
        where = ""
        if _failure_log is not None:
            _failure_log.write_text(f"$ {' '.join(argv)}\n{proc.stdout}\n{proc.stderr}")
            where = f" (full output in {_failure_log})"
        tail = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.startswith("E:")]
        tail = tail or (proc.stderr or proc.stdout).strip().splitlines()
        raise MachineError(f"{what} failed (exit {proc.returncode}): {tail[0] if tail else ''}{where}")
    return proc.stdout


def _convert_with_progress(argv: list[str], *, total: int, label: str, timeout: float, what: str) -> None:
    """Run ``qemu-img convert -p``, showing its percentage as bytes of the virtual disk
    (machine.progress: live on a terminal, a start and an end line otherwise)."""
    import re
    import threading

    from pymachine.machine.progress import Task

    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise MachineError(f"{what}: {argv[0]} not found (install Debian's qemu-utils)") from None
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read() if proc.stderr else b""),
                              daemon=True)
    reader.start()
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        proc.kill()

    killer = threading.Timer(timeout, expire)
    killer.start()
    percent = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
    try:
        with Task(label, total, lines=False) as task:  # off a terminal the step is already logged
            buffer = b""
            assert proc.stdout is not None
            while chunk := proc.stdout.read1(4096):  # type: ignore[attr-defined]
                buffer = (buffer + chunk)[-256:]
                found = percent.findall(buffer)
                if found:
                    done = int(total * float(found[-1]) / 100)
                    task.advance(max(0, done - task.done))
            code = proc.wait()
            reader.join(timeout=10)  # its stderr is read to the end before it is quoted
            if timed_out.is_set():
                raise MachineError(f"{what}: timed out after {timeout:g}s")
            if code != 0:
                raise MachineError(f"{what} failed (exit {code}): "
                                   + (b"".join(errors).decode(errors="replace").strip().splitlines() or [""])[-1])
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)


def _debootstrap_command(root: Path, arch: str) -> list[str]:
    """A bare minbase: the real package set goes in with apt (below), which
    orders configuration correctly where debootstrap's --include does not
    (cloud-init's python3 stack fails to configure that way).  A foreign
    ``arch`` runs its second stage through binfmt_misc (qemu-user-static)."""
    return ["debootstrap", "--variant=minbase", f"--arch={arch}", SUITE, str(root), MIRROR]


def _initrd_modules(arch: str) -> tuple[str, ...]:
    """The initrd's storage drivers on ``arch`` (x86-only controllers left out on arm64)."""
    if arch == "amd64":
        return INITRD_MODULES
    return tuple(m for m in INITRD_MODULES if m not in _X86_ONLY_MODULES)


def _fetch_efi_loaders(root: Path, arch: str, dest: Path) -> None:
    """Debian's signed shim, MOK manager and GRUB for ``arch`` into ``dest``, from the image's
    own suite: downloaded in the chroot and unpacked on the side, never installed (their
    maintainer scripts would run grub-install against the build host)."""
    spec = _ARCH[arch]
    debs = root / "var/cache/apt/archives/pymachine-efi"
    debs.mkdir(parents=True, exist_ok=True)
    _chroot(root, "sh", "-c", f"cd /var/cache/apt/archives/pymachine-efi && apt-get download -q "
            f"{' '.join(pkg + ':' + arch for pkg in spec['efi_debs'])}", timeout=600.0)
    unpacked = debs / "x"
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(unpacked)], timeout=120, what="dpkg-deb -x")
    dest.mkdir(parents=True, exist_ok=True)
    for rel, name in spec["efi_files"].items():
        src = unpacked / rel
        if not src.is_file():
            raise MachineError(f"{rel} is missing from Debian's {', '.join(spec['efi_debs'])} for {arch}")
        shutil.copyfile(src, dest / name)
    shutil.rmtree(debs)


def _apt_install(root: Path, env: dict[str, str], arch: str) -> None:
    """apt-get install the package set in the root, /proc mounted only meanwhile."""
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# pymachine image build: start no services in the chroot\nexit 101\n")
    os.chmod(policy, 0o755)
    proc_dir = root / "proc"
    _run(["mount", "-t", "proc", "proc", str(proc_dir)], timeout=30, what="mount /proc")
    try:
        _chroot(root, "apt-get", "install", "-y", "--no-install-recommends", *PACKAGES, _ARCH[arch]["kernel"],
                timeout=DEBOOTSTRAP_TIMEOUT, extra_env=env)
        _chroot(root, "apt-get", "clean")
    finally:
        subprocess.run(["umount", "-l", str(proc_dir)], capture_output=True, timeout=60, check=False)
        policy.unlink()


def _chroot(root: Path, *argv: str, timeout: float = 300.0, extra_env: dict[str, str] | None = None) -> str:
    env = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           **(extra_env or {})}
    return _run(["chroot", str(root), *argv], timeout=timeout, env=env, what=f"chroot {argv[0]}")


def _customise(root: Path, arch: str) -> None:
    """Networking, sshd, the first-boot unit, a small initrd; no per-machine secrets left behind."""
    files = {**_FILES, "etc/initramfs-tools/modules": ("".join(m + "\n" for m in _initrd_modules(arch)), 0o644)}
    for rel, (content, mode) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()
        path.write_text(content)
        os.chmod(path, mode)
    for unit in _ENABLED_UNITS:
        _chroot(root, "systemctl", "enable", unit)
    for unit in _MASKED_UNITS:
        _chroot(root, "systemctl", "mask", unit)
        for link in (root / "etc/systemd/system").glob(f"*.wants/{unit}"):
            link.unlink()  # a masked unit's enablement link only earns a warning at boot
    generators = root / "etc/systemd/system-generators"
    generators.mkdir(parents=True, exist_ok=True)
    for name in _MASKED_GENERATORS:
        (generators / name).unlink(missing_ok=True)
        (generators / name).symlink_to("/dev/null")
    # DNS servers come from each hypervisor's DHCP through systemd-resolved.
    resolv = root / "etc/resolv.conf"
    if resolv.exists() or resolv.is_symlink():
        resolv.unlink()
    resolv.symlink_to("../run/systemd/resolve/stub-resolv.conf")
    # Host keys and the machine id must be unique per machine: regenerated at
    # first boot (pymachine-firstboot, systemd's machine-id setup).
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
    # A small initrd (virtio + ext4 only) boots much faster under emulation.
    _chroot(root, "update-initramfs", "-u", "-k", "all", timeout=600.0)
    for rel in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (root / rel).glob("*"):
            if entry.is_file():
                entry.unlink()
    _stamp_updated(root)


def _stamp_updated(root: Path) -> None:
    """Mark /etc and /var up to date with /usr, as systemd-update-done would at the first boot.

    Without the stamps the first boot runs ldconfig, sysusers, the journal catalog and
    update-done (``ConditionNeedsUpdate=``): about 8 s under TCG on 1 vCPU, for work the
    package scripts already did in the build.  A later upgrade that changes /usr makes
    them run again, as on any Debian system.  The stamp is a second newer than /usr so
    it holds even where a filesystem keeps no nanoseconds.
    """
    usr = (root / "usr").stat()
    for sub in ("etc", "var"):
        stamp = root / sub / ".updated"
        stamp.write_text("# This file was created by pymachine's image build, as systemd-update-done does.\n"
                         "# See man:systemd-update-done.service(8).\n"
                         f"TIMESTAMP_NSEC={usr.st_mtime_ns}\n")
        os.utime(stamp, ns=(usr.st_atime_ns, usr.st_mtime_ns + 1_000_000_000))


def _kernel_files(root: Path) -> tuple[Path, Path, str]:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise MachineError("the image has no kernel in /boot (linux-image-* missing)")
    kernel = kernels[-1]
    version = kernel.name[len("vmlinuz-"):]
    initrd = root / "boot" / f"initrd.img-{version}"
    if not initrd.is_file():
        raise MachineError(f"the image has no initrd for kernel {version}")
    if not (root / "lib/modules" / version).is_dir():
        raise MachineError(f"the image has no /lib/modules/{version}")
    return kernel, initrd, version


def _make_boot_fat(path: Path, kernel: Path, initrd: Path, efi: Path, arch: str) -> None:
    """The FAT boot partition as an image file: kernel, initrd, the UEFI tree (shim, GRUB and
    its menu, from ``efi``) and on amd64 syslinux.cfg and SYSLINUX itself (the BIOS path)."""
    with open(path, "wb") as fh:
        fh.truncate(BOOT_PART_BYTES)
    _run(["mkfs.fat", "-n", BOOT_LABEL, str(path)], timeout=60, what="mkfs.fat")
    env = {"MTOOLS_SKIP_CHECK": "1"}
    grub_cfg = efi / "grub.cfg"
    grub_cfg.write_text(GRUB_CFG.replace("@CMDLINE@", kernel_cmdline(arch)))
    copies = [(kernel, "vmlinuz"), (initrd, "initrd.img")]
    for name in sorted(os.listdir(efi)):  # shim looks for GRUB beside itself; GRUB for its menu in EFI/debian
        copies.append((efi / name, f"EFI/BOOT/{name}"))
    copies.append((grub_cfg, "EFI/debian/grub.cfg"))
    if arch == "amd64":
        cfg = path.with_name("syslinux.cfg")
        cfg.write_text(SYSLINUX_CFG)
        copies.append((cfg, "syslinux.cfg"))
    _run(["mmd", "-i", str(path), "::/EFI", "::/EFI/BOOT", "::/EFI/debian"], timeout=60, env=env, what="mmd")
    for src, name in copies:
        _run(["mcopy", "-i", str(path), str(src), f"::/{name}"], timeout=120, env=env, what="mcopy")
    if arch == "amd64":
        _run(["syslinux", "--install", str(path)], timeout=60, env=env, what="syslinux --install")


def _partition_table(boot_bytes: int, root_bytes: int) -> str:
    """sfdisk script: the FAT boot partition (an ESP, active for BIOS), then the ext4 root as the last partition."""
    sector = 512
    boot_start = PART_ALIGN // sector
    root_start = boot_start + boot_bytes // sector
    return ("label: dos\nlabel-id: 0x706d6163\nunit: sectors\n\n"
            f"start={boot_start}, size={boot_bytes // sector}, type=ef, bootable\n"  # EFI System (FAT), active for SYSLINUX's MBR
            f"start={root_start}, size={root_bytes // sector}, type=83\n")


def _make_disk(root: Path, raw: Path, qcow2: Path, kernel: Path, initrd: Path, efi: Path, arch: str) -> int:
    """The bootable disk (MBR + FAT boot/ESP + ext4 root, nothing mounted), then qcow2.

    The root is sized at what it uses plus room to boot; the partition and
    filesystem grow to the machine's disk size at first boot.  The qcow2 is not
    compressed: every machine's overlay reads its base through it, and QEMU inflates
    a compressed cluster on each read: measured under TCG on 2 cores, create to
    "Docker is up" took 53 s on the compressed base and 41 s on this one (about
    480 MB more in the cache; ``image pack`` still gzips what it ships).
    """
    if arch == "amd64" and not os.path.isfile(SYSLINUX_MBR):
        raise MachineError(f"{SYSLINUX_MBR} not found (install Debian's syslinux, syslinux-common, mtools, dosfstools, fdisk)")
    used = int(_run(["du", "-sxb", str(root)], timeout=300, what="du").split()[0])
    root_bytes = ((int(used * 1.3) + (768 << 20)) // (256 << 20) + 1) * (256 << 20)
    root_offset = PART_ALIGN + BOOT_PART_BYTES
    size = root_offset + root_bytes
    with open(raw, "wb") as fh:
        fh.truncate(size)
    _run(["mke2fs", "-q", "-t", "ext4", "-b", "4096", "-L", ROOT_LABEL, "-d", str(root),
          "-E", f"offset={root_offset}", str(raw), str(root_bytes // 4096)], timeout=600, what="mke2fs")
    boot = raw.with_name("boot.fat")
    _make_boot_fat(boot, kernel, initrd, efi, arch)
    with open(boot, "rb") as src, open(raw, "r+b") as dst:
        dst.seek(PART_ALIGN)
        shutil.copyfileobj(src, dst, 1 << 20)
    boot.unlink()
    script = _partition_table(BOOT_PART_BYTES, root_bytes)
    proc = subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(raw)], input=script,
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise MachineError(f"sfdisk failed: {(proc.stderr or proc.stdout).strip()[:200]}")
    if arch == "amd64":
        with open(SYSLINUX_MBR, "rb") as src, open(raw, "r+b") as dst:
            dst.write(src.read(440))  # boot code only: the partition table and disk id stay
    _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow2)], timeout=1200,
         what="qemu-img convert")
    raw.unlink()
    return size


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _packages(root: Path) -> dict[str, str]:
    out = _run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f", "${Package}\t${Version}\n"],
               timeout=60, what="dpkg-query")
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


@contextmanager
def _build_lock(cache_dir: Path, key: str, log: Log) -> Iterator[None]:
    """One build (or export, or prune) of an image at a time, across processes."""
    from pymachine.machine.locking import exclusive

    lock_path = cache_dir / f".{key}.lock"
    with exclusive(lock_path, timeout=BUILD_LOCK_TIMEOUT, poll=1.0,
                   busy_message=f"timed out waiting for the image build lock {lock_path}",
                   on_wait=lambda: log("Another process is building this image; waiting for it...")):
        yield


def build_image(cache: ImageCache | Path, log: Log, arch: str | None = None) -> ImageInfo:
    """Return the image for the current recipe on ``arch`` (default: the host's), building it
    first (into the shared directory) if no directory of the cache has it."""
    arch = check_arch(arch)
    cached = find_image(cache, arch)
    if cached:
        return cached
    mode = userns_build.build_mode()
    if mode == userns_build.MODE_USER:  # a normal user on Linux: checked before anything is made
        problem = userns_build.why_not(arch, host_arch(), BUILD_TOOLS)
        if problem:
            raise MachineError(problem)
    elif not userns_build.is_root():
        raise MachineError(
            "building the base image needs root (debootstrap, chroot); run `pymachine image build` as root"
        )
    _note_store(cache)  # about to build for this store: its machines will name the image
    cache_dir = _as_cache(cache).directory
    key = recipe_hash(arch)
    final = cache_dir / key
    cache_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(cache_dir, 0o755)
    with _build_lock(cache_dir, key, log):
        cached = _read_manifest(final)
        if cached:
            return cached
        if final.exists():  # an incomplete leftover: never half-trusted
            shutil.rmtree(final)
        for stale in cache_dir.glob(f".build-{key}-*"):  # a crashed earlier build
            _remove_tree(stale)
        work = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache_dir))
        global _failure_log
        _failure_log = cache_dir / "last-failed-build.log"
        try:
            if mode == userns_build.MODE_USER:
                return _build_unprivileged(work, final, key, log, arch)
            with foreign_binaries(arch, host_arch()):
                return _build_into(work, final, key, log, arch)
        finally:
            _failure_log = None
            _remove_tree(work)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    found: list[str] = []
    if not os.path.exists("/proc/self/mountinfo"):  # macOS, Windows: no build ever mounted anything
        return found
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].replace("\\040", " ")
            if (point + "/").startswith(prefix):
                found.append(point)
    return found


def _remove_tree(path: Path) -> None:
    """rm -rf that first detaches mounts below ``path`` and never crosses a filesystem.

    A killed debootstrap can leave /proc, /sys or a bind-mounted /dev inside
    the root; a plain rmtree would then descend into the host's own.
    """
    if not os.path.lexists(path):
        return
    for point in sorted(_mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=60, check=False)
    if _mounts_under(path):
        raise MachineError(f"{path} still has mounts below it; not removing it")
    if os.path.exists("/proc/self/mountinfo"):
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], capture_output=True, timeout=600, check=False)
    else:  # no GNU rm there, and nothing can be mounted below an image directory
        shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path) and userns_build.build_mode() == userns_build.MODE_USER:
        userns_build.remove_tree(path)  # a killed unprivileged build's tree: files of subordinate ids
    if os.path.lexists(path):
        raise MachineError(f"could not remove {path}")


def _keep_log(log_file: Path, cache_dir: Path) -> None:
    """Keep a failed build's log where the user can read it (the build dir is removed)."""
    with suppress(OSError):
        shutil.copyfile(log_file, cache_dir / "last-failed-build.log")


def _build_into(work: Path, final: Path, key: str, log: Log, arch: str) -> ImageInfo:
    started = time.monotonic()
    root = work / "root"
    out = work / "image"
    out.mkdir()
    phase = time.monotonic()

    def done(name: str) -> None:
        nonlocal phase
        now = time.monotonic()
        log(f"  {name} done in {now - phase:.1f}s")
        phase = now

    proxy_env = _apt_proxy_env()
    log(f"(image) debootstrap {SUITE} {arch} (minbase)...")
    try:
        _run(_debootstrap_command(root, arch), timeout=DEBOOTSTRAP_TIMEOUT, env=proxy_env, what="debootstrap")
    except MachineError:
        _keep_log(root / "debootstrap" / "debootstrap.log", final.parent)
        raise
    done("debootstrap")
    log(f"(image) installing {len(PACKAGES)} packages with apt (engine, kernel, sshd)...")
    _apt_install(root, proxy_env, arch)
    efi = work / "efi"
    _fetch_efi_loaders(root, arch, efi)
    done("apt-get install")
    log("(image) customising the root (networking, sshd, first-boot unit, initrd)...")
    _customise(root, arch)
    kernel, initrd, kernel_version = _kernel_files(root)
    shutil.copyfile(kernel, out / KERNEL_NAME)
    shutil.copyfile(initrd, out / INITRD_NAME)
    packages = _packages(root)
    done("customise")
    loaders = "shim+GRUB and SYSLINUX" if arch == "amd64" else "shim+GRUB"
    log(f"(image) making the bootable disk (ESP with {loaders}, ext4 root) as qcow2...")
    size = _make_disk(root, work / "disk.raw", out / DISK_NAME, out / KERNEL_NAME, out / INITRD_NAME, efi, arch)
    done("disk")
    return _publish(out, final, key, arch, packages, kernel_version, size, started, log)


def _build_unprivileged(work: Path, final: Path, key: str, log: Log, arch: str) -> ImageInfo:
    """The same image built by a normal user (``engine.userns_build``), published as a root build is."""
    started = time.monotonic()
    result = userns_build.build(work, arch=arch, host=host_arch(), suite=SUITE, mirror=MIRROR,
                                packages=(*PACKAGES, _ARCH[arch]["kernel"]), env=_apt_proxy_env(), log=log, run=_run,
                                timeout=DEBOOTSTRAP_TIMEOUT, failure_log=final.parent / "last-failed-build.log")
    return _publish(work / "image", final, key, arch, result.packages, result.kernel_version, result.size, started,
                    log, {"build_mode": userns_build.MODE_USER})


def _publish(out: Path, final: Path, key: str, arch: str, packages: dict[str, str], kernel_version: str,
             size: int, started: float, log: Log, extra: dict[str, str] | None = None) -> ImageInfo:
    """Write the manifest of the image built in ``out`` and rename it into place as ``final``."""
    from pymachine.machine import __version__

    manifest = {
        **(extra or {}),
        "recipe": key,
        "arch": arch,
        "suite": SUITE,
        "mirror": MIRROR,
        "engine_version": packages.get("docker.io", ""),
        "compose_version": packages.get("docker-compose", ""),
        "buildx_version": packages.get("docker-buildx", ""),
        "kernel_version": kernel_version,
        "virtual_size": size,
        "boot": "bios-syslinux,uefi-shim-grub" if arch == "amd64" else "uefi-shim-grub",
        "kernel_cmdline": kernel_cmdline(arch),
        "root_label": ROOT_LABEL,
        "disk_sha256": _sha256(out / DISK_NAME),
        "disk_bytes": (out / DISK_NAME).stat().st_size,
        "pymachine_version": __version__,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(time.monotonic() - started, 1),
        "packages": packages,
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    for child in out.iterdir():
        os.chmod(child, 0o644)
    os.chmod(out, 0o755)
    os.rename(out, final)
    log(f"(image) built {final} in {manifest['build_seconds']}s")
    info = _read_manifest(final)
    assert info is not None
    return info


# ----------------------------------------------------------------------------- for drivers

#: Host tools a build needs beyond root.
BUILD_TOOLS = ("debootstrap", "mke2fs", "mkfs.fat", "mcopy", "mmd", "syslinux", "sfdisk", "qemu-img", "dpkg-deb")


def why_not_buildable(arch: str | None = None) -> str | None:
    """Why the image for ``arch`` (default: the host's) cannot be built on this host (None when it can)."""
    arch = check_arch(arch)
    if userns_build.build_mode() == userns_build.MODE_USER:
        return userns_build.why_not(arch, host_arch(), BUILD_TOOLS)
    if not userns_build.is_root():
        return "building it needs root (debootstrap, chroot)"
    if arch != host_arch() and not any((d / f"qemu-{_ARCH[arch]['qemu_arch']}.conf").is_file()
                                       for d in BINFMT_CONF_DIRS):
        return f"building the {arch} image on a {host_arch()} host needs Debian's qemu-user-static"
    missing = [tool for tool in BUILD_TOOLS if shutil.which(tool) is None]
    if missing:
        return (f"building it needs {', '.join(missing)} (Debian packages debootstrap, e2fsprogs, dosfstools, "
                "mtools, syslinux, syslinux-common, fdisk, qemu-utils)")
    return None


def image_for_driver(cache_dir: ImageCache | Path, flag: str, arch: str | None = None) -> ImageInfo | None:
    """Pre-create check for drivers that default to this image: the cached
    image for ``arch`` (default: the host's), or None when it can be built at
    create; otherwise a one-line error naming the driver's own image flag."""
    found = find_image(cache_dir, arch)
    if found is not None:
        return found
    reason = why_not_buildable(arch)
    if reason:
        arch_flag = "" if check_arch(arch) == host_arch() else f" --arch {arch}"
        if userns_build.build_mode() == userns_build.MODE_USER:  # sudo would build into root's cache
            raise MachineError(f"pymachine's base image is not built yet and {reason}, or pass {flag}")
        raise MachineError(f"pymachine's base image is not built yet and {reason}: run "
                           f"`sudo pymachine image build{arch_flag}` once, or pass {flag}")
    return None


def export_problem(info: ImageInfo | None, fmt: str) -> str:
    """Why ``info`` cannot be exported to ``fmt`` here ('' when it can, or already is)."""
    if info is None or info.exported(fmt).is_file():
        return ""
    if shutil.which("qemu-img") is None:
        return f"converting pymachine's base image to {fmt} needs qemu-img (Debian package qemu-utils)"
    if not os.access(info.directory, os.W_OK):
        return f"pymachine's base image has no {fmt} copy yet: run `sudo pymachine image export {fmt}` once"
    return ""


def stderr_log(message: str) -> None:
    """Image build/export progress: straight to stderr (minutes of it)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def check_for_driver(cache_dir: ImageCache | Path, fmt: str, flag: str, arch: str | None = None) -> None:
    """Pre-create check of drivers that boot this image as ``fmt``: it is cached and exportable,
    or buildable at create; otherwise a one-line MachineError naming the driver's image ``flag``."""
    problem = export_problem(image_for_driver(cache_dir, flag, arch), fmt)
    if problem:
        raise MachineError(f"{problem}, or pass {flag}")


def disk_for_driver(cache_dir: ImageCache | Path, fmt: str, announce: Log,
                    arch: str | None = None) -> tuple[Path, ImageInfo]:
    """The image's disk for ``arch`` (default: the host's) as ``fmt`` for a driver's create: built
    on first use (``announce`` says so first), exported once; progress goes to stderr."""
    info = find_image(cache_dir, arch)
    if info is None:
        announce("Using pymachine's base image (built on first use; this can take minutes)...")
        info = build_image(cache_dir, stderr_log, arch)
    return export_image(info, fmt, stderr_log), info


def export_image(info: ImageInfo, fmt: str, log: Log) -> Path:
    """The image's disk converted to ``fmt`` (vmdk, vdi, raw or vhdx), converted once and cached beside it.

    A conversion is written to a temp file and renamed, under the image's
    build lock, so concurrent creates convert once and never see half a file.
    """
    if fmt not in EXPORT_FORMATS:
        raise MachineError(f"unknown image format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    target = info.exported(fmt)
    if target.is_file():
        return target
    problem = export_problem(info, fmt)
    if problem:
        raise MachineError(problem)
    qemu_fmt, options = EXPORT_FORMATS[fmt]
    # The image's own lock (the one prune takes), so an export is never pruned midway.
    with _build_lock(info.directory.parent, info.directory.name, log):
        if target.is_file():
            return target
        log(f"(image) converting {info.disk.name} to {fmt}...")
        partial = target.with_name(f".{target.name}.partial")
        try:
            _convert_with_progress(["qemu-img", "convert", "-p", "-O", qemu_fmt, *options, str(info.disk),
                                    str(partial)], total=info.virtual_size, label=f"Converting to {fmt}",
                                   timeout=1200, what=f"qemu-img convert to {fmt}")
            os.chmod(partial, 0o644)
            os.rename(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)  # never leave gigabytes of half a disk behind
            raise
    return target


def prune_images(cache: ImageCache | Path, in_use: Callable[[Path], bool], log: Log) -> list[Path]:
    """Remove cached images other than the current recipe's (of any arch) that no machine uses.

    A qemu machine's overlay is backed by the image it was created from, so an
    image a machine still names is kept whatever its recipe.  Returns what was
    removed.  Each image is removed under its build lock, so a build or export
    in progress is never pulled from under a create.  Every directory of the
    cache is pruned (the shared one and the store's own).
    """
    current = {recipe_hash(arch) for arch in ARCHES}
    removed = []
    for info in list_images(cache):
        if info.recipe in current or info.directory.name in current or in_use(info.directory):
            continue
        with _build_lock(info.directory.parent, info.directory.name, log):
            _remove_tree(info.directory)
        removed.append(info.directory)
    for cache_dir in _as_cache(cache).dirs:
        for stale in cache_dir.glob(".build-*"):  # a crashed build's leftovers (a live one holds the lock)
            key = stale.name[len(".build-"):].rsplit("-", 1)[0]
            if key not in current:
                with _build_lock(cache_dir, key, log):
                    _remove_tree(stale)
                removed.append(stale)
        for stale in cache_dir.glob(".load-*"):  # an interrupted `image load` (a live one is minutes old)
            try:
                old = time.time() - stale.stat().st_mtime > STALE_LOAD_SECONDS
            except OSError:
                continue
            if old:
                _remove_tree(stale)
                removed.append(stale)
    return removed
