"""The ``azure`` driver: a Linux VM in Azure Resource Manager, as docker-machine 0.16 made it.

Flags, env vars, defaults (except the retired default size/image), resource
names and log lines follow docker-machine's ``drivers/azure``.  Additions for
private clouds and tests: ``--azure-arm-endpoint`` (the SDK's ``base_url``),
``--azure-authority-host`` (the AAD token endpoint), ``--azure-tenant-id`` (else
discovered from the subscription's 401 challenge, as docker-machine did) and
``--azure-ca-file`` (a CA bundle the SDK trusts, passed as ``connection_verify``).

Every resource is tagged ``pymachine-machine=<name>`` and its id is recorded in
``self.settings`` before its long-running operation starts, so ``remove`` (also
the rollback of a failed create) deletes whatever exists, in dependency order,
and deletes shared things (resource group, vnet, subnet, availability set)
only when this machine made them and nothing else uses them.  The client
secret lives in ``secrets.json`` (machine/secrets.py), never in config.json.
The Azure SDK is imported only inside the methods that call the API.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pymachine.machine import layout, urls
from pymachine.machine.drivers.base import Driver, DriverCapabilities, Flag, Log, State
from pymachine.machine.drivers.settings import Settings, setting
from pymachine.machine.errors import MachineError, PreCreateError

TAG = "pymachine-machine"
SECRET_KEY = "azure-client-secret"
POLL_ENV = "PYMACHINE_AZURE_POLL_INTERVAL"
DEFAULT_IMAGE = "canonical:ubuntu-24_04-lts:server:latest"
DEFAULT_SIZE = "Standard_D2s_v3"  # docker-machine's Standard_A2 is retired
SWARM_PORT = 3376

#: environment name -> (ARM endpoint, AAD authority host, token scope)
ENVIRONMENTS = {
    "AzurePublicCloud": ("https://management.azure.com", "https://login.microsoftonline.com",
                         "https://management.azure.com/.default"),
    "AzureChinaCloud": ("https://management.chinacloudapi.cn", "https://login.chinacloudapi.cn",
                        "https://management.chinacloudapi.cn/.default"),
    "AzureUSGovernmentCloud": ("https://management.usgovcloudapi.net", "https://login.microsoftonline.us",
                               "https://management.usgovcloudapi.net/.default"),
    "AzureGermanCloud": ("https://management.microsoftazure.de", "https://login.microsoftonline.de",
                         "https://management.microsoftazure.de/.default"),
}

POWER_STATES = {
    "running": State.RUNNING, "starting": State.STARTING, "stopping": State.STOPPING,
    "stopped": State.STOPPED, "deallocating": State.STOPPING, "deallocated": State.STOPPED,
}

KIND_LABELS = {
    "virtualMachines": "virtual machine", "disks": "OS disk", "networkInterfaces": "network interface",
    "publicIPAddresses": "public IP address", "networkSecurityGroups": "network security group",
    "subnets": "subnet", "virtualNetworks": "virtual network", "availabilitySets": "availability set",
}

# Resource id fields, in the order remove() deletes them.
OWN_IDS = ("vm_id", "os_disk_id", "nic_id", "public_ip_id", "nsg_id")
SHARED_IDS = (("subnet_id", "subnet_created"), ("vnet_id", "vnet_created"),
              ("availability_set_id", "availability_set_created"))


def describe(exc: BaseException) -> str:
    """One line for an SDK error: ARM's ``code: message`` when there is one."""
    err = getattr(exc, "error", None)
    code = getattr(err, "code", None)
    message = getattr(err, "message", None)
    if code:
        return f"{code}: {str(message or '').strip().splitlines()[0] if message else ''}".rstrip(": ")
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return re.sub(r"^\(\w+\)\s*", "", line)


def _check_https(flag: str, url: str) -> None:
    """An authority or ARM endpoint must be an https:// URL with a host: tokens travel there."""
    if not url:
        return
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        raise MachineError(f"--{flag} {url!r} is not a URL like https://HOST[:PORT]") from None
    if parts.scheme != "https" or not parts.hostname:
        raise MachineError(f"--{flag} {url!r} must be an https:// URL (credentials are sent there)")


def _code(exc: BaseException) -> str:
    return str(getattr(getattr(exc, "error", None), "code", "") or "")


def _is_missing(exc: BaseException) -> bool:
    return getattr(exc, "status_code", None) == 404 or _code(exc) in (
        "ResourceNotFound", "ResourceGroupNotFound", "NotFound")


