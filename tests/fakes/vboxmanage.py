"""A stateful fake ``VBoxManage`` for the virtualbox driver's tests.

Run through a tiny shell wrapper named ``VBoxManage`` that tests put on PATH
(``install(bin_dir)``).  State (registered VMs with their settings, NICs,
port forwards, storage and guest properties; host-only interfaces; DHCP
servers) lives in ``$FAKE_VBOX_HOME/state.json``; every invocation is
appended to ``$FAKE_VBOX_HOME/calls.log`` as one JSON array per line.
Output and errors are shaped on the real tool's (``VBoxManage: error: ...``
on stderr, exit 1; ``Syntax error: ...``, exit 2).

Version, host OS and host CPU are selectable, and each behaviour that differs
between them follows /work/shared/reference/virtualbox7-vmware.md ("ref aN"
below names its section; that file cites VirtualBox's source and manual, or
the third party that observed it).  What the reference marks UNCONFIRMED is
marked so here too: the fake picks one plausible answer so the driver's
handling can be tested, not because VirtualBox is known to answer that way.
The fake is strict: an unknown subcommand, option or value fails as a syntax
error, as does an option the selected version does not know.

Knobs (environment):
- ``FAKE_VBOX_VERSION``: what ``--version`` prints (default 6.1.50r161033);
  its major.minor (6.0, 6.1, 7.0, 7.1, 7.2) selects the behaviour.
- ``FAKE_VBOX_HOST_OS``: linux (default), darwin or win32: the host VirtualBox runs on.
- ``FAKE_VBOX_HOST_ARCH``: x86_64 (default) or arm64.
- ``FAKE_VBOX_FAIL``: ``<subcommand>[ <first arg>]`` that fails with an error.
- ``FAKE_VBOX_NOT_READY``: the first N calls answer ``The object is not ready``.
- ``FAKE_VBOX_GUEST_IP``: the IP a started VM reports as guest property
  /VirtualBox/GuestInfo/Net/1/V4/IP and as its DHCP lease (unset: none).
- ``FAKE_VBOX_GUEST_ADDITIONS=0``: the guest runs no Guest Additions, so no guest property (ref a7).
- ``FAKE_VBOX_GUEST_PID``: a test host's init pid; ``startvm`` then plays
  boot2docker's first boot there (the disk's userdata tar -> ~docker/.ssh).
- ``FAKE_VBOX_SSH_TARGET``: ``host:port``.  No VM really boots, so on
  ``startvm`` the fake spawns a small TCP forwarder from the VM's NAT SSH rule
  (127.0.0.1:<port>) to this target, and kills it at poweroff/unregister;
  this stands in for VirtualBox's NAT port forward.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sys
from pathlib import Path


def new_uuid() -> str:
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


HOME = Path(os.environ.get("FAKE_VBOX_HOME", "/nonexistent"))
STATE = HOME / "state.json"
LOG = HOME / "calls.log"
NOT_FOUND = "VBoxManage: error: Could not find a registered machine named '{}'\n" \
            "VBoxManage: error: Details: code VBOX_E_OBJECT_NOT_FOUND (0x80bb0001), component VirtualBoxWrap, " \
            "interface IVirtualBox, callee nsISupports\n"


class Fail(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def error(msg: str) -> Fail:
    return Fail(f"VBoxManage: error: {msg}\n")


def syntax(msg: str) -> Fail:
    return Fail(f"Usage:\n\nVBoxManage [<general option>] <command>\n\nSyntax error: {msg}\n", 2)


def load() -> dict:
    if STATE.exists():
        return json.loads(STATE.read_text())
    return {"vms": {}, "hostonlyifs": {}, "dhcpservers": {}, "media": [], "calls": 0}


def save(state: dict) -> None:
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    os.replace(tmp, STATE)


def opts(args: list[str], known: dict[str, int]) -> dict[str, list[str]]:
    """Parse ``--name value`` options; ``known`` maps option -> number of values."""
    out: dict[str, list[str]] = {}
    i = 0
    while i < len(args):
        a = args[i]
        name, eq, val = a.partition("=")
        if name not in known:
            raise syntax(f"Invalid parameter '{a}'")
        n = known[name]
        if eq:
            vals = [val]
        else:
            vals = args[i + 1:i + 1 + n]
            if len(vals) < n:
                raise syntax(f"Missing argument to '{a}'")
            i += n
        out.setdefault(name, []).extend(vals)
        i += 1
    return out


def vm(state: dict, name: str) -> dict:
    for v in state["vms"].values():
        if name in (v["name"], v["uuid"]):
            return v
    raise Fail(NOT_FOUND.format(name))


def version() -> tuple[int, int]:
    text = os.environ.get("FAKE_VBOX_VERSION", "6.1.50r161033")
    major, _, rest = text.partition(".")
    return int(major), int(rest.split(".")[0])


def host_os() -> str:
    return os.environ.get("FAKE_VBOX_HOST_OS", "linux")


def host_arch() -> str:
    return os.environ.get("FAKE_VBOX_HOST_ARCH", "x86_64")


def vmnet_host() -> bool:
    """macOS builds of 7.x have VBOX_WITH_VMNET: host-only *networks*, no usable host-only adapters (ref a4)."""
    return host_os() == "darwin" and version() >= (7, 0)


# modifyvm's options (ref a1, a2; MODIFYVM-SRC g_aModifyVMOptions).  Each canonical setting has its
# pre-7.0 spelling; 7.0 added hyphenated spellings (OPT2: both accepted); 7.1 the --x86-* names.
# Options ending in "N" take a NIC number 1-8.
OLD_SPELLINGS = ["firmware", "bioslogofadein", "bioslogofadeout", "bioslogodisplaytime", "biosbootmenu",
                 "ostype", "cpus", "memory", "vram", "acpi", "ioapic", "rtcuseutc", "cpuhotplug", "pae", "hpet",
                 "hwvirtex", "nestedpaging", "largepages", "vtxvpid", "vtxux", "x2apic", "apic", "longmode",
                 "accelerate3d", "chipset", "graphicscontroller", "mouse", "keyboard", "usbxhci", "name",
                 "boot1", "boot2", "boot3", "boot4", "nicN", "nictypeN", "cableconnectedN", "nicpromiscN",
                 "hostonlyadapterN", "natpfN", "natdnshostresolverN", "natdnsproxyN", "macaddressN",
                 "nestedhwvirt"]
NEW_SPELLINGS_70 = {  # new -> canonical (old) name
    "os-type": "ostype", "nic-typeN": "nictypeN", "nic-promiscN": "nicpromiscN", "cable-connectedN": "cableconnectedN",
    "host-only-adapterN": "hostonlyadapterN", "nat-pfN": "natpfN", "nat-dns-proxyN": "natdnsproxyN",
    "nat-dns-host-resolverN": "natdnshostresolverN", "rtc-use-utc": "rtcuseutc", "cpu-hotplug": "cpuhotplug",
    "accelerate-3d": "accelerate3d", "firmware-logo-fade-in": "bioslogofadein",
    "firmware-logo-fade-out": "bioslogofadeout", "firmware-logo-display-time": "bioslogodisplaytime",
    "firmware-boot-menu": "biosbootmenu", "large-pages": "largepages", "long-mode": "longmode",
    "nested-paging": "nestedpaging", "vtx-vpid": "vtxvpid", "usb-xhci": "usbxhci", "mac-addressN": "macaddressN",
    "nested-hw-virt": "nestedhwvirt",
}
VMNET_SPELLINGS = {"hostonlynetN": "hostonlynetN", "host-only-netN": "hostonlynetN"}  # #ifdef VBOX_WITH_VMNET
X86_PREFIXED_71 = {"x86-apic": "apic", "x86-hpet": "hpet", "x86-hwvirtex": "hwvirtex", "x86-large-pages": "largepages",
                   "x86-long-mode": "longmode", "x86-nested-paging": "nestedpaging", "x86-pae": "pae",
                   "x86-vtx-vpid": "vtxvpid", "x86-vtx-ux": "vtxux", "x86-x2apic": "x2apic"}
#: Handled by handleModifyVM_x86 only: on an ARM VM (7.1+) each fails the whole call (ref a2).
X86_ONLY = {"apic", "hpet", "hwvirtex", "largepages", "longmode", "nestedpaging", "pae", "vtxvpid", "vtxux", "x2apic"}
NICTYPES = {"Am79C970A", "Am79C973", "Am79C960", "82540EM", "82543GC", "82545EM", "virtio"}
ONOFF = {"on", "off"}
VALUES = {  # canonical option -> accepted values (None: any); ref a1
    "firmware": {"bios", "efi", "efi32", "efi64", "efidual"}, "acpi": ONOFF, "ioapic": ONOFF, "rtcuseutc": ONOFF,
    "cpuhotplug": ONOFF, "pae": ONOFF, "hpet": ONOFF, "hwvirtex": ONOFF, "nestedpaging": ONOFF,
    "largepages": ONOFF, "vtxvpid": ONOFF, "vtxux": ONOFF, "x2apic": ONOFF, "apic": ONOFF, "longmode": ONOFF,
    "accelerate3d": ONOFF, "bioslogofadein": ONOFF, "bioslogofadeout": ONOFF, "usbxhci": ONOFF,
    "nestedhwvirt": ONOFF, "biosbootmenu": {"disabled", "menuonly", "messageandmenu"},
    "natdnshostresolverN": ONOFF, "natdnsproxyN": ONOFF, "cableconnectedN": ONOFF,
    "nicpromiscN": {"deny", "allow-vms", "allow-all"}, "nictypeN": NICTYPES,
    "bootN": {"none", "floppy", "dvd", "disk", "net"},
}


def modifyvm_options() -> dict[str, str]:
    """Spelling -> canonical name, for the selected version and host."""
    table = {n: n for n in OLD_SPELLINGS}
    if version() >= (7, 0):
        table.update(NEW_SPELLINGS_70)
        if host_os() == "darwin":
            table.update(VMNET_SPELLINGS)
    if version() >= (7, 1):
        table.update(X86_PREFIXED_71)
    return table


def split_nic(option: str) -> tuple[str, str]:
    """'--nic-type2' -> ('nic-typeN', '2'); '--cpus' -> ('cpus', '')."""
    name = option[2:]
    if name[-1:].isdigit() and not name.startswith(("boot", "bios")) and name not in ("accelerate3d",):
        return name[:-1] + "N", name[-1]
    return name, ""


def chipsets() -> set[str]:
    return {"piix3", "ich9"} | ({"armv8virtual"} if version() >= (7, 1) else set())


def nic_types() -> set[str]:
    kinds = {"none", "null", "nat", "bridged", "intnet", "hostonly", "generic", "natnetwork"}
    return kinds | ({"hostonlynet"} if vmnet_host() else set())


MUTABLE_STATES = {"poweroff", "aborted"}
STATE_NAMES = {"saved": "Saved", "aborted-saved": "Aborted-Saved", "running": "Running", "paused": "Paused"}


def cmd_modifyvm(state: dict, args: list[str]) -> str:
    if not args:
        raise syntax("Not enough parameters")
    v = vm(state, args[0])
    if v["state"] not in MUTABLE_STATES:
        if v["state"] in ("running", "paused"):
            raise error(f"The machine '{v['name']}' is already locked for a session (or being unlocked)")
        # The report (ref Part 2, VB-8): "The machine is not mutable (state is Aborted-Saved)".
        raise error(f"The machine is not mutable (state is {STATE_NAMES.get(v['state'], v['state'])})")
    table = modifyvm_options()
    settings = dict(v["settings"])  # all or nothing: SaveSettings() only runs when every option succeeded (ref a2)
    natpf = dict(v["natpf1"])
    rest = args[1:]
    i = 0
    while i < len(rest):
        a = rest[i]
        key, _, inline = a.partition("=")
        if not key.startswith("--"):
            raise syntax(f"Invalid parameter '{a}'")
        name, nic = split_nic(key)
        canon = table.get(name)
        if canon is None or (nic and not ("1" <= nic <= "8")):
            raise syntax(f"Invalid parameter '{a}'")
        if inline:
            val, step = inline, 1
        else:
            if i + 1 >= len(rest):
                raise syntax(f"Missing argument to '{key}'")
            val, step = rest[i + 1], 2
        if v.get("arch") == "arm" and canon in X86_ONLY:
            # handleModifyVM_ARM: E_INVALIDARG + errorGetOpt; exact text UNCONFIRMED (ref a2).
            raise syntax(f"Invalid parameter '{key}' (not supported on this VM's platform 'ARM')")
        if canon == "natpfN":
            if nic != "1":
                raise error(f"NIC {nic} is not a NAT adapter")
            if val == "delete":
                if i + step >= len(rest):
                    raise syntax(f"Missing argument to '{key}'")
                rule = rest[i + step]
                if rule not in natpf:
                    raise error(
                        "Code NS_ERROR_INVALID_ARG (0x80070057) - Invalid argument value (extended info not available)"
                    )
                del natpf[rule]
                i += step + 1
                continue
            spec = val.split(",")
            if len(spec) != 6 or spec[1] not in ("tcp", "udp") or not spec[3].isdigit() or not spec[5].isdigit():
                raise error(f"Invalid NAT rule '{val}'")
            if spec[0] in natpf:
                raise error("A NAT rule of this name already exists")
            natpf[spec[0]] = val
            i += step
            continue
        allowed = VALUES.get(canon) or VALUES.get("bootN" if canon.startswith("boot") and canon[-1].isdigit() else "")
        if allowed and val not in allowed:
            raise error(f"Invalid {key[2:]} argument '{val}'")
        if canon in ("cpus", "memory", "vram", "bioslogodisplaytime") and not val.isdigit():
            raise error(f"Invalid value '{val}' for {key}")
        if canon == "chipset" and val not in chipsets():
            raise error(f"Invalid --chipset argument '{val}'")
        if canon == "ostype" and val.endswith("_arm64") != (v.get("arch") == "arm"):
            raise error(f"The guest OS type '{val}' does not match the VM's platform architecture")  # UNCONFIRMED text
        if canon == "hostonlyadapterN" and val not in state["hostonlyifs"]:
            raise error(f"Host-only adapter '{val}' not found")  # real VBox fails at start; keep it simple
        if canon == "nicN":
            if val not in nic_types():
                raise error(f"Invalid type '{val}' specfied for NIC {nic}")
            if val in ("hostonly", "hostonlynet") and not settings.get(f"macaddress{nic}"):
                settings[f"macaddress{nic}"] = "080027" + os.urandom(3).hex().upper()
        settings[canon[:-1] + nic if canon.endswith("N") else canon] = val
        i += step
    v["settings"], v["natpf1"] = settings, natpf
    return ""


def cmd_createvm(state: dict, args: list[str]) -> str:
    known = {"--basefolder": 1, "--name": 1, "--register": 0, "--ostype": 1, "--default": 0, "--uuid": 1}
    if version() >= (7, 1):  # ref a3: new in 7.1, with the short alias --platform-arch
        known.update({"--platform-architecture": 1, "--platform-arch": 1})
    o = opts(args, known)
    if "--name" not in o:
        raise syntax("Parameter --name is required")
    name = o["--name"][0]
    if any(v["name"] == name for v in state["vms"].values()):
        raise error(f"Could not create the machine: '{name}' already exists")
    platform = (o.get("--platform-architecture") or o.get("--platform-arch") or [""])[0]
    if platform and platform not in ("x86", "arm"):
        raise error(f"Invalid --platform-architecture argument '{platform}'")
    if not platform:  # CREATEVM-SRC: the guest OS type's platform, else the host's (ref a3)
        ostype = o.get("--ostype", [""])[0]
        platform = ("arm" if ostype.endswith("_arm64") else "x86") if ostype else \
            ("arm" if host_arch() == "arm64" else "x86")
    folder = Path(o.get("--basefolder", [str(HOME / "VirtualBox VMs")])[0]) / name
    cfg = folder / f"{name}.vbox"
    if cfg.exists():
        raise error(f"Machine settings file '{cfg}' already exists")
    folder.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f"<VirtualBox><Machine name='{name}'/></VirtualBox>\n")
    vid = new_uuid()
    state["vms"][vid] = {"name": name, "uuid": vid, "state": "poweroff", "cfg": str(cfg), "settings": {},
                         "natpf1": {}, "storagectl": {}, "storage": {}, "guestprops": {}, "shares": {},
                         "extradata": {}, "registered": "--register" in o, "forwarder": 0, "arch": platform}
    return (f"Virtual machine '{name}' is created and registered.\nUUID: {vid}\n"
            f"Settings file: '{cfg}'\n")


def nic_lines(v: dict, n: int) -> list[str]:
    """INFO-SRC's per-NIC order: attachment key, macaddressN, cableconnectedN, nicN, nictypeN (ref a8)."""
    s = v["settings"]
    kind = s.get(f"nic{n}")
    if not kind:
        return []
    attach = {"hostonly": f'hostonlyadapter{n}="{s.get(f"hostonlyadapter{n}", "")}"',
              "hostonlynet": f'hostonly-network{n}="{s.get(f"hostonlynet{n}", "")}"'}.get(kind)
    shown = {"hostonlynet": "hostonlynetwork"}.get(kind, kind)
    lines = [attach] if attach else []
    if s.get(f"macaddress{n}"):
        lines.append(f'macaddress{n}="{s[f"macaddress{n}"]}"')
    lines.append(f'cableconnected{n}="{s.get(f"cableconnected{n}", "on")}"')
    lines.append(f'nic{n}="{shown}"')
    if s.get(f"nictype{n}"):
        lines.append(f'nictype{n}="{s[f"nictype{n}"]}"')
    return lines


