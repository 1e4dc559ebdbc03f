"""``pymachine use NAME``: make the machine the Docker CLI's current context.

New in pymachine: instead of ``eval $(pymachine env NAME)`` in every shell,
this writes a Docker context (endpoint + TLS material) and makes it current,
so every tool that reads Docker contexts follows.  ``use --unset`` restores
the context that was current before.
"""

from __future__ import annotations

from pymachine.machine import layout
from pymachine.machine.cli.common import Context, UsageError, one_target, parse, parser


def cmd_use(ctx: Context, args: list[str]) -> int:
    from pymachine.machine import docker_context
    from pymachine.machine.connection import check_connection

    p = parser("use", "Make a machine the current Docker CLI context", "[NAME]")
    p.add_argument("--unset", "-u", action="store_true", help="Restore the Docker context that was current before")
    p.add_argument("names", nargs="*")
    ns = parse(p, args)
    names = ns.names + ns.rest
    if ns.unset:
        if names:
            raise UsageError("Error: Expected no machine name when the --unset flag is present")
        current = docker_context.unuse(environ=ctx.environ)
        ctx.out(f'Current context is now "{current}"')
        return 0
    name = one_target(ctx, names)
    machine, url = check_connection(ctx.store, name, log=ctx.err)
    d = machine.dir
    context = docker_context.use_machine(
        name, url, d / layout.CA_CERT, d / layout.CLIENT_CERT, d / layout.CLIENT_KEY,
        environ=ctx.environ, description=f"pymachine machine {name} ({machine.driver.name})",
    )
    ctx.out(f'Current context is now "{context}"')
    if ctx.environ.get("DOCKER_HOST"):
        ctx.err("Warning: DOCKER_HOST is set in this shell and overrides the context; run: eval $(pymachine env -u)")
    return 0
