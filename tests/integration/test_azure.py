"""The ``azure`` driver against a local HTTPS fake of Azure Resource Manager and AAD.

The real azure-identity and azure-mgmt SDKs talk to ``tests/fakes/azure_arm.py``
(TLS with a private CA passed through ``--azure-ca-file``/``$AZURE_CA_FILE``;
REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE are cleared by the ``pm`` fixture).  The fake
hands out 127.0.0.9 as the public IP: loopback, where nothing listens on port
22, so a full ``create`` reaches the SSH wait and is rolled back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.azure_arm import CLIENT_ID, CLIENT_SECRET, SUBSCRIPTION, TENANT, FakeARM

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
UNREACHABLE_IP = "127.0.0.9"


@pytest.fixture
def fake(tmp_path: Path):
    with FakeARM(tmp_path / "fake-arm", public_ip=UNREACHABLE_IP) as arm:
        yield arm


def azure_env(fake: FakeARM, **extra: str) -> dict[str, str]:
    env = {
        "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION, "AZURE_CLIENT_ID": CLIENT_ID, "AZURE_CLIENT_SECRET": CLIENT_SECRET,
        "AZURE_ARM_ENDPOINT": fake.url, "AZURE_AUTHORITY_HOST": fake.url, "AZURE_CA_FILE": str(fake.ca_cert),
        "PYMACHINE_AZURE_POLL_INTERVAL": "0.01", "PYMACHINE_SSH_WAIT": "1",
    }
    env.update(extra)
    return env


def writes(fake: FakeARM) -> list[str]:
    """ARM calls that change something (the token POST is not one)."""
    return [f"{r.method} {r.path}" for r in fake.requests
            if r.method in ("PUT", "DELETE", "PATCH") or (r.method == "POST" and "/subscriptions/" in r.path)]


@pytest.fixture
def inproc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment for drivers run inside the test process (no CA bundle overrides, fast polling)."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.delenv("AZURE_CLIENT_SECRET", raising=False)
    monkeypatch.setenv("PYMACHINE_AZURE_POLL_INTERVAL", "0.01")


def new_driver(fake: FakeARM, store: Path, name: str, **flags: Any):
    """An AzureDriver configured as ``create`` would, for in-process lifecycle tests."""
    from pymachine.machine.drivers.azure import AzureDriver

    assert os.environ.get("PYMACHINE_AZURE_POLL_INTERVAL") == "0.01", "use the inproc fixture"
    values = {f.name: f.default for f in AzureDriver.flags}
    values.update({"azure-subscription-id": SUBSCRIPTION, "azure-client-id": CLIENT_ID,
                   "azure-client-secret": CLIENT_SECRET, "azure-arm-endpoint": fake.url,
                   "azure-authority-host": fake.url, "azure-ca-file": str(fake.ca_cert)})
    values.update({k.replace("_", "-"): v for k, v in flags.items()})
    driver = AzureDriver.new(name, str(store))
    driver.set_config_from_flags(values)
    (store / "machines" / name).mkdir(parents=True, mode=0o700)
    return driver


def save_machine(store: Path, driver) -> None:
    """Write config.json the way ``create`` does, so the CLI can act on an in-process machine."""
    from pymachine.machine import host as hostmod
    from pymachine.machine.store import Store

    st = Store(store)
    st.ensure()
    st.save(hostmod.new_host(st, driver.machine_name, driver, hostmod.CreateOptions()))


# --------------------------------------------------------------------------- create + rollback
def test_create_makes_tagged_resources_then_rolls_back_unreachable_host(pm, fake):
    seen: dict[str, Any] = {}

    def on_vm_create(vm, admin_user, keys, custom_data):
        seen.update(vm=json.loads(json.dumps(vm)), user=admin_user, keys=keys,
                    tags={r["id"]: dict(r.get("tags") or {}) for r in fake.resources.values()},
                    resources=json.loads(json.dumps(list(fake.resources.values()))),
                    groups={g["id"]: dict(g["tags"]) for g in fake.groups.values()})

    fake.on_vm_create = on_vm_create
    res = pm("create", "-d", "azure", "--azure-docker-port", "2377", "--azure-open-port", "8080",
             "--azure-open-port", "53/udp", "m1", env=azure_env(fake), timeout=180)
    assert res.returncode == 1, res.stdout + res.stderr
    for line in ('(m1) Creating resource group "docker-machine" in westus...',
                 '(m1) Configuring network security group "m1-firewall" in westus...',
                 '(m1) Creating public IP address "m1-ip" (static=false)...',
                 '(m1) Creating virtual machine "m1" (Standard_D2s_v3) in westus...',
                 "Removing m1: the host never answered over SSH",
                 '(m1) Removing resource group "docker-machine"...'):
        assert line in res.stdout
    assert res.stderr.strip() == f"Unable to connect to {UNREACHABLE_IP}:22: connection refused"
    # While it existed, everything pymachine made carried the machine tag (subnets cannot carry
    # tags in ARM, and the OS disk is made by Azure from the VM, without the VM's tags).
    assert seen["user"] == "docker-user"
    assert len(seen["keys"]) == 1 and seen["keys"][0].startswith("ssh-rsa ")
    assert all(t == {"pymachine-machine": "m1"} for t in seen["groups"].values())
    untagged = [rid.split("/")[-2] for rid, tags in seen["tags"].items() if tags.get("pymachine-machine") != "m1"]
    assert sorted(untagged) == ["disks", "subnets"], untagged
    types = {rid.split("/")[-2] for rid in seen["tags"]}
    assert {"virtualMachines", "networkInterfaces", "publicIPAddresses", "networkSecurityGroups",
            "virtualNetworks", "subnets", "availabilitySets"} <= types
    nsg = next(r for r in seen["resources"] if r["type"].endswith("networkSecurityGroups"))
    rules = {(r["name"], r["properties"]["destinationPortRange"], r["properties"]["protocol"])
             for r in nsg["properties"]["securityRules"]}
    assert rules == {("SSHAllowAny", "22", "Tcp"), ("DockerAllowAny", "2377", "Tcp"),
                     ("DockerSwarmAllowAny", "3376", "Tcp"), ("Port8080TcpAllowAny", "8080", "Tcp"),
                     ("Port53UdpAllowAny", "53", "Udp")}
    image = seen["vm"]["properties"]["storageProfile"]["imageReference"]
    assert (image["publisher"], image["offer"], image["sku"], image["version"]) == \
        ("canonical", "ubuntu-24_04-lts", "server", "latest")
    # Rolled back: nothing left in the fake, not even the untagged OS disk; no machine in the store.
    assert fake.all_ids() == []
    assert not (pm.store / "machines" / "m1").exists()
    assert CLIENT_SECRET not in res.stdout + res.stderr


# --------------------------------------------------------------------------- pre-create checks
@pytest.mark.parametrize(("args", "env", "expect"), [
    (["--azure-location", "moon-1"], {}, "location 'moon-1' does not exist; pick one of: eastus, westeurope, westus"),
    ([], {"AZURE_CLIENT_SECRET": "wrong"}, "AADSTS7000215: Invalid client secret provided."),
])
def test_precreate_checks_exit_3_and_create_nothing(pm, fake, args, env, expect):
    res = pm("create", "-d", "azure", *args, "bad", env=azure_env(fake, **env), timeout=120)
    assert res.returncode == 3, res.stdout + res.stderr
    assert expect in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert writes(fake) == [] and fake.all_ids() == []
    assert not (pm.store / "machines" / "bad").exists()


PRECREATE_CASES = [
    ({"azure_size": "Standard_Z99"}, "VM size 'Standard_Z99' does not exist in westus; try one of: Standard_A2"),
    ({"azure_size": "Standard_M128s"}, "not available to this subscription in westus (NotAvailableForSubscription)"),
    ({"azure_image": "canonical:nope:server:latest"}, "image 'canonical:nope:server:latest' was not found"),
    ({"azure_image": "canonical:ubuntu-24_04-lts:server:1.0.0"}, "was not found in westus"),
    ({"azure_image": "ubuntu"}, "must be publisher:offer:sku:version"),
    ({"azure_client_id": "00000000-0000-0000-0000-000000000bad"}, "AADSTS700016: Application with identifier"),
    ({"azure_tenant_id": "not-a-tenant"}, "tenant 'not-a-tenant' is unknown to https://127.0.0.1:"),
    (
        {"azure_subscription_id": "00000000-0000-0000-0000-00000000dead"},
        "subscription 00000000-0000-0000-0000-00000000dead was not found; check --azure-subscription-id",
    ),
    (
        {"azure_custom_data": "/nonexistent/cloud-init.yml"},
        "custom data file '/nonexistent/cloud-init.yml' does not exist",
    ),
]


def test_precreate_checks_in_process(pm, fake, inproc):
    """The same checks through the driver API (one SDK import for all cases): PreCreateError, no writes."""
    from pymachine.machine.errors import PreCreateError

    for n, (flags, expect) in enumerate(PRECREATE_CASES):
        driver = new_driver(fake, pm.store, f"pc{n}", **flags)
        with pytest.raises(PreCreateError) as info:
            driver.pre_create_check()
        assert expect in str(info.value), (flags, str(info.value))
        assert info.value.exit_code == 3 and "\n" not in str(info.value)
    assert writes(fake) == [] and fake.all_ids() == []
    # And a valid configuration passes the same checks.
    new_driver(fake, pm.store, "good", azure_size="Standard_B1s").pre_create_check()
    assert writes(fake) == []


@pytest.mark.parametrize(
    ("args", "env", "expect"),
    [
        ([], {"AZURE_SUBSCRIPTION_ID": ""}, "requires the --azure-subscription-id option"),
        (["--azure-environment", "MarsCloud"], {}, "--azure-environment 'MarsCloud' is not one of"),
        (
            ["--azure-subnet-prefix", "10.0.0.0/8", "--azure-private-ip-address", "192.168.1.9"],
            {},
            "is not an address in 10.0.0.0/8",
        ),
        (["--azure-open-port", "http"], {}, "--azure-open-port 'http' must be PORT"),
        (["--azure-no-public-ip"], {}, "--azure-no-public-ip requires --azure-use-private-ip"),
    ],
)
def test_bad_flags_exit_1_before_any_call(pm, fake, args, env, expect):
    res = pm("create", "-d", "azure", *args, "bad", env=azure_env(fake, **env), timeout=60)
    assert res.returncode == 1
    assert expect in res.stderr
    assert fake.requests == []


def test_default_credential_chain_without_client_id(pm, fake):
    """No client id/secret: azure-identity's DefaultAzureCredential (here its managed identity)."""
    env = azure_env(fake, AZURE_CLIENT_ID="", AZURE_CLIENT_SECRET="",
                    IDENTITY_ENDPOINT=f"{fake.url}/msi/token", IDENTITY_HEADER="fake-header")
    res = pm("create", "-d", "azure", "noid", env=env, timeout=120)
    assert res.returncode == 3
    assert "Azure authentication failed while checking the subscription" in res.stderr
    assert "az login" in res.stderr
    assert fake.calls("GET", r"^/msi/token$"), "the managed identity endpoint must have been asked"
    # With an identity assigned, the same chain authenticates: the pre-create check gets as far
    # as the name clash with an existing VM of the same name.
    fake.managed_identity = True
    fake.add_group("docker-machine")
    fake.resources[
        f"/subscriptions/{SUBSCRIPTION}/resourcegroups/docker-machine/providers/microsoft.compute/virtualmachines/noid"
    ] = {
        "id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/docker-machine"
        "/providers/Microsoft.Compute/virtualMachines/noid",
        "name": "noid",
        "type": "Microsoft.Compute/virtualMachines",
        "location": "westus",
        "tags": {},
        "properties": {"provisioningState": "Succeeded", "hardwareProfile": {"vmSize": "Standard_B1s"}},
    }
    res = pm("create", "-d", "azure", "noid", env=env, timeout=120)
    assert res.returncode == 3, res.stderr
    assert "a virtual machine named 'noid' already exists in resource group 'docker-machine'" in res.stderr
    assert writes(fake) == []


