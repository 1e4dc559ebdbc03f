"""Self-test of the namespaced test hosts: SSH, isolation, proxy, cleanup, dockerd.

Only addresses these tests create are ever dialled: the hosts' 10.231.x.x
veth addresses and loopback.  Isolation is proven by the guest's routing
table, not by trying to reach the outside.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.hosts.fixtures import *  # noqa: F403 - pytest finds these fixtures by name: test_rootfs, make_test_host, ...
from tests.hosts.fixtures import SshKeyPair
from tests.hosts.host import TestHost
from tests.hosts.netns import list_netns, list_test_links
from tests.hosts.proxy import HttpProxy

pytestmark = pytest.mark.hosts


def _ssh(host: TestHost, keypair: SshKeyPair, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        host.ssh_argv(keypair.private_key, command),
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_hosts_answer_ssh_with_their_own_hostnames(make_test_host, ssh_keypair):
    first = make_test_host("pmt-alpha")
    second = make_test_host("pmt-beta")
    assert first.ip != second.ip
    names = []
    for host in (first, second):
        result = _ssh(host, ssh_keypair, "hostname")
        assert result.returncode == 0, result.stderr
        names.append(result.stdout.strip())
    assert names == ["pmt-alpha", "pmt-beta"]


def test_key_not_authorised_is_refused(make_test_host, ssh_keypair, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True, timeout=30)  # fmt: skip
    host = make_test_host(authorized_key=(tmp_path / "other.pub").read_text())
    assert _ssh(host, ssh_keypair, "true").returncode == 255
    assert _ssh(host, SshKeyPair(other, tmp_path / "other.pub"), "true").returncode == 0


def test_guest_has_no_route_out(make_test_host):
    host = make_test_host()
    routes = host.run("ip -4 route show table all | grep -v '^local\\|^broadcast'").stdout
    lines = [line for line in routes.splitlines() if line.strip()]
    assert lines, "guest has no IPv4 route at all"
    for line in lines:
        # Only the connected /30 (whose other end is the host-side veth), or a
        # default via exactly that address.
        allowed = (f"10.231.{host.index}.0/30 dev eth0", f"default via {host.host_side_ip} ")
        assert line.startswith(allowed), line
    assert host.run("ip -6 route show dev eth0").stdout.strip() == ""


def test_guest_reaches_only_what_the_test_made(make_test_host, http_proxy: HttpProxy):
    first = make_test_host()
    second = make_test_host()
    # A listener on this machine's loopback: the guest's 127.0.0.1 is its own.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        probe = first.run(f"curl -sS --max-time 3 http://127.0.0.1:{port}/")
        assert probe.returncode == 7, probe  # connection refused inside the guest
        with pytest.raises(BlockingIOError):
            listener.accept()
    # Another guest's address has no route from this guest.
    started = time.monotonic()
    probe = first.run(f"curl -sS --max-time 3 http://{second.ip}:22/")
    assert probe.returncode == 7 and time.monotonic() - started < 3, probe
    # The host-side veth address, where the proxy listens, is reachable.
    answer = first.run(f"curl -s -o /dev/null -w '%{{http_code}}' {http_proxy.url_for(first)}/")
    assert answer.stdout not in ("", "000"), answer


def test_apt_update_goes_through_the_proxy(make_test_host, http_proxy: HttpProxy):
    host = make_test_host()
    assert host.run("ls /etc/apt/apt.conf.d/ | grep -i proxy").stdout == ""
    result = host.run(
        f"apt-get -q -o Acquire::http::Proxy={host.proxy_url} update", timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "Hit:" in result.stdout or "Get:" in result.stdout
    log = http_proxy.log_text()
    client = rf"Connect \(file descriptor \d+\): {re.escape(host.ip)}$"
    assert re.search(client, log, re.MULTILINE), log
    assert "GET http://deb.debian.org/debian/dists/bookworm/InRelease" in log


def test_os_release_override(make_test_host, ssh_keypair):
    fake = 'NAME="Plan 9"\nID=plan9\nVERSION_ID="4"\n'
    odd = make_test_host(os_release=fake)
    plain = make_test_host()
    result = _ssh(odd, ssh_keypair, ". /etc/os-release && echo $ID $VERSION_ID")
    assert result.stdout.split() == ["plan9", "4"]
    assert plain.run(". /etc/os-release && echo $ID $VERSION_ID").stdout.split() == ["debian", "12"]


def test_rlimit_raise_is_clamped_not_fatal(make_test_host):
    host = make_test_host()
    result = host.run("set -e; ulimit -n 1048576; ulimit -Hn; echo survived")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "survived"
    assert int(result.stdout.split()[0]) < 1048576  # clamped to this machine's hard limit


def test_stop_reaps_every_process_and_removes_everything(make_test_host):
    host = make_test_host()
    host.run("setsid sleep 600 >/dev/null 2>&1 < /dev/null & echo started")
    pids = [int(p) for p in subprocess.run(
        ["ip", "netns", "pids", host.netns], capture_output=True, text=True, check=True
    ).stdout.split()]  # fmt: skip
    assert len(pids) >= 3  # init, sshd, sleep
    host.stop()
    assert not [pid for pid in pids if _alive(pid)]
    assert host.netns not in list_netns()
    assert host.netns not in list_test_links()
    assert not host.host_dir.exists()
    assert host.ip not in subprocess.run(["ip", "-4", "addr"], capture_output=True,
                                         text=True, check=True).stdout  # fmt: skip


@pytest.mark.timeout(240)
def test_docker_engine_runs_in_a_host(make_test_host, http_proxy: HttpProxy, busybox_image: Path):
    """Slow (about 20-30 s): docker.io through the proxy, then Debian's init script."""
    host = make_test_host("pmt-docker")
    proxy = f"-o Acquire::http::Proxy={host.proxy_url}"
    install = host.run(
        f"apt-get -q {proxy} update && DEBIAN_FRONTEND=noninteractive "
        f"apt-get -q -y {proxy} install --no-install-recommends docker.io",
        timeout=200,
    )
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    start = host.run("/etc/init.d/docker start", timeout=60)
    assert start.returncode == 0, start.stdout + start.stderr
    deadline = time.monotonic() + 30
    info = host.run("docker info --format '{{.Driver}}'")
    while info.returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.3)
        info = host.run("docker info --format '{{.Driver}}'")
    assert info.returncode == 0, info.stderr + host.run("tail -20 /var/log/docker.log").stdout
    assert info.stdout.strip() == "overlay2"  # /var/lib/docker is on ext4, not the overlay
    host.put("/tmp/busybox.tar", busybox_image.read_bytes())
    imported = host.run("docker import /tmp/busybox.tar local/busybox:1", timeout=60)
    assert imported.returncode == 0, imported.stderr
    ran = host.run(
        "docker run --rm --network none local/busybox:1 sh -c 'echo hello-$((6*7))'", timeout=60
    )
    assert ran.stdout.strip() == "hello-42", ran.stderr
    pids = [int(p) for p in subprocess.run(
        ["ip", "netns", "pids", host.netns], capture_output=True, text=True, check=True
    ).stdout.split()]  # fmt: skip
    host.stop()
    assert not [pid for pid in pids if _alive(pid)]  # dockerd and containerd too
