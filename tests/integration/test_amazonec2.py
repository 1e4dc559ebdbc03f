"""The ``amazonec2`` driver against moto's EC2 server on loopback (real boto3 over HTTP).

moto's instances run nothing and carry made-up public IPs: every machine here
uses ``--amazonec2-use-private-address`` with a pinned private IP inside a
moto VPC of 127.0.0.0/16, so the only address pymachine can ever dial is a
loopback one (on an SSH port nobody listens on).
"""
# ruff: noqa: F811  (pytest fixtures imported from moto_server are used as arguments)

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import pytest
from moto_server import (  # noqa: F401
    ApiProxy,
    MotoServer,
    api_proxy,
    free_port,
    moto,
    moto_server,
    start_moto_server,
)

pytestmark = pytest.mark.integration
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret"}


def aws_env(pm, **extra: str) -> dict[str, str]:
    """An environment with only the given AWS settings: no profile, no metadata service."""
    for key in [k for k in pm.env if k.startswith("AWS_")]:
        del pm.env[key]
    pm.env.update(AWS_EC2_METADATA_DISABLED="true",
                  AWS_SHARED_CREDENTIALS_FILE=str(pm.root / "no-credentials"),
                  AWS_CONFIG_FILE=str(pm.root / "no-config"))  # fmt: skip
    return {**CREDS, **extra}


def loopback_subnet(moto: MotoServer, third_octet: int = 0) -> tuple[str, str]:
    """A moto VPC + subnet whose addresses are all loopback (nothing outside this machine)."""
    ec2 = moto.client()
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"127.0.{third_octet}.0/24",
                               AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]  # fmt: skip
    return vpc, subnet


def some_ami(moto: MotoServer) -> str:
    """An AMI from moto's catalogue (any existing image id passes the AMI check)."""
    images = moto.client().describe_images(Owners=["amazon"])["Images"]
    linux = [i for i in images if i.get("PlatformDetails", "Linux/UNIX") == "Linux/UNIX" and "Platform" not in i]
    return (linux or images)[0]["ImageId"]


def ec2_args(endpoint: str, ami: str, subnet: str, ip: str, *extra: str) -> list[str]:
    return ["create", "-d", "amazonec2", "--amazonec2-endpoint", endpoint, "--amazonec2-ami", ami,
            "--amazonec2-subnet-id", subnet, "--amazonec2-use-private-address",
            "--amazonec2-private-ip-address", ip, *extra]  # fmt: skip


def leftovers(moto: MotoServer, name: str) -> dict[str, list[str]]:
    ec2 = moto.client()
    live = ec2.describe_instances(Filters=[
        {"Name": "tag:pymachine-machine", "Values": [name]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["docker-machine"]}])
    return {
        "instances": [i["InstanceId"] for r in live["Reservations"] for i in r["Instances"]],
        "key_pairs": [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]],
        "security_groups": [g["GroupId"] for g in groups["SecurityGroups"]],
    }


def one_line(res) -> str:
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_bad_input_fails_pre_create_with_exit_3_and_creates_nothing(pm, moto):
    env = aws_env(pm)
    ami = some_ami(moto)
    _, subnet = loopback_subnet(moto)
    args = ec2_args(moto.url, ami, subnet, "127.0.0.10")

    res = pm(*args, "nocreds")  # no keys, no profile, no metadata service
    assert res.returncode == 3
    line = one_line(res)
    assert "no AWS credentials found" in line and "AWS_ACCESS_KEY_ID" in line and "profile" in line

    res = pm(*args, "--amazonec2-region", "xx-nowhere-1", "badregion", env=env)
    assert res.returncode == 3 and "unknown AWS region 'xx-nowhere-1'" in one_line(res)
    # Without an endpoint the region is checked offline against botocore's list: no request at all.
    res = pm("create", "-d", "amazonec2", "--amazonec2-region", "xx-nowhere-1", "badregion2", env=env)
    assert res.returncode == 3 and "--amazonec2-region" in one_line(res)

    bad_ami = ec2_args(moto.url, "ami-00000000deadbeef0", subnet, "127.0.0.10")
    res = pm(*bad_ami, "badami", env=env)
    assert res.returncode == 3 and "AMI 'ami-00000000deadbeef0' does not exist" in one_line(res)

    # No --amazonec2-ami: the newest Canonical Ubuntu 24.04 image is looked up; moto has none.
    no_ami = [a for a in args if a not in ("--amazonec2-ami", ami)]
    res = pm(*no_ami, "noami", env=env)
    assert res.returncode == 3 and "no Ubuntu 24.04 LTS image found in us-east-1" in one_line(res)
    assert "--amazonec2-ami" in one_line(res)

    res = pm(*args, "--amazonec2-instance-type", "t9.gigantic", "badtype", env=env)
    assert res.returncode == 3 and "instance type 't9.gigantic' does not exist" in one_line(res)

    res = pm(*ec2_args(moto.url, ami, subnet, "10.9.9.9"), "outside", env=env)
    assert res.returncode == 3 and "outside subnet" in one_line(res)

    res = pm(*args, "--amazonec2-subnet-id", "subnet-0000000000000000", "nosubnet", env=env)
    assert res.returncode == 3 and "--amazonec2-subnet-id" in one_line(res)

    res = pm(*args, "--amazonec2-keypair-name", "mine", "keyonly", env=env)
    assert res.returncode == 3 and "requires --amazonec2-ssh-keypath" in one_line(res)

    # Name clash: a key pair named like the machine already exists.
    moto.client().create_key_pair(KeyName="clash")
    res = pm(*args, "clash", env=env)
    assert res.returncode == 3
    assert one_line(res).startswith("There is already a keypair with the name clash.")

    assert not (pm.store / "machines").exists() or list((pm.store / "machines").iterdir()) == []
    left = leftovers(moto, "clash")
    assert left == {"instances": [], "key_pairs": ["clash"], "security_groups": []}
    assert moto.client().describe_instances()["Reservations"] == []


