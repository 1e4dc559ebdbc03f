"""pymachine's base VM image for tests, cached across runs by its recipe hash.

Building takes minutes (debootstrap + apt + qcow2), so tests reuse the image
under ``$PYMACHINE_TEST_CACHE/vm-images/<recipe hash>/`` (default
``/var/tmp/pymachine-test-cache``): CI rebuilds only when the recipe in
``engine/images.py`` changes, and a missing cache rebuilds instead of failing.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from pymachine.engine.images import ImageInfo, build_image, find_image, host_arch, prune_images, why_not_buildable


def cache_dir() -> Path:
    return Path(os.environ.get("PYMACHINE_TEST_CACHE", "/var/tmp/pymachine-test-cache")) / "vm-images"


QEMU_BINARY = {"amd64": "qemu-system-x86_64", "arm64": "qemu-system-aarch64"}


def missing_prerequisites(arch: str | None = None) -> str | None:
    """Why the ``arch`` image (default: the host's) cannot be built or booted here, or None."""
    arch = arch or host_arch()
    if find_image(cache_dir(), arch) is None:
        reason = why_not_buildable(arch)
        if reason:
            return f"the {arch} VM image is not cached and {reason}"
    for tool in ("qemu-img", QEMU_BINARY[arch]):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def cached_image(arch: str | None = None) -> ImageInfo:
    """The ``arch`` image for the current recipe: reused if cached, else built (progress on stderr).

    Images of older recipes are pruned (no test machine outlives its test), so
    the cache holds one image and its exports, not one per recipe change.
    """
    def log(message: str) -> None:
        print(f"[vm-image] {message}", file=sys.stderr, flush=True)

    info = build_image(cache_dir(), log, arch)
    for path in prune_images(cache_dir(), lambda _: False, log):
        log(f"pruned {path}")
    return info
