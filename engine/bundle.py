"""Offline engine bundles: build, verify and install a Docker engine from one archive.

A bundle is a deterministic ``.tar.gz`` (sorted entries, fixed mtime, uid/gid
0, gzip mtime 0) holding the engine's binaries, the shared libraries they
need that a minimal host may lack, init files for systemd, SysV and OpenRC,
and ``manifest.json`` with the sha256, size and mode of every other member.
Identical inputs give identical bytes, so a bundle's sha256 names its content.

It exists for hosts with no route to a package archive: everything the
engine needs travels over the one SSH connection, is checked on the host
against digests computed here, and only then installed.  Engine
*configuration* (daemon flags, drop-ins, restart) stays with the provisioner.

Layout inside the archive::

    manifest.json
    bin/{dockerd,containerd,containerd-shim-runc-v2,runc,docker,docker-init,docker-proxy}
    lib/<soname>                       (only when built from .debs)
    init/systemd/docker.service
    init/sysv/docker  init/sysv/docker.default
    init/openrc/docker
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import re
import shlex
import shutil
import struct
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pymachine.machine.errors import MachineError
from pymachine.machine.runner import Runner

Log = Callable[[str], None]

BUNDLE_FORMAT = "pymachine-engine-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"

REMOTE_ARCHIVE = "/var/tmp/pymachine-engine.tar.gz"
REMOTE_STAGE = "/var/tmp/pymachine-engine.d"
REMOTE_BIN = "/usr/local/bin"
REMOTE_LIB = "/usr/local/lib/pymachine-engine"
# "zz-": ld.so.conf.d is read in name order and the first directory holding a
# soname wins, so the host's own copy of a library is always preferred.
REMOTE_LDCONF = "/etc/ld.so.conf.d/zz-pymachine-engine.conf"

# (bundle name, required, candidate paths in a Debian root, in preference order).
# docker-init is bind-mounted into containers by `docker run --init`: it must
# be static, hence tini-static first.
DEB_BINARIES: tuple[tuple[str, bool, tuple[str, ...]], ...] = (
    ("dockerd", True, ("usr/sbin/dockerd", "usr/bin/dockerd")),
    ("docker", True, ("usr/bin/docker",)),
    ("containerd", True, ("usr/bin/containerd",)),
    ("containerd-shim-runc-v2", True, ("usr/bin/containerd-shim-runc-v2",)),
    ("runc", True, ("usr/sbin/runc", "usr/bin/runc")),
    ("docker-init", False, ("usr/bin/tini-static", "usr/bin/docker-init", "usr/libexec/docker/docker-init")),
    ("docker-proxy", False, ("usr/sbin/docker-proxy", "usr/bin/docker-proxy", "usr/libexec/docker/docker-proxy")),
)
STATIC_BINARIES: tuple[tuple[str, bool], ...] = tuple(
    (name, required) for name, required, _ in DEB_BINARIES
)
APT_PACKAGES = ("docker.io", "containerd", "runc", "tini")
ENGINE_PACKAGES = ("docker.io", "docker-ce", "moby-engine")
# glibc itself: never bundled, a host without it cannot run these binaries anyway.
_LIBC_SONAMES = re.compile(r"^(libc|libm|libdl|libpthread|librt|libresolv|libutil)\.so\.|^ld-linux|^linux-vdso")
_ELF_ARCH = {3: "i386", 8: "mips", 20: "powerpc", 21: "ppc64el", 22: "s390x",
             40: "armhf", 62: "amd64", 183: "arm64", 243: "riscv64"}
_MACHINE_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "i686": "i386",
                 "ppc64le": "ppc64el", "s390x": "s390x", "riscv64": "riscv64"}
SOURCE_KINDS = ("static", "debs", "apt")


@dataclass(frozen=True)
class BundleInfo:
    path: Path
    sha256: str
    engine_version: str


class BundleError(MachineError):
    """A bundle cannot be built, read, verified or installed."""


# -- small helpers ------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _quiet(_msg: str) -> None:
    pass


def _mtime() -> int:
    try:
        return max(0, int(os.environ.get("SOURCE_DATE_EPOCH", "0")))
    except ValueError:
        return 0


def _elf_arch(head: bytes) -> str | None:
    if head[:4] != b"\x7fELF" or len(head) < 20:
        return None
    (machine,) = struct.unpack_from("<H" if head[5] == 1 else ">H", head, 18)
    return _ELF_ARCH.get(machine)


def elf_info(data: bytes) -> tuple[str | None, list[str]]:
    """(Debian arch name, DT_NEEDED sonames) of an ELF image; (None, []) if not ELF.

    Read from the section headers (``SHT_DYNAMIC`` and its linked string
    table), which every binary we bundle keeps; no binutils needed.
    """
    if data[:4] != b"\x7fELF" or len(data) < 64:
        return None, []
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    (machine,) = struct.unpack_from(end + "H", data, 18)
    arch = _ELF_ARCH.get(machine)
    if arch == "ppc64el" and end == ">":
        arch = "ppc64"
    if is64:
        shoff, = struct.unpack_from(end + "Q", data, 40)
        shentsize, shnum = struct.unpack_from(end + "HH", data, 58)
        sh_fmt, dyn_fmt = end + "IIQQQQIIQQ", end + "qQ"
    else:
        shoff, = struct.unpack_from(end + "I", data, 32)
        shentsize, shnum = struct.unpack_from(end + "HH", data, 46)
        sh_fmt, dyn_fmt = end + "IIIIIIIIII", end + "iI"
    sections = []
    for i in range(shnum):
        off = shoff + i * shentsize
        if off + struct.calcsize(sh_fmt) > len(data):
            break
        sections.append(struct.unpack_from(sh_fmt, data, off))
    needed: list[str] = []
    for sec in sections:
        # (name, type, flags, addr, offset, size, link, info, align, entsize)
        if sec[1] != 6 or sec[6] >= len(sections):  # SHT_DYNAMIC
            continue
        strtab = sections[sec[6]]
        str_off, str_size = strtab[4], strtab[5]
        step = struct.calcsize(dyn_fmt)
        for pos in range(sec[4], sec[4] + sec[5], step):
            tag, val = struct.unpack_from(dyn_fmt, data, pos)
            if tag == 0:
                break
            if tag == 1 and val < str_size:  # DT_NEEDED
                start = str_off + val
                needed.append(data[start:data.index(b"\0", start)].decode())
    return arch, needed


_GLIBC_VERSION = re.compile(rb"^GLIBC_(\d+)\.(\d+)(?:\.\d+)?$")


def glibc_needed(data: bytes) -> tuple[int, int] | None:
    """The newest ``GLIBC_x.y`` symbol version an ELF image needs (its ``.gnu.version_r``),
    or None (static, not ELF, or no versioned glibc symbols): the oldest glibc it runs on."""
    if data[:4] != b"\x7fELF" or len(data) < 64:
        return None
    is64, end = data[4] == 2, "<" if data[5] == 1 else ">"
    if is64:
        shoff, = struct.unpack_from(end + "Q", data, 40)
        shentsize, shnum = struct.unpack_from(end + "HH", data, 58)
        sh_fmt = end + "IIQQQQIIQQ"
    else:
        shoff, = struct.unpack_from(end + "I", data, 32)
        shentsize, shnum = struct.unpack_from(end + "HH", data, 46)
        sh_fmt = end + "IIIIIIIIII"
    sections = []
    for i in range(shnum):
        off = shoff + i * shentsize
        if off + struct.calcsize(sh_fmt) > len(data):
            break
        sections.append(struct.unpack_from(sh_fmt, data, off))
    best: tuple[int, int] | None = None
    for sec in sections:
        if sec[1] != 0x6FFFFFFE or sec[6] >= len(sections):  # SHT_GNU_verneed
            continue
        str_off = sections[sec[6]][4]
        pos, count = sec[4], sec[7]  # sh_info: the number of Verneed entries
        for _ in range(count):
            _ver, cnt, _file, aux, nxt = struct.unpack_from(end + "HHIII", data, pos)
            apos = pos + aux
            for _ in range(cnt):
                _hash, _flags, _other, name, anext = struct.unpack_from(end + "IHHII", data, apos)
                start = str_off + name
                m = _GLIBC_VERSION.match(data[start:data.index(b"\0", start)])
                if m:
                    found = (int(m.group(1)), int(m.group(2)))
                    best = found if best is None or found > best else best
                if not anext:
                    break
                apos += anext
            if not nxt:
                break
            pos += nxt
    return best


def _glibc_of(paths: Iterable[Path]) -> str | None:
    """The glibc a set of binaries and libraries needs, as "2.38" (None: no glibc needed)."""
    needs = [v for v in (glibc_needed(p.read_bytes()) for p in paths) if v is not None]
    if not needs:
        return None
    major, minor = max(needs)
    return f"{major}.{minor}"


# -- building -----------------------------------------------------------------


Content = Path | bytes


@dataclass
class _Staged:
    """What goes into the archive: member -> (file on disk or bytes, mode)."""

    files: dict[str, tuple[Content, int]]
    source: dict
    arch: str
    engine_version: str
    host_libraries: list[str]
    #: The oldest host glibc the binaries run on ("2.38"), None for static binaries.
    glibc: str | None = None


def _digest(content: Content) -> tuple[str, int]:
    if isinstance(content, bytes):
        return hashlib.sha256(content).hexdigest(), len(content)
    return _sha256_file(content), content.stat().st_size


def _resolve_in_root(root: Path, rel: str) -> Path | None:
    """``rel`` inside an extracted package root, following symlinks as if
    ``root`` were ``/`` (Debian's docker-init -> /usr/bin/tini-static)."""
    path = root / rel
    for _ in range(16):
        if not path.is_symlink():
            return path if path.is_file() else None
        target = os.readlink(path)
        path = root / target.lstrip("/") if target.startswith("/") else path.parent / target
        try:
            path.resolve().relative_to(root.resolve())
        except ValueError:
            return None
    return None


def _engine_version_from(dockerd: Path, lib_dir: Path | None) -> str | None:
    """Ask the bundled dockerd itself (``Docker version 20.10.24, build ...``);
    None when it cannot run here (another architecture, missing libraries)."""
    env = dict(os.environ, LC_ALL="C")
    if lib_dir is not None:
        env["LD_LIBRARY_PATH"] = str(lib_dir)
    try:
        proc = subprocess.run([str(dockerd), "--version"], capture_output=True,
                              text=True, timeout=30, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"version v?([0-9][^\s,]*)", proc.stdout)
    return match.group(1) if proc.returncode == 0 and match else None


def _upstream_version(deb_version: str) -> str:
    """``20.10.24+dfsg1-1+deb12u1+b6`` -> ``20.10.24``; ``5:24.0.7-1~debian.12`` -> ``24.0.7``."""
    version = deb_version.split(":", 1)[-1]
    version = version.rsplit("-", 1)[0] if "-" in version else version
    return re.split(r"[+~]", version, maxsplit=1)[0]


def _stage_static(tgz: Path, work: Path, log: Log) -> tuple[dict[str, Path], dict, str | None]:
    log(f"Reading Docker static archive {tgz.name}...")
    picked: dict[str, Path] = {}
    out = work / "bin"
    out.mkdir()
    try:
        with tarfile.open(tgz, "r:*") as tar:
            members = {m.name.lstrip("./"): m for m in tar.getmembers()}
            for name, required in STATIC_BINARIES:
                member = members.get(f"docker/{name}")
                if member is None or not member.isfile():
                    if required:
                        raise BundleError(f"{tgz}: docker/{name} is missing (not a Docker static archive?)")
                    continue
                fh = tar.extractfile(member)
                assert fh is not None
                dest = out / name
                dest.write_bytes(fh.read())
                dest.chmod(0o755)
                picked[name] = dest
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"cannot read {tgz}: {exc}") from exc
    source = {"kind": "static",
              "inputs": [{"file": tgz.name, "sha256": _sha256_file(tgz), "size": tgz.stat().st_size}]}
    match = re.search(r"docker-v?(\d[\w.+-]*?)\.t(?:ar\.)?gz$", tgz.name)
    return picked, source, match.group(1) if match else None