def cmd_showvminfo(state: dict, args: list[str]) -> str:
    if not args:
        raise syntax("Not enough parameters")
    v = vm(state, args[0])
    if args[1:] != ["--machinereadable"]:
        return f"Name: {v['name']}\nState: {v['state']}\n"
    arch = v.get("arch", "x86")
    lines = [f'name="{v["name"]}"']
    if version() >= (7, 1):
        lines.append(f'platformArchitecture="{"ARM" if arch == "arm" else "x86"}"')
    lines += [f'UUID="{v["uuid"]}"', f'CfgFile="{v["cfg"]}"',
              f'memory={v["settings"].get("memory", 128)}', f'cpus={v["settings"].get("cpus", 1)}',
              f'chipset="{v["settings"].get("chipset", "armv8virtual" if arch == "arm" else "piix3")}"',
              f'firmware="{v["settings"].get("firmware", "efi" if arch == "arm" else "bios").upper()}"']
    if arch == "x86":  # x86-only keys are printed for x86 VMs only (ref a8)
        lines += [f'{k}="{v["settings"].get(k, "off")}"' for k in ("pae", "hpet", "hwvirtex", "nestedpaging")]
    lines.append(f'VMState="{v["state"]}"')
    for n in range(1, 9):
        lines += nic_lines(v, n)
    for i, rule in enumerate(v["natpf1"].values()):
        lines.append(f'Forwarding({i})="{rule}"')
    ctl = next(iter(v["storagectl"]), "SATA")
    for (port, dev), medium in sorted(((tuple(k.split("-")), m) for k, m in v["storage"].items())):
        lines.append(f'"{ctl}-{port}-{dev}"="{medium}"')
    for name, path in v["shares"].items():
        lines.append(f'SharedFolderNameMachineMapping1="{name}"\nSharedFolderPathMachineMapping1="{path}"')
    return "\n".join(lines) + "\n"


