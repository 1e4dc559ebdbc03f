"""The optional ``vboxapi`` backend of the ``virtualbox`` driver, and the choice of backend.

Why: the driver's hot paths (``ls`` state, ``status``, ``ip``, and the state polls
of ``start``/``stop``) each cost a ``VBoxManage`` process, 100-200 ms apiece on
real hosts (it starts XPCOM/COM and connects to VBoxSVC every time).  When
VirtualBox's own Python binding (``vboxapi``, shipped with VirtualBox's SDK,
not on PyPI; XPCOM on Linux/macOS, COM on Windows) is importable, one
connection per process answers those through the API instead.

``PYMACHINE_VBOX_BACKEND`` picks the backend:

- ``auto`` (default): ``vboxapi`` when it imports *and* ``VirtualBoxManager(None,
  None)`` reaches VBoxSVC, else ``VBoxManage``, silently (the binding's own
  "init exception" chatter is swallowed);
- ``vboxmanage``: always ``VBoxManage`` (vboxapi is never imported);
- ``vboxapi``: required; when it cannot be imported or cannot connect, a
  one-line error says so.

What goes through the API, answered in VBoxManage's own output format so the
driver parses one shape: ``--version``, ``list vms``, ``list runningvms``,
``showvminfo NAME --machinereadable`` (name, UUID, CfgFile, memory, cpus,
VMState and, per NIC slot, nicN / nictypeN / macaddressN / cableconnectedN /
hostonlyadapterN / Forwarding(i)), ``guestproperty get NAME PROP``,
``startvm NAME [--type T]`` and ``controlvm NAME acpipowerbutton|poweroff|resume``.

What deliberately stays with ``VBoxManage`` (through the wrapped
``VBoxManageCLI``): everything else - createvm, modifyvm, storagectl,
storageattach, hostonlyif, dhcpserver, sharedfolder, clonemedium,
convertfromraw, unregistervm, guestproperty set, ... - one-off create/rm steps
whose argument handling (defaults, validation, settings-file saving) VBoxManage
is the reference for, and where 150 ms does not matter.

Errors look as they do from ``VBoxManageCLI.run``: a machine VirtualBox does
not know is ``MachineMissing`` (the "Host does not exist" path), anything else a
``MachineError`` with VBoxManage's "VBoxManage <args> failed: <VirtualBox's
text>" line, and "The object is not ready" is retried like the CLI does.
"""

from __future__ import annotations

import io
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

from pymachine.machine.drivers import vboxmanage as vb  # the VBoxManage backend and the lock both share
from pymachine.machine.errors import MachineError

ENV = "PYMACHINE_VBOX_BACKEND"
MODES = ("auto", "vboxmanage", "vboxapi")
VBOX_E_OBJECT_NOT_FOUND = 0x80BB0001
NOT_READY = "The object is not ready"
MAX_NICS = 8  # the PIIX3 chipset's adapters, what showvminfo lists for the driver's VMs
PROGRESS_LINE = "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%\n"

#: MachineState names -> VBoxManage's machinereadable VMState words.  By name: 7.0
#: inserted AbortedSaved, so the numbers differ between versions.
MACHINE_STATES = (
    ("PoweredOff", "poweroff"), ("Saved", "saved"), ("Teleported", "teleported"), ("Aborted", "aborted"),
    ("AbortedSaved", "aborted-saved"), ("Running", "running"), ("Paused", "paused"),
    ("Stuck", "gurumeditation"), ("Teleporting", "teleporting"), ("LiveSnapshotting", "livesnapshotting"),
    ("Starting", "starting"), ("Stopping", "stopping"), ("Saving", "saving"), ("Restoring", "restoring"),
    ("TeleportingPausedVM", "teleportingpausedvm"), ("TeleportingIn", "teleportingin"),
    ("FaultTolerantSyncing", "faulttolerantsyncing"), ("DeletingSnapshotOnline", "deletingsnapshotlive"),
    ("DeletingSnapshotPaused", "deletingsnapshotlivepaused"), ("OnlineSnapshotting", "onlinesnapshotting"),
    ("RestoringSnapshot", "restoringsnapshot"), ("DeletingSnapshot", "deletingsnapshot"),
    ("SettingUp", "settingup"), ("Snapshotting", "snapshotting"),
)
#: what `list runningvms` counts as running (VBoxManageList.cpp)
RUNNING = ("running", "paused", "gurumeditation", "teleporting", "livesnapshotting", "teleportingpausedvm")
ATTACHMENTS = (("Null", "null"), ("NAT", "nat"), ("Bridged", "bridged"), ("Internal", "intnet"),
               ("HostOnly", "hostonly"), ("Generic", "generic"), ("NATNetwork", "natnetwork"),
               ("Cloud", "cloud"), ("HostOnlyNetwork", "hostonlynetwork"))
