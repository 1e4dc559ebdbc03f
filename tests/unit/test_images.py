"""engine.images helpers that must behave on hosts without Linux's /proc and GNU rm (macOS, Windows)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pymachine.engine import images
from pymachine.machine.errors import MachineError


@pytest.fixture
def no_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.path.exists
    monkeypatch.setattr(images.os.path, "exists", lambda p: False if str(p) == "/proc/self/mountinfo" else real(p))

    def no_gnu_rm(*args, **kwargs):  # noqa: ANN001, ANN002, ANN003 - must not be called there
        raise AssertionError(f"GNU rm called without /proc: {args}")

    monkeypatch.setattr(images.subprocess, "run", no_gnu_rm)


def test_remove_tree_without_proc_uses_rmtree(tmp_path: Path, no_proc: None) -> None:
    tree = tmp_path / "image"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "disk.vdi").write_bytes(b"x")
    images._remove_tree(tree)
    assert not tree.exists()


def test_remove_tree_says_so_when_the_tree_stays(tmp_path: Path, no_proc: None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "image"
    tree.mkdir()
    monkeypatch.setattr(images.shutil, "rmtree", lambda *a, **k: None)  # e.g. a file held open on Windows
    with pytest.raises(MachineError, match="could not remove"):
        images._remove_tree(tree)


def test_each_arch_has_its_own_recipe_and_unknown_arches_are_one_line() -> None:
    assert images.recipe_hash("amd64") != images.recipe_hash("arm64")
    assert images.recipe_hash() == images.recipe_hash(images.host_arch())
    assert images.kernel_cmdline("arm64").endswith("console=ttyAMA0,115200")
    assert "ttyS0" in images.kernel_cmdline("amd64")
    with pytest.raises(MachineError, match=r"^unknown architecture 'riscv64': use one of amd64, arm64$"):
        images.recipe_hash("riscv64")
    assert "vmw_pvscsi" not in images._initrd_modules("arm64") and "vmw_pvscsi" in images._initrd_modules("amd64")


def test_binfmt_registration_comes_from_debian_with_the_fix_binary_flag(tmp_path: Path) -> None:
    from pymachine.engine import binfmt

    interp = tmp_path / "aarch64-binfmt-P"
    interp.write_text("")
    conf = tmp_path / "qemu-aarch64.conf"
    conf.write_text(f"# comment\n:qemu-aarch64:M::\\x7fELF:\\xff\\xff:{interp}:OP\n")
    line = binfmt.registration_line("aarch64", (tmp_path,))
    assert line == f":qemu-aarch64:M::\\x7fELF:\\xff\\xff:{interp}:OPF"
    interp.unlink()  # qemu-user-static removed: one line saying what to install
    with pytest.raises(MachineError, match="qemu-user-static"):
        binfmt.registration_line("aarch64", (tmp_path,))


def test_the_image_stamps_etc_and_var_as_updated_with_usr(tmp_path: Path) -> None:
    """systemd runs ConditionNeedsUpdate= units (ldconfig, sysusers, the journal catalog) when
    /usr is newer than /etc/.updated or /var/.updated: after the stamp it is not, even on a
    filesystem that drops nanoseconds; a later change to /usr makes it newer again."""
    for sub in ("usr", "etc", "var"):
        (tmp_path / sub).mkdir()
    os.utime(tmp_path / "usr", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    images._stamp_updated(tmp_path)
    usr = (tmp_path / "usr").stat()
    for sub in ("etc", "var"):
        stamp = tmp_path / sub / ".updated"
        assert stamp.stat().st_mtime_ns // 10**9 > usr.st_mtime_ns // 10**9  # newer to the second
        assert f"TIMESTAMP_NSEC={usr.st_mtime_ns}\n" in stamp.read_text()
    (tmp_path / "usr" / "new-dir").mkdir()  # what an upgrade adding to /usr does
    assert (tmp_path / "usr").stat().st_mtime_ns > (tmp_path / "etc" / ".updated").stat().st_mtime_ns


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_the_image_units_and_drop_ins_are_valid_for_systemd(tmp_path: Path) -> None:
    """Every unit and drop-in the image writes, read by systemd's own parser (offline):
    a typo in a key would otherwise only show as a unit doing nothing at the guest's boot."""
    units = tmp_path / "units"
    names = []
    for rel, (content, _mode) in images._FILES.items():
        if not rel.startswith("etc/systemd/system/"):
            continue
        path = units / rel[len("etc/systemd/system/"):]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(re.sub(r"ExecStart=/usr/local/sbin/\S+", "ExecStart=/bin/true", content))
        if path.parent == units:
            names.append(path.name)
    for dropin_dir in units.glob("*.service.d"):  # stand-ins for the packaged units the drop-ins extend
        unit = units / dropin_dir.name[:-2]
        if not unit.exists():
            unit.write_text("[Unit]\nDescription=stand-in\n[Service]\nExecStart=/bin/true\n")
            names.append(unit.name)
    assert {"pymachine-firstboot.service", "pymachine-growroot.service"} <= set(names)
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", *(str(units / n) for n in sorted(names))],
                            capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"})
    assert verify.returncode == 0, verify.stderr
    assert "Unknown key" not in verify.stderr and "Unknown section" not in verify.stderr, verify.stderr
