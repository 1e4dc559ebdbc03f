"""Arch, SUSE, Alpine, Flatcar/CoreOS and boot2docker."""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from pymachine.engine import config as engine_config
from pymachine.machine.errors import MachineError
from pymachine.machine.runner import Runner
from pymachine.provisioners.base import Log, Provisioner, ProvisionPlan, _checked_hostname, read_text

SUSE_PROXY_PATH = "/etc/sysconfig/proxy"


class ArchProvisioner(Provisioner):
    name = "arch"
    os_ids = ("arch",)
    engine_packages = ("docker",)
    # pacman refuses to run (no waiting) while its lock file exists.
    lock_probe = "test -e /var/lib/pacman/db.lck"

    @classmethod
    def matches(cls, info: dict[str, str]) -> bool:
        return info.get("ID") == "arch" or "arch" in info.get("ID_LIKE", "").split()

    def packages_install(self, names: Iterable[str]) -> str:
        # pacman fetches through libcurl, which reads the proxy environment.
        pkgs = " ".join(shlex.quote(n) for n in names)
        return f"pacman -Sy --noconfirm --noprogressbar --needed {pkgs}"

    def packages_upgrade(self) -> str:
        return "pacman -Sy --noconfirm --noprogressbar docker"


def set_sysconfig_vars(text: str, values: dict[str, str]) -> str:
    """Set ``KEY="value"`` lines in a sysconfig file, replacing existing ones."""
    lines = text.splitlines()
    pending = dict(values)
    for i, line in enumerate(lines):
        key = line.split("=", 1)[0].strip()
        if "=" in line and key in pending:
            lines[i] = f'{key}="{pending.pop(key)}"'
    lines += [f'{k}="{v}"' for k, v in pending.items()]
    return "\n".join(lines) + "\n"


class SuseProvisioner(Provisioner):
    name = "SUSE"
    engine_packages = ("docker",)
    # zypper's ZYPPER_EXIT_ZYPP_LOCKED: another zypper/libzypp holds the lock.
    lock_exit_codes = frozenset({7})

    @classmethod
    def matches(cls, info: dict[str, str]) -> bool:
        os_id = info.get("ID", "")
        return "suse" in info.get("ID_LIKE", "") or os_id.startswith("opensuse") or os_id == "sles"

    def packages_install(self, names: Iterable[str]) -> str:
        pkgs = " ".join(shlex.quote(n) for n in names)
        return f"zypper -n in {pkgs}"

    def packages_upgrade(self) -> str:
        return "zypper -n up docker"

    def configure_package_proxy(self, runner: Runner, plan: ProvisionPlan) -> None:
        """libzypp reads its proxy from /etc/sysconfig/proxy, not the environment."""
        proxy = plan.effective_proxy()
        if not proxy.is_set:
            return
        for value in (proxy.http_proxy, proxy.https_proxy, proxy.no_proxy):
            if '"' in value or "\n" in value or "$" in value or "`" in value:
                raise MachineError(f"proxy setting not usable in {SUSE_PROXY_PATH}: {value!r}")
        text = set_sysconfig_vars(
            read_text(runner, SUSE_PROXY_PATH) or "",
            {
                "PROXY_ENABLED": "yes",
                "HTTP_PROXY": proxy.http_proxy,
                "HTTPS_PROXY": proxy.https_proxy,
                "NO_PROXY": proxy.no_proxy,
            },
        )
        runner.put(SUSE_PROXY_PATH, text.encode(), mode=0o644, sudo=True)

    def prepare_engine_repo(self, runner: Runner, plan: ProvisionPlan, env: dict[str, str]) -> None:
        # SUSE Linux Enterprise ships the engine in its Containers module.
        if self.info.get("ID") == "sles":
            version = shlex.quote(self.info.get("VERSION_ID", ""))
            runner.run(
                f'SUSEConnect -p sle-module-containers/{version}/"$(uname -m)"',
                sudo=True,
                env=env,
            )


class AlpineProvisioner(Provisioner):
    name = "alpine"
    os_ids = ("alpine",)
    non_systemd_init = "openrc"
    engine_packages = ("docker",)

    def packages_install(self, names: Iterable[str]) -> str:
        # apk fetches through the proxy environment passed with the command.
        pkgs = " ".join(shlex.quote(n) for n in names)
        return f"apk add --no-cache {pkgs}"

    def packages_upgrade(self) -> str:
        return "apk add --no-cache --upgrade docker"


class CoreOSProvisioner(Provisioner):
    """Flatcar, CoreOS and Fedora CoreOS: image based, the engine comes with
    the OS, so every install source but "bundle" means "already there"."""

    name = "coreOS"
    os_ids = ("coreos", "flatcar")

    @classmethod
    def matches(cls, info: dict[str, str]) -> bool:
        return (
            super().matches(info)
            or "coreos" in info.get("ID_LIKE", "").split()
            or (info.get("ID") == "fedora" and info.get("VARIANT_ID") == "coreos")
        )

    def set_hostname(self, runner: Runner, hostname: str) -> None:
        runner.run(f"hostnamectl set-hostname {_checked_hostname(hostname)}", sudo=True)

    def install_engine(self, runner: Runner, plan: ProvisionPlan, log: Log) -> bool:
        if plan.source() == "bundle" and not self.which_dockerd(runner):
            return super().install_engine(runner, plan, log)
        return False

    def render_daemon_config(self, args: list[str], env: dict[str, str]) -> str:
        return engine_config.coreos_dropin(args, env)


class Boot2DockerProvisioner(Provisioner):
    """Legacy boot2docker ISOs: the engine is part of the image and its init
    script reads ``/var/lib/boot2docker/profile``."""

    name = "boot2docker"
    os_ids = ("boot2docker",)
    non_systemd_init = "sysv"
    cert_dir = "/var/lib/boot2docker"

    def detect_init(self, runner: Runner) -> str:
        self.init_system = "sysv"
        return self.init_system

    def set_hostname(self, runner: Runner, hostname: str) -> None:
        q = _checked_hostname(hostname)
        runner.run(
            f"/usr/bin/sethostname {q} && printf '%s\\n' {q} > /var/lib/boot2docker/etc/hostname",
            sudo=True,
        )

    def install_engine(self, runner: Runner, plan: ProvisionPlan, log: Log) -> bool:
        return False

    def decide_storage_driver(self, runner: Runner, plan: ProvisionPlan) -> str | None:
        self.storage_driver = plan.engine.storage_driver or "overlay2"
        return self.storage_driver

    def options_file_path(self) -> str:
        return engine_config.B2D_PROFILE_PATH

    def write_daemon_config(self, runner: Runner, plan: ProvisionPlan, log: Log) -> str:
        log("Setting Docker configuration on the remote daemon...")
        content = engine_config.b2d_profile(
            plan.engine,
            port=plan.engine_port,
            storage_driver=self.storage_driver,
            driver_name=plan.driver_name,
            env=self.daemon_env(plan),
            cert_dir=self.cert_dir,
        )
        self.stop_engine(runner)
        runner.put(self.options_file_path(), content.encode(), mode=0o644, sudo=True)
        return self.options_file_path()

    def restart_engine(self, runner: Runner) -> None:
        runner.run("/etc/init.d/docker restart", sudo=True)