@dataclasses.dataclass
class AzureSettings(Settings):
    client_id: str = setting("ClientID", "")
    client_secret: str = setting("ClientSecret", "")
    environment: str = setting("Environment", "AzurePublicCloud")
    subscription_id: str = setting("SubscriptionID", "")
    resource_group: str = setting("ResourceGroup", "docker-machine")
    docker_port: int = setting("DockerPort", 2376)
    location: str = setting("Location", "westus")
    size: str = setting("Size", "Standard_D2s_v3")
    image: str = setting("Image", "canonical:ubuntu-24_04-lts:server:latest")
    virtual_network: str = setting("VirtualNetwork", "docker-machine-vnet")
    subnet_name: str = setting("SubnetName", "docker-machine")
    subnet_prefix: str = setting("SubnetPrefix", "192.168.0.0/16")
    availability_set: str = setting("AvailabilitySet", "docker-machine")
    storage_type: str = setting("StorageType", "Standard_LRS")
    open_ports: list[str] = setting("OpenPorts", [], item=str)
    private_ip_addr: str = setting("PrivateIPAddr", "")
    use_private_ip: bool = setting("UsePrivateIP", False)
    no_public_ip: bool = setting("NoPublicIP", False)
    dns_label: str = setting("DNSLabel", "")
    static_public_ip: bool = setting("StaticPublicIP", False)
    custom_data_file: str = setting("CustomDataFile", "")
    tenant_id: str = setting("TenantID", "")
    arm_endpoint: str = setting("ArmEndpoint", "")
    authority_host: str = setting("AuthorityHost", "")
    ca_file: str = setting("CAFile", "")
    resource_group_created: bool = setting("ResourceGroupCreated", False)
    vnet_created: bool = setting("VNetCreated", False)
    subnet_created: bool = setting("SubnetCreated", False)
    availability_set_created: bool = setting("AvailabilitySetCreated", False)
    vm_id: str = setting("VMID", "")
    os_disk_id: str = setting("OSDiskID", "")
    nic_id: str = setting("NICID", "")
    public_ip_id: str = setting("PublicIPID", "")
    nsg_id: str = setting("NSGID", "")
    subnet_id: str = setting("SubnetID", "")
    vnet_id: str = setting("VNetID", "")
    availability_set_id: str = setting("AvailabilitySetID", "")


