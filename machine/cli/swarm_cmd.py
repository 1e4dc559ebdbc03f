"""``pymachine swarm ls``: the swarm-mode clusters in this store, their nodes and health.

Clusters come from the machines' stored ``Pymachine.Swarm`` records; node
counts and readiness come live from the first manager of each that answers.
"""

from __future__ import annotations

from pymachine.machine.cli.common import Context, UsageError, parse, parser

USAGE = "ls [--nodes]"


def _table(ctx: Context, rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        ctx.out("   ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def cmd_swarm(ctx: Context, args: list[str]) -> int:
    from pymachine.machine import swarm
    from pymachine.machine.cli.argparsing import seconds

    p = parser("swarm", "List swarm-mode clusters and their nodes.", USAGE)
    p.add_argument("action", nargs="?", choices=["ls"])
    p.add_argument("--nodes", action="store_true", help="List every node of every cluster")
    p.add_argument("--timeout", "-t", type=seconds, default=3.0, help="Seconds to wait for each manager")
    ns = parse(p, args)
    if ns.rest:
        raise UsageError(f"Invalid command line. Found extra arguments {ns.rest}")
    if ns.action != "ls":
        raise UsageError(f"pymachine swarm needs a subcommand: {USAGE}")
    views = swarm.survey(ctx.store, timeout=ns.timeout)
    if not ns.nodes:
        rows = [("CLUSTER", "MANAGERS", "MACHINES", "NODES", "READY", "HEALTH")]
        for v in views:
            rows.append((v.cluster_id[:12], ",".join(v.managers) or "-", str(len(v.machines)),
                         str(len(v.nodes)) if v.reached else "?", str(v.ready) if v.reached else "?",
                         v.health if v.reached else f"unreachable: {v.error}"))
        _table(ctx, rows)
        return 0
    rows = [("CLUSTER", "NODE", "MACHINE", "ROLE", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ADDRESS")]
    for v in views:
        by_node = _machines_by_node(ctx, v.machines)
        for n in sorted(v.nodes, key=lambda n: (n.get("Description") or {}).get("Hostname", "")):
            spec, status = n.get("Spec") or {}, n.get("Status") or {}
            mstatus = n.get("ManagerStatus") or {}
            manager = "Leader" if mstatus.get("Leader") else (mstatus.get("Reachability") or "").capitalize()
            rows.append((v.cluster_id[:12], (n.get("Description") or {}).get("Hostname", ""),
                         by_node.get(n.get("ID", ""), "-"), spec.get("Role", ""), status.get("State", ""),
                         spec.get("Availability", ""), manager or "-", status.get("Addr", "")))
    _table(ctx, rows)
    return 0


def _machines_by_node(ctx: Context, names: list[str]) -> dict[str, str]:
    from pymachine.machine.swarm import record_of

    out = {}
    for name in names:
        node = record_of(ctx.store.load(name)).get("NodeID")
        if node:
            out[node] = name
    return out
