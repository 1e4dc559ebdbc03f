"""Make this interpreter look like Windows CPython to imports: POSIX-only modules are missing.

Loaded by ``site`` when this folder is on PYTHONPATH (tests/windows puts it there
for every pymachine process it starts).  What is simulated, and only this:

* ``fcntl``, ``termios``, ``pwd``, ``grp``, ``resource`` (and ``syslog``,
  ``readline``, which Windows CPython lacks too) raise ImportError, as on
  Windows; so do ``tty`` and ``pty`` through their ``termios`` import;
* the ``os`` functions that Windows CPython (before 3.13) does not have are
  removed: ``fchmod``, ``fchown``, ``lchown``, and ``getuid``, ``geteuid``,
  ``getgid``, ``getegid`` except under PYMACHINE_BLOCKER_HARNESS=1 (pytest itself).

Path syntax, ``os.name``, ``sys.platform``, signals and the filesystem stay
Linux's: the Windows branches of pymachine's path, shell and ssh logic are unit
tests that pass the platform in.  ``PYMACHINE_POSIX_BLOCKED=1`` is set so a
process can tell it runs simulated.
"""

from __future__ import annotations

import os
import sys

BLOCKED = frozenset({"fcntl", "termios", "pwd", "grp", "resource", "syslog", "readline"})
REMOVED_OS = ("fchmod", "fchown", "lchown")
# Also gone on Windows, but pytest's own tmp_path code calls them on Linux: removed in
# pymachine processes, kept when PYMACHINE_BLOCKER_HARNESS=1 (an in-process pytest run).
REMOVED_OS_OUTSIDE_HARNESS = ("getuid", "geteuid", "getgid", "getegid")


class _PosixBlocker:
    """A meta-path finder that refuses the modules Windows CPython does not ship."""

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201 - importlib protocol
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (POSIX-only: blocked to simulate Windows)",
                                      name=name)
        return None


def install() -> None:
    already = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    if already:  # nothing at interpreter start should have pulled these in
        raise RuntimeError(f"POSIX-only modules imported before the blocker: {already}")
    sys.meta_path.insert(0, _PosixBlocker())
    removed = REMOVED_OS
    if os.environ.get("PYMACHINE_BLOCKER_HARNESS") != "1":
        removed += REMOVED_OS_OUTSIDE_HARNESS
    for name in removed:
        if hasattr(os, name):
            delattr(os, name)
    os.environ["PYMACHINE_POSIX_BLOCKED"] = "1"


install()
