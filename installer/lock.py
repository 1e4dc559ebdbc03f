"""The component lock: every file an installer bundles, pinned by version, URL, size and sha256.

Why a lock: Docker Toolbox pinned versions but verified only one of seven
downloads.  Here a build refuses anything whose size or digest differs from
the lock, and the lock is refreshed only by an explicit ``lock --update`` that
reads upstream release metadata (GitHub releases, PyPI JSON, SHA256SUMS files).
The ``vm-image`` is built by us, not a third party: its upstream is
pymachine's own release of the product version, whose asset is named by the
image recipe of this checkout (``pymachine image pack`` writes it).
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pymachine.machine.atomic import write_atomic
from pymachine.machine.errors import MachineError

PLATFORMS = ("windows", "macos", "linux")
ARCHES = ("x86_64", "arm64")  # a component's ``arch``; "" = the same file serves every arch


def packaging_file(*parts: str) -> Path:
    """A file of the ``packaging/`` data (the lock, installer templates), read through
    importlib.resources so it is found in a checkout and in an installed wheel alike."""
    from importlib.resources import as_file, files

    ref = files("pymachine.packaging")
    for part in parts:  # one step at a time: Python 3.11's namespace-package path takes one
        ref = ref / part
    with as_file(ref) as path:  # a real file for both layouts (no zip import here)
        return Path(path)


DEFAULT_LOCK = packaging_file("components.lock.json")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class LockError(MachineError):
    """The lock file is malformed or a component is not pinned."""


@dataclass
class Component:
    """One bundled file.  ``dest`` is where it lands in the installed tree;
    ``unpack`` ("zip"/"tar") extracts it there instead of copying it; ``arch``
    ("x86_64"/"arm64") names the CPU it is built for ("" = any: scripts, pure-Python
    wheels), so one name (docker-cli, vm-image, ...) has one entry per arch."""

    name: str
    version: str
    url: str
    size: int | None
    sha256: str | None
    dest: str
    unpack: str = ""
    strip: int = 0
    optional: bool = False
    upstream: dict[str, Any] = field(default_factory=dict)
    arch: str = ""

    def require_pinned(self) -> None:
        if not isinstance(self.size, int) or not self.sha256 or not SHA256_RE.match(self.sha256):
            raise LockError(
                f"component {self.name!r} is not pinned (size/sha256 missing): "
                "run 'python -m pymachine.installer lock --update'"
            )

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class Lock:
    product: dict[str, str]
    platforms: dict[str, list[Component]]
    schema: int = 1

    @classmethod
    def load(cls, path: str | os.PathLike[str] = DEFAULT_LOCK) -> Lock:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise LockError(f"cannot read lock file {path}: {exc}") from None
        if data.get("schema") != 1:
            raise LockError(f"{path}: unsupported lock schema {data.get('schema')!r}")
        platforms: dict[str, list[Component]] = {}
        for plat, comps in data.get("platforms", {}).items():
            if plat not in PLATFORMS:
                raise LockError(f"{path}: unknown platform {plat!r}")
            platforms[plat] = [Component(**c) for c in comps]
            for c in platforms[plat]:
                if c.arch not in ("", *ARCHES):
                    raise LockError(f"{path}: {plat}/{c.name}: unknown arch {c.arch!r} (one of {', '.join(ARCHES)})")
            seen = [(c.name, c.arch) for c in platforms[plat]]
            dup = sorted({f"{n}/{a or 'any'}" for n, a in seen if seen.count((n, a)) > 1})
            if dup:
                raise LockError(f"{path}: {plat}: components listed twice: {', '.join(dup)}")
        return cls(product=dict(data.get("product", {})), platforms=platforms)

    def to_json(self) -> str:
        data = {
            "schema": self.schema,
            "product": self.product,
            "platforms": {p: [asdict(c) for c in cs] for p, cs in sorted(self.platforms.items())},
        }
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        write_atomic(path, self.to_json().encode(), 0o644, dir_mode=None)

    def components(self, platform: str, arch: str | None = None) -> list[Component]:
        """The platform's components; with ``arch``, those built for it plus the arch-free ones."""
        if platform not in self.platforms:
            raise LockError(f"the lock has no components for platform {platform!r}")
        if arch is not None and arch not in ARCHES:
            raise LockError(f"unknown arch {arch!r} (one of {', '.join(ARCHES)})")
        return [c for c in self.platforms[platform] if arch is None or c.arch in ("", arch)]

    def arches(self, platform: str) -> list[str]:
        """The arches the platform's lock names (each gets its own installer), x86_64 if none."""
        named = {c.arch for c in self.components(platform) if c.arch}
        return [a for a in ARCHES if a in named] or ["x86_64"]


# ---------------------------------------------------------------- lock --update

def _get(url: str, timeout: float = 30.0) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "pymachine-installer-lock"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


def _head_size(url: str, timeout: float = 30.0) -> int:
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "pymachine-installer-lock"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
    if length is None:
        raise LockError(f"{url}: server gives no Content-Length")
    return int(length)


def _expand(template: str, **values: str) -> str:
    return template.format(**values)


def _github_api() -> str:
    return os.environ.get("PYMACHINE_GITHUB_API", "https://api.github.com").rstrip("/")


def _github(comp: Component, up: dict[str, Any], product: dict[str, str]) -> None:
    release = json.loads(_get(f"{_github_api()}/repos/{up['repo']}/releases/latest"))
    version = str(release["tag_name"]).removeprefix("v")
    pattern = re.compile(_expand(up["asset"], version=re.escape(version)))
    asset = next((a for a in release.get("assets", []) if pattern.fullmatch(str(a.get("name")))), None)
    if asset is None:
        raise LockError(f"{comp.name}: release {release['tag_name']} has no asset matching {pattern.pattern!r}")
    sha = _asset_sha256(comp, up, release, asset, version)
    comp.version, comp.url, comp.size, comp.sha256 = version, asset["browser_download_url"], int(asset["size"]), sha


