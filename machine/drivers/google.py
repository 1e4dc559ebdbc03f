"""The ``google`` driver: Compute Engine instances through the Compute v1 REST API.

Flags, env vars and lifecycle are docker-machine 0.16.2's (instance with the
network tag ``docker-machine``, boot disk ``<name>-disk``, the project-wide
firewall rule ``docker-machines`` for the engine port; stop = kill = the
instance's stop, rm deletes instance and disk).  pymachine differences:

* the SSH key goes in the ``ssh-keys`` metadata entry, merged with what an
  existing instance had (docker-machine's ``setMetadata`` wiped it);
* labels ``pymachine=machine`` and ``pymachine-machine=<name>`` on the instance
  and its disk, so ``ls`` asks one ``aggregated/instances`` listing per project;
* the firewall rule is made once (described as pymachine's) and removed with
  the last instance carrying the ``docker-machine`` tag;
* waits are bounded (``$PYMACHINE_GOOGLE_WAIT``, default 300 s) and 429/5xx and
  403 ``rateLimitExceeded`` answers are retried with backoff;
* the default image is Debian 12's family (docker-machine's Ubuntu 16.04 image
  is gone), and ``--google-api-url``/``--google-ca-cert`` point it at a private
  endpoint (tests use a local fake).

Credentials: ``--google-credentials`` (a service-account key file), else
Application Default Credentials (see google_auth).  The JSON is copied into the
machine's ``secrets.json`` (0600) so later commands need no environment; it is
never written to config.json.

Why a direct client rather than apache-libcloud's GCE driver: libcloud cannot
take a host/port (a private ``_ex_connection_class_kwargs`` override is
needed), ignores the key file's ``token_uri``, has no ``authorized_user``
support and prints the refresh token in its error, writes token caches into
``$HOME``, retries no 429/``rateLimitExceeded``, and its ``list_nodes`` drops
instances whose disk it cannot resolve.  The driver needs about twelve calls.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pymachine.machine import layout, urls
from pymachine.machine.drivers.base import Driver, DriverCapabilities, Flag, Log, State
from pymachine.machine.drivers.restclient import HTTPError, RestClient, seconds_from_env
from pymachine.machine.drivers.settings import Settings, setting
from pymachine.machine.errors import MachineError, PreCreateError

DEFAULT_API_URL = "https://compute.googleapis.com/compute/v1"
DEFAULT_IMAGE = "debian-cloud/global/images/family/debian-12"
DEFAULT_SCOPES = ("https://www.googleapis.com/auth/devstorage.read_only,"
                  "https://www.googleapis.com/auth/logging.write,https://www.googleapis.com/auth/monitoring.write")
GOOGLE_PREFIX = "https://www.googleapis.com/compute/v1/projects/"
FIREWALL = "docker-machines"
NETWORK_TAG = "docker-machine"
FIREWALL_DESCRIPTION = "docker-machine engine ports (made by pymachine; removed with its last machine)"
LABEL = "pymachine"
MACHINE_LABEL = "pymachine-machine"
CREATE_LABEL = "pymachine-create"
SECRET_KEY = "GoogleCredentials"
WAIT_ENV = "PYMACHINE_GOOGLE_WAIT"
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
PORT_RE = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?/(tcp|udp)$")
STATES = {"PROVISIONING": State.STARTING, "STAGING": State.STARTING, "RUNNING": State.RUNNING,
          "STOPPING": State.STOPPING, "SUSPENDING": State.STOPPING, "SUSPENDED": State.SAVED,
          "STOPPED": State.STOPPED, "TERMINATED": State.STOPPED, "REPAIRING": State.ERROR}
_TOKENS: dict[str, str] = {}  # credentials identity -> access token, for this process


def _gce_error(status: int, payload: Any, raw: bytes) -> tuple[str, str]:
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict):
        first = (err.get("errors") or [{}])[0]
        return str(err.get("message") or first.get("message") or status), str(first.get("reason") or "")
    return raw[:200].decode(errors="replace").strip() or f"HTTP {status}", ""


def label_value(name: str) -> str:
    """A machine name as a GCE label value (lowercase letters, digits, ``_`` and ``-``; 63 chars)."""
    return re.sub(r"[^a-z0-9_-]", "_", name.lower())[:63]


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


class Compute:
    """Compute v1 calls for one project; operations are polled on our endpoint, never on a selfLink."""

    def __init__(self, token: str, project: str, api_url: str = DEFAULT_API_URL, ca_cert: str = "",
                 timeout: float = 30.0) -> None:
        def headers() -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        self.project = project
        self.rest = RestClient(api_url or DEFAULT_API_URL, headers=headers, ca_cert=ca_cert, timeout=timeout,
                               error_parser=_gce_error, what="the Compute Engine API")

    def call(self, method: str, path: str, body: Any = None, query: Mapping[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        """``path`` is relative to the project; 403 rateLimitExceeded is retried like a 429.

        Every POST carries a fresh ``requestId`` (a UUID), the same on each try: Compute ignores a
        repeat of a request it has already done and answers its operation, so a POST whose
        answer was a 5xx is retried without making a second instance, rule or change.
        """
        full = f"/projects/{self.project}{path}" if not path.startswith("/projects/") else path
        if method == "POST":
            query = {**(query or {}), "requestId": str(uuid.uuid4())}
        for attempt in range(5):
            try:
                return self.rest.request(method, full, body, query, timeout, idempotent=True)[0] or {}
            except HTTPError as exc:
                if exc.status == 403 and exc.reason == "rateLimitExceeded" and attempt < 4:
                    time.sleep(min(0.5 * 2 ** attempt, 8.0))
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, path: str, timeout: float | None = None) -> dict[str, Any] | None:
        """The resource, or None on 404."""
        try:
            return self.call("GET", path, timeout=timeout)
        except HTTPError as exc:
            if exc.status == 404:
                return None
            raise

    def wait(self, op: Mapping[str, Any], limit: float) -> None:
        """Poll a zone or global operation until DONE (bounded); its error becomes a MachineError."""
        name = str(op.get("name") or "")
        zone = str(op.get("zone") or "").rsplit("/", 1)[-1]
        path = f"/zones/{zone}/operations/{name}" if zone else f"/global/operations/{name}"
        deadline = time.monotonic() + limit
        delay = 0.2
        while op.get("status") != "DONE":
            if time.monotonic() + delay > deadline:
                raise MachineError(f"Compute Engine operation {name} ({op.get('operationType')}) "
                                   f"not done within {limit:g}s ({WAIT_ENV})")
            time.sleep(delay)
            delay = min(delay * 1.5, 3.0)
            op = self.call("GET", path)
        errors = ((op.get("error") or {}).get("errors")) or []
        if errors:
            first = errors[0]
            raise MachineError(f"Operation error: {first.get('code')}: {first.get('message')}")

    def list_aggregated(self, kind: str, query: Mapping[str, Any] | None = None,
                        timeout: float | None = None, max_pages: int = 20) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params = dict(query or {})
        for _ in range(max_pages):
            page = self.call("GET", f"/aggregated/{kind}", query=params, timeout=timeout)
            for scope in (page.get("items") or {}).values():
                items.extend(scope.get(kind) or [])
            if not page.get("nextPageToken"):
                break
            params["pageToken"] = page["nextPageToken"]
        return items


def instance_ip(instance: Mapping[str, Any], internal: bool) -> str:
    nics = instance.get("networkInterfaces") or [{}]
    if internal:
        return str(nics[0].get("networkIP") or "")
    configs = nics[0].get("accessConfigs") or [{}]
    return str(configs[0].get("natIP") or "")


@dataclasses.dataclass
class GoogleSettings(Settings):
    zone: str = setting("Zone", "us-central1-a")
    machine_type: str = setting("MachineType", "n1-standard-1")
    machine_image: str = setting("MachineImage", "debian-cloud/global/images/family/debian-12")
    disk_type: str = setting("DiskType", "pd-standard")
    network: str = setting("Network", "default")
    subnetwork: str = setting("Subnetwork", "")
    address: str = setting("Address", "")
    preemptible: bool = setting("Preemptible", False)
    use_internal_ip: bool = setting("UseInternalIP", False)
    use_internal_ip_only: bool = setting("UseInternalIPOnly", False)
    scopes: str = setting("Scopes", "https://www.googleapis.com/auth/devstorage.read_only,https://www.googleapis.com/auth/logging.write,https://www.googleapis.com/auth/monitoring.write")
    disk_size: int = setting("DiskSize", 10)
    project: str = setting("Project", "")
    tags: str = setting("Tags", "")
    use_existing: bool = setting("UseExisting", False)
    open_ports: list[str] = setting("OpenPorts", [], item=str)
    service_account: str = setting("ServiceAccount", "default")
    api_url: str = setting("APIURL", "https://compute.googleapis.com/compute/v1")
    ca_cert: str = setting("CACert", "")
    instance_id: str = setting("InstanceID", "")
    disk_name: str = setting("DiskName", "")
    firewall_created: bool = setting("FirewallCreated", False)
    create_token: str = setting("CreateToken", "", absent=True)
    instance_created: bool = setting("InstanceCreated", False, absent=True)
    added_network_tag: bool = setting("AddedNetworkTag", False, absent=True)


class GoogleDriver(Driver):
    settings_class = GoogleSettings
    settings: GoogleSettings
    name = "google"
    capabilities = DriverCapabilities(start=True, stop=True, restart=True, kill=True)
    rollback_unreachable = True
    default_ssh_user = "docker-user"
    flags = (
        Flag("google-project", "string", "", "GOOGLE_PROJECT", "GCE Project"),
        Flag("google-zone", "string", "us-central1-a", "GOOGLE_ZONE", "GCE Zone"),
        Flag("google-machine-type", "string", "n1-standard-1", "GOOGLE_MACHINE_TYPE", "GCE Machine Type"),
        Flag("google-machine-image", "string", DEFAULT_IMAGE, "GOOGLE_MACHINE_IMAGE", "GCE Machine Image Absolute URL"),
        Flag("google-username", "string", "docker-user", "GOOGLE_USERNAME", "GCE User Name"),
        Flag(
            "google-service-account",
            "string",
            "default",
            "GOOGLE_SERVICE_ACCOUNT",
            "GCE Service Account for the VM (email address)",
        ),
        Flag(
            "google-scopes",
            "string",
            DEFAULT_SCOPES,
            "GOOGLE_SCOPES",
            "GCE Scopes (comma-separated if multiple scopes)",
        ),
        Flag("google-disk-size", "int", 10, "GOOGLE_DISK_SIZE", "GCE Instance Disk Size (in GB)"),
        Flag("google-disk-type", "string", "pd-standard", "GOOGLE_DISK_TYPE", "GCE Instance Disk type"),
        Flag("google-network", "string", "default", "GOOGLE_NETWORK", "Specify network in which to provision vm"),
        Flag("google-subnetwork", "string", "", "GOOGLE_SUBNETWORK", "Specify subnetwork in which to provision vm"),
        Flag("google-address", "string", "", "GOOGLE_ADDRESS", "GCE Instance External IP"),
        Flag("google-preemptible", "bool", False, "GOOGLE_PREEMPTIBLE", "GCE Instance Preemptibility"),
        Flag("google-tags", "string", "", "GOOGLE_TAGS", "GCE Instance Tags (comma-separated)"),
        Flag(
            "google-use-internal-ip",
            "bool",
            False,
            "GOOGLE_USE_INTERNAL_IP",
            "Use internal GCE Instance IP rather than public one",
        ),
        Flag(
            "google-use-internal-ip-only",
            "bool",
            False,
            "GOOGLE_USE_INTERNAL_IP_ONLY",
            "Configure GCE instance to not have an external IP address",
        ),
        Flag("google-use-existing", "bool", False, "GOOGLE_USE_EXISTING", "Don't create a new VM, use an existing one"),
        Flag(
            "google-open-port",
            "list",
            [],
            None,
            "Make the specified port number accessible from the Internet, e.g, 8080/tcp",
        ),
        Flag(
            "google-credentials",
            "string",
            "",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "service-account key file (default: application default credentials)",
            secret=False,
        ),
        Flag(
            "google-api-url",
            "string",
            DEFAULT_API_URL,
            "GOOGLE_API_URL",
            "Compute Engine v1 endpoint (private endpoints, tests)",
        ),
        Flag(
            "google-ca-cert", "string", "", "GOOGLE_CA_CERT", "PEM CA bundle to trust for the API and token endpoints"
        ),
    )

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._creds_text = ""
        self._creds_path = ""  # --google-credentials: read at pre-create (exit 3 when unreadable)

    def set_config_from_flags(self, values: Mapping[str, Any]) -> None:
        size = values.get("google-disk-size", 10)
        if not isinstance(size, int) or not 10 <= size <= 65536:
            raise MachineError(f"--google-disk-size must be a size in GB between 10 and 65536, got {size!r}")
        api_url = str(values.get("google-api-url") or DEFAULT_API_URL).rstrip("/")
        RestClient(api_url, what="--google-api-url")  # validates its shape
        ports = [str(p) for p in values.get("google-open-port") or []]
        for port in ports:
            m = PORT_RE.match(port)
            low, high = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, 0)
            if not 0 < low <= high < 65536:
                raise MachineError(f"--google-open-port must look like 8080/tcp or 8000-8010/udp, got {port!r}")
        image = str(values.get("google-machine-image") or DEFAULT_IMAGE)
        image = image.removeprefix(GOOGLE_PREFIX)
        self._creds_path = str(values.get("google-credentials") or "")
        ca = str(values.get("google-ca-cert") or "")
        only_internal = bool(values.get("google-use-internal-ip-only"))
        self.settings.update(
            project=str(values.get("google-project") or ""), zone=str(values.get("google-zone") or "us-central1-a"),
            machine_type=str(values.get("google-machine-type") or "n1-standard-1"), machine_image=image,
            ssh_user=str(values.get("google-username") or "docker-user"), ssh_port=22,
            service_account=str(values.get("google-service-account") or "default"),
            scopes=str(values.get("google-scopes") or DEFAULT_SCOPES), disk_size=size,
            disk_type=str(values.get("google-disk-type") or "pd-standard"),
            network=str(values.get("google-network") or "default"),
            subnetwork=str(values.get("google-subnetwork") or ""), address=str(values.get("google-address") or ""),
            preemptible=bool(values.get("google-preemptible")), tags=str(values.get("google-tags") or ""),
            use_internal_ip=bool(values.get("google-use-internal-ip")) or only_internal,
            use_internal_ip_only=only_internal, use_existing=bool(values.get("google-use-existing")),
            open_ports=ports, api_url=api_url, ca_cert=os.path.abspath(os.path.expanduser(ca)) if ca else "",
        )

    # -- credentials and API access ----------------------------------------------------------
    def credentials(self) -> dict[str, Any]:
        from pymachine.machine.drivers import google_auth

        if self._creds_path and not self._creds_text:
            try:
                self._creds_text = Path(self._creds_path).expanduser().read_text(encoding="utf-8")
            except OSError as exc:
                raise google_auth.AuthError(f"cannot read --google-credentials {self._creds_path}: "
                                            f"{exc.strerror}") from None
        if self._creds_text:
            return google_auth.parse_credentials(self._creds_text, "--google-credentials")
        if self.machine_name and self.store_path:
            from pymachine.machine.secrets import load_secret

            saved = load_secret(self.machine_dir, SECRET_KEY)
            if saved:
                return google_auth.parse_credentials(saved, "the machine's saved Google credentials")
        path = google_auth.adc_path()
        if path is None:
            raise google_auth.AuthError("no Google credentials: pass --google-credentials, set "
                                        "GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth application-default login`")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise google_auth.AuthError(f"cannot read Google credentials {path}: {exc.strerror}") from None
        self._creds_text = text
        return google_auth.parse_credentials(text, str(path))

    def compute(self, timeout: float = 30.0) -> Compute:
        from pymachine.machine.drivers import google_auth

        creds = self.credentials()
        ident = f"{creds.get('client_email') or creds.get('client_id')}|{creds.get('token_uri')}"
        token = _TOKENS.get(ident)
        if token is None:
            token = google_auth.fetch_token(creds, ca_cert=self.ca_cert, timeout=timeout)
            _TOKENS[ident] = token
        return Compute(token, self.project, self.api_url, self.ca_cert, timeout=timeout)

    @property
    def project(self) -> str:
        return self.settings.project

    @property
    def zone(self) -> str:
        return self.settings.zone

    @property
    def api_url(self) -> str:
        return str(self.settings.api_url or DEFAULT_API_URL)

    @property
    def ca_cert(self) -> str:
        return self.settings.ca_cert

    @property
    def disk_name(self) -> str:
        return str(self.settings.disk_name or f"{self.machine_name}-disk")

    def _instance_path(self) -> str:
        return f"/zones/{self.zone}/instances/{self.machine_name}"

    def _image_path(self) -> str:
        image = str(self.settings.machine_image or DEFAULT_IMAGE)
        if "/global/images/" not in image:  # a bare image name: in the machine's own project
            return f"/projects/{self.project}/global/images/{image}"
        return f"/projects/{image}"

    def _labels(self) -> dict[str, str]:
        labels = {LABEL: "machine", MACHINE_LABEL: label_value(self.machine_name)}
        if self.settings.create_token:
            labels[CREATE_LABEL] = self.settings.create_token
        return labels

    def _made_by_this_create(self, resource: Mapping[str, Any] | None) -> bool:
        """Ours by id, or by the label only this create used (never just by name: another store may share it)."""
        if resource is None:
            return False
        if self.settings.instance_id and str(resource.get("id")) == self.settings.instance_id:
            return True
        token = self.settings.create_token
        return bool(token) and (resource.get("labels") or {}).get(CREATE_LABEL) == token

    def _ports(self) -> list[tuple[str, str]]:
        ports = [("tcp", "2376")]
        if self.settings.swarm_master:
            ports.append(("tcp", "3376"))
        for spec in self.settings.open_ports or []:
            number, _, proto = str(spec).partition("/")
            ports.append((proto, number))
        return ports

    # -- pre-create --------------------------------------------------------------------------
    def pre_create_check(self) -> None:
        if not self.project:
            raise PreCreateError("no Google Cloud Project name specified (--google-project)")
        if not NAME_RE.match(self.machine_name):
            raise PreCreateError(f'"{self.machine_name}" is not a valid Compute Engine instance name: lowercase '
                                 "letters, digits and '-', starting with a letter, at most 63 characters")
        for tag in [t for t in self.settings.tags.split(",") if t]:
            if not NAME_RE.match(tag):
                raise PreCreateError(
                    f"invalid --google-tags {tag!r}: lowercase letters, digits and '-', starting with a letter"
                )
        if self.ca_cert and not os.path.isfile(self.ca_cert):
            raise PreCreateError(f"--google-ca-cert file not found: {self.ca_cert}")
        try:
            self._check(self.compute())
        except PreCreateError:
            raise
        except MachineError as exc:
            raise PreCreateError(str(exc)) from None

    def _check(self, api: Compute) -> None:
        try:
            api.call("GET", "")
        except HTTPError as exc:
            if exc.status in (403, 404):
                raise PreCreateError(f'Project with ID "{self.project}" not found: {exc.api_message}') from None
            raise
        zone = api.get(f"/zones/{self.zone}")
        if zone is None:
            raise PreCreateError(
                f'Compute Engine zone "{self.zone}" does not exist in project {self.project} (--google-zone)'
            )
        mtype = api.get(f"/zones/{self.zone}/machineTypes/{self.settings.machine_type}")
        if mtype is None:
            raise PreCreateError(f'machine type "{self.settings.machine_type}" does not exist in zone "{self.zone}" '
                                 "(--google-machine-type)")
        if api.get(f"/zones/{self.zone}/diskTypes/{self.settings.disk_type}") is None:
            raise PreCreateError(
                f'disk type "{self.settings.disk_type}" does not exist in zone "{self.zone}" (--google-disk-type)'
            )
        if api.get(f"/global/networks/{self.settings.network}") is None:
            raise PreCreateError(
                f'network "{self.settings.network}" does not exist in project {self.project} (--google-network)'
            )
        instance = api.get(self._instance_path())
        if self.settings.use_existing:
            if instance is None:
                raise PreCreateError(f'unable to find instance "{self.machine_name}" in zone "{self.zone}"')
            return
        if instance is not None:
            raise PreCreateError(f'instance "{self.machine_name}" already exists in zone "{self.zone}"')
        if api.get(self._image_path()) is None:
            raise PreCreateError(f'image "{self.settings.machine_image}" not found (--google-machine-image; '
                                 f"e.g. {DEFAULT_IMAGE})")
        address = self.settings.address
        if address and not _is_ip(address) and api.get(f"/regions/{region_of(self.zone)}/addresses/{address}") is None:
            raise PreCreateError(
                f'static address "{address}" not found in region {region_of(self.zone)} (--google-address)'
            )
        region = api.get(f"/regions/{region_of(self.zone)}") or {}
        need = {"CPUS": int(mtype.get("guestCpus") or 1), "INSTANCES": 1}
        for quota in region.get("quotas") or []:
            metric = quota.get("metric")
            if metric in need and float(quota.get("usage") or 0) + need[metric] > float(quota.get("limit") or 0):
                raise PreCreateError(f"Quota '{metric}' exceeded.  Limit: {quota.get('limit')} in region "
                                     f"{region_of(self.zone)} (in use: {quota.get('usage')})")

    # -- create ------------------------------------------------------------------------------
    def create(self, log: Log) -> None:
        from pymachine.machine.secrets import save_secrets

        creds = self.credentials()
        save_secrets(self.machine_dir, **{SECRET_KEY: json.dumps(creds)})
        api = self.compute()
        limit = seconds_from_env(WAIT_ENV, 300.0)
        log(f"({self.machine_name}) Generating SSH Key")
        public = self._ssh_key()
        log(f"({self.machine_name}) Opening firewall ports")
        self._ensure_firewall(api, limit)
        if self.settings.use_existing:
            log(f"({self.machine_name}) Using existing instance")
            self._adopt(api, public, limit)
        else:
            log(f"({self.machine_name}) Creating instance")
            self.settings.create_token = os.urandom(8).hex()
            self._insert(api, public, limit)
        log(f"({self.machine_name}) Waiting for Instance")
        self._wait_ip(api, limit)

    def _ssh_key(self) -> str:
        from pymachine.machine.certs import generate_ssh_keypair

        private = Path(self.machine_dir) / layout.SSH_KEY
        generate_ssh_keypair(private)
        self.settings.ssh_key_path = str(private)
        return private.with_name(layout.SSH_PUBLIC_KEY).read_text().strip()

    def _ssh_keys_entry(self, public: str) -> str:
        user = str(self.settings.ssh_user or "docker-user")
        return f"{user}:{' '.join(public.split()[:2])} {user}"

    def _ensure_firewall(self, api: Compute, limit: float) -> None:
        fw = api.get(f"/global/firewalls/{FIREWALL}")
        wanted = self._ports()
        if fw is None:
            allowed: dict[str, list[str]] = {}
            for proto, port in wanted:
                allowed.setdefault(proto, []).append(port)
            body = {"name": FIREWALL, "description": FIREWALL_DESCRIPTION,
                    "network": f"{GOOGLE_PREFIX}{self.project}/global/networks/{self.settings.network}",
                    "allowed": [{"IPProtocol": p, "ports": ports} for p, ports in allowed.items()],
                    "sourceRanges": ["0.0.0.0/0"], "targetTags": [NETWORK_TAG]}
            api.wait(api.call("POST", "/global/firewalls", body), limit)
            self.settings.firewall_created = True
            return
        have = {(a.get("IPProtocol"), p) for a in fw.get("allowed") or [] for p in a.get("ports") or []}
        missing = [w for w in wanted if w not in have]
        if not missing:
            return
        allowed_rules = [dict(a) for a in fw.get("allowed") or []]
        for proto, port in missing:
            rule = next((a for a in allowed_rules if a.get("IPProtocol") == proto), None)
            if rule is None:
                allowed_rules.append({"IPProtocol": proto, "ports": [port]})
            else:
                rule["ports"] = [*(rule.get("ports") or []), port]
        body = {k: v for k, v in fw.items() if k in ("name", "description", "network", "sourceRanges", "targetTags")}
        body["allowed"] = allowed_rules
        api.wait(api.call("PUT", f"/global/firewalls/{FIREWALL}", body), limit)

    def _insert(self, api: Compute, public: str, limit: float) -> None:
        zone, project, name = self.zone, self.project, self.machine_name
        base = f"{GOOGLE_PREFIX}{project}"
        nic: dict[str, Any] = {"network": f"{base}/global/networks/{self.settings.network}"}
        if self.settings.subnetwork:
            nic["subnetwork"] = f"projects/{project}/regions/{region_of(zone)}/subnetworks/{self.settings.subnetwork}"
        if not self.settings.use_internal_ip_only:
            access: dict[str, Any] = {"type": "ONE_TO_ONE_NAT", "name": "External NAT"}
            address = self.settings.address
            if address:
                access["natIP"] = address if _is_ip(address) else str(
                    (api.get(f"/regions/{region_of(zone)}/addresses/{address}") or {}).get("address") or "")
            nic["accessConfigs"] = [access]
        image = self._image_path()
        user_tags = [t for t in self.settings.tags.split(",") if t and t != NETWORK_TAG]
        body = {
            "name": name, "description": "docker host vm", "labels": self._labels(),
            "machineType": f"{base}/zones/{zone}/machineTypes/{self.settings.machine_type}",
            "disks": [{"boot": True, "autoDelete": True, "type": "PERSISTENT", "mode": "READ_WRITE",
                       "initializeParams": {"diskName": self.disk_name, "diskSizeGb": self.settings.disk_size,
                                            "sourceImage": GOOGLE_PREFIX[:-len("/projects/")] + image,
                                            "diskType": f"{base}/zones/{zone}/diskTypes/{self.settings.disk_type}",
                                            "labels": self._labels()}}],
            "networkInterfaces": [nic], "tags": {"items": [NETWORK_TAG, *user_tags]},
            "metadata": {"items": [{"key": "ssh-keys", "value": self._ssh_keys_entry(public)}]},
            "serviceAccounts": [{"email": str(self.settings.service_account or "default"),
                                 "scopes": [s for s in self.settings.scopes.split(",") if s]}],
            "scheduling": {"preemptible": self.settings.preemptible},
        }
        self.settings.disk_name = self.disk_name
        # From here on rm looks for the instance (by this create's label), even if the
        # insert's answer is lost or the operation wait fails.
        self.settings.instance_created = True
        op = api.call("POST", f"/zones/{zone}/instances", body)
        api.wait(op, limit)

    def _adopt(self, api: Compute, public: str, limit: float) -> None:
        """``--google-use-existing``: add the network tag and our key, keeping the instance's other metadata."""
        instance = api.get(self._instance_path()) or {}
        tags = instance.get("tags") or {}
        if NETWORK_TAG not in (tags.get("items") or []):
            self.settings.added_network_tag = True
            api.wait(api.call("POST", f"{self._instance_path()}/setTags",
                              {"items": [*(tags.get("items") or []), NETWORK_TAG],
                               "fingerprint": tags.get("fingerprint")}), limit)
        meta = instance.get("metadata") or {}
        items = [dict(i) for i in meta.get("items") or []]
        entry = self._ssh_keys_entry(public)
        current = next((i for i in items if i.get("key") == "ssh-keys"), None)
        if current is None:
            items.append({"key": "ssh-keys", "value": entry})
        else:
            current["value"] = (str(current.get("value") or "").rstrip("\n") + "\n" + entry).lstrip("\n")
        api.wait(api.call("POST", f"{self._instance_path()}/setMetadata",
                          {"fingerprint": meta.get("fingerprint"), "items": items}), limit)

    def _wait_ip(self, api: Compute, limit: float) -> None:
        deadline = time.monotonic() + limit
        delay, status = 0.2, "unknown"
        internal = self.settings.use_internal_ip
        while True:
            instance = api.get(self._instance_path())
            if instance is None:
                raise MachineError(f'instance "{self.machine_name}" disappeared while starting')
            self.settings.instance_id = str(instance.get("id") or "")
            status = str(instance.get("status") or "unknown")
            ip = instance_ip(instance, internal)
            if status == "RUNNING" and ip:
                self.settings.ip_address = ip
                return
            if status in ("TERMINATED", "STOPPED", "SUSPENDED"):
                raise MachineError(f'instance "{self.machine_name}" is {status}, not running')
            if time.monotonic() + delay > deadline:
                raise MachineError(f'instance "{self.machine_name}" not running with an address within {limit:g}s '
                                   f"(status {status}; {WAIT_ENV})")
            time.sleep(delay)
            delay = min(delay * 1.5, 3.0)

    # -- addresses and state ---------------------------------------------------------------
    def url(self) -> str:
        return urls.engine_url(self.ip(), urls.ENGINE_PORT, self.machine_name)

    def state(self, timeout: float = 10.0) -> State:
        instance = self.compute(timeout).get(self._instance_path(), timeout=timeout)
        if instance is None:
            raise MachineError(f'instance "{self.machine_name}" no longer exists in zone {self.zone}')
        return STATES.get(str(instance.get("status")), State.NONE)

    @classmethod
    def batch_states(cls, drivers: list[Driver], timeout: float) -> dict[str, State]:
        """One ``aggregated/instances`` listing (label ``pymachine``) per project and credentials."""
        groups: dict[tuple[str, str, str], list[GoogleDriver]] = {}
        for drv in drivers:
            if isinstance(drv, GoogleDriver) and drv.project and not drv.settings.use_existing:
                try:
                    creds = drv.credentials()
                except MachineError:
                    continue
                key = (str(creds.get("client_email") or creds.get("client_id")), drv.project, drv.api_url)
                groups.setdefault(key, []).append(drv)
        found: dict[str, State] = {}
        for members in groups.values():
            try:
                instances = members[0].compute(timeout).list_aggregated(
                    "instances", {"filter": f"labels.{LABEL}=machine"}, timeout=timeout)
            except MachineError:
                continue  # state() reports the error per machine
            by_key = {(str(i.get("zone") or "").rsplit("/", 1)[-1], i.get("name")): str(i.get("status"))
                      for i in instances}
            for drv in members:
                status = by_key.get((drv.zone, drv.machine_name))
                if status is not None:
                    found[drv.machine_name] = STATES.get(status, State.NONE)
        return found

    # -- lifecycle ---------------------------------------------------------------------------
    def _instance_action(self, verb: str) -> None:
        api = self.compute()
        api.wait(api.call("POST", f"{self._instance_path()}/{verb}"), seconds_from_env(WAIT_ENV, 300.0))

    def start(self, log: Log) -> None:
        self._instance_action("start")
        self._wait_ip(self.compute(), seconds_from_env(WAIT_ENV, 300.0))  # an ephemeral IP can change

    def stop(self, log: Log) -> None:
        self._instance_action("stop")

    def kill(self, log: Log) -> None:
        self._instance_action("stop")

    def restart(self, log: Log) -> None:
        self.stop(log)
        self.start(log)

    def remove(self, log: Log) -> None:
        """Delete the instance and disk pymachine made (404 is fine), then the firewall rule if unused."""
        if not self.project:
            return
        api = self.compute()
        limit = seconds_from_env(WAIT_ENV, 300.0)
        if self.settings.use_existing:
            log(f"({self.machine_name}) Leaving the existing instance in place (--google-use-existing)")
            self._release_existing(api, limit)
        elif self.settings.instance_created or self.settings.instance_id:
            instance = api.get(self._instance_path())
            if self._made_by_this_create(instance):
                try:
                    api.wait(api.call("DELETE", self._instance_path()), limit)
                except HTTPError as exc:
                    if exc.status != 404:
                        raise
            elif instance is None:
                log(f"({self.machine_name}) Remote instance does not exist, proceeding with removing local reference")
            else:
                log(f"({self.machine_name}) Instance {self.machine_name} in {self.zone} was not made by this "
                    "machine's create; leaving it")
            disk = api.get(f"/zones/{self.zone}/disks/{self.disk_name}")
            if disk is not None and self._made_by_this_create(disk) and not disk.get("users"):
                api.wait(api.call("DELETE", f"/zones/{self.zone}/disks/{self.disk_name}"), limit)
        self._drop_firewall_if_unused(api, limit, log)

    def _release_existing(self, api: Compute, limit: float) -> None:
        """Take back what ``--google-use-existing`` added: our ``ssh-keys`` line and the network tag."""
        instance = api.get(self._instance_path())
        pub = Path(self.machine_dir, layout.SSH_PUBLIC_KEY)
        if instance is None:
            return
        meta = instance.get("metadata") or {}
        if pub.is_file():
            entry = self._ssh_keys_entry(pub.read_text().strip())
            items = []
            for item in [dict(i) for i in meta.get("items") or []]:
                if item.get("key") == "ssh-keys":
                    kept = [ln for ln in str(item.get("value") or "").splitlines() if ln.strip() != entry]
                    if not kept:
                        continue
                    item["value"] = "\n".join(kept)
                items.append(item)
            if items != (meta.get("items") or []):
                api.wait(api.call("POST", f"{self._instance_path()}/setMetadata",
                                  {"fingerprint": meta.get("fingerprint"), "items": items}), limit)
        tags = instance.get("tags") or {}
        if self.settings.added_network_tag and NETWORK_TAG in (tags.get("items") or []):
            api.wait(api.call("POST", f"{self._instance_path()}/setTags",
                              {"items": [t for t in tags.get("items") or [] if t != NETWORK_TAG],
                               "fingerprint": tags.get("fingerprint")}), limit)

    def _drop_firewall_if_unused(self, api: Compute, limit: float, log: Log) -> None:
        fw = api.get(f"/global/firewalls/{FIREWALL}")
        if fw is None or fw.get("description") != FIREWALL_DESCRIPTION:
            return  # not there, or not pymachine's: leave it
        users = [i for i in api.list_aggregated("instances")
                 if NETWORK_TAG in ((i.get("tags") or {}).get("items") or [])]
        if users:
            return
        log(f"({self.machine_name}) Removing firewall rule {FIREWALL} (no machine uses it any more)")
        try:
            api.wait(api.call("DELETE", f"/global/firewalls/{FIREWALL}"), limit)
        except HTTPError as exc:
            if exc.status != 404:
                raise


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