ADAPTERS = (("Am79C970A", "Am79C970A"), ("Am79C973", "Am79C973"), ("Am79C960", "Am79C960"),
            ("I82540EM", "82540EM"), ("I82543GC", "82543GC"), ("I82545EM", "82545EM"), ("Virtio", "virtio"))


class APIUnavailable(Exception):
    """vboxapi cannot be imported or cannot reach VirtualBox (the message says which)."""


# ----------------------------------------------------------------------------- connection

_CONNECT_LOCK = threading.Lock()
_MANAGER: Any = None  # one VirtualBoxManager per process: XPCOM/COM is initialised once
_MANAGER_THREAD: int | None = None
_UNAVAILABLE: str | None = None  # why not, remembered so `ls` does not retry per machine
_ATTACHED = threading.local()


def reset() -> None:
    """Forget the connection (or the reason there is none); tests switch binding in one process."""
    global _MANAGER, _MANAGER_THREAD, _UNAVAILABLE
    with _CONNECT_LOCK:
        _MANAGER, _MANAGER_THREAD, _UNAVAILABLE = None, None, None


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
    lines = [x.strip() for x in str(text).splitlines() if x.strip()]
    return lines[0] if lines else type(exc).__name__


def connect() -> Any:
    """The process's connected ``vboxapi.VirtualBoxManager``; APIUnavailable says why not."""
    global _MANAGER, _MANAGER_THREAD, _UNAVAILABLE
    with _CONNECT_LOCK:
        if _MANAGER is not None:
            return _MANAGER
        if _UNAVAILABLE is not None:
            raise APIUnavailable(_UNAVAILABLE)
        sink = io.StringIO()  # the binding prints "init exception" and tracebacks on failure
        try:
            with redirect_stdout(sink), redirect_stderr(sink):
                try:
                    from vboxapi import VirtualBoxManager
                except Exception as exc:  # noqa: BLE001 -- ImportError, or any broken SDK install
                    raise APIUnavailable(f"the vboxapi module cannot be imported ({_one_line(exc)})") from None
                try:
                    mgr = VirtualBoxManager(None, None)
                    str(mgr.getVirtualBox().version)  # the manager swallows connect errors: ask
                except Exception as exc:  # noqa: BLE001 -- xpcom.Exception / com_error are not importable here
                    raise APIUnavailable(f"vboxapi cannot connect to VirtualBox ({_one_line(exc)})") from None
        except APIUnavailable as exc:
            _UNAVAILABLE = str(exc)
            raise
        _MANAGER, _MANAGER_THREAD = mgr, threading.get_ident()
        return mgr


def select_backend(environ: Mapping[str, str] = os.environ) -> vb.VBoxBackend:
    """The backend ``PYMACHINE_VBOX_BACKEND`` asks for (see the module docstring)."""
    raw = environ.get(ENV, "")
    mode = raw.strip().lower() or "auto"
    if mode not in MODES:
        raise MachineError(f"{ENV}={raw!r} is not one of {', '.join(MODES)}")
    if mode == "vboxmanage":
        return vb.VBoxManageCLI()
    try:
        mgr = connect()
    except APIUnavailable as exc:
        if mode == "vboxapi":
            raise MachineError(f"{ENV}=vboxapi, but {exc}: install VirtualBox's SDK Python binding "
                               f"or set {ENV}=vboxmanage") from None
        return vb.VBoxManageCLI()
    return VBoxAPIBackend(mgr)


# ----------------------------------------------------------------------------- backend


Op = Callable[[list[str]], str]


