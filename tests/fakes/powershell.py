"""A stateful fake ``powershell``/``pwsh`` with Hyper-V's cmdlets, for the ``hyperv`` driver's tests.

Hyper-V cannot run here.  This executable takes the command line PowerShell
takes (``-NoProfile -NonInteractive -Command <script>``, or the trailing words
joined with spaces as docker-machine passed them), splits the script into
statements, and runs the Hyper-V cmdlets the driver uses against a JSON state
file (``$FAKE_POWERSHELL_STATE``).  Shapes follow the cmdlet reference
(MicrosoftDocs windows-powershell-docs, hyper-v/*.md) and the real outputs
quoted in /work/shared/reference/hyperv-gce-openstack.md sections 1 and 4.1:
module-qualified names, named parameters checked against each cmdlet's
documented parameter set (an unknown one fails with ``A parameter cannot be
found that matches parameter name 'X'.``), unknown cmdlets fail with
``The term 'X' is not recognized ...``, missing VMs with ``Hyper-V was unable
to find a virtual machine with name "X".``; with ``$ErrorActionPreference =
'Stop'`` the first error ends the script, exit code 1, error record on stderr.
``ConvertTo-Json -Compress @(...)`` is answered for the two projections the
driver asks (VMs, switches), with enums as strings; output lines end in CRLF.
VM names need not be unique, as in Hyper-V: ``-Name``/``-VMName`` select every VM
of that name (Stop-VM/Remove-VM act on all of them), ``Get-VM -Id`` one VM, and
``Get-VM ... | Start-VM|Stop-VM|Remove-VM`` pipes the VM objects into ``-VM``
(the cmdlets' documented pipeline input, ``VirtualMachine[]``).

State keys: ``module`` (Hyper-V module present), ``hyperv_admin``, ``admin``,
``switches`` [{Id, Name, SwitchType}], ``vms`` {key: {Name, Id, ...}} (the key is the name unless taken), ``guest_ip``
(the IPv4 a started VM reports, after an IPv6 link-local one; none if unset),
``guest_hook`` (argv run on a gen 2 VM's start with the VM name and its DVD images; it plays the
guest's first boot and prints the address the guest reports), ``ignore_shutdown`` (graceful
Stop-VM fails), ``gen2`` (False: Server 2012's
``New-VM`` without ``-Generation``), ``fail`` {cmdlet: message} (fail on
demand).  Every script is appended to ``calls.log`` beside the state file.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

DEFAULT_SWITCH_ID = "c08cb7b8-9b3c-408e-8e30-5e16a3aeb444"
VM_PROJECTION = ("Name, Id, @{n='State';e={[string]$_.State}}, Generation, "
                 "@{n='IPAddresses';e={@($_.NetworkAdapters | ForEach-Object IPAddresses)}}")
SWITCH_PROJECTION = "Id, Name, @{n='SwitchType';e={[string]$_.SwitchType}}"
IS_IN_ROLE = "([Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()).IsInRole("
COMMON = {"ErrorAction": "value", "Verbose": "switch", "WhatIf": "switch", "Confirm": "switch"}
#: Documented parameters (the subset of each set that a caller could pass here); "switch" takes no value.
CMDLETS: dict[str, dict[str, str]] = {
    "Get-VM": {"Name": "value", "Id": "value", "ComputerName": "value"},
    "Get-VMSwitch": {"Name": "value", "Id": "value", "SwitchType": "value"},
    "New-VM": {"Name": "value", "Generation": "value", "MemoryStartupBytes": "value", "SwitchName": "value",
               "VHDPath": "value", "NewVHDPath": "value", "NewVHDSizeBytes": "value", "Path": "value",
               "NoVHD": "switch", "BootDevice": "value", "Version": "value"},
    "Set-VMMemory": {"VMName": "value", "DynamicMemoryEnabled": "value", "StartupBytes": "value",
                     "MinimumBytes": "value", "MaximumBytes": "value"},
    "Set-VMProcessor": {"VMName": "value", "Count": "value"},
    "Set-VMNetworkAdapter": {"VMName": "value", "StaticMacAddress": "value", "DynamicMacAddress": "switch"},
    "Set-VMNetworkAdapterVlan": {"VMName": "value", "Access": "switch", "VlanId": "value", "Untagged": "switch"},
    "Set-VMFirmware": {"VMName": "value", "EnableSecureBoot": "value", "SecureBootTemplate": "value",
                       "FirstBootDevice": "value", "BootOrder": "value"},
    "Add-VMDvdDrive": {"VMName": "value", "Path": "value", "ControllerNumber": "value", "ControllerLocation": "value"},
    "Get-VMHardDiskDrive": {"VMName": "value"},
    "Resize-VHD": {"Path": "value", "SizeBytes": "value", "ToMinimumSize": "switch"},
    "Start-VM": {"Name": "value", "VM": "value", "Passthru": "switch"},
    "Stop-VM": {"Name": "value", "VM": "value", "TurnOff": "switch", "Force": "switch", "Save": "switch"},
    "Remove-VM": {"Name": "value", "VM": "value", "Force": "switch"},
}
PIPED_VM = ("Start-VM", "Stop-VM", "Remove-VM")  # take Get-VM's output as -VM
POSITIONAL = {"Get-VM": "Name", "Start-VM": "Name", "Stop-VM": "Name", "Remove-VM": "Name", "New-VM": "Name",
              "Set-VMProcessor": "VMName", "Get-VMSwitch": "Name", "Resize-VHD": "Path"}
SECURE_BOOT_TEMPLATES = ("MicrosoftWindows", "MicrosoftUEFICertificateAuthority", "OpenSourceShieldedVM")


class PSError(Exception):
    def __init__(self, message: str, category: str, fqid: str, statement: str) -> None:
        super().__init__(message)
        self.record = (f"{message}\r\nAt line:1 char:1\r\n+ {statement}\r\n+ {'~' * min(len(statement), 40)}\r\n"
                       f"    + CategoryInfo          : {category}\r\n"
                       f"    + FullyQualifiedErrorId : {fqid}\r\n")


def split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside quotes, parentheses and braces."""
    parts, depth, quote, cur = [], 0, False, []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "'":
            quote = not quote
        elif not quote and ch in "({":
            depth += 1
        elif not quote and ch in ")}":
            depth -= 1
        if ch == sep and not quote and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "'":
            j, buf = i + 1, []
            while j < len(text):
                if text[j] == "'" and text[j + 1:j + 2] == "'":
                    buf.append("'")
                    j += 2
                elif text[j] == "'":
                    break
                else:
                    buf.append(text[j])
                    j += 1
            out.append(("str", "".join(buf)))
            i = j + 1
        elif ch == "(":
            depth, j = 0, i
            while j < len(text):
                depth += {"(": 1, ")": -1}.get(text[j], 0)
                if depth == 0:
                    break
                j += 1
            out.append(("paren", text[i + 1:j]))
            i = j + 1
        elif ch == "-" and i + 1 < len(text) and text[i + 1].isalpha():
            j = i + 1
            while j < len(text) and (text[j].isalnum()):
                j += 1
            out.append(("param", text[i + 1:j]))
            i = j
        else:
            j = i
            while j < len(text) and not text[j].isspace():
                j += 1
            out.append(("word", text[i:j]))
            i = j
    return out