def _deb_fields(deb: Path) -> dict[str, str]:
    proc = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BundleError(f"{deb.name}: not a Debian package: {proc.stderr.strip()}")
    fields = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def _stage_debs(deb_dir: Path, work: Path, log: Log, kind: str
                ) -> tuple[dict[str, Path], dict, str | None, Path]:
    if shutil.which("dpkg-deb") is None:
        raise BundleError("building from .deb files needs dpkg-deb (Debian package dpkg)")
    debs = sorted(p for p in deb_dir.glob("*.deb") if p.is_file())
    if not debs:
        raise BundleError(f"no .deb files in {deb_dir}")
    root = work / "root"
    root.mkdir()
    inputs = []
    engine_deb_version = None
    for deb in debs:
        fields = _deb_fields(deb)
        log(f"Extracting {deb.name}...")
        proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            raise BundleError(f"cannot extract {deb.name}: {proc.stderr.strip()}")
        inputs.append({"file": deb.name, "package": fields.get("Package", ""),
                       "version": fields.get("Version", ""), "architecture": fields.get("Architecture", ""),
                       "sha256": _sha256_file(deb), "size": deb.stat().st_size})
        if fields.get("Package") in ENGINE_PACKAGES:
            engine_deb_version = _upstream_version(fields.get("Version", ""))
    picked: dict[str, Path] = {}
    for name, required, candidates in DEB_BINARIES:
        found = next((p for p in (_resolve_in_root(root, c) for c in candidates) if p), None)
        if found is None:
            if required:
                raise BundleError(f"{name} not found in the .deb files of {deb_dir} "
                                  f"(looked for {', '.join('/' + c for c in candidates)})")
            log(f"Note: no {name} in the .deb files; the bundle will not have it")
            continue
        picked[name] = found
    return picked, {"kind": kind, "inputs": inputs}, engine_deb_version, root


