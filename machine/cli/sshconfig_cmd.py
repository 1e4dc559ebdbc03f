"""``pymachine ssh-config NAME...``: print OpenSSH ``Host`` blocks for running machines."""

from __future__ import annotations

from pymachine.machine.cli.common import Context, parse, parser, target_names
from pymachine.machine.cli.sshcmds import _running_target
from pymachine.machine.sshconfig import host_block


def cmd_ssh_config(ctx: Context, args: list[str]) -> int:
    p = parser("ssh-config", "Print an OpenSSH config block for machines (ssh -F FILE NAME works).",
               "[NAME...]")
    p.add_argument("names", nargs="*")
    ns = parse(p, args)
    names = target_names(ctx, [*ns.names, *ns.rest])
    blocks = [host_block(name, _running_target(ctx, name)) for name in names]
    ctx.out("\n".join(blocks).rstrip("\n"))
    return 0
