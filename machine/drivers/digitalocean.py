"""The ``digitalocean`` driver: droplets through the DigitalOcean v2 API.

Flags, env vars, config.json fields, log lines and lifecycle are docker-machine
0.16's (SSH key named after the machine, a droplet with that key, wait for
its public IPv4; stop = shutdown, kill = power_off, restart = reboot).
pymachine additions: ``--digitalocean-api-url`` and ``--digitalocean-ca-cert``
(a private endpoint and the CA bundle to trust for it), the tags
``pymachine`` and ``pymachine-machine:<name>`` on every droplet so ``ls``
needs one list call per account, pre-create checks for the token, region,
size, image and droplet limit (exit 3), and bounded retries on rate limits.

The access token is kept in the machine's secrets file, never in config.json
(``AccessToken`` stays empty); without it the driver falls back to
``$DIGITALOCEAN_ACCESS_TOKEN`` (or a token in a docker-machine store).

Why a thin ``http.client`` client rather than apache-libcloud: libcloud's
DigitalOcean driver cannot take a host/port (its ``__new__`` passes kwargs to
``object.__new__``); setting ``connection.host``/``port``/``secure`` on an
instance is ignored and the first request still went to api.digitalocean.com.
Pointing it elsewhere needs ``connect(base_url=...)`` plus poking
``connection.connection.session.verify`` (private attributes), it retries no
429, appends ``per_page`` to every request, and costs ~360 ms of imports.
About ten plain JSON calls are simpler to own: exact error shapes, rate-limit
headers, per-call deadlines for ``ls``, and a CA bundle per machine.

Waits are bounded: ``$PYMACHINE_DIGITALOCEAN_WAIT`` (droplet active with an
IPv4, default 300 s) and ``$PYMACHINE_DIGITALOCEAN_SHUTDOWN_WAIT`` (graceful
shutdown before power_off, default 60 s).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from pymachine.machine import layout, urls
from pymachine.machine.drivers.base import Driver, DriverCapabilities, Flag, Log, State
from pymachine.machine.drivers.settings import Settings, setting
from pymachine.machine.errors import MachineError, PreCreateError

DEFAULT_API_URL = "https://api.digitalocean.com"
DEFAULT_IMAGE = "ubuntu-24-04-x64"
LIST_TAG = "pymachine"
MACHINE_TAG_PREFIX = "pymachine-machine:"
TOKEN_ENV = "DIGITALOCEAN_ACCESS_TOKEN"
SECRET_KEY = "AccessToken"
WAIT_ENV = "PYMACHINE_DIGITALOCEAN_WAIT"
SHUTDOWN_WAIT_ENV = "PYMACHINE_DIGITALOCEAN_SHUTDOWN_WAIT"
RATE_LIMIT_RETRIES = 5
RATE_LIMIT_MAX_DELAY = 30.0
ACTION_WAIT = 180.0
TAG_RE = re.compile(r"^[A-Za-z0-9:_\-]{1,255}$")
STATES = {"new": State.STARTING, "active": State.RUNNING, "off": State.STOPPED, "archive": State.STOPPED}


class APIError(MachineError):
    """An error answer of the API, worded as godo did: ``METHOD URL: STATUS message``."""

    def __init__(self, method: str, url: str, status: int, error_id: str, message: str) -> None:
        super().__init__(f"{method} {url}: {status} {message}")
        self.status = status
        self.error_id = error_id
        self.api_message = message


def _seconds(env: str, default: float) -> float:
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise MachineError(f"{env} must be a number of seconds between 0 and 86400, got {raw!r}")
    return value


def retry_delay(headers: Mapping[str, str], attempt: int, now: float | None = None) -> float:
    """Seconds to wait after a 429: Retry-After, else ratelimit-reset, else backoff; capped."""
    lower = {k.lower(): v for k, v in headers.items()}
    delay: float | None = None
    try:
        if "retry-after" in lower:
            delay = float(lower["retry-after"])
        elif "ratelimit-reset" in lower:
            delay = float(lower["ratelimit-reset"]) - (time.time() if now is None else now)
    except ValueError:
        delay = None
    if delay is None:
        delay = 2.0 ** attempt
    return min(max(delay, 0.5), RATE_LIMIT_MAX_DELAY)


class Client:
    """DigitalOcean v2 JSON calls over ``http.client``; the token only ever goes in a header."""

    def __init__(self, token: str, api_url: str = DEFAULT_API_URL, ca_cert: str = "", timeout: float = 30.0) -> None:
        split = urlsplit(api_url or DEFAULT_API_URL)
        if split.scheme not in ("https", "http") or not split.hostname:
            raise MachineError(f"--digitalocean-api-url must be an http(s) URL, got {api_url!r}")
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self._split = split
        self._prefix = split.path.rstrip("/")
        self._token = token
        self._ca_cert = ca_cert
        self.timeout = timeout

    def _connection(self, timeout: float):
        import http.client

        host, port = self._split.hostname or "", self._split.port
        if self._split.scheme == "http":
            return http.client.HTTPConnection(host, port, timeout=timeout)
        import ssl

        ctx = ssl.create_default_context(cafile=self._ca_cert or None)
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)

    def call(self, method: str, path: str, body: Any = None, query: Mapping[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        """One API call; 429 answers are retried (bounded); errors raise APIError or MachineError."""
        url_path = self._prefix + path + (f"?{urlencode(query)}" if query else "")
        shown = self.api_url + path
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout * (RATE_LIMIT_RETRIES + 1))
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json",
                   "User-Agent": "pymachine"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                raise MachineError(f"{method} {shown}: no answer within the time limit")
            conn = self._connection(min(self.timeout, left))
            try:
                conn.request(method, url_path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                status, resp_headers = resp.status, dict(resp.getheaders())
            except OSError as exc:
                reason = getattr(exc, "reason", None) or exc.strerror or exc
                raise MachineError(f"cannot reach the DigitalOcean API at {self.api_url}: {reason}") from None
            finally:
                conn.close()
            if status == 429 and attempt < RATE_LIMIT_RETRIES:
                delay = retry_delay(resp_headers, attempt)
                if time.monotonic() + delay < deadline:
                    time.sleep(delay)
                    continue
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                payload = None
            if status >= 400:
                error = payload if isinstance(payload, dict) else {}
                message = str(error.get("message") or raw[:200].decode(errors="replace") or "no message")
                if status == 429:
                    message += f" (still rate limited after {attempt + 1} attempts)"
                raise APIError(method, shown, status, str(error.get("id") or ""), message)
            return payload
        raise AssertionError("unreachable")  # pragma: no cover

    def list_all(self, path: str, key: str, query: Mapping[str, Any] | None = None,
                 timeout: float | None = None, max_pages: int = 50) -> list[dict[str, Any]]:
        """Every item of a paginated listing (``links.pages.next``), at most ``max_pages`` calls."""
        items: list[dict[str, Any]] = []
        params = {"per_page": 200, **(query or {})}
        for page in range(1, max_pages + 1):
            params["page"] = page
            payload = self.call("GET", path, query=params, timeout=timeout) or {}
            items.extend(payload.get(key) or [])
            if not ((payload.get("links") or {}).get("pages") or {}).get("next"):
                break
        return items


CREATE_TAG_PREFIX = "pymachine-create:"


def machine_tag(name: str) -> str:
    """``pymachine-machine:<name>``; a dot (not allowed in DO tags) becomes ``_`` (not allowed in names)."""
    return MACHINE_TAG_PREFIX + name.replace(".", "_")


def public_ipv4(droplet: Mapping[str, Any]) -> str:
    for net in (droplet.get("networks") or {}).get("v4") or []:
        if net.get("type") == "public" and net.get("ip_address"):
            return str(net["ip_address"])
    return ""


@dataclasses.dataclass
class DigitalOceanSettings(Settings):
    access_token: str = setting("AccessToken", "")
    droplet_id: int = setting("DropletID", 0)
    droplet_name: str = setting("DropletName", "")
    image: str = setting("Image", "ubuntu-24-04-x64")
    region: str = setting("Region", "nyc3")
    ssh_key_id: int = setting("SSHKeyID", 0)
    ssh_key_fingerprint: str = setting("SSHKeyFingerprint", "")
    ssh_key: str = setting("SSHKey", "")
    size: str = setting("Size", "s-1vcpu-1gb")
    ipv6: bool = setting("IPv6", False)
    backups: bool = setting("Backups", False)
    private_networking: bool = setting("PrivateNetworking", False)
    user_data_file: str = setting("UserDataFile", "")
    monitoring: bool = setting("Monitoring", False)
    tags: str = setting("Tags", "")
    api_url: str = setting("APIURL", "https://api.digitalocean.com")
    ca_cert: str = setting("CACert", "")
    create_tag: str = setting("CreateTag", "", absent=True)


class DigitalOceanDriver(Driver):
    settings_class = DigitalOceanSettings
    settings: DigitalOceanSettings
    name = "digitalocean"
    capabilities = DriverCapabilities(start=True, stop=True, restart=True, kill=True, own_engine_url=True)
    rollback_unreachable = True
    flags = (
        Flag("digitalocean-access-token", "string", "", TOKEN_ENV, "Digital Ocean access token", secret=True),
        Flag("digitalocean-ssh-user", "string", "root", "DIGITALOCEAN_SSH_USER", "SSH username"),
        Flag(
            "digitalocean-ssh-key-fingerprint", "string", "", "DIGITALOCEAN_SSH_KEY_FINGERPRINT", "SSH key fingerprint"
        ),
        Flag("digitalocean-ssh-key-path", "string", "", "DIGITALOCEAN_SSH_KEY_PATH", "SSH private key path "),
        Flag("digitalocean-ssh-port", "int", 22, "DIGITALOCEAN_SSH_PORT", "SSH port"),
        Flag("digitalocean-image", "string", DEFAULT_IMAGE, "DIGITALOCEAN_IMAGE", "Digital Ocean Image"),
        Flag("digitalocean-region", "string", "nyc3", "DIGITALOCEAN_REGION", "Digital Ocean region"),
        Flag("digitalocean-size", "string", "s-1vcpu-1gb", "DIGITALOCEAN_SIZE", "Digital Ocean size"),
        Flag("digitalocean-ipv6", "bool", False, "DIGITALOCEAN_IPV6", "enable ipv6 for droplet"),
        Flag(
            "digitalocean-private-networking",
            "bool",
            False,
            "DIGITALOCEAN_PRIVATE_NETWORKING",
            "enable private networking for droplet",
        ),
        Flag("digitalocean-backups", "bool", False, "DIGITALOCEAN_BACKUPS", "enable backups for droplet"),
        Flag("digitalocean-userdata", "string", "", "DIGITALOCEAN_USERDATA", "path to file with cloud-init user-data"),
        Flag("digitalocean-monitoring", "bool", False, "DIGITALOCEAN_MONITORING", "enable monitoring for droplet"),
        Flag(
            "digitalocean-tags",
            "string",
            "",
            "DIGITALOCEAN_TAGS",
            "comma-separated list of tags to apply to the Droplet",
        ),
        Flag(
            "digitalocean-api-url",
            "string",
            DEFAULT_API_URL,
            "DIGITALOCEAN_API_URL",
            "DigitalOcean API endpoint (private clouds, tests)",
        ),
        Flag(
            "digitalocean-ca-cert",
            "string",
            "",
            "DIGITALOCEAN_CA_CERT",
            "PEM CA bundle to trust for the API endpoint (default: the system's)",
        ),
    )

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._token = ""

    def set_config_from_flags(self, values: Mapping[str, Any]) -> None:
        port = values.get("digitalocean-ssh-port", 22)
        if not isinstance(port, int) or not 0 < port < 65536:
            raise MachineError(f"--digitalocean-ssh-port must be a port number between 1 and 65535, got {port!r}")
        api_url = str(values.get("digitalocean-api-url") or DEFAULT_API_URL)
        Client("", api_url)  # validates the URL's shape

        def path(key: str) -> str:
            return os.path.abspath(os.path.expanduser(str(values[key]))) if values.get(key) else ""

        self._token = str(values.get("digitalocean-access-token") or "").strip()
        self.settings.update(
            image=str(values.get("digitalocean-image") or DEFAULT_IMAGE),
            region=str(values.get("digitalocean-region") or "nyc3"),
            size=str(values.get("digitalocean-size") or "s-1vcpu-1gb"),
            ipv6=bool(values.get("digitalocean-ipv6")),
            private_networking=bool(values.get("digitalocean-private-networking")),
            backups=bool(values.get("digitalocean-backups")),
            user_data_file=path("digitalocean-userdata"),
            ssh_user=str(values.get("digitalocean-ssh-user") or "root"),
            ssh_port=port,
            ssh_key_fingerprint=str(values.get("digitalocean-ssh-key-fingerprint") or ""),
            ssh_key=path("digitalocean-ssh-key-path"),
            monitoring=bool(values.get("digitalocean-monitoring")),
            tags=str(values.get("digitalocean-tags") or ""),
            api_url=api_url.rstrip("/"),
            ca_cert=path("digitalocean-ca-cert"),
        )

    # -- API access --------------------------------------------------------------------
    def access_token(self) -> str:
        if self._token:
            return self._token
        if self.machine_name and self.store_path:
            from pymachine.machine.secrets import load_secret

            saved = load_secret(self.machine_dir, SECRET_KEY)
            if saved:
                return saved
        return self.settings.access_token or os.environ.get(TOKEN_ENV, "").strip()

    def client(self, timeout: float = 30.0) -> Client:
        token = self.access_token()
        if not token:
            raise MachineError(f'no DigitalOcean access token for "{self.machine_name}": set {TOKEN_ENV}')
        return Client(token, self.api_url, self.settings.ca_cert, timeout=timeout)

    @property
    def api_url(self) -> str:
        return str(self.settings.api_url or DEFAULT_API_URL)

    @property
    def droplet_id(self) -> int:
        return self.settings.droplet_id

    def tags(self) -> list[str]:
        user = [t.strip() for t in self.settings.tags.split(",") if t.strip()]
        own = [self.settings.create_tag] if self.settings.create_tag else []
        return [LIST_TAG, machine_tag(self.machine_name), *own, *[t for t in user if t != LIST_TAG]]

    # -- create ------------------------------------------------------------------------
    def pre_create_check(self) -> None:
        if not self.access_token():
            raise PreCreateError(
                f"DigitalOcean access token missing: pass --digitalocean-access-token or set {TOKEN_ENV}"
            )
        self._check_local_files()
        bad = [t for t in self.tags() if not TAG_RE.match(t)]
        if bad:
            raise PreCreateError(
                f"invalid --digitalocean-tags {bad[0]!r}: tags may hold only letters, digits, ':', '-' and '_'"
            )
        client = self.client()
        try:
            account = (client.call("GET", "/v2/account") or {}).get("account") or {}
        except APIError as exc:
            if exc.status == 401:
                raise PreCreateError(f"DigitalOcean did not accept the access token ({exc.api_message}): "
                                     f"check --digitalocean-access-token / {TOKEN_ENV}") from None
            raise PreCreateError(str(exc)) from None
        except MachineError as exc:
            raise PreCreateError(str(exc)) from None
        try:
            self._check_account(client, account)
            self._check_placement(client)
        except PreCreateError:
            raise
        except MachineError as exc:
            raise PreCreateError(str(exc)) from None

    def _check_local_files(self) -> None:
        userdata = self.settings.user_data_file
        if userdata and not os.path.isfile(userdata):
            raise PreCreateError(f"user-data file {userdata} could not be found")
        key = self.settings.ssh_key
        if key:
            if not os.path.isfile(key):
                raise PreCreateError(f"SSH key does not exist: {key!r}")
            if not self.settings.ssh_key_fingerprint and not os.path.isfile(key + ".pub"):
                raise PreCreateError(f"SSH public key does not exist: {key + '.pub'!r}")
        ca = self.settings.ca_cert
        if ca and not os.path.isfile(ca):
            raise PreCreateError(f"--digitalocean-ca-cert file not found: {ca}")

    def _check_account(self, client: Client, account: Mapping[str, Any]) -> None:
        if account.get("status") not in (None, "active"):
            raise PreCreateError(
                f"DigitalOcean account is {account.get('status')}: "
                f"{account.get('status_message') or 'see the control panel'}"
            )
        limit = account.get("droplet_limit")
        if isinstance(limit, int) and limit > 0:
            total = ((client.call("GET", "/v2/droplets", query={"per_page": 1}) or {}).get("meta") or {}).get("total")
            if isinstance(total, int) and total >= limit:
                raise PreCreateError(f"You have reached the droplet limit ({total} of {limit}): remove a droplet "
                                     "or ask DigitalOcean for a higher limit")
        fingerprint = self.settings.ssh_key_fingerprint
        if fingerprint:
            try:
                client.call("GET", f"/v2/account/keys/{fingerprint}")
            except APIError as exc:
                if exc.status == 404:
                    raise PreCreateError(f"Digital Ocean SSH key with fingerprint {fingerprint} doesn't exist "
                                         "(--digitalocean-ssh-key-fingerprint)") from None
                raise

    def _check_placement(self, client: Client) -> None:
        region, size, image = self.settings.region, self.settings.size, self.settings.image
        regions = {r.get("slug"): r for r in client.list_all("/v2/regions", "regions")}
        if region not in regions or not regions[region].get("available", True):
            known = ", ".join(sorted(s for s, r in regions.items() if s is not None and r.get("available", True)))
            raise PreCreateError(f'digitalocean requires a valid region: "{region}" is not available '
                                 f"(--digitalocean-region; one of: {known})")
        sizes = {s.get("slug"): s for s in client.list_all("/v2/sizes", "sizes")}
        if size not in sizes or not sizes[size].get("available", True):
            raise PreCreateError(f'DigitalOcean size "{size}" does not exist (--digitalocean-size; e.g. s-1vcpu-1gb)')
        if region not in (sizes[size].get("regions") or [region]):
            raise PreCreateError(f'DigitalOcean size "{size}" is not offered in region "{region}" '
                                 "(--digitalocean-size / --digitalocean-region)")
        try:
            client.call("GET", f"/v2/images/{image}")
        except APIError as exc:
            if exc.status == 404:
                raise PreCreateError(f'DigitalOcean image "{image}" not found (--digitalocean-image; '
                                     f"e.g. {DEFAULT_IMAGE})") from None
            raise

    def create(self, log: Log) -> None:
        from pymachine.machine.secrets import save_secrets

        token = self.access_token()
        if self._token:
            save_secrets(self.machine_dir, **{SECRET_KEY: self._token})
        client = Client(token, self.api_url, self.settings.ca_cert)
        userdata = ""
        if self.settings.user_data_file:
            with open(self.settings.user_data_file, encoding="utf-8") as fh:
                userdata = fh.read()
        ssh_key_ref: int | str
        if not self.settings.ssh_key_fingerprint:
            log(f"({self.machine_name}) Creating SSH key...")
            ssh_key_ref = self._create_ssh_key(client)
        else:
            ssh_key_ref = self.settings.ssh_key_fingerprint
            self._import_user_key(log)
        log(f"({self.machine_name}) Creating Digital Ocean droplet...")
        # A tag no other droplet has: if the create's answer is lost (timeout,
        # dropped connection) the droplet may still exist, and rm finds it by this.
        self.settings.create_tag = CREATE_TAG_PREFIX + os.urandom(8).hex()
        request = {
            "name": self.machine_name, "region": self.settings.region, "size": self.settings.size,
            "image": self.settings.image, "ssh_keys": [ssh_key_ref], "backups": self.settings.backups,
            "ipv6": self.settings.ipv6, "private_networking": self.settings.private_networking,
            "monitoring": self.settings.monitoring, "user_data": userdata or None, "tags": self.tags(),
        }
        droplet = (client.call("POST", "/v2/droplets", body=request) or {}).get("droplet") or {}
        self.settings.update(droplet_id=int(droplet.get("id") or 0), droplet_name=str(droplet.get("name") or ""))
        if not self.droplet_id:
            raise MachineError("DigitalOcean answered the droplet create without a droplet id")
        log(f"({self.machine_name}) Waiting for IP address to be assigned to the Droplet...")
        self.settings.ip_address = self._wait_active(client)

    def _create_ssh_key(self, client: Client) -> int:
        from pathlib import Path

        from pymachine.machine.certs import generate_ssh_keypair

        private = Path(self.machine_dir) / layout.SSH_KEY
        generate_ssh_keypair(private)
        self.settings.ssh_key_path = str(private)
        public = private.with_name(layout.SSH_PUBLIC_KEY).read_text().strip()
        key = (client.call("POST", "/v2/account/keys", body={"name": self.machine_name, "public_key": public})
               or {}).get("ssh_key") or {}
        self.settings.update(ssh_key_id=int(key.get("id") or 0), ssh_key_fingerprint=str(key.get("fingerprint") or ""))
        return self.settings.ssh_key_id

    def _import_user_key(self, log: Log) -> None:
        key = self.settings.ssh_key
        if not key:
            log(f"({self.machine_name}) Using SSH key {self.settings.ssh_key_fingerprint}; "
                "no --digitalocean-ssh-key-path, assuming the key is loaded or at the default location")
            return
        dest = os.path.join(self.machine_dir, layout.SSH_KEY)
        shutil.copyfile(key, dest)
        os.chmod(dest, 0o600)
        if os.path.exists(key + ".pub"):
            shutil.copyfile(key + ".pub", dest + ".pub")
            os.chmod(dest + ".pub", 0o600)
        self.settings.ssh_key_path = dest

    def _wait_active(self, client: Client) -> str:
        limit = _seconds(WAIT_ENV, 300.0)
        deadline = time.monotonic() + limit
        delay, status = 0.5, "unknown"
        while True:
            droplet = (client.call("GET", f"/v2/droplets/{self.droplet_id}") or {}).get("droplet") or {}
            status = str(droplet.get("status") or "unknown")
            ip = public_ipv4(droplet)
            if status == "active" and ip:
                return ip
            if status in ("errored", "archive"):
                raise MachineError(f"droplet {self.droplet_id} ended in status {status} while starting")
            if time.monotonic() + delay > deadline:
                what = "a public IPv4 address" if status == "active" else f"status active (still {status})"
                raise MachineError(f"droplet {self.droplet_id} did not get {what} within {limit:g}s ({WAIT_ENV})")
            time.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    # -- addresses and state -------------------------------------------------------------
    def url(self) -> str:
        return self.engine_url()

    def running_url(self) -> str:
        return self.engine_url()

    def engine_url(self) -> str:
        return urls.engine_url(self.ip(), urls.ENGINE_PORT, self.machine_name)

    def state(self, timeout: float = 10.0) -> State:
        try:
            droplet = (self.client(timeout).call("GET", f"/v2/droplets/{self.droplet_id}", timeout=timeout)
                       or {}).get("droplet") or {}
        except APIError as exc:
            if exc.status == 404:
                raise MachineError(f"droplet {self.droplet_id} no longer exists in DigitalOcean") from None
            raise
        return STATES.get(str(droplet.get("status")), State.NONE)

    @classmethod
    def batch_states(cls, drivers: list[Driver], timeout: float) -> dict[str, State]:
        """One droplet listing (tag ``pymachine``) per token and API endpoint."""
        groups: dict[tuple[str, str, str], list[DigitalOceanDriver]] = {}
        for drv in drivers:
            if isinstance(drv, DigitalOceanDriver) and drv.droplet_id and drv.access_token():
                key = (drv.access_token(), drv.api_url, str(drv.settings.ca_cert or ""))
                groups.setdefault(key, []).append(drv)
        found: dict[str, State] = {}
        for (token, api_url, ca), members in groups.items():
            client = Client(token, api_url, ca, timeout=timeout)
            try:
                droplets = client.list_all("/v2/droplets", "droplets", query={"tag_name": LIST_TAG}, timeout=timeout)
            except MachineError:
                continue  # these machines fall back to state(), which reports the error per machine
            by_id = {d.get("id"): str(d.get("status")) for d in droplets}
            for drv in members:
                if drv.droplet_id in by_id:
                    found[drv.machine_name] = STATES.get(by_id[drv.droplet_id], State.NONE)
        return found

    # -- lifecycle -----------------------------------------------------------------------
    def _action(self, client: Client, kind: str) -> None:
        """Run a droplet action and wait (bounded) until DigitalOcean reports it completed."""
        action = (client.call("POST", f"/v2/droplets/{self.droplet_id}/actions", body={"type": kind})
                  or {}).get("action") or {}
        deadline = time.monotonic() + ACTION_WAIT
        delay = 0.3
        while action.get("status") == "in-progress":
            if time.monotonic() + delay > deadline:
                raise MachineError(f"droplet {self.droplet_id}: {kind} did not complete within {ACTION_WAIT:g}s")
            time.sleep(delay)
            delay = min(delay * 1.5, 5.0)
            action = (client.call("GET", f"/v2/actions/{action.get('id')}") or {}).get("action") or {}
        if action.get("status") != "completed":
            raise MachineError(f"droplet {self.droplet_id}: {kind} ended {action.get('status') or 'without a status'}")

    def _wait_status(self, client: Client, want: str, limit: float) -> bool:
        deadline = time.monotonic() + limit
        delay = 0.3
        while True:
            droplet = (client.call("GET", f"/v2/droplets/{self.droplet_id}") or {}).get("droplet") or {}
            if droplet.get("status") == want:
                return True
            if time.monotonic() + delay > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    def start(self, log: Log) -> None:
        client = self.client()
        self._action(client, "power_on")
        self._wait_status(client, "active", 60.0)

    def stop(self, log: Log) -> None:
        client = self.client()
        self._action(client, "shutdown")
        limit = _seconds(SHUTDOWN_WAIT_ENV, 60.0)
        if not self._wait_status(client, "off", limit):
            log(f"({self.machine_name}) Droplet did not shut down within {limit:g}s, powering it off...")
            self._action(client, "power_off")

    def restart(self, log: Log) -> None:
        self._action(self.client(), "reboot")

    def kill(self, log: Log) -> None:
        self._action(self.client(), "power_off")

    def remove(self, log: Log) -> None:
        """Delete the SSH key pymachine made (by id, never a user's key) and the droplet; 404 is fine.

        Without a droplet id (the create's answer never arrived) the droplet
        is looked up by the create's own unique tag, so none is leaked.
        """
        if not self.droplet_id and not self.settings.ssh_key_id and not self.settings.create_tag:
            return
        client = self.client()
        if not self.droplet_id and self.settings.create_tag:
            found = client.list_all("/v2/droplets", "droplets", query={"tag_name": self.settings.create_tag})
            for droplet in found:
                if droplet.get("name") == self.machine_name and droplet.get("id"):
                    log(f"({self.machine_name}) Found droplet {droplet['id']} from the interrupted create; deleting it")
                    self.settings.droplet_id = int(droplet["id"])
                    break
        key_id = self.settings.ssh_key_id
        if key_id:
            try:
                client.call("DELETE", f"/v2/account/keys/{key_id}")
            except APIError as exc:
                if exc.status != 404:
                    raise
                log(f"({self.machine_name}) Digital Ocean SSH key doesn't exist, assuming it is already deleted")
        if self.droplet_id:
            try:
                client.call("DELETE", f"/v2/droplets/{self.droplet_id}")
            except APIError as exc:
                if exc.status != 404:
                    raise
                log(f"({self.machine_name}) Digital Ocean droplet doesn't exist, assuming it is already deleted")
        create_tag = self.settings.create_tag
        if create_tag:  # DigitalOcean keeps a tag after its droplets are gone
            try:
                client.call("DELETE", f"/v2/tags/{quote(create_tag, safe='')}")
            except APIError as exc:
                if exc.status != 404:
                    raise
            self.settings.create_tag = ""
