"""``pymachine image pack|load``: the reproducible image archive the installers ship, and its checks.

The image is the tiny stand-in of tests/fake_base_image.py (a real qcow2,
really converted to VDI by qemu-img); the archive and every refusal go
through the installed command, as a user would see them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from pymachine.engine import image_pack, images

from tests.conftest import PYMACHINE, PyMachine
from tests.fake_base_image import make_fake_image, qemu_img_available, user_image_dir

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not qemu_img_available(), reason="qemu-img not installed")]


def _other(root: Path) -> PyMachine:
    """Another user's pymachine: its own (not yet existing) store and home."""
    root.mkdir(parents=True, exist_ok=True)
    return PyMachine(root)


def _tree(path: Path) -> list[tuple[str, int, int]]:
    """Every path under ``path``, with size and mtime for files: what 'untouched' is compared on
    (a directory's mtime moves when the load's temp dir comes and goes)."""
    if not path.exists():
        return []
    return sorted((str(p.relative_to(path)), p.lstat().st_size if p.is_file() else 0,
                   p.lstat().st_mtime_ns if p.is_file() else 0) for p in path.rglob("*"))


def _members(tar: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(tar) as tf:
        return [(m, tf.extractfile(m).read() if m.isfile() else None) for m in tf.getmembers()]  # type: ignore[union-attr]


def _write_tar(out: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(out, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return out


@pytest.fixture
def packed(pm: PyMachine, tmp_path: Path) -> tuple[Path, images.ImageInfo]:
    """(archive, source image): the fake image packed with its VDI by ``pymachine image pack``."""
    info = make_fake_image(pm.store)
    res = pm.ok("image", "pack", "-o", str(tmp_path / "image.tar.gz"))
    path = Path(res.stdout.strip())
    assert path.is_file()
    return path, info


def test_pack_then_load_into_a_fresh_store_is_current_and_exports_without_qemu_img(
        pm: PyMachine, tmp_path: Path) -> None:
    source = make_fake_image(pm.store)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = subprocess.run([PYMACHINE, "image", "pack"], cwd=cwd, env=pm.env, capture_output=True, text=True,
                          timeout=120, check=False)  # default: the VDI, named by recipe, in the cwd
    assert proc.returncode == 0, proc.stderr
    archive = Path(proc.stdout.strip())
    assert archive.parent == cwd
    recipe = images.recipe_hash()
    assert archive.name == f"pymachine-image-{recipe}.tar.gz"
    with tarfile.open(archive) as tf:
        names = tf.getnames()
    assert names == [recipe, f"{recipe}/SHA256SUMS", *(f"{recipe}/{n}" for n in sorted(
        ["disk.qcow2", "disk.vdi", "initrd.img", "manifest.json", "vmlinuz"]))]

    fresh = _other(tmp_path / "other")
    loaded = Path(fresh.ok("image", "load", str(archive)).stdout.strip())
    assert loaded == user_image_dir(fresh.store) / recipe  # loads go to the user's shared cache
    found = images.find_image(user_image_dir(fresh.store))
    assert found is not None and found.directory == loaded
    for name in ("disk.qcow2", "disk.vdi", "vmlinuz", "initrd.img", "manifest.json"):
        assert (loaded / name).read_bytes() == (source.directory / name).read_bytes(), name
    ls = fresh.ok("image", "ls").stdout.splitlines()
    assert len(ls) == 2 and ls[1].split()[0] == recipe and ls[1].rstrip().endswith("*")

    no_qemu = tmp_path / "emptybin"
    no_qemu.mkdir()
    assert shutil.which("qemu-img", path=str(no_qemu)) is None
    vdi_mtime = (loaded / "disk.vdi").stat().st_mtime_ns
    exported = fresh.ok("image", "export", "vdi", env={"PATH": str(no_qemu)})
    assert Path(exported.stdout.strip()) == loaded / "disk.vdi"
    assert (loaded / "disk.vdi").stat().st_mtime_ns == vdi_mtime  # the shipped file, not a new conversion
    # ...while a format that was not shipped does need qemu-img: proof the PATH really lacks it
    vmdk = fresh("image", "export", "vmdk", env={"PATH": str(no_qemu)})
    assert vmdk.returncode == 1 and "needs qemu-img" in vmdk.stderr

    # loading the same archive again keeps the image as it is
    again = fresh.ok("image", "load", str(archive))
    assert Path(again.stdout.strip()) == loaded and (loaded / "disk.vdi").stat().st_mtime_ns == vdi_mtime


def test_two_packs_are_byte_identical_even_from_another_store(pm: PyMachine, tmp_path: Path) -> None:
    make_fake_image(pm.store)
    one = Path(pm.ok("image", "pack", "--formats", "vdi,vmdk", "-o", str(tmp_path / "one.tar.gz")).stdout.strip())
    two = Path(pm.ok("image", "pack", "--formats", "vmdk,vdi", "-o", str(tmp_path / "two.tar.gz")).stdout.strip())
    assert one.read_bytes() == two.read_bytes()
    other = _other(tmp_path / "o")
    other.ok("image", "load", str(one))
    (tmp_path / "dir").mkdir()
    three = Path(other.ok("image", "pack", "--formats", "vdi,vmdk", "-o", str(tmp_path / "dir")).stdout.strip())
    assert three.parent == tmp_path / "dir" and three.read_bytes() == one.read_bytes()
    with tarfile.open(one) as tf:
        epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "").strip() or 1700000000)  # as the installer's archives
        assert {(m.uid, m.gid, m.mtime) for m in tf.getmembers()} == {(0, 0, epoch)}
    qcow_only = Path(pm.ok("image", "pack", "--formats", "none", "-o", str(tmp_path / "q.tar.gz")).stdout.strip())
    with tarfile.open(qcow_only) as tf:
        assert not [n for n in tf.getnames() if n.endswith((".vdi", ".vmdk", ".raw"))]
    assert not list(tmp_path.glob(".*partial"))


def _refused(pm: PyMachine, archive: Path, *needles: str) -> None:
    """``image load`` of ``archive`` fails with one line naming ``needles`` and leaves the store as it was."""
    before = _tree(pm.store)
    res = pm("image", "load", str(archive))
    assert res.returncode == 1, res.stdout
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    for needle in needles:
        assert needle in res.stderr, res.stderr
    assert _tree(pm.store) == before
    assert res.stdout == ""


def test_tampered_member_is_refused_naming_both_digests(packed, tmp_path: Path) -> None:
    archive, _info = packed
    fresh = _other(tmp_path / "fresh")
    members = _members(archive)
    for info, data in members:
        if info.name.endswith("/disk.vdi"):
            expected = hashlib.sha256(data).hexdigest()  # type: ignore[arg-type]
            bad = bytearray(data)  # type: ignore[arg-type]
            bad[len(bad) // 2] ^= 0x01
            members[members.index((info, data))] = (info, bytes(bad))
            actual = hashlib.sha256(bytes(bad)).hexdigest()
    tampered = _write_tar(tmp_path / "tampered.tar.gz", members)
    _refused(fresh, tampered, "disk.vdi", expected, actual)
    assert not fresh.store.exists()  # a fresh store stays absent: not even cache/images was left

    # the same into a store that already has other content: still untouched
    make_fake_image(fresh.store)
    shutil.rmtree(images.store_cache_dir(fresh.store) / images.recipe_hash())
    _refused(fresh, tampered, expected, actual)


@pytest.mark.parametrize("case", ["parent", "absolute", "nested-escape", "symlink", "hardlink", "second-dir",
                                  "unlisted", "missing", "no-sums", "manifest-recipe"])
def test_unsafe_or_inconsistent_archives_are_refused(packed, tmp_path: Path, case: str) -> None:
    archive, _info = packed
    fresh = _other(tmp_path / "fresh")
    fresh.ok("create", "-d", "none", "--url", "tcp://127.0.0.1:1", "keep")  # a store with content
    members = _members(archive)
    recipe = members[0][0].name.rstrip("/")
    extra = tarfile.TarInfo()
    needle = ""
    if case == "parent":
        extra.name, needle = "../evil", "unsafe path"
    elif case == "absolute":
        extra.name, needle = "/tmp/pymachine-evil", "unsafe path"
    elif case == "nested-escape":
        extra.name, needle = f"{recipe}/../../evil", "unsafe path"
    elif case == "symlink":
        extra.name, extra.type, extra.linkname, needle = f"{recipe}/evil", tarfile.SYMTYPE, "/etc/passwd", "link"
    elif case == "hardlink":
        extra.name, extra.type, extra.linkname, needle = f"{recipe}/evil", tarfile.LNKTYPE, f"{recipe}/vmlinuz", "link"
    elif case == "second-dir":
        extra.name, needle = "0123456789abcdef/x", "outside the image directory"
    elif case == "unlisted":
        extra.name, needle = f"{recipe}/extra.bin", "not listed in SHA256SUMS"
    if case in ("missing", "no-sums", "manifest-recipe"):
        if case == "missing":
            members = [(i, d) for i, d in members if not i.name.endswith("/initrd.img")]
            needle = "initrd.img is listed in SHA256SUMS but missing"
        elif case == "no-sums":
            members = [(i, d) for i, d in members if not i.name.endswith("/SHA256SUMS")]
            needle = "has no"
        else:
            fixed = []
            for info, data in members:
                if info.name.endswith("/manifest.json"):
                    data = json.dumps({"recipe": "0000000000000000"}).encode()
                elif info.name.endswith("/SHA256SUMS"):
                    digest = None
                    for i2, d2 in members:
                        if i2.name.endswith("/manifest.json"):
                            digest = hashlib.sha256(d2).hexdigest()  # type: ignore[arg-type]
                    new = hashlib.sha256(json.dumps({"recipe": "0000000000000000"}).encode()).hexdigest()
                    data = data.replace(digest.encode(), new.encode())  # type: ignore[union-attr]
                fixed.append((info, data))
            members, needle = fixed, "manifest's recipe does not match"
    else:
        members.insert(2, (extra, b"evil\n" if extra.type == tarfile.REGTYPE else None))
    bad = _write_tar(tmp_path / f"{case}.tar.gz", members)
    _refused(fresh, bad, needle)
    assert not Path("/tmp/pymachine-evil").exists() and not (tmp_path / "evil").exists()


def test_corrupt_or_missing_archive_and_bad_pack_arguments(packed, pm: PyMachine, tmp_path: Path) -> None:
    archive, _info = packed
    fresh = _other(tmp_path / "fresh")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    _refused(fresh, truncated, "truncated.tar.gz")
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"this is not an archive\n" * 10)
    _refused(fresh, garbage, "not a readable image archive")
    _refused(fresh, tmp_path / "nope.tar.gz", "no such file")
    assert not fresh.store.exists()

    for args, message in [
        (("image", "load"), "pymachine image load needs one file: pymachine image load FILE"),
        (
            ("image", "pack", "--formats", "qcow3"),
            "unknown image format 'qcow3' in --formats: use vmdk,vdi,raw,vhdx or none",
        ),
        (("image", "ls", "-o", "x"), "-o/--output and --formats go with `pymachine image pack` only"),
    ]:
        res = pm(*args)
        assert res.returncode == 1 and res.stderr.strip() == message, res.stderr
    empty = _other(tmp_path / "empty")
    res = empty("image", "pack", "-o", str(tmp_path / "none.tar.gz"))
    assert res.returncode == 1 and "not built yet" in res.stderr and not (tmp_path / "none.tar.gz").exists()


def test_an_image_of_another_recipe_loads_with_a_note_and_is_not_current(pm: PyMachine, tmp_path: Path) -> None:
    info = make_fake_image(pm.store)
    old = tmp_path / "c" / "00000000000000aa"
    shutil.copytree(info.directory, old)
    (old / images.MANIFEST_NAME).write_text(json.dumps({"recipe": old.name}) + "\n")
    out = image_pack.pack_image(images.ImageInfo(old, {"recipe": old.name}), tmp_path / "old.tar.gz", [],
                                lambda _m: None)
    fresh = _other(tmp_path / "fresh")
    res = fresh.ok("image", "load", str(out))
    assert Path(res.stdout.strip()) == user_image_dir(fresh.store) / old.name
    assert "is not this pymachine's" in res.stderr and "--virtualbox-boot2docker-url" in res.stderr
    assert images.find_image(user_image_dir(fresh.store)) is None
    ls = fresh.ok("image", "ls").stdout.splitlines()
    assert ls[1].split()[0] == old.name and not ls[1].rstrip().endswith("*")
    assert os.access(user_image_dir(fresh.store) / old.name / "disk.qcow2", os.R_OK)


def test_archive_unpacking_past_the_size_limit_is_refused(packed, tmp_path: Path) -> None:
    """An archive that expands beyond the limit stops being written there (not at the end)."""
    archive, _info = packed
    fresh = _other(tmp_path / "fresh")
    fresh.env["PYMACHINE_IMAGE_LOAD_MAX_BYTES"] = str(1 << 20)  # the stand-in unpacks to more than 1 MiB
    _refused(fresh, archive, "unpacks to more than the PYMACHINE_IMAGE_LOAD_MAX_BYTES limit of 1048576 bytes")
    assert not fresh.store.exists()
    fresh.env["PYMACHINE_IMAGE_LOAD_MAX_BYTES"] = str(1 << 30)
    assert fresh.ok("image", "load", str(archive)).stdout.strip()
