"""Linux artefacts: reproducible .deb and .pyz, installed into a throwaway dpkg root."""

from __future__ import annotations

import hashlib
import shutil
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


def test_deb_contents_control_install_and_reproducible(linux_lock, tmp_path, src_snapshot):
    comps, _www, cache = linux_lock
    deb1 = _deb(tmp_path, "one", comps, cache, src_snapshot)
    deb2 = _deb(tmp_path, "two", comps, cache, src_snapshot)
    assert _sha(deb1) == _sha(deb2)
    assert deb1.name == f"pymachine_{__version__}_amd64.deb"  # Compose is a native binary: per-arch package

    info = subprocess.run(["dpkg-deb", "-f", str(deb1)], capture_output=True, text=True, check=True).stdout
    fields = dict(line.split(": ", 1) for line in info.splitlines() if ": " in line and not line.startswith(" "))
    assert fields["Package"] == "pymachine" and fields["Version"] == __version__
    assert fields["Architecture"] == "amd64"
    # versions paramiko needs, all met by Debian 12 (38.0.4, 3.2.2, 1.5.0); paramiko itself is vendored
    assert fields["Depends"] == ("python3 (>= 3.11), python3-cryptography (>= 38), python3-bcrypt (>= 3.2), "
                                 "python3-nacl (>= 1.5)")
    assert "paramiko" not in fields["Depends"]
    assert "localhost" not in fields["Maintainer"] and "localhost" not in fields["Homepage"]
    assert fields["Homepage"].startswith("https://")
    listing = subprocess.run(["dpkg-deb", "-c", str(deb1)], capture_output=True, text=True, check=True).stdout
    lines = listing.splitlines()
    assert any(line.startswith("-rwxr-xr-x root/root") and line.endswith("./usr/bin/pymachine") for line in lines)
    assert any(line.startswith("-rwxr-xr-x root/root") and line.endswith(
        "./usr/lib/docker/cli-plugins/docker-compose") for line in lines)
    assert any(line.endswith("./usr/lib/pymachine/vendor/paramiko/__init__.py") for line in lines)
    assert any(line.endswith("./usr/share/doc/pymachine/changelog.gz") for line in lines)
    assert all(" 2023-11-14 22:13 " in line for line in lines)  # mtimes normalised to the epoch
    names = [line.split()[-1] for line in lines]
    assert names == sorted(names, key=lambda n: n.split("/"))  # sorted members

    # install with dpkg into a throwaway root (dependencies are forced: the root is empty;
    # tests/hosts/test_deb_install.py installs it into real Debian 12 and 13 roots)
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
    assert binary.read_bytes().startswith(b"#!/usr/bin/python3\n")
    # the installed launcher puts its own vendor dir first: paramiko comes from there, not the venv
    which = subprocess.run([sys.executable, str(binary), "--version"], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path, check=True)
    assert which.stdout.strip() == f"pymachine version {__version__}, build python"
    vendor = root / "usr/lib/pymachine/vendor"
    code = ("import sys, runpy; sys.path.insert(0, sys.argv[1]); "
            "import paramiko, filelock, pycdlib; print(paramiko.__file__); print(filelock.__file__); "
            "print(pycdlib.__file__)")
    files = subprocess.run([sys.executable, "-c", code, str(vendor)], capture_output=True, text=True,
                           timeout=60, check=True).stdout.split()
    assert len(files) == 3 and all(f.startswith(str(vendor)) for f in files)
    # the installed pymachine (the pyz) writes a seed ISO with the vendored pycdlib (Debian 12 has 1.12)
    seed = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import pycdlib; "
            "from pymachine.machine import seed; assert pycdlib.__file__.startswith(sys.argv[1]); "
            "seed.write_seed_iso(sys.argv[3], hostname='deb1', user='docker', ssh_pubkey='ssh-ed25519 AAAA k', "
            "proxy=None, instance_id='i-1'); print(sorted(seed.read_seed_iso(sys.argv[3])))")
    iso = tmp_path / "seed.iso"
    out = subprocess.run([sys.executable, "-I", "-c", seed, str(vendor), str(binary), str(iso)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "user-data" in out.stdout and iso.read_bytes()[0x8001:0x8006] == b"CD001"
    plugin = root / "usr/lib/docker/cli-plugins/docker-compose"
    meta = subprocess.run([str(plugin), "docker-cli-plugin-metadata"], capture_output=True, text=True,
                          timeout=10, check=True).stdout
    assert '"SchemaVersion":"0.1.0"' in meta


@pytest.mark.skipif(not shutil.which("lintian"), reason="needs lintian (scripts/setup.sh installs it)")
def test_deb_has_no_lintian_errors(linux_lock, tmp_path, src_snapshot):
    comps, _www, cache = linux_lock
    deb = _deb(tmp_path, "lint", comps, cache, src_snapshot)
    lint = ["lintian", "--fail-on", "error", "--tag-display-limit", "0", str(deb)]
    proc = subprocess.run(lint, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not [line for line in proc.stdout.splitlines() if line.startswith("E: ")], proc.stdout
    # the one error lintian would report is the static Compose plugin (as for Debian's own Go
    # packages), overridden by name: the check saw a real static binary
    shown = subprocess.run([*lint, "--show-overrides"], capture_output=True, text=True, timeout=300, check=False)
    assert "O: pymachine: statically-linked-binary [usr/lib/docker/cli-plugins/docker-compose]" in shown.stdout


def test_deb_maintainer_is_a_real_address_and_arch_follows_components(linux_lock, tmp_path, src_snapshot,
                                                                     monkeypatch):
    from pymachine.installer.linux import MAINTAINER_ENV, maintainer
    from pymachine.machine.errors import MachineError

    assert "localhost" not in maintainer({})
    assert maintainer({MAINTAINER_ENV: "Jane Doe <jane@example.org>"}) == "Jane Doe <jane@example.org>"
    for bad in ("pymachine developers <pymachine@localhost>", "nobody", "<a@b.c>"):
        with pytest.raises(MachineError, match=MAINTAINER_ENV):
            maintainer({MAINTAINER_ENV: bad})
    comps, _www, cache = linux_lock
    wheels_only = [c for c in comps if not c.arch]
    deb = _deb(tmp_path, "all", wheels_only, cache, src_snapshot)
    assert deb.name.endswith("_all.deb")  # nothing native inside
    monkeypatch.setenv(MAINTAINER_ENV, "pymachine@localhost")
    with pytest.raises(MachineError, match=MAINTAINER_ENV):
        _deb(tmp_path, "bad", comps, cache, src_snapshot)
    assert not list((tmp_path / "bad").glob("*.deb"))
    compose = next(c for c in comps if c.arch)
    with pytest.raises(MachineError, match="another arch"):
        build_deb(tmp_path / "arm", comps, cache=cache, epoch=1700000000, source=src_snapshot, arch="arm64")
    assert compose.arch == "x86_64"
    # an arm64 Compose makes an arm64 package (the file here is the x86_64 stand-in relabelled: never run)
    monkeypatch.delenv(MAINTAINER_ENV)
    compose.arch = "arm64"
    arm = build_deb(tmp_path / "arm", comps, cache=cache, epoch=1700000000, source=src_snapshot, arch="arm64")
    assert arm.name == f"pymachine_{__version__}_arm64.deb"
    fields = subprocess.run(["dpkg-deb", "-f", str(arm), "Architecture"], capture_output=True, text=True,
                            check=True).stdout
    assert fields.strip() == "arm64"


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
