"""The ``openstack`` driver against the local Keystone v3 + Nova + Neutron + Glance fake (tests/fakes/openstack.py).

Bad input goes through the installed ``pymachine`` command (exit 3, one line,
nothing made); the lifecycle of stored machines too.  The fake hands out only
unused loopback addresses (127.79.x.N) where nothing answers SSH, so a create
that reaches provisioning is rolled back as unreachable.
"""

from __future__ import annotations

import itertools
import json
import stat
from pathlib import Path

import pytest

from tests.fakes.openstack import DOMAIN, PASSWORD, PROJECT, PROJECT_ID, USER, FakeOpenStack

pytestmark = pytest.mark.integration
SUBNET = itertools.count(1)


@pytest.fixture
def fake(tmp_path: Path):
    def fixed(server, keys):
        return f"127.79.0.{next(SUBNET) % 250 + 1}"

    def floating(server, keys):
        return f"127.79.1.{next(SUBNET) % 250 + 1}"

    with FakeOpenStack(tmp_path / "fake-os", address_for=fixed, floating_for=floating) as server:
        yield server


def os_env(fake: FakeOpenStack, **extra: str) -> dict[str, str]:
    env = {"OS_AUTH_URL": fake.auth_url, "OS_USERNAME": USER, "OS_PASSWORD": PASSWORD, "OS_TENANT_NAME": PROJECT,
           "OS_DOMAIN_NAME": DOMAIN, "OS_CACERT": str(fake.ca_cert), "OS_FLAVOR_NAME": "m1.small",
           "OS_IMAGE_NAME": "debian-12", "PYMACHINE_SSH_WAIT": "2"}
    env.update(extra)
    return env


def one_line_error(res) -> str:
    assert res.returncode != 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def assert_nothing_left(pm, fake: FakeOpenStack, name: str) -> None:
    assert fake.nothing_left() == []
    assert not (pm.store / "machines" / name).exists()


def stored_machine(pm, fake: FakeOpenStack, name: str, **flags):
    """Create a server through the driver and store the machine, without provisioning."""
    from pymachine.machine.drivers.openstack import OpenStackDriver
    from pymachine.machine.host import CreateOptions, Machine, new_host, prepare_driver
    from pymachine.machine.store import Store

    values = {f.name: f.default for f in OpenStackDriver.flags}
    values.update({"openstack-auth-url": fake.auth_url, "openstack-username": USER, "openstack-password": PASSWORD,
                   "openstack-tenant-name": PROJECT, "openstack-domain-name": DOMAIN,
                   "openstack-cacert": str(fake.ca_cert), "openstack-flavor-name": "m1.small",
                   "openstack-image-name": "debian-12"}, **flags)
    store = Store(pm.store)
    store.ensure()
    driver = prepare_driver(store, name, "openstack", values)
    driver.pre_create_check()
    store.reserve(name)
    machine = Machine(store, new_host(store, name, driver, CreateOptions()))
    machine.driver = driver
    lines: list[str] = []
    driver.create(lines.append)
    machine.save()
    return driver, lines


@pytest.mark.parametrize(("drop", "expect"), [
    ("OS_AUTH_URL", "OS_AUTH_URL"), ("OS_USERNAME", "--openstack-username"), ("OS_PASSWORD", "OS_PASSWORD"),
    ("OS_TENANT_NAME", "OS_TENANT_ID"), ("OS_FLAVOR_NAME", "--openstack-flavor-id"),
])
def test_missing_settings_are_precreate_errors(pm, fake, drop, expect):
    env = os_env(fake)
    env[drop] = ""
    res = pm("create", "-d", "openstack", "o1", env=env)
    assert res.returncode == 3
    assert expect in one_line_error(res)
    assert fake.requests == []
    assert not (pm.store / "machines" / "o1").exists()


def test_wrong_password_is_rejected_without_echoing_it(pm, fake):
    res = pm("create", "-d", "openstack", "o1", env=os_env(fake, OS_PASSWORD="wr0ng-pa55"))
    assert res.returncode == 3
    line = one_line_error(res)
    assert "The request you have made requires authentication." in line
    assert "wr0ng-pa55" not in res.stdout + res.stderr
    assert [r.path for r in fake.requests] == ["/identity/v3/auth/tokens"]  # /v3 stripped once, not doubled
    assert_nothing_left(pm, fake, "o1")


