"""The Docker Quickstart Terminal (Toolbox's start.sh) as one library call, for every platform.

Idempotent: create the machine if missing (through ``creation.create_machine``,
with the user's proxy when one is set), start it if stopped, renew its
certificates if its IP changed (``connection.check_connection`` does that), and
return the environment the Docker client needs.  ``pymachine quickstart``
prints that environment and a banner, then hands over a shell (or runs a
command) with it; a Python caller gets the same machine and variables.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pymachine.machine.errors import MachineError

if TYPE_CHECKING:  # pragma: no cover
    from pymachine.machine.creation import CreateRequest
    from pymachine.machine.store import Store

Log = Callable[[str], None]
DRIVER_ENV = "PYMACHINE_QUICKSTART_DRIVER"
PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy")


def default_driver(environ: Mapping[str, str], platform: str = sys.platform) -> str:
    """VirtualBox on Windows/macOS (as Toolbox), qemu on Linux; $PYMACHINE_QUICKSTART_DRIVER wins."""
    if environ.get(DRIVER_ENV):
        return environ[DRIVER_ENV]
    return "virtualbox" if platform in ("win32", "cygwin", "darwin") else "qemu"


@dataclass
class Session:
    """What the Docker client needs for the quickstart machine."""

    name: str
    ip: str
    url: str
    variables: list[tuple[str, str]] = field(default_factory=list)  # DOCKER_* (+ NO_PROXY), in order


def quickstart(store: Store, request: CreateRequest, log: Log, *,
               environ: Mapping[str, str] | None = None) -> Session:
    """Make sure machine ``request.name`` exists and runs, then check it and return its environment.

    ``request`` is used only when the machine does not exist yet; the user's proxy
    (``HTTP_PROXY``... in ``environ``) is then passed on as ``--proxy-from-env`` does.
    """
    env = dict(os.environ if environ is None else environ)
    register_bundled_compose(env, log)
    ensure_running(store, request, log, env)
    return session(store, request.name, env, log)


def ensure_running(store: Store, request: CreateRequest, log: Log, environ: Mapping[str, str]) -> None:
    """Create ``request.name`` if missing, start it if not running."""
    from pymachine.machine.drivers.base import State
    from pymachine.machine.host import Machine

    if not store.exists(request.name):
        from dataclasses import replace

        from pymachine.machine.creation import create_machine

        log(f'Creating machine "{request.name}" with the {request.driver} driver...')
        if any(environ.get(v) for v in PROXY_VARS):
            request = replace(request, proxy_from_env=True)
        create_machine(store, request, log, environ=environ)
    if Machine.load(store, request.name).state() != State.RUNNING:
        from pymachine.machine.store import os_errors_as_messages

        log(f'Starting machine "{request.name}"...')
        with store.lock(request.name), os_errors_as_messages(f"start {request.name}", store.machine_dir(request.name)):
            Machine.load(store, request.name).start(log)  # as ``pymachine start``: under the machine's lock


def session(store: Store, name: str, environ: Mapping[str, str], log: Log) -> Session:
    """The DOCKER_* variables (+ NO_PROXY) and the machine's IP, after the TLS check."""
    from urllib.parse import urlsplit

    from pymachine.machine import shells
    from pymachine.machine.connection import check_connection

    machine, url = check_connection(store, name, log=log)  # renews certs when the IP changed
    ip = urlsplit(url).hostname or machine.driver.ip()
    variables = shells.docker_variables(
        url, str(machine.dir), machine.name, no_proxy=shells.no_proxy_update(dict(environ), ip)
    )
    return Session(name=name, ip=ip, url=url, variables=list(variables))


def register_bundled_compose(environ: Mapping[str, str], warn: Log) -> None:
    """Make ``docker compose`` find the installer's Compose plugin, for this user (the
    installer registered it for the user who ran it); never fatal."""
    from pymachine.machine import cli_plugins

    plugins = cli_plugins.bundled_plugin_dir()
    if plugins is None:
        return
    try:
        from pymachine.machine.docker_context import docker_config_dir

        cli_plugins.add_plugin_dir(plugins, docker_config_dir(environ))
    except (MachineError, OSError) as exc:
        warn(f"docker compose may not find the bundled plugin: {exc}")


def child_environment(environ: Mapping[str, str], variables: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The shell's environment: the user's, the machine's variables, and only SOCKS ``ALL_PROXY``
    values (Toolbox kept only those: docker cannot use others)."""
    env = dict(environ)
    for key in ("ALL_PROXY", "all_proxy"):
        if key in env and not env[key].lower().startswith("socks"):
            del env[key]
    env.update(variables)
    return env


def banner(name: str, ip: str) -> str:
    return (
        f"# docker is configured to use the {name} machine with IP {ip}\n"
        "# For help getting started, check out the docs at https://docs.docker.com\n"
    )


def shell_argv(shell: str) -> list[str]:
    base = os.path.basename(shell).lower()
    if base in ("bash", "zsh", "bash.exe"):
        return [shell, "--login"]
    return [shell]


def user_shell(environ: Mapping[str, str]) -> str:
    if os.name == "nt":
        return environ.get("COMSPEC", "cmd.exe")
    return environ.get("SHELL") or "/bin/sh"
