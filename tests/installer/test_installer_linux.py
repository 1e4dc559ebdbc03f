"""Linux artefacts: reproducible .deb and .pyz, installed into a throwaway dpkg root."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from pymachine.installer.linux import build_deb, build_pyz
from pymachine.installer.lock import Component
from pymachine.machine import __version__

pytest_plugins = ["standins"]  # fixtures (a conftest.py here would shadow tests/conftest.py)

pytestmark = pytest.mark.integration


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_pyz_runs_and_is_reproducible(tmp_path, src_snapshot):
    a = build_pyz(tmp_path / "a" / "pymachine.pyz", epoch=1700000000, source=src_snapshot)
    b = build_pyz(tmp_path / "b" / "pymachine.pyz", epoch=1700000000, source=src_snapshot)
    c = build_pyz(tmp_path / "c" / "pymachine.pyz", epoch=1700000999, source=src_snapshot)
    assert _sha(a) == _sha(b)
    assert _sha(a) != _sha(c)  # the epoch really is what the timestamps come from
    out = subprocess.run([sys.executable, str(a), "--version"], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path, check=True)
    assert out.stdout.strip() == f"pymachine version {__version__}, build python"
    qs = subprocess.run([sys.executable, str(a), "quickstart", "--help"], capture_output=True, text=True,
                        timeout=60, cwd=tmp_path, check=True)
    assert "PYMACHINE_QUICKSTART_DRIVER" in qs.stdout  # the quickstart (installer package) is inside


def _deb(tmp_path: Path, name: str, comps: list[Component], cache: Path, source: Path) -> Path:
    return build_deb(tmp_path / name, comps, cache=cache, epoch=1700000000, source=source)


def test_deb_contents_control_install_and_reproducible(standin_lock, tmp_path, src_snapshot):
    from pymachine.installer.lock import Lock

    lock_path, _www, cache = standin_lock
    compose = [c for c in Lock.load(lock_path).components("windows") if c.name == "docker-compose"]
    compose[0].dest = "cli-plugins/docker-compose"
    deb1 = _deb(tmp_path, "one", compose, cache, src_snapshot)
    deb2 = _deb(tmp_path, "two", compose, cache, src_snapshot)
    assert _sha(deb1) == _sha(deb2)

    info = subprocess.run(["dpkg-deb", "-I", str(deb1)], capture_output=True, text=True, check=True).stdout
    assert "Package: pymachine" in info and f"Version: {__version__}" in info
    assert "Architecture: all" in info
    assert "Recommends: qemu-system-x86, qemu-utils, docker.io | docker-ce-cli" in info
    assert "python3-paramiko" in info and "@" not in info.split("Maintainer")[0]
    listing = subprocess.run(["dpkg-deb", "-c", str(deb1)], capture_output=True, text=True, check=True).stdout
    lines = listing.splitlines()
    assert any(line.startswith("-rwxr-xr-x root/root") and line.endswith("./usr/bin/pymachine") for line in lines)
    assert any(line.endswith("./usr/lib/pymachine/cli-plugins/docker-compose") for line in lines)
    assert all(" 2023-11-14 22:13 " in line for line in lines)  # mtimes normalised to the epoch
    names = [line.split()[-1] for line in lines]
    assert names == sorted(names, key=lambda n: n.split("/"))  # sorted members

    # install with dpkg into a throwaway root (dependencies are forced: the root is empty)
    root = tmp_path / "root"
    (root / "var/lib/dpkg/updates").mkdir(parents=True)
    (root / "var/lib/dpkg/info").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text("")
    proc = subprocess.run(
        ["dpkg", f"--root={root}", "--force-not-root", "--force-script-chrootless", "--force-depends",
         "--log=/dev/null", "-i", str(deb1)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Status: install ok installed" in (root / "var/lib/dpkg/status").read_text()
    binary = root / "usr/bin/pymachine"
    # the installed /usr/bin/pymachine, run by a python that has the Depends (the venv's)
    out = subprocess.run([sys.executable, str(binary), "--version"], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path, check=True)
    assert out.stdout.strip() == f"pymachine version {__version__}, build python"
    assert binary.read_bytes().startswith(b"#!/usr/bin/python3\n")
    assert (root / "usr/lib/pymachine/cli-plugins/docker-compose").read_bytes().startswith(b"MZ")


def test_deb_build_stops_on_tampered_component(standin_lock, tmp_path, src_snapshot):
    from pymachine.installer.fetch import IntegrityError
    from pymachine.installer.lock import Lock

    lock_path, www, cache = standin_lock
    comp = next(c for c in Lock.load(lock_path).components("windows") if c.name == "vm-image")
    served = www / comp.filename
    data = bytearray(served.read_bytes())
    data[-1] ^= 0xFF
    served.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="vm-image") as exc:
        _deb(tmp_path, "bad", [comp], cache, src_snapshot)
    assert comp.sha256 in str(exc.value) and hashlib.sha256(bytes(data)).hexdigest() in str(exc.value)
    assert not list((tmp_path / "bad").glob("*.deb"))
