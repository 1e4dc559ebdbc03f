"""machine.locking: the one portable lock behind Store.lock, the CA bootstrap and image builds.

The holder is a real second process, so the tests see the OS-level lock and
not a lock object shared inside one interpreter.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pymachine.engine import images
from pymachine.machine import certs
from pymachine.machine.errors import MachineError
from pymachine.machine.locking import exclusive
from pymachine.machine.store import Store

REPO = Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
from pathlib import Path
from pymachine.machine.locking import exclusive
with exclusive(Path(sys.argv[1]), timeout=5, busy_message="holder could not lock"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _hold(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_process_waits_then_times_out_with_the_message(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    holder = _hold(lock, 30)
    waits: list[str] = []
    try:
        started = time.monotonic()
        with (
            pytest.raises(MachineError, match=r"^it is busy$"),
            exclusive(lock, timeout=0.5, busy_message="it is busy", on_wait=lambda: waits.append("w")),
        ):
            pytest.fail("acquired a lock another process holds")
        assert 0.4 < time.monotonic() - started < 5
        assert waits == ["w"]
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_lock_is_taken_once_the_holder_exits_or_dies(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    holder = _hold(lock, 0.5)
    with exclusive(lock, timeout=10, busy_message="busy"):
        assert holder.wait(timeout=10) == 0
    holder = _hold(lock, 60)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    with exclusive(lock, timeout=10, busy_message="busy"):
        pass


def test_uncontended_lock_calls_no_wait_hook_file_is_0600_and_released_on_error(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    with (
        pytest.raises(RuntimeError),
        exclusive(lock, timeout=1, busy_message="busy", on_wait=lambda: pytest.fail("waited")),
    ):
        if hasattr(os, "fchmod"):  # modes exist (not on Windows, nor in tests/windows)
            assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600
        raise RuntimeError("body failed")
    with exclusive(lock, timeout=0.2, busy_message="still held after an error"):
        pass


def test_store_lock_keeps_its_message(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    probe = ("import sys; from pymachine.machine.locking import exclusive\n"
             "with exclusive(sys.argv[1], timeout=0.3, busy_message='other process blocked'): pass")
    with store.lock("m1"):
        other = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "store" / "locks" / "m1.lock")],
                               cwd=REPO, capture_output=True, text=True, timeout=60)
    assert other.returncode != 0 and "other process blocked" in other.stderr
    holder = _hold(tmp_path / "store" / "locks" / "m1.lock", 30)
    try:
        with (
            pytest.raises(MachineError, match=r'^machine "m1" is busy: another pymachine command holds its lock$'),
            store.lock("m1", timeout=0.3),
        ):
            pass
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_cert_lock_keeps_its_message(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    holder = _hold(lock, 30)
    try:
        with (
            pytest.raises(MachineError, match=r"^Timed out after 0s waiting for certificate lock .*\.lock$"),
            certs._exclusive_lock(lock, timeout=0.3),
        ):
            pass
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_image_build_lock_logs_once_and_keeps_its_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "BUILD_LOCK_TIMEOUT", 1.5)
    holder = _hold(tmp_path / ".k.lock", 30)
    logged: list[str] = []
    try:
        with (
            pytest.raises(MachineError, match=r"^timed out waiting for the image build lock .*\.k\.lock$"),
            images._build_lock(tmp_path, "k", logged.append),
        ):
            pass
        assert logged == ["Another process is building this image; waiting for it..."]
    finally:
        holder.kill()
        holder.wait(timeout=10)
