"""Library-level tests (certificates, templates, listing tables, shells, locks, Windows
logic) re-run in one pytest process that has POSIX-only modules blocked (issue 12, item 3).

The inner run loads ``tests/windows/blocker/sitecustomize.py`` through PYTHONPATH,
skips tests/conftest.py (``--noconftest``: the namespaced-host fixtures it pulls in
use fcntl themselves) and third-party pytest plugins, and keeps ``os.getuid`` for
pytest's own tmp_path (PYMACHINE_BLOCKER_HARNESS=1).  Deselected: tests that assert
POSIX file modes, which by design are not applied where ``os.fchmod`` is missing.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BLOCKER = Path(__file__).resolve().parent / "blocker"

SELECTED = [
    "tests/unit/test_certs.py",
    "tests/unit/test_templates.py",
    "tests/unit/test_tabwriter.py",
    "tests/unit/test_shells.py",
    "tests/unit/test_locking.py",
    "tests/unit/test_namespace.py",
    "tests/windows/test_windows_logic.py",
    "tests/windows/test_windows_inprocess.py::test_blocked_inside",
]
# POSIX modes are skipped without os.fchmod (machine/filemodes.py), as on Windows.
DESELECTED = ["tests/unit/test_certs.py::test_bootstrap_creates_files_logs_and_modes"]


def test_blocked_inside() -> None:
    """Meaningful in the inner run only: there the POSIX-only modules must be gone."""
    if os.environ.get("PYMACHINE_POSIX_BLOCKED") != "1":
        pytest.skip("runs inside test_library_tests_pass_with_posix_modules_blocked")
    for name in ("fcntl", "termios", "pwd", "grp", "resource"):
        with pytest.raises(ImportError):
            importlib.import_module(name)
    assert not hasattr(os, "fchmod")


def test_library_tests_pass_with_posix_modules_blocked() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=str(BLOCKER), PYMACHINE_BLOCKER_HARNESS="1", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "pytest_timeout", "--noconftest",
            "-q", "-rA", *SELECTED, *(f"--deselect={d}" for d in DESELECTED)]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert "PASSED tests/windows/test_windows_inprocess.py::test_blocked_inside" in proc.stdout, tail
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) > 100, tail
