"""A real engine bundle for tests, built once from Debian's packages and cached.

``real_engine_bundle()`` returns a bundle built by the installed
``pymachine engine bundle --from-debs`` from the same packages ``--from-apt``
would fetch (docker.io, containerd, runc, tini and their direct library
dependencies), without any network: each .deb comes from apt's archive cache
when the installed version is there, and is otherwise repacked from the files
dpkg installed on this machine (checked with ``dpkg --verify`` first).

The bundle is cached under ``$PYMACHINE_TEST_CACHE`` (default
``/var/tmp/pymachine-test-cache``), keyed by the sha256 of the input .debs and
of ``engine/bundle.py`` (a change to the builder rebuilds it), built into a
temp name and renamed under a lock, so concurrent test processes share one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent
APT_ARCHIVES = Path("/var/cache/apt/archives")
LOCK_TIMEOUT = 600.0
# dpkg status fields that describe this machine's installation, not the package.
_LOCAL_FIELDS = {"Status", "Conffiles", "Config-Version"}


def cache_dir() -> Path:
    path = Path(os.environ.get("PYMACHINE_TEST_CACHE", "/var/tmp/pymachine-test-cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _query(package: str, fmt: str) -> str | None:
    proc = subprocess.run(["dpkg-query", "-W", "-f", fmt, package], capture_output=True, text=True,
                          check=False)
    return proc.stdout if proc.returncode == 0 and proc.stdout.strip() else None


def engine_packages() -> list[str]:
    """What ``--from-apt`` downloads: the engine packages and their lib* dependencies."""
    from pymachine.engine import bundle

    return [*bundle.APT_PACKAGES, *bundle.apt_library_packages(bundle.APT_PACKAGES)]


def _control_from_status(package: str) -> str:
    """DEBIAN/control for an installed package: its ``dpkg -s`` record minus local fields."""
    status = subprocess.run(["dpkg", "-s", package], capture_output=True, text=True, check=True).stdout
    out: list[str] = []
    keep = True
    for line in status.splitlines():
        if line and not line[0].isspace():
            keep = line.split(":", 1)[0] not in _LOCAL_FIELDS
        if keep and line.strip():
            out.append(line)
    return "\n".join(out) + "\n"


def repack_installed(package: str, dest_dir: Path) -> Path:
    """Rebuild ``package``'s .deb from the files dpkg installed (reproducibly:
    SOURCE_DATE_EPOCH=0, root-owned), after checking them with ``dpkg --verify``."""
    verify = subprocess.run(["dpkg", "--verify", package], capture_output=True, text=True, check=False)
    changed = [line for line in verify.stdout.splitlines() if line and " c " not in line[:12]]
    if verify.returncode != 0 or changed:
        raise RuntimeError(f"cannot repack {package}: its installed files changed: {changed[:3]}")
    version, arch = (_query(package, "${Version} ${Architecture}") or "").split()
    out = dest_dir / f"{package}_{version.replace(':', '%3a')}_{arch}.deb"
    if out.is_file():
        return out
    with tempfile.TemporaryDirectory(prefix=f"repack-{package}-", dir=dest_dir) as tmp:
        tree = Path(tmp) / "tree"
        (tree / "DEBIAN").mkdir(parents=True)
        listing = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True,
                                 check=True).stdout
        for line in listing.splitlines():
            src = Path(line)
            if not line.startswith("/") or src.is_dir():  # dirs (and merged-/usr dir links) come free
                continue
            if not (src.is_file() or src.is_symlink()):
                continue
            dst = tree / line.lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                dst.symlink_to(os.readlink(src))
            else:
                shutil.copy2(src, dst)
        (tree / "DEBIAN" / "control").write_text(_control_from_status(package))
        tmp_deb = Path(tmp) / out.name
        subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(tmp_deb)],
                       env=dict(os.environ, SOURCE_DATE_EPOCH="0"), check=True, capture_output=True)
        os.replace(tmp_deb, out)
    return out


def engine_debs(dest_dir: Path) -> list[Path]:
    """One .deb per engine package, without network (see the module docstring)."""
    debs = []
    for package in engine_packages():
        installed = _query(package, "${Version} ${Architecture}")
        if installed is None:
            pytest.skip(f"Debian package {package} is not installed here: cannot get its .deb offline")
        version, arch = installed.split()
        cached = APT_ARCHIVES / f"{package}_{version.replace(':', '%3a')}_{arch}.deb"
        debs.append(cached if cached.is_file() else repack_installed(package, dest_dir))
    return debs


class _Locked:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.fh = open(self.path, "a")
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.fh.close()
                    raise TimeoutError(f"waited {LOCK_TIMEOUT:g}s for {self.path}") from None
                time.sleep(0.5)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def bundle_key(debs: list[Path]) -> str:
    digest = hashlib.sha256()
    for deb in sorted(debs, key=lambda p: p.name):
        digest.update(f"{deb.name} {_sha256(deb)}\n".encode())
    digest.update((REPO / "engine" / "bundle.py").read_bytes())
    return digest.hexdigest()[:16]


def build_with_cli(deb_dir: Path, output: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed ``pymachine engine bundle --from-debs`` as a user would."""
    pymachine = BIN_DIR / "pymachine"
    exe = str(pymachine) if pymachine.exists() else shutil.which("pymachine")
    assert exe, "the pymachine console script is not installed (pip install -e .)"
    return subprocess.run([exe, "engine", "bundle", "--from-debs", str(deb_dir), "-o", str(output)],
                          capture_output=True, text=True, timeout=timeout, check=False)


def real_engine_bundle() -> Path:
    """The cached real bundle (built on first use, ~25 s; then instant)."""
    cache = cache_dir()
    debs_dir = cache / "engine-debs"
    debs_dir.mkdir(exist_ok=True)
    with _Locked(cache / "engine-bundle.lock"):
        debs = engine_debs(debs_dir)
        final = cache / f"engine-bundle-{bundle_key(debs)}.tar.gz"
        if final.is_file():
            return final
        with tempfile.TemporaryDirectory(prefix="engine-bundle-", dir=cache) as tmp:
            inputs = Path(tmp) / "debs"
            inputs.mkdir()
            for deb in debs:
                (inputs / deb.name).symlink_to(deb)
            out = Path(tmp) / "bundle.tar.gz"
            proc = build_with_cli(inputs, out)
            if proc.returncode != 0:
                raise RuntimeError(f"pymachine engine bundle failed ({proc.returncode}): {proc.stderr.strip()}")
            os.replace(out, final)
        print(f"[bundle-cache] built {final}", file=sys.stderr)
    return final