def _library_index(root: Path) -> dict[str, Path]:
    """soname -> file for every shared library in the extracted packages."""
    index: dict[str, Path] = {}
    for base in ("lib", "usr/lib", "lib64", "usr/lib64"):
        top = root / base
        if not top.is_dir():
            continue
        for path in sorted(top.rglob("*.so*")):
            if path.name not in index and re.search(r"\.so(\.\d+)*$", path.name):
                real = _resolve_in_root(root, str(path.relative_to(root)))
                if real is not None:
                    index[path.name] = real
    return index


def _needed_libraries(binaries: Iterable[Path], root: Path | None) -> tuple[dict[str, Path], list[str]]:
    """Libraries to bundle (found in the packages) and sonames the host must provide."""
    index = _library_index(root) if root is not None else {}
    bundled: dict[str, Path] = {}
    host: set[str] = set()
    queue = [p.read_bytes() for p in binaries]
    while queue:
        _arch, needed = elf_info(queue.pop())
        for soname in needed:
            if _LIBC_SONAMES.search(soname) or soname in bundled or soname in host:
                continue
            if soname in index:
                bundled[soname] = index[soname]
                queue.append(index[soname].read_bytes())
            else:
                host.add(soname)
    return bundled, sorted(host)


def _stage(source_kind: str, source: Path | None, work: Path, log: Log) -> _Staged:
    root: Path | None = None
    if source_kind == "static":
        assert source is not None
        picked, src, hint = _stage_static(source, work, log)
    elif source_kind in ("debs", "apt"):
        assert source is not None
        picked, src, hint, root = _stage_debs(source, work, log, source_kind)
    else:
        raise BundleError(f"unknown bundle source {source_kind!r}; expected one of {', '.join(SOURCE_KINDS)}")
    log("Resolving shared libraries...")
    libs, host_libs = _needed_libraries(picked.values(), root)
    files: dict[str, tuple[Content, int]] = {}
    for name, path in picked.items():
        files[f"bin/{name}"] = (path, 0o755)
    for soname, path in libs.items():
        files[f"lib/{soname}"] = (path, 0o644)
    with open(picked["dockerd"], "rb") as fh:
        head = fh.read(1 << 16)
    arch = _elf_arch(head) or _MACHINE_ARCH.get(platform.machine(), platform.machine())
    lib_dir = None
    if libs:  # the bundled libraries, under their sonames, for the version probe
        lib_dir = work / "probe-lib"
        lib_dir.mkdir()
        for soname, path in libs.items():
            (lib_dir / soname).symlink_to(path)
    log("Reading the engine version...")
    version = _engine_version_from(picked["dockerd"], lib_dir) or hint
    if not version:
        raise BundleError("cannot tell the engine version: `dockerd --version` did not run here "
                          "and the source does not name it")
    for member, text, mode in init_files():
        files[member] = (text.encode(), mode)
    glibc = _glibc_of([*picked.values(), *libs.values()])
    return _Staged(files, src, arch, version, host_libs, glibc)


