"""pytest fixtures for namespaced Debian test hosts.

Use them with ``pytest_plugins = ["tests.hosts.fixtures"]`` (preferred: the
session fixtures are then shared by every module) or
``from tests.hosts.fixtures import *``.

Without root, ``unshare`` or ``debootstrap`` the fixtures skip with the
reason; with ``CI=true`` they fail instead, because CI must run these tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .host import TestHost, cleanup_stale
from .images import busybox_image_tar
from .proxy import HttpProxy
from .rootfs import build_rootfs

__all__ = [
    "SshKeyPair",
    "busybox_image",
    "http_proxy",
    "make_test_host",
    "require_host_support",
    "ssh_keypair",
    "test_rootfs",
]

_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def _have(tool: str) -> bool:
    return shutil.which(tool) is not None or any(
        os.access(os.path.join(d, tool), os.X_OK) for d in _SBIN_DIRS
    )


def require_host_support() -> None:
    """Skip (or, under CI=true, fail) when namespaced hosts cannot run here."""
    missing = []
    if os.geteuid() != 0:
        missing.append("not running as root")
    missing += [f"{tool} not installed" for tool in ("unshare", "debootstrap") if not _have(tool)]
    if missing:
        reason = "namespaced test hosts unavailable: " + ", ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI=true: these tests must run)")
        pytest.skip(reason)


@dataclass(frozen=True)
class SshKeyPair:
    private_key: Path
    public_key: Path

    @property
    def public_text(self) -> str:
        return self.public_key.read_text().strip()


@pytest.fixture(scope="session")
def test_rootfs() -> Path:
    """The cached Debian 12 root (built on first use, ~1 min; then instant)."""
    require_host_support()
    for item in cleanup_stale():
        print(f"[pmt-host] removed stale {item}", file=sys.stderr)
    return build_rootfs()


@pytest.fixture(scope="session")
def http_proxy() -> Iterator[HttpProxy]:
    """tinyproxy on the machine side; the only way out for test hosts (Debian archive only)."""
    require_host_support()
    with HttpProxy() as proxy:
        yield proxy


@pytest.fixture(scope="session")
def ssh_keypair(tmp_path_factory: pytest.TempPathFactory) -> SshKeyPair:
    """A throwaway RSA key in PEM format (0600), authorised on every host by default."""
    directory = tmp_path_factory.mktemp("pmt-ssh")
    os.chmod(directory, 0o700)
    private = directory / "id_rsa"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-C",
         "pymachine-test", "-f", str(private)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    os.chmod(private, 0o600)
    return SshKeyPair(private_key=private, public_key=directory / "id_rsa.pub")


@pytest.fixture(scope="session")
def busybox_image() -> Path:
    """A tar for ``docker import <tar> local/busybox:1``."""
    return busybox_image_tar()


MakeTestHost = Callable[..., TestHost]


@pytest.fixture
def make_test_host(
    test_rootfs: Path, http_proxy: HttpProxy, ssh_keypair: SshKeyPair
) -> Iterator[MakeTestHost]:
    """Factory: ``make_test_host(name=None, *, os_release=None, authorized_key=None,
    subnet_index=None)`` starts a host (SSH ready) and stops it at teardown."""
    started: list[TestHost] = []

    def factory(
        name: str | None = None,
        *,
        os_release: str | None = None,
        authorized_key: str | None = None,
        subnet_index: int | None = None,
    ) -> TestHost:
        host = TestHost.start(
            test_rootfs,
            name or f"pmt-host-{len(started) + 1}",
            authorized_key if authorized_key is not None else ssh_keypair.public_text,
            subnet_index=subnet_index,
            os_release=os_release,
            proxy=http_proxy,
        )
        started.append(host)
        return host

    yield factory
    errors = []
    for host in reversed(started):
        try:
            host.stop()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            errors.append(f"{host.name}: {exc}")
    if errors:
        pytest.fail("stopping test hosts failed: " + "; ".join(errors))
