"""pymachine's base image built and booted by a normal user: no root, no sudo.

A throwaway user (``useradd -m``; subordinate ids as Debian's useradd gives
them, or none for the refusal) runs the CLI the way a user would, through
``runuser``, with a store and an image cache in its own home:
``pymachine image build`` (mmdebstrap --mode=unshare and a user namespace),
then ``create -d qemu`` on that image, ``docker version`` through
``pymachine env``, ``rm``.  Whatever happens, the user's processes are
killed, its files in /tmp and /var/tmp removed and the user deleted (with
its home and its subordinate id ranges).

The VM reaches nothing but its loopback forwards (``--qemu-restrict-network``);
the build itself fetches Debian's packages from the archive, as a root build does.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import site
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pymachine.engine import images, userns_build

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 2400.0  # about 10 min idle; much more on a loaded 2-core host
PATH = "/usr/local/bin:/usr/bin:/bin"  # a Debian user's: no sbin (the build finds its tools there itself)


@dataclass
class User:
    name: str
    uid: int
    home: Path
    python: str

    @property
    def env(self) -> dict[str, str]:
        """A clean environment: the user's own store and cache, this checkout's pymachine."""
        paths = [str(REPO), *site.getsitepackages()]
        return {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, "PATH": PATH, "LC_ALL": "C.UTF-8",
                "PYTHONPATH": os.pathsep.join(paths), "MACHINE_STORAGE_PATH": str(self.home / "store"),
                "PYMACHINE_CACHE_DIR": str(self.home / "cache"), "SHELL": "/bin/sh"}

    def run(self, *argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
        env = [f"{k}={v}" for k, v in self.env.items()]
        return subprocess.run(["runuser", "-u", self.name, "--", "env", "-i", *env, *argv], cwd=self.home,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def pymachine(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run(self.python, "-m", "pymachine", *args, timeout=timeout)


def _needs() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root to create and remove a throwaway user"
    missing = [t for t in ("useradd", "userdel", "runuser", *userns_build.USER_TOOLS) if shutil.which(t) is None]
    return f"{', '.join(missing)} not installed" if missing else None


def _python_for(name: str) -> str | None:
    """An interpreter the user may run that imports this checkout's pymachine (this one may sit
    under /root: then the system's python3 of the same version)."""
    for candidate in (sys.executable, f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"):
        probe = subprocess.run(["runuser", "-u", name, "--", "env", "-i",
                                f"PYTHONPATH={os.pathsep.join([str(REPO), *site.getsitepackages()])}", candidate,
                                "-c", "import pymachine.machine.cli.main"],
                               cwd="/", capture_output=True, timeout=60, check=False)
        if probe.returncode == 0:
            return candidate
    return None


def _kill_processes_of(uid: int) -> None:
    """Kill every process of the throwaway user (the ones this test started), by pid; bounded."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _owner(int(p)) == uid]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


def _owner(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _subid_lines(name: str) -> list[str]:
    return [line for f in ("/etc/subuid", "/etc/subgid") for line in Path(f).read_text().splitlines()
            if line.split(":")[0] == name]


@contextlib.contextmanager
def throwaway_user(*, subids: bool) -> Iterator[User]:
    reason = _needs()
    if reason:
        pytest.skip(reason)
    name = f"pmub{uuid.uuid4().hex[:8]}"
    extra = [] if subids else ["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"]
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", *extra, name], check=True, capture_output=True, timeout=60)
    entry = pwd.getpwnam(name)
    try:
        if subids and not _subid_lines(name):  # a useradd configured not to hand them out
            subprocess.run(["usermod", "--add-subuids", "1300000-1365535", "--add-subgids", "1300000-1365535", name],
                           check=True, capture_output=True, timeout=60)
        python = _python_for(name)
        if python is None:
            pytest.skip(f"no Python interpreter {name} may run imports this checkout's pymachine")
        yield User(name, entry.pw_uid, Path(entry.pw_dir), python)
    finally:
        _kill_processes_of(entry.pw_uid)
        ranges = [line.split(":") for line in _subid_lines(name)]
        for base in ("/tmp", "/var/tmp"):  # anything the user, or its namespace's root, left there
            for child in Path(base).iterdir():
                with contextlib.suppress(OSError):
                    owner = child.lstat().st_uid
                    if owner == entry.pw_uid or any(int(s) <= owner < int(s) + int(n) for _, s, n in ranges):
                        subprocess.run(["rm", "-rf", "--one-file-system", str(child)], timeout=300, check=False)
        # The home may hold files of the subordinate ids (a build killed midway): root removes them too.
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True, timeout=120, check=False)
        if Path(entry.pw_dir).exists():
            subprocess.run(["rm", "-rf", "--one-file-system", entry.pw_dir], timeout=300, check=False)
        if _subid_lines(name):
            subprocess.run(["usermod", "--del-subuids", "0-4294967294", "--del-subgids", "0-4294967294", name],
                           capture_output=True, timeout=60, check=False)
        assert not Path(entry.pw_dir).exists() and not _subid_lines(name)
        with pytest.raises(KeyError):
            pwd.getpwnam(name)


def test_no_subordinate_ids_is_one_line_and_leaves_nothing() -> None:
    """The user the way Debian makes one with SUB_UID_COUNT=0: `image build` and `create -d qemu`
    refuse in one line naming the usermod fix, exit non-zero and create no cache."""
    with throwaway_user(subids=False) as user:
        assert not _subid_lines(user.name)
        res = user.pymachine("image", "build")
        assert res.returncode != 0
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        hint = f"sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user.name}"
        assert hint in lines[0] and "subordinate" in lines[0], lines[0]
        assert not (user.home / "cache").exists()
        create = user.pymachine("create", "-d", "qemu", "dev")
        assert create.returncode == 3, create.stdout + create.stderr
        assert hint in create.stderr and "or pass --qemu-image" in create.stderr
        assert not (user.home / "cache").exists()
        assert not (user.home / "store" / "machines" / "dev").exists()


def _docker_env(out: str) -> dict[str, str]:
    return dict(re.findall(r'^export (\w+)="([^"]*)"$', out, flags=re.MULTILINE))


@pytest.mark.vm
@pytest.mark.timeout(BUILD_TIMEOUT + 1500)
def test_a_normal_user_builds_and_boots_the_image() -> None:
    if shutil.which("qemu-system-x86_64") is None or images.host_arch() != "amd64":
        pytest.skip("needs an x86_64 host with qemu-system-x86_64")
    with throwaway_user(subids=True) as user:
        # -- build, as the user -----------------------------------------------------------------
        # Both recipes from the files as they are now (recipe_hash reads function sources from disk).
        keys = subprocess.run([sys.executable, "-c", "from pymachine.engine.images import recipe_hash as h; "
                               "print(h('amd64', 'unshare'), h('amd64', 'debootstrap'))"],
                              capture_output=True, text=True, timeout=60, check=True).stdout.split()
        started = time.monotonic()
        built = user.pymachine("image", "build", timeout=BUILD_TIMEOUT)
        seconds = time.monotonic() - started
        print(f"\n[timing] unprivileged image build: {seconds:.0f}s\n{built.stderr[-3000:]}")
        assert built.returncode == 0, built.stderr[-3000:]
        directory = Path(built.stdout.splitlines()[0])
        assert directory.parent == user.home / "cache" / "images"
        assert directory.name == keys[0] != keys[1]  # its own recipe, not root's
        assert not list(directory.parent.glob(".build-*")), "the work dir is gone"
        info = images.ImageInfo(directory, __import__("json").loads((directory / "manifest.json").read_text()))
        assert info.manifest["build_mode"] == userns_build.MODE_USER
        assert "docker.io" in info.manifest["packages"] and info.manifest["kernel_version"]
        for path in (directory, *directory.iterdir()):  # the user's own files, not the namespace's
            assert path.stat().st_uid == user.uid, path
        # The same disk shape as a root build: MBR boot code, ESP (active), ext4 root last.
        table = subprocess.run(["qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=512", "count=1",
                                f"if={info.disk}", f"of={user.home / 'mbr.bin'}"], capture_output=True, timeout=120)
        assert table.returncode == 0, table.stderr
        mbr = (user.home / "mbr.bin").read_bytes()
        assert mbr[:440] == Path(images.SYSLINUX_MBR).read_bytes()[:440]
        assert mbr[510:512] == b"\x55\xaa" and mbr[446] == 0x80 and mbr[446 + 4] == 0xEF and mbr[462 + 4] == 0x83
        again = user.pymachine("image", "build", timeout=120)
        assert again.returncode == 0 and "(cached)" in again.stdout, again.stderr
        # -- boot it, as the user ------------------------------------------------------------------
        try:
            t = time.monotonic()
            # The default home share: Debian 12's C virtiofsd (/usr/lib/qemu/virtiofsd) runs as root
            # only, so a normal user's machine shares the home over 9p, and create still works.
            (user.home / "from-the-host").write_text("shared\n")
            create = user.pymachine("create", "-d", "qemu", "--qemu-restrict-network", "--qemu-memory", "1024",
                                    "dev", timeout=900)
            print(f"[timing] create on the user's image: {time.monotonic() - t:.0f}s")
            assert create.returncode == 0, create.stdout[-2000:] + create.stderr[-2000:]
            assert "Docker is up and running!" in create.stdout
            overlay = user.run("qemu-img", "info", "--output=json", str(user.home / "store/machines/dev/disk.qcow2"),
                               timeout=60)
            if overlay.returncode == 0:
                assert str(info.disk) in overlay.stdout  # backed by the image this user built
            env = user.pymachine("env", "dev")
            assert env.returncode == 0, env.stderr
            exports = _docker_env(env.stdout)
            assert exports["DOCKER_HOST"].startswith("tcp://127.0.0.1:")
            version = user.run("sh", "-c", f'eval "$({user.python} -m pymachine env dev)" && '
                               "docker version --format '{{.Server.APIVersion}}'", timeout=120)
            assert version.returncode == 0, version.stderr
            api = version.stdout.strip()
            assert tuple(int(x) for x in api.split(".")) >= (1, 44), api
            config = json.loads((user.home / "store/machines/dev/config.json").read_text())
            assert config["Driver"].get("ShareTransport", "9p") == "9p", config["Driver"]
            seen = user.pymachine("ssh", "dev", "--", f"cat {user.home}/from-the-host", timeout=120)
            assert seen.stdout.strip() == "shared", seen.stdout + seen.stderr  # the home at its own path
        finally:
            removed = user.pymachine("rm", "-f", "-y", "dev", timeout=180)
        assert removed.returncode == 0, removed.stderr
        assert not (user.home / "store" / "machines" / "dev").exists()