BUSES = {"ide", "sata", "scsi", "floppy", "sas", "usb", "pcie", "virtio-scsi", "virtio"}
CONTROLLERS = {"LSILogic", "LSILogicSAS", "BusLogic", "IntelAhci", "PIIX3", "PIIX4", "ICH6", "I82078", "USB",
               "NVMe", "VirtIO"}


def arm_buses() -> set[str]:
    """PLATPROPS-SRC (ref a10): VirtioSCSI only in the 2024 (7.1-era) trunk; 7.2 adds SATA, SCSI, SAS,
    USB, PCIe (NVMe).  Whether AddStorageController enforces it: UNCONFIRMED - the fake does."""
    if version() >= (7, 2):
        return {"sata", "scsi", "sas", "usb", "pcie", "virtio-scsi", "virtio"}
    return {"virtio-scsi", "virtio"}


def cmd_storagectl(state: dict, args: list[str]) -> str:
    if not args:
        raise syntax("Not enough parameters")
    v = vm(state, args[0])
    o = opts(
        args[1:], {"--name": 1, "--add": 1, "--hostiocache": 1, "--controller": 1, "--portcount": 1, "--bootable": 1}
    )
    if "--name" not in o:
        raise syntax("Storage controller name not specified")
    bus = o.get("--add", ["sata"])[0]
    if bus not in BUSES:
        raise error(f"Invalid --add argument '{bus}'")
    if bus in ("virtio-scsi", "virtio") and version() < (6, 1):
        raise error(f"Invalid --add argument '{bus}'")
    if v.get("arch") == "arm" and bus not in arm_buses():
        raise error(f"The storage bus '{bus}' is not supported by the VM's platform (ARM)")  # UNCONFIRMED text
    for flag, allowed in (("--hostiocache", ONOFF), ("--bootable", ONOFF), ("--controller", CONTROLLERS)):
        if flag in o and o[flag][0] not in allowed:
            raise error(f"Invalid {flag} argument '{o[flag][0]}'")
    v["storagectl"][o["--name"][0]] = bus
    return ""


