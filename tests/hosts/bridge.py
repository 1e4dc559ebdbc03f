"""A private LAN between namespaced test hosts: one Linux bridge, one veth per host.

Each host gets ``eth1`` = 10.240.<n>.<k+2>/24 (k = its position), all ports of
one bridge.  The bridge lives in its own network namespace ``pmtbr-<id>``
rather than in the machine's root namespace because the machine runs Docker,
whose ``FORWARD`` policy is DROP and ``br_netfilter`` is on
(``bridge-nf-call-iptables=1``): bridged frames in the root namespace would
be filtered.  In its own namespace the bridge has no address and no route,
so the hosts reach each other and nothing else.

Deleting the bridge namespace deletes the bridge and every veth pair (a
veth dies with either end).  A state file under /run records the owner so
``cleanup_stale_bridges`` can remove what a crashed run left.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, Self

PREFIX = "pmtbr-"
STATE_DIR = Path(os.environ.get("PYMACHINE_TEST_BRIDGES", "/run/pymachine-test-bridges"))


class HasNetns(Protocol):
    netns: str


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=check)


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@contextmanager
def _lock() -> Iterator[None]:
    STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(STATE_DIR / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError("test bridge lock busy for 30 s") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _states() -> list[dict]:
    out = []
    for path in sorted(STATE_DIR.glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


def _netns_list() -> list[str]:
    return [line.split()[0] for line in _sh("ip", "netns", "list").stdout.splitlines() if line.strip()]


class TestBridge:
    """One bridge joining ``hosts``; ``ip_of(host)`` is its address on the shared LAN."""

    __test__ = False

    def __init__(self, hosts: Sequence[HasNetns]) -> None:
        self.id = secrets.token_hex(3)
        self.netns = f"{PREFIX}{self.id}"
        self.subnet = 0
        self.hosts = list(hosts)
        self.addresses: dict[str, str] = {}
        self._closed = False

    @property
    def cidr(self) -> str:
        return f"10.240.{self.subnet}.0/24"

    def ip_of(self, host: HasNetns) -> str:
        return self.addresses[host.netns]

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> Self:
        with _lock():
            used = {s.get("subnet") for s in _states()}
            self.subnet = next(n for n in range(1, 255) if n not in used)
            (STATE_DIR / f"{self.id}.json").write_text(json.dumps({
                "netns": self.netns, "subnet": self.subnet, "owner_pid": os.getpid(),
                "owner_start": _start_time(os.getpid())}))
        try:
            br = ("ip", "-n", self.netns)
            _sh("ip", "netns", "add", self.netns)
            _sh(*br, "link", "set", "lo", "up")
            _sh(*br, "link", "add", "br0", "type", "bridge")
            _sh("ip", "netns", "exec", self.netns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", check=False)
            _sh(*br, "link", "set", "br0", "up")
            for k, host in enumerate(self.hosts):
                port = f"v{k}"
                _sh(*br, "link", "add", port, "type", "veth", "peer", "name", "eth1", "netns", host.netns)
                _sh(*br, "link", "set", port, "master", "br0")
                _sh(*br, "link", "set", port, "up")
                ip = f"10.240.{self.subnet}.{k + 2}"
                guest = ("ip", "-n", host.netns)
                _sh("ip", "netns", "exec", host.netns, "sysctl", "-qw", "net.ipv6.conf.eth1.disable_ipv6=1",
                    check=False)
                _sh(*guest, "addr", "add", f"{ip}/24", "dev", "eth1")
                _sh(*guest, "link", "set", "eth1", "up")
                self.addresses[host.netns] = ip
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Delete the bridge namespace (and with it every veth pair) and the state file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            for host in self.hosts:  # a host may already be gone: its eth1 went with it
                if host.netns in _netns_list():
                    _sh("ip", "-n", host.netns, "link", "del", "eth1", check=False)
            if self.netns in _netns_list():
                _sh("ip", "netns", "del", self.netns)
        finally:
            (STATE_DIR / f"{self.id}.json").unlink(missing_ok=True)


def cleanup_stale_bridges() -> list[str]:
    """Remove bridges whose owning test process is gone; returns their namespaces."""
    removed = []
    with _lock():
        for path in sorted(STATE_DIR.glob("*.json")):
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                state = {}
            pid = state.get("owner_pid")
            if isinstance(pid, int) and _start_time(pid) is not None and _start_time(pid) == state.get("owner_start"):
                continue
            ns = str(state.get("netns", ""))
            if ns.startswith(PREFIX) and ns in _netns_list():
                _sh("ip", "netns", "del", ns, check=False)
            path.unlink(missing_ok=True)
            removed.append(ns)
    return removed
