"""The machine layer: store, certificates, drivers, provisioning orchestration and the CLI."""

from pymachine import __version__

__all__ = ["__version__"]
