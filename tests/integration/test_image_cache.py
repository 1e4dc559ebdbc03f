"""One image cache per user, shared by every store, through the installed ``pymachine`` command.

The real build takes minutes as root (debootstrap); here each ``pymachine`` process
gets a fake builder in place of ``engine.images._build_into`` (a ``sitecustomize``
on its PYTHONPATH, loaded by Python at start-up before the CLI): it counts its
calls in a file, takes a while, and leaves a complete image directory the way the
real one does (built in the temp dir, renamed into place).  Everything around it
(where the cache is, the lock, the stores' record, prune) is the real code.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from pymachine.engine import images

from tests.conftest import PYMACHINE, PyMachine
from tests.fake_base_image import make_fake_image, qemu_img_available

pytestmark = pytest.mark.integration

FAKE_BUILDER = textwrap.dedent('''
    """Test stand-in for the image build (tests/integration/test_image_cache.py)."""
    import json, os, time
    from pymachine.engine import images

    def _fake_build_into(work, final, key, log, arch):
        with open(os.environ["FAKE_BUILD_COUNT"], "a") as fh:
            fh.write(f"{os.getpid()}\\n")
        log("(image) fake build...")
        time.sleep(float(os.environ.get("FAKE_BUILD_SECONDS", "3")))
        out = work / "image"
        out.mkdir()
        for name in (images.DISK_NAME, images.KERNEL_NAME, images.INITRD_NAME):
            (out / name).write_bytes(b"fake\\n")
        (out / images.MANIFEST_NAME).write_text(json.dumps({"recipe": key, "arch": arch, "fake": True}))
        os.rename(out, final)
        return images._read_manifest(final)

    images._build_into = _fake_build_into
''')


def _user(root: Path, home: Path, builder: Path | None = None) -> PyMachine:
    """A pymachine with its own store (``root/store``) for the user whose home is ``home``."""
    root.mkdir(parents=True, exist_ok=True)
    pm = PyMachine(root)
    pm.env["HOME"] = str(home)
    if builder is not None:
        pm.env.update(PYTHONPATH=str(builder), FAKE_BUILD_COUNT=str(builder / "count"))
    return pm


@pytest.fixture
def builder(tmp_path: Path) -> Path:
    path = tmp_path / "fake-builder"
    path.mkdir()
    (path / "sitecustomize.py").write_text(FAKE_BUILDER)
    (path / "count").write_text("")
    return path


def _builds(builder: Path) -> int:
    return len((builder / "count").read_text().split())


def _shared(home: Path) -> Path:
    """The user's image directory on Linux when neither XDG_CACHE_HOME nor PYMACHINE_CACHE_DIR is set."""
    return home / ".cache" / "pymachine" / "images"