@pytest.fixture
def iam_moto():
    """moto checks signatures against its IAM users once INITIAL_NO_AUTH_ACTION_COUNT calls are used up."""
    with start_moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "3"}) as server:
        iam = server.client("iam")
        iam.create_user(UserName="pmt")
        key = iam.create_access_key(UserName="pmt")["AccessKey"]
        iam.put_user_policy(UserName="pmt", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        yield server, key["AccessKeyId"], key["SecretAccessKey"]


def test_wrong_credentials_exit_3_and_right_ones_pass_the_check(pm, iam_moto):
    server, key_id, secret = iam_moto
    aws_env(pm)
    args = ["create", "-d", "amazonec2", "--amazonec2-endpoint", server.url, "--amazonec2-ami", "ami-00000000deadbeef0"]
    res = pm(*args, "--amazonec2-access-key", key_id, "--amazonec2-secret-key", "wrong-secret", "wrong")
    assert res.returncode == 3
    line = one_line(res)
    assert "AWS rejected the credentials (AuthFailure" in line and "AWS_ACCESS_KEY_ID" in line
    assert "wrong-secret" not in res.stderr + res.stdout
    # The right keys get past the credentials check and stop at the (unknown) AMI.
    res = pm(*args, "--amazonec2-access-key", key_id, "--amazonec2-secret-key", secret, "right")
    assert res.returncode == 3 and "AMI 'ami-00000000deadbeef0' does not exist" in one_line(res)
    assert secret not in res.stderr + res.stdout


def test_throttling_is_retried_with_backoff_and_retries_flag_bounds_it(pm, moto, api_proxy):
    env = aws_env(pm)
    _, subnet = loopback_subnet(moto)
    args = ec2_args(api_proxy.url, some_ami(moto), subnet, "127.0.0.10", "--amazonec2-instance-type", "t9.gigantic")
    api_proxy.throttle["DescribeRegions"] = 3
    res = pm(*args, "throttled", env=env)
    # Past the throttled credentials check (4th attempt) to the next check, which fails.
    assert res.returncode == 3 and "instance type 't9.gigantic'" in one_line(res)
    assert api_proxy.calls["DescribeRegions"] == 4 and api_proxy.throttled["DescribeRegions"] == 3

    api_proxy.throttled.clear()
    api_proxy.calls.clear()
    res = pm(*args, "--amazonec2-retries", "1", "throttled", env=env)
    assert res.returncode == 3 and "RequestLimitExceeded" in one_line(res)
    assert api_proxy.calls["DescribeRegions"] == 2


def test_create_without_ssh_rolls_back_everything(pm, moto):
    env = aws_env(pm, PYMACHINE_SSH_WAIT="3")
    _, subnet = loopback_subnet(moto, 3)
    dead_port = str(free_port())  # a loopback address and port nobody serves
    res = pm(*ec2_args(moto.url, some_ami(moto), subnet, "127.0.3.20", "--amazonec2-ssh-port", dead_port,
                       "--amazonec2-tags", "team,infra"), "nossh", env=env, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Removing nossh: the host never answered over SSH" in res.stdout
    assert f"127.0.3.20:{dead_port}" in one_line(res)
    assert not (pm.store / "machines" / "nossh").exists()
    assert leftovers(moto, "nossh") == {"instances": [], "key_pairs": [], "security_groups": []}
    made = moto.client().describe_instances(Filters=[{"Name": "tag:pymachine-machine", "Values": ["nossh"]}])
    instances = [i for r in made["Reservations"] for i in r["Instances"]]
    assert len(instances) == 1 and instances[0]["State"]["Name"] == "terminated"
    tags = {t["Key"]: t["Value"] for t in instances[0]["Tags"]}
    assert tags == {"Name": "nossh", "pymachine-machine": "nossh", "team": "infra"}
    assert instances[0]["PrivateIpAddress"] == "127.0.3.20"


def flag_values(**overrides: object) -> dict[str, object]:
    from pymachine.machine.drivers.amazonec2 import AmazonEC2Driver

    values: dict[str, object] = {f.name: f.default for f in AmazonEC2Driver.flags}
    values.update({f"amazonec2-{k.replace('_', '-')}": v for k, v in overrides.items()})
    return values


def make_machine(store_path: Path, name: str, values: dict[str, object]):
    """Create the EC2 side of a machine through the driver and store it (no provisioning)."""
    from pymachine.machine.host import CreateOptions, Machine, new_host, prepare_driver
    from pymachine.machine.store import Store

    store = Store(store_path)
    store.ensure()
    driver = prepare_driver(store, name, "amazonec2", values)
    driver.pre_create_check()
    store.reserve(name)
    machine = Machine(store, new_host(store, name, driver, CreateOptions()))
    machine.driver = driver
    driver.create(lambda _msg: None)
    machine.save()
    return machine


def test_driver_lifecycle_secrets_and_shared_resources(pm, moto, tmp_path, monkeypatch):
    from pymachine.machine.drivers.base import State
    from pymachine.machine.host import Machine
    from pymachine.machine.store import Store

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    vpc, subnet = loopback_subnet(moto, 5)
    ec2 = moto.client()
    shared = ec2.create_security_group(GroupName="shared", Description="kept", VpcId=vpc)["GroupId"]
    base = {"endpoint": moto.url, "ami": some_ami(moto), "subnet_id": subnet, "use_private_address": True,
            "access_key": "AKIDPYMACHINE", "secret_key": "very-secret-key", "open_port": ["8080/udp"]}
    make_machine(pm.store, "one", flag_values(**base, private_ip_address="127.0.5.11",
                                                    security_group=["docker-machine", "shared"]))
    cfg = json.loads((pm.store / "machines" / "one" / "config.json").read_text())["Driver"]
    assert cfg["IPAddress"] == cfg["PrivateIPAddress"] == "127.0.5.11"
    assert cfg["SSHUser"] == "ubuntu" and cfg["KeyName"] == "one" and cfg["VpcId"] == vpc
    assert cfg["AccessKey"] == cfg["SecretKey"] == "" and "very-secret-key" not in json.dumps(cfg)
    secrets = pm.store / "machines" / "one" / "secrets.json"
    assert json.loads(secrets.read_text())["SecretKey"] == "very-secret-key"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(cfg["SSHKeyPath"]).stat().st_mode) == 0o600
    created_group = cfg["PymachineCreated"]["SecurityGroupIds"]
    assert cfg["SecurityGroupIds"] == [*created_group, shared] and len(created_group) == 1
    perms = ec2.describe_security_groups(GroupIds=created_group)["SecurityGroups"][0]["IpPermissions"]
    opened = {(p["FromPort"], p["IpProtocol"]) for p in perms}
    assert opened == {(22, "tcp"), (2376, "tcp"), (2377, "tcp"), (7946, "tcp"), (7946, "udp"),
                      (4789, "udp"), (8080, "udp")}  # fmt: skip
    instance = ec2.describe_instances(InstanceIds=[cfg["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert instance["KeyName"] == "one" and instance["InstanceType"] == "t2.micro"
    assert instance["Placement"]["AvailabilityZone"] == "us-east-1a"

    # A second machine reuses the docker-machine group: removing the first keeps it.
    two = make_machine(pm.store, "two", flag_values(**base, private_ip_address="127.0.5.12"))
    assert two.driver.config["PymachineCreated"]["SecurityGroupIds"] == []
    assert two.driver.config["SecurityGroupIds"] == created_group

    # Lifecycle through a freshly loaded driver: credentials come from secrets.json.
    store = Store(pm.store)
    m = Machine.load(store, "one")
    log: list[str] = []
    assert m.state() == State.RUNNING
    m.stop(log.append)
    assert m.state() == State.STOPPED
    m.start(log.append)
    assert m.state() == State.RUNNING
    m.kill(log.append)
    assert m.state() == State.STOPPED
    m.restart(log.append)
    assert m.state() == State.RUNNING
    assert m.driver.url() == "tcp://127.0.5.11:2376"
    m.remove(log.append)
    gone = ec2.describe_instances(InstanceIds=[cfg["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert gone["State"]["Name"] == "terminated"
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["two"]
    assert {g["GroupName"] for g in ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])[
        "SecurityGroups"]} >= {"docker-machine", "shared"}

    # An existing key pair (--amazonec2-keypair-name + -ssh-keypath) is used, never deleted.
    from pymachine.machine import certs
    from pymachine.machine.errors import PreCreateError

    own_key = tmp_path / "byo_rsa"
    certs.generate_ssh_keypair(own_key)
    byo = {**base, "private_ip_address": "127.0.5.13", "ssh_keypath": str(own_key)}
    with pytest.raises(PreCreateError, match="key pair 'byo' does not exist"):
        make_machine(pm.store, "three", flag_values(**byo, keypair_name="byo"))
    assert not (pm.store / "machines" / "three").exists()
    ec2.import_key_pair(KeyName="byo", PublicKeyMaterial=(tmp_path / "byo_rsa.pub").read_bytes())
    three = make_machine(pm.store, "three", flag_values(**byo, keypair_name="byo"))
    assert three.driver.config["KeyName"] == "byo" and three.driver.config["ExistingKey"] is True
    assert Path(three.driver.config["SSHKeyPath"]).read_bytes() == own_key.read_bytes()
    Machine.load(store, "three").remove(log.append)
    assert {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]} == {"two", "byo"}
    ec2.delete_key_pair(KeyName="byo")

    Machine.load(store, "two").remove(log.append)
    names = {g["GroupName"] for g in ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])[
        "SecurityGroups"]}
    assert "docker-machine" in names, "made by 'one', not by 'two': 'two' must not delete it"
    assert "shared" in names and ec2.describe_key_pairs()["KeyPairs"] == []
    assert not (pm.store / "machines" / "one").exists()


def test_ls_of_ten_machines_makes_one_describe_instances_call(pm, moto, api_proxy, monkeypatch):
    env = aws_env(pm)
    for key, value in CREDS.items():
        monkeypatch.setenv(key, value)
    _, subnet = loopback_subnet(moto, 7)
    ami = some_ami(moto)
    for i in range(10):
        make_machine(pm.store, f"m{i}", flag_values(endpoint=api_proxy.url, ami=ami, subnet_id=subnet,
                                                    use_private_address=True, private_ip_address=f"127.0.7.{20 + i}"))
    ec2 = moto.client()
    stopped = [json.loads((pm.store / "machines" / f"m{i}" / "config.json").read_text())["Driver"]["InstanceId"]
               for i in range(5)]
    ec2.stop_instances(InstanceIds=stopped)
    api_proxy.calls.clear()
    out = pm.ok("ls", "--timeout", "20", "--format", "{{.Name}} {{.State}}", env=env).stdout
    rows = dict(line.split() for line in out.splitlines())
    assert rows == {f"m{i}": ("Stopped" if i < 5 else "Running") for i in range(10)}
    assert api_proxy.calls["DescribeInstances"] == 1, dict(api_proxy.calls)

    # An account/region whose API is down costs only its own machines: the healthy group
    # still answers with its one call, and the broken machine shows Error.
    broken = pm.store / "machines" / "broken"
    broken.mkdir(mode=0o700)
    cfg = json.loads((pm.store / "machines" / "m9" / "config.json").read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    cfg["Name"] = cfg["Driver"]["MachineName"] = "broken"
    cfg["Driver"]["Endpoint"] = f"http://127.0.0.1:{closed_port}"
    (broken / "config.json").write_text(json.dumps(cfg, indent=4))
    api_proxy.calls.clear()
    out = pm.ok("ls", "--timeout", "20", "--format", "{{.Name}} {{.State}}", env=env).stdout
    rows = dict(line.split() for line in out.splitlines())
    assert rows["broken"] == "Error" and rows["m9"] == "Running"
    assert api_proxy.calls["DescribeInstances"] == 1, dict(api_proxy.calls)
