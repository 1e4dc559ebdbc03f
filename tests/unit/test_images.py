"""engine.images helpers that must behave on hosts without Linux's /proc and GNU rm (macOS, Windows)."""

from __future__ import annotations

import os
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
