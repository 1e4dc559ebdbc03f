"""HTTP proxy settings for a machine, and every place they have to be written.

Docker Machine only passed proxies to the daemon through ``--engine-env``;
the package manager, the install script and the Docker client on the host
never saw them (issue #1936 and friends).  pymachine keeps one
``ProxySettings`` value and renders it for each consumer: the daemon's
environment, apt, yum/dnf, zypper, the client's ``~/.docker/config.json`` and
the environment of install commands.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

_NAMES = {
    "http_proxy": ("HTTP_PROXY", "http_proxy"),
    "https_proxy": ("HTTPS_PROXY", "https_proxy"),
    "no_proxy": ("NO_PROXY", "no_proxy"),
}


def _split_hosts(value: str) -> list[str]:
    return [h.strip() for h in value.split(",") if h.strip()]


@dataclass(frozen=True)
class ProxySettings:
    """Proxy URLs and the NO_PROXY list (comma separated, as curl and Go read it)."""

    http_proxy: str = ""
    https_proxy: str = ""
    no_proxy: str = ""

    @property
    def is_set(self) -> bool:
        """True when a proxy URL is configured (NO_PROXY alone changes nothing)."""
        return bool(self.http_proxy or self.https_proxy)

    # -- sources -----------------------------------------------------------

    @classmethod
    def from_engine_env(cls, env_list: Iterable[str] | None) -> ProxySettings:
        """Read ``--engine-env K=V`` entries, accepting either case.

        The upper-case name wins when both are given, since that is the
        spelling Docker's documentation and Docker Machine's docs use.
        """
        found: dict[str, str] = {}
        for item in env_list or ():
            key, sep, value = item.partition("=")
            if sep:
                found[key.strip()] = value
        return cls(**{field: _first(found, names) for field, names in _NAMES.items()})

    @classmethod
    def from_user_environment(cls, environ: Mapping[str, str]) -> ProxySettings:
        """Copy the user's own proxy variables (opt-in by the caller).

        Lower case wins here, as in curl and Python's urllib, which is what
        the user's own tools already obey.
        """
        return cls(
            **{field: _first(environ, (lower, upper)) for field, (upper, lower) in _NAMES.items()}
        )

    @staticmethod
    def merged(explicit: ProxySettings | None, engine_env: ProxySettings | None) -> ProxySettings:
        """Field by field: an explicit setting wins over one from ``--engine-env``."""
        a = explicit or ProxySettings()
        b = engine_env or ProxySettings()
        return ProxySettings(
            http_proxy=a.http_proxy or b.http_proxy,
            https_proxy=a.https_proxy or b.https_proxy,
            no_proxy=a.no_proxy or b.no_proxy,
        )

    def with_no_proxy_hosts(self, *hosts: str) -> ProxySettings:
        """Append hosts to NO_PROXY, keeping order and dropping duplicates and blanks.

        Used to keep the machine's own IP, localhost and 127.0.0.1 off the
        proxy, so a registry or the engine on the machine is reached directly.
        """
        current = _split_hosts(self.no_proxy)
        seen = {h.lower() for h in current}
        for host in hosts:
            host = (host or "").strip()
            if host and host.lower() not in seen:
                current.append(host)
                seen.add(host.lower())
        return replace(self, no_proxy=",".join(current))

    # -- renderings --------------------------------------------------------

    def daemon_env(self) -> dict[str, str]:
        """Environment for dockerd: both spellings, because Go reads upper and
        some helpers (git, curl in build steps) only read lower case."""
        return self.shell_env()

    def shell_env(self) -> dict[str, str]:
        """Environment for commands run during the install (apt, curl, pacman, apk)."""
        env: dict[str, str] = {}
        for field, (upper, lower) in _NAMES.items():
            value = getattr(self, field)
            if value:
                env[upper] = value
                env[lower] = value
        return env

    def apt_conf(self) -> str:
        """Content for ``/etc/apt/apt.conf.d/``; apt ignores environment under sudo."""
        lines = []
        if self.http_proxy:
            lines.append(f'Acquire::http::Proxy "{_apt_escape(self.http_proxy)}";')
        if self.https_proxy:
            lines.append(f'Acquire::https::Proxy "{_apt_escape(self.https_proxy)}";')
        for host in _split_hosts(self.no_proxy):
            # apt has no NO_PROXY list; a per-host DIRECT entry is its equivalent.
            if "/" in host or "*" in host or ":" in host:
                continue
            host = host.lstrip(".")
            if self.http_proxy:
                lines.append(f'Acquire::http::Proxy::{host} "DIRECT";')
            if self.https_proxy:
                lines.append(f'Acquire::https::Proxy::{host} "DIRECT";')
        return "".join(line + "\n" for line in lines)

    def yum_conf_lines(self) -> list[str]:
        """``[main]`` lines for yum/dnf, which take one proxy for every scheme."""
        url = self.https_proxy or self.http_proxy
        return [f"proxy={url}"] if url else []

    def client_config_proxies(self) -> dict[str, str]:
        """The ``proxies.default`` object of the Docker client's ``config.json``."""
        out: dict[str, str] = {}
        if self.http_proxy:
            out["httpProxy"] = self.http_proxy
        if self.https_proxy:
            out["httpsProxy"] = self.https_proxy
        if self.no_proxy:
            out["noProxy"] = self.no_proxy
        return out

    # -- persistence (pymachine's own key in config.json) ------------------

    def to_json(self) -> dict[str, str]:
        return {"HttpProxy": self.http_proxy, "HttpsProxy": self.https_proxy, "NoProxy": self.no_proxy}

    @classmethod
    def from_json(cls, data: Mapping[str, object] | None) -> ProxySettings:
        data = data or {}
        return cls(
            http_proxy=str(data.get("HttpProxy") or ""),
            https_proxy=str(data.get("HttpsProxy") or ""),
            no_proxy=str(data.get("NoProxy") or ""),
        )


def redact_url(value: str) -> str:
    """``scheme://user:PASS@host`` -> ``scheme://user:****@host`` (a bare ``token@`` too).

    Values without credentials come back unchanged, so ``redact_url(v) != v`` says
    whether ``v`` carries a secret.  Parsed by hand: urllib is not needed here.
    """
    scheme, sep, rest = value.partition("://")
    if not sep:
        return value
    last = rest.rfind("@")
    if last < 0:
        return value
    if any(c in rest[last + 1:] for c in "/?#"):
        # RFC 3986: the authority ends at the first "/", "?" or "#".
        end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
        last = rest.rfind("@", 0, end)
        if last < 0:
            return value
    # Otherwise the last "@" ends the userinfo, even when an unencoded "/" or "@" sits
    # in the password: showing too little beats printing part of a secret.
    userinfo = rest[:last]
    if not userinfo:
        return value
    user, colon, _password = userinfo.partition(":")
    shown = f"{user}:{REDACTED}" if colon else REDACTED
    return f"{scheme}://{shown}{rest[last:]}"


REDACTED = "****"


def _first(mapping: Mapping[str, str], names: Iterable[str]) -> str:
    for name in names:
        value = mapping.get(name)
        if value:
            return value
    return ""


def _apt_escape(value: str) -> str:
    if '"' in value or "\n" in value:
        raise ValueError(f"proxy URL not usable in apt configuration: {redact_url(value)!r}")
    return value
