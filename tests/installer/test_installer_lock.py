"""Lock file, lock --update against stand-in upstream metadata, verified cached downloads."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from pymachine.engine import images
from pymachine.installer import lock as lockmod
from pymachine.installer.fetch import IntegrityError, fetch
from pymachine.installer.lock import Lock, LockError
from pymachine.installer.stage import check_vm_image, stage
from pymachine.machine.errors import MachineError
from standins import current_recipe, image_filename, packed_image

pytest_plugins = ["standins"]  # fixtures (a conftest.py here would shadow tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]


def test_repo_lock_covers_every_platform_and_component():
    lock = Lock.load(REPO / "packaging" / "components.lock.json")
    assert set(lock.platforms) == {"windows", "macos", "linux"}
    assert lock.arches("windows") == ["x86_64"] and lock.arches("macos") == ["x86_64", "arm64"]
    assert lock.arches("linux") == ["x86_64", "arm64"]
    for plat, arch in (("windows", "x86_64"), ("macos", "x86_64"), ("macos", "arm64")):
        comps = lock.components(plat, arch)
        names = [c.name for c in comps]
        assert {"python-runtime", "docker-cli", "docker-compose", "virtualbox", "vm-image",
                "wheel-cryptography", "wheel-paramiko", "wheel-cffi"} <= set(names)
        assert len(names) == len(set(names)), f"{plat}/{arch}: one file per component"
        for c in comps:  # a file for another CPU never lands in this arch's installer
            assert c.arch in ("", arch)
            other = {"x86_64": ("arm64", "aarch64"), "arm64": ("x86_64", "amd64")}[arch]
            if c.arch:
                assert not any(o in c.url for o in other), c.url
        compose = next(c for c in comps if c.name == "docker-compose")  # the docker CLI plugin
        assert compose.dest in ("cli-plugins/docker-compose", "cli-plugins/docker-compose.exe")
    for plat in ("windows", "macos"):  # pymachine's own packed image, laid out where the store looks
        for image in (c for c in lock.components(plat) if c.name == "vm-image"):
            assert image.url == ("https://github.com/pymachine/pymachine/releases/download/"
                                 f"v{lock.product['version']}/pymachine-image-{image.version}.tar.gz")
            assert (image.dest, image.unpack, image.strip) == ("cache/images", "tar", 0)
            assert image.upstream["type"] == "pymachine-image" and "boot2docker" not in json.dumps(asdict(image))
    linux = lock.components("linux")
    assert "vm-image" not in {c.name for c in linux}  # Linux hosts build it
    assert {c.dest for c in linux if c.name == "docker-compose"} == {"usr/lib/docker/cli-plugins/docker-compose"}
    assert {c.name for c in linux if c.dest == "usr/lib/pymachine/vendor"} == {
        "wheel-paramiko",
        "wheel-invoke",
        "wheel-filelock",
        "wheel-pycdlib",
    }  # pure Python, beside Debian's native modules
    for comps in lock.platforms.values():
        for c in comps:
            assert c.url.startswith("https://") and c.version and c.dest
            if c.name.startswith("wheel-"):  # pinned from PyPI with pip (hashes from pip's report)
                c.require_pinned()
                assert c.size > 10_000 and c.filename.endswith(".whl")
            elif c.sha256 is not None:
                c.require_pinned()


def test_every_installer_carries_pycdlib_for_the_seed_iso():
    """The default local drivers write their seed ISO with pycdlib (machine.seed): every bundle vendors a
    pinned, pure-Python wheel at a version the extras accept (Debian 12's python3-pycdlib is 1.12)."""
    import re
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    minimum = {tuple(int(x) for x in m.group(1).split("."))
               for reqs in extras.values() for r in reqs if (m := re.fullmatch(r"pycdlib>=([\d.]+)", r))}
    assert len(minimum) == 1
    lock = Lock.load(REPO / "packaging" / "components.lock.json")
    wheel_dest = {"linux": "usr/lib/pymachine/vendor", "macos": "lib", "windows": "lib"}
    for plat, dest in wheel_dest.items():
        for arch in lock.arches(plat):
            [comp] = [c for c in lock.components(plat, arch) if c.name == "wheel-pycdlib"]
            comp.require_pinned()
            assert comp.dest == dest and comp.unpack == "zip" and comp.arch == ""
            assert re.fullmatch(r"pycdlib-[\d.]+-(py2\.)?py3-none-any\.whl", comp.filename), comp.filename
            assert tuple(int(x) for x in comp.version.split(".")) >= min(minimum)
            assert comp.upstream == {"type": "pypi", "project": "pycdlib", "version": comp.version,
                                     "filename": "pycdlib-{version}-py3-none-any\\.whl"}
    control = (REPO / "packaging" / "deb" / "control.in").read_text()
    assert "pycdlib" not in control  # vendored, not left to an old distribution package


def test_unpinned_component_is_refused(tmp_path):
    comp = Lock.load(REPO / "packaging" / "components.lock.json").components("windows")[0]
    comp.sha256 = None
    with pytest.raises(LockError, match="not pinned"):
        fetch(comp, tmp_path)


def test_fetch_verifies_and_caches_by_digest(standin_lock):
    path, www, cache = standin_lock
    comps = Lock.load(path).components("windows")
    for comp in comps:
        got = fetch(comp, cache)
        assert got == cache / comp.sha256
        assert hashlib.sha256(got.read_bytes()).hexdigest() == comp.sha256
    # warm cache: the server's files can vanish and fetch still answers from the cache
    for f in www.iterdir():
        f.unlink()
    assert fetch(comps[0], cache).exists()


def test_tampered_download_names_component_and_both_digests(standin_lock):
    path, www, cache = standin_lock
    comp = next(c for c in Lock.load(path).components("windows") if c.name == "docker-compose")
    served = www / comp.filename
    data = bytearray(served.read_bytes())
    data[10] ^= 0x01  # one byte
    served.write_bytes(bytes(data))
    bad = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(IntegrityError) as exc:
        fetch(comp, cache)
    msg = str(exc.value)
    assert "docker-compose" in msg and comp.sha256 in msg and bad in msg
    assert not (cache / comp.sha256).exists()
    assert [p.name for p in cache.iterdir()] == []  # no partial file left behind


def test_corrupted_cache_entry_is_refetched(standin_lock):
    path, _www, cache = standin_lock
    comp = Lock.load(path).components("windows")[2]
    first = fetch(comp, cache)
    first.write_bytes(b"corrupt")
    assert fetch(comp, cache).read_bytes() != b"corrupt"


def test_stage_unpacks_zip_tar_and_copies(standin_lock, tmp_path):
    path, _www, cache = standin_lock
    root = tmp_path / "stage"
    stage(Lock.load(path).components("windows"), root, cache)
    assert (root / "bin" / "docker.exe").read_bytes().startswith(b"MZ")  # zip, strip 1
    assert (root / "cli-plugins" / "docker-compose.exe").exists()
    assert (root / "python" / "python311._pth").exists()
    # the vm-image: pymachine's packed image, where pymachine's store finds it (cache/images/<recipe>/)
    found = images.find_image(root / "cache" / "images")
    assert found is not None and found.directory == root / "cache" / "images" / current_recipe()
    assert found.exported("vdi").read_bytes()[64:68] == b"\x7f\x10\xda\xbe"  # a real VDI (signature)
    check_vm_image(Lock.load(path).components("windows"), root, REPO, ("vdi",))  # the shipped recipe: accepted


def _stage_image(tmp_path: Path, data: bytes) -> tuple[list, Path]:
    comp = lockmod.Component("vm-image", "x", "https://x/image.tar.gz", len(data), hashlib.sha256(data).hexdigest(),
                             "cache/images", unpack="tar")
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "image.tar.gz"
    src.write_bytes(data)
    root = tmp_path / "stage"
    from pymachine.installer.stage import place

    place(comp, src, root)
    return [comp], root


def test_build_refuses_an_image_of_another_recipe_or_without_the_vdi(tmp_path):
    comps, root = _stage_image(tmp_path / "old", packed_image("00000000000000aa"))
    with pytest.raises(MachineError) as exc:
        check_vm_image(comps, root, REPO, ("vdi",))
    msg = str(exc.value)
    assert "recipe 00000000000000aa" in msg and f"builds recipe {current_recipe()}" in msg and "\n" not in msg
    comps, root = _stage_image(tmp_path / "cur", packed_image())
    check_vm_image(comps, root, REPO, ("vdi",))
    with pytest.raises(MachineError, match=r"needs .*disk\.vmdk"):
        check_vm_image(comps, root, REPO, ("vdi", "vmdk"))


def test_build_refuses_an_image_whose_member_does_not_match_its_sums(tmp_path):
    """The lock pins the archive; a re-pinned archive with a changed member is still refused."""
    import io
    import tarfile

    members = []
    with tarfile.open(fileobj=io.BytesIO(packed_image())) as tf:
        for m in tf.getmembers():
            data = tf.extractfile(m).read() if m.isfile() else None
            if m.name.endswith("/vmlinuz"):
                data = b"another kernel\n"
                m.size = len(data)
            members.append((m, data))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for m, data in members:
            tf.addfile(m, io.BytesIO(data) if data is not None else None)
    comps, root = _stage_image(tmp_path, buf.getvalue())
    with pytest.raises(MachineError, match=r"'vm-image': vmlinuz: sha256 [0-9a-f]{64} does not match SHA256SUMS"):
        check_vm_image(comps, root, REPO, ("vdi",))


def _write(root: Path, rel: str, data: bytes) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def test_lock_update_from_standin_upstream_metadata(http_root, tmp_path, monkeypatch):
    www, base = http_root
    compose = b"compose 2.31.0 binary"
    vbox = b"virtualbox 7.1.6 installer"
    wheel = b"paramiko wheel"
    _write(www, "dl/docker-compose-windows-x86_64.exe", compose)
    _write(www, "gh/repos/docker/compose/releases/latest", json.dumps({
        "tag_name": "v2.31.0",
        "assets": [{"name": "docker-compose-windows-x86_64.exe", "size": len(compose),
                    "browser_download_url": f"{base}/dl/docker-compose-windows-x86_64.exe",
                    "digest": "sha256:" + hashlib.sha256(compose).hexdigest()}],
    }).encode())
    _write(www, "vbox/LATEST-STABLE.TXT", b"7.1.6\n")
    _write(www, "vbox/7.1.6/VirtualBox-7.1.6-167084-Win.exe", vbox)
    _write(www, "vbox/7.1.6/SHA256SUMS",
           f"{'0' * 64} *VirtualBox-7.1.6-167084-OSX.dmg\n"
           f"{hashlib.sha256(vbox).hexdigest()} *VirtualBox-7.1.6-167084-Win.exe\n".encode())
    _write(www, "pypi/paramiko/json", json.dumps({
        "info": {"version": "3.5.1"},
        "releases": {"3.5.1": [{"filename": "paramiko-3.5.1-py3-none-any.whl", "url": f"{base}/w.whl",
                                "size": len(wheel), "digests": {"sha256": hashlib.sha256(wheel).hexdigest()}}]},
    }).encode())
    repo_lock = json.loads((REPO / "packaging" / "components.lock.json").read_text())
    wanted = {"docker-compose", "virtualbox", "wheel-paramiko"}
    comps = [c for c in repo_lock["platforms"]["windows"] if c["name"] in wanted]
    for c in comps:
        if c["upstream"]["type"] == "sums":
            c["upstream"]["latest"] = f"{base}/vbox/LATEST-STABLE.TXT"
            c["upstream"]["sums"] = base + "/vbox/{version}/SHA256SUMS"
        if c["upstream"]["type"] == "pypi":
            c["upstream"]["version"] = ""
    path = tmp_path / "lock.json"
    path.write_text(json.dumps({**repo_lock, "platforms": {"windows": comps}}))
    env = {"PYMACHINE_GITHUB_API": f"{base}/gh", "PYMACHINE_PYPI_JSON": f"{base}/pypi"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    proc = subprocess.run([sys.executable, "-m", "pymachine.installer", "lock", "--update", "--lock", str(path)],
                          capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    new = {c.name: c for c in Lock.load(path).components("windows")}
    assert new["docker-compose"].version == "2.31.0"
    assert new["docker-compose"].sha256 == hashlib.sha256(compose).hexdigest()
    assert new["virtualbox"].url == f"{base}/vbox/7.1.6/VirtualBox-7.1.6-167084-Win.exe"
    assert new["virtualbox"].size == len(vbox)
    assert new["wheel-paramiko"].version == "3.5.1" and new["wheel-paramiko"].size == len(wheel)
    assert "2.31.0" in proc.stdout
    # the refreshed lock now drives a verified download
    assert fetch(new["virtualbox"], tmp_path / "c").read_bytes() == vbox


def test_lock_update_pins_pymachines_own_image_of_this_recipe(http_root, tmp_path, monkeypatch):
    www, base = http_root
    image = packed_image()
    name = image_filename()
    _write(www, f"dl/{name}", image)
    release = {"tag_name": "v0.1.0", "assets": [
        {"name": image_filename("00000000000000aa"), "size": 1, "browser_download_url": f"{base}/dl/old",
         "digest": "sha256:" + "1" * 64},
        {"name": name, "size": len(image), "browser_download_url": f"{base}/dl/{name}"},
        {"name": "SHA256SUMS", "size": 1, "browser_download_url": f"{base}/dl/SHA256SUMS"},
    ]}
    _write(www, "gh/repos/pymachine/pymachine/releases/tags/v0.1.0", json.dumps(release).encode())
    _write(www, "dl/SHA256SUMS", f"{hashlib.sha256(image).hexdigest()}  {name}\n".encode())
    repo_lock = json.loads((REPO / "packaging" / "components.lock.json").read_text())
    comp = next(c for c in repo_lock["platforms"]["windows"] if c["name"] == "vm-image")
    path = tmp_path / "lock.json"
    path.write_text(json.dumps({**repo_lock, "platforms": {"windows": [comp]}}))
    monkeypatch.setenv("PYMACHINE_GITHUB_API", f"{base}/gh")
    proc = subprocess.run([sys.executable, "-m", "pymachine.installer", "lock", "--update", "--only", "vm-image",
                           "--lock", str(path)], capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    new = Lock.load(path).components("windows")[0]
    assert (new.version, new.url, new.size) == (current_recipe(), f"{base}/dl/{name}", len(image))
    assert new.sha256 == hashlib.sha256(image).hexdigest()
    root = tmp_path / "stage"
    stage([new], root, tmp_path / "c")  # the pinned image stages where the store finds it
    assert images.find_image(root / "cache" / "images") is not None

    # a release without this recipe's image: one line saying what to do, the lock untouched
    release["assets"] = release["assets"][:1]
    _write(www, "gh/repos/pymachine/pymachine/releases/tags/v0.1.0", json.dumps(release).encode())
    before = path.read_text()
    proc = subprocess.run([sys.executable, "-m", "pymachine.installer", "lock", "--update", "--lock", str(path)],
                          capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert f"vm-image: release v0.1.0 of pymachine/pymachine has no {name}" in proc.stderr
    assert path.read_text() == before


def test_lock_update_fails_on_missing_asset(http_root, tmp_path, monkeypatch):
    www, base = http_root
    _write(www, "gh/repos/docker/compose/releases/latest", json.dumps({"tag_name": "v9", "assets": []}).encode())
    comp = lockmod.Component("docker-compose", "1", "https://x/y", None, None, "bin/c",
                             upstream={"type": "github", "repo": "docker/compose", "asset": "c.exe"})
    monkeypatch.setenv("PYMACHINE_GITHUB_API", f"{base}/gh")
    with pytest.raises(LockError, match="docker-compose: release v9 has no asset"):
        lockmod.update(Lock({"name": "p"}, {"windows": [comp]}))


def test_progress_goes_to_stderr_only_on_a_terminal(standin_lock, tmp_path):
    import os
    import pty

    path, _www, _cache = standin_lock
    code = ("import sys; from pathlib import Path; from installer.lock import Lock; from installer.fetch import fetch; "
            f"[fetch(c, Path(sys.argv[1])) for c in Lock.load({str(path)!r}).components('windows')]")
    # not a terminal: silent
    quiet = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c1")], capture_output=True, text=True,
                           cwd=REPO, timeout=60, check=True)
    assert quiet.stderr == ""
    # a terminal on stderr: a progress line per component
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c2")], stdout=subprocess.DEVNULL,
                              stderr=slave, cwd=REPO, timeout=60, check=True)
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "Downloading docker-compose:" in text and "100%" in text


def test_lock_names_the_image_this_checkout_builds() -> None:
    """The installers ship pymachine's image of *this* recipe (builds refuse any other):
    a change to engine/images.py must come with the lock's vm-image entries."""
    import json
    from pathlib import Path

    from pymachine.engine.images import recipe_hash

    lock = json.loads((Path(__file__).resolve().parents[2] / "packaging" / "components.lock.json").read_text())
    entries = [c for comps in lock["platforms"].values() for c in comps if c["name"] == "vm-image"]
    assert {c["arch"] for c in entries} == {"x86_64", "arm64"}, "the amd64 and arm64 images"
    for entry in entries:  # each arch's image has its own recipe
        recipe = recipe_hash({"x86_64": "amd64", "arm64": "arm64"}[entry["arch"]])
        assert entry["version"] == recipe and recipe in entry["url"], entry


def test_lock_arch_is_validated_and_filters_components(tmp_path):
    base = {"version": "1", "url": "https://x/y", "size": None, "sha256": None, "dest": "bin"}
    def lock_with(*comps):
        path = tmp_path / "l.json"
        path.write_text(json.dumps({"schema": 1, "product": {}, "platforms": {"macos": list(comps)}}))
        return path
    with pytest.raises(LockError, match="unknown arch 'ppc'"):
        Lock.load(lock_with({**base, "name": "docker-cli", "arch": "ppc"}))
    with pytest.raises(LockError, match="listed twice: docker-cli/arm64"):
        Lock.load(
            lock_with({**base, "name": "docker-cli", "arch": "arm64"}, {**base, "name": "docker-cli", "arch": "arm64"})
        )
    lock = Lock.load(lock_with({**base, "name": "docker-cli", "arch": "arm64"},
                               {**base, "name": "docker-cli", "arch": "x86_64"}, {**base, "name": "wheel-x"}))
    assert [(c.name, c.arch) for c in lock.components("macos", "arm64")] == [("docker-cli", "arm64"), ("wheel-x", "")]
    assert lock.arches("macos") == ["x86_64", "arm64"]
    with pytest.raises(LockError, match="unknown arch"):
        lock.components("macos", "aarch64")