@pytest.mark.skipif(os.geteuid() != 0, reason="image build (even the fake one) is refused to non-root here")
def test_two_stores_building_at_once_build_once_and_share_the_image(tmp_path: Path, builder: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    one, two = _user(tmp_path / "one", home, builder), _user(tmp_path / "two", home, builder)
    procs = [subprocess.Popen([PYMACHINE, "image", "build"], env=pm.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for pm in (one, two)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert _builds(builder) == 1  # the second waited on the shared build lock, then found the image
    assert any("Another process is building this image; waiting for it..." in err for _out, err in outs), outs
    expected = _shared(home) / images.recipe_hash()
    assert [out.splitlines()[0] for out, _err in outs] == [str(expected)] * 2
    assert not (one.store / "cache").exists() and not (two.store / "cache").exists()  # no per-store copy
    assert not list(_shared(home).glob(".build-*"))

    # a third store of the same user finds it at once: no build, "(cached)"
    three = _user(tmp_path / "three", home, builder)
    res = three.ok("image", "build")
    assert res.stdout.splitlines()[0] == str(expected) and res.stdout.rstrip().endswith("(cached)")
    assert _builds(builder) == 1
    ls = three.ok("image", "ls")
    assert f"Image cache: {_shared(home)}" in ls.stderr
    assert ls.stdout.splitlines()[1].split()[0] == images.recipe_hash()
    assert json.loads(three.ok("image", "ls", "--format", "json").stdout)[0]["Directory"] == str(expected)

    # PYMACHINE_CACHE_DIR moves the cache: nothing there yet, so that user builds again
    moved = tmp_path / "big-disk"
    res = three.ok("image", "build", env={"PYMACHINE_CACHE_DIR": str(moved)})
    assert res.stdout.splitlines()[0] == str(moved / "images" / images.recipe_hash())
    assert _builds(builder) == 2


@pytest.mark.skipif(not qemu_img_available(), reason="qemu-img not installed")
def test_an_image_in_a_stores_own_cache_is_still_found_in_place(tmp_path: Path, builder: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    old = _user(tmp_path / "old", home, builder)
    info = make_fake_image(old.store)  # where images lived before (and where the installers seed them)
    res = old.ok("image", "build")
    assert res.stdout.splitlines()[0] == str(info.directory) and res.stdout.rstrip().endswith("(cached)")
    assert _builds(builder) == 0 and not _shared(home).exists()  # read in place, not copied or moved
    ls = old.ok("image", "ls")
    assert f"(also read: {info.directory.parent})" in ls.stderr
    assert Path(old.ok("image", "export", "vdi").stdout.strip()) == info.exported("vdi")  # beside it


def _image(cache: Path, recipe: str) -> Path:
    directory = cache / recipe
    directory.mkdir(parents=True)
    for name in (images.DISK_NAME, images.KERNEL_NAME, images.INITRD_NAME):
        (directory / name).write_bytes(b"img\n")
    (directory / images.MANIFEST_NAME).write_text(json.dumps({"recipe": recipe}) + "\n")
    return directory


def test_prune_considers_every_store_and_names_those_it_could_not_see(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    here, other, broken, gone = (_user(tmp_path / n, home) for n in ("here", "other", "broken", "gone"))
    shared = _shared(home)
    current = _image(shared, images.recipe_hash())
    for pm in (here, other, broken, gone):
        assert pm.ok("image", "build").stdout.rstrip().endswith("(cached)")  # each store takes the image once
    used_elsewhere = _image(shared, "00000000000000b1")
    unused = _image(shared, "00000000000000b2")
    # a qemu machine of the *other* store whose overlay is backed by the older image
    other.ok("create", "-d", "none", "--url", "tcp://127.0.0.1:1", "vm1")
    config = other.store / "machines" / "vm1" / "config.json"
    data = json.loads(config.read_text())
    data["Driver"]["BaseDisk"] = str(used_elsewhere / images.DISK_NAME)
    config.write_text(json.dumps(data))
    (broken.store / "machines").mkdir(parents=True)
    (broken.store / "machines").rmdir()
    (broken.store / "machines").write_text("")  # unreadable as a store, even to root
    subprocess.run(["rm", "-rf", str(gone.store)], check=True, timeout=30)

    res = here.ok("image", "prune")
    assert res.stdout == ""  # a store not seen might use any image: none removed
    lines = res.stderr.splitlines()
    assert f"Forgot the store {gone.store}: it no longer exists" in lines
    assert any(line.startswith(f"Could not see the machines of the store {broken.store} (")
               and line.endswith("keeping every image it might use") for line in lines), lines
    assert used_elsewhere.is_dir() and unused.is_dir() and current.is_dir()

    (broken.store / "machines").unlink()
    res = here.ok("image", "prune")
    assert res.stdout.splitlines() == [f"Removed {unused}"] and res.stderr == ""
    assert used_elsewhere.is_dir() and current.is_dir() and not unused.exists()
    stores = json.loads((shared.parent / "stores.json").read_text())["stores"]
    assert stores == [str(here.store), str(other.store), str(broken.store)]


def test_listing_or_a_failed_command_leaves_the_users_cache_untouched(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    pm = _user(tmp_path / "one", home)
    assert pm.ok("image", "ls").stdout.splitlines()[1:] == []
    res = pm("image", "export", "vdi")
    assert res.returncode == 1 and "not built yet" in res.stderr
    assert not (home / ".cache").exists() and not pm.store.exists()
