"""Linux artefacts: a single-file ``pymachine.pyz`` and a ``.deb`` that installs it.

The pyz is a zipapp of pymachine's own pure-Python packages, written by
hand so entry order and timestamps are fixed (SOURCE_DATE_EPOCH) and two
builds are byte-identical; cryptography and paramiko come from the system
(the .deb's Depends) because they carry native code.

The .deb ships no VM image: a package cannot seed each user's store
(~/.docker/machine), and Linux hosts can build the image themselves
(``sudo pymachine image build``) or ``pymachine image load`` the release's
``pymachine-image-<recipe>.tar.gz``; the repo lock has no Linux ``vm-image``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

from pymachine.installer.lock import Component, packaging_file
from pymachine.installer.sources import default_source, iter_sources
from pymachine.installer.stage import check_vm_image, stage
from pymachine.installer.template import normalise_tree, render, source_date_epoch, walk_sorted
from pymachine.machine import __version__
from pymachine.machine.errors import MachineError

SHEBANG = b"#!/usr/bin/python3\n"
MAIN = (
    "import sys\n"
    "from pymachine.machine.cli.main import main\n"
    "sys.exit(main())\n"
)


def _zip_time(epoch: int) -> tuple[int, int, int, int, int, int]:
    return time.gmtime(max(epoch, 315532800))[:6]  # zip dates start in 1980


def build_pyz(out: Path, epoch: int | None = None, shebang: bytes = SHEBANG, source: Path | None = None) -> Path:
    """Write ``out`` as an executable zipapp running ``pymachine`` from the packages under
    ``source`` (the repository by default); deterministic."""
    epoch = source_date_epoch() if epoch is None else epoch
    stamp = _zip_time(epoch)
    entries: list[tuple[str, bytes]] = [("__main__.py", MAIN.encode())]
    for rel, path in iter_sources(source or default_source()):
        entries.append((rel, path.read_bytes()))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(shebang)
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in sorted(entries):
                info = zipfile.ZipInfo(name, date_time=stamp)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3
                zf.writestr(info, data, compresslevel=9)
    tmp.chmod(0o755)
    os.replace(tmp, out)
    return out


def build_deb(out_dir: Path, components: list[Component], cache: Path | None = None,
              epoch: int | None = None, version: str = __version__, source: Path | None = None) -> Path:
    """Build ``pymachine_<version>_all.deb`` with dpkg-deb; reproducible for one epoch."""
    if not shutil.which("dpkg-deb"):
        raise MachineError("dpkg-deb is not installed (apt-get install dpkg-dev)")
    epoch = source_date_epoch() if epoch is None else epoch
    source = source or default_source()
    out_dir.mkdir(parents=True, exist_ok=True)
    deb = out_dir / f"pymachine_{version}_all.deb"
    with tempfile.TemporaryDirectory(prefix="pm-deb-") as tmp:
        root = Path(tmp) / "root"
        (root / "usr" / "bin").mkdir(parents=True)
        build_pyz(root / "usr" / "bin" / "pymachine", epoch, source=source)
        libdir = root / "usr" / "lib" / "pymachine"
        libdir.mkdir(parents=True)
        stage(components, libdir, cache)
        check_vm_image(components, libdir, source, ())  # the repo lock ships none: Linux hosts build it
        doc = root / "usr" / "share" / "doc" / "pymachine"
        doc.mkdir(parents=True)
        (doc / "copyright").write_text("pymachine: Apache-2.0\n")
        manifest = "".join(f"{c.name} {c.version} {c.sha256}\n" for c in components)
        (doc / "components.txt").write_text(manifest)
        size_kb = sum(p.stat().st_size for p in walk_sorted(root) if p.is_file()) // 1024 + 1
        control_dir = root / "DEBIAN"
        control_dir.mkdir()
        template = packaging_file("deb", "control.in").read_text()
        control = render(template, {"VERSION": version, "INSTALLED_SIZE": str(size_kb)}, "control.in")
        (control_dir / "control").write_text(control)
        for path in walk_sorted(root):
            if path.is_dir():
                path.chmod(0o755)
            elif not os.access(path, os.X_OK):
                path.chmod(0o644)
        normalise_tree(root, epoch)
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
        proc = subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(deb)],
            capture_output=True, text=True, env=env, check=False,
        )
        if proc.returncode != 0:
            raise MachineError(f"dpkg-deb failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return deb
