"""virtiofs shares of the qemu driver: finding virtiofsd, its command line, QEMU's side, and the
daemons' lifecycle, with tests/fakes/virtiofsd (virtiofsd is not installable here; the fake takes
the README's command line and behaves as the real one at the socket).  9p, the fallback, is
proved end to end in the VM tier (tests/vm/test_qemu_vm.py::assert_home_is_shared)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

import pytest
from pymachine.machine.drivers import virtiofs
from pymachine.machine.errors import MachineError

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
