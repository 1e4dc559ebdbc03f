"""``--format`` for listings: ``json``, a Go template, or ``table TEMPLATE`` (with headers).

One renderer for every listing beside ``ls`` (``swarm ls``, ``image ls``), following ``ls``:
``json`` prints one JSON array of the same records the templates see; a template runs
once per record; ``table`` adds the header row and aligns columns with docker-machine's
tabwriter settings.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any


def render(records: Sequence[Mapping[str, Any]], fmt: str, headers: Mapping[str, str]) -> str:
    """The text to print for ``records`` under ``--format fmt`` (non-empty ``fmt``)."""
    if fmt == "json":
        return json.dumps(list(records), indent=2) + "\n"
    from pymachine.machine.tabwriter import tabwrite
    from pymachine.machine.templates import parse as parse_template

    text = fmt.replace("\\t", "\t").replace("\\n", "\n")
    is_table = text.startswith("table")
    if is_table:
        text = text[len("table"):].lstrip(" ")
    template = parse_template(text)
    lines = [template.execute(dict(headers))] if is_table else []
    lines += [template.execute(dict(record)) for record in records]
    body = "".join(line + "\n" for line in lines)
    return tabwrite(body, minwidth=5, tabwidth=1, padding=3) if is_table else body


def emit(records: Sequence[Mapping[str, Any]], fmt: str, headers: Mapping[str, str]) -> None:
    sys.stdout.write(render(records, fmt, headers))
