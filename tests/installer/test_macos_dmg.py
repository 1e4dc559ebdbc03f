"""VirtualBox for macOS comes as Oracle's ``.dmg``: build_pkg lifts ``VirtualBox.pkg`` out of it with 7z.

The disk images here are real UDIF files made in this test: an HFS+ volume written by
xorriso (``-hfsplus``, a real HFS+ implementation; hfsprogs' mkfs.hfsplus is not in
Debian 12), laid out as its Apple Partition Map says, and wrapped in UDIF by
``write_udif`` below, with raw, zlib or bzip2 chunks.  7-Zip reads them as any .dmg.
"""

from __future__ import annotations

import bz2
import hashlib
import json
import os
import plistlib
import shutil
import struct
import subprocess
import sys
import uuid
import zlib
from pathlib import Path

import pytest
from pymachine.installer import xar
from pymachine.installer.dmg import extract_pkg, is_udif
from pymachine.installer.lock import Lock
from pymachine.installer.macos import build_pkg
from pymachine.machine.errors import MachineError

pytest_plugins = ["standins"]

pytestmark = pytest.mark.skipif(not (shutil.which("7z") and shutil.which("xorriso") and shutil.which("bsdtar")),
                                reason="needs 7z, xorriso and bsdtar (scripts/setup.sh installs them)")

EPOCH = 1700000000
SECTOR = 512

# ----------------------------------------------------------------------------- UDIF writer
# Layout as documented by libdmg-hfsplus (planetbeing/libdmg-hfsplus, includes/dmg/dmg.h:
# UDIFResourceFile "koly", BLKXTable "mish", BLKXRun) and Jonathan Levin's "Demystifying
# the DMG file format" (newosxbook.com/DMG.html): the data fork of chunks, then the XML
# property list whose resource-fork/blkx array holds one base64 "mish" block map per
# partition, then the 512-byte big-endian "koly" trailer pointing at both.  All
# checksums are CRC32 (type 2, 32 bits): each mish's over its partition's sectors, the
# koly's data checksum over the data fork, its master checksum over the mish CRCs.
RUN_ZERO, RUN_RAW, RUN_ZLIB, RUN_BZIP2, RUN_END = 0x00000000, 0x00000001, 0x80000005, 0x80000006, 0xFFFFFFFF
CODECS = {"raw": (RUN_RAW, lambda b: b), "zlib": (RUN_ZLIB, lambda b: zlib.compress(b, 9)),  # UDRW/UDZO
          "bzip2": (RUN_BZIP2, lambda b: bz2.compress(b, 9))}  # UDBZ
CKSUM_CRC32 = 2


def _udif_checksum(crc: int) -> bytes:
    """UDIFChecksum: type, bit size, 32 big-endian words (only the first used by CRC32)."""
    return struct.pack(">II", CKSUM_CRC32, 32) + struct.pack(">I", crc) + b"\0" * 124


def _mish(first_sector: int, data: bytes, fork_offset: int, chunk: int, codec: str) -> tuple[bytes, bytes]:
    """(BLKXTable, its chunk bytes for the data fork) for one partition."""
    sectors = len(data) // SECTOR
    runs: list[tuple[int, int, int, int, int]] = []
    blob = bytearray()
    for start in range(0, sectors, chunk):
        count = min(chunk, sectors - start)
        piece = data[start * SECTOR:(start + count) * SECTOR]
        if not piece.strip(b"\0"):  # all zeros: a zero-fill run stores nothing
            runs.append((RUN_ZERO, start, count, fork_offset + len(blob), 0))
            continue
        kind, pack = CODECS[codec]
        stored = pack(piece)
        runs.append((kind, start, count, fork_offset + len(blob), len(stored)))
        blob += stored
    runs.append((RUN_END, sectors, 0, fork_offset + len(blob), 0))
    head = struct.pack(">4sIQQQII24x", b"mish", 1, first_sector, sectors, 0, chunk, 0)
    head += _udif_checksum(zlib.crc32(data)) + struct.pack(">I", len(runs))
    head += b"".join(struct.pack(">IIQQQQ", kind, 0, s, n, off, ln) for kind, s, n, off, ln in runs)
    return head, bytes(blob)


