"""The HTTP proxy on the machine side of every test host's veth pair.

Test hosts have no route out; the proxy (tinyproxy, run in the foreground by
the test) is the one component allowed to reach Debian's archive.  It
listens on 0.0.0.0 but only answers clients from 10.231.0.0/16 and loopback,
and by default only forwards to Debian's archive hosts, so a provisioner that
tries anything else gets a quick 403 instead of a hang.
"""

from __future__ import annotations

import atexit
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, Self

from .netns import host_side_ip, remove_tree

DEBIAN_ARCHIVE_HOSTS = ("deb.debian.org", "security.debian.org")
_LIVE: set[HttpProxy] = set()


class _HasIndex(Protocol):
    index: int


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        return sock.getsockname()[1]


class HttpProxy:
    """tinyproxy as a context manager; ``url_for(host)`` is what a test host must use."""

    def __init__(self, allowed_hosts: Iterable[str] | None = DEBIAN_ARCHIVE_HOSTS) -> None:
        """``allowed_hosts`` None forwards to any destination (no filter)."""
        self.allowed_hosts = tuple(allowed_hosts) if allowed_hosts is not None else None
        self.port = 0
        self.workdir: Path | None = None
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None, "proxy not started"
        return self.workdir / "tinyproxy.log"

    def _config(self) -> str:
        assert self.workdir is not None
        lines = [
            f"Port {self.port}",
            "Listen 0.0.0.0",
            "Timeout 120",
            f'LogFile "{self.log_path}"',
            "LogLevel Info",
            "MaxClients 100",
            "DisableViaHeader Yes",
            "Allow 127.0.0.1",
            "Allow 10.231.0.0/16",
            "ConnectPort 443",
        ]
        if self.allowed_hosts is not None:
            filter_file = self.workdir / "filter"
            filter_file.write_text(
                "".join(f"^{h.replace('.', '[.]')}$\n" for h in self.allowed_hosts)
            )
            lines += [f'Filter "{filter_file}"', "FilterType ere", "FilterDefaultDeny Yes"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="pmt-proxy-"))
        _LIVE.add(self)
        try:
            for _attempt in range(5):  # the free port may be taken between probe and bind
                self.port = _free_port()
                conf = self.workdir / "tinyproxy.conf"
                conf.write_text(self._config())
                self.log_path.write_text("")
                with open(self.workdir / "stderr.log", "wb") as err:
                    self._proc = subprocess.Popen(
                        ["tinyproxy", "-d", "-c", str(conf)],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                        start_new_session=True,
                    )  # fmt: skip
                if self._wait_listening(timeout):
                    return
                self._terminate()
            raise RuntimeError(f"tinyproxy did not start: {self._diagnostics()}")
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def _diagnostics(self) -> str:
        assert self.workdir is not None
        err = (self.workdir / "stderr.log").read_text(errors="replace")
        return (err + self.log_text())[-800:]

    def url_for(self, host: _HasIndex) -> str:
        """The proxy URL as seen from ``host``: its host-side veth address."""
        if not self.port:
            raise RuntimeError("proxy not started")
        return f"http://{host_side_ip(host.index)}:{self.port}"

    @property
    def loopback_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, AssertionError):
            return ""

    def _terminate(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._proc = None

    def stop(self) -> None:
        """Stop tinyproxy and delete its config and log. Idempotent."""
        try:
            self._terminate()
        finally:
            _LIVE.discard(self)
            if self.workdir is not None:
                remove_tree(self.workdir)
                self.workdir = None


@atexit.register
def _stop_all_live() -> None:
    for proxy in list(_LIVE):
        proxy.stop()
