"""Progress of long work on stderr: a live line on a terminal, one line per step otherwise.

Image builds, downloads, conversions, uploads and a create's waits take minutes; a user
should see which step runs and how far it is.  On a terminal a step's line is redrawn in
place (at most 10 times a second); in a log or a pipe each step prints once when it starts
and once when it ends, so CI logs stay short.  Only ``sys``, ``os`` and ``time``: cheap to
import, and nothing on the ``env``/``ls`` path imports it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import BinaryIO, TextIO

_REDRAW = 0.1  # seconds between redraws of a live line


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def stream_is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


class Task:
    """One step: ``label``, optionally a byte total; ``advance(n)`` as work is done."""

    def __init__(self, label: str, total: int | None = None, *, stream: TextIO | None = None,
                 live: bool | None = None, done: int = 0, lines: bool = True) -> None:
        self.label = label
        self.total = total if total and total > 0 else None
        self.done = done
        self.stream = stream if stream is not None else sys.stderr
        self.live = stream_is_terminal(self.stream) if live is None else live
        self.started = time.monotonic()
        self._drawn = 0.0
        self._closed = False
        self.lines = lines  # False: nothing at all off a terminal (the step is already logged)
        if self.live:
            self._draw(force=True)
        elif lines:
            self._line(f"{label}...")

    def _line(self, text: str) -> None:
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def _status(self) -> str:
        elapsed = time.monotonic() - self.started
        parts = [self.label]
        if self.total:
            parts.append(f"{100 * self.done / self.total:3.0f}% {_size(self.done)}/{_size(self.total)}")
        elif self.done:
            parts.append(_size(self.done))
        if self.done and elapsed > 0.5:
            parts.append(f"{_size(self.done / elapsed)}/s")
        parts.append(f"{elapsed:.0f}s")
        return "  ".join(parts)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < _REDRAW:
            return
        self._drawn = now
        try:
            self.stream.write("\r\x1b[K" + self._status())
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def advance(self, n: int) -> None:
        self.done += n
        if self.live:
            self._draw()

    def tick(self) -> None:
        """Redraw the elapsed time of a step with no byte count (a wait)."""
        if self.live:
            self._draw()

    def finish(self, note: str = "done") -> None:
        if self._closed:
            return
        self._closed = True
        elapsed = time.monotonic() - self.started
        summary = f"{self.label}: {note} in {elapsed:.1f}s" + (f" ({_size(self.done)})" if self.done else "")
        if self.live:
            try:
                self.stream.write("\r\x1b[K" + summary + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass
        elif self.lines:
            self._line(summary)

    def __enter__(self) -> Task:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.finish("done" if exc_type is None else "failed")


class TaskReader:
    """A binary file read through ``task``: each ``read`` advances it by the bytes returned.

    For consumers that pull from a file object (``tarfile``, ``http.client`` bodies), so
    their bytes show on the task without copying the data loop into each caller.
    """

    def __init__(self, raw: BinaryIO, task: Task) -> None:
        self.raw = raw
        self.task = task

    def read(self, n: int = -1) -> bytes:
        block = self.raw.read(n)
        self.task.advance(len(block))
        return block

    def drain(self, chunk: int = 1 << 20) -> None:
        """Read what is left (a tar's trailing padding), so the task ends at the file's size."""
        while self.read(chunk):
            pass
