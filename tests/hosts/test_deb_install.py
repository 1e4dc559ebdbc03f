"""The .deb on Debian 12 and 13: installed with dpkg into a clean root of each, then
``pymachine create -d generic`` run from inside that root against a namespaced test host.

The roots are debootstrap minbase trees holding only what the .deb's Depends
name (read from packaging/deb/control.in, so a new Depends rebuilds them); dpkg
then checks every versioned Depends against the distribution's own packages.
They are cached like the test host root (tests/hosts/rootfs.py): keyed by a hash
of the recipe, built into a temp dir and renamed into place under a lock.  Each
test works on a throwaway copy, so the cache stays clean.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from .netns import remove_tree
from .rootfs import MIRROR, _locked, default_cache_dir, log

pytestmark = pytest.mark.hosts
pytest_plugins = ["tests.hosts.fixtures"]

SUITES = {"12": "bookworm", "13": "trixie"}
# Debian's own paramiko too (2.12 on Debian 12, without PKey.from_path): the vendored one must win
EXTRA_PACKAGES = ("python3-paramiko",)
READY = ".pmt-debroot-ready"
REPO = Path(__file__).resolve().parents[2]
DOCKER = "/usr/local/bin/docker"  # docker CLI 28, a static binary: it runs inside either root
DEBIAN_DOCKER = "/usr/bin/docker"  # this machine's docker.io (Debian 12's CLI, 20.10)


def deb_depends(control: str | None = None) -> list[str]:
    """The package names of the .deb's Depends (alternatives and versions dropped)."""
    text = control if control is not None else (REPO / "packaging" / "deb" / "control.in").read_text()
    match = re.search(r"^Depends:(.*(?:\n .*)*)", text, re.MULTILINE)
    assert match, "control.in has no Depends"
    names = []
    for item in match.group(1).replace("\n", " ").split(","):
        first = item.split("|")[0].strip()
        if first:
            names.append(re.split(r"[\s(]", first, maxsplit=1)[0])
    return names


def _debootstrap_argv(suite: str, target: Path, packages: list[str]) -> list[str]:
    """debootstrap minbase, then apt-get installs the Depends (as a user would; debootstrap's
    own --include cannot configure python3-* packages in its base pass).  A private mount
    namespace: the /proc mount dies with it."""
    script = ('set -e; S=$1 R=$2 M=$3; shift 3; debootstrap --variant=minbase "$S" "$R" "$M"; '
              'mount -t proc proc "$R/proc"; '
              'DEBIAN_FRONTEND=noninteractive chroot "$R" apt-get install -y -q --no-install-recommends "$@"; '
              'umount "$R/proc"; chroot "$R" apt-get clean')
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "debroot",
            suite, str(target), MIRROR, *packages]


