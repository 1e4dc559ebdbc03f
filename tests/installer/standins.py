"""Stand-in components on a loopback HTTP server, and a lock file that pins them (fixtures:
import them into a test module; a conftest.py here would shadow tests/conftest.py)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import tarfile
import tempfile
import threading
import zipfile
from pathlib import Path

import pytest


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output quiet
        pass


@pytest.fixture
def http_root(tmp_path: Path):
    """(directory, base_url) of a threaded HTTP server on 127.0.0.1 serving that directory."""
    root = tmp_path / "www"
    root.mkdir()

    def handler(*a, **kw):
        return _Handler(*a, directory=str(root), **kw)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def exe_stub(label: str) -> bytes:
    """A tiny PE-looking file: 'MZ' header, a PE offset and a label (never executed)."""
    head = bytearray(b"MZ" + b"\0" * 62)
    head[0x3C:0x40] = (64).to_bytes(4, "little")
    return bytes(head) + b"PE\0\0" + label.encode() + b"\0" * 32


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in sorted(files.items()):
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1577836800, 0o755
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@functools.cache
def packed_image(recipe: str | None = None) -> bytes:
    """A real ``pymachine image pack`` archive (with its VDI) of the tiny fake base image.

    ``recipe`` packs it as another recipe's image (directory and manifest), as an
    older pymachine's release would be.
    """
    import shutil

    from pymachine.engine import image_pack, images

    from tests.fake_base_image import make_fake_image

    with tempfile.TemporaryDirectory(prefix="pm-image-standin-") as tmp:
        info = make_fake_image(Path(tmp) / "store", size_mb=8)
        if recipe is not None:
            other = info.directory.with_name(recipe)
            shutil.move(info.directory, other)
            (other / images.MANIFEST_NAME).write_text(json.dumps({"recipe": recipe, "fake": True}) + "\n")
            info = images.ImageInfo(other, {"recipe": recipe})
        out = image_pack.pack_image(info, Path(tmp) / "image.tar.gz", ["vdi"], lambda _m: None)
        return out.read_bytes()


def current_recipe(arch: str = "") -> str:
    """This checkout's image recipe for a lock arch ("" = this host's)."""
    from pymachine.engine import images

    return images.recipe_hash({"x86_64": "amd64", "arm64": "arm64"}.get(arch))


def image_filename(recipe: str | None = None) -> str:
    from pymachine.engine import image_pack

    return image_pack.default_name(recipe or current_recipe())


def standin_files() -> dict[str, tuple[bytes, dict]]:
    """filename -> (content, component fields); one exe stub, one zip, one tar per platform."""
    return {
        "python-3.11.9-embed-amd64.zip": (
            zip_bytes({"python.exe": exe_stub("python"), "python311._pth": b"python311.zip\n.\n"}),
            {"name": "python-runtime", "version": "3.11.9", "dest": "python", "unpack": "zip"},
        ),
        "docker-27.3.1.zip": (
            zip_bytes({"docker/docker.exe": exe_stub("docker cli")}),
            {"name": "docker-cli", "version": "27.3.1", "dest": "bin", "unpack": "zip", "strip": 1},
        ),
        "docker-compose-windows-x86_64.exe": (
            exe_stub("compose"), {"name": "docker-compose", "version": "2.30.3",
                                  "dest": "cli-plugins/docker-compose.exe"},
        ),
        "VirtualBox-7.1.4-165100-Win.exe": (
            exe_stub("virtualbox"),
            {"name": "virtualbox", "version": "7.1.4", "dest": "installers/virtualbox.exe", "optional": True},
        ),
        image_filename(): (  # pymachine's own image, laid out as the repo lock lays it out
            packed_image(),
            {"name": "vm-image", "version": current_recipe(), "dest": "cache/images", "unpack": "tar"},
        ),
    }


def make_lock(root: Path, base: str, platform: str = "windows") -> dict:
    """Write the stand-ins under ``root`` and return a lock dict pinning them."""
    comps = []
    for filename, (data, fields) in standin_files().items():
        (root / filename).write_bytes(data)
        comp = {"url": f"{base}/{filename}", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "unpack": "", "strip": 0, "optional": False, "upstream": {}, **fields}
        comps.append(comp)
    return {"schema": 1, "product": {"name": "pymachine", "version": "0.1.0"}, "platforms": {platform: comps}}


@pytest.fixture
def standin_lock(http_root, tmp_path: Path):
    """(lock path, www dir, cache dir) for a Windows lock of served stand-ins."""
    www, base = http_root
    lock = make_lock(www, base)
    path = tmp_path / "components.lock.json"
    path.write_text(json.dumps(lock, indent=2))
    return path, www, tmp_path / "cache"


@pytest.fixture(scope="session")
def src_snapshot(tmp_path_factory) -> Path:
    """A frozen copy of pymachine's packages: other work in the tree must not make two builds differ."""
    import shutil

    repo = Path(__file__).resolve().parents[2]
    dest = tmp_path_factory.mktemp("src")
    for pkg in ("pymachine", "machine", "provisioners", "engine", "installer", "packaging"):
        shutil.copytree(repo / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


# ------------------------------------------------------------ Linux / Compose stand-ins

COMPOSE_VERSION = "2.30.3"
_COMPOSE_C = r"""
/* Stand-in for Docker Compose v2 as a docker CLI plugin.  The plugin protocol
   (docker/cli cli-plugins/manager): the CLI runs `<plugin> docker-cli-plugin-metadata`
   and reads JSON with SchemaVersion "0.1.0", Vendor and Version; it then runs
   `<plugin> compose <args>`.  Standalone, `docker-compose version` answers too. */
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "docker-cli-plugin-metadata") == 0) {
        puts("{\"SchemaVersion\":\"0.1.0\",\"Vendor\":\"pymachine stand-in\","
             "\"Version\":\"v@V@\",\"ShortDescription\":\"Docker Compose (stand-in)\"}");
        return 0;
    }
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "version") == 0) {
            printf("Docker Compose version v@V@ (pymachine stand-in, argv0 %s)\n", argv[0]);
            return 0;
        }
    fputs("compose stand-in: only 'version' is implemented\n", stderr);
    return 1;
}
"""


@functools.cache
def compose_standin() -> bytes:
    """A static, stripped x86_64 ELF (as Compose's release binaries are) speaking the plugin protocol."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="pm-compose-") as tmp:
        src, out = Path(tmp) / "compose.c", Path(tmp) / "docker-compose"
        src.write_text(_COMPOSE_C.replace("@V@", COMPOSE_VERSION))
        subprocess.run(["gcc", "-static", "-Os", "-s", "-o", str(out), str(src)], check=True,
                       capture_output=True, timeout=120)
        return out.read_bytes()


@functools.cache
def wheel_from_installed(dist_name: str) -> tuple[str, bytes]:
    """(filename, bytes) of a pure-Python wheel re-made from the distribution installed in this venv:
    the real code, without a download (the lock pins the PyPI file; tests pin this one)."""
    from importlib import metadata

    dist = metadata.distribution(dist_name)
    files = sorted(f for f in dist.files or [] if "__pycache__" not in f.parts and not str(f).startswith(".."))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.writestr(zipfile.ZipInfo(f.as_posix(), date_time=(2020, 1, 1, 0, 0, 0)), f.locate().read_bytes())
    name = dist.metadata["Name"].replace("-", "_")
    return f"{name}-{dist.version}-py3-none-any.whl", buf.getvalue()


def repo_pure_wheels(platform: str) -> list[tuple[str, str]]:
    """(PyPI project, dest) of each pure-Python wheel the repo lock vendors for ``platform``: the
    stand-ins follow the lock, so a wheel missing there is missing from the staged tree too."""
    import re

    from pymachine.installer.lock import Lock

    lock = Lock.load(Path(__file__).resolve().parents[2] / "packaging" / "components.lock.json")
    return sorted({(c.upstream["project"], c.dest) for c in lock.components(platform)
                   if c.name.startswith("wheel-") and re.search(r"-(py2\.)?py3-none-any\.whl$", c.filename)})


def linux_standins() -> dict[str, tuple[bytes, dict]]:
    """The repo lock's Linux components, as stand-ins: Compose for x86_64 and the vendored wheels."""
    files = {"docker-compose-linux-x86_64": (compose_standin(), {
        "name": "docker-compose", "version": COMPOSE_VERSION, "arch": "x86_64",
        "dest": "usr/lib/docker/cli-plugins/docker-compose"})}
    for dist, dest in repo_pure_wheels("linux"):
        filename, data = wheel_from_installed(dist)
        files[filename] = (data, {"name": f"wheel-{dist}", "version": filename.split("-")[1],
                                  "dest": dest, "unpack": "zip"})
    return files


@pytest.fixture
def linux_lock(http_root, tmp_path: Path):
    """(components for x86_64, www dir, cache dir) of the Linux stand-ins, served and pinned."""
    from pymachine.installer.lock import Lock

    www, base = http_root
    comps = []
    for filename, (data, fields) in linux_standins().items():
        (www / filename).write_bytes(data)
        comps.append({"url": f"{base}/{filename}", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                      "unpack": "", "strip": 0, "optional": False, "upstream": {}, **fields})
    path = tmp_path / "linux.lock.json"
    path.write_text(json.dumps({"schema": 1, "product": {}, "platforms": {"linux": comps}}, indent=2))
    return Lock.load(path).components("linux", "x86_64"), www, tmp_path / "cache"
