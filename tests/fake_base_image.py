"""A tiny stand-in for pymachine's base image, for driver tests that must not build the real one.

The real image takes minutes to build (debootstrap, root); the drivers only
need what ``engine.images.find_image`` accepts: ``<cache>/<recipe_hash()>/``
with ``manifest.json``, ``disk.qcow2``, ``vmlinuz`` and ``initrd.img``.  The
disk is a real qcow2 (marker sectors at both ends) made by ``qemu-img``, so ``export_image`` really
converts it to VDI/VMDK/raw and the drivers handle real files of those formats.
Whether the real disk boots is the VM tier's job (tests/vm/test_bootable_image.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from pymachine.engine import images

#: Small, so conversions and vSphere uploads stay quick; a whole number of MB.
DEFAULT_SIZE_MB = 64
#: Written at the start and the end of the fake disk: a copy that lost or moved data differs.
MARKER = b"pymachine fake base image\n".ljust(512, b"\x5a")


def qemu_img_available() -> bool:
    return shutil.which("qemu-img") is not None


def make_fake_image(store: str | os.PathLike[str], size_mb: int = DEFAULT_SIZE_MB,
                    arch: str | None = None) -> images.ImageInfo:
    """Put a fake current-recipe image for ``arch`` (default: the host's) into ``store``'s own
    image directory (``<store>/cache/images``, which the store still reads before the user's
    cache was shared) and return it as found there."""
    arch = images.check_arch(arch)
    directory = images.store_cache_dir(store) / images.recipe_hash(arch)
    directory.mkdir(parents=True, exist_ok=True)
    raw = directory / "disk.raw.tmp"
    with open(raw, "wb") as fh:  # sparse, with marker sectors so copies can be compared to the image
        fh.truncate(size_mb << 20)
        fh.write(MARKER)
        fh.seek((size_mb << 20) - len(MARKER))
        fh.write(MARKER)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(directory / images.DISK_NAME)],
                   check=True, capture_output=True, timeout=60)
    raw.unlink()
    (directory / images.KERNEL_NAME).write_bytes(b"fake kernel\n")
    (directory / images.INITRD_NAME).write_bytes(b"fake initrd\n")
    manifest = {"recipe": images.recipe_hash(arch), "arch": arch, "virtual_size": size_mb << 20, "fake": True}
    (directory / images.MANIFEST_NAME).write_text(json.dumps(manifest) + "\n")
    found = images.find_image(images.store_cache_dir(store), arch)
    assert found is not None, f"find_image does not accept the fake image in {directory}"
    return found


def qemu_img_info(path: str | os.PathLike[str]) -> dict:
    """``qemu-img info`` of a disk file, as JSON (format, virtual-size, create-type...)."""
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True,
                         text=True, timeout=60).stdout
    return json.loads(out)


def path_without_debootstrap(*front: str | os.PathLike[str]) -> str:
    """A PATH (``front`` dirs first, then /usr/bin:/bin) on which the image cannot be built:
    debootstrap, mke2fs and sfdisk live in /usr/sbin."""
    return os.pathsep.join([*(str(p) for p in front), "/usr/bin", "/bin"])


def user_image_dir(store: str | os.PathLike[str]) -> Path:
    """The image directory of the user's cache as the ``pm`` fixture's pymachine sees it (its
    HOME is ``<store>/../home``; tests/conftest.py clears XDG_CACHE_HOME and PYMACHINE_CACHE_DIR)."""
    from pymachine.machine.cachedir import user_cache_dir

    return user_cache_dir(environ={}, platform="linux", home=Path(store).parent / "home") / "images"


def assert_no_image_built(store: str | os.PathLike[str]) -> None:
    """Nothing (not even a build lock or a half-built tree) was made in the store's image
    directory or in the user's shared cache."""
    for cache in (images.store_cache_dir(store), user_image_dir(store)):
        assert not cache.exists() or not any(cache.iterdir()), sorted(p.name for p in cache.iterdir())
