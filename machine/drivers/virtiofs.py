"""virtiofs shares for the qemu driver: one ``virtiofsd`` per shared folder, living with the VM.

9p (QEMU's built-in ``-virtfs``) works everywhere but is slow on metadata-heavy work
(``npm install``, ``git status``); virtiofs is a vhost-user device served by a separate
daemon and is much faster.  It is used where a ``virtiofsd`` binary is found (PATH,
``/usr/libexec/virtiofsd``: Debian's and Fedora's package, ``/usr/lib/qemu/virtiofsd``:
the C one QEMU shipped up to 7.x, or ``PYMACHINE_VIRTIOFSD``) on Linux; elsewhere, without
it, or with ``PYMACHINE_VIRTIOFSD=none``, shares stay on 9p.
The choice is made at create and kept in the machine's config, because the guest's fstab
(written once, from the seed) names the file system type.

The daemon's command line and QEMU's side follow the virtiofsd README (gitlab.com/virtio-fs/
virtiofsd, "Usage" and "Running QEMU"; Debian's rust-virtiofsd ships the same file)::

    virtiofsd --socket-path=/tmp/vfsd.sock --shared-dir /path/to/share
    qemu-system-x86_64 -chardev socket,id=char0,path=/tmp/vfsd.sock \\
        -device vhost-user-fs-pci,queue-size=1024,chardev=char0,tag=myfs \\
        -object memory-backend-memfd,id=mem,size=4G,share=on -numa node,memdev=mem

The guest's RAM must be a shared memory backend (vhost-user maps it in the daemon).  As
root the daemon keeps its default namespace sandbox; as a normal user it runs with
``--sandbox=none`` (the README's "Running as non-privileged user": without root it cannot
build the namespace sandbox unless uid maps are set up), so, like 9p with
``security_model=none``, it touches files as that user only.  One daemon serves one
connection and ends when QEMU closes it; :func:`stop_daemons` ends any left over.

QEMU's own C virtiofsd (``/usr/lib/qemu/virtiofsd``, Debian 12's qemu-system-common) takes the
shared directory as ``-o source=DIR`` (its ``--help``) and runs only as root: it is told apart
by its ``--help`` and used as root only; a normal user with only that one shares over 9p.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pymachine.machine.errors import MachineError

#: Where distributions install virtiofsd outside PATH.
CANDIDATES = ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd")
ENV_OVERRIDE = "PYMACHINE_VIRTIOFSD"  # a virtiofsd to use, or "none" for 9p
TRANSPORT_9P = "9p"
TRANSPORT_VIRTIOFS = "virtiofs"
SOCKET_WAIT = 10.0  # seconds for a daemon to listen
QUEUE_SIZE = 1024
MEMORY_ID = "pmmem"


def find_virtiofsd(path: str | None = None, platform: str | None = None,
                   environ: Mapping[str, str] | None = None) -> str | None:
    """The virtiofsd to use, or None (not Linux, none installed, or ``PYMACHINE_VIRTIOFSD=none``;
    ``PYMACHINE_VIRTIOFSD=PATH`` names one)."""
    if (platform or sys.platform) != "linux":
        return None
    chosen = (os.environ if environ is None else environ).get(ENV_OVERRIDE, "")
    if chosen:
        return chosen if chosen != "none" and os.path.isfile(chosen) and os.access(chosen, os.X_OK) else None
    found = shutil.which("virtiofsd", path=path)
    if found:
        return found
    return next((c for c in CANDIDATES if os.path.isfile(c) and os.access(c, os.X_OK)), None)


_FLAVOURS: dict[str, bool] = {}


def is_legacy(binary: str) -> bool:
    """Whether ``binary`` is QEMU's C virtiofsd (``-o source=DIR``, root only) rather than the
    Rust one (``--shared-dir``); asked once per binary through ``--help``."""
    if binary not in _FLAVOURS:
        try:
            out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10, check=False)
            text = out.stdout + out.stderr
        except (OSError, subprocess.SubprocessError):
            text = ""
        # Only the Rust daemon is known to run without root, and it names --shared-dir in its
        # help.  QEMU's C one cannot even print its help as a normal user (setgroups fails
        # first, nothing printed), so anything that does not say --shared-dir counts as legacy.
        _FLAVOURS[binary] = "--shared-dir" not in text
    return _FLAVOURS[binary]


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def choose_transport(shares: Sequence[object], path: str | None = None) -> str:
    """virtiofs when there is something to share and a virtiofsd this user can run is found; else 9p."""
    binary = find_virtiofsd(path) if shares else None
    if binary is None or (is_legacy(binary) and not _as_root()):
        return TRANSPORT_9P
    return TRANSPORT_VIRTIOFS


def socket_path(machine_dir: str, tag: str) -> str:
    return os.path.join(machine_dir, f"{tag}.vfsd.sock")


def _pid_path(machine_dir: str, tag: str) -> str:
    return os.path.join(machine_dir, f"{tag}.vfsd.pid")


def daemon_argv(binary: str, sock: str, host_dir: str, as_root: bool, legacy: bool = False) -> list[str]:
    """One share's virtiofsd command line (``legacy``: QEMU's C virtiofsd)."""
    if legacy:
        return [binary, f"--socket-path={sock}", "-o", f"source={host_dir}"]
    argv = [binary, f"--socket-path={sock}", f"--shared-dir={host_dir}"]
    if not as_root:
        argv.append("--sandbox=none")
    return argv


def qemu_args(machine_dir: str, shares: Sequence[tuple[str, str]], memory_mb: int) -> list[str]:
    """QEMU's side of the shares (host dir, tag): a vhost-user-fs device per share, and the
    guest RAM as a shared memfd backend."""
    args = ["-object", f"memory-backend-memfd,id={MEMORY_ID},size={memory_mb}M,share=on",
            "-numa", f"node,memdev={MEMORY_ID}"]
    for _host_dir, tag in shares:
        args += ["-chardev", f"socket,id={tag},path={socket_path(machine_dir, tag)}",
                 "-device", f"vhost-user-fs-pci,queue-size={QUEUE_SIZE},chardev={tag},tag={tag}"]
    return args


def start_daemons(machine_dir: str, shares: Sequence[tuple[str, str]], binary: str) -> list[int]:
    """Start one virtiofsd per share (detached: it outlives this command, not the VM) and wait,
    bounded, until each listens; on any failure the ones started are stopped and a one-line
    MachineError names the share."""
    stop_daemons(machine_dir, [tag for _host, tag in shares])
    as_root, legacy = _as_root(), is_legacy(binary)
    pids: list[int] = []
    try:
        for host_dir, tag in shares:
            sock = socket_path(machine_dir, tag)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sock)
            with open(os.devnull, "rb") as devnull, open(os.path.join(machine_dir, f"{tag}.vfsd.log"), "ab") as log:
                proc = subprocess.Popen(daemon_argv(binary, sock, host_dir, as_root, legacy), stdin=devnull, stdout=log,
                                        stderr=log, close_fds=True, start_new_session=True)
            Path(_pid_path(machine_dir, tag)).write_text(f"{proc.pid}\n")
            pids.append(proc.pid)
            deadline = time.monotonic() + SOCKET_WAIT
            while not os.path.exists(sock):
                if proc.poll() is not None or time.monotonic() > deadline:
                    why = f"exited with {proc.returncode}" if proc.poll() is not None else "did not listen"
                    raise MachineError(f"virtiofsd for the shared folder {host_dir} {why}; see "
                                       f"{os.path.join(machine_dir, f'{tag}.vfsd.log')} (or share over 9p: "
                                       "remove virtiofsd from PATH and re-create the machine)")
                time.sleep(0.05)
    except BaseException:
        stop_daemons(machine_dir, [tag for _host, tag in shares])
        raise
    return pids


def _is_our_daemon(pid: int, sock: str) -> bool:
    """On Linux, only a process whose command line names this share's socket (pids are reused)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return False
    try:
        return f"--socket-path={sock}".encode() in cmdline.read_bytes()
    except OSError:
        return False


def stop_daemons(machine_dir: str, tags: Sequence[str]) -> None:
    """End the shares' daemons that are still running (they end by themselves when QEMU
    closes their socket); never waits long."""
    for tag in tags:
        pid_file = _pid_path(machine_dir, tag)
        try:
            pid = int(Path(pid_file).read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid and _is_our_daemon(pid, socket_path(machine_dir, tag)):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 2.0
            while _is_our_daemon(pid, socket_path(machine_dir, tag)) and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)
                time.sleep(0.05)
        for path in (pid_file, socket_path(machine_dir, tag)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
