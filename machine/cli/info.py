"""Read-only commands: inspect, url, ip, status, version, active."""

from __future__ import annotations

import json

from pymachine.machine.cli.common import (
    Context,
    UsageError,
    one_target,
    parse,
    parser,
    run_concurrently,
    target_names,
)
from pymachine.machine.errors import MachineError


def _load(ctx: Context, name: str):
    from pymachine.machine.host import Machine

    return Machine.load(ctx.store, name)


def cmd_inspect(ctx: Context, args: list[str]) -> int:
    p = parser("inspect", "Inspect information about a machine", "[arg...]")
    p.add_argument("--format", "-f", default="", help="Format the output using the given go template.")
    p.add_argument("names", nargs="*")
    ns = parse(p, args)
    name = one_target(ctx, ns.names + ns.rest)
    host = ctx.store.load(name)
    data = host.to_json()
    if not ns.format:
        print(json.dumps(data, indent=4, ensure_ascii=False))
        return 0
    from pymachine.machine.templates import render

    print(render(ns.format, json.loads(json.dumps(data))))
    return 0


def cmd_url(ctx: Context, args: list[str]) -> int:
    p = parser("url", "Get the URL of a machine", "[arg...]")
    p.add_argument("names", nargs="*")
    ns = parse(p, args)
    machine = _load(ctx, one_target(ctx, ns.names + ns.rest))
    url = machine.url()
    if not url:
        raise MachineError("Host is not running")
    ctx.out(url)
    return 0


def cmd_ip(ctx: Context, args: list[str]) -> int:
    p = parser("ip", "Get the IP address of one or more machines", "[arg...]")
    p.add_argument("names", nargs="*")
    ns = parse(p, args)
    names = target_names(ctx, ns.names + ns.rest)

    def show(name: str) -> None:
        ip = _load(ctx, name).driver.ip()
        if not ip:
            raise MachineError(f'Error getting IP address: Host "{name}" is not running')
        ctx.out(ip)

    run_concurrently(names, show)
    return 0


def cmd_status(ctx: Context, args: list[str]) -> int:
    p = parser("status", "Get the status of a machine", "[arg...]")
    p.add_argument("names", nargs="*")
    ns = parse(p, args)
    machine = _load(ctx, one_target(ctx, ns.names + ns.rest))
    ctx.out(machine.state().value)
    return 0


def cmd_version(ctx: Context, args: list[str]) -> int:
    from pymachine.machine.cli.main import version_line

    p = parser("version", "Show the pymachine version or a machine docker version", "[arg...]")
    p.add_argument("names", nargs="*")
    ns = parse(p, args)
    names = ns.names + ns.rest
    if not names:
        print(version_line())
        return 0
    from pymachine.machine import dockerapi

    machine = _load(ctx, one_target(ctx, names))
    url = machine.url()
    if not url:
        raise MachineError("Host is not running")
    tls = machine.tls()
    try:
        print(dockerapi.engine_version(url, tls.ca_cert, tls.client_cert, tls.client_key, timeout=20))
    except OSError as exc:
        raise MachineError(f"Unable to query docker version: {dockerapi.describe_error(exc)}") from None
    return 0


def cmd_active(ctx: Context, args: list[str]) -> int:
    from pymachine.machine import listing
    from pymachine.machine.cli.argparsing import seconds

    p = parser("active", "Print which machine is active", "")
    p.add_argument("--timeout", "-t", type=seconds, default=10.0, help="Timeout in seconds")
    ns = parse(p, args)
    if ns.rest:
        raise UsageError("Error: Too many arguments given")
    items = listing.gather(ctx.store, ctx.store.load_all(), ctx.environ, ns.timeout)
    for item in items:
        if item.ActiveHost or item.ActiveSwarm:
            print(item.Name)
            return 0
    if any(item.State == "Timeout" for item in items):
        raise MachineError("Error getting active host: timeout")
    raise MachineError("No active host found")