def root_key(suite: str) -> str:
    digest = hashlib.sha256()
    for part in (suite, MIRROR, ",".join([*deb_depends(), *EXTRA_PACKAGES]), inspect.getsource(_debootstrap_argv)):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def build_debian_root(suite: str, cache: Path | None = None) -> Path:
    """The cached minbase root of ``suite`` with the .deb's Depends (and EXTRA_PACKAGES) installed."""
    cache = cache or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    key = root_key(suite)
    final = cache / f"debroot-{suite}-{key}"
    if (final / READY).is_file():
        return final
    with _locked(cache / f"debroot-{suite}-{key}.lock"):
        if (final / READY).is_file():
            return final
        for leftover in [*cache.glob(f"debroot-{suite}-{key}.tmp-*"), final]:
            if os.path.lexists(leftover):
                remove_tree(leftover)
        tmp = Path(tempfile.mkdtemp(prefix=f"debroot-{suite}-{key}.tmp-", dir=cache))
        try:
            started = time.monotonic()
            log(f"building {final} (debootstrap {suite})")
            proc = subprocess.run(
                _debootstrap_argv(suite, tmp, [*deb_depends(), *EXTRA_PACKAGES]),
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", "DEBIAN_FRONTEND": "noninteractive"},
            )
            (cache / f"debroot-{suite}-{key}.log").write_text(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                raise RuntimeError(f"debootstrap {suite} failed: {(proc.stdout + proc.stderr)[-1500:]}")
            for deb in (tmp / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            (tmp / READY).write_text(key + "\n")
            os.chmod(tmp, 0o755)
            os.rename(tmp, final)
            log(f"built {final} in {time.monotonic() - started:.1f} s")
        except BaseException:
            remove_tree(tmp)
            raise
    return final


class Chroot:
    """A throwaway overlay over a cached root; each ``run`` mounts it in a private mount
    namespace (with /proc and /dev) and runs a command chrooted into it.  It shares this
    machine's network namespace, so it reaches the test hosts' veths."""

    def __init__(self, lower: Path, work: Path) -> None:
        self.lower, self.dir = lower, work
        for sub in ("upper", "work", "merged"):
            (work / sub).mkdir()
        os.chmod(work / "upper", 0o755)
        (work / "upper" / "root").mkdir(mode=0o700)

    def put(self, rel: str, data: bytes, mode: int = 0o644) -> str:
        path = self.dir / "upper" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, mode)
        return "/" + rel

    def run(self, cmd: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        script = ('set -e; mount -t overlay pm-deb -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4"; '
                  'mount -t proc proc "$4/proc"; mount --rbind /dev "$4/dev"; '
                  'exec chroot "$4" /bin/sh -c "$5"')
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "chroot", str(self.lower),
             str(self.dir / "upper"), str(self.dir / "work"), str(self.dir / "merged"), cmd],
            capture_output=True, text=True, timeout=timeout, check=False,
            env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
                 "LANG": "C.UTF-8", "TERM": "dumb"})


@pytest.fixture(scope="module")
def amd64_deb(tmp_path_factory):
    """The .deb of this checkout for x86_64, from the Linux stand-ins (static Compose plugin, vendored
    wheels of the repo lock re-made from this venv's), served over loopback and pinned."""
    import hashlib
    import http.server
    import json
    import threading

    from pymachine.installer.linux import build_deb
    from pymachine.installer.lock import Lock

    from tests.installer.standins import linux_standins

    tmp = tmp_path_factory.mktemp("deb")
    www = tmp / "www"
    www.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(www), **kw))
    server.RequestHandlerClass.log_message = lambda *a: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        comps = []
        for name, (data, fields) in linux_standins().items():
            (www / name).write_bytes(data)
            comps.append({"url": f"http://127.0.0.1:{server.server_address[1]}/{name}", "size": len(data),
                          "sha256": hashlib.sha256(data).hexdigest(), "unpack": "", "strip": 0, "optional": False,
                          "upstream": {}, **fields})
        (tmp / "lock.json").write_text(json.dumps({"schema": 1, "product": {}, "platforms": {"linux": comps}}))
        components = Lock.load(tmp / "lock.json").components("linux", "x86_64")
        return build_deb(tmp / "out", components, cache=tmp / "cache", epoch=1700000000, arch="x86_64")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("release", sorted(SUITES))