# --------------------------------------------------------------------------- failures during create
def test_quota_exceeded_rolls_back_what_was_made(pm, fake):
    fake.core_quota = 1
    res = pm("create", "-d", "azure", "quota", env=azure_env(fake), timeout=120)
    assert res.returncode == 1
    assert res.stderr.strip().startswith("Azure error while creating the virtual machine: QuotaExceeded: "
                                         "Operation could not be completed as it results in exceeding approved "
                                         "Total Regional Cores quota.")
    assert fake.calls("PUT", r"/networkInterfaces/quota-nic$"), "the NIC existed before the VM failed"
    assert fake.all_ids() == []
    assert not (pm.store / "machines" / "quota").exists()


def test_vm_provisioning_failure_after_the_vm_exists_rolls_back(pm, fake):
    fake.fail_provisioning("virtualMachines", "OSProvisioningTimedOut",
                           "OS Provisioning for VM 'late' did not finish in the allotted time.")
    res = pm("create", "-d", "azure", "late", env=azure_env(fake), timeout=120)
    assert res.returncode == 1
    assert "OSProvisioningTimedOut" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    deleted = [w for w in writes(fake) if w.startswith("DELETE")]
    assert any(w.endswith("/virtualMachines/late") for w in deleted)
    assert any(w.endswith("/disks/late-os-disk") for w in deleted), "the untagged OS disk must go too"
    assert fake.tagged("late") == [] and fake.all_ids() == []