def cmd_storageattach(state: dict, args: list[str]) -> str:
    if not args:
        raise syntax("Not enough parameters")
    v = vm(state, args[0])
    o = opts(args[1:], {"--storagectl": 1, "--port": 1, "--device": 1, "--type": 1, "--medium": 1})
    for req in ("--storagectl", "--port", "--device", "--medium"):
        if req not in o:
            raise syntax(f"Missing required {req}")
    if o["--storagectl"][0] not in v["storagectl"]:
        raise error(f"Could not find a controller named '{o['--storagectl'][0]}'")
    medium = o["--medium"][0]
    if medium not in ("none", "emptydrive") and not Path(medium).exists():
        raise error(f"Could not find file for the medium '{medium}' (VERR_FILE_NOT_FOUND)")
    v["storage"][f"{o['--port'][0]}-{o['--device'][0]}"] = medium
    return ""


def cmd_guestproperty(state: dict, args: list[str]) -> str:
    if len(args) < 3 or args[0] not in ("get", "set", "enumerate"):
        raise syntax("Incorrect parameters")
    v = vm(state, args[1])
    if args[0] == "set":
        if len(args) < 4:
            v["guestprops"].pop(args[2], None)
        else:
            v["guestprops"][args[2]] = args[3]
        return ""
    value = v["guestprops"].get(args[2])
    return f"Value: {value}\n" if value is not None else "No value set!\n"


def cmd_sharedfolder(state: dict, args: list[str]) -> str:
    if len(args) < 2 or args[0] not in ("add", "remove"):
        raise syntax("Incorrect parameters")
    v = vm(state, args[1])
    o = opts(args[2:], {"--name": 1, "--hostpath": 1, "--automount": 0, "--readonly": 0, "--transient": 0})
    if "--name" not in o or (args[0] == "add" and "--hostpath" not in o):
        raise syntax("Missing --name or --hostpath")
    if args[0] == "add":
        if not Path(o["--hostpath"][0]).is_dir():
            raise error(f"Shared folder path '{o['--hostpath'][0]}' does not exist on the host")
        v["shares"][o["--name"][0]] = o["--hostpath"][0]
    else:
        v["shares"].pop(o["--name"][0], None)
    return ""


def cmd_setextradata(state: dict, args: list[str]) -> str:
    if len(args) < 2:
        raise syntax("Incorrect parameters")
    v = vm(state, args[0]) if args[0] != "global" else {"extradata": state.setdefault("extradata", {})}
    v["extradata"][args[1]] = args[2] if len(args) > 2 else ""
    return ""


def cmd_convertfromraw(state: dict, args: list[str]) -> str:
    cut = next((i for i, x in enumerate(args) if x.startswith("--")), len(args))
    a = args[:cut]
    o = opts(args[cut:], {"--format": 1, "--variant": 1, "--uuid": 1})
    if len(a) < 2:
        raise syntax("Incorrect parameters")
    if a[0] == "stdin":
        if len(a) < 3 or not a[2].isdigit():
            raise syntax("Missing size argument")
        size = int(a[2])
        got, head = 0, b""
        while True:
            chunk = sys.stdin.buffer.read(1 << 20)
            if not chunk:
                break
            if len(head) < 8192:
                head += chunk[:8192]
            got += len(chunk)
        if got != size:
            raise error(f"Read {got} bytes from stdin, expected {size} (VERR_EOF)")
        dest = a[1]
    else:
        src = Path(a[0])
        if not src.exists():
            raise error(f"Cannot open the raw disk '{src}': VERR_FILE_NOT_FOUND")
        size, head, dest = src.stat().st_size, src.read_bytes()[:8192], a[1]
    if Path(dest).exists():
        raise error(f"Cannot create the disk image \"{dest}\": VERR_ALREADY_EXISTS")
    fmt = o.get("--format", ["VDI"])[0]
    with open(dest, "wb") as fh:  # sparse stand-in: a header line and the first KiB of the raw data
        fh.write(f"# fake {fmt} disk, {size} bytes\n".encode() + head)
    state["media"].append({"path": dest, "size": size, "format": fmt, "head": head[:8192].hex()})
    return (f'Converting from raw image file="{a[0]}" to file="{dest}"...\n'
            f"Creating dynamic image with size {size} bytes ({size >> 20}MB)...\n")


