"""A stateful fake of Azure Resource Manager and its token endpoint, over HTTPS on 127.0.0.1.

Nothing emulates Microsoft.Compute/Network/Resources and azure-core refuses
bearer tokens over plain http, so this server speaks TLS with a private test
CA (``fake.ca_cert``; clients pass it as ``connection_verify``) and implements
what the real services do for the calls the ``azure`` driver makes:

- AAD: ``/{tenant}/v2.0/.well-known/openid-configuration`` and
  ``/{tenant}/oauth2/v2.0/token`` (client credentials; AADSTS errors), plus an
  App Service style managed-identity endpoint (``/msi/token``).
- ARM: a 401 challenge naming the tenant for unauthenticated calls, the
  subscription, its locations, resource SKUs (with restrictions), VM image
  versions, resource groups, and the resources under them (vnets/subnets,
  NSGs, public IPs, NICs, availability sets, VMs, disks).
- Long-running operations as ARM does them: PUT answers 201/200 with
  ``Azure-AsyncOperation``; DELETE and VM actions answer 202 with
  ``Azure-AsyncOperation`` and ``Location``; the operation is ``InProgress``
  for ``lro_polls`` polls, then ``Succeeded`` (or ``Failed`` with an error).
- Real error shapes: ``{"error": {"code", "message"}}`` with ARM's codes
  (ResourceGroupNotFound, ResourceNotFound, InvalidParameter, QuotaExceeded,
  SkuNotAvailable, InvalidResourceReference, InUse...), a resource that others
  reference cannot be deleted, and 429 with ``Retry-After`` when injected.

Network safety: a public IP only ever gets ``fake.public_ip`` (the test host's
namespaced address, or a loopback address), and dynamic private IPs come from
the subnet the client chose.  Hooks let a test act as the VM agent:
``on_vm_create(vm, admin_user, public_keys, custom_data)`` and
``on_power(vm, power_state)``.
"""

from __future__ import annotations

import base64
import ipaddress
import itertools
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fakes.https import HTTPSFake

SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
TENANT = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
CLIENT_ID = "99999999-8888-7777-6666-000000000001"
CLIENT_SECRET = "fake-client-secret-value"
LOCATIONS = {"westus": "West US", "eastus": "East US", "westeurope": "West Europe"}
#: size -> vCPUs; sizes in RESTRICTED exist but are not offered to this subscription.
SIZES = {"Standard_D2s_v3": 2, "Standard_B1s": 1, "Standard_B2s": 2, "Standard_A2": 2, "Standard_M128s": 128}
RESTRICTED = {"Standard_M128s"}
IMAGES = {
    ("canonical", "ubuntu-24_04-lts", "server"): ["24.04.202409190", "24.04.202411030"],
    ("canonical", "0001-com-ubuntu-server-jammy", "22_04-lts-gen2"): ["22.04.202410020"],
    ("debian", "debian-12", "12-gen2"): ["0.20241004.1892"],
}
CALLABLE = Callable[..., Any]
SYNC_TYPES = {"microsoft.compute/availabilitysets"}


def error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


@dataclass
class Injected:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: dict[str, Any] | None
    headers: dict[str, str]
    times: int


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    authorized: bool


@dataclass
class Operation:
    id: str
    polls_left: int
    finish: Callable[[], dict[str, Any] | None]  # returns an error dict when the operation fails
    url: str = ""
    status: str = "InProgress"
    error: dict[str, Any] | None = None