def test_deb_installs_and_creates_a_generic_machine_from_inside_debian(
        release, amd64_deb, make_test_host, ssh_keypair, tmp_path):
    from bundle_cache import real_engine_bundle

    suite = SUITES[release]
    lower = build_debian_root(suite)
    work = Path(tempfile.mkdtemp(prefix=f"pm-deb-{suite}-", dir="/var/tmp"))
    try:
        root = Chroot(lower, work)
        deb = root.put("root/in/pymachine.deb", amd64_deb.read_bytes())
        key = root.put("root/in/id_rsa", ssh_keypair.private_key.read_bytes(), 0o600)
        bundle = real_engine_bundle()
        bundle_in = root.put(f"root/in/{bundle.name}", bundle.read_bytes())
        root.put("usr/local/bin/docker", Path(DOCKER).read_bytes(), 0o755)  # the real (static) docker CLI
        if Path(DEBIAN_DOCKER).is_file():  # and Debian 12's own docker.io CLI (20.10, glibc-linked)
            root.put("usr/local/bin/docker-debian12", Path(DEBIAN_DOCKER).read_bytes(), 0o755)

        # dpkg alone (no apt, no --force-depends): every versioned Depends is met by the release's own packages
        installed = root.run(f"dpkg -i {deb} && dpkg-query -W -f '${{Status}} ${{Version}}' pymachine")
        assert installed.returncode == 0, installed.stdout + installed.stderr
        assert installed.stdout.endswith("install ok installed 0.1.0")
        versions = root.run("cat /etc/debian_version; pymachine --version; "
                            "python3 -c 'import paramiko; print(\"system-paramiko\", paramiko.__version__)'")
        assert versions.returncode == 0, versions.stderr
        debian_version, pm_version, system_paramiko = versions.stdout.splitlines()
        assert debian_version.startswith((release, suite)), debian_version
        assert pm_version.startswith("pymachine version 0.1.0")
        if release == "12":  # the issue: Debian 12's paramiko lacks PKey.from_path; the vendored one is used
            assert system_paramiko.startswith("system-paramiko 2.12"), system_paramiko

        # the seed ISO of the local drivers: the vendored pycdlib (Debian 12's python3-pycdlib is 1.12)
        seed = root.run(
            "python3 -c \"import sys; sys.path[:0] = ['/usr/lib/pymachine/vendor', '/usr/bin/pymachine']; "
            "import pycdlib; from pymachine.machine import seed; "
            "seed.write_seed_iso('/root/seed.iso', hostname='h', user='docker', ssh_pubkey='ssh-ed25519 A k', "
            "proxy=None, instance_id='i'); print(pycdlib.__file__, sorted(seed.read_seed_iso('/root/seed.iso')))\""
        )
        assert seed.returncode == 0, seed.stderr
        assert seed.stdout.startswith("/usr/lib/pymachine/vendor/pycdlib/") and "'user-data'" in seed.stdout, (
            seed.stdout
        )

        # docker compose: the plugin in a directory every docker CLI searches, without any config
        compose = root.run("docker compose version")
        assert compose.returncode == 0, compose.stderr
        assert "Docker Compose version v2.30.3 (pymachine stand-in" in compose.stdout
        assert "/usr/lib/docker/cli-plugins/docker-compose" in compose.stdout
        if Path(DEBIAN_DOCKER).is_file():
            old_cli = root.run("docker-debian12 compose version")
            assert old_cli.returncode == 0 and "pymachine stand-in" in old_cli.stdout, old_cli.stderr

        host = make_test_host(f"deb{release}")
        create = root.run(f"pymachine create -d generic --generic-ip-address {host.ip} --generic-ssh-key {key} "
                          f"--engine-bundle {bundle_in} deb{release}", timeout=600)
        assert create.returncode == 0, create.stdout + create.stderr
        assert "Docker is up and running!" in create.stdout
        ssh = root.run(f"pymachine --native-ssh ssh deb{release} -- cat /etc/hostname")
        assert ssh.returncode == 0 and ssh.stdout.strip() == f"deb{release}", ssh.stdout + ssh.stderr
        env = root.run(
            f'eval "$(pymachine env --shell bash deb{release})" && docker version --format "{{{{.Server.Version}}}}"'
        )
        assert env.returncode == 0 and env.stdout.strip(), env.stdout + env.stderr
        # a second machine reuses the store's CA and client cert (checked against the release's cryptography)
        again = root.run(f"pymachine create -d none --url tcp://{host.ip}:2376 other{release} && pymachine ls -q")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "Creating CA" not in again.stdout and "regenerated" not in again.stdout, again.stdout
        assert again.stdout.split()[-2:] == [f"deb{release}", f"other{release}"]
        removed = root.run(f"pymachine rm -y deb{release} other{release}")
        assert removed.returncode == 0, removed.stderr
    finally:
        remove_tree(work)


if __name__ == "__main__":  # warm the cache: python -m tests.hosts.test_deb_install
    for name in SUITES.values():
        print(build_debian_root(name))