def test_existing_resource_group_is_kept_and_invalid_username_reported(pm, fake):
    fake.add_group("shared-rg", tags={"owner": "someone-else"})
    res = pm("create", "-d", "azure", "--azure-resource-group", "shared-rg", "--azure-ssh-user", "admin",
             "baduser", env=azure_env(fake), timeout=120)
    assert res.returncode == 1
    assert "InvalidParameter: The Admin Username specified is not allowed: 'admin'." in res.stderr
    assert fake.all_ids() == [f"/subscriptions/{SUBSCRIPTION}/resourceGroups/shared-rg"]


# --------------------------------------------------------------------------- day two, in process + CLI
def test_lifecycle_secrets_throttling_and_ls_one_list_call(pm, fake, tmp_path, inproc):
    store = pm.store
    fake.throttle("PUT", r"/networkSecurityGroups/a1-firewall$", retry_after=1)
    a1 = new_driver(fake, store, "a1")
    a1.pre_create_check()
    a1.create(lambda line: None)
    assert len(fake.calls("PUT", r"/networkSecurityGroups/a1-firewall$")) == 2, "the 429 was retried"
    assert a1.config["TenantID"] == TENANT, "discovered from the subscription's 401 challenge"
    custom = tmp_path / "cloud-init.txt"
    custom.write_text("#cloud-config\nruncmd: [touch /a2]\n")
    captured: dict[str, Any] = {}
    fake.on_vm_create = lambda vm, user, keys, data: captured.update(user=user, data=data)
    a2 = new_driver(fake, store, "a2", azure_static_public_ip=True, azure_dns="pm-a2",
                    azure_custom_data=str(custom), azure_ssh_user="ops")
    a2.create(lambda line: None)
    assert captured == {"user": "ops", "data": custom.read_bytes()}
    pip = next(r for r in fake.resources.values() if r["name"] == "a2-ip")
    assert pip["properties"]["publicIPAllocationMethod"] == "Static"
    assert pip["properties"]["dnsSettings"]["fqdn"] == "pm-a2.westus.cloudapp.azure.com"
    assert a1.ip() == a2.ip() == UNREACHABLE_IP and a1.url() == f"tcp://{UNREACHABLE_IP}:2376"
    assert a2.config["VNetCreated"] is False and a1.config["VNetCreated"] is True  # a2 reused a1's network
    for d in (a1, a2):
        save_machine(store, d)
        cfg = (store / "machines" / d.machine_name / "config.json").read_text()
        assert CLIENT_SECRET not in cfg
        secrets_file = store / "machines" / d.machine_name / "secrets.json"
        assert json.loads(secrets_file.read_text()) == {"azure-client-secret": CLIENT_SECRET}
        assert secrets_file.stat().st_mode & 0o777 == 0o600

    # From here on the CLI works from the stored config and secrets.json alone.
    env = azure_env(fake, AZURE_CLIENT_SECRET="", AZURE_CLIENT_ID="")
    fake.requests.clear()
    res = pm.ok("stop", "a2", env=env)
    assert "NOTICE: Stopping an Azure Virtual Machine is just going to power it off, not deallocate." in res.stdout
    assert fake.vm("a2")["power"] == "stopped" and fake.vm("a2")["actions"] == ["poweroff"]
    fake.requests.clear()
    fake.throttle("GET", r"/resourceGroups/docker-machine/providers/Microsoft.Compute/virtualMachines$")
    rows = [r.rstrip() for r in pm.ok("ls", "-t", "30", "--format", "{{.Name}} {{.DriverName}} {{.State}} {{.URL}}",
                                      env=env).stdout.splitlines()]
    assert rows == ["a1 azure Running tcp://127.0.0.9:2376", "a2 azure Stopped"]
    lists = fake.calls("GET", r"/resourceGroups/docker-machine/providers/Microsoft.Compute/virtualMachines$")
    assert len(lists) == 2 and all(r.query.get("$expand") == ["instanceView"] for r in lists)  # 429, then one list
    assert fake.calls("GET", r"/instanceView$") == []
    # kill/start/restart through the host layer, from the stored config and secrets.json only.
    from pymachine.machine.host import Machine
    from pymachine.machine.store import Store

    a1_loaded = Machine.load(Store(store), "a1")
    lines: list[str] = []
    a1_loaded.kill(lines.append)
    assert fake.vm("a1")["actions"] == ["poweroff skipShutdown"]
    a1_loaded.start(lines.append)
    a1_loaded.restart(lines.append)
    assert fake.vm("a1")["actions"][-2:] == ["start", "restart"] and fake.vm("a1")["power"] == "running"
    assert str(a1_loaded.state()) == "Running"
    assert lines[0] == 'Killing "a1"...' and 'Machine "a1" was started.' in lines

    # a1 made the shared network, but a2 still uses it: removing a1 keeps it.
    res = pm.ok("rm", "-y", "a1", env=env)
    assert 'Keeping subnet "docker-machine": other resources use it' in res.stdout
    prefix = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/docker-machine"
    assert set(fake.tagged("a1")) == {
        prefix,
        f"{prefix}/providers/Microsoft.Network/virtualNetworks/docker-machine-vnet",
        f"{prefix}/providers/Microsoft.Compute/availabilitySets/docker-machine",
    }
    # The last machine out removes what pymachine made: network, availability set, resource group.
    pm.ok("rm", "-y", "a2", env=env)
    assert fake.all_ids() == []
    assert pm.ok("ls", "-q", env=env).stdout == ""


