"""Build a machine's ``HostOptions`` exactly as Docker Machine 0.16 wrote them.

Key order, zero values and the ``null`` vs ``[]`` choices follow configs
written by docker-machine 0.16 (see tests/fixtures/dm016-store), so a store
pymachine writes is one docker-machine can load, and the other way round.
"""

from __future__ import annotations

import os
from typing import Any

DEFAULT_INSTALL_URL = "https://get.docker.com"
DEFAULT_SWARM_HOST = "tcp://0.0.0.0:3376"
DEFAULT_SWARM_IMAGE = "swarm:latest"
DEFAULT_ENGINE_PORT = 2376


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
    return {
        "ArbitraryFlags": list(arbitrary_flags or []),
        "Dns": None,
        "GraphDir": "",
        "Env": list(env or []),
        "Ipv6": False,
        "InsecureRegistry": list(insecure_registry or []),
        "Labels": list(labels or []),
        "LogLevel": "",
        "StorageDriver": storage_driver,
        "SelinuxEnabled": False,
        "TlsVerify": True,
        "RegistryMirror": list(registry_mirror or []),
        "InstallURL": install_url,
    }


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
        "CaCertPath": ca_cert or os.path.join(certs, "ca.pem"),
        "CaPrivateKeyPath": ca_key or os.path.join(certs, "ca-key.pem"),
        "CaCertRemotePath": "",
        "ServerCertPath": os.path.join(mdir, "server.pem"),
        "ServerKeyPath": os.path.join(mdir, "server-key.pem"),
        "ClientKeyPath": client_key or os.path.join(certs, "key.pem"),
        "ServerCertRemotePath": "",
        "ServerKeyRemotePath": "",
        "ClientCertPath": client_cert or os.path.join(certs, "cert.pem"),
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
