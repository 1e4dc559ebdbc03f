"""A fake of VirtualBox's ``vboxapi`` Python binding, over the fake VBoxManage's state.

VirtualBox's SDK binding cannot be installed here, so this package stands in
for it when a test puts ``tests/fakes`` on ``sys.path``.  It keeps the real
binding's object model and names (``VirtualBoxManager(None, None)``,
``getVirtualBox()``, ``findMachine``, ``machine.state`` against
``mgr.constants.MachineState_*``, ``getNetworkAdapter(slot)``,
``lockMachine``/``session.console``/``powerButton``/``powerDown``/``resume``,
``launchVMProcess`` returning an ``IProgress``, ``getArray``, the
``xcpt*`` error helpers) so the backend written against it runs unchanged on
the real one.

One VirtualBox for both fakes: machines live in ``$FAKE_VBOX_HOME/state.json``
(``tests/fakes/vboxmanage.py``'s format), read afresh on every property read
(the real objects are live proxies) and written under the same
``$FAKE_VBOX_HOME/lock`` flock the fake VBoxManage takes.  Every API call is
appended to ``$FAKE_VBOX_HOME/api-calls.log`` as one JSON array per line; the
fake VBoxManage logs to ``calls.log``, so a test sees which path did what.

Errors are raised as the XPCOM binding raises them: an exception with
``errno`` (the COM status, signed 32-bit as PyXPCOM hands it back) and ``msg``
(VirtualBox's error text, e.g. "Could not find a registered machine named
'x'" with VBOX_E_OBJECT_NOT_FOUND).

Knobs (environment), besides the fake VBoxManage's FAKE_VBOX_VERSION,
FAKE_VBOX_GUEST_IP, FAKE_VBOX_GUEST_PID and FAKE_VBOX_SSH_TARGET:
- ``FAKE_VBOXAPI_CONNECT_FAIL``: VBoxSVC cannot be reached (``getVirtualBox``
  raises; ``VirtualBoxManager()`` prints "init exception" as the real one does).
- ``FAKE_VBOXAPI_NO_XPCOM``: the binding is there but its XPCOM glue is not
  (``VirtualBoxManager()`` raises ImportError, as with a broken SDK install).
- ``FAKE_VBOXAPI_FAIL``: ``<method>[ <machine name>]`` that raises E_FAIL.
- ``FAKE_VBOXAPI_NOT_READY``: the first N ``findMachine`` calls of this
  process raise "The object is not ready" (E_ACCESSDENIED).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FAKES = Path(__file__).resolve().parent.parent
if str(FAKES) not in sys.path:
    sys.path.append(str(FAKES))

import vboxmanage

VBOX_E_OBJECT_NOT_FOUND = 0x80BB0001
VBOX_E_INVALID_VM_STATE = 0x80BB0002
VBOX_E_INVALID_OBJECT_STATE = 0x80BB0007
NS_ERROR_FAILURE = 0x80004005
NS_ERROR_INVALID_ARG = 0x80070057
NS_ERROR_UNEXPECTED = 0x8000FFFF
NS_ERROR_FACTORY_NOT_REGISTERED = 0x80040154
E_ACCESSDENIED = 0x80070005

_PROCS: dict[int, subprocess.Popen] = {}  # forwarders ("VM processes") this process started
_not_ready_left: list[int] = []


def signed(status: int) -> int:
    return status - (1 << 32) if status & 0x80000000 else status


class XPCOMException(Exception):
    """``xpcom.Exception``: ``errno`` is the status, ``msg`` VirtualBox's text."""

    def __init__(self, errno: int, msg: str | None = None) -> None:
        super().__init__(errno, msg)
        self.errno = signed(errno)
        self.msg = msg

    def __str__(self) -> str:
        return f"0x{self.errno & 0xFFFFFFFF:x} ({self.msg or ''})"


# ----------------------------------------------------------------------------- state


def home() -> Path:
    return Path(os.environ.get("FAKE_VBOX_HOME", "/nonexistent"))


def version_text() -> str:
    return os.environ.get("FAKE_VBOX_VERSION", "6.1.50r161033")


def major_minor() -> tuple[int, int]:
    major, _, rest = version_text().partition(".")
    return int(major), int(rest.split(".")[0])


def major() -> int:
    m = re.match(r"(\d+)", version_text())
    return int(m.group(1)) if m else 6