@pytest.mark.parametrize(("flag", "value"), [
    ("--openstack-flavor-name", "m1.enormous"), ("--openstack-flavor-id", "99"),
    ("--openstack-image-name", "windows-95"), ("--openstack-net-name", "nonet"),
    ("--openstack-sec-groups", "default,nosuchgroup"), ("--openstack-floatingip-pool", "private"),
    ("--openstack-availability-zone", "az-mars"), ("--openstack-keypair-name", "nokey"),
])
def test_unknown_placement_is_a_precreate_error(pm, fake, tmp_path, flag, value):
    env = os_env(fake)
    extra = [flag, value]
    if flag == "--openstack-flavor-id":
        env["OS_FLAVOR_NAME"] = ""
    if flag == "--openstack-keypair-name":
        key = tmp_path / "key"
        key.write_text("x")
        extra += ["--openstack-private-key-file", str(key)]
    res = pm("create", "-d", "openstack", *extra, "o1", env=env)
    assert res.returncode == 3, res.stdout + res.stderr
    line = one_line_error(res)
    assert value.split(",")[-1] in line
    assert fake.calls("POST", "/compute") == [] and fake.calls("POST", "/network") == []
    assert_nothing_left(pm, fake, "o1")


def test_quota_is_a_precreate_error(pm, fake):
    fake.max_instances = 1
    fake.add_server("someone-elses")
    res = pm("create", "-d", "openstack", "o1", env=os_env(fake))
    assert res.returncode == 3
    assert "Quota exceeded for instances: Requested 1, but already used 1 of 1 instances" in one_line_error(res)
    assert len(fake.servers) == 1 and fake.keypairs == {}


def test_no_valid_host_rolls_back_everything(pm, fake):
    fake.no_valid_host = True
    res = pm("create", "-d", "openstack", "o1", env=os_env(fake))
    assert res.returncode == 1
    assert "Instance is in ERROR state: No valid host was found." in one_line_error(res)
    assert "Creating key pair..." in res.stdout
    assert_nothing_left(pm, fake, "o1")


def test_quota_race_at_server_create_rolls_back_key_and_group(pm, fake):
    fake.fail_next("POST", "/compute/v2.1/servers", 403,
                   "Quota exceeded for cores: Requested 1, but already used 20 of 20 cores")
    res = pm("create", "-d", "openstack", "o1", env=os_env(fake))
    assert res.returncode == 1
    assert "403 Quota exceeded for cores" in one_line_error(res)
    assert_nothing_left(pm, fake, "o1")


@pytest.mark.parametrize("lost", ["/compute/v2.1/servers", "/network/v2.0/security-groups",
                                  "/compute/v2.1/os-keypairs", "/network/v2.0/floatingips"])
def test_lost_create_answers_still_leave_nothing(pm, fake, lost):
    """A create call takes effect but its answer never arrives: the rollback finds what it made by
    the create's own marks (metadata, unique names, description), never by the machine name alone."""
    other = fake.add_server("o1")  # same name, someone else's: must survive
    fake.drop_response_next("POST", lost)
    res = pm("create", "-d", "openstack", "--openstack-floatingip-pool", "public", "o1", env=os_env(fake))
    assert res.returncode == 1
    assert "cannot reach the OpenStack" in one_line_error(res)
    assert list(fake.servers.values()) == [other]
    other_name = f"server {other['name']}"
    assert fake.nothing_left() == [other_name]
    assert not (pm.store / "machines" / "o1").exists()


def test_unreachable_host_is_rolled_back(pm, fake):
    res = pm("create", "-d", "openstack", "--openstack-floatingip-pool", "public", "--openstack-metadata",
             "team,web", "o1", env=os_env(fake), timeout=180)
    assert res.returncode != 0
    assert "never answered over SSH" in res.stdout
    [create] = fake.calls("POST", "/compute/v2.1/servers")
    server = create.body["server"]
    meta = server["metadata"]
    assert meta == {"team": "web", "pymachine": "machine", "pymachine-machine": "o1",
                    "pymachine-create": meta["pymachine-create"]}
    assert server["key_name"].startswith("pymachine-o1-")
    assert next(g["name"] for g in server["security_groups"]).startswith("pymachine-o1-")
    assert len(fake.calls("POST", "/network/v2.0/floatingips")) == 1
    assert_nothing_left(pm, fake, "o1")


def test_rate_limit_and_expired_token_are_retried(pm, fake):
    fake.rate_limit(2)
    res = pm("create", "-d", "openstack", "--openstack-net-name", "nonet", "o1", env=os_env(fake))
    assert res.returncode == 3 and "nonet" in one_line_error(res)
    assert len(fake.calls("POST", "/identity/v3/auth/tokens")) == 3


