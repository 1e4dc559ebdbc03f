"""Verified, resumable, digest-addressed download of VM images (``--qemu-image URL``).

A cloud image is hundreds of MB: an interrupted transfer is resumed with an
HTTP Range request (or restarted cleanly when the server ignores Range), the
result is verified against a sha256/sha512 digest (given directly or looked up
in a ``SHA256SUMS``-style file) and only then renamed into
``<cache>/by-digest/<sha256>``, so a second create finds it there and makes no
request at all.  A file that fails verification is deleted, never cached.

Proxies come from the environment (``HTTP(S)_PROXY``/``NO_PROXY``) through
urllib's default ProxyHandler.  Every network wait is bounded.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import unquote, urlsplit

from pymachine.machine.errors import MachineError
from pymachine.machine.progress import Task

Log = Callable[[str], None]

TIMEOUT = 30.0  # per connect / per read
ATTEMPTS = 5
BACKOFF = (0.5, 1.0, 2.0, 4.0)
SUMS_MAX_BYTES = 4 << 20
CHUNK = 1 << 20
_HEX = re.compile(r"^[0-9a-f]+$")
_ALGO_BY_LENGTH = {64: "sha256", 128: "sha512"}
USER_AGENT = "pymachine-image-download"


class DownloadError(MachineError):
    """A download failed for good (after the retries) or did not verify."""


@dataclass(frozen=True)
class Digest:
    algo: str  # "sha256" or "sha512"
    hex: str

    def __str__(self) -> str:
        return f"{self.algo}:{self.hex}"


def parse_digest(value: str) -> Digest:
    """``sha256:HEX``, ``sha512:HEX`` or bare hex (the algorithm from its length)."""
    algo, sep, digest = value.strip().partition(":")
    if not sep:
        algo, digest = "", algo
    digest = digest.strip().lower()
    algo = algo.lower() or _ALGO_BY_LENGTH.get(len(digest), "")
    want = {"sha256": 64, "sha512": 128}.get(algo)
    if want is None or len(digest) != want or not _HEX.match(digest):
        raise MachineError(
            f"not a sha256/sha512 digest (sha256:HEX, sha512:HEX or bare hex): {value!r}")
    return Digest(algo, digest)


def sums_url(checksum: str) -> str | None:
    """The URL of a SHA256SUMS-style file when ``checksum`` is ``file:URL`` / ``sums:URL``."""
    for prefix in ("sums:", "file:"):
        if checksum.startswith(prefix) and "://" in checksum[len(prefix):]:
            return checksum[len(prefix):]
    return None


def find_in_sums(text: str, name: str) -> Digest:
    """The digest for ``name`` in a ``sha256sum``/``sha512sum`` listing
    (``HEX  name``, ``HEX *name``) or a BSD-style one (``SHA256 (name) = HEX``)."""
    for line in text.splitlines():
        line = line.strip()
        bsd = re.match(r"^(SHA256|SHA512) \((.+)\) = ([0-9a-fA-F]+)$", line)
        if bsd:
            if bsd.group(2) == name:
                return parse_digest(f"{bsd.group(1).lower()}:{bsd.group(3)}")
            continue
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[1].lstrip("*").strip().removeprefix("./") == name:
            return parse_digest(parts[0])
    raise DownloadError(f"the checksum file lists no entry for {name}")


def url_file_name(url: str) -> str:
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    return name or "image"


def expected_digest(checksum: str, url: str, *, timeout: float = TIMEOUT) -> Digest | None:
    """The digest ``checksum`` names for ``url``'s file (fetching a sums file if need be)."""
    if not checksum.strip():
        return None
    listing = sums_url(checksum.strip())
    if listing is None:
        return parse_digest(checksum)
    try:
        with _open(listing, timeout=timeout) as resp:
            data = resp.read(SUMS_MAX_BYTES + 1)
    except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
        raise DownloadError(f"cannot fetch the checksum file {listing}: {_reason(exc)}") from None
    if len(data) > SUMS_MAX_BYTES:
        raise DownloadError(f"the checksum file {listing} is larger than {SUMS_MAX_BYTES >> 20} MB")
    return find_in_sums(data.decode("utf-8", "replace"), url_file_name(url))


def cache_path(cache_dir: Path, digest: Digest) -> Path | None:
    """Where a verified file with this digest already is, or None."""
    by = Path(cache_dir) / "by-digest"
    if digest.algo == "sha256":
        path = by / digest.hex
        return path if path.is_file() else None
    alias = by / digest.algo / digest.hex  # holds the sha256 of the same file
    try:
        target = by / alias.read_text().strip()
    except OSError:
        return None
    return target if _HEX.match(target.name) and target.is_file() else None


