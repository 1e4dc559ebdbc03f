"""One portable exclusive file lock: machine configs, the CA bootstrap and image builds.

Built on the ``filelock`` library (``fcntl.flock`` on Unix, ``msvcrt.locking``
on Windows) so the CLI starts where ``fcntl`` does not exist, instead of three
hand-written ``flock`` loops.  The wait is always bounded: after ``timeout``
seconds the caller's one-line message is raised as a :class:`MachineError`.

``filelock`` is imported on first use, not at import time: ``env`` and ``ls``
never take a lock and stay lean.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from pymachine.machine.errors import MachineError

LOCK_FILE_MODE = 0o600


def _file_lock(path: Path):  # noqa: ANN202 - filelock is imported lazily
    with warnings.catch_warnings():
        # Without fcntl or msvcrt (a POSIX-blocked test run) filelock falls back to
        # its marker-file lock and warns once; that is expected there.
        warnings.filterwarnings("ignore", message="only soft file lock is available")
        import filelock
    # The mode only where file modes exist (filelock applies it with os.fchmod).
    mode = LOCK_FILE_MODE if hasattr(os, "fchmod") and os.name != "nt" else -1
    return filelock, filelock.FileLock(os.fspath(path), mode=mode)


@contextlib.contextmanager
def exclusive(
    path: Path,
    *,
    timeout: float,
    busy_message: str,
    poll: float = 0.05,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created 0600 if missing) for the ``with`` body.

    ``on_wait`` is called once if another process holds the lock, before waiting
    for it; after ``timeout`` seconds ``busy_message`` is raised as a MachineError.
    The lock is released when the body ends, however it ends, and at the latest
    when the process dies (the OS drops the lock with the handle).
    """
    filelock, lock = _file_lock(Path(path))
    deadline = time.monotonic() + timeout
    try:
        lock.acquire(timeout=0, poll_interval=poll)
    except filelock.Timeout:
        if on_wait is not None:
            on_wait()
        try:
            lock.acquire(timeout=max(0.0, deadline - time.monotonic()), poll_interval=poll)
        except filelock.Timeout:
            raise MachineError(busy_message) from None
    try:
        yield
    finally:
        lock.release()
