"""Byte progress of ``image pack``/``image load`` and of the vSphere datastore uploads.

On a pseudo-terminal (stderr on a pty, as a user's shell has it) each step draws a live
line with its bytes of the total and ends on a summary with the total; without a terminal
the steps are the log's one line each (no carriage returns, no bar).  Pack and load run
through the installed ``pymachine`` command; the uploads go to a real vcsim datastore.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymachine.machine.progress import _size

from tests.conftest import PYMACHINE, PyMachine
from tests.fake_base_image import make_fake_image, qemu_img_available
from tests.vcsim import inventory
from tests.vcsim import vcsim_fixture as vcsim_fixture  # registers the ``vcsim`` fixture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

needs_qemu_img = pytest.mark.skipif(not qemu_img_available(), reason="qemu-img not installed")
LIVE = "\r\x1b[K"


class _PtyReader:
    """Collects what is written to a pty's slave side (read on a thread: the pty buffer is small)."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.chunks: list[bytes] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO once every slave descriptor is closed
                return
            if not data:
                return
            self.chunks.append(data)

    def close(self) -> str:
        if self.slave != -1:
            os.close(self.slave)
            self.slave = -1
        self.thread.join(timeout=10)
        os.close(self.master)
        return b"".join(self.chunks).decode(errors="replace")


def _on_pty(pm: PyMachine, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """``pymachine ARGS`` with stderr on a pty: (the run, what the terminal showed)."""
    reader = _PtyReader()
    try:
        proc = subprocess.run([PYMACHINE, *args], stdout=subprocess.PIPE, stderr=reader.slave, text=True,
                              env={**pm.env, "TERM": "xterm"}, timeout=120, check=False)
    finally:
        shown = reader.close()
    return proc, shown


def _other(root: Path) -> PyMachine:
    """Another user's pymachine (its own store, home and image cache) to load into."""
    root.mkdir(parents=True, exist_ok=True)
    return PyMachine(root)


def _summary(shown: str, label: str) -> str:
    found = re.findall(rf"{re.escape(label)}: done in [0-9.]+s \(([^)]*)\)", shown)
    assert len(found) == 1, shown
    return found[0]


@needs_qemu_img
def test_pack_and_load_draw_bytes_on_a_terminal_and_end_at_the_total(pm: PyMachine, tmp_path: Path) -> None:
    info = make_fake_image(pm.store)
    archive = tmp_path / "image.tar.gz"
    proc, shown = _on_pty(pm, "image", "pack", "-o", str(archive))
    assert proc.returncode == 0, shown
    assert proc.stdout.strip() == str(archive)  # progress never lands on stdout
    packed = sum(p.stat().st_size for p in info.directory.iterdir()
                 if p.name in ("manifest.json", "vmlinuz", "initrd.img", "disk.qcow2", "disk.vdi"))
    total = f"{_size(packed)}/{_size(packed)}"
    assert LIVE in shown
    assert f"Packing image.tar.gz    0% 0 B/{_size(packed)}" in shown  # the bar: bytes of the total
    assert _summary(shown, "Packing image.tar.gz") == _size(packed), total
    assert _summary(shown, "Hashing 5 files") == _size(packed)

    other = _other(tmp_path / "other")
    proc, shown = _on_pty(other, "image", "load", str(archive))
    assert proc.returncode == 0, shown
    size = archive.stat().st_size
    assert f"Loading image.tar.gz    0% 0 B/{_size(size)}" in shown
    assert _summary(shown, "Loading image.tar.gz") == _size(size)  # ends at the archive's size


@needs_qemu_img
def test_pack_and_load_without_a_terminal_print_one_line_per_step(pm: PyMachine, tmp_path: Path) -> None:
    make_fake_image(pm.store)
    archive = tmp_path / "image.tar.gz"
    pack = pm.ok("image", "pack", "-o", str(archive))
    load = _other(tmp_path / "other").ok("image", "load", str(archive))
    for res in (pack, load):
        assert "\r" not in res.stderr and "\x1b" not in res.stderr
        lines = res.stderr.splitlines()
        assert len(lines) == len(set(lines)), res.stderr  # each step once
        assert not any(line.startswith(("Packing", "Hashing", "Loading")) for line in lines), res.stderr
    assert any(line.startswith("(image) writing ") for line in pack.stderr.splitlines())
    assert any(line.startswith("(image) loaded ") for line in load.stderr.splitlines())


# vSphere ----------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _stderr_on_pty(monkeypatch: pytest.MonkeyPatch) -> Iterator[_PtyReader]:
    """This process's ``sys.stderr`` on a pty (machine.progress reads it when a step starts)."""
    reader = _PtyReader()
    stream = open(os.dup(reader.slave), "w", encoding="utf-8")  # noqa: SIM115 -- closed below
    saved = sys.stderr
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(sys, "stderr", stream)
    try:
        yield reader
    finally:
        monkeypatch.setattr(sys, "stderr", saved)
        stream.close()


def _vsphere_driver(vcsim, tmp_path: Path, name: str):
    from tests.integration.test_vsphere import make_driver

    iso = tmp_path / "boot.iso"
    iso.write_bytes(b"iso\n")
    return make_driver(vcsim, tmp_path / "store", name, iso)


def _upload(driver, vcsim, local: Path, remote: str) -> list[str]:
    """The driver's own upload of ``local`` into ``[LocalDS_0] <machine>/``: the lines it logged."""
    logged: list[str] = []
    with vcsim.connect() as si:
        driver._upload_file(si, logged.append, "DC0", "LocalDS_0", remote, str(local))
    return logged


def test_vsphere_upload_draws_bytes_on_a_terminal_and_one_line_without(vcsim, tmp_path, monkeypatch, capfd):
    driver = _vsphere_driver(vcsim, tmp_path, "pm-progress")
    local = tmp_path / "disk-flat.bin"
    payload = os.urandom(3 << 20)
    local.write_bytes(payload)

    with _stderr_on_pty(monkeypatch) as reader:
        _upload(driver, vcsim, local, "pm-progress-flat.vmdk")
    shown = reader.close()
    assert f"Uploading pm-progress-flat.vmdk    0% 0 B/{_size(len(payload))}" in shown
    assert _summary(shown, "Uploading pm-progress-flat.vmdk") == _size(len(payload))
    root = inventory(vcsim)["root"]
    assert (root / "pm-progress" / "pm-progress-flat.vmdk").read_bytes() == payload

    capfd.readouterr()
    logged = _upload(driver, vcsim, local, "again.vmdk")  # stderr is no terminal here
    err = capfd.readouterr().err
    assert logged == ["(pm-progress) Uploading again.vmdk to [LocalDS_0] pm-progress/..."]  # the step's one line
    assert "Uploading" not in err and "\r" not in err  # no bar, no second line
    assert (root / "pm-progress" / "again.vmdk").read_bytes() == payload

