"""The ``openstack`` driver: Nova servers with Neutron networking, authenticated by Keystone v3.

Flags and ``OS_*`` variables are docker-machine 0.16.2's; the create follows
its sequence (resolve names to ids, key pair, server, wait ACTIVE, floating IP
from ``--openstack-floatingip-pool``, address by ``OS-EXT-IPS:type`` and IP
version); stop/start are ``os-stop``/``os-start``, restart a soft reboot.
pymachine differences:

* Keystone v3 only, and ``OS_AUTH_URL`` may end in ``/v3`` (docker-machine's
  ``/v2.0/tenants`` lookup broke on v3-only clouds; the project is scoped by
  name + domain or by id directly);
* a security group ``pymachine-<name>-<id>`` opening SSH and the engine port
  (Neutron's default group lets nothing in), removed on ``rm``;
* metadata ``pymachine=machine``/``pymachine-machine=<name>`` on the server and
  ``pymachine`` descriptions on the group and floating IP; every id is recorded
  in config.json, and ``rm`` (or a failed create's rollback) deletes exactly
  those: floating IP, server, group, and the key pair it generated;
* pre-create checks for flavor, image, network, security groups, floating-IP
  pool, availability zone, key pair and the project's instance/cores/RAM
  limits (exit 3); bounded waits; 429/5xx retried with backoff.

The password is kept in the machine's ``secrets.json``, never in config.json;
without it the driver falls back to ``$OS_PASSWORD``.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pymachine.machine import layout, urls
from pymachine.machine.drivers.base import Driver, DriverCapabilities, Flag, Log, State
from pymachine.machine.drivers.openstack_api import Credentials, Session, session
from pymachine.machine.drivers.restclient import HTTPError
from pymachine.machine.drivers.settings import Settings, setting
from pymachine.machine.errors import MachineError, PreCreateError

SECRET_KEY = "OpenStackPassword"
STATES = {"ACTIVE": State.RUNNING, "PAUSED": State.PAUSED, "SUSPENDED": State.SAVED, "SHUTOFF": State.STOPPED,
          "BUILD": State.STARTING, "REBOOT": State.STARTING, "HARD_REBOOT": State.STARTING, "ERROR": State.ERROR}
MARK = "pymachine"


def _s(name: str, env: str, help: str, default: Any = "", kind: str = "string", secret: bool = False) -> Flag:
    return Flag(f"openstack-{name}", kind, default, env, help, secret=secret)


@dataclasses.dataclass
class OpenStackSettings(Settings):
    auth_url: str = setting("AuthUrl", "")
    active_timeout: int = setting("ActiveTimeout", 200)
    insecure: bool = setting("Insecure", False)
    ca_cert: str = setting("CaCert", "")
    domain_id: str = setting("DomainID", "")
    domain_name: str = setting("DomainName", "")
    username: str = setting("Username", "")
    password: str = setting("Password", "")
    tenant_name: str = setting("TenantName", "")
    tenant_id: str = setting("TenantID", "")
    region: str = setting("Region", "")
    availability_zone: str = setting("AvailabilityZone", "")
    endpoint_type: str = setting("EndpointType", "")
    flavor_name: str = setting("FlavorName", "")
    flavor_id: str = setting("FlavorId", "")
    image_name: str = setting("ImageName", "")
    image_id: str = setting("ImageId", "")
    key_pair_name: str = setting("KeyPairName", "")
    network_name: str = setting("NetworkName", "")
    network_id: str = setting("NetworkId", "")
    user_data: str = setting("UserData", "")
    private_key_file: str = setting("PrivateKeyFile", "")
    security_groups: list[str] = setting("SecurityGroups", [], item=str)
    floating_ip_pool: str = setting("FloatingIpPool", "")
    floating_ip_pool_id: str = setting("FloatingIpPoolId", "")
    ip_version: int = setting("IpVersion", 4)
    config_drive: bool = setting("ConfigDrive", False)
    metadata: str = setting("Metadata", "")
    machine_id: str = setting("MachineId", "")
    floating_ip_id: str = setting("FloatingIpId", "")
    security_group_id: str = setting("SecurityGroupId", "")
    key_pair_created: bool = setting("KeyPairCreated", False)
    create_token: str = setting("CreateToken", "", absent=True)
    security_group_name: str = setting("SecurityGroupName", "", absent=True)


class OpenStackDriver(Driver):
    settings_class = OpenStackSettings
    settings: OpenStackSettings
    name = "openstack"
    capabilities = DriverCapabilities(start=True, stop=True, restart=True, kill=True)
    rollback_unreachable = True
    flags = (
        _s("auth-url", "OS_AUTH_URL", "OpenStack authentication URL"),
        _s("insecure", "OS_INSECURE", "Disable TLS credential checking.", False, "bool"),
        _s("cacert", "OS_CACERT", "CA certificate bundle to verify against"),
        _s("domain-id", "OS_DOMAIN_ID", "OpenStack domain ID (identity v3 only)"),
        _s("domain-name", "OS_DOMAIN_NAME", "OpenStack domain name (identity v3 only)"),
        _s("username", "OS_USERNAME", "OpenStack username"),
        _s("password", "OS_PASSWORD", "OpenStack password", secret=True),
        _s("tenant-name", "OS_TENANT_NAME", "OpenStack tenant name"),
        _s("tenant-id", "OS_TENANT_ID", "OpenStack tenant id"),
        _s("region", "OS_REGION_NAME", "OpenStack region name"),
        _s("availability-zone", "OS_AVAILABILITY_ZONE", "OpenStack availability zone"),
        _s("endpoint-type", "OS_ENDPOINT_TYPE", "OpenStack endpoint type (adminURL, internalURL or publicURL)"),
        _s("flavor-id", "OS_FLAVOR_ID", "OpenStack flavor id to use for the instance"),
        _s("flavor-name", "OS_FLAVOR_NAME", "OpenStack flavor name to use for the instance"),
        _s("image-id", "OS_IMAGE_ID", "OpenStack image id to use for the instance"),
        _s("image-name", "OS_IMAGE_NAME", "OpenStack image name to use for the instance"),
        _s("keypair-name", "OS_KEYPAIR_NAME", "OpenStack keypair to use to SSH to the instance"),
        _s("net-id", "OS_NETWORK_ID", "OpenStack network id the machine will be connected on"),
        _s("net-name", "OS_NETWORK_NAME", "OpenStack network name the machine will be connected on"),
        _s("private-key-file", "OS_PRIVATE_KEY_FILE", "Private keyfile to use for SSH (absolute path)"),
        _s("user-data-file", "OS_USER_DATA_FILE", "File containing an openstack userdata script"),
        _s("sec-groups", "OS_SECURITY_GROUPS", "OpenStack comma separated security groups for the machine"),
        _s(
            "floatingip-pool",
            "OS_FLOATINGIP_POOL",
            "OpenStack floating IP pool to get an IP from to assign to the instance",
        ),
        _s("ip-version", "OS_IP_VERSION", "OpenStack version of IP address assigned for the machine", 4, "int"),
        _s("ssh-user", "OS_SSH_USER", "OpenStack SSH user", "root"),
        _s("ssh-port", "OS_SSH_PORT", "OpenStack SSH port", 22, "int"),
        _s("active-timeout", "OS_ACTIVE_TIMEOUT", "OpenStack active timeout", 200, "int"),
        _s("config-drive", "OS_CONFIG_DRIVE", "Enables the OpenStack config drive for the instance", False, "bool"),
        _s("metadata", "OS_METADATA", "OpenStack Instance Metadata (e.g. key1,value1,key2,value2)"),
    )

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._password = ""

    def set_config_from_flags(self, values: Mapping[str, Any]) -> None:
        def get(name: str) -> Any:
            return values.get(f"openstack-{name}")

        def path(name: str) -> str:
            raw = str(get(name) or "")
            return os.path.abspath(os.path.expanduser(raw)) if raw else ""

        port, version, timeout = get("ssh-port") or 22, get("ip-version") or 4, get("active-timeout") or 200
        if not isinstance(port, int) or not 0 < port < 65536:
            raise MachineError(f"--openstack-ssh-port must be a port number between 1 and 65535, got {port!r}")
        if version not in (4, 6):
            raise MachineError(f"--openstack-ip-version must be 4 or 6, got {version!r}")
        if not isinstance(timeout, int) or not 0 < timeout <= 86400:
            raise MachineError(f"--openstack-active-timeout must be seconds between 1 and 86400, got {timeout!r}")
        meta = [m for m in str(get("metadata") or "").split(",") if m]
        if len(meta) % 2:
            raise MachineError(f"--openstack-metadata must be key,value pairs: {len(meta)} elements found")
        self._password = str(get("password") or "")
        self.settings.update(
            auth_url=str(get("auth-url") or ""), insecure=bool(get("insecure")), ca_cert=path("cacert"),
            domain_id=str(get("domain-id") or ""), domain_name=str(get("domain-name") or ""),
            username=str(get("username") or ""), tenant_name=str(get("tenant-name") or ""),
            tenant_id=str(get("tenant-id") or ""), region=str(get("region") or ""),
            availability_zone=str(get("availability-zone") or ""), endpoint_type=str(get("endpoint-type") or ""),
            flavor_id=str(get("flavor-id") or ""), flavor_name=str(get("flavor-name") or ""),
            image_id=str(get("image-id") or ""), image_name=str(get("image-name") or ""),
            key_pair_name=str(get("keypair-name") or ""), network_id=str(get("net-id") or ""),
            network_name=str(get("net-name") or ""), private_key_file=path("private-key-file"),
            user_data=path("user-data-file"),
            security_groups=[g.strip() for g in str(get("sec-groups") or "").split(",") if g.strip()],
            floating_ip_pool=str(get("floatingip-pool") or ""), ip_version=version,
            ssh_user=str(get("ssh-user") or "root"),
            ssh_port=port, active_timeout=timeout, config_drive=bool(get("config-drive")), metadata=",".join(meta),
        )

    # -- session -------------------------------------------------------------------------
    def password(self) -> str:
        if self._password:
            return self._password
        if self.machine_name and self.store_path:
            from pymachine.machine.secrets import load_secret

            saved = load_secret(self.machine_dir, SECRET_KEY)
            if saved:
                return saved
        return os.environ.get("OS_PASSWORD", "")

    def credentials(self) -> Credentials:
        c = self.settings
        return Credentials(auth_url=str(c.auth_url or ""), username=str(c.username or ""),
                           password=self.password(), tenant_id=str(c.tenant_id or ""),
                           tenant_name=str(c.tenant_name or ""), domain_id=str(c.domain_id or ""),
                           domain_name=str(c.domain_name or ""), region=str(c.region or ""),
                           endpoint_type=str(c.endpoint_type or ""), cacert=str(c.ca_cert or ""),
                           insecure=bool(c.insecure))

    def session(self, timeout: float = 30.0) -> Session:
        return session(self.credentials(), timeout)

    @property
    def server_id(self) -> str:
        return self.settings.machine_id

    # -- pre-create ----------------------------------------------------------------------
    def _check_flags(self) -> None:
        c = self.settings
        for what, key, env, flag in (("Authentication URL", "auth_url", "OS_AUTH_URL", "--openstack-auth-url"),
                                     ("Username", "username", "OS_USERNAME", "--openstack-username")):
            if not getattr(c, key):
                raise PreCreateError(f"{what} must be specified either using the environment variable {env} "
                                     f"or the CLI option {flag}")
        if not self.password():
            raise PreCreateError("Password must be specified either using the environment variable OS_PASSWORD "
                                 "or the CLI option --openstack-password")
        if not c.tenant_name and not c.tenant_id:
            raise PreCreateError("Tenant id or name must be provided either using one of the environment variables "
                                 "OS_TENANT_ID and OS_TENANT_NAME or one of the CLI options --openstack-tenant-id "
                                 "and --openstack-tenant-name")
        for a, b, what in (("flavor_id", "flavor_name", "flavor"), ("image_id", "image_name", "image"),
                           ("network_id", "network_name", "net")):
            if getattr(c, a) and getattr(c, b):
                raise PreCreateError(
                    f"Either --openstack-{what}-id or --openstack-{what}-name must be specified, not both"
                )
            if what != "net" and not getattr(c, a) and not getattr(c, b):
                raise PreCreateError(f"{what.capitalize()} id or name must be specified using the CLI option "
                                     f"--openstack-{what}-id or --openstack-{what}-name")
        if bool(c.key_pair_name) != bool(c.private_key_file):
            raise PreCreateError("Both --openstack-keypair-name and --openstack-private-key-file must be specified")
        for key, flag in (
            ("private_key_file", "--openstack-private-key-file"),
            ("user_data", "--openstack-user-data-file"),
            ("ca_cert", "--openstack-cacert"),
        ):
            if getattr(c, key) and not os.path.isfile(getattr(c, key)):
                raise PreCreateError(f"{flag} file not found: {getattr(c, key)}")
        if c.user_data and os.path.getsize(str(c.user_data)) > 49152:
            raise PreCreateError("--openstack-user-data-file is larger than Nova's 64 KiB (base64) limit")

    def pre_create_check(self) -> None:
        self._check_flags()
        try:
            api = self.session()
            api.authenticate()
            self._resolve(api)
        except PreCreateError:
            raise
        except MachineError as exc:
            raise PreCreateError(str(exc)) from None

    def _resolve(self, api: Session) -> None:
        """Names to ids (docker-machine's resolveIds) and the checks that need the cloud; nothing is made."""
        c = self.settings
        if c.flavor_name:
            flavors = api.call("compute", "GET", "/flavors/detail").get("flavors") or []
            match = next((f for f in flavors if f.get("name") == c.flavor_name), None)
            if match is None:
                raise PreCreateError(f"Unable to find flavor named {c.flavor_name} (--openstack-flavor-name)")
            c.flavor_id = str(match["id"])
        flavor = api.get("compute", f"/flavors/{c.flavor_id}")
        if flavor is None:
            raise PreCreateError(f"Flavor {c.flavor_id} could not be found (--openstack-flavor-id)")
        flavor = flavor.get("flavor") or {}
        if c.image_name:
            images = api.call("image", "GET", "/v2/images", query={"name": c.image_name}).get("images") or []
            if not images:
                raise PreCreateError(f"Unable to find image named {c.image_name} (--openstack-image-name)")
            c.image_id = str(images[0]["id"])
        elif api.get("image", f"/v2/images/{c.image_id}") is None:
            raise PreCreateError(f"Image {c.image_id} could not be found (--openstack-image-id)")
        if c.network_name:
            nets = api.call("network", "GET", "/v2.0/networks", query={"name": c.network_name}).get("networks") or []
            if not nets:
                raise PreCreateError(f"Unable to find network named {c.network_name} (--openstack-net-name)")
            c.network_id = str(nets[0]["id"])
        elif c.network_id and api.get("network", f"/v2.0/networks/{c.network_id}") is None:
            raise PreCreateError(f"Network {c.network_id} could not be found (--openstack-net-id)")
        for group in c.security_groups or []:
            if not api.call("network", "GET", "/v2.0/security-groups", query={"name": group}).get("security_groups"):
                raise PreCreateError(f"Security group {group} not found (--openstack-sec-groups)")
        if c.floating_ip_pool:
            pools = api.call("network", "GET", "/v2.0/networks",
                             query={"name": c.floating_ip_pool, "router:external": "True"}).get("networks") or []
            if not pools:
                raise PreCreateError(f"Unable to find floating IP pool (external network) named {c.floating_ip_pool} "
                                     "(--openstack-floatingip-pool)")
            c.floating_ip_pool_id = str(pools[0]["id"])
        if c.availability_zone:
            zones = api.call("compute", "GET", "/os-availability-zone").get("availabilityZoneInfo") or []
            if not any(z.get("zoneName") == c.availability_zone and (z.get("zoneState") or {}).get("available")
                       for z in zones):
                raise PreCreateError(f"The requested availability zone {c.availability_zone} is not available "
                                     "(--openstack-availability-zone)")
        if c.key_pair_name and api.get("compute", f"/os-keypairs/{c.key_pair_name}") is None:
            raise PreCreateError(f"Keypair {c.key_pair_name} not found (--openstack-keypair-name)")
        limits = (api.call("compute", "GET", "/limits").get("limits") or {}).get("absolute") or {}
        for what, used, most, need in (("instances", "totalInstancesUsed", "maxTotalInstances", 1),
                                       ("cores", "totalCoresUsed", "maxTotalCores", int(flavor.get("vcpus") or 1)),
                                       ("ram", "totalRAMUsed", "maxTotalRAMSize", int(flavor.get("ram") or 0))):
            limit = limits.get(most)
            if isinstance(limit, int) and limit >= 0 and int(limits.get(used) or 0) + need > limit:
                raise PreCreateError(f"Quota exceeded for {what}: Requested {need}, but already used "
                                     f"{limits.get(used)} of {limit} {what}")

    # -- create --------------------------------------------------------------------------
    def create(self, log: Log) -> None:
        from pymachine.machine.secrets import save_secrets

        if self._password:
            save_secrets(self.machine_dir, **{SECRET_KEY: self._password})
        api = self.session()
        suffix = os.urandom(4).hex()
        # Unique to this create: a resource whose create answer is lost is still found (and removed) by it.
        self.settings.create_token = os.urandom(8).hex()
        self._key_pair(api, suffix, log)
        log(f"({self.machine_name}) Creating security group for SSH and the engine port...")
        self._security_group(api, suffix)
        log(f"({self.machine_name}) Creating machine...")
        self._server(api)
        self._wait_active(api, log)
        if self.settings.floating_ip_pool_id:
            log(f"({self.machine_name}) Assigning floating IP from pool {self.settings.floating_ip_pool}...")
            self._floating_ip(api)
        log(f"({self.machine_name}) Waiting for the IP address to be assigned to the instance...")
        self._wait_ip(api)

    def _key_pair(self, api: Session, suffix: str, log: Log) -> None:
        private = Path(self.machine_dir) / layout.SSH_KEY
        if self.settings.key_pair_name:
            shutil.copyfile(self.settings.private_key_file, private)
            os.chmod(private, 0o600)
            self.settings.ssh_key_path = str(private)
            return
        from pymachine.machine.certs import generate_ssh_keypair

        log(f"({self.machine_name}) Creating key pair...")
        generate_ssh_keypair(private)
        self.settings.ssh_key_path = str(private)
        name = f"{MARK}-{self.machine_name.replace('.', '_')}-{suffix}"
        public = private.with_name(layout.SSH_PUBLIC_KEY).read_text().strip()
        self.settings.update(key_pair_name=name, key_pair_created=True)  # a unique name: safe to delete by it
        api.call("compute", "POST", "/os-keypairs", {"keypair": {"name": name, "public_key": public}})

    def _security_group(self, api: Session, suffix: str) -> None:
        name = f"{MARK}-{self.machine_name}-{suffix}"
        self.settings.security_group_name = name
        group = api.call("network", "POST", "/v2.0/security-groups", {"security_group": {
            "name": name, "description": f"{MARK}: SSH and Docker engine for machine {self.machine_name}"}})
        self.settings.security_group_id = str((group.get("security_group") or {}).get("id") or "")
        ports = [int(self.settings.ssh_port or 22), 2376] + ([3376] if self.settings.swarm_master else [])
        for port in ports:
            api.call("network", "POST", "/v2.0/security-group-rules", {"security_group_rule": {
                "security_group_id": self.settings.security_group_id, "direction": "ingress", "protocol": "tcp",
                "port_range_min": port, "port_range_max": port,
                "ethertype": "IPv6" if self.settings.ip_version == 6 else "IPv4"}})
        self.settings.security_group_name = name

    def _server(self, api: Session) -> None:
        c = self.settings
        meta = str(c.metadata or "").split(",") if c.metadata else []
        metadata = {meta[i]: meta[i + 1] for i in range(0, len(meta), 2)}
        metadata.update({MARK: "machine", f"{MARK}-machine": self.machine_name,
                         f"{MARK}-create": str(c.create_token or "")})
        server: dict[str, Any] = {
            "name": self.machine_name, "flavorRef": c.flavor_id, "imageRef": c.image_id,
            "key_name": c.key_pair_name, "metadata": metadata,
            "security_groups": [{"name": g} for g in [*(c.security_groups or []), c.security_group_name]],
        }
        if c.network_id:
            server["networks"] = [{"uuid": c.network_id}]
        if c.availability_zone:
            server["availability_zone"] = c.availability_zone
        if c.config_drive:
            server["config_drive"] = True
        if c.user_data:
            server["user_data"] = base64.b64encode(Path(str(c.user_data)).read_bytes()).decode()
        created = api.call("compute", "POST", "/servers", {"server": server})
        self.settings.machine_id = str((created.get("server") or {}).get("id") or "")
        if not self.server_id:
            raise MachineError("Nova answered the server create without a server id")

    def _get_server(self, api: Session, timeout: float | None = None) -> dict[str, Any]:
        found = api.get("compute", f"/servers/{self.server_id}", timeout=timeout)
        if found is None:
            raise MachineError(f"Instance {self.server_id} could not be found (removed outside pymachine?)")
        return found.get("server") or {}

    def _wait_for(self, api: Session, done, what: str) -> dict[str, Any]:
        limit = float(self.settings.active_timeout or 200)
        deadline = time.monotonic() + limit
        delay = 0.2
        while True:
            server = self._get_server(api)
            if server.get("status") == "ERROR":
                fault = (server.get("fault") or {}).get("message") or "no fault reported"
                raise MachineError(f"Instance creation failed. Instance is in ERROR state: {fault}")
            if done(server):
                return server
            if time.monotonic() + delay > deadline:
                raise MachineError(f"instance {self.server_id} {what} within {limit:g}s (status "
                                   f"{server.get('status')}; --openstack-active-timeout)")
            time.sleep(delay)
            delay = min(delay * 1.5, 4.0)

    def _wait_active(self, api: Session, log: Log) -> None:
        log(f"({self.machine_name}) Waiting for the OpenStack instance to be ACTIVE...")
        self._wait_for(api, lambda s: s.get("status") == "ACTIVE", "did not become ACTIVE")

    def _floating_ip(self, api: Session) -> None:
        ports = api.call("network", "GET", "/v2.0/ports", query={"device_id": self.server_id}).get("ports") or []
        if not ports:
            raise MachineError(f"instance {self.server_id} has no Neutron port to bind a floating IP to")
        fip = api.call("network", "POST", "/v2.0/floatingips", {"floatingip": {
            "floating_network_id": self.settings.floating_ip_pool_id, "port_id": ports[0]["id"],
            "description": self._fip_description()}})
        self.settings.floating_ip_id = str((fip.get("floatingip") or {}).get("id") or "")

    def _fip_description(self) -> str:
        return f"{MARK}: machine {self.machine_name} ({self.settings.create_token})"

    def _find_lost(self, api: Session) -> None:
        """Ids of resources whose create answer never arrived, found by this create's unique marks."""
        c = self.settings
        token = str(c.create_token or "")
        if not token:
            return
        if not self.server_id:
            servers = (
                api.call("compute", "GET", "/servers/detail", query={"name": self.machine_name}).get("servers") or []
            )
            mine = [s for s in servers if (s.get("metadata") or {}).get(f"{MARK}-create") == token]
            if mine:
                c.machine_id = str(mine[0]["id"])
        if not c.security_group_id and c.security_group_name:
            groups = api.call("network", "GET", "/v2.0/security-groups",
                              query={"name": c.security_group_name}).get("security_groups") or []
            if groups:
                c.security_group_id = str(groups[0]["id"])
        if not c.floating_ip_id and c.floating_ip_pool_id:
            fips = api.call("network", "GET", "/v2.0/floatingips",
                            query={"description": self._fip_description()}).get("floatingips") or []
            if fips:
                c.floating_ip_id = str(fips[0]["id"])

    def _address(self, server: Mapping[str, Any]) -> str:
        want = "floating" if self.settings.floating_ip_pool_id else "fixed"
        version = int(self.settings.ip_version or 4)
        for entries in (server.get("addresses") or {}).values():
            for entry in entries:
                if entry.get("OS-EXT-IPS:type", "fixed") == want and int(entry.get("version") or 4) == version:
                    return str(entry.get("addr") or "")
        return ""

    def _wait_ip(self, api: Session) -> None:
        server = self._wait_for(api, lambda s: bool(self._address(s)), "got no address")
        self.settings.ip_address = self._address(server)

    # -- addresses and state -------------------------------------------------------------
    def url(self) -> str:
        return urls.engine_url(self.ip(), urls.ENGINE_PORT, self.machine_name)

    def state(self, timeout: float = 10.0) -> State:
        return STATES.get(str(self._get_server(self.session(timeout), timeout).get("status")), State.NONE)

    @classmethod
    def batch_states(cls, drivers: list[Driver], timeout: float) -> dict[str, State]:
        """One ``servers/detail`` listing per cloud, project, region and user."""
        groups: dict[tuple[str, ...], list[OpenStackDriver]] = {}
        for drv in drivers:
            if isinstance(drv, OpenStackDriver) and drv.server_id and drv.password():
                groups.setdefault(drv.credentials().key(), []).append(drv)
        found: dict[str, State] = {}
        for members in groups.values():
            try:
                servers = members[0].session(timeout).call("compute", "GET", "/servers/detail", timeout=timeout)
            except MachineError:
                continue
            by_id = {s.get("id"): str(s.get("status")) for s in servers.get("servers") or []}
            for drv in members:
                if drv.server_id in by_id:
                    found[drv.machine_name] = STATES.get(by_id[drv.server_id], State.NONE)
        return found

    # -- lifecycle -----------------------------------------------------------------------
    def _action(self, body: dict[str, Any], want: str | None) -> None:
        api = self.session()
        api.call("compute", "POST", f"/servers/{self.server_id}/action", body)
        if want:
            self._wait_for(api, lambda s: s.get("status") == want, f"did not reach {want}")

    def start(self, log: Log) -> None:
        self._action({"os-start": None}, "ACTIVE")

    def stop(self, log: Log) -> None:
        self._action({"os-stop": None}, "SHUTOFF")

    def kill(self, log: Log) -> None:
        self._action({"os-stop": None}, "SHUTOFF")

    def restart(self, log: Log) -> None:
        self._action({"reboot": {"type": "SOFT"}}, "ACTIVE")

    def remove(self, log: Log) -> None:
        """Delete what this machine's create made, by recorded id; 404 means already gone."""
        c = self.settings
        if not (self.server_id or c.floating_ip_id or c.security_group_id or c.key_pair_created
                or c.create_token):
            return
        api = self.session()
        self._find_lost(api)

        def delete(service: str, path: str, what: str) -> None:
            try:
                api.call(service, "DELETE", path)
            except HTTPError as exc:
                if exc.status != 404:
                    raise
                log(f"({self.machine_name}) {what} does not exist, assuming it is already deleted")

        if c.floating_ip_id:
            delete("network", f"/v2.0/floatingips/{c.floating_ip_id}", "Floating IP")
            c.floating_ip_id = ""
        if self.server_id:
            delete("compute", f"/servers/{self.server_id}", "Remote instance")
            self._wait_gone(api)
            c.machine_id = ""
        if c.security_group_id:
            delete("network", f"/v2.0/security-groups/{c.security_group_id}", "Security group")
            c.security_group_id = ""
        if c.key_pair_created and c.key_pair_name:
            delete("compute", f"/os-keypairs/{c.key_pair_name}", "Keypair")
            c.key_pair_created = False

    def _wait_gone(self, api: Session) -> None:
        """A group in use by the server's port cannot be deleted: wait (bounded) for the server to go."""
        deadline = time.monotonic() + float(self.settings.active_timeout or 200)
        delay = 0.2
        while api.get("compute", f"/servers/{self.server_id}") is not None:
            if time.monotonic() + delay > deadline:
                raise MachineError(f"instance {self.server_id} was still being deleted after "
                                   f"{self.settings.active_timeout}s")
            time.sleep(delay)
            delay = min(delay * 1.5, 4.0)
