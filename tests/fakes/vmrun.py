"""A stateful fake ``vmrun`` (VMware Workstation/Fusion) for the VMware drivers' tests.

Run through a shell wrapper named ``vmrun`` that tests put on PATH
(``install(bin_dir)``).  It reads the real ``.vmx`` files the driver writes
and refuses ones that name a missing disk or ISO, keeps power state, guest
files, guest scripts and shared folders per .vmx in
``$FAKE_VMRUN_HOME/state.json`` and logs every call (one JSON array per line)
to ``$FAKE_VMRUN_HOME/calls.log``.  Like the real tool it prints errors on
stdout as ``Error: ...`` and exits 255.

Knobs (environment):
- ``FAKE_VMRUN_GUEST_IP``: what ``getGuestIPAddress`` answers for a running VM
  (unset: ``Error: Unable to get the IP address``).
- ``FAKE_VMRUN_FAIL``: words of a command to fail, e.g. ``stop soft`` or ``start``.
- ``FAKE_VMRUN_GUEST_PASSWORD``: the guest password guest operations accept
  (default ``tcuser``).
- ``FAKE_VMRUN_LEASES`` + ``FAKE_VMRUN_LEASE_IP``: ``start`` plays vmnet-dhcpd and
  appends a lease of that IP for the VM's MAC (``ethernet0.generatedAddress``,
  which ``start`` writes into the .vmx as VMware does) to that lease file.
- ``FAKE_VMRUN_PRODUCT``: ``ws17`` (Workstation 17, default), ``fusion13`` (Fusion 13
  on an Intel Mac) or ``fusion13-arm`` (Fusion 13 on Apple Silicon).  ``start``
  checks the .vmx against what that product takes, per
  /work/shared/reference/virtualbox7-vmware.md section c ("ref cN"); Fusion's and
  Workstation's exact error texts are UNCONFIRMED there, so the messages here are the fake's.
- ``FAKE_VMRUN_LIST_REALPATH=1``: ``list`` prints each .vmx's real path (``/tmp`` is
  ``/private/tmp`` on macOS); ``FAKE_VMRUN_LIST_UPPER=1``: upper-cased, as a case-insensitive
  file system may hand a path back.  Which form vmrun prints is UNCONFIRMED (ref Part 2, VM-4).

The fake is strict: unknown commands, host types and arguments fail.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
from pathlib import Path

HOME = Path(os.environ.get("FAKE_VMRUN_HOME", "/nonexistent"))
STATE = HOME / "state.json"
LOG = HOME / "calls.log"
GUEST_OPS = {"directoryExistsInGuest", "CopyFileFromHostToGuest", "CopyFileFromGuestToHost", "runScriptInGuest",
             "runProgramInGuest", "fileExistsInGuest"}
USAGE = "\nvmrun version 1.17.0 build-fake\n\nUsage: vmrun [AUTHENTICATION-FLAGS] COMMAND [PARAMETERS]\n"


class Fail(Exception):
    pass


def parse_vmx(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"')
    return out


def vm_of(state: dict, vmx: str) -> dict:
    path = Path(vmx)
    if not path.is_file():
        raise Fail(f"Error: Cannot open VM: {vmx}, The virtual machine cannot be found")
    return state["vms"].setdefault(os.path.normpath(vmx), {"state": "off", "files": {}, "scripts": [],
                                                             "shares": {}, "shares_enabled": False})


DEVICE_SLOTS = ("scsi0:0", "ide1:0", "ide1:1", "nvme0:0", "sata0:0", "sata0:1")


def product() -> str:
    return os.environ.get("FAKE_VMRUN_PRODUCT", "ws17")


def disk_slot(cfg: dict[str, str]) -> str:
    return next((s for s in ("scsi0:0", "nvme0:0", "sata0:0") if cfg.get(f"{s}.present") == "TRUE"
                 and cfg.get(f"{s}.deviceType", "disk") != "cdrom-image"), "")


def invalid(vmx: str, why: str) -> Fail:
    return Fail(f"Error: The virtual machine configuration is not valid: {why} in {vmx}")


def check_product(vmx: str, cfg: dict[str, str]) -> None:
    """What the selected product takes (ref c1, c2)."""
    arm_host = product() == "fusion13-arm"
    guest = cfg.get("guestOS", "")
    firmware = cfg.get("firmware", "bios")
    if firmware not in ("bios", "efi"):
        raise invalid(vmx, f"firmware {firmware!r}")
    if not cfg.get("virtualHW.version", "").isdigit():
        raise invalid(vmx, "virtualHW.version")
    if not arm_host:
        if guest.startswith("arm-"):
            raise invalid(vmx, f"guestOS {guest!r} needs an Apple silicon Mac")
        return
    # "We don't plan to support installing or running x86 VMs on Macs with Apple silicon" (VMW-BLOG).
    if not guest.startswith("arm-"):
        raise invalid(vmx, f"guestOS {guest!r} is not an arm guest; Apple silicon runs arm VMs only")
    # Arm VMs are UEFI; what Fusion does without the key is UNCONFIRMED - the fake demands it (ref c2).
    if firmware != "efi":
        raise invalid(vmx, 'an arm VM needs firmware = "efi"')
    # Packer's platform notes: CD on SATA, disk on SATA or NVMe, no LSI Logic (so no scsi0), no IDE.
    for key, value in cfg.items():
        if key.startswith(("ide", "scsi")) and key.endswith(".present") and value == "TRUE":
            raise invalid(vmx, f"{key.split('.')[0]} (IDE/SCSI) is not available on Apple silicon")
    if cfg.get("ethernet0.virtualDev") not in ("e1000e", "vmxnet3"):
        raise invalid(vmx, f"ethernet0.virtualDev {cfg.get('ethernet0.virtualDev')!r} on Apple silicon")
    if int(cfg["virtualHW.version"]) < 19:  # Packer's MinimumHardwareVersion; the arm minimum is UNCONFIRMED
        raise invalid(vmx, f"virtualHW.version {cfg['virtualHW.version']} is older than this product supports")


def check_vmx(vmx: str) -> dict[str, str]:
    cfg = parse_vmx(Path(vmx))
    base = Path(vmx).parent
    for key in ("memsize", "numvcpus"):
        if not cfg.get(key, "").isdigit():
            raise invalid(vmx, key)
    check_product(vmx, cfg)
    for slot in DEVICE_SLOTS:
        if cfg.get(f"{slot}.present") == "TRUE":
            target = base / cfg.get(f"{slot}.fileName", "")
            if not target.is_file():
                raise Fail(f"Error: File not found: {target}")
    if not disk_slot(cfg):
        raise invalid(vmx, "no hard disk")
    return cfg


def run(state: dict, argv: list[str]) -> str:
    args = list(argv)
    host_type, user, password = "ws", None, None
    while args and args[0] in ("-T", "-gu", "-gp", "-vp", "-h", "-P", "-u", "-p"):
        flag = args.pop(0)
        if not args:
            raise Fail(f"Error: Missing value for {flag}")
        value = args.pop(0)
        if flag == "-T":
            if value not in ("ws", "fusion", "player", "server", "esx"):
                raise Fail(f"Error: Unrecognized host type: {value}")
            if value != ("fusion" if product().startswith("fusion") else "ws"):
                raise Fail("Error: Unable to connect to host.\nError: The specified version was not found")
            host_type = value
        elif flag == "-gu":
            user = value
        elif flag == "-gp":
            password = value
    if not args:
        raise Fail("Error: No command specified" + USAGE)
    cmd, rest = args[0], args[1:]
    fail = os.environ.get("FAKE_VMRUN_FAIL", "").split()
    words = [cmd] + [a for a in rest if not a.endswith(".vmx")]
    if fail and words[:len(fail)] == fail:
        raise Fail(f"Error: injected failure of '{' '.join(fail)}'")
    if cmd == "list":
        if rest:
            raise Fail(f"Error: Invalid number of arguments for {cmd}" + USAGE)
        running = [p for p, v in state["vms"].items() if v["state"] == "on"]
        if os.environ.get("FAKE_VMRUN_LIST_REALPATH") == "1":
            running = [os.path.realpath(p) for p in running]
        if os.environ.get("FAKE_VMRUN_LIST_UPPER") == "1":
            running = [p.upper() for p in running]
        return f"Total running VMs: {len(running)}\n" + "".join(p + "\n" for p in running)
    if not rest:
        raise Fail(f"Error: Invalid number of arguments for {cmd}" + USAGE)
    vmx = rest[0]
    if cmd in GUEST_OPS:
        if user is None or password is None:
            raise Fail("Error: A guest operation requires -gu and -gp")
        if password != os.environ.get("FAKE_VMRUN_GUEST_PASSWORD", "tcuser"):
            raise Fail("Error: Invalid user name or password for the guest OS")
    vm = vm_of(state, vmx)
    on = vm["state"] == "on"
    if cmd == "start":
        if len(rest) > 1 and rest[1] not in ("gui", "nogui"):
            raise Fail(f"Error: Invalid argument: {rest[1]}")
        cfg = check_vmx(vmx)
        if "ethernet0.generatedAddress" not in cfg:  # VMware writes the MAC it made into the .vmx
            mac = "00:0c:29:" + ":".join(f"{b:02x}" for b in os.urandom(3))
            with open(vmx, "a") as fh:
                fh.write(f'ethernet0.generatedAddress = "{mac}"\n')
            cfg["ethernet0.generatedAddress"] = mac
        leases, lease_ip = os.environ.get("FAKE_VMRUN_LEASES", ""), os.environ.get("FAKE_VMRUN_LEASE_IP", "")
        if leases and lease_ip:  # vmnet-dhcpd answering the guest's DHCP request
            with open(leases, "a") as fh:
                fh.write(f"lease {lease_ip} {{\n  starts 4 2026/11/26 10:00:00;\n  ends 4 2026/11/26 10:30:00;\n"
                         f"  hardware ethernet {cfg['ethernet0.generatedAddress']};\n}}\n")
        vm["state"] = "on"
        vm["host_type"] = host_type
        vm["boot_order"] = cfg.get("bios.bootOrder", "")
        vm["firmware"] = cfg.get("firmware", "bios")
        with open(Path(vmx).parent / cfg[f"{disk_slot(cfg)}.fileName"], "rb") as fh:  # what the firmware would read
            vm["disk_magic"] = fh.read(4).decode("latin-1")
        return ""
    if cmd == "stop":
        mode = rest[1] if len(rest) > 1 else "soft"
        if mode not in ("soft", "hard"):
            raise Fail(f"Error: Invalid argument: {mode}")
        if not on:
            raise Fail(f"Error: The virtual machine is not powered on: {vmx}")
        vm["state"] = "off"
        vm["last_stop"] = mode
        return ""
    if cmd == "deleteVM":
        if on:
            raise Fail("Error: The virtual machine is in use")
        cfg = parse_vmx(Path(vmx))
        slot = disk_slot(cfg)
        disk = Path(vmx).parent / cfg.get(f"{slot}.fileName", "") if slot else Path(vmx).parent / "-"
        if disk.is_file():
            disk.unlink()
        Path(vmx).unlink()
        del state["vms"][os.path.normpath(vmx)]
        return ""
    if not on:
        raise Fail(f"Error: The virtual machine is not powered on: {vmx}")
    if cmd == "getGuestIPAddress":
        if len(rest) > 1 and rest[1] != "-wait":
            raise Fail(f"Error: Invalid argument: {rest[1]}")
        ip = os.environ.get("FAKE_VMRUN_GUEST_IP", "")
        if not ip:
            raise Fail("Error: Unable to get the IP address")
        return ip + "\n"
    if cmd == "directoryExistsInGuest":
        if len(rest) != 2:
            raise Fail("Error: Invalid number of arguments for directoryExistsInGuest")
        return f"The directory exists: {rest[1]}\n"
    if cmd == "CopyFileFromHostToGuest":
        if len(rest) != 3:
            raise Fail("Error: Invalid number of arguments for CopyFileFromHostToGuest")
        src = Path(rest[1])
        if not src.is_file():
            raise Fail(f"Error: A file was not found: {src}")
        vm["files"][rest[2]] = hashlib.sha256(src.read_bytes()).hexdigest()
        return ""
    if cmd == "runScriptInGuest":
        if len(rest) != 3:
            raise Fail("Error: Invalid number of arguments for runScriptInGuest")
        vm["scripts"].append([rest[1], rest[2]])
        return ""
    if cmd == "enableSharedFolders":
        vm["shares_enabled"] = True
        return ""
    if cmd == "addSharedFolder":
        if len(rest) != 3:
            raise Fail("Error: Invalid number of arguments for addSharedFolder")
        vm["shares"][rest[1]] = rest[2]
        return ""
    raise Fail(f"Error: Unrecognized command: {cmd}" + USAGE)


def main(argv: list[str]) -> int:
    HOME.mkdir(parents=True, exist_ok=True)
    with open(LOG, "a") as log:
        log.write(json.dumps(argv) + "\n")
    with open(HOME / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads(STATE.read_text()) if STATE.exists() else {"vms": {}}
        try:
            out = run(state, argv)
        except Fail as exc:
            sys.stdout.write(str(exc) + "\n")
            return 255
        tmp = STATE.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, STATE)
    sys.stdout.write(out)
    return 0


def install(bin_dir: Path, python: str = sys.executable) -> Path:
    """Write the ``vmrun`` wrapper into ``bin_dir``; returns its path."""
    wrapper = Path(bin_dir) / "vmrun"
    wrapper.write_text(f'#!/bin/sh\nexec "{python}" -I -S "{Path(__file__).resolve()}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
