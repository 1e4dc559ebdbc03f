"""A Bom ("bill of materials") writer and reader, as mkbom/lsbom (bomutils) lay it out.

macOS Installer reads a component package's Bom to know which files it
installs; nothing in Debian or PyPI writes one.  Big-endian throughout:
a 32-byte header (padded to 512), data blocks, a block table, named vars
(BomInfo, Paths, HLIndex, VIndex, Size64).  Paths is a tree with a single
leaf page here, which holds our small payloads (checked).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from pymachine.machine.errors import MachineError

MAGIC = b"BOMStore"
BLOCK_SIZE = 4096
MAX_LEAF = (BLOCK_SIZE - 12) // 8
TYPE_FILE, TYPE_DIR = 1, 2


_REVERSE = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))
_MASK = 0xFFFFFFFF


def posix_cksum(data: bytes) -> int:
    """The POSIX ``cksum`` CRC that lsbom prints (not zlib's CRC-32).

    cksum is the MSB-first form of the same polynomial, so it is zlib's
    reflected CRC run over bit-reversed bytes, with the register read back
    reversed: C speed instead of a Python loop over every bit.
    """
    n = len(data)
    length = bytearray()
    while n:
        length.append(n & 0xFF)
        n >>= 8
    reflected = ~zlib.crc32((data + bytes(length)).translate(_REVERSE), _MASK) & _MASK
    register = int(f"{reflected:032b}"[::-1], 2)
    return ~register & _MASK


@dataclass
class BomEntry:
    path: str  # "." or "./usr/local/..."
    kind: int  # TYPE_FILE / TYPE_DIR
    mode: int  # full st_mode (type bits included)
    uid: int
    gid: int
    mtime: int
    size: int = 0
    cksum: int = 0


class _Blocks:
    def __init__(self) -> None:
        self.blocks: list[bytes] = [b""]  # index 0 is the null block

    def add(self, data: bytes) -> int:
        self.blocks.append(data)
        return len(self.blocks) - 1


def _tree(blocks: _Blocks, leaf_entries: list[tuple[int, int]], count: int) -> int:
    leaf = struct.pack(">HHII", 1, len(leaf_entries), 0, 0)
    leaf += b"".join(struct.pack(">II", a, b) for a, b in leaf_entries)
    leaf_idx = blocks.add(leaf.ljust(BLOCK_SIZE, b"\0"))
    return blocks.add(b"tree" + struct.pack(">IIIIB", 1, leaf_idx, BLOCK_SIZE, count, 0))


def write(entries: list[BomEntry]) -> bytes:
    entries = sorted(entries, key=lambda e: e.path.split("/"))
    if len(entries) > MAX_LEAF:
        raise MachineError(f"Bom: {len(entries)} paths do not fit one leaf page (max {MAX_LEAF})")
    blocks = _Blocks()
    ids: dict[str, int] = {}
    leaf: list[tuple[int, int]] = []
    for n, e in enumerate(entries, start=1):
        ids[e.path] = n
        if e.path != "." and not e.path.startswith("./"):
            raise MachineError(f"Bom: paths must start with './': {e.path!r}")
        parent = 0 if e.path == "." else ids[e.path.rsplit("/", 1)[0]]
        name = e.path if e.path == "." else e.path.rsplit("/", 1)[1]
        info2 = struct.pack(">BBHHIIIIBII", e.kind, 1, 3, e.mode & 0xFFFF, e.uid, e.gid, e.mtime,
                            e.size, 1, e.cksum, 0)
        info1 = blocks.add(struct.pack(">II", n, blocks.add(info2)))
        file_ = blocks.add(struct.pack(">I", parent) + name.encode() + b"\0")
        leaf.append((info1, file_))
    info = blocks.add(struct.pack(">III", 1, len(entries), 1) + b"\0" * 16)
    variables = [
        ("BomInfo", info),
        ("Paths", _tree(blocks, leaf, len(entries))),
        ("HLIndex", _tree(blocks, [], 0)),
        ("VIndex", blocks.add(struct.pack(">IIIB", 1, _tree(blocks, [], 0), 0, 0))),
        ("Size64", _tree(blocks, [], 0)),
    ]
    body = bytearray(b"\0" * 512)
    pointers = []
    for data in blocks.blocks:
        if not data:
            pointers.append((0, 0))
            continue
        pointers.append((len(body), len(data)))
        body += data
    index_offset = len(body)
    table = struct.pack(">I", len(pointers)) + b"".join(struct.pack(">II", a, n) for a, n in pointers)
    table += struct.pack(">I", 0)  # empty free list
    body += table
    vars_offset = len(body)
    vars_blob = struct.pack(">I", len(variables)) + b"".join(
        struct.pack(">IB", idx, len(name)) + name.encode() for name, idx in variables)
    body += vars_blob
    header = MAGIC + struct.pack(">IIIIII", 1, sum(1 for p in pointers if p[1]), index_offset, len(table),
                                 vars_offset, len(vars_blob))
    body[: len(header)] = header
    return bytes(body)


def read(blob: bytes) -> list[BomEntry]:
    """Parse a Bom and return its paths (full paths rebuilt from parent ids)."""
    if blob[:8] != MAGIC:
        raise MachineError("Bom: bad magic")
    _version, _nblocks, index_off, _index_len, vars_off, _vars_len = struct.unpack_from(">IIIIII", blob, 8)
    (count,) = struct.unpack_from(">I", blob, index_off)
    ptrs = [struct.unpack_from(">II", blob, index_off + 4 + 8 * i) for i in range(count)]

    def block(i: int) -> bytes:
        addr, length = ptrs[i]
        return blob[addr:addr + length]

    (nvars,) = struct.unpack_from(">I", blob, vars_off)
    pos, variables = vars_off + 4, {}
    for _ in range(nvars):
        idx, nlen = struct.unpack_from(">IB", blob, pos)
        variables[blob[pos + 5:pos + 5 + nlen].decode()] = idx
        pos += 5 + nlen
    tree = block(variables["Paths"])
    if tree[:4] != b"tree":
        raise MachineError("Bom: Paths is not a tree")
    _v, child, _bs, path_count, _u = struct.unpack_from(">IIIIB", tree, 4)
    names: dict[int, tuple[int, str]] = {}
    out: list[tuple[int, BomEntry]] = []
    page_idx = child
    while page_idx:
        page = block(page_idx)
        is_leaf, n, forward, _backward = struct.unpack_from(">HHII", page, 0)
        if not is_leaf:
            raise MachineError("Bom: multi-level path trees are not supported")
        for k in range(n):
            i1, fidx = struct.unpack_from(">II", page, 12 + 8 * k)
            pid, i2 = struct.unpack_from(">II", block(i1), 0)
            f = block(fidx)
            parent = struct.unpack_from(">I", f, 0)[0]
            names[pid] = (parent, f[4:].split(b"\0", 1)[0].decode())
            kind, _u0, _arch, mode, uid, gid, mtime, size, _u1, ck, _ll = struct.unpack_from(
                ">BBHHIIIIBII", block(i2), 0)
            out.append((pid, BomEntry("", kind, mode, uid, gid, mtime, size, ck)))
        page_idx = forward
    if len(out) != path_count:
        raise MachineError(f"Bom: {len(out)} paths found, the tree says {path_count}")

    def full(pid: int) -> str:
        parent, name = names[pid]
        return name if parent == 0 else f"{full(parent)}/{name}"

    for pid, entry in out:
        entry.path = full(pid)
    return [e for _pid, e in out]
