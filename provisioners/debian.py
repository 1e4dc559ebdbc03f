"""Debian and Ubuntu: apt, Debian's ``docker.io``, systemd or the init script.

Unlike Docker Machine's Debian provisioner, hosts without systemd as PID 1
(chroots, containers, namespaced hosts) are supported: the engine is then
driven through ``/etc/init.d/docker`` and ``/etc/default/docker``.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from pymachine.engine import config as engine_config
from pymachine.machine.firstboot import CA_PATH, DAEMON_CONFIG_PATH, SERVER_CERT_PATH, SERVER_KEY_PATH, FirstBoot
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

#: Facts of pymachine's base image (engine/images.py), which the provisioning pass
#: finds there: systemd, Debian's docker.io, an ext4 root.
BASE_IMAGE_DOCKERD = "/usr/sbin/dockerd"
#: What ``stat -f -c %T /var/lib/docker`` prints on the image's ext4 root.
BASE_IMAGE_ROOT_FS = "ext2/ext3"


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

    @classmethod
    def first_boot(cls, plan: ProvisionPlan) -> FirstBoot:
        """The engine files this provisioner writes for ``plan`` on pymachine's base image,
        for the seed: rendered by the same code the provisioning pass compares with, so
        on the booted machine it finds every file equal and restarts nothing."""
        prov = cls({"ID": "debian"})
        prov.init_system = "systemd"
        prov.dockerd_path = BASE_IMAGE_DOCKERD
        prov.storage_driver = plan.engine.storage_driver or engine_config.default_storage_driver(BASE_IMAGE_ROOT_FS)
        slots = (f"{prov.cert_dir}/ca.pem", f"{prov.cert_dir}/server.pem", f"{prov.cert_dir}/server-key.pem",
                 prov.options_file_path())
        if slots != (CA_PATH, SERVER_CERT_PATH, SERVER_KEY_PATH, DAEMON_CONFIG_PATH):  # the image's fixed layout
            raise AssertionError(f"the first-boot seed has no slot for {slots}")
        proxy = plan.effective_proxy()
        return FirstBoot(
            ca_pem=plan.ca_pem.decode(),
            server_pem=plan.server_pem.decode(),
            server_key_pem=plan.server_key_pem.decode(),
            daemon_config=prov.render_daemon_config(prov.daemon_args(plan), prov.daemon_env(plan)),
            proxy={"http_proxy": proxy.http_proxy, "https_proxy": proxy.https_proxy, "no_proxy": proxy.no_proxy}
            if proxy.is_set else {},
        )

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
