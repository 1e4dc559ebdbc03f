"""A small, deterministic xar writer and reader (the container of macOS flat packages).

bsdtar can write xar but puts inode, device and times in the TOC, so two
builds differ; this writer emits only what Installer needs, in sorted order,
with fixed times.  Layout: 28-byte big-endian header, zlib-compressed TOC
XML, then the heap whose first 20 bytes are the SHA-1 of the compressed TOC.
Members are stored uncompressed (Toolbox: "--compression=none is mandatory").
The reader also decodes gzip/bzip2/xz members and SHA-256/MD5 checksums: Apple's
pkgbuild/productbuild (Oracle's VirtualBox.pkg) and bsdtar compress small members.
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from xml.etree import ElementTree as ET

from pymachine.machine.errors import MachineError

MAGIC = b"xar!"
HEADER = struct.Struct(">4sHHQQI")  # magic, header size, version, toc comp, toc uncomp, cksum alg
CKSUM_SHA1 = 1


@dataclass
class Member:
    path: str  # posix, relative
    data: bytes | None  # None for a directory
    mode: int = 0o644


def _isotime(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def write(members: list[Member], epoch: int) -> bytes:
    """Serialise ``members`` (parents are created implicitly) into xar bytes."""
    tree: dict[str, Member] = {}
    for m in members:
        parts = PurePosixPath(m.path).parts
        if not parts or ".." in parts or m.path.startswith("/"):
            raise MachineError(f"xar: bad member path {m.path!r}")
        for i in range(1, len(parts)):
            tree.setdefault("/".join(parts[:i]), Member("/".join(parts[:i]), None, 0o755))
        tree["/".join(parts)] = m
    root = ET.Element("xar")
    toc = ET.SubElement(root, "toc")
    ck = ET.SubElement(toc, "checksum", style="sha1")
    ET.SubElement(ck, "offset").text = "0"
    ET.SubElement(ck, "size").text = "20"
    ET.SubElement(toc, "creation-time").text = _isotime(epoch)
    heap = bytearray()
    offset = 20
    elements: dict[str, ET.Element] = {}
    for n, path in enumerate(sorted(tree, key=lambda p: PurePosixPath(p).parts), start=1):
        m = tree[path]
        parent_path = str(PurePosixPath(path).parent)
        parent = toc if parent_path == "." else elements[parent_path]
        f = ET.SubElement(parent, "file", id=str(n))
        elements[path] = f
        ET.SubElement(f, "name").text = PurePosixPath(path).name
        ET.SubElement(f, "type").text = "directory" if m.data is None else "file"
        ET.SubElement(f, "mode").text = f"0{m.mode:o}"
        ET.SubElement(f, "uid").text = "0"
        ET.SubElement(f, "user").text = "root"
        ET.SubElement(f, "gid").text = "0"
        ET.SubElement(f, "group").text = "wheel"
        ET.SubElement(f, "mtime").text = _isotime(epoch)
        if m.data is not None:
            digest = hashlib.sha1(m.data).hexdigest()
            d = ET.SubElement(f, "data")
            ET.SubElement(d, "length").text = str(len(m.data))
            ET.SubElement(d, "offset").text = str(offset)
            ET.SubElement(d, "size").text = str(len(m.data))
            ET.SubElement(d, "encoding", style="application/octet-stream")
            ET.SubElement(d, "archived-checksum", style="sha1").text = digest
            ET.SubElement(d, "extracted-checksum", style="sha1").text = digest
            heap += m.data
            offset += len(m.data)
    xml = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")
    toc_z = zlib.compress(xml, 9)
    header = HEADER.pack(MAGIC, HEADER.size, 1, len(toc_z), len(xml), CKSUM_SHA1)
    return header + toc_z + hashlib.sha1(toc_z).digest() + bytes(heap)


@dataclass
class Entry:
    path: str
    kind: str
    mode: int
    uid: int
    gid: int
    offset: int = 0
    length: int = 0
    sha1: str = ""  # the extracted (decoded) data's checksum, in ``style``
    encoding: str = "application/octet-stream"
    style: str = "sha1"
    archived: str = ""  # the stored bytes' checksum, in ``archived_style``
    archived_style: str = "sha1"


# Member encodings other xar writers use (xar's own, bsdtar, Apple's pkgbuild/productbuild, which
# store small members such as Distribution and PackageInfo gzip'd): decoded on read.
_DECODERS = {
    "application/octet-stream": lambda b: b,
    "application/x-gzip": zlib.decompress,  # a zlib stream, despite the name (xar's zlib module)
    "application/x-bzip2": bz2.decompress,
    "application/x-lzma": lzma.decompress,
    "application/x-xz": lzma.decompress,
}
_HASHES = {"sha1", "md5", "sha256", "sha512"}
_TOC_ALGS = {1: "sha1", 2: "md5"}  # 3: named after the 28-byte header (e.g. "sha256")


def _hexdigest(style: str, data: bytes) -> str:
    if style not in _HASHES:
        raise MachineError(f"xar: unsupported checksum style {style!r}")
    return hashlib.new(style, data).hexdigest()


class Reader:
    """Parse and check a xar archive: header, TOC checksum, per-file checksums."""

    def __init__(self, blob: bytes) -> None:
        if len(blob) < HEADER.size:
            raise MachineError("xar: file too short")
        magic, hsize, version, zlen, ulen, alg = HEADER.unpack_from(blob)
        if magic != MAGIC or version != 1:
            raise MachineError("xar: bad magic or version")
        toc_z = blob[hsize:hsize + zlen]
        xml = zlib.decompress(toc_z)
        if len(xml) != ulen:
            raise MachineError("xar: TOC length mismatch")
        self.heap = blob[hsize + zlen:]
        self.toc = ET.fromstring(xml).find("toc")
        if self.toc is None:
            raise MachineError("xar: no <toc>")
        ck = self.toc.find("checksum")
        name = _TOC_ALGS.get(alg) or (blob[HEADER.size:hsize].split(b"\0", 1)[0].decode("ascii", "replace").lower()
                                      if alg == 3 else "")
        if name not in _HASHES or ck is None or (ck.get("style") or "").lower() != name:
            raise MachineError("xar: only SHA-1, MD5, SHA-256 and SHA-512 TOC checksums are supported")
        off, size = int(ck.findtext("offset", "0")), int(ck.findtext("size", "0"))
        if self.heap[off:off + size] != hashlib.new(name, toc_z).digest():
            raise MachineError("xar: TOC checksum does not match")
        self.entries: dict[str, Entry] = {}
        self._walk(self.toc, "")

    def _walk(self, node: ET.Element, prefix: str) -> None:
        for f in node.findall("file"):
            path = f"{prefix}{f.findtext('name')}"
            e = Entry(path, f.findtext("type", ""), int(f.findtext("mode", "0"), 8),
                      int(f.findtext("uid", "0")), int(f.findtext("gid", "0")))
            d = f.find("data")
            if d is not None:
                e.offset, e.length = int(d.findtext("offset", "0")), int(d.findtext("length", "0"))
                enc = d.find("encoding")
                e.encoding = (enc.get("style") if enc is not None else None) or "application/octet-stream"
                if e.encoding not in _DECODERS:
                    raise MachineError(f"xar: {path}: member encoding {e.encoding!r} is not supported")
                extracted, archived = d.find("extracted-checksum"), d.find("archived-checksum")
                if extracted is not None:
                    e.sha1, e.style = (extracted.text or "").strip(), (extracted.get("style") or "sha1").lower()
                if archived is not None:
                    e.archived = (archived.text or "").strip()
                    e.archived_style = (archived.get("style") or "sha1").lower()
            self.entries[path] = e
            self._walk(f, path + "/")

    def read(self, path: str) -> bytes:
        """The member's data, decoded; its stored and extracted checksums both checked."""
        e = self.entries[path]
        data = self.heap[e.offset:e.offset + e.length]
        if e.archived and _hexdigest(e.archived_style, data) != e.archived:
            raise MachineError(f"xar: {path}: checksum does not match")
        try:
            data = _DECODERS[e.encoding](data)
        except Exception as exc:  # zlib/bz2/lzma errors alike
            raise MachineError(f"xar: {path}: cannot decode {e.encoding} data ({exc})") from None
        if _hexdigest(e.style, data) != e.sha1:
            raise MachineError(f"xar: {path}: checksum does not match")
        return data
