"""virtiofs shares of the qemu driver: finding virtiofsd, its command line, QEMU's side, and the
daemons' lifecycle, with tests/fakes/virtiofsd (virtiofsd is not installable here; the fake takes
the README's command line and behaves as the real one at the socket).  9p, the fallback, is
proved end to end in the VM tier (tests/vm/test_qemu_vm.py::assert_home_is_shared)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from pymachine.machine.drivers import virtiofs
from pymachine.machine.errors import MachineError

from tests.fixtures_dockerd import free_loopback_port as free_port

pytestmark = pytest.mark.integration

FAKES = Path(__file__).resolve().parent.parent / "fakes"


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it ended (it is this process's child here)
    try:
        return b"virtiofsd" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_virtiofsd_is_found_on_path_or_where_distributions_put_it(tmp_path: Path) -> None:
    assert virtiofs.find_virtiofsd(path=str(FAKES), platform="linux") == str(FAKES / "virtiofsd")
    empty = tmp_path / "bin"
    empty.mkdir()
    expected = next((c for c in virtiofs.CANDIDATES if os.access(c, os.X_OK)), None)
    assert virtiofs.find_virtiofsd(path=str(empty), platform="linux") == expected
    assert virtiofs.find_virtiofsd(path=str(FAKES), platform="darwin") is None  # 9p there (QEMU built-in)
    assert virtiofs.choose_transport([["/home/a", "/home/a"]], path=str(FAKES)) == "virtiofs"
    assert virtiofs.choose_transport([], path=str(FAKES)) == "9p"  # nothing to share: no daemon
    if expected is None:
        assert virtiofs.choose_transport([["/home/a", "/home/a"]], path=str(empty)) == "9p"
    # PYMACHINE_VIRTIOFSD names one, or "none" keeps 9p whatever is installed
    fake = str(FAKES / "virtiofsd")
    assert virtiofs.find_virtiofsd(path=str(empty), platform="linux", environ={"PYMACHINE_VIRTIOFSD": fake}) == fake
    assert virtiofs.find_virtiofsd(path=str(FAKES), platform="linux", environ={"PYMACHINE_VIRTIOFSD": "none"}) is None
    assert virtiofs.find_virtiofsd(platform="linux", environ={"PYMACHINE_VIRTIOFSD": str(empty / "nope")}) is None
    assert not virtiofs.is_legacy(fake)  # the Rust one's --help names --shared-dir


def test_a_normal_user_with_only_qemus_c_virtiofsd_shares_over_9p(tmp_path: Path, monkeypatch) -> None:
    """QEMU's C virtiofsd cannot even print its help as a normal user: it calls setgroups()
    first, prints only that error and exits 1 (Debian 12's /usr/lib/qemu/virtiofsd run by
    runuser -u nobody).  That must read as "not the Rust daemon", so the user's machine shares
    over 9p instead of failing at start (a create that died on this before the fix)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    c_daemon_as_user = bin_dir / "virtiofsd"
    c_daemon_as_user.write_text("#!/bin/sh\necho 'setgroups() failed with error=1:Operation not permitted' >&2\n"
                                "exit 1\n")
    c_daemon_as_user.chmod(0o755)
    monkeypatch.setattr(virtiofs, "_FLAVOURS", {})
    monkeypatch.setattr(virtiofs, "_as_root", lambda: False)
    assert virtiofs.is_legacy(str(c_daemon_as_user))
    assert virtiofs.choose_transport([["/home/a", "/home/a"]], path=str(bin_dir)) == "9p"
    monkeypatch.setattr(virtiofs, "_FLAVOURS", {})  # the Rust one stays usable by a normal user
    assert virtiofs.choose_transport([["/home/a", "/home/a"]], path=str(FAKES)) == "virtiofs"


