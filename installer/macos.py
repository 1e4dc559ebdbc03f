"""macOS: one flat product archive (.pkg) per Mac architecture, written on Linux with our own
xar and Bom writers.

Why one .pkg per arch rather than one carrying both: every heavy component
exists twice (python-build-standalone, docker, Compose, VirtualBox's Intel and
Apple Silicon builds, and above all the amd64 and arm64 base images, hundreds
of MB each), so a dual package would double every user's download to install
half of it.  Each .pkg names its arch in ``hostArchitectures`` and in its file
name (``-arm64``/``-x86_64``), and its Distribution's installation check refuses
the other kind of Mac by ``system.sysctl('hw.optional.arm64')`` (1 on Apple
Silicon even under Rosetta, which would otherwise run the Intel package and its
VirtualBox that cannot run there), naming the package to take instead; the
README says which to download.

Product layout: ``Distribution`` (choices; VirtualBox offered only when it is
missing or older; refuses to install while VirtualBox runs), ``Resources/``,
``pymachine.pkg/{PackageInfo,Payload,Scripts,Bom}`` and, when bundled,
VirtualBox's own component packages copied verbatim (lifted out of Oracle's
``.dmg`` first, see ``dmg.py``).  Payload and Scripts
are gzip'd odc cpio archives (uid 0, gid 80 "admin"), made deterministic.
Installation on a real Mac is not tested here: no macOS host.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import tempfile
from pathlib import Path

from pymachine.installer import bom, dmg, xar
from pymachine.installer.lock import Component, packaging_file
from pymachine.installer.sources import copy_sources, default_source
from pymachine.installer.stage import check_vm_image, stage
from pymachine.installer.template import render, source_date_epoch, walk_sorted
from pymachine.machine import __version__
from pymachine.machine.errors import MachineError

PKG_DIR = packaging_file("macos")
PREFIX = "usr/local/pymachine"
GID_ADMIN = 80
LAUNCHER = (
    "#!/bin/sh\n"
    "PYTHONPATH=/usr/local/pymachine/lib exec /usr/local/pymachine/python/bin/python3 -m pymachine \"$@\"\n"
)


# ----------------------------------------------------------------------- cpio (odc)

def cpio_odc(entries: list[tuple[str, int, bytes | None]], epoch: int) -> bytes:
    """``entries`` = (path like "./usr/x", permission bits, data or None for a dir)."""
    out = io.BytesIO()

    def header(name: str, mode: int, size: int, ino: int) -> bytes:
        nb = name.encode() + b"\0"
        fields = (b"070707", b"%06o" % 0, b"%06o" % ino, b"%06o" % mode, b"%06o" % 0, b"%06o" % GID_ADMIN,
                  b"%06o" % 1, b"%06o" % 0, b"%011o" % epoch, b"%06o" % len(nb), b"%011o" % size)
        return b"".join(fields) + nb

    for ino, (name, perm, data) in enumerate(entries, start=1):
        mode = (0o100000 if data is not None else 0o040000) | perm
        out.write(header(name, mode, len(data or b""), ino))
        out.write(data or b"")
    out.write(header("TRAILER!!!", 0, 0, 0))
    return out.getvalue()


def read_cpio_odc(blob: bytes) -> list[tuple[str, int, int, int, bytes]]:
    """(name, mode, uid, gid, data) for each member; our check of what we wrote."""
    pos, out = 0, []
    while True:
        h = blob[pos:pos + 76]
        if h[:6] != b"070707":
            raise MachineError("cpio: bad odc magic")
        mode, uid, gid = int(h[18:24], 8), int(h[24:30], 8), int(h[30:36], 8)
        namesize, filesize = int(h[59:65], 8), int(h[65:76], 8)
        name = blob[pos + 76:pos + 76 + namesize - 1].decode()
        pos += 76 + namesize
        if name == "TRAILER!!!":
            return out
        out.append((name, mode, uid, gid, blob[pos:pos + filesize]))
        pos += filesize


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


# ----------------------------------------------------------------------- build

def _tree_entries(root: Path) -> list[tuple[str, int, bytes | None]]:
    entries: list[tuple[str, int, bytes | None]] = [(".", 0o755, None)]
    for path in walk_sorted(root):
        rel = "./" + path.relative_to(root).as_posix()
        if path.is_dir():
            entries.append((rel, 0o755, None))
        else:
            entries.append((rel, 0o755 if os.access(path, os.X_OK) else 0o644, path.read_bytes()))
    return entries


def _bom_for(entries: list[tuple[str, int, bytes | None]], epoch: int) -> bytes:
    return bom.write([
        bom.BomEntry(name, bom.TYPE_DIR if data is None else bom.TYPE_FILE,
                     (0o040000 if data is None else 0o100000) | perm, 0, GID_ADMIN, epoch,
                     len(data or b""), bom.posix_cksum(data) if data is not None else 0)
        for name, perm, data in entries
    ])


def _vbox_members(src: Path) -> tuple[list[xar.Member], list[tuple[str, str, str]]]:
    """VirtualBox's component package(s) from a flat .pkg: (members, [(dir, id, version)])."""
    reader = xar.Reader(src.read_bytes())
    members: list[xar.Member] = []
    refs: list[tuple[str, str, str]] = []
    if "PackageInfo" in reader.entries:  # a component package: embed it as VirtualBox.pkg
        layout = {"VirtualBox.pkg/" + p: p for p in reader.entries}
    else:  # a product archive: lift its component packages, as Toolbox did
        layout = {p: p for p in reader.entries if re.match(r"^[^/]+\.pkg(/|$)", p)}
    for new, old in sorted(layout.items()):
        if reader.entries[old].kind == "file":
            data = reader.read(old)
            members.append(xar.Member(new, data, reader.entries[old].mode))
            if new.endswith("/PackageInfo"):
                ident = re.search(rb'identifier="([^"]+)"', data)
                ver = re.search(rb'\sversion="([^"]+)"', data)
                if not ident:
                    raise MachineError(f"VirtualBox package {old}: PackageInfo has no identifier")
                refs.append((new.split("/")[0], ident.group(1).decode(), ver.group(1).decode() if ver else ""))
    if not refs:
        raise MachineError("the VirtualBox component holds no installer package")
    return members, refs


