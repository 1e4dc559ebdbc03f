"""``quickstart``: create or start the default machine and open a shell wired to it.

Parses, calls the library's ``machine.quickstart.quickstart``, prints the
environment and the banner, then hands the terminal to a shell (or a command)
with that environment.  Progress goes to stderr, so
``eval "$(pymachine quickstart --no-shell)"`` works.
"""

from __future__ import annotations

import os
import sys

from pymachine.machine.cli.common import Context, parse, parser
from pymachine.machine.errors import MachineError


def cmd_quickstart(ctx: Context, args: list[str]) -> int:
    from pymachine.machine import quickstart, shells
    from pymachine.machine.cli.create import parse_create
    from pymachine.machine.cli.env import invoked_argv

    p = parser("quickstart", "Create or start the default machine and open a shell wired to it",
               "[-- COMMAND [ARG...]]")
    p.add_argument("--name", default=ctx.environ.get("DOCKER_MACHINE_NAME") or "default",
                   help="Machine to use [$DOCKER_MACHINE_NAME] (default: default)")
    p.add_argument(
        "--driver",
        "-d",
        default=quickstart.default_driver(ctx.environ),
        help=f"Driver for a new machine [${quickstart.DRIVER_ENV}] (virtualbox on Windows/macOS, qemu on Linux)",
    )
    p.add_argument("--url", default="", help="Engine URL, for the none driver")
    p.add_argument("--create-opt", action="append", default=[], help="Extra flag passed to create (repeatable)")
    p.add_argument("--shell", default="", help="Shell to open (default: $SHELL, or %%COMSPEC%% on Windows)")
    p.add_argument("--no-shell", action="store_true", help="Only print the environment and the banner")
    head, tail = list(args), []
    if "--" in args:
        i = args.index("--")
        head, tail = list(args[:i]), list(args[i + 1:])
    ns = parse(p, head)
    create_args = ["-d", ns.driver, *ns.create_opt]
    if ns.url:
        create_args += ["--url", ns.url]
    request = parse_create(ctx, [*create_args, ns.name])  # create's own flags, checked as create does
    session = quickstart.quickstart(ctx.store, request, ctx.err, environ=ctx.environ)
    try:
        shell_name, _note = shells.detect_shell(ctx.environ)
    except shells.UnknownShell:
        shell_name = "cmd" if os.name == "nt" else "bash"
    sys.stdout.write(shells.env_output(shell_name, session.variables, [*invoked_argv()[:1], "env", session.name]))
    sys.stdout.write(quickstart.banner(session.name, session.ip))
    sys.stdout.flush()
    if ns.no_shell:
        return 0
    env = quickstart.child_environment(ctx.environ, session.variables)
    argv = [*tail, *ns.rest] or quickstart.shell_argv(ns.shell or quickstart.user_shell(ctx.environ))
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        raise MachineError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    return 0  # pragma: no cover -- exec does not return