def test_qemu_side_follows_the_readme() -> None:
    args = virtiofs.qemu_args("/m", [("/home/ada", "pmshare0"), ("/srv/data", "pmshare1")], 2048)
    assert args == [
        "-object", "memory-backend-memfd,id=pmmem,size=2048M,share=on", "-numa", "node,memdev=pmmem",
        "-chardev", "socket,id=pmshare0,path=/m/pmshare0.vfsd.sock",
        "-device", "vhost-user-fs-pci,queue-size=1024,chardev=pmshare0,tag=pmshare0",
        "-chardev", "socket,id=pmshare1,path=/m/pmshare1.vfsd.sock",
        "-device", "vhost-user-fs-pci,queue-size=1024,chardev=pmshare1,tag=pmshare1",
    ]
    assert virtiofs.daemon_argv("/usr/libexec/virtiofsd", "/m/s.sock", "/home/ada", as_root=True) == [
        "/usr/libexec/virtiofsd", "--socket-path=/m/s.sock", "--shared-dir=/home/ada"]
    assert virtiofs.daemon_argv("vfsd", "/m/s.sock", "/home/ada", as_root=False)[-1] == "--sandbox=none"
    # QEMU's C virtiofsd (Debian 12's /usr/lib/qemu/virtiofsd): the directory as -o source= (its --help)
    assert virtiofs.daemon_argv("/usr/lib/qemu/virtiofsd", "/m/s.sock", "/home/ada", as_root=True, legacy=True) == [
        "/usr/lib/qemu/virtiofsd", "--socket-path=/m/s.sock", "-o", "source=/home/ada"]


