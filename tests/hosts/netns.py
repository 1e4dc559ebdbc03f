"""Namespace and mount plumbing for the test hosts.

Everything here only ever touches objects named ``pmt-*`` (network
namespaces, veth links) or paths under directories this package owns, so
that cleanup can never hit another engineer's or the machine's own state.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PREFIX = "pmt-"
SUBNET = ipaddress.ip_network("10.231.0.0/16")
MAX_SUBNET_INDEX = 255
_LOCK_PATH = Path("/run/lock/pymachine-test-netns.lock")


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a host-side command, capturing output; errors say which command failed."""
    proc = subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"
        )
    return proc


def host_side_ip(index: int) -> str:
    return f"10.231.{index}.1"


def guest_ip(index: int) -> str:
    return f"10.231.{index}.2"


@contextmanager
def netns_lock(timeout: float = 60) -> Iterator[None]:
    """Serialise subnet allocation between concurrent test processes on this machine."""
    _LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(_LOCK_PATH, "a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not lock {_LOCK_PATH} within {timeout} s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def used_subnet_indexes() -> set[int]:
    """Indexes whose 10.231.<i>.0/30 already has an address on this machine's links."""
    out = sh("ip", "-o", "-4", "addr", "show").stdout
    used = set()
    for match in re.finditer(r"inet (10\.231\.(\d+)\.\d+)/", out):
        used.add(int(match.group(2)))
    return used


def free_subnet_index(start: int = 1) -> int:
    """First index >= start not in use; call it while holding ``netns_lock``."""
    used = used_subnet_indexes()
    for index in range(start, MAX_SUBNET_INDEX + 1):
        if index not in used:
            return index
    raise RuntimeError("no free 10.231.<i>.0/30 subnet left for a test host")


def list_netns() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(name: str) -> list[int]:
    out = sh("ip", "netns", "pids", name, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def create_netns(name: str, index: int) -> None:
    """Make netns ``name`` with a veth pair: host side ``name`` = .1/30, guest ``eth0`` = .2/30.

    The guest gets no default route: its only reachable peer is the host-side
    address, where the test's HTTP proxy listens.  ``ip_forward`` on this
    machine is left untouched (it is off), so nothing is routed further.
    """
    if not name.startswith(PREFIX) or len(name) > 15:
        raise ValueError(f"bad test netns name {name!r}")
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", name)
        # IPv4 only: no link-local IPv6 path between guest and machine either.
        sh("sysctl", "-qw", f"net.ipv6.conf.{name}.disable_ipv6=1", check=False)
        sh("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1",
           check=False)  # fmt: skip
        sh("ip", "addr", "add", f"{host_side_ip(index)}/30", "dev", name)
        sh("ip", "link", "set", name, "up")
        ns = ("ip", "-n", name)
        sh(*ns, "link", "set", "lo", "up")
        sh(*ns, "addr", "add", f"{guest_ip(index)}/30", "dev", "eth0")
        sh(*ns, "link", "set", "eth0", "up")
    except BaseException:
        delete_netns(name)
        raise


def delete_netns(name: str) -> None:
    """Delete the netns (which destroys its veth pair) and any leftover host-side veth."""
    if not name.startswith(PREFIX):
        raise ValueError(f"refusing to delete non-test netns {name!r}")
    if name in list_netns():
        sh("ip", "netns", "del", name, check=False)
    if sh("ip", "link", "show", "dev", name, check=False).returncode == 0:
        sh("ip", "link", "del", name, check=False)


def list_test_links() -> list[str]:
    out = sh("ip", "-o", "link", "show").stdout
    names = []
    for line in out.splitlines():
        match = re.match(r"\d+: ([^:@]+)[@:]", line)
        if match and match.group(1).startswith(PREFIX):
            names.append(match.group(1))
    return names


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace, deepest first."""
    root = os.path.realpath(path)
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].replace("\\040", " ")
            if point == root or point.startswith(root.rstrip("/") + "/"):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_under(path: Path) -> None:
    for point in mounts_under(path):
        sh("umount", "-l", point, check=False)


def remove_tree(path: Path) -> None:
    """rm -rf that first detaches mounts below ``path`` and never crosses a filesystem.

    A crashed debootstrap or host can leave /proc, /sys or /dev mounted
    inside a tree; a plain rmtree would then descend into the real ones.
    """
    if not os.path.lexists(path):
        return
    unmount_under(path)
    if mounts_under(path):
        raise RuntimeError(f"{path} still has mounts; not removing it")
    sh("rm", "-rf", "--one-file-system", str(path), timeout=300)
