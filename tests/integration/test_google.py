"""The ``google`` driver against the local Compute Engine v1 fake (tests/fakes/gce.py).

Bad input goes through the installed ``pymachine`` command (exit 3, one line,
nothing made); the lifecycle of stored machines too.  The fake hands out only
unused loopback addresses (127.78.0.N) where nothing answers SSH, so a create
that reaches provisioning is rolled back as unreachable.
"""

from __future__ import annotations

import itertools
import json
import stat
from pathlib import Path

import pytest

from tests.fakes.gce import PROJECT, FakeGCE

pytestmark = pytest.mark.integration
SUBNET = itertools.count(1)


@pytest.fixture
def fake(tmp_path: Path):
    def assign(instance, keys):
        return f"127.78.0.{next(SUBNET) % 250 + 1}"

    with FakeGCE(tmp_path / "fake-gce", address_for=assign) as server:
        yield server


@pytest.fixture
def sa_file(fake: FakeGCE, tmp_path: Path) -> Path:
    return fake.service_account_file(tmp_path / "sa.json")


def gce_env(fake: FakeGCE, sa: Path | None = None) -> dict[str, str]:
    env = {"GOOGLE_API_URL": fake.url + "/compute/v1", "GOOGLE_CA_CERT": str(fake.ca_cert),
           "GOOGLE_PROJECT": PROJECT, "PYMACHINE_SSH_WAIT": "2", "PYMACHINE_GOOGLE_WAIT": "30"}
    if sa is not None:
        env["GOOGLE_APPLICATION_CREDENTIALS"] = str(sa)
    return env


def one_line_error(res) -> str:
    assert res.returncode != 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def assert_nothing_left(pm, fake: FakeGCE, name: str) -> None:
    assert fake.instances == {}
    assert fake.disks == {}
    assert fake.firewalls == {}
    assert not (pm.store / "machines" / name).exists()


def stored_machine(pm, fake: FakeGCE, sa: Path, name: str, **flags):
    """Create an instance through the driver and store the machine, without provisioning."""
    from pymachine.machine.drivers.google import GoogleDriver
    from pymachine.machine.host import CreateOptions, Machine, new_host, prepare_driver
    from pymachine.machine.store import Store

    values = {f.name: f.default for f in GoogleDriver.flags}
    values.update({"google-project": PROJECT, "google-credentials": str(sa), "google-api-url": fake.url + "/compute/v1",
                   "google-ca-cert": str(fake.ca_cert)}, **flags)
    store = Store(pm.store)
    store.ensure()
    driver = prepare_driver(store, name, "google", values)
    driver.pre_create_check()
    store.reserve(name)
    machine = Machine(store, new_host(store, name, driver, CreateOptions()))
    machine.driver = driver
    lines: list[str] = []
    driver.create(lines.append)
    machine.save()
    return driver, lines


def test_missing_project_and_credentials_are_precreate_errors(pm, fake, tmp_path):
    env = gce_env(fake)
    del env["GOOGLE_PROJECT"]
    res = pm("create", "-d", "google", "g1", env=env)
    assert res.returncode == 3
    assert "--google-project" in one_line_error(res)
    res = pm("create", "-d", "google", "g1", env=gce_env(fake))  # no key file, no gcloud ADC in the test HOME
    assert res.returncode == 3
    assert "GOOGLE_APPLICATION_CREDENTIALS" in one_line_error(res)
    assert fake.requests == []
    assert not (pm.store / "machines" / "g1").exists()


def test_unreadable_or_malformed_key_file_is_exit_3(pm, fake, tmp_path):
    res = pm("create", "-d", "google", "--google-credentials", str(tmp_path / "missing.json"), "g1", env=gce_env(fake))
    assert res.returncode == 3 and "cannot read --google-credentials" in one_line_error(res)
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "service_account", "client_email": "x@y", "private_key": "s3cr3t-not-a-pem"}')
    res = pm("create", "-d", "google", "--google-credentials", str(bad), "g1", env=gce_env(fake))
    assert res.returncode == 3 and "not a PEM RSA key" in one_line_error(res)
    assert "s3cr3t-not-a-pem" not in res.stdout + res.stderr
    assert fake.requests == [] and not (pm.store / "machines" / "g1").exists()


