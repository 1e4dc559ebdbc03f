"""The one place engine and swarm URLs are built.

Every driver's ``url()`` and every swarm check goes through these, so IPv6
hosts are always bracketed (``tcp://[fd00::5]:2376``) and a machine with no
IP yet is always the same clear error rather than ``tcp://:2376``.  Only
``machine.errors`` is imported: drivers sit below the host layer.
"""

from __future__ import annotations

from pymachine.machine.errors import MachineError

ENGINE_PORT = 2376
SWARM_PORT = 3376


def host_port(host: str, port: int) -> str:
    """``host:port`` with an IPv6 literal bracketed, as Go's ``net.JoinHostPort``."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def engine_url(ip: str, port: int = ENGINE_PORT, machine: str = "") -> str:
    """``tcp://IP:PORT`` of a machine's engine; a missing IP is a MachineError."""
    if not ip:
        who = f'Host "{machine}"' if machine else "The machine"
        raise MachineError(f"{who} has no IP address yet: is it running? (pymachine start/status)")
    return "tcp://" + host_port(ip, port)


def swarm_url(engine: str, swarm_host: str = "") -> str:
    """The swarm master's URL: the engine URL's host on the port of SwarmOptions.Host."""
    from urllib.parse import urlsplit

    try:
        host = urlsplit(engine).hostname or ""
        port = urlsplit(swarm_host or f"tcp://0.0.0.0:{SWARM_PORT}").port or SWARM_PORT
    except ValueError as exc:
        raise MachineError(f"invalid URL {engine!r} or swarm host {swarm_host!r}: {exc}") from None
    return engine_url(host, port)
