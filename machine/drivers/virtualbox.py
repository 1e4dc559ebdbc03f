"""The ``virtualbox`` driver: docker-machine's VirtualBox driver, driven through ``VBoxManage``.

Command sequences, flags, defaults and messages follow docker-machine 0.16
(``drivers/virtualbox``): a VM with a NAT NIC (SSH forwarded from a free
127.0.0.1 port) and a host-only NIC (the engine's address), a host-only
interface reused when one has the same IP and mask, a DHCP server scoped to
the CIDR.  Differences, on purpose: the default host-only CIDR is
192.168.56.1/24 (VirtualBox >= 6.1.28 only allows 192.168.56.0/21 unless
/etc/vbox/networks.conf says more), the guest IP comes from the guest
properties or the DHCP lease instead of an SSH round trip, and there is no
GitHub download of boot2docker.

The boot image: ``--virtualbox-boot2docker-url`` when given (a boot2docker
.iso, booted from DVD with the key in the disk's userdata tar, as
docker-machine did; or a bootable .vmdk/.vdi, cloned and booted from disk
with a NoCloud seed ISO carrying the key).  Without it, pymachine's own base
image (``engine.images``): built on first use where it can be (root and
debootstrap; pre-create refuses with exit 3 naming the flag where it
cannot), exported once to VDI beside the cached image, then cloned into the
machine dir, resized to --virtualbox-disk-size, booted from disk with the
seed ISO (user "docker", the machine's key, and the shared folder as a
vboxsf fstab line the first-boot unit mounts at ``/<share name>``, where
boot2docker mounted it) on the DVD drive.  The old implicit
``<store>/cache/boot2docker.iso`` fallback is gone on purpose: boot2docker
is dead, and a stray ISO silently winning over the maintained image would
surprise; pass it with the flag to keep using it.

VirtualBox 6.1 to 7.2 (read against the project's VirtualBox 7 / VMware
reference): the host (OS and CPU) is a ``HostPlatform`` parameter.  On macOS
with 7.x host-only adapters are gone: NIC 2 is a host-only *network*
(``hostonlynet``; vmnet serves its DHCP, so no VirtualBox DHCP server, and the
guest IP is read in the guest over the NAT SSH forward when no Guest
Additions publish it).  Apple Silicon (7.1+) runs ARM VMs: ``createvm
--platform-architecture`` (7.1+), EFI, the ARMv8 chipset, VirtIO-SCSI and no
x86-only ``modifyvm`` option (one fails the whole call).  An ``aborted-saved``
VM (7.0+) shows as Saved; start and rm discard that state first.

Every VBoxManage call goes through a ``VBoxBackend``: ``VBoxManageCLI``, or
``machine.drivers.vbox_api.VBoxAPIBackend`` when VirtualBox's SDK binding
``vboxapi`` is importable and reaches VBoxSVC (``PYMACHINE_VBOX_BACKEND`` =
auto | vboxmanage | vboxapi).  The API backend answers state, guest
properties and power operations in process and hands create/rm steps to
VBoxManage, so ``VBoxManage`` must be installed either way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pymachine.machine import layout, urls
from pymachine.machine.drivers.base import Driver, DriverCapabilities, Flag, Log, State
from pymachine.machine.drivers.hostplatform import HostPlatform
from pymachine.machine.drivers.settings import Settings, setting
from pymachine.machine.drivers.vboxmanage import (
    CALL_TIMEOUT,
    INSTALL_HINT,
    LOCK,
    VBOXMANAGE,
    MachineMissing,
    VBoxBackend,
    VBoxManageCLI,
    error_line,
    find_vboxmanage,
)
from pymachine.machine.errors import HostNotRunning, MachineError, PreCreateError

DEFAULT_CIDR = "192.168.56.1/24"
ALLOWED_DEFAULT: tuple[ipaddress.IPv4Network, ...] = (ipaddress.IPv4Network("192.168.56.0/21"),)
NETWORKS_CONF = "/etc/vbox/networks.conf"
NETWORKS_CONF_ENV = "PYMACHINE_VBOX_NETWORKS_CONF"  # where networks.conf is read (tests, odd installs)
DHCP_PREFIX = "HostInterfaceNetworking-"
STOP_TIMEOUT = 90.0
IP_WAIT = 120.0
MIN_IP_WAIT = 20.0  # even when PYMACHINE_SSH_WAIT is tiny: a loaded host answers slowly
HOSTONLY_POLL = 10.0
ENGINE_PORT = 2376
IMAGE_SUFFIXES = (".iso", ".vmdk", ".vdi")
B2D_MAGIC = "boot2docker, please format-me"
STATE_MAP = {
    "running": State.RUNNING,
    "paused": State.PAUSED,
    "saved": State.SAVED,
    # 7.0+: the VM process died holding a saved state; shown as Saved, start and rm discard it
    # (reference virtualbox7-vmware.md a8: MachineState_AbortedSaved).
    "aborted-saved": State.SAVED,
    "poweroff": State.STOPPED,
    "aborted": State.STOPPED,
    "starting": State.STARTING,
    "stopping": State.STOPPING,
    "restoring": State.STARTING,
    "saving": State.STOPPING,
    # the rest of VBoxManage's VMState words (reference a8; vbox_api.MACHINE_STATES lists them all)
    "gurumeditation": State.ERROR,  # stuck: only a power-off helps (rm does one)
    "teleported": State.STOPPED,
    "teleporting": State.RUNNING, "livesnapshotting": State.RUNNING, "onlinesnapshotting": State.RUNNING,
    "deletingsnapshotlive": State.RUNNING, "faulttolerantsyncing": State.RUNNING, "teleportingpausedvm": State.PAUSED,
    "deletingsnapshotlivepaused": State.PAUSED, "teleportingin": State.STARTING,
    "settingup": State.STOPPED, "snapshotting": State.STOPPED, "deletingsnapshot": State.STOPPED,
    "restoringsnapshot": State.STOPPED,
}
#: Host-only networks pymachine makes itself (macOS, VirtualBox 7.x); only these are ever removed.
HOSTONLYNET_PREFIX = "pymachine-"
HOST_ENV = "PYMACHINE_VBOX_HOST"  # "<os>/<arch>", e.g. darwin/arm64: what a driver built without host= assumes
#: ARM64 guest type: Debian's is documented (reference a3/a11: EFI, VirtIO-SCSI, VMSVGA defaults);
#: a Debian13_arm64 id is not in the source read there.
ARM_OSTYPE = "Debian12_arm64"


# ----------------------------------------------------------------------------- parsing helpers


def parse_version(text: str) -> tuple[int, int]:
    """'6.1.50r161033' or '7.0.10_Debianr158379' -> (6, 1)."""
    m = re.match(r"\s*(\d+)\.(\d+)", text)
    if not m:
        raise PreCreateError(f"cannot read the VirtualBox version from {text.strip()!r}")
    return int(m.group(1)), int(m.group(2))


def parse_blocks(text: str, first_key: str = "") -> list[dict[str, str]]:
    """`list hostonlyifs|hostonlynets|dhcpservers`: ``Key: value`` records.

    Records are split at blank lines, or - with ``first_key`` - wherever that key starts a line:
    `list hostonlynets` prints a blank line inside each record, after ``GUID:`` (reference a4),
    and 6.1+ `list dhcpservers` indents nested settings (a5), which are skipped."""
    blocks: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if cur and not first_key:
                blocks.append(cur)
                cur = {}
            continue
        if line[:1].isspace():
            continue  # nested (6.1+ dhcpservers "Global Configuration:" lines)
        key, sep, value = line.partition(":")
        if not sep:
            continue
        if first_key and key.strip() == first_key and cur:
            blocks.append(cur)
            cur = {}
        cur[key.strip()] = value.strip()
    if cur:
        blocks.append(cur)
    return blocks


def dhcp_server_fields(block: Mapping[str, str]) -> tuple[str, str, str, str, bool]:
    """(server IP, mask, lower, upper, enabled) of one `list dhcpservers` record, in either format:
    ``Dhcpd IP``/``LowerIPAddress``/``UpperIPAddress`` since 6.1, ``IP``/``lowerIPAddress``/
    ``upperIPAddress`` before (reference a5)."""
    return (block.get("Dhcpd IP") or block.get("IP", ""), block.get("NetworkMask", ""),
            block.get("LowerIPAddress") or block.get("lowerIPAddress", ""),
            block.get("UpperIPAddress") or block.get("upperIPAddress", ""), block.get("Enabled") == "Yes")


def parse_machinereadable(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip().strip('"')] = value.strip().strip('"')
    return out


def parse_cidr(cidr: str) -> ipaddress.IPv4Interface:
    try:
        iface = ipaddress.IPv4Interface(cidr)
    except ValueError:
        raise MachineError(
            f"invalid host-only cidr {cidr!r}: expected an IPv4 address/prefix like {DEFAULT_CIDR}"
        ) from None
    if "/" not in cidr:
        raise MachineError(f"invalid host-only cidr {cidr!r}: expected an IPv4 address/prefix like {DEFAULT_CIDR}")
    return iface


def allowed_ranges(path: str | None = None) -> tuple[list[ipaddress.IPv4Network], str]:
    """Networks VirtualBox >= 6.1.28 lets host-only interfaces use: `* <cidr> ...` lines of networks.conf."""
    path = path or os.environ.get(NETWORKS_CONF_ENV) or NETWORKS_CONF
    try:
        text = Path(path).read_text()
    except OSError:
        return list(ALLOWED_DEFAULT), path
    nets: list[ipaddress.IPv4Network] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words[:1] != ["*"]:
            continue
        for word in words[1:]:
            try:
                net = ipaddress.ip_network(word, strict=False)
            except ValueError:
                continue
            if isinstance(net, ipaddress.IPv4Network):
                nets.append(net)
    return nets, path


def _ip_addr_networks() -> list[tuple[str, ipaddress.IPv4Network]] | None:
    """Every IPv4 address (secondary ones too) from ``ip -o -4 addr show``; None without iproute2."""
    ip = shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip", "/bin/ip") if os.path.exists(p)), None)
    if not ip:
        return None
    try:
        out = subprocess.run([ip, "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    found = []
    for m in re.finditer(r"^\d+:\s+(\S+)\s+inet\s+(\d+\.\d+\.\d+\.\d+/\d+)", out.stdout, re.MULTILINE):
        found.append((m.group(1), ipaddress.IPv4Interface(m.group(2)).network))
    return found


def host_networks() -> list[tuple[str, ipaddress.IPv4Network]]:
    """IPv4 networks of this host's interfaces (Linux ioctl; elsewhere ``ifconfig``)."""
    if sys.platform.startswith("linux"):
        found = _ip_addr_networks()
        if found is not None:
            return found
        import fcntl  # no iproute2: primary addresses only
        import struct

        found = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _, name in socket.if_nameindex():
                req = struct.pack("256s", name.encode()[:15])
                try:
                    addr = socket.inet_ntoa(fcntl.ioctl(sock.fileno(), 0x8915, req)[20:24])  # SIOCGIFADDR
                    mask = socket.inet_ntoa(fcntl.ioctl(sock.fileno(), 0x891B, req)[20:24])  # SIOCGIFNETMASK
                except OSError:
                    continue
                found.append((name, ipaddress.IPv4Interface(f"{addr}/{mask}").network))
        return found
    try:
        out = subprocess.run(["ifconfig"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    found, name = [], ""
    for line in out.splitlines():
        if line and not line[0].isspace():
            name = line.split(":", 1)[0]
        m = re.search(r"inet (\d+\.\d+\.\d+\.\d+) netmask (0x[0-9a-f]+|[\d.]+)", line)
        if m:
            mask = m.group(2)
            mask = str(ipaddress.IPv4Address(int(mask, 16))) if mask.startswith("0x") else mask
            found.append((name, ipaddress.IPv4Interface(f"{m.group(1)}/{mask}").network))
    return found


def check_cidr(cidr: str, allow_any_range: bool, hostonly_nets: Sequence[ipaddress.IPv4Network],
               host_nets: Sequence[tuple[str, ipaddress.IPv4Network]], conf_path: str | None = None,
               host_os: str = sys.platform) -> ipaddress.IPv4Interface:
    """docker-machine's host-only CIDR rules plus VirtualBox 6.1.28's allowed ranges (not on Windows).

    ``hostonly_nets``: VirtualBox's own host-only interfaces/networks; the same network is reused,
    an overlapping different one is a clash.  On macOS the ranges are applied to host-only
    networks too (whether networks.conf governs them is unconfirmed, reference a4)."""
    iface = parse_cidr(cidr)
    if iface.ip == iface.network.network_address:
        raise MachineError("host-only cidr must be specified with a host address, not a network address")
    for net in hostonly_nets:
        if net != iface.network and net.overlaps(iface.network):
            raise MachineError(f"host-only cidr {cidr} overlaps VirtualBox's host-only network {net}: "
                               f"use {net} itself or a separate range")
    if not allow_any_range and host_os != "win32":
        allowed, path = allowed_ranges(conf_path)
        if not any(iface.network.subnet_of(net) for net in allowed if net.prefixlen <= iface.network.prefixlen):
            shown = " ".join(str(n) for n in allowed) or "none"
            raise MachineError(
                f"host-only cidr {cidr} is outside the ranges VirtualBox allows ({shown}): "
                f"add '* {iface.network}' to {path} or use --virtualbox-hostonly-allow-any-range"
            )
    for name, net in host_nets:
        if net in hostonly_nets:
            continue  # VirtualBox's own host-only interfaces are not clashes
        if net.overlaps(iface.network):
            raise MachineError(
                f"host-only cidr conflicts with the network address of a host interface ({name}: {net})"
            )
    return iface


def dhcp_settings(iface: ipaddress.IPv4Interface, current: str = "") -> tuple[str, str, str]:
    """(server IP, lower IP, upper IP) scoped to the CIDR: .100-.254 for /24 and wider, as docker-machine."""
    net = iface.network
    hosts = list(net.hosts()) if net.prefixlen >= 24 else []
    if net.prefixlen <= 24:
        base = int(net.network_address) & 0xFFFFFF00
        lower, upper = ipaddress.IPv4Address(base + 100), ipaddress.IPv4Address(base + 254)
        pool = [ipaddress.IPv4Address(base + i) for i in range(2, 25)]
    else:
        if len(hosts) < 3:
            raise MachineError(f"host-only cidr {iface} is too small for a DHCP server and a guest")
        lower, upper = hosts[len(hosts) // 2], hosts[-1]
        pool = hosts[: len(hosts) // 2]
    pool = [a for a in pool if a != iface.ip]
    if current and ipaddress.IPv4Address(current) in pool:
        return current, str(lower), str(upper)
    return str(pool[0]), str(lower), str(upper)


def share_default(platform: str = sys.platform) -> tuple[str, str]:
    """(share name, host dir): the user's home, as docker-machine shares it."""
    if platform == "darwin":
        return "Users", "/Users"
    if platform == "win32":
        return "c/Users", "\\\\?\\c:\\Users"
    return "hosthome", "/home"


def vtx_enabled(cpuinfo: str = "/proc/cpuinfo", host: HostPlatform | None = None) -> bool | None:
    """True/False from the CPU flags on x86 Linux; None where it cannot be told here
    (arm64 CPUs have no vmx/svm flags, reference VB-10)."""
    host = host or HostPlatform.current(HOST_ENV)
    if host.os != "linux" or host.arch != "x86_64" or not sys.platform.startswith("linux"):
        return None
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    return any(re.match(r"flags\s*:.*\b(vmx|svm)\b", line) for line in text.splitlines())


def hyperv_running(host_os: str = sys.platform) -> bool:
    if host_os != "win32" or sys.platform != "win32":
        return False
    try:
        out = subprocess.run(["tasklist", "/FI", "IMAGENAME eq vmms.exe"], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "vmms.exe" in out


def free_loopback_port(preferred: int = 0) -> int:
    for port in ((preferred, 0) if preferred else (0,)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise MachineError("could not find a free port on 127.0.0.1")


def userdata_tar(pubkey: bytes) -> bytes:
    """docker-machine's tar-in-disk: magic file, then .ssh/authorized_keys{,2} for boot2docker."""
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        def add(name: str, data: bytes | None, mode: int) -> None:
            info = tarfile.TarInfo(name)
            info.mode = mode
            info.mtime = int(time.time())
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        add(B2D_MAGIC, B2D_MAGIC.encode(), 0o644)
        add(".ssh", None, 0o700)
        add(".ssh/authorized_keys", pubkey, 0o644)
        add(".ssh/authorized_keys2", pubkey, 0o644)
    return buf.getvalue()


# ----------------------------------------------------------------------------- driver


@dataclasses.dataclass
class VirtualBoxSettings(Settings):
    vbox_manager: dict[str, Any] = setting("VBoxManager", {})
    host_interfaces: dict[str, Any] = setting("HostInterfaces", {})
    cpu: int = setting("CPU", 1)
    memory: int = setting("Memory", 1024)
    disk_size: int = setting("DiskSize", 20000)
    nat_nic_type: str = setting("NatNicType", "82540EM")
    boot2docker_url: str = setting("Boot2DockerURL", "")
    boot2docker_import_vm: str = setting("Boot2DockerImportVM", "")
    host_dns_resolver: bool = setting("HostDNSResolver", False)
    host_only_cidr: str = setting("HostOnlyCIDR", DEFAULT_CIDR)
    host_only_nic_type: str = setting("HostOnlyNicType", "82540EM")
    host_only_promisc_mode: str = setting("HostOnlyPromiscMode", "deny")
    ui_type: str = setting("UIType", "headless")
    host_only_no_dhcp: bool = setting("HostOnlyNoDHCP", False)
    no_share: bool = setting("NoShare", False)
    dns_proxy: bool = setting("DNSProxy", True)
    no_vtx_check: bool = setting("NoVTXCheck", False)
    share_folder: str = setting("ShareFolder", "")
    platform_architecture: str = setting("PlatformArchitecture", "", absent=True)
    vm_registered: bool = setting("VMRegistered", False, absent=True)
    host_only_network: str = setting("HostOnlyNetwork", "", absent=True)
    host_only_allow_any_range: bool = setting("HostOnlyAllowAnyRange", False, absent=True)


class VirtualBoxDriver(Driver):
    settings_class = VirtualBoxSettings
    settings: VirtualBoxSettings
    name = "virtualbox"
    capabilities = DriverCapabilities(start=True, stop=True, restart=True, kill=True, seed=True, shares=True,
                                      port_forwards=True, own_engine_url=True)
    default_ssh_user = "docker"
    flags = (
        Flag("virtualbox-memory", "int", 1024, "VIRTUALBOX_MEMORY_SIZE", "Size of memory for host in MB"),
        Flag(
            "virtualbox-cpu-count",
            "int",
            1,
            "VIRTUALBOX_CPU_COUNT",
            "number of CPUs for the machine (-1 to use the number of CPUs available)",
        ),
        Flag("virtualbox-disk-size", "int", 20000, "VIRTUALBOX_DISK_SIZE", "Size of disk for host in MB"),
        Flag(
            "virtualbox-boot2docker-url",
            "string",
            "",
            "VIRTUALBOX_BOOT2DOCKER_URL",
            "The path or URL of a bootable image (.iso, .vmdk or .vdi)",
        ),
        Flag(
            "virtualbox-import-boot2docker-vm",
            "string",
            "",
            "VIRTUALBOX_BOOT2DOCKER_IMPORT_VM",
            "The name of a Boot2Docker VM to import",
        ),
        Flag(
            "virtualbox-host-dns-resolver", "bool", False, "VIRTUALBOX_HOST_DNS_RESOLVER", "Use the host DNS resolver"
        ),
        Flag(
            "virtualbox-nat-nictype", "string", "82540EM", "VIRTUALBOX_NAT_NICTYPE", "Specify the Network Adapter Type"
        ),
        Flag(
            "virtualbox-hostonly-cidr", "string", DEFAULT_CIDR, "VIRTUALBOX_HOSTONLY_CIDR", "Specify the Host Only CIDR"
        ),
        Flag(
            "virtualbox-hostonly-nictype",
            "string",
            "82540EM",
            "VIRTUALBOX_HOSTONLY_NIC_TYPE",
            "Specify the Host Only Network Adapter Type",
        ),
        Flag(
            "virtualbox-hostonly-nicpromisc",
            "string",
            "deny",
            "VIRTUALBOX_HOSTONLY_NIC_PROMISC",
            "Specify the Host Only Network Adapter Promiscuous Mode",
        ),
        Flag(
            "virtualbox-hostonly-allow-any-range",
            "bool",
            False,
            "VIRTUALBOX_HOSTONLY_ALLOW_ANY_RANGE",
            "Skip the check against the ranges of /etc/vbox/networks.conf",
        ),
        Flag(
            "virtualbox-ui-type",
            "string",
            "headless",
            "VIRTUALBOX_UI_TYPE",
            "Specify the UI Type: (gui|sdl|headless|separate)",
        ),
        Flag(
            "virtualbox-hostonly-no-dhcp",
            "bool",
            False,
            "VIRTUALBOX_HOSTONLY_NO_DHCP",
            "Disable the Host Only DHCP Server",
        ),
        Flag("virtualbox-no-share", "bool", False, "VIRTUALBOX_NO_SHARE", "Disable the mount of your home directory"),
        Flag(
            "virtualbox-no-dns-proxy",
            "bool",
            False,
            "VIRTUALBOX_NO_DNS_PROXY",
            "Disable proxying all DNS requests to the host",
        ),
        Flag(
            "virtualbox-dns-proxy",
            "bool",
            False,
            "VIRTUALBOX_DNS_PROXY",
            "Proxy all DNS requests to the host (the default; kept for old scripts)",
        ),
        Flag(
            "virtualbox-no-vtx-check",
            "bool",
            False,
            "VIRTUALBOX_NO_VTX_CHECK",
            "Disable checking for the availability of hardware virtualization before the vm is started",
        ),
        Flag(
            "virtualbox-share-folder",
            "string",
            "",
            "VIRTUALBOX_SHARE_FOLDER",
            "Mount the specified directory instead of the default home location. Format: dir:name",
        ),
    )

    def __init__(self, config: dict[str, Any], backend: VBoxBackend | None = None,
                 host: HostPlatform | None = None) -> None:
        super().__init__(config)
        if backend is None:
            from pymachine.machine.drivers.vbox_api import select_backend

            backend = select_backend()
        self.backend: VBoxBackend = backend
        self.host = host or HostPlatform.current(HOST_ENV)
        self._version: tuple[int, int] | None = None

    def set_config_from_flags(self, values: Mapping[str, Any]) -> None:
        def get(name: str) -> Any:
            return values.get(f"virtualbox-{name}")

        cpu = int(get("cpu-count") if get("cpu-count") is not None else 1)
        if cpu == -1:
            cpu = min(os.cpu_count() or 1, 32)
        if cpu < 1:
            raise MachineError(f"--virtualbox-cpu-count must be at least 1 (or -1 for all CPUs), got {cpu}")
        memory, disk = int(get("memory") or 1024), int(get("disk-size") or 20000)
        if memory < 64:
            raise MachineError(f"--virtualbox-memory must be at least 64 MB, got {memory}")
        if disk < 1:
            raise MachineError(f"--virtualbox-disk-size must be at least 1 MB, got {disk}")
        share = str(get("share-folder") or "")
        if share and ":" not in share:
            raise MachineError(f"--virtualbox-share-folder must be dir:name, got {share!r}")
        parse_cidr(str(get("hostonly-cidr") or DEFAULT_CIDR))
        promisc = str(get("hostonly-nicpromisc") or "deny")
        if promisc not in ("deny", "allow-vms", "allow-all"):
            raise MachineError(
                f"--virtualbox-hostonly-nicpromisc must be deny, allow-vms or allow-all, got {promisc!r}"
            )
        self.settings.update(
            ssh_user=self.default_ssh_user, cpu=cpu, memory=memory, disk_size=disk,
            nat_nic_type=str(get("nat-nictype") or "82540EM"),
            boot2docker_url=str(get("boot2docker-url") or ""),
            boot2docker_import_vm=str(get("import-boot2docker-vm") or ""),
            host_dns_resolver=bool(get("host-dns-resolver")),
            host_only_cidr=str(get("hostonly-cidr") or DEFAULT_CIDR),
            host_only_nic_type=str(get("hostonly-nictype") or "82540EM"),
            host_only_promisc_mode=promisc,
            ui_type=str(get("ui-type") or "headless"),
            host_only_no_dhcp=bool(get("hostonly-no-dhcp")),
            no_share=bool(get("no-share")),
            dns_proxy=not bool(get("no-dns-proxy")),
            no_vtx_check=bool(get("no-vtx-check")),
            share_folder=share,
        )
        if get("hostonly-allow-any-range"):
            self.settings.host_only_allow_any_range = True

    # VBoxManage ------------------------------------------------------------------------
    def vbm(self, *args: str, stdin: bytes | None = None) -> str:
        return self.backend.run(list(args), stdin=stdin)[0]

    def version(self) -> tuple[int, int]:
        """VirtualBox's (major, minor), asked once per driver object."""
        if self._version is None:
            self._version = parse_version(self.vbm("--version"))
        return self._version

    def uses_hostonly_nets(self) -> bool:
        """macOS with VirtualBox 7.x: host-only *networks* (vmnet); adapters are gone (reference a4)."""
        return self.host.os == "darwin" and self.version() >= (7, 0)

    def vm_arch(self) -> str:
        """x86 or arm: recorded at create, else what this host runs."""
        return str(self.settings.platform_architecture or self.host.vm_arch)

    def _path(self, name: str) -> str:
        return os.path.join(self.machine_dir, name)

    # Checks ----------------------------------------------------------------------------
    def pre_create_check(self) -> None:
        # The API backend still creates and removes VMs with VBoxManage: both need it installed.
        uses_cli = isinstance(self.backend, VBoxManageCLI) or isinstance(getattr(self.backend, "cli", None),
                                                                          VBoxManageCLI)
        if uses_cli and not find_vboxmanage():
            raise PreCreateError(INSTALL_HINT)
        try:
            version = self.vbm("--version").strip()
        except MachineError as exc:
            raise PreCreateError(str(exc)) from None
        self._version = parse_version(version)
        if parse_version(version) < (5, 0):
            raise PreCreateError(
                f'We support Virtualbox starting with version 5. Your VirtualBox install is "{version}". '
                "Please upgrade at https://www.virtualbox.org"
            )
        if not self.settings.boot2docker_url and parse_version(version) < (6, 1):
            raise PreCreateError(
                f"pymachine's base image needs VirtualBox 6.1 or later (its IP is read from VirtualBox's DHCP "
                f'leases); your VirtualBox install is "{version}": upgrade, or pass --virtualbox-boot2docker-url'
            )
        if self.host.arch == "arm64" and self._version < (7, 1):
            raise PreCreateError(
                f'VirtualBox runs VMs on an arm64 host from 7.1 on; your VirtualBox install is "{version}": '
                "upgrade to VirtualBox 7.1 or later (the macOSArm64 build on Apple Silicon)"
            )
        if not self.settings.no_vtx_check:
            if hyperv_running(self.host.os):
                raise PreCreateError(
                    "This computer is running Hyper-V. VirtualBox won't boot a 64bits VM when Hyper-V is "
                    "activated. Either use Hyper-V as a driver, or disable the Hyper-V hypervisor. "
                    "(To skip this check, use --virtualbox-no-vtx-check)"
                )
            if vtx_enabled(host=self.host) is False:
                raise PreCreateError(
                    "This computer doesn't have VT-X/AMD-v enabled. Enabling it in the BIOS is mandatory "
                    "(To skip this check, use --virtualbox-no-vtx-check)"
                )
        if self.settings.boot2docker_import_vm:
            raise PreCreateError("--virtualbox-import-boot2docker-vm is not supported by pymachine: "
                                 "pass --virtualbox-boot2docker-url instead")
        source = self._image_source()  # raises PreCreateError on a bad image
        if self.host.vm_arch == "arm" and source is not None and image_suffix(source) == ".iso":
            raise PreCreateError("boot2docker ISOs are x86-only and this host runs arm VMs: pass "
                                 "--virtualbox-boot2docker-url with an arm64 EFI disk image (.vdi or .vmdk)")
        if source is None:
            self._check_base_image()
        if source is None or image_suffix(source) != ".iso":
            self._seed_shares()  # a share name the seed's fstab cannot hold is refused before anything exists
        try:
            ifs = self.hostonly_ifs()
            names = [i.get("Name", "") for i in ifs]
            dup = next((n for n in names if names.count(n) > 1), None)
            if dup and not self.uses_hostonly_nets():
                raise PreCreateError(
                    f'VirtualBox is configured with multiple host-only adapters with the same name "{dup}". '
                    "Please remove one."
                )
            self.check_cidr(ifs)
        except PreCreateError:
            raise
        except MachineError as exc:
            raise PreCreateError(str(exc)) from None

    def _check_base_image(self) -> None:
        from pymachine.engine import images

        arch = "arm64" if self.host.vm_arch == "arm" else "amd64"
        if arch != "amd64" and not _takes_arch(images.check_for_driver):
            raise PreCreateError("pymachine's base image is amd64 only and this host runs arm VMs: pass "
                                 "--virtualbox-boot2docker-url with an arm64 EFI disk image (.vdi or .vmdk)")
        kwargs = {"arch": arch} if _takes_arch(images.check_for_driver) else {}
        try:
            images.check_for_driver(images.default_cache_dir(self.store_path), "vdi", "--virtualbox-boot2docker-url",
                                    **kwargs)
        except MachineError as exc:
            raise PreCreateError(str(exc)) from None

    def _image_source(self) -> str | None:
        """The flag's image (checked), or None: pymachine's base image."""
        url = self.settings.boot2docker_url
        if not url:
            return None
        parts = urlsplit(url)
        path = parts.path if parts.scheme == "file" else url if not parts.scheme or len(parts.scheme) == 1 else ""
        if not path.lower().endswith(IMAGE_SUFFIXES) and parts.scheme not in ("http", "https"):
            raise PreCreateError(f"--virtualbox-boot2docker-url must name an .iso, .vmdk or .vdi image, got {url!r}")
        if parts.scheme in ("http", "https"):
            if not parts.path.lower().endswith(IMAGE_SUFFIXES):
                raise PreCreateError(
                    f"--virtualbox-boot2docker-url must name an .iso, .vmdk or .vdi image, got {url!r}"
                )
            return url
        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            raise PreCreateError(f"boot image {path!r} does not exist")
        return path

    def hostonly_ifs(self) -> list[dict[str, str]]:
        """Host-only interfaces (`list hostonlyifs`) or, on macOS 7.x, networks (`list hostonlynets`),
        each with its host address as ``IPAddress`` (a network's ``LowerIP``, which the host keeps)."""
        if not self.uses_hostonly_nets():
            return parse_blocks(self.vbm("list", "hostonlyifs"))
        nets = parse_blocks(self.vbm("list", "hostonlynets"), first_key="Name")
        return [{**n, "IPAddress": n.get("LowerIP", "")} for n in nets]

    def check_cidr(self, ifs: list[dict[str, str]] | None = None) -> ipaddress.IPv4Interface:
        ifs = self.hostonly_ifs() if ifs is None else ifs
        own = []
        for i in ifs:
            try:
                own.append(ipaddress.IPv4Interface(f"{i['IPAddress']}/{i['NetworkMask']}").network)
            except (KeyError, ValueError):
                continue
        return check_cidr(str(self.settings.host_only_cidr or DEFAULT_CIDR),
                          self.settings.host_only_allow_any_range, own, host_networks(),
                          host_os=self.host.os)

    # Create ----------------------------------------------------------------------------
    def create(self, log: Log) -> None:
        from pymachine.machine import certs

        name = self.machine_name
        source = self._image_source()
        share = self._share()
        base: str | None = None
        base_size = 0
        if source is None:
            from pymachine.engine import images

            arch = "arm64" if self.vm_arch() == "arm" else "amd64"
            kwargs = {"arch": arch} if _takes_arch(images.disk_for_driver) else {}
            vdi, info = images.disk_for_driver(images.default_cache_dir(self.store_path), "vdi",
                                               lambda m: log(f"({name}) {m}"), **kwargs)
            base, base_size = str(vdi), info.virtual_size
            is_iso = False
        else:
            log(f"({name}) Copying {source} to {self.machine_dir}...")
            is_iso = self._fetch_image(source)
            if not is_iso:
                base = self._path("image" + image_suffix(source))
        key = Path(self._path(layout.SSH_KEY))
        log(f"({name}) Creating SSH key...")
        certs.generate_ssh_keypair(key)
        self.settings.ssh_key_path = str(key)
        pub = Path(str(key) + ".pub").read_bytes()
        log(f"({name}) Creating VirtualBox VM...")
        size_mb = int(self.settings.disk_size or 20000)
        if is_iso:
            disk = self._path(layout.VBOX_DISK)
            self._make_b2d_disk(disk, size_mb << 20, pub)
            dvd = self._path(layout.BOOT2DOCKER_ISO)
        else:
            assert base is not None
            disk = self._path("disk.vdi")
            self.vbm("clonemedium", "disk", base, disk, "--format", "VDI")
            # Cloning registered the source in VirtualBox's global media registry: the shared
            # cached image must not stay there (a re-export with a new UUID, or another store
            # with the same image, would then be refused).
            self._close_medium(base)
            self._unattached_disk = disk
            # Never smaller than the image: VirtualBox cannot shrink a disk.
            self.vbm("modifymedium", "disk", disk, "--resize", str(max(size_mb, -(-base_size // (1 << 20)))))
            dvd = self._path(layout.SEED_ISO)
            self._write_seed(dvd, pub.decode(), share, pymachine_image=source is None)
        arch = self.vm_arch()
        self.settings.platform_architecture = arch
        # 7.1+: the platform is explicit (without it an Apple Silicon host makes an ARM VM, reference a3);
        # earlier versions know no such option.
        platform_arg = ("--platform-architecture", arch) if self.version() >= (7, 1) else ()
        self.vbm("createvm", "--basefolder", self.machine_dir, "--name", name, *platform_arg, "--register")
        self.settings.vm_registered = True
        log(f"({name}) Creating VirtualBox VM with CPUs: {self.settings.cpu}, Memory: {self.settings.memory}MB...")
        self.vbm("modifyvm", name, *self._machine_settings(arch, is_iso))
        self.vbm("modifyvm", name, "--nic1", "nat", "--nictype1", str(self.settings.nat_nic_type or "82540EM"),
                 "--cableconnected1", "on")
        ctl = self._add_storage_controller(arch)
        self.vbm("storageattach", name, "--storagectl", ctl, "--port", "0", "--device", "0",
                 "--type", "dvddrive", "--medium", dvd)
        self.vbm("storageattach", name, "--storagectl", ctl, "--port", "1", "--device", "0",
                 "--type", "hdd", "--medium", disk)
        self._unattached_disk = ""  # from here on, unregistervm --delete removes it
        self.vbm("guestproperty", "set", name, "/VirtualBox/GuestAdd/SharedFolders/MountPrefix", "/")
        self.vbm("guestproperty", "set", name, "/VirtualBox/GuestAdd/SharedFolders/MountDir", "/")
        if share:
            share_name, share_dir = share
            log(f"({name}) Setting up shared folder {share_dir} as {share_name}...")
            self.vbm("sharedfolder", "add", name, "--name", share_name, "--hostpath", share_dir, "--automount")
            self.vbm("setextradata", name, f"VBoxInternal2/SharedFoldersEnableSymlinksCreate/{share_name}", "1")
        log(f"({name}) Starting the VM...")
        self.start(log)

    def _machine_settings(self, arch: str, is_iso: bool) -> list[str]:
        """The one big ``modifyvm``: docker-machine's on x86; on ARM only options the ARM handler
        takes - one x86-only option (--pae, --hpet, --hwvirtex, --nestedpaging, --largepages,
        --vtxvpid, --longmode) fails the whole call and nothing of it is saved (reference a2)."""
        onoff = {True: "on", False: "off"}
        dns = ["--natdnshostresolver1", onoff[self.settings.host_dns_resolver],
               "--natdnsproxy1", onoff[self.settings.dns_proxy]]
        cpus, memory = str(self.settings.cpu), str(self.settings.memory)
        if arch == "arm":  # EFI, ARMv8 virtual chipset, ARM64 guest type (reference a11, b step 2)
            return ["--firmware", "efi", "--chipset", "armv8virtual", "--ostype", ARM_OSTYPE, "--cpus", cpus,
                    "--memory", memory, "--acpi", "on", "--rtcuseutc", "on", *dns, "--boot1", "disk"]
        return [
            "--firmware", "bios", "--bioslogofadein", "off", "--bioslogofadeout", "off",
            "--bioslogodisplaytime", "0", "--biosbootmenu", "disabled", "--ostype", "Linux26_64",
            "--cpus", cpus, "--memory", memory, "--acpi", "on", "--ioapic", "on", "--rtcuseutc", "on", *dns,
            "--cpuhotplug", "off", "--pae", "on", "--hpet", "on", "--hwvirtex", "on", "--nestedpaging", "on",
            "--largepages", "on", "--vtxvpid", "on", "--accelerate3d", "off",
            "--boot1", "dvd" if is_iso else "disk",
            *(("--longmode", "on") if self.host.os == "win32" else ()),
        ]

    def _add_storage_controller(self, arch: str) -> str:
        """SATA on x86 (docker-machine's); VirtIO-SCSI on ARM - the only ARM bus in the 7.1-era
        source, still offered by 7.2 beside SATA/NVMe (reference a10)."""
        if arch == "arm":
            self.vbm("storagectl", self.machine_name, "--name", "VirtIO", "--add", "virtio-scsi",
                     "--controller", "VirtIO", "--bootable", "on")
            return "VirtIO"
        self.vbm("storagectl", self.machine_name, "--name", "SATA", "--add", "sata", "--hostiocache", "on")
        return "SATA"

    def _fetch_image(self, source: str) -> bool:
        """Copy or download the image into the machine dir; True for an ISO."""
        suffix = image_suffix(source)
        target = self._path(layout.BOOT2DOCKER_ISO if suffix == ".iso" else "image" + suffix)
        if urlsplit(source).scheme in ("http", "https"):
            import urllib.request

            try:
                with urllib.request.urlopen(source, timeout=60) as resp, open(target, "wb") as out:
                    shutil.copyfileobj(resp, out, 1 << 20)
            except OSError as exc:
                raise MachineError(f"cannot download {source}: {exc}") from None
        else:
            shutil.copyfile(source, target)
        return suffix == ".iso"

    def _make_b2d_disk(self, disk: str, size: int, pub: bytes) -> None:
        """`convertfromraw stdin`: the userdata tar, zero-filled to the full disk size."""
        data = userdata_tar(pub)
        if size < len(data):
            raise MachineError(f"disk size {size} bytes is smaller than the userdata tar")
        path = getattr(self.backend, "path", VBOXMANAGE)
        argv = [path, "convertfromraw", "stdin", disk, str(size), "--format", "VMDK"]
        with LOCK:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                assert proc.stdin is not None
                proc.stdin.write(data)
                zeros = bytes(1 << 20)
                left = size - len(data)
                while left > 0:
                    n = min(left, len(zeros))
                    proc.stdin.write(zeros[:n])
                    left -= n
                proc.stdin.close()
            except BrokenPipeError:
                pass
            proc.stdin = None  # closed: communicate() must not flush it
            try:
                _out, err = proc.communicate(timeout=CALL_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise MachineError("VBoxManage convertfromraw did not finish") from None
        text = err.decode(errors="replace")
        if proc.returncode != 0 or "error:" in text:
            raise MachineError(
                f"VBoxManage convertfromraw stdin {disk} {size} --format VMDK failed: {error_line(text)}"
            )

    def _write_seed(self, path: str, pubkey: str, share: tuple[str, str] | None, pymachine_image: bool) -> None:
        """The seed, with the host's first-boot plan (engine TLS files, drop-in) where pymachine's
        image installs it; the proxy for any image (cloud-init's user-data too)."""
        from pymachine.machine import seed

        plan = self.first_boot
        seed.write_seed_iso(path, hostname=self.machine_name, user=self.default_ssh_user, ssh_pubkey=pubkey,
                            proxy=plan.proxy_settings() if plan else None, instance_id=str(uuid.uuid4()),
                            shares=guest_shares(share), first_boot=plan if pymachine_image else None)

    def seed_addresses(self) -> list[str]:
        """The host-only network's DHCP pool: the guest's address is one of them (at most 256)."""
        if self.uses_hostonly_nets():
            net = parse_cidr(str(self.settings.host_only_cidr or DEFAULT_CIDR)).network
            return [str(a) for a in net.hosts()] if net.num_addresses <= 256 else []
        _server, lower, upper = dhcp_settings(parse_cidr(str(self.settings.host_only_cidr or DEFAULT_CIDR)))
        first, last = int(ipaddress.IPv4Address(lower)), int(ipaddress.IPv4Address(upper))
        return [str(ipaddress.IPv4Address(i)) for i in range(first, last + 1)] if last - first < 256 else []

    def _seed_shares(self) -> list[tuple[str, str, str]]:
        """The seed's shared-folder lines, checked (pre-create): names the guest's fstab can hold."""
        from pymachine.machine import seed

        shares = guest_shares(self._share())
        try:
            seed.shares_fstab(shares)
        except ValueError as exc:
            raise PreCreateError(f"--virtualbox-share-folder: {exc}") from None
        return shares

    def _share(self) -> tuple[str, str] | None:
        if self.settings.no_share:
            return None
        folder = self.settings.share_folder
        if folder:
            share_dir, _, share_name = folder.rpartition(":")
        else:
            share_name, share_dir = share_default(self.host.os)
        if not os.path.isdir(share_dir):
            return None
        return share_name, share_dir

    # Networking ------------------------------------------------------------------------
    def setup_hostonly_network(self) -> str:
        """Reuse (same IP and mask) or create the host-only interface; DHCP; attach it as NIC 2.
        macOS with VirtualBox 7.x: a host-only network instead (reference a4)."""
        ifs = self.hostonly_ifs()
        iface = self.check_cidr(ifs)
        if self.uses_hostonly_nets():
            return self._setup_hostonly_net(ifs, iface)
        ip, mask = str(iface.ip), str(iface.netmask)
        match = next((i for i in ifs if i.get("IPAddress") == ip and i.get("NetworkMask") == mask), None)
        if match:
            ifname = match["Name"]
        else:
            out = self.vbm("hostonlyif", "create")
            m = re.search(r"Interface '(.+)' was successfully created", out)
            if not m:
                raise MachineError(f"failed to create host-only interface: {error_line(out)}")
            ifname = m.group(1)
            deadline = time.monotonic() + HOSTONLY_POLL
            while not any(i.get("Name") == ifname for i in self.hostonly_ifs()):
                if time.monotonic() > deadline:
                    raise MachineError(f"host-only interface {ifname} did not appear within {HOSTONLY_POLL:g}s")
                time.sleep(0.5)
            self.vbm("hostonlyif", "ipconfig", ifname, "--ip", ip, "--netmask", mask)
        self._setup_dhcp(ifname, iface, {i.get("Name", "") for i in ifs} | {ifname})
        self.vbm("modifyvm", self.machine_name, "--nic2", "hostonly",
                 "--nictype2", str(self.settings.host_only_nic_type or "82540EM"),
                 "--nicpromisc2", str(self.settings.host_only_promisc_mode or "deny"),
                 "--hostonlyadapter2", ifname, "--cableconnected2", "on")
        return ifname

    def _setup_hostonly_net(self, nets: list[dict[str, str]], iface: ipaddress.IPv4Interface) -> str:
        """Reuse the host-only network of the CIDR's subnet or add one (the host keeps LowerIP, the
        guests get the rest from macOS's vmnet DHCP: no VirtualBox DHCP server), attach it as NIC 2
        (`--nic2 hostonlynet --host-only-net2`, what Vagrant's 7.x provider does)."""
        match = next((n for n in nets if _net_of(n) == iface.network), None)
        if match:
            netname = match["Name"]
        else:
            netname = f"{HOSTONLYNET_PREFIX}{iface.network.network_address}-{iface.network.prefixlen}"
            hosts = list(iface.network.hosts()) if iface.network.prefixlen < 31 else []
            if len(hosts) < 2:
                raise MachineError(f"host-only cidr {iface} is too small for a host and a guest")
            self.vbm("hostonlynet", "add", f"--name={netname}", f"--netmask={iface.netmask}",
                     f"--lower-ip={iface.ip}", f"--upper-ip={hosts[-1]}", "--enable")
        self.settings.host_only_network = netname
        self.vbm("modifyvm", self.machine_name, "--nic2", "hostonlynet",
                 "--nictype2", str(self.settings.host_only_nic_type or "82540EM"),
                 "--nicpromisc2", str(self.settings.host_only_promisc_mode or "deny"),
                 "--host-only-net2", netname, "--cableconnected2", "on")
        return netname

    def _remove_own_hostonly_net(self) -> None:
        """After rm: drop the host-only network pymachine added when no other VM is attached to it."""
        netname = self.settings.host_only_network
        if not netname.startswith(HOSTONLYNET_PREFIX):
            return
        for line in self.vbm("list", "vms").splitlines():
            m = re.match(r'"(.*)" \{([0-9a-f-]+)\}', line.strip())
            if not m:
                continue
            try:
                info = parse_machinereadable(self.vbm("showvminfo", m.group(2), "--machinereadable"))
            except MachineError:
                continue  # vanished meanwhile
            if any(k.startswith("hostonly-network") and v == netname for k, v in info.items()):
                return
        with contextlib.suppress(MachineError):  # removed meanwhile
            self.vbm("hostonlynet", "remove", f"--name={netname}")

    def _setup_dhcp(self, ifname: str, iface: ipaddress.IPv4Interface, live: set[str]) -> None:
        servers = {d.get("NetworkName", ""): d
                   for d in parse_blocks(self.vbm("list", "dhcpservers"), first_key="NetworkName")}
        for netname in servers:
            if netname.startswith(DHCP_PREFIX) and netname[len(DHCP_PREFIX):] not in live:
                self.vbm("dhcpserver", "remove", "--netname", netname)
        netname = DHCP_PREFIX + ifname
        current = servers.get(netname)
        fields = dhcp_server_fields(current) if current else ("", "", "", "", False)
        server_ip, lower, upper = dhcp_settings(iface, fields[0])
        enabled = not self.settings.host_only_no_dhcp
        mask = str(iface.netmask)
        if current and fields == (server_ip, mask, lower, upper, enabled):
            return
        self.vbm("dhcpserver", "modify" if current else "add", "--netname", netname, "--ip", server_ip,
                 "--netmask", mask, "--lowerip", lower, "--upperip", upper, "--enable" if enabled else "--disable")

    def _forward_ssh(self) -> None:
        port = free_loopback_port(self.settings.ssh_port)
        with contextlib.suppress(MachineError):  # no rule yet
            self.vbm("modifyvm", self.machine_name, "--natpf1", "delete", "ssh")
        self.vbm("modifyvm", self.machine_name, "--natpf1", f"ssh,tcp,127.0.0.1,{port},,22")
        self.settings.ssh_port = port

    # Addresses -------------------------------------------------------------------------
    def ssh_address(self) -> tuple[str, int, str, str]:
        return "127.0.0.1", int(self.settings.ssh_port or 22), str(self.settings.ssh_user or "docker"), \
            self.settings.ssh_key_path

    def engine_url(self) -> str:
        return urls.engine_url(self.ip(), ENGINE_PORT, self.machine_name)

    def guest_engine_port(self) -> int:
        return ENGINE_PORT  # fixed: known before the guest has an address (the first-boot seed)

    def url(self) -> str:
        if self.state(timeout=5.0) != State.RUNNING:
            raise HostNotRunning()
        return self.running_url()

    def running_url(self) -> str:
        return self.engine_url() if self.ip() else ""

    def guest_ip(self) -> str:
        """The host-only NIC's address: guest property (Guest Additions) first, else the DHCP lease
        of its MAC; with a macOS host-only network (vmnet's DHCP, no VirtualBox lease) the guest's
        own answer over the NAT SSH forward."""
        name = self.machine_name
        out = self.vbm("guestproperty", "get", name, "/VirtualBox/GuestInfo/Net/1/V4/IP")
        m = re.match(r"Value:\s*(\S+)", out.strip())
        if m:
            return m.group(1)
        info = parse_machinereadable(self.vbm("showvminfo", name, "--machinereadable"))
        if info.get("hostonly-network2"):
            return self._guest_ip_over_ssh()
        ifname, mac = info.get("hostonlyadapter2", ""), info.get("macaddress2", "")
        if not ifname or not mac:
            return ""
        mac = ":".join(mac[i:i + 2] for i in range(0, 12, 2)).lower()
        try:
            lease = self.vbm("dhcpserver", "findlease", f"--interface={ifname}", f"--mac-address={mac}")
        except MachineError:
            return ""
        m = re.search(r"IP Address:\s*(\S+)", lease)
        return m.group(1) if m else ""

    def _guest_ip_over_ssh(self) -> str:
        """``ip -4 -o addr show`` in the guest through 127.0.0.1:<SSHPort> (the NAT forward, which
        needs no Guest Additions, reference b): its address inside the host-only CIDR, or ""."""
        from pymachine.machine.sshconnect import connect

        if not self.settings.ssh_key_path or not self.settings.ssh_port:
            return ""
        network = parse_cidr(str(self.settings.host_only_cidr or DEFAULT_CIDR)).network
        try:
            with connect(self, wait=0.0) as client:
                out = client.run("ip -4 -o addr show", check=False, timeout=10).stdout
        except (MachineError, OSError):
            return ""  # not up yet: wait_for_ip asks again
        return guest_address_in(out, network)

    def wait_for_ip(self, timeout: float = IP_WAIT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            ip = self.guest_ip()
            if ip:
                self.settings.ip_address = ip
                return ip
            if time.monotonic() > deadline:
                raise MachineError(f"the guest reported no IP address on its host-only network within {timeout:g}s")
            time.sleep(1.0)

    # State and lifecycle ---------------------------------------------------------------
    def vm_state(self) -> str:
        """VirtualBox's own state name (``VMState``), "" when showvminfo has none."""
        out = self.vbm("showvminfo", self.machine_name, "--machinereadable")
        m = re.search(r'^VMState="([\w-]+)"', out, re.MULTILINE)
        return m.group(1) if m else ""

    def state(self, timeout: float = 10.0) -> State:
        return STATE_MAP.get(self.vm_state(), State.NONE)

    def start(self, log: Log) -> None:
        name = self.machine_name
        raw = self.vm_state()
        if raw == "aborted-saved":
            # The VM process died holding a saved state: it is not mutable until that is discarded
            # (modifyvm: "The machine is not mutable (state is Aborted-Saved)"), so boot afresh.
            log(f"({name}) Discarding the saved state VirtualBox kept of an aborted run...")
            self.vbm("discardstate", name)
            raw = "poweroff"
        current = STATE_MAP.get(raw, State.NONE)
        if current in (State.STOPPED, State.NONE):
            self.setup_hostonly_network()
        if current in (State.STOPPED, State.SAVED, State.NONE):
            self._forward_ssh()
            self.vbm("startvm", name, "--type", str(self.settings.ui_type or "headless"))
        elif current == State.PAUSED:
            self.vbm("controlvm", name, "resume", "--type", str(self.settings.ui_type or "headless"))
        log(f"({name}) Waiting for an IP...")
        self.wait_for_ip(wait_budget())

    def stop(self, log: Log) -> None:
        name = self.machine_name
        if self.state() == State.PAUSED:
            self.vbm("controlvm", name, "resume", "--type", str(self.settings.ui_type or "headless"))
        self.vbm("controlvm", name, "acpipowerbutton")
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.state() == State.RUNNING:
            if time.monotonic() > deadline:
                raise MachineError(f"{name} did not power off within {STOP_TIMEOUT:g}s: use kill")
            time.sleep(1.0)
        self.settings.ip_address = ""

    def restart(self, log: Log) -> None:
        self.stop(log)
        self.start(log)

    def kill(self, log: Log) -> None:
        self.vbm("controlvm", self.machine_name, "poweroff")
        self.settings.ip_address = ""

    def _close_medium(self, path: str) -> None:
        """Drop a disk from VirtualBox's media registry (the file stays); gone already is fine."""
        with contextlib.suppress(MachineError):
            self.vbm("closemedium", "disk", path)

    def remove(self, log: Log) -> None:
        if getattr(self, "_unattached_disk", ""):  # a create that failed between clone and attach
            self._close_medium(self._unattached_disk)
            self._unattached_disk = ""
        try:
            raw = self.vm_state()
        except MachineMissing:
            self._remove_own_hostonly_net()
            return
        if raw in ("saved", "aborted-saved"):
            self.vbm("discardstate", self.machine_name)  # no process to power off (reference a8)
        elif STATE_MAP.get(raw, State.NONE) not in (State.STOPPED, State.SAVED):
            self.kill(log)
        self.vbm("unregistervm", "--delete", self.machine_name)
        self._remove_own_hostonly_net()


def guest_address_in(ip_addr_output: str, network: ipaddress.IPv4Network) -> str:
    """The first address of ``ip -4 -o addr show`` output that lies in ``network`` (not its ends)."""
    for m in re.finditer(r"\binet (\d+\.\d+\.\d+\.\d+)/\d+", ip_addr_output):
        addr = ipaddress.IPv4Address(m.group(1))
        if addr in network and addr not in (network.network_address, network.broadcast_address):
            return str(addr)
    return ""


def _net_of(record: Mapping[str, str]) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.IPv4Interface(f"{record['IPAddress']}/{record['NetworkMask']}").network
    except (KeyError, ValueError):
        return None


def _takes_arch(func: Any) -> bool:
    """Whether engine.images offers ``arch=`` (issue 17) on this function yet."""
    import inspect

    try:
        return "arch" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def image_suffix(source: str) -> str:
    """'.iso', '.vmdk' or '.vdi' of a path or URL."""
    return Path(urlsplit(source).path if "://" in source else source).suffix.lower()


def guest_shares(share: tuple[str, str] | None, host_home: str | None = None) -> list[tuple[str, str, str]]:
    """The seed's vboxsf mount for a (share name, host dir): at ``/<name>`` as boot2docker mounted
    it (Users -> /Users, c/Users -> /c/Users, hosthome -> /hosthome), plus the user's home bound
    at its host path when that differs (seed.same_path_bind: /hosthome/alice at /home/alice)."""
    from pymachine.machine.seed import same_path_bind

    if share is None:
        return []
    name, host_dir = share
    mount_point = "/" + name.strip("/")
    home = host_home if host_home is not None else str(Path.home())
    return [("vboxsf", name, mount_point), *same_path_bind(mount_point, host_dir, home)]


def wait_budget() -> float:
    """How long start waits for the guest IP: PYMACHINE_SSH_WAIT (at least MIN_IP_WAIT) when set, else IP_WAIT."""
    raw = os.environ.get("PYMACHINE_SSH_WAIT", "")
    try:
        return max(float(raw), MIN_IP_WAIT) if raw else IP_WAIT
    except ValueError:
        return IP_WAIT
