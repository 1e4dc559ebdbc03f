"""Issue 13, items 6 and 10: create is all or nothing, rm wins, environment failures are messages.

Faults are real where they can be: a tiny tmpfs really runs out of space, a
remounted read-only tmpfs really refuses writes, signals are really sent.
Where a fault must land at one exact point, ``inject.py`` wraps the real
``pymachine`` CLI and turns one ``os.replace`` (the OS call every atomic store
write ends with) into ENOSPC or a signal to the process itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

URL = "tcp://127.0.0.1:1"

INJECT = r'''
"""Run pymachine's CLI with one os.replace failing or signalling, at a point named by its target."""
import errno, os, signal, sys

MODE, TARGET = os.environ["INJECT_MODE"], os.environ["INJECT_TARGET"]
real_replace = os.replace
SIGNALS = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sigkill": getattr(signal, "SIGKILL", 9),
           "sigstop": getattr(signal, "SIGSTOP", 19)}


def hit(dst):
    name = os.path.basename(os.fspath(dst))
    return name.startswith(TARGET[:-1]) if TARGET.endswith("*") else name == TARGET


def replace(src, dst, *args, **kwargs):
    if hit(dst):
        if MODE == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(dst))
        after = MODE.endswith("-after")
        if after:
            real_replace(src, dst, *args, **kwargs)
        os.kill(os.getpid(), SIGNALS[MODE.removesuffix("-after")])
        if after:
            return None
    return real_replace(src, dst, *args, **kwargs)


os.replace = replace
# Ctrl-C as at a terminal: a run started in the background (nohup ... &) inherits SIGINT
# ignored, and Python then installs no KeyboardInterrupt handler.
signal.signal(signal.SIGINT, signal.default_int_handler)
from pymachine.machine.cli.main import main