def _vbox_package(vbox: Component, fetched: Path, work: Path) -> Path:
    """The flat VirtualBox.pkg: the fetched file itself, or lifted out of Oracle's .dmg (UDIF) with 7z."""
    named_dmg = any(str(x).lower().endswith(".dmg") for x in (vbox.url, vbox.dest))
    if named_dmg or dmg.is_udif(fetched):
        return dmg.extract_pkg(fetched, work, label=f"VirtualBox {vbox.version} ({vbox.url.rsplit('/', 1)[-1]})")
    return fetched


ARCH_TITLES = {"x86_64": "Intel", "arm64": "Apple Silicon"}
MIN_OS = {"x86_64": "10.13", "arm64": "11.0"}  # the first macOS on Apple Silicon is 11


def build_pkg(out_dir: Path, components: list[Component], cache: Path | None = None,
              epoch: int | None = None, version: str = __version__, source: Path | None = None,
              arch: str = "x86_64") -> Path:
    """``pymachine-toolbox-<version>-<arch>.pkg`` from the lock's macOS components for ``arch``."""
    if arch not in ARCH_TITLES:
        raise MachineError(f"no macOS package for arch {arch!r}")
    foreign = sorted({c.name for c in components if c.arch not in ("", arch)})
    if foreign:
        raise MachineError(f"components built for another arch than {arch}: {', '.join(foreign)}")
    epoch = source_date_epoch() if epoch is None else epoch
    source = source or default_source()
    out_dir.mkdir(parents=True, exist_ok=True)
    vbox = next((c for c in components if c.name == "virtualbox"), None)
    with tempfile.TemporaryDirectory(prefix="pm-pkg-") as tmp:
        root = Path(tmp) / "root"
        prefix = root / PREFIX
        stage([c for c in components if c is not vbox], prefix, cache)
        check_vm_image(components, prefix, source, ("vdi",))
        copy_sources(source, prefix / "lib")
        (prefix / "bin").mkdir(parents=True, exist_ok=True)
        launcher = prefix / "bin" / "pymachine"
        launcher.write_text(LAUNCHER)
        launcher.chmod(0o755)
        entries = _tree_entries(root)
        payload = _gzip(cpio_odc(entries, epoch))
        scripts = _gzip(cpio_odc([(".", 0o755, None),
                                  ("./postinstall", 0o755, (PKG_DIR / "postinstall").read_bytes())], epoch))
        install_kb = sum(len(d or b"") for _n, _p, d in entries) // 1024 + 1
        package_info = render((PKG_DIR / "PackageInfo.in").read_text(), {
            "VERSION": version, "NUM_FILES": str(len(entries)), "INSTALL_KB": str(install_kb)}, "PackageInfo.in")
        members = [
            xar.Member("pymachine.pkg/Bom", _bom_for(entries, epoch)),
            xar.Member("pymachine.pkg/PackageInfo", package_info.encode()),
            xar.Member("pymachine.pkg/Payload", payload),
            xar.Member("pymachine.pkg/Scripts", scripts),
            xar.Member("Resources/en.lproj/License.txt", b"pymachine: Apache-2.0\n"),
        ]
        values = {"VERSION": version, "INSTALL_KB": str(install_kb), "VBOX_VERSION": "0", "ARCH": arch,
                  "ARCH_TITLE": ARCH_TITLES[arch], "MIN_OS": MIN_OS[arch],
                  "VBOX_BUNDLED": "false", "VBOX_LINE": "", "VBOX_CHOICE": "", "VBOX_PKGREFS": ""}
        if vbox is not None:
            from pymachine.installer.fetch import fetch

            vmembers, refs = _vbox_members(_vbox_package(vbox, fetch(vbox, cache), Path(tmp) / "vbox"))
            members += vmembers
            ids = "\n".join(f'    <pkg-ref id="{ident}"/>' for _d, ident, _v in refs)
            values.update(
                VBOX_VERSION=vbox.version, VBOX_BUNDLED="true",
                VBOX_LINE='    <line choice="virtualbox"/>',
                VBOX_CHOICE=(f'  <choice id="virtualbox" title="VirtualBox {vbox.version}" '
                             'start_selected="vboxChoice()" start_enabled="vboxChoice()" '
                             f'start_visible="vboxChoice()">\n{ids}\n  </choice>'),
                VBOX_PKGREFS="\n".join(f'  <pkg-ref id="{ident}" version="{ver}" auth="root">#{d}</pkg-ref>'
                                       for d, ident, ver in refs),
            )
        distribution = render((PKG_DIR / "Distribution.in").read_text(), values, "Distribution.in")
        members.append(xar.Member("Distribution", distribution.encode()))
    out = out_dir / f"pymachine-toolbox-{version}-{arch}.pkg"
    out.write_bytes(xar.write(members, epoch))
    return out
