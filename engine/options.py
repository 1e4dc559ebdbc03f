"""Engine options as stored in a machine's ``config.json``.

``EngineOptions`` mirrors Docker Machine 0.16's ``HostOptions.EngineOptions``
key for key and in the same order, so stores written by either tool load in
the other.  Go writes a nil slice as ``null`` and an empty one as ``[]``;
``docker-machine create`` leaves ``Dns`` nil and every other list empty, and
minikube-style stores have more nulls.  We remember which lists were null so
a load/save round trip does not rewrite a file it did not change.

pymachine's own settings (proxy, install source, bundle path) live under one
extra key, ``Pymachine``, that Go's JSON decoder ignores; it is only written
when one of them differs from its default, so a plain machine's file is
byte-for-byte what Docker Machine would write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pymachine.engine.proxy import ProxySettings

DEFAULT_INSTALL_URL = "https://get.docker.com"
INSTALL_SOURCES = ("packages", "script", "bundle", "preinstalled")
DEFAULT_INSTALL_SOURCE = "packages"
EXTENSION_KEY = "Pymachine"

# (JSON key, attribute, kind) in Docker Machine's order.
_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("ArbitraryFlags", "arbitrary_flags", "list"),
    ("Dns", "dns", "list"),
    ("GraphDir", "graph_dir", "str"),
    ("Env", "env", "list"),
    ("Ipv6", "ipv6", "bool"),
    ("InsecureRegistry", "insecure_registry", "list"),
    ("Labels", "labels", "list"),
    ("LogLevel", "log_level", "str"),
    ("StorageDriver", "storage_driver", "str"),
    ("SelinuxEnabled", "selinux_enabled", "bool"),
    ("TlsVerify", "tls_verify", "bool"),
    ("RegistryMirror", "registry_mirror", "list"),
    ("InstallURL", "install_url", "str"),
)
JSON_KEYS = tuple(k for k, _, _ in _FIELDS)


@dataclass
class EngineOptions:
    """Defaults are what ``docker-machine create`` writes for a new machine."""

    arbitrary_flags: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    graph_dir: str = ""
    env: list[str] = field(default_factory=list)
    ipv6: bool = False
    insecure_registry: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    log_level: str = ""
    storage_driver: str = ""
    selinux_enabled: bool = False
    tls_verify: bool = True
    registry_mirror: list[str] = field(default_factory=list)
    install_url: str = DEFAULT_INSTALL_URL
    # pymachine additions
    proxy: ProxySettings = field(default_factory=ProxySettings)
    install_source: str = DEFAULT_INSTALL_SOURCE
    bundle_path: str = ""
    # JSON keys whose (empty) list was null on disk; Docker Machine leaves Dns nil.
    null_lists: frozenset[str] = field(
        default=frozenset({"Dns"}), repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.install_source not in INSTALL_SOURCES:
            raise ValueError(
                f"unknown engine install source {self.install_source!r}; "
                f"expected one of {', '.join(INSTALL_SOURCES)}"
            )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, attr, kind in _FIELDS:
            value = getattr(self, attr)
            if kind == "list":
                out[key] = None if (not value and key in self.null_lists) else list(value)
            else:
                out[key] = value
        ext = self._extension_json()
        if ext:
            out[EXTENSION_KEY] = ext
        return out

    def _extension_json(self) -> dict[str, Any]:
        ext: dict[str, Any] = {}
        if self.proxy != ProxySettings():
            ext["Proxy"] = self.proxy.to_json()
        if self.install_source != DEFAULT_INSTALL_SOURCE:
            ext["InstallSource"] = self.install_source
        if self.bundle_path:
            ext["BundlePath"] = self.bundle_path
        return ext

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> EngineOptions:
        """Load, tolerating missing keys and nulls as Go does (zero values).

        A missing key therefore loads as ``false``/``""``/null, exactly what
        Docker Machine would see, not as the ``create`` defaults.
        """
        data = data or {}
        kwargs: dict[str, Any] = {}
        nulls = set()
        for key, attr, kind in _FIELDS:
            raw = data.get(key)
            if kind == "list":
                if raw is None:
                    nulls.add(key)
                    kwargs[attr] = []
                else:
                    kwargs[attr] = [str(x) for x in raw]
            elif kind == "bool":
                kwargs[attr] = bool(raw)
            else:
                kwargs[attr] = "" if raw is None else str(raw)
        ext = data.get(EXTENSION_KEY) or {}
        source = ext.get("InstallSource") or DEFAULT_INSTALL_SOURCE
        return cls(
            **kwargs,
            proxy=ProxySettings.from_json(ext.get("Proxy")),
            install_source=str(source),
            bundle_path=str(ext.get("BundlePath") or ""),
            null_lists=frozenset(nulls),
        )

    def env_dict(self) -> dict[str, str]:
        """``Env`` entries (``K=V``) as an ordered dict; entries without ``=`` are skipped."""
        out: dict[str, str] = {}
        for item in self.env:
            key, sep, value = item.partition("=")
            if sep and key:
                out[key] = value
        return out

    def effective_proxy(self, *extra_no_proxy: str) -> ProxySettings:
        """Explicit proxy merged over ``--engine-env`` proxies; when a proxy is
        set, ``extra_no_proxy`` hosts (the machine's IP, localhost) are added."""
        merged = ProxySettings.merged(self.proxy, ProxySettings.from_engine_env(self.env))
        if merged.is_set:
            merged = merged.with_no_proxy_hosts(*extra_no_proxy)
        return merged