def write_udif(partitions: list[tuple[str, bytes]], codec: str = "zlib", chunk: int = 64) -> bytes:
    """A UDIF image of consecutive ``partitions`` (name as hdiutil writes it, sector-aligned bytes)."""
    fork = bytearray()
    blkx, crcs, first = [], b"", 0
    for n, (name, data) in enumerate(partitions):
        assert len(data) % SECTOR == 0, name
        mish, blob = _mish(first, data, len(fork), chunk, codec)
        fork += blob
        first += len(data) // SECTOR
        crcs += struct.pack(">I", zlib.crc32(data))
        blkx.append({"Attributes": "0x0050", "CFName": name, "Data": mish, "ID": str(n - 1), "Name": name})
    xml = plistlib.dumps({"resource-fork": {"blkx": blkx}})
    koly = struct.pack(">4sIIIQQQQQII16s", b"koly", 4, 512, 1, 0, 0, len(fork), 0, 0, 1, 1,
                       uuid.UUID(int=0x766278).bytes)
    koly += _udif_checksum(zlib.crc32(bytes(fork)))
    koly += struct.pack(">QQ120x", len(fork), len(xml)) + _udif_checksum(zlib.crc32(crcs))
    koly += struct.pack(">IQ12x", 1, first)  # image variant 1 (device image), sector count
    assert len(koly) == 512
    return bytes(fork) + xml + koly


def hfsplus_disk(files: dict[str, bytes], tmp: Path, volume: str = "VirtualBox") -> list[tuple[str, bytes]]:
    """The partitions of a disk whose HFS+ volume holds ``files``, named as hdiutil names them.

    xorriso writes an Apple Partition Map disk (driver descriptor in block 0, the map,
    the HFS+ partition); the disk is cut along that map (gaps become Apple_Free).
    """
    src = tmp / "hfs-src"
    src.mkdir(parents=True)
    for name, data in files.items():
        (src / name).write_bytes(data)
    iso = tmp / "hfs.img"
    subprocess.run(["xorriso", "-as", "mkisofs", "-hfsplus", "-V", volume, "-o", str(iso), str(src)],
                   capture_output=True, check=True, timeout=120)
    disk = iso.read_bytes()
    disk += b"\0" * (-len(disk) % SECTOR)
    assert disk[:2] == b"ER" and struct.unpack(">H", disk[2:4])[0] == SECTOR
    entries = []
    for i in range(struct.unpack(">I", disk[SECTOR + 4:SECTOR + 8])[0]):
        e = disk[SECTOR * (i + 1):SECTOR * (i + 2)]
        assert e[:2] == b"PM"
        start, count = struct.unpack(">II", e[8:16])
        entries.append((start, count, e[16:48].rstrip(b"\0").decode(), e[48:80].rstrip(b"\0").decode()))
    parts = [("Driver Descriptor Map (DDM : 0)", disk[:SECTOR])]
    at = 1
    for start, count, name, kind in sorted(entries):
        if start > at:
            parts.append((f" (Apple_Free : {len(parts)})", disk[at * SECTOR:start * SECTOR]))
        parts.append((f"{name} ({kind} : {len(parts)})", disk[start * SECTOR:(start + count) * SECTOR]))
        at = start + count
    if at * SECTOR < len(disk):
        parts.append((f" (Apple_Free : {len(parts)})", disk[at * SECTOR:]))
    assert any("Apple_HFS" in name for name, _d in parts)
    return parts


def vbox_product_pkg(tmp: Path, arch: str = "arm64", compression: str = "gzip") -> bytes:
    """A stand-in of Oracle's VirtualBox.pkg: a product archive (Distribution + component
    packages), written by bsdtar's xar writer, not ours; gzip'd members, as Apple's tools write."""
    root = tmp / "vbox-product"
    for comp, ident in (("VirtualBox.pkg", "org.virtualbox.pkg.virtualbox"),
                        ("VirtualBoxCLI.pkg", "org.virtualbox.pkg.virtualboxcli")):
        (root / comp).mkdir(parents=True)
        (root / comp / "PackageInfo").write_text(f'<pkg-info format-version="2" identifier="{ident}" '
                                                 f'version="7.1.4" auth="root"/>\n')
        (root / comp / "Payload").write_bytes(f"stand-in payload of {comp} for {arch}\n".encode() * 50)
    (root / "Distribution").write_text('<installer-gui-script minSpecVersion="2"/>\n')
    out = tmp / "VirtualBox-inner.pkg"
    subprocess.run(["bsdtar", "--format", "xar", "--options", f"xar:compression={compression}", "-cf", str(out),
                    "Distribution", "VirtualBox.pkg", "VirtualBoxCLI.pkg"], cwd=root, check=True, timeout=60)
    return out.read_bytes()


def vbox_dmg(tmp: Path, codec: str = "zlib", extra: dict[str, bytes] | None = None) -> tuple[bytes, bytes]:
    """(dmg bytes, the VirtualBox.pkg inside) laid out as Oracle's: the package beside other files."""
    pkg = vbox_product_pkg(tmp)
    files = {"VirtualBox.pkg": pkg, "VirtualBox_Uninstall.tool": b"#!/bin/sh\necho uninstall\n"}
    files.update(extra or {})
    return write_udif(hfsplus_disk(files, tmp), codec=codec), pkg


# ----------------------------------------------------------------------------- tests

def _7z(*args: str) -> str:
    return subprocess.run(["7z", *args], capture_output=True, text=True, check=True, timeout=120).stdout


