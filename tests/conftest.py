"""Shared fixtures: run the installed ``pymachine`` command the way a user does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["tests.hosts.fixtures"]

# Network safety: SDK credential chains must never probe cloud metadata services
# (169.254.169.254) from tests; this also reaches every subprocess the tests start.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

BIN_DIR = Path(sys.executable).parent
PYMACHINE = str(BIN_DIR / "pymachine") if (BIN_DIR / "pymachine").exists() else shutil.which("pymachine")
CLEARED = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_MACHINE_NAME", "DOCKER_CONTEXT",
           "MACHINE_STORAGE_PATH", "MACHINE_DRIVER", "NO_PROXY", "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
           "PYMACHINE_CACHE_DIR", "XDG_CACHE_HOME")  # the image cache: under the test's own HOME


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def out_lines(self) -> list[str]:
        return self.stdout.splitlines()


class PyMachine:
    """Runs ``pymachine`` as a subprocess against a private store and Docker config."""

    def __init__(self, root: Path) -> None:
        assert PYMACHINE, "the pymachine console script is not installed (pip install -e .)"
        self.root = root
        self.store = root / "store"
        self.home = root / "home"
        self.home.mkdir(exist_ok=True)
        self.docker_config = root / "docker-config"
        self.env = {k: v for k, v in os.environ.items() if k not in CLEARED}
        self.env.update(
            MACHINE_STORAGE_PATH=str(self.store),
            HOME=str(self.home),
            DOCKER_CONFIG=str(self.docker_config),
            SHELL="/bin/bash",
            PATH=f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
        )

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None,
                 timeout: float = 120) -> Result:
        proc = subprocess.run(
            [PYMACHINE, *args], input=input, capture_output=True, text=True, timeout=timeout,
            env={**self.env, **(env or {})}, check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, **kw) -> Result:
        res = self(*args, **kw)
        assert res.returncode == 0, f"pymachine {' '.join(args)} failed ({res.returncode}): {res.stderr}{res.stdout}"
        return res


@pytest.fixture
def pm(tmp_path: Path) -> PyMachine:
    return PyMachine(tmp_path)


@pytest.fixture(scope="session", autouse=True)
def _private_user_cache(tmp_path_factory: pytest.TempPathFactory):
    """In-process tests get a user image cache of their own, never the runner's ~/.cache/pymachine
    (the ``pm`` fixture's commands clear it and use their own HOME's)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYMACHINE_CACHE_DIR", str(tmp_path_factory.mktemp("user-cache")))
        yield

