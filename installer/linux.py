"""Linux artefacts: a single-file ``pymachine.pyz`` and a ``.deb`` per arch that installs it.

The pyz is a zipapp of pymachine's own pure-Python packages, written by
hand so entry order and timestamps are fixed (SOURCE_DATE_EPOCH) and two
builds are byte-identical.

The .deb works on Debian 12 and 13 alike.  Native modules come from the
distribution, with the versions paramiko needs (``python3-cryptography (>= 38),
python3-bcrypt (>= 3.2), python3-nacl (>= 1.5)``: Debian 12 has 38.0.4,
3.2.2 and 1.5.0).  paramiko itself is vendored, pure Python, under
``/usr/lib/pymachine/vendor`` (with invoke, filelock and pycdlib; the lock's
``dest``), which the launcher puts ahead of the system's packages: Debian 12's
python3-paramiko is 2.12, without ``PKey.from_path``, and its python3-pycdlib
1.12 is older than the seed ISO writer needs (>= 1.14).  Compose is the Docker CLI plugin in
``/usr/lib/docker/cli-plugins/`` (a directory every docker CLI searches,
before ``/usr/libexec/docker/cli-plugins`` where Debian 13's own v2
``docker-compose`` and Docker's ``docker-compose-plugin`` live, so there is
no file conflict and ``docker compose`` works on Debian 12, whose
``docker-compose`` is the v1 Python tool); it is a per-arch binary, so the
package is per arch (``amd64``/``arm64``).  The lock's Linux ``dest`` paths are
relative to ``/``.

The .deb ships no VM image: a package cannot seed each user's store
(~/.docker/machine), and Linux hosts can build the image themselves
(``sudo pymachine image build``) or ``pymachine image load`` the release's
``pymachine-image-<recipe>.tar.gz``; the repo lock has no Linux ``vm-image``.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

from pymachine.installer.lock import Component, packaging_file
from pymachine.installer.project import project_info
from pymachine.installer.sources import default_source, iter_sources
from pymachine.installer.stage import check_vm_image, stage
from pymachine.installer.template import normalise_tree, render, source_date_epoch, walk_sorted
from pymachine.machine import __version__
from pymachine.machine.errors import MachineError

SHEBANG = b"#!/usr/bin/python3\n"
# <prefix>/bin/pymachine finds the .deb's vendored wheels in <prefix>/lib/pymachine/vendor,
# ahead of the system's site-packages; a pyz run from elsewhere has none and uses the system's.
MAIN = (
    "import os, sys\n"
    "_vendor = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(sys.path[0]))), "
    "'lib', 'pymachine', 'vendor')\n"
    "if os.path.isdir(_vendor):\n"
    "    sys.path.insert(1, _vendor)\n"
    "from pymachine.machine.cli.main import main\n"
    "sys.exit(main())\n"
)
COMPOSE_PLUGIN = "usr/lib/docker/cli-plugins/docker-compose"
DEB_ARCH = {"x86_64": "amd64", "arm64": "arm64"}
MAINTAINER_ENV = "PYMACHINE_DEB_MAINTAINER"  # the Maintainer and Homepage otherwise come from pyproject.toml
COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: pymachine
Source: {homepage}

Files: *
Copyright: 2026 pymachine developers
License: Apache-2.0

Files: usr/lib/pymachine/vendor/paramiko*
Copyright: 2003-2023 Robey Pointer, Jeff Forcier and contributors
License: LGPL-2.1+

Files: usr/lib/pymachine/vendor/invoke*
Copyright: 2020 Jeff Forcier
License: BSD-2-clause

Files: usr/lib/pymachine/vendor/filelock*
Copyright: none claimed
License: Unlicense

Files: usr/lib/pymachine/vendor/pycdlib*
Copyright: 2015-2022 Chris Lalancette <clalancette@gmail.com>
License: LGPL-2.1

Files: usr/lib/docker/cli-plugins/*
Copyright: 2020 Docker, Inc.
License: Apache-2.0

License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.

License: LGPL-2.1+
 On Debian systems the full text is in /usr/share/common-licenses/LGPL-2.1.

License: LGPL-2.1
 On Debian systems the full text is in /usr/share/common-licenses/LGPL-2.1.

License: BSD-2-clause
 Redistribution and use in source and binary forms, with or without modification, are
 permitted provided that the conditions of the 2-clause BSD licence are met; see the
 LICENSE file in invoke's dist-info directory.

License: Unlicense
 This is free and unencumbered software released into the public domain.
"""


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