def log(*call: Any) -> None:
    h = home()
    h.mkdir(parents=True, exist_ok=True)
    with open(h / "api-calls.log", "a") as fh:
        fh.write(json.dumps(list(call)) + "\n")


def load() -> dict:
    path = home() / "state.json"
    if path.exists():
        return json.loads(path.read_text())
    return {"vms": {}, "hostonlyifs": {}, "dhcpservers": {}, "media": [], "calls": 0}


@contextmanager
def locked() -> Iterator[dict]:
    """The state under the fake VBoxManage's lock; saved when the block ends without error."""
    h = home()
    h.mkdir(parents=True, exist_ok=True)
    with open(h / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = load()
        yield state
        tmp = h / "state.tmp"
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, h / "state.json")


def injected(method: str, name: str = "") -> None:
    """FAKE_VBOXAPI_FAIL: '<method>' or '<method> <machine>' raises E_FAIL here."""
    fail = os.environ.get("FAKE_VBOXAPI_FAIL", "").split()
    if fail and fail[0] == method and (len(fail) == 1 or fail[1] == name):
        raise XPCOMException(NS_ERROR_FAILURE, f"injected failure of '{' '.join(fail)}'")


# ----------------------------------------------------------------------------- constants

_STATES_61 = ["Null", "PoweredOff", "Saved", "Teleported", "Aborted", "Running", "Paused", "Stuck",
              "Teleporting", "LiveSnapshotting", "Starting", "Stopping", "Saving", "Restoring",
              "TeleportingPausedVM", "TeleportingIn", "FaultTolerantSyncing", "DeletingSnapshotOnline",
              "DeletingSnapshotPaused", "OnlineSnapshotting", "RestoringSnapshot", "DeletingSnapshot",
              "SettingUp", "Snapshotting"]
_STATES_70 = ["Null", "PoweredOff", "Saved", "Teleported", "Aborted", "AbortedSaved", "Running", "Paused",
              "Stuck", "Teleporting", "LiveSnapshotting", "Starting", "Stopping", "Saving", "Restoring",
              "TeleportingPausedVM", "TeleportingIn", "DeletingSnapshotOnline", "DeletingSnapshotPaused",
              "OnlineSnapshotting", "RestoringSnapshot", "DeletingSnapshot", "SettingUp", "Snapshotting"]
_ATTACHMENTS = ["Null", "NAT", "Bridged", "Internal", "HostOnly", "Generic", "NATNetwork", "Cloud",
                "HostOnlyNetwork"]
_ADAPTERS = ["Null", "Am79C970A", "Am79C973", "I82540EM", "I82543GC", "I82545EM", "Virtio", "Am79C960"]

#: the fake VBoxManage's state words <-> MachineState names
STATE_WORDS = {"poweroff": "PoweredOff", "saved": "Saved", "aborted": "Aborted", "running": "Running",
               "paused": "Paused", "starting": "Starting", "stopping": "Stopping",
               "aborted-saved": "AbortedSaved"}  # 7.0+ (reference virtualbox7-vmware.md a8)
NIC_WORDS = {"nat": "NAT", "bridged": "Bridged", "intnet": "Internal", "hostonly": "HostOnly",
             "generic": "Generic", "natnetwork": "NATNetwork", "null": "Null",
             "hostonlynet": "HostOnlyNetwork"}  # 7.x macOS host-only networks (a4)
NICTYPE_WORDS = {"Am79C970A": "Am79C970A", "Am79C973": "Am79C973", "82540EM": "I82540EM",
                 "82543GC": "I82543GC", "82545EM": "I82545EM", "virtio": "Virtio"}


class VirtualBoxReflectionInfo:
    """``mgr.constants``: enum values by ``<Enum>_<Name>``; the numbering is the version's own
    (7.0 inserted MachineState_AbortedSaved), so code must compare by name, never by number."""

    def __init__(self, version_major: int) -> None:
        self._values: dict[str, int] = {}
        for i, n in enumerate(_STATES_70 if version_major >= 7 else _STATES_61):
            self._values[f"MachineState_{n}"] = i
        enums = [("NetworkAttachmentType", _ATTACHMENTS), ("NetworkAdapterType", _ADAPTERS)]
        if major_minor() >= (7, 1):
            enums.append(("PlatformArchitecture", ["None", "x86", "ARM"]))  # 7.1's IPlatform
        for prefix, names in (*enums,
                              ("LockType", ["Null", "Shared", "Write", "VM"]),
                              ("SessionState", ["Null", "Unlocked", "Locked", "Spawning", "Unlocking"])):
            for i, n in enumerate(names):
                self._values[f"{prefix}_{n}"] = i

    def __getattr__(self, name: str) -> int:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(f"Attribute {name} not found") from None

    def all_values(self, enum: str) -> dict[str, int]:
        return {k.split("_", 1)[1]: v for k, v in self._values.items() if k.startswith(enum + "_")}


