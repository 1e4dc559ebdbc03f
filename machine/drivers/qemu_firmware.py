"""Which QEMU binary, machine, CPU and UEFI firmware run a guest of a given arch.

The qemu driver runs the host's arch by default (KVM on Linux, hvf on
macOS) and the other arch under TCG when asked (``--qemu-arch``).  arm64
guests boot through UEFI (edk2, "AAVMF" in Debian); x86_64 guests through
SeaBIOS (QEMU's default) or UEFI (OVMF) with ``--qemu-firmware uefi``.

The edk2 builds are looked up where each packager puts them: Debian's
``ovmf`` and ``qemu-efi-aarch64`` (/usr/share/OVMF, /usr/share/AAVMF),
QEMU's own install (share/qemu/edk2-*.fd, which Homebrew's and MacPorts'
``qemu`` ship under /opt/homebrew, /usr/local and /opt/local).  The code
image is read-only and shared; the variable store is copied per machine.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pymachine.machine.errors import PreCreateError

ARCHES = ("amd64", "arm64")
FIRMWARES = ("bios", "uefi")
_HOST_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
#: Directories of QEMU's bundled edk2 builds (QEMU's own install, Homebrew, MacPorts).
QEMU_SHARE_DIRS = ("/usr/share/qemu", "/usr/local/share/qemu", "/opt/homebrew/share/qemu", "/opt/local/share/qemu")


@dataclass(frozen=True)
class ArchSpec:
    """How QEMU runs one guest architecture."""

    binary: str
    machine: str
    debian_packages: str
    #: (code, vars template) pairs, best first.
    uefi: tuple[tuple[str, str], ...]


def _edk2(code: str, variables: str) -> tuple[tuple[str, str], ...]:
    return tuple((os.path.join(d, code), os.path.join(d, variables)) for d in QEMU_SHARE_DIRS)


SPECS = {
    "amd64": ArchSpec(
        binary="qemu-system-x86_64", machine="", debian_packages="qemu-system-x86 qemu-utils",
        uefi=(("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
              ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
              ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),  # Fedora
              *_edk2("edk2-x86_64-code.fd", "edk2-i386-vars.fd")),
    ),
    "arm64": ArchSpec(
        binary="qemu-system-aarch64", machine="virt", debian_packages="qemu-system-arm qemu-utils",
        uefi=(("/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"),
              ("/usr/share/edk2/aarch64/QEMU_EFI-pflash.raw", "/usr/share/edk2/aarch64/vars-template-pflash.raw"),
              *_edk2("edk2-aarch64-code.fd", "edk2-arm-vars.fd")),
    ),
}
#: What to install for UEFI firmware, per arch and platform.
FIRMWARE_PACKAGES = {"amd64": "Debian's ovmf (or QEMU from Homebrew/MacPorts, which bundles edk2)",
                     "arm64": "Debian's qemu-efi-aarch64 (or QEMU from Homebrew/MacPorts, which bundles edk2)"}


def host_arch() -> str:
    """This host's arch in Debian's naming (the image's own notion of it)."""
    from pymachine.engine.images import host_arch as image_host_arch

    return image_host_arch()


def check_arch(value: str) -> str:
    """``value`` (empty: the host's arch) as amd64 or arm64; x86_64/aarch64 are accepted too."""
    arch = _HOST_ARCH.get(value.strip().lower(), value.strip().lower()) if value else host_arch()
    if arch not in ARCHES:
        raise PreCreateError(f"--qemu-arch must be one of {', '.join(ARCHES)}, got {value!r}")
    return arch


def check_firmware(value: str, arch: str) -> str:
    """``value`` (empty: bios on amd64, uefi on arm64) checked against what ``arch`` can boot."""
    firmware = (value or ("bios" if arch == "amd64" else "uefi")).strip().lower()
    if firmware not in FIRMWARES:
        raise PreCreateError(f"--qemu-firmware must be one of {', '.join(FIRMWARES)}, got {value!r}")
    if arch == "arm64" and firmware == "bios":
        raise PreCreateError("--qemu-firmware bios is for x86_64 guests: arm64 guests boot through UEFI")
    return firmware


def find_uefi(arch: str, exists: Callable[[str], bool] = os.path.isfile) -> tuple[str, str]:
    """(code, vars template) of an edk2 build for ``arch``; a one-line error naming the package."""
    for code, variables in SPECS[arch].uefi:
        if exists(code) and exists(variables):
            return code, variables
    raise PreCreateError(f"no UEFI firmware for {arch} guests found (looked in "
                         f"{', '.join(sorted({str(Path(c).parent) for c, _ in SPECS[arch].uefi}))}): "
                         f"install {FIRMWARE_PACKAGES[arch]}")


def cpu_model(arch: str, accel: str) -> str:
    """-cpu for ``arch``: the host's CPU under KVM/hvf, QEMU's most capable model under TCG (arm64)."""
    if arch != "arm64":
        return ""
    return "host" if accel in ("kvm", "hvf") else "max"


def accel_for(arch: str, requested: str, platform: str = sys.platform) -> str | None:
    """The accelerator when ``arch`` is not the host's: TCG only (None when it is the host's)."""
    if arch == host_arch():
        return None
    if requested in ("kvm", "hvf"):
        raise PreCreateError(f"--qemu-accel {requested} runs the host's arch ({host_arch()}) only: "
                             f"an {arch} guest on this host runs under tcg")
    return "tcg"
