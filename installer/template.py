"""Strict templating and reproducible file helpers shared by the builders.

Toolbox filled ``%PLACEHOLDER%`` tokens with sed and never noticed one left
behind; here a missing value, an unused value or a leftover token is an error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from pymachine.engine.image_pack import source_date_epoch as source_date_epoch  # one rule for all archives
from pymachine.machine.errors import MachineError

TOKEN = re.compile(r"@([A-Z][A-Z0-9_]*)@")


def render(text: str, values: Mapping[str, str], name: str = "template") -> str:
    used = set(TOKEN.findall(text))
    missing = sorted(used - set(values))
    if missing:
        raise MachineError(f"{name}: no value for {', '.join(missing)}")
    unused = sorted(set(values) - used)
    if unused:
        raise MachineError(f"{name}: values not used by the template: {', '.join(unused)}")
    return TOKEN.sub(lambda m: str(values[m.group(1)]), text)


def walk_sorted(root: Path) -> Iterator[Path]:
    """Every path under ``root`` (dirs before their contents), in byte order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            yield base / name


def normalise_tree(root: Path, epoch: int) -> None:
    """Give every file and directory under ``root`` (and root) the same mtime."""
    for path in [*walk_sorted(root), root]:
        os.utime(path, (epoch, epoch), follow_symlinks=False)
