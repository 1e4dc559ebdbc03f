"""A cached Debian 12 root directory that every namespaced test host overlays.

Building it takes about a minute (debootstrap against Debian's archive), so
it is cached under a directory keyed by a hash of the recipe: the package
list, the customisation code and the preload source.  Change any of them and
the next run rebuilds; delete the cache and the next run rebuilds.  Builds go
to a temp dir and are renamed into place under a lock, so concurrent test
processes never see half a root.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .netns import remove_tree

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "openssh-server",
    "iproute2",
    "ca-certificates",
    "sudo",
    "procps",
    "curl",
    "iptables",
    "kmod",
    "gnupg",
)
PRELOAD_SOURCE = Path(__file__).parent / "preload" / "rlimit_clamp.c"
PRELOAD_IN_ROOT = "usr/local/lib/pmt/librlimit_clamp.so"
READY_MARKER = ".pmt-rootfs-ready"
BUILD_LOCK_TIMEOUT = 900.0

_PLAIN_BASHRC = """\
# pymachine test host: a deliberately plain shell (fast SSH commands).
PS1='\\u@\\h:\\w\\$ '
"""
_SSHD_DROPIN = """\
# pymachine test host
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
PrintMotd no
"""
_RESOLV_CONF = """\
# pymachine test host: no DNS server is reachable; fetch through the HTTP proxy.
nameserver 127.0.0.1
options timeout:1 attempts:1
"""


def log(message: str) -> None:
    print(f"[pmt-rootfs] {message}", file=sys.stderr, flush=True)


def default_cache_dir() -> Path:
    return Path(os.environ.get("PYMACHINE_TEST_CACHE", "/var/tmp/pymachine-test-cache"))


def recipe_key() -> str:
    """Hash of everything that decides the root's content (not of this whole file)."""
    digest = hashlib.sha256()
    for part in (
        SUITE,
        MIRROR,
        ",".join(PACKAGES),
        inspect.getsource(_debootstrap_command),
        inspect.getsource(_customise),
        _PLAIN_BASHRC,
        _SSHD_DROPIN,
        _RESOLV_CONF,
        PRELOAD_IN_ROOT,
    ):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(PRELOAD_SOURCE.read_bytes())
    return digest.hexdigest()[:16]


def is_ready(root: Path, key: str) -> bool:
    marker = root / READY_MARKER
    return (
        marker.is_file()
        and marker.read_text().strip() == key
        and (root / "usr/sbin/sshd").is_file()
        and (root / PRELOAD_IN_ROOT).is_file()
    )


def build_rootfs(cache_dir: Path | None = None) -> Path:
    """Return the cached root directory for the current recipe, building it if needed."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = recipe_key()
    final = cache_dir / f"rootfs-{key}"
    if is_ready(final, key):
        return final
    with _locked(cache_dir / f"rootfs-{key}.lock"):
        if is_ready(final, key):  # another process built it while we waited
            return final
        _discard_leftovers(cache_dir, key)
        tmp = Path(tempfile.mkdtemp(prefix=f"rootfs-{key}.tmp-", dir=cache_dir))
        try:
            started = time.monotonic()
            log(f"building {final} (debootstrap {SUITE}, about a minute)")
            _debootstrap(tmp, cache_dir / f"rootfs-{key}.log")
            log("customising")
            _customise(tmp, _compile_preload(tmp))
            (tmp / READY_MARKER).write_text(key + "\n")
            os.chmod(tmp, 0o755)  # mkdtemp made it 0700; it becomes the guests' /
            os.rename(tmp, final)
            log(f"built in {time.monotonic() - started:.1f} s")
        except BaseException:
            remove_tree(tmp)
            raise
    return final


class _locked:
    """flock a file, waiting at most BUILD_LOCK_TIMEOUT (a concurrent build takes ~1 min)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.fh = open(self.path, "a")
        deadline = time.monotonic() + BUILD_LOCK_TIMEOUT
        announced = False
        while True:
            try:
                fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if not announced:
                    log("another process is building the root; waiting for it")
                    announced = True
                if time.monotonic() > deadline:
                    self.fh.close()
                    raise TimeoutError(f"rootfs build lock {self.path} held too long") from None
                time.sleep(0.5)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def _discard_leftovers(cache_dir: Path, key: str) -> None:
    """Remove crashed builds and a broken final dir of this key (we hold its lock)."""
    for leftover in cache_dir.glob(f"rootfs-{key}.tmp-*"):
        log(f"removing leftover build {leftover}")
        remove_tree(leftover)
    final = cache_dir / f"rootfs-{key}"
    if os.path.lexists(final):
        log(f"removing incomplete {final}")
        remove_tree(final)


def _debootstrap_command(target: Path) -> list[str]:
    # A private mount namespace: debootstrap mounts /proc and /sys inside the
    # target; if it dies those mounts die with the namespace instead of
    # lingering on the machine.
    return [
        "unshare", "--mount", "--propagation", "private", "--",
        "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
        SUITE, str(target), MIRROR,
    ]  # fmt: skip


def _debootstrap(target: Path, log_path: Path) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", "DEBIAN_FRONTEND": "noninteractive"}
    seen: set[str] = set()
    tail: list[str] = []
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            _debootstrap_command(target), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=env,
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            log_file.write(line)
            tail = [*tail, line.rstrip()][-20:]
            words = line.split()
            # One progress line per kind of step (Retrieving, Extracting, ...).
            if len(words) > 1 and words[0] in ("I:", "W:", "E:") and words[1] not in seen:
                seen.add(words[1])
                log(line.rstrip())
        rc = proc.wait(timeout=60)
    if rc != 0:
        raise RuntimeError(
            f"debootstrap failed ({rc}); log {log_path}; last lines:\n" + "\n".join(tail)
        )


def _compile_preload(root: Path) -> Path:
    """Compile the rlimit shim with this machine's gcc (same Debian 12 glibc as the root)."""
    out = Path(tempfile.mkdtemp(prefix="pmt-preload-")) / "librlimit_clamp.so"
    try:
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-o", str(out), str(PRELOAD_SOURCE),
             "-ldl"],
            check=True, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"compiling {PRELOAD_SOURCE} failed: {exc.stderr.strip()}") from exc
    dest = root / PRELOAD_IN_ROOT
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out, dest)
    os.chmod(dest, 0o644)
    shutil.rmtree(out.parent)
    return dest


def _write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    os.chmod(path, mode)


def _customise(root: Path, preload: Path) -> None:
    """Turn a debootstrap tree into a test-host root.

    Deliberately NOT done: an apt proxy (the provisioner under test must set
    one) and root's authorized_keys content (each host gets its own key).
    """
    _write(root, "etc/ld.so.preload", "/" + str(preload.relative_to(root)) + "\n")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    _write(root, "root/.ssh/authorized_keys", "", 0o600)
    _write(root, "root/.bashrc", _PLAIN_BASHRC)
    _write(root, "etc/hostname", "pmt-host\n")
    _write(root, "etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tpmt-host\n")
    _write(root, "etc/resolv.conf", _RESOLV_CONF)
    _write(root, "etc/ssh/sshd_config.d/pmt-test.conf", _SSHD_DROPIN)
    for proxy_conf in (root / "etc/apt/apt.conf.d").glob("*proxy*"):
        proxy_conf.unlink()
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    subprocess.run(
        ["chroot", str(root), "/usr/bin/ssh-keygen", "-A"],
        check=True, capture_output=True, timeout=120,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip
    (root / "var/lib/docker").mkdir(parents=True, exist_ok=True)
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
