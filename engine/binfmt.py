"""Run another architecture's binaries in a build chroot, through binfmt_misc.

Building the arm64 base image on an x86_64 host needs the kernel to hand
arm64 ELF files to Debian's ``qemu-user-static``.  That is a host-wide
setting, so this registers only what is missing, for the duration of the
build, and afterwards restores exactly what it changed (unregisters its
entry, unmounts binfmt_misc if it mounted it).  The registration line is
Debian's own (``/usr/lib/binfmt.d/qemu-<cpu>.conf``); its ``F`` flag opens
the interpreter at registration time, so it works inside a chroot.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from pymachine.machine.errors import MachineError

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF_DIRS = (Path("/usr/lib/binfmt.d"), Path("/etc/binfmt.d"))
#: Debian arch -> QEMU's CPU name (the binfmt entry is ``qemu-<cpu>``).
QEMU_CPU = {"amd64": "x86_64", "arm64": "aarch64"}


def registration_line(cpu: str, conf_dirs: tuple[Path, ...] = BINFMT_CONF_DIRS) -> str:
    """Debian qemu-user-static's binfmt_misc line for ``cpu`` (with the F flag)."""
    for directory in conf_dirs:
        conf = directory / f"qemu-{cpu}.conf"
        if conf.is_file():
            for line in conf.read_text().splitlines():
                if line.startswith(f":qemu-{cpu}:"):
                    fields = line.split(":")
                    if not os.path.exists(fields[6]):
                        break
                    if "F" not in fields[7]:
                        fields[7] += "F"
                    return ":".join(fields)
    raise MachineError(f"building an image for {cpu} on this host needs Debian's qemu-user-static "
                       f"(apt-get install qemu-user-static)")


@contextmanager
def foreign_binaries(arch: str, host: str, binfmt_dir: Path = BINFMT_DIR) -> Iterator[None]:
    """While inside, ``arch`` binaries run on this ``host`` arch (no-op when they are the same)."""
    if arch == host:
        yield
        return
    cpu = QEMU_CPU[arch]
    if os.geteuid() != 0:
        raise MachineError(f"building the {arch} image on a {host} host needs root (binfmt_misc for "
                           f"qemu-user-static), or an {arch} host")
    line = registration_line(cpu)
    mounted = registered = False
    if not (binfmt_dir / "register").exists():
        proc = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt_dir)],
                              capture_output=True, text=True, timeout=30, check=False)
        if proc.returncode != 0:
            raise MachineError(f"could not mount binfmt_misc on {binfmt_dir}: {proc.stderr.strip()}")
        mounted = True
    entry = binfmt_dir / f"qemu-{cpu}"
    previous = _exit_on_sigterm()
    try:
        if entry.exists():
            if "enabled" not in entry.read_text().splitlines()[0]:
                raise MachineError(f"{entry} is disabled: enable it (echo 1 > {entry}) to build the {arch} image")
        else:
            (binfmt_dir / "register").write_text(line)
            registered = True
        yield
    finally:
        if registered and entry.exists():
            entry.write_text("-1")
        if mounted:
            subprocess.run(["umount", str(binfmt_dir)], capture_output=True, timeout=30, check=False)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm() -> Callable[[int, FrameType | None], object] | int | None:
    """A killed build (``timeout``, CI cancelling) still restores the host: SIGTERM unwinds."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def _raise(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, _raise)
