"""``python -m pymachine``: the ``pymachine`` command."""

import sys

from pymachine.machine.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