def maintainer(environ: dict[str, str] | None = None, source: Path | None = None) -> str:
    """The .deb's Maintainer: $PYMACHINE_DEB_MAINTAINER (a release may set its own), else the
    project's own, pyproject.toml's ``[project] maintainers`` (or ``authors``)."""
    value = (os.environ if environ is None else environ).get(MAINTAINER_ENV, "").strip()
    where = MAINTAINER_ENV
    if not value:
        value, where = project_info(source).maintainer, "pyproject.toml [project] maintainers"
        if not value:
            raise MachineError(f"no Maintainer for the .deb: set {MAINTAINER_ENV}='Name <address>' or "
                               "pyproject.toml's [project] maintainers")
    if not re.fullmatch(r"[^<>@\n]+ <[^<>@\s]+@[^<>@\s]+\.[a-z]{2,}>", value) or "localhost" in value:
        raise MachineError(f"{where}: {value!r} is not 'Name <address@domain>' (set {MAINTAINER_ENV})")
    return value


def homepage(source: Path | None = None) -> str:
    """The .deb's Homepage: pyproject.toml's ``[project.urls] Homepage``."""
    url = project_info(source).homepage
    if not re.fullmatch(r"https://[^\s/]+\.[a-z]{2,}(/\S*)?", url) or "localhost" in url:
        raise MachineError(f"no usable Homepage for the .deb: pyproject.toml's [project.urls] Homepage is {url!r}")
    return url


def _changelog(version: str, who: str, epoch: int) -> bytes:
    """A native package's changelog.gz (Debian policy 12.7), gzip without a timestamp."""
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(epoch))
    text = (f"pymachine ({version}) unstable; urgency=medium\n\n"
            f"  * Release {version}: see the README's release notes.\n\n -- {who}  {date}\n")
    return gzip.compress(text.encode(), compresslevel=9, mtime=0)


def build_deb(out_dir: Path, components: list[Component], cache: Path | None = None,
              epoch: int | None = None, version: str = __version__, source: Path | None = None,
              arch: str = "x86_64") -> Path:
    """Build ``pymachine_<version>_<debarch>.deb`` with dpkg-deb; reproducible for one epoch.

    ``components`` are the lock's Linux ones for ``arch`` (``Lock.components("linux", arch)``);
    without an arch-specific one (no Compose) the package is ``Architecture: all``.
    """
    if not shutil.which("dpkg-deb"):
        raise MachineError("dpkg-deb is not installed (apt-get install dpkg-dev)")
    if arch not in DEB_ARCH:
        raise MachineError(f"no Debian architecture for {arch!r}")
    foreign = sorted({c.name for c in components if c.arch not in ("", arch)})
    if foreign:
        raise MachineError(f"components built for another arch than {arch}: {', '.join(foreign)}")
    source = source or default_source()
    who, home = maintainer(source=source), homepage(source)
    deb_arch = DEB_ARCH[arch] if any(c.arch for c in components) else "all"
    epoch = source_date_epoch() if epoch is None else epoch
    out_dir.mkdir(parents=True, exist_ok=True)
    deb = out_dir / f"pymachine_{version}_{deb_arch}.deb"
    with tempfile.TemporaryDirectory(prefix="pm-deb-") as tmp:
        root = Path(tmp) / "root"
        (root / "usr" / "bin").mkdir(parents=True)
        build_pyz(root / "usr" / "bin" / "pymachine", epoch, source=source)
        stage(components, root, cache)
        check_vm_image(components, root, source, ())  # the repo lock ships none: Linux hosts build it
        doc = root / "usr" / "share" / "doc" / "pymachine"
        doc.mkdir(parents=True)
        (doc / "copyright").write_text(COPYRIGHT.format(homepage=home))
        (doc / "changelog.gz").write_bytes(_changelog(version, who, epoch))
        plugin = root / COMPOSE_PLUGIN
        if plugin.is_file():  # Compose is a static Go binary upstream, like Debian's own Go packages
            overrides = root / "usr" / "share" / "lintian" / "overrides"
            overrides.mkdir(parents=True)
            (overrides / "pymachine").write_text(f"pymachine: statically-linked-binary [{COMPOSE_PLUGIN}]\n")
        size_kb = sum(p.stat().st_size for p in walk_sorted(root) if p.is_file()) // 1024 + 1
        control_dir = root / "DEBIAN"
        control_dir.mkdir()
        template = packaging_file("deb", "control.in").read_text()
        control = render(template, {"VERSION": version, "INSTALLED_SIZE": str(size_kb), "ARCH": deb_arch,
                                    "MAINTAINER": who, "HOMEPAGE": home}, "control.in")
        (control_dir / "control").write_text(control)
        for path in walk_sorted(root):
            if path.is_dir():
                path.chmod(0o755)
            elif "vendor" in path.relative_to(root).parts or not os.access(path, os.X_OK):
                path.chmod(0o644)  # vendored modules are imported, never run
        normalise_tree(root, epoch)
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
        proc = subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(deb)],
            capture_output=True, text=True, env=env, check=False,
        )
        if proc.returncode != 0:
            raise MachineError(f"dpkg-deb failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return deb
