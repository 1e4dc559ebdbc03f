"""The code stays lint-clean and type-checked: ruff with the rule set in pyproject
``[tool.ruff]``, mypy with ``[tool.mypy]`` (strict on the store, certs, SSH and host).

Run as part of the unit tier so a new long line, unsorted import or wrong type fails
here, with the tool's own report in the message, not only in an editor.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Every folder of Python the project keeps (the packages, the tests, the benchmarks).
PATHS = ("pymachine", "machine", "engine", "provisioners", "installer", "tests", "bench")


def _have(module: str) -> bool:
    probe = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, timeout=60, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _have("ruff"), reason="ruff is not installed (pip install '.[test]')")
def test_ruff_is_clean() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", *PATHS],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, f"ruff check {' '.join(PATHS)} failed:\n{proc.stdout}{proc.stderr}"


#: The packages mypy checks (pyproject ``[tool.mypy]``); the installer builder is not one.
TYPED = ("pymachine.machine", "pymachine.engine", "pymachine.provisioners")


@pytest.mark.skipif(not _have("mypy"), reason="mypy is not installed (pip install '.[test]')")
def test_mypy_is_clean(tmp_path: Path) -> None:
    # mypy cannot follow pymachine/__init__.py's run-time __path__: lay the checkout out as
    # installed (pymachine/machine, pymachine/engine...) with symlinks, and check that tree.
    tree = tmp_path / "tree" / "pymachine"
    tree.mkdir(parents=True)
    try:
        os.symlink(ROOT / "pymachine" / "__init__.py", tree / "__init__.py")
        for folder in ("machine", "engine", "provisioners", "installer", "packaging"):
            os.symlink(ROOT / folder, tree / folder, target_is_directory=True)
    except OSError as exc:  # Windows without the symlink privilege
        pytest.skip(f"cannot make symlinks here: {exc}")
    argv = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
            "--cache-dir", str(tmp_path / "cache")]
    for package in TYPED:
        argv += ["-p", package]
    proc = subprocess.run(argv, cwd=tree.parent, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"mypy {' '.join(TYPED)} failed:\n{proc.stdout}{proc.stderr}"
