"""``create -d generic`` failure paths and an IP change, on namespaced Debian hosts.

Each failure must end in one clear line on stderr (no traceback), a non-zero
exit, and a store that still loads: ``pymachine ls`` exits 0 and lists what
it should.  Everything runs through the installed ``pymachine`` command and
the real ``docker`` CLI, against real sshd and dockerd inside the hosts.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.hosts import netns

pytestmark = pytest.mark.hosts
DOCKER = shutil.which("docker") or "/usr/bin/docker"


def one_line_error(res) -> str:
    """The single stderr line of a failed command."""
    assert res.returncode != 0, f"expected a failure, got exit 0: {res.stdout}{res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {res.stderr!r}"
    return lines[0]


def ls_rows(pm, *extra: str) -> dict[str, list[str]]:
    """``ls`` must exit 0; returns Name -> [State, Error]."""
    out = pm.ok("ls", *extra, "--format", "{{.Name}}|{{.State}}|{{.Error}}").stdout
    return {row.split("|")[0]: row.split("|")[1:] for row in out.splitlines() if row}


def docker(pm, name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real docker CLI with the environment printed by ``pymachine env NAME``."""
    env = dict(pm.env)
    for line in pm.ok("env", name).stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.strip('"')
    return subprocess.run([DOCKER, *args], check=False, capture_output=True, text=True, timeout=timeout, env=env)


def wait_for_banner(ip: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, 22), timeout=1) as conn:
                conn.settimeout(2)
                if conn.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"no SSH banner from {ip} within {timeout} s")


def create_args(host, key: Path, name: str, *extra: str) -> list[str]:
    return ["create", "-d", "generic", "--generic-ip-address", host.ip,
            "--generic-ssh-key", str(key), *extra, name]  # fmt: skip


def test_unreachable_ip_fails_within_the_ssh_wait(pm, make_test_host, ssh_keypair):
    host = make_test_host("unr1")
    # The guest's only link goes down: the address stays routed to this test's
    # veth, so nothing is ever dialled outside the namespace, but no one answers.
    netns.sh("ip", "-n", host.netns, "link", "set", "eth0", "down")
    started = time.monotonic()
    res = pm(*create_args(host, ssh_keypair.private_key, "unr1"),
             env={"PYMACHINE_SSH_WAIT": "5"}, timeout=120)  # fmt: skip
    elapsed = time.monotonic() - started
    line = one_line_error(res)
    assert line.startswith(f"Unable to connect to {host.ip}:22"), line
    assert elapsed < 30, f"create took {elapsed:.1f}s with PYMACHINE_SSH_WAIT=5"

    # The dial of an address nobody answers outlasts ls's default 2 s deadline.
    rows = ls_rows(pm, "--timeout", "15")
    assert list(rows) == ["unr1"]
    assert rows["unr1"][0] == "Error" and "step ssh" in rows["unr1"][1]
    assert pm.ok("inspect", "-f", "{{.Pymachine.LastError.Step}}", "unr1").stdout.strip() == "ssh"

    res = pm(*create_args(host, ssh_keypair.private_key, "unr2"), env={"PYMACHINE_SSH_WAIT": "soon"})
    assert one_line_error(res) == "PYMACHINE_SSH_WAIT must be a number of seconds between 0 and 86400, got 'soon'"
    assert set(ls_rows(pm, "--timeout", "15")) == {"unr1"}  # refused before anything was made
    pm.ok("rm", "-y", "unr1")
    assert ls_rows(pm) == {}


