"""machine.atomic.write_atomic: the one writer of files that must survive a crash."""

from __future__ import annotations

import os
import stat

import pytest
from pymachine.machine import atomic


def test_writes_with_the_mode_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "new" / "dir" / "key.pem"
    atomic.write_atomic(target, b"secret", 0o600)
    assert target.read_bytes() == b"secret"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700  # parents made private
    atomic.write_atomic(target, b"public", 0o644)  # replacing changes the mode too
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 and target.read_bytes() == b"public"
    assert sorted(p.name for p in target.parent.iterdir()) == ["key.pem"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        atomic.write_atomic(target, b"new", 0o600)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_without_fchmod_the_mode_is_left_to_the_os(tmp_path, monkeypatch):
    """Windows has no os.fchmod (before 3.13): the write still works."""
    monkeypatch.delattr(os, "fchmod")
    atomic.write_atomic(tmp_path / "f", b"x", 0o600)
    assert (tmp_path / "f").read_bytes() == b"x"


def test_dir_mode_none_needs_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic.write_atomic(tmp_path / "missing" / "f", b"x", dir_mode=None)
    assert not (tmp_path / "missing").exists()