def test_wrong_key_is_refused_without_printing_it(pm, fake, tmp_path):
    bad = fake.service_account_file(tmp_path / "bad.json", wrong_key=True)
    res = pm("create", "-d", "google", "g1", env=gce_env(fake, bad))
    assert res.returncode == 3
    line = one_line_error(res)
    assert "Invalid JWT Signature." in line
    assert "PRIVATE KEY" not in res.stdout + res.stderr
    assert [r.path for r in fake.requests] == ["/token"]
    assert not (pm.store / "machines" / "g1").exists()


@pytest.mark.parametrize("port", ["0/tcp", "70000/tcp", "8000-70000/tcp", "9000-8000/udp", "8080", "8080/icmp"])
def test_bad_open_port_is_one_line_and_makes_nothing(pm, fake, sa_file, port):
    """Both ends of a range are checked (1..65535, low <= high), not only the first number."""
    res = pm("create", "-d", "google", "--google-open-port", port, "g1", env=gce_env(fake, sa_file))
    assert "--google-open-port" in one_line_error(res) and port in res.stderr
    assert not [c for c in fake.requests if c.method != "GET" and c.path != "/token"]
    assert_nothing_left(pm, fake, "g1")


@pytest.mark.parametrize(("flag", "value", "expect"), [
    ("--google-zone", "mars-central1-a", "--google-zone"),
    ("--google-machine-type", "n9-huge-512", "--google-machine-type"),
    ("--google-machine-image", "debian-cloud/global/images/family/debian-3", "--google-machine-image"),
    ("--google-disk-type", "pd-floppy", "--google-disk-type"),
    ("--google-network", "nope", "--google-network"),
    ("--google-project", "someone-elses", "someone-elses"),
    ("--google-tags", "Bad_Tag", "--google-tags"),
    ("--google-address", "no-such-address", "--google-address"),
])
def test_unknown_placement_is_a_precreate_error(pm, fake, sa_file, flag, value, expect):
    res = pm("create", "-d", "google", flag, value, "g1", env=gce_env(fake, sa_file))
    assert res.returncode == 3, res.stdout + res.stderr
    line = one_line_error(res)
    assert value in line and expect in line
    assert fake.calls("POST", "/compute") == [] and fake.calls("PUT") == []
    assert_nothing_left(pm, fake, "g1")


def test_bad_instance_name_and_quota_are_precreate_errors(pm, fake, sa_file):
    res = pm("create", "-d", "google", "G.1", env=gce_env(fake, sa_file))
    assert res.returncode == 3 and "not a valid Compute Engine instance name" in one_line_error(res)
    fake.quota_cpus = 1.0
    res = pm("create", "-d", "google", "--google-machine-type", "e2-small", "g1", env=gce_env(fake, sa_file))
    assert res.returncode == 3
    assert "Quota 'CPUS' exceeded" in one_line_error(res)
    assert_nothing_left(pm, fake, "g1")


def test_quota_failure_in_the_operation_rolls_back_the_firewall(pm, fake, sa_file):
    """The region check passes, then the insert operation ends DONE with QUOTA_EXCEEDED (a race)."""
    fake.quota_cpus = 1.0
    fake.add_instance("someone-elses", zone="us-central1-b")  # uses the last CPU after our check...
    fake.quota_cpus = 2.0  # ...which saw room for one more
    original = fake._insert_instance

    def racing_insert(zone, body):
        fake.quota_cpus = 1.0
        return original(zone, body)

    fake._insert_instance = racing_insert  # type: ignore[method-assign]
    res = pm("create", "-d", "google", "g1", env=gce_env(fake, sa_file))
    assert res.returncode == 1
    assert "Operation error: QUOTA_EXCEEDED: Quota 'CPUS' exceeded." in one_line_error(res)
    assert list(fake.instances) == [("us-central1-b", "someone-elses")]
    assert fake.disks.keys() == {("us-central1-b", "someone-elses")}
    assert fake.firewalls == {}, "the firewall rule made for this create outlived it"
    assert not (pm.store / "machines" / "g1").exists()


