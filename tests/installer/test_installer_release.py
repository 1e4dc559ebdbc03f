"""``python -m pymachine.installer build``: all artefacts from one lock, SHA256SUMS signed, verified, reproducible."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest_plugins = ["standins"]  # fixtures (a conftest.py here would shadow tests/conftest.py)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("makensis") or not shutil.which("dpkg-deb"), reason="needs nsis, dpkg"),
]

REPO = Path(__file__).resolve().parents[2]


def _installer(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pymachine.installer", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300, check=False)


@pytest.fixture
def release_lock(standin_lock, tmp_path):
    path, www, cache = standin_lock
    data = json.loads(path.read_text())
    compose = next(c for c in data["platforms"]["windows"] if c["name"] == "docker-compose")
    data["platforms"]["linux"] = [{**compose, "dest": "cli-plugins/docker-compose"}]
    data["platforms"]["macos"] = [c for c in data["platforms"]["windows"] if c["name"] != "virtualbox"]
    path.write_text(json.dumps(data))
    return path, www, cache


@pytest.fixture
def gnupghome():
    home = tempfile.mkdtemp(prefix="pmgpg-", dir="/tmp")  # short: gpg-agent's socket path is limited
    os.chmod(home, 0o700)
    env = {**os.environ, "GNUPGHOME": home}
    try:
        subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
                        "pymachine test <release@localhost>", "ed25519", "sign", "1d"],
                       capture_output=True, env=env, timeout=120, check=True)
        yield home
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True, timeout=30, check=False)
        shutil.rmtree(home, ignore_errors=True)


def test_build_all_signs_sums_verifies_and_is_reproducible(release_lock, gnupghome, src_snapshot, tmp_path):
    lock, _www, cache = release_lock
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000", "GNUPGHOME": gnupghome,
           "PYMACHINE_DOWNLOAD_CACHE": str(cache)}
    common = ["--lock", str(lock), "--platform", "all", "--source", str(src_snapshot),
              "--gpg-key", "release@localhost"]
    first = _installer("build", *common, "--out", str(tmp_path / "one"), env=env)
    assert first.returncode == 0, first.stderr
    started = time.monotonic()
    second = _installer("build", *common, "--out", str(tmp_path / "two"), env=env)  # warm cache
    warm = time.monotonic() - started
    assert second.returncode == 0, second.stderr
    print(f"warm-cache build of linux+windows+macos: {warm:.2f}s\n{second.stdout}")

    one, two = tmp_path / "one", tmp_path / "two"
    sums = (one / "SHA256SUMS").read_text()
    assert sums == (two / "SHA256SUMS").read_text()  # byte-identical artefacts
    listed = [line.split("  ", 1)[1] for line in sums.splitlines()]
    assert listed == sorted(["pymachine.pyz", "pymachine_0.1.0_all.deb", "pymachine-toolbox-0.1.0-x64.exe",
                             "pymachine-toolbox-0.1.0-x86_64.pkg"])

    ok = _installer("verify", str(one), "--gpg-home", gnupghome, env=env)
    assert ok.returncode == 0 and "OK: signature and 4 checksums" in ok.stdout, ok.stderr

    # tamper with an artefact: the checksum check names it
    pyz = one / "pymachine.pyz"
    data = bytearray(pyz.read_bytes())
    data[-100] ^= 0x01
    pyz.write_bytes(bytes(data))
    bad = _installer("verify", str(one), "--gpg-home", gnupghome, env=env)
    assert bad.returncode != 0 and "pymachine.pyz: sha256" in bad.stderr

    # tamper with the signed list itself (a matching digest for the tampered file): the signature fails
    two_sums = two / "SHA256SUMS"
    text = two_sums.read_text().replace(sums.split()[0], "0" * 64, 1)
    two_sums.write_text(text)
    forged = _installer("verify", str(two), "--gpg-home", gnupghome, env=env)
    assert forged.returncode != 0 and "gpg verification of SHA256SUMS failed" in forged.stderr


@pytest.mark.skipif(not shutil.which("minisign"), reason="needs minisign")
def test_minisign_signature_passes_then_fails_after_tampering(release_lock, src_snapshot, tmp_path):
    lock, _www, cache = release_lock
    pub, sec = tmp_path / "k.pub", tmp_path / "k.sec"
    subprocess.run(["minisign", "-G", "-W", "-p", str(pub), "-s", str(sec)], capture_output=True,
                   timeout=60, check=True)
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000", "PYMACHINE_DOWNLOAD_CACHE": str(cache)}
    out = tmp_path / "out"
    built = _installer("build", "--lock", str(lock), "--platform", "linux", "--source", str(src_snapshot),
                       "--out", str(out), "--minisign-key", str(sec), env=env)
    assert built.returncode == 0, built.stderr
    assert (out / "SHA256SUMS.minisig").exists()
    ok = _installer("verify", str(out), "--minisign-pub", str(pub), env=env)
    assert ok.returncode == 0, ok.stderr
    sums = out / "SHA256SUMS"
    sums.write_text(sums.read_text() + f"{'1' * 64}  extra.bin\n")
    bad = _installer("verify", str(out), "--minisign-pub", str(pub), env=env)
    assert bad.returncode != 0 and "minisign verification of SHA256SUMS failed" in bad.stderr


def test_build_refuses_unpinned_and_tampered_components(release_lock, src_snapshot, tmp_path):
    lock, www, cache = release_lock
    env = {**os.environ, "PYMACHINE_DOWNLOAD_CACHE": str(cache)}
    data = json.loads(lock.read_text())
    vbox = next(c for c in data["platforms"]["windows"] if c["name"] == "virtualbox")
    served = www / vbox["url"].rsplit("/", 1)[1]
    served.write_bytes(served.read_bytes()[:-1] + b"X")
    res = _installer("build", "--lock", str(lock), "--platform", "windows", "--source", str(src_snapshot),
                     "--out", str(tmp_path / "o"), env=env)
    assert res.returncode != 0
    assert "'virtualbox'" in res.stderr and vbox["sha256"] in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1  # one clear line
    vbox["sha256"] = None
    lock.write_text(json.dumps(data))
    res = _installer("build", "--lock", str(lock), "--platform", "windows", "--out", str(tmp_path / "o"), env=env)
    assert res.returncode != 0 and "'virtualbox' is not pinned" in res.stderr