def test_failed_install_is_recorded_then_fixed_then_host_key_change_refused(
    pm, make_test_host, http_proxy, ssh_keypair
):
    host = make_test_host("inst1")
    # Nothing listens on port 1 of the host-side veth address: apt cannot fetch anything.
    dead_proxy = f"http://{host.host_side_ip}:1"
    res = pm(*create_args(host, ssh_keypair.private_key, "inst1", "--http-proxy", dead_proxy,
                          "--https-proxy", dead_proxy), timeout=300)  # fmt: skip
    line = one_line_error(res)
    assert line.startswith("Error provisioning the machine (step install_engine): "), line
    assert "Installing Docker..." in res.stdout
    assert host.run("command -v dockerd").stdout == ""

    rows = ls_rows(pm)
    assert list(rows) == ["inst1"]
    assert rows["inst1"][0] == "Error" and "step install_engine" in rows["inst1"][1]
    assert pm.ok("inspect", "-f", "{{.Pymachine.LastError.Step}}", "inst1").stdout.strip() == "install_engine"

    # Fix the setting as a user would, in config.json, then re-provision.
    good_proxy = http_proxy.url_for(host)
    cfg_path = pm.store / "machines" / "inst1" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    proxy = cfg["HostOptions"]["EngineOptions"]["Pymachine"]["Proxy"]
    assert proxy["HttpProxy"] == dead_proxy
    proxy.update(HttpProxy=good_proxy, HttpsProxy=good_proxy)
    cfg_path.write_text(json.dumps(cfg, indent=4))
    res = pm("provision", "inst1", timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Docker is up and running!" in res.stdout
    assert "LastError" not in cfg_path.read_text()
    assert ls_rows(pm)["inst1"] == ["Running", ""]
    version = docker(pm, "inst1", "version", "--format", "{{.Server.Version}}")
    assert version.returncode == 0 and version.stdout.strip().startswith("20.10"), version.stderr
    info = docker(pm, "inst1", "info", "--format", "{{.HTTPProxy}}")
    assert info.stdout.strip() == good_proxy

    # The host is rebuilt behind the same address: new host keys, sshd re-executed.
    known_hosts = pm.store / "machines" / "inst1" / "known_hosts"
    pinned = known_hosts.read_text()
    rekey = host.run("rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub && ssh-keygen -A"
                     " && kill -HUP \"$(cat /run/sshd.pid)\"")  # fmt: skip
    assert rekey.returncode == 0, rekey.stderr
    time.sleep(0.5)  # let the old listener exec the new one before probing
    wait_for_banner(host.ip)
    res = pm("provision", "inst1", timeout=120)
    line = one_line_error(res)
    assert f"Host key for {host.ip}:22 has changed" in line and str(known_hosts) in line, line
    assert known_hosts.read_text() == pinned, "a changed key must never be re-pinned silently"
    assert list(ls_rows(pm)) == ["inst1"]
    assert json.loads(cfg_path.read_text())["Name"] == "inst1"


def test_new_ip_regenerates_certificates_on_env(pm, make_test_host, http_proxy, ssh_keypair):
    from pymachine.machine.certs import cert_covers_host

    host = make_test_host("ipc1")
    proxy_url = http_proxy.url_for(host)
    pm.ok(*create_args(host, ssh_keypair.private_key, "ipc1", "--http-proxy", proxy_url,
                       "--https-proxy", proxy_url), timeout=600)  # fmt: skip
    mdir = pm.store / "machines" / "ipc1"
    assert cert_covers_host(mdir / "server.pem", host.ip)

    # A DHCP-style change: the guest gets a second address (reachable only through
    # this test's veth) with its own sshd, and the machine's config names it.
    new_ip = f"10.232.{host.index}.2"
    netns.sh("ip", "-n", host.netns, "addr", "add", f"{new_ip}/32", "dev", "eth0")
    netns.sh("ip", "route", "add", f"{new_ip}/32", "dev", host.netns)
    sshd = host.run(f"/usr/sbin/sshd -o ListenAddress={new_ip}:22 -o PidFile=/run/sshd-new.pid")
    assert sshd.returncode == 0, sshd.stderr
    wait_for_banner(new_ip)
    cfg_path = mdir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["Driver"]["IPAddress"] = new_ip
    cfg_path.write_text(json.dumps(cfg, indent=4))
    assert not cert_covers_host(mdir / "server.pem", new_ip)

    res = pm("env", "ipc1", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (
        res.stderr.splitlines()[0]
        == f'Machine "ipc1" has a new IP address ({new_ip}); regenerating its certificates...'
    )
    assert "Traceback" not in res.stderr
    assert f'export DOCKER_HOST="tcp://{new_ip}:2376"' in res.stdout
    assert cert_covers_host(mdir / "server.pem", new_ip)

    again = pm.ok("env", "ipc1")
    assert again.stderr == "" and again.stdout == res.stdout
    version = docker(pm, "ipc1", "version", "--format", "{{.Server.Version}}")
    assert version.returncode == 0 and version.stdout.strip().startswith("20.10"), version.stderr
    assert ls_rows(pm)["ipc1"] == ["Running", ""]
    assert pm.ok("config", "ipc1").stdout.splitlines()[-1] == f"-H=tcp://{new_ip}:2376"


def _archive(files: dict[str, tuple[bytes, int]], manifest: bytes) -> bytes:
    from pymachine.engine import bundle

    buf = io.BytesIO()
    bundle.write_archive({**files, bundle.MANIFEST: (manifest, 0o644)}, buf, level=1)
    return buf.getvalue()


def test_tampered_bundle_is_refused_before_anything_is_installed(pm, make_test_host, ssh_keypair, tmp_path):
    bundle = pytest.importorskip("pymachine.engine.bundle")
    if not hasattr(bundle, "verify_bundle") or not hasattr(bundle, "write_archive"):
        pytest.skip("engine.bundle has no verify_bundle/write_archive yet")
    files = {f"bin/{name}": (f"#!/bin/sh\necho {name}\n".encode(), 0o755)
             for name in ("dockerd", "docker", "containerd", "containerd-shim-runc-v2", "runc")}  # fmt: skip
    manifest = json.dumps({
        "format": bundle.BUNDLE_FORMAT, "bundle_version": bundle.BUNDLE_VERSION,
        "engine_version": "20.10.24", "arch": "amd64",
        "files": {m: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d), "mode": f"{mode:04o}"}
                  for m, (d, mode) in files.items()},
    }).encode()  # fmt: skip
    good = tmp_path / "good.tar.gz"
    good.write_bytes(_archive(files, manifest))
    bundle.verify_bundle(good)  # the untampered bundle is a valid one
    data, mode = files["bin/dockerd"]
    files["bin/dockerd"] = (data[:-2] + bytes([data[-2] ^ 1]) + data[-1:], mode)  # one byte
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(_archive(files, manifest))

    host = make_test_host("bun1")
    res = pm(*create_args(host, ssh_keypair.private_key, "bun1", "--engine-bundle", str(bad)), timeout=120)
    line = one_line_error(res)
    assert "bin/dockerd sha256 mismatch" in line and str(bad) in line, line
    assert host.run('PATH="$PATH:/usr/local/bin"; command -v dockerd').stdout == ""
    assert host.run(f"test -e {bundle.REMOTE_ARCHIVE}").returncode != 0
    rows = ls_rows(pm)
    assert list(rows) == ["bun1"] and rows["bun1"][0] == "Error"
