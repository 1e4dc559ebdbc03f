"""The Windows installer's staged CLI starts where POSIX-only modules are missing (issue 12, item 7).

The tree is staged by the installer's own code (``installer/windows.py``:
``lib/pymachine/...`` and ``bin/pymachine.cmd``), and its launcher's command line
is what runs, with this host's python standing in for the bundled embeddable one
and ``tests/windows/blocker`` making it look like Windows CPython to imports.
A probe proves every ``pymachine`` module comes from the staged ``lib/``, not the
checkout.  Dependencies (cryptography, paramiko, filelock) come from this venv:
the real tree carries win_amd64 wheels that cannot load here.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pymachine.installer import windows
from pymachine.installer.lock import Component
from pymachine.installer.stage import stage
from test_windows_cli import BLOCKER, TLSEngine

from tests.installer.standins import http_root, repo_pure_wheels, wheel_from_installed  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def staged(tmp_path: Path) -> Path:
    core = tmp_path / "core"
    windows._add_pymachine(core, REPO)  # what build_exe does for the $INSTDIR tree
    return core


def launcher_argv(core: Path, args: list[str]) -> list[str]:
    """``bin/pymachine.cmd``'s command line with the host python for ``python\\python.exe``."""
    text = (core / "bin" / "pymachine.cmd").read_bytes().decode()
    prefix = '@"%~dp0..\\python\\python.exe" '
    assert text.startswith(prefix) and text.endswith(" %*\r\n"), text
    middle = text[len(prefix):-len(" %*\r\n")].split()
    assert middle == ["-m", "pymachine"]
    return [sys.executable, *middle, *args]


def run(core: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MACHINE_", "DOCKER_"))}
    # The embeddable python's ._pth names ..\lib; PYTHONPATH stands in for it here.
    env.update(PYTHONPATH=os.pathsep.join([str(BLOCKER), str(core / "lib")]),
               MACHINE_STORAGE_PATH=str(tmp_path / "store"), HOME=str(tmp_path), SHELL="")
    return subprocess.run(launcher_argv(core, list(args)), env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)


def test_staged_cli_is_the_staged_copy_under_the_blocker(staged: Path, tmp_path: Path) -> None:
    probe = ("import os, sys, pymachine.machine.cli.main, pymachine.machine.certs, pymachine.machine.store\n"
             "print(os.environ['PYMACHINE_POSIX_BLOCKED'])\n"
             "for m in sorted(sys.modules):\n"
             "    f = getattr(sys.modules[m], '__file__', None)\n"
             "    if m.startswith('pymachine') and f: print(f)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([str(BLOCKER), str(staged / "lib")])
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "1" and len(lines) > 5
    for path in lines[1:]:
        assert Path(path).is_relative_to(staged / "lib"), path


def test_staged_cli_version_ls_create_env(staged: Path, tmp_path: Path) -> None:
    res = run(staged, tmp_path, "--version")
    assert res.returncode == 0 and res.stdout.startswith("pymachine version 0.1.0"), res.stderr
    res = run(staged, tmp_path, "ls")
    assert res.returncode == 0 and res.stdout.split() == ["NAME", "ACTIVE", "DRIVER", "STATE", "URL", "SWARM",
                                                          "DOCKER", "ERRORS"], res.stderr
    res = run(staged, tmp_path, "create", "-d", "none", "--url", "tcp://127.0.0.1:1", "win")
    assert res.returncode == 0, res.stderr
    machine_dir = tmp_path / "store" / "machines" / "win"
    engine = TLSEngine(machine_dir)
    try:
        config = json.loads((machine_dir / "config.json").read_text())
        config["Driver"]["URL"] = f"tcp://127.0.0.1:{engine.port}"
        (machine_dir / "config.json").write_text(json.dumps(config))
        res = run(staged, tmp_path, "env", "--shell", "powershell", "win")
        assert res.returncode == 0, res.stderr
        assert f'$Env:DOCKER_HOST = "tcp://127.0.0.1:{engine.port}"\n' in res.stdout
        assert f'$Env:DOCKER_CERT_PATH = "{machine_dir}"\n' in res.stdout
        # python -m pymachine: the hint names the command, not lib\pymachine\__main__.py
        assert res.stdout.endswith("# & pymachine env --shell powershell win | Invoke-Expression\n")
        assert engine.handshakes >= 1
    finally:
        engine.close()
    res = run(staged, tmp_path, "ls", "-q")
    assert res.returncode == 0 and res.stdout == "win\n"


def test_staged_tree_writes_a_seed_iso_with_its_own_pycdlib(staged: Path, tmp_path: Path,
                                                             http_root) -> None:  # noqa: F811 (fixture)
    """The default virtualbox/qemu/vmware/hyperv creates write a seed ISO (machine.seed, pycdlib).
    The repo lock's pure-Python wheels (re-made from this venv, served over loopback, pinned) are
    staged into ``lib`` by the installer's own code: pycdlib must be among them and load from there."""
    www, base = http_root
    comps = []
    for dist, dest in repo_pure_wheels("windows"):
        filename, data = wheel_from_installed(dist)
        (www / filename).write_bytes(data)
        comps.append(Component(f"wheel-{dist}", filename.split("-")[1], f"{base}/{filename}", len(data),
                               hashlib.sha256(data).hexdigest(), dest, unpack="zip"))
    stage(comps, staged, tmp_path / "cache")
    probe = ("import os, sys, pycdlib\n"
             "from pymachine.machine import seed\n"
             "print(os.environ['PYMACHINE_POSIX_BLOCKED']); print(pycdlib.__file__); print(seed.__file__)\n"
             "seed.write_seed_iso(sys.argv[1], hostname='win', user='docker', ssh_pubkey='ssh-ed25519 AAAA k',\n"
             "                    proxy=None, instance_id='i-1')\n"
             "print(' '.join(sorted(seed.read_seed_iso(sys.argv[1]))))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([str(BLOCKER), str(staged / "lib")])
    iso = tmp_path / "seed.iso"
    out = subprocess.run([sys.executable, "-c", probe, str(iso)], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    blocked, pycdlib_file, seed_file, names = out.stdout.splitlines()
    assert blocked == "1"
    assert Path(pycdlib_file).is_relative_to(staged / "lib") and Path(seed_file).is_relative_to(staged / "lib")
    assert "user-data" in names.split() and iso.read_bytes()[0x8001:0x8006] == b"CD001"
