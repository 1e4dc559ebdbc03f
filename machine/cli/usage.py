"""The CLI's name and its usage error: shared by ``common`` and ``argparsing`` without a cycle.

``argparsing`` (which pays for importing argparse) and ``common`` (which every
command imports, ``env`` included) both need these; keeping them here lets
``common`` import ``argparsing`` lazily and ``argparsing`` never import ``common``.
"""

from __future__ import annotations

from pymachine.machine.errors import MachineError

ARGV0 = "pymachine"


class UsageError(MachineError):
    """Bad command line: one line, exit 1 (docker-machine's codegangsta/cli did the same)."""