# ----------------------------------------------------------------------------- objects


class IVirtualBoxErrorInfo:
    def __init__(self, status: int, text: str, component: str) -> None:
        self.resultCode = signed(status)
        self.text = text
        self.component = component


class IProgress:
    """Completed at once: the fake does the work before handing the progress back."""

    def __init__(self, description: str, error: IVirtualBoxErrorInfo | None = None) -> None:
        self.description = description
        self.completed = True
        self.percent = 100
        self.cancelable = False
        self.errorInfo = error
        self.resultCode = error.resultCode if error else 0

    def waitForCompletion(self, timeout: int) -> None:
        if not isinstance(timeout, int):
            raise TypeError("an integer is required")
        log("IProgress.waitForCompletion", self.description, timeout)


class INATEngine:
    def __init__(self, machine: IMachine) -> None:
        self._machine = machine

    @property
    def redirects(self) -> list[str]:
        return list(self._machine._vm()["natpf1"].values())

    def getRedirects(self) -> list[str]:
        return self.redirects


class INetworkAdapter:
    def __init__(self, machine: IMachine, slot: int) -> None:
        self._machine = machine
        self.slot = slot

    def _setting(self, key: str) -> str:
        return str(self._machine._vm()["settings"].get(f"{key}{self.slot + 1}", ""))

    @property
    def enabled(self) -> bool:
        return self._setting("nic") not in ("", "none")

    @property
    def attachmentType(self) -> int:
        word = self._setting("nic")
        return getattr(self._machine._c, "NetworkAttachmentType_" + NIC_WORDS.get(word, "Null"))

    @property
    def adapterType(self) -> int:
        name = NICTYPE_WORDS.get(self._setting("nictype") or "82540EM", "I82540EM")
        return getattr(self._machine._c, "NetworkAdapterType_" + name)

    @property
    def MACAddress(self) -> str:
        return self._setting("macaddress")

    @property
    def hostOnlyInterface(self) -> str:
        return self._setting("hostonlyadapter")

    @property
    def hostOnlyNetwork(self) -> str:
        return self._setting("hostonlynet")

    @property
    def cableConnected(self) -> bool:
        return self._setting("cableconnected") != "off"

    @property
    def NATEngine(self) -> INATEngine:
        return INATEngine(self._machine)


class IConsole:
    """A running VM's console, reached through a locked session."""

    def __init__(self, machine: IMachine) -> None:
        self.machine = machine

    def _running(self, what: str, allowed: tuple[str, ...]) -> None:
        state = self.machine._vm()["state"]
        if state not in allowed:
            shown = STATE_WORDS.get(state, state)
            raise XPCOMException(VBOX_E_INVALID_VM_STATE,
                                 f"Invalid machine state: {shown} ({what})")

    def powerButton(self) -> None:
        name = self.machine._name
        log("IConsole.powerButton", name)
        injected("powerButton", name)
        self._running("must be Running, Paused or Stuck", ("running", "paused"))
        with locked() as state:  # the fake guest powers off at once, as with `controlvm acpipowerbutton`
            power_off(find(state, self.machine._uuid))

    def powerDown(self) -> IProgress:
        name = self.machine._name
        log("IConsole.powerDown", name)
        injected("powerDown", name)
        self._running("must be Running, Paused or Stuck", ("running", "paused"))
        with locked() as state:
            power_off(find(state, self.machine._uuid))
        return IProgress("Powering off the machine")

    def resume(self) -> None:
        name = self.machine._name
        log("IConsole.resume", name)
        injected("resume", name)
        state_word = self.machine._vm()["state"]
        if state_word != "paused":
            raise XPCOMException(VBOX_E_INVALID_VM_STATE, "Cannot resume the machine as it is not paused "
                                 f"(machine state: {STATE_WORDS.get(state_word, state_word)})")
        with locked() as state:
            find(state, self.machine._uuid)["state"] = "running"

    def pause(self) -> None:
        log("IConsole.pause", self.machine._name)
        self._running("must be Running", ("running",))
        with locked() as state:
            find(state, self.machine._uuid)["state"] = "paused"


