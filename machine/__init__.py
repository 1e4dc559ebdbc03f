"""pymachine: create and manage Docker hosts (a Docker Machine 0.16 compatible toolkit)."""

__version__ = "0.1.0"
