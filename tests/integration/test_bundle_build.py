"""The engine bundle built from Debian's real packages by the installed
``pymachine engine bundle`` command, and installed on a real offline host.

The .debs come from apt's archive cache or are repacked from this machine's
installed packages (tests/bundle_cache.py): nothing is downloaded.  The host
test only dials the namespaced host's own address.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.bundle_cache import build_with_cli, cache_dir, engine_debs, real_engine_bundle

pytestmark = pytest.mark.integration

CORE = ("dockerd", "containerd", "containerd-shim-runc-v2", "runc", "docker")


def deb_files(deb: Path) -> dict[str, bytes]:
    """Regular files of a .deb, read from ``dpkg-deb --fsys-tarfile`` (not ``-x``)."""
    raw = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                         check=True).stdout
    out = {}
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        for m in tar.getmembers():
            if m.isfile():
                out["/" + m.name.lstrip("./")] = tar.extractfile(m).read()
    return out


@pytest.fixture(scope="module")
def real_bundle() -> Path:
    return real_engine_bundle()


@pytest.fixture(scope="module")
def manifest(real_bundle: Path) -> dict:
    with tarfile.open(real_bundle, "r:gz") as tar:
        return json.loads(tar.extractfile("manifest.json").read())


def test_manifest_matches_the_binaries_in_the_debs(manifest):
    debs = engine_debs(cache_dir() / "engine-debs")
    contents: dict[str, bytes] = {}
    for deb in debs:
        contents.update(deb_files(deb))
    expected_paths = {
        "dockerd": "/usr/sbin/dockerd",
        "docker": "/usr/bin/docker",
        "containerd": "/usr/bin/containerd",
        "containerd-shim-runc-v2": "/usr/bin/containerd-shim-runc-v2",
        "runc": "/usr/sbin/runc",
        "docker-init": "/usr/bin/tini-static",  # docker.io's docker-init links to it
        "docker-proxy": "/usr/sbin/docker-proxy",
    }
    files = manifest["files"]
    for name, path in expected_paths.items():
        data = contents[path]
        assert files[f"bin/{name}"] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                        "mode": "0755"}, name
    # dockerd needs libdevmapper, which a minimal Debian host lacks: it travels along.
    lib = files["lib/libdevmapper.so.1.02.1"]
    lib_data = next(v for k, v in contents.items() if k.endswith("/libdevmapper.so.1.02.1"))
    assert lib["sha256"] == hashlib.sha256(lib_data).hexdigest()
    assert "libc.so.6" not in manifest["host_libraries"]
    assert not any(m.startswith("lib/libc.so") for m in files)
    assert manifest["arch"] == subprocess.run(["dpkg", "--print-architecture"], capture_output=True,
                                              text=True, check=True).stdout.strip()
    packages = {i["package"] for i in manifest["source"]["inputs"]}
    assert {"docker.io", "containerd", "runc", "tini", "libdevmapper1.02.1"} <= packages
    for entry in manifest["source"]["inputs"]:
        deb = next(d for d in debs if d.name == entry["file"])
        assert entry["sha256"] == hashlib.sha256(deb.read_bytes()).hexdigest()


def test_bundled_binaries_run(real_bundle, manifest, tmp_path):
    subprocess.run(["tar", "-xzf", str(real_bundle), "-C", str(tmp_path)], check=True)
    env = dict(os.environ, LD_LIBRARY_PATH=str(tmp_path / "lib"), LC_ALL="C")
    dockerd = subprocess.run([str(tmp_path / "bin/dockerd"), "--version"], capture_output=True,
                             text=True, env=env, timeout=30, check=True).stdout
    docker = subprocess.run([str(tmp_path / "bin/docker"), "--version"], capture_output=True,
                            text=True, env=env, timeout=30, check=True).stdout
    assert dockerd.startswith(f"Docker version {manifest['engine_version']}, build ")
    assert docker.startswith(f"Docker version {manifest['engine_version']}, build ")
    versions = {i["package"]: i["version"] for i in manifest["source"]["inputs"]}
    for name in ("containerd", "runc"):
        out = subprocess.run([str(tmp_path / "bin" / name), "--version"], capture_output=True,
                             text=True, env=env, timeout=30, check=True).stdout
        assert versions[name].rsplit("-", 1)[0] in out, out  # upstream part of the Debian version


def test_cli_verify_and_rebuild_is_byte_identical(real_bundle, tmp_path):
    from tests.conftest import PYMACHINE

    ok = subprocess.run([PYMACHINE, "engine", "verify", str(real_bundle)], capture_output=True,
                        text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"bundle {real_bundle}: OK")
    debs = tmp_path / "debs"
    debs.mkdir()
    for deb in engine_debs(cache_dir() / "engine-debs"):
        (debs / deb.name).symlink_to(deb)
    started = time.monotonic()
    proc = build_with_cli(debs, tmp_path / "again.tar.gz")
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    digest = hashlib.sha256(real_bundle.read_bytes()).hexdigest()
    assert proc.stdout == f"{digest}  {tmp_path / 'again.tar.gz'}\n"
    print(f"bundle build: {elapsed:.1f} s, {real_bundle.stat().st_size / 1e6:.1f} MB")


# -- on a real, offline host ------------------------------------------------------


def _wait(host, command: str, seconds: float) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + seconds
    result = host.run(command)
    for _ in range(200):
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
        result = host.run(command)
    return result


@pytest.mark.hosts
@pytest.mark.timeout(300)
def test_installs_and_runs_on_a_host_without_network(real_bundle, manifest, make_test_host,
                                                     ssh_keypair, busybox_image, tmp_path):
    from pymachine.engine import bundle, config
    from pymachine.machine.ssh import SSHClient
    from pymachine.machine.sshcommands import SSHTarget

    host = make_test_host("pmt-bundle")
    assert host.run("command -v dockerd").returncode != 0
    target = SSHTarget(host=host.ip, port=22, user="root", key_path=ssh_keypair.private_key,
                       known_hosts=tmp_path / "known_hosts")
    logs: list[str] = []
    install = bundle.installer(real_bundle, logs.append)
    with SSHClient.connect(target, timeout=10, wait=10) as client:
        install(client)
    for member, entry in manifest["files"].items():
        if member.startswith("bin/"):
            path = "/usr/local/bin/" + member[4:]
            out = host.run(f"sha256sum {path} && stat -c %a {path}").stdout.split()
            assert out[0] == entry["sha256"] and out[2] == "755", member
    assert host.run("test -e /var/tmp/pymachine-engine.tar.gz || test -e /var/tmp/pymachine-engine.d"
                    ).returncode != 0  # cleaned up
    assert host.run("getent group docker").returncode == 0
    ldd = host.run("ldd /usr/local/bin/dockerd")
    assert "not found" not in ldd.stdout and "/usr/local/lib/pymachine-engine/libdevmapper" in ldd.stdout
    # No systemd as PID 1 here: the SysV script, configured the way the provisioner does it.
    assert host.run("test -x /etc/init.d/docker && test -f /etc/default/docker").returncode == 0
    assert host.run("command -v dockerd").stdout.strip() == "/usr/local/bin/dockerd"
    default = config.sysv_default(["/usr/local/bin/dockerd", "-H", "unix:///var/run/docker.sock"],
                                  {"PYMACHINE_BUNDLE_TEST": "exported"})
    host.put("/etc/default/docker", default.encode())
    try:
        start = host.run("/etc/init.d/docker start", timeout=60)
        assert start.returncode == 0, start.stdout + start.stderr
        info = _wait(host, "docker version --format '{{.Server.Version}}'", 30)
        assert info.returncode == 0, info.stderr + host.run("tail -20 /var/log/docker.log").stdout
        assert info.stdout.strip() == manifest["engine_version"]
        pid = host.run("cat /var/run/docker.pid").stdout.strip()
        assert "PYMACHINE_BUNDLE_TEST=exported" in host.run(f"tr '\\0' '\\n' < /proc/{pid}/environ").stdout
        # dockerd started its own containerd (from /usr/local/bin) as a child.
        children = host.run(f"ps -o args= --ppid {pid}").stdout
        assert "containerd" in children, children
        host.put("/tmp/busybox.tar", busybox_image.read_bytes())
        assert host.run("docker import /tmp/busybox.tar local/busybox:1", timeout=60).returncode == 0
        ran = host.run("docker run --rm --init --network none local/busybox:1 "
                       "sh -c 'echo pid1=$(cat /proc/1/comm)'", timeout=60)
        assert ran.stdout.strip() == "pid1=docker-init", ran.stderr  # the bundled tini
        # Re-installing over the running engine replaces files atomically and keeps the options.
        with SSHClient.connect(target, timeout=10, wait=10) as client:
            install(client)
        assert host.run("cat /etc/default/docker").stdout == default
        assert host.run("docker version --format '{{.Server.Version}}'").returncode == 0
        restart = host.run("/etc/init.d/docker restart", timeout=90)
        assert restart.returncode == 0, restart.stdout + restart.stderr
        assert _wait(host, "docker info --format '{{.ServerVersion}}'", 30).returncode == 0
    finally:
        stop = host.run("/etc/init.d/docker stop", timeout=60)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert host.run("/etc/init.d/docker status").returncode == 3
