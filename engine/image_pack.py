"""Ship pymachine's base image as one reproducible ``.tar.gz``, and load one into a store.

Windows and macOS hosts cannot build the image (debootstrap needs Linux and
root), so the installers carry a pack made on Linux.  The archive holds one
directory, ``<recipe>/``, laid out exactly as ``engine.images`` caches it
(manifest, kernel, initrd, qcow2 disk and the chosen exports), plus a
``SHA256SUMS`` of those files.  It is written the way the installer writes
its own archives: sorted members, uid/gid 0, one mtime (SOURCE_DATE_EPOCH,
else the installer's fixed date), gzip header with no time or name, so two
packs of one image are byte-identical and the release can pin its sha256.

Loading trusts nothing in the archive: every member must be a plain file
directly under the one ``<recipe>/`` directory, every file must match
``SHA256SUMS`` (and every listed file must be there), and the image is
extracted into a temp dir under the cache and renamed into place, so a bad
archive leaves the store as it was.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, cast

from pymachine.engine import images
from pymachine.machine.errors import MachineError
from pymachine.machine.progress import Task, TaskReader

Log = Callable[[str], None]

SUMS_NAME = "SHA256SUMS"
#: The files every image has (``find_image`` needs all four).
CORE_FILES = (images.MANIFEST_NAME, images.KERNEL_NAME, images.INITRD_NAME, images.DISK_NAME)
#: What ``pymachine image pack`` includes by default: what the Windows/macOS installers ship (VirtualBox).
DEFAULT_FORMATS = ("vdi",)
#: A recipe directory name: what ``recipe_hash`` gives (a plain name, never a path).
RECIPE_RE = re.compile(r"^[0-9a-f]{8,64}$")
#: SHA256SUMS lists a handful of files; anything bigger is not ours.
MAX_SUMS_BYTES = 64 << 10
CHUNK = 1 << 20
#: The most an archive may unpack to (the real image with its exports is ~5 GB): an archive
#: built to expand without end is refused before it fills the disk.
MAX_IMAGE_BYTES = 64 << 30
MAX_BYTES_ENV = "PYMACHINE_IMAGE_LOAD_MAX_BYTES"
GZIP_LEVEL = 6


class ImagePackError(MachineError):
    """An image archive is malformed, unsafe or does not match its checksums."""


def default_name(recipe: str) -> str:
    return f"pymachine-image-{recipe}.tar.gz"


def source_date_epoch(environ: Mapping[str, str] | None = None) -> int:
    """SOURCE_DATE_EPOCH, else a fixed date: builds are reproducible by default.

    The one rule for every archive pymachine makes; the installer builder
    (installer.template) uses it too, the runtime never imports the builder.
    """
    env = os.environ if environ is None else environ
    value = env.get("SOURCE_DATE_EPOCH", "").strip()
    return int(value) if value else 1700000000


def _epoch() -> int:
    return source_date_epoch()


def _tar_info(name: str, size: int, mode: int, epoch: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, mode, epoch, kind
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _sums_text(digests: dict[str, str]) -> bytes:
    return "".join(f"{digests[name]}  {name}\n" for name in sorted(digests)).encode()


def pack_image(info: images.ImageInfo, out: Path, formats: Sequence[str], log: Log) -> Path:
    """Write ``out``: ``<recipe>/`` with the image's files, its ``formats`` exports and SHA256SUMS.

    Exports are made first (``export_image``, once, cached beside the image).
    The archive is written to a temp file beside ``out`` and renamed, so
    ``out`` is either the whole pack or untouched.
    """
    unknown = [f for f in formats if f not in images.EXPORT_FORMATS]
    if unknown:
        raise ImagePackError(f"unknown image format {unknown[0]!r}: use one of {', '.join(images.EXPORT_FORMATS)}")
    recipe = info.directory.name
    if not RECIPE_RE.match(recipe):
        raise ImagePackError(f"{info.directory} is not a cached image directory (named by its recipe hash)")
    files = {name: info.directory / name for name in CORE_FILES}
    for fmt in sorted(set(formats)):
        exported = images.export_image(info, fmt, log)
        files[exported.name] = exported
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise ImagePackError(f"the image is incomplete: {missing[0]} is missing")
    log(f"(image) hashing {len(files)} files...")
    sizes = {name: path.stat().st_size for name, path in files.items()}
    # Bytes on a terminal; off one the step is already logged (machine.progress).
    with Task(f"Hashing {len(files)} files", sum(sizes.values()), lines=False) as task:
        digests = {name: _sha256(path, task) for name, path in files.items()}
    sums = _sums_text(digests)
    epoch = _epoch()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    tmp = Path(tmp_name)
    log(f"(image) writing {out}...")
    try:
        with os.fdopen(fd, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf, \
                Task(f"Packing {out.name}", sum(sizes.values()), lines=False) as task:
            tf.addfile(_tar_info(f"{recipe}/", 0, 0o755, epoch, tarfile.DIRTYPE))
            tf.addfile(_tar_info(f"{recipe}/{SUMS_NAME}", len(sums), 0o644, epoch), _BytesReader(sums))
            for name in sorted(files):
                with open(files[name], "rb") as fh:
                    tf.addfile(_tar_info(f"{recipe}/{name}", sizes[name], 0o644, epoch), TaskReader(fh, task))
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _sha256(path: Path, task: Task) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        reader = TaskReader(fh, task)
        while block := reader.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


class _BytesReader:
    """A minimal file object over bytes (tarfile.addfile only calls read)."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        chunk = self._data[self._pos:end]
        self._pos += len(chunk)
        return chunk


