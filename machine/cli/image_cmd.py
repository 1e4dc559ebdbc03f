"""``pymachine image build|ls|prune|export|pack|load``: pymachine's own base VM image.

``build`` makes (or finds) the cached image for the current recipe and prints
where it is (``--arch amd64|arm64``, default the host's; arm64 builds on an
x86_64 host through qemu-user-static); ``ls`` lists cached images with their arch; ``prune`` removes images that are
neither the current recipe's nor used by a machine; ``export FORMAT`` prints the path of
the image's bootable disk converted to vmdk, vdi, raw or vhdx (converted once and
cached), for hypervisors other than QEMU.  ``pack`` writes the current
image (with its VDI export by default) as one reproducible .tar.gz and
``load FILE`` verifies such a file and puts it in the cache: that is how
hosts that cannot build the image (Windows, macOS) get it, and what the
installers ship.  All use the user's image cache (machine/cachedir.py; shared
by every store, ``PYMACHINE_CACHE_DIR`` moves it), then the store's own older
``cache/images``; ``ls`` says where they are on stderr.  ``prune`` keeps images
a machine of any store that used the cache names, and says which stores it could not read.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from pymachine.machine.cli.common import Context, UsageError, parse, parser

if TYPE_CHECKING:  # the image modules load only for the image commands
    from pymachine.engine.images import ImageCache, ImageInfo

USAGE = ("build [--arch amd64|arm64] | ls | prune | export vmdk|vdi|raw|vhdx [--arch A] | "
         "pack [-o FILE] [--formats vdi,vmdk] [--arch A] | load FILE")


def _summary(info: ImageInfo) -> str:
    m = info.manifest
    size_mb = int(m.get("disk_bytes", 0)) / 1e6
    return (f"{info.recipe}  {info.arch}  {m.get('suite', '')}  kernel {m.get('kernel_version', '')}  "
            f"engine {m.get('engine_version', '')}  {size_mb:.0f} MB  built {m.get('built_at', '')}")


def _stderr_log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _formats(value: str | None) -> list[str]:
    """``--formats vdi,vmdk`` (``none`` or empty: the qcow2 disk only); default what the installers ship."""
    from pymachine.engine import image_pack, images

    if value is None:
        return list(image_pack.DEFAULT_FORMATS)
    names = [f.strip() for f in value.split(",") if f.strip() and f.strip() != "none"]
    bad = [f for f in names if f not in images.EXPORT_FORMATS]
    if bad:
        raise UsageError(f"unknown image format {bad[0]!r} in --formats: use {','.join(images.EXPORT_FORMATS)} or none")
    return names


def _pack(ctx: Context, cache: ImageCache, output: str | None, formats: str | None, arch: str | None) -> int:
    import os
    from pathlib import Path

    from pymachine.engine import image_pack, images

    wanted = _formats(formats)
    info = images.find_image(cache, arch)
    if info is None:
        raise UsageError(
            f"pymachine's {images.check_arch(arch)} base image is not built yet: run `pymachine image build` "
            "(or `pymachine image load FILE`) first"
        )
    out = Path(output) if output else Path.cwd() / image_pack.default_name(info.recipe)
    if out.is_dir():
        out = out / image_pack.default_name(info.recipe)
    ctx.out(str(Path(os.path.abspath(image_pack.pack_image(info, out, wanted, _stderr_log)))))
    return 0


def _load(ctx: Context, cache: ImageCache, rest: list[str]) -> int:
    from pathlib import Path

    from pymachine.engine import image_pack, images

    if len(rest) != 1:
        raise UsageError("pymachine image load needs one file: pymachine image load FILE")
    info = image_pack.unpack_image(Path(rest[0]), cache.directory, _stderr_log)
    current = images.recipe_hash(info.arch)
    if info.directory.name != current:
        _stderr_log(f"Note: this {info.arch} image's recipe {info.directory.name} is not this pymachine's ({current}): "
                    "drivers will not pick it by default; pass its disk by path (e.g. "
                    "--virtualbox-boot2docker-url DIR/disk.vdi), or load the image made for this version")
    ctx.out(str(info.directory))
    return 0


IMAGE_HEADERS = {"Recipe": "RECIPE", "Arch": "ARCH", "Suite": "SUITE", "Kernel": "KERNEL", "Engine": "ENGINE",
                 "DiskBytes": "SIZE", "Built": "BUILT", "Current": "CURRENT", "Directory": "DIRECTORY"}


def _image_record(info: ImageInfo, current: bool) -> dict[str, object]:
    """One cached image for ``image ls --format``: the table's columns, sizes in bytes."""
    m = info.manifest
    return {"Recipe": info.recipe, "Arch": info.arch, "Suite": str(m.get("suite", "")),
            "Kernel": str(m.get("kernel_version", "")), "Engine": str(m.get("engine_version", "")),
            "DiskBytes": int(m.get("disk_bytes", 0)), "Built": str(m.get("built_at", "")), "Current": current,
            "Directory": str(info.directory)}