def render_manifest(staged: _Staged) -> bytes:
    """The manifest: no paths or times of the build machine, so it is reproducible."""
    from pymachine.machine import __version__

    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "bundle_version": BUNDLE_VERSION,
        "builder": f"pymachine {__version__}",
        "engine_version": staged.engine_version,
        "arch": staged.arch,
        "source": staged.source,
        "host_libraries": staged.host_libraries,
        "glibc": staged.glibc,
        "files": {},
    }
    for member, (content, mode) in sorted(staged.files.items()):
        sha, size = _digest(content)
        manifest["files"][member] = {"sha256": sha, "size": size, "mode": f"{mode:04o}"}
    return (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()


def write_archive(files: dict[str, tuple[Content, int]], out: io.BufferedIOBase, level: int = 6) -> None:
    """A byte-for-byte reproducible tar.gz: sorted members, fixed owner and mtime,
    no file name or timestamp in the gzip header."""
    mtime = _mtime()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=level) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for member in sorted(files):
            content, mode = files[member]
            info = tarfile.TarInfo(member)
            info.size = len(content) if isinstance(content, bytes) else content.stat().st_size
            info.mode = mode
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if isinstance(content, bytes):
                tar.addfile(info, io.BytesIO(content))
            else:
                with open(content, "rb") as fh:
                    tar.addfile(info, fh)


def build_bundle(source_kind: str, source: Path | None, output: Path | None,
                 log: Log = _quiet) -> BundleInfo:
    """Build a bundle from ``source_kind`` ("static": a Docker static .tgz,
    "debs": a directory of .deb files, "apt": download Debian's packages with
    ``apt-get download``; ``source`` is then ignored).  ``output`` None means
    ``pymachine-engine-<version>-<arch>.tar.gz`` in the current directory.
    The file is written to a temp name and renamed, so it is whole or absent."""
    with tempfile.TemporaryDirectory(prefix="pymachine-bundle-") as tmp:
        work = Path(tmp)
        if source_kind == "apt":
            source = download_debs(work / "debs", APT_PACKAGES, log)
        elif source is None:
            raise BundleError(f"bundle source {source_kind!r} needs a path")
        elif not source.exists():
            raise BundleError(f"{source}: no such file or directory")
        staged = _stage(source_kind, source, work, log)
        staged.files[MANIFEST] = (render_manifest(staged), 0o644)
        if output is None:
            output = Path.cwd() / f"pymachine-engine-{staged.engine_version}-{staged.arch}.tar.gz"
        output = output.absolute()
        log(f"Writing {output}...")
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_out = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                write_archive(staged.files, fh)
            os.chmod(tmp_out, 0o644)
            os.replace(tmp_out, output)
        except BaseException:
            Path(tmp_out).unlink(missing_ok=True)
            raise
    return BundleInfo(output, _sha256_file(output), staged.engine_version)