def test_lifecycle_floating_ip_ls_one_call_and_rm(pm, fake):
    d1, lines = stored_machine(pm, fake, "o1", **{"openstack-floatingip-pool": "public",
                                                  "openstack-tenant-name": "", "openstack-tenant-id": PROJECT_ID})
    d2, _ = stored_machine(pm, fake, "o2")
    assert "(o1) Assigning floating IP from pool public..." in lines
    assert d1.config["IPAddress"].startswith("127.79.1.")  # the floating address, not the fixed one
    assert d2.config["IPAddress"].startswith("127.79.0.")
    [fip] = fake.floatingips.values()
    assert d1.config["FloatingIpId"] == fip["id"] and "pymachine" in fip["description"]
    mdir = pm.store / "machines" / "o1"
    assert PASSWORD not in (mdir / "config.json").read_text()
    assert json.loads((mdir / "secrets.json").read_text()) == {"OpenStackPassword": PASSWORD}
    assert stat.S_IMODE((mdir / "secrets.json").stat().st_mode) == 0o600

    before = len(fake.requests)
    res = pm.ok("ls", "--format", "{{.Name}} {{.State}} {{.URL}}")
    rows = sorted(res.stdout.strip().splitlines())
    assert rows == [f"o1 Running tcp://{d1.config['IPAddress']}:2376", f"o2 Running tcp://{d2.config['IPAddress']}:2376"]
    listed = [r.path for r in fake.requests[before:] if r.path.startswith("/compute")]
    assert listed == ["/compute/v2.1/servers/detail"] * 2  # one per project scope (o1 by id, o2 by name)

    pm.ok("stop", "o1")
    assert fake.servers[d1.config["MachineId"]]["status"] == "SHUTOFF"
    assert pm.ok("status", "o1").stdout.strip() == "Stopped"
    pm.ok("start", "o1")
    assert pm.ok("status", "o1").stdout.strip() == "Running"
    pm.ok("restart", "o2")
    bodies = [c.body for c in fake.calls("POST", "/action")]
    assert bodies == [{"os-stop": None}, {"os-start": None}, {"reboot": {"type": "SOFT"}}]

    fake.expire_tokens()  # a later command re-authenticates transparently
    pm.ok("rm", "-y", "o1", "o2")
    assert_nothing_left(pm, fake, "o1")


def test_user_keypair_is_used_and_kept(pm, fake, tmp_path):
    from pymachine.machine.certs import generate_ssh_keypair

    key = tmp_path / "mykey"
    generate_ssh_keypair(key)
    fake.keypairs["mine"] = {"name": "mine", "public_key": (tmp_path / "mykey.pub").read_text().strip(),
                             "fingerprint": "x"}
    driver, _ = stored_machine(pm, fake, "o1", **{"openstack-keypair-name": "mine",
                                                  "openstack-private-key-file": str(key)})
    assert fake.servers[driver.config["MachineId"]]["key_name"] == "mine"
    pm.ok("rm", "-y", "o1")
    assert list(fake.keypairs) == ["mine"] and fake.servers == {}


def test_tls_trust_is_per_machine(pm, fake):
    res = pm("create", "-d", "openstack", "o1", env=os_env(fake, OS_CACERT=""))
    assert res.returncode == 3
    assert "CERTIFICATE_VERIFY_FAILED" in one_line_error(res) or "certificate verify failed" in res.stderr
    res = pm("create", "-d", "openstack", "--openstack-net-name", "nonet", "o1",
             env=os_env(fake, OS_CACERT="", OS_INSECURE="true"))
    assert res.returncode == 3 and "Unable to find network named nonet" in one_line_error(res)
    assert_nothing_left(pm, fake, "o1")


def test_two_machines_with_different_tls_trust_do_not_share_a_session(pm, fake):
    """``ls`` (one process) over an insecure machine and a strict one: each keeps its own trust."""
    stored_machine(pm, fake, "o1")
    stored_machine(pm, fake, "o2")
    for name, trust in (("o1", {"Insecure": True, "CaCert": ""}), ("o2", {"Insecure": False, "CaCert": ""})):
        cfg_path = pm.store / "machines" / name / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["Driver"].update(trust)
        cfg_path.write_text(json.dumps(cfg))
    rows = dict(line.split(" ", 1) for line in
                pm.ok("ls", "--format", "{{.Name}} {{.State}}").stdout.strip().splitlines())
    assert rows["o1"] == "Running"
    assert rows["o2"] != "Running"  # the default trust store does not know the fake's CA
    res = pm("status", "o2")
    assert res.returncode != 0 and "certificate_verify_failed" in res.stderr.lower()
    pm.ok("rm", "-y", "o1")
