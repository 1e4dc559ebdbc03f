"""The ``qemu`` driver: local VMs with no hypervisor service, no root daemon, no network.

Each machine is one ``qemu-system-x86_64`` (or ``qemu-system-aarch64
-machine virt``) ``-daemonize`` process: a qcow2 overlay on top of the cached
base image of the machine's arch (no copy), direct kernel boot with the
image's own kernel and initrd on x86_64 with SeaBIOS (the fastest path), or
the disk's own boot loader through UEFI firmware (arm64 always, x86_64 with
``--qemu-firmware uefi``), a cloud-init NoCloud seed for the user and key, and
QEMU user networking with two loopback port forwards (SSH and the engine).
The host's arch runs under KVM/hvf when usable; ``--qemu-arch`` picks the
other one, always under TCG (see qemu_firmware).  So the machine's address
is always 127.0.0.1: certificates stay
valid when the forwarded ports change on a restart.

State comes from the pidfile and /proc only, never from SSH: a pid counts
as the machine's QEMU only if its command line names this machine's pidfile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pymachine.machine import layout, urls
from pymachine.machine.atomic import write_atomic
from pymachine.machine.drivers.base import Driver, DriverCapabilities, Flag, Log, State
from pymachine.machine.drivers.settings import Settings, setting
from pymachine.machine.errors import HostNotRunning, MachineError, PreCreateError

if TYPE_CHECKING:  # the image module loads only when a create needs it
    from pymachine.engine.images import ImageCache

QEMU = "qemu-system-x86_64"
QEMU_IMG = "qemu-img"
DEBIAN_PACKAGES = "qemu-system-x86 qemu-utils"
LOOPBACK = "127.0.0.1"
#: How long ``start`` waits for the engine, as docker-machine's start did (``WaitForDocker``):
#: the host agent's first look at it, whose port conflicts ``start`` echoes.  sshd no longer
#: waits for the engine in the image, so SSH alone does not mean the engine is up; the image
#: gives docker.service 150 s to start.
ENGINE_START_WAIT = 150.0
#: Where the guest's engine listens unless told otherwise (see guest_engine_port()).
GUEST_ENGINE_PORT = 2376
#: The root by label: pymachine images from before the bootable layout (a bare ext4 disk) carry the
#: same label, so one command line boots both.
#: apparmor.service is masked on this (direct kernel) path only: on the first boot it compiles every profile
#: Debian ships (for programs the image does not have), measured as the slowest unit under TCG (53 s of
#: a 230 s loaded boot).  The kernel's AppArmor stays on and dockerd still loads and applies its
#: docker-default profile to every container.
#: Two vCPUs unless the host has fewer (Colima's default; Lima takes up to 4).  Under TCG each
#: vCPU is a host thread (multi-threaded TCG), and the first boot runs much in parallel:
#: measured here, create to "Docker is up" 65 s with one vCPU, 40 s with two.
DEFAULT_CPUS = min(2, os.cpu_count() or 1)
KERNEL_APPEND = "console=ttyS0 root=LABEL=pymachine-root rw systemd.mask=apparmor.service"
STOP_TIMEOUT = 60.0
# An emulated (TCG) boot to sshd (which waits for the engine to start) takes 60-120 s on an
# idle host and over 200 s on a loaded one: bounded generously.
SSH_BOOT_TIMEOUT = 480.0
LAUNCH_TIMEOUT = 60.0
KVM_PROBE_TIMEOUT = 8.0
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
MIN_MEMORY_MB = 256
ACCELS = ("auto", "kvm", "hvf", "tcg")
SOCKET_PATH_MAX = 104  # sun_path is 108 bytes on Linux, 104 on macOS
TRUST_KVM_ENV = "PYMACHINE_QEMU_TRUST_KVM"

OVERLAY = layout.QEMU_DISK
SEED = layout.SEED_ISO
PIDFILE = layout.QEMU_PID
QMP_SOCKET = layout.QMP_SOCKET
CONSOLE_LOG = layout.CONSOLE_LOG
QEMU_LOG = layout.QEMU_LOG
SSH_KEY = layout.SSH_KEY
UEFI_VARS = layout.UEFI_VARS
#: The guest's SSH host public key (made by pymachine, delivered on the seed, pinned in known_hosts).
HOST_KEY_PUB = "ssh_host_ed25519_key.pub"
KNOWN_HOSTS = layout.KNOWN_HOSTS


def _cpu_model(arch: str, accel: str) -> str:
    from pymachine.machine.drivers.qemu_firmware import cpu_model

    return cpu_model(arch, accel)


# ----------------------------------------------------------------------------- pure helpers


@dataclass(frozen=True)
class VMSpec:
    """Everything the QEMU command line depends on."""

    machine_dir: str
    cpus: int
    memory_mb: int
    accel: str
    overlay: str
    seed: str
    ssh_port: int
    engine_port: int
    kernel: str = ""
    initrd: str = ""
    append: str = KERNEL_APPEND
    restrict_network: bool = False
    qemu: str = QEMU
    guest_engine_port: int = GUEST_ENGINE_PORT
    #: -machine and -cpu ("" for QEMU's default: pc on x86_64); arm64 needs virt and a CPU model.
    machine: str = ""
    cpu: str = ""
    #: UEFI: the read-only edk2 code and this machine's own copy of its variable store.
    firmware_code: str = ""
    firmware_vars: str = ""
    #: Host folders shared into the guest over 9p: (host dir, mount tag).
    shares: tuple[tuple[str, str], ...] = ()
    #: "9p" (QEMU's -virtfs) or "virtiofs" (a virtiofsd per share: machine/drivers/virtiofs.py).
    share_transport: str = "9p"


def share_tag(index: int) -> str:
    """The 9p mount tag of a machine's ``index``-th share (what the seed's fstab names)."""
    return f"pmshare{index}"


def _shares_from_flags(folders: list[str], no_share: bool) -> list[list[str]]:
    """[[host dir, guest dir], ...] from ``--qemu-share-folder HOST[:GUEST]`` (GUEST defaults to
    the same path, so ``docker run -v $PWD:/src`` works from anywhere under it); with neither
    flag, the user's home at the same path, unless that path is one the guest needs."""
    from pymachine.machine.seed import check_share_target

    if no_share:
        if folders:
            raise MachineError("--qemu-no-share and --qemu-share-folder exclude each other")
        return []
    shares: list[list[str]] = []
    for spec in folders:
        drive = spec[:2] if _looks_like_drive(spec) else ""
        host, sep, guest = spec[len(drive):].partition(":")
        host = os.path.abspath(os.path.expanduser(drive + host)) if host else ""
        if not host:
            raise MachineError(f"--qemu-share-folder needs HOST[:GUEST], got {spec!r}")
        guest = guest if sep else _same_path_in_guest(host)
        try:
            check_share_target(guest)
        except ValueError as exc:
            raise MachineError(f"--qemu-share-folder {spec}: {exc}") from None
        if any(c.isspace() or c in "#," for c in host + guest):
            raise MachineError(f"--qemu-share-folder {spec}: no spaces, '#' or ',' in shared paths")
        shares.append([host, guest])
    if folders:
        return shares
    home = os.path.expanduser("~")
    try:
        check_share_target(_same_path_in_guest(home))
    except ValueError:
        return []  # e.g. root's /root: the guest needs it; share folders explicitly instead
    if any(c.isspace() or c in "#," for c in home) or not os.path.isdir(home):
        return []
    return [[home, _same_path_in_guest(home)]]


