"""The second half of an unprivileged image build, run as root of the build's user namespace.

``engine.userns_build`` runs ``python -m pymachine.engine.userns_finish ROOT WORK ARCH`` there
after mmdebstrap made ``ROOT``.  The steps are the root build's own functions, in its order
(the signed EFI loaders from the tree's apt, the customisation and small initrd, the kernel
files, the package list, then the disk: ``mke2fs -d``, the FAT/ESP, SYSLINUX's MBR, the qcow2),
so both builds make a disk of the same shape.  Everything it leaves in ``WORK`` is handed to
the user (``OWNER_ID`` in here), ``ROOT`` is removed, and ``WORK/result.json`` says what the
manifest needs.  Progress goes to stdout, a failure to stderr as one line (the full output of
the failed step in ``WORK/failed-step.log``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pymachine.engine import images
from pymachine.engine.userns_build import OWNER_ID
from pymachine.machine.errors import MachineError


def _say(message: str) -> None:
    print(message, flush=True)


def finish(root: Path, work: Path, arch: str) -> None:
    out = work / "image"
    efi = work / "efi"
    phase = time.monotonic()

    def done(name: str) -> None:
        nonlocal phase
        now = time.monotonic()
        _say(f"  {name} done in {now - phase:.1f}s")
        phase = now

    # apt in the tree must resolve the archive: systemd-resolved's postinst made resolv.conf a link
    # to a stub that only exists in a booted guest.  _customise puts that link back.
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink() or not resolv.exists():
        resolv.unlink(missing_ok=True)
        shutil.copyfile("/etc/resolv.conf", resolv)
    images._fetch_efi_loaders(root, arch, efi)
    _say("(image) customising the root (networking, sshd, first-boot unit, initrd)...")
    images._customise(root, arch)
    kernel, initrd, kernel_version = images._kernel_files(root)
    shutil.copyfile(kernel, out / images.KERNEL_NAME)
    shutil.copyfile(initrd, out / images.INITRD_NAME)
    packages = images._packages(root)
    done("customise")
    loaders = "shim+GRUB and SYSLINUX" if arch == "amd64" else "shim+GRUB"
    _say(f"(image) making the bootable disk (ESP with {loaders}, ext4 root) as qcow2...")
    size = images._make_disk(root, work / "disk.raw", out / images.DISK_NAME, out / images.KERNEL_NAME,
                             out / images.INITRD_NAME, efi, arch)
    done("disk")
    (work / "result.json").write_text(json.dumps({"kernel_version": kernel_version, "packages": packages,
                                                  "size": size}))


def _hand_over(work: Path, root: Path) -> None:
    """Give everything in ``work`` but the tree back to the user, and remove the tree."""
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], capture_output=True, timeout=600, check=False)
    for dirpath, dirnames, filenames in os.walk(work):
        for name in (*dirnames, *filenames):
            os.lchown(os.path.join(dirpath, name), OWNER_ID, OWNER_ID)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m pymachine.engine.userns_finish ROOT WORK ARCH", file=sys.stderr)
        return 2
    root, work, arch = Path(argv[0]), Path(argv[1]), argv[2]
    images._failure_log = work / "failed-step.log"
    try:
        finish(root, work, arch)
    except MachineError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        _hand_over(work, root)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
