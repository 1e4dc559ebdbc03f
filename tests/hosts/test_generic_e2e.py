"""``create -d generic`` end to end on real Debian hosts in their own network namespaces.

The hosts have no route out: Debian's archive is reachable only through the
tinyproxy the test starts, so the proxy's log proves the provisioner used it.
Everything is driven through the installed ``pymachine`` command and the real
``docker`` CLI, as a user would.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.hosts
DOCKER = shutil.which("docker") or "/usr/bin/docker"


def docker(pm, name: str, *args: str, input: bytes | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run the real docker CLI with the environment printed by ``pymachine env NAME``."""
    env_text = pm.ok("env", name).stdout
    env = dict(pm.env)
    for line in env_text.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.strip('"')
    return subprocess.run([DOCKER, *args], input=input, capture_output=True, timeout=timeout, env=env, check=False)


def test_generic_create_through_proxy_then_day_two(
    pm, make_test_host, http_proxy, ssh_keypair, busybox_image, tmp_path
):
    host = make_test_host("gen1")
    proxy_url = http_proxy.url_for(host)
    res = pm("create", "-d", "generic", "--generic-ip-address", host.ip,
             "--generic-ssh-key", str(ssh_keypair.private_key),
             "--http-proxy", proxy_url, "--https-proxy", proxy_url,
             "--engine-label", "tier=test", "gen1", timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    for phase in ("Running pre-create checks...", "Waiting for SSH to be available...",
                  "Provisioning with debian", "Installing Docker...", "Docker is up and running!"):
        assert phase in res.stdout
    assert "deb.debian.org" in http_proxy.log_text(), "packages must come through the proxy"

    # The engine runs a container from a locally imported image (no registry here).
    imported = docker(pm, "gen1", "import", "-", "local/busybox:1", input=busybox_image.read_bytes())
    assert imported.returncode == 0, imported.stderr
    ran = docker(pm, "gen1", "run", "--rm", "--network", "none", "local/busybox:1", "echo", "hello-from-gen1")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.decode().strip() == "hello-from-gen1"

    info = json.loads(docker(pm, "gen1", "info", "--format", "{{json .}}").stdout)
    assert info["HttpProxy"] == proxy_url
    assert host.ip in info["NoProxy"]
    assert "tier=test" in info["Labels"] and "provider=generic" in info["Labels"]
    assert info["Name"] == "gen1"

    ls = pm.ok("ls", "--format", "{{.Name}} {{.State}} {{.DockerVersion}}").stdout.split()
    assert ls[:2] == ["gen1", "Running"] and ls[2].startswith("v20.10")

    # ssh and scp both ways, with the host key pinned in the machine directory.
    assert pm.ok("ssh", "gen1", "--", "cat", "/etc/hostname").stdout.strip() == "gen1"
    assert (pm.store / "machines" / "gen1" / "known_hosts").exists()
    local = tmp_path / "up.txt"
    local.write_text("payload-123\n")
    pm.ok("scp", str(local), "gen1:/tmp/up.txt")
    assert host.run("cat /tmp/up.txt").stdout == "payload-123\n"
    back = tmp_path / "down.txt"
    pm.ok("scp", "gen1:/tmp/up.txt", str(back))
    assert back.read_text() == "payload-123\n"
    _ssh_config_and_forwarding(pm, tmp_path, host.ip)

    # Day two: change a label in config.json (as users did with docker-machine) and re-provision.
    cfg_path = pm.store / "machines" / "gen1" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["HostOptions"]["EngineOptions"]["Labels"] = ["tier=prod"]
    cfg_path.write_text(json.dumps(cfg, indent=4))
    pm.ok("provision", "gen1", timeout=300)
    labels = json.loads(docker(pm, "gen1", "info", "--format", "{{json .Labels}}").stdout)
    assert "tier=prod" in labels and "tier=test" not in labels

    old_cert = (pm.store / "machines" / "gen1" / "server.pem").read_bytes()
    pm.ok("regenerate-certs", "-f", "gen1", timeout=300)
    assert (pm.store / "machines" / "gen1" / "server.pem").read_bytes() != old_cert
    assert docker(pm, "gen1", "version", "--format", "{{.Server.Version}}").returncode == 0

    pm.ok("upgrade", "gen1", timeout=600)
    assert docker(pm, "gen1", "ps").returncode == 0

    pm.ok("rm", "-y", "gen1")
    assert not (pm.store / "machines" / "gen1").exists()


def test_generic_failure_paths(pm, make_test_host, ssh_keypair, tmp_path):
    # Unsupported OS: one line naming the OS, non-zero exit, machine kept with the failing step.
    odd = make_test_host("odd1", os_release='NAME="Plan 9"\nID=plan9\nPRETTY_NAME="Plan 9 from Bell Labs"\n')
    res = pm("create", "-d", "generic", "--generic-ip-address", odd.ip,
             "--generic-ssh-key", str(ssh_keypair.private_key), "odd1", timeout=120)
    assert res.returncode == 1
    assert res.stderr.strip() == "OS type not recognized: Plan 9 from Bell Labs"
    row = pm.ok("ls", "--format", "{{.Name}}|{{.State}}|{{.Error}}").stdout.strip().split("|")
    assert row[:2] == ["odd1", "Error"] and "step detect" in row[2]
    assert pm.ok("inspect", "-f", "{{.Pymachine.LastError.Step}}", "odd1").stdout.strip() == "detect"

    # Wrong key: a clear authentication error, bounded.
    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    res = pm("create", "-d", "generic", "--generic-ip-address", odd.ip, "--generic-ssh-key", str(wrong),
             "wrongkey", timeout=200)
    assert res.returncode == 1
    assert "authentication failed" in res.stderr.lower()

    # Missing key file: pre-create check, exit 3, nothing created.
    res = pm("create", "-d", "generic", "--generic-ip-address", odd.ip, "--generic-ssh-key",
             str(tmp_path / "nope"), "nokey")
    assert res.returncode == 3
    assert not (pm.store / "machines" / "nokey").exists()

    # Host-key change: the pinned key no longer matches.
    pm.ok("rm", "-f", "-y", "odd1")


def test_generic_create_with_engine_bundle_and_no_network(pm, make_test_host, ssh_keypair, busybox_image):
    """No proxy, no route out: the engine comes from an uploaded, verified bundle."""
    from bundle_cache import real_engine_bundle

    bundle = real_engine_bundle()
    host = make_test_host("bun1")
    assert host.run("command -v dockerd").returncode != 0
    res = pm("create", "-d", "generic", "--generic-ip-address", host.ip,
             "--generic-ssh-key", str(ssh_keypair.private_key), "--engine-bundle", str(bundle), "bun1", timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Docker is up and running!" in res.stdout
    assert host.run("cat /etc/apt/apt.conf.d/*proxy* 2>/dev/null").stdout == ""
    imported = docker(pm, "bun1", "import", "-", "local/busybox:1", input=busybox_image.read_bytes())
    assert imported.returncode == 0, imported.stderr
    ran = docker(pm, "bun1", "run", "--rm", "--network", "none", "local/busybox:1", "echo", "hello-from-bundle")
    assert ran.stdout.decode().strip() == "hello-from-bundle", ran.stderr
    assert (
        pm.ok("inspect", "-f", "{{.HostOptions.EngineOptions.Pymachine.InstallSource}}", "bun1").stdout.strip()
        == "bundle"
    )
    pm.ok("provision", "bun1", timeout=300)  # idempotent: the installed engine is reused
    assert docker(pm, "bun1", "ps").returncode == 0
    pm.ok("rm", "-y", "bun1")


def _ssh_config_and_forwarding(pm, tmp_path, host_ip: str) -> None:
    """Other tools reach the machine through ``ssh-config``'s Host block (pinned key, strict
    checking), and ``pymachine ssh NAME -L ... -N`` forwards a port as OpenSSH does."""
    import socket
    import time

    block = pm.ok("ssh-config", "gen1").stdout
    assert "StrictHostKeyChecking yes" in block
    assert f"UserKnownHostsFile {pm.store / 'machines' / 'gen1' / 'known_hosts'}" in block
    config = tmp_path / "ssh_config"
    config.write_text(block)
    via = subprocess.run(["ssh", "-F", str(config), "gen1", "cat /etc/hostname"], capture_output=True,
                         text=True, timeout=60, env=pm.env)
    assert via.returncode == 0 and via.stdout.strip() == "gen1", via.stderr
    # scp with the same block (the test hosts carry no rsync; ssh -F is what rsync -e uses)
    (tmp_path / "a.txt").write_text("copied\n")
    copied = subprocess.run(["scp", "-F", str(config), str(tmp_path / "a.txt"), "gen1:/tmp/a.txt"],
                            capture_output=True, text=True, timeout=60, env=pm.env)
    assert copied.returncode == 0, copied.stderr
    assert pm.ok("ssh", "gen1", "--", "cat", "/tmp/a.txt").stdout == "copied\n"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    forward = subprocess.Popen(
        [shutil.which("pymachine", path=pm.env["PATH"]), "ssh", "gen1", "-L", f"127.0.0.1:{port}:{host_ip}:22", "-N"],
        env=pm.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        banner = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not banner:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                    banner = conn.recv(64)
            except OSError:
                time.sleep(0.2)
        assert banner.startswith(b"SSH-2.0-"), "the forwarded port reaches the machine's sshd"
    finally:
        forward.terminate()
        forward.wait(timeout=10)
