"""``pymachine image export|prune|ls`` through the installed command, on a tiny stand-in image.

Whether the real image's exports boot is the VM tier's job
(tests/vm/test_bootable_image.py); here the conversions really run
``qemu-img`` on a small qcow2 and prune really removes directories.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from pymachine.engine import images

from tests.conftest import PyMachine
from tests.fake_base_image import make_fake_image, qemu_img_available

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not qemu_img_available(), reason="qemu-img not installed")]


def test_export_converts_once_and_prints_the_path(pm: PyMachine) -> None:
    info = make_fake_image(pm.store)
    for fmt in ("vdi", "vmdk", "raw", "vhdx"):
        res = pm.ok("image", "export", fmt)
        path = Path(res.stdout.strip())
        assert path == info.exported(fmt) and path.is_file()
        assert "Converting to" not in res.stderr and "\r" not in res.stderr  # live only on a terminal
        fmt_seen = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True,
                                             text=True, check=True, timeout=60).stdout)["format"]
        assert fmt_seen == fmt
        same = subprocess.run(["qemu-img", "compare", "-F", fmt, str(info.disk), str(path)], capture_output=True,
                              timeout=60)
        assert same.returncode == 0, same.stdout
        mtime = path.stat().st_mtime_ns
        assert Path(pm.ok("image", "export", fmt).stdout.strip()) == path and path.stat().st_mtime_ns == mtime
    assert not list(info.directory.glob(".*partial"))


@pytest.mark.parametrize("args, message", [
    (("image", "export"), "pymachine image export needs one format: vmdk | vdi | raw | vhdx"),
    (("image", "export", "qcow3"), "pymachine image export needs one format: vmdk | vdi | raw | vhdx"),
    (("image", "export", "vdi", "--arch", "arm64"),
     "pymachine's arm64 base image is not built yet: run `pymachine image build --arch arm64` first"),
    (("image", "build", "--arch", "sparc"), "unknown architecture 'sparc' for --arch: use one of amd64, arm64"),
    (("image", "ls", "--arch", "arm64"), "--arch goes with `pymachine image build`, `export` and `pack` only"),
    (("image", "prune", "extra"), "Invalid command line. Found extra arguments ['extra']"),
])
def test_bad_image_commands_are_one_line_errors(pm: PyMachine, args: tuple[str, ...], message: str) -> None:
    res = pm(*args)
    assert res.returncode == 1
    assert res.stderr.strip() == message
    assert not (pm.store / "cache" / "images").exists() or not any((pm.store / "cache" / "images").iterdir())


def _old_image(cache: Path, recipe: str) -> Path:
    directory = cache / recipe
    directory.mkdir(parents=True)
    for name in (images.DISK_NAME, images.KERNEL_NAME, images.INITRD_NAME):
        (directory / name).write_bytes(b"old\n")
    (directory / images.MANIFEST_NAME).write_text(json.dumps({"recipe": recipe}) + "\n")
    return directory


def test_prune_keeps_the_current_image_and_any_a_machine_uses(pm: PyMachine) -> None:
    current = make_fake_image(pm.store)
    cache = current.directory.parent
    unused = _old_image(cache, "0000000000000001")
    used = _old_image(cache, "0000000000000002")
    crashed = cache / ".build-0000000000000003-abc_12"
    (crashed / "root" / "etc").mkdir(parents=True)
    interrupted = cache / ".load-xyz"  # an `image load` killed a day ago
    interrupted.mkdir()
    os.utime(interrupted, (time.time() - 86400, time.time() - 86400))
    loading = cache / ".load-now"  # one in progress right now: kept
    loading.mkdir()
    # A qemu machine whose overlay is backed by the older image.
    pm.ok("create", "-d", "none", "--url", "tcp://127.0.0.1:1", "vm1")
    config = pm.store / "machines" / "vm1" / "config.json"
    data = json.loads(config.read_text())
    data["Driver"]["BaseDisk"] = str(used / images.DISK_NAME)
    config.write_text(json.dumps(data))

    before = pm.ok("image", "ls").stdout
    assert "0000000000000001" in before and "0000000000000002" in before
    res = pm.ok("image", "prune")
    assert sorted(res.stdout.splitlines()) == sorted([f"Removed {unused}", f"Removed {crashed}",
                                                      f"Removed {interrupted}"])
    assert not unused.exists() and not crashed.exists() and not interrupted.exists() and loading.is_dir()
    assert used.is_dir() and current.directory.is_dir()
    assert pm.ok("image", "prune").stdout == ""  # nothing more to do
    after = pm.ok("image", "ls").stdout
    assert "0000000000000001" not in after and "0000000000000002" in after
    current_row = next(line for line in after.splitlines() if line.startswith(current.recipe))
    assert current_row.rstrip().endswith("*")


def test_failed_export_leaves_no_partial_file(pm: PyMachine, tmp_path: Path) -> None:
    """qemu-img dying midway (disk full, killed) leaves neither the export nor its partial file."""
    info = make_fake_image(pm.store)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "qemu-img"
    fake.write_text('#!/bin/sh\nfor a; do last="$a"; done\nhead -c 1048576 /dev/zero > "$last"\n'
                    'echo "qemu-img: error while writing: No space left on device" >&2\nexit 1\n')
    fake.chmod(0o755)
    res = pm("image", "export", "vdi", env={"PATH": f"{bin_dir}{os.pathsep}{pm.env['PATH']}"})
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1].startswith("qemu-img convert to vdi failed (exit 1): qemu-img: error")
    assert sorted(p.name for p in info.directory.iterdir()) == ["disk.qcow2", "initrd.img", "manifest.json",
                                                                  "vmlinuz"]


def test_prune_sees_a_machine_that_names_the_image_by_its_real_path(pm: PyMachine, tmp_path: Path) -> None:
    """The store reached through a symlink this time, by its real path when the machine was made."""
    current = make_fake_image(pm.store)
    used = _old_image(current.directory.parent, "0000000000000004")
    pm.ok("create", "-d", "none", "--url", "tcp://127.0.0.1:1", "vm1")
    config = pm.store / "machines" / "vm1" / "config.json"
    data = json.loads(config.read_text())
    data["Driver"]["BaseDisk"] = os.path.realpath(used / images.DISK_NAME)
    config.write_text(json.dumps(data))
    alias = tmp_path / "alias"
    alias.symlink_to(pm.store)
    assert pm.ok("image", "prune", env={"MACHINE_STORAGE_PATH": str(alias)}).stdout == ""
    assert used.is_dir()


def test_each_arch_has_its_own_current_image_and_ls_shows_the_arch(pm: PyMachine) -> None:
    amd64 = make_fake_image(pm.store, arch="amd64")
    arm64 = make_fake_image(pm.store, arch="arm64")
    assert amd64.directory != arm64.directory and (amd64.arch, arm64.arch) == ("amd64", "arm64")
    old = _old_image(amd64.directory.parent, "0000000000000005")  # a bookworm-era image: no arch recorded
    rows = {line.split()[0]: line.split() for line in pm.ok("image", "ls").stdout.splitlines()[1:]}
    assert rows[amd64.recipe][1] == "amd64" and rows[amd64.recipe][-1] == "*"
    assert rows[arm64.recipe][1] == "arm64" and rows[arm64.recipe][-1] == "*"
    assert rows["0000000000000005"][1] == "amd64" and rows["0000000000000005"][-1] != "*"
    listed = {r["Recipe"]: r for r in json.loads(pm.ok("image", "ls", "--format", "json").stdout)}
    assert listed[arm64.recipe]["Arch"] == "arm64" and listed[arm64.recipe]["Current"] is True
    assert listed["0000000000000005"]["Current"] is False
    assert listed[amd64.recipe]["Directory"] == str(amd64.directory)
    table = pm.ok("image", "ls", "--format", "table {{.Arch}}\t{{.Current}}").stdout.splitlines()
    assert table[0].split() == ["ARCH", "CURRENT"] and sorted(table[1:])[0].split()[0] == "amd64"
    assert pm("image", "prune", "--format", "json").returncode == 1
    path = Path(pm.ok("image", "export", "raw", "--arch", "arm64").stdout.strip())
    assert path == arm64.exported("raw") and not amd64.exported("raw").exists()
    # Prune keeps both arches' current images and removes the older recipe nobody uses.
    assert pm.ok("image", "prune").stdout.strip() == f"Removed {old}"
    assert amd64.directory.is_dir() and arm64.directory.is_dir()
