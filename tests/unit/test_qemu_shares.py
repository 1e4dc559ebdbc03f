"""The qemu driver's shared folders: the home at the same path by default, --qemu-share-folder
HOST[:GUEST], --qemu-no-share, the guard rails, the -virtfs argv and the seed's fstab."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymachine.machine.drivers.qemu import VMSpec, _same_path_in_guest, _shares_from_flags, qemu_argv
from pymachine.machine.errors import MachineError
from pymachine.machine.seed import check_share_target, shares_fstab


def test_home_is_shared_at_the_same_path_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home" / "alice"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    assert _shares_from_flags([], False) == [[str(home), str(home)]]
    assert _shares_from_flags([], True) == []


def test_a_home_the_guest_needs_is_not_shared_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/root")
    assert _shares_from_flags([], False) == []


def test_share_folder_flags(tmp_path: Path) -> None:
    assert _shares_from_flags([f"{tmp_path}:/home/alice/src", "/srv/data"], False) == [
        [str(tmp_path), "/home/alice/src"], ["/srv/data", "/srv/data"]]
    assert _same_path_in_guest(r"C:\Users\me") == "/c/Users/me"


@pytest.mark.parametrize("flags, message", [
    (["/x:/etc"], "cannot be mounted over the guest's /etc"),
    (["/x:/home"], "cannot be mounted over the guest's /home"),
    (["/x:/home/docker"], "cannot be mounted over the guest user's home /home/docker"),
    (["/x:/home/docker/.ssh"], "guest user's home"),
    (["/x:/"], "cannot be mounted over the guest's /"),
    (["/x:/home/a/../../etc"], "must be normalised"),
    (["/my dir"], "no spaces"),
    ([":/home/a"], "needs HOST[:GUEST]"),
])
def test_share_guard_rails(flags: list[str], message: str) -> None:
    with pytest.raises(MachineError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _shares_from_flags(flags, False)


def test_no_share_and_share_folder_exclude_each_other() -> None:
    with pytest.raises(MachineError, match="exclude each other"):
        _shares_from_flags(["/srv"], True)


def test_user_areas_allow_deeper_mounts_only() -> None:
    check_share_target("/home/alice")
    check_share_target("/tmp/ci/home")
    with pytest.raises(ValueError):
        check_share_target("/tmp")


def test_virtfs_argv_and_fstab() -> None:
    spec = VMSpec(machine_dir="/m", cpus=1, memory_mb=1024, accel="tcg", overlay="/m/disk.qcow2", seed="/m/seed.iso",
                  ssh_port=2222, engine_port=2376, shares=(("/home/alice", "pmshare0"),))
    argv = qemu_argv(spec)
    i = argv.index("-virtfs")
    assert argv[i + 1] == "local,path=/home/alice,mount_tag=pmshare0,security_model=none,id=pmshare0"
    assert shares_fstab([("9p", "pmshare0", "/home/alice")]) == (
        "pmshare0 /home/alice 9p trans=virtio,version=9p2000.L,msize=512000,nofail 0 0\n")
    assert "-virtfs" not in qemu_argv(VMSpec(machine_dir="/m", cpus=1, memory_mb=1024, accel="tcg",
                                             overlay="/o", seed="/s", ssh_port=1, engine_port=2))
