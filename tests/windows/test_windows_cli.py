"""The CLI as Windows CPython would run it, as far as imports go (issue 12, item 3).

Every ``pymachine`` process these tests start has ``tests/windows/blocker`` on
PYTHONPATH: its ``sitecustomize`` makes ``fcntl``, ``termios``, ``pwd``, ``grp`` and
``resource`` unimportable and removes ``os.fchmod`` and the uid/gid calls, as on
Windows.  The everyday CLI tests (``none`` driver create/ls/inspect/rm, store,
bad input, concurrent creates under the lock) are re-run here with that ``pm``;
``env`` and ``config`` are proved against a loopback TLS server that uses the
machine's own server certificate.  Paths, shells and signals stay Linux's (see
test_windows_logic.py for the Windows branches).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PyMachine  # tests/conftest.py (tests/ is on pythonpath)
from pymachine.machine.tlsclient import server_tls_context

# The everyday CLI tests, collected again here so they run with the blocked ``pm`` below.
from tests.integration.test_cli_commands import (  # noqa: F401
    test_debug_flag_and_storage_path_flag,
    test_default_machine_and_queries,
    test_help_and_version,
    test_multi_machine_actions_and_ls_order,
    test_rm_asks_unless_told,
)
from tests.integration.test_cli_input import (  # noqa: F401
    populated,
    test_bad_input_one_line_nonzero_store_unchanged,
    test_concurrent_creates_leave_a_consistent_store,
    test_corrupt_config_is_an_error_row_not_a_crash,
    test_unknown_driver_creates_nothing,
)

BLOCKER = Path(__file__).resolve().parent / "blocker"


def blocked_env(base: dict[str, str]) -> dict[str, str]:
    """``base`` with the blocker first on PYTHONPATH."""
    rest = base.get("PYTHONPATH", "")
    return {**base, "PYTHONPATH": os.pathsep.join(p for p in (str(BLOCKER), rest) if p)}


@pytest.fixture
def pm(tmp_path: Path) -> PyMachine:
    machine = PyMachine(tmp_path)
    machine.env = blocked_env(machine.env)
    return machine


def test_the_blocker_is_in_force_for_the_cli(pm: PyMachine) -> None:
    """Guards the tier itself: a child started like pm's sees no POSIX-only module."""
    probe = (
        "import importlib, os, sys\n"
        "bad = []\n"
        "for m in ('fcntl', 'termios', 'pwd', 'grp', 'resource', 'tty'):\n"
        "    try: importlib.import_module(m); bad.append(m)\n"
        "    except ImportError: pass\n"
        "bad += [f for f in ('fchmod', 'getuid', 'geteuid') if hasattr(os, f)]\n"
        "import pymachine.machine.cli.main, pymachine.machine.store, pymachine.machine.certs\n"
        "import pymachine.engine.images, pymachine.machine.drivers.qemu, pymachine.machine.locking\n"
        "print(os.environ.get('PYMACHINE_POSIX_BLOCKED'), bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=pm.env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1 []"


def test_importing_pymachine_binds_importlib_util(pm: PyMachine) -> None:
    """``import importlib`` does not bind ``importlib.util`` by itself (this venv's Python does
    not load it at start-up, nor need a Windows one): a caller that imports pymachine, or only
    its package, and then writes ``importlib.util.find_spec`` must find it bound."""
    for first in ("pymachine", "pymachine.machine.cli", "pymachine.machine.cli.main"):
        probe = (
            "import importlib, sys\n"
            "assert 'fcntl' not in sys.modules\n"
            f"importlib.import_module({first!r})\n"
            "print(importlib.util.find_spec('pymachine.machine.cli.main') is not None)\n"
        )
        out = subprocess.run([sys.executable, "-c", probe], env=pm.env, capture_output=True, text=True,
                             timeout=120, check=False)
        assert out.returncode == 0 and out.stdout.strip() == "True", (first, out.stderr)


def test_the_cli_imports_with_posix_modules_blocked_when_importlib_util_comes_first(pm: PyMachine) -> None:
    """A script that blocks POSIX-only modules (as on Windows) and reaches for
    ``importlib.util`` before importing anything of pymachine: the venv's start-up has it
    bound (scripts/setup.sh), as this machine's python3 does, and the CLI then imports."""
    probe = (
        "import importlib, sys\n"
        "for name in ('fcntl', 'termios', 'pwd', 'grp', 'resource', 'pty', 'tty'): sys.modules[name] = None\n"
        "spec = importlib.util.find_spec('pymachine.machine.cli.main')\n"
        "module = importlib.import_module(spec.name)\n"
        "print(callable(module.main), sorted(n for n in ('fcntl', 'termios', 'pwd', 'grp') if sys.modules[n]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=pm.env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True []"


class TLSEngine:
    """A loopback TLS endpoint with the machine's server certificate, answering any request 200."""

    def __init__(self, machine_dir: Path) -> None:
        self.ctx = server_tls_context(machine_dir / "ca.pem", machine_dir / "server.pem",
                                      machine_dir / "server-key.pem")
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.handshakes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(5)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    self.handshakes += 1
                    tls.recv(4096)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")
            except (OSError, ssl.SSLError):
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def engine_machine(pm: PyMachine) -> Iterator[tuple[PyMachine, TLSEngine]]:
    """A ``none`` machine whose URL is a TLS endpoint holding the machine's server cert."""
    pm.ok("create", "-d", "none", "--url", "tcp://127.0.0.1:1", "win")
    engine = TLSEngine(pm.store / "machines" / "win")
    config = pm.store / "machines" / "win" / "config.json"
    data = json.loads(config.read_text())
    data["Driver"]["URL"] = f"tcp://127.0.0.1:{engine.port}"
    config.write_text(json.dumps(data))
    try:
        yield pm, engine
    finally:
        engine.close()


def test_none_machine_env_config_inspect_ls_rm(engine_machine: tuple[PyMachine, TLSEngine]) -> None:
    pm, engine = engine_machine
    url = f"tcp://127.0.0.1:{engine.port}"
    cert_dir = str(pm.store / "machines" / "win")

    ps = pm.ok("env", "--shell", "powershell", "win").stdout
    assert ps.splitlines()[:4] == [
        '$Env:DOCKER_TLS_VERIFY = "1"',
        f'$Env:DOCKER_HOST = "{url}"',
        f'$Env:DOCKER_CERT_PATH = "{cert_dir}"',
        '$Env:DOCKER_MACHINE_NAME = "win"',
    ]
    assert ps.endswith("# & pymachine env --shell powershell win | Invoke-Expression\n")
    cmd = pm.ok("env", "--shell", "cmd", "win").stdout
    assert f"SET DOCKER_HOST={url}\n" in cmd and cmd.splitlines()[-1].startswith("REM \t@FOR /f")
    assert pm.ok("env", "-u", "--shell", "powershell").stdout.startswith(
        "Remove-Item Env:\\\\DOCKER_TLS_VERIFY\n")
    config = pm.ok("config", "win").stdout.split()
    assert config[0] == "--tlsverify" and config[-1] == f"-H={url}"
    assert engine.handshakes >= 3  # env twice and config each completed a real TLS handshake

    assert json.loads(pm.ok("inspect", "win").stdout)["Driver"]["URL"] == url
    assert pm.ok("inspect", "-f", "{{.DriverName}} {{.Driver.URL}}", "win").stdout == f"none {url}\n"
    assert pm.ok("ls", "--format", "{{.Name}}:{{.State}}:{{.URL}}").stdout == f"win:Running:{url}\n"
    assert pm.ok("rm", "-y", "win").stdout.endswith("Successfully removed win\n")
    assert pm.ok("ls", "-q").stdout == ""


def test_env_refuses_a_machine_whose_engine_is_down(pm: PyMachine) -> None:
    pm.ok("create", "-d", "none", "--url", "tcp://127.0.0.1:1", "down")
    res = pm("env", "--shell", "cmd", "down")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.startswith("Error checking TLS connection")


def test_store_and_certs_written_without_fchmod(pm: PyMachine) -> None:
    """Certificates are generated and the store is written through the portable paths."""
    pm.ok("create", "-d", "none", "--url", "tcp://127.0.0.1:1", "one")
    certs = pm.store / "certs"
    for name in ("ca.pem", "ca-key.pem", "cert.pem", "key.pem"):
        assert (certs / name).read_bytes().startswith(b"-----BEGIN ")
    assert (pm.store / "machines" / "one" / "server.pem").is_file()
    assert json.loads((pm.store / "machines" / "one" / "config.json").read_text())["Name"] == "one"
    assert pm.ok("ls", "-q").out_lines == ["one"]


def test_every_pymachine_module_imports_without_posix_modules(pm: PyMachine) -> None:
    """No module, drivers and installer included, needs a POSIX-only module at import time."""
    probe = (
        "import importlib, pkgutil\n"
        "bad, count = [], 0\n"
        "for root in ('machine', 'engine', 'provisioners', 'installer'):\n"
        "    pkg = importlib.import_module('pymachine.' + root)\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        count += 1\n"
        "        try:\n"
        "            importlib.import_module(info.name)\n"
        "        except Exception as exc:\n"
        "            bad.append(f'{info.name}: {exc!r}')\n"
        "print(count)\n"
        "print('\\n'.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=pm.env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    count, *bad = out.stdout.splitlines()
    assert int(count) > 50 and [b for b in bad if b] == []
