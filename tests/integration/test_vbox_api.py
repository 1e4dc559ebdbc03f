"""The virtualbox driver's optional ``vboxapi`` backend, against the fake binding.

``tests/fakes/vboxapi`` stands in for VirtualBox's SDK binding and shares its
VirtualBox (``state.json``) with the fake ``VBoxManage``; the fake VBoxManage
logs every process to ``calls.log``, the fake binding every API call to
``api-calls.log``.  So these tests prove which backend ``select_backend``
picks, that the API backend answers what the CLI answers for the same
VirtualBox, and that those answers spawned no VBoxManage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pymachine.machine.drivers import vbox_api
from pymachine.machine.drivers.base import State
from pymachine.machine.drivers.vbox_api import VBoxAPIBackend, select_backend
from pymachine.machine.drivers.vboxmanage import MachineMissing, VBoxManageCLI
from pymachine.machine.drivers.virtualbox import VirtualBoxDriver, parse_machinereadable
from pymachine.machine.errors import MachineError

from tests.fakes import vboxmanage

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FAKES = ROOT / "tests" / "fakes"
GUEST_IP = "192.168.56.101"
IP_PROP = "/VirtualBox/GuestInfo/Net/1/V4/IP"


def _forget_binding() -> None:
    for mod in [m for m in sys.modules if m == "vboxapi" or m.startswith("vboxapi.")]:
        del sys.modules[mod]
    vbox_api.reset()


class VBox:
    """One fake VirtualBox: the fake VBoxManage on a known path, both call logs."""

    def __init__(self, root: Path) -> None:
        self.home = root / "vbox"
        self.bin = root / "bin"
        self.bin.mkdir()
        self.vboxmanage = str(vboxmanage.install(self.bin))
        self.store = root / "store"

    def cli(self) -> VBoxManageCLI:
        return VBoxManageCLI(self.vboxmanage)

    def vbm(self, *args: str) -> str:
        return self.cli().run(list(args))[0]

    def calls(self) -> list[list]:
        path = self.home / "calls.log"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def api_calls(self) -> list[list]:
        path = self.home / "api-calls.log"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def api_ops(self) -> list[str]:
        return [c[0] for c in self.api_calls()]

    def state(self) -> dict:
        return json.loads((self.home / "state.json").read_text())

    def make_vm(self, name: str, hostonly: bool = True) -> None:
        """What the driver's create leaves behind, made by the fake VBoxManage itself."""
        disk = self.home / f"{name}.vmdk"
        self.home.mkdir(parents=True, exist_ok=True)
        disk.write_bytes(b"# fake disk\n")
        self.vbm("createvm", "--basefolder", str(self.store / name), "--name", name, "--register")
        self.vbm("modifyvm", name, "--cpus", "2", "--memory", "1024")
        self.vbm("modifyvm", name, "--nic1", "nat", "--nictype1", "82540EM", "--cableconnected1", "on")
        self.vbm("modifyvm", name, "--natpf1", "ssh,tcp,127.0.0.1,40022,,22")
        if hostonly:
            out = self.vbm("hostonlyif", "create")
            ifname = out.split("'")[1]
            self.vbm("hostonlyif", "ipconfig", ifname, "--ip", "192.168.56.1", "--netmask", "255.255.255.0")
            self.vbm("modifyvm", name, "--nic2", "hostonly", "--nictype2", "82540EM", "--nicpromisc2", "deny",
                     "--hostonlyadapter2", ifname, "--cableconnected2", "on")
        self.vbm("storagectl", name, "--name", "SATA", "--add", "sata")
        self.vbm("storageattach", name, "--storagectl", "SATA", "--port", "1", "--device", "0",
                 "--type", "hdd", "--medium", str(disk))

    def driver(self, name: str, backend) -> VirtualBoxDriver:
        d = VirtualBoxDriver.new(name, str(self.store))
        d.backend = backend
        return d


@pytest.fixture
def vbox(tmp_path, monkeypatch):
    fake = VBox(tmp_path)
    monkeypatch.setenv("FAKE_VBOX_HOME", str(fake.home))
    monkeypatch.setenv("FAKE_VBOX_GUEST_IP", GUEST_IP)
    monkeypatch.setenv("PYMACHINE_SSH_WAIT", "1")
    monkeypatch.setenv("PYMACHINE_VBOX_BACKEND", "vboxmanage")  # drivers built by .new(); tests pass their own
    monkeypatch.setenv("PATH", f"{fake.bin}{os.pathsep}{os.environ['PATH']}")
    for knob in ("FAKE_VBOX_VERSION", "FAKE_VBOXAPI_FAIL", "FAKE_VBOXAPI_CONNECT_FAIL", "FAKE_VBOXAPI_NO_XPCOM",
                 "FAKE_VBOXAPI_NOT_READY", "FAKE_VBOX_SSH_TARGET", "DISPLAY", "XAUTHORITY"):
        monkeypatch.delenv(knob, raising=False)
    _forget_binding()
    yield fake
    vboxmanage.kill_forwarders(fake.home)
    _forget_binding()


