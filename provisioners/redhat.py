"""The Red Hat family: RHEL, CentOS, Rocky, AlmaLinux, Oracle Linux, Fedora.

yum or dnf (whichever the host has), the engine from Docker's docker-ce
repository (Fedora: its own ``moby-engine``), systemd only.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from typing import ClassVar

from pymachine.machine.runner import Runner
from pymachine.provisioners.base import Provisioner, ProvisionPlan, read_text

DOCKER_CE_REPO_PATH = "/etc/yum.repos.d/docker-ce.repo"


def docker_ce_repo(repo_os: str) -> str:
    """A yum repository file for Docker's packages (what ``dnf config-manager
    --add-repo`` would fetch), written directly so no plugin is needed."""
    base = f"https://download.docker.com/linux/{repo_os}"
    return (
        "[docker-ce-stable]\n"
        "name=Docker CE Stable - $basearch\n"
        f"baseurl={base}/$releasever/$basearch/stable\n"
        "enabled=1\n"
        "gpgcheck=1\n"
        f"gpgkey={base}/gpg\n"
    )


def set_main_option(text: str, key: str, value: str) -> str:
    """Set ``key=value`` in the ``[main]`` section of a yum/dnf config."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "[main]"), None)
    if start is None:
        return "\n".join(["[main]", f"{key}={value}", *lines]) + "\n"
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("[")), len(lines)
    )
    for i in range(start + 1, end):
        if lines[i].split("=", 1)[0].strip() == key:
            lines[i] = f"{key}={value}"
            break
    else:
        lines.insert(start + 1, f"{key}={value}")
    return "\n".join(lines) + "\n"


class RedHatProvisioner(Provisioner):
    name = "redhat"
    os_ids = ("rhel",)
    repo_os: ClassVar[str | None] = "rhel"
    engine_packages: ClassVar[tuple[str, ...]] = ("docker-ce", "docker-ce-cli", "containerd.io")

    def packages_install(self, names: Iterable[str]) -> str:
        pkgs = " ".join(shlex.quote(n) for n in names)
        return (
            f"if command -v dnf >/dev/null 2>&1; then dnf -y install {pkgs};"
            f" else yum -y install {pkgs}; fi"
        )

    def packages_upgrade(self) -> str:
        pkgs = " ".join(self.engine_packages)
        return (
            f"if command -v dnf >/dev/null 2>&1; then dnf -y upgrade {pkgs};"
            f" else yum -y update {pkgs}; fi"
        )

    def prepare_engine_repo(self, runner: Runner, plan: ProvisionPlan, env: dict[str, str]) -> None:
        if self.repo_os:
            runner.put(DOCKER_CE_REPO_PATH, docker_ce_repo(self.repo_os).encode(), sudo=True)

    def configure_package_proxy(self, runner: Runner, plan: ProvisionPlan) -> None:
        lines = plan.effective_proxy().yum_conf_lines()
        if not lines:
            return
        has_dnf = runner.run("command -v dnf", check=False).ok
        path = "/etc/dnf/dnf.conf" if has_dnf else "/etc/yum.conf"
        text = read_text(runner, path) or ""
        for line in lines:
            key, _, value = line.partition("=")
            text = set_main_option(text, key, value)
        runner.put(path, text.encode(), mode=0o644, sudo=True)


class CentOSProvisioner(RedHatProvisioner):
    name = "centos"
    os_ids = ("centos",)
    repo_os = "centos"


class RockyProvisioner(CentOSProvisioner):
    name = "rocky"
    os_ids = ("rocky",)


class AlmaLinuxProvisioner(CentOSProvisioner):
    name = "almalinux"
    os_ids = ("almalinux",)


class OracleLinuxProvisioner(CentOSProvisioner):
    name = "ol"
    os_ids = ("ol",)


class FedoraProvisioner(RedHatProvisioner):
    name = "fedora"
    os_ids = ("fedora",)
    repo_os = None
    engine_packages = ("moby-engine",)

    @classmethod
    def matches(cls, info: dict[str, str]) -> bool:
        # Fedora CoreOS is image based and ships the engine: see others.CoreOSProvisioner.
        return super().matches(info) and info.get("VARIANT_ID") != "coreos"
