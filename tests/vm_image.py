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

from pymachine.engine.images import ImageInfo, build_image, find_image, prune_images, why_not_buildable


def cache_dir() -> Path:
    return Path(os.environ.get("PYMACHINE_TEST_CACHE", "/var/tmp/pymachine-test-cache")) / "vm-images"


def missing_prerequisites() -> str | None:
    """Why the image cannot be built or booted here, or None."""
    if find_image(cache_dir()) is None:
        reason = why_not_buildable()
        if reason:
            return f"the VM image is not cached and {reason}"
    for tool in ("qemu-img", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def cached_image() -> ImageInfo:
    """The image for the current recipe: reused if cached, else built (progress on stderr).

    Images of older recipes are pruned (no test machine outlives its test), so
    the cache holds one image and its exports, not one per recipe change.
    """
    def log(message: str) -> None:
        print(f"[vm-image] {message}", file=sys.stderr, flush=True)

    info = build_image(cache_dir(), log)
    for path in prune_images(cache_dir(), lambda _: False, log):
        log(f"pruned {path}")
    return info
