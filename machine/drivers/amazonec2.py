"""The ``amazonec2`` driver: EC2 instances through boto3, with docker-machine's flags.

Flags, env vars, defaults and config.json field names follow docker-machine
0.16.  Differences worth knowing:

* access keys given by flag live in the machine's secrets file, never in
  config.json; without them boto3's standard credential chain is used
  (env vars, ``AWS_PROFILE``/``~/.aws``, SSO, instance roles);
* the default AMI is looked up (newest Canonical Ubuntu 24.04 LTS image in the
  region) instead of read from a table that goes stale as AMIs are retired;
* resources pymachine made are recorded (``PymachineCreated``) the moment
  they exist, so ``remove`` (and a failed create's rollback) deletes exactly
  those and never a shared, pre-existing key pair or security group;
* ``--amazonec2-private-ip-address`` pins the instance's primary private IP.

boto3 is imported only inside the methods that talk to AWS: ``env`` and
``url()``/``ip()`` answer from the stored config.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from pymachine.machine import layout, urls
from pymachine.machine.drivers.base import Driver, DriverCapabilities, Flag, Log, State
from pymachine.machine.drivers.settings import Settings, setting
from pymachine.machine.errors import MachineError, PreCreateError

ENGINE_PORT = 2376
SWARM_MASTER_PORT = 3376
#: docker swarm mode: cluster management, node gossip (tcp+udp), overlay VXLAN.
SWARM_PORTS = ((2377, "tcp"), (7946, "tcp"), (7946, "udp"), (4789, "udp"))
UBUNTU_OWNER = "099720109477"  # Canonical
UBUNTU_LTS_PATTERN = "ubuntu/images/hvm-ssd*/ubuntu-noble-24.04-amd64-server-*"
WAIT_ENV = "PYMACHINE_AWS_WAIT"
WAIT_DEFAULT = 600.0
TAG_MACHINE = "pymachine-machine"

STATES = {
    "pending": State.STARTING,
    "running": State.RUNNING,
    "stopping": State.STOPPING,
    "shutting-down": State.STOPPING,
    "stopped": State.STOPPED,
    "terminated": State.ERROR,
}
AUTH_ERRORS = {"AuthFailure", "UnrecognizedClientException", "InvalidClientTokenId", "SignatureDoesNotMatch",
               "IncompleteSignature", "InvalidAccessKeyId", "ExpiredToken", "RequestExpired"}
CREDENTIALS_HINT = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, pass --amazonec2-access-key and "
                    "--amazonec2-secret-key, or configure a profile in ~/.aws/credentials (AWS_PROFILE)")
SECRET_KEYS = ("AccessKey", "SecretKey", "SessionToken")


@dataclasses.dataclass
class AmazonEC2Settings(Settings):
    id: str = setting("Id", "")
    access_key: str = setting("AccessKey", "")
    secret_key: str = setting("SecretKey", "")
    session_token: str = setting("SessionToken", "")
    region: str = setting("Region", "us-east-1")
    ami: str = setting("AMI", "")
    ssh_key_id: int = setting("SSHKeyID", 0)
    existing_key: bool = setting("ExistingKey", False)
    key_name: str = setting("KeyName", "")
    instance_id: str = setting("InstanceId", "")
    instance_type: str = setting("InstanceType", "t2.micro")
    private_ip_address: str = setting("PrivateIPAddress", "")
    security_group_id: str = setting("SecurityGroupId", "")
    security_group_ids: list[str] | None = setting("SecurityGroupIds", None, kind=list, item=str)
    security_group_name: str = setting("SecurityGroupName", "")
    security_group_names: list[str] = setting("SecurityGroupNames", ["docker-machine"], item=str)
    security_group_read_only: bool = setting("SecurityGroupReadOnly", False)
    open_ports: list[str] | None = setting("OpenPorts", None, kind=list, item=str)
    tags: str = setting("Tags", "")
    reservation_id: str = setting("ReservationId", "")
    device_name: str = setting("DeviceName", "/dev/sda1")
    root_size: int = setting("RootSize", 16)
    volume_type: str = setting("VolumeType", "gp2")
    iam_instance_profile: str = setting("IamInstanceProfile", "")
    vpc_id: str = setting("VpcId", "")
    subnet_id: str = setting("SubnetId", "")
    zone: str = setting("Zone", "a")
    request_spot_instance: bool = setting("RequestSpotInstance", False)
    spot_price: str = setting("SpotPrice", "0.50")
    block_duration_minutes: int = setting("BlockDurationMinutes", 0)
    private_ip_only: bool = setting("PrivateIPOnly", False)
    use_private_ip: bool = setting("UsePrivateIP", False)
    use_ebs_optimized_instance: bool = setting("UseEbsOptimizedInstance", False)
    monitoring: bool = setting("Monitoring", False)
    ssh_private_key_path: str = setting("SSHPrivateKeyPath", "")
    retry_count: int = setting("RetryCount", 5)
    endpoint: str = setting("Endpoint", "")
    disable_ssl: bool = setting("DisableSSL", False)
    user_data_file: str = setting("UserDataFile", "")
    requested_private_ip_address: str = setting("RequestedPrivateIPAddress", "")
    pymachine_created: dict[str, Any] = setting("PymachineCreated", {"KeyPair": False, "SecurityGroupIds": []})


class AmazonEC2Driver(Driver):
    settings_class = AmazonEC2Settings
    settings: AmazonEC2Settings
    name = "amazonec2"
    capabilities = DriverCapabilities(start=True, stop=True, restart=True, kill=True, own_engine_url=True)
    default_ssh_user = "ubuntu"
    rollback_unreachable = True
    flags = (
        Flag("amazonec2-access-key", "string", "", "AWS_ACCESS_KEY_ID", "AWS Access Key", secret=True),
        Flag("amazonec2-secret-key", "string", "", "AWS_SECRET_ACCESS_KEY", "AWS Secret Key", secret=True),
        Flag("amazonec2-session-token", "string", "", "AWS_SESSION_TOKEN", "AWS Session Token", secret=True),
        Flag(
            "amazonec2-ami",
            "string",
            "",
            "AWS_AMI",
            "AWS machine image (default: newest Ubuntu 24.04 LTS of the region)",
        ),
        Flag("amazonec2-region", "string", "us-east-1", "AWS_DEFAULT_REGION", "AWS region"),
        Flag("amazonec2-vpc-id", "string", "", "AWS_VPC_ID", "AWS VPC id"),
        Flag("amazonec2-zone", "string", "a", "AWS_ZONE", "AWS zone for instance (i.e. a,b,c,d,e)"),
        Flag("amazonec2-subnet-id", "string", "", "AWS_SUBNET_ID", "AWS VPC subnet id"),
        Flag(
            "amazonec2-security-group-readonly",
            "bool",
            False,
            "AWS_SECURITY_GROUP_READONLY",
            "Skip adding default rules to security groups",
        ),
        Flag("amazonec2-security-group", "list", ["docker-machine"], "AWS_SECURITY_GROUP", "AWS VPC security group"),
        Flag("amazonec2-open-port", "list", [], None, "Make the specified port number accessible from the Internet"),
        Flag("amazonec2-tags", "string", "", "AWS_TAGS", "AWS Tags (e.g. key1,value1,key2,value2)"),
        Flag("amazonec2-instance-type", "string", "t2.micro", "AWS_INSTANCE_TYPE", "AWS instance type"),
        Flag("amazonec2-device-name", "string", "/dev/sda1", "AWS_DEVICE_NAME", "AWS root device name"),
        Flag("amazonec2-root-size", "int", 16, "AWS_ROOT_SIZE", "AWS root disk size (in GB)"),
        Flag("amazonec2-volume-type", "string", "gp2", "AWS_VOLUME_TYPE", "Amazon EBS volume type"),
        Flag("amazonec2-iam-instance-profile", "string", "", "AWS_INSTANCE_PROFILE", "AWS IAM Instance Profile"),
        Flag("amazonec2-ssh-port", "int", 22, "AWS_SSH_PORT", "SSH port"),
        Flag("amazonec2-ssh-user", "string", "ubuntu", "AWS_SSH_USER", "Set the name of the ssh user"),
        Flag("amazonec2-request-spot-instance", "bool", False, None, "Set this flag to request spot instance"),
        Flag("amazonec2-spot-price", "string", "0.50", None, "AWS spot instance bid price (in dollar)"),
        Flag(
            "amazonec2-block-duration-minutes",
            "int",
            0,
            None,
            "AWS spot instance duration in minutes (60, 120, 180, 240, 300, or 360)",
        ),
        Flag("amazonec2-private-address-only", "bool", False, None, "Only use a private IP address"),
        Flag("amazonec2-use-private-address", "bool", False, None, "Force the usage of private IP address"),
        Flag(
            "amazonec2-private-ip-address", "string", "", None, "Primary private IP address of the instance (pymachine)"
        ),
        Flag("amazonec2-monitoring", "bool", False, None, "Set this flag to enable CloudWatch monitoring"),
        Flag("amazonec2-use-ebs-optimized-instance", "bool", False, None, "Create an EBS optimized instance"),
        Flag("amazonec2-ssh-keypath", "string", "", "AWS_SSH_KEYPATH", "SSH Key for Instance"),
        Flag(
            "amazonec2-keypair-name",
            "string",
            "",
            "AWS_KEYPAIR_NAME",
            "AWS keypair to use; requires --amazonec2-ssh-keypath",
        ),
        Flag("amazonec2-retries", "int", 5, None, "Set retry count for recoverable failures (use -1 to disable)"),
        Flag(
            "amazonec2-endpoint",
            "string",
            "",
            "AWS_ENDPOINT",
            "Optional endpoint URL (hostname only or fully qualified URI)",
        ),
        Flag(
            "amazonec2-insecure-transport", "bool", False, "AWS_INSECURE_TRANSPORT", "Disable SSL when sending requests"
        ),
        Flag("amazonec2-userdata", "string", "", "AWS_USERDATA", "path to file with cloud-init user data"),
    )

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._flag_secrets: dict[str, str] = {}
        self._clients: dict[tuple[float | None, int | None], Any] = {}

    # Configuration -----------------------------------------------------------------------
    def set_config_from_flags(self, values: Mapping[str, Any]) -> None:
        def s(flag: str) -> str:
            return str(values.get(f"amazonec2-{flag}") or "").strip()

        def n(flag: str, default: int) -> int:
            value = values.get(f"amazonec2-{flag}")
            return default if value is None else int(value)

        region = s("region") or "us-east-1"
        zone = s("zone") or "a"
        ssh_port = n("ssh-port", 22)
        if not 0 < ssh_port < 65536:
            raise MachineError(f"--amazonec2-ssh-port must be a port number between 1 and 65535, got {ssh_port}")
        if n("root-size", 16) <= 0:
            raise MachineError("--amazonec2-root-size must be a positive number of GB")
        if s("tags") and len(s("tags").split(",")) % 2:
            raise MachineError(f"--amazonec2-tags must be key,value pairs separated by commas, got {s('tags')!r}")
        groups = [g for g in (values.get("amazonec2-security-group") or ["docker-machine"]) if g]
        self._flag_secrets = {
            k: s(f) for k, f in zip(SECRET_KEYS, ("access-key", "secret-key", "session-token"), strict=True) if s(f)
        }
        self.settings.update(
            region=region, zone=zone, ami=s("ami"), instance_type=s("instance-type") or "t2.micro",
            vpc_id=s("vpc-id"), subnet_id=s("subnet-id"),
            security_group_names=groups, security_group_name=groups[0] if len(groups) == 1 else "",
            security_group_read_only=bool(values.get("amazonec2-security-group-readonly")),
            open_ports=[p for p in (values.get("amazonec2-open-port") or []) if p] or None,
            tags=s("tags"), device_name=s("device-name") or "/dev/sda1", root_size=n("root-size", 16),
            volume_type=s("volume-type") or "gp2", iam_instance_profile=s("iam-instance-profile"),
            ssh_port=ssh_port, ssh_user=s("ssh-user") or "ubuntu",
            request_spot_instance=bool(values.get("amazonec2-request-spot-instance")),
            spot_price=s("spot-price") or "0.50", block_duration_minutes=n("block-duration-minutes", 0),
            private_ip_only=bool(values.get("amazonec2-private-address-only")),
            use_private_ip=bool(values.get("amazonec2-use-private-address")),
            requested_private_ip_address=s("private-ip-address"),
            monitoring=bool(values.get("amazonec2-monitoring")),
            use_ebs_optimized_instance=bool(values.get("amazonec2-use-ebs-optimized-instance")),
            ssh_private_key_path=os.path.expanduser(s("ssh-keypath")) if s("ssh-keypath") else "",
            key_name=s("keypair-name"), existing_key=bool(s("keypair-name")),
            retry_count=n("retries", 5), endpoint=s("endpoint"),
            disable_ssl=bool(values.get("amazonec2-insecure-transport")),
            user_data_file=os.path.expanduser(s("userdata")) if s("userdata") else "",
        )
        open_ports = self.settings.open_ports or []
        for spec in open_ports:
            _parse_port(spec)

    # Addresses (from the stored config: no API call) --------------------------------------
    def engine_url(self) -> str:
        return urls.engine_url(self.ip(), ENGINE_PORT, self.machine_name)

    def url(self) -> str:
        return self.engine_url()

    def ssh_address(self) -> tuple[str, int, str, str]:
        key = self.settings.ssh_key_path
        return self.ip(), int(self.settings.ssh_port or 22), str(self.settings.ssh_user or "ubuntu"), key

    # AWS clients ---------------------------------------------------------------------------
    def _secret(self, key: str) -> str:
        if key in self._flag_secrets:
            return self._flag_secrets[key]
        if self.store_path and self.machine_name:
            from pymachine.machine.secrets import load_secret

            return load_secret(self.machine_dir, key) or ""
        return ""

    def credential_key(self) -> tuple[str, ...]:
        """What selects an account: calls with equal keys may share one client."""
        return (self.settings.endpoint, self.region, self._secret("AccessKey"),
                self._secret("SecretKey"), self._secret("SessionToken"))

    @property
    def region(self) -> str:
        return str(self.settings.region or "us-east-1")

    def _credentials(self) -> dict[str, str]:
        """Keys given by flag (or saved from them); empty means boto3's credential chain."""
        access, secret = self._secret("AccessKey"), self._secret("SecretKey")
        if not (access and secret):
            return {}
        creds = {"aws_access_key_id": access, "aws_secret_access_key": secret}
        if self._secret("SessionToken"):
            creds["aws_session_token"] = self._secret("SessionToken")
        return creds

    def client(self, timeout: float | None = None, attempts: int | None = None) -> Any:
        """An EC2 client honouring --amazonec2-retries (botocore's standard retry mode:
        throttling and transient errors back off exponentially), endpoint and TLS flags.

        Clients are cached per driver, and all come from one boto3 session per
        process, so EC2's large service model is parsed once, not per client.
        """
        from botocore.config import Config

        key = (timeout, attempts)
        cached = self._clients.get(key)
        if cached is not None:
            return cached
        retry_count = self.settings.retry_count
        retries = int(retry_count if retry_count is not None else 5)
        config = Config(
            retries={"total_max_attempts": attempts or max(1, retries + 1), "mode": "standard"},
            connect_timeout=min(timeout or 20.0, 20.0), read_timeout=min(timeout or 60.0, 60.0),
            user_agent_extra="pymachine",
        )
        endpoint = self.settings.endpoint
        if endpoint and "://" not in endpoint:
            endpoint = ("http://" if self.settings.disable_ssl else "https://") + endpoint
        with _SESSION_LOCK:
            client = _boto_session().client(
                "ec2", region_name=self.region, endpoint_url=endpoint or None,
                use_ssl=not self.settings.disable_ssl, config=config, **self._credentials(),
            )
        self._clients[key] = client
        return client

    # Pre-create checks ---------------------------------------------------------------------
    def pre_create_check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        from botocore.parsers import ResponseParserError

        if bool(self._secret("AccessKey")) != bool(self._secret("SecretKey")):
            raise PreCreateError("--amazonec2-access-key and --amazonec2-secret-key must be given together")
        session = _boto_session()
        if not self._credentials() and session.get_credentials() is None:
            raise PreCreateError(f"no AWS credentials found: {CREDENTIALS_HINT}")
        known = set()
        for partition in session.get_available_partitions():
            known.update(session.get_available_regions("ec2", partition_name=partition))
        known_region = self.region in known
        if not known_region and not self.settings.endpoint:
            raise PreCreateError(f"unknown AWS region {self.region!r}: choose one with --amazonec2-region")
        if self.settings.key_name and not self.settings.ssh_private_key_path:
            raise PreCreateError("using --amazonec2-keypair-name also requires --amazonec2-ssh-keypath")
        key_path = self.settings.ssh_private_key_path
        if key_path and not os.path.isfile(key_path):
            raise PreCreateError(f"SSH key does not exist: {key_path!r} (--amazonec2-ssh-keypath)")
        userdata = self.settings.user_data_file
        if userdata and not os.path.isfile(userdata):
            raise PreCreateError(f"user data file does not exist: {userdata!r} (--amazonec2-userdata)")
        try:
            # A region botocore does not know is asked about once (a custom endpoint may
            # serve it); a known one gets the usual retries.
            self._check_account(self.client(attempts=None if known_region else 1), known_region)
            ec2 = self.client()
            self._check_image(ec2)
            self._check_instance_type(ec2)
            self._check_key_pair(ec2)
            self._resolve_network(ec2)
        except ClientError as exc:
            raise PreCreateError(f"AWS pre-create check failed: {aws_error(exc)}") from None
        except (BotoCoreError, ResponseParserError) as exc:
            raise PreCreateError(f"cannot use the EC2 API ({self.region}): {exc}") from None

    def _check_account(self, ec2: Any, known_region: bool = True) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        from botocore.parsers import ResponseParserError

        try:
            regions = {r["RegionName"] for r in ec2.describe_regions(AllRegions=True)["Regions"]}
        except (ClientError, BotoCoreError, ResponseParserError) as exc:
            if isinstance(exc, ClientError) and error_code(exc) in AUTH_ERRORS:
                raise PreCreateError(f"AWS rejected the credentials ({aws_error(exc)}): {CREDENTIALS_HINT}") from None
            if not known_region:
                raise PreCreateError(
                    f"unknown AWS region {self.region!r}: choose one with --amazonec2-region"
                ) from None
            raise
        if self.region not in regions:
            raise PreCreateError(f"unknown AWS region {self.region!r}: choose one with --amazonec2-region")

    def _check_image(self, ec2: Any) -> None:
        from botocore.exceptions import ClientError

        ami = self.settings.ami
        if not ami:
            images = ec2.describe_images(Owners=[UBUNTU_OWNER], Filters=[
                {"Name": "name", "Values": [UBUNTU_LTS_PATTERN]}, {"Name": "state", "Values": ["available"]},
            ])["Images"]
            if not images:
                raise PreCreateError(
                    f"no Ubuntu 24.04 LTS image found in {self.region}: choose one with --amazonec2-ami"
                )
            self.settings.ami = max(images, key=lambda i: i.get("CreationDate") or "")["ImageId"]
            return
        try:
            found = ec2.describe_images(ImageIds=[ami])["Images"]
        except ClientError as exc:
            if error_code(exc).startswith("InvalidAMIID"):
                found = []
            else:
                raise
        if not found:
            raise PreCreateError(f"AMI {ami!r} does not exist in {self.region}: choose an image with --amazonec2-ami")

    def _check_instance_type(self, ec2: Any) -> None:
        from botocore.exceptions import ClientError

        kind = self.settings.instance_type
        try:
            ec2.describe_instance_types(InstanceTypes=[kind])
        except ClientError as exc:
            if error_code(exc) == "InvalidInstanceType":
                raise PreCreateError(f"instance type {kind!r} does not exist in {self.region}: "
                                     "choose one with --amazonec2-instance-type") from None
            raise

    def _check_key_pair(self, ec2: Any) -> None:
        from botocore.exceptions import ClientError

        name = self.settings.key_name or self.machine_name
        try:
            exists = bool(ec2.describe_key_pairs(KeyNames=[name])["KeyPairs"])
        except ClientError as exc:
            if error_code(exc) != "InvalidKeyPair.NotFound":
                raise
            exists = False
        if self.settings.existing_key and not exists:
            raise PreCreateError(f"key pair {name!r} does not exist in {self.region} (--amazonec2-keypair-name)")
        if not self.settings.existing_key and exists:
            raise PreCreateError(f"There is already a keypair with the name {name}. "
                                 "Please either remove that keypair or use a different machine name.")

    def _resolve_network(self, ec2: Any) -> None:
        """Find the VPC and subnet as docker-machine did: given ids, else the default VPC's subnet in the zone."""
        import ipaddress

        from botocore.exceptions import ClientError

        zone = self.region + str(self.settings.zone or "a")
        subnet_id, vpc_id = self.settings.subnet_id, self.settings.vpc_id
        try:
            if subnet_id:
                subnets = ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"]
            elif vpc_id:
                subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                        {"Name": "availability-zone", "Values": [zone]}])["Subnets"]
            else:
                vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
                if not vpcs:
                    raise PreCreateError(f"no default VPC in {self.region}: choose one with --amazonec2-vpc-id "
                                         "or --amazonec2-subnet-id")
                vpc_id = vpcs[0]["VpcId"]
                subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                        {"Name": "availability-zone", "Values": [zone]}])["Subnets"]
        except ClientError as exc:
            if error_code(exc).startswith(("InvalidSubnetID", "InvalidVpcID")):
                raise PreCreateError(f"{aws_error(exc)} (--amazonec2-subnet-id / --amazonec2-vpc-id)") from None
            raise
        if not subnets:
            raise PreCreateError(f"no subnet in zone {zone}"
                                 + (f" of {vpc_id}" if vpc_id else "") + ": choose one with --amazonec2-subnet-id")
        subnet = subnets[0]
        if vpc_id and subnet["VpcId"] != vpc_id:
            raise PreCreateError(f"subnet {subnet['SubnetId']} is not in VPC {vpc_id}")
        pinned = self.settings.requested_private_ip_address
        if pinned:
            try:
                inside = ipaddress.ip_address(pinned) in ipaddress.ip_network(subnet["CidrBlock"])
            except ValueError:
                raise PreCreateError(f"--amazonec2-private-ip-address {pinned!r} is not an IP address") from None
            if not inside:
                raise PreCreateError(f"--amazonec2-private-ip-address {pinned} is outside subnet "
                                     f"{subnet['SubnetId']} ({subnet['CidrBlock']})")
        self.settings.update(subnet_id=subnet["SubnetId"], vpc_id=subnet["VpcId"],
                           zone=str(subnet.get("AvailabilityZone") or zone)[len(self.region):] or self.settings.zone)

    # Create ----------------------------------------------------------------------------------
    def create(self, log: Log) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        from pymachine.machine.secrets import save_secrets

        if self._flag_secrets:
            save_secrets(self.machine_dir, **self._flag_secrets)
        ec2 = self.client()
        try:
            self._create_key_pair(ec2, log)
            self._create_security_groups(ec2, log)
            self._run_instance(ec2, log)
            self._wait_for(ec2, "running", log)
        except ClientError as exc:
            raise MachineError(f"Error creating machine: {aws_error(exc)}") from None
        except BotoCoreError as exc:
            raise MachineError(f"Error creating machine: {exc}") from None

    def _create_key_pair(self, ec2: Any, log: Log) -> None:
        from pymachine.machine import certs

        dest = os.path.join(self.machine_dir, layout.SSH_KEY)
        if self.settings.existing_key:
            log(f"({self.machine_name}) Using existing key pair {self.settings.key_name}")
            shutil.copyfile(self.settings.ssh_private_key_path, dest)
            os.chmod(dest, 0o600)
            self.settings.ssh_key_path = dest
            return
        log(f"({self.machine_name}) Creating key pair...")
        certs.generate_ssh_keypair(dest)
        self.settings.ssh_key_path = dest
        with open(dest + ".pub", "rb") as fh:
            public = fh.read()
        ec2.import_key_pair(KeyName=self.machine_name, PublicKeyMaterial=public, TagSpecifications=[
            {"ResourceType": "key-pair", "Tags": [{"Key": TAG_MACHINE, "Value": self.machine_name}]}])
        self.settings.key_name = self.machine_name
        self._created()["KeyPair"] = True

    def _created(self) -> dict[str, Any]:
        created = self.settings.pymachine_created
        if not isinstance(created, dict):
            created = {}
        created.setdefault("KeyPair", False)
        created.setdefault("SecurityGroupIds", [])
        self.settings.pymachine_created = created  # stored from now on, also in a config from before it
        return created

    def _create_security_groups(self, ec2: Any, log: Log) -> None:
        ids: list[str] = []
        for name in self.settings.security_group_names or ["docker-machine"]:
            found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]},
                                                          {"Name": "vpc-id", "Values": [self.settings.vpc_id]}])
            groups = found["SecurityGroups"]
            if groups:
                group = groups[0]
                log(f"({self.machine_name}) Using security group {name} ({group['GroupId']})")
            else:
                log(f"({self.machine_name}) Creating security group {name} in {self.settings.vpc_id}")
                gid = ec2.create_security_group(
                    GroupName=name,
                    Description="Docker Machine",
                    VpcId=self.settings.vpc_id,
                    TagSpecifications=[
                        {"ResourceType": "security-group", "Tags": [{"Key": TAG_MACHINE, "Value": self.machine_name}]}
                    ],
                )["GroupId"]
                self._created()["SecurityGroupIds"].append(gid)
                group = {"GroupId": gid, "IpPermissions": []}
            ids.append(group["GroupId"])
            self.settings.update(security_group_ids=list(ids), security_group_id=ids[0])
            if not self.settings.security_group_read_only:
                self._authorize(ec2, group)

    def wanted_ports(self) -> list[tuple[int, str]]:
        ports = [(int(self.settings.ssh_port or 22), "tcp"), (ENGINE_PORT, "tcp")]
        if self.settings.swarm_master:
            ports.append((SWARM_MASTER_PORT, "tcp"))
        ports += list(SWARM_PORTS)
        ports += [_parse_port(p) for p in self.settings.open_ports or []]
        return list(dict.fromkeys(ports))

    def _authorize(self, ec2: Any, group: dict[str, Any]) -> None:
        have = {(p.get("FromPort"), p.get("IpProtocol")) for p in group.get("IpPermissions") or []}
        missing = [(port, proto) for port, proto in self.wanted_ports() if (port, proto) not in have]
        if missing:
            ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[
                {"IpProtocol": proto, "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
                for port, proto in missing])

    def _tags(self) -> list[dict[str, str]]:
        tags = {"Name": self.machine_name, TAG_MACHINE: self.machine_name}
        parts = [p.strip() for p in self.settings.tags.split(",")] if self.settings.tags else []
        for key, value in zip(parts[::2], parts[1::2], strict=True):
            tags[key] = value
        return [{"Key": k, "Value": v} for k, v in tags.items()]

    def _run_instance(self, ec2: Any, log: Log) -> None:
        c = self.settings
        nic: dict[str, Any] = {"DeviceIndex": 0, "SubnetId": c.subnet_id, "Groups": list(c.security_group_ids or []),
                               "AssociatePublicIpAddress": not c.private_ip_only, "DeleteOnTermination": True}
        if c.requested_private_ip_address:
            nic["PrivateIpAddress"] = c.requested_private_ip_address
        params: dict[str, Any] = {
            "ImageId": c.ami, "MinCount": 1, "MaxCount": 1, "InstanceType": c.instance_type,
            "KeyName": c.key_name, "Placement": {"AvailabilityZone": self.region + str(c.zone or "a")},
            "NetworkInterfaces": [nic], "Monitoring": {"Enabled": bool(c.monitoring)},
            "EbsOptimized": bool(c.use_ebs_optimized_instance),
            "BlockDeviceMappings": [{"DeviceName": c.device_name or "/dev/sda1", "Ebs": {
                "VolumeSize": int(c.root_size or 16), "VolumeType": c.volume_type or "gp2",
                "DeleteOnTermination": True}}],
            "TagSpecifications": [{"ResourceType": "instance", "Tags": self._tags()}],
            # One token per create: botocore's retries of this call never start a second instance.
            "ClientToken": uuid.uuid4().hex,
        }
        if c.iam_instance_profile:
            params["IamInstanceProfile"] = {"Name": c.iam_instance_profile}
        if c.user_data_file:
            with open(c.user_data_file, encoding="utf-8") as fh:
                params["UserData"] = fh.read()
        if c.request_spot_instance:
            spot: dict[str, Any] = {"MaxPrice": str(c.spot_price or "0.50"), "SpotInstanceType": "one-time"}
            if c.block_duration_minutes:
                spot["BlockDurationMinutes"] = int(c.block_duration_minutes)
            params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot}
        log(f"({self.machine_name}) Launching instance...")
        reservation = ec2.run_instances(**params)
        instance = reservation["Instances"][0]
        c.update(instance_id=instance["InstanceId"], reservation_id=reservation.get("ReservationId", ""))
        self._update_addresses(instance)

    def _update_addresses(self, instance: dict[str, Any]) -> None:
        private = str(instance.get("PrivateIpAddress") or "")
        public = str(instance.get("PublicIpAddress") or "")
        self.settings.private_ip_address = private
        use_private = self.settings.use_private_ip or self.settings.private_ip_only
        self.settings.ip_address = private if use_private else public

    def _describe(self, ec2: Any) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            found = ec2.describe_instances(InstanceIds=[self.settings.instance_id])
        except ClientError as exc:
            if error_code(exc) == "InvalidInstanceID.NotFound":
                return None
            raise
        for reservation in found["Reservations"]:
            for instance in reservation["Instances"]:
                return instance
        return None

    def _wait_for(self, ec2: Any, wanted: str, log: Log) -> dict[str, Any] | None:
        """Poll the instance until it is ``wanted`` (bounded by $PYMACHINE_AWS_WAIT, default 600 s)."""
        timeout = aws_wait()
        deadline = time.monotonic() + timeout
        delay = 0.5
        seen = "unknown"
        while True:
            instance = self._describe(ec2)
            seen = instance["State"]["Name"] if instance else "gone"
            if seen == wanted or (wanted == "terminated" and instance is None):
                if instance is not None and wanted == "running":
                    self._update_addresses(instance)
                    if not self.settings.ip_address:
                        raise MachineError(
                            f"instance {self.settings.instance_id} has no public IP address: "
                            "use --amazonec2-use-private-address or a subnet that assigns public addresses")
                return instance
            if wanted == "running" and seen in ("terminated", "shutting-down", "gone"):
                reason = ((instance or {}).get("StateReason") or {}).get("Message", "")
                raise MachineError(
                    f"instance {self.settings.instance_id} is {seen}" + (f": {reason}" if reason else "")
                )
            if time.monotonic() + delay > deadline:
                raise MachineError(f"instance {self.settings.instance_id} is still {seen} after {timeout:g}s "
                                   f"(waiting for {wanted}; ${WAIT_ENV} sets the bound)")
            time.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    # State and lifecycle ----------------------------------------------------------------------
    def state(self, timeout: float = 10.0) -> State:
        from botocore.exceptions import BotoCoreError, ClientError

        if not self.settings.instance_id:
            return State.ERROR
        try:
            instance = self._describe(self.client(timeout=max(1.0, timeout)))
        except ClientError as exc:
            raise MachineError(f"cannot get the state of {self.machine_name}: {aws_error(exc)}") from None
        except BotoCoreError as exc:
            raise MachineError(f"cannot get the state of {self.machine_name}: {exc}") from None
        if instance is None:
            return State.ERROR
        return STATES.get(instance["State"]["Name"], State.ERROR)

    @classmethod
    def batch_states(cls, drivers: list[Driver], timeout: float) -> dict[str, State]:
        """One DescribeInstances per (endpoint, region, credentials), filtered by instance id."""
        groups: dict[tuple[str, ...], list[AmazonEC2Driver]] = {}
        for d in drivers:
            if isinstance(d, AmazonEC2Driver) and d.settings.instance_id:
                groups.setdefault(d.credential_key(), []).append(d)
        states: dict[str, State] = {}
        for members in groups.values():
            try:
                states.update(cls._group_states(members, timeout))
            except Exception:  # noqa: BLE001, S112 -- this account/region falls back to per-machine state()
                continue
        return states

    @classmethod
    def _group_states(cls, members: list[AmazonEC2Driver], timeout: float) -> dict[str, State]:
        """One account and region: DescribeInstances by instance id, at most 200 ids per call."""
        by_id = {str(d.settings.instance_id): d.machine_name for d in members}
        ec2 = members[0].client(timeout=max(1.0, timeout))
        states: dict[str, State] = {}
        ids = sorted(by_id)
        for start in range(0, len(ids), 200):  # EC2 accepts at most 200 values per filter
            token = None
            while True:
                kwargs: dict[str, Any] = {"Filters": [{"Name": "instance-id", "Values": ids[start:start + 200]}]}
                if token:
                    kwargs["NextToken"] = token
                page = ec2.describe_instances(**kwargs)
                for reservation in page["Reservations"]:
                    for instance in reservation["Instances"]:
                        name = by_id.get(instance["InstanceId"])
                        if name:
                            states[name] = STATES.get(instance["State"]["Name"], State.ERROR)
                token = page.get("NextToken")
                if not token:
                    break
        return states

    def _lifecycle(self, action: str, log: Log, wait_for: str | None, **kwargs: Any) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        if not self.settings.instance_id:
            raise MachineError(f"{self.machine_name} has no instance id")
        ec2 = self.client()
        try:
            getattr(ec2, action)(InstanceIds=[self.settings.instance_id], **kwargs)
            if wait_for:
                self._wait_for(ec2, wait_for, log)
        except ClientError as exc:
            raise MachineError(f"{action.replace('_', ' ')} failed for {self.machine_name}: {aws_error(exc)}") from None
        except BotoCoreError as exc:
            raise MachineError(f"{action.replace('_', ' ')} failed for {self.machine_name}: {exc}") from None

    def start(self, log: Log) -> None:
        # A stopped instance comes back with a new public address: _wait_for records it.
        self._lifecycle("start_instances", log, "running")

    def stop(self, log: Log) -> None:
        self._lifecycle("stop_instances", log, "stopped")

    def kill(self, log: Log) -> None:
        self._lifecycle("stop_instances", log, "stopped", Force=True)

    def restart(self, log: Log) -> None:
        self._lifecycle("reboot_instances", log, None)

    def remove(self, log: Log) -> None:
        """Terminate the instance; delete the key pair and groups only if pymachine made them."""
        from botocore.exceptions import BotoCoreError, ClientError

        created = self._created()
        if not (self.settings.instance_id or created["KeyPair"] or created["SecurityGroupIds"]):
            return
        try:
            ec2 = self.client()
            if self.settings.instance_id:
                log(f"({self.machine_name}) Terminating instance {self.settings.instance_id}...")
                try:
                    ec2.terminate_instances(InstanceIds=[self.settings.instance_id])
                except ClientError as exc:
                    if error_code(exc) != "InvalidInstanceID.NotFound":
                        raise
                self._wait_for(ec2, "terminated", log)
            if created["KeyPair"] and self.settings.key_name:
                ec2.delete_key_pair(KeyName=self.settings.key_name)
                created["KeyPair"] = False
            for gid in list(created["SecurityGroupIds"]):
                if self._delete_group(ec2, gid, log):
                    created["SecurityGroupIds"].remove(gid)
        except ClientError as exc:
            raise MachineError(f"Error removing {self.machine_name}: {aws_error(exc)}") from None
        except BotoCoreError as exc:
            raise MachineError(f"Error removing {self.machine_name}: {exc}") from None

    def _delete_group(self, ec2: Any, gid: str, log: Log) -> bool:
        """Delete a group this machine made unless another live instance still uses it."""
        from botocore.exceptions import ClientError

        # Network interfaces carry a VPC instance's groups: any but this instance's own means in use.
        found = ec2.describe_network_interfaces(Filters=[{"Name": "group-id", "Values": [gid]}])
        mine = self.settings.instance_id
        others = [(eni.get("Attachment") or {}).get("InstanceId") or eni["NetworkInterfaceId"]
                  for eni in found["NetworkInterfaces"] if (eni.get("Attachment") or {}).get("InstanceId") != mine]
        if others:
            log(f"({self.machine_name}) Keeping security group {gid}: still used by {', '.join(others)}")
            return False
        deadline = time.monotonic() + 60.0
        while True:
            try:
                ec2.delete_security_group(GroupId=gid)
                return True
            except ClientError as exc:
                code = error_code(exc)
                if code == "InvalidGroup.NotFound":
                    return True
                # A terminated instance's network interface lingers for a little while.
                if code != "DependencyViolation" or time.monotonic() > deadline:
                    raise
            time.sleep(3.0)


_SESSION: Any = None
_SESSION_LOCK = threading.Lock()


def _boto_session() -> Any:
    global _SESSION
    if _SESSION is None:
        import boto3

        _SESSION = boto3.session.Session()
    return _SESSION


def _parse_port(spec: str) -> tuple[int, str]:
    port, _, proto = str(spec).partition("/")
    proto = proto or "tcp"
    try:
        number = int(port)
    except ValueError:
        number = 0
    if not 0 < number < 65536 or proto not in ("tcp", "udp"):
        raise MachineError(f"--amazonec2-open-port must be PORT or PORT/tcp|udp, got {spec!r}")
    return number, proto


def error_code(exc: Any) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def aws_error(exc: Any) -> str:
    err = getattr(exc, "response", {}).get("Error", {})
    code, message = err.get("Code", ""), err.get("Message", "") or str(exc)
    return f"{code}: {message}" if code else message


def aws_wait(environ: Mapping[str, str] | None = None) -> float:
    raw = (os.environ if environ is None else environ).get(WAIT_ENV, "").strip()
    if not raw:
        return WAIT_DEFAULT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        raise MachineError(f"{WAIT_ENV} must be a number of seconds between 1 and 86400, got {raw!r}")
    return value
