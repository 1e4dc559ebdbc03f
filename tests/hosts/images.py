"""A busybox image tarball for ``docker import`` (no registry is reachable from tests).

The tar holds a static ``/bin/busybox`` (Debian's busybox-static) plus a few
applet symlinks; ``docker import <tar> local/busybox:1`` then gives an image
that can run ``sh -c ...``.  Cached by the binary's hash; the tar is
deterministic (fixed owners and mtimes) so rebuilding gives the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from pathlib import Path

BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
APPLETS = ("sh", "echo", "cat", "ls", "sleep", "hostname", "env", "true", "false")
IMAGE_NAME = "local/busybox:1"


def find_busybox() -> Path:
    for candidate in BUSYBOX_CANDIDATES:
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError("busybox not found (install Debian's busybox-static)")


def _entry(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


def busybox_image_tar(cache_dir: Path | None = None) -> Path:
    """Return the path of a cached busybox rootfs tar, building it if missing."""
    from .rootfs import default_cache_dir

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    busybox = find_busybox()
    data = busybox.read_bytes()
    key = hashlib.sha256(data + ",".join(APPLETS).encode()).hexdigest()[:16]
    final = cache_dir / f"busybox-image-{key}.tar"
    if final.is_file():
        return final
    fd, tmp = tempfile.mkstemp(prefix=final.name + ".tmp-", dir=cache_dir)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as tar:
            for directory in ("bin", "etc", "tmp"):
                tar.addfile(_entry(directory, tarfile.DIRTYPE, 0o1777 if directory == "tmp"
                                   else 0o755))  # fmt: skip
            binary = _entry("bin/busybox", tarfile.REGTYPE, 0o755)
            binary.size = len(data)
            tar.addfile(binary, io.BytesIO(data))
            for applet in APPLETS:
                link = _entry(f"bin/{applet}", tarfile.SYMTYPE, 0o777)
                link.linkname = "busybox"
                tar.addfile(link)
            hosts = b"127.0.0.1\tlocalhost\n"
            info = _entry("etc/hosts", tarfile.REGTYPE, 0o644)
            info.size = len(hosts)
            tar.addfile(info, io.BytesIO(hosts))
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)  # atomic: concurrent builders write identical bytes
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return final

