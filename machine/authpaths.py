"""Where a machine's TLS files are, as recorded in its AuthOptions.

docker-machine wrote absolute paths into config.json.  A store that was moved
(another home directory, a copied backup) keeps those stale paths; where a
recorded file is missing but the same file exists in this store, pymachine
uses the store's copy instead of failing, so moved stores keep working.
The CA and client pair may live outside the store (``--tls-ca-cert`` and
friends); the machine's own files are always found from the store and the
machine's directory name, whatever config.json records.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from pymachine.machine import layout
from pymachine.machine.store import Host, Store


class MachineTLS(NamedTuple):
    ca_cert: Path
    ca_key: Path
    client_cert: Path
    client_key: Path
    server_cert: Path
    server_key: Path
    cert_dir: Path  # DOCKER_CERT_PATH: a directory holding ca.pem/cert.pem/key.pem


CLIENT_FILES = layout.CLIENT_FILES


def _client_dir(mdir: Path, recorded: str | None, certs: Path) -> Path:
    """The machine directory when it holds the client files (provisioning copies them
    there, as docker-machine's did), else the recorded CertDir or this store's certs:
    docker-machine's ``none`` machines never got a copy."""
    for candidate in (mdir, Path(recorded) if recorded else None, certs):
        if candidate is not None and all((candidate / f).is_file() for f in CLIENT_FILES):
            return candidate
    return mdir


def _pick(recorded: str | None, fallback: Path) -> Path:
    if recorded and os.path.exists(recorded):
        return Path(recorded)
    return fallback


def machine_tls(store: Store, host: Host) -> MachineTLS:
    auth = host.auth_options or {}
    certs = store.certs_dir
    mdir = store.machine_dir(host.name)
    return MachineTLS(
        ca_cert=_pick(auth.get("CaCertPath"), certs / layout.CA_CERT),
        ca_key=_pick(auth.get("CaPrivateKeyPath"), certs / layout.CA_KEY),
        client_cert=_pick(auth.get("ClientCertPath"), certs / layout.CLIENT_CERT),
        client_key=_pick(auth.get("ClientKeyPath"), certs / layout.CLIENT_KEY),
        # The server pair is always the machine directory's own (docker-machine never put it
        # elsewhere): a ServerKeyPath edited to name another file is never read and uploaded.
        server_cert=mdir / layout.SERVER_CERT,
        server_key=mdir / layout.SERVER_KEY,
        cert_dir=_client_dir(mdir, auth.get("CertDir"), certs),
    )
