"""One import namespace: every module imports pymachine's folders as ``pymachine.<folder>``.

The repository keeps ``machine/``, ``engine/``, ``provisioners/``, ``installer/`` at its top
(the design card's layout), but a bare ``import machine`` would work only from a checkout,
and a bare ``installer`` is pypa's package once installed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {"machine", "engine", "provisioners", "installer", "packaging"}
SCANNED = ["pymachine", "machine", "engine", "provisioners", "installer", "tests", "bench"]


def _bare_imports(path: Path, root: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{path.relative_to(root)}:{node.lineno}: {n}" for n in names
                  if n.split(".")[0] in FOLDERS - {"packaging"}]
    return found


def test_no_bare_imports_of_the_top_level_folders() -> None:
    offenders = [hit for folder in SCANNED for path in sorted((REPO / folder).rglob("*.py"))
                 for hit in _bare_imports(path)]
    assert offenders == []


def test_the_check_sees_a_bare_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom machine.store import Store\nimport engine.images as im\n"
                     "from pymachine.machine.store import Store\n")
    assert len(_bare_imports(probe, tmp_path)) == 2


@pytest.mark.parametrize("name", ["machine", "engine", "provisioners", "installer"])
def test_folders_resolve_under_pymachine(name: str) -> None:
    import importlib

    module = importlib.import_module(f"pymachine.{name}")
    assert Path(module.__file__).resolve().parent == REPO / name
