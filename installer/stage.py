"""Lay the lock's components out in a staging tree: copy, or unpack zip/tar.

Extraction refuses absolute paths, ``..`` and links that leave the tree,
because a bundled archive must never write outside the installer's tree.
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from installer.fetch import fetch
from installer.lock import Component
from machine.errors import MachineError


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