def test_one_daemon_per_share_ends_with_its_vmm_and_stop_ends_the_rest(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_VIRTIOFSD_LOG", str(calls))
    machine = tmp_path / "m"
    machine.mkdir()
    shares = [(str(tmp_path), "pmshare0"), (str(Path.home()), "pmshare1")]
    pids = virtiofs.start_daemons(str(machine), shares, str(FAKES / "virtiofsd"))
    argvs = [json.loads(line) for line in calls.read_text().splitlines()]
    sandbox = [] if os.geteuid() == 0 else ["--sandbox=none"]
    assert [a[1:] for a in argvs] == [
        [f"--socket-path={machine}/pmshare0.vfsd.sock", f"--shared-dir={tmp_path}", *sandbox],
        [f"--socket-path={machine}/pmshare1.vfsd.sock", f"--shared-dir={Path.home()}", *sandbox]]
    assert all(_alive(pid) for pid in pids)
    # QEMU connects to the first and goes away: that daemon ends by itself
    with socket.socket(socket.AF_UNIX) as vmm:
        vmm.connect(virtiofs.socket_path(str(machine), "pmshare0"))
    deadline = time.monotonic() + 10
    while _alive(pids[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pids[0]) and _alive(pids[1])
    virtiofs.stop_daemons(str(machine), ["pmshare0", "pmshare1"])  # what the driver's cleanup does
    assert not _alive(pids[1])
    assert sorted(p.name for p in machine.iterdir()) == ["pmshare0.vfsd.log", "pmshare1.vfsd.log"]


def test_a_daemon_that_fails_is_one_line_and_leaves_none_running(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    machine = tmp_path / "m"
    machine.mkdir()
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_VIRTIOFSD_LOG", str(calls))
    shares = [(str(tmp_path), "pmshare0"), (str(tmp_path / "missing"), "pmshare1")]
    with pytest.raises(MachineError) as err:
        virtiofs.start_daemons(str(machine), shares, str(FAKES / "virtiofsd"))
    message = str(err.value)
    assert "\n" not in message and f"virtiofsd for the shared folder {tmp_path / 'missing'} exited with 1" in message
    assert "failed to open shared directory" in (machine / "pmshare1.vfsd.log").read_text()
    first = json.loads(calls.read_text().splitlines()[0])
    assert first[1] == f"--socket-path={machine}/pmshare0.vfsd.sock"
    assert not (machine / "pmshare0.vfsd.sock").exists() and not (machine / "pmshare0.vfsd.pid").exists()
    assert not any(b"virtiofsd" in Path(f"/proc/{p}/cmdline").read_bytes() and str(machine).encode()
                   in Path(f"/proc/{p}/cmdline").read_bytes()
                   for p in map(int, filter(str.isdigit, os.listdir("/proc")))
                   if os.path.exists(f"/proc/{p}/cmdline"))


REAL = "/usr/lib/qemu/virtiofsd"  # QEMU's C virtiofsd, in Debian 12's qemu-system-common (root only)


@pytest.mark.skipif(not (os.access(REAL, os.X_OK) and shutil.which("qemu-system-x86_64") and os.geteuid() == 0),
                    reason="needs root, QEMU and Debian's /usr/lib/qemu/virtiofsd")
def test_real_qemu_takes_the_share_from_a_real_virtiofsd_which_ends_with_it(tmp_path: Path) -> None:
    """The driver's QEMU arguments against real QEMU and a real virtiofsd: the vhost-user handshake
    succeeds (QEMU shows a virtio-fs PCI device, 1af4:105a) and the daemon ends when QEMU does."""
    from pymachine.machine.drivers.qemu import VMSpec, qemu_argv
    from pymachine.machine.qmp import qmp_command

    machine = tmp_path / "m"
    machine.mkdir()
    share = tmp_path / "share"
    share.mkdir()
    assert virtiofs.is_legacy(REAL)
    spec = VMSpec(machine_dir=str(machine), cpus=1, memory_mb=256, accel="tcg", overlay=str(tmp_path / "none.qcow2"),
                  seed=str(tmp_path / "none.iso"), ssh_port=free_port(), engine_port=free_port(),
                  shares=((str(share), "pmshare0"),), share_transport="virtiofs")
    argv = qemu_argv(spec)
    assert "-virtfs" not in argv and "vhost-user-fs-pci,queue-size=1024,chardev=pmshare0,tag=pmshare0" in argv
    # the same machine type and memory, no disks (nothing to boot): QEMU paused, not daemonized
    vfs_args = argv[argv.index("-object"):argv.index("-object") + 8]
    (pid,) = virtiofs.start_daemons(str(machine), spec.shares, REAL)
    qmp = machine / "q.sock"
    qemu = subprocess.Popen(["qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", "256M", "-nodefaults",
                             "-display", "none", "-S", "-qmp", f"unix:{qmp},server=on,wait=off", *vfs_args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not qmp.exists() and qemu.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert qemu.poll() is None, qemu.stderr.read() if qemu.stderr else ""
        pci = qmp_command(str(qmp), "human-monitor-command", {"command-line": "info pci"}, timeout=10)
        assert "1af4:105a" in str(pci)
        assert "Received vhost-user socket connection" in (machine / "pmshare0.vfsd.log").read_text()
    finally:
        qemu.kill()
        qemu.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "virtiofsd ends with its QEMU"
    virtiofs.stop_daemons(str(machine), ["pmshare0"])
    assert not list(machine.glob("*.vfsd.sock")) and not list(machine.glob("*.vfsd.pid"))


def test_the_driver_chooses_virtiofs_at_create_and_runs_its_daemons_with_the_vm(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from pymachine.machine.drivers.qemu import qemu_argv, share_tag
    from pymachine.machine.drivers.registry import driver_class
    from pymachine.machine.seed import shares_fstab

    share = tmp_path / "share"
    share.mkdir()
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_VIRTIOFSD_LOG", str(calls))
    monkeypatch.setenv("PYMACHINE_VIRTIOFSD", str(FAKES / "virtiofsd"))
    drv = driver_class("qemu").new("dev", str(tmp_path / "store"))
    Path(drv.machine_dir).mkdir(parents=True)
    drv.settings.shares = [[str(share), str(share)]]
    assert drv._choose_share_transport() == "virtiofs"  # what create writes to the seed's fstab, and keeps
    assert drv.settings.share_transport == "virtiofs"
    assert shares_fstab([("virtiofs", share_tag(0), str(share))]) == (
        f"{share_tag(0)} {share} virtiofs defaults,nofail 0 0\n")
    spec = drv._start_share_daemons(drv.spec())
    argv = qemu_argv(spec)
    assert "-virtfs" not in argv and f"socket,id=pmshare0,path={drv.machine_dir}/pmshare0.vfsd.sock" in argv
    (started,) = [json.loads(line) for line in calls.read_text().splitlines()]
    assert f"--shared-dir={share}" in started
    pid = int(Path(drv.machine_dir, "pmshare0.vfsd.pid").read_text())
    assert _alive(pid)
    drv._cleanup_runtime()  # what stop, kill and a failed start do
    assert not _alive(pid) and not Path(drv.machine_dir, "pmshare0.vfsd.sock").exists()

    # virtiofsd gone since create: the VM starts without its shares (nofail in the guest), said once
    monkeypatch.setenv("PYMACHINE_VIRTIOFSD", "none")
    assert drv._start_share_daemons(drv.spec()).shares == ()
    assert "(dev) virtiofsd is not installed any more: the shared folders are not mounted" in capsys.readouterr().err
    # and without virtiofsd at create, 9p as before
    drv.settings.share_transport = "9p"
    assert drv._choose_share_transport() == "9p"
    assert "-virtfs" in qemu_argv(drv.spec())