def cmd_image(ctx: Context, args: list[str]) -> int:
    from pymachine.engine import images

    p = parser("image", "Build and list pymachine base VM images.", USAGE)
    p.add_argument("action", nargs="?", choices=["build", "ls", "prune", "export", "pack", "load"])
    p.add_argument("-o", "--output", default=None, help="pack: the file (or directory) to write")
    p.add_argument("--formats", default=None, help="pack: exports to include, e.g. vdi,vmdk (default vdi; none)")
    p.add_argument("--arch", default=None, help="build, export, pack: amd64 or arm64 (default: this host's)")
    p.add_argument("--format", "-f", default="", help="ls: 'json', or a Go template (prefix 'table' for headers)")
    ns = parse(p, args)
    if ns.format and ns.action != "ls":
        raise UsageError("--format goes with `pymachine image ls` only")
    if not ns.action:
        raise UsageError(f"pymachine image needs a subcommand: {USAGE}")
    if ns.action != "pack" and (ns.output is not None or ns.formats is not None):
        raise UsageError("-o/--output and --formats go with `pymachine image pack` only")
    if ns.arch is not None:
        if ns.action not in ("build", "export", "pack"):
            raise UsageError("--arch goes with `pymachine image build`, `export` and `pack` only")
        if ns.arch not in images.ARCHES:
            raise UsageError(f"unknown architecture {ns.arch!r} for --arch: use one of {', '.join(images.ARCHES)}")
    cache = images.default_cache_dir(ctx.store.path)
    if ns.action == "load":
        return _load(ctx, cache, ns.rest)
    if ns.action == "export":
        if len(ns.rest) != 1 or ns.rest[0] not in images.EXPORT_FORMATS:
            raise UsageError(f"pymachine image export needs one format: {' | '.join(images.EXPORT_FORMATS)}")
        info = images.find_image(cache, ns.arch)
        if info is None:
            flag = f" --arch {ns.arch}" if ns.arch else ""
            raise UsageError(f"pymachine's {images.check_arch(ns.arch)} base image is not built yet: "
                             f"run `pymachine image build{flag}` first")
        ctx.out(str(images.export_image(info, ns.rest[0], _stderr_log)))
        return 0
    if ns.rest:
        raise UsageError(f"Invalid command line. Found extra arguments {ns.rest}")
    if ns.action == "pack":
        return _pack(ctx, cache, ns.output, ns.formats, ns.arch)
    if ns.action == "prune":
        from pymachine.machine.cachedir import user_cache_dir
        from pymachine.machine.cacheusers import store_usage

        usage = store_usage(user_cache_dir(), ctx.store.path)
        for store in usage.forgotten:
            _stderr_log(f"Forgot the store {store}: it no longer exists")
        for store, why in usage.unseen:
            _stderr_log(f"Could not see the machines of the store {store} ({why}): keeping every image it might use")
        removed = images.prune_images(cache, usage.might_use, _stderr_log)
        for path in removed:
            ctx.out(f"Removed {path}")
        return 0
    if ns.action == "ls":
        _stderr_log(f"Image cache: {cache.directory}"
                    + "".join(f" (also read: {d})" for d in cache.dirs[1:] if d.is_dir()))
        current = {images.recipe_hash(arch) for arch in images.ARCHES}
        if ns.format:
            from pymachine.machine.cli.listformat import emit

            emit([_image_record(info, info.recipe in current) for info in images.list_images(cache)],
                 ns.format, IMAGE_HEADERS)
            return 0
        rows = [("RECIPE", "ARCH", "SUITE", "KERNEL", "ENGINE", "SIZE", "BUILT", "CURRENT")]
        for info in images.list_images(cache):
            m = info.manifest
            rows.append((info.recipe, info.arch, str(m.get("suite", "")), str(m.get("kernel_version", "")),
                         str(m.get("engine_version", "")), f"{int(m.get('disk_bytes', 0)) / 1e6:.0f}MB",
                         str(m.get("built_at", "")), "*" if info.recipe in current else ""))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            ctx.out("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        return 0
    started = time.monotonic()
    cached = images.find_image(cache, ns.arch)
    info = cached or images.build_image(cache, _stderr_log, ns.arch)
    ctx.out(str(info.directory))
    ctx.out(_summary(info))
    ctx.out(f"disk sha256 {info.manifest.get('disk_sha256', '')}, virtual size "
            f"{int(info.manifest.get('virtual_size', 0)) // (1 << 20)} MB, "
            f"{len(info.manifest.get('packages', {}))} packages"
            + (" (cached)" if cached else f" (built in {time.monotonic() - started:.0f}s)"))
    return 0