def fetch(url: str, dest_cache: str | os.PathLike[str], checksum: str, log: Log, *,
          timeout: float = TIMEOUT, attempts: int = ATTEMPTS,
          sleep: Callable[[float], None] = time.sleep) -> Path:
    """Download ``url`` into ``<dest_cache>/by-digest/<sha256>`` (verified) and return the path.

    ``checksum``: ``sha256:HEX``, ``sha512:HEX``, bare hex, ``file:URL``/``sums:URL``, or
    empty (then nothing is verified and nothing reused; a warning says so).
    """
    cache = Path(dest_cache)
    by = cache / "by-digest"
    want = expected_digest(checksum, url, timeout=timeout)
    if want is not None:
        cached = cache_path(cache, want)
        if cached is not None:
            log(f"Using the cached image {cached} ({want.algo} verified when it was downloaded)")
            return cached
    else:
        log(f"Warning: no checksum given for {url}: the download is not verified")
    by.mkdir(parents=True, exist_ok=True)
    key = want.hex[:32] if want else hashlib.sha256(url.encode()).hexdigest()[:32]
    partial = by / f".partial-{key}"
    log(f"Downloading {url}...")
    _download(url, partial, log, timeout=timeout, attempts=attempts, sleep=sleep)
    log("Verifying the download...")
    sha256, other = _hash_file(partial, want.algo if want and want.algo != "sha256" else None)
    got = Digest("sha256", sha256) if want is None or want.algo == "sha256" else Digest(want.algo, other or "")
    if want is not None and got != want:
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"checksum mismatch for {url_file_name(url)}: expected {want}, got {got}; the download was discarded"
        )
    final = by / sha256
    os.chmod(partial, 0o644)
    os.replace(partial, final)
    if want is not None and want.algo != "sha256":
        (by / want.algo).mkdir(exist_ok=True)
        alias = by / want.algo / want.hex
        tmp = alias.with_name(alias.name + ".tmp")
        tmp.write_text(sha256 + "\n")
        os.replace(tmp, alias)
    log(f"Cached {url_file_name(url)} as {final}")
    return final


# ----------------------------------------------------------------------------- transfer


def _open(url: str, *, timeout: float, headers: dict[str, str] | None = None):
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"only http and https URLs can be downloaded: {url}")
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    # build_opener's default ProxyHandler reads HTTP(S)_PROXY and NO_PROXY.
    return urllib.request.build_opener().open(req, timeout=timeout)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _download(url: str, partial: Path, log: Log, *, timeout: float, attempts: int,
              sleep: Callable[[float], None]) -> None:
    """Fill ``partial`` with the whole body, resuming with Range after a failure."""
    last = ""
    for attempt in range(attempts):
        if attempt:
            delay = BACKOFF[min(attempt - 1, len(BACKOFF) - 1)]
            log(f"Download interrupted ({last}); retrying in {delay:g}s (attempt {attempt + 1} of {attempts})...")
            sleep(delay)
        try:
            if _transfer(url, partial, timeout=timeout):
                return
            last = "the connection closed before the end of the file"
        except urllib.error.HTTPError as exc:
            if exc.code == 416:  # our offset is past the end: start over
                partial.unlink(missing_ok=True)
                last = "the server refused the resume offset"
                continue
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                partial.unlink(missing_ok=True)
                raise DownloadError(f"cannot download {url}: {_reason(exc)}") from None
            last = _reason(exc)
        except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as exc:
            last = _reason(exc)
    raise DownloadError(f"cannot download {url} after {attempts} attempts: {last}")


def _transfer(url: str, partial: Path, *, timeout: float) -> bool:
    """One request; True when the file is complete.  Appends when the server
    honours our Range, truncates and starts over when it sends the whole body."""
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with _open(url, timeout=timeout, headers=headers) as resp:
        status = getattr(resp, "status", 200)
        if have and status == 206 and _range_start(resp.headers.get("Content-Range", "")) == have:
            mode = "ab"
        else:
            have, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        expected = have + int(length) if length and length.isdigit() else None
        # live on a terminal; off one, fetch's own log lines already say each step
        progress = Task(f"Downloading {url_file_name(url)}", expected, done=have, lines=False)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "ab" else os.O_TRUNC), 0o600)
        with progress, os.fdopen(fd, mode) as out:
            _copy(resp, out, progress)
    size = partial.stat().st_size
    return expected is None or size >= expected


def _range_start(content_range: str) -> int | None:
    m = re.match(r"^bytes (\d+)-\d+/(\d+|\*)$", content_range.strip())
    return int(m.group(1)) if m else None


def _copy(resp: IO[bytes], out: IO[bytes], progress: Task) -> None:
    while True:
        block = resp.read(CHUNK)
        if not block:
            return
        out.write(block)
        progress.advance(len(block))


def _hash_file(path: Path, other_algo: str | None) -> tuple[str, str | None]:
    sha256 = hashlib.sha256()
    other = hashlib.new(other_algo) if other_algo else None
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            sha256.update(block)
            if other is not None:
                other.update(block)
    return sha256.hexdigest(), other.hexdigest() if other is not None else None
