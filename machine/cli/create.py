"""``pymachine create``: docker-machine's two-phase parse, then the library's create_machine.

Phase one finds the driver (``-d``/``--driver``, else ``$MACHINE_DRIVER``);
phase two parses the shared flags together with that driver's own flags,
which each driver declares as data.  Everything after parsing (validation, swarm
checks, certificates, rollback, provisioning) is ``machine.creation``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pymachine.machine import hostoptions
from pymachine.machine.cli.argparsing import Parser
from pymachine.machine.cli.common import ARGV0, Context, UsageError, parser
from pymachine.machine.creation import CreateRequest
from pymachine.machine.drivers.base import Flag
from pymachine.machine.errors import MachineError


def default_driver(environ: dict[str, str]) -> str:
    if environ.get("MACHINE_DRIVER"):
        return environ["MACHINE_DRIVER"]
    return "qemu" if sys.platform.startswith("linux") else "virtualbox"


def find_driver(args: Sequence[str], environ: dict[str, str]) -> str:
    """docker-machine's flagHackLookup: scan argv for -d/--driver before real parsing."""
    for i, arg in enumerate(args):
        if arg == "--":
            break
        for flag in ("-d", "--driver", "-driver"):
            if arg == flag and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return default_driver(environ)


def add_shared_flags(p: Parser, environ: dict[str, str]) -> None:
    p.add_argument(
        "--driver", "-d", default=default_driver(environ), help="Driver to create machine with. [$MACHINE_DRIVER]"
    )
    p.add_argument(
        "--engine-install-url",
        default=environ.get("MACHINE_DOCKER_INSTALL_URL", hostoptions.DEFAULT_INSTALL_URL),
        help="Custom URL to use for engine installation [$MACHINE_DOCKER_INSTALL_URL]",
    )
    p.add_argument(
        "--engine-opt",
        action="append",
        default=[],
        help="Specify arbitrary flags to include with the created engine in the form flag=value",
    )
    p.add_argument(
        "--engine-insecure-registry",
        action="append",
        default=[],
        help="Specify insecure registries to allow with the created engine",
    )
    mirror_env = [m for m in environ.get("ENGINE_REGISTRY_MIRROR", "").split(",") if m]
    p.add_argument(
        "--engine-registry-mirror",
        action="append",
        default=None,
        help="Specify registry mirrors to use [$ENGINE_REGISTRY_MIRROR]",
    )
    p.set_defaults(_mirror_env=mirror_env)
    p.add_argument("--engine-label", action="append", default=[], help="Specify labels for the created engine")
    p.add_argument("--engine-storage-driver", default="", help="Specify a storage driver to use with the engine")
    p.add_argument(
        "--engine-env", action="append", default=[], help="Specify environment variables to set in the engine"
    )
    p.add_argument("--swarm", action="store_true", help="Configure Machine to join a Swarm cluster")
    p.add_argument(
        "--swarm-image",
        default=environ.get("MACHINE_SWARM_IMAGE", hostoptions.DEFAULT_SWARM_IMAGE),
        help="Specify Docker image to use for Swarm [$MACHINE_SWARM_IMAGE]",
    )
    p.add_argument("--swarm-master", action="store_true", help="Configure Machine to be a Swarm master")
    p.add_argument("--swarm-discovery", default="", help="Discovery service to use with Swarm")
    p.add_argument("--swarm-strategy", default="spread", help="Define a default scheduling strategy for Swarm")
    p.add_argument("--swarm-opt", action="append", default=[], help="Define arbitrary flags for Swarm master")
    p.add_argument("--swarm-join-opt", action="append", default=[], help="Define arbitrary flags for Swarm join")
    p.add_argument(
        "--swarm-host", default=hostoptions.DEFAULT_SWARM_HOST, help="ip/socket to listen on for Swarm master"
    )
    p.add_argument(
        "--swarm-addr", default="", help="addr to advertise for Swarm (default: detect and use the machine IP)"
    )
    p.add_argument("--swarm-experimental", action="store_true", help="Enable Swarm experimental features")
    p.add_argument("--tls-san", action="append", default=[], help="Support extra SANs for TLS certs")
    # pymachine additions: proxy as a first-class setting, and where the engine comes from.
    p.add_argument("--http-proxy", default="", help="HTTP proxy for package installs, the engine and containers")
    p.add_argument("--https-proxy", default="", help="HTTPS proxy for package installs, the engine and containers")
    p.add_argument(
        "--no-proxy",
        default="",
        help="Comma-separated hosts that bypass the proxy (the machine's own address is always added)",
    )
    p.add_argument(
        "--proxy-from-env", action="store_true", help="Copy HTTP_PROXY/HTTPS_PROXY/NO_PROXY from your environment"
    )
    p.add_argument(
        "--engine-install-source",
        default="",
        choices=["", "packages", "script", "bundle", "preinstalled"],
        help="Where the engine comes from: distro packages (default), the install script at --engine-install-url, "
        "an uploaded --engine-bundle, or preinstalled (configure only)",
    )
    p.add_argument(
        "--engine-bundle",
        default="",
        help="Engine bundle archive built by 'pymachine engine bundle'; installs with no network on the host",
    )