@pytest.mark.parametrize("codec", ["zlib", "raw", "bzip2"])
def test_7z_reads_our_udif_and_extract_pkg_returns_the_package(codec, tmp_path):
    image, pkg = vbox_dmg(tmp_path, codec=codec)
    dmg = tmp_path / "VirtualBox-7.1.4-165100-macOSArm64.dmg"
    dmg.write_bytes(image)
    assert is_udif(dmg) and not is_udif(tmp_path / "VirtualBox-inner.pkg")
    listing = _7z("l", "-slt", dmg.as_posix())
    assert "Type = Dmg" in listing
    assert {"zlib": "Method = ZLIB CRC", "raw": "Method = Copy CRC", "bzip2": "Method = BZip2 CRC"}[codec] in listing
    assert "Comment = HFSPLUS_Hybrid (Apple_HFS : " in listing
    # independently of extract_pkg: 7z takes the HFS+ partition out, then the package out of it
    _7z("x", "-y", f"-o{tmp_path / 'manual'}", dmg.as_posix(), "*.hfs")
    (hfs,) = (tmp_path / "manual").glob("*.hfs")
    assert "Type = HFS" in _7z("l", "-slt", hfs.as_posix())
    got = extract_pkg(dmg, tmp_path / "work")
    assert got.name == "VirtualBox.pkg" and got.read_bytes() == pkg
    assert set(xar.Reader(got.read_bytes()).entries) >= {"Distribution", "VirtualBox.pkg/PackageInfo"}


def _vbox_lock(tmp_path: Path, http_root, dmg_bytes: bytes, arch: str = "arm64") -> Lock:
    """A macOS lock whose only component is VirtualBox, as the repo lock pins it: Oracle's .dmg."""
    www, base = http_root
    name = "VirtualBox-7.1.4-165100-macOSArm64.dmg" if arch == "arm64" else "VirtualBox-7.1.4-165100-OSX.dmg"
    (www / name).write_bytes(dmg_bytes)
    comp = {"name": "virtualbox", "version": "7.1.4", "url": f"{base}/{name}", "size": len(dmg_bytes),
            "sha256": hashlib.sha256(dmg_bytes).hexdigest(), "dest": "installers/VirtualBox.dmg", "unpack": "",
            "strip": 0, "optional": True, "upstream": {}, "arch": arch}
    path = tmp_path / "mac.lock.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schema": 1, "product": {}, "platforms": {"macos": [comp]}}))
    return Lock.load(path)


def test_xar_reader_decodes_compressed_members_and_checks_both_checksums(tmp_path):
    plain, packed = vbox_product_pkg(tmp_path / "a", compression="none"), vbox_product_pkg(tmp_path / "b")
    a, b = xar.Reader(plain), xar.Reader(packed)
    assert b.entries["VirtualBox.pkg/Payload"].encoding == "application/x-gzip"
    files = [p for p, e in a.entries.items() if e.kind == "file"]
    assert files and all(a.read(p) == b.read(p) for p in files)
    member = b.entries["VirtualBox.pkg/Payload"]
    heap_at = len(packed) - len(b.heap) + member.offset
    damaged = packed[:heap_at + 3] + bytes([packed[heap_at + 3] ^ 1]) + packed[heap_at + 4:]
    with pytest.raises(MachineError, match=r"VirtualBox\.pkg/Payload: checksum does not match"):
        xar.Reader(damaged).read("VirtualBox.pkg/Payload")


def test_build_pkg_takes_virtualbox_from_oracles_dmg(http_root, src_snapshot, tmp_path):
    image, inner = vbox_dmg(tmp_path)
    lock = _vbox_lock(tmp_path, http_root, image)
    out = build_pkg(tmp_path / "out", lock.components("macos", "arm64"), cache=tmp_path / "cache", epoch=EPOCH,
                    source=src_snapshot, arch="arm64")
    again = build_pkg(tmp_path / "again", lock.components("macos", "arm64"), cache=tmp_path / "cache",
                      epoch=EPOCH, source=src_snapshot, arch="arm64")
    assert out.read_bytes() == again.read_bytes()  # still reproducible
    product, vbox = xar.Reader(out.read_bytes()), xar.Reader(inner)
    # the .pkg's VirtualBox components are the dmg's package's, byte for byte
    lifted = {p for p, e in vbox.entries.items() if e.kind == "file" and p.endswith((".pkg/PackageInfo",
                                                                                        ".pkg/Payload"))}
    assert lifted == {"VirtualBox.pkg/PackageInfo", "VirtualBox.pkg/Payload", "VirtualBoxCLI.pkg/PackageInfo",
                      "VirtualBoxCLI.pkg/Payload"}
    for member in lifted:
        assert product.read(member) == vbox.read(member), member
    dist = product.read("Distribution").decode()
    assert '#VirtualBox.pkg</pkg-ref>' in dist and '#VirtualBoxCLI.pkg</pkg-ref>' in dist
    assert "org.virtualbox.pkg.virtualboxcli" in dist
    # and an independent reader agrees
    listed = subprocess.run(["bsdtar", "-tf", str(out)], capture_output=True, text=True, check=True,
                            timeout=60).stdout.split()
    assert "VirtualBoxCLI.pkg/Payload" in listed


