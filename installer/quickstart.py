"""The Docker Quickstart Terminal (Toolbox's start.sh), in Python, for every platform.

Idempotent: create the machine if missing, start it if stopped, renew its
certificates if its IP changed (``env``'s check does that), print the
environment for the user's shell and a banner, then hand over a shell (or
run a command) with that environment.  Progress from create/start goes to
stderr so ``eval "$(pymachine quickstart --no-shell)"`` works.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pymachine.machine.errors import MachineError

DRIVER_ENV = "PYMACHINE_QUICKSTART_DRIVER"
PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy")


def default_driver(environ: Mapping[str, str], platform: str = sys.platform) -> str:
    """VirtualBox on Windows/macOS (as Toolbox), qemu on Linux; $PYMACHINE_QUICKSTART_DRIVER wins."""
    if environ.get(DRIVER_ENV):
        return environ[DRIVER_ENV]
    return "virtualbox" if platform in ("win32", "cygwin", "darwin") else "qemu"


@dataclass
class Options:
    name: str = "default"
    driver: str = "qemu"
    create_args: list[str] = field(default_factory=list)
    shell: str = ""
    no_shell: bool = False
    command: list[str] = field(default_factory=list)


def create_argv(opts: Options, environ: Mapping[str, str]) -> list[str]:
    """The ``create`` arguments: driver, the user's proxy (when set), extra flags, name."""
    argv = ["-d", opts.driver]
    if any(environ.get(v) for v in PROXY_VARS):
        argv.append("--proxy-from-env")
    return [*argv, *opts.create_args, opts.name]


def child_environment(environ: Mapping[str, str], variables: Sequence[tuple[str, str]]) -> dict[str, str]:
    env = dict(environ)
    for key in ("ALL_PROXY", "all_proxy"):  # Toolbox kept only SOCKS values: docker cannot use others
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


def ensure_running(ctx, opts: Options, dispatch: Callable[..., int]) -> None:
    """Create ``opts.name`` if missing, start it if not running; output goes to stderr."""
    from pymachine.machine.host import Machine

    with contextlib.redirect_stdout(sys.stderr):
        if not ctx.store.exists(opts.name):
            ctx.err(f'Creating machine "{opts.name}" with the {opts.driver} driver...')
            dispatch(ctx, "create", create_argv(opts, ctx.environ))
        state = Machine.load(ctx.store, opts.name).state()
        if getattr(state, "value", str(state)) != "Running":
            ctx.err(f'Starting machine "{opts.name}"...')
            dispatch(ctx, "start", [opts.name])


def environment(ctx, name: str) -> tuple[list[tuple[str, str]], str]:
    """The DOCKER_* variables (+ NO_PROXY) and the machine's IP, after the TLS check."""
    from urllib.parse import urlsplit

    from pymachine.machine import shells
    from pymachine.machine.cli.env import check_connection

    machine, url = check_connection(ctx, name)  # renews certs when the IP changed
    ip = urlsplit(url).hostname or machine.driver.ip()
    variables = shells.docker_variables(
        url, str(machine.dir), machine.name, no_proxy=shells.no_proxy_update(ctx.environ, ip)
    )
    return variables, ip


def register_bundled_compose(environ: Mapping[str, str], warn: Callable[[str], None]) -> None:
    """Make ``docker compose`` find the installer's Compose plugin, for this user (the
    installer registered it for the user who ran it); never fatal."""
    from pymachine.installer import docker_config

    plugins = docker_config.bundled_plugin_dir()
    if plugins is None:
        return
    try:
        from pymachine.machine.docker_context import docker_config_dir

        docker_config.add_plugin_dir(plugins, docker_config_dir(environ))
    except (MachineError, OSError) as exc:
        warn(f"docker compose may not find the bundled plugin: {exc}")


def run(ctx, opts: Options, dispatch: Callable[..., int]) -> int:
    from pymachine.machine import shells
    from pymachine.machine.cli.env import invoked_argv

    register_bundled_compose(ctx.environ, ctx.err)
    ensure_running(ctx, opts, dispatch)
    variables, ip = environment(ctx, opts.name)
    try:
        shell_name, _note = shells.detect_shell(ctx.environ)
    except shells.UnknownShell:
        shell_name = "cmd" if os.name == "nt" else "bash"
    text = shells.env_output(shell_name, variables, [*invoked_argv()[:1], "env", opts.name])
    sys.stdout.write(text)
    sys.stdout.write(banner(opts.name, ip))
    sys.stdout.flush()
    if opts.no_shell:
        return 0
    env = child_environment(ctx.environ, variables)
    argv = opts.command or shell_argv(opts.shell or user_shell(ctx.environ))
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        raise MachineError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    return 0  # pragma: no cover -- exec does not return
