"""One-click installers for pymachine, built on Linux from a pinned component lock.

Modules: ``lock`` (the lock file and its refresh from upstream metadata),
``fetch`` (verified, digest-addressed downloads), ``linux`` (.deb and .pyz),
``windows`` (NSIS .exe), ``sums`` (SHA256SUMS + signature), ``quickstart``
(the Docker Quickstart Terminal logic, used by ``pymachine quickstart``).
Run ``python -m pymachine.installer --help``.
"""
