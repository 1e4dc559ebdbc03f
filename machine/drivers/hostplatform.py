"""The host a desktop hypervisor runs on, as a driver parameter.

VirtualBox and VMware behave differently per host OS (macOS 7.x host-only
networks, Fusion's case-insensitive paths) and CPU (Apple Silicon runs arm
VMs only).  Drivers take a ``HostPlatform`` instead of reading
``sys.platform`` where the hypervisor's behaviour is concerned, so the macOS
and Windows paths run anywhere; the default is this machine, or the
driver's override variable (``<os>/<arch>``).
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from pymachine.machine.errors import MachineError

OSES = ("linux", "darwin", "win32")
ARCHES = ("x86_64", "arm64")


@dataclass(frozen=True)
class HostPlatform:
    """The OS (sys.platform style: linux, darwin, win32) and CPU (x86_64, arm64)."""

    os: str
    arch: str

    @classmethod
    def current(cls, override_env: str = "", environ: Mapping[str, str] | None = None) -> HostPlatform:
        """This machine, unless ``override_env`` names a variable set to ``<os>/<arch>``."""
        env = os.environ if environ is None else environ
        override = env.get(override_env, "") if override_env else ""
        if override:
            host_os, _, arch = override.partition("/")
            if host_os not in OSES or arch not in ARCHES:
                raise MachineError(f"{override_env} must be <{'|'.join(OSES)}>/<{'|'.join(ARCHES)}>, "
                                   f"got {override!r}")
            return cls(host_os, arch)
        host_os = "linux" if sys.platform.startswith("linux") else sys.platform
        machine = platform.machine().lower()
        return cls(host_os, "arm64" if machine in ("arm64", "aarch64") else "x86_64")

    @property
    def vm_arch(self) -> str:
        """The VM platform this host runs (VirtualBox's names): arm on arm64, else x86."""
        return "arm" if self.arch == "arm64" else "x86"

    @property
    def folds_case(self) -> bool:
        """Whether the default file system ignores case: APFS/HFS+ (macOS) and NTFS (Windows)."""
        return self.os in ("darwin", "win32")
