"""VBoxManage as a backend of the ``virtualbox`` driver: find it, run one command
(serialised, retried while VirtualBox says its object is not ready, any ``error:``
on stderr a failure, as docker-machine's vbm.go), and what both backends share.

Its own module so ``virtualbox`` (the driver) and ``vbox_api`` (the SDK backend,
which hands create/rm steps to VBoxManage) both import it and never each other's
internals: :data:`LOCK` is docker-machine's SerialDriver for either backend.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from pymachine.machine.errors import MachineError

VBOXMANAGE = "VBoxManage"
INSTALL_HINT = "VBoxManage not found: install VirtualBox (https://www.virtualbox.org) and put VBoxManage on PATH"
NOT_READY = "error: The object is not ready"
RETRIES = 5
RETRY_DELAY = 0.1
CALL_TIMEOUT = 600.0


class MachineMissing(MachineError):
    """VirtualBox has no VM of this name (``machine does not exist``)."""

    def __init__(self) -> None:
        super().__init__("machine does not exist")



# ----------------------------------------------------------------------------- backend


class VBoxBackend(Protocol):
    """What the driver needs from VirtualBox: run one VBoxManage command."""

    def run(self, args: Sequence[str], stdin: bytes | None = None) -> tuple[str, str]: ...


#: docker-machine's SerialDriver: VBoxManage calls never overlap within a process.
LOCK = threading.RLock()


def find_vboxmanage(environ: Mapping[str, str] | None = None) -> str | None:
    """VBoxManage on PATH, or in VirtualBox's install dir on Windows/macOS."""
    env = os.environ if environ is None else environ
    found = shutil.which(VBOXMANAGE, path=env.get("PATH"))
    if found:
        return found
    candidates = []
    for var in ("VBOX_INSTALL_PATH", "VBOX_MSI_INSTALL_PATH"):
        if env.get(var):
            candidates.append(os.path.join(env[var], "VBoxManage.exe"))
    if sys.platform == "darwin":
        candidates.append("/Applications/VirtualBox.app/Contents/MacOS/VBoxManage")
    return next((c for c in candidates if os.path.isfile(c) and os.access(c, os.X_OK)), None)


class VBoxManageCLI:
    """Runs ``VBoxManage``: serialised, retried while the object is not ready,
    and any stderr containing ``error:`` is a failure, as in docker-machine's vbm.go."""

    def __init__(self, path: str | None = None) -> None:
        self._path = path

    @property
    def path(self) -> str:
        if not self._path:
            self._path = find_vboxmanage()
            if not self._path:
                raise MachineError(INSTALL_HINT)
        return self._path

    def run(self, args: Sequence[str], stdin: bytes | None = None) -> tuple[str, str]:
        argv = [self.path, *args]
        with LOCK:
            for attempt in range(RETRIES):
                try:
                    proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=CALL_TIMEOUT, check=False)
                except OSError as exc:
                    raise MachineError(f"cannot run {self.path}: {exc.strerror}") from None
                except subprocess.TimeoutExpired:
                    raise MachineError(f"VBoxManage {' '.join(args)} did not finish within {CALL_TIMEOUT:g}s") from None
                out = proc.stdout.decode(errors="replace")
                err = proc.stderr.decode(errors="replace")
                if NOT_READY in err and attempt < RETRIES - 1:
                    time.sleep(RETRY_DELAY)
                    continue
                break
        if "error:" in err or proc.returncode != 0:
            if "Could not find a registered machine named" in err:
                raise MachineMissing()
            raise MachineError(f"VBoxManage {' '.join(args)} failed: {error_line(err or out)}")
        return out, err


def error_line(text: str) -> str:
    """The first line that says what went wrong, without the ``VBoxManage: error:`` prefix."""
    for line in text.splitlines():
        if "error:" in line:
            return re.sub(r"^(VBoxManage(\.exe)?: )?error: ", "", line.strip()) or line.strip()
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[-1] if lines else "no output"