def _one_line_and_nothing_written(exc: pytest.ExceptionInfo[MachineError], out: Path) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
    return msg


@pytest.mark.parametrize("damage", ["truncated", "garbage", "corrupt-chunk"])
def test_a_damaged_dmg_is_one_line_and_writes_nothing(damage, http_root, src_snapshot, tmp_path):
    image, _inner = vbox_dmg(tmp_path)
    if damage == "truncated":
        image = image[:len(image) // 2]
    elif damage == "garbage":
        image = bytes(range(256)) * 64
    else:  # bytes changed amid the data fork (its length is in the koly trailer): chunks and CRC32s disagree
        mid = struct.unpack(">Q", image[-512 + 32:-512 + 40])[0] // 2
        image = image[:mid] + bytes(b ^ 0x5A for b in image[mid:mid + 16]) + image[mid + 16:]
    lock = _vbox_lock(tmp_path, http_root, image)
    out = tmp_path / "out"
    with pytest.raises(MachineError) as exc:
        build_pkg(out, lock.components("macos", "arm64"), cache=tmp_path / "cache", epoch=EPOCH,
                  source=src_snapshot, arch="arm64")
    msg = _one_line_and_nothing_written(exc, out)
    assert msg.startswith("VirtualBox 7.1.4 (VirtualBox-7.1.4-165100-macOSArm64.dmg): not a readable disk image (7z:")
    if damage == "corrupt-chunk":  # 7-Zip opened the image and caught the damage on reading the volume
        assert "Data Error" in msg or "CRC Error" in msg, msg
    else:
        assert "Cannot open the file as [Dmg] archive" in msg, msg


def test_a_dmg_without_virtualbox_pkg_or_with_a_non_xar_one_is_refused(http_root, src_snapshot, tmp_path):
    cases = {
        "the disk image holds no VirtualBox.pkg": {"README.txt": b"no installer here\n"},
        "VirtualBox/VirtualBox.pkg is not a flat (xar) installer package": {
            "VirtualBox.pkg": b"PK\3\4 not a flat package" * 40},
    }
    for n, (want, files) in enumerate(cases.items()):
        case = tmp_path / f"case{n}"
        lock = _vbox_lock(case, http_root, write_udif(hfsplus_disk(files, case)))
        out = case / "out"
        with pytest.raises(MachineError) as exc:
            build_pkg(out, lock.components("macos", "arm64"), cache=case / "cache", epoch=EPOCH,
                      source=src_snapshot, arch="arm64")
        assert _one_line_and_nothing_written(exc, out).endswith(want)


def _build_cli(lock_dir: Path, out: Path, src: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """What a release manager runs (README's release section), for the lock ``_vbox_lock`` wrote."""
    env = {**os.environ, "PYMACHINE_DOWNLOAD_CACHE": str(cache), "SOURCE_DATE_EPOCH": str(EPOCH)}
    return subprocess.run([sys.executable, "-m", "pymachine.installer", "build", "--platform", "macos",
                           "--lock", str(lock_dir / "mac.lock.json"), "--out", str(out), "--source", str(src)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)


def test_the_build_command_lifts_virtualbox_from_the_dmg_or_fails_in_one_line(http_root, src_snapshot, tmp_path):
    image, inner = vbox_dmg(tmp_path)
    _vbox_lock(tmp_path / "good", http_root, image)
    good = _build_cli(tmp_path / "good", tmp_path / "dist", src_snapshot, tmp_path / "cache")
    assert good.returncode == 0, good.stderr
    (pkg,) = (tmp_path / "dist").glob("*.pkg")
    assert pkg.name == "pymachine-toolbox-0.1.0-arm64.pkg"
    product, vbox = xar.Reader(pkg.read_bytes()), xar.Reader(inner)
    assert product.read("VirtualBoxCLI.pkg/Payload") == vbox.read("VirtualBoxCLI.pkg/Payload")
    _vbox_lock(tmp_path / "bad", http_root, image[: len(image) // 3])
    bad = _build_cli(tmp_path / "bad", tmp_path / "dist-bad", src_snapshot, tmp_path / "cache")
    assert bad.returncode != 0
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr, bad.stderr
    assert "not a readable disk image" in bad.stderr
    assert not (tmp_path / "dist-bad").exists() or not any((tmp_path / "dist-bad").iterdir())
