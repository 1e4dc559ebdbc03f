"""One-click installers for pymachine, built on Linux from a pinned component lock.

Modules: ``lock`` (the lock file and its refresh from upstream metadata),
``fetch`` (verified, digest-addressed downloads), ``linux`` (.deb and .pyz),
``windows`` (NSIS .exe), ``sums`` (SHA256SUMS + signature).  The Docker
Quickstart Terminal logic is the runtime's (``machine/quickstart.py``): nothing in
the runtime imports this package.
Run ``python -m pymachine.installer --help``.
"""
