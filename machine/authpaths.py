"""Where a machine's TLS files are, as recorded in its AuthOptions.

docker-machine wrote absolute paths into config.json.  A store that was moved
(another home directory, a copied backup) keeps those stale paths; where a
recorded file is missing but the same file exists in this store, pymachine
uses the store's copy instead of failing, so moved stores keep working.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from pymachine.machine.store import Host, Store


class MachineTLS(NamedTuple):
    ca_cert: Path
    ca_key: Path
    client_cert: Path
    client_key: Path
    server_cert: Path
    server_key: Path
    cert_dir: Path  # DOCKER_CERT_PATH: the machine directory, holding ca.pem/cert.pem/key.pem


def _pick(recorded: str | None, fallback: Path) -> Path:
    if recorded and os.path.exists(recorded):
        return Path(recorded)
    return fallback


def machine_tls(store: Store, host: Host) -> MachineTLS:
    auth = host.auth_options or {}
    certs = store.certs_dir
    mdir = store.machine_dir(host.name)
    return MachineTLS(
        ca_cert=_pick(auth.get("CaCertPath"), certs / "ca.pem"),
        ca_key=_pick(auth.get("CaPrivateKeyPath"), certs / "ca-key.pem"),
        client_cert=_pick(auth.get("ClientCertPath"), certs / "cert.pem"),
        client_key=_pick(auth.get("ClientKeyPath"), certs / "key.pem"),
        server_cert=_pick(auth.get("ServerCertPath"), mdir / "server.pem"),
        server_key=_pick(auth.get("ServerKeyPath"), mdir / "server-key.pem"),
        cert_dir=mdir,
    )
