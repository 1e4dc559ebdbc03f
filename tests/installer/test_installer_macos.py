"""macOS flat .pkg: our xar/Bom/cpio writers checked by our readers AND by bsdtar and 7z."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest
from standins import current_recipe, exe_stub, image_filename, packed_image, tar_bytes

from pymachine.installer import bom, xar
from pymachine.installer.fetch import IntegrityError
from pymachine.installer.lock import Lock
from pymachine.installer.macos import build_pkg, cpio_odc, read_cpio_odc

pytest_plugins = ["standins"]  # fixtures (a conftest.py here would shadow tests/conftest.py)

EPOCH = 1700000000


def _vbox_flat_pkg() -> bytes:
    """A stand-in VirtualBox component package (itself a xar) with its own Bom."""
    entries = [(".", 0o755, None), ("./Applications", 0o755, None),
               ("./Applications/VirtualBox.app", 0o755, b"stand-in app")]
    payload = gzip.compress(cpio_odc(entries, EPOCH), mtime=0)
    info = b'<pkg-info format-version="2" identifier="org.virtualbox.pkg.virtualbox" version="7.1.4"/>'
    bom_blob = bom.write([bom.BomEntry(n, bom.TYPE_DIR if d is None else bom.TYPE_FILE,
                                       0o40755 if d is None else 0o100755, 0, 80, EPOCH, len(d or b""))
                          for n, _p, d in entries])
    return xar.write([xar.Member("PackageInfo", info), xar.Member("Payload", payload),
                      xar.Member("Bom", bom_blob)], EPOCH)


@pytest.fixture
def mac_lock(http_root, tmp_path):
    www, base = http_root
    files = {
        "cpython-install_only.tar.gz": (tar_bytes({"python/bin/python3": b"#!stand-in python\n"}),
                                        {"name": "python-runtime", "dest": "python", "unpack": "tar", "strip": 1}),
        "docker-27.3.1.tgz": (tar_bytes({"docker/docker": b"\x7fELF stand-in docker"}),
                              {"name": "docker-cli", "dest": "bin", "unpack": "tar", "strip": 1}),
        "docker-compose-darwin-x86_64": (exe_stub("compose"), {"name": "docker-compose", "dest": "bin/docker-compose"}),
        "VirtualBox-7.1.4.pkg": (_vbox_flat_pkg(), {"name": "virtualbox", "version": "7.1.4",
                                                    "dest": "installers/VirtualBox.pkg", "optional": True}),
        image_filename(): (packed_image(), {"name": "vm-image", "dest": "cache/images", "unpack": "tar"}),
    }
    comps = []
    for name, (data, fields) in files.items():
        (www / name).write_bytes(data)
        comps.append({"version": "1", "url": f"{base}/{name}", "size": len(data),
                      "sha256": hashlib.sha256(data).hexdigest(), "unpack": "", "strip": 0, "optional": False,
                      "upstream": {}, **fields})
    path = tmp_path / "mac.lock.json"
    path.write_text(json.dumps({"schema": 1, "product": {}, "platforms": {"macos": comps}}))
    return Lock.load(path).components("macos"), www, tmp_path / "cache"


def test_pkg_structure_is_read_the_same_by_us_bsdtar_and_7z(mac_lock, src_snapshot, tmp_path):
    comps, _www, cache = mac_lock
    pkg = build_pkg(tmp_path / "a", comps, cache=cache, epoch=EPOCH, source=src_snapshot)
    again = build_pkg(tmp_path / "b", comps, cache=cache, epoch=EPOCH, source=src_snapshot)
    assert pkg.read_bytes() == again.read_bytes()  # reproducible

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
    vbox_choice = next(c for c in root.iter("choice") if c.get("id") == "virtualbox")
    assert vbox_choice.get("start_selected") == "vboxNeedsUpgrade()"
    assert "compareVersions(plist.CFBundleVersion, '7.1.4') === -1" in dist
    assert "vboxRunning()" in dist and "my.result.type = 'Fatal'" in dist
    assert not re.search(r"@[A-Z_]+@", dist)

    # Payload (odc cpio, uid 0 gid 80) agrees with PackageInfo and with the Bom
    payload = read_cpio_odc(gzip.decompress(reader.read("pymachine.pkg/Payload")))
    names = [n for n, *_ in payload]
    assert "./usr/local/pymachine/bin/pymachine" in names and "./usr/local/pymachine/bin/docker" in names
    assert "./usr/local/pymachine/lib/pymachine/installer/quickstart.py" in names
    # pymachine's image (with its VDI) as cache/images/<recipe>/ under the prefix, which postinstall seeds
    # into the console user's ~/.docker/machine/cache
    image_dir = f"./usr/local/pymachine/cache/images/{current_recipe()}"
    shipped = {n.rsplit("/", 1)[1]: d for n, _m, _u, _g, d in payload if n.startswith(image_dir + "/")}
    assert set(shipped) == {"manifest.json", "disk.qcow2", "disk.vdi", "vmlinuz", "initrd.img", "SHA256SUMS"}
    seeded = tmp_path / "seeded" / current_recipe()
    seeded.mkdir(parents=True)
    for name, data in shipped.items():
        (seeded / name).write_bytes(data)
    from pymachine.engine import images

    assert images.find_image(seeded.parent) is not None
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
    assert mode & 0o111 and b'ln -sf "/usr/local/pymachine/bin/$tool" "/usr/local/bin/$tool"' in script


def test_bom_cksum_matches_posix_cksum_tool():
    data = b"pymachine bom\n" * 7
    out = subprocess.run(["cksum"], input=data, capture_output=True, check=True, timeout=10).stdout.split()
    assert bom.posix_cksum(data) == int(out[0])


def test_tampered_xar_member_is_detected_and_tampered_component_stops_build(mac_lock, src_snapshot, tmp_path):
    comps, www, cache = mac_lock
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