def apt_library_packages(packages: Iterable[str]) -> list[str]:
    """The direct ``lib*`` dependencies of ``packages`` (libdevmapper for
    dockerd, libseccomp for runc...), glibc excluded: a minimal host may lack
    them.  Read from the local apt cache, no network."""
    proc = subprocess.run(["apt-cache", "depends", "--no-recommends", "--no-suggests",
                           "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *packages],
                          capture_output=True, text=True, check=False)
    libs = set()
    for line in proc.stdout.splitlines():
        match = re.match(r"\s*\|?(?:Pre)?Depends:\s+(lib[\w.+-]+)$", line)
        if match and not match.group(1).startswith("libc6"):
            libs.add(match.group(1))
    return sorted(libs)


def download_debs(dest: Path, packages: Iterable[str], log: Log) -> Path:
    """``apt-get download`` the engine packages and their libraries into
    ``dest``.  Needs only the package lists, not the dpkg lock."""
    if shutil.which("apt-get") is None:
        raise BundleError("--from-apt needs apt-get (a Debian or Ubuntu machine)")
    dest.mkdir(parents=True, exist_ok=True)
    wanted = list(packages)
    wanted += [lib for lib in apt_library_packages(wanted) if lib not in wanted]
    if os.geteuid() == 0:
        # apt drops privileges to _apt for downloads; let it write here.
        try:
            import pwd

            os.chown(dest, pwd.getpwnam("_apt").pw_uid, -1)
        except (KeyError, OSError):
            pass
    log(f"Downloading {' '.join(wanted)} with apt-get...")
    proc = subprocess.run(["apt-get", "download", "-q", *wanted], cwd=dest, capture_output=True,
                          text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise BundleError("apt-get download failed: " + (detail[-1] if detail else f"exit {proc.returncode}"))
    return dest


# -- reading and verifying ------------------------------------------------------


def _open(path: Path, data: bytes | None = None) -> tarfile.TarFile:
    try:
        if data is not None:
            return tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
        return tarfile.open(path, "r:gz")
    except FileNotFoundError:
        raise BundleError(f"bundle {path}: no such file") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"bundle {path}: not a readable .tar.gz ({exc})") from exc


def _load_manifest(path: Path, tar: tarfile.TarFile) -> dict:
    try:
        fh = tar.extractfile(MANIFEST)
    except KeyError:
        fh = None
    if fh is None:
        raise BundleError(f"bundle {path}: no {MANIFEST} (not a pymachine engine bundle)")
    try:
        manifest = json.loads(fh.read())
    except ValueError as exc:
        raise BundleError(f"bundle {path}: {MANIFEST} is not valid JSON") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT \
            or not isinstance(manifest.get("files"), dict):
        raise BundleError(f"bundle {path}: {MANIFEST} is not a pymachine engine bundle manifest")
    if manifest.get("bundle_version") != BUNDLE_VERSION:
        raise BundleError(f"bundle {path}: bundle version {manifest.get('bundle_version')!r} "
                          f"is not supported (expected {BUNDLE_VERSION})")
    return manifest


def read_manifest(path: Path) -> dict:
    """The bundle's manifest, checked to be one (digests are not checked here)."""
    try:
        with _open(path) as tar:
            return _load_manifest(path, tar)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"bundle {path}: corrupt archive ({exc})") from exc


def verify_bundle(path: Path, data: bytes | None = None) -> dict:
    """Check every member against the manifest; returns the manifest.

    Raises BundleError naming the first bad member and both digests, or
    the member that is missing or not listed.  With ``data``, those bytes
    are checked (and ``path`` only names them), so what is verified is
    exactly what gets uploaded."""
    try:
        with _open(path, data) as tar:
            manifest = _load_manifest(path, tar)
            expected: dict[str, dict] = manifest["files"]
            seen: set[str] = set()
            for member in tar:
                name = member.name
                if name == MANIFEST:
                    continue
                if not member.isfile():
                    raise BundleError(f"bundle {path}: unexpected entry {name} (not a regular file)")
                if name not in expected:
                    raise BundleError(f"bundle {path}: {name} is not listed in the manifest")
                fh = tar.extractfile(member)
                assert fh is not None
                digest = hashlib.sha256()
                for chunk in iter(lambda: fh.read(1 << 20), b""):  # noqa: B023
                    digest.update(chunk)
                got, want = digest.hexdigest(), expected[name].get("sha256")
                if got != want:
                    raise BundleError(f"bundle {path}: {name} sha256 mismatch (expected {want}, got {got})")
                if member.size != expected[name].get("size"):
                    raise BundleError(f"bundle {path}: {name} size mismatch "
                                      f"(expected {expected[name].get('size')}, got {member.size})")
                seen.add(name)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"bundle {path}: corrupt archive ({exc})") from exc
    missing = sorted(set(expected) - seen)
    if missing:
        raise BundleError(f"bundle {path}: {missing[0]} is listed in the manifest but missing")
    return manifest


# -- installing on a host -----------------------------------------------------


def _remote_init_system(runner: Runner) -> str:
    """The same rule as the provisioner: systemd iff /run/systemd/system exists."""
    if runner.run("test -d /run/systemd/system", check=False).ok:
        return "systemd"
    if runner.run("test -x /sbin/openrc-run || command -v openrc-run", check=False).ok:
        return "openrc"
    return "sysv"