def test_private_ip_without_public_ip(pm, fake, inproc):
    """--azure-use-private-ip --azure-no-public-ip: no public IP resource, the address is the NIC's."""
    driver = new_driver(fake, pm.store, "priv", azure_use_private_ip=True, azure_no_public_ip=True,
                        azure_subnet_prefix="10.77.0.0/24", azure_private_ip_address="10.77.0.50",
                        azure_availability_set="")
    driver.create(lambda line: None)  # in process: nothing dials the (unroutable) private address
    assert driver.ip() == "10.77.0.50" and driver.config["PublicIPID"] == ""
    types = sorted(rid.split("/")[-2] for rid in fake.all_ids() if "/providers/" in rid)
    assert types == ["disks", "networkInterfaces", "networkSecurityGroups", "subnets", "virtualMachines",
                     "virtualNetworks"]
    subnet = next(r for r in fake.resources.values() if r["type"].endswith("subnets"))
    assert subnet["properties"]["addressPrefix"] == "10.77.0.0/24"
    driver.remove(lambda line: None)
    assert fake.all_ids() == []


def test_url_and_ip_need_no_sdk(tmp_path):
    """``env``/``url`` answer from config.json: loading the driver must not import the Azure SDK."""
    import subprocess
    import sys

    code = (
        "import sys; from machine.drivers.azure import AzureDriver as D; "
        "d = D({'IPAddress': '10.0.0.5', 'DockerPort': 2377, 'MachineName': 'x'}); "
        "print(d.url(), d.ip(), d.ssh_address()[2]); "
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(('azure', 'msal', 'requests'))}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2], check=True).stdout.splitlines()
    assert out == ["tcp://10.0.0.5:2377 10.0.0.5 docker-user", "[]"]
