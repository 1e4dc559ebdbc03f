"""``pymachine swarm ls``: the swarm-mode clusters in this store, their nodes and health.

Clusters come from the machines' stored ``Pymachine.Swarm`` records; node
counts and readiness come live from the first manager of each that answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pymachine.machine.cli.common import Context, UsageError, parse, parser

if TYPE_CHECKING:  # swarm loads only for the swarm commands
    from pymachine.machine.swarm import ClusterView

USAGE = "ls [--nodes] [--format json|TEMPLATE]"


def _table(ctx: Context, rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        ctx.out("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def cmd_swarm(ctx: Context, args: list[str]) -> int:
    from pymachine.machine import swarm
    from pymachine.machine.cli.argparsing import seconds

    p = parser("swarm", "List swarm-mode clusters and their nodes.", USAGE)
    p.add_argument("action", nargs="?", choices=["ls"])
    p.add_argument("--nodes", action="store_true", help="List every node of every cluster")
    p.add_argument("--timeout", "-t", type=seconds, default=3.0, help="Seconds to wait for each manager")
    p.add_argument("--format", "-f", default="", help="'json', or a Go template (prefix 'table' for headers)")
    ns = parse(p, args)
    if ns.rest:
        raise UsageError(f"Invalid command line. Found extra arguments {ns.rest}")
    if ns.action != "ls":
        raise UsageError(f"pymachine swarm needs a subcommand: {USAGE}")
    views = swarm.survey(ctx.store, timeout=ns.timeout)
    if ns.format:
        from pymachine.machine.cli.listformat import emit

        if ns.nodes:
            emit(_node_records(ctx, views), ns.format, NODE_HEADERS)
        else:
            emit([_cluster_record(v) for v in views], ns.format, CLUSTER_HEADERS)
        return 0
    if not ns.nodes:
        rows: list[tuple[str, ...]] = [("CLUSTER", "MANAGERS", "MACHINES", "NODES", "READY", "HEALTH")]
        for v in views:
            rows.append((v.cluster_id[:12], ",".join(v.managers) or "-", str(len(v.machines)),
                         str(len(v.nodes)) if v.reached else "?", str(v.ready) if v.reached else "?",
                         v.health if v.reached else f"unreachable: {v.error}"))
        _table(ctx, rows)
        return 0
    rows = [("CLUSTER", "NODE", "MACHINE", "ROLE", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ADDRESS")]
    for r in _node_records(ctx, views):
        rows.append((str(r["ClusterID"])[:12], str(r["Node"]), str(r["Machine"] or "-"), str(r["Role"]),
                     str(r["Status"]), str(r["Availability"]), str(r["ManagerStatus"] or "-"), str(r["Address"])))
    _table(ctx, rows)
    return 0


CLUSTER_HEADERS = {"ClusterID": "CLUSTER", "Managers": "MANAGERS", "Machines": "MACHINES", "Nodes": "NODES",
                   "Ready": "READY", "Health": "HEALTH", "Reached": "REACHED", "Error": "ERROR"}
NODE_HEADERS = {"ClusterID": "CLUSTER", "Node": "NODE", "Machine": "MACHINE", "Role": "ROLE", "Status": "STATUS",
                "Availability": "AVAILABILITY", "ManagerStatus": "MANAGER STATUS", "Address": "ADDRESS"}


def _cluster_record(view: ClusterView) -> dict[str, object]:
    """A cluster for ``--format``: full ids and lists, counts as numbers (None when unreachable)."""
    return {"ClusterID": view.cluster_id, "Managers": list(view.managers), "Machines": list(view.machines),
            "Nodes": len(view.nodes) if view.reached else None, "Ready": view.ready if view.reached else None,
            "Health": view.health if view.reached else "unreachable", "Reached": view.reached,
            "Error": view.error}


def _node_records(ctx: Context, views: Sequence[ClusterView]) -> list[dict[str, object]]:
    records = []
    for v in views:
        by_node = _machines_by_node(ctx, v.machines)
        for n in sorted(v.nodes, key=lambda n: (n.get("Description") or {}).get("Hostname", "")):
            spec, status = n.get("Spec") or {}, n.get("Status") or {}
            mstatus = n.get("ManagerStatus") or {}
            manager = "Leader" if mstatus.get("Leader") else (mstatus.get("Reachability") or "").capitalize()
            records.append({"ClusterID": v.cluster_id, "Node": (n.get("Description") or {}).get("Hostname", ""),
                            "Machine": by_node.get(n.get("ID", ""), ""), "Role": spec.get("Role", ""),
                            "Status": status.get("State", ""), "Availability": spec.get("Availability", ""),
                            "ManagerStatus": manager, "Address": status.get("Addr", "")})
    return records


def _machines_by_node(ctx: Context, names: list[str]) -> dict[str, str]:
    from pymachine.machine.swarm import record_of

    out = {}
    for name in names:
        node = record_of(ctx.store.load(name)).get("NodeID")
        if node:
            out[node] = name
    return out