def _replace(src: str, dest: str, mode: int) -> str:
    """Shell lines installing ``src`` at ``dest`` atomically: copy to a temp
    name in the same directory, chmod, rename over (a running binary keeps
    its old inode, so no 'text file busy')."""
    q = shlex.quote
    tmp = str(PurePosixPath(dest).with_name(f".{PurePosixPath(dest).name}.pymachine-new"))
    return f"cp {q(src)} {q(tmp)} && chmod {mode:04o} {q(tmp)} && mv -f {q(tmp)} {q(dest)}"


def install_script(manifest: dict, init_system: str, stage: str = REMOTE_STAGE) -> str:
    """The host-side install, as one ``set -e`` shell script (one round trip)."""
    q = shlex.quote
    files: dict[str, dict] = manifest["files"]
    lines = ["set -e", 'PATH="$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"',
             f"mkdir -p {REMOTE_BIN}"]
    for member in sorted(m for m in files if m.startswith("bin/")):
        name = member.split("/", 1)[1]
        lines.append(_replace(f"{stage}/{member}", f"{REMOTE_BIN}/{name}", int(files[member]["mode"], 8)))
    libs = sorted(m for m in files if m.startswith("lib/"))
    if libs:
        lines.append(f"mkdir -p {REMOTE_LIB}")
        for member in libs:
            name = member.split("/", 1)[1]
            lines.append(_replace(f"{stage}/{member}", f"{REMOTE_LIB}/{name}", 0o644))
        lines.append(f"printf '%s\\n' {REMOTE_LIB} > {REMOTE_LDCONF}")
        lines.append("ldconfig")
    if init_system == "systemd":
        lines.append("mkdir -p /etc/systemd/system")
        lines.append(_replace(f"{stage}/init/systemd/docker.service",
                              "/etc/systemd/system/docker.service", 0o644))
        lines.append("systemctl daemon-reload")
    elif init_system == "openrc":
        lines.append("mkdir -p /etc/init.d")
        lines.append(_replace(f"{stage}/init/openrc/docker", "/etc/init.d/docker", 0o755))
    else:
        lines.append("mkdir -p /etc/init.d /etc/default")
        lines.append(_replace(f"{stage}/init/sysv/docker", "/etc/init.d/docker", 0o755))
        lines.append(f"[ -e /etc/default/docker ] || cp {q(stage + '/init/sysv/docker.default')} "
                     "/etc/default/docker")
        lines.append("if command -v update-rc.d >/dev/null 2>&1; then "
                     "update-rc.d docker defaults >/dev/null 2>&1 || true; fi")
    lines.append("grep -q '^docker:' /etc/group || groupadd --system docker 2>/dev/null "
                 "|| addgroup -S docker")
    return "\n".join(lines) + "\n"


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:2])


def check_host_glibc(runner: Runner, manifest: dict, name: str) -> None:
    """Refuse, before anything is uploaded, a host whose glibc is older than the bundle's
    binaries need (trixie's runc needs 2.38; Debian 12 has 2.36).  A host without glibc
    (musl) is refused too; static bundles (no "glibc" in the manifest) pass everywhere."""
    need = manifest.get("glibc")
    if not need:
        return
    result = runner.run("getconf GNU_LIBC_VERSION 2>/dev/null || ldd --version 2>&1 | head -n 1", check=False)
    found = re.search(r"(\d+)\.(\d+)", result.stdout) if "glibc" in result.stdout.lower() or \
        "gnu libc" in result.stdout.lower() or "gnu c library" in result.stdout.lower() else None
    have = f"{found.group(1)}.{found.group(2)}" if found else None
    if have is None or _version_tuple(have) < _version_tuple(need):
        what = f"glibc {have}" if have else "no glibc"
        raise BundleError(f"engine bundle {name} needs glibc {need} or newer and the host has {what}: "
                          "build the bundle from the host's own release (--from-debs/--from-apt there) "
                          "or from Docker's static archive (--from-static); nothing was installed")


