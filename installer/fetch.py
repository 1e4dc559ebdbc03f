"""Verified downloads, cached by digest.

A file enters the cache (``~/.cache/pymachine/downloads/<sha256>``) only
after its size and sha256 matched the lock, so a cache hit needs no network;
it is still re-hashed before use so a corrupted cache cannot slip through.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

from pymachine.installer.lock import Component
from pymachine.machine.errors import MachineError

CHUNK = 1 << 16


class IntegrityError(MachineError):
    """A download (or cached file) does not match the lock."""


def cache_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("PYMACHINE_DOWNLOAD_CACHE"):
        return Path(env["PYMACHINE_DOWNLOAD_CACHE"])
    base = env.get("XDG_CACHE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".cache")
    return Path(base) / "pymachine" / "downloads"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _mismatch(comp: Component, size: int, digest: str, where: str) -> IntegrityError:
    return IntegrityError(
        f"component {comp.name!r} ({where}) does not match the lock: "
        f"expected sha256 {comp.sha256} ({comp.size} bytes), got sha256 {digest} ({size} bytes)"
    )


class _Progress:
    """A one-line progress meter on stderr, only when stderr is a terminal."""

    def __init__(self, name: str, total: int | None) -> None:
        self.name, self.total, self.done = name, total, 0
        self.enabled = sys.stderr.isatty()

    def update(self, n: int) -> None:
        self.done += n
        if self.enabled:
            pct = f"{100 * self.done // self.total:3d}%" if self.total else ""
            sys.stderr.write(f"\rDownloading {self.name}: {self.done // 1024} KiB {pct}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def fetch(comp: Component, cache: Path | None = None, timeout: float = 60.0) -> Path:
    """Return the path of ``comp`` in the cache, downloading and verifying it if needed."""
    comp.require_pinned()
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / str(comp.sha256)
    if target.exists():
        size, digest = target.stat().st_size, sha256_file(target)
        if size == comp.size and digest == comp.sha256:
            return target
        target.unlink()  # a corrupted cache entry: fetch again
    fd, tmp_name = tempfile.mkstemp(prefix=".part-", dir=cache)
    tmp = Path(tmp_name)
    h = hashlib.sha256()
    size = 0
    progress = _Progress(comp.name, comp.size)
    try:
        req = urllib.request.Request(comp.url, headers={"User-Agent": "pymachine-installer"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=timeout) as resp:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > int(comp.size or 0):
                    # keep reading nothing more: a larger file can never match
                    raise IntegrityError(
                        f"component {comp.name!r} ({comp.url}) does not match the lock: expected "
                        f"sha256 {comp.sha256} ({comp.size} bytes), got more than {comp.size} bytes "
                        f"(download stopped; sha256 of the first {size} bytes {h.hexdigest()})"
                    )
                h.update(chunk)
                out.write(chunk)
                progress.update(len(chunk))
        progress.close()
        digest = h.hexdigest()
        if size != comp.size or digest != comp.sha256:
            raise _mismatch(comp, size, digest, comp.url)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise MachineError(f"cannot download component {comp.name!r} from {comp.url}: {exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