sys.exit(main(sys.argv[1:]))
'''


def tree(root: Path) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for path in sorted(root.rglob("*")):
        if path.name == "pymachine-state.json":
            continue
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[str(path.relative_to(root))] = (stat.S_IMODE(st.st_mode), digest)
    return out


def one_line_error(res) -> str:
    assert res.returncode != 0, res.stdout
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {res.stderr!r}"
    assert "Traceback" not in res.stderr and "OSError" not in res.stderr and "Error: " not in lines[0][:7]
    return lines[0]


def machines(pm) -> list[str]:
    """Everything in machines/, hidden entries (tombs, temp files) included."""
    d = pm.store / "machines"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def ls_rows(pm) -> dict[str, dict]:
    res = pm.ok("ls", "--format", "{{json .}}")
    return {row["Name"]: row for row in (json.loads(x) for x in res.stdout.splitlines() if x.strip())}


def injected(pm, tmp_path: Path, mode: str, target: str, *args: str):
    script = tmp_path / "inject.py"
    script.write_text(INJECT)
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120,
                          env={**pm.env, "INJECT_MODE": mode, "INJECT_TARGET": target}, check=False)
    return proc


# -- item 6: create is all or nothing ------------------------------------------------------------


def test_tls_san_that_cannot_be_certified_is_refused_before_anything_is_made(pm):
    pm.ok("create", "-d", "none", "--url", URL, "first")
    before = tree(pm.store)
    res = pm("create", "-d", "none", "--url", URL, "--tls-san", "bücher.example", "m")
    assert "xn--bcher-kva.example" in one_line_error(res)
    assert tree(pm.store) == before
    pm.ok("create", "-d", "none", "--url", URL, "--tls-san", "xn--bcher-kva.example", "m")


def test_disk_full_while_issuing_the_server_cert_rolls_back(pm, tmp_path):
    pm.ok("create", "-d", "none", "--url", URL, "first")
    before = tree(pm.store)
    res = injected(pm, tmp_path, "enospc", "server.pem", "create", "-d", "none", "--url", URL, "m")
    assert "No space left on device" in one_line_error(res)
    assert tree(pm.store) == before  # nothing of m, no temp file, no tomb
    pm.ok("create", "-d", "none", "--url", URL, "m")  # a retry is not blocked
    assert ls_rows(pm)["m"]["State"] == "Running"


@pytest.mark.parametrize("mode", ["sigint", "sigterm"])
def test_interrupted_create_rolls_back(pm, tmp_path, mode):
    pm.ok("create", "-d", "none", "--url", URL, "first")
    before = tree(pm.store)
    res = injected(pm, tmp_path, mode, "server.pem", "create", "-d", "none", "--url", URL, "m")
    assert res.returncode == 130, res.stderr
    assert "Traceback" not in res.stderr
    assert tree(pm.store) == before


def test_killed_create_shows_as_interrupted_not_running(pm, tmp_path):
    pm.ok("create", "-d", "none", "--url", URL, "first")
    res = injected(pm, tmp_path, "sigkill", "server.pem", "create", "-d", "none", "--url", URL, "m")
    assert res.returncode == -9
    row = ls_rows(pm)["m"]
    assert row["State"] == "Error" and "create was interrupted" in row["Error"]
    assert "rm -f m" in row["Error"]
    pm.ok("rm", "-f", "m")
    assert machines(pm) == ["first"]


def test_create_in_progress_is_shown_as_such_then_completes(pm, tmp_path):
    """A create paused (SIGSTOP) just before its last write: ls says so, and the create still finishes."""
    import signal
    import time

    pm.ok("create", "-d", "none", "--url", URL, "first")
    script = tmp_path / "inject.py"
    script.write_text(INJECT)
    proc = subprocess.Popen([sys.executable, str(script), "create", "-d", "none", "--url", URL, "m"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**pm.env, "INJECT_MODE": "sigstop", "INJECT_TARGET": "server.pem"})
    try:
        deadline = time.monotonic() + 60
        while "m" not in ls_rows(pm) or "in progress" not in ls_rows(pm)["m"]["Error"]:
            assert proc.poll() is None and time.monotonic() < deadline, "the create never paused"
            time.sleep(0.2)
        row = ls_rows(pm)["m"]
        assert row["Error"] == f"create in progress (pid {proc.pid})"
    finally:
        proc.send_signal(signal.SIGCONT)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    row = ls_rows(pm)["m"]
    assert row["State"] == "Running" and "create" not in row["Error"]


def test_provision_that_succeeds_finishes_an_interrupted_create(pm, tmp_path, monkeypatch):
    """``provision`` is the other way out of an interrupted create: once it succeeds, ls shows no error."""
    from pymachine.machine import provision
    from pymachine.machine.cli.common import Context
    from pymachine.machine.cli.lifecycle import cmd_provision
    from pymachine.machine.drivers.none import NoneDriver
    from pymachine.machine.store import Store

    res = injected(pm, tmp_path, "sigkill", "server.pem", "create", "-d", "none", "--url", URL, "m")
    assert res.returncode == -9
    assert "create was interrupted" in ls_rows(pm)["m"]["Error"]
    # Provisioning over SSH is stood in for; what is tested is what the command does after it succeeds.
    monkeypatch.setattr(NoneDriver, "provisionable", True)
    monkeypatch.setattr(provision, "reprovision", lambda machine, log: None)
    assert cmd_provision(Context(Store(pm.store), environ=dict(pm.env)), ["m"]) == 0
    row = ls_rows(pm)["m"]
    assert row["State"] == "Running" and "create" not in row["Error"]


def test_killed_rm_is_finished_by_the_next_command(pm, tmp_path):
    pm.ok("create", "-d", "none", "--url", URL, "m")
    res = injected(pm, tmp_path, "sigkill-after", ".removing-*", "rm", "-f", "m")
    assert res.returncode == -9
    tombs = [n for n in machines(pm) if n.startswith(".removing-m-")]
    assert tombs and (pm.store / "machines" / tombs[0] / "key.pem").exists()  # secrets left behind
    assert ls_rows(pm) == {}
    assert machines(pm) == []
    assert list((pm.store / "locks").iterdir()) == []


def test_rm_during_provisioning_wins_and_the_create_stops(pm, monkeypatch):
    """A real ``pymachine rm`` runs while create provisions; the create's next save must not undo it."""
    from pymachine.machine import creation, provision
    from pymachine.machine import host as hostmod
    from pymachine.machine.errors import MachineError
    from pymachine.machine.store import Store

    monkeypatch.setenv("HOME", str(pm.home))
    store = Store(pm.store)
    driver = hostmod.prepare_driver(store, "m", "none", {"url": URL})
    driver.provisionable = True  # the create takes the provisioning path, without the machine's lock
    seen = {}

    def provisioning(machine, log, wait=None):
        res = subprocess.run([*pm_cmd(pm), "rm", "-f", "m"], capture_output=True, text=True, timeout=60,
                             env=pm.env, check=False)
        seen["rm"] = res.returncode
        machine.host.extra.setdefault("Pymachine", {})["Step"] = "engine"
        machine.save()  # what every provisioning step does next

    monkeypatch.setattr(provision, "after_create", provisioning)
    with pytest.raises(MachineError, match="removed while it was being created"):
        creation.create_with_driver(store, "m", driver, hostmod.CreateOptions(), log=lambda _m: None)
    assert seen["rm"] == 0
    assert machines(pm) == []


def pm_cmd(pm) -> list[str]:
    from tests.conftest import PYMACHINE

    return [PYMACHINE]


# -- item 10: environment failures are messages ------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs (root only); yields (mountpoint, remount helper)."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)],
                         capture_output=True, check=False)
    if res.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path, leave_pages: int) -> None:
    """Fill the filesystem, then free ``leave_pages`` pages (4 KiB each on tmpfs)."""
    filler = mnt / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave_pages * 4096))


@pytest.mark.parametrize("pages", [0, 1, 2, 3, 4, 5, 6, 7, 12])
def test_full_disk_create_is_all_or_nothing(pm, tmpfs, pages):
    pm.store = tmpfs / "store"
    pm.env["MACHINE_STORAGE_PATH"] = str(pm.store)
    pm.ok("create", "-d", "none", "--url", URL, "seed")
    pm.ok("rm", "-y", "seed")  # the store now has its CA and client cert
    _fill(tmpfs, pages)
    before = tree(pm.store)
    res = pm("create", "-d", "none", "--url", URL, "m")
    if res.returncode == 0:
        assert ls_rows(pm)["m"]["State"] == "Running"
        pm.ok("rm", "-y", "m")
    else:
        line = one_line_error(res)
        assert "No space left on device" in line and str(pm.store) in line
    assert tree(pm.store) == before  # nothing half-made, no temp file, no tomb


def test_read_only_store_is_a_message_and_unchanged(pm, tmpfs):
    pm.store = tmpfs / "store"
    pm.env["MACHINE_STORAGE_PATH"] = str(pm.store)
    pm.ok("create", "-d", "none", "--url", URL, "m")
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    before = tree(pm.store)
    for args in (["create", "-d", "none", "--url", URL, "n"], ["rm", "-f", "m"], ["rm", "-y", "m"],
                 ["regenerate-certs", "-f", "m"], ["regenerate-certs", "-f", "--client-certs", "m"]):
        line = one_line_error(pm(*args))
        assert "read-only" in line.lower() or "not writable" in line, (args, line)
        assert str(pm.store) in line, (args, line)
    assert pm.ok("ls").stdout.count("\n") == 2  # reading still works
    pm.ok("inspect", "m")
    assert tree(pm.store) == before


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


AZURE = ["create", "-d", "azure", "--azure-subscription-id", "00000000-0000-0000-0000-000000000001",
         "--azure-client-id", "00000000-0000-0000-0000-000000000002", "--azure-client-secret", "s",
         "--azure-tenant-id", "t"]


def test_non_https_or_unreachable_authority_is_one_line(pm):
    env = {k: "" for k in pm.env if k.startswith("AZURE_")}
    port = _closed_port()
    res = pm(*AZURE, "--azure-authority-host", f"http://127.0.0.1:{port}", "--azure-arm-endpoint",
             f"https://127.0.0.1:{port}", "az", env=env)
    assert "must be an https:// URL" in one_line_error(res)
    res = pm(*AZURE, "--azure-authority-host", f"https://127.0.0.1:{port}", "--azure-arm-endpoint",
             f"https://127.0.0.1:{port}", "az", env=env, timeout=120)
    line = one_line_error(res)
    assert f"cannot reach the authority https://127.0.0.1:{port}" in line and "connection refused" in line
    assert machines(pm) == []