def cmd_clonemedium(state: dict, args: list[str]) -> str:
    if args[:1] in (["disk"], ["dvd"], ["floppy"]):
        args = args[1:]
    cut = next((i for i, x in enumerate(args) if x.startswith("--")), len(args))
    a = args[:cut]
    o = opts(args[cut:], {"--format": 1, "--variant": 1, "--existing": 0})
    if len(a) < 2:
        raise syntax("Incorrect parameters")
    src = Path(a[0])
    if not src.exists():
        raise error(f"Could not find file for the medium '{src}' (VERR_FILE_NOT_FOUND)")
    if Path(a[1]).exists():
        raise error(f"Cannot register the hard disk '{a[1]}' because a hard disk with UUID already exists")
    with open(src, "rb") as fh:
        head = fh.read(4096)
    source_format = disk_format(head)
    if source_format is None:  # VirtualBox opens the source first: not a disk image -> refused
        raise error(f"Could not get the storage format of the medium '{src}' (VERR_NOT_SUPPORTED)")
    Path(a[1]).write_bytes(head)
    # Opening a medium registers it in VirtualBox's global media registry until closemedium.
    registered = state.setdefault("registered", [])
    for path in (str(src), a[1]):
        if path not in registered:
            registered.append(path)
    state["media"].append({"path": a[1], "size": virtual_size(head, source_format, src),
                           "format": o.get("--format", ["VDI"])[0], "source": str(src),
                           "source_format": source_format})
    return f"Clone medium created in format '{o.get('--format', ['VDI'])[0]}'. UUID: {new_uuid()}\n"


def disk_format(head: bytes) -> str | None:
    """VDI (magic 0xbeda107f at 0x40), sparse VMDK ("KDMV") or a VMDK descriptor; None otherwise."""
    if len(head) >= 0x48 and int.from_bytes(head[0x40:0x44], "little") == 0xBEDA107F:
        return "VDI"
    if head[:4] == b"KDMV" or head.startswith(b"# Disk DescriptorFile"):
        return "VMDK"
    return None


def virtual_size(head: bytes, fmt: str, src: Path) -> int:
    """The disk's size as VirtualBox reports it: VDI header's disk size, sparse VMDK's capacity."""
    if fmt == "VDI" and len(head) >= 0x178:
        return int.from_bytes(head[0x170:0x178], "little")
    if head[:4] == b"KDMV":
        return int.from_bytes(head[12:20], "little") * 512
    return src.stat().st_size


def cmd_modifymedium(state: dict, args: list[str]) -> str:
    a = args[1:] if args[:1] in (["disk"], ["dvd"], ["floppy"]) else args
    if not a:
        raise syntax("Incorrect parameters")
    medium = next((m for m in state["media"] if m["path"] == a[0]), None)
    if medium is None:
        raise error(f"Could not find file for the medium '{a[0]}' (VERR_FILE_NOT_FOUND)")
    o = opts(a[1:], {"--resize": 1, "--compact": 0})
    if "--resize" in o:
        if medium["format"] == "VMDK":
            raise error("Resize medium operation for this format is not implemented yet!")
        size = int(o["--resize"][0]) << 20
        if size < medium["size"]:
            raise error(f"Shrinking is not yet supported for medium '{a[0]}'")
        medium["size"] = size
    return ""


def hostonly_block(h: dict) -> str:
    return (f"Name:            {h['name']}\nGUID:            {h['guid']}\nDHCP:            Disabled\n"
            f"IPAddress:       {h['ip']}\nNetworkMask:     {h['mask']}\nIPV6Address:     \n"
            f"IPV6NetworkMaskPrefixLength: 0\nHardwareAddress: 0a:00:27:00:00:{h['index']:02x}\n"
            f"MediumType:      Ethernet\nWireless:        No\nStatus:          Up\n"
            f"VBoxNetworkName: HostInterfaceNetworking-{h['name']}\n\n")


def hostonlynet_block(n: dict) -> str:
    """LIST-SRC listHostOnlyNetworks, as Vagrant's 7.x test fixture shows it - note the blank line
    after GUID (ref a4)."""
    return (f"Name:            {n['name']}\nGUID:            {n['guid']}\n\n"
            f"State:           {'Enabled' if n['enabled'] else 'Disabled'}\nNetworkMask:     {n['mask']}\n"
            f"LowerIP:         {n['lower']}\nUpperIP:         {n['upper']}\n"
            f"VBoxNetworkName: hostonly-{n['name']}\n\n")


def dhcp_block(d: dict) -> str:
    """LIST-SRC listDhcpServers: 6.1+ keys and nested config verbatim as ref a5 quotes them; older
    versions printed IP/lowerIPAddress/upperIPAddress."""
    enabled = "Yes" if d["enabled"] else "No"
    if version() < (6, 1):
        return (f"NetworkName:    {d['netname']}\nIP:             {d['ip']}\nNetworkMask:    {d['mask']}\n"
                f"lowerIPAddress: {d['lower']}\nupperIPAddress: {d['upper']}\nEnabled:        {enabled}\n\n")
    return (f"NetworkName:    {d['netname']}\nDhcpd IP:       {d['ip']}\nLowerIPAddress: {d['lower']}\n"
            f"UpperIPAddress: {d['upper']}\nNetworkMask:    {d['mask']}\nEnabled:        {enabled}\n"
            f"Global Configuration:\n    minLeaseTime:     default\n    defaultLeaseTime: default\n"
            f"    maxLeaseTime:     default\n    Forced options:   None\n    Suppressed opts.: None\n"
            f"        1/legacy: {d['mask']}\nGroups:               None\nIndividual Configs:   None\n\n")


