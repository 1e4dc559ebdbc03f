"""``create -d amazonec2`` end to end: moto's EC2 API, a namespaced Debian host as the instance.

moto's instances run nothing and carry made-up public IPs, which are never
dialled.  The instance is pinned (``--amazonec2-private-ip-address``) to a
second address of a test host, inside a moto VPC/subnet whose CIDR covers it,
and ``--amazonec2-use-private-address`` makes pymachine use that address.
A watcher plays EC2 + cloud-init: once moto has the instance it reads the
instance's key pair from moto's API, authorises that public key for the
``ubuntu`` user and only then starts sshd on the instance address (until
then SSH is refused, as on a booting instance).
"""
# ruff: noqa: F811  (pytest fixtures imported from moto_server are used as arguments)

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time

import pytest
from moto_server import MotoServer, moto, moto_server  # noqa: F401

from tests.hosts import netns

pytestmark = pytest.mark.hosts
DOCKER = shutil.which("docker") or "/usr/bin/docker"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret"}
UBUNTU_USER = (
    "id ubuntu >/dev/null 2>&1 || useradd -m -s /bin/bash ubuntu; "
    "echo 'ubuntu ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cloud-init-users; "
    "chmod 0440 /etc/sudoers.d/90-cloud-init-users; install -d -m 0700 -o ubuntu -g ubuntu /home/ubuntu/.ssh"
)


def aws_env(pm) -> dict[str, str]:
    for key in [k for k in pm.env if k.startswith("AWS_")]:
        del pm.env[key]
    pm.env.update(AWS_EC2_METADATA_DISABLED="true", AWS_SHARED_CREDENTIALS_FILE=str(pm.root / "none"),
                  AWS_CONFIG_FILE=str(pm.root / "none"), **CREDS)  # fmt: skip
    return pm.env


def add_instance_address(host, ip: str) -> None:
    """A second guest address, routed only through this test's veth (as test_generic_failures does)."""
    netns.sh("ip", "-n", host.netns, "addr", "add", f"{ip}/32", "dev", "eth0")
    netns.sh("ip", "route", "add", f"{ip}/32", "dev", host.netns)


class CloudInit(threading.Thread):
    """Waits (bounded) for moto's instance named ``name``, injects its key pair, starts sshd on ``ip``."""

    def __init__(self, moto: MotoServer, host, name: str, ip: str, timeout: float = 180.0) -> None:
        super().__init__(daemon=True)
        self.moto, self.host, self.name, self.ip, self.timeout = moto, host, name, ip, timeout
        self.injected_key = ""
        self.error = ""

    def run(self) -> None:
        ec2 = self.moto.client()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            found = ec2.describe_instances(Filters=[{"Name": "tag:pymachine-machine", "Values": [self.name]}])
            instances = [i for r in found["Reservations"] for i in r["Instances"]]
            if instances and instances[0].get("KeyName"):
                key = ec2.describe_key_pairs(KeyNames=[instances[0]["KeyName"]], IncludePublicKey=True)
                self.injected_key = key["KeyPairs"][0]["PublicKey"].strip()
                self.host.put("/home/ubuntu/.ssh/authorized_keys", (self.injected_key + "\n").encode(), 0o600)
                res = self.host.run(f"chown ubuntu:ubuntu /home/ubuntu/.ssh/authorized_keys && /usr/sbin/sshd "
                                    f"-o ListenAddress={self.ip}:22 -o PidFile=/run/sshd-instance.pid")
                self.error = res.stderr if res.returncode else ""
                return
            time.sleep(0.2)
        self.error = f"no instance tagged {self.name} within {self.timeout:g}s"


def docker(pm, name: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(pm.env)
    for line in pm.ok("env", name).stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.strip('"')
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=120, env=env, check=False)


def state_of(pm, name: str) -> str:
    rows = pm.ok("ls", "--timeout", "15", "--format", "{{.Name}} {{.State}}").stdout.split()
    return dict(zip(rows[::2], rows[1::2], strict=True))[name]


def test_amazonec2_create_env_stop_start_rm_end_to_end(pm, moto, make_test_host):
    from bundle_cache import real_engine_bundle

    bundle = real_engine_bundle()
    host = make_test_host("ec2e")
    ip = f"10.232.{host.index}.2"
    add_instance_address(host, ip)
    prep = host.run(UBUNTU_USER)
    assert prep.returncode == 0, prep.stderr

    ec2 = moto.client()
    vpc = ec2.create_vpc(CidrBlock=f"10.232.{host.index}.0/24")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.232.{host.index}.0/24",
                               AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]  # fmt: skip
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    cloud_init = CloudInit(moto, host, "ec2e", ip)
    cloud_init.start()
    aws_env(pm)
    res = pm("create", "-d", "amazonec2", "--amazonec2-endpoint", moto.url, "--amazonec2-ami", ami,
             "--amazonec2-subnet-id", subnet, "--amazonec2-use-private-address",
             "--amazonec2-private-ip-address", ip, "--amazonec2-tags", "owner,pmt",
             "--engine-bundle", str(bundle), "ec2e", timeout=600)  # fmt: skip
    cloud_init.join(5)
    assert cloud_init.error == "", cloud_init.error
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Docker is up and running!" in res.stdout

    mdir = pm.store / "machines" / "ec2e"
    driver = json.loads((mdir / "config.json").read_text())["Driver"]
    assert driver["IPAddress"] == driver["PrivateIPAddress"] == ip and driver["SSHUser"] == "ubuntu"
    assert cloud_init.injected_key == (mdir / "id_rsa.pub").read_text().strip()
    instance = ec2.describe_instances(InstanceIds=[driver["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert {t["Key"]: t["Value"] for t in instance["Tags"]} == {"Name": "ec2e", "pymachine-machine": "ec2e",
                                                                 "owner": "pmt"}  # fmt: skip
    assert instance["SubnetId"] == subnet and instance["PrivateIpAddress"] == ip

    # env answers from config.json: boto3/botocore are not even imported.
    code = ("import sys; from machine.cli.main import main; rc = main(sys.argv[1:]); "
            "print('SDK=' + str(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore'))),"
            " file=sys.stderr); sys.exit(rc)")
    env_run = subprocess.run([sys.executable, "-c", code, "env", "ec2e"], capture_output=True, text=True,
                             timeout=60, env=pm.env, check=False)  # fmt: skip
    assert env_run.returncode == 0 and "SDK=[]" in env_run.stderr, env_run.stderr
    assert f'export DOCKER_HOST="tcp://{ip}:2376"' in env_run.stdout
    version = docker(pm, "ec2e", "version", "--format", "{{.Server.Version}}")
    assert version.returncode == 0 and version.stdout.strip().startswith("20.10"), version.stderr
    info = docker(pm, "ec2e", "info", "--format", "{{json .Labels}}")
    assert "provider=amazonec2" in json.loads(info.stdout)
    assert state_of(pm, "ec2e") == "Running"

    pm.ok("stop", "ec2e")
    assert state_of(pm, "ec2e") == "Stopped"
    assert ec2.describe_instances(InstanceIds=[driver["InstanceId"]])["Reservations"][0]["Instances"][0][
        "State"]["Name"] == "stopped"
    pm.ok("start", "ec2e")
    assert state_of(pm, "ec2e") == "Running"
    assert docker(pm, "ec2e", "ps").returncode == 0

    pm.ok("rm", "-y", "ec2e")
    assert not mdir.exists()
    live = ec2.describe_instances(Filters=[
        {"Name": "tag:pymachine-machine", "Values": ["ec2e"]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])
    assert live["Reservations"] == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["docker-machine"]}])[
        "SecurityGroups"] == []
