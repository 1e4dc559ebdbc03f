"""A machine's TLS files on the local side: the client certificates copied into its
directory (DOCKER_CERT_PATH) and its server certificate, issued for its address.

Its own module so creation, provisioning and ``regenerate-certs`` share one
implementation without importing each other or the Host layer (``Machine`` is only a
type here).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pymachine.machine import layout
from pymachine.machine.atomic import write_atomic

if TYPE_CHECKING:  # pragma: no cover
    from pymachine.machine.host import Machine


def copy_client_certs(machine: Machine) -> None:
    """Put ca.pem, cert.pem and key.pem in the machine dir: it is DOCKER_CERT_PATH."""
    tls = machine.tls()
    for src, dst, mode in (
        (tls.ca_cert, layout.CA_CERT, 0o600),
        (tls.client_cert, layout.CLIENT_CERT, 0o600),
        (tls.client_key, layout.CLIENT_KEY, 0o600),
    ):
        # A new file renamed into place: a symlink planted at the target is replaced, not
        # followed (copyfile would write the client key wherever it points).
        write_atomic(machine.dir / dst, Path(src).read_bytes(), mode=mode)


def server_cert_sans(machine: Machine) -> list[str]:
    """The names the server certificate must carry: the user's ``--tls-san``s and the
    machine's address (the ``none`` driver's is the host of its URL)."""
    from urllib.parse import urlsplit

    sans = list(machine.host.auth_options.get("ServerCertSANs") or [])
    url = machine.driver.url() if machine.driver.name == "none" else ""
    host = urlsplit(url).hostname if url else machine.driver.ip()
    if host:
        sans.append(host)
    return sans


def issue_server_cert(machine: Machine, extra_sans: Sequence[str] = ()) -> None:
    """(Re)issue the machine's server certificate for its current address
    (and ``extra_sans``: the addresses a seeded machine may get when it boots).

    docker-machine gave ``none`` machines no server cert; pymachine issues one
    so a user can start their own engine with it and ``env`` just works.
    """
    from pymachine.machine import certs

    tls = machine.tls()
    paths = certs.CertPaths(tls.ca_cert, tls.ca_key, tls.client_cert, tls.client_key)
    org = f"{certs.current_user_org()}.{machine.name}"
    certs.generate_server_cert(
        paths, machine.dir / layout.SERVER_CERT, machine.dir / layout.SERVER_KEY, org,
        [*server_cert_sans(machine), *extra_sans], swarm_master=bool(machine.host.swarm_options.get("Master")),
    )