@pytest.fixture
def binding(vbox, monkeypatch):
    """The fake vboxapi importable, as when VirtualBox's SDK binding is installed."""
    monkeypatch.syspath_prepend(str(FAKES))
    yield
    _forget_binding()


def api_backend(vbox: VBox) -> VBoxAPIBackend:
    return VBoxAPIBackend(cli=vbox.cli())


BACKENDS = ["vboxmanage", "vboxapi"]


@pytest.fixture(params=BACKENDS)
def backend(request, vbox):
    if request.param == "vboxapi":
        request.getfixturevalue("binding")
        return api_backend(vbox)
    return vbox.cli()


def quiet(_msg: str) -> None:
    pass


# ----------------------------------------------------------------------------- selection


def test_auto_picks_vboxapi_when_it_imports_and_connects(vbox, binding, capsys):
    chosen = select_backend({})
    assert isinstance(chosen, VBoxAPIBackend)
    assert isinstance(select_backend({"PYMACHINE_VBOX_BACKEND": "vboxapi"}), VBoxAPIBackend)
    # one VirtualBoxManager per process, however many drivers ask
    assert vbox.api_ops().count("VirtualBoxManager") == 1
    assert capsys.readouterr() == ("", "")


def test_auto_uses_vboxmanage_when_vboxapi_is_not_importable(vbox, capsys):
    chosen = select_backend({"PYMACHINE_VBOX_BACKEND": "auto"})
    assert type(chosen) is VBoxManageCLI
    assert "vboxapi" not in sys.modules
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("knob", ["FAKE_VBOXAPI_CONNECT_FAIL", "FAKE_VBOXAPI_NO_XPCOM"])
def test_auto_uses_vboxmanage_when_the_binding_cannot_connect(vbox, binding, monkeypatch, capsys, knob):
    monkeypatch.setenv(knob, "1")
    assert type(select_backend({})) is VBoxManageCLI
    # the binding's own "init exception" print is swallowed, not shown to the user
    assert capsys.readouterr() == ("", "")
    assert "VirtualBoxManager" in vbox.api_ops()


def test_vboxapi_required_but_not_importable_is_one_line(vbox):
    with pytest.raises(MachineError) as err:
        select_backend({"PYMACHINE_VBOX_BACKEND": "vboxapi"})
    msg = str(err.value)
    assert "\n" not in msg
    assert "PYMACHINE_VBOX_BACKEND=vboxapi" in msg and "cannot be imported" in msg
    assert "PYMACHINE_VBOX_BACKEND=vboxmanage" in msg


