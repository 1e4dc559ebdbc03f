"""Can the Docker client reach a machine? The check behind ``env``, ``config`` and ``use``.

As libmachine's ``check.DefaultConnChecker``: work out the engine (or swarm)
URL and complete a TLS handshake with the machine's certificates, so a broken
setup is reported before ``docker`` fails later.  A library call, so a Python
caller gets what the commands do, including the re-provisioning of a machine
whose address changed.  On ``env``'s hot path: standard library and
pymachine's light modules at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pymachine.machine import urls
from pymachine.machine.errors import MachineError

if TYPE_CHECKING:  # pragma: no cover
    from pymachine.machine.host import Machine
    from pymachine.machine.store import Store

Log = Callable[[str], None]
PROGRAM = "pymachine"  # the command named in the regenerate-certs hint (the CLI's ARGV0)


def check_connection(store: Store, name: str, swarm: bool = False, log: Log | None = None) -> tuple[Machine, str]:
    """Load the machine, work out DOCKER_HOST and prove the TLS handshake works.

    A provisionable machine whose address is no longer in its server
    certificate (a DHCP lease changed) gets a new certificate and is
    re-provisioned first, reporting through ``log``.
    """
    from pymachine.machine import dockerapi
    from pymachine.machine.host import Machine

    machine = Machine.load(store, name)
    url = machine.url()
    if not url:
        raise MachineError("Host is not running")
    if machine.driver.provisionable:
        ip = machine.driver.ip()
        if ip and not cert_covers(machine.tls().server_cert, ip):
            machine = regenerate_for_new_ip(store, name, ip, log or (lambda _m: None))
            url = machine.url()
    if swarm:
        url = swarm_url(machine, url)
    tls = machine.tls()
    try:
        dockerapi.tls_handshake(url, tls.ca_cert, tls.client_cert, tls.client_key, timeout=20.0)
    except (OSError, ValueError) as exc:
        host = url.split("://", 1)[-1]
        raise MachineError(
            "Error checking TLS connection: Error checking and/or regenerating the certs: "
            f'There was an error validating certificates for host "{host}": {dockerapi.describe_error(exc)}\n'
            f"You can attempt to regenerate them using '{PROGRAM} regenerate-certs [name]'.\n"
            "Be advised that this will trigger a Docker daemon restart which might stop running containers."
        ) from None
    return machine, url


def cert_covers(cert_path: Path, host: str) -> bool:
    """True when the PEM certificate's SANs name ``host``, or when the file cannot be
    read (then the TLS check below reports the real problem).

    Uses the stdlib's private certificate decoder, not ``cryptography``: ``env``
    runs at every shell prompt and must stay cheap; ``machine.certs`` is the
    fallback should that private API ever go away.
    """
    import ipaddress
    import ssl

    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        from pymachine.machine.certs import cert_covers_host

        try:
            return cert_covers_host(cert_path, host)
        except (OSError, ValueError):
            return True
    try:
        sans = decode(str(cert_path)).get("subjectAltName", ())
    except (OSError, ValueError, ssl.SSLError):
        return True
    try:
        wanted_ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        wanted = host.rstrip(".").lower()
        return any(kind == "DNS" and value.rstrip(".").lower() == wanted for kind, value in sans)
    for kind, value in sans:
        if kind == "IP Address":
            try:
                if ipaddress.ip_address(value.strip()) == wanted_ip:
                    return True
            except ValueError:
                continue
    return False


def regenerate_for_new_ip(store: Store, name: str, ip: str, log: Log) -> Machine:
    """Re-issue the server certificate for the machine's new address and re-provision,
    under the machine's lock: docker-machine left this to a manual regenerate-certs."""
    from pymachine.machine import provision
    from pymachine.machine.host import Machine

    with store.lock(name):
        machine = Machine.load(store, name)  # another command may have done it meanwhile
        if cert_covers(machine.tls().server_cert, ip):
            return machine
        log(f'Machine "{name}" has a new IP address ({ip}); regenerating its certificates...')
        try:
            provision.reprovision(machine, log)
        except MachineError as exc:
            raise MachineError(
                f'Error regenerating the certificates of machine "{name}" for {ip}: {exc}'
            ) from None
    return machine


def swarm_url(machine: Machine, url: str) -> str:
    opts = machine.host.swarm_options
    if not opts.get("Master"):
        raise MachineError(
            f'"{machine.name}" is not a swarm master. The --swarm flag is intended for use with swarm masters'
        )
    return urls.swarm_url(url, opts.get("Host") or "")