class ISession:
    def __init__(self, constants: VirtualBoxReflectionInfo) -> None:
        self._c = constants
        self.state = constants.SessionState_Unlocked
        self.machine: IMachine | None = None
        self.console: IConsole | None = None

    def unlockMachine(self) -> None:
        log("ISession.unlockMachine", self.machine._name if self.machine else "")
        if self.state != self._c.SessionState_Locked:
            raise XPCOMException(NS_ERROR_UNEXPECTED, "The session is not locked (session state: Unlocked)")
        self.state = self._c.SessionState_Unlocked
        self.machine = None
        self.console = None


def find(state: dict, key: str) -> dict:
    for v in state["vms"].values():
        if key in (v["name"], v["uuid"]) and v.get("registered", True):
            return v
    raise XPCOMException(VBOX_E_OBJECT_NOT_FOUND, f"Could not find a registered machine named '{key}'")


class IPlatform:
    def __init__(self, machine: IMachine) -> None:
        self._machine = machine

    @property
    def architecture(self) -> int:
        word = "ARM" if self._machine._vm().get("arch") == "arm" else "x86"
        return getattr(self._machine._c, "PlatformArchitecture_" + word)


class IMachine:
    """A registered VM, by UUID; every property read goes back to the state file."""

    def __init__(self, constants: VirtualBoxReflectionInfo, uuid: str, name: str) -> None:
        self._c = constants
        self._uuid = uuid
        self._name = name

    def _vm(self) -> dict:
        for v in load()["vms"].values():
            if v["uuid"] == self._uuid:
                return v
        raise XPCOMException(E_ACCESSDENIED, "The object is not ready")  # unregistered meanwhile

    @property
    def id(self) -> str:
        return self._uuid

    @property
    def name(self) -> str:
        return self._vm()["name"]

    @property
    def accessible(self) -> bool:
        return Path(self._vm()["cfg"]).exists()

    @property
    def settingsFilePath(self) -> str:
        return self._vm()["cfg"]

    @property
    def platform(self) -> IPlatform:
        """7.1+ only: ``IMachine.platform`` (AttributeError before, as an older binding raises)."""
        if major_minor() < (7, 1):
            raise AttributeError("platform")
        return IPlatform(self)

    @property
    def memorySize(self) -> int:
        return int(self._vm()["settings"].get("memory", 128))

    @property
    def CPUCount(self) -> int:
        return int(self._vm()["settings"].get("cpus", 1))

    @property
    def state(self) -> int:
        word = self._vm()["state"]
        log("IMachine.state", self._name)
        return getattr(self._c, "MachineState_" + STATE_WORDS.get(word, "Null"))

    def getGuestPropertyValue(self, prop: str) -> str:
        log("IMachine.getGuestPropertyValue", self._name, prop)
        injected("getGuestPropertyValue", self._name)
        return str(self._vm()["guestprops"].get(prop, ""))

    def getGuestProperty(self, prop: str) -> tuple[str, int, str]:
        log("IMachine.getGuestProperty", self._name, prop)
        value = self._vm()["guestprops"].get(prop)
        return (str(value), 0, "") if value is not None else ("", 0, "")

    def getNetworkAdapter(self, slot: int) -> INetworkAdapter:
        if not isinstance(slot, int) or not 0 <= slot < 8:  # PIIX3 chipset: 8 adapters
            raise XPCOMException(NS_ERROR_INVALID_ARG, f"Invalid slot number: {slot} (must be in range [0, 7])")
        return INetworkAdapter(self, slot)

    def lockMachine(self, session: ISession, lock_type: int) -> None:
        log("IMachine.lockMachine", self._name, lock_type)
        injected("lockMachine", self._name)
        if session.state == self._c.SessionState_Locked:
            raise XPCOMException(VBOX_E_INVALID_OBJECT_STATE, "The given session is busy")
        running = self._vm()["state"] in ("running", "paused")
        if lock_type == self._c.LockType_Write and running:
            raise XPCOMException(VBOX_E_INVALID_OBJECT_STATE, f"The machine '{self._name}' is already "
                                 "locked for a session (or being unlocked)")
        session.state = self._c.SessionState_Locked
        session.machine = self
        session.console = IConsole(self) if running else None  # no VM process: no console

    def launchVMProcess(self, session: ISession, name: str, environment: Any) -> IProgress:
        """6.1 takes the environment as one "VAR=value\\n" string, 7.x as a list of them."""
        log("IMachine.launchVMProcess", self._name, name, environment)
        want = list if major() >= 7 else str
        if not isinstance(environment, want):
            raise TypeError(f"launchVMProcess: environment must be a {want.__name__} on VirtualBox {major()}.x")
        injected("launchVMProcess", self._name)
        if session.state == self._c.SessionState_Locked:
            raise XPCOMException(VBOX_E_INVALID_OBJECT_STATE, "The given session is busy")
        if name not in ("gui", "headless", "sdl", "separate", "emergencystop"):
            raise XPCOMException(NS_ERROR_INVALID_ARG, f"Invalid session type: '{name}'")
        with locked() as state:
            v = find(state, self._uuid)
            if v["state"] in ("running", "paused"):
                raise XPCOMException(VBOX_E_INVALID_OBJECT_STATE, f"The machine '{v['name']}' is already "
                                     "locked by a session (or being locked or unlocked)")
            error = boot_error(state, v)
            if error:
                return IProgress("Starting VM", IVirtualBoxErrorInfo(NS_ERROR_FAILURE, error, "ConsoleWrap"))
            power_on(v)
            vboxmanage.boot_guest(state, v)
        session.state = self._c.SessionState_Locked
        session.machine = self
        session.console = IConsole(self)
        return IProgress("Starting VM")