def test_unreachable_host_is_rolled_back(pm, fake, sa_file):
    res = pm("create", "-d", "google", "--google-tags", "web,team-a", "g1", env=gce_env(fake, sa_file), timeout=180)
    assert res.returncode != 0
    assert "never answered over SSH" in res.stdout
    [insert] = fake.calls("POST", "/zones/us-central1-a/instances")
    body = insert.body
    labels = body["labels"]
    assert labels == {"pymachine": "machine", "pymachine-machine": "g1", "pymachine-create": labels["pymachine-create"]}
    assert len(labels["pymachine-create"]) == 16
    assert body["tags"]["items"] == ["docker-machine", "web", "team-a"]
    assert body["disks"][0]["initializeParams"]["diskName"] == "g1-disk"
    assert body["disks"][0]["initializeParams"]["labels"]["pymachine-machine"] == "g1"
    assert body["metadata"]["items"][0]["key"] == "ssh-keys"
    assert body["metadata"]["items"][0]["value"].startswith("docker-user:ssh-")
    assert_nothing_left(pm, fake, "g1")


def test_lost_insert_answer_still_leaves_nothing(pm, fake, sa_file):
    """The insert takes effect but its answer never arrives: the rollback finds the instance by the
    create's own label and deletes it; a same-named instance of someone else's would be left alone."""
    fake.drop_response_next("POST", f"/compute/v1/projects/{PROJECT}/zones/us-central1-a/instances")
    res = pm("create", "-d", "google", "g1", env=gce_env(fake, sa_file))
    assert res.returncode == 1
    assert "cannot reach the Compute Engine API" in one_line_error(res)
    assert len(fake.calls("DELETE", "/instances/g1")) == 1
    assert_nothing_left(pm, fake, "g1")


def test_rollback_never_deletes_a_same_named_instance_it_did_not_make(pm, fake, sa_file):
    other = fake.add_instance("g1", tags=["docker-machine"])  # made by another store after our check
    from pymachine.machine.drivers.google import GoogleDriver

    driver = GoogleDriver.new("g1", str(pm.store))
    driver.set_config_from_flags({**{f.name: f.default for f in GoogleDriver.flags}, "google-project": PROJECT,
                                  "google-credentials": str(sa_file), "google-api-url": fake.url + "/compute/v1",
                                  "google-ca-cert": str(fake.ca_cert)})
    driver.settings.update(instance_created=True, create_token="0123456789abcdef")
    (pm.store / "machines" / "g1").mkdir(parents=True)
    lines: list[str] = []
    driver.remove(lines.append)
    assert fake.instances[("us-central1-a", "g1")] is other
    assert any("was not made by this machine's create" in line for line in lines)


def test_rate_limits_are_retried(pm, fake, sa_file):
    fake.rate_limit(2, status=429)
    res = pm("create", "-d", "google", "--google-zone", "nowhere-1a", "g1", env=gce_env(fake, sa_file))
    assert res.returncode == 3 and "nowhere-1a" in one_line_error(res)
    assert len(fake.calls("GET", f"/compute/v1/projects/{PROJECT}")) >= 3
    fake.rate_limit(2, status=403)  # Compute's documented rateLimitExceeded
    res = pm("create", "-d", "google", "--google-zone", "nowhere-1a", "g1", env=gce_env(fake, sa_file))
    assert res.returncode == 3 and "nowhere-1a" in one_line_error(res)


