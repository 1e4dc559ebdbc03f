"""``pymachine create``: docker-machine's two-phase parse, then Host.create.

Phase one finds the driver (``-d``/``--driver``, else ``$MACHINE_DRIVER``);
phase two parses the shared flags together with that driver's own flags,
which each driver declares as data.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from pymachine.machine import hostoptions
from pymachine.machine.cli.argparsing import Parser
from pymachine.machine.cli.common import ARGV0, Context, UsageError, parser
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


def options_from(ns: argparse.Namespace, ctx: Context, driver_default_source: str = "packages") -> Any:
    from pymachine.machine.host import CreateOptions

    mirrors = ns.engine_registry_mirror if ns.engine_registry_mirror is not None else ns._mirror_env
    engine = hostoptions.engine_options(
        arbitrary_flags=ns.engine_opt, env=ns.engine_env, insecure_registry=ns.engine_insecure_registry,
        labels=ns.engine_label, storage_driver=ns.engine_storage_driver, registry_mirror=mirrors,
        install_url=ns.engine_install_url,
    )
    engine = with_engine_extras(engine, ns, ctx, driver_default_source)
    swarm = hostoptions.swarm_options(
        is_swarm=ns.swarm or ns.swarm_master, address=ns.swarm_addr, discovery=ns.swarm_discovery,
        master=ns.swarm_master, host=ns.swarm_host, image=ns.swarm_image, strategy=ns.swarm_strategy,
        arbitrary_flags=ns.swarm_opt, arbitrary_join_flags=ns.swarm_join_opt,
        env=(ns.engine_env or None) if ns.swarm or ns.swarm_master else None,  # docker-machine 0.16.2: null off swarm
        experimental=ns.swarm_experimental,
    )
    return CreateOptions(
        engine=engine, swarm=swarm, tls_sans=ns.tls_san,
        ca_cert=ctx.tls_ca_cert, ca_key=ctx.tls_ca_key,
        client_cert=ctx.tls_client_cert, client_key=ctx.tls_client_key,
    )


def with_engine_extras(engine: dict[str, Any], ns: argparse.Namespace, ctx: Context,
                       driver_default_source: str = "packages") -> dict[str, Any]:
    """Fold pymachine's proxy and install-source settings into EngineOptions."""
    import os

    from pymachine.engine.options import EngineOptions
    from pymachine.engine.proxy import ProxySettings

    opts = EngineOptions.from_json(engine)
    proxy = ProxySettings(ns.http_proxy, ns.https_proxy, ns.no_proxy)
    if ns.proxy_from_env:
        proxy = ProxySettings.merged(proxy, ProxySettings.from_user_environment(ctx.environ))
    opts.proxy = proxy
    source = ns.engine_install_source
    if ns.engine_bundle:
        bundle = os.path.abspath(os.path.expanduser(ns.engine_bundle))
        if not os.path.isfile(bundle):
            raise MachineError(f"engine bundle not found: {ns.engine_bundle}")
        if source not in ("", "bundle"):
            raise MachineError("--engine-bundle needs --engine-install-source bundle (or none)")
        source, opts.bundle_path = "bundle", bundle
    elif source == "bundle":
        raise MachineError("--engine-install-source bundle needs --engine-bundle FILE")
    if not source:
        explicit_url = getattr(ns, "explicit_install_url", False) or "MACHINE_DOCKER_INSTALL_URL" in ctx.environ
        source = "script" if explicit_url else driver_default_source
    opts.install_source = source
    return opts.to_json()


def cmd_create(ctx: Context, args: list[str]) -> int:
    from pymachine.machine import host as hostmod
    from pymachine.machine.drivers.registry import driver_class
    from pymachine.machine.store import check_new_name

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
    ns, extra = p.parse_known_args(args)
    bad = [a for a in extra if a.startswith("-")]
    if bad:
        raise UsageError(f"flag provided but not defined: {bad[0]}")
    names = list(ns.name) + extra
    if len(names) > 1:
        raise UsageError(f"Invalid command line. Found extra arguments {names[1:]}")
    if not names:
        raise UsageError("Error: No machine name specified")
    name = names[0]
    check_new_name(name)  # before anything touches the disk
    if ctx.store.exists(name):
        raise MachineError(f'Docker machine "{name}" already exists')
    from pymachine.machine.provision import ssh_wait

    ssh_wait(ctx.environ)  # a bad PYMACHINE_SSH_WAIT fails now, before anything is made
    from pymachine.machine import swarm  # swarm mode: discovery is a manager's NAME or engine URL

    ns.swarm_discovery = swarm.check_create(ctx.store, agent=ns.swarm, master=ns.swarm_master,
                                            discovery=ns.swarm_discovery, swarm_opts=ns.swarm_opt,
                                            join_opts=ns.swarm_join_opt)
    assert cls is not None
    ns.explicit_install_url = any(a.split("=", 1)[0] == "--engine-install-url" for a in args)
    driver = hostmod.prepare_driver(ctx.store, name, driver_name, driver_values(ns, cls.flags))
    # A driver whose image carries the engine (qemu) defaults to configuring it only.
    default_source = getattr(driver, "default_install_source", "packages")
    opts = options_from(ns, ctx, default_source)
    with terminate_as_interrupt():
        hostmod.create(ctx.store, name, driver, opts, ctx.out, argv0=ARGV0)
    return 0


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM during a create raises KeyboardInterrupt, so the create rolls back like on Ctrl-C."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