def cmd_list(state: dict, args: list[str]) -> str:
    what = args[0] if args else ""
    if what == "vms":
        return "".join(f'"{v["name"]}" {{{v["uuid"]}}}\n' for v in state["vms"].values() if v["registered"])
    if what == "runningvms":
        return "".join(f'"{v["name"]}" {{{v["uuid"]}}}\n' for v in state["vms"].values() if v["state"] == "running")
    if what == "hostonlyifs" and not vmnet_host():
        # Only #if VBOX_WITH_NETFLT (ref a4); whether macOS 7.x builds still list them is UNCONFIRMED -
        # the fake treats the command as absent there, so a driver that still asks fails loudly.
        return "".join(hostonly_block(h) for h in state["hostonlyifs"].values())
    if what == "hostonlynets" and vmnet_host():
        return "".join(hostonlynet_block(n) for n in state.setdefault("hostonlynets", {}).values())
    if what == "dhcpservers":
        return "".join(dhcp_block(d) for d in state["dhcpservers"].values())
    raise syntax(f"Invalid parameter '{what}'")


#: DM-GITLAB-103 (ref a4): `hostonlyif create` on macOS with VirtualBox 7.x.
NETADPCTL_FAILURE = ("Failed to execute '/Applications/VirtualBox.app/Contents/MacOS/VBoxNetAdpCtl add 2>&1' "
                     "- exit status: 34304")


def cmd_hostonlyif(state: dict, args: list[str]) -> str:
    if not args or args[0] not in ("create", "remove", "ipconfig"):
        raise syntax("Invalid parameter")
    if vmnet_host():
        raise error(NETADPCTL_FAILURE)
    if args[0] == "create":
        index = 0
        while f"vboxnet{index}" in state["hostonlyifs"]:
            index += 1
        name = f"vboxnet{index}"
        state["hostonlyifs"][name] = {"name": name, "guid": new_uuid(), "ip": "0.0.0.0", "mask": "0.0.0.0",
                                      "index": index}
        return ("0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%\n"
                f"Interface '{name}' was successfully created\n")
    if len(args) < 2:
        raise syntax("Not enough parameters")
    if args[1] not in state["hostonlyifs"]:
        raise error(f"could not find interface '{args[1]}'")
    if args[0] == "remove":
        del state["hostonlyifs"][args[1]]
        return ""
    o = opts(args[2:], {"--ip": 1, "--netmask": 1, "--dhcp": 0})
    if "--ip" not in o:
        raise syntax("Missing --ip")
    state["hostonlyifs"][args[1]].update(ip=o["--ip"][0], mask=o.get("--netmask", ["255.255.255.0"])[0])
    return ""


def cmd_hostonlynet(state: dict, args: list[str]) -> str:
    """HOSTONLYNET-MAN / HOSTONLY-SRC (ref a4): add|modify|remove, macOS 7.x only (VBOX_WITH_VMNET)."""
    if not vmnet_host():
        raise syntax("Invalid command 'hostonlynet'")
    if not args or args[0] not in ("add", "modify", "remove"):
        raise syntax("Invalid parameter")
    common = {"--name": 1, "--id": 1}
    if args[0] != "remove":
        common.update({"--netmask": 1, "--lower-ip": 1, "--lowerip": 1, "--upper-ip": 1, "--upperip": 1,
                       "--enable": 0, "--disable": 0})
    o = opts(args[1:], common)
    nets = state.setdefault("hostonlynets", {})
    name = (o.get("--name") or [""])[0]
    if not name and "--id" in o:
        name = next((k for k, n in nets.items() if n["guid"] == o["--id"][0]), "")
    if not name:
        raise syntax("You need to specify either --name or --id")
    lower = (o.get("--lower-ip") or o.get("--lowerip") or [None])[0]
    upper = (o.get("--upper-ip") or o.get("--upperip") or [None])[0]
    if args[0] == "add":
        if name in nets:
            raise error(f"Host-only network '{name}' already exists")  # UNCONFIRMED text
        for flag, value in (("--netmask", o.get("--netmask")), ("--lower-ip", lower), ("--upper-ip", upper)):
            if not value:
                raise syntax(f"Missing {flag}")
        nets[name] = {"name": name, "guid": (o.get("--id") or [new_uuid()])[0], "mask": o["--netmask"][0],
                      "lower": lower, "upper": upper, "enabled": "--disable" not in o}
        return ""
    if name not in nets:
        raise error(f"Could not find a host-only network named '{name}'")  # UNCONFIRMED text
    if args[0] == "remove":
        del nets[name]
        return ""
    n = nets[name]
    n.update(mask=(o.get("--netmask") or [n["mask"]])[0], lower=lower or n["lower"], upper=upper or n["upper"],
             enabled=("--enable" in o) or (n["enabled"] and "--disable" not in o))
    return ""


def cmd_dhcpserver(state: dict, args: list[str]) -> str:
    if not args or args[0] not in ("add", "modify", "remove", "findlease"):
        raise syntax("Invalid parameter")
    known = {"--netname": 1, "--ifname": 1, "--ip": 1, "--netmask": 1, "--lowerip": 1, "--upperip": 1,
             "--enable": 0, "--disable": 0}
    if version() >= (6, 1):  # DHCP-SRC (ref a6): new spellings beside the legacy ones, and findlease
        known.update({"--network": 1, "--interface": 1, "--server-ip": 1, "--lower-ip": 1, "--upper-ip": 1,
                      "--mac-address": 1})
    elif args[0] == "findlease":
        raise syntax("Invalid parameter 'findlease'")
    o = opts(args[1:], known)
    for new, old in (("--network", "--netname"), ("--interface", "--ifname"), ("--server-ip", "--ip"),
                     ("--lower-ip", "--lowerip"), ("--upper-ip", "--upperip")):
        if new in o:
            o[old] = o.pop(new)
    if args[0] == "findlease":
        ifname = o.get("--ifname", [""])[0]
        mac = o.get("--mac-address", [""])[0].replace(":", "").upper()
        for v in state["vms"].values():
            if (
                v["settings"].get("hostonlyadapter2") == ifname
                and v["settings"].get("macaddress2") == mac
                and v.get("lease")
            ):
                return (f"IP Address:  {v['lease']}\nMAC Address: {o['--mac-address'][0]}\nState:       acked\n")
        raise error(f"Could not find a lease for {o.get('--mac-address', [''])[0]}")
    netname = (o.get("--netname") or [""])[0] or (DHCP_PREFIX_FAKE + o["--ifname"][0] if "--ifname" in o else "")
    if not netname:
        raise syntax("You need to specify either --netname or --ifname to identify the DHCP server")
    exists = netname in state["dhcpservers"]
    if args[0] == "remove":
        if not exists:
            raise error(f"DHCP server does not exist ({netname})")
        del state["dhcpservers"][netname]
        return ""
    if args[0] == "add" and exists:
        raise error(f"DHCP server already exists ({netname})")
    if args[0] == "modify" and not exists:
        raise error(f"DHCP server does not exist ({netname})")
    for req in ("--ip", "--netmask", "--lowerip", "--upperip"):
        if args[0] == "add" and req not in o:
            raise syntax(f"{req} is required")
    cur = state["dhcpservers"].get(netname, {"netname": netname})
    cur.update(ip=o.get("--ip", [cur.get("ip")])[0], mask=o.get("--netmask", [cur.get("mask")])[0],
               lower=o.get("--lowerip", [cur.get("lower")])[0], upper=o.get("--upperip", [cur.get("upper")])[0],
               enabled="--enable" in o or (cur.get("enabled", False) and "--disable" not in o))
    state["dhcpservers"][netname] = cur
    return ""


