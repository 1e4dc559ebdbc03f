"""``pymachine ls``: docker-machine's table, filters and templates, plus ``--format json``."""

from __future__ import annotations

import json
import sys

from pymachine.machine.cli.common import Context, parse, parser
from pymachine.machine.errors import MachineError

DEFAULT_FORMAT = (
    "table {{ .Name }}\t{{ .Active }}\t{{ .DriverName}}\t{{ .State }}\t{{ .URL }}\t"
    "{{ .Swarm }}\t{{ .DockerVersion }}\t{{ .Error}}"
)
HEADERS = {
    "Name": "NAME", "Active": "ACTIVE", "ActiveHost": "ACTIVE_HOST", "ActiveSwarm": "ACTIVE_SWARM",
    "DriverName": "DRIVER", "State": "STATE", "URL": "URL", "SwarmOptions": "SWARM_OPTIONS",
    "Swarm": "SWARM", "EngineOptions": "ENGINE_OPTIONS", "Error": "ERRORS",
    "DockerVersion": "DOCKER", "ResponseTime": "RESPONSE", "Fresh": "FRESH", "LocalState": "LOCAL_STATE",
}


def cmd_ls(ctx: Context, args: list[str]) -> int:
    from pymachine.machine import listing
    from pymachine.machine.cli.argparsing import seconds

    p = parser("ls", "List machines", "")
    p.add_argument("--quiet", "-q", action="store_true", help="Enable quiet mode")
    p.add_argument("--filter", action="append", default=[], help="Filter output based on conditions provided")
    p.add_argument("--timeout", "-t", type=seconds, default=listing.DEFAULT_DEADLINE,
                   help=f"Deadline in seconds for the whole listing (default {listing.DEFAULT_DEADLINE:g})")
    p.add_argument("--format", "-f", default="", help="Pretty-print machines using a Go template, or 'json'")
    ns = parse(p, args)
    if ns.rest:
        raise MachineError(f"Invalid command line. Found extra arguments {ns.rest}")
    if ns.timeout <= 0:
        raise MachineError("--timeout must be a positive number of seconds")
    filters = listing.parse_filters(ns.filter)
    template = None
    if ns.format and ns.format != "json":
        from pymachine.machine.templates import parse as parse_template

        template_text = ns.format.replace("\\t", "\t").replace("\\n", "\n")
        is_table = template_text.startswith("table")
        if is_table:
            template_text = template_text[len("table"):].lstrip(" ")
        template = (parse_template(template_text), is_table)

    hosts = [h for h in ctx.store.load_all() if listing.matches_static(h, filters)]
    needs_query = not ns.quiet or "state" in filters or "swarm" in filters
    if ns.quiet and not needs_query:
        for h in hosts:
            print(h.name)
        return 0
    items = listing.gather(ctx.store, hosts, ctx.environ, ns.timeout)
    items = [it for it in items if listing.matches_dynamic(it, filters)]
    if ns.quiet:
        sys.stdout.write("".join(f"{it.Name}\n" for it in items))
        return 0
    if ns.format == "json":
        print(json.dumps([it.public() for it in items], indent=2))
        return 0
    from pymachine.machine.tabwriter import tabwrite
    from pymachine.machine.templates import parse as parse_template

    if template is None:
        tmpl, is_table = parse_template(DEFAULT_FORMAT[len("table "):]), True
    else:
        tmpl, is_table = template
    lines = []
    if is_table:
        lines.append(tmpl.execute(HEADERS))
    lines.extend(tmpl.execute(it.public()) for it in items)
    text = "".join(line + "\n" for line in lines)
    # docker-machine sends every format, table or not, through the same tabwriter.
    sys.stdout.write(tabwrite(text, minwidth=5, tabwidth=1, padding=3))
    return 0
