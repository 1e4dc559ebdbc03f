"""The code stays lint-clean: ruff with the rule set in pyproject ``[tool.ruff]``.

Run as part of the unit tier so a new long line, unsorted import or mutable default
fails here, with ruff's own report in the message, not only in an editor.
"""

from __future__ import annotations

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