def number(value: str) -> int:
    v = value.upper()
    for suffix, mult in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if v.endswith(suffix):
            return int(v[: -len(suffix)]) * mult
    return int(v)


class Shell:
    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.out: list[str] = []

    def emit(self, *lines: str) -> None:
        self.out.extend(lines)

    def named(self, name: str, cmdlet: str, stmt: str) -> list[dict[str, Any]]:
        """Every VM called ``name`` (Hyper-V does not keep names unique); none is an error."""
        found = [v for v in self.state["vms"].values() if v["Name"] == name]
        if not found:
            raise PSError(f'{cmdlet} : Hyper-V was unable to find a virtual machine with name "{name}".',
                          f"InvalidArgument: ({name}:String) [{cmdlet}], VirtualizationException",
                          f"InvalidParameter,Microsoft.HyperV.PowerShell.Commands.{cmdlet.replace('-', '')}", stmt)
        return found

    def vm(self, name: str, cmdlet: str, stmt: str) -> dict[str, Any]:
        return self.named(name, cmdlet, stmt)[0]

    def targets(self, p: dict[str, Any], cmdlet: str, stmt: str) -> list[dict[str, Any]]:
        """The VMs piped in as ``-VM``, else all of ``-Name``'s."""
        if "VM" in p:
            ids = {v["Id"] for v in p["VM"]}
            return [v for v in self.state["vms"].values() if v["Id"] in ids]
        return self.named(p["Name"], cmdlet, stmt)

    def statement(self, stmt: str) -> None:
        if stmt.startswith(("$ErrorActionPreference", "[Console]::OutputEncoding")):
            return
        if stmt == "@(Get-Module -ListAvailable Hyper-V).Name | Get-Unique":
            if self.state.get("module", True):
                self.emit("Hyper-V")
            return
        if stmt.startswith(IS_IN_ROLE):
            arg = stmt[len(IS_IN_ROLE):-1]
            if arg == "'S-1-5-32-578'":
                self.emit(str(bool(self.state.get("hyperv_admin", True))))
            elif arg == "[Security.Principal.WindowsBuiltInRole] 'Administrator'":
                self.emit(str(bool(self.state.get("admin", False))))
            else:
                raise PSError(
                    f'Cannot convert argument "role", with value: "{arg}".',
                    "NotSpecified",
                    "MethodArgumentConversionInvalidCastArgument",
                    stmt,
                )
            return
        if stmt.startswith("ConvertTo-Json -Compress @(") and stmt.endswith(")"):
            self.emit(
                json.dumps(self.pipeline(stmt[len("ConvertTo-Json -Compress @(") : -1], stmt), separators=(",", ":"))
            )
            return
        stages = split_top(stmt, "|")
        objs = self.cmdlet(stages[0])
        for stage in stages[1:]:
            objs = self.cmdlet(stage, piped=objs)

    def pipeline(self, text: str, stmt: str) -> list[dict[str, Any]]:
        stages = split_top(text, "|")
        if len(stages) != 2 or not stages[1].startswith("Select-Object "):
            raise PSError(f"fake powershell: unsupported pipeline {text!r}", "NotImplemented", "FakeUnsupported", stmt)
        source, projection = stages[0], stages[1][len("Select-Object "):]
        objs = self.cmdlet(source)
        if source.startswith("Hyper-V\\Get-VM") and projection == VM_PROJECTION:
            return [{"Name": v["Name"], "Id": v["Id"], "State": v["State"], "Generation": v["Generation"],
                     "IPAddresses": [ip for a in v["NetworkAdapters"] for ip in a["IPAddresses"]]} for v in objs]
        if source.startswith("Hyper-V\\Get-VMSwitch") and projection == SWITCH_PROJECTION:
            return [{"Id": s["Id"], "Name": s["Name"], "SwitchType": s["SwitchType"]} for s in objs]
        raise PSError(
            f"fake powershell: unsupported projection {projection!r}", "NotImplemented", "FakeUnsupported", stmt
        )

    def cmdlet(self, stmt: str, piped: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        toks = tokens(stmt)
        if not toks or toks[0][0] != "word":
            raise PSError(f"fake powershell: cannot parse {stmt!r}", "ParserError", "FakeParse", stmt)
        full = toks[0][1]
        module, _, name = full.rpartition("\\")
        known = name in CMDLETS and module in ("Hyper-V", "")
        if not known or (module == "Hyper-V" and not self.state.get("module", True)):
            raise PSError(f"{full} : The term '{full}' is not recognized as the name of a cmdlet, function, script "
                          "file, or operable program. Check the spelling of the name, or if a path was included, "
                          "verify that the path is correct and try again.",
                          f"ObjectNotFound: ({full}:String) [], CommandNotFoundException",
                          "CommandNotFoundException", stmt)
        if not module:
            raise PSError(f"fake powershell: {full} must be module-qualified (Hyper-V\\{name}) to avoid PowerCLI's",
                          "NotImplemented", "FakeUnqualified", stmt)
        if not (self.state.get("hyperv_admin", True) or self.state.get("admin", False)):
            raise PSError(f"{full} : Hyper-V encountered an error trying to access an object on computer 'FAKEHOST' "
                          "because the object was not found. The object might have been deleted, or you might not "
                          "have permission to perform the task. Verify that the Virtual Machine Management service "
                          "on the computer is running. If the service is running, try to perform the task again by "
                          "using Run as Administrator.", f"ObjectNotFound: (:) [{name}], VirtualizationException",
                          f"ObjectNotFound,Microsoft.HyperV.PowerShell.Commands.{name.replace('-', '')}", stmt)
        params: dict[str, Any] = {}
        if piped is not None:
            if name not in PIPED_VM:
                raise PSError(f"fake powershell: {name} takes no pipeline input here", "NotImplemented",
                              "FakeUnsupported", stmt)
            params["VM"] = piped
        spec = {**CMDLETS[name], **COMMON}
        i = 1
        while i < len(toks):
            kind, value = toks[i]
            if kind == "param":
                match = next((p for p in spec if p.lower() == value.lower()), None)
                if match is None:
                    raise PSError(
                        f"{name} : A parameter cannot be found that matches parameter name '{value}'.",
                        f"InvalidArgument: (:) [{name}], ParameterBindingException",
                        f"NamedParameterNotFound,Microsoft.HyperV.PowerShell.Commands.{name.replace('-', '')}",
                        stmt,
                    )
                if spec[match] == "switch":
                    params[match] = True
                    i += 1
                    continue
                if i + 1 >= len(toks) or toks[i + 1][0] == "param":
                    raise PSError(f"{name} : Missing an argument for parameter '{match}'.", "InvalidArgument",
                                  "MissingArgument", stmt)
                params[match] = self.value(toks[i + 1], stmt)
                i += 2
            else:
                pos = POSITIONAL.get(name)
                if pos is None or pos in params:
                    raise PSError(f"{name} : A positional parameter cannot be found that accepts argument '{value}'.",
                                  "InvalidArgument", "PositionalParameterNotFound", stmt)
                params[pos] = self.value(toks[i], stmt)
                i += 1
        failure = (self.state.get("fail") or {}).get(name)
        if failure:
            raise PSError(f"{name} : {failure}", f"NotSpecified: (:) [{name}], VirtualizationException",
                          f"Unspecified,Microsoft.HyperV.PowerShell.Commands.{name.replace('-', '')}", stmt)
        try:
            return getattr(self, "do_" + name.replace("-", "_"))(params, stmt) or []
        except PSError:
            if str(params.get("ErrorAction", "")).lower() == "silentlycontinue":
                return []
            raise

    def value(self, tok: tuple[str, str], stmt: str) -> Any:
        kind, value = tok
        if kind == "paren":
            return self.cmdlet(value.strip())
        if kind == "word" and value.lower() in ("$true", "$false"):
            return value.lower() == "$true"
        return value

    # -- cmdlets ---------------------------------------------------------------------------
    def do_Get_VM(self, p: dict[str, Any], stmt: str) -> list[dict[str, Any]]:
        if "Id" in p:
            found = [v for v in self.state["vms"].values() if v["Id"].lower() == str(p["Id"]).lower()]
            if not found:
                raise PSError(f'Get-VM : Hyper-V was unable to find a virtual machine with id "{p["Id"]}".',
                              f"InvalidArgument: ({p['Id']}:Guid) [Get-VM], VirtualizationException",
                              "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM", stmt)
            return found
        if "Name" in p:
            return self.named(p["Name"], "Get-VM", stmt)
        return list(self.state["vms"].values())

    def do_Get_VMSwitch(self, p: dict[str, Any], stmt: str) -> list[dict[str, Any]]:
        return [s for s in self.state["switches"] if p.get("Name") in (None, s["Name"])]

    def do_New_VM(self, p: dict[str, Any], stmt: str) -> None:
        if "Generation" in p and not self.state.get("gen2", True):
            raise PSError("New-VM : A parameter cannot be found that matches parameter name 'Generation'.",
                          "InvalidArgument: (:) [New-VM], ParameterBindingException",
                          "NamedParameterNotFound,Microsoft.HyperV.PowerShell.Commands.NewVMCommand", stmt)
        gen = int(p.get("Generation", 1))
        switch = p.get("SwitchName")
        if switch is not None and not any(s["Name"] == switch for s in self.state["switches"]):
            raise PSError(f'New-VM : Hyper-V was unable to find a virtual switch with name "{switch}".',
                          "InvalidArgument: (:) [New-VM], VirtualizationException", "InvalidParameter", stmt)
        vhd = p.get("VHDPath")
        if vhd is not None:
            try:
                magic = Path(vhd).read_bytes()[:8]
            except OSError:
                raise PSError(f"New-VM : Failed to add device 'Virtual Hard Disk'. The system cannot find the file "
                              f"specified. ('{vhd}')", "NotSpecified", "ObjectNotFound", stmt) from None
            if gen == 2 and magic != b"vhdxfile":
                raise PSError("New-VM : Generation 2 virtual machines support only VHDX virtual hard disks.",
                              "InvalidArgument", "InvalidParameter", stmt)
        name, vm_id = p["Name"], str(uuid.uuid4())
        self.state["vms"][name if name not in self.state["vms"] else vm_id] = {
            "Name": name,
            "Id": vm_id,
            "State": "Off",
            "Generation": gen,
            "Path": p.get("Path"),
            "MemoryStartup": number(str(p.get("MemoryStartupBytes", "512MB"))),
            "DynamicMemoryEnabled": gen == 1 and False,
            "ProcessorCount": 1,
            "HardDrives": [vhd] if vhd else [],
            "DvdDrives": [],
            "NetworkAdapters": [
                {
                    "SwitchName": switch,
                    "MacAddress": "00155D" + uuid.uuid4().hex[:6].upper(),
                    "StaticMac": False,
                    "VlanId": None,
                    "IPAddresses": [],
                }
            ],
            "Firmware": {"SecureBoot": "On", "SecureBootTemplate": "MicrosoftWindows", "FirstBootDevice": "Network"}
            if gen == 2
            else None,
        }

    def do_Set_VMMemory(self, p: dict[str, Any], stmt: str) -> None:
        self.vm(p["VMName"], "Set-VMMemory", stmt)["DynamicMemoryEnabled"] = bool(p.get("DynamicMemoryEnabled"))

    def do_Set_VMProcessor(self, p: dict[str, Any], stmt: str) -> None:
        self.vm(p["VMName"], "Set-VMProcessor", stmt)["ProcessorCount"] = int(p["Count"])

    def do_Set_VMNetworkAdapter(self, p: dict[str, Any], stmt: str) -> None:
        adapter = self.vm(p["VMName"], "Set-VMNetworkAdapter", stmt)["NetworkAdapters"][0]
        adapter.update(MacAddress=str(p["StaticMacAddress"]).replace(":", "").replace("-", "").upper(), StaticMac=True)

    def do_Set_VMNetworkAdapterVlan(self, p: dict[str, Any], stmt: str) -> None:
        if not p.get("Access"):
            raise PSError("Set-VMNetworkAdapterVlan : Parameter set cannot be resolved using the specified named "
                          "parameters.", "InvalidArgument", "AmbiguousParameterSet", stmt)
        self.vm(p["VMName"], "Set-VMNetworkAdapterVlan", stmt)["NetworkAdapters"][0]["VlanId"] = int(p["VlanId"])

    def do_Set_VMFirmware(self, p: dict[str, Any], stmt: str) -> None:
        vm = self.vm(p["VMName"], "Set-VMFirmware", stmt)
        if vm["Generation"] != 2:
            raise PSError("Set-VMFirmware : The operation cannot be performed because the virtual machine is not a "
                          "generation 2 virtual machine.", "InvalidOperation", "InvalidOperation", stmt)
        if "EnableSecureBoot" in p:
            if p["EnableSecureBoot"] not in ("On", "Off"):
                raise PSError(f"Set-VMFirmware : Cannot bind parameter 'EnableSecureBoot'. Cannot convert value "
                              f"\"{p['EnableSecureBoot']}\" to type \"OnOffState\".", "InvalidArgument",
                              "CannotConvertArgumentNoMessage", stmt)
            vm["Firmware"]["SecureBoot"] = p["EnableSecureBoot"]
        if "SecureBootTemplate" in p:
            if p["SecureBootTemplate"] not in SECURE_BOOT_TEMPLATES:
                raise PSError(f"Set-VMFirmware : The secure boot template '{p['SecureBootTemplate']}' was not found.",
                              "InvalidArgument", "InvalidParameter", stmt)
            vm["Firmware"]["SecureBootTemplate"] = p["SecureBootTemplate"]
        if "FirstBootDevice" in p:
            devices = p["FirstBootDevice"]
            if not isinstance(devices, list) or len(devices) != 1 or devices[0].get("VMName") != vm["Name"]:
                raise PSError("Set-VMFirmware : Cannot bind parameter 'FirstBootDevice'.", "InvalidArgument",
                              "CannotConvertArgument", stmt)
            vm["Firmware"]["FirstBootDevice"] = f"HardDiskDrive:{devices[0]['Path']}"

    def do_Get_VMHardDiskDrive(self, p: dict[str, Any], stmt: str) -> list[dict[str, Any]]:
        vm = self.vm(p["VMName"], "Get-VMHardDiskDrive", stmt)
        return [{"VMName": vm["Name"], "ControllerType": "SCSI", "Path": d} for d in vm["HardDrives"]]

    def do_Add_VMDvdDrive(self, p: dict[str, Any], stmt: str) -> None:
        vm = self.vm(p["VMName"], "Add-VMDvdDrive", stmt)
        if not Path(p["Path"]).is_file():
            raise PSError(f"Add-VMDvdDrive : Failed to add device 'Virtual CD/DVD Disk'. The system cannot find the "
                          f"file specified. ('{p['Path']}')", "NotSpecified", "ObjectNotFound", stmt)
        vm["DvdDrives"].append(p["Path"])

    def do_Resize_VHD(self, p: dict[str, Any], stmt: str) -> None:
        path = Path(p["Path"])
        if not path.is_file():
            raise PSError(f"Resize-VHD : Cannot find path '{path}' because it does not exist.", "ObjectNotFound",
                          "ObjectNotFound", stmt)
        self.state.setdefault("vhd_sizes", {})[str(path)] = number(str(p["SizeBytes"]))

    def do_Start_VM(self, p: dict[str, Any], stmt: str) -> None:
        for vm in self.targets(p, "Start-VM", stmt):
            self.start(vm, stmt)

    def start(self, vm: dict[str, Any], stmt: str) -> None:
        vm["State"] = "Running"
        fw = vm.get("Firmware") or {}
        # A Linux loader under the Windows Secure Boot template never boots: no guest, no address.
        boots = not (fw.get("SecureBoot") == "On" and fw.get("SecureBootTemplate") == "MicrosoftWindows")
        ip = self.state.get("guest_ip")
        hook = self.state.get("guest_hook")
        if hook and boots and vm["Generation"] == 2:
            # The guest's first boot (cloud-init reading the seed on the DVD, then DHCP and the KVP
            # daemon reporting the address): the test's hook plays it and prints the address.
            import subprocess

            proc = subprocess.run([*hook, vm["Name"], *vm["DvdDrives"]], capture_output=True, text=True,
                                  timeout=120, check=False)
            if proc.returncode != 0:
                raise PSError(f"Start-VM : guest hook failed: {proc.stderr.strip()[-200:]}", "NotSpecified",
                              "FakeGuestHook", stmt)
            ip = (proc.stdout.strip().splitlines() or [""])[-1]
        vm["NetworkAdapters"][0]["IPAddresses"] = ["fe80::215:5dff:fe00:603", ip] if (ip and boots) else []

    def do_Stop_VM(self, p: dict[str, Any], stmt: str) -> None:
        for vm in self.targets(p, "Stop-VM", stmt):
            if vm["State"] == "Off":
                continue
            if not p.get("TurnOff") and self.state.get("ignore_shutdown"):
                raise PSError(f"Stop-VM : The virtual machine '{vm['Name']}' failed to shut down. The guest did not "
                              "respond to the shutdown request.", "NotSpecified", "OperationFailed", stmt)
            vm["State"] = "Off"
            if vm.get("NetworkAdapters"):
                vm["NetworkAdapters"][0]["IPAddresses"] = []

    def do_Remove_VM(self, p: dict[str, Any], stmt: str) -> None:
        for vm in self.targets(p, "Remove-VM", stmt):
            if vm["State"] != "Off":
                raise PSError(f"Remove-VM : The operation cannot be performed while the virtual machine "
                              f"'{vm['Name']}' is in its current state.", "InvalidOperation", "InvalidState", stmt)
            key = next(k for k, v in self.state["vms"].items() if v["Id"] == vm["Id"])
            del self.state["vms"][key]


def main(argv: list[str]) -> int:
    state_path = Path(os.environ["FAKE_POWERSHELL_STATE"])
    args = list(argv)
    while args and args[0] in ("-NoProfile", "-NonInteractive", "-NoLogo"):
        args.pop(0)
    script = " ".join(args)  # powershell.exe joins trailing words into one command
    if args[:1] == ["-Command"]:
        script = args[1] if len(args) > 1 else ""
    with open(state_path.with_name("calls.log"), "a", encoding="utf-8") as log:
        log.write(json.dumps(script) + "\n")
    state = json.loads(state_path.read_text())
    state.setdefault("vms", {})
    shell = Shell(state)
    code = 0
    stop = False
    for stmt in split_top(script, ";"):
        try:
            shell.statement(stmt)
        except PSError as exc:
            sys.stderr.write(exc.record)
            code = 1
            stop = "$ErrorActionPreference = 'Stop'" in script
            if stop:
                break
        else:
            code = 0  # the exit code is that of the last statement
    state_path.write_text(json.dumps(state, indent=1))
    if shell.out:
        sys.stdout.write("\r\n".join(shell.out) + "\r\n")
    return code


def install(bin_dir: Path, state_dir: Path, **state: Any) -> Path:
    """Write ``powershell``, ``pwsh`` and ``powershell.exe`` wrappers into ``bin_dir`` and the initial state;
    returns the state file (put ``FAKE_POWERSHELL_STATE`` in the environment)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    wrapper = f"#!/bin/sh\nexec {sys.executable!r} {str(Path(__file__).resolve())!r} \"$@\"\n"
    for name in ("powershell", "pwsh", "powershell.exe", "pwsh.exe"):
        path = bin_dir / name
        path.write_text(wrapper)
        path.chmod(0o755)
    initial = {"module": True, "hyperv_admin": True, "admin": False, "gen2": True, "guest_ip": None,
               "switches": [{"Id": DEFAULT_SWITCH_ID, "Name": "Default Switch", "SwitchType": "Internal"},
                            {"Id": str(uuid.uuid4()), "Name": "External LAN", "SwitchType": "External"}],
               "vms": {}, "fail": {}}
    initial.update(state)
    path = state_dir / "state.json"
    path.write_text(json.dumps(initial, indent=1))
    return path


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
