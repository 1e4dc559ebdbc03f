"""Debian and Ubuntu: apt, Debian's ``docker.io``, systemd or the init script.

Unlike Docker Machine's Debian provisioner, hosts without systemd as PID 1
(chroots, containers, namespaced hosts) are supported: the engine is then
driven through ``/etc/init.d/docker`` and ``/etc/default/docker``.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from pymachine.machine.runner import Runner
from pymachine.provisioners.base import Provisioner, ProvisionPlan

APT_PROXY_PATH = "/etc/apt/apt.conf.d/01pymachine-proxy"
_APT = (
    "DEBIAN_FRONTEND=noninteractive apt-get -q"
    " -o DPkg::Lock::Timeout=30"
    " -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
)
APT_LOCK_FILES = (
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/lock",
    "/var/lib/apt/lists/lock",
    "/var/cache/apt/archives/lock",
)


def apt_lock_probe(paths: Iterable[str] = APT_LOCK_FILES) -> str:
    """A command exiting 0 while another process holds an apt/dpkg lock: by
    ``fuser`` when installed, else by the lock files' inodes in /proc/locks
    (dpkg takes fcntl locks, which show there)."""
    files = " ".join(shlex.quote(p) for p in paths)
    return (
        f'for f in {files}; do [ -e "$f" ] || continue;'
        ' if command -v fuser >/dev/null 2>&1; then fuser -s "$f" && exit 0; fi;'
        ' i=$(stat -c %i "$f") && grep -q ":$i " /proc/locks && exit 0; done; exit 1'
    )


APT_LOCK_PROBE = apt_lock_probe()


class DebianProvisioner(Provisioner):
    name = "debian"
    os_ids = ("debian",)
    non_systemd_init = "sysv"
    engine_packages = ("docker.io", "ca-certificates")
    lock_probe = APT_LOCK_PROBE

    def packages_refresh(self) -> str:
        return f"{_APT} update"

    def packages_install(self, names: Iterable[str]) -> str:
        pkgs = " ".join(shlex.quote(n) for n in names)
        return f"{_APT} install -y --no-install-recommends {pkgs}"

    def packages_upgrade(self) -> str:
        # apt refuses a name it does not know at all (containerd.io without Docker's
        # repo), so ask dpkg which of the engine packages this host really has:
        # docker.io from Debian, or docker-ce from the install script.
        pkgs = "docker.io docker-ce docker-ce-cli containerd.io containerd runc"
        installed = (
            f"dpkg-query -W -f='${{Status}} ${{Package}}\\n' {pkgs} 2>/dev/null"
            " | awk '/ installed /{print $4}'"
        )
        return f'{_APT} update && {_APT} install -y --only-upgrade $({installed})'

    def configure_package_proxy(self, runner: Runner, plan: ProvisionPlan) -> None:
        """apt runs under sudo, which drops proxy variables: give it a file.
        Without a proxy the file is removed, so a changed setting takes effect."""
        proxy = plan.effective_proxy()
        if proxy.is_set:
            runner.put(APT_PROXY_PATH, proxy.apt_conf().encode(), mode=0o644, sudo=True)
        else:
            runner.run(f"rm -f {APT_PROXY_PATH}", sudo=True)


class UbuntuProvisioner(DebianProvisioner):
    name = "ubuntu(systemd)"
    os_ids = ("ubuntu",)