def installer(path: Path, log: Log) -> Callable[[Runner], None]:
    """Verify the bundle here (refusing a bad one before anything touches the
    host), then return the install step the provisioner runs over its Runner."""
    if not str(path) or str(path) == ".":
        raise BundleError("engine install source 'bundle' needs a bundle file (--engine-bundle)")
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"engine bundle {path}: no such file (build one with: pymachine engine bundle)")
    data = path.read_bytes()
    manifest = verify_bundle(path, data)
    digest = hashlib.sha256(data).hexdigest()
    files: dict[str, dict] = manifest["files"]
    sums = "".join(f"{files[m]['sha256']}  {m}\n" for m in sorted(files)).encode()
    version = manifest.get("engine_version", "?")

    def install(runner: Runner) -> None:
        check_host_glibc(runner, manifest, path.name)
        log(f"Uploading the engine bundle (Docker {version}, {len(data) / 1e6:.1f} MB)...")
        runner.put(REMOTE_ARCHIVE, data, mode=0o600)
        result = runner.run(f"sha256sum {REMOTE_ARCHIVE}", sudo=True, check=False)
        words = result.stdout.split()
        got = words[0] if result.ok and words else f"(sha256sum failed: {result.stderr.strip()})"
        if got != digest:
            runner.run(f"rm -f {REMOTE_ARCHIVE}", sudo=True, check=False)
            raise BundleError(f"engine bundle {path.name}: the upload to the host is corrupt "
                              f"(sha256 expected {digest}, got {got}); nothing was installed")
        runner.run(f"rm -rf {REMOTE_STAGE} && mkdir -m 0700 -p {REMOTE_STAGE} && "
                   f"tar -xzf {REMOTE_ARCHIVE} -C {REMOTE_STAGE}", sudo=True, timeout=600)
        check = runner.run(f"cd {REMOTE_STAGE} && sha256sum -c -", sudo=True, check=False, stdin=sums)
        if not check.ok:
            bad = [line.strip() for line in (check.stdout + check.stderr).splitlines()
                   if line.strip() and not line.rstrip().endswith(": OK")]
            runner.run(f"rm -rf {REMOTE_STAGE} {REMOTE_ARCHIVE}", sudo=True, check=False)
            raise BundleError(f"engine bundle {path.name}: files differ from the manifest on the host: "
                              + ("; ".join(bad[:3]) or f"sha256sum exit {check.exit_status}")
                              + "; nothing was installed")
        init_system = _remote_init_system(runner)
        log(f"Installing Docker {version} from the bundle ({init_system})...")
        runner.run(install_script(manifest, init_system), sudo=True, timeout=600)
        runner.run(f"rm -rf {REMOTE_STAGE} {REMOTE_ARCHIVE}", sudo=True, check=False)

    return install


# -- init files ---------------------------------------------------------------

SYSTEMD_UNIT = """\
# Installed by pymachine from an engine bundle.  No docker.socket: the daemon
# listens where its -H flags say (the provisioner's drop-in sets them), and with
# no system containerd socket dockerd starts and supervises its own containerd.
[Unit]
Description=Docker Application Container Engine
Documentation=https://docs.docker.com
After=network-online.target firewalld.service containerd.service
Wants=network-online.target
StartLimitBurst=3
StartLimitIntervalSec=60

[Service]
Type=notify
Environment=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EnvironmentFile=-/etc/default/docker
ExecStart=/usr/local/bin/dockerd -H unix:///var/run/docker.sock $DOCKER_OPTS
ExecReload=/bin/kill -s HUP $MAINPID
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Delegate=yes
KillMode=process
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""

SYSV_SCRIPT = """\
#!/bin/sh
# Installed by pymachine from an engine bundle; modelled on Debian's
# /etc/init.d/docker.  Options come from /etc/default/docker (DOCKERD,
# DOCKER_OPTS and `export` lines for the daemon's environment).
set -e

### BEGIN INIT INFO
# Provides:           docker
# Required-Start:     $syslog $remote_fs
# Required-Stop:      $syslog $remote_fs
# Should-Start:       cgroupfs-mount cgroup-lite
# Should-Stop:        cgroupfs-mount cgroup-lite
# Default-Start:      2 3 4 5
# Default-Stop:       0 1 6
# Short-Description:  Docker container engine
### END INIT INFO

# /usr/local first: dockerd finds the bundled containerd, runc and docker-init.
export PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin

BASE=docker
DOCKERD=/usr/local/bin/dockerd
# The pid file dockerd writes itself
DOCKER_PIDFILE=/var/run/$BASE.pid
# The pid file of the process this script started
DOCKER_SSD_PIDFILE=/var/run/$BASE-ssd.pid
DOCKER_LOGFILE=/var/log/$BASE.log
DOCKER_OPTS=
DOCKER_DESC="Docker"

if [ -f /etc/default/$BASE ]; then
	. /etc/default/$BASE
fi

if [ ! -x "$DOCKERD" ]; then
	echo "$DOCKERD not present or not executable" >&2
	exit 1
fi

fail_unless_root() {
	if [ "$(id -u)" != '0' ]; then
		echo "$DOCKER_DESC must be run as root" >&2
		exit 1
	fi
}

running() {
	[ -f "$DOCKER_SSD_PIDFILE" ] || return 1
	pid=$(cat "$DOCKER_SSD_PIDFILE" 2>/dev/null) || return 1
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

cgroupfs_mount() {
	# see also https://github.com/tianon/cgroupfs-mount/blob/master/cgroupfs-mount
	if grep -v '^#' /etc/fstab 2>/dev/null | grep -q cgroup \\
		|| [ ! -e /proc/cgroups ] \\
		|| [ ! -d /sys/fs/cgroup ]; then
		return
	fi
	if ! mountpoint -q /sys/fs/cgroup; then
		mount -t tmpfs -o uid=0,gid=0,mode=0755 cgroup /sys/fs/cgroup
	fi
	(
		cd /sys/fs/cgroup
		for sys in $(awk '!/^#/ { if ($4 == 1) print $1 }' /proc/cgroups); do
			mkdir -p $sys
			if ! mountpoint -q $sys; then
				if ! mount -n -t cgroup -o $sys cgroup $sys; then
					rmdir $sys || true
				fi
			fi
		done
	)
}

stop_daemon() {
	if command -v start-stop-daemon >/dev/null 2>&1; then
		if ! start-stop-daemon --stop --pidfile "$DOCKER_SSD_PIDFILE" --retry 10; then
			# Nothing to stop is fine (a stale pid file); a survivor is not.
			if running; then return 1; fi
		fi
	else
		pid=$(cat "$DOCKER_SSD_PIDFILE")
		kill "$pid" 2>/dev/null || true
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 20 ]; do sleep 1; i=$((i + 1)); done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$DOCKER_SSD_PIDFILE"
}