def test_lifecycle_ls_one_call_firewall_shared_and_removed_with_last(pm, fake, sa_file):
    d1, lines = stored_machine(pm, fake, sa_file, "g1", **{"google-open-port": ["8080/tcp"]})
    assert "(g1) Opening firewall ports" in lines and "(g1) Creating instance" in lines
    stored_machine(pm, fake, sa_file, "g2")
    inst = fake.instances[("us-central1-a", "g1")]
    assert d1.config["InstanceID"] == inst["id"] and d1.config["IPAddress"].startswith("127.78.0.")
    [fw] = fake.firewalls.values()
    assert fw["allowed"] == [{"IPProtocol": "tcp", "ports": ["2376", "8080"]}]
    assert fw["targetTags"] == ["docker-machine"]
    assert len(fake.calls("POST", "/global/firewalls")) == 1, "the rule is made once"
    mdir = pm.store / "machines" / "g1"
    config = (mdir / "config.json").read_text()
    assert "PRIVATE KEY" not in config and "private_key" not in config
    assert stat.S_IMODE((mdir / "secrets.json").stat().st_mode) == 0o600
    assert json.loads(json.loads((mdir / "secrets.json").read_text())["GoogleCredentials"])["client_email"]

    # ls: one aggregated listing for both machines (plus the token)
    before = len(fake.requests)
    res = pm.ok("ls", "--format", "{{.Name}} {{.State}}", env={"GOOGLE_API_URL": "", "PYMACHINE_GOOGLE_WAIT": "30"})
    assert sorted(res.stdout.split("\n")[:2]) == ["g1 Running", "g2 Running"]
    api = [r for r in fake.requests[before:] if r.path.startswith("/compute")]
    assert [r.path for r in api] == [f"/compute/v1/projects/{PROJECT}/aggregated/instances"]

    pm.ok("stop", "g1")
    assert inst["status"] == "TERMINATED"
    assert pm.ok("status", "g1").stdout.strip() == "Stopped"
    pm.ok("start", "g1")
    assert inst["status"] == "RUNNING"

    pm.ok("rm", "-y", "g1")
    assert ("us-central1-a", "g1") not in fake.instances and ("us-central1-a", "g1-disk") not in fake.disks
    assert FIREWALL_KEPT(fake), "g2 still uses the firewall rule"
    res = pm.ok("rm", "-y", "g2")
    assert "Removing firewall rule docker-machines" in res.stdout
    assert_nothing_left(pm, fake, "g2")


def FIREWALL_KEPT(fake: FakeGCE) -> bool:
    return "docker-machines" in fake.firewalls


def test_foreign_firewall_rule_is_extended_never_deleted(pm, fake, sa_file):
    fake.firewalls["docker-machines"] = {"name": "docker-machines", "description": "", "network": "x",
                                         "allowed": [{"IPProtocol": "tcp", "ports": ["2376"]}],
                                         "sourceRanges": ["0.0.0.0/0"], "targetTags": ["docker-machine"],
                                         "selfLink": "https://www.googleapis.com/compute/v1/projects/p/global/firewalls/docker-machines"}
    stored_machine(pm, fake, sa_file, "g1", **{"google-open-port": ["9000/udp"]})
    [put] = fake.calls("PUT")
    assert put.body["allowed"] == [{"IPProtocol": "tcp", "ports": ["2376"]}, {"IPProtocol": "udp", "ports": ["9000"]}]
    pm.ok("rm", "-y", "g1")
    assert "docker-machines" in fake.firewalls


