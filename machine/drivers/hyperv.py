"""The ``hyperv`` driver: a generation 2 Hyper-V VM booting pymachine's image as VHDX, through PowerShell.

docker-machine 0.16.2's flags, env vars and pre-create checks (PowerShell
found, the Hyper-V module present, the user in Hyper-V Administrators
(S-1-5-32-578) or an elevated Administrator, a virtual switch that exists).
What changes, because pymachine boots its own UEFI image instead of the
boot2docker ISO:

* generation 2 (``New-VM -Generation 2``, SCSI disk ``disk.vhdx`` copied from
  the image's VHDX export and grown with ``Resize-VHD``), Secure Boot with the
  ``MicrosoftUEFICertificateAuthority`` template (Debian's shim is signed by
  it; the default Windows template refuses Linux loaders), the seed ISO (the
  ``docker`` user's key) on a SCSI DVD drive, the disk first in the boot order;
* no switch named: the client Hyper-V "Default Switch" (NAT + DHCP, looked up
  by its fixed Id as its name is localized), else the first External switch;
* the guest IP is the first IPv4 address of the VM's adapter
  (``IPAddresses``, reported by the guest's KVP daemon), waited for at most
  ``--hyperv-wait-for-ip-timeout`` seconds (docker-machine waited forever and
  could pick an IPv6 link-local address);
* the VM name must be free (Hyper-V accepts duplicates, then every lookup by
  name matches both); stop is a graceful ``Stop-VM`` bounded by
  ``$PYMACHINE_HYPERV_SHUTDOWN_WAIT`` (default 60 s), then ``-TurnOff``;
  ``rm`` turns the VM off and removes it, and the store removes its files.

``--hyperv-boot2docker-url`` takes a ``.vhdx`` of your own (a gen 2 bootable
disk) instead of pymachine's image.  ``ls`` lists all VMs with one PowerShell
process (each start costs about a second on real hosts).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pymachine.machine import layout, urls
from pymachine.machine.drivers.base import Driver, DriverCapabilities, Flag, Log, State
from pymachine.machine.drivers.powershell import PowerShell, find_powershell, quote
from pymachine.machine.drivers.restclient import seconds_from_env
from pymachine.machine.drivers.settings import Settings, setting
from pymachine.machine.errors import MachineError, PreCreateError

DEFAULT_SWITCH_ID = "c08cb7b8-9b3c-408e-8e30-5e16a3aeb444"
SECURE_BOOT_TEMPLATE = "MicrosoftUEFICertificateAuthority"
SHUTDOWN_WAIT_ENV = "PYMACHINE_HYPERV_SHUTDOWN_WAIT"
B2D_USER = "docker"
MAC_RE = re.compile(r"^[0-9A-Fa-f]{12}$|^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$")
VM_LIST = ("Hyper-V\\Get-VM | Select-Object Name, Id, @{n='State';e={[string]$_.State}}, Generation, "
           "@{n='IPAddresses';e={@($_.NetworkAdapters | ForEach-Object IPAddresses)}}")
SWITCH_LIST = "Hyper-V\\Get-VMSwitch | Select-Object Id, Name, @{n='SwitchType';e={[string]$_.SwitchType}}"
IS_HYPERV_ADMIN = ("([Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent())"
                   ".IsInRole('S-1-5-32-578')")
IS_ADMIN = ("([Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent())"
            ".IsInRole([Security.Principal.WindowsBuiltInRole] 'Administrator')")
STATES = {"Running": State.RUNNING, "Off": State.STOPPED, "Saved": State.SAVED, "Paused": State.PAUSED,
          "Starting": State.STARTING, "Stopping": State.STOPPING}


def first_ipv4(addresses: Any) -> str:
    for addr in addresses if isinstance(addresses, list) else [addresses]:
        try:
            if isinstance(addr, str) and ipaddress.ip_address(addr).version == 4:
                return addr
        except ValueError:
            continue
    return ""


@dataclasses.dataclass
class HyperVSettings(Settings):
    boot2docker_url: str = setting("Boot2DockerURL", "")
    vswitch: str = setting("VSwitch", "")
    disk_size: int = setting("DiskSize", 20000)
    mem_size: int = setting("MemSize", 1024)
    cpu: int = setting("CPU", 1)
    mac_addr: str = setting("MacAddr", "")
    vlan_id: int = setting("VLanID", 0)
    disable_dynamic_memory: bool = setting("DisableDynamicMemory", False)
    wait_for_ip_timeout: int = setting("WaitForIPTimeout", 240)
    switch_used: str = setting("SwitchUsed", "")
    vm_id: str = setting("VMId", "")
    vm_created: bool = setting("VMCreated", False)


class HyperVDriver(Driver):
    settings_class = HyperVSettings
    settings: HyperVSettings
    name = "hyperv"
    capabilities = DriverCapabilities(start=True, stop=True, restart=True, kill=True)
    default_ssh_user = B2D_USER
    #: The host OS whose PowerShell is looked for (tests run the Windows lookup anywhere).
    platform: str = sys.platform
    flags = (
        Flag(
            "hyperv-boot2docker-url",
            "string",
            "",
            "HYPERV_BOOT2DOCKER_URL",
            "a bootable .vhdx (generation 2) instead of pymachine's image",
        ),
        Flag(
            "hyperv-virtual-switch",
            "string",
            "",
            "HYPERV_VIRTUAL_SWITCH",
            "Virtual switch name (default: the Default Switch, else the first External switch)",
        ),
        Flag(
            "hyperv-disk-size", "int", 20000, "HYPERV_DISK_SIZE", "Maximum size of the dynamically expanding disk (MB)"
        ),
        Flag("hyperv-memory", "int", 1024, "HYPERV_MEMORY", "Memory size for host in MB"),
        Flag("hyperv-cpu-count", "int", 1, "HYPERV_CPU_COUNT", "number of CPUs for the machine"),
        Flag(
            "hyperv-static-macaddress",
            "string",
            "",
            "HYPERV_STATIC_MACADDRESS",
            "Hyper-V network adapter's static MAC address.",
        ),
        Flag("hyperv-vlan-id", "int", 0, "HYPERV_VLAN_ID", "Hyper-V network adapter's VLAN ID if any"),
        Flag(
            "hyperv-disable-dynamic-memory",
            "bool",
            False,
            "HYPERV_DISABLE_DYNAMIC_MEMORY",
            "Disable dynamic memory management setting",
        ),
        Flag(
            "hyperv-wait-for-ip-timeout",
            "int",
            240,
            "HYPERV_WAIT_FOR_IP_TIMEOUT",
            "seconds to wait for the VM's IPv4 address",
        ),
    )

    def set_config_from_flags(self, values: Mapping[str, Any]) -> None:
        def number(flag: str, low: int, high: int) -> int:
            value = values.get(f"hyperv-{flag}", 0)
            if not isinstance(value, int) or not low <= value <= high:
                raise MachineError(f"--hyperv-{flag} must be a number between {low} and {high}, got {value!r}")
            return value

        mac = str(values.get("hyperv-static-macaddress") or "")
        if mac and not MAC_RE.match(mac):
            raise MachineError(f"--hyperv-static-macaddress must be a MAC address like 00155D010203, got {mac!r}")
        url = str(values.get("hyperv-boot2docker-url") or "")
        if url and not url.lower().endswith(".vhdx"):
            raise MachineError(f"--hyperv-boot2docker-url must name a .vhdx disk (generation 2 VMs boot no ISO "
                               f"from pymachine), got {url!r}")
        self.settings.update(
            boot2docker_url=os.path.abspath(os.path.expanduser(url)) if url else "",
            vswitch=str(values.get("hyperv-virtual-switch") or ""),
            disk_size=number("disk-size", 1024, 64 << 20), mem_size=number("memory", 32, 1 << 20),
            cpu=number("cpu-count", 1, 240), mac_addr=mac.replace(":", "").replace("-", "").upper(),
            vlan_id=number("vlan-id", 0, 4094),
            disable_dynamic_memory=bool(values.get("hyperv-disable-dynamic-memory")),
            wait_for_ip_timeout=number("wait-for-ip-timeout", 1, 86400), ssh_user=B2D_USER, ssh_port=22,
        )

    # -- PowerShell ------------------------------------------------------------------------
    def ps(self) -> PowerShell:
        return PowerShell(find_powershell(self.platform))

    def _path(self, name: str) -> str:
        return os.path.join(self.machine_dir, name)

    def list_vms(self, ps: PowerShell | None = None, timeout: float = 60.0) -> list[dict[str, Any]]:
        return (ps or self.ps()).json(VM_LIST, timeout)

    def _vm(self, ps: PowerShell | None = None, timeout: float = 60.0) -> dict[str, Any] | None:
        return self._pick(self.list_vms(ps, timeout))

    def _pick(self, vms: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Ours among ``vms``: by the recorded VMId only (Hyper-V allows duplicate names), else by name."""
        vm_id = self.settings.vm_id.lower()
        if vm_id:
            return next((v for v in vms if str(v.get("Id")).lower() == vm_id), None)
        return next((v for v in vms if v.get("Name") == self.machine_name), None)

    def _on_vm(self, cmdlet: str, args: str = "") -> str:
        """``cmdlet`` applied to our VM alone: ``-Name`` would act on every VM of that name."""
        vm_id = self.settings.vm_id
        if vm_id:
            return f"Hyper-V\\Get-VM -Id {quote(vm_id)} | Hyper-V\\{cmdlet}{args}"
        return f"Hyper-V\\{cmdlet} -Name {quote(self.machine_name)}{args}"

    # -- pre-create ------------------------------------------------------------------------
    def pre_create_check(self) -> None:
        try:
            ps = self.ps()
            modules = ps.run("@(Get-Module -ListAvailable Hyper-V).Name | Get-Unique").split()
            if "Hyper-V" not in modules:
                raise PreCreateError("Hyper-V PowerShell Module is not available")
            if ps.run(IS_HYPERV_ADMIN).strip() != "True" and ps.run(IS_ADMIN).strip() != "True":
                raise PreCreateError("Hyper-v commands have to be run as an Administrator "
                                     "(or a member of Hyper-V Administrators)")
            self.settings.switch_used = self._choose_switch(ps)
            if any(v.get("Name") == self.machine_name for v in self.list_vms(ps)):
                raise PreCreateError(f'a Hyper-V VM named "{self.machine_name}" already exists')
            self._check_image()
        except PreCreateError:
            raise
        except MachineError as exc:
            raise PreCreateError(str(exc)) from None

    def _choose_switch(self, ps: PowerShell) -> str:
        switches = ps.json(SWITCH_LIST)
        wanted = self.settings.vswitch
        if wanted:
            if not any(s.get("Name") == wanted for s in switches):
                raise PreCreateError(f'vswitch "{wanted}" not found (--hyperv-virtual-switch; have: '
                                     f"{', '.join(str(s.get('Name')) for s in switches) or 'none'})")
            return wanted
        default = next((s for s in switches if str(s.get("Id")).lower() == DEFAULT_SWITCH_ID), None)
        external = next((s for s in switches if s.get("SwitchType") == "External"), None)
        chosen = default or external
        if chosen is None:
            raise PreCreateError("no External vswitch nor Default Switch found. A valid vswitch must be available "
                                 "for this command to run (--hyperv-virtual-switch)")
        return str(chosen.get("Name"))

    def _check_image(self) -> None:
        url = self.settings.boot2docker_url
        if url:
            if not os.path.isfile(url):
                raise PreCreateError(f"--hyperv-boot2docker-url: {url!r} does not exist")
            return
        from pymachine.engine import images

        try:
            images.check_for_driver(images.default_cache_dir(self.store_path), "vhdx", "--hyperv-boot2docker-url",
                                    arch="amd64")
        except MachineError as exc:
            raise PreCreateError(str(exc)) from None

    # -- create ------------------------------------------------------------------------------
    def create(self, log: Log) -> None:
        from pymachine.machine import certs, seed

        name = self.machine_name
        ps = self.ps()
        switch = str(self.settings.switch_used or self._choose_switch(ps))
        log(f"({name}) Using switch \"{switch}\"")
        source = self.settings.boot2docker_url
        grow = False  # your own disk is used at its own size
        if not source:
            from pymachine.engine import images

            vhdx, info = images.disk_for_driver(images.default_cache_dir(self.store_path), "vhdx",
                                                lambda m: log(f"({name}) {m}"), arch="amd64")
            source = str(vhdx)
            grow = self.settings.disk_size << 20 > info.virtual_size  # Resize-VHD refuses to shrink
        key = Path(self._path(layout.SSH_KEY))
        log(f"({name}) Creating SSH key...")
        certs.generate_ssh_keypair(key)
        self.settings.ssh_key_path = str(key)
        log(f"({name}) Creating the seed ISO and the disk...")
        iso, disk = self._path(layout.SEED_ISO), self._path(layout.HYPERV_DISK)
        seed.write_seed_iso(iso, hostname=name, user=B2D_USER, ssh_pubkey=Path(str(key) + ".pub").read_text(),
                            proxy=None, instance_id=str(uuid.uuid4()))
        shutil.copyfile(source, disk)
        self.settings.vm_created = True  # from here on rm/rollback looks for the VM
        log(f"({name}) Creating VM...")
        ps.run(self._create_script(switch, disk, iso, grow))
        vm = self._vm(ps)
        self.settings.vm_id = str((vm or {}).get("Id") or "")
        log(f"({name}) Starting VM...")
        ps.run(self._on_vm("Start-VM"))
        log(f"({name}) Waiting for host to start...")
        self.settings.ip_address = self.wait_for_ip(ps)

    def _create_script(self, switch: str, disk: str, iso: str, grow: bool) -> str:
        name = quote(self.machine_name)
        steps = [f"Hyper-V\\Resize-VHD -Path {quote(disk)} -SizeBytes {self.settings.disk_size}MB"] if grow else []
        steps += [(f"Hyper-V\\New-VM -Name {name} -Generation 2 -MemoryStartupBytes {self.settings.mem_size}MB "
                 f"-SwitchName {quote(switch)} -VHDPath {quote(disk)} -Path {quote(self.machine_dir)}")]
        if self.settings.disable_dynamic_memory:
            steps.append(f"Hyper-V\\Set-VMMemory -VMName {name} -DynamicMemoryEnabled $false")
        if int(self.settings.cpu or 1) > 1:
            steps.append(f"Hyper-V\\Set-VMProcessor -VMName {name} -Count {self.settings.cpu}")
        if self.settings.mac_addr:
            steps.append(
                f"Hyper-V\\Set-VMNetworkAdapter -VMName {name} -StaticMacAddress {quote(self.settings.mac_addr)}"
            )
        if self.settings.vlan_id > 0:
            steps.append(
                f"Hyper-V\\Set-VMNetworkAdapterVlan -VMName {name} -Access -VlanId {self.settings.vlan_id}"
            )
        steps += [
            f"Hyper-V\\Set-VMFirmware -VMName {name} -EnableSecureBoot On -SecureBootTemplate {SECURE_BOOT_TEMPLATE}",
            f"Hyper-V\\Add-VMDvdDrive -VMName {name} -Path {quote(iso)}",
            f"Hyper-V\\Set-VMFirmware -VMName {name} -FirstBootDevice (Hyper-V\\Get-VMHardDiskDrive -VMName {name})",
        ]
        return "; ".join(steps)

    def wait_for_ip(self, ps: PowerShell | None = None) -> str:
        ps = ps or self.ps()
        limit = float(self.settings.wait_for_ip_timeout or 240)
        deadline = time.monotonic() + limit
        delay = 0.5
        while True:
            vm = self._vm(ps)
            if vm is None:
                raise MachineError(f'Hyper-V VM "{self.machine_name}" disappeared while starting')
            ip = first_ipv4(vm.get("IPAddresses"))
            if ip:
                return ip
            if time.monotonic() + delay > deadline:
                raise MachineError(f'no IPv4 address for "{self.machine_name}" within {limit:g}s '
                                   "(--hyperv-wait-for-ip-timeout; does the switch hand out DHCP addresses?)")
            time.sleep(delay)
            delay = min(delay * 1.5, 3.0)

    # -- state -------------------------------------------------------------------------------
    def url(self) -> str:
        return urls.engine_url(self.ip(), urls.ENGINE_PORT, self.machine_name)

    def state(self, timeout: float = 10.0) -> State:
        vm = self._vm(timeout=timeout)
        if vm is None:
            raise MachineError(f'Hyper-V was unable to find a virtual machine with name "{self.machine_name}".')
        return STATES.get(str(vm.get("State")), State.NONE)

    @classmethod
    def batch_states(cls, drivers: list[Driver], timeout: float) -> dict[str, State]:
        """All VMs from one PowerShell process (each costs about a second to start)."""
        mine = [d for d in drivers if isinstance(d, HyperVDriver)]
        if not mine:
            return {}
        try:
            vms = mine[0].list_vms(timeout=timeout)
        except MachineError:
            return {}
        picked = {d.machine_name: d._pick(vms) for d in mine}
        return {name: STATES.get(str(vm.get("State")), State.NONE) for name, vm in picked.items() if vm}

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, log: Log) -> None:
        ps = self.ps()
        ps.run(self._on_vm("Start-VM"))
        self.settings.ip_address = self.wait_for_ip(ps)  # the Default Switch may hand out another one

    def stop(self, log: Log) -> None:
        ps = self.ps()
        limit = seconds_from_env(SHUTDOWN_WAIT_ENV, 60.0)
        try:
            ps.run(self._on_vm("Stop-VM"), timeout=max(limit, 1.0))
        except MachineError as exc:
            log(f"({self.machine_name}) Graceful shutdown failed ({exc}); turning the VM off")
            ps.run(self._on_vm("Stop-VM", " -TurnOff"))

    def kill(self, log: Log) -> None:
        self.ps().run(self._on_vm("Stop-VM", " -TurnOff"))

    def restart(self, log: Log) -> None:
        self.stop(log)
        self.start(log)

    def remove(self, log: Log) -> None:
        """Turn the VM off and remove it; its disk and seed live in the machine dir the store removes."""
        if not self.settings.vm_created:
            return
        ps = self.ps()
        vm = self._vm(ps)
        if vm is None:
            log(f"({self.machine_name}) Hyper-V VM does not exist, assuming it is already deleted")
            return
        self.settings.vm_id = str(vm.get("Id") or "")  # a machine from before VMId was kept: this one only
        if vm.get("State") != "Off":
            ps.run(self._on_vm("Stop-VM", " -TurnOff"))
        ps.run(self._on_vm("Remove-VM", " -Force"))