class AzureDriver(Driver):
    settings_class = AzureSettings
    settings: AzureSettings
    name = "azure"
    capabilities = DriverCapabilities(start=True, stop=True, restart=True, kill=True)
    default_ssh_user = "docker-user"
    rollback_unreachable = True
    flags = (
        Flag(
            "azure-environment",
            "string",
            "AzurePublicCloud",
            "AZURE_ENVIRONMENT",
            "Azure environment (e.g. AzurePublicCloud, AzureChinaCloud)",
        ),
        Flag("azure-subscription-id", "string", "", "AZURE_SUBSCRIPTION_ID", "Azure Subscription ID"),
        Flag(
            "azure-resource-group",
            "string",
            "docker-machine",
            "AZURE_RESOURCE_GROUP",
            "Azure Resource Group name (will be created if missing)",
        ),
        Flag("azure-ssh-user", "string", "docker-user", "AZURE_SSH_USER", "Username for SSH login"),
        Flag("azure-docker-port", "int", 2376, "AZURE_DOCKER_PORT", "Port number for Docker engine"),
        Flag("azure-location", "string", "westus", "AZURE_LOCATION", "Azure region to create the virtual machine"),
        Flag("azure-size", "string", DEFAULT_SIZE, "AZURE_SIZE", "Size for Azure Virtual Machine"),
        Flag(
            "azure-image",
            "string",
            DEFAULT_IMAGE,
            "AZURE_IMAGE",
            "Azure virtual machine OS image (publisher:offer:sku:version)",
        ),
        Flag(
            "azure-vnet",
            "string",
            "docker-machine-vnet",
            "AZURE_VNET",
            "Azure Virtual Network name to connect the virtual machine (in [resourcegroup:]name format)",
        ),
        Flag(
            "azure-subnet",
            "string",
            "docker-machine",
            "AZURE_SUBNET",
            "Azure Subnet Name to be used within the Virtual Network",
        ),
        Flag(
            "azure-subnet-prefix",
            "string",
            "192.168.0.0/16",
            "AZURE_SUBNET_PREFIX",
            "Private CIDR block to be used for the new subnet, should comply RFC 1918",
        ),
        Flag(
            "azure-availability-set",
            "string",
            "docker-machine",
            "AZURE_AVAILABILITY_SET",
            "Azure Availability Set to place the virtual machine into",
        ),
        Flag("azure-custom-data", "string", "", "AZURE_CUSTOM_DATA_FILE", "Path to file with custom-data"),
        Flag("azure-private-ip-address", "string", "", None, "Specify a static private IP address for the machine"),
        Flag(
            "azure-storage-type",
            "string",
            "Standard_LRS",
            "AZURE_STORAGE_TYPE",
            "Type of Storage Account to host the OS Disk for the machine",
        ),
        Flag("azure-use-private-ip", "bool", False, None, "Use private IP address of the machine to connect"),
        Flag("azure-no-public-ip", "bool", False, None, "Do not create a public IP address for the machine"),
        Flag("azure-static-public-ip", "bool", False, None, "Assign a static public IP address to the machine"),
        Flag("azure-dns", "string", "", "AZURE_DNS_LABEL", "A unique DNS label for the public IP adddress"),
        Flag("azure-open-port", "list", [], None, "Make the specified port number accessible from the Internet"),
        Flag(
            "azure-client-id",
            "string",
            "",
            "AZURE_CLIENT_ID",
            "Azure Service Principal Account ID (optional, browser auth is used if not specified)",
        ),
        Flag(
            "azure-client-secret",
            "string",
            "",
            "AZURE_CLIENT_SECRET",
            "Azure Service Principal Account password (optional, browser auth is used if not specified)",
            secret=True,
        ),
        Flag(
            "azure-tenant-id",
            "string",
            "",
            "AZURE_TENANT_ID",
            "Azure AD tenant of the service principal (discovered from the subscription if empty)",
        ),
        Flag(
            "azure-arm-endpoint",
            "string",
            "",
            "AZURE_ARM_ENDPOINT",
            "Azure Resource Manager endpoint (private clouds; default from --azure-environment)",
        ),
        Flag(
            "azure-authority-host",
            "string",
            "",
            "AZURE_AUTHORITY_HOST",
            "Azure AD authority host for tokens (default from --azure-environment)",
        ),
        Flag(
            "azure-ca-file",
            "string",
            "",
            "AZURE_CA_FILE",
            "CA bundle to trust for the ARM and token endpoints (private clouds, tests)",
        ),
    )

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._secret_from_flag: str | None = None
        self._clients: dict[str, Any] = {}

    # -- configuration --------------------------------------------------------------------
    def set_config_from_flags(self, values: Mapping[str, Any]) -> None:
        def s(flag: str) -> str:
            return str(values.get(flag) or "").strip()

        sub = s("azure-subscription-id")
        if not sub:
            raise MachineError("azure driver requires the --azure-subscription-id option (or $AZURE_SUBSCRIPTION_ID)")
        env = s("azure-environment") or "AzurePublicCloud"
        if env not in ENVIRONMENTS:
            raise MachineError(f"--azure-environment {env!r} is not one of {', '.join(ENVIRONMENTS)}")
        port = values.get("azure-docker-port")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise MachineError(f"--azure-docker-port must be a port number between 1 and 65535, got {port!r}")
        prefix = s("azure-subnet-prefix") or "192.168.0.0/16"
        try:
            network = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            raise MachineError(f"--azure-subnet-prefix {prefix!r} is not a CIDR block (e.g. 192.168.0.0/16)") from None
        private = s("azure-private-ip-address")
        if private:
            try:
                inside = ipaddress.ip_address(private) in network
            except ValueError:
                inside = False
            if not inside:
                raise MachineError(f"--azure-private-ip-address {private!r} is not an address in {prefix}")
        open_ports = [str(p).strip() for p in (values.get("azure-open-port") or []) if str(p).strip()]
        for item in open_ports:
            num, _, proto = item.partition("/")
            if not num.isdigit() or not 0 < int(num) < 65536 or proto.lower() not in ("", "tcp", "udp", "*"):
                raise MachineError(f"--azure-open-port {item!r} must be PORT or PORT/tcp or PORT/udp")
        for flag in ("azure-authority-host", "azure-arm-endpoint"):
            _check_https(flag, s(flag))
        if values.get("azure-no-public-ip") and not values.get("azure-use-private-ip"):
            raise MachineError(
                "--azure-no-public-ip requires --azure-use-private-ip (the machine would be unreachable)"
            )
        if values.get("azure-no-public-ip") and (values.get("azure-static-public-ip") or s("azure-dns")):
            raise MachineError("--azure-static-public-ip and --azure-dns need a public IP (drop --azure-no-public-ip)")
        self._secret_from_flag = s("azure-client-secret") or None
        self.settings.update(
            client_id=s("azure-client-id"), environment=env, subscription_id=sub,
            resource_group=s("azure-resource-group") or "docker-machine", docker_port=port,
            location=(s("azure-location") or "westus").lower(), size=s("azure-size") or DEFAULT_SIZE,
            image=s("azure-image") or DEFAULT_IMAGE, virtual_network=s("azure-vnet") or "docker-machine-vnet",
            subnet_name=s("azure-subnet") or "docker-machine", subnet_prefix=prefix,
            availability_set=s("azure-availability-set"), storage_type=s("azure-storage-type") or "Standard_LRS",
            open_ports=open_ports, private_ip_addr=private, use_private_ip=bool(values.get("azure-use-private-ip")),
            no_public_ip=bool(values.get("azure-no-public-ip")), dns_label=s("azure-dns"),
            static_public_ip=bool(values.get("azure-static-public-ip")),
            custom_data_file=os.path.expanduser(s("azure-custom-data")) if s("azure-custom-data") else "",
            tenant_id=s("azure-tenant-id"), arm_endpoint=s("azure-arm-endpoint").rstrip("/"),
            authority_host=s("azure-authority-host").rstrip("/"),
            ca_file=os.path.abspath(os.path.expanduser(s("azure-ca-file"))) if s("azure-ca-file") else "",
            ssh_user=s("azure-ssh-user") or "docker-user", ssh_port=22,
        )

    @property
    def group(self) -> str:
        return str(self.settings.resource_group or "docker-machine")

    @property
    def docker_port(self) -> int:
        return int(self.settings.docker_port or 2376)

    def _names(self) -> dict[str, str]:
        n = self.machine_name
        return {"vm": n, "nsg": f"{n}-firewall", "ip": f"{n}-ip", "nic": f"{n}-nic", "disk": f"{n}-os-disk"}

    def _image(self) -> tuple[str, str, str, str]:
        parts = self.settings.image.split(":")
        if len(parts) != 4 or not all(parts):
            raise PreCreateError(f"--azure-image {self.settings.image!r} must be publisher:offer:sku:version "
                                 f"(e.g. {DEFAULT_IMAGE})")
        return parts[0], parts[1], parts[2], parts[3]

    # -- SDK plumbing -----------------------------------------------------------------------
    def _endpoints(self) -> tuple[str, str, str]:
        arm, authority, scope = ENVIRONMENTS.get(self.settings.environment, ENVIRONMENTS["AzurePublicCloud"])
        return (str(self.settings.arm_endpoint or arm), str(self.settings.authority_host or authority), scope)

    def _verify(self) -> dict[str, Any]:
        ca = self.settings.ca_file
        return {"connection_verify": ca} if ca else {}

    def _client_secret(self) -> str | None:
        if self._secret_from_flag:
            return self._secret_from_flag
        from pymachine.machine.secrets import load_secret

        return load_secret(self.machine_dir, SECRET_KEY) or os.environ.get("AZURE_CLIENT_SECRET") or None

    def _discover_tenant(self) -> str:
        """docker-machine's trick: an unauthenticated GET of the subscription answers 401 naming the tenant."""
        import requests

        arm, _, _ = self._endpoints()
        url = f"{arm}/subscriptions/{self.settings.subscription_id}?api-version=2022-12-01"
        verify: Any = self.settings.ca_file or True
        try:
            resp = requests.get(url, timeout=15, verify=verify)
        except requests.RequestException as exc:
            raise PreCreateError(f"cannot reach Azure Resource Manager at {arm}: {describe(exc)}") from None
        match = re.search(r'authorization_uri="[^"]*/([^/"]+)"', resp.headers.get("WWW-Authenticate", ""))
        if resp.status_code != 401 or not match:
            raise PreCreateError(f"cannot find the tenant of subscription {self.settings.subscription_id} "
                                 f"(HTTP {resp.status_code}); pass --azure-tenant-id")
        return match.group(1)

    def _credential(self) -> Any:
        _, authority, _ = self._endpoints()
        kw: dict[str, Any] = {"authority": authority, **self._verify()}
        if self.settings.authority_host:
            kw["disable_instance_discovery"] = True  # never ask login.microsoftonline.com about a private host
        client_id, secret = self.settings.client_id, self._client_secret()
        if client_id and secret:
            from azure.identity import ClientSecretCredential

            if not self.settings.tenant_id:
                self.settings.tenant_id = self._discover_tenant()
            return ClientSecretCredential(self.settings.tenant_id, client_id, secret, **kw)
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential(**kw)

    def _client(self, kind: str) -> Any:
        if kind in self._clients:
            return self._clients[kind]
        _quiet_sdk_logs()
        arm, _, scope = self._endpoints()
        if "credential" not in self._clients:
            self._clients["credential"] = self._credential()
        try:
            interval = float(os.environ.get(POLL_ENV) or 5.0)
        except ValueError:
            raise MachineError(f"{POLL_ENV} must be a number of seconds") from None
        kw = {"base_url": arm, "credential_scopes": [scope], "polling_interval": interval, **self._verify()}
        sub = self.settings.subscription_id
        cls: type
        if kind == "resource":
            from azure.mgmt.resource.resources import ResourceManagementClient

            cls = ResourceManagementClient
        elif kind == "compute":
            from azure.mgmt.compute import ComputeManagementClient

            cls = ComputeManagementClient
        else:
            from azure.mgmt.network import NetworkManagementClient

            cls = NetworkManagementClient
        self._clients[kind] = cls(self._clients["credential"], sub, **kw)
        return self._clients[kind]

    @contextmanager
    def _api(self, what: str, exc_type: type[MachineError] = MachineError) -> Iterator[None]:
        """Turn SDK errors into one-line MachineErrors naming the step."""
        from azure.core.exceptions import AzureError, ClientAuthenticationError

        try:
            yield
        except ClientAuthenticationError as exc:
            detail = self._auth_detail(exc)
            if detail.startswith("cannot reach"):  # where, not which credentials
                raise exc_type(f"Azure authentication failed while {what}: {detail}") from None
            raise exc_type(
                f"Azure authentication failed while {what}: {detail} "
                "(check --azure-client-id/--azure-client-secret/--azure-tenant-id, or run 'az login')"
            ) from None
        except AzureError as exc:
            raise exc_type(f"Azure error while {what}: {describe(exc)}") from None

    def _auth_detail(self, exc: BaseException) -> str:
        """AAD's AADSTS code and sentence, or what went wrong reaching the authority."""
        text = " ".join(str(getattr(exc, "message", "") or exc).split())
        match = re.search(r"(AADSTS\d+: [^.]*\.)", text)
        if match:
            return match.group(1)
        if "Unable to get authority configuration" in text:
            return (f"tenant {self.settings.tenant_id!r} is unknown to {self._endpoints()[1]}")
        unreachable = re.search(r"Failed to establish a new connection: (?:\[Errno -?\d+\] )?([^')\]]+)", text)
        if unreachable:
            return f"cannot reach the authority {self._endpoints()[1]}: {unreachable.group(1).strip().lower()}"
        return re.sub(r"^\w+\.get_token(_info)? failed: ", "", text)[:300]

    def _tags(self) -> dict[str, str]:
        return {TAG: self.machine_name}

    # -- pre-create -------------------------------------------------------------------------
    def pre_create_check(self) -> None:
        custom = self.settings.custom_data_file
        if custom and not os.path.isfile(custom):
            raise PreCreateError(f"custom data file {custom!r} does not exist (--azure-custom-data)")
        publisher, offer, sku, version = self._image()
        sub, location, size = self.settings.subscription_id, self.settings.location, self.settings.size
        resource = self._client("resource")
        with self._api("checking the subscription", PreCreateError):
            from azure.core.exceptions import HttpResponseError
            from azure.core.rest import HttpRequest

            resp = resource.send_request(HttpRequest("GET", f"/subscriptions/{sub}?api-version=2022-12-01"))
            if resp.status_code == 404:
                raise PreCreateError(f"subscription {sub} was not found; check --azure-subscription-id "
                                     "(az account list shows yours)")
            if resp.status_code != 200:
                raise HttpResponseError(response=resp)
            resp = resource.send_request(HttpRequest("GET", f"/subscriptions/{sub}/locations?api-version=2022-12-01"))
            if resp.status_code != 200:
                raise HttpResponseError(response=resp)
            locations = sorted(str(loc.get("name")) for loc in resp.json().get("value", []))
        if location not in locations:
            raise PreCreateError(
                f"location {location!r} does not exist; pick one of: {', '.join(locations)} (--azure-location)"
            )
        compute = self._client("compute")
        with self._api("listing VM sizes", PreCreateError):
            skus = [s for s in compute.resource_skus.list(filter=f"location eq '{location}'")
                    if s.resource_type == "virtualMachines"]
        match = next((s for s in skus if str(s.name).lower() == str(size).lower()), None)
        offered = sorted(str(s.name) for s in skus if not s.restrictions)
        if match is None:
            raise PreCreateError(f"VM size {size!r} does not exist in {location}; try one of: "
                                 f"{', '.join(offered[:8])} (--azure-size)")
        if match.restrictions:
            code = match.restrictions[0].reason_code
            reason = getattr(code, "value", code) or "restricted"
            raise PreCreateError(f"VM size {size!r} is not available to this subscription in {location} "
                                 f"({reason}); pick another --azure-size or --azure-location")
        with self._api("looking up the image", PreCreateError):
            from azure.core.exceptions import ResourceNotFoundError

            try:
                if version.lower() == "latest":
                    found = list(compute.virtual_machine_images.list(location, publisher, offer, sku, top=1,
                                                                     orderby="name desc"))
                else:
                    found = [compute.virtual_machine_images.get(location, publisher, offer, sku, version)]
            except ResourceNotFoundError:
                found = []
        if not found:
            raise PreCreateError(f"image {self.settings.image!r} was not found in {location}; check --azure-image "
                                 "(az vm image list --all -p PUBLISHER shows the choices)")
        with self._api("checking the resource group", PreCreateError):
            if resource.resource_groups.check_existence(self.group):
                from azure.core.exceptions import ResourceNotFoundError

                try:
                    compute.virtual_machines.get(self.group, self.machine_name)
                except ResourceNotFoundError:
                    return
                raise PreCreateError(f"a virtual machine named {self.machine_name!r} already exists in resource "
                                     f"group {self.group!r}; choose another machine name or --azure-resource-group")

    # -- create -------------------------------------------------------------------------------
    def create(self, log: Log) -> None:
        from pathlib import Path

        from pymachine.machine import certs
        from pymachine.machine.secrets import save_secrets

        prefix = f"({self.machine_name})"
        if self._secret_from_flag:
            save_secrets(self.machine_dir, **{SECRET_KEY: self._secret_from_flag})
        key_path = Path(self.machine_dir) / layout.SSH_KEY
        log(f"{prefix} Generating SSH keypair...")
        certs.generate_ssh_keypair(key_path)
        self.settings.ssh_key_path = str(key_path)
        public_key = Path(str(key_path) + ".pub").read_text().strip()
        names, location = self._names(), self.settings.location
        resource, network, compute = self._client("resource"), self._client("network"), self._client("compute")

        with self._api("creating the resource group"):
            if not resource.resource_groups.check_existence(self.group):
                log(f'{prefix} Creating resource group "{self.group}" in {location}...')
                self.settings.resource_group_created = True
                resource.resource_groups.create_or_update(self.group, {"location": location, "tags": self._tags()})
        avset_id = None
        if self.settings.availability_set:
            avset_id = self._ensure_shared(
                log, "availability set", "availability_set_id", "availability_set_created",
                lambda: compute.availability_sets.get(self.group, self.settings.availability_set),
                lambda: compute.availability_sets.create_or_update(self.group, self.settings.availability_set, {
                    "location": location, "tags": self._tags(), "sku": {"name": "Aligned"},
                    "properties": {"platformFaultDomainCount": 2, "platformUpdateDomainCount": 5}}),
                self.settings.availability_set)
        log(f'{prefix} Configuring network security group "{names["nsg"]}" in {location}...')
        nsg_id = self._put(
            "nsg_id",
            "network security group",
            self._rid("Microsoft.Network", "networkSecurityGroups", names["nsg"]),
            lambda: network.network_security_groups.begin_create_or_update(
                self.group,
                names["nsg"],
                {"location": location, "tags": self._tags(), "properties": {"securityRules": self._rules()}},
            ),
        )
        vnet = self.settings.virtual_network
        vnet_group, _, vnet_name = vnet.rpartition(":")
        vnet_group = vnet_group or self.group
        self._ensure_shared(
            log, "virtual network", "vnet_id", "vnet_created",
            lambda: network.virtual_networks.get(vnet_group, vnet_name),
            lambda: network.virtual_networks.begin_create_or_update(vnet_group, vnet_name, {
                "location": location, "tags": self._tags(),
                "properties": {"addressSpace": {"addressPrefixes": [self.settings.subnet_prefix]}}}).result(),
            vnet_name)
        subnet_id = self._ensure_shared(
            log, "subnet", "subnet_id", "subnet_created",
            lambda: network.subnets.get(vnet_group, vnet_name, self.settings.subnet_name),
            lambda: network.subnets.begin_create_or_update(vnet_group, vnet_name, self.settings.subnet_name, {
                "properties": {"addressPrefix": self.settings.subnet_prefix}}).result(),
            self.settings.subnet_name)
        ip_id = None
        if not self.settings.no_public_ip:
            static = self.settings.static_public_ip
            log(f'{prefix} Creating public IP address "{names["ip"]}" (static={str(static).lower()})...')
            props: dict[str, Any] = {"publicIPAllocationMethod": "Static" if static else "Dynamic"}
            if self.settings.dns_label:
                props["dnsSettings"] = {"domainNameLabel": self.settings.dns_label}
            ip_id = self._put(
                "public_ip_id",
                "public IP address",
                self._rid("Microsoft.Network", "publicIPAddresses", names["ip"]),
                lambda: network.public_ip_addresses.begin_create_or_update(
                    self.group,
                    names["ip"],
                    {"location": location, "tags": self._tags(), "sku": {"name": "Basic"}, "properties": props},
                ),
            )
        log(f'{prefix} Creating network interface "{names["nic"]}"...')
        ip_config: dict[str, Any] = {"subnet": {"id": subnet_id}}
        if self.settings.private_ip_addr:
            ip_config.update(privateIPAllocationMethod="Static", privateIPAddress=self.settings.private_ip_addr)
        else:
            ip_config["privateIPAllocationMethod"] = "Dynamic"
        if ip_id:
            ip_config["publicIPAddress"] = {"id": ip_id}
        nic_id = self._put(
            "nic_id",
            "network interface",
            self._rid("Microsoft.Network", "networkInterfaces", names["nic"]),
            lambda: network.network_interfaces.begin_create_or_update(
                self.group,
                names["nic"],
                {
                    "location": location,
                    "tags": self._tags(),
                    "properties": {
                        "networkSecurityGroup": {"id": nsg_id},
                        "ipConfigurations": [{"name": "ip", "properties": ip_config}],
                    },
                },
            ),
        )
        log(f'{prefix} Creating virtual machine "{names["vm"]}" ({self.settings.size}) in {location}...')
        vm_body = self._vm_body(location, public_key, nic_id, avset_id)
        self.settings.os_disk_id = self._rid("Microsoft.Compute", "disks", names["disk"])
        vm = self._put(
            "vm_id",
            "virtual machine",
            self._rid("Microsoft.Compute", "virtualMachines", names["vm"]),
            lambda: compute.virtual_machines.begin_create_or_update(self.group, names["vm"], vm_body),
            keep=True,
        )
        disk = (vm.storage_profile.os_disk if vm.storage_profile else None) or None
        if disk is not None and disk.managed_disk is not None and disk.managed_disk.id:
            self.settings.os_disk_id = disk.managed_disk.id
        self._refresh_ip(log)

    def _rid(self, provider: str, kind: str, name: str) -> str:
        return (f"/subscriptions/{self.settings.subscription_id}/resourceGroups/{self.group}"
                f"/providers/{provider}/{kind}/{name}")

    def _put(self, field: str, what: str, expected_id: str, call: Any, *, keep: bool = False) -> Any:
        """Record the resource id, then run its create LRO; return the id (or the model with keep)."""
        # Recorded before the PUT: a create whose operation fails (or is interrupted) still
        # leaves an id that remove() deletes; deleting what never existed is a no-op.
        setattr(self.settings, field, expected_id)
        with self._api(f"creating the {what}"):
            result = call().result()
        setattr(self.settings, field, result.id)
        return result if keep else result.id

    def _ensure_shared(self, log: Log, what: str, id_field: str, made_field: str, get: Any, make: Any,
                       label: str) -> str:
        """Reuse a shared resource (vnet, subnet, availability set) or create it and remember that we did."""
        from azure.core.exceptions import ResourceNotFoundError

        with self._api(f"configuring the {what}"):
            try:
                found = get()
                setattr(self.settings, id_field, found.id)
                return str(found.id)
            except ResourceNotFoundError:
                pass
            log(f'({self.machine_name}) Creating {what} "{label}"...')
            setattr(self.settings, made_field, True)
            made = make()
        setattr(self.settings, id_field, made.id)
        return str(made.id)

    def _rules(self) -> list[dict[str, Any]]:
        def rule(name: str, port: int | str, priority: int, proto: str = "Tcp") -> dict[str, Any]:
            return {"name": name, "properties": {
                "protocol": proto, "sourceAddressPrefix": "*", "sourcePortRange": "*",
                "destinationAddressPrefix": "*", "destinationPortRange": str(port),
                "access": "Allow", "direction": "Inbound", "priority": priority}}

        rules = [rule("SSHAllowAny", 22, 300), rule("DockerAllowAny", self.docker_port, 1000),
                 rule("DockerSwarmAllowAny", SWARM_PORT, 1001)]
        for i, item in enumerate(self.settings.open_ports or []):
            num, _, proto = str(item).partition("/")
            proto = {"": "Tcp", "tcp": "Tcp", "udp": "Udp", "*": "*"}[proto.lower()]
            label = "Any" if proto == "*" else proto
            rules.append(rule(f"Port{num}{label}AllowAny", num, 1100 + i, proto))
        return rules

    def _vm_body(self, location: str, public_key: str, nic_id: str, avset_id: str | None) -> dict[str, Any]:
        publisher, offer, sku, version = self._image()
        user = str(self.settings.ssh_user or "docker-user")
        os_profile: dict[str, Any] = {
            "computerName": self.machine_name, "adminUsername": user,
            "linuxConfiguration": {"disablePasswordAuthentication": True, "ssh": {"publicKeys": [
                {"path": f"/home/{user}/.ssh/authorized_keys" if user != "root" else "/root/.ssh/authorized_keys",
                 "keyData": public_key}]}}}
        if self.settings.custom_data_file:
            with open(self.settings.custom_data_file, "rb") as fh:
                os_profile["customData"] = base64.b64encode(fh.read()).decode()
        props: dict[str, Any] = {
            "hardwareProfile": {"vmSize": self.settings.size},
            "storageProfile": {
                "imageReference": {"publisher": publisher, "offer": offer, "sku": sku, "version": version},
                "osDisk": {"name": self._names()["disk"], "createOption": "FromImage", "caching": "ReadWrite",
                           "managedDisk": {"storageAccountType": self.settings.storage_type or "Standard_LRS"}}},
            "osProfile": os_profile,
            "networkProfile": {"networkInterfaces": [{"id": nic_id, "properties": {"primary": True}}]},
        }
        if avset_id:
            props["availabilitySet"] = {"id": avset_id}
        return {"location": location, "tags": self._tags(), "properties": props}

    def _refresh_ip(self, log: Log | None = None) -> None:
        """IPAddress := the public IP (or the NIC's private IP with --azure-use-private-ip)."""
        network = self._client("network")
        names = self._names()
        with self._api("reading the machine's address"):
            if self.settings.use_private_ip or self.settings.no_public_ip:
                nic = network.network_interfaces.get(self.group, names["nic"])
                address = nic.ip_configurations[0].private_ip_address
            else:
                address = network.public_ip_addresses.get(self.group, names["ip"]).ip_address
        if not address:
            raise MachineError(f"Azure assigned no IP address to {self.machine_name}")
        self.settings.ip_address = str(address)

    # -- addresses ------------------------------------------------------------------------------
    def ssh_address(self) -> tuple[str, int, str, str]:
        return self.ip(), int(self.settings.ssh_port or 22), str(self.settings.ssh_user or "docker-user"), \
            self.settings.ssh_key_path

    def url(self) -> str:
        return urls.engine_url(self.ip(), self.docker_port, self.machine_name)

    # -- state ------------------------------------------------------------------------------------
    def state(self, timeout: float = 10.0) -> State:
        if not self.settings.vm_id:
            return State.ERROR
        compute = self._client("compute")
        from azure.core.exceptions import ResourceNotFoundError

        with self._api("reading the VM state"):
            try:
                view = compute.virtual_machines.instance_view(self.group, self.machine_name,
                                                              connection_timeout=min(timeout, 10.0),
                                                              read_timeout=timeout)
            except ResourceNotFoundError:
                raise MachineError(f"virtual machine {self.machine_name!r} was not found in resource group "
                                   f"{self.group!r}") from None
        return _state_of([s.code for s in view.statuses or []])

    @classmethod
    def batch_states(cls, drivers: list[Driver], timeout: float) -> dict[str, State]:
        """One ``virtualMachines?$expand=instanceView`` list call per subscription + resource group."""
        groups: dict[tuple[str, ...], list[AzureDriver]] = {}
        for d in drivers:
            if isinstance(d, AzureDriver) and d.settings.vm_id:
                key = (str(d.settings.subscription_id), d.group.lower(), *d._endpoints(),
                       str(d.settings.client_id), str(d.settings.ca_file))
                groups.setdefault(key, []).append(d)
        found: dict[str, State] = {}
        for members in groups.values():
            first = members[0]
            try:
                with first._api("listing virtual machines"):
                    vms = {
                        str(vm.name).lower(): vm
                        for vm in first._client("compute").virtual_machines.list(
                            first.group,
                            expand="instanceView",
                            connection_timeout=min(timeout, 10.0),
                            read_timeout=timeout,
                        )
                    }
            except Exception:  # noqa: BLE001, S112 -- this subscription/group falls back to per-machine state()
                continue
            for d in members:
                vm = vms.get(d.machine_name.lower())
                if vm is not None and vm.instance_view is not None:
                    found[d.machine_name] = _state_of([s.code for s in vm.instance_view.statuses or []])
        return found

    # -- power ------------------------------------------------------------------------------------
    def _vm_action(self, what: str, call: str, **kw: Any) -> None:
        compute = self._client("compute")
        with self._api(what):
            getattr(compute.virtual_machines, call)(self.group, self.machine_name, **kw).result()

    def start(self, log: Log) -> None:
        self._vm_action("starting the VM", "begin_start")
        self._refresh_ip(log)

    def stop(self, log: Log) -> None:
        log("NOTICE: Stopping an Azure Virtual Machine is just going to power it off, not deallocate.")
        log("You should remove the machine if you would like to avoid unexpected costs.")
        self._vm_action("stopping the VM", "begin_power_off")

    def restart(self, log: Log) -> None:
        self._vm_action("restarting the VM", "begin_restart")

    def kill(self, log: Log) -> None:
        self._vm_action("killing the VM", "begin_power_off", skip_shutdown=True)

    # -- remove -------------------------------------------------------------------------------------
    def remove(self, log: Log) -> None:
        """Delete the machine's own resources, then shared ones pymachine made that nothing else uses."""
        shared = [str(getattr(self.settings, f) or "") for f, _ in SHARED_IDS]
        if not any(getattr(self.settings, f) for f in OWN_IDS) and not any(shared) \
                and not self.settings.resource_group_created:
            return  # create failed before anything was requested from Azure
        resource = self._client("resource")
        failures: list[str] = []
        for field in OWN_IDS:
            rid = str(getattr(self.settings, field) or "")
            if rid and self._delete(resource, rid, log, shared=False, failures=failures):
                setattr(self.settings, field, "")
        for (field, made), rid in zip(SHARED_IDS, shared, strict=True):
            if rid and (getattr(self.settings, made) or self._made_by_pymachine(resource, rid)) \
                    and self._delete(resource, rid, log, shared=True, failures=failures):
                self.settings.update(**{field: "", made: False})
        if not failures:
            self._delete_group(resource, log, failures)
        if failures:
            raise MachineError("could not remove every Azure resource: " + "; ".join(failures))

    def _made_by_pymachine(self, resource: Any, rid: str) -> bool:
        """A shared resource another pymachine machine created carries our tag (a subnet: its vnet)."""
        from azure.core.exceptions import AzureError

        if "/subnets/" in rid.lower():
            rid = rid[: rid.lower().index("/subnets/")]
        api = "2024-07-01" if "/microsoft.compute/" in rid.lower() else "2024-05-01"
        try:
            return TAG in (resource.resources.get_by_id(rid, api_version=api).tags or {})
        except AzureError:
            return False

    def _delete(self, resource: Any, rid: str, log: Log, *, shared: bool, failures: list[str]) -> bool:
        """Delete one resource by id (generic ARM delete); True when it is gone."""
        from azure.core.exceptions import AzureError

        kind, name = rid.split("/")[-2], rid.rsplit("/", 1)[-1]
        api = "2024-07-01" if "/microsoft.compute/" in rid.lower() else "2024-05-01"
        if kind == "disks":
            api = "2024-03-02"
        try:
            resource.resources.get_by_id(rid, api_version=api)
        except AzureError as exc:
            if _is_missing(exc):
                return True
        log(f'({self.machine_name}) Removing {KIND_LABELS.get(kind, kind)} "{name}"...')
        try:
            resource.resources.begin_delete_by_id(rid, api_version=api).result()
            return True
        except AzureError as exc:
            if _is_missing(exc):
                return True
            if shared and ("InUse" in _code(exc) or _code(exc) == "OperationNotAllowed"):
                log(f'({self.machine_name}) Keeping {KIND_LABELS.get(kind, kind)} "{name}": other resources use it')
                return False
            failures.append(f"{name}: {describe(exc)}")
            return False

    def _delete_group(self, resource: Any, log: Log, failures: list[str]) -> None:
        """Delete the resource group if pymachine made it and it is now empty."""
        from azure.core.exceptions import AzureError

        try:
            group = resource.resource_groups.get(self.group)
            if not self.settings.resource_group_created and TAG not in (group.tags or {}):
                return
            left = [r.id for r in resource.resources.list_by_resource_group(self.group)]
            if left:
                log(f'({self.machine_name}) Keeping resource group "{self.group}": {len(left)} other resource(s) in it')
                return
            log(f'({self.machine_name}) Removing resource group "{self.group}"...')
            resource.resource_groups.begin_delete(self.group).result()
            self.settings.resource_group_created = False
        except AzureError as exc:
            if _is_missing(exc):
                self.settings.resource_group_created = False
                return
            failures.append(f"resource group {self.group}: {describe(exc)}")


def _quiet_sdk_logs() -> None:
    """azure-identity logs each failed token attempt as a WARNING; pymachine reports one line itself.

    A NullHandler stops Python's last-resort stderr handler; with ``--debug`` the
    records still reach whatever handler the CLI put on the root logger.
    """
    import logging

    logger = logging.getLogger("azure")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def _state_of(codes: list[str]) -> State:
    if any(str(c).lower() == "provisioningstate/failed" for c in codes):
        return State.ERROR
    for code in codes:
        kind, _, value = str(code).partition("/")
        if kind == "PowerState":
            return POWER_STATES.get(value.lower(), State.NONE)
    return State.STARTING if any(str(c).lower().startswith("provisioningstate/") for c in codes) else State.NONE