def test_use_existing_keeps_metadata_and_the_instance(pm, fake, sa_file):
    fake.add_instance("g1", metadata=[{"key": "startup-script", "value": "echo hi"}])
    fake.instances[("us-central1-a", "g1")]["networkInterfaces"][0] = {
        "networkIP": "127.78.1.1", "accessConfigs": [{"natIP": "127.78.1.1"}]}
    _driver, _ = stored_machine(pm, fake, sa_file, "g1", **{"google-use-existing": True})
    inst = fake.instances[("us-central1-a", "g1")]
    keys = {i["key"]: i["value"] for i in inst["metadata"]["items"]}
    assert keys["startup-script"] == "echo hi" and keys["ssh-keys"].startswith("docker-user:ssh-")
    assert "docker-machine" in inst["tags"]["items"]
    pm.ok("rm", "-y", "g1")
    assert ("us-central1-a", "g1") in fake.instances
    assert inst["metadata"]["items"] == [{"key": "startup-script", "value": "echo hi"}]
    assert "docker-machine" not in inst["tags"]["items"]
    assert fake.firewalls == {}


def test_static_address_by_name(pm, fake, sa_file):
    fake.add_address("docker-ip", "127.78.2.2")
    driver, _ = stored_machine(pm, fake, sa_file, "g1", **{"google-address": "docker-ip"})
    [insert] = fake.calls("POST", "/zones/us-central1-a/instances")
    assert insert.body["networkInterfaces"][0]["accessConfigs"] == [
        {"type": "ONE_TO_ONE_NAT", "name": "External NAT", "natIP": "127.78.2.2"}]
    assert driver.config["IPAddress"] == "127.78.2.2"
    pm.ok("rm", "-y", "g1")
    assert fake.addresses, "a reserved address is the user's: rm keeps it"


def test_authorized_user_adc_from_gcloud_dir(pm, fake, tmp_path):
    gcloud = pm.home / ".config" / "gcloud"
    gcloud.mkdir(parents=True)
    fake.authorized_user_file(gcloud / "application_default_credentials.json")
    res = pm("create", "-d", "google", "--google-zone", "nowhere-1a", "g1", env=gce_env(fake))
    assert res.returncode == 3 and "nowhere-1a" in one_line_error(res)
    [token] = fake.calls("POST", "/token")
    assert token.body["grant_type"] == ["refresh_token"]
    assert "fake-refresh-token" not in res.stdout + res.stderr


def test_server_errors_retry_reads_and_inserts_by_request_id(pm, fake, sa_file):
    fake.fail_next("GET", f"/compute/v1/projects/{PROJECT}/zones/", 503, "backendError", "Backend Error", times=2)
    res = pm("create", "-d", "google", "--google-zone", "nowhere-1a", "g1", env=gce_env(fake, sa_file))
    assert res.returncode == 3 and "nowhere-1a" in one_line_error(res)
    assert len(fake.calls("GET", "/zones/nowhere-1a")) == 3

    # The insert and the firewall rule are done but answer 503: each POST is repeated with its
    # requestId, which Compute dedupes, so there is one instance and one rule, not two.
    fake.lose_answer_next("POST", f"/compute/v1/projects/{PROJECT}/zones/us-central1-a/instances")
    fake.lose_answer_next("POST", f"/compute/v1/projects/{PROJECT}/global/firewalls")
    driver, _ = stored_machine(pm, fake, sa_file, "g1")
    for path in ("/zones/us-central1-a/instances", "/global/firewalls"):
        posts = [c for c in fake.calls("POST") if c.path.endswith(path)]
        assert len(posts) == 2 and posts[0].query["requestId"] == posts[1].query["requestId"], posts
    assert list(fake.instances) == [("us-central1-a", "g1")] and len(fake.firewalls) == 1
    ids = [c.query["requestId"][0] for c in fake.calls("POST", "/compute/v1/")]  # not the OAuth token POST
    assert len(set(ids)) == len(ids) - 2  # every other POST has its own
    assert driver.config["InstanceCreated"]
    pm.ok("rm", "-y", "g1", env=gce_env(fake, sa_file))
    assert_nothing_left(pm, fake, "g1")
