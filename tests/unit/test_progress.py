"""Progress on a pseudo-terminal (a live line redrawn in place) and without one (lines)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import time
    from pymachine.machine.progress import Task
    with Task("Downloading disk.img", total=4_000_000) as t:
        for _ in range(4):
            time.sleep(0.12)
            t.advance(1_000_000)
    with Task("Waiting for SSH") as w:
        time.sleep(0.25)
        w.tick()
""")


def _run(stderr_fd: int | None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE,
                          stderr=stderr_fd if stderr_fd is not None else subprocess.PIPE,
                          env={**os.environ, "TERM": "xterm"}, timeout=30, check=True)


def test_on_a_terminal_the_line_is_redrawn_in_place() -> None:
    master, slave = pty.openpty()
    try:
        proc = _run(slave)
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        if slave != -1:
            os.close(slave)
        os.close(master)
    text = b"".join(chunks).decode()
    assert proc.stdout == b""  # progress never lands on stdout
    assert text.count("\r\x1b[K") >= 3  # redrawn, not one line per update
    assert "100% 4.0 MB/4.0 MB" in text
    assert "Downloading disk.img: done in " in text and "Waiting for SSH: done in " in text


def test_without_a_terminal_each_step_prints_start_and_end_lines() -> None:
    proc = _run(None)
    lines = proc.stderr.decode().splitlines()
    assert "\r" not in proc.stderr.decode()
    assert lines[0] == "Downloading disk.img..."
    assert lines[1].startswith("Downloading disk.img: done in ") and lines[1].endswith("(4.0 MB)")
    assert lines[2] == "Waiting for SSH..."
    assert lines[3].startswith("Waiting for SSH: done in ")
    assert len(lines) == 4


def test_a_failed_step_says_so() -> None:
    code = ("from pymachine.machine.progress import Task\n"
            "try:\n    with Task('Converting', live=False):\n        raise RuntimeError('x')\n"
            "except RuntimeError:\n    pass\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert proc.stderr.splitlines()[-1].startswith("Converting: failed in ")


def test_a_wait_that_is_already_logged_prints_nothing_off_a_terminal() -> None:
    code = ("from pymachine.machine.progress import Task\n"
            "with Task('Booting', lines=False) as t:\n    t.tick()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert proc.stderr == ""
