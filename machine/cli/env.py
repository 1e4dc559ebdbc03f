"""``env`` and ``config``: how the Docker client reaches a machine.

Both check the engine's TLS endpoint with the machine's certificates before
printing anything, as docker-machine did, so a broken setup is reported here
and not as a puzzling error from ``docker`` later.  This module is on the
hottest path: standard library and pymachine's light modules only.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence

from machine.cli.common import ARGV0, Context, UsageError, one_target, parse, parser
from machine.errors import MachineError

ENV_NAMES = ("DOCKER_TLS_VERIFY", "DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_MACHINE_NAME")


def invoked_argv() -> list[str]:
    """argv as the user typed it: ``pymachine`` rather than the venv's full script path."""
    argv = list(sys.argv) or [ARGV0]
    first = argv[0]
    base = os.path.basename(first)
    found = shutil.which(base)
    if found and os.path.realpath(found) == os.path.realpath(first):
        argv[0] = base
    return argv


def check_connection(ctx: Context, name: str, swarm: bool = False):
    """Load the machine, work out DOCKER_HOST and prove the TLS handshake works."""
    from machine import dockerapi
    from machine.host import Machine

    machine = Machine.load(ctx.store, name)
    url = machine.url()
    if not url:
        raise MachineError("Host is not running")
    if swarm:
        url = swarm_url(machine, url)
    tls = machine.tls()
    try:
        dockerapi.tls_handshake(url, tls.ca_cert, tls.client_cert, tls.client_key, timeout=20.0)
    except (OSError, ValueError) as exc:
        host = url.split("://", 1)[-1]
        raise MachineError(
            "Error checking TLS connection: Error checking and/or regenerating the certs: "
            f'There was an error validating certificates for host "{host}": {dockerapi.describe_error(exc)}\n'
            f"You can attempt to regenerate them using '{ARGV0} regenerate-certs [name]'.\n"
            "Be advised that this will trigger a Docker daemon restart which might stop running containers."
        ) from None
    return machine, url


def swarm_url(machine, url: str) -> str:
    from urllib.parse import urlsplit

    opts = machine.host.swarm_options
    if not opts.get("Master"):
        raise MachineError(
            f'"{machine.name}" is not a swarm master. The --swarm flag is intended for use with swarm masters'
        )
    port = urlsplit(opts.get("Host") or "tcp://0.0.0.0:3376").port or 3376
    return f"tcp://{urlsplit(url).hostname}:{port}"


def cmd_env(ctx: Context, args: list[str]) -> int:
    from machine import shells

    p = parser("env", "Display the commands to set up the environment for the Docker client", "[arg...]")
    p.add_argument("--swarm", action="store_true", help="Display the Swarm config instead of the Docker daemon")
    p.add_argument("--shell", default="", help="Force environment to be configured for a specified shell: [fish, cmd, powershell, tcsh, emacs, nu], default is auto-detect")
    p.add_argument("--unset", "-u", action="store_true", help="Unset variables instead of setting them")
    p.add_argument("--no-proxy", action="store_true", help="Add machine IP to NO_PROXY environment variable")
    p.add_argument("names", nargs="*")
    ns = parse(p, args)
    names = ns.names + ns.rest

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
    variables = [
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_HOST", url),
        ("DOCKER_CERT_PATH", str(machine.dir)),
        ("DOCKER_MACHINE_NAME", machine.name),
    ]
    if ns.no_proxy:
        from urllib.parse import urlsplit

        ip = urlsplit(url).hostname or machine.driver.ip()
        variables.append(shells.no_proxy_update(ctx.environ, ip))
    sys.stdout.write(shells.env_output(shell, variables, argv))
    return 0


def go_quote(text: str) -> str:
    """Go's %q for the plain paths config prints (backslash and double quote escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_lines(cert_dir: str, url: str) -> list[str]:
    return [
        "--tlsverify",
        f"--tlscacert={go_quote(os.path.join(cert_dir, 'ca.pem'))}",
        f"--tlscert={go_quote(os.path.join(cert_dir, 'cert.pem'))}",
        f"--tlskey={go_quote(os.path.join(cert_dir, 'key.pem'))}",
        f"-H={url}",
    ]


def cmd_config(ctx: Context, args: Sequence[str]) -> int:
    p = parser("config", "Print the connection config for machine", "[arg...]")
    p.add_argument("--swarm", action="store_true", help="Display the Swarm config instead of the Docker daemon")
    p.add_argument("names", nargs="*")
    ns = parse(p, args)
    name = one_target(ctx, ns.names + ns.rest)
    machine, url = check_connection(ctx, name, swarm=ns.swarm)
    print("\n".join(config_lines(str(machine.dir), url)))
    return 0
