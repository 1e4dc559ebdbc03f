"""One namespaced Debian 12 test host: overlay root, own netns/mount/UTS/PID namespaces, sshd.

Layout of a running host (``<id>`` is 6 hex digits):

- netns ``pmt-<id>`` with ``eth0`` = 10.231.<i>.2/30 and no default route; the
  host-side veth ``pmt-<id>`` = 10.231.<i>.1/30 is the only peer it can reach.
- ``<hosts_dir>/<id>/{upper,work,merged,docker}`` on ext4 under /var/tmp;
  every mount is made inside the host's private mount namespace, so none of
  them is visible on the machine and all vanish with the host's processes.
- PID 1 of the host's PID namespace is a reaper shell in the chroot that runs
  ``sshd -D -e``.  Killing it makes the kernel kill everything else inside
  (dockerd included), which is what ``stop()`` relies on.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Self

from . import netns
from .rootfs import READY_MARKER

if TYPE_CHECKING:
    from .proxy import HttpProxy

GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

# Runs as PID 1 of the new PID namespace, inside the new mount namespace, with
# this machine's /bin/sh.  Positional args avoid any shell quoting of paths.
_INIT_SCRIPT = r"""
set -eu
L=$1 U=$2 W=$3 R=$4 D=$5 HN=$6 IP=$7
mount -t overlay pmt-overlay -o "lowerdir=$L,upperdir=$U,workdir=$W" "$R"
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
mount --rbind /sys/fs/cgroup "$R/sys/fs/cgroup"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$R/run"
mkdir -p "$R/run/sshd" "$R/run/lock"
mount --bind "$D" "$R/var/lib/docker"
hostname "$HN"
exec chroot "$R" /bin/sh -c '
  trap "exit 0" TERM
  /usr/sbin/sshd -D -e -o ListenAddress="$1:22" &
  while :; do wait; sleep 1; done' pmt-init "$IP"
