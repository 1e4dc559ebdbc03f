"""Build a machine's ``HostOptions`` exactly as Docker Machine 0.16 wrote them.

Key order, zero values and the ``null`` vs ``[]`` choices follow configs
written by docker-machine 0.16 (tests/integration/test_dm0162_store.py compares
them with a store docker-machine 0.16.2 wrote), so a store pymachine writes is
one docker-machine can load, and the other way round.
"""

from __future__ import annotations

import os
from typing import Any

from pymachine.engine.options import DEFAULT_INSTALL_URL, EngineOptions
from pymachine.machine import layout

DEFAULT_SWARM_HOST = "tcp://0.0.0.0:3376"
DEFAULT_SWARM_IMAGE = "swarm:latest"


def engine_options(
    *,
    arbitrary_flags: list[str] | None = None,
    env: list[str] | None = None,
    insecure_registry: list[str] | None = None,
    labels: list[str] | None = None,
    storage_driver: str = "",
    registry_mirror: list[str] | None = None,
    install_url: str = DEFAULT_INSTALL_URL,
) -> dict[str, Any]:
    """A new machine's ``EngineOptions``; the JSON shape is engine.options' alone."""
    return EngineOptions(
        arbitrary_flags=list(arbitrary_flags or []), env=list(env or []),
        insecure_registry=list(insecure_registry or []), labels=list(labels or []),
        storage_driver=storage_driver, registry_mirror=list(registry_mirror or []),
        install_url=install_url,
    ).to_json()


def swarm_options(
    *,
    is_swarm: bool = False,
    address: str = "",
    discovery: str = "",
    master: bool = False,
    host: str = DEFAULT_SWARM_HOST,
    image: str = DEFAULT_SWARM_IMAGE,
    strategy: str = "spread",
    arbitrary_flags: list[str] | None = None,
    arbitrary_join_flags: list[str] | None = None,
    env: list[str] | None = None,
    experimental: bool = False,
) -> dict[str, Any]:
    return {
        "IsSwarm": is_swarm,
        "Address": address,
        "Discovery": discovery,
        "Agent": is_swarm and not master,
        "Master": master,
        "Host": host,
        "Image": image,
        "Strategy": strategy,
        "Heartbeat": 0,
        "Overcommit": 0,
        "ArbitraryFlags": list(arbitrary_flags or []),
        "ArbitraryJoinFlags": list(arbitrary_join_flags or []),
        "Env": env or None,
        "IsExperimental": experimental,
    }


def auth_options(
    store_path: str,
    name: str,
    *,
    ca_cert: str | None = None,
    ca_key: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    sans: list[str] | None = None,
) -> dict[str, Any]:
    certs = os.path.join(store_path, "certs")
    mdir = os.path.join(store_path, "machines", name)
    return {
        "CertDir": certs,
        "CaCertPath": ca_cert or os.path.join(certs, layout.CA_CERT),
        "CaPrivateKeyPath": ca_key or os.path.join(certs, layout.CA_KEY),
        "CaCertRemotePath": "",
        "ServerCertPath": os.path.join(mdir, layout.SERVER_CERT),
        "ServerKeyPath": os.path.join(mdir, layout.SERVER_KEY),
        "ClientKeyPath": client_key or os.path.join(certs, layout.CLIENT_KEY),
        "ServerCertRemotePath": "",
        "ServerKeyRemotePath": "",
        "ClientCertPath": client_cert or os.path.join(certs, layout.CLIENT_CERT),
        "ServerCertSANs": list(sans or []),
        "StorePath": mdir,
    }


def host_options(engine: dict[str, Any], swarm: dict[str, Any], auth: dict[str, Any]) -> dict[str, Any]:
    return {
        "Driver": "",
        "Memory": 0,
        "Disk": 0,
        "EngineOptions": engine,
        "SwarmOptions": swarm,
        "AuthOptions": auth,
    }
