"""``quickstart``: create or start the default machine and open a shell wired to it."""

from __future__ import annotations

from pymachine.machine.cli.common import Context, parse, parser


def cmd_quickstart(ctx: Context, args: list[str]) -> int:
    from pymachine.installer import quickstart
    from pymachine.machine.cli.main import dispatch

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
    extra = list(ns.create_opt)
    if ns.url:
        extra += ["--url", ns.url]
    opts = quickstart.Options(name=ns.name, driver=ns.driver, create_args=extra, shell=ns.shell,
                              no_shell=ns.no_shell, command=tail + ns.rest)
    return quickstart.run(ctx, opts, dispatch)
