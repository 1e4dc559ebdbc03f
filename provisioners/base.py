"""The provisioning sequence, shared by every OS family.

A provisioner only ever talks to a host through ``machine.runner.Runner``
(``run``/``put``), so the same code runs over SSH for real and against a
recording runner in unit tests, where the command transcript is the thing
checked.  OS families override small hooks (package commands, proxy file,
init system) rather than the sequence.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from pymachine.engine import config as engine_config
from pymachine.engine.options import INSTALL_SOURCES, EngineOptions
from pymachine.engine.proxy import ProxySettings
from pymachine.machine.errors import CommandError, MachineError
from pymachine.machine.runner import CommandResult, Runner

Log = Callable[[str], None]

_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
# Extra PATH entries so `command -v dockerd` finds /usr/sbin/dockerd (Debian's
# docker.io) even when the login user's PATH lacks the sbin directories.
_FIND_DOCKERD = (
    'PATH="$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"; command -v dockerd'
)
SYSTEMD_PROBE = "test -d /run/systemd/system"


class ProvisionError(MachineError):
    """A provisioning step failed; ``.step`` names it, ``.cause`` is the original error."""

    def __init__(self, step: str, cause: BaseException) -> None:
        detail = str(cause).strip().splitlines()
        super().__init__(
            f"Error provisioning the machine (step {step}): "
            + (detail[0] if detail else type(cause).__name__)
        )
        self.step = step
        self.cause = cause


@dataclass
class ProvisionPlan:
    """Everything a provisioner needs to know; built by the Host flow."""

    hostname: str
    engine: EngineOptions
    driver_name: str
    ca_pem: bytes
    server_pem: bytes
    server_key_pem: bytes
    machine_ip: str = ""
    #: Where a seeded machine's address may lie (comma-separated addresses/CIDRs, known before
    #: it boots): NO_PROXY names these instead of ``machine_ip``, so the engine's drop-in on the
    #: first-boot seed and the one provisioning renders after boot are the same bytes.
    machine_network: str = ""
    engine_port: int = 2376
    # Overrides engine.proxy when given; --engine-env proxies fill the gaps.
    proxy: ProxySettings | None = None
    # Overrides engine.install_source when given.
    install_source: str | None = None
    # For install_source "bundle": uploads and installs the engine.
    install_bundle: Callable[[Runner], None] | None = None
    # Called last; the caller waits for the engine's TLS endpoint here.
    wait_for_engine: Callable[[], None] | None = None
    extra_no_proxy: tuple[str, ...] = field(default=("localhost", "127.0.0.1"))

    def source(self) -> str:
        src = self.install_source or self.engine.install_source
        if src not in INSTALL_SOURCES:
            raise MachineError(f"unknown engine install source {src!r}")
        return src

    def effective_proxy(self) -> ProxySettings:
        merged = ProxySettings.merged(
            self.proxy if self.proxy is not None else self.engine.proxy,
            ProxySettings.from_engine_env(self.engine.env),
        )
        if merged.is_set:
            own = self.machine_network.split(",") if self.machine_network else [self.machine_ip]
            merged = merged.with_no_proxy_hosts(*own, *self.extra_no_proxy)
        return merged


class Provisioner:
    """Base provisioner: a systemd host with no package manager of its own.

    Subclasses set the class attributes and override the package hooks.
    Instance state (``init_system``, ``dockerd_path``, ``storage_driver``) is
    filled in as the steps run.
    """

    name: ClassVar[str] = "generic"
    os_ids: ClassVar[tuple[str, ...]] = ()
    # Init system when /run/systemd/system is absent; None: systemd required.
    non_systemd_init: ClassVar[str | None] = None
    cert_dir: ClassVar[str] = "/etc/docker"
    engine_packages: ClassVar[tuple[str, ...]] = ()
    # A command that exits 0 while another process holds the package lock.
    lock_probe: ClassVar[str | None] = None
    # Exit codes by which the package tool itself reports a held lock.
    lock_exit_codes: ClassVar[frozenset[int]] = frozenset()

    def __init__(
        self,
        info: dict[str, str] | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        lock_retries: int = 12,
        lock_wait: float = 5.0,
        package_timeout: float = 1800.0,
    ) -> None:
        self.info = dict(info or {})
        self.sleep = sleep
        self.lock_retries = lock_retries
        self.lock_wait = lock_wait
        self.package_timeout = package_timeout
        self.init_system = "systemd"
        # Set when a step wrote something the engine reads (certs, daemon config, a new install).
        self.changed = False
        self.dockerd_path: str | None = None
        self.storage_driver: str | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} init={self.init_system}>"

    @classmethod
    def matches(cls, info: dict[str, str]) -> bool:
        return info.get("ID", "") in cls.os_ids

    # -- hooks for OS families --------------------------------------------

    def packages_refresh(self) -> str | None:
        """Command refreshing package metadata, or None."""
        return None

    def packages_install(self, names: Iterable[str]) -> str:
        raise MachineError(f"{self.name}: installing packages is not supported on this OS")

    def packages_upgrade(self) -> str | None:
        """Command upgrading the engine's packages (for ``upgrade``), or None
        when the engine is not package managed on this OS."""
        return None

    def configure_package_proxy(self, runner: Runner, plan: ProvisionPlan) -> None:
        """Make the package manager use the proxy.  Default: environment only."""

    def prepare_engine_repo(self, runner: Runner, plan: ProvisionPlan, env: dict[str, str]) -> None:
        """Add a package repository for the engine, if the OS needs one."""

    def options_file_path(self) -> str:
        return {
            "systemd": engine_config.SYSTEMD_DROPIN_PATH,
            "sysv": engine_config.SYSV_DEFAULT_PATH,
            "openrc": engine_config.OPENRC_CONF_PATH,
        }[self.init_system]

    def render_daemon_config(self, args: list[str], env: dict[str, str]) -> str:
        if self.init_system == "systemd":
            return engine_config.systemd_dropin(args, env)
        if self.init_system == "sysv":
            return engine_config.sysv_default(args, env)
        return engine_config.openrc_conf(args, env)

    # -- steps -------------------------------------------------------------

    def detect_init(self, runner: Runner) -> str:
        """systemd iff ``/run/systemd/system`` exists: hosts without systemd as
        PID 1 often still ship the ``systemctl`` binary."""
        if runner.run(SYSTEMD_PROBE, check=False).ok:
            self.init_system = "systemd"
        elif self.non_systemd_init:
            self.init_system = self.non_systemd_init
        else:
            raise MachineError(f"{self.name}: hosts without systemd are not supported")
        return self.init_system

    def set_hostname(self, runner: Runner, hostname: str) -> None:
        q = _checked_hostname(hostname)
        runner.run(f"hostname {q} && printf '%s\\n' {q} > /etc/hostname", sudo=True)
        self._fix_etc_hosts(runner, hostname)

    def _fix_etc_hosts(self, runner: Runner, hostname: str) -> None:
        # Written in place with `cat >`: /etc/hosts is often a bind mount,
        # which a rename (sed -i, atomic put) cannot replace.
        current = read_text(runner, "/etc/hosts") or ""
        wanted = hosts_with_hostname(current, hostname)
        if wanted != current:
            runner.run("cat > /etc/hosts", sudo=True, stdin=wanted.encode())

    def install_engine(self, runner: Runner, plan: ProvisionPlan, log: Log) -> bool:
        """Install the engine from the plan's source; True if anything was installed.

        Skipped when ``dockerd`` is already there, so re-provisioning a
        machine only rewrites its configuration.
        """
        source = plan.source()
        if source == "preinstalled":
            return False
        log("Installing Docker...")
        if self.which_dockerd(runner):
            return False
        env = plan.effective_proxy().shell_env()
        if source == "packages":
            self.prepare_engine_repo(runner, plan, env)
            self.refresh_packages(runner, env)
            self.run_package_command(runner, self.packages_install(self.engine_packages), env)
        elif source == "script":
            if not runner.run("command -v curl", check=False).ok:
                self.refresh_packages(runner, env)
                self.run_package_command(runner, self.packages_install(["curl"]), env)
            url = shlex.quote(plan.engine.install_url or "https://get.docker.com")
            runner.run(
                f"if ! type docker; then curl -sSL {url} | sh -; fi",
                sudo=True,
                env=env,
                timeout=self.package_timeout,
            )
        else:  # bundle
            if plan.install_bundle is None:
                raise MachineError("engine install source 'bundle' needs an engine bundle")
            plan.install_bundle(runner)
        self.changed = True
        return True

    def refresh_packages(self, runner: Runner, env: dict[str, str]) -> None:
        refresh = self.packages_refresh()
        if refresh:
            self.run_package_command(runner, refresh, env)

    def run_package_command(self, runner: Runner, command: str, env: dict[str, str]) -> CommandResult:
        """Run a package command, waiting (bounded) while another process holds
        the package lock.  The lock is recognised by the tool's exit code or a
        probe of the lock files, never by parsing translated messages."""
        result = runner.run(command, sudo=True, check=False, env=env, timeout=self.package_timeout)
        for _ in range(self.lock_retries):
            if result.ok or not self._lock_held(runner, result):
                break
            self.sleep(self.lock_wait)
            result = runner.run(
                command, sudo=True, check=False, env=env, timeout=self.package_timeout
            )
        if not result.ok:
            raise CommandError(command, result.exit_status, result.stdout, result.stderr)
        return result

    def _lock_held(self, runner: Runner, result: CommandResult) -> bool:
        if result.exit_status in self.lock_exit_codes:
            return True
        if self.lock_probe is None:
            return False
        return runner.run(self.lock_probe, sudo=True, check=False).ok

    def which_dockerd(self, runner: Runner) -> str | None:
        result = runner.run(_FIND_DOCKERD, sudo=True, check=False)
        lines = result.stdout.strip().splitlines()
        path = lines[-1].strip() if lines else ""
        return path if result.ok and path.startswith("/") else None

    def find_dockerd(self, runner: Runner) -> str:
        """Where dockerd really is: Debian's docker.io has /usr/sbin/dockerd,
        docker-ce /usr/bin/dockerd."""
        path = self.which_dockerd(runner)
        if not path:
            raise MachineError("dockerd was not found on the host after installing the engine")
        self.dockerd_path = path
        return path

    def decide_storage_driver(self, runner: Runner, plan: ProvisionPlan) -> str | None:
        if plan.engine.storage_driver:
            self.storage_driver = plan.engine.storage_driver
        else:
            result = runner.run(
                "stat -f -c %T /var/lib/docker 2>/dev/null || stat -f -c %T /var/lib", check=False
            )
            fs = result.stdout.strip() if result.ok else ""
            self.storage_driver = engine_config.default_storage_driver(fs)
        return self.storage_driver

    def put_if_changed(self, runner: Runner, path: str, data: bytes, mode: int) -> bool:
        """Write ``path`` only when its content differs; remember that something changed.

        Re-provisioning an unchanged host then rewrites nothing and restarts
        nothing, which is what makes ``provision`` cheap and idempotent.
        """
        try:
            same = runner.get(path) == data
        except Exception:  # noqa: BLE001 -- missing or unreadable: write it
            same = False
        if same:
            return False
        runner.put(path, data, mode=mode, sudo=True)
        self.changed = True
        return True

    def write_certs(self, runner: Runner, plan: ProvisionPlan, log: Log) -> None:
        log("Copying certs to the remote machine...")
        self.put_if_changed(runner, f"{self.cert_dir}/ca.pem", plan.ca_pem, 0o644)
        self.put_if_changed(runner, f"{self.cert_dir}/server.pem", plan.server_pem, 0o644)
        self.put_if_changed(runner, f"{self.cert_dir}/server-key.pem", plan.server_key_pem, 0o600)

    def daemon_args(self, plan: ProvisionPlan) -> list[str]:
        return engine_config.daemon_args(
            plan.engine,
            port=plan.engine_port,
            dockerd_path=self.dockerd_path or "/usr/bin/dockerd",
            storage_driver=self.storage_driver,
            cert_dir=self.cert_dir,
            driver_name=plan.driver_name,
        )

    def daemon_env(self, plan: ProvisionPlan) -> dict[str, str]:
        return engine_config.daemon_env(plan.engine, plan.effective_proxy().daemon_env())

    def stop_engine(self, runner: Runner) -> None:
        """Stop the engine before its configuration changes.

        On systemd the socket unit is stopped *and disabled* first: any
        ``docker`` CLI call would otherwise socket-activate the engine with
        its old flags between now and the restart.  It is not masked, because
        the packaged docker.service ``Requires=docker.socket`` and a masked
        requirement would stop docker.service from starting at all.
        """
        if self.init_system == "systemd":
            runner.run("systemctl disable --now docker.socket", sudo=True, check=False)
            runner.run("systemctl stop docker.service", sudo=True, check=False)
        elif self.init_system == "sysv":
            runner.run("/etc/init.d/docker stop", sudo=True, check=False)
        else:
            runner.run("rc-service docker stop", sudo=True, check=False)

    def write_daemon_config(self, runner: Runner, plan: ProvisionPlan, log: Log) -> str:
        log("Setting Docker configuration on the remote daemon...")
        env = self.daemon_env(plan)
        content = self.render_daemon_config(self.daemon_args(plan), env)
        path = self.options_file_path()
        try:
            unchanged = runner.get(path) == content.encode()
        except Exception:  # noqa: BLE001 -- missing or unreadable: write it
            unchanged = False
        if unchanged and not self.changed:
            return path
        self.stop_engine(runner)
        # Proxy URLs may carry credentials: keep the file root-only then.
        runner.put(path, content.encode(), mode=0o600 if env else 0o644, sudo=True)
        self.changed = True
        if self.init_system == "systemd":
            runner.run("systemctl daemon-reload", sudo=True)
        return path

    def engine_running(self, runner: Runner) -> bool:
        probe = {
            "systemd": "systemctl is-active --quiet docker.service",
            "sysv": "/etc/init.d/docker status",
        }.get(self.init_system, "rc-service docker status")
        return runner.run(probe, sudo=True, check=False).exit_status == 0

    def write_client_proxy_config(self, runner: Runner, plan: ProvisionPlan, log: Log) -> None:
        """Set ``proxies.default`` in the Docker client config of root and of
        the SSH user, so containers and builds on the host get the proxy."""
        proxy = plan.effective_proxy()
        if not proxy.is_set:
            return
        who = runner.run("id -un; printf '%s\\n' \"$HOME\"", check=False).stdout.splitlines()
        targets = [("root", "/root")]
        if len(who) >= 2 and who[0].strip() not in ("", "root") and who[1].startswith("/"):
            targets.append((who[0].strip(), who[1].strip().rstrip("/")))
        for user, home in targets:
            path = f"{home}/.docker/config.json"
            merged = merge_client_config(read_text(runner, path) or "", proxy)
            if merged is None:
                log(f"Not setting the proxy in {path}: the file is not valid JSON")
                continue
            runner.put(path, merged.encode(), mode=0o600, sudo=True)
            if user != "root":
                q = shlex.quote
                runner.run(f"chown {q(user)}: {q(home + '/.docker')} {q(path)}", sudo=True)

    def enable_engine(self, runner: Runner) -> None:
        """Start the engine at boot.  Asked first: on Debian ``systemctl enable`` also runs
        the SysV compatibility script (update-rc.d, Perl) and reloads systemd, seconds
        under emulation, for an engine the image or package already enabled."""
        if runner.run("systemctl is-enabled --quiet docker.service", sudo=True, check=False).exit_status != 0:
            runner.run("systemctl enable docker.service", sudo=True, check=False)

    def restart_engine(self, runner: Runner) -> None:
        """Start the engine with the new configuration, once, and enable it at boot.
        Without systemd, docker.io's install does not start the engine: we must.
        Nothing changed and the engine is up: leave it (and its containers) alone.
        Nothing changed and it is still starting (a seeded first boot: sshd answers
        before the engine is up): ``systemctl start`` joins the boot's start job and
        returns when it is done, so the engine starts once instead of twice."""
        if not self.changed and self.engine_running(runner):
            return
        if self.init_system == "systemd":
            verb = "start" if not self.changed else "restart"
            runner.run(f"systemctl {verb} docker.service", sudo=True)
            self.enable_engine(runner)
        elif self.init_system == "sysv":
            runner.run("/etc/init.d/docker stop || true", sudo=True, check=False)
            runner.run("/etc/init.d/docker start", sudo=True)
        else:
            runner.run("rc-service docker restart", sudo=True)
            runner.run("rc-update add docker default", sudo=True, check=False)

    def provision(self, runner: Runner, plan: ProvisionPlan, log: Log | None = None) -> None:
        """Run the whole sequence; a failure raises ProvisionError naming the step."""
        say: Log = log or (lambda _msg: None)
        steps: list[tuple[str, Callable[[], object]]] = [
            ("detect_init", lambda: self.detect_init(runner)),
            ("set_hostname", lambda: self.set_hostname(runner, plan.hostname)),
            ("configure_package_proxy", lambda: self.configure_package_proxy(runner, plan)),
            ("install_engine", lambda: self.install_engine(runner, plan, say)),
            ("find_dockerd", lambda: self.find_dockerd(runner)),
            ("decide_storage_driver", lambda: self.decide_storage_driver(runner, plan)),
            ("write_certs", lambda: self.write_certs(runner, plan, say)),
            ("write_daemon_config", lambda: self.write_daemon_config(runner, plan, say)),
            ("write_client_proxy_config", lambda: self.write_client_proxy_config(runner, plan, say)),
            ("restart_engine", lambda: self.restart_engine(runner)),
        ]
        if plan.wait_for_engine is not None:
            steps.append(("wait_for_engine", plan.wait_for_engine))
        for step, action in steps:
            try:
                action()
            except ProvisionError:
                raise
            except Exception as exc:
                raise ProvisionError(step, exc) from exc


# -- pure helpers -------------------------------------------------------------


def _checked_hostname(hostname: str) -> str:
    if not _HOSTNAME.match(hostname or ""):
        raise MachineError(f"invalid host name: {hostname!r}")
    return shlex.quote(hostname)


def read_text(runner: Runner, path: str) -> str | None:
    """A remote text file's content, or None when it cannot be read."""
    result = runner.run(f"cat {shlex.quote(path)}", sudo=True, check=False)
    return result.stdout if result.ok else None


def hosts_with_hostname(text: str, hostname: str) -> str:
    """/etc/hosts with a ``127.0.1.1 <hostname>`` line (Debian's convention
    for the machine's own name), replacing an existing 127.0.1.1 line."""
    lines = text.splitlines()
    entry = f"127.0.1.1 {hostname}"
    found = False
    for i, line in enumerate(lines):
        fields = line.split()
        if fields and fields[0] == "127.0.1.1":
            lines[i] = entry
            found = True
    if not found:
        lines.append(entry)
    return "\n".join(lines) + "\n"


def merge_client_config(text: str, proxy: ProxySettings) -> str | None:
    """Docker client ``config.json`` with ``proxies.default`` set; None if the
    existing file is not a JSON object (it is then left alone)."""
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    proxies = data.get("proxies")
    if not isinstance(proxies, dict):
        proxies = {}
    proxies["default"] = proxy.client_config_proxies()
    data["proxies"] = proxies
    return json.dumps(data, indent="\t") + "\n"