def _same_path_in_guest(host: str) -> str:
    """Where a host folder appears in the guest: the same path (C:\\Users\\me as /c/Users/me)."""
    if _looks_like_drive(host):
        return "/" + host[0].lower() + host[2:].replace("\\", "/")
    return host


def _looks_like_drive(spec: str) -> bool:
    return len(spec) > 2 and spec[1] == ":" and spec[0].isalpha() and spec[2] in "\\/"


def qemu_argv(spec: VMSpec) -> list[str]:
    d = spec.machine_dir
    netdev = "user,id=n0"
    if spec.restrict_network:
        netdev += ",restrict=on"
    netdev += (
        f",hostfwd=tcp:{LOOPBACK}:{spec.ssh_port}-:22"
        f",hostfwd=tcp:{LOOPBACK}:{spec.engine_port}-:{spec.guest_engine_port}"
    )
    argv = [
        spec.qemu,
        "-name", f"pymachine-{os.path.basename(d)}",
        *(["-machine", spec.machine] if spec.machine else []),
        "-accel", spec.accel,
        *(["-cpu", spec.cpu] if spec.cpu else []),
        "-smp", str(spec.cpus),
        "-m", f"{spec.memory_mb}M",
        "-nodefaults",
        "-display", "none",
        "-drive", f"file={spec.overlay},if=virtio,format=qcow2,discard=unmap",
        # The seed rides on virtio too: its driver is in the initrd, so the
        # volume is there before cloud-init looks (a cdrom needs more modules).
        "-drive", f"file={spec.seed},if=virtio,format=raw,readonly=on",
        "-netdev", netdev,
        "-device", "virtio-net-pci,netdev=n0",
        "-device", "virtio-rng-pci",
        "-serial", f"file:{os.path.join(d, CONSOLE_LOG)}",
        "-qmp", f"unix:{os.path.join(d, QMP_SOCKET)},server=on,wait=off",
        "-pidfile", os.path.join(d, PIDFILE),
        "-daemonize",
    ]
    if spec.shares and spec.share_transport == "virtiofs":
        from pymachine.machine.drivers import virtiofs

        argv += virtiofs.qemu_args(d, spec.shares, spec.memory_mb)
    else:
        for host_dir, tag in spec.shares:
            # 9p is built into QEMU on Linux and macOS; security_model=none keeps the host user's
            # ownership on files the guest writes (QEMU runs as that user, never as root for it).
            argv += ["-virtfs", f"local,path={host_dir},mount_tag={tag},security_model=none,id={tag}"]
    if spec.firmware_code:
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={spec.firmware_code}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={spec.firmware_vars}"]
    if spec.kernel:
        argv += ["-kernel", spec.kernel, "-append", spec.append]
        if spec.initrd:
            argv += ["-initrd", spec.initrd]
    return argv


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether QEMU could bind ``host:port`` (slirp binds with SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(exclude: tuple[int, ...] = ()) -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
        if port not in exclude:
            return port
    raise MachineError("could not find a free loopback port")


def pick_ports(fixed_ssh: int, fixed_engine: int, previous: tuple[int, int] = (0, 0)) -> tuple[int, int]:
    """Ports for (ssh, engine): fixed ones must be free; otherwise keep the
    previous ones if still free, else pick new free ones."""
    chosen: list[int] = []
    for fixed, prev, what in ((fixed_ssh, previous[0], "SSH"), (fixed_engine, previous[1], "engine")):
        if fixed:
            if fixed in chosen or not port_is_free(fixed):
                raise MachineError(f"the {what} port {LOOPBACK}:{fixed} is already in use")
            chosen.append(fixed)
        elif prev and prev not in chosen and port_is_free(prev):
            chosen.append(prev)
        else:
            chosen.append(free_port(exclude=tuple(chosen)))
    return chosen[0], chosen[1]


def kvm_usable(device: str = "/dev/kvm") -> tuple[bool, str]:
    """(usable, reason): /dev/kvm opens read-write and speaks API version 12."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"{device}: {exc.strerror}"
    try:
        import fcntl  # POSIX only; /dev/kvm exists only where it is (Linux)

        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
    except OSError as exc:
        return False, f"{device}: KVM_GET_API_VERSION failed: {exc.strerror}"
    finally:
        os.close(fd)
    if version != KVM_API_VERSION:
        return False, f"{device}: unexpected KVM API version {version}"
    return True, ""


def probe_kvm(kernel: str, qemu: str = QEMU, timeout: float = KVM_PROBE_TIMEOUT) -> tuple[bool, str]:
    """Boot the kernel under KVM with no root disk: it must reach its panic and
    exit quickly.  Nested KVM that hangs at run time fails this (bounded)."""
    if not kernel:
        return False, "no kernel to probe KVM with"
    argv = [qemu, "-accel", "kvm", "-m", "128M", "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", "stdio", "-kernel", kernel,
            "-append", "console=ttyS0 panic=-1 root=/dev/pymachine-kvm-probe"]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, f"a KVM test boot did not finish within {timeout:g}s"
    except OSError as exc:
        return False, f"cannot run {qemu}: {exc.strerror}"
    if b"Kernel panic" in proc.stdout or b"VFS:" in proc.stdout:
        return True, ""
    tail = proc.stderr.decode(errors="replace").strip().splitlines()
    return False, f"a KVM test boot failed: {tail[-1] if tail else f'exit {proc.returncode}'}"


def kvm_probe_cache(store_path: str = "") -> Path:
    """Where the KVM probe's answer is kept: one file per user whatever the store
    (``store_path`` is not used), in the runtime dir (emptied at boot) or else the
    user's cache dir; entries are keyed by the boot id, so a reboot probes again."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if not runtime and hasattr(os, "geteuid") and os.geteuid() == 0 and os.path.isdir("/run"):
        runtime = "/run/pymachine"
    if runtime:
        return Path(runtime) / "qemu-kvm-probe.json"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "pymachine" / "qemu-kvm-probe.json"


def cached_probe(cache_file: Path, kernel: str, qemu: str = QEMU) -> tuple[bool, str]:
    """probe_kvm, remembered per host boot and QEMU binary (it costs up to 8 s): at most one
    probe per boot, whichever store or image asks (``kernel`` is only what it boots)."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = ""
    key = f"{boot_id}|{shutil.which(qemu) or qemu}"
    try:
        saved = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        saved = {}
    if isinstance(saved, dict) and key in saved and boot_id:
        ok, reason = saved[key]
        return bool(ok), str(reason)
    ok, reason = probe_kvm(kernel, qemu)
    try:
        cache_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(cache_file, json.dumps({key: [ok, reason]}).encode(), 0o600)
    except OSError:
        pass
    return ok, reason


def choose_accel(
    requested: str,
    *,
    platform: str = sys.platform,
    kvm_check: Callable[[], tuple[bool, str]] = kvm_usable,
    probe: Callable[[], tuple[bool, str]] = lambda: (False, "no probe"),
    environ: Mapping[str, str] = os.environ,
) -> tuple[str, str | None]:
    """(accelerator, warning or None).

    auto means KVM only when /dev/kvm works *and* a short test boot under it
    finishes (nested KVM can pass the ioctl and then hang), unless
    PYMACHINE_QEMU_TRUST_KVM=1 skips the test boot; otherwise TCG, with a warning.
    """
    if requested not in ACCELS:
        raise PreCreateError(f"--qemu-accel must be one of {', '.join(ACCELS)}, got {requested!r}")
    if requested == "tcg":
        return "tcg", None
    if requested == "hvf":
        if platform != "darwin":
            raise PreCreateError("--qemu-accel hvf is only available on macOS")
        return "hvf", None
    if platform == "darwin":
        return ("hvf", None) if requested == "auto" else ("kvm", None)
    ok, reason = kvm_check()
    if requested == "kvm":
        if not ok:
            raise PreCreateError(f"KVM is not usable: {reason}")
        return "kvm", None
    if ok and environ.get(TRUST_KVM_ENV, "").strip().lower() not in ("1", "true", "yes", "on"):
        ok, reason = probe()
    if ok:
        return "kvm", None
    return "tcg", f"KVM is not usable ({reason}); using TCG software emulation, which is much slower"


def parse_checksum(value: str) -> str:
    """The hex digest of a ``sha256:HEX``/``sha512:HEX``/bare-hex checksum."""
    from pymachine.engine.download import parse_digest

    try:
        return parse_digest(value).hex
    except MachineError:
        raise PreCreateError(f"--qemu-image-checksum must be a sha256 or sha512 digest "
                             f"(sha256:HEX, sha512:HEX, bare hex) or sums:URL, got {value!r}") from None


def verify_local_image(path: str, checksum: str) -> None:
    """Refuse a local image whose digest differs from ``checksum`` (one line, both digests)."""
    import hashlib

    from pymachine.engine.download import expected_digest, sums_url

    if sums_url(checksum) is None:
        parse_checksum(checksum)
    try:
        want = expected_digest(checksum, "file://" + path)
    except MachineError as exc:
        raise PreCreateError(str(exc)) from None
    if want is None:
        return
    digest = hashlib.new(want.algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != want.hex:
        raise PreCreateError(
            f"checksum mismatch for QEMU image {path}: expected {want}, got {want.algo}:{digest.hexdigest()}"
        )


@dataclass(frozen=True)
class BaseImage:
    disk: str
    format: str
    virtual_size: int
    kernel: str = ""
    initrd: str = ""
    #: pymachine's own image (a build with its manifest): Debian, docker.io, the first-boot unit.
    pymachine: bool = False


def image_info(path: str) -> tuple[str, int]:
    """(format, virtual size in bytes) from ``qemu-img info``."""
    try:
        proc = subprocess.run([QEMU_IMG, "info", "--output=json", path], capture_output=True, text=True,
                              timeout=60, check=False)
    except OSError:
        raise PreCreateError(f"{QEMU_IMG} not found: install the Debian packages {DEBIAN_PACKAGES}") from None
    if proc.returncode != 0:
        raise PreCreateError(f"not a disk image QEMU can read: {path}")
    info = json.loads(proc.stdout)
    return str(info.get("format", "raw")), int(info.get("virtual-size", 0))


def image_from_path(path: str) -> BaseImage:
    """A pymachine image directory (disk.qcow2 + vmlinuz + initrd.img) or a disk file.

    A disk file with ``vmlinuz``/``initrd.img`` beside it boots them directly;
    one without boots through the firmware (its own boot loader).
    """
    from pymachine.engine.images import DISK_NAME

    p = Path(path).expanduser()
    if not p.exists():
        raise PreCreateError(f"QEMU image not found: {path}")
    if p.is_dir():
        directory, disk = p, p / DISK_NAME
        if not disk.is_file():
            raise PreCreateError(f"QEMU image directory has no {DISK_NAME}: {path}")
    else:
        directory, disk = p.parent, p
    kernel, initrd = directory / "vmlinuz", directory / "initrd.img"
    fmt, size = image_info(str(disk))
    return BaseImage(
        disk=str(disk.resolve()), format=fmt, virtual_size=size,
        kernel=str(kernel.resolve()) if kernel.is_file() else "",
        initrd=str(initrd.resolve()) if kernel.is_file() and initrd.is_file() else "",
        pymachine=(directory / "manifest.json").is_file() and disk.name == DISK_NAME,
    )


def _is_url(value: str) -> bool:
    return urlsplit(value).scheme.lower() in ("http", "https", "ftp")


# ----------------------------------------------------------------------------- process helpers


def ssh_banner(port: int, timeout: float = 3.0) -> bool:
    """True once the guest's sshd answers: QEMU accepts on the forward at once,
    so a TCP connect alone proves nothing; the ``SSH-`` banner does."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _read_pid(pidfile: str) -> int | None:
    try:
        text = Path(pidfile).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _is_our_qemu(pid: int, pidfile: str) -> bool:
    """The pid is alive (not a zombie) and its command line names our pidfile."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return False
    return bool(cmdline) and b"qemu-system" in os.path.basename(cmdline[0]) and pidfile.encode() in cmdline


def _alive(pid: int) -> bool:
    """The process still exists with a live thread.

    After SIGKILL a multi-threaded QEMU's main thread turns zombie while its
    other threads still hold the sockets (port forwards); only when they are
    gone are the ports free again.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"]):
            return True
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait for a process already known to be ours to end (not just to lose its cmdline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


# ----------------------------------------------------------------------------- the driver


@dataclasses.dataclass
class QemuSettings(Settings):
    cpu: int = setting("CPU", 1)
    memory: int = setting("Memory", 1024)
    disk_size: int = setting("DiskSize", 20000)
    image_source: str = setting("ImageSource", "")
    image_checksum: str = setting("ImageChecksum", "")
    accel: str = setting("Accel", "auto")
    accel_used: str = setting("AccelUsed", "")
    engine_port: int = setting("EnginePort", 0)
    fixed_ssh_port: int = setting("FixedSSHPort", 0)
    fixed_engine_port: int = setting("FixedEnginePort", 0)
    restrict_network: bool = setting("RestrictNetwork", False)
    base_disk: str = setting("BaseDisk", "")
    base_format: str = setting("BaseFormat", "")
    kernel: str = setting("Kernel", "")
    initrd: str = setting("Initrd", "")
    kernel_append: str = setting("KernelAppend", "")
    qemu_binary: str = setting("QemuBinary", QEMU)
    guest_engine_port: int = setting("GuestEnginePort", 0)
    engine_seeded: bool = setting("EngineSeeded", False)
    arch: str = setting("Arch", "")
    firmware: str = setting("Firmware", "")
    machine: str = setting("Machine", "")
    firmware_code: str = setting("FirmwareCode", "")
    shares: list[list[str]] = setting("Shares", [], item=list)
    #: How the shares reach the guest, chosen at create (the guest's fstab names it): "9p" or "virtiofs".
    share_transport: str = setting("ShareTransport", "9p", absent=True)


class QemuDriver(Driver):
    settings_class = QemuSettings
    settings: QemuSettings
    name = "qemu"
    default_ssh_user = "docker"
    capabilities = DriverCapabilities(start=True, stop=True, restart=True, kill=True, seed=True, shares=True,
                                      port_forwards=True, own_engine_url=True, install_source="preinstalled")

    @property
    def default_install_source(self) -> str:
        """pymachine's own image carries the engine; a foreign cloud image needs it installed."""
        source = self.settings.image_source
        if not source:
            return "preinstalled"
        if "://" in source:
            return "packages"
        return "preinstalled" if os.path.isfile(os.path.join(source, "manifest.json")) else "packages"
    flags = (
        Flag("qemu-cpu-count", "int", DEFAULT_CPUS, "QEMU_CPU_COUNT",
             "Number of virtual CPUs (default: 2, or the host's count if it has fewer)"),
        Flag("qemu-memory", "int", 1024, "QEMU_MEMORY", "Memory in MB"),
        Flag("qemu-disk-size", "int", 20000, "QEMU_DISK_SIZE", "Disk size in MB"),
        Flag(
            "qemu-image",
            "string",
            "",
            "QEMU_IMAGE",
            "Image directory, disk file or http(s) URL of a qcow2/raw cloud image (default: pymachine's "
            "own Debian image, built and cached on first use)",
        ),
        Flag(
            "qemu-image-checksum",
            "string",
            "",
            "QEMU_IMAGE_CHECKSUM",
            "Digest of the image's disk file: sha256:HEX, sha512:HEX, bare hex, or sums:URL of a SHA256SUMS file",
        ),
        Flag("qemu-accel", "string", "auto", "QEMU_ACCEL", "Accelerator: auto, kvm, hvf or tcg"),
        Flag(
            "qemu-arch",
            "string",
            "",
            "QEMU_ARCH",
            "Guest architecture: amd64 or arm64 (default: the host's; the other one runs under TCG)",
        ),
        Flag(
            "qemu-firmware",
            "string",
            "",
            "QEMU_FIRMWARE",
            "Firmware: bios or uefi on amd64 (default bios, booting the image's kernel directly); arm64: uefi",
        ),
        Flag(
            "qemu-ssh-port",
            "int",
            0,
            "QEMU_SSH_PORT",
            "Loopback port forwarded to the guest's SSH (0: pick a free one)",
        ),
        Flag(
            "qemu-engine-port",
            "int",
            0,
            "QEMU_ENGINE_PORT",
            "Loopback port forwarded to the guest's engine (0: pick a free one)",
        ),
        Flag(
            "qemu-share-folder",
            "list",
            [],
            None,
            "HOST[:GUEST] folder shared into the guest over 9p (repeatable; default: your home at the same path)",
        ),
        Flag("qemu-no-share", "bool", False, "QEMU_NO_SHARE", "Share no host folder (not even your home)"),
        Flag(
            "qemu-restrict-network",
            "bool",
            False,
            "QEMU_RESTRICT_NETWORK",
            "Isolate the guest: no traffic leaves it except the two port forwards",
        ),
    )

    def set_config_from_flags(self, values: Mapping[str, Any]) -> None:
        for flag in ("qemu-ssh-port", "qemu-engine-port"):
            port = values.get(flag, 0)
            if not isinstance(port, int) or not 0 <= port < 65536:
                raise MachineError(f"--{flag} must be a port number between 0 and 65535, got {port!r}")
        for flag in ("qemu-cpu-count", "qemu-memory", "qemu-disk-size"):
            if not isinstance(values.get(flag, 1), int) or values.get(flag, 1) < 1:
                raise MachineError(f"--{flag} must be a positive number, got {values.get(flag)!r}")
        accel = str(values.get("qemu-accel") or "auto")
        if accel not in ACCELS:
            raise MachineError(f"--qemu-accel must be one of {', '.join(ACCELS)}, got {accel!r}")
        from pymachine.machine.drivers import qemu_firmware as fw

        arch = fw.check_arch(str(values.get("qemu-arch") or ""))
        firmware = fw.check_firmware(str(values.get("qemu-firmware") or ""), arch)
        spec = fw.SPECS[arch]
        self.settings.update(
            arch=arch, firmware=firmware, machine=spec.machine, qemu_binary=spec.binary,
            ip_address=LOOPBACK,
            ssh_user=self.default_ssh_user,
            cpu=int(values.get("qemu-cpu-count", DEFAULT_CPUS)),
            memory=int(values.get("qemu-memory", 1024)),
            disk_size=int(values.get("qemu-disk-size", 20000)),
            image_source=str(values.get("qemu-image") or ""),
            image_checksum=str(values.get("qemu-image-checksum") or ""),
            accel=accel,
            fixed_ssh_port=int(values.get("qemu-ssh-port", 0)),
            fixed_engine_port=int(values.get("qemu-engine-port", 0)),
            ssh_port=int(values.get("qemu-ssh-port", 0)),
            engine_port=int(values.get("qemu-engine-port", 0)),
            restrict_network=bool(values.get("qemu-restrict-network", False)),
            shares=_shares_from_flags(list(values.get("qemu-share-folder") or []),
                                      bool(values.get("qemu-no-share", False))),
        )

    # -- paths ---------------------------------------------------------------------------
    def _path(self, name: str) -> str:
        return os.path.join(self.machine_dir, name)

    @property
    def pidfile(self) -> str:
        return self._path(PIDFILE)

    def ip(self) -> str:
        return LOOPBACK

    def ssh_address(self) -> tuple[str, int, str, str]:
        return (LOOPBACK, self.settings.ssh_port, str(self.settings.ssh_user or "docker"),
                str(self.settings.ssh_key_path or self._path(SSH_KEY)))

    @property
    def engine_port(self) -> int:
        return self.settings.engine_port

    def engine_url(self) -> str:
        return urls.engine_url(LOOPBACK, self.engine_port, self.machine_name)

    def guest_engine_port(self) -> int:
        """The port the engine listens on inside the guest.

        Provisioning configures the engine on the URL's port, so the guest
        port is fixed to the host port chosen at create; if the host port
        must change on a later start, only the forward's host side moves.
        """
        return self.settings.guest_engine_port or self.engine_port or GUEST_ENGINE_PORT

    # -- checks --------------------------------------------------------------------------
    def _default_cache(self) -> ImageCache:
        from pymachine.engine.images import default_cache_dir

        return default_cache_dir(self.store_path)

    def _arch(self) -> str:
        return str(self.settings.arch or "amd64")  # machines from before arm64 are amd64

    def pre_create_check(self) -> None:
        from pymachine.machine.drivers import qemu_firmware as fw

        arch = self._arch()
        packages = fw.SPECS[arch].debian_packages
        for tool in (str(self.settings.qemu_binary or QEMU), QEMU_IMG):
            if shutil.which(tool) is None:
                raise PreCreateError(f"{tool} not found: install the Debian packages {packages}")
        if self.settings.firmware == "uefi":
            fw.find_uefi(arch)
        fw.accel_for(arch, str(self.settings.accel or "auto"))
        for host_dir, _guest in self.settings.shares or []:
            if not os.path.isdir(str(host_dir)):
                raise PreCreateError(f"--qemu-share-folder: {host_dir} is not a directory on this host")
        memory = self.settings.memory
        if memory < MIN_MEMORY_MB:
            raise PreCreateError(f"--qemu-memory must be at least {MIN_MEMORY_MB} MB, got {memory}")
        if len(self._path(QMP_SOCKET)) > SOCKET_PATH_MAX:
            raise PreCreateError(
                f"the machine directory path is too long for QEMU's monitor socket: {self.machine_dir}"
            )
        source = self.settings.image_source
        image = None
        if source and _is_url(source):
            # Downloaded (and verified) at create; here only the checksum's form is checked.
            from pymachine.engine.download import parse_digest, sums_url

            checksum = self.settings.image_checksum
            if checksum and sums_url(checksum) is None:
                try:
                    parse_digest(checksum)
                except MachineError as exc:
                    raise PreCreateError(f"--qemu-image-checksum: {exc}") from None
        elif source:
            image = image_from_path(source.removeprefix("file://"))
        else:
            from pymachine.engine.images import find_image, why_not_buildable

            built = find_image(self._default_cache(), arch)
            if built is not None:
                image = BaseImage(
                    str(built.disk), "qcow2", built.virtual_size, str(built.kernel), str(built.initrd), True
                )
            else:
                reason = why_not_buildable(arch)
                if reason:
                    from pymachine.engine.userns_build import MODE_USER, build_mode

                    flag = "" if arch == fw.host_arch() else f" --arch {arch}"
                    # A normal user's fix is in the reason: root's build would land in root's cache.
                    how = "" if build_mode() == MODE_USER else f": run `pymachine image build{flag}` as root"
                    raise PreCreateError(f"pymachine's {arch} base image is not built yet and {reason}{how}, "
                                         "or pass --qemu-image")
        if image is not None:
            self._check_disk_size(image)
            checksum = self.settings.image_checksum
            if checksum:
                verify_local_image(image.disk, checksum)
        elif self.settings.image_checksum and not _is_url(source):
            parse_checksum(self.settings.image_checksum)
        accel = str(self.settings.accel or "auto")
        if accel in ("kvm", "hvf") and arch == fw.host_arch():
            choose_accel(accel)
        for port, what in ((self.settings.fixed_ssh_port, "SSH"), (self.settings.fixed_engine_port, "engine")):
            if port and not port_is_free(port):
                raise PreCreateError(f"the {what} port {LOOPBACK}:{port} is already in use")
        if self.settings.fixed_ssh_port and self.settings.fixed_ssh_port == self.settings.fixed_engine_port:
            raise PreCreateError("--qemu-ssh-port and --qemu-engine-port must differ")

    def _check_disk_size(self, image: BaseImage) -> None:
        want = self.settings.disk_size * 1024 * 1024
        if want < image.virtual_size:
            need = -(-image.virtual_size // (1024 * 1024))
            raise PreCreateError(f"--qemu-disk-size must be at least the image's size, {need} MB")

    # -- create ---------------------------------------------------------------------------
    def _resolve_image(self, log: Log) -> BaseImage:
        source = self.settings.image_source
        if source and _is_url(source):
            from pymachine.engine.download import fetch

            path = fetch(source, self._default_cache().directory, self.settings.image_checksum,
                         lambda m: log(f"({self.machine_name}) {m}"))
            return image_from_path(str(path))
        if source:
            return image_from_path(source.removeprefix("file://"))
        from pymachine.engine.images import build_image, stderr_log

        log(f"({self.machine_name}) Using pymachine's base image (built on first use; this can take minutes)...")
        built = build_image(self._default_cache(), stderr_log, self._arch())
        return BaseImage(str(built.disk), "qcow2", built.virtual_size, str(built.kernel), str(built.initrd), True)

    def seed_addresses(self) -> list[str]:
        """Picks the SSH and engine ports now: the guest engine port goes into the
        first-boot drop-in and the server certificate is for 127.0.0.1."""
        if not self.settings.ssh_port or not self.settings.engine_port:
            ssh_port, engine_port = pick_ports(self.settings.fixed_ssh_port,
                                               self.settings.fixed_engine_port)
            self.settings.update(ssh_port=ssh_port, engine_port=engine_port, guest_engine_port=engine_port)
        return [LOOPBACK]

    def create(self, log: Log) -> None:
        from pymachine.machine import certs
        from pymachine.machine.drivers import qemu_firmware as fw
        from pymachine.machine.seed import write_seed_iso

        t0 = time.monotonic()
        image = self._resolve_image(log)
        self._check_disk_size(image)
        arch = self._arch()
        # Direct kernel boot is the fast path under SeaBIOS; through UEFI the disk's own
        # shim and GRUB boot it (the path VirtualBox, VMware and Macs take).
        direct = bool(image.kernel) and self.settings.firmware != "uefi"
        self.settings.update(base_disk=image.disk, base_format=image.format, kernel=image.kernel if direct else "",
                           initrd=image.initrd if direct else "", kernel_append=KERNEL_APPEND if direct else "")
        accel, warning = fw.accel_for(arch, str(self.settings.accel or "auto")), None
        if accel is None:
            accel, warning = choose_accel(
                str(self.settings.accel or "auto"),
                probe=lambda: cached_probe(kvm_probe_cache(), image.kernel,
                                           str(self.settings.qemu_binary or QEMU)),
            )
        if warning:
            log(f"({self.machine_name}) Warning: {warning}")
        self.settings.accel_used = accel
        os.makedirs(self.machine_dir, mode=0o700, exist_ok=True)
        if self.settings.firmware == "uefi":
            code, variables = fw.find_uefi(arch)
            shutil.copyfile(variables, self._path(UEFI_VARS))  # the machine's own boot entries
            os.chmod(self._path(UEFI_VARS), 0o600)
            self.settings.firmware_code = code
        log(f"({self.machine_name}) Creating SSH key...")
        key = Path(self._path(SSH_KEY))
        certs.generate_ssh_keypair(key)
        self.settings.ssh_key_path = str(key)
        self.seed_addresses()  # the ports (already picked when the host rendered the first-boot plan)
        host_key = None
        if image.pymachine:  # pymachine's image installs the seeded host key: pin it before any connection
            from pymachine.machine.seed import new_host_key

            host_key = new_host_key()
            write_atomic(self._path(HOST_KEY_PUB), (host_key[1].strip() + "\n").encode(), 0o600)
            self._pin_host_key()
        # The host's first-boot plan: its engine files only where pymachine's first-boot script
        # installs them (a cloud image gets the proxy through cloud-init's user-data).
        plan = self.first_boot
        self.settings.engine_seeded = bool(plan and image.pymachine)
        write_seed_iso(
            self._path(SEED), hostname=self.machine_name, user=str(self.settings.ssh_user or "docker"),
            ssh_pubkey=Path(str(key) + ".pub").read_text(), proxy=plan.proxy_settings() if plan else None,
            instance_id=f"pymachine-{self.machine_name}-{uuid.uuid4().hex[:12]}",
            first_boot=plan if image.pymachine else None, host_key=host_key,
            shares=[(self._choose_share_transport(), share_tag(i), str(guest))
                    for i, (_host, guest) in enumerate(self.settings.shares or [])],
        )
        log(f"({self.machine_name}) Creating a {self.settings.disk_size} MB disk backed by {image.disk}...")
        self._run_img(["create", "-q", "-f", "qcow2", "-F", image.format, "-b", image.disk,
                       self._path(OVERLAY), f"{self.settings.disk_size}M"])
        prep = time.monotonic() - t0
        log(f"({self.machine_name}) Starting the VM ({accel}, {self.settings.cpu} CPU"
            f"{'s' if self.settings.cpu != 1 else ''}, {self.settings.memory} MB)...")
        self.launch(log)
        boot = self.wait_for_ssh(log)
        log(f"({self.machine_name}) VM up: prepare {prep:.1f}s, boot to SSH {boot:.1f}s; "
            f"SSH on {LOOPBACK}:{self.settings.ssh_port}, engine on {LOOPBACK}:{self.engine_port}")

    def _run_img(self, args: list[str]) -> None:
        try:
            proc = subprocess.run([QEMU_IMG, *args], capture_output=True, text=True, timeout=120, check=False)
        except OSError:
            raise MachineError(f"{QEMU_IMG} not found: install the Debian packages {DEBIAN_PACKAGES}") from None
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()
            raise MachineError(f"qemu-img {args[0]} failed: {tail[-1] if tail else proc.returncode}")

    # -- process -----------------------------------------------------------------------
    def spec(self) -> VMSpec:
        c = self.settings
        return VMSpec(
            machine_dir=self.machine_dir, cpus=int(c.cpu or 1), memory_mb=int(c.memory or 1024),
            accel=str(c.accel_used or "tcg"), overlay=self._path(OVERLAY), seed=self._path(SEED),
            ssh_port=int(c.ssh_port or 0), engine_port=int(c.engine_port or 0),
            kernel=str(c.kernel or ""), initrd=str(c.initrd or ""),
            append=str(c.kernel_append or KERNEL_APPEND), restrict_network=bool(c.restrict_network),
            qemu=str(c.qemu_binary or QEMU), guest_engine_port=self.guest_engine_port(),
            machine=str(c.machine or ""),
            cpu=_cpu_model(str(c.arch or "amd64"), str(c.accel_used or "tcg")),
            firmware_code=str(c.firmware_code or ""),
            firmware_vars=self._path(UEFI_VARS) if c.firmware_code else "",
            shares=tuple((str(host), share_tag(i)) for i, (host, _guest) in enumerate(c.shares or [])),
            share_transport=str(c.share_transport or "9p"),
        )

    def _choose_share_transport(self) -> str:
        """virtiofs where virtiofsd is found, else 9p; kept, as the guest's fstab will name it."""
        from pymachine.machine.drivers import virtiofs

        self.settings.share_transport = virtiofs.choose_transport(self.settings.shares or [])
        return self.settings.share_transport

    def _stop_share_daemons(self) -> None:
        if self.settings.share_transport == "virtiofs":
            from pymachine.machine.drivers import virtiofs

            virtiofs.stop_daemons(self.machine_dir, [share_tag(i) for i in range(len(self.settings.shares or []))])

    def _start_share_daemons(self, spec: VMSpec) -> VMSpec:
        """A virtiofsd per share before QEMU connects to it; without virtiofsd now (uninstalled
        since create), the VM boots without its shares (the guest's fstab has ``nofail``)."""
        if spec.share_transport != "virtiofs" or not spec.shares:
            return spec
        from pymachine.machine.drivers import virtiofs

        binary = virtiofs.find_virtiofsd()
        if binary is None:
            sys.stderr.write(f"({self.machine_name}) virtiofsd is not installed any more: the shared folders "
                             "are not mounted this time (install it, or re-create the machine to share over 9p)\n")
            return dataclasses.replace(spec, shares=())
        virtiofs.start_daemons(self.machine_dir, spec.shares, binary)
        return spec

    def launch(self, log: Log) -> None:
        """Start QEMU (daemonized) on the saved ports, or new ones if those are taken; no wait."""
        for path in (self.pidfile, self._path(QMP_SOCKET)):
            if os.path.lexists(path):
                os.unlink(path)
        fixed = (self.settings.fixed_ssh_port, self.settings.fixed_engine_port)
        previous = (self.settings.ssh_port, self.settings.engine_port)
        for attempt in range(3):
            ssh_port, engine_port = pick_ports(*fixed, previous=previous)
            if (ssh_port, engine_port) != previous and any(previous):
                log(f"({self.machine_name}) Ports changed: SSH {LOOPBACK}:{ssh_port}, engine {LOOPBACK}:{engine_port}")
            self.settings.update(ssh_port=ssh_port, engine_port=engine_port)
            if not self.settings.guest_engine_port:
                self.settings.guest_engine_port = engine_port
            self._pin_host_key()
            error = self._spawn()
            if error is None:
                self._start_host_agent()
                return
            # A port grabbed by someone else between the check and QEMU's bind: pick again.
            if "forwarding rule" in error and not all(fixed) and attempt < 2:
                previous = (0, 0)
                continue
            raise MachineError(f"QEMU failed to start: {error}")

    def _pin_host_key(self) -> None:
        """Pin the guest's seeded host key for the SSH forward's current port (a restart on
        another port too), so every connection verifies it and none trusts on first use."""
        try:
            public = Path(self._path(HOST_KEY_PUB)).read_text().strip()
        except OSError:
            return  # a foreign image makes its own keys: pinned on first use
        port = self.settings.ssh_port
        if not public or not port:
            return
        name = f"[{LOOPBACK}]:{port}"
        path = Path(self._path(KNOWN_HOSTS))
        lines = path.read_text().splitlines() if path.exists() else []
        wanted = f"{name} {public}"
        if wanted in lines:
            return
        kept = [line for line in lines if line.split(" ", 1)[0] != name]
        write_atomic(path, ("\n".join([*kept, wanted]) + "\n").encode(), 0o600)

    def _spawn(self) -> str | None:
        spec = self._start_share_daemons(self.spec())
        try:
            error = self._spawn_qemu(spec)
        except BaseException:
            self._stop_share_daemons()
            raise
        if error is not None:
            self._stop_share_daemons()  # they would wait for a QEMU that never came
        return error

    def _spawn_qemu(self, spec: VMSpec) -> str | None:
        argv = qemu_argv(spec)
        with open(self._path(QEMU_LOG), "wb") as logf:
            try:
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                      timeout=LAUNCH_TIMEOUT, check=False, start_new_session=True)
            except FileNotFoundError:
                raise MachineError(f"{argv[0]} not found: install the Debian packages {DEBIAN_PACKAGES}") from None
            except subprocess.TimeoutExpired:
                return f"{argv[0]} did not daemonize within {LAUNCH_TIMEOUT:g}s"
        if proc.returncode == 0 and self._pid() is not None:
            return None
        lines = Path(self._path(QEMU_LOG)).read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {proc.returncode}"

    def _pid(self) -> int | None:
        pid = _read_pid(self.pidfile)
        return pid if pid is not None and _is_our_qemu(pid, self.pidfile) else None

    # -- lifecycle -----------------------------------------------------------------------
    def local_state(self) -> State:
        return State.RUNNING if self._pid() is not None else State.STOPPED

    def state(self, timeout: float = 10.0) -> State:
        return self.local_state()

    def url(self) -> str:
        if self.local_state() != State.RUNNING:
            raise HostNotRunning()
        return self.engine_url()

    def running_url(self) -> str:
        return self.engine_url()

    def start(self, log: Log) -> None:
        if self._pid() is not None:
            return
        if not os.path.exists(self._path(OVERLAY)):
            raise MachineError(f"the machine's disk is missing: {self._path(OVERLAY)}")
        self.launch(log)
        self.wait_for_ssh(log)
        self._report_forward_conflicts(wait=ENGINE_START_WAIT)  # containers the engine restarts at boot

    def wait_for_ssh(self, log: Log, timeout: float = SSH_BOOT_TIMEOUT) -> float:
        """Wait (bounded) until the guest's sshd answers; returns the seconds waited."""
        log(f"({self.machine_name}) Waiting for the guest to boot (SSH on {LOOPBACK}:{self.settings.ssh_port})...")
        started = time.monotonic()
        deadline = started + timeout
        port = self.settings.ssh_port
        from pymachine.machine.progress import Task

        with Task(f"({self.machine_name}) Booting", lines=False) as waiting:  # elapsed, live on a terminal
            while time.monotonic() < deadline:
                if self._pid() is None:
                    raise MachineError(f"QEMU exited while the guest was booting; see {self._path(CONSOLE_LOG)}")
                if ssh_banner(port):
                    return time.monotonic() - started
                waiting.tick()
                time.sleep(1.0)
        raise MachineError(f"the guest's SSH did not answer within {timeout:g}s; see {self._path(CONSOLE_LOG)}")

    def stop(self, log: Log) -> None:
        """ACPI power button through QMP; the guest gets STOP_TIMEOUT seconds, then is killed."""
        from pymachine.machine.qmp import QMPError, qmp_command

        pid = self._pid()
        if pid is None:
            self._cleanup_runtime()
            return
        try:
            qmp_command(self._path(QMP_SOCKET), "system_powerdown")
        except QMPError as exc:
            log(f"({self.machine_name}) Could not ask the guest to power down ({exc}); killing it")
            self._kill_pid(pid)
            return
        if not _wait_gone(pid, STOP_TIMEOUT):
            log(f"({self.machine_name}) The guest did not power down within {STOP_TIMEOUT:g}s; killing it")
            self._kill_pid(pid)
        self._cleanup_runtime()

    def restart(self, log: Log) -> None:
        self.stop(log)
        self.start(log)

    def kill(self, log: Log) -> None:
        pid = self._pid()
        if pid is not None:
            self._kill_pid(pid)
        self._cleanup_runtime()

    def _kill_pid(self, pid: int) -> None:
        if not _is_our_qemu(pid, self.pidfile):
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise MachineError(f"cannot kill QEMU (pid {pid}): {exc.strerror}") from None
        if not _wait_gone(pid, 10.0):
            raise MachineError(f"QEMU (pid {pid}) is still running after SIGKILL")
        self._cleanup_runtime()

    def _start_host_agent(self) -> None:
        """Published container ports answer on 127.0.0.1 (machine/hostagent.py); never waits."""
        from pymachine.machine import hostagent

        with contextlib.suppress(OSError):  # forwarding is a convenience: the machine works without it
            hostagent.launch(Path(self.machine_dir), self.settings.engine_port)

    def _report_forward_conflicts(self, wait: float) -> None:
        """Ports the host agent could not forward (taken on the host), on stderr of the command
        that started the VM as well as in ``pymachine logs``; waits at most ``wait`` seconds."""
        from pymachine.machine import hostagent

        def echo(message: str) -> None:
            sys.stderr.write(f"({self.machine_name}) {message}\n")
            sys.stderr.flush()

        machine_dir = Path(self.machine_dir)
        hostagent.report_conflicts(machine_dir, wait, echo)
        if hostagent.is_running(machine_dir) and not hostagent.synced(machine_dir):
            echo(f"Warning: the Docker engine did not answer within {wait:g}s; "
                 f"see `pymachine logs {self.machine_name}`")

    def _cleanup_runtime(self) -> None:
        from pymachine.machine import hostagent

        hostagent.stop(Path(self.machine_dir))
        self._stop_share_daemons()  # they end with QEMU; any left over end here
        for name in (PIDFILE, QMP_SOCKET):
            path = self._path(name)
            if os.path.lexists(path):
                os.unlink(path)

    def remove(self, log: Log) -> None:
        """Kill the VM if it runs; its files live in the machine dir, which the store removes."""
        pid = self._pid()
        if pid is not None:
            self._kill_pid(pid)
        for name in (OVERLAY, SEED, CONSOLE_LOG, QEMU_LOG, PIDFILE, QMP_SOCKET):
            path = self._path(name)
            if os.path.lexists(path):
                os.unlink(path)