class VBoxAPIBackend:
    """``VBoxBackend`` answering the hot and lifecycle calls through vboxapi, the rest via VBoxManage."""

    def __init__(self, manager: Any = None, cli: vb.VBoxBackend | None = None) -> None:
        self._mgr = manager
        self._vbox: Any = None
        self.cli = cli if cli is not None else vb.VBoxManageCLI()

    @property
    def path(self) -> str:
        """VBoxManage's path: ``convertfromraw stdin`` streams to it directly."""
        return getattr(self.cli, "path", vb.VBOXMANAGE)

    # dispatch --------------------------------------------------------------------------
    def run(self, args: Sequence[str], stdin: bytes | None = None) -> tuple[str, str]:
        argv = [str(a) for a in args]
        op = self._operation(argv) if stdin is None else None
        if op is None:
            return self.cli.run(argv, stdin)
        with vb.LOCK:  # docker-machine's SerialDriver, whichever backend answers
            return self._call(op, argv), ""

    def _operation(self, a: list[str]) -> Op | None:
        """The API handler for a VBoxManage command line, or None: VBoxManage runs it."""
        if a in (["--version"], ["-v"], ["-version"]):
            return self._version
        if a in (["list", "vms"], ["list", "runningvms"]):
            return self._list
        if len(a) == 3 and a[0] == "showvminfo" and a[2] == "--machinereadable":
            return self._showvminfo
        if len(a) == 4 and a[:2] == ["guestproperty", "get"]:
            return self._guestproperty
        if len(a) >= 2 and a[0] == "startvm" and _session_type(a[2:]) is not None:
            return self._startvm
        if len(a) >= 3 and a[0] == "controlvm" and a[2] in ("acpipowerbutton", "poweroff", "resume"):
            return self._controlvm
        return None

    def _call(self, op: Op, args: list[str]) -> str:
        for attempt in range(vb.RETRIES):
            try:
                self._attach_thread()
                return op(args)
            except MachineError:
                raise
            except Exception as exc:  # noqa: BLE001 -- the binding's class is mgr.oXcptClass, checked below
                mgr = self._manager()
                if not mgr.xcptIsOurXcptKind(exc):
                    raise MachineError(f"VirtualBox API: {' '.join(args)} failed: {type(exc).__name__}: "
                                       f"{_one_line(exc)} (set {ENV}=vboxmanage to use VBoxManage)") from None
                message = self._message(exc)
                dead = bool(mgr.xcptIsDeadInterface(exc))
                if (dead or NOT_READY in message) and attempt < vb.RETRIES - 1:
                    if dead:
                        self._vbox = None  # VBoxSVC restarted: fetch IVirtualBox again
                    time.sleep(vb.RETRY_DELAY)
                    continue
                if self._status(exc) == VBOX_E_OBJECT_NOT_FOUND and "Could not find a registered machine" in message:
                    raise vb.MachineMissing() from None
                raise self._failed(args, message) from None
        raise AssertionError("unreachable")

    # connection helpers ----------------------------------------------------------------
    def _manager(self) -> Any:
        if self._mgr is None:
            try:
                self._mgr = connect()
            except APIUnavailable as exc:
                raise MachineError(f"the vboxapi backend is unavailable: {exc}") from None
        return self._mgr

    def _vb(self) -> Any:
        if self._vbox is None:
            self._vbox = self._manager().getVirtualBox()
        return self._vbox

    def _attach_thread(self) -> None:
        """XPCOM/COM need each calling thread attached once (``ls`` asks from a thread pool)."""
        mgr = self._manager()
        if threading.get_ident() == _MANAGER_THREAD or getattr(_ATTACHED, "done", False):
            return
        mgr.initPerThread()
        _ATTACHED.done = True

    def _status(self, exc: BaseException) -> int:
        return int(self._manager().xcptGetStatus(exc)) & 0xFFFFFFFF

    def _message(self, exc: BaseException) -> str:
        return str(self._manager().xcptGetMessage(exc) or "")

    @staticmethod
    def _failed(args: list[str], text: str) -> MachineError:
        lines = [x.strip() for x in text.splitlines() if x.strip()]
        return MachineError(f"VBoxManage {' '.join(args)} failed: {lines[0] if lines else 'no message'}")

    def _const(self, name: str) -> Any:
        return getattr(self._manager().constants, name, None)

    def _named(self, enum: str, value: Any, table: tuple[tuple[str, str], ...], default: str) -> str:
        for name, word in table:
            if self._const(f"{enum}_{name}") == value:
                return word
        return default

    def _machine(self, name: str) -> Any:
        return self._vb().findMachine(name)

    def _state_word(self, machine: Any) -> str:
        return self._named("MachineState", machine.state, MACHINE_STATES, "unknown")

    def _major(self) -> int:
        m = re.match(r"\s*(\d+)", str(self._vb().version))
        return int(m.group(1)) if m else 0

    # queries ---------------------------------------------------------------------------
    def _version(self, args: list[str]) -> str:
        vbox = self._vb()
        return f"{vbox.version}r{vbox.revision}\n"

    def _list(self, args: list[str]) -> str:
        lines = []
        for m in self._manager().getArray(self._vb(), "machines"):
            if not m.accessible:
                if args[1] == "vms":
                    lines.append(f'"<inaccessible>" {{{m.id}}}\n')
                continue
            if args[1] == "vms" or self._state_word(m) in RUNNING:
                lines.append(f'"{m.name}" {{{m.id}}}\n')
        return "".join(lines)

    def _showvminfo(self, args: list[str]) -> str:
        m = self._machine(args[1])
        lines = [f'name="{m.name}"']
        platform = getattr(m, "platform", None)  # 7.1+: IMachine.platform.architecture (x86 or ARM)
        if platform is not None:
            arch = self._named("PlatformArchitecture", platform.architecture, (("x86", "x86"), ("ARM", "ARM")), "")
            if arch:
                lines.append(f'platformArchitecture="{arch}"')
        lines += [f'UUID="{m.id}"', f'CfgFile="{m.settingsFilePath}"',
                  f"memory={m.memorySize}", f"cpus={m.CPUCount}", f'VMState="{self._state_word(m)}"']
        for slot in range(MAX_NICS):
            lines.extend(self._nic_lines(m.getNetworkAdapter(slot), slot + 1))
        return "\n".join(lines) + "\n"

    def _nic_lines(self, nic: Any, n: int) -> list[str]:
        """One adapter as VBoxManageInfo.cpp prints it machine-readably."""
        if not nic.enabled:
            return [f'nic{n}="none"']
        kind = self._named("NetworkAttachmentType", nic.attachmentType, ATTACHMENTS, "null")
        lines = []
        if kind == "nat":
            rules = self._manager().getArray(nic.NATEngine, "redirects")
            lines += [f'Forwarding({i})="{rule}"' for i, rule in enumerate(rules)]
        elif kind == "hostonly":
            lines.append(f'hostonlyadapter{n}="{nic.hostOnlyInterface}"')
        elif kind == "hostonlynetwork":  # 7.x macOS host-only network (INetworkAdapter.hostOnlyNetwork)
            lines.append(f'hostonly-network{n}="{nic.hostOnlyNetwork}"')
        lines += [f'macaddress{n}="{nic.MACAddress}"',
                  f'cableconnected{n}="{"on" if nic.cableConnected else "off"}"',
                  f'nic{n}="{kind}"',
                  f'nictype{n}="{self._named("NetworkAdapterType", nic.adapterType, ADAPTERS, "unknown")}"']
        return lines

    def _guestproperty(self, args: list[str]) -> str:
        value = str(self._machine(args[2]).getGuestPropertyValue(args[3]) or "")
        return f"Value: {value}\n" if value else "No value set!\n"

    # lifecycle -------------------------------------------------------------------------
    def _startvm(self, args: list[str]) -> str:
        name, utype = args[1], _session_type(args[2:]) or "gui"
        m = self._machine(name)
        session = self._manager().getSessionObject()
        try:
            progress = self._launch(m, session, utype)
            self._wait(progress, args)
        finally:
            self._unlock(session)
        return f'Waiting for VM "{name}" to power on...\nVM "{name}" has been successfully started.\n'

    def _launch(self, machine: Any, session: Any, utype: str) -> Any:
        """``launchVMProcess``: its environment is one "VAR=v\\n..." string up to 6.1, a list from 7.0.

        As VBoxManage, a GUI VM gets the caller's DISPLAY/XAUTHORITY (VBoxSVC may have none)."""
        pairs = [f"{k}={os.environ[k]}" for k in ("DISPLAY", "XAUTHORITY")
                 if utype != "headless" and os.environ.get(k)]
        as_list, as_text = pairs, "".join(p + "\n" for p in pairs)
        first, second = (as_list, as_text) if self._major() >= 7 else (as_text, as_list)
        try:
            return machine.launchVMProcess(session, utype, first)
        except TypeError:  # a distro build whose API level differs from its version string
            return machine.launchVMProcess(session, utype, second)

    def _wait(self, progress: Any, args: list[str]) -> None:
        progress.waitForCompletion(int(vb.CALL_TIMEOUT * 1000))
        if not progress.completed:
            raise MachineError(f"VBoxManage {' '.join(args)} did not finish within {vb.CALL_TIMEOUT:g}s")
        if int(progress.resultCode) != 0:
            info = progress.errorInfo
            text = str(info.text) if info is not None and info.text else \
                str(self._manager().xcptToString(int(progress.resultCode)))
            raise self._failed(args, text)

    def _controlvm(self, args: list[str]) -> str:
        name, action = args[1], args[2]
        m = self._machine(name)
        session = self._manager().getSessionObject()
        m.lockMachine(session, self._const("LockType_Shared"))
        try:
            console = session.console
            if not console:  # a shared lock on a VM with no VM process has no console
                raise self._failed(args, f"Machine '{name}' is not currently running")
            if action == "acpipowerbutton":
                console.powerButton()
                return ""
            if action == "resume":
                console.resume()
                return ""
            self._wait(console.powerDown(), args)
            return PROGRESS_LINE
        finally:
            self._unlock(session)

    def _unlock(self, session: Any) -> None:
        """Release a session we hold; an error here must not hide the call's own error."""
        try:
            if session.state == self._const("SessionState_Locked"):
                session.unlockMachine()
        except Exception:  # noqa: BLE001, S110 -- the session dies with its VM process anyway
            pass


def _session_type(rest: Sequence[str]) -> str | None:
    """``startvm`` options the API path understands: none or ``--type T``; None means "ask VBoxManage"."""
    if not rest:
        return "gui"
    if len(rest) == 2 and rest[0] == "--type":
        return rest[1]
    if len(rest) == 1 and rest[0].startswith("--type="):
        return rest[0].split("=", 1)[1]
    return None