def add_driver_flags(p: Parser, flags: Sequence[Flag], environ: dict[str, str]) -> None:
    group = p.add_argument_group("driver options")
    for flag in flags:
        default = flag.env_default(environ)
        dest = "drv_" + flag.name.replace("-", "_")
        help_text = flag.help + (f" [${flag.env}]" if flag.env else "")
        if flag.kind == "bool":
            group.add_argument(f"--{flag.name}", dest=dest, action="store_true", default=bool(default), help=help_text)
        elif flag.kind == "list":
            group.add_argument(f"--{flag.name}", dest=dest, action="append", default=None, help=help_text)
            p.set_defaults(**{dest + "_envdefault": list(default or [])})
        elif flag.kind == "int":
            group.add_argument(f"--{flag.name}", dest=dest, type=int, default=default, help=help_text)
        else:
            group.add_argument(f"--{flag.name}", dest=dest, default=default, help=help_text)


def driver_values(ns: argparse.Namespace, flags: Sequence[Flag]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for flag in flags:
        dest = "drv_" + flag.name.replace("-", "_")
        value = getattr(ns, dest)
        if flag.kind == "list" and value is None:
            value = getattr(ns, dest + "_envdefault", [])
        values[flag.name] = value
    return values


def request_from(ns: argparse.Namespace, ctx: Context, name: str, flags: Sequence[Flag],
                 explicit_install_url: bool) -> CreateRequest:
    """The parsed flags as the library's typed request (the global --tls-* flags included)."""
    return CreateRequest(
        name=name, driver=ns.driver, driver_options=driver_values(ns, flags),
        engine_install_url=ns.engine_install_url if explicit_install_url else None,
        engine_opt=ns.engine_opt, engine_insecure_registry=ns.engine_insecure_registry,
        engine_registry_mirror=ns.engine_registry_mirror if ns.engine_registry_mirror is not None else ns._mirror_env,
        engine_label=ns.engine_label, engine_storage_driver=ns.engine_storage_driver, engine_env=ns.engine_env,
        engine_install_source=ns.engine_install_source, engine_bundle=ns.engine_bundle,
        swarm=ns.swarm, swarm_image=ns.swarm_image, swarm_master=ns.swarm_master,
        swarm_discovery=ns.swarm_discovery, swarm_strategy=ns.swarm_strategy, swarm_opt=ns.swarm_opt,
        swarm_join_opt=ns.swarm_join_opt, swarm_host=ns.swarm_host, swarm_addr=ns.swarm_addr,
        swarm_experimental=ns.swarm_experimental, tls_san=ns.tls_san,
        http_proxy=ns.http_proxy, https_proxy=ns.https_proxy, no_proxy=ns.no_proxy,
        proxy_from_env=ns.proxy_from_env,
        tls_ca_cert=ctx.tls_ca_cert, tls_ca_key=ctx.tls_ca_key,
        tls_client_cert=ctx.tls_client_cert, tls_client_key=ctx.tls_client_key,
    )


def parse_create(ctx: Context, args: Sequence[str]) -> CreateRequest:
    """argv -> CreateRequest: docker-machine's two-phase parse (the driver's flags need the driver)."""
    from pymachine.machine.drivers.registry import driver_class

    driver_name = find_driver(args, ctx.environ)
    p = parser("create", "Create a machine.", "[arg...]")
    add_shared_flags(p, ctx.environ)
    wants_help = any(a in ("-h", "--help", "-help") for a in args)
    cls = None
    try:
        cls = driver_class(driver_name)
    except MachineError:
        if not wants_help:
            raise
    if cls is not None:
        add_driver_flags(p, cls.flags, ctx.environ)
    p.add_argument("name", nargs="*")
    ns, extra = p.parse_known_args(list(args))
    bad = [a for a in extra if a.startswith("-")]
    if bad:
        raise UsageError(f"flag provided but not defined: {bad[0]}")
    names = list(ns.name) + extra
    if len(names) > 1:
        raise UsageError(f"Invalid command line. Found extra arguments {names[1:]}")
    if not names:
        raise UsageError("Error: No machine name specified")
    assert cls is not None
    explicit_url = (any(a.split("=", 1)[0] == "--engine-install-url" for a in args)
                    or "MACHINE_DOCKER_INSTALL_URL" in ctx.environ)
    return request_from(ns, ctx, names[0], cls.flags, explicit_url)


def cmd_create(ctx: Context, args: list[str]) -> int:
    from pymachine.machine.creation import create_machine

    request = parse_create(ctx, args)
    create_machine(ctx.store, request, ctx.out, environ=ctx.environ, argv0=ARGV0)
    return 0