# ----------------------------------------------------------------------------- loading


def _member_file(member: tarfile.TarInfo, where: str) -> tuple[str, str | None]:
    """(recipe, file name or None for the top directory) of a safe member; else refuse."""
    name = member.name
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise ImagePackError(f"{where}: unsafe path in image archive: {name!r}")
    if not parts or len(parts) > 2 or not RECIPE_RE.match(parts[0]) or (len(parts) == 2 and parts[1].startswith(".")):
        raise ImagePackError(f"{where}: {name!r} is outside the image directory (<recipe>/<file>)")
    if len(parts) == 1:
        if not member.isdir():
            raise ImagePackError(f"{where}: {name!r} is not a directory")
        return parts[0], None
    if not member.isfile():
        kind = "link" if (member.issym() or member.islnk()) else "special file or directory"
        raise ImagePackError(f"{where}: {name!r} is a {kind}: image archives hold only plain files")
    return parts[0], parts[1]


def _parse_sums(data: bytes, where: str) -> dict[str, str]:
    sums: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        digest, _, name = line.partition("  ")
        name = name.lstrip("*")
        if not re.fullmatch(r"[0-9a-f]{64}", digest) or not name or "/" in name or name.startswith("."):
            raise ImagePackError(f"{where}: malformed {SUMS_NAME} line {line!r}")
        sums[name] = digest
    return sums


def _extract(tar_path: Path, work: Path) -> tuple[str, dict[str, str], bytes]:
    """Stream the archive into ``work``: (recipe, {file: sha256}, SHA256SUMS bytes); refuses unsafe members."""
    where = str(tar_path)
    recipe: str | None = None
    digests: dict[str, str] = {}
    sums: bytes | None = None
    try:
        budget = int(os.environ.get(MAX_BYTES_ENV) or MAX_IMAGE_BYTES)
    except ValueError:
        raise ImagePackError(f"{MAX_BYTES_ENV} must be a number of bytes") from None
    # Bytes of the archive read, on a terminal; off one the step is already logged (machine.progress).
    with open(tar_path, "rb") as fh, \
            Task(f"Loading {tar_path.name}", os.fstat(fh.fileno()).st_size, lines=False) as task, \
            tarfile.open(fileobj=cast("IO[bytes]", reader := TaskReader(fh, task)), mode="r|*") as tf:  # reads only
        for member in tf:
            top, name = _member_file(member, where)
            if recipe is None:
                recipe = top
            elif top != recipe:
                raise ImagePackError(f"{where}: {member.name!r} is outside the image directory {recipe}/")
            if name is None:
                continue
            if name in digests or (name == SUMS_NAME and sums is not None):
                raise ImagePackError(f"{where}: {member.name!r} appears twice")
            src = tf.extractfile(member)
            assert src is not None
            if name == SUMS_NAME:
                if member.size > MAX_SUMS_BYTES:
                    raise ImagePackError(f"{where}: {member.name!r} is too big to be a checksum list")
                sums = src.read()
                continue
            digest = hashlib.sha256()
            with src, open(work / name, "wb") as dst:
                while block := src.read(CHUNK):
                    budget -= len(block)
                    if budget < 0:
                        raise ImagePackError(f"{where}: unpacks to more than the {MAX_BYTES_ENV} limit "
                                             f"of {int(os.environ.get(MAX_BYTES_ENV) or MAX_IMAGE_BYTES)} bytes")
                    digest.update(block)
                    dst.write(block)
            os.chmod(work / name, 0o644)
            digests[name] = digest.hexdigest()
        reader.drain()  # the tar's end blocks and padding: the bar ends at the file's size
    if recipe is None:
        raise ImagePackError(f"{where}: the archive is empty")
    if sums is None:
        raise ImagePackError(f"{where}: the archive has no {recipe}/{SUMS_NAME}")
    return recipe, digests, sums


