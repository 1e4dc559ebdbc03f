"""``pymachine logs NAME``: what the machine's host agent did (port forwards, conflicts)."""

from __future__ import annotations

from pymachine.machine.cli.common import Context, UsageError, one_target, parse, parser


def cmd_logs(ctx: Context, args: list[str]) -> int:
    from pymachine.machine.hostagent import log_lines

    p = parser("logs", "Show the host agent's log of a machine (published ports, conflicts).", "[NAME]")
    p.add_argument("--tail", "-n", type=int, default=0, help="Only the last N lines")
    p.add_argument("names", nargs="*")
    ns = parse(p, args)
    if ns.tail < 0:
        raise UsageError(f"--tail must be 0 (all lines) or a positive number of lines, not {ns.tail}")
    name = one_target(ctx, [*ns.names, *ns.rest])
    ctx.store.load(name)  # an unknown machine is the usual one-line error
    lines = log_lines(ctx.store.machine_dir(name))
    if ns.tail > 0:
        lines = lines[-ns.tail:]
    for line in lines:
        print(line)
    return 0
