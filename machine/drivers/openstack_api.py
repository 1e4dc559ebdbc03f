"""Keystone v3 sessions and service calls for the ``openstack`` driver.

One password authentication (project-scoped, by project id or by name plus
domain), the token's catalog for the ``compute``, ``network`` and ``image``
endpoints (interface from ``OS_ENDPOINT_TYPE``, region filter only when one is
set, as gophercloud did), and JSON calls that re-authenticate once on a 401
(an expired token), with 429/5xx retried with backoff by RestClient.

Why not libcloud's OpenStack driver: its default class is the nova-network
1.1 driver, ``OS_AUTH_URL`` ending in ``/v3`` doubles the path, it cannot
scope by project id or take a user domain id, looks endpoints up by fixed
service names in ``RegionOne`` only, authenticates once per service, swallows
unknown floating-IP pools and 404s as None, and its TLS trust is process wide
(no per-machine ``OS_CACERT``/``OS_INSECURE``).  Keystone + Nova + Neutron +
Glance calls here are about fifteen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pymachine.machine.drivers.restclient import HTTPError, RestClient
from pymachine.machine.errors import MachineError

INTERFACES = {"": "public", "publicURL": "public", "adminURL": "admin", "internalURL": "internal"}
_SESSIONS: dict[tuple[str, ...], Session] = {}


class AuthFailed(MachineError):
    """Keystone refused the credentials or the scope."""


def _os_error(status: int, payload: Any, raw: bytes) -> tuple[str, str]:
    """Keystone ``{"error":{...}}``, Nova ``{"<fault>":{...}}``, Neutron ``{"NeutronError":{...}}``."""
    if isinstance(payload, dict):
        for key, value in payload.items():
            if isinstance(value, dict) and value.get("message"):
                return str(value["message"]), str(value.get("type") or value.get("title") or key)
    return raw[:200].decode(errors="replace").strip() or f"HTTP {status}", ""


def identity_base(auth_url: str) -> str:
    """``OS_AUTH_URL`` without a trailing ``/v3`` or ``/v2.0``: ``/v3/auth/tokens`` is appended to it."""
    split = urlsplit(auth_url.strip())
    if split.scheme not in ("http", "https") or not split.hostname:
        raise MachineError(f"--openstack-auth-url must be an http(s) URL, got {auth_url!r}")
    path = split.path.rstrip("/")
    for suffix in ("/v3", "/v2.0"):
        path = path.removesuffix(suffix)
    return urlunsplit((split.scheme, split.netloc, path, "", ""))


@dataclass(frozen=True)
class Credentials:
    auth_url: str
    username: str
    password: str
    tenant_id: str = ""
    tenant_name: str = ""
    domain_id: str = ""
    domain_name: str = ""
    region: str = ""
    endpoint_type: str = ""
    cacert: str = ""
    insecure: bool = False

    def key(self) -> tuple[str, ...]:
        """Everything that changes who we are or whom we trust: machines differing in any share no session."""
        return (identity_base(self.auth_url), self.username, self.tenant_id, self.tenant_name, self.domain_id,
                self.domain_name, self.region, self.endpoint_type, self.password, self.cacert, str(self.insecure))

    def auth_body(self) -> dict[str, Any]:
        domain = {"id": self.domain_id} if self.domain_id else {"name": self.domain_name or "Default"}
        if self.tenant_id:
            project: dict[str, Any] = {"id": self.tenant_id}
        else:
            project = {"name": self.tenant_name, "domain": dict(domain)}
        return {"auth": {"identity": {"methods": ["password"],
                                      "password": {"user": {"name": self.username, "domain": domain,
                                                            "password": self.password}}},
                         "scope": {"project": project}}}


class Session:
    """A project-scoped token and its endpoints; ``call`` talks to one service type."""

    def __init__(self, creds: Credentials, timeout: float = 30.0) -> None:
        self.creds = creds
        self.timeout = timeout
        self.token = ""
        self.project_id = ""
        self._catalog: list[dict[str, Any]] = []
        self._clients: dict[str, RestClient] = {}

    def authenticate(self) -> None:
        identity = RestClient(identity_base(self.creds.auth_url), ca_cert=self.creds.cacert,
                              insecure=self.creds.insecure, timeout=self.timeout, error_parser=_os_error,
                              what="Keystone")
        try:
            payload, headers = identity.request("POST", "/v3/auth/tokens", self.creds.auth_body())
        except HTTPError as exc:
            if exc.status in (401, 403, 404):
                raise AuthFailed(
                    f"OpenStack authentication failed at {self.creds.auth_url}: {exc.api_message} "
                    "(check --openstack-username/-password/-tenant-name/-tenant-id/-domain-name)"
                ) from None
            raise
        token = {k.lower(): v for k, v in headers.items()}.get("x-subject-token", "")
        body = (payload or {}).get("token") or {}
        if not token:
            raise AuthFailed("Keystone answered without an X-Subject-Token header (is this a Keystone v3 URL?)")
        self.token = token
        self.project_id = str((body.get("project") or {}).get("id") or self.creds.tenant_id)
        self._catalog = list(body.get("catalog") or [])
        self._clients.clear()

    def endpoint(self, service_type: str) -> str:
        interface = INTERFACES.get(self.creds.endpoint_type)
        if interface is None:
            raise MachineError("Endpoint type must be 'publicURL', 'adminURL' or 'internalURL'")
        found = [ep["url"] for svc in self._catalog if svc.get("type") == service_type
                 for ep in svc.get("endpoints") or []
                 if ep.get("interface") == interface
                 and (not self.creds.region or self.creds.region in (ep.get("region"), ep.get("region_id")))]
        if not found:
            where = f" in region {self.creds.region}" if self.creds.region else ""
            raise MachineError(f"no {interface} {service_type} endpoint{where} in the OpenStack catalog")
        if len(found) > 1:
            raise MachineError(f"Discovered {len(found)} matching {service_type} endpoints: set --openstack-region")
        return str(found[0])

    def _client(self, service_type: str) -> RestClient:
        if not self.token:
            self.authenticate()
        if service_type not in self._clients:
            self._clients[service_type] = RestClient(
                self.endpoint(service_type), headers=lambda: {"X-Auth-Token": self.token},
                ca_cert=self.creds.cacert, insecure=self.creds.insecure, timeout=self.timeout,
                error_parser=_os_error, what=f"the OpenStack {service_type} API")
        return self._clients[service_type]

    def call(self, service_type: str, method: str, path: str, body: Any = None,
             query: Mapping[str, Any] | None = None, timeout: float | None = None) -> Any:
        """One call; a 401 (token expired or revoked) re-authenticates once and retries."""
        try:
            return self._client(service_type).call(method, path, body, query, timeout) or {}
        except HTTPError as exc:
            if exc.status != 401:
                raise
        self.authenticate()
        return self._client(service_type).call(method, path, body, query, timeout) or {}

    def get(self, service_type: str, path: str, query: Mapping[str, Any] | None = None,
            timeout: float | None = None) -> dict[str, Any] | None:
        try:
            return self.call(service_type, "GET", path, query=query, timeout=timeout)
        except HTTPError as exc:
            if exc.status == 404:
                return None
            raise


def session(creds: Credentials, timeout: float = 30.0) -> Session:
    """A shared session per credentials in this process (``ls`` of many machines authenticates once)."""
    key = creds.key()
    if key not in _SESSIONS:
        _SESSIONS[key] = Session(creds, timeout)
    _SESSIONS[key].timeout = timeout
    return _SESSIONS[key]