def test_vboxapi_required_but_not_connecting_is_one_line(vbox, binding, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_VBOXAPI_CONNECT_FAIL", "1")
    with pytest.raises(MachineError) as err:
        select_backend({"PYMACHINE_VBOX_BACKEND": "vboxapi"})
    msg = str(err.value)
    assert "\n" not in msg
    assert "cannot connect to VirtualBox" in msg and "VBoxSVC is not reachable" in msg
    assert capsys.readouterr() == ("", "")


def test_vboxmanage_mode_never_imports_the_binding(vbox, binding):
    assert type(select_backend({"PYMACHINE_VBOX_BACKEND": "VBoxManage"})) is VBoxManageCLI
    assert "vboxapi" not in sys.modules
    assert vbox.api_calls() == []


def test_unknown_mode_names_the_variable(vbox):
    with pytest.raises(MachineError, match=r"PYMACHINE_VBOX_BACKEND='xpcom' is not one of auto, vboxmanage, vboxapi"):
        select_backend({"PYMACHINE_VBOX_BACKEND": "xpcom"})


def test_importing_the_driver_does_not_import_vboxapi():
    code = ("import sys, machine.drivers.virtualbox, machine.drivers.vbox_api; "
            "print('vboxapi' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": f"{FAKES}{os.pathsep}{ROOT}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=60, check=True).stdout
    assert out.strip() == "False"


# ----------------------------------------------------------------------------- same answers


def test_queries_answer_as_vboxmanage_does(vbox, binding):
    vbox.make_vm("vb1")
    vbox.make_vm("vb2", hostonly=False)
    cli, api = vbox.cli(), api_backend(vbox)
    before = len(vbox.calls())
    assert api.run(["--version"]) == ("6.1.50r161033\n", "")
    assert api.run(["list", "vms"])[0] == cli.run(["list", "vms"])[0]
    info_api = parse_machinereadable(api.run(["showvminfo", "vb1", "--machinereadable"])[0])
    info_cli = parse_machinereadable(cli.run(["showvminfo", "vb1", "--machinereadable"])[0])
    for key in ("name", "UUID", "CfgFile", "memory", "cpus", "VMState", "nic1", "nictype1", "nic2", "nictype2",
                "hostonlyadapter2", "macaddress2", "Forwarding(0)"):
        assert info_api[key] == info_cli[key], key
    assert info_api["VMState"] == "poweroff" and info_api["nic3"] == "none"
    assert "hostonlyadapter2" not in parse_machinereadable(api.run(["showvminfo", "vb2", "--machinereadable"])[0])
    assert api.run(["guestproperty", "get", "vb1", IP_PROP])[0] == "No value set!\n"
    vbox.vbm("guestproperty", "set", "vb1", IP_PROP, "10.0.0.7")
    assert api.run(["guestproperty", "get", "vb1", IP_PROP])[0] == "Value: 10.0.0.7\n" == \
        cli.run(["guestproperty", "get", "vb1", IP_PROP])[0]
    vbox.vbm("startvm", "vb1", "--type", "headless")
    assert api.run(["list", "runningvms"])[0] == cli.run(["list", "runningvms"])[0] != ""
    # the API answered without VBoxManage: the log holds only the 7 calls made through the CLI here
    assert [c[0] for c in vbox.calls()[before:]] == ["list", "showvminfo", "guestproperty", "guestproperty",
                                                      "startvm", "list"]


def test_version_of_virtualbox_7(vbox, binding, monkeypatch):
    monkeypatch.setenv("FAKE_VBOX_VERSION", "7.0.10_Debianr158379")
    assert api_backend(vbox).run(["--version"])[0] == vbox.cli().run(["--version"])[0] == "7.0.10_Debianr158379\n"


def test_lifecycle_through_either_backend(vbox, backend):
    vbox.make_vm("vb1")
    d = vbox.driver("vb1", backend)
    assert d.state() == State.STOPPED
    d.start(quiet)
    assert d.state() == State.RUNNING
    assert d.guest_ip() == GUEST_IP and d.config["IPAddress"] == GUEST_IP
    d.stop(quiet)
    assert d.state() == State.STOPPED and d.config["IPAddress"] == ""
    d.start(quiet)
    d.kill(quiet)
    assert d.state() == State.STOPPED
    assert vbox.state()["vms"][next(iter(vbox.state()["vms"]))]["state"] == "poweroff"


def test_api_paths_spawn_no_vboxmanage(vbox, binding):
    vbox.make_vm("vb1")
    api = VBoxAPIBackend(cli=VBoxManageCLI("/nonexistent/VBoxManage"))  # any spawn would fail loudly
    d = vbox.driver("vb1", api)
    before = vbox.calls()
    assert d.state() == State.STOPPED
    api.run(["startvm", "vb1", "--type", "headless"])
    assert d.state() == State.RUNNING and d.guest_ip() == GUEST_IP
    d.stop(quiet)
    api.run(["startvm", "vb1", "--type", "headless"])
    d.kill(quiet)
    assert vbox.calls() == before
    ops = vbox.api_ops()
    for op in ("IVirtualBox.findMachine", "IMachine.state", "IMachine.getGuestPropertyValue",
               "IMachine.launchVMProcess", "IConsole.powerButton", "IConsole.powerDown", "ISession.unlockMachine"):
        assert op in ops, op
    # what the API path leaves to VBoxManage really goes to VBoxManage
    with pytest.raises(MachineError, match="cannot run /nonexistent/VBoxManage"):
        api.run(["list", "hostonlyifs"])


def test_start_through_the_api_mixes_both_paths(vbox, binding):
    """driver.start: networking set up by VBoxManage, state/start/IP through the API."""
    vbox.make_vm("vb1", hostonly=False)
    d = vbox.driver("vb1", api_backend(vbox))
    d.settings.host_only_allow_any_range = True
    before = len(vbox.calls())
    d.start(quiet)
    cli_cmds = {c[0] for c in vbox.calls()[before:]}
    assert {"hostonlyif", "modifyvm", "dhcpserver", "list"} <= cli_cmds
    assert not cli_cmds & {"showvminfo", "startvm", "guestproperty", "controlvm"}
    # VBoxManage sees what the API did, and the reverse
    assert parse_machinereadable(vbox.vbm("showvminfo", "vb1", "--machinereadable"))["VMState"] == "running"
    vbox.vbm("controlvm", "vb1", "poweroff")
    assert d.state() == State.STOPPED


@pytest.mark.parametrize("version, env_type", [("6.1.50r161033", str), ("7.0.10r158379", list)])
def test_launch_environment_shape_follows_the_version(vbox, binding, monkeypatch, version, env_type):
    monkeypatch.setenv("FAKE_VBOX_VERSION", version)
    monkeypatch.setenv("DISPLAY", ":7")
    vbox.make_vm("vb1")
    api = api_backend(vbox)
    api.run(["startvm", "vb1", "--type", "gui"])
    launch = next(c for c in vbox.api_calls() if c[0] == "IMachine.launchVMProcess")
    assert launch[2] == "gui"
    assert launch[3] == (["DISPLAY=:7"] if env_type is list else "DISPLAY=:7\n")
    api.run(["controlvm", "vb1", "poweroff"])
    api.run(["startvm", "vb1", "--type", "headless"])  # headless: no display handed over
    launches = [c for c in vbox.api_calls() if c[0] == "IMachine.launchVMProcess"]
    assert launches[-1][3] == env_type()


def test_states_compared_by_name_on_virtualbox_7(vbox, binding, monkeypatch):
    """7.0 renumbered MachineState (AbortedSaved); the backend must map by name."""
    monkeypatch.setenv("FAKE_VBOX_VERSION", "7.0.10r158379")
    vbox.make_vm("vb1")
    d = vbox.driver("vb1", api_backend(vbox))
    vbox.vbm("startvm", "vb1")
    assert d.state() == State.RUNNING
    vbox.vbm("controlvm", "vb1", "pause")
    assert d.state() == State.PAUSED
    d.stop(quiet)  # resumes through the API, then the power button
    assert d.state() == State.STOPPED
    assert "IConsole.resume" in vbox.api_ops()


def test_worker_threads_are_attached_once(vbox, binding):
    vbox.make_vm("vb1")
    api = select_backend({})
    d = vbox.driver("vb1", api)
    seen: list[State] = []
    worker = threading.Thread(target=lambda: seen.extend([d.state(), d.state()]))
    worker.start()
    worker.join(30)
    assert seen == [State.STOPPED, State.STOPPED]
    assert vbox.api_ops().count("VirtualBoxManager.initPerThread") == 1


# ----------------------------------------------------------------------------- bad cases


def test_unknown_machine_is_machine_missing(vbox, backend):
    d = vbox.driver("ghost", backend)
    with pytest.raises(MachineMissing, match="machine does not exist"):
        d.state()
    with pytest.raises(MachineMissing):
        backend.run(["controlvm", "ghost", "poweroff"])
    with pytest.raises(MachineMissing):
        backend.run(["guestproperty", "get", "ghost", IP_PROP])
    d.remove(quiet)  # nothing to remove: quiet, as with VBoxManage


def test_poweroff_of_a_stopped_vm_fails_alike(vbox, backend):
    vbox.make_vm("vb1")
    with pytest.raises(MachineError) as err:
        backend.run(["controlvm", "vb1", "poweroff"])
    assert str(err.value) == "VBoxManage controlvm vb1 poweroff failed: Machine 'vb1' is not currently running"


def test_failed_power_on_fails_alike(vbox, backend):
    vbox.make_vm("vb1")
    vbox.vbm("hostonlyif", "remove", "vboxnet0")
    with pytest.raises(MachineError) as err:
        backend.run(["startvm", "vb1", "--type", "headless"])
    assert str(err.value) == ("VBoxManage startvm vb1 --type headless failed: "
                              "Nonexistent host networking interface, name 'vboxnet0' (VERR_INTERNAL_ERROR)")
    assert vbox.driver("vb1", backend).state() == State.STOPPED


def test_api_error_mid_call_is_one_line_and_releases_the_session(vbox, binding, monkeypatch):
    vbox.make_vm("vb1")
    api = api_backend(vbox)
    api.run(["startvm", "vb1", "--type", "headless"])
    monkeypatch.setenv("FAKE_VBOXAPI_FAIL", "powerDown vb1")
    d = vbox.driver("vb1", api)
    with pytest.raises(MachineError) as err:
        d.kill(quiet)
    assert str(err.value) == "VBoxManage controlvm vb1 poweroff failed: injected failure of 'powerDown vb1'"
    assert not isinstance(err.value, MachineMissing)
    ops = vbox.api_ops()
    assert ops[ops.index("IConsole.powerDown"):][1:2] == ["ISession.unlockMachine"]
    assert d.state() == State.RUNNING
    monkeypatch.delenv("FAKE_VBOXAPI_FAIL")
    d.kill(quiet)  # the session was released: the next call locks again
    assert d.state() == State.STOPPED


def test_not_ready_is_retried(vbox, binding, monkeypatch):
    monkeypatch.setenv("FAKE_VBOXAPI_NOT_READY", "2")
    vbox.make_vm("vb1")
    d = vbox.driver("vb1", VBoxAPIBackend(cli=vbox.cli()))
    assert d.state() == State.STOPPED
    assert vbox.api_ops().count("IVirtualBox.findMachine") == 3


def test_explicit_api_backend_without_the_binding_is_one_line(vbox):
    d = vbox.driver("vb1", VBoxAPIBackend(cli=vbox.cli()))
    with pytest.raises(MachineError) as err:
        d.state()
    assert str(err.value).startswith("the vboxapi backend is unavailable: the vboxapi module cannot be imported")


def test_started_through_the_api_forwards_nat_ssh_until_powered_off(vbox, binding, monkeypatch):
    """The fake's "VM process" stands in for VirtualBox's NAT forward, as the fake VBoxManage's does."""
    import socket

    from pymachine.machine.drivers.virtualbox import free_loopback_port

    with socket.create_server(("127.0.0.1", 0)) as target:
        monkeypatch.setenv("FAKE_VBOX_SSH_TARGET", f"127.0.0.1:{target.getsockname()[1]}")
        vbox.make_vm("vb1")
        port = free_loopback_port()
        vbox.vbm("modifyvm", "vb1", "--natpf1", "delete", "ssh")
        vbox.vbm("modifyvm", "vb1", "--natpf1", f"ssh,tcp,127.0.0.1,{port},,22")
        api = api_backend(vbox)
        api.run(["startvm", "vb1", "--type", "headless"])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            target.settimeout(10)
            conn, _ = target.accept()
            with conn:
                client.sendall(b"SSH-2.0-test\r\n")
                assert conn.recv(64) == b"SSH-2.0-test\r\n"
        api.run(["controlvm", "vb1", "poweroff"])
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_virtualbox_7_macos_arm_names_answer_as_vboxmanage_does(vbox, binding, monkeypatch):
    """7.x API names: a host-only *network* NIC (INetworkAdapter.hostOnlyNetwork -> hostonly-network2),
    7.1's IMachine.platform.architecture, and the AbortedSaved state, by name (reference a4, a8)."""
    for knob, value in (("FAKE_VBOX_VERSION", "7.2.4r170995"), ("FAKE_VBOX_HOST_OS", "darwin"),
                        ("FAKE_VBOX_HOST_ARCH", "arm64")):
        monkeypatch.setenv(knob, value)
    vbox.vbm("createvm", "--name", "arm1", "--platform-architecture", "arm", "--register")
    vbox.vbm("hostonlynet", "add", "--name=net1", "--netmask=255.255.255.0", "--lower-ip=192.168.56.1",
             "--upper-ip=192.168.56.254")
    vbox.vbm("modifyvm", "arm1", "--nic2", "hostonlynet", "--host-only-net2", "net1", "--nic-type2", "virtio")
    cli, api = vbox.cli(), api_backend(vbox)
    info_api = parse_machinereadable(api.run(["showvminfo", "arm1", "--machinereadable"])[0])
    info_cli = parse_machinereadable(cli.run(["showvminfo", "arm1", "--machinereadable"])[0])
    for key in ("platformArchitecture", "nic2", "hostonly-network2", "macaddress2", "nictype2", "VMState"):
        assert info_api[key] == info_cli[key], key
    assert (info_api["platformArchitecture"], info_api["nic2"], info_api["hostonly-network2"]) == (
        "ARM", "hostonlynetwork", "net1")
    path = vbox.home / "state.json"
    state = json.loads(path.read_text())
    next(iter(state["vms"].values()))["state"] = "aborted-saved"
    path.write_text(json.dumps(state))
    assert api.run(["showvminfo", "arm1", "--machinereadable"])[0].count('VMState="aborted-saved"') == 1
    assert vbox.driver("arm1", api).state() == State.SAVED == vbox.driver("arm1", cli).state()