DHCP_PREFIX_FAKE = "HostInterfaceNetworking-"


def start_forwarder(v: dict) -> None:
    import socket  # only here: every other call should start fast
    target = os.environ.get("FAKE_VBOX_SSH_TARGET", "")
    rule = v["natpf1"].get("ssh")
    if not target or not rule:
        return
    port = int(rule.split(",")[3])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: detach and forward until killed
        os.close(r)
        os.setsid()
        try:
            listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
        except OSError:
            os.write(w, b"E")
            os._exit(1)
        os.write(w, b"K")
        os.close(w)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        keep = listener.fileno()  # drop inherited fds: the state lock above all
        os.closerange(3, keep)
        os.closerange(keep + 1, 4096)
        forward(listener, target)
        os._exit(0)
    os.close(w)
    ok = os.read(r, 1)
    os.close(r)
    if ok != b"K":
        raise error(f"NAT port forward: cannot bind 127.0.0.1:{port}")
    v["forwarder"] = pid


def forward(listener, target: str) -> None:
    import socket
    import threading

    host, _, port = target.rpartition(":")

    def pipe(a, b) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    while True:
        conn, _ = listener.accept()
        try:
            up = socket.create_connection((host, int(port)), timeout=10)
        except OSError:
            conn.close()
            continue
        up.settimeout(None)
        for a, b in ((conn, up), (up, conn)):
            threading.Thread(target=pipe, args=(a, b), daemon=True).start()


def stop_forwarder(v: dict) -> None:
    pid = v.get("forwarder") or 0
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        v["forwarder"] = 0


