"""Lock file, lock --update against stand-in upstream metadata, verified cached downloads."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from installer import lock as lockmod
from installer.fetch import IntegrityError, fetch
from installer.lock import Lock, LockError
from installer.stage import stage

pytest_plugins = ["standins"]  # fixtures (a conftest.py here would shadow tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]


def test_repo_lock_covers_every_platform_and_component():
    lock = Lock.load(REPO / "packaging" / "components.lock.json")
    assert set(lock.platforms) == {"windows", "macos", "linux"}
    for plat in ("windows", "macos"):
        names = {c.name for c in lock.components(plat)}
        assert {"python-runtime", "docker-cli", "docker-compose", "virtualbox", "vm-image",
                "wheel-cryptography", "wheel-paramiko"} <= names
    for comps in lock.platforms.values():
        for c in comps:
            assert c.url.startswith("https://") and c.version and c.dest
            if c.name.startswith("wheel-"):  # pinned from PyPI with pip (hashes from pip's report)
                c.require_pinned()
                assert c.size > 10_000 and c.filename.endswith(".whl")
            elif c.sha256 is not None:
                c.require_pinned()


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
    assert (root / "bin" / "docker-compose.exe").exists()
    assert (root / "python" / "python311._pth").exists()
    assert (root / "cache" / "boot2docker.iso").read_bytes().startswith(b"ISO stand-in")  # tar


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
    proc = subprocess.run([sys.executable, "-m", "installer", "lock", "--update", "--lock", str(path)],
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
