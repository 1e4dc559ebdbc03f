"""A stateful fake of Keystone v3, Nova (2.1), Neutron (v2.0) and Glance (v2) over HTTPS on 127.0.0.1.

No OpenStack can run here, so this serves what the ``openstack`` driver uses,
with the shapes recorded in /work/shared/reference/hyperv-gce-openstack.md
sections 3 and 4.3 (read from keystone, nova and neutron-lib sources):
Keystone's ``POST /identity/v3/auth/tokens`` (201, ``X-Subject-Token``, token
body with a catalog whose endpoints point back at this server), 401 bodies
``{"error":{"code":401,"title":"Unauthorized","message":...}}``; Nova faults
``{"badRequest":{"code":400,"message":...}}`` / ``itemNotFound`` / ``forbidden``
/ ``overLimit`` (+ ``Retry-After``); Neutron ``{"NeutronError":{"type","message","detail"}}``.

Servers go ``BUILD`` -> ``ACTIVE`` after ``build_delay`` (or ``ERROR`` with a
fault "No valid host was found." when ``no_valid_host`` is set) and get a fixed
address (``OS-EXT-IPS:type`` fixed) from ``address_for(server, public_keys)``;
a floating IP bound to the server's port adds a ``floating`` entry with the
same address callback's answer for floating IPs (``floating_for``).  Network
safety: the only addresses ever handed out are the ones those callbacks
return.  Deleting a server takes ``delete_delay`` (status ``DELETED`` in between);
a security group still used by a port cannot be deleted (409 ``SecurityGroupInUse``).

Failure injection: ``fail_next(method, path_prefix, status, fault, message)``,
``drop_response_next(method, path_prefix)`` (done, but the answer is lost),
``rate_limit(n)`` (429 ``overLimit`` with ``Retry-After: 1``), ``expire_tokens()``,
limits (``max_instances``, ``max_cores``), ``no_valid_host``.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from tests.fakes.https import HTTPSFake

USER, PASSWORD, PROJECT, DOMAIN = "demo", "s3cr3t-os-pass", "demo-project", "Default"
PROJECT_ID = "8ca4e0e1b0a44b5d9b3f2b3c1e0c7a11"
FLAVORS = {"1": ("m1.tiny", 512, 1, 1), "2": ("m1.small", 2048, 20, 1), "3": ("m1.medium", 4096, 40, 2)}
IMAGES = {"70a599e0-31e7-49b7-b260-868f441e862b": "debian-12", "a1b2c3d4-0000-4000-8000-000000000001": "cirros"}
PRIVATE_NET, PUBLIC_NET = "3cb9bc59-5699-4588-a4b1-b87f96708bc6", "7a1f4d8e-2f55-4d35-9f2f-1d0a1e0f0a01"
ZONES = ("nova", "az-2")

AddressFor = Callable[[dict[str, Any], list[str]], "str | None"]
NOVA_FAULTS = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound", 409: "conflictingRequest",
               413: "overLimit", 429: "overLimit"}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _nova(status: int, message: str) -> dict[str, Any]:
    return {NOVA_FAULTS.get(status, "computeFault"): {"code": status, "message": message}}


def _neutron(kind: str, message: str) -> dict[str, Any]:
    return {"NeutronError": {"type": kind, "message": message, "detail": ""}}


def _keystone(status: int, title: str, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "title": title, "message": message}}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    token: str


@dataclass
class FakeOpenStack(HTTPSFake):
    """Start with ``with FakeOpenStack(workdir, address_for=...) as fake:``; auth URL is ``fake.auth_url``."""

    workdir: Path
    address_for: AddressFor | None = None
    floating_for: AddressFor | None = None
    build_delay: float = 0.3
    delete_delay: float = 0.2
    max_instances: int = 10
    max_cores: int = 20
    no_valid_host: bool = False
    regions: tuple[str, ...] = ("RegionOne",)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.tokens: dict[str, str] = {}  # token -> project id
        self.servers: dict[str, dict[str, Any]] = {}
        self.keypairs: dict[str, dict[str, Any]] = {}
        self.security_groups: dict[str, dict[str, Any]] = {
            "default-sg": {"id": "default-sg", "name": "default", "description": "Default security group",
                           "project_id": PROJECT_ID, "tenant_id": PROJECT_ID, "security_group_rules": []}}
        self.ports: dict[str, dict[str, Any]] = {}
        self.floatingips: dict[str, dict[str, Any]] = {}
        self.networks = {PRIVATE_NET: {"id": PRIVATE_NET, "name": "private", "router:external": False,
                                       "status": "ACTIVE", "subnets": ["sub-private"], "project_id": PROJECT_ID},
                         PUBLIC_NET: {"id": PUBLIC_NET, "name": "public", "router:external": True,
                                      "status": "ACTIVE", "subnets": ["sub-public"], "project_id": "admin"}}
        self.requests: list[Request] = []
        self._injected: list[list[Any]] = []
        self._rate_limited = 0
        self._dropped: list[tuple[str, str]] = []
        self._builds: dict[str, float] = {}
        self._deletes: dict[str, float] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        return self.serve_https(_Handler, "fake-openstack", "fake-openstack.cloud", "fake-openstack")

    @property
    def auth_url(self) -> str:
        return f"{self.url}/identity/v3"

    # -- test helpers ----------------------------------------------------------------------
    def fail_next(self, method: str, prefix: str, status: int, message: str, times: int = 1) -> None:
        with self._lock:
            self._injected.append([method.upper(), prefix, status, message, times])

    def drop_response_next(self, method: str, prefix: str) -> None:
        """The next matching request takes effect but its answer is lost (the connection closes)."""
        with self._lock:
            self._dropped.append((method.upper(), prefix))

    def rate_limit(self, times: int) -> None:
        with self._lock:
            self._rate_limited = times

    def expire_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def calls(self, method: str | None = None, contains: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if (method is None or r.method == method)
                    and (contains is None or contains in r.path)]

    def add_server(self, name: str) -> dict[str, Any]:
        """A server someone else made, ACTIVE, with no address."""
        with self._lock:
            _status, payload = self._create_server({"name": name, "flavorRef": "1",
                                                   "imageRef": next(iter(IMAGES))}, check_quota=False)
            sid = payload["server"]["id"]
            self._builds.pop(sid, None)
            self.servers[sid]["status"] = "ACTIVE"
            return self.servers[sid]

    def nothing_left(self) -> list[str]:
        """What pymachine-made state remains (empty when everything was cleaned up)."""
        left = [f"server {s['name']}" for s in self.servers.values()]
        left += [f"keypair {k}" for k in self.keypairs]
        left += [f"security group {g['name']}" for g in self.security_groups.values() if g["name"] != "default"]
        left += [f"floating ip {f['floating_ip_address']}" for f in self.floatingips.values()]
        left += [f"port {p['id']}" for p in self.ports.values()]
        return left

    # -- state machine ---------------------------------------------------------------------
    def _tick(self) -> None:
        now = time.monotonic()
        for sid, due in list(self._builds.items()):
            server = self.servers.get(sid)
            if server is None or now < due:
                continue
            del self._builds[sid]
            if self.no_valid_host:
                server.update(status="ERROR", fault={"code": 500, "created": _now(), "message":
                                                     "No valid host was found. There are not enough hosts available."})
                continue
            ip = (
                self.address_for(json.loads(json.dumps(server)), server.pop("_public_keys"))
                if self.address_for
                else None
            )
            port = {"id": str(uuid.uuid4()), "device_id": sid, "network_id": server["_net"], "status": "ACTIVE",
                    "mac_address": f"fa:16:3e:00:00:{next(self._ids) % 256:02x}",
                    "security_groups": list(server["_groups"]),
                    "fixed_ips": [{"subnet_id": "sub-private", "ip_address": ip}] if ip else []}
            self.ports[port["id"]] = port
            net_name = self.networks[server["_net"]]["name"]
            server["addresses"] = {net_name: [{"version": 4, "addr": ip, "OS-EXT-IPS:type": "fixed",
                                               "OS-EXT-IPS-MAC:mac_addr": port["mac_address"]}]} if ip else {}
            server.update(status="ACTIVE", updated=_now())
        for sid, due in list(self._deletes.items()):
            if now >= due:
                del self._deletes[sid]
                self.servers.pop(sid, None)
                for pid in [p for p, port in self.ports.items() if port["device_id"] == sid]:
                    del self.ports[pid]
                    for fip in self.floatingips.values():
                        if fip["port_id"] == pid:
                            fip.update(port_id=None, fixed_ip_address=None, status="DOWN")

    def _public_server(self, server: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in server.items() if not k.startswith("_")}
        for fip in self.floatingips.values():
            port = self.ports.get(fip["port_id"] or "")
            if port and port["device_id"] == server["id"]:
                net = self.networks[port["network_id"]]["name"]
                out["addresses"] = {**out["addresses"], net: [*out["addresses"].get(net, []), {
                    "version": 4, "addr": fip["floating_ip_address"], "OS-EXT-IPS:type": "floating",
                    "OS-EXT-IPS-MAC:mac_addr": port["mac_address"]}]}
        return json.loads(json.dumps(out))

    def _create_server(self, body: dict[str, Any], check_quota: bool = True) -> tuple[int, dict[str, Any]]:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            return 400, _nova(400, "Invalid input for field/attribute name.")
        flavor = FLAVORS.get(str(body.get("flavorRef")))
        if flavor is None:
            return 400, _nova(400, f"Flavor {body.get('flavorRef')} could not be found.")
        if str(body.get("imageRef")) not in IMAGES:
            return 400, _nova(400, "Can not find requested image")
        key = body.get("key_name")
        if key and key not in self.keypairs:
            return 400, _nova(400, "Invalid key_name provided.")
        groups = []
        for group in body.get("security_groups") or [{"name": "default"}]:
            found = next((g for g in self.security_groups.values() if g["name"] == group.get("name")), None)
            if found is None:
                return 400, _nova(400, f"Security group {group.get('name')} not found for project {PROJECT_ID}.")
            groups.append(found["id"])
        nets = body.get("networks")
        if nets:
            net = str(nets[0].get("uuid"))
            if net not in self.networks:
                return 400, _nova(400, f"Network {net} could not be found.")
            if self.networks[net]["router:external"]:
                return 403, _nova(403, f"It is not allowed to create an interface on external network {net}")
        else:
            net = PRIVATE_NET  # only one tenant network: Nova picks it
        zone = body.get("availability_zone")
        if zone and zone not in ZONES:
            return 400, _nova(400, "The requested availability zone is not available")
        user_data = body.get("user_data")
        if user_data is not None and len(str(user_data)) > 65535:
            return 400, _nova(400, "Invalid input for field/attribute user_data.")
        if check_quota:
            if len(self.servers) + 1 > self.max_instances:
                return 403, _nova(403, f"Quota exceeded for instances: Requested 1, but already used "
                                  f"{len(self.servers)} of {self.max_instances} instances")
            if self._cores() + flavor[3] > self.max_cores:
                return 403, _nova(403, f"Quota exceeded for cores: Requested {flavor[3]}, but already used "
                                  f"{self._cores()} of {self.max_cores} cores")
        sid = str(uuid.uuid4())
        link = f"{self.url}/compute/v2.1/servers/{sid}"
        self.servers[sid] = {
            "id": sid, "name": name, "status": "BUILD", "addresses": {}, "created": _now(), "updated": _now(),
            "hostId": "", "tenant_id": PROJECT_ID, "user_id": "u-demo", "metadata": dict(body.get("metadata") or {}),
            "key_name": key, "flavor": {"id": str(body["flavorRef"])}, "image": {"id": str(body["imageRef"])},
            "OS-EXT-AZ:availability_zone": zone or "nova", "config_drive": "True" if body.get("config_drive") else "",
            "security_groups": [{"name": self.security_groups[g]["name"]} for g in groups],
            "links": [{"rel": "self", "href": link}],
            "_public_keys": [self.keypairs[key]["public_key"]] if key else [], "_net": net, "_groups": groups,
            "_user_data": user_data,
        }
        self._builds[sid] = time.monotonic() + self.build_delay
        return 202, {"server": {"id": sid, "links": [{"rel": "self", "href": link}], "OS-DCF:diskConfig": "MANUAL",
                                "security_groups": self.servers[sid]["security_groups"], "adminPass": "Zx8kq2Ln"}}

    def _cores(self) -> int:
        return sum(FLAVORS[s["flavor"]["id"]][3] for s in self.servers.values())

    # -- routing ---------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any,
               token: str) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        with self._lock:
            self.requests.append(Request(method, path, query, body, token))
            if self._rate_limited > 0:
                self._rate_limited -= 1
                return 429, {"overLimit": {"code": 429, "message": "This request was rate-limited.",
                                           "retryAfter": "1"}}, {"Retry-After": "1"}
            body = body if isinstance(body, dict) else {}
            if path == "/identity/v3/auth/tokens" and method == "POST":
                return self._auth(body)
            if path.startswith(("/compute/", "/network/", "/image/")) and token not in self.tokens:
                return 401, _keystone(401, "Unauthorized", "The request you have made requires authentication."), {}
            for inj in self._injected:
                if inj[4] > 0 and inj[0] == method and path.startswith(inj[1]):
                    inj[4] -= 1
                    payload = _neutron("BadRequest", inj[3]) if path.startswith("/network/") else _nova(inj[2], inj[3])
                    return inj[2], payload, {}
            self._tick()
            parts = [p for p in path.split("/") if p]
            if parts[:2] == ["compute", "v2.1"]:
                status, payload = self._nova_route(method, parts[2:], query, body)
            elif parts[:2] == ["network", "v2.0"]:
                status, payload = self._neutron_route(method, parts[2:], query, body)
            elif parts[:2] == ["image", "v2"]:
                status, payload = self._glance_route(method, parts[2:], query)
            else:
                status, payload = 404, _keystone(404, "Not Found", f"({path}): The resource could not be found.")
            drop = next((d for d in self._dropped if d[0] == method and path.startswith(d[1])), None)
            if drop:
                self._dropped.remove(drop)
                return 0, None, {}
            return status, payload, {}

    def _auth(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        unauthorized = (401, _keystone(401, "Unauthorized", "The request you have made requires authentication."),
                        {"WWW-Authenticate": f'Keystone uri="{self.url}/identity"'})
        ident = (body.get("auth") or {}).get("identity") or {}
        user = ((ident.get("password") or {}).get("user")) or {}
        domain = user.get("domain") or {}
        if (ident.get("methods") != ["password"] or user.get("name") != USER or user.get("password") != PASSWORD
                or not (domain.get("name") == DOMAIN or domain.get("id") == "default")):
            return unauthorized
        project = ((body.get("auth") or {}).get("scope") or {}).get("project") or {}
        pdomain = project.get("domain") or {}
        if not (project.get("id") == PROJECT_ID or (project.get("name") == PROJECT and
                                                    (pdomain.get("name") == DOMAIN or pdomain.get("id") == "default"))):
            return unauthorized
        token = f"gAAAAAB{uuid.uuid4().hex}"
        self.tokens[token] = PROJECT_ID

        def service(kind: str, name: str, path: str) -> dict[str, Any]:
            return {"type": kind, "name": name, "id": uuid.uuid4().hex,
                    "endpoints": [{"id": uuid.uuid4().hex, "interface": iface, "region": region, "region_id": region,
                                   "url": f"{self.url}{path}"} for region in self.regions
                                  for iface in ("public", "internal", "admin")]}

        return (
            201,
            {
                "token": {
                    "methods": ["password"],
                    "expires_at": "2099-01-01T00:00:00.000000Z",
                    "issued_at": _now(),
                    "user": {
                        "domain": {"id": "default", "name": DOMAIN},
                        "id": "u-demo",
                        "name": USER,
                        "password_expires_at": None,
                    },
                    "project": {"domain": {"id": "default", "name": DOMAIN}, "id": PROJECT_ID, "name": PROJECT},
                    "roles": [{"id": "r1", "name": "member"}],
                    "is_domain": False,
                    "audit_ids": [uuid.uuid4().hex[:22]],
                    "catalog": [
                        service("identity", "keystone", "/identity/v3"),
                        service("compute", "nova", "/compute/v2.1"),
                        service("network", "neutron", "/network"),
                        service("image", "glance", "/image"),
                    ],
                }
            },
            {"X-Subject-Token": token},
        )

    def _nova_route(self, method: str, parts: list[str], query: dict[str, list[str]],
                    body: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        if method == "GET" and parts == ["flavors", "detail"]:
            return 200, {"flavors": [{"id": fid, "name": n, "ram": ram, "disk": disk, "vcpus": cpus, "swap": "",
                                      "OS-FLV-EXT-DATA:ephemeral": 0, "os-flavor-access:is_public": True}
                                     for fid, (n, ram, disk, cpus) in FLAVORS.items()]}
        if method == "GET" and len(parts) == 2 and parts[0] == "flavors":
            if parts[1] not in FLAVORS:
                return 404, _nova(404, f"Flavor {parts[1]} could not be found.")
            n, ram, disk, cpus = FLAVORS[parts[1]]
            return 200, {"flavor": {"id": parts[1], "name": n, "ram": ram, "disk": disk, "vcpus": cpus, "swap": ""}}
        if method == "GET" and parts == ["os-availability-zone"]:
            return 200, {"availabilityZoneInfo": [{"zoneName": z, "zoneState": {"available": True}, "hosts": None}
                                                  for z in ZONES]}
        if method == "GET" and parts == ["limits"]:
            return 200, {
                "limits": {
                    "rate": [],
                    "absolute": {
                        "maxTotalInstances": self.max_instances,
                        "totalInstancesUsed": len(self.servers),
                        "maxTotalCores": self.max_cores,
                        "totalCoresUsed": self._cores(),
                        "maxTotalRAMSize": 51200,
                        "totalRAMUsed": sum(FLAVORS[s["flavor"]["id"]][1] for s in self.servers.values()),
                        "maxTotalKeypairs": 100,
                        "maxServerMeta": 128,
                    },
                }
            }
        if parts[:1] == ["os-keypairs"]:
            if method == "POST" and len(parts) == 1:
                kp = body.get("keypair") or {}
                name, pub = str(kp.get("name") or ""), str(kp.get("public_key") or "")
                if name in self.keypairs:
                    return 409, _nova(409, f"Key pair '{name}' already exists.")
                if not pub.startswith(("ssh-rsa ", "ssh-ed25519 ", "ecdsa-")):
                    return 400, _nova(400, "Keypair data is invalid: failed to generate fingerprint")
                self.keypairs[name] = {"name": name, "public_key": pub, "fingerprint": "aa:bb:cc", "user_id": "u-demo"}
                return 200, {"keypair": self.keypairs[name]}
            if len(parts) == 2:
                if parts[1] not in self.keypairs:
                    return 404, _nova(404, f"Keypair {parts[1]} not found for user u-demo")
                if method == "GET":
                    return 200, {"keypair": self.keypairs[parts[1]]}
                if method == "DELETE":
                    del self.keypairs[parts[1]]
                    return 202, None
        if parts[:1] == ["servers"]:
            if method == "POST" and len(parts) == 1:
                return self._create_server(body.get("server") or {})
            if method == "GET" and parts == ["servers", "detail"]:
                import re

                wanted = (query.get("name") or [""])[0]  # Nova matches it as a regular expression
                return 200, {"servers": [self._public_server(s) for s in self.servers.values()
                                         if not wanted or re.search(wanted, s["name"])]}
            server = self.servers.get(parts[1]) if len(parts) > 1 else None
            if server is None:
                return 404, _nova(404, f"Instance {parts[1] if len(parts) > 1 else ''} could not be found.")
            if method == "GET" and len(parts) == 2:
                return 200, {"server": self._public_server(server)}
            if method == "DELETE" and len(parts) == 2:
                server["status"] = "DELETED"
                self._builds.pop(server["id"], None)
                self._deletes[server["id"]] = time.monotonic() + self.delete_delay
                return 204, None
            if method == "POST" and parts[2:] == ["action"]:
                return self._server_action(server, body)
        return 404, _nova(404, "The resource could not be found.")

    def _server_action(self, server: dict[str, Any], body: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        status = server["status"]
        if "os-stop" in body:
            if status != "ACTIVE":
                return 409, _nova(
                    409, f"Cannot 'stop' instance {server['id']} while it is in vm_state {status.lower()}"
                )
            server["status"] = "SHUTOFF"
        elif "os-start" in body:
            if status != "SHUTOFF":
                return 409, _nova(
                    409, f"Cannot 'start' instance {server['id']} while it is in vm_state {status.lower()}"
                )
            server["status"] = "ACTIVE"
        elif "reboot" in body:
            if (body["reboot"] or {}).get("type") not in ("SOFT", "HARD"):
                return 400, _nova(400, "Invalid input for field/attribute reboot.")
            server["status"] = "ACTIVE"
        else:
            return 400, _nova(400, f"There is no such action: {next(iter(body), '')}")
        return 202, None

    def _neutron_route(self, method: str, parts: list[str], query: dict[str, list[str]],
                       body: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        def matches(item: dict[str, Any]) -> bool:
            for key, values in query.items():
                if key == "fields":
                    continue
                have = item.get(key)
                if isinstance(have, bool):
                    have = str(have)
                if str(have) not in values and have not in values:
                    return False
            return True

        if method == "GET" and parts == ["networks"]:
            return 200, {"networks": [n for n in self.networks.values() if matches(n)]}
        if method == "GET" and len(parts) == 2 and parts[0] == "networks":
            net = self.networks.get(parts[1])
            return (
                (200, {"network": net})
                if net
                else (404, _neutron("NetworkNotFound", f"Network {parts[1]} could not be found."))
            )
        if method == "GET" and parts == ["ports"]:
            return 200, {"ports": [p for p in self.ports.values() if matches(p)]}
        if parts[:1] == ["security-groups"]:
            if method == "GET" and len(parts) == 1:
                return 200, {"security_groups": [g for g in self.security_groups.values() if matches(g)]}
            if method == "POST" and len(parts) == 1:
                sg = body.get("security_group") or {}
                gid = str(uuid.uuid4())
                self.security_groups[gid] = {"id": gid, "name": str(sg.get("name") or ""),
                                             "description": str(sg.get("description") or ""), "project_id": PROJECT_ID,
                                             "tenant_id": PROJECT_ID, "security_group_rules": []}
                return 201, {"security_group": self.security_groups[gid]}
            if method == "DELETE" and len(parts) == 2:
                if parts[1] not in self.security_groups:
                    return 404, _neutron("SecurityGroupNotFound", f"Security group {parts[1]} does not exist")
                if any(parts[1] in p["security_groups"] for p in self.ports.values()):
                    return 409, _neutron("SecurityGroupInUse", f"Security Group {parts[1]} in use.")
                del self.security_groups[parts[1]]
                return 204, None
        if method == "POST" and parts == ["security-group-rules"]:
            rule = dict(body.get("security_group_rule") or {})
            group = self.security_groups.get(str(rule.get("security_group_id")))
            if group is None:
                return 404, _neutron(
                    "SecurityGroupNotFound", f"Security group {rule.get('security_group_id')} does not exist"
                )
            rule["id"] = str(uuid.uuid4())
            group["security_group_rules"].append(rule)
            return 201, {"security_group_rule": rule}
        if parts[:1] == ["floatingips"]:
            if method == "GET" and len(parts) == 1:
                return 200, {"floatingips": [f for f in self.floatingips.values() if matches(f)]}
            if method == "POST" and len(parts) == 1:
                fip = body.get("floatingip") or {}
                net = self.networks.get(str(fip.get("floating_network_id")))
                if net is None:
                    return 404, _neutron(
                        "NetworkNotFound", f"Network {fip.get('floating_network_id')} could not be found."
                    )
                if not net["router:external"]:
                    return 400, _neutron(
                        "BadRequest", f"Bad floatingip request: Network {net['id']} is not a valid external network."
                    )
                port = self.ports.get(str(fip.get("port_id") or ""))
                if fip.get("port_id") and port is None:
                    return 404, _neutron("PortNotFound", f"Port {fip.get('port_id')} could not be found.")
                server = self.servers.get(port["device_id"]) if port else None
                addr = self.floating_for(self._public_server(server), []) if (self.floating_for and server) else None
                if not addr:
                    return 400, _neutron("ExternalIpAddressExhausted",
                                         f"Unable to find any IP address on external network {net['id']}.")
                fid = str(uuid.uuid4())
                self.floatingips[fid] = {
                    "id": fid,
                    "floating_ip_address": addr,
                    "floating_network_id": net["id"],
                    "port_id": port["id"] if port else None,
                    "status": "ACTIVE",
                    "fixed_ip_address": (port["fixed_ips"] or [{}])[0].get("ip_address") if port else None,
                    "description": str(fip.get("description") or ""),
                    "project_id": PROJECT_ID,
                }
                return 201, {"floatingip": self.floatingips[fid]}
            if method == "DELETE" and len(parts) == 2:
                if self.floatingips.pop(parts[1], None) is None:
                    return 404, _neutron("FloatingIPNotFound", f"Floating IP {parts[1]} could not be found")
                return 204, None
        return 404, _neutron("HTTPNotFound", "The resource could not be found.")

    def _glance_route(
        self, method: str, parts: list[str], query: dict[str, list[str]]
    ) -> tuple[int, dict[str, Any] | None]:
        def image(iid: str) -> dict[str, Any]:
            return {"id": iid, "name": IMAGES[iid], "status": "active", "visibility": "public",
                    "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
                    "disk_format": "qcow2", "container_format": "bare", "self": f"/v2/images/{iid}"}

        if method == "GET" and parts == ["images"]:
            name = (query.get("name") or [None])[0]
            return 200, {"images": [image(i) for i, n in IMAGES.items() if name is None or n == name],
                         "first": "/v2/images", "schema": "/v2/schemas/images"}
        if method == "GET" and len(parts) == 2 and parts[0] == "images":
            if parts[1] not in IMAGES:
                return 404, None  # Glance answers 404 with an HTML body
            return 200, image(parts[1])
        return 404, None


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenStack
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._reply(400, _nova(400, "Malformed request body"), {})
            return
        status, payload, headers = self.fake.handle(self.command, split.path, parse_qs(split.query), body,
                                                    self.headers.get("X-Auth-Token", ""))
        if status == 0:
            self.close_connection = True
            return
        self._reply(status, payload, headers)

    def _reply(self, status: int, payload: dict[str, Any] | None, headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = _serve
