"""macOS flat .pkg: our xar/Bom/cpio writers checked by our readers AND by bsdtar and 7z."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from pymachine.installer import bom, xar
from pymachine.installer.fetch import IntegrityError
from pymachine.installer.lock import Lock
from pymachine.installer.macos import build_pkg, cpio_odc, read_cpio_odc
from pymachine.machine.errors import MachineError
from standins import compose_standin, current_recipe, image_filename, packed_image, tar_bytes, zip_bytes

pytest_plugins = ["standins"]  # fixtures (a conftest.py here would shadow tests/conftest.py)

EPOCH = 1700000000
DOCKER = "/usr/local/bin/docker"  # the real docker CLI (28.x)


def _vbox_flat_pkg(arch: str = "x86_64") -> bytes:
    """A stand-in VirtualBox component package (itself a xar) with its own Bom."""
    entries = [(".", 0o755, None), ("./Applications", 0o755, None),
               ("./Applications/VirtualBox.app", 0o755, f"stand-in app {arch}".encode())]
    payload = gzip.compress(cpio_odc(entries, EPOCH), mtime=0)
    info = b'<pkg-info format-version="2" identifier="org.virtualbox.pkg.virtualbox" version="7.1.4"/>'
    bom_blob = bom.write([bom.BomEntry(n, bom.TYPE_DIR if d is None else bom.TYPE_FILE,
                                       0o40755 if d is None else 0o100755, 0, 80, EPOCH, len(d or b""))
                          for n, _p, d in entries])
    return xar.write([xar.Member("PackageInfo", info), xar.Member("Payload", payload),
                      xar.Member("Bom", bom_blob)], EPOCH)


ARCH_NAMES = {"x86_64": "x86_64", "arm64": "aarch64"}  # upstream spellings in file names


@pytest.fixture
def mac_lock(http_root, tmp_path):
    """A macOS lock with both arches: per-arch python, docker, Compose (the static stand-in plugin),
    VirtualBox and image; the arch-free wheel (universal2/pure Python) serves both."""
    www, base = http_root
    files = {}
    for arch, upstream in ARCH_NAMES.items():
        files.update({
            f"cpython-{upstream}-apple-darwin-install_only.tar.gz": (
                tar_bytes({"python/bin/python3": f"#!stand-in python {arch}\n".encode()}),
                {"name": "python-runtime", "dest": "python", "unpack": "tar", "strip": 1, "arch": arch}),
            f"{upstream}/docker-27.3.1.tgz": (tar_bytes({"docker/docker": f"\x7fELF stand-in docker {arch}".encode()}),
                                              {"name": "docker-cli", "dest": "bin", "unpack": "tar", "strip": 1,
                                               "arch": arch}),
            f"docker-compose-darwin-{upstream}": (compose_standin() + arch.encode(),
                                                  {"name": "docker-compose", "dest": "cli-plugins/docker-compose",
                                                   "arch": arch}),
            f"VirtualBox-7.1.4-{arch}.pkg": (_vbox_flat_pkg(arch), {"name": "virtualbox", "version": "7.1.4",
                                                                    "dest": "installers/VirtualBox.pkg",
                                                                    "optional": True, "arch": arch}),
            image_filename(current_recipe(arch)): (packed_image(current_recipe(arch)), {
                "name": "vm-image", "dest": "cache/images", "unpack": "tar", "arch": arch}),  # its own recipe
        })
    files["pycparser-2.22-py3-none-any.whl"] = (zip_bytes({"pycparser/__init__.py": b"# stand-in\n"}),
                                                {"name": "wheel-pycparser", "dest": "lib", "unpack": "zip"})
    comps = []
    for name, (data, fields) in files.items():
        (www / name).parent.mkdir(parents=True, exist_ok=True)
        (www / name).write_bytes(data)
        comps.append({"version": "1", "url": f"{base}/{name}", "size": len(data),
                      "sha256": hashlib.sha256(data).hexdigest(), "unpack": "", "strip": 0, "optional": False,
                      "upstream": {}, **fields})
    path = tmp_path / "mac.lock.json"
    path.write_text(json.dumps({"schema": 1, "product": {}, "platforms": {"macos": comps}}))
    return Lock.load(path), www, tmp_path / "cache"


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_pkg_structure_is_read_the_same_by_us_bsdtar_and_7z(arch, mac_lock, src_snapshot, tmp_path):
    lock, _www, cache = mac_lock
    comps = lock.components("macos", arch)
    pkg = build_pkg(tmp_path / "a", comps, cache=cache, epoch=EPOCH, source=src_snapshot, arch=arch)
    again = build_pkg(tmp_path / "b", comps, cache=cache, epoch=EPOCH, source=src_snapshot, arch=arch)
    assert pkg.read_bytes() == again.read_bytes()  # reproducible
    assert pkg.name == f"pymachine-toolbox-0.1.0-{arch}.pkg"

    reader = xar.Reader(pkg.read_bytes())  # checks header, TOC sha1 and member sha1s
    ours = {p for p, e in reader.entries.items() if e.kind == "file"}
    assert {"Distribution", "pymachine.pkg/PackageInfo", "pymachine.pkg/Payload", "pymachine.pkg/Bom",
            "pymachine.pkg/Scripts", "VirtualBox.pkg/PackageInfo", "VirtualBox.pkg/Payload"} <= ours

    if shutil.which("bsdtar"):
        listed = subprocess.run(["bsdtar", "-tf", str(pkg)], capture_output=True, text=True, check=True,
                                timeout=60).stdout.split()
        assert {p for p in listed if not p.endswith("/")} >= ours
        out = tmp_path / "x"
        out.mkdir()
        subprocess.run(["bsdtar", "-xf", str(pkg), "-C", str(out)], check=True, timeout=60)
        for p in ours:
            assert (out / p).read_bytes() == reader.read(p), p
    if shutil.which("7z"):
        seven = subprocess.run(["7z", "l", "-ba", "-slt", str(pkg)], capture_output=True, text=True,
                               check=True, timeout=60).stdout
        names = {line[7:] for line in seven.splitlines() if line.startswith("Path = ")}
        assert ours <= names and "[TOC].xml" in names

    # Distribution: choices, the VirtualBox condition, pkg-refs that resolve to member directories
    dist = reader.read("Distribution").decode()
    root = ET.fromstring(dist)
    refs = {r.get("id"): (r.text or "") for r in root.iter("pkg-ref") if r.text}
    assert refs == {"io.pymachine.pkg.pymachine": "#pymachine.pkg", "org.virtualbox.pkg.virtualbox": "#VirtualBox.pkg"}
    for target in refs.values():
        assert reader.entries[target[1:]].kind == "directory"
    assert root.find("options").get("hostArchitectures") == arch
    vbox_choice = next(c for c in root.iter("choice") if c.get("id") == "virtualbox")
    assert vbox_choice.get("start_selected") == "vboxChoice()"
    assert "compareVersions(plist.CFBundleVersion, '7.1.4') === -1" in dist
    assert "vboxRunning()" in dist and "my.result.type = 'Fatal'" in dist
    assert not re.search(r"@[A-Z_]+@", dist)

    # Payload (odc cpio, uid 0 gid 80) agrees with PackageInfo and with the Bom
    payload = read_cpio_odc(gzip.decompress(reader.read("pymachine.pkg/Payload")))
    names = [n for n, *_ in payload]
    assert "./usr/local/pymachine/bin/pymachine" in names and "./usr/local/pymachine/bin/docker" in names
    # this arch's native files only; the arch-free wheel in both
    other = {"x86_64": b"arm64", "arm64": b"x86_64"}[arch]
    natives = {n: d for n, _m, _u, _g, d in payload if n.endswith(("/python3", "/docker", "/docker-compose"))}
    assert set(natives) == {"./usr/local/pymachine/python/bin/python3", "./usr/local/pymachine/bin/docker",
                            "./usr/local/pymachine/cli-plugins/docker-compose"}
    for name, data in natives.items():  # the compose stand-in is a Linux ELF tagged with its arch at the end
        assert data.endswith(arch.encode()) if name.endswith("compose") else (arch.encode() in data
                                                                            and other not in data), name
    assert "./usr/local/pymachine/lib/pycparser/__init__.py" in names
    vbox_payload = read_cpio_odc(gzip.decompress(reader.read("VirtualBox.pkg/Payload")))
    assert [d for n, *_r, d in vbox_payload if n.endswith("VirtualBox.app")] == [f"stand-in app {arch}".encode()]
    assert "./usr/local/pymachine/lib/pymachine/machine/quickstart.py" in names
    # pymachine's image (with its VDI) as cache/images/<recipe>/ under the prefix, which postinstall seeds
    # into the console user's ~/.docker/machine/cache
    image_dir = f"./usr/local/pymachine/cache/images/{current_recipe(arch)}"
    shipped = {n.rsplit("/", 1)[1]: d for n, _m, _u, _g, d in payload if n.startswith(image_dir + "/")}
    assert set(shipped) == {"manifest.json", "disk.qcow2", "disk.vdi", "vmlinuz", "initrd.img", "SHA256SUMS"}
    seeded = tmp_path / "seeded" / current_recipe(arch)
    seeded.mkdir(parents=True)
    for name, data in shipped.items():
        (seeded / name).write_bytes(data)
    from pymachine.engine import images

    assert images.find_image(seeded.parent, {"x86_64": "amd64", "arm64": "arm64"}[arch]) is not None
    assert all(uid == 0 and gid == 80 for _n, _m, uid, gid, _d in payload)
    info = ET.fromstring(reader.read("pymachine.pkg/PackageInfo"))
    assert int(info.find("payload").get("numberOfFiles")) == len(payload)
    boms = {e.path: e for e in bom.read(reader.read("pymachine.pkg/Bom"))}
    assert set(boms) == set(names)
    for name, mode, _uid, _gid, data in payload:
        assert boms[name].mode == mode
        if mode & 0o100000:
            assert boms[name].size == len(data) and boms[name].cksum == bom.posix_cksum(data)
    scripts = {n: (m, d) for n, m, _u, _g, d in read_cpio_odc(gzip.decompress(reader.read("pymachine.pkg/Scripts")))}
    mode, script = scripts["./postinstall"]
    assert mode & 0o111 and b'ln -sf "$P/bin/$tool" "/usr/local/bin/$tool"' in script
    assert b'ln -sf "$P/cli-plugins/docker-compose" /usr/local/bin/docker-compose' in script
    assert b'-m pymachine.installer cli-plugins "$P/cli-plugins"' in script


def test_bom_cksum_matches_posix_cksum_tool():
    data = b"pymachine bom\n" * 7
    out = subprocess.run(["cksum"], input=data, capture_output=True, check=True, timeout=10).stdout.split()
    assert bom.posix_cksum(data) == int(out[0])


def test_tampered_xar_member_is_detected_and_tampered_component_stops_build(mac_lock, src_snapshot, tmp_path):
    lock, www, cache = mac_lock
    comps = lock.components("macos", "x86_64")
    pkg = build_pkg(tmp_path, [c for c in comps if c.name != "virtualbox"], cache=cache, epoch=EPOCH,
                    source=src_snapshot)
    blob = bytearray(pkg.read_bytes())
    blob[-10] ^= 0x01
    reader = xar.Reader(bytes(blob))
    last = max(reader.entries.values(), key=lambda e: e.offset + e.length)
    with pytest.raises(Exception, match="checksum does not match"):
        reader.read(last.path)
    vbox = next(c for c in comps if c.name == "virtualbox")
    served = www / vbox.filename
    served.write_bytes(b"\0" + served.read_bytes()[1:])
    with pytest.raises(IntegrityError, match="'virtualbox'"):
        build_pkg(tmp_path / "bad", comps, cache=cache, epoch=EPOCH, source=src_snapshot)


# Apple's Installer JavaScript runs the Distribution's <script> with a `system` object
# (Installer JS reference: system.sysctl, system.files.plistAtPath, system.compareVersions,
# system.run) and `my.result` for installation checks.  node evaluates the same text against
# a stub of that object for an Apple Silicon and an Intel Mac.
_NODE_HARNESS = r"""
const vm = require('vm');
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const calls = [];
const system = {
  sysctl(name) {
    calls.push(name);
    if (input.sysctlThrows) { throw new Error('unknown sysctl ' + name); }  // an Intel Mac may lack the key
    return name === 'hw.optional.arm64' && input.appleSilicon ? 1 : undefined;
  },
  files: { plistAtPath(path) { return input.vbox ? { CFBundleVersion: input.vbox } : null; } },
  compareVersions(a, b) {
    const pa = a.split('.').map(Number), pb = b.split('.').map(Number);
    for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
      const x = pa[i] || 0, y = pb[i] || 0;
      if (x !== y) { return x < y ? -1 : 1; }
    }
    return 0;
  },
  run() { return input.vboxRunning ? 0 : 1; },
};
const ctx = vm.createContext({ system, my: { result: {} } });
vm.runInContext(input.script, ctx);
const out = { check: vm.runInContext(input.check, ctx), result: ctx.my.result, choices: {}, calls };
for (const [id, expr] of Object.entries(input.choices)) { out.choices[id] = vm.runInContext(expr, ctx); }
process.stdout.write(JSON.stringify(out));
"""


def _run_distribution(dist: str, apple_silicon: bool, vbox: str | None = None, vbox_running: bool = False,
                      sysctl_throws: bool = False) -> dict:
    root = ET.fromstring(dist)
    choices = {c.get("id"): c.get("start_selected") for c in root.iter("choice")}
    payload = {"script": root.find("script").text, "check": root.find("installation-check").get("script"),
               "choices": choices, "appleSilicon": apple_silicon, "vbox": vbox, "vboxRunning": vbox_running,
               "sysctlThrows": sysctl_throws}
    proc = subprocess.run(["node", "-e", _NODE_HARNESS], input=json.dumps(payload), capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.skipif(not shutil.which("node"), reason="needs node to run the Distribution's installer JavaScript")
def test_distribution_choices_follow_the_mac_it_runs_on(mac_lock, src_snapshot, tmp_path):
    lock, _www, cache = mac_lock
    dists = {}
    for arch in ("x86_64", "arm64"):
        pkg = build_pkg(tmp_path / arch, lock.components("macos", arch), cache=cache, epoch=EPOCH,
                        source=src_snapshot, arch=arch)
        dists[arch] = xar.Reader(pkg.read_bytes()).read("Distribution").decode()
    for arch, dist in dists.items():
        for host_arm in (True, False):
            right = (arch == "arm64") == host_arm
            out = _run_distribution(dist, apple_silicon=host_arm)
            assert "hw.optional.arm64" in out["calls"]
            assert out["check"] is right, (arch, host_arm, out)
            assert out["choices"] == {"pymachine": right, "virtualbox": right}  # no VirtualBox yet: offered
            if not right:
                assert out["result"]["type"] == "Fatal"
                want = "arm64" if host_arm else "x86_64"
                assert f"pymachine-toolbox-0.1.0-{want}.pkg" in out["result"]["message"]
                assert ("Apple Silicon" if arch == "arm64" else "Intel") in out["result"]["title"]
    # a sysctl that throws reads as Intel
    assert _run_distribution(dists["x86_64"], apple_silicon=False, sysctl_throws=True)["check"] is True
    assert _run_distribution(dists["arm64"], apple_silicon=True, sysctl_throws=True)["check"] is False
    # the right Mac with a current VirtualBox: not offered; an older running one stops the install
    current = _run_distribution(dists["arm64"], apple_silicon=True, vbox="7.1.4")
    assert current["check"] is True and current["choices"]["virtualbox"] is False
    running = _run_distribution(dists["arm64"], apple_silicon=True, vbox="7.0.20", vbox_running=True)
    assert running["check"] is False and running["result"]["title"] == "VirtualBox is running"


def test_pkg_refuses_components_of_the_other_arch(mac_lock, src_snapshot, tmp_path):
    lock, _www, cache = mac_lock
    with pytest.raises(MachineError, match="another arch than arm64: docker-cli, docker-compose"):
        build_pkg(tmp_path, lock.components("macos"), cache=cache, epoch=EPOCH, source=src_snapshot, arch="arm64")
    assert not list(tmp_path.glob("*.pkg"))


@pytest.mark.skipif(not Path(DOCKER).is_file(), reason="needs the docker CLI")
def test_docker_compose_answers_from_the_staged_mac_tree(mac_lock, src_snapshot, tmp_path):
    """What postinstall does, with the real docker CLI: the Compose plugin in the installed tree is
    registered in the user's existing config.json (merged) and `docker compose` finds it."""
    from pymachine.machine import cli_plugins as docker_config

    lock, _www, cache = mac_lock
    pkg = build_pkg(tmp_path / "pkg", lock.components("macos", "x86_64"), cache=cache, epoch=EPOCH,
                    source=src_snapshot, arch="x86_64")
    payload = read_cpio_odc(gzip.decompress(xar.Reader(pkg.read_bytes()).read("pymachine.pkg/Payload")))
    installed = tmp_path / "installed"
    for name, mode, _uid, _gid, data in payload:
        path = installed / name
        if mode & 0o040000:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.write_bytes(data)
            path.chmod(mode & 0o777)
    prefix = installed / "usr/local/pymachine"
    assert docker_config.bundled_plugin_dir(prefix / "lib") == prefix / "cli-plugins"
    home = tmp_path / "home" / ".docker"
    home.mkdir(parents=True)
    existing = {"auths": {"registry.example": {"auth": "dXNlcjpwYXNz"}}, "credsStore": "desktop",
                "cliPluginsExtraDirs": ["/opt/other-plugins"], "psFormat": "table {{.ID}}"}
    (home / "config.json").write_text(json.dumps(existing))
    (home / "config.json").chmod(0o600)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "DOCKER_CONFIG": str(home)}
    res = subprocess.run([sys.executable, "-m", "pymachine.installer", "cli-plugins", str(prefix / "cli-plugins")],
                         capture_output=True, text=True, timeout=60, env={**env, "PYTHONPATH": str(prefix / "lib")},
                         cwd=tmp_path, check=False)
    assert res.returncode == 0, res.stderr
    merged = json.loads((home / "config.json").read_text())
    assert merged == {**existing, "cliPluginsExtraDirs": ["/opt/other-plugins", str(prefix / "cli-plugins")]}
    assert (home / "config.json").stat().st_mode & 0o777 == 0o600
    compose = subprocess.run([DOCKER, "compose", "version"], capture_output=True, text=True, timeout=60, env=env,
                             check=False)
    assert compose.returncode == 0, compose.stderr
    assert compose.stdout.startswith("Docker Compose version v2.30.3 (pymachine stand-in")
    assert str(prefix / "cli-plugins" / "docker-compose") in compose.stdout
    # without the registration the docker CLI does not find it: the config is what makes it work
    (home / "config.json").write_text(json.dumps(existing))
    missing = subprocess.run([DOCKER, "compose", "version"], capture_output=True, text=True, timeout=60, env=env,
                             check=False)
    assert "pymachine stand-in" not in missing.stdout


def test_build_command_makes_one_pkg_per_mac_and_sums_them(mac_lock, src_snapshot, tmp_path):
    """``python -m pymachine.installer build --platform macos`` from a lock naming both arches."""
    _lock, _www, cache = mac_lock
    out = tmp_path / "dist"
    env = {**os.environ, "PYMACHINE_DOWNLOAD_CACHE": str(cache), "SOURCE_DATE_EPOCH": str(EPOCH)}
    proc = subprocess.run([sys.executable, "-m", "pymachine.installer", "build", "--platform", "macos",
                           "--lock", str(tmp_path / "mac.lock.json"), "--out", str(out), "--source", str(src_snapshot)],
                          capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    built = sorted(p.name for p in out.iterdir())
    assert built == ["SHA256SUMS", "pymachine-toolbox-0.1.0-arm64.pkg", "pymachine-toolbox-0.1.0-x86_64.pkg"]
    sums = (out / "SHA256SUMS").read_text()
    for name in built[1:]:
        assert f"{hashlib.sha256((out / name).read_bytes()).hexdigest()}  {name}" in sums
        dist = xar.Reader((out / name).read_bytes()).read("Distribution").decode()
        assert f'hostArchitectures="{name.rsplit("-", 1)[1][:-4]}"' in dist