def boot_error(state: dict, v: dict) -> str:
    """What keeps the VM from powering on, in the fake VBoxManage's words ('' when nothing)."""
    nic2 = v["settings"].get("hostonlyadapter2")
    if nic2 and nic2 not in state["hostonlyifs"]:
        return f"Nonexistent host networking interface, name '{nic2}' (VERR_INTERNAL_ERROR)"
    if "0-0" not in v["storage"] and "1-0" not in v["storage"]:
        return "No bootable medium found! (VERR_PDM_NO_BOOTABLE_MEDIUM)"
    return ""


def power_on(v: dict) -> None:
    """vboxmanage.power_on, with the NAT forward run as the "VM process" (a child, not a fork)."""
    v["state"] = "running"
    ip = os.environ.get("FAKE_VBOX_GUEST_IP", "")
    if ip:
        v["guestprops"]["/VirtualBox/GuestInfo/Net/1/V4/IP"] = ip
        v["lease"] = ip
    target = os.environ.get("FAKE_VBOX_SSH_TARGET", "")
    rule = v["natpf1"].get("ssh")
    if not target or not rule:
        return
    port = rule.split(",")[3]
    proc = subprocess.Popen([sys.executable, "-I", "-S", str(Path(__file__).with_name("_vmprocess.py")),
                             str(FAKES), port, target], stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    ok = proc.stdout.read(1)
    proc.stdout.close()
    if ok != b"K":
        proc.wait(timeout=10)
        raise XPCOMException(NS_ERROR_FAILURE, f"NAT port forward: cannot bind 127.0.0.1:{port}")
    _PROCS[proc.pid] = proc
    v["forwarder"] = proc.pid


def power_off(v: dict) -> None:
    pid = v.get("forwarder") or 0
    vboxmanage.power_off(v)
    proc = _PROCS.pop(pid, None)
    if proc is not None:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class IVirtualBox:
    def __init__(self, constants: VirtualBoxReflectionInfo) -> None:
        self._c = constants

    @property
    def version(self) -> str:
        log("IVirtualBox.version")
        return re.split(r"r(?=\d+$)", version_text().strip())[0]

    @property
    def revision(self) -> int:
        m = re.search(r"r(\d+)$", version_text().strip())
        return int(m.group(1)) if m else 0

    @property
    def APIVersion(self) -> str:
        return "_".join(self.version.split(".")[:2])

    @property
    def machines(self) -> list[IMachine]:
        log("IVirtualBox.machines")
        return [IMachine(self._c, v["uuid"], v["name"]) for v in load()["vms"].values() if v.get("registered", True)]

    def getMachines(self) -> list[IMachine]:
        return self.machines

    def findMachine(self, name_or_id: str) -> IMachine:
        log("IVirtualBox.findMachine", name_or_id)
        if _not_ready_left and _not_ready_left[0] > 0:
            _not_ready_left[0] -= 1
            raise XPCOMException(E_ACCESSDENIED, "The object is not ready")
        injected("findMachine", name_or_id)
        v = find(load(), name_or_id)
        return IMachine(self._c, v["uuid"], v["name"])


# ----------------------------------------------------------------------------- the manager


class VirtualBoxManager:
    """``vboxapi.VirtualBoxManager``: style None means XPCOM off Windows, as the real one."""

    class Statuses:
        pass

    def __init__(self, sStyle: str | None = None, dPlatformParams: dict | None = None) -> None:
        log("VirtualBoxManager", sStyle, dPlatformParams)
        if os.environ.get("FAKE_VBOXAPI_NO_XPCOM"):
            raise ImportError("No module named 'xpcom'")
        self.style = sStyle or "XPCOM"
        self.type = self.style
        self.remote = False
        self.constants = VirtualBoxReflectionInfo(major())
        self.statuses = self.Statuses()
        for key, value in (("NS_OK", 0), ("NS_ERROR_FAILURE", NS_ERROR_FAILURE),
                           ("VBOX_E_OBJECT_NOT_FOUND", VBOX_E_OBJECT_NOT_FOUND)):
            setattr(self.statuses, key, signed(value))
        self.oXcptClass = XPCOMException
        if not _not_ready_left:
            _not_ready_left.append(int(os.environ.get("FAKE_VBOXAPI_NOT_READY", "0") or 0))
        try:  # the real manager swallows this (printing it) and fails later, at getVirtualBox()
            self.getVirtualBox()
        except Exception as exc:  # noqa: BLE001 -- as vboxapi does
            print("init exception: ", exc)

    def getVirtualBox(self) -> IVirtualBox:
        log("VirtualBoxManager.getVirtualBox")
        if os.environ.get("FAKE_VBOXAPI_CONNECT_FAIL"):
            raise XPCOMException(NS_ERROR_FACTORY_NOT_REGISTERED,
                                 "Failed to create the VirtualBoxClient object: VBoxSVC is not reachable")
        return IVirtualBox(self.constants)

    def getSessionObject(self, oIVBox: Any = None) -> ISession:
        log("VirtualBoxManager.getSessionObject")
        return ISession(self.constants)

    def getArray(self, obj: Any, attr: str) -> list:
        return list(getattr(obj, attr))

    def initPerThread(self) -> None:
        log("VirtualBoxManager.initPerThread")

    def deinitPerThread(self) -> None:
        log("VirtualBoxManager.deinitPerThread")

    def deinit(self) -> bool:
        return True

    # error helpers, as PlatformXPCOM's
    def xcptGetStatus(self, oXcpt: Any = None) -> int:
        oXcpt = oXcpt if oXcpt is not None else sys.exc_info()[1]
        return oXcpt.errno

    def xcptGetMessage(self, oXcpt: Any = None) -> str:
        oXcpt = oXcpt if oXcpt is not None else sys.exc_info()[1]
        return getattr(oXcpt, "msg", None) or self.xcptToString(oXcpt)

    def xcptIsOurXcptKind(self, oXcpt: Any = None) -> bool:
        oXcpt = oXcpt if oXcpt is not None else sys.exc_info()[1]
        return isinstance(oXcpt, self.oXcptClass)

    def xcptIsDeadInterface(self, oXcpt: Any = None) -> bool:
        return self.xcptGetStatus(oXcpt) in (0x80004004, -2147467260, 0x800706BE, -2147023170)

    def xcptIsEqual(self, oXcpt: Any, hrStatus: int) -> bool:
        try:
            return (self.xcptGetStatus(oXcpt) & 0xFFFFFFFF) == (hrStatus & 0xFFFFFFFF)
        except AttributeError:
            return False

    def xcptToString(self, hrStatusOrXcpt: Any = None) -> str:
        status = hrStatusOrXcpt.errno if isinstance(hrStatusOrXcpt, XPCOMException) else int(hrStatusOrXcpt or 0)
        return f"{status & 0xFFFFFFFF:#x} ({status})"


__all__ = ["VirtualBoxManager"]