@dataclass
class FakeARM(HTTPSFake):
    """Start with ``with FakeARM(workdir, public_ip=host.ip) as fake:``."""

    workdir: Path
    public_ip: str = "127.0.0.1"
    subscription: str = SUBSCRIPTION
    tenant: str = TENANT
    clients: dict[str, str] = field(default_factory=lambda: {CLIENT_ID: CLIENT_SECRET})
    core_quota: int = 20  # total regional vCPUs per location
    lro_polls: int = 1  # InProgress answers before an operation completes
    managed_identity: bool = False  # does /msi/token hand out tokens?
    on_vm_create: CALLABLE | None = None
    on_power: CALLABLE | None = None

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.groups: dict[str, dict[str, Any]] = {}  # lower name -> resource group
        self.resources: dict[str, dict[str, Any]] = {}  # lower id -> resource
        self.operations: dict[str, Operation] = {}
        self.requests: list[Request] = []
        self.tokens: set[str] = set()
        self._injected: list[Injected] = []
        self._fail_provisioning: dict[str, dict[str, Any]] = {}
        self._ips = itertools.count(4)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        ipaddress.ip_address(self.public_ip)  # refuse anything that is not a literal address

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> FakeARM:
        return self.serve_https(_Handler, "fake-azure-ca", "fake-azure-server", "fake-azure-arm")

    # -- failure injection and inspection -----------------------------------------------
    def inject(self, method: str, path_regex: str, status: int, code: str | None = None,
               message: str = "", *, headers: dict[str, str] | None = None, times: int = 1) -> None:
        """The next ``times`` matching requests get ``status`` with ARM's error body."""
        body = error(code, message) if code else None
        with self._lock:
            self._injected.append(Injected(method.upper(), re.compile(path_regex, re.IGNORECASE), status, body,
                                           dict(headers or {}), times))

    def throttle(self, method: str, path_regex: str, retry_after: int = 1, times: int = 1) -> None:
        """ARM's 429: the client must wait ``Retry-After`` seconds and retry."""
        self.inject(method, path_regex, 429, "TooManyRequests",
                    "The request is being throttled as the limit has been reached for operation type - Write.",
                    headers={"Retry-After": str(retry_after)}, times=times)

    def fail_provisioning(self, resource_type: str, code: str, message: str) -> None:
        """The next PUT of ``resource_type`` (e.g. "virtualMachines") is accepted, then its LRO fails."""
        with self._lock:
            self._fail_provisioning[resource_type.lower()] = error(code, message)["error"]

    def calls(self, method: str | None = None, path_regex: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests
                    if (method is None or r.method == method.upper())
                    and (path_regex is None or re.search(path_regex, r.path, re.IGNORECASE))]

    def tagged(self, machine: str) -> list[str]:
        """Ids of every resource group and resource tagged ``pymachine-machine=<machine>``."""
        with self._lock:
            items = list(self.groups.values()) + list(self.resources.values())
            return [r["id"] for r in items if (r.get("tags") or {}).get("pymachine-machine") == machine]

    def all_ids(self) -> list[str]:
        with self._lock:
            return [g["id"] for g in self.groups.values()] + [r["id"] for r in self.resources.values()]

    def add_group(self, name: str, location: str = "westus", tags: dict[str, str] | None = None) -> None:
        """A resource group that exists before the test (made by someone else)."""
        with self._lock:
            self.groups[name.lower()] = self._group(name, location, tags or {})

    def vm(self, name: str, group: str = "docker-machine") -> dict[str, Any] | None:
        return self.resources.get(self._rid(group, "Microsoft.Compute", "virtualMachines", name).lower())

    # -- HTTP entry point ----------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any,
               headers: Any) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        auth = headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        with self._lock:
            self.requests.append(Request(method, path, query, token in self.tokens))
            for inj in self._injected:
                if inj.times > 0 and inj.method == method and inj.pattern.search(path):
                    inj.times -= 1
                    return inj.status, inj.body, dict(inj.headers)
            if path == "/msi/token":
                return self._managed_identity(headers)
            aad = re.fullmatch(r"/([^/]+)/(v2\.0/\.well-known/openid-configuration|oauth2/v2\.0/token)", path)
            if aad:
                return self._aad(aad.group(1), aad.group(2), body)
            if not path.lower().startswith("/subscriptions/"):
                return 404, error("InvalidResourceType", f"No route for {method} {path}"), {}
            if token not in self.tokens:
                challenge = (
                    f'Bearer authorization_uri="{self.url}/{self.tenant}", error="invalid_token", '
                    "error_description=\"The authentication failed because of missing 'Authorization' header.\""
                )
                msg = "The access token is missing or invalid." if token else \
                    "Authentication failed. The 'Authorization' header is missing."
                return 401, error("AuthenticationFailed" if not token else "InvalidAuthenticationToken", msg), \
                    {"WWW-Authenticate": challenge}
            return self._arm(method, path, query, body)

    # -- AAD -----------------------------------------------------------------------------
    def _aad(self, tenant: str, what: str, form: Any) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        if tenant not in (self.tenant, "organizations", "common"):
            return (
                400,
                {
                    "error": "invalid_tenant",
                    "error_description": f"AADSTS90002: Tenant '{tenant}' not found. "
                    "Check to make sure you have the correct tenant ID.",
                },
                {},
            )
        if what.startswith("v2.0"):
            base = f"{self.url}/{tenant}"
            return 200, {"token_endpoint": f"{base}/oauth2/v2.0/token",
                         "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                         "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                         "issuer": f"{base}/v2.0", "tenant_region_scope": "NA"}, {}
        form = form if isinstance(form, dict) else {}
        client, secret = form.get("client_id", ""), form.get("client_secret", "")
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type", "error_description": "AADSTS70003"}, {}
        if client not in self.clients:
            return 400, {"error": "unauthorized_client", "error_description":
                         f"AADSTS700016: Application with identifier '{client}' was not found in the directory."}, {}
        if not secrets.compare_digest(self.clients[client], secret):
            return 401, {"error": "invalid_client", "error_description":
                         f"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
                         f"request is the client secret value, not the client secret ID, for a secret added "
                         f"to app '{client}'."}, {}
        return 200, self._issue(), {}

    def _issue(self) -> dict[str, Any]:
        token = "fake." + secrets.token_urlsafe(24)
        self.tokens.add(token)
        return {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}

    def _managed_identity(self, headers: Any) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        if not self.managed_identity or not headers.get("X-IDENTITY-HEADER"):
            return 400, {"statusCode": 400, "message": "No managed identity is assigned to this resource."}, {}
        issued = self._issue()
        return 200, {"access_token": issued["access_token"], "expires_on": str(int(time.time()) + 3599),
                     "resource": "https://management.azure.com/", "token_type": "Bearer"}, {}

    # -- ARM routing ---------------------------------------------------------------------
    def _arm(self, method: str, path: str, query: dict[str, list[str]],
             body: Any) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        sub = parts[1]
        if sub != self.subscription:
            return 404, error("SubscriptionNotFound", f"The subscription '{sub}' could not be found."), {}
        rest = parts[2:]
        low = [p.lower() for p in rest]
        if not rest and method == "GET":
            return 200, {"id": f"/subscriptions/{sub}", "subscriptionId": sub, "tenantId": self.tenant,
                         "displayName": "pymachine test subscription", "state": "Enabled"}, {}
        if low == ["locations"] and method == "GET":
            return 200, {"value": [{"id": f"/subscriptions/{sub}/locations/{k}", "name": k, "displayName": v,
                                    "type": "Region"} for k, v in LOCATIONS.items()]}, {}
        if len(rest) == 6 and low[0] == "providers" and low[2] == "locations" and low[4] == "operations":
            return self._operation(rest[5], query)
        if low[:3] == ["providers", "microsoft.compute", "skus"] and method == "GET":
            return self._skus(query)
        if low[:3] == ["providers", "microsoft.compute", "locations"] and "vmimage" in low:
            return self._images(rest, method)
        if low[:1] == ["resourcegroups"] and len(rest) == 2:
            return self._resource_group(method, rest[1], body)
        if low[:1] == ["resourcegroups"] and len(rest) == 3 and low[2] == "resources" and method == "GET":
            group = self.groups.get(low[1])
            if group is None:
                return 404, _rg_missing(rest[1]), {}
            return 200, {"value": [_summary(r) for r in self._in_group(rest[1])]}, {}
        if low[:1] == ["resourcegroups"] and len(rest) >= 5 and low[2] == "providers":
            return self._resource(method, rest, query, body)
        return 404, error("InvalidResourceType", f"The fake has no route for {method} {path}"), {}

    # -- operations ------------------------------------------------------------------------
    def _start_op(self, location: str, namespace: str, finish: Callable[[], dict[str, Any] | None],
                  *, location_header: bool) -> dict[str, str]:
        op = Operation(str(uuid.uuid4()), self.lro_polls, finish)
        self.operations[op.id] = op
        url = (f"{self.url}/subscriptions/{self.subscription}/providers/{namespace}"
               f"/locations/{location}/operations/{op.id}")
        op.url = f"{url}?api-version=2024-07-01"
        headers = {"Azure-AsyncOperation": op.url}
        if location_header:
            headers["Location"] = f"{url}?api-version=2024-07-01&monitor=true"
        return headers

    def _advance(self, op: Operation) -> None:
        if op.status != "InProgress":
            return
        if op.polls_left > 0:
            op.polls_left -= 1
            return
        failure = op.finish()
        op.status, op.error = ("Failed", failure) if failure else ("Succeeded", None)

    def _operation(self, op_id: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        op = self.operations.get(op_id)
        if op is None:
            return 404, error("NotFound", f"Operation {op_id} was not found."), {}
        self._advance(op)
        if query.get("monitor"):  # the Location URL: 202 while running, then 200 (or the error)
            if op.status == "InProgress":
                return 202, None, {"Location": f"{op.url}&monitor=true"}
            if op.error:
                return 400, {"error": op.error}, {}
            return 200, None, {}
        payload: dict[str, Any] = {"name": op.id, "status": op.status}
        if op.error:
            payload["error"] = op.error
        return 200, payload, {}

    # -- catalogue ---------------------------------------------------------------------------
    def _skus(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        flt = (query.get("$filter") or [""])[0]
        m = re.search(r"location\s+eq\s+'([^']+)'", flt)
        locations = [m.group(1).lower()] if m else list(LOCATIONS)
        value = []
        for size, cores in SIZES.items():
            restrictions = [{"type": "Location", "values": locations, "reasonCode": "NotAvailableForSubscription",
                             "restrictionInfo": {"locations": locations}}] if size in RESTRICTED else []
            value.append({"resourceType": "virtualMachines", "name": size, "tier": "Standard",
                          "size": size.split("_", 1)[1], "locations": locations,
                          "locationInfo": [{"location": loc, "zones": []} for loc in locations],
                          "capabilities": [{"name": "vCPUs", "value": str(cores)}],
                          "restrictions": restrictions})
        return 200, {"value": value}, {}

    def _images(self, rest: list[str], method: str) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        # providers/Microsoft.Compute/locations/{loc}/publishers/{p}/artifacttypes/vmimage
        #   /offers/{o}/skus/{s}/versions[/{v}]
        low = [p.lower() for p in rest]
        try:
            loc, pub, offer, sku = low[3], low[5], low[9], low[11]
        except IndexError:
            return 404, error("NotFound", "Artifact: VMImage was not found."), {}
        versions = IMAGES.get((pub, offer, sku))
        if method != "GET" or versions is None or loc not in LOCATIONS or low[12:13] != ["versions"]:
            return 404, error("NotFound", "Artifact: VMImage was not found."), {}
        base = (f"/Subscriptions/{self.subscription}/Providers/Microsoft.Compute/Locations/{loc}/Publishers/"
                f"{rest[5]}/ArtifactTypes/VMImage/Offers/{rest[9]}/Skus/{rest[11]}/Versions")
        if len(rest) == 14:
            if rest[13] not in versions:
                return 404, error("NotFound", "Artifact: VMImage was not found."), {}
            return 200, {"id": f"{base}/{rest[13]}", "name": rest[13], "location": loc,
                         "properties": {"osImage": {"operatingSystem": "Linux"}, "hyperVGeneration": "V2"}}, {}
        return 200, [{"id": f"{base}/{v}", "name": v, "location": loc} for v in versions], {}  # type: ignore[return-value]

    # -- resource groups -----------------------------------------------------------------------
    def _group(self, name: str, location: str, tags: dict[str, str]) -> dict[str, Any]:
        return {"id": f"/subscriptions/{self.subscription}/resourceGroups/{name}", "name": name,
                "type": "Microsoft.Resources/resourceGroups", "location": location, "tags": tags,
                "properties": {"provisioningState": "Succeeded"}}

    def _resource_group(self, method: str, name: str, body: Any) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        key = name.lower()
        group = self.groups.get(key)
        if method in ("GET", "HEAD"):
            if group is None or (group["properties"]["provisioningState"] == "Deleting" and method == "HEAD"):
                return 404, _rg_missing(name) if method == "GET" else None, {}
            return (200, group, {}) if method == "GET" else (204, None, {})
        if method == "PUT":
            body = body if isinstance(body, dict) else {}
            location = str(body.get("location") or "").lower()
            if location not in LOCATIONS:
                return 400, error("LocationNotAvailableForResourceGroup",
                                  f"The provided location '{location}' is not available for resource group."), {}
            created = group is None
            if created:
                group = self._group(name, location, {})
                self.groups[key] = group
            group["tags"] = dict(body.get("tags") or {})
            return (201 if created else 200), group, {}
        if method == "DELETE":
            if group is None:
                return 404, _rg_missing(name), {}
            group["properties"]["provisioningState"] = "Deleting"

            def finish() -> None:
                for r in self._in_group(name):
                    self.resources.pop(r["id"].lower(), None)
                self.groups.pop(key, None)

            return 202, None, self._start_op(group["location"], "Microsoft.Resources", finish, location_header=True)
        return 405, error("MethodNotAllowed", f"{method} is not supported on resource groups"), {}

    def _in_group(self, group: str) -> list[dict[str, Any]]:
        prefix = f"/subscriptions/{self.subscription}/resourcegroups/{group.lower()}/"
        return [r for k, r in self.resources.items() if k.startswith(prefix)]

    # -- resources ---------------------------------------------------------------------------
    def _rid(self, group: str, namespace: str, rtype: str, name: str, *child: str) -> str:
        rid = f"/subscriptions/{self.subscription}/resourceGroups/{group}/providers/{namespace}/{rtype}/{name}"
        return rid + "".join(f"/{c}" for c in child)

    def _resource(self, method: str, rest: list[str], query: dict[str, list[str]],
                  body: Any) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        group_name, namespace = rest[1], rest[3]
        if self.groups.get(group_name.lower()) is None:
            return 404, _rg_missing(group_name), {}
        segs = rest[4:]
        rtype = segs[0]
        if len(segs) == 1 and method == "GET":  # list in group
            items = [r for r in self._in_group(group_name) if r["type"].lower() == f"{namespace}/{rtype}".lower()]
            if (query.get("$expand") or [""])[0].lower() == "instanceview" and rtype.lower() == "virtualmachines":
                items = [{**r, "properties": {**r["properties"], "instanceView": self._instance_view(r)}}
                         for r in items]
            return 200, {"value": [self._view(r) for r in items]}, {}
        rid = "/subscriptions/" + self.subscription + "/resourceGroups/" + "/".join(rest[1:])
        key = rid.lower()
        tail = segs[-1].lower()
        if rtype.lower() == "virtualmachines" and len(segs) == 3:  # instanceView and actions
            vm = self.resources.get(key.rsplit("/", 1)[0])
            if vm is None:
                return 404, _not_found(f"{namespace}/{rtype}/{segs[1]}", group_name), {}
            if tail == "instanceview" and method == "GET":
                return 200, self._instance_view(vm), {}
            if method == "POST" and tail in ("start", "poweroff", "restart", "deallocate"):
                return self._power(vm, tail, query)
            return 404, error("InvalidResourceType", f"No route for {method} .../{segs[2]}"), {}
        if len(segs) % 2 != 0:
            return 404, error("InvalidResourceType", f"No route for {method} {rid}"), {}
        current = self.resources.get(key)
        if method == "GET":
            if current is None:
                return 404, _not_found("/".join([namespace, *segs]), group_name), {}
            return 200, self._view(current), {}
        if method == "PUT":
            return self._put(rid, namespace, segs, group_name, body if isinstance(body, dict) else {})
        if method == "DELETE":
            return self._delete(rid, namespace)
        return 405, error("MethodNotAllowed", f"{method} not supported"), {}

    def _view(self, resource: dict[str, Any]) -> dict[str, Any]:
        """What GET returns: a vnet lists its subnets, as ARM does."""
        if resource["type"].lower() == "microsoft.network/virtualnetworks":
            prefix = resource["id"].lower() + "/subnets/"
            subs = [r for k, r in self.resources.items() if k.startswith(prefix)]
            return {**resource, "properties": {**resource["properties"], "subnets": subs}}
        return resource

    def _put(self, rid: str, namespace: str, segs: list[str], group: str,
             body: dict[str, Any]) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        key = rid.lower()
        rtype = "/".join(segs[0::2])
        full_type = f"{namespace}/{rtype}"
        parent_key = key.rsplit("/", 2)[0] if len(segs) > 2 else None
        parent = self.resources.get(parent_key) if parent_key else None
        if parent_key and parent is None:
            return 404, _not_found("/".join([namespace, *segs[:-2]]), group), {}
        location = str(body.get("location") or (parent or {}).get("location") or "").lower()
        if location not in LOCATIONS:
            return 400, error("LocationNotAvailableForResourceType",
                              f"The provided location '{location}' is not available for resource type "
                              f"'{full_type}'. List of available regions is '{','.join(LOCATIONS)}'."), {}
        props = json.loads(json.dumps(body.get("properties") or {}))
        problem = self._validate(full_type.lower(), segs[-1], location, props, key)
        if problem:
            return problem[0], problem[1], {}
        existing = self.resources.get(key)
        resource = {"id": rid, "name": segs[-1], "type": full_type, "tags": dict(body.get("tags") or {}),
                    "properties": {**props, "provisioningState": "Updating" if existing else "Creating"}}
        if not parent_key:
            resource["location"] = location
        if body.get("sku"):
            resource["sku"] = body["sku"]
        self._complete_props(full_type.lower(), resource, group, location)
        self.resources[key] = resource
        failure = self._fail_provisioning.pop(segs[-2].lower(), None)

        def finish() -> dict[str, Any] | None:
            res = self.resources.get(key)
            if res is None:
                return error("ResourceNotFound", "The resource was deleted while it was being created.")["error"]
            if failure:  # a failed VM still exists, with its OS disk, but stays stopped
                res["properties"]["provisioningState"] = "Failed"
                if full_type.lower() == "microsoft.compute/virtualmachines":
                    self._make_disk(res)
                    res["power"] = "stopped"
                return failure
            res["properties"]["provisioningState"] = "Succeeded"
            self._provisioned(full_type.lower(), res)
            return None

        if full_type.lower() in SYNC_TYPES:  # ARM answers these PUTs synchronously with 200
            problem_now = finish()
            if problem_now:
                return 400, {"error": problem_now}, {}
            return 200, resource, {}
        headers = self._start_op(location, namespace, finish, location_header=False)
        return (200 if existing else 201), resource, headers

    def _validate(self, rtype: str, name: str, location: str, props: dict[str, Any],
                  key: str) -> tuple[int, dict[str, Any]] | None:
        for ref in _references(props):
            if ref.lower() != key and not self._exists(ref):
                return 400, error("InvalidResourceReference",
                                  f"Resource {ref} referenced by resource {key} was not found. "
                                  "Please make sure that the referenced resource exists, and that both "
                                  "resources are in the same region.")
        if rtype != "microsoft.compute/virtualmachines":
            return None
        size = (props.get("hardwareProfile") or {}).get("vmSize", "")
        if size not in SIZES:
            return 400, error(
                "InvalidParameter",
                f"The value {size} provided for the VM size is not valid. "
                "The valid sizes in the current region are: " + ", ".join(sorted(set(SIZES) - RESTRICTED)),
            )
        if size in RESTRICTED:
            return 409, error("SkuNotAvailable", f"The requested VM size for resource 'Following SKUs have failed "
                              f"for Capacity Restrictions: {size}' is currently not available in location "
                              f"'{location}'. Please try another size or deploy to a different location.")
        os_profile = props.get("osProfile") or {}
        user = str(os_profile.get("adminUsername") or "")
        if not re.fullmatch(r"[a-z_][a-z0-9_.-]{0,62}[a-z0-9_-]|[a-z_]", user) or \
                user in ("admin", "administrator", "guest", "user", "test", "sys"):
            return 400, error("InvalidParameter", f"The Admin Username specified is not allowed: '{user}'.")
        image = (props.get("storageProfile") or {}).get("imageReference") or {}
        versions = IMAGES.get((str(image.get("publisher", "")).lower(), str(image.get("offer", "")).lower(),
                               str(image.get("sku", "")).lower()))
        if not versions or image.get("version") not in ("latest", *versions):
            return 404, error("PlatformImageNotFound", "The platform image '{}:{}:{}:{}' is not available. "
                              "Verify that all fields in the storage profile are correct.".format(
                                  image.get("publisher"), image.get("offer"), image.get("sku"), image.get("version")))
        used = sum(SIZES.get(r["properties"].get("hardwareProfile", {}).get("vmSize", ""), 0)
                   for k, r in self.resources.items()
                   if r["type"].lower() == rtype and r.get("location") == location and k != key)
        if used + SIZES[size] > self.core_quota:
            return 409, error("QuotaExceeded", "Operation could not be completed as it results in exceeding "
                              f"approved Total Regional Cores quota. Location: {location}, Current Limit: "
                              f"{self.core_quota}, Current Usage: {used}, Additional Required: {SIZES[size]}.")
        if custom := os_profile.get("customData"):
            try:
                base64.b64decode(custom, validate=True)
            except ValueError:
                return 400, error("InvalidParameter", "Custom data in OSProfile must be in Base64 encoding.")
        return None

    def _exists(self, rid: str) -> bool:
        return rid.lower() in self.resources

    def _complete_props(self, rtype: str, resource: dict[str, Any], group: str, location: str) -> None:
        props = resource["properties"]
        if rtype == "microsoft.network/networkinterfaces":
            for cfg in props.get("ipConfigurations") or []:
                p = cfg.setdefault("properties", {})
                cfg.setdefault("id", resource["id"] + "/ipConfigurations/" + cfg.get("name", "ipconfig1"))
                if p.get("privateIPAllocationMethod", "Dynamic") != "Static" or not p.get("privateIPAddress"):
                    p["privateIPAllocationMethod"] = "Dynamic"
                    p["privateIPAddress"] = self._private_ip((p.get("subnet") or {}).get("id", ""))
        if rtype == "microsoft.network/publicipaddresses":
            if props.get("publicIPAllocationMethod") == "Static":
                props["ipAddress"] = self.public_ip
            label = (props.get("dnsSettings") or {}).get("domainNameLabel")
            if label:
                props["dnsSettings"]["fqdn"] = f"{label}.{location}.cloudapp.azure.com"
        if rtype == "microsoft.compute/virtualmachines":
            storage = props.setdefault("storageProfile", {})
            os_disk = storage.setdefault("osDisk", {})
            disk_name = os_disk.get("name") or f"{resource['name']}_OsDisk_1_{uuid.uuid4().hex}"
            os_disk["name"] = disk_name
            os_disk.setdefault("managedDisk", {})["id"] = self._rid(group, "Microsoft.Compute", "disks", disk_name)
            props["vmId"] = str(uuid.uuid4())
            resource["power"] = "starting"

    def _private_ip(self, subnet_id: str) -> str:
        subnet = self.resources.get(subnet_id.lower()) or {}
        prefix = (subnet.get("properties") or {}).get("addressPrefix") or "10.0.0.0/24"
        net = ipaddress.ip_network(prefix, strict=False)
        return str(net.network_address + next(self._ips))

    def _make_disk(self, vm: dict[str, Any]) -> None:
        os_disk = vm["properties"]["storageProfile"]["osDisk"]
        disk_id = os_disk["managedDisk"]["id"]
        self.resources[disk_id.lower()] = {
            "id": disk_id, "name": os_disk["name"], "type": "Microsoft.Compute/disks", "location": vm["location"],
            "tags": {}, "managedBy": vm["id"],  # Azure does not copy the VM's tags to its OS disk
            "sku": {"name": (os_disk.get("managedDisk") or {}).get("storageAccountType", "Standard_LRS")},
            "properties": {"provisioningState": "Succeeded", "diskState": "Attached", "osType": "Linux"}}

    def _provisioned(self, rtype: str, res: dict[str, Any]) -> None:
        if rtype != "microsoft.compute/virtualmachines":
            return
        props = res["properties"]
        self._make_disk(res)
        self._set_power(res, "running")
        if self.on_vm_create:
            os_profile = props.get("osProfile") or {}
            keys = [k.get("keyData", "") for k in
                    ((os_profile.get("linuxConfiguration") or {}).get("ssh") or {}).get("publicKeys") or []]
            custom = base64.b64decode(os_profile["customData"]) if os_profile.get("customData") else None
            self.on_vm_create(res, os_profile.get("adminUsername"), keys, custom)

    def _public_ips_of(self, vm: dict[str, Any]) -> list[dict[str, Any]]:
        found = []
        for nic_ref in (vm["properties"].get("networkProfile") or {}).get("networkInterfaces") or []:
            nic = self.resources.get(str(nic_ref.get("id", "")).lower())
            for cfg in (nic or {}).get("properties", {}).get("ipConfigurations") or []:
                pip = self.resources.get(str(((cfg.get("properties") or {}).get("publicIPAddress") or {})
                                             .get("id", "")).lower())
                if pip:
                    found.append(pip)
        return found

    def _set_power(self, vm: dict[str, Any], state: str) -> None:
        vm["power"] = state
        for pip in self._public_ips_of(vm):
            if pip["properties"].get("publicIPAllocationMethod") != "Static":
                if state == "running":
                    pip["properties"]["ipAddress"] = self.public_ip
                elif state == "deallocated":
                    pip["properties"].pop("ipAddress", None)
        if self.on_power and state in ("running", "stopped", "deallocated"):
            self.on_power(vm, state)

    def _instance_view(self, vm: dict[str, Any]) -> dict[str, Any]:
        prov = vm["properties"]["provisioningState"].lower()
        statuses = [{"code": f"ProvisioningState/{prov}", "level": "Info",
                     "displayStatus": f"Provisioning {prov}"}]
        if prov == "succeeded" or vm.get("power") not in (None, "starting"):
            power = vm.get("power", "running")
            statuses.append({"code": f"PowerState/{power}", "level": "Info",
                             "displayStatus": f"VM {power}"})
        return {"computerName": vm["name"], "osName": "ubuntu", "statuses": statuses}

    def _power(self, vm: dict[str, Any], action: str,
               query: dict[str, list[str]]) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        if vm["properties"]["provisioningState"] != "Succeeded":
            return 409, error("OperationNotAllowed", f"Operation '{action}' is not allowed on VM "
                              f"'{vm['name']}' since the VM is marked for deletion or is being provisioned."), {}
        transient, final = {"start": ("starting", "running"), "poweroff": ("stopping", "stopped"),
                            "restart": ("starting", "running"),
                            "deallocate": ("deallocating", "deallocated")}[action]
        vm["power"] = transient
        vm.setdefault("actions", []).append(action + (" skipShutdown" if (query.get("skipShutdown") or [""])[0]
                                                      .lower() == "true" else ""))

        def finish() -> None:
            self._set_power(vm, final)

        return 202, None, self._start_op(vm["location"], "Microsoft.Compute", finish, location_header=True)

    def _delete(self, rid: str, namespace: str) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        key = rid.lower()
        resource = self.resources.get(key)
        if resource is None:
            return 204, None, {}
        for other_key, other in self.resources.items():
            if other_key == key or other_key.startswith(key + "/") or key.startswith(other_key + "/"):
                continue
            if any(ref.lower() == key or ref.lower().startswith(key + "/") for ref in _references(other)):
                kind = resource["type"].split("/")[-1]
                code = {"networkSecurityGroups": "InUseNetworkSecurityGroupCannotBeDeleted",
                        "publicIPAddresses": "PublicIPAddressCannotBeDeleted",
                        "networkInterfaces": "NicInUse", "virtualNetworks": "InUseSubnetCannotBeDeleted",
                        "subnets": "InUseSubnetCannotBeDeleted", "disks": "OperationNotAllowed",
                        "availabilitySets": "AvailabilitySetInUse"}.get(kind, "InUse")
                return 400, error(code, f"{resource['type']} {rid} is in use by {other['id']} and cannot be "
                                  "deleted. In order to delete it, remove all resources that reference it."), {}
        resource["properties"]["provisioningState"] = "Deleting"

        def finish() -> None:
            for k in [k for k in self.resources if k == key or k.startswith(key + "/")]:
                self.resources.pop(k, None)

        location = resource.get("location") or "westus"
        return 202, None, self._start_op(location, namespace, finish, location_header=True)


def _references(obj: Any) -> list[str]:
    """Every ARM resource id an object refers to (``{"id": "/subscriptions/..."}`` below the top)."""
    found: list[str] = []

    def walk(value: Any, top: bool) -> None:
        if isinstance(value, dict):
            rid = value.get("id")
            if not top and isinstance(rid, str) and rid.lower().startswith("/subscriptions/") \
                    and "/providers/" in rid.lower():
                found.append(rid)
            for k, v in value.items():
                if k not in ("id", "managedBy"):
                    walk(v, False)
        elif isinstance(value, list):
            for v in value:
                walk(v, False)

    walk(obj.get("properties", obj) if isinstance(obj, dict) else obj, False)
    return found


def _summary(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: resource[k] for k in ("id", "name", "type", "location", "tags") if k in resource}


def _rg_missing(name: str) -> dict[str, Any]:
    return error("ResourceGroupNotFound", f"Resource group '{name}' could not be found.")


def _not_found(what: str, group: str) -> dict[str, Any]:
    return error("ResourceNotFound", f"The Resource '{what}' under resource group '{group}' was not found. "
                 "For more details please go to https://aka.ms/ARMResourceNotFoundFix")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeARM
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            ctype = self.headers.get("Content-Type", "")
            try:
                if "x-www-form-urlencoded" in ctype:
                    body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                else:
                    body = json.loads(raw)
            except ValueError:
                self._reply(400, error("InvalidRequestContent", "The request content was invalid."), {})
                return
        status, payload, headers = self.fake.handle(self.command, split.path, parse_qs(split.query), body,
                                                    self.headers)
        self._reply(status, payload, headers)

    def _reply(self, status: int, payload: Any, headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        if payload is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = do_HEAD = do_PATCH = _serve
