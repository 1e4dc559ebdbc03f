"""A stateful fake of the DigitalOcean v2 API over HTTPS on 127.0.0.1.

DigitalOcean ships no emulator, so this server implements the endpoints the
``digitalocean`` driver uses with the response and error shapes of the real
API (``{"id": "not_found", "message": ..., "request_id": ...}``, ``ratelimit-*``
headers, droplets with ``networks.v4[{ip_address, type}]``, actions that go
``in-progress`` -> ``completed``).  Its TLS certificate is signed by a private
test CA (``fake.ca_cert``) that clients must trust explicitly.

Network safety: a droplet only ever gets the address the test hands out via
``address_for(droplet, public_keys)``; without one it gets no address at all.

Failure injection: ``fail_next(method, path_prefix, status, id, message)``,
``drop_response_next(method, path_prefix)`` (the request takes effect but the
connection closes without an answer, as when a client times out),
``rate_limit(n)`` (the next n requests answer 429), ``droplet_limit``,
``ignore_shutdown`` (a shutdown action completes but the droplet stays on).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fakes.https import HTTPSFake

AddressFor = Callable[[dict[str, Any], list[str]], "str | dict[str, str] | None"]

REGIONS = ("nyc1", "nyc3", "ams3", "fra1", "sfo3")
SIZES = {"s-1vcpu-1gb": (1024, 1, 25), "s-1vcpu-2gb": (2048, 1, 50), "s-2vcpu-4gb": (4096, 2, 80)}
IMAGES = {"ubuntu-24-04-x64": (160_000_001, "24.04 (LTS) x64", "Ubuntu"),
          "ubuntu-22-04-x64": (129_211_873, "22.04 (LTS) x64", "Ubuntu"),
          "debian-12-x64": (139_000_002, "12 x64", "Debian")}
NOT_FOUND = "The resource you were accessing could not be found."


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _fingerprint(public_key: str) -> str | None:
    """MD5 colon-hex of the key blob, as DigitalOcean reports it."""
    parts = public_key.split()
    if len(parts) < 2 or parts[0] not in ("ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-dss"):
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        return None
    digest = hashlib.md5(blob).hexdigest()  # the fingerprint format, not security
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


@dataclass
class Injected:
    method: str
    prefix: str
    status: int
    error_id: str
    message: str
    remaining: int


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    authorization: str


@dataclass
class FakeDigitalOcean(HTTPSFake):
    """Start with ``with FakeDigitalOcean(workdir, address_for=...) as fake:``."""

    workdir: Path
    address_for: AddressFor | None = None
    tokens: set[str] = field(default_factory=lambda: {"fake-do-token"})
    droplet_limit: int = 25
    activation_delay: float = 0.3  # seconds from "new" to "active" (and the IP)
    action_delay: float = 0.2  # seconds for an action to complete
    ignore_shutdown: bool = False
    on_power: Callable[[dict[str, Any], str], None] | None = None  # (droplet, "active"|"off")

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.keys: dict[int, dict[str, Any]] = {}
        self.droplets: dict[int, dict[str, Any]] = {}
        self.tags: set[str] = set()  # every tag ever applied, until DELETE /v2/tags/<name>
        self.actions: dict[int, dict[str, Any]] = {}
        self.requests: list[Request] = []
        self._pending: dict[int, float] = {}  # droplet id -> activation time
        self._action_done: dict[int, tuple[float, Callable[[], None]]] = {}
        self._ids = itertools.count(3_164_444)
        self._injected: list[Injected] = []
        self._rate_limited = 0
        self._dropped: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> Self:
        return self.serve_https(_Handler, "fake-digitalocean", "fake-digitalocean.api", "fake-digitalocean")

    # -- failure injection and inspection -----------------------------------------------
    def fail_next(self, method: str, prefix: str, status: int, error_id: str, message: str, times: int = 1) -> None:
        with self._lock:
            self._injected.append(Injected(method.upper(), prefix, status, error_id, message, times))

    def drop_response_next(self, method: str, prefix: str) -> None:
        with self._lock:
            self._dropped.append((method.upper(), prefix))

    def rate_limit(self, times: int) -> None:
        with self._lock:
            self._rate_limited = times

    def add_key(self, name: str, public_key: str) -> dict[str, Any]:
        """A key that already exists in the account (not made by the code under test)."""
        with self._lock:
            return self._create_key(name, public_key)[1]["ssh_key"]

    def add_droplet(self, name: str, status: str = "active") -> dict[str, Any]:
        """A droplet that already exists in the account, with no address."""
        with self._lock:
            code, payload = self._create_droplet({"name": name, "region": REGIONS[0], "size": next(iter(SIZES)),
                                                  "image": next(iter(IMAGES))})
            assert code == 202, payload
            did = payload["droplet"]["id"]
            self._pending.pop(did, None)
            self.droplets[did]["status"] = status
            return _public(self.droplets[did])

    def set_status(self, droplet_id: int, status: str) -> None:
        """Change a droplet's status behind the client's back (as the control panel would)."""
        with self._lock:
            self.droplets[droplet_id]["status"] = status

    def calls(self, method: str | None = None, path: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and (path is None or r.path == path)]

    # -- state machine -------------------------------------------------------------------
    def _tick(self) -> None:
        """Advance time-based transitions: droplets becoming active, actions completing."""
        now = time.monotonic()
        for did, due in list(self._pending.items()):
            if now >= due and did in self.droplets:
                del self._pending[did]
                droplet = self.droplets[did]
                ip = self.address_for(droplet, droplet.pop("_public_keys")) if self.address_for else None
                if isinstance(ip, str):
                    ip = {"public": ip}
                for kind, addr in (ip or {}).items():
                    droplet["networks"]["v4"].append(
                        {"ip_address": addr, "netmask": "255.255.255.0",
                         "gateway": addr.rsplit(".", 1)[0] + ".1", "type": kind})
                droplet["status"] = "active"
        for aid, (due, apply) in list(self._action_done.items()):
            if now >= due:
                del self._action_done[aid]
                apply()
                self.actions[aid].update(status="completed", completed_at=_now())

    def _create_key(self, name: str, public_key: str) -> tuple[int, dict[str, Any]]:
        fp = _fingerprint(public_key or "")
        if not name:
            return 422, _err("unprocessable_entity", "Name is invalid, Name can't be blank")
        if fp is None:
            return 422, _err("unprocessable_entity", "Key invalid type, we support 'ssh-rsa', 'ssh-dss', "
                             "'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', or 'ssh-ed25519'")
        if any(k["fingerprint"] == fp for k in self.keys.values()):
            return 422, _err("unprocessable_entity", "SSH Key is already in use on your account")
        key = {"id": next(self._ids), "fingerprint": fp, "public_key": public_key.strip(), "name": name}
        self.keys[key["id"]] = key
        return 201, {"ssh_key": key}

    def _find_key(self, ref: str) -> dict[str, Any] | None:
        for key in self.keys.values():
            if str(key["id"]) == ref or key["fingerprint"] == ref:
                return key
        return None

    def _create_droplet(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = body.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.\-]*", name):
            return 422, _err(
                "unprocessable_entity", "Name Only valid hostname characters are allowed. (a-z, A-Z, 0-9, . and -)"
            )
        region, size, image = body.get("region"), body.get("size"), body.get("image")
        if region not in REGIONS:
            return 422, _err("unprocessable_entity", "You specified an invalid region for Droplet creation.")
        if size not in SIZES:
            return 422, _err("unprocessable_entity", "You specified an invalid size for Droplet creation.")
        if image not in IMAGES and str(image) not in {str(v[0]) for v in IMAGES.values()}:
            return 422, _err("unprocessable_entity", "You specified an invalid image for Droplet creation.")
        for tag in body.get("tags") or []:
            if not isinstance(tag, str) or not re.fullmatch(r"[A-Za-z0-9:_\-]{1,255}", tag):
                return 422, _err(
                    "unprocessable_entity", "Tag names must be letters, numbers, colons, dashes and underscores"
                )
        public_keys = []
        for ref in body.get("ssh_keys") or []:
            key = self._find_key(str(ref))
            if key is None:
                return 422, _err("unprocessable_entity", "You specified invalid ssh key ids for Droplet creation.")
            public_keys.append(key["public_key"])
        if len(self.droplets) >= self.droplet_limit:
            return 422, _err("unprocessable_entity", "You have reached the droplet limit")
        mem, vcpus, disk = SIZES[size]
        did = next(self._ids)
        slug = image if image in IMAGES else next(s for s, v in IMAGES.items() if str(v[0]) == str(image))
        droplet = {
            "id": did, "name": name, "memory": mem, "vcpus": vcpus, "disk": disk, "locked": False,
            "status": "new", "kernel": None, "created_at": _now(),
            "features": [f for f, on in (("backups", body.get("backups")), ("ipv6", body.get("ipv6")),
                                         ("private_networking", body.get("private_networking")),
                                         ("monitoring", body.get("monitoring"))) if on],
            "backup_ids": [], "snapshot_ids": [], "volume_ids": [],
            "image": _image(slug), "size": _size(size), "size_slug": size,
            "networks": {"v4": [], "v6": []}, "region": _region(region),
            "tags": list(body.get("tags") or []), "vpc_uuid": str(uuid.uuid4()),
            "user_data_present": bool(body.get("user_data")),
            "_public_keys": public_keys,
        }
        self.droplets[did] = droplet
        self.tags.update(droplet["tags"])
        self._pending[did] = time.monotonic() + self.activation_delay
        action = self._new_action(did, "create", region)
        return 202, {"droplet": _public(droplet),
                     "links": {"actions": [{"id": action["id"], "rel": "create",
                                            "href": f"{self.url}/v2/actions/{action['id']}"}]}}

    def _new_action(self, did: int, kind: str, region: str) -> dict[str, Any]:
        action = {"id": next(self._ids), "status": "in-progress", "type": kind, "started_at": _now(),
                  "completed_at": None, "resource_id": did, "resource_type": "droplet",
                  "region_slug": region}
        self.actions[action["id"]] = action
        return action

    def _droplet_action(self, did: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        droplet = self.droplets.get(did)
        if droplet is None:
            return 404, _err("not_found", NOT_FOUND)
        kind = body.get("type")
        targets = {"power_on": "active", "power_off": "off", "shutdown": "off", "reboot": "active",
                   "power_cycle": "active"}
        if kind not in targets:
            return 422, _err("unprocessable_entity", f"Action type {kind!r} is invalid")
        if droplet["status"] == "new":
            return 422, _err("unprocessable_entity", "Droplet is currently being created")
        if kind == "power_on" and droplet["status"] == "active":
            return 422, _err("unprocessable_entity", "Droplet is already powered on.")
        if kind in ("shutdown", "power_off") and droplet["status"] == "off":
            return 422, _err("unprocessable_entity", "Droplet is already powered off.")
        target = targets[kind]
        if kind == "shutdown" and self.ignore_shutdown:
            target = droplet["status"]
        action = self._new_action(did, kind, droplet["region"]["slug"])

        def apply(d: dict[str, Any] = droplet, status: str = target) -> None:
            if d["id"] in self.droplets:
                d["status"] = status
                if self.on_power:
                    self.on_power(_public(d), status)

        self._action_done[action["id"]] = (time.monotonic() + self.action_delay, apply)
        return 201, {"action": action}

    # -- routing -------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any,
               auth: str) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        with self._lock:
            self.requests.append(Request(method, path, query, body, auth))
            if self._rate_limited > 0:
                self._rate_limited -= 1
                reset = int(time.time()) + 1
                return 429, _err("too_many_requests", "API Rate limit exceeded."), {
                    "ratelimit-limit": "5000", "ratelimit-remaining": "0",
                    "ratelimit-reset": str(reset), "Retry-After": "1"}
            headers = {"ratelimit-limit": "5000", "ratelimit-remaining": "4999",
                       "ratelimit-reset": str(int(time.time()) + 3600)}
            if not auth.startswith("Bearer ") or auth[len("Bearer "):] not in self.tokens:
                return 401, _err("unauthorized", "Unable to authenticate you"), headers
            for inj in self._injected:
                if inj.remaining > 0 and inj.method == method and path.startswith(inj.prefix):
                    inj.remaining -= 1
                    return inj.status, _err(inj.error_id, inj.message), headers
            self._tick()
            status, payload = self._route(method, path, query, body if isinstance(body, dict) else {})
            drop = next((d for d in self._dropped if d[0] == method and path.startswith(d[1])), None)
            if drop:
                self._dropped.remove(drop)
                return 0, None, headers  # done, but the answer is lost
            return status, payload, headers

    def _route(self, method: str, path: str, query: dict[str, list[str]],
               body: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        parts = [p for p in path.split("/") if p]
        if parts[:1] != ["v2"]:
            return 404, _err("not_found", NOT_FOUND)
        parts = parts[1:]
        if method == "DELETE" and len(parts) == 2 and parts[0] == "tags":  # DO keeps tags until deleted
            name = unquote(parts[1])
            if name not in self.tags:
                return 404, _err("not_found", NOT_FOUND)
            self.tags.discard(name)
            for d in self.droplets.values():
                d["tags"] = [t for t in d["tags"] if t != name]
            return 204, None
        if method == "GET" and parts == ["account"]:
            return 200, {
                "account": {
                    "droplet_limit": self.droplet_limit,
                    "floating_ip_limit": 3,
                    "email": "test@example.invalid",
                    "uuid": "b6fr89dbf6d9156cace5f3c78dc9851d957381ef",
                    "email_verified": True,
                    "status": "active",
                    "status_message": "",
                }
            }
        if method == "GET" and parts == ["regions"]:
            return 200, _listing("regions", [_region(r) for r in REGIONS])
        if method == "GET" and parts == ["sizes"]:
            return 200, _listing("sizes", [_size(s) for s in SIZES])
        if method == "GET" and len(parts) == 2 and parts[0] == "images":
            slug = next((s for s, v in IMAGES.items() if parts[1] in (s, str(v[0]))), None)
            return (200, {"image": _image(slug)}) if slug else (404, _err("not_found", NOT_FOUND))
        if parts[:2] == ["account", "keys"]:
            if method == "GET" and len(parts) == 2:
                return 200, _listing("ssh_keys", list(self.keys.values()))
            if method == "POST" and len(parts) == 2:
                return self._create_key(str(body.get("name") or ""), str(body.get("public_key") or ""))
            if len(parts) == 3:
                key = self._find_key(parts[2])
                if key is None:
                    return 404, _err("not_found", NOT_FOUND)
                if method == "GET":
                    return 200, {"ssh_key": key}
                if method == "DELETE":
                    del self.keys[key["id"]]
                    return 204, None
        if parts[:1] == ["droplets"]:
            if method == "GET" and len(parts) == 1:
                tag = (query.get("tag_name") or [""])[0]
                found = [_public(d) for d in self.droplets.values() if not tag or tag in d["tags"]]
                return 200, _listing("droplets", found)
            if method == "POST" and len(parts) == 1:
                return self._create_droplet(body)
            did = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
            if did not in self.droplets:
                return 404, _err("not_found", NOT_FOUND)
            if method == "GET" and len(parts) == 2:
                return 200, {"droplet": _public(self.droplets[did])}
            if method == "DELETE" and len(parts) == 2:
                del self.droplets[did]
                self._pending.pop(did, None)
                return 204, None
            if method == "POST" and parts[2:] == ["actions"]:
                return self._droplet_action(did, body)
            if method == "GET" and len(parts) == 4 and parts[2] == "actions":
                action = self.actions.get(int(parts[3])) if parts[3].isdigit() else None
                return (200, {"action": action}) if action else (404, _err("not_found", NOT_FOUND))
        if method == "GET" and len(parts) == 2 and parts[0] == "actions" and parts[1].isdigit():
            action = self.actions.get(int(parts[1]))
            return (200, {"action": action}) if action else (404, _err("not_found", NOT_FOUND))
        return 404, _err("not_found", NOT_FOUND)


def _err(error_id: str, message: str) -> dict[str, Any]:
    return {"id": error_id, "message": message, "request_id": str(uuid.uuid4())}


def _listing(key: str, items: list[Any]) -> dict[str, Any]:
    return {key: items, "links": {}, "meta": {"total": len(items)}}


def _public(droplet: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in droplet.items() if not k.startswith("_")}))


def _region(slug: str) -> dict[str, Any]:
    return {"name": slug.upper(), "slug": slug, "sizes": list(SIZES), "available": True,
            "features": ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"]}


def _size(slug: str) -> dict[str, Any]:
    mem, vcpus, disk = SIZES[slug]
    return {"slug": slug, "memory": mem, "vcpus": vcpus, "disk": disk, "transfer": 1.0,
            "price_monthly": 6.0 * vcpus, "price_hourly": 0.00893 * vcpus, "regions": list(REGIONS),
            "available": True, "description": "Basic"}


def _image(slug: str) -> dict[str, Any]:
    iid, name, dist = IMAGES[slug]
    return {"id": iid, "name": name, "distribution": dist, "slug": slug, "public": True,
            "regions": list(REGIONS), "created_at": "2024-04-25T00:00:00Z", "min_disk_size": 7,
            "type": "base", "size_gigabytes": 2.36, "description": "", "tags": [], "status": "available",
            "error_message": ""}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeDigitalOcean
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        return

    def _serve(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._reply(400, _err("bad_request", "invalid JSON"), {})
            return
        status, payload, headers = self.fake.handle(self.command, split.path, parse_qs(split.query), body,
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
        if payload is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = _serve
