"""The one atomic file write: readers see the old file or the whole new one, never half.

Used for everything small pymachine writes that must survive a crash: the
store's config.json and state, certificates and keys, known_hosts, Docker
contexts, seeds.  The temp file lives in the target's directory (so
``os.replace`` is a rename on one filesystem), is created 0600 by ``mkstemp``
(key material is never briefly world-readable, whatever the umask), gets its
final mode before it is renamed where the OS has POSIX modes (machine.filemodes), and is fsynced,
then the directory too where the OS allows it.  Portable: Windows has no
``os.fchmod`` before 3.13 and no directory fsync; both are skipped there.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pymachine.machine.filemodes import set_fd_mode


def fsync_dir(directory: Path) -> None:
    """Make a rename durable; not every OS or filesystem allows fsync on a directory."""
    if os.name == "nt":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o600, *,
                 dir_mode: int | None = 0o700) -> None:
    """Write ``data`` to ``path`` atomically with file mode ``mode``.

    Missing parent directories are created with ``dir_mode`` (None: do not
    create them).  On any error the temp file is removed and the old file,
    if any, is left as it was.
    """
    target = Path(path)
    if dir_mode is not None:
        target.parent.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    import tempfile  # here, not at import: ls and env load this module and rarely write

    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            set_fd_mode(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)