case "$1" in
	start)
		fail_unless_root
		if running; then
			echo "$DOCKER_DESC is already running"
			exit 0
		fi
		cgroupfs_mount

		touch "$DOCKER_LOGFILE"
		chgrp docker "$DOCKER_LOGFILE" 2>/dev/null || true

		ulimit -n 1048576 2>/dev/null || true
		# Non-zero limits cost accounting overhead in the kernel.
		if [ "$BASH" ]; then
			ulimit -u unlimited 2>/dev/null || true
		else
			ulimit -p unlimited 2>/dev/null || true
		fi

		echo "Starting $DOCKER_DESC: $BASE"
		if command -v start-stop-daemon >/dev/null 2>&1; then
			start-stop-daemon --start --background \\
				--no-close \\
				--exec "$DOCKERD" \\
				--pidfile "$DOCKER_SSD_PIDFILE" \\
				--make-pidfile \\
				-- \\
				-p "$DOCKER_PIDFILE" \\
				$DOCKER_OPTS \\
				>> "$DOCKER_LOGFILE" 2>&1
		else
			nohup "$DOCKERD" -p "$DOCKER_PIDFILE" $DOCKER_OPTS >> "$DOCKER_LOGFILE" 2>&1 < /dev/null &
			echo $! > "$DOCKER_SSD_PIDFILE"
		fi
		;;

	stop)
		fail_unless_root
		if [ -f "$DOCKER_SSD_PIDFILE" ]; then
			echo "Stopping $DOCKER_DESC: $BASE"
			stop_daemon
		else
			echo "$DOCKER_DESC already stopped - file $DOCKER_SSD_PIDFILE not found."
		fi
		;;

	restart|force-reload)
		fail_unless_root
		if running; then
			"$0" stop
		fi
		"$0" start
		;;

	status)
		if running; then
			echo "$DOCKER_DESC is running"
			exit 0
		fi
		echo "$DOCKER_DESC is not running"
		exit 3
		;;

	*)
		echo "Usage: service docker {start|stop|restart|status}"
		exit 1
		;;
esac
"""

SYSV_DEFAULT = """\
# Docker engine options, read by /etc/init.d/docker (pymachine rewrites this
# file when it provisions the machine).
#DOCKERD=/usr/local/bin/dockerd
#DOCKER_OPTS="--dns 8.8.8.8"
#export http_proxy="http://127.0.0.1:3128/"
"""

OPENRC_SCRIPT = """\
#!/sbin/openrc-run
# Installed by pymachine from an engine bundle; modelled on Alpine's
# /etc/init.d/docker.  Options come from /etc/conf.d/docker.

name="Docker Daemon"
description="Persistent process that manages docker containers"
description_reload="Reload configuration without exiting"

export PATH="/usr/local/sbin:/usr/local/bin:${PATH}"
command="${DOCKERD_BINARY:-/usr/local/bin/dockerd}"
command_args="${DOCKER_OPTS}"
command_background="yes"
pidfile="/run/${RC_SVCNAME}-openrc.pid"
DOCKER_LOGFILE="${DOCKER_LOGFILE:-/var/log/${RC_SVCNAME}.log}"
output_log="${DOCKER_LOGFILE}"
error_log="${DOCKER_LOGFILE}"
retry="${DOCKER_RETRY:-TERM/60/KILL/10}"
rc_ulimit="${DOCKER_ULIMIT:--c unlimited -n 1048576 -u unlimited}"
extra_started_commands="reload"

depend() {
	need sysfs cgroups
	after iptables ip6tables
}

start_pre() {
	checkpath -f -m 0644 -o root:docker "$DOCKER_LOGFILE"
}

reload() {
	ebegin "Reloading configuration"
	start-stop-daemon --signal HUP --pidfile "$pidfile"
	eend $?
}
"""


def init_files() -> list[tuple[str, str, int]]:
    """(member, content, mode) of the init files every bundle carries."""
    return [
        ("init/openrc/docker", OPENRC_SCRIPT, 0o755),
        ("init/systemd/docker.service", SYSTEMD_UNIT, 0o644),
        ("init/sysv/docker", SYSV_SCRIPT, 0o755),
        ("init/sysv/docker.default", SYSV_DEFAULT, 0o644),
    ]
