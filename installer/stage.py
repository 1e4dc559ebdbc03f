"""Lay the lock's components out in a staging tree: copy, or unpack zip/tar.

Extraction refuses absolute paths, ``..`` and links that leave the tree,
because a bundled archive must never write outside the installer's tree.
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from pymachine.installer.fetch import fetch
from pymachine.installer.lock import Component
from pymachine.machine.errors import MachineError


def _safe_rel(name: str, strip: int, comp: str) -> PurePosixPath | None:
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise MachineError(f"component {comp!r}: unsafe path in archive: {name!r}")
    parts = parts[strip:]
    return PurePosixPath(*parts) if parts else None


def _inside(root: Path, rel: PurePosixPath) -> Path:
    return root.joinpath(*rel.parts)


def place(comp: Component, src: Path, root: Path) -> None:
    dest = root.joinpath(*PurePosixPath(comp.dest).parts)
    if comp.unpack == "zip":
        with zipfile.ZipFile(src) as zf:
            for info in zf.infolist():
                rel = _safe_rel(info.filename, comp.strip, comp.name)
                if rel is None or info.is_dir():
                    continue
                out = _inside(dest, rel)
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as fin, open(out, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
                mode = (info.external_attr >> 16) & 0o777
                out.chmod(0o755 if mode & 0o111 else 0o644)
    elif comp.unpack == "tar":
        with tarfile.open(src) as tf:
            for member in tf.getmembers():
                rel = _safe_rel(member.name, comp.strip, comp.name)
                if rel is None or member.isdir():
                    continue
                if not member.isfile():
                    raise MachineError(f"component {comp.name!r}: unsupported tar member {member.name!r}")
                out = _inside(dest, rel)
                out.parent.mkdir(parents=True, exist_ok=True)
                fin = tf.extractfile(member)
                assert fin is not None
                with fin, open(out, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
                out.chmod(0o755 if member.mode & 0o111 else 0o644)
    elif comp.unpack == "":
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        dest.chmod(0o755 if "." not in dest.name else 0o644)  # unix binaries have no suffix
    else:
        raise MachineError(f"component {comp.name!r}: unknown unpack kind {comp.unpack!r}")


def stage(components: list[Component], root: Path, cache: Path | None = None) -> list[Path]:
    """Fetch (verified) and place every component; returns the cached source paths."""
    sources = []
    for comp in components:
        src = fetch(comp, cache)
        place(comp, src, root)
        sources.append(src)
    return sources


# ------------------------------------------------------------------ pymachine's VM image

IMAGE_COMPONENT = "vm-image"


IMAGE_ARCH = {"x86_64": "amd64", "arm64": "arm64", "": None}  # lock arch -> engine.images arch (None: host's)


def shipped_recipe(source: Path, arch: str = "") -> str:
    """The image recipe hash, for the lock arch ``arch``, of the pymachine under ``source``
    (which may not be the running one)."""
    import subprocess
    import sys

    path_entry = source if (source / "pymachine" / "__init__.py").is_file() else source.parent
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from pymachine.engine.images import recipe_hash; print(recipe_hash(sys.argv[2] or None))")
    proc = subprocess.run([sys.executable, "-I", "-c", code, str(path_entry), IMAGE_ARCH[arch] or ""],
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise MachineError(f"cannot compute the image recipe of the pymachine in {source}: {detail}")
    return proc.stdout.strip()


def check_vm_image(components: list[Component], root: Path, source: Path, exports: tuple[str, ...]) -> None:
    """The staged ``vm-image`` is the image the shipped pymachine looks for, whole, with ``exports``.

    pymachine finds only the image of its own recipe (``find_image``), so an
    installer carrying another version's image would ship a dead weight and
    fall back to a build the host cannot do: refuse it at build time.  The
    lock pins the archive; its SHA256SUMS is checked again here, on the
    files as staged.
    """
    from pymachine.engine import image_pack, images
    from pymachine.installer.sums import SignatureError, check_sums

    comp = next((c for c in components if c.name == IMAGE_COMPONENT), None)
    if comp is None:
        return
    cache = root.joinpath(*PurePosixPath(comp.dest).parts)
    dirs = sorted(p for p in cache.iterdir() if p.is_dir()) if cache.is_dir() else []
    if len(dirs) != 1:
        raise MachineError(f"component {comp.name!r}: expected one image directory under {comp.dest}/, "
                           f"found {[d.name for d in dirs]} (dest/unpack must lay out <recipe>/)")
    image = dirs[0]
    want = shipped_recipe(source, comp.arch)  # each arch's image has its own recipe
    if image.name != want:
        raise MachineError(
            f"component {comp.name!r}: the bundled image is recipe {image.name} but the pymachine being shipped "
            f"({source}) builds recipe {want}: pack its own image (`pymachine image pack`) and re-pin the lock "
            f"(`python -m pymachine.installer lock --update --only {comp.name}`)")
    try:
        listed = set(check_sums(image))
    except SignatureError as exc:
        raise MachineError(f"component {comp.name!r}: {exc}") from None
    present = {p.name for p in image.iterdir()} - {image_pack.SUMS_NAME}
    needed = {*image_pack.CORE_FILES, *(f"disk.{fmt}" for fmt in exports)}
    if present != listed or not needed <= present:
        raise MachineError(f"component {comp.name!r}: image {image.name} has {sorted(present)}; "
                           f"SHA256SUMS lists {sorted(listed)}; the installer needs {sorted(needed)}")
    if not any(i.directory == image for i in images.list_images(cache)):
        raise MachineError(f"component {comp.name!r}: image {image.name} is not a usable image (its manifest)")
