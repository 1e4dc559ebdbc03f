"""``VirtualBox.pkg`` out of Oracle's macOS ``.dmg``, read with 7-Zip on any build host.

Oracle ships VirtualBox for macOS as a UDIF disk image (a ``koly`` trailer, a
plist block map, raw/zlib/bzip2 chunks) whose HFS+ (or APFS) volume holds the
flat installer ``VirtualBox.pkg``.  hdiutil exists only on macOS, so, like Docker
Toolbox's Linux build (``7z x vbox.dmg`` then ``7z x *.hfs``), two 7-Zip passes
lift it out: the disk image into its partitions, then the file system partition
into the package.  7-Zip checks the image's CRC32 checksums on the way.  The
result must be a xar flat package; anything else is a one-line error.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

from pymachine.installer import xar
from pymachine.machine.errors import MachineError

PKG_NAME = "VirtualBox.pkg"
FS_SUFFIXES = (".hfs", ".hfsx", ".apfs")  # 7-Zip names a partition by its type: "4.hfs", "2.apfs"
KOLY = b"koly"
TIMEOUT = 900.0  # seconds for one 7z run; Oracle's image is ~150 MB


def is_udif(path: Path) -> bool:
    """A UDIF image ends with its 512-byte ``koly`` trailer."""
    size = path.stat().st_size
    if size < 512:
        return False
    with open(path, "rb") as f:
        f.seek(size - 512)
        return f.read(4) == KOLY


def _seven_zip() -> str:
    for name in ("7z", "7zz", "7za"):  # p7zip-full / 7-Zip's own build (macOS) / standalone
        found = shutil.which(name)
        if found:
            return found
    raise MachineError("7z is not installed; it reads VirtualBox's .dmg (apt-get install p7zip-full)")


def _run(args: list[str], what: str) -> str:
    """7z's stdout; on failure a one-line error naming ``what`` and 7-Zip's own complaint."""
    try:
        proc = subprocess.run([_seven_zip(), *args], capture_output=True, text=True, timeout=TIMEOUT,
                              check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise MachineError(f"{what}: 7z did not finish within {int(TIMEOUT)} s") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines()]
        errors = [ln for ln in lines if "error" in ln.lower()  # not the tallies nor "ERROR: <path> : <path>"
                  and not re.fullmatch(r"(ERROR: (.+) : \2|[A-Za-z ]*Errors:( \d+)?)", ln)]
        detail = "; ".join(dict.fromkeys(errors)) or f"exit status {proc.returncode}"
        raise MachineError(f"{what}: not a readable disk image (7z: {detail})")
    return proc.stdout


def _listing(stdout: str) -> list[tuple[str, bool]]:
    """(path, is a folder) of each member in ``7z l -slt -ba`` output."""
    items: list[tuple[str, bool]] = []
    for block in stdout.split("\n\n"):
        fields = dict(line.split(" = ", 1) for line in block.splitlines() if " = " in line)
        if "Path" in fields:
            folder = fields.get("Folder") == "+" or "D" in fields.get("Attributes", "").split(" ")[0]
            items.append((fields["Path"], folder))
    return items


def _posix(path: str) -> PurePosixPath:
    return PurePosixPath(path.replace("\\", "/"))  # 7z on Windows lists with backslashes


def _check_flat_package(pkg: Path, what: str) -> None:
    """A flat package is a xar archive whose TOC checks out (our reader verifies its checksum)."""
    data = pkg.read_bytes()
    if not data.startswith(xar.MAGIC):
        raise MachineError(f"{what} is not a flat (xar) installer package")
    try:
        xar.Reader(data)
    except Exception as exc:  # zlib, XML and struct errors of a damaged TOC alike
        raise MachineError(f"{what} is not a readable flat (xar) installer package ({exc})") from None


def extract_pkg(dmg: Path, work: Path, label: str | None = None) -> Path:
    """Extract the ``VirtualBox.pkg`` of ``dmg`` under ``work`` (a scratch directory) and return it."""
    what = label or dmg.name
    parts_dir = work / "partitions"
    parts_dir.mkdir(parents=True, exist_ok=True)
    parts = [p for p, folder in _listing(_run(["l", "-slt", "-ba", "-tdmg", str(dmg)], what))
             if not folder and p.lower().endswith(FS_SUFFIXES)]
    if not parts:
        raise MachineError(f"{what}: the disk image holds no HFS+ or APFS volume")
    _run(["x", "-tdmg", "-y", "-bd", f"-o{parts_dir}", str(dmg), *parts], what)
    for n, part in enumerate(sorted(parts)):
        volume = parts_dir / part
        try:
            members = _listing(_run(["l", "-slt", "-ba", str(volume)], what))
        except MachineError:
            continue  # a partition 7z cannot read: try the next one
        found = sorted((p for p, folder in members if not folder and _posix(p).name == PKG_NAME
                        and ".." not in _posix(p).parts and not _posix(p).is_absolute()),
                       key=lambda p: (len(_posix(p).parts), p))
        if not found:
            continue
        out_dir = work / f"volume{n}"
        _run(["x", "-y", "-bd", f"-o{out_dir}", str(volume), found[0]], what)
        pkg = out_dir / found[0]
        _check_flat_package(pkg, f"{what}: {_posix(found[0])}")
        return pkg
    raise MachineError(f"{what}: the disk image holds no {PKG_NAME}")