def boot_guest(state: dict, v: dict) -> None:
    """boot2docker's first boot, played on a test host: restore the disk's userdata tar into ~docker.

    ``FAKE_VBOX_GUEST_PID`` is the test host's init pid; the fake enters its namespaces
    and installs the authorized_keys the driver wrote into the disk (tar-in-disk)."""
    pid = os.environ.get("FAKE_VBOX_GUEST_PID", "")
    disk = v["storage"].get("1-0", "")
    medium = next((m for m in state["media"] if m["path"] == disk), None)
    if not pid or medium is None or not medium.get("head"):
        return
    import io
    import subprocess
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(bytes.fromhex(medium["head"]))) as tar:
        if tar.getnames()[:1] != ["boot2docker, please format-me"]:
            return
        member = tar.extractfile(".ssh/authorized_keys")
        keys = member.read() if member else b""
    script = ('mkdir -p /home/docker/.ssh && cat > /home/docker/.ssh/authorized_keys && '
              'chmod 700 /home/docker/.ssh && chmod 600 /home/docker/.ssh/authorized_keys && '
              'chown -R docker /home/docker/.ssh')
    subprocess.run(["nsenter", "-t", pid, "-m", "-u", "-n", "-p", "-r", "-w", "--", "/bin/sh", "-c", script],
                   input=keys, capture_output=True, timeout=30, check=True,
                   env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def power_on(v: dict) -> None:
    v["state"] = "running"
    ip = os.environ.get("FAKE_VBOX_GUEST_IP", "")
    if ip:
        if os.environ.get("FAKE_VBOX_GUEST_ADDITIONS", "1") != "0":  # only Guest Additions publish it (ref a7)
            v["guestprops"]["/VirtualBox/GuestInfo/Net/1/V4/IP"] = ip
        v["lease"] = ip
    start_forwarder(v)


def power_off(v: dict) -> None:
    v["state"] = "poweroff"
    v["guestprops"].pop("/VirtualBox/GuestInfo/Net/1/V4/IP", None)
    stop_forwarder(v)


def cmd_startvm(state: dict, args: list[str]) -> str:
    if not args:
        raise syntax("Not enough parameters")
    v = vm(state, args[0])
    o = opts(args[1:], {"--type": 1})
    if o.get("--type", ["gui"])[0] not in ("gui", "headless", "sdl", "separate"):
        raise error(f"Invalid session type '{o['--type'][0]}'")
    if v["state"] == "running":
        raise error(f"The machine '{v['name']}' is already locked by a session (or being locked or unlocked)")
    if v["state"] == "aborted-saved":
        # What startvm does with a saved state whose VM process died: UNCONFIRMED (ref a8: scripts
        # treat it as "needs discardstate").  The fake refuses, so a driver must discard it first.
        raise error(f"The machine '{v['name']}' has an aborted saved state: discard it first (UNCONFIRMED)")
    if (v.get("arch") == "arm") != (host_arch() == "arm64"):
        raise error("The VM's platform architecture is not supported on this host")  # UNCONFIRMED text
    for n in range(1, 9):
        kind = v["settings"].get(f"nic{n}")
        if kind == "hostonly" and vmnet_host():  # MINIKUBE-18590 / VAGRANT-12959, verbatim (ref a4)
            raise Fail(
                "VBoxManage: error: Host-only adapters are no longer supported!\n"
                "VBoxManage: error: For your convenience a host-only network named 'Legacy vboxnet0 Network' has "
                "been created with network mask '255.255.255.0' and IP address range '192.168.59.100' - "
                "'192.168.59.254'.\n"
                "VBoxManage: error: To fix this problem, switch to 'Host-only Network' attachment type in the VM "
                "settings.\nVBoxManage: error:  (VERR_NOT_FOUND)\n")
        if kind == "hostonlynet" and v["settings"].get(f"hostonlynet{n}") not in state.get("hostonlynets", {}):
            raise error(f"Could not find a host-only network named '{v['settings'].get(f'hostonlynet{n}')}'")
    nic2 = v["settings"].get("hostonlyadapter2") if v["settings"].get("nic2") == "hostonly" else None
    if nic2 and nic2 not in state["hostonlyifs"]:
        raise error(f"Nonexistent host networking interface, name '{nic2}' (VERR_INTERNAL_ERROR)")
    if "0-0" not in v["storage"] and "1-0" not in v["storage"]:
        raise error("No bootable medium found! (VERR_PDM_NO_BOOTABLE_MEDIUM)")
    power_on(v)
    boot_guest(state, v)
    return f'Waiting for VM "{v["name"]}" to power on...\nVM "{v["name"]}" has been successfully started.\n'


def cmd_controlvm(state: dict, args: list[str]) -> str:
    if len(args) < 2:
        raise syntax("Not enough parameters")
    v = vm(state, args[0])
    action = args[1]
    if action not in ("poweroff", "acpipowerbutton", "pause", "resume", "savestate", "reset"):
        raise syntax(f"Invalid parameter '{action}'")
    if v["state"] not in ("running", "paused"):
        raise error(f"Machine '{v['name']}' is not currently running")
    if action in ("poweroff", "acpipowerbutton"):
        power_off(v)
    elif action == "pause":
        v["state"] = "paused"
    elif action == "resume":
        v["state"] = "running"
    elif action == "savestate":
        stop_forwarder(v)
        v["state"] = "saved"
    return "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%\n" if action == "poweroff" else ""


def cmd_discardstate(state: dict, args: list[str]) -> str:
    """Drops a saved state (also the aborted one, 7.0+): the VM is powered off afterwards."""
    if len(args) != 1:
        raise syntax("Incorrect number of parameters")
    v = vm(state, args[0])
    if v["state"] not in ("saved", "aborted-saved"):
        raise error(f"Machine '{v['name']}' is not in the saved state")  # UNCONFIRMED text
    v["state"] = "poweroff"
    return ""


def cmd_closemedium(state: dict, args: list[str]) -> str:
    if args[:1] in (["disk"], ["dvd"], ["floppy"]):
        args = args[1:]
    paths = [a for a in args if not a.startswith("--")]
    if len(paths) != 1:
        raise syntax("Incorrect parameters")
    registered = state.setdefault("registered", [])
    if paths[0] not in registered:
        raise error(f"Could not find file for the medium '{paths[0]}' (VERR_FILE_NOT_FOUND)")
    if any(paths[0] in v["storage"].values() for v in state["vms"].values()):
        raise error(f"Cannot close medium '{paths[0]}' because it has 1 child media / is attached to a VM")
    registered.remove(paths[0])
    if "--delete" in args:
        Path(paths[0]).unlink(missing_ok=True)
    return ""


def cmd_unregistervm(state: dict, args: list[str]) -> str:
    names = [a for a in args if not a.startswith("--")]
    if not names:
        raise syntax("VM name required")
    v = vm(state, names[0])
    if v["state"] in ("running", "paused"):
        raise error(f"Cannot unregister the machine '{v['name']}' while it is locked")
    if "--delete" in args:
        for medium in list(v["storage"].values()):
            if medium.endswith((".vmdk", ".vdi")) and Path(medium).exists():
                Path(medium).unlink()
                state["media"] = [m for m in state["media"] if m["path"] != medium]
                if medium in state.get("registered", []):
                    state["registered"].remove(medium)
        cfg = Path(v["cfg"])
        cfg.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            cfg.parent.rmdir()
    del state["vms"][v["uuid"]]
    return ""


COMMANDS = {
    "createvm": cmd_createvm, "modifyvm": cmd_modifyvm, "showvminfo": cmd_showvminfo,
    "storagectl": cmd_storagectl, "storageattach": cmd_storageattach, "guestproperty": cmd_guestproperty,
    "sharedfolder": cmd_sharedfolder, "setextradata": cmd_setextradata, "convertfromraw": cmd_convertfromraw,
    "clonemedium": cmd_clonemedium, "modifymedium": cmd_modifymedium, "list": cmd_list,
    "hostonlyif": cmd_hostonlyif, "hostonlynet": cmd_hostonlynet, "dhcpserver": cmd_dhcpserver,
    "startvm": cmd_startvm, "discardstate": cmd_discardstate,
    "controlvm": cmd_controlvm, "unregistervm": cmd_unregistervm, "closemedium": cmd_closemedium,
}


def main(argv: list[str]) -> int:
    HOME.mkdir(parents=True, exist_ok=True)
    with open(LOG, "a") as log:
        log.write(json.dumps(argv) + "\n")
    if not argv:
        sys.stderr.write("Usage:\n\nVBoxManage [<general option>] <command>\n")
        return 2
    with open(HOME / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = load()
        state["calls"] = state.get("calls", 0) + 1
        not_ready = int(os.environ.get("FAKE_VBOX_NOT_READY", "0") or 0)
        if state["calls"] <= not_ready:
            save(state)
            sys.stderr.write("VBoxManage: error: The object is not ready\n")
            return 1
        fail = os.environ.get("FAKE_VBOX_FAIL", "")
        if fail and argv[:len(fail.split())] == fail.split():
            sys.stderr.write(f"VBoxManage: error: injected failure of '{fail}'\n")
            return 1
        if argv in (["--version"], ["-v"], ["-version"]):
            print(os.environ.get("FAKE_VBOX_VERSION", "6.1.50r161033"))
            return 0
        handler = COMMANDS.get(argv[0])
        try:
            if handler is None:
                raise syntax(f"Invalid command '{argv[0]}'")
            out = handler(state, argv[1:])
        except Fail as exc:
            sys.stderr.write(str(exc))
            return exc.code
        save(state)
    sys.stdout.write(out)
    return 0


def install(bin_dir: Path, python: str = sys.executable) -> Path:
    """Write the ``VBoxManage`` wrapper into ``bin_dir``; returns its path."""
    wrapper = Path(bin_dir) / "VBoxManage"
    wrapper.write_text(f'#!/bin/sh\nexec "{python}" -I -S "{Path(__file__).resolve()}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def kill_forwarders(home: Path) -> None:
    """Test clean-up: stop every forwarder the fake still records."""
    path = Path(home) / "state.json"
    if not path.exists():
        return
    for v in json.loads(path.read_text())["vms"].values():
        pid = v.get("forwarder") or 0
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