"""

_LIVE: dict[str, TestHost] = {}


def default_hosts_dir() -> Path:
    return Path(os.environ.get("PYMACHINE_TEST_HOSTS", "/var/tmp/pymachine-test-hosts"))


def _proc_start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


class TestHost:
    """A running test host; use ``TestHost.start(...)`` as a context manager."""

    __test__ = False  # not a pytest test class

    user = "root"
    port = 22

    def __init__(self, *, host_id: str, name: str, index: int, rootfs: Path, host_dir: Path,
                 proxy: HttpProxy | None) -> None:  # fmt: skip
        self.id = host_id
        self.name = name
        self.index = index
        self.rootfs = rootfs
        self.host_dir = host_dir
        self.netns = f"{netns.PREFIX}{host_id}"
        self.ip = netns.guest_ip(index)
        self.host_side_ip = netns.host_side_ip(index)
        self.proxy = proxy
        self.init_pid: int | None = None
        self._proc: subprocess.Popen | None = None
        self._stopped = False

    # ----------------------------------------------------------------- start
    @classmethod
    def start(
        cls,
        rootfs: Path,
        name: str,
        authorized_key: str,
        subnet_index: int | None = None,
        os_release: str | None = None,
        proxy: HttpProxy | None = None,
        *,
        hosts_dir: Path | None = None,
        ssh_timeout: float = 15.0,
    ) -> TestHost:
        """Start a host and wait until its sshd sends a banner.

        ``subnet_index`` None picks a free 10.231.<i>.0/30; ``os_release``
        replaces /etc/os-release in this host only.
        """
        if not _HOSTNAME_RE.match(name):
            raise ValueError(f"invalid test host name {name!r}")
        if not (Path(rootfs) / READY_MARKER).is_file():
            raise ValueError(f"{rootfs} is not a built test root (run build_rootfs)")
        hosts_dir = Path(hosts_dir) if hosts_dir is not None else default_hosts_dir()
        hosts_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        host_id = secrets.token_hex(3)
        host_dir = hosts_dir / host_id
        host_dir.mkdir(mode=0o700)
        host = cls(host_id=host_id, name=name, index=-1, rootfs=Path(rootfs),
                   host_dir=host_dir, proxy=proxy)  # fmt: skip
        _LIVE[host_id] = host
        try:
            host._prepare_upper(authorized_key, os_release)
            with netns.netns_lock():
                index = netns.free_subnet_index() if subnet_index is None else subnet_index
                if index in netns.used_subnet_indexes() or not 0 <= index <= 255:
                    raise ValueError(f"subnet index {index} is in use or out of range")
                host.index = index
                host.ip = netns.guest_ip(index)
                host.host_side_ip = netns.host_side_ip(index)
                host._write_state()
                netns.create_netns(host.netns, index)
                host._launch()
            host._write_state()
            host._wait_for_ssh(ssh_timeout)
        except BaseException:
            host.stop()
            raise
        return host

    def _prepare_upper(self, authorized_key: str, os_release: str | None) -> None:
        """Per-host files go straight into the overlay's upper dir, before it is mounted."""
        upper = self.host_dir / "upper"
        for sub in ("upper", "work", "merged"):
            (self.host_dir / sub).mkdir(mode=0o755)
        os.chmod(upper, 0o755)  # the upper root's mode becomes the guest's / mode
        (self.host_dir / "docker").mkdir(mode=0o711)
        (upper / "etc").mkdir(mode=0o755)
        (upper / "root").mkdir(mode=0o700)
        (upper / "root/.ssh").mkdir(mode=0o700)
        files = {
            "etc/hostname": (f"{self.name}\n", 0o644),
            "etc/hosts": (f"127.0.0.1\tlocalhost\n127.0.1.1\t{self.name}\n", 0o644),
            "root/.ssh/authorized_keys": (authorized_key.strip() + "\n", 0o600),
        }
        if os_release is not None:
            files["etc/os-release"] = (os_release, 0o644)
        for rel, (text, mode) in files.items():
            path = upper / rel
            path.write_text(text)
            os.chmod(path, mode)

    def _write_state(self) -> None:
        state = {
            "owner_pid": os.getpid(),
            "owner_start": _proc_start_time(os.getpid()),
            "netns": self.netns,
            "index": self.index,
            "name": self.name,
            "init_pid": self.init_pid,
        }
        (self.host_dir / "state.json").write_text(json.dumps(state))

    def _launch(self) -> None:
        argv = [
            "nsenter", f"--net=/run/netns/{self.netns}", "--",
            "unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child",
            "--propagation", "private", "--",
            "/bin/sh", "-c", _INIT_SCRIPT, "pmt-init",
            str(self.rootfs), str(self.host_dir / "upper"), str(self.host_dir / "work"),
            str(self.host_dir / "merged"), str(self.host_dir / "docker"), self.name, self.ip,
        ]  # fmt: skip
        with open(self.host_dir / "console.log", "wb") as console:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                env={"PATH": GUEST_PATH, "HOME": "/root", "LANG": "C"},
                start_new_session=True,  # a Ctrl-C in the terminal must not bypass stop()
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            kids = _children(self._proc.pid)
            if kids:
                self.init_pid = kids[0]
                return
            if self._proc.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError(f"test host {self.name} did not start: {self.log_text()[-800:]}")

    def _wait_for_ssh(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no attempt"
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"test host {self.name} exited ({self._proc.returncode}): "
                    f"{self.log_text()[-800:]}"
                )
            try:
                with socket.create_connection((self.ip, self.port), timeout=1) as conn:
                    conn.settimeout(2)
                    if conn.recv(64).startswith(b"SSH-"):
                        return
                    last = "no SSH banner"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.05)
        raise TimeoutError(
            f"sshd on test host {self.name} ({self.ip}) not ready in {timeout} s: {last}; "
            f"{self.log_text()[-800:]}"
        )

    # ------------------------------------------------------------------- use
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<TestHost {self.name} {self.ip} netns={self.netns}>"

    @property
    def proxy_url(self) -> str | None:
        """The HTTP proxy URL this host can reach (http://10.231.<i>.1:<port>), if any."""
        return self.proxy.url_for(self) if self.proxy is not None else None

    def run(
        self, cmd: str, *, check: bool = False, timeout: float = 300, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` with the guest's /bin/sh inside all of the host's namespaces (no SSH)."""
        if self.init_pid is None or self._stopped:
            raise RuntimeError(f"test host {self.name} is not running")
        argv = ["nsenter", "-t", str(self.init_pid), "-m", "-u", "-n", "-p", "-r", "-w",
                "--", "/bin/sh", "-c", cmd]  # fmt: skip
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=check, input=input,
            env={"PATH": GUEST_PATH, "HOME": "/root", "LANG": "C", "TERM": "dumb"},
        )  # fmt: skip

    def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write a file inside the running host (through its namespaces, not the upper dir)."""
        if self.init_pid is None or self._stopped:
            raise RuntimeError(f"test host {self.name} is not running")
        script = 'umask 077; cat > "$1.pmt-tmp" && chmod "$2" "$1.pmt-tmp" && mv "$1.pmt-tmp" "$1"'
        argv = ["nsenter", "-t", str(self.init_pid), "-m", "-u", "-n", "-p", "-r", "-w",
                "--", "/bin/sh", "-c", script, "put", path, f"{mode:o}"]  # fmt: skip
        proc = subprocess.run(argv, input=data, capture_output=True, timeout=120, check=False,
                              env={"PATH": GUEST_PATH})  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"writing {path} in {self.name} failed: {proc.stderr!r}")

    def ssh_argv(self, key_path: Path | str, *command: str) -> list[str]:
        """Argv for the real OpenSSH client logging in as root with ``key_path``."""
        return [
            "ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
            "-i", str(key_path), "-p", str(self.port), f"{self.user}@{self.ip}", *command,
        ]  # fmt: skip

    def log_text(self) -> str:
        """The host's console: mount errors and sshd's ``-e`` log."""
        try:
            return (self.host_dir / "console.log").read_text(errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """Kill every process in the host, delete its netns/veth and its files. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._kill_all()
        finally:
            try:
                netns.delete_netns(self.netns)
            finally:
                _LIVE.pop(self.id, None)
                netns.remove_tree(self.host_dir)

    def _kill_all(self) -> None:
        proc = self._proc
        if self.init_pid is not None and proc is not None and proc.poll() is None:
            # The PID namespace's init dying makes the kernel SIGKILL all its
            # members; unshare then reaps init and exits by itself.
            _kill(self.init_pid)
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        _kill_netns_members(self.netns)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _kill_netns_members(name: str, timeout: float = 10) -> None:
    """SIGKILL anything still inside netns ``name`` and wait (bounded) until it is empty."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = netns.netns_pids(name) if name in netns.list_netns() else []
        if not pids:
            return
        for pid in pids:
            _kill(pid)
        time.sleep(0.05)


def cleanup_stale(hosts_dir: Path | None = None) -> list[str]:
    """Remove hosts left by crashed runs; return what was removed.

    A host is stale when the test process that started it is gone.  A
    ``pmt-*`` netns with no state dir is removed only if no process is in it
    (it may belong to a live run using another hosts dir), and a ``pmt-*``
    veth only if its netns is gone.
    """
    hosts_dir = Path(hosts_dir) if hosts_dir is not None else default_hosts_dir()
    removed: list[str] = []
    with netns.netns_lock():
        known: set[str] = set()
        for state_file in sorted(hosts_dir.glob("*/state.json")):
            try:
                state = json.loads(state_file.read_text())
            except (OSError, ValueError):
                state = {}
            ns = state.get("netns", "")
            known.add(ns)
            owner = state.get("owner_pid")
            alive = (
                isinstance(owner, int)
                and _proc_start_time(owner) is not None
                and _proc_start_time(owner) == state.get("owner_start")
            )
            if alive:
                continue
            if ns.startswith(netns.PREFIX):
                _kill_netns_members(ns)
                netns.delete_netns(ns)
            netns.remove_tree(state_file.parent)
            removed.append(f"host {state_file.parent.name} ({ns or 'no netns'})")
        for ns in netns.list_netns():
            if ns.startswith(netns.PREFIX) and ns not in known and not netns.netns_pids(ns):
                netns.delete_netns(ns)
                removed.append(f"netns {ns}")
        live_ns = set(netns.list_netns())
        for link in netns.list_test_links():
            if link not in live_ns:
                netns.sh("ip", "link", "del", link, check=False)
                removed.append(f"veth {link}")
        for leftover in hosts_dir.iterdir() if hosts_dir.is_dir() else ():
            # A dir without state.json: a start that crashed before writing it.
            if (
                leftover.is_dir()
                and not (leftover / "state.json").exists()
                and time.time() - leftover.stat().st_mtime > 60
            ):
                netns.remove_tree(leftover)
                removed.append(f"dir {leftover.name}")
    return removed


@atexit.register
def _stop_all_live() -> None:
    for host in list(_LIVE.values()):
        try:
            host.stop()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:  # stop the others
            print(f"[pmt-host] stopping {host.name} failed: {exc}", flush=True)
