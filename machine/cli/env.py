"""``env`` and ``config``: how the Docker client reaches a machine.

Both check the engine's TLS endpoint with the machine's certificates before
printing anything, as docker-machine did, so a broken setup is reported here
and not as a puzzling error from ``docker`` later.  This module is on the
hottest path: standard library and pymachine's light modules only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from pymachine.machine import layout
from pymachine.machine.cli.common import ARGV0, Context, UsageError, one_target, parse, parser
from pymachine.machine.errors import MachineError

ENV_NAMES = ("DOCKER_TLS_VERIFY", "DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_MACHINE_NAME")


def invoked_argv() -> list[str]:
    """argv as the user typed it: ``pymachine`` rather than the venv's full script path."""
    argv = list(sys.argv) or [ARGV0]
    first = argv[0]
    base = os.path.basename(first)
    if base == "__main__.py":  # python -m pymachine (Windows' pymachine.cmd runs that)
        argv[0] = ARGV0
        return argv
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(directory, base)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            if os.path.realpath(candidate) == os.path.realpath(first):
                argv[0] = base
            break
    return argv


def check_connection(ctx: Context, name: str, swarm: bool = False):
    """The library's check (machine.connection); a re-provisioning is reported on stderr."""
    from pymachine.machine.connection import check_connection as check

    return check(ctx.store, name, swarm=swarm, log=ctx.err)


class EnvArgs:
    def __init__(self) -> None:
        self.swarm = False
        self.shell = ""
        self.unset = False
        self.no_proxy = False
        self.names: list[str] = []


ENV_FLAGS = {"--swarm": "swarm", "--unset": "unset", "-u": "unset", "--no-proxy": "no_proxy"}


def parse_env_args(args: Sequence[str]) -> EnvArgs:
    """env's four flags, parsed by hand: argparse costs ~12 ms on the hottest command."""
    ns = EnvArgs()
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if arg in ENV_FLAGS:
            setattr(ns, ENV_FLAGS[arg], True)
        elif name in ("--shell", "-shell"):
            if not eq:
                i += 1
                if i >= len(args):
                    raise UsageError("flag needs an argument: --shell")
                value = args[i]
            ns.shell = value
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"flag provided but not defined: {name}")
        else:
            ns.names.append(arg)
        i += 1
    return ns


def env_help() -> int:
    p = parser("env", "Display the commands to set up the environment for the Docker client", "[arg...]")
    p.add_argument("--swarm", action="store_true", help="Display the Swarm config instead of the Docker daemon")
    p.add_argument("--shell", default="", help="Force environment to be configured for a specified shell: "
                   "[fish, cmd, powershell, pwsh, tcsh, emacs, nu], default is auto-detect")
    p.add_argument("--unset", "-u", action="store_true", help="Unset variables instead of setting them")
    p.add_argument("--no-proxy", action="store_true", help="Add machine IP to NO_PROXY environment variable")
    p.print_help()
    return 0


def cmd_env(ctx: Context, args: list[str]) -> int:
    from pymachine.machine import shells

    if any(a in ("-h", "--help", "-help") for a in args):
        return env_help()
    ns = parse_env_args(args)
    names = ns.names

    shell = ns.shell
    if not shell:
        try:
            shell, note = shells.detect_shell(ctx.environ)
        except shells.UnknownShell:
            print(shells.UNKNOWN_SHELL_HINT)
            raise MachineError("Error: Unknown shell") from None
        if note:
            print(note)

    argv = invoked_argv()
    if ns.unset:
        if names:
            raise UsageError("Error: Expected no machine name when the -u flag is present")
        no_proxy = shells.find_no_proxy(ctx.environ) if ns.no_proxy else None
        sys.stdout.write(shells.env_output(shell, [(n, "") for n in ENV_NAMES], argv, unset=True, no_proxy=no_proxy))
        return 0

    name = one_target(ctx, names)
    machine, url = check_connection(ctx, name, swarm=ns.swarm)
    no_proxy = None
    if ns.no_proxy:
        from urllib.parse import urlsplit

        ip = urlsplit(url).hostname or machine.driver.ip()
        no_proxy = shells.no_proxy_update(ctx.environ, ip)
    # docker-machine adds COMPOSE_CONVERT_WINDOWS_PATHS when the client runs on Windows.
    variables = shells.docker_variables(url, str(machine.tls().cert_dir), machine.name,
                                        windows_client=sys.platform == "win32", no_proxy=no_proxy)
    sys.stdout.write(shells.env_output(shell, variables, argv))
    return 0


def go_quote(text: str) -> str:
    """Go's %q for the plain paths config prints (backslash and double quote escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_lines(cert_dir: str, url: str) -> list[str]:
    return [
        "--tlsverify",
        f"--tlscacert={go_quote(os.path.join(cert_dir, layout.CA_CERT))}",
        f"--tlscert={go_quote(os.path.join(cert_dir, layout.CLIENT_CERT))}",
        f"--tlskey={go_quote(os.path.join(cert_dir, layout.CLIENT_KEY))}",
        f"-H={url}",
    ]


def cmd_config(ctx: Context, args: Sequence[str]) -> int:
    p = parser("config", "Print the connection config for machine", "[arg...]")
    p.add_argument("--swarm", action="store_true", help="Display the Swarm config instead of the Docker daemon")
    p.add_argument("names", nargs="*")
    ns = parse(p, args)
    name = one_target(ctx, ns.names + ns.rest)
    machine, url = check_connection(ctx, name, swarm=ns.swarm)
    print("\n".join(config_lines(str(machine.tls().cert_dir), url)))
    return 0
