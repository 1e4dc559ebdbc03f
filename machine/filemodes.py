"""File modes applied where the OS has them.

Store files are 0600 and directories 0700 on Unix.  Windows has no POSIX
permission bits (the user's profile ACLs protect the store) and no
``os.fchmod`` before Python 3.13, so there the mode is left to the OS.
"""

from __future__ import annotations

import os


def set_fd_mode(fd: int, mode: int) -> None:
    """``os.fchmod(fd, mode)`` where it exists; a no-op where it does not (Windows)."""
    fchmod = getattr(os, "fchmod", None)
    if fchmod is not None and os.name != "nt":
        fchmod(fd, mode)
