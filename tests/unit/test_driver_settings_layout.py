"""The machine directory's file names are declared once, in machine/layout.py.

A string literal spelling one of them anywhere else in machine/ is a second
declaration that can drift (a file written under one name and looked for under
another); this test names each one it finds.
"""

from __future__ import annotations

import ast
from pathlib import Path

from pymachine.machine import layout

ROOT = Path(__file__).resolve().parents[2]
#: Docker's own ~/.docker/config.json, not a machine's: the name is the Docker CLI's.
OTHER_MEANING = {("machine/docker_context.py", layout.CONFIG)}


def _names() -> set[str]:
    return {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)}


def _literals(tree: ast.AST) -> list[tuple[int, str]]:
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_layout_names_every_file_once():
    names = _names()
    assert {"config.json", "ca.pem", "cert.pem", "key.pem", "server.pem", "server-key.pem", "id_rsa",
            "id_rsa.pub", "seed.iso", "disk.qcow2"} <= names
    values = [v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)]
    assert len(values) == len(set(values)), "two constants for one file name"


def test_no_module_spells_a_machine_file_name_itself():
    names = _names()
    found = []
    for path in sorted((ROOT / "machine").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "machine/layout.py":
            continue
        for line, value in _literals(ast.parse(path.read_text(), rel)):
            if value in names and (rel, value) not in OTHER_MEANING:
                found.append(f"{rel}:{line}: {value!r}")
    assert not found, "use the machine/layout.py constant:\n" + "\n".join(found)