def _verify(where: str, recipe: str, digests: dict[str, str], sums: dict[str, str], work: Path) -> None:
    for name, actual in sorted(digests.items()):
        if name not in sums:
            raise ImagePackError(f"{where}: {recipe}/{name} is not listed in {SUMS_NAME}")
        if sums[name] != actual:
            raise ImagePackError(f"{where}: {recipe}/{name} has sha256 {actual}, {SUMS_NAME} says {sums[name]}")
    for name in sorted(set(sums) - set(digests)):
        raise ImagePackError(f"{where}: {recipe}/{name} is listed in {SUMS_NAME} but missing")
    for name in CORE_FILES:
        if name not in digests:
            raise ImagePackError(f"{where}: the image has no {name}")
    try:
        manifest = json.loads((work / images.MANIFEST_NAME).read_text())
    except ValueError:
        raise ImagePackError(f"{where}: {recipe}/{images.MANIFEST_NAME} is not JSON") from None
    if not isinstance(manifest, dict) or str(manifest.get("recipe", recipe)) != recipe:
        raise ImagePackError(f"{where}: the manifest's recipe does not match the directory {recipe}/")


def _make_dirs(path: Path) -> list[Path]:
    """mkdir -p that returns what it created (deepest last), so a refusal can undo it."""
    created: list[Path] = []
    for parent in reversed([path, *path.parents]):
        if not parent.exists():
            parent.mkdir()
            created.append(parent)
    return created


def _remove_created(created: list[Path]) -> None:
    for path in reversed(created):
        with contextlib.suppress(OSError):
            path.rmdir()


def _found(cache_dir: Path, recipe: str) -> images.ImageInfo | None:
    return next((i for i in images.list_images(cache_dir) if i.directory.name == recipe), None)


def unpack_image(tar_path: Path, cache_dir: Path, log: Log) -> images.ImageInfo:
    """Verify ``tar_path`` and put its image in ``cache_dir``; returns the image as the cache lists it.

    A complete image of the same recipe already there is kept as it is (the
    recipe hash decides the content).  On any refusal the cache is left as it
    was: no temp dir, no lock file, no directory this call created.
    """
    tar_path, cache_dir = Path(tar_path), Path(cache_dir)
    where = str(tar_path)
    if not tar_path.is_file():
        raise ImagePackError(f"{where}: no such file")
    created = _make_dirs(cache_dir)
    work = Path(tempfile.mkdtemp(prefix=".load-", dir=cache_dir))
    try:
        try:
            recipe, digests, sums = _extract(tar_path, work)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise ImagePackError(f"{where}: not a readable image archive ({exc or type(exc).__name__})") from None
        _verify(where, recipe, digests, _parse_sums(sums, where), work)
        (work / SUMS_NAME).write_bytes(sums)
        os.chmod(work / SUMS_NAME, 0o644)
        os.chmod(work, 0o755)
        final = cache_dir / recipe
        with images._build_lock(cache_dir, recipe, log):  # a build or another load of this recipe waits
            existing = _found(cache_dir, recipe)
            if existing is not None:
                log(f"(image) {final} is already in the cache; keeping it")
                return existing
            if os.path.lexists(final):  # an incomplete leftover: never half-trusted
                images._remove_tree(final)
            os.rename(work, final)
        log(f"(image) loaded {final}")
        found = _found(cache_dir, recipe)
        assert found is not None
        return found
    except OSError as exc:
        _discard(work, created)
        raise ImagePackError(f"cannot load {where}: {exc.strerror or exc}") from None
    except BaseException:
        _discard(work, created)
        raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def _discard(work: Path, created: list[Path]) -> None:
    """Undo a refused load: the temp dir, then any directory the load created."""
    shutil.rmtree(work, ignore_errors=True)
    _remove_created(created)
