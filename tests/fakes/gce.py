"""A stateful fake of the Compute Engine v1 API and Google's OAuth2 token endpoint, over HTTPS on 127.0.0.1.

Google ships no Compute emulator, so this implements what the ``google``
driver uses, with the shapes documented in /work/shared/reference/hyperv-gce-openstack.md
sections 2 and 4.2 (from the Compute v1 reference and recorded answers):
errors ``{"error":{"code","message","errors":[{"message","domain","reason"}]}}``,
long-running operations (``PENDING`` -> ``RUNNING`` -> ``DONE``, zonal ones under
``zones/{z}/operations``, global ones under ``global/operations``) whose effect
lands when they finish, quota failures reported inside a ``DONE`` operation
(``QUOTA_EXCEEDED``, nothing left behind), aggregated listings keyed by
``zones/<z>``, labels filters (``labels.k=v``), and selfLinks on
``https://www.googleapis.com/compute/v1/`` as real GCE emits them.

Auth: ``POST /token`` takes a service-account JWT (RS256, verified against
the key the fake issued; RFC 7523) or a refresh token, and answers
``{"access_token","token_type","expires_in"}``; a bad signature answers 400
``invalid_grant`` "Invalid JWT Signature.".  ``service_account_file()`` writes a
key file whose ``token_uri`` points here.

Network safety: an instance only ever gets the address the test's
``address_for(instance, ssh_keys)`` returns; without one it gets none.

Failure injection: ``fail_next(method, path_prefix, status, reason, message)``,
``drop_response_next(method, path_prefix)`` (done, but the answer is lost),
``lose_answer_next(method, path_prefix)`` (done, but a 503 comes back, as from a proxy),
``rate_limit(n, status=429|403)``, ``quota_cpus`` (the region's CPUS limit).

``requestId`` (the query parameter of every mutating Compute method): a UUID, not the
zero one (else 400); a request repeating one already done is not done again and
answers that first request's operation, as the Compute v1 reference documents
("the server will know to ignore the request if it has already been completed").
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from tests.fakes.https import HTTPSFake

G = "https://www.googleapis.com/compute/v1/projects"
PROJECT = "pm-test-project"
ZONES = {"us-central1-a": "us-central1", "us-central1-b": "us-central1", "europe-west1-b": "europe-west1"}
MACHINE_TYPES = {"n1-standard-1": (1, 3840), "e2-small": (2, 2048), "e2-standard-4": (4, 16384)}
DISK_TYPES = ("pd-standard", "pd-balanced", "pd-ssd")
IMAGES = {"debian-cloud": {"debian-12-bookworm-v20240110": "debian-12", "debian-11-bullseye-v20240110": "debian-11"},
          "ubuntu-os-cloud": {"ubuntu-2204-jammy-v20240111": "ubuntu-2204-lts"}}
EMAIL = "pymachine-test@pm-test-project.iam.gserviceaccount.com"

AddressFor = Callable[[dict[str, Any], list[str]], "str | None"]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime())


def _err(status: int, reason: str, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message,
                      "errors": [{"message": message, "domain": "global", "reason": reason}]}}


def _b64d(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class FakeGCE(HTTPSFake):
    """Start with ``with FakeGCE(workdir, address_for=...) as fake:``."""

    workdir: Path
    address_for: AddressFor | None = None
    project: str = PROJECT
    quota_cpus: float = 24.0
    op_delay: float = 0.2  # seconds an operation stays PENDING/RUNNING
    boot_delay: float = 0.2  # PROVISIONING/STAGING -> RUNNING after the insert is done
    on_power: Callable[[dict[str, Any], str], None] | None = None

    def __post_init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.workdir = Path(self.workdir)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.refresh_tokens = {"1//fake-refresh-token"}
        self.tokens: set[str] = set()
        self.instances: dict[tuple[str, str], dict[str, Any]] = {}
        self.disks: dict[tuple[str, str], dict[str, Any]] = {}
        self.firewalls: dict[str, dict[str, Any]] = {}
        self.addresses: dict[tuple[str, str], dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.requests: list[Request] = []
        self._done: dict[str, tuple[float, Callable[[], dict[str, Any] | None]]] = {}
        self._boots: dict[tuple[str, str], float] = {}
        self._ids = itertools.count(7_000_000_001)
        self._injected: list[list[Any]] = []
        self._rate_limited: tuple[int, int] = (0, 429)
        self._dropped: list[tuple[str, str]] = []
        self._lost: list[tuple[str, str]] = []
        self.request_ids: dict[str, str] = {}  # requestId -> the name of the operation it made
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        return self.serve_https(_Handler, "fake-google", "fake-compute.googleapis", "fake-gce")

    # -- test helpers ------------------------------------------------------------------------
    def service_account_file(self, path: Path, *, wrong_key: bool = False) -> Path:
        """A key file like the console's, its token_uri on this fake; ``wrong_key`` signs with another key."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if wrong_key else self._key
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        path.write_text(json.dumps({
            "type": "service_account", "project_id": self.project, "private_key_id": "0123abcd",
            "private_key": pem, "client_email": EMAIL, "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": f"{self.url}/token"}))
        path.chmod(0o600)
        return path

    def authorized_user_file(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "type": "authorized_user",
                    "client_id": "764086051850-x.apps.googleusercontent.com",
                    "client_secret": "d-FL95Q19q7MQmFpd7hHD0Ty",
                    "refresh_token": "1//fake-refresh-token",
                    "token_uri": f"{self.url}/token",
                }
            )
        )
        return path

    def fail_next(self, method: str, prefix: str, status: int, reason: str, message: str, times: int = 1) -> None:
        with self._lock:
            self._injected.append([method.upper(), prefix, status, reason, message, times])

    def drop_response_next(self, method: str, prefix: str) -> None:
        """The next matching request takes effect but its answer is lost (the connection closes)."""
        with self._lock:
            self._dropped.append((method.upper(), prefix))

    def lose_answer_next(self, method: str, prefix: str) -> None:
        """The next matching request takes effect but answers 503 backendError."""
        with self._lock:
            self._lost.append((method.upper(), prefix))

    def rate_limit(self, times: int, status: int = 429) -> None:
        with self._lock:
            self._rate_limited = (times, status)

    def add_instance(self, name: str, zone: str = "us-central1-a", tags: list[str] | None = None,
                     metadata: list[dict[str, str]] | None = None) -> dict[str, Any]:
        """An instance someone else made (console, another tool), running, with no address."""
        with self._lock:
            self._make_instance(zone, {"name": name, "machineType": f"zones/{zone}/machineTypes/n1-standard-1",
                                       "tags": {"items": tags or []}, "networkInterfaces": [{}],
                                       "metadata": {"items": metadata or []},
                                       "disks": [{"boot": True, "autoDelete": True,
                                                  "initializeParams": {"diskName": name}}]})
            inst = self.instances[(zone, name)]
            inst["status"] = "RUNNING"
            self._boots.pop((zone, name), None)
            return inst

    def add_address(self, name: str, address: str, region: str = "us-central1") -> None:
        with self._lock:
            self.addresses[(region, name)] = {"kind": "compute#address", "id": str(next(self._ids)), "name": name,
                                              "address": address, "status": "RESERVED",
                                              "region": f"{G}/{self.project}/regions/{region}"}

    def calls(self, method: str | None = None, contains: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if (method is None or r.method == method)
                    and (contains is None or contains in r.path)]

    def cpu_usage(self, region: str) -> int:
        return sum(MACHINE_TYPES[i["machineType"].rsplit("/", 1)[-1]][0] for (z, _), i in self.instances.items()
                   if ZONES[z] == region and i["status"] not in ("TERMINATED",))

    # -- operations --------------------------------------------------------------------------
    def _op(
        self, kind: str, target: str, zone: str | None, apply: Callable[[], dict[str, Any] | None]
    ) -> dict[str, Any]:
        name = f"operation-{int(time.time() * 1000)}-{next(self._ids)}"
        scope = f"{G}/{self.project}/zones/{zone}" if zone else f"{G}/{self.project}/global"
        op = {"kind": "compute#operation", "id": str(next(self._ids)), "name": name, "operationType": kind,
              "targetLink": target, "status": "PENDING", "progress": 0, "insertTime": _now(),
              "selfLink": f"{scope}/operations/{name}"}
        if zone:
            op["zone"] = f"{G}/{self.project}/zones/{zone}"
        self.operations[name] = op
        self._done[name] = (time.monotonic() + self.op_delay, apply)
        return dict(op)

    def _tick(self) -> None:
        now = time.monotonic()
        for name, (due, apply) in list(self._done.items()):
            op = self.operations[name]
            if now >= due:
                del self._done[name]
                error = apply()
                op.update(status="DONE", progress=100, endTime=_now())
                if error:
                    op.update(error={"errors": [error]}, httpErrorStatusCode=403, httpErrorMessage="FORBIDDEN")
            else:
                op["status"] = "RUNNING"
        for key, due in list(self._boots.items()):
            inst = self.instances.get(key)
            if inst is None:
                del self._boots[key]
            elif now >= due:
                del self._boots[key]
                self._power_on(inst)

    def _power_on(self, inst: dict[str, Any]) -> None:
        keys = [line for item in inst["metadata"]["items"] if item["key"] in ("ssh-keys", "sshKeys")
                for line in str(item["value"]).splitlines() if line.strip()]
        nic = inst["networkInterfaces"][0]
        if not nic.get("networkIP") and self.address_for is not None:
            ip = self.address_for(json.loads(json.dumps(inst)), keys)
            if ip:
                nic["networkIP"] = ip
                for ac in nic.get("accessConfigs") or []:
                    ac["natIP"] = ac.get("natIP") or ip
        inst["status"] = "RUNNING"
        if self.on_power:
            self.on_power(inst, "RUNNING")

    # -- resources ---------------------------------------------------------------------------
    def _make_instance(self, zone: str, body: dict[str, Any]) -> None:
        name = body["name"]
        boot = (body.get("disks") or [{}])[0]
        params = boot.get("initializeParams") or {}
        disk_name = params.get("diskName") or name
        self.disks[(zone, disk_name)] = {
            "kind": "compute#disk",
            "id": str(next(self._ids)),
            "name": disk_name,
            "zone": f"{G}/{self.project}/zones/{zone}",
            "sizeGb": str(params.get("diskSizeGb") or 10),
            "status": "READY",
            "sourceImage": params.get("sourceImage"),
            "type": params.get("diskType") or f"{G}/{self.project}/zones/{zone}/diskTypes/pd-standard",
            "labels": dict(params.get("labels") or {}),
            "users": [f"{G}/{self.project}/zones/{zone}/instances/{name}"],
            "selfLink": f"{G}/{self.project}/zones/{zone}/disks/{disk_name}",
        }
        nics = []
        for nic in body.get("networkInterfaces") or [{}]:
            nics.append({"kind": "compute#networkInterface", "name": f"nic{len(nics)}",
                         "network": nic.get("network") or f"{G}/{self.project}/global/networks/default",
                         **({"subnetwork": nic["subnetwork"]} if nic.get("subnetwork") else {}),
                         "accessConfigs": [{"kind": "compute#accessConfig", "type": "ONE_TO_ONE_NAT",
                                            "name": ac.get("name") or "External NAT",
                                            **({"natIP": ac["natIP"]} if ac.get("natIP") else {})}
                                           for ac in nic.get("accessConfigs") or []]})
        self.instances[(zone, name)] = {
            "kind": "compute#instance",
            "id": str(next(self._ids)),
            "creationTimestamp": _now(),
            "name": name,
            "description": body.get("description") or "",
            "status": "PROVISIONING",
            "zone": f"{G}/{self.project}/zones/{zone}",
            "machineType": f"{G}/{self.project}/{body['machineType'].split('/projects/')[-1].split('/', 1)[-1]}"
            if "/projects/" in body["machineType"]
            else f"{G}/{self.project}/{body['machineType']}",
            "tags": {"items": list((body.get("tags") or {}).get("items") or []), "fingerprint": "42WmSpB8rSM="},
            "labels": dict(body.get("labels") or {}),
            "labelFingerprint": "42WmSpB8rSM=",
            "networkInterfaces": nics,
            "disks": [
                {
                    "type": "PERSISTENT",
                    "mode": "READ_WRITE",
                    "boot": True,
                    "index": 0,
                    "deviceName": disk_name,
                    "autoDelete": bool(boot.get("autoDelete", True)),
                    "source": self.disks[(zone, disk_name)]["selfLink"],
                }
            ],
            "metadata": {
                "kind": "compute#metadata",
                "fingerprint": f"fp{next(self._ids)}=",
                "items": [dict(i) for i in (body.get("metadata") or {}).get("items") or []],
            },
            "serviceAccounts": body.get("serviceAccounts") or [],
            "scheduling": body.get("scheduling") or {"preemptible": False},
            "selfLink": f"{G}/{self.project}/zones/{zone}/instances/{name}",
        }
        self._boots[(zone, name)] = time.monotonic() + self.boot_delay

    def _insert_instance(self, zone: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = str(body.get("name") or "")
        path = f"projects/{self.project}/zones/{zone}/instances/{name}"
        if (zone, name) in self.instances:
            return 409, _err(409, "alreadyExists", f"The resource '{path}' already exists")
        mtype = str(body.get("machineType") or "").rsplit("/", 1)[-1]
        if mtype not in MACHINE_TYPES:
            return 400, _err(
                400,
                "invalid",
                f"Invalid value for field 'resource.machineType': "
                f"'{body.get('machineType')}'. Machine type with name '{mtype}' does not exist in zone '{zone}'.",
            )
        boot = (body.get("disks") or [{}])[0]
        image = str((boot.get("initializeParams") or {}).get("sourceImage") or "")
        if not self._image(image.split("/projects/", 1)[-1]):
            return 404, _err(404, "notFound", f"The resource '{image.split('/compute/v1/', 1)[-1]}' was not found")
        for key, value in (body.get("labels") or {}).items():
            if not key or not all(c.islower() or c.isdigit() or c in "_-" for c in key + value) or len(value) > 63:
                return 400, _err(400, "invalid", f"Invalid value for field 'resource.labels': '{key}'.")
        target = f"{G}/{self.project}/zones/{zone}/instances/{name}"
        cpus = MACHINE_TYPES[mtype][0]

        region = ZONES[zone]
        if self.cpu_usage(region) + cpus > self.quota_cpus:  # reported in the operation; nothing is made
            error = {
                "code": "QUOTA_EXCEEDED",
                "message": f"Quota 'CPUS' exceeded.  Limit: {self.quota_cpus} in region {region}.",
            }
            return 200, self._op("insert", target, zone, lambda: error)
        self._make_instance(zone, body)  # listed at once, PROVISIONING, as on GCE
        return 200, self._op("insert", target, zone, lambda: None)

    def _image(self, path: str) -> dict[str, Any] | None:
        """``<project>/global/images/<name>`` or ``.../images/family/<family>``."""
        parts = path.strip("/").split("/")
        if len(parts) < 4 or parts[1:3] != ["global", "images"]:
            return None
        images = IMAGES.get(parts[0], {})
        if parts[3] == "family" and len(parts) == 5:
            name = next((n for n, fam in images.items() if fam == parts[4]), None)
        else:
            name = parts[3] if parts[3] in images else None
        if name is None:
            return None
        return {"kind": "compute#image", "id": str(abs(hash(name)) % 10**12), "name": name, "family": images[name],
                "status": "READY", "diskSizeGb": "10", "creationTimestamp": "2024-01-10T00:00:00.000-08:00",
                "selfLink": f"{G}/{parts[0]}/global/images/{name}"}

    # -- routing -----------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any, form: dict[str, list[str]],
               auth: str) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        with self._lock:
            self.requests.append(Request(method, path, query, body if body is not None else form))
            if path == "/token" and method == "POST":
                return self._token(form)
            left, status = self._rate_limited
            if left > 0:
                self._rate_limited = (left - 1, status)
                if status == 403:
                    return 403, _err(403, "rateLimitExceeded", "Rate Limit Exceeded"), {}
                return 429, {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message":
                             "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute' of service "
                             "'compute.googleapis.com' for consumer 'project_number:1008'.",
                             "errors": [{"message": "Rate Limit Exceeded", "domain": "usageLimits",
                                         "reason": "rateLimitExceeded"}]}}, {"Retry-After": "1"}
            if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
                return (
                    401,
                    {
                        "error": {
                            "code": 401,
                            "status": "UNAUTHENTICATED",
                            "message": "Request had invalid authentication credentials. Expected OAuth 2 "
                            "access token, login cookie or other valid authentication credential.",
                            "errors": [
                                {
                                    "message": "Invalid Credentials",
                                    "domain": "global",
                                    "reason": "authError",
                                    "location": "Authorization",
                                    "locationType": "header",
                                }
                            ],
                        }
                    },
                    {},
                )
            for inj in self._injected:
                if inj[5] > 0 and inj[0] == method and path.startswith(inj[1]):
                    inj[5] -= 1
                    return inj[2], _err(inj[2], inj[3], inj[4]), {}
            self._tick()
            request_id = (query.get("requestId") or [""])[0]
            if request_id:
                import uuid

                try:
                    valid = uuid.UUID(request_id).int != 0
                except ValueError:
                    valid = False
                if not valid:
                    return 400, _err(400, "invalid", f"Invalid value for field 'requestId': '{request_id}'. "
                                                     "The request ID must be a valid UUID."), {}
                if request_id in self.request_ids:  # done already: its operation, nothing done again
                    return 200, dict(self.operations[self.request_ids[request_id]]), {}
            status, payload = self._route(method, path, query, body if isinstance(body, dict) else {})
            if request_id and status == 200 and (payload or {}).get("kind") == "compute#operation":
                self.request_ids[request_id] = payload["name"]
            drop = next((d for d in self._dropped if d[0] == method and path.startswith(d[1])), None)
            if drop:
                self._dropped.remove(drop)
                return 0, None, {}
            lost = next((d for d in self._lost if d[0] == method and path.startswith(d[1])), None)
            if lost:
                self._lost.remove(lost)
                return 503, _err(503, "backendError", "Backend Error"), {}
            return status, payload, {}

    def _token(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any], dict[str, str]]:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        grant = (form.get("grant_type") or [""])[0]
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            try:
                head, claims, sig = (form.get("assertion") or [""])[0].split(".")
                self._key.public_key().verify(_b64d(sig), f"{head}.{claims}".encode(), padding.PKCS1v15(),
                                              hashes.SHA256())
                payload = json.loads(_b64d(claims))
            except (ValueError, InvalidSignature):
                return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, {}
            if payload.get("aud") != f"{self.url}/token" or payload.get("exp", 0) < time.time():
                return 400, {"error": "invalid_grant", "error_description": "Invalid JWT: Token must be a short-lived "
                             "token (60 minutes) and in a reasonable timeframe."}, {}
        elif grant == "refresh_token":
            if (form.get("refresh_token") or [""])[0] not in self.refresh_tokens:
                return 400, {"error": "invalid_grant", "error_description": "Bad Request"}, {}
        else:
            return 400, {"error": "unsupported_grant_type", "error_description": f"Invalid grant_type: {grant}"}, {}
        token = f"ya29.fake-{next(self._ids)}"
        self.tokens.add(token)
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 3599}, {}

    def _route(self, method: str, path: str, query: dict[str, list[str]],
               body: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        parts = [p for p in path.split("/") if p]
        if parts[:2] != ["compute", "v1"] or len(parts) < 4 or parts[2] != "projects":
            return 404, _err(404, "notFound", "Not Found")
        proj, rest = parts[3], parts[4:]
        if proj != self.project:
            if len(rest) >= 3 and rest[:2] == ["global", "images"] and method == "GET":
                image = self._image("/".join([proj, *rest]))
                return (
                    (200, image)
                    if image
                    else (404, _err(404, "notFound", f"The resource 'projects/{proj}/{'/'.join(rest)}' was not found"))
                )
            return 404, _err(404, "notFound", f"The resource 'projects/{proj}' was not found")
        resource = f"projects/{proj}/{'/'.join(rest)}"
        missing = (404, _err(404, "notFound", f"The resource '{resource}' was not found"))
        if method == "GET" and not rest:
            return 200, {"kind": "compute#project", "id": "1008123456782", "name": proj, "commonInstanceMetadata": {},
                         "selfLink": f"{G}/{proj}"}
        if method == "GET" and rest[:1] == ["aggregated"] and len(rest) == 2 and rest[1] in ("instances", "disks"):
            table = self.instances if rest[1] == "instances" else self.disks
            wanted = (query.get("filter") or [""])[0]
            items: dict[str, Any] = {f"zones/{z}": {"warning": {"code": "NO_RESULTS_ON_PAGE",
                                                                "message": "There are no results for scope"}}
                                     for z in ZONES}
            for (zone, _), res in table.items():
                if wanted.startswith("labels."):
                    k, _, v = wanted[len("labels."):].partition("=")
                    if (res.get("labels") or {}).get(k.strip()) != v.strip().strip('"'):
                        continue
                items[f"zones/{zone}"] = {rest[1]: [*(items[f"zones/{zone}"].get(rest[1]) or []), res]}
            return 200, {"kind": f"compute#{rest[1][:-1]}AggregatedList", "items": items}
        if rest[:1] == ["regions"] and len(rest) >= 2:
            region = rest[1]
            if region not in ZONES.values():
                return missing
            if method == "GET" and len(rest) == 2:
                return 200, {
                    "kind": "compute#region",
                    "id": str(abs(hash(region)) % 10**6),
                    "name": region,
                    "status": "UP",
                    "zones": [f"{G}/{proj}/zones/{z}" for z, r in ZONES.items() if r == region],
                    "quotas": [
                        {"metric": "CPUS", "limit": self.quota_cpus, "usage": float(self.cpu_usage(region))},
                        {
                            "metric": "INSTANCES",
                            "limit": 24.0,
                            "usage": float(sum(1 for z, _ in self.instances if ZONES[z] == region)),
                        },
                    ],
                }
            if method == "GET" and len(rest) == 4 and rest[2] == "addresses":
                addr = self.addresses.get((region, rest[3]))
                return (200, addr) if addr else missing
            return missing
        if rest[:1] == ["global"] and len(rest) >= 2:
            return self._global(method, rest[1:], body, missing)
        if rest[:1] == ["zones"] and len(rest) >= 2:
            zone = rest[1]
            if zone not in ZONES:
                return 404, _err(404, "notFound", f"The resource 'projects/{proj}/zones/{zone}' was not found")
            return self._zonal(method, zone, rest[2:], body, missing)
        return missing

    def _global(self, method: str, rest: list[str], body: dict[str, Any],
                missing: tuple[int, dict[str, Any]]) -> tuple[int, dict[str, Any] | None]:
        if method == "GET" and rest == ["networks", "default"]:
            return 200, {"kind": "compute#network", "id": "5", "name": "default", "autoCreateSubnetworks": True,
                         "selfLink": f"{G}/{self.project}/global/networks/default"}
        if method == "GET" and len(rest) == 2 and rest[0] == "operations":
            op = self.operations.get(rest[1])
            return (200, dict(op)) if op else missing
        if method == "GET" and len(rest) == 2 and rest[0] == "images":
            image = self._image(f"{self.project}/global/images/{rest[1]}")
            return (200, image) if image else missing
        if rest[:1] == ["firewalls"]:
            if method == "POST" and len(rest) == 1:
                name = str(body.get("name") or "")
                if name in self.firewalls:
                    return 409, _err(409, "alreadyExists",
                                     f"The resource 'projects/{self.project}/global/firewalls/{name}' already exists")
                rule = {"kind": "compute#firewall", "id": str(next(self._ids)), "name": name, "direction": "INGRESS",
                        "priority": 1000, "creationTimestamp": _now(), "description": body.get("description") or "",
                        "network": body.get("network"), "allowed": body.get("allowed") or [],
                        "sourceRanges": body.get("sourceRanges") or [], "targetTags": body.get("targetTags") or [],
                        "selfLink": f"{G}/{self.project}/global/firewalls/{name}"}
                return 200, self._op("insert", rule["selfLink"], None,
                                     lambda: self.firewalls.__setitem__(name, rule))  # type: ignore[func-returns-value]
            if len(rest) == 2:
                rule = self.firewalls.get(rest[1])
                if rule is None:
                    return missing
                if method == "GET":
                    return 200, rule
                if method == "PUT":
                    new = {
                        **rule,
                        **{k: body[k] for k in ("allowed", "sourceRanges", "targetTags", "description") if k in body},
                    }
                    return 200, self._op("update", rule["selfLink"], None,
                                         lambda: self.firewalls.__setitem__(rest[1], new))  # type: ignore[func-returns-value]
                if method == "DELETE":
                    return 200, self._op("delete", rule["selfLink"], None,
                                         lambda: self.firewalls.pop(rest[1], None) and None)
        return missing

    def _zonal(self, method: str, zone: str, rest: list[str], body: dict[str, Any],
               missing: tuple[int, dict[str, Any]]) -> tuple[int, dict[str, Any] | None]:
        if method == "GET" and not rest:
            return 200, {
                "kind": "compute#zone",
                "id": "2",
                "name": zone,
                "status": "UP",
                "region": f"{G}/{self.project}/regions/{ZONES[zone]}",
                "selfLink": f"{G}/{self.project}/zones/{zone}",
            }
        if method == "GET" and len(rest) == 2 and rest[0] == "machineTypes":
            if rest[1] not in MACHINE_TYPES:
                return missing
            cpus, mem = MACHINE_TYPES[rest[1]]
            return 200, {"kind": "compute#machineType", "id": "4", "name": rest[1], "zone": zone, "guestCpus": cpus,
                         "memoryMb": mem, "selfLink": f"{G}/{self.project}/zones/{zone}/machineTypes/{rest[1]}"}
        if method == "GET" and len(rest) == 2 and rest[0] == "diskTypes":
            if rest[1] not in DISK_TYPES:
                return missing
            return 200, {"kind": "compute#diskType", "name": rest[1], "zone": f"{G}/{self.project}/zones/{zone}",
                         "selfLink": f"{G}/{self.project}/zones/{zone}/diskTypes/{rest[1]}"}
        if method == "GET" and len(rest) == 2 and rest[0] == "operations":
            op = self.operations.get(rest[1])
            return (200, dict(op)) if op else missing
        if rest[:1] == ["disks"] and len(rest) == 2:
            disk = self.disks.get((zone, rest[1]))
            if disk is None:
                return missing
            if method == "GET":
                return 200, disk
            if method == "DELETE":
                if disk["users"]:
                    return 400, _err(
                        400,
                        "resourceInUseByAnotherResource",
                        f"The disk resource '{disk['selfLink']}' is already being used by '{disk['users'][0]}'",
                    )
                return 200, self._op(
                    "delete", disk["selfLink"], zone, lambda: self.disks.pop((zone, rest[1]), None) and None
                )
        if rest[:1] != ["instances"]:
            return missing
        if method == "POST" and len(rest) == 1:
            return self._insert_instance(zone, body)
        if method == "GET" and len(rest) == 1:
            return 200, {
                "kind": "compute#instanceList",
                "items": [i for (z, _), i in self.instances.items() if z == zone],
            }
        inst = self.instances.get((zone, rest[1])) if len(rest) >= 2 else None
        if inst is None:
            return missing
        if method == "GET" and len(rest) == 2:
            return 200, inst
        if method == "DELETE" and len(rest) == 2:
            def delete() -> None:
                self.instances.pop((zone, inst["name"]), None)
                for d in inst["disks"]:
                    key = (zone, d["source"].rsplit("/", 1)[-1])
                    if key in self.disks:
                        self.disks[key]["users"] = []
                        if d.get("autoDelete"):
                            del self.disks[key]
            return 200, self._op("delete", inst["selfLink"], zone, delete)  # type: ignore[arg-type]
        if method == "POST" and len(rest) == 3:
            verb = rest[2]
            if verb == "stop":
                def stop() -> None:
                    inst["status"] = "TERMINATED"
                    if self.on_power:
                        self.on_power(inst, "TERMINATED")
                return 200, self._op("stop", inst["selfLink"], zone, stop)  # type: ignore[arg-type]
            if verb == "start":
                def start() -> None:
                    if inst["status"] == "TERMINATED":
                        inst["status"] = "STAGING"
                        self._boots[(zone, inst["name"])] = time.monotonic() + self.boot_delay
                return 200, self._op("start", inst["selfLink"], zone, start)  # type: ignore[arg-type]
            if verb == "setTags":
                if body.get("fingerprint") != inst["tags"]["fingerprint"]:
                    return 412, _err(
                        412, "conditionNotMet", "Supplied fingerprint does not match current tag fingerprint."
                    )
                inst["tags"] = {"items": list(body.get("items") or []), "fingerprint": f"t{next(self._ids)}="}
                return 200, self._op("setTags", inst["selfLink"], zone, lambda: None)
            if verb == "setMetadata":
                if body.get("fingerprint") != inst["metadata"]["fingerprint"]:
                    return 412, _err(
                        412, "conditionNotMet", "Supplied fingerprint does not match current metadata fingerprint."
                    )
                inst["metadata"] = {"kind": "compute#metadata", "fingerprint": f"fp{next(self._ids)}=",
                                    "items": [dict(i) for i in body.get("items") or []]}
                return 200, self._op("setMetadata", inst["selfLink"], zone, lambda: None)
        return missing


class _Handler(BaseHTTPRequestHandler):
    fake: FakeGCE
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        form: dict[str, list[str]] = {}
        if raw and "x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
            form = parse_qs(raw.decode())
        elif raw:
            try:
                body = json.loads(raw)
            except ValueError:
                self._reply(400, _err(400, "parseError", "Parse Error"), {})
                return
        status, payload, headers = self.fake.handle(self.command, split.path, parse_qs(split.query), body, form,
                                                    self.headers.get("Authorization", ""))
        if status == 0:
            self.close_connection = True
            return
        self._reply(status, payload, headers)

    def _reply(self, status: int, payload: dict[str, Any] | None, headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = _serve