def _asset_sha256(comp: Component, up: dict[str, Any], release: dict[str, Any], asset: dict[str, Any],
                  version: str) -> str:
    """A release asset's sha256: GitHub's own digest, else the release's checksum file."""
    wanted = str(asset["name"])
    digest = str(asset.get("digest") or "")
    if digest.startswith("sha256:"):
        sha = digest.split(":", 1)[1]
    elif up.get("sums_asset"):
        sums_name = _expand(up["sums_asset"], version=version)
        sums = next((a for a in release["assets"] if a.get("name") == sums_name), None)
        if sums is None:
            raise LockError(f"{comp.name}: release has neither a digest nor {sums_name!r}")
        sha = _sum_for(_get(sums["browser_download_url"]).decode(), wanted, comp.name)
    else:
        raise LockError(f"{comp.name}: release asset {wanted!r} carries no sha256 digest")
    return sha


def _pymachine_image(comp: Component, up: dict[str, Any], product: dict[str, str]) -> None:
    """pymachine's own image, from pymachine's release of the product version.

    The asset must be the image of this checkout's recipe: pymachine only
    finds the image of its own recipe, and the installer build checks it again.
    """
    from pymachine.engine.images import recipe_hash
    from pymachine.machine import __version__

    version = str(product.get("version") or __version__)
    recipe = recipe_hash({"x86_64": "amd64", "arm64": "arm64"}.get(comp.arch))  # each arch: its own recipe
    tag = f"v{version}"
    release = json.loads(_get(f"{_github_api()}/repos/{up['repo']}/releases/tags/{tag}"))
    wanted = _expand(up["asset"], recipe=recipe, version=version)
    asset = next((a for a in release.get("assets", []) if a.get("name") == wanted), None)
    if asset is None:
        raise LockError(f"{comp.name}: release {tag} of {up['repo']} has no {wanted}: upload this pymachine's image "
                        "first (`sudo pymachine image build && pymachine image pack`)")
    sha = _asset_sha256(comp, up, release, asset, version)
    comp.version, comp.url, comp.size, comp.sha256 = recipe, asset["browser_download_url"], int(asset["size"]), sha


def _pypi(comp: Component, up: dict[str, Any], product: dict[str, str]) -> None:
    index = os.environ.get("PYMACHINE_PYPI_JSON", "https://pypi.org/pypi").rstrip("/")
    meta = json.loads(_get(f"{index}/{up['project']}/json"))
    version = str(up.get("version") or meta["info"]["version"])
    files = meta.get("releases", {}).get(version) or (meta.get("urls") if version == meta["info"]["version"] else [])
    pattern = re.compile(_expand(up["filename"], version=re.escape(version)))
    match = next((f for f in files or [] if pattern.fullmatch(f["filename"])), None)
    if match is None:
        raise LockError(f"{comp.name}: no file matching {pattern.pattern!r} in {up['project']} {version}")
    comp.version, comp.url, comp.size, comp.sha256 = (
        version,
        match["url"],
        int(match["size"]),
        match["digests"]["sha256"],
    )


def _sum_for(text: str, filename: str, name: str) -> str:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[-1].lstrip("*") == filename and SHA256_RE.match(parts[0].lower()):
            return parts[0].lower()
    raise LockError(f"{name}: {filename!r} is not listed in the upstream checksum file")


def _sums(comp: Component, up: dict[str, Any], product: dict[str, str]) -> None:
    """Vendors with a LATEST file and a SHA256SUMS per release (VirtualBox)."""
    version = _get(up["latest"]).decode().strip().split()[0]
    sums_url = _expand(up["sums"], version=version)
    text = _get(sums_url).decode()
    pattern = re.compile(_expand(up["file"], version=re.escape(version)))
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and pattern.fullmatch(parts[-1].lstrip("*")):
            filename = parts[-1].lstrip("*")
            url = sums_url.rsplit("/", 1)[0] + "/" + filename
            comp.version, comp.url, comp.sha256 = version, url, parts[0].lower()
            comp.size = _head_size(url)
            return
    raise LockError(f"{comp.name}: no file matching {pattern.pattern!r} in {sums_url}")


UPDATERS = {"github": _github, "pypi": _pypi, "sums": _sums, "pymachine-image": _pymachine_image}


def update(lock: Lock, only: set[str] | None = None) -> list[str]:
    """Refresh every component that names an ``upstream``; returns "name old -> new" lines."""
    changes: list[str] = []
    for plat, comps in lock.platforms.items():
        for comp in comps:
            up = comp.upstream
            if not up or (only and comp.name not in only):
                continue
            kind = up.get("type")
            if kind not in UPDATERS:
                raise LockError(f"{comp.name}: unknown upstream type {kind!r}")
            before = (comp.version, comp.sha256)
            try:
                UPDATERS[kind](comp, up, lock.product)
            except (OSError, KeyError, ValueError) as exc:
                raise LockError(f"{comp.name}: cannot read upstream metadata: {exc}") from None
            comp.require_pinned()
            if (comp.version, comp.sha256) != before:
                label = f"{comp.name}[{comp.arch}]" if comp.arch else comp.name
                changes.append(f"{plat}/{label} {before[0]} -> {comp.version} ({comp.sha256[:12]})")
    return changes
