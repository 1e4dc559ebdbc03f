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
