"""The ``digitalocean`` driver against the local DigitalOcean v2 fake (tests/fakes/digitalocean.py).

Bad input and pre-create checks go through the installed ``pymachine`` command;
the lifecycle of stored machines (ls, stop/start/kill/restart, rm) too.  The
fake hands out only unused loopback addresses (127.77.0.N), where nothing
answers, so a create that reaches provisioning is rolled back as unreachable.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.fakes.digitalocean import FakeDigitalOcean

pytestmark = pytest.mark.integration
TOKEN = "fake-do-token"
SUBNET = itertools.count(1)


@pytest.fixture
def fake(tmp_path: Path):
    def assign(droplet, public_keys):
        return f"127.77.0.{next(SUBNET) % 250 + 1}"

    with FakeDigitalOcean(tmp_path / "fake-do", address_for=assign) as server:
        yield server


def do_args(fake: FakeDigitalOcean, *extra: str) -> list[str]:
    return ["create", "-d", "digitalocean", "--digitalocean-api-url", fake.url,
            "--digitalocean-ca-cert", str(fake.ca_cert), *extra]


def one_line_error(res) -> str:
    assert res.returncode != 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def assert_nothing_left(pm, fake: FakeDigitalOcean, name: str) -> None:
    assert fake.droplets == {}
    assert fake.keys == {}
    assert not [t for t in fake.tags if t.startswith("pymachine-create:")], "a create's own tag outlived it"
    assert not (pm.store / "machines" / name).exists()


def stored_machine(pm, fake: FakeDigitalOcean, name: str, **flags):
    """Create a droplet through the driver and store the machine, without provisioning."""
    from pymachine.machine.drivers.digitalocean import DigitalOceanDriver
    from pymachine.machine.host import CreateOptions, Machine, new_host, prepare_driver
    from pymachine.machine.store import Store

    values = {f.name: f.default for f in DigitalOceanDriver.flags}
    values.update({"digitalocean-access-token": TOKEN, "digitalocean-api-url": fake.url,
                   "digitalocean-ca-cert": str(fake.ca_cert)}, **flags)
    store = Store(pm.store)
    store.ensure()
    driver = prepare_driver(store, name, "digitalocean", values)
    driver.pre_create_check()
    store.reserve(name)
    machine = Machine(store, new_host(store, name, driver, CreateOptions()))
    machine.driver = driver
    lines: list[str] = []
    driver.create(lines.append)
    machine.save()
    return driver, lines


def test_missing_token_is_a_precreate_error(pm, fake):
    res = pm(*do_args(fake, "do1"))
    assert res.returncode == 3
    assert "DIGITALOCEAN_ACCESS_TOKEN" in one_line_error(res)
    assert fake.requests == []
    assert not (pm.store / "machines" / "do1").exists()


def test_wrong_token_is_rejected_without_echoing_it(pm, fake):
    res = pm(*do_args(fake, "--digitalocean-access-token", "s3cr3t-wrong-token", "do1"))
    assert res.returncode == 3
    line = one_line_error(res)
    assert "Unable to authenticate you" in line and "DIGITALOCEAN_ACCESS_TOKEN" in line
    assert "s3cr3t-wrong-token" not in res.stdout + res.stderr
    assert [r.path for r in fake.requests] == ["/v2/account"]
    assert fake.requests[0].authorization == "Bearer s3cr3t-wrong-token"
    assert not (pm.store / "machines" / "do1").exists()


@pytest.mark.parametrize(("flag", "value", "expect"), [
    ("--digitalocean-region", "mars1", "--digitalocean-region"),
    ("--digitalocean-size", "s-64vcpu-1tb", "--digitalocean-size"),
    ("--digitalocean-image", "ubuntu-12-04-x64", "--digitalocean-image"),
    ("--digitalocean-tags", "team.web", "--digitalocean-tags"),
])
def test_unknown_placement_is_a_precreate_error(pm, fake, flag, value, expect):
    res = pm(*do_args(fake, flag, value, "do1"), env={"DIGITALOCEAN_ACCESS_TOKEN": TOKEN})
    assert res.returncode == 3
    line = one_line_error(res)
    assert value in line and expect in line
    assert fake.calls("POST") == []
    assert not (pm.store / "machines" / "do1").exists()


def test_rate_limit_is_retried_with_backoff(pm, fake):
    fake.rate_limit(2)
    started = time.monotonic()
    res = pm(*do_args(fake, "--digitalocean-image", "nope-x64", "do1"), env={"DIGITALOCEAN_ACCESS_TOKEN": TOKEN})
    # The two 429s were waited out (Retry-After: 1) and the check went on to the image.
    assert res.returncode == 3
    assert 'image "nope-x64" not found' in one_line_error(res)
    assert len(fake.calls("GET", "/v2/account")) == 3
    assert time.monotonic() - started >= 2.0


def test_droplet_limit_checked_before_anything_is_made(pm, fake):
    fake.droplet_limit = 1
    fake.add_droplet("someone-elses")
    res = pm(*do_args(fake, "do1"), env={"DIGITALOCEAN_ACCESS_TOKEN": TOKEN})
    assert res.returncode == 3
    assert "droplet limit" in one_line_error(res)
    assert fake.keys == {} and len(fake.droplets) == 1


def test_quota_error_at_create_rolls_back_the_key(pm, fake):
    fake.fail_next("POST", "/v2/droplets", 422, "unprocessable_entity", "You have reached the droplet limit")
    res = pm(*do_args(fake, "do1"), env={"DIGITALOCEAN_ACCESS_TOKEN": TOKEN})
    assert res.returncode == 1
    assert "422 You have reached the droplet limit" in one_line_error(res)
    assert "Creating SSH key..." in res.stdout
    assert len(fake.calls("POST", "/v2/account/keys")) == 1
    assert_nothing_left(pm, fake, "do1")


def test_lost_create_answer_still_leaves_no_droplet(pm, fake):
    """The droplet is made but the answer never arrives: the rollback finds it by
    the create's own tag (never by name, which another store may share)."""
    other = fake.add_droplet("do1")  # same name, another store's: must survive
    fake.droplets[other["id"]]["tags"] = ["pymachine", "pymachine-machine:do1"]
    fake.drop_response_next("POST", "/v2/droplets")
    res = pm(*do_args(fake, "do1"), env={"DIGITALOCEAN_ACCESS_TOKEN": TOKEN})
    assert res.returncode == 1
    assert "cannot reach the DigitalOcean API" in one_line_error(res)
    [create] = fake.calls("POST", "/v2/droplets")
    [lookup] = [c for c in fake.calls("GET", "/v2/droplets") if c.query.get("tag_name")]
    assert lookup.query["tag_name"] == [t for t in create.body["tags"] if t.startswith("pymachine-create:")]
    assert "Found droplet" in res.stdout and "from the interrupted create; deleting it" in res.stdout
    assert list(fake.droplets) == [other["id"]] and fake.keys == {}
    assert not [t for t in fake.tags if t.startswith("pymachine-create:")], "the create's own tag is deleted too"
    assert pm("ls", "-q").stdout.strip() == ""


def test_droplet_without_ip_is_rolled_back(pm, fake):
    fake.address_for = lambda droplet, keys: None
    res = pm(*do_args(fake, "do1"), env={"DIGITALOCEAN_ACCESS_TOKEN": TOKEN, "PYMACHINE_DIGITALOCEAN_WAIT": "2"})
    assert res.returncode == 1
    assert "did not get a public IPv4 address within 2s" in one_line_error(res)
    for line in ("(do1) Creating SSH key...", "(do1) Creating Digital Ocean droplet...",
                 "(do1) Waiting for IP address to be assigned to the Droplet..."):
        assert line in res.stdout
    assert len(fake.calls("DELETE")) == 3  # the key, the droplet and the create's own tag
    assert_nothing_left(pm, fake, "do1")


def test_unreachable_droplet_is_rolled_back_after_create(pm, fake):
    res = pm(*do_args(fake, "--digitalocean-tags", "team-web,env:test", "do.1"),
             env={"DIGITALOCEAN_ACCESS_TOKEN": TOKEN, "PYMACHINE_SSH_WAIT": "1"})
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Removing do.1: the host never answered over SSH" in res.stdout
    [create] = fake.calls("POST", "/v2/droplets")
    [key] = fake.calls("POST", "/v2/account/keys")
    assert key.body["name"] == "do.1" and key.body["public_key"].startswith("ssh-rsa ")
    tags = create.body["tags"]
    assert tags[:2] == ["pymachine", "pymachine-machine:do_1"] and tags[3:] == ["team-web", "env:test"]
    assert re.fullmatch(r"pymachine-create:[0-9a-f]{16}", tags[2]), tags
    assert create.body["region"] == "nyc3" and create.body["size"] == "s-1vcpu-1gb"
    assert create.body["image"] == "ubuntu-24-04-x64" and len(create.body["ssh_keys"]) == 1
    assert_nothing_left(pm, fake, "do.1")


def test_key_name_clash_leaves_the_users_key_alone(pm, fake, tmp_path):
    user_key = tmp_path / "user_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(user_key)], check=True, timeout=30)
    theirs = fake.add_key("do1", (tmp_path / "user_key.pub").read_text())
    driver, _ = stored_machine(pm, fake, "do1")
    assert driver.config["SSHKeyID"] != theirs["id"]
    assert sorted(k["name"] for k in fake.keys.values()) == ["do1", "do1"]
    pm.ok("rm", "-y", "do1")
    assert list(fake.keys) == [theirs["id"]]
    assert fake.droplets == {}


def test_token_lives_in_the_secrets_file_only(pm, fake):
    driver, lines = stored_machine(pm, fake, "do1")
    mdir = pm.store / "machines" / "do1"
    config = (mdir / "config.json").read_text()
    assert TOKEN not in config
    cfg = json.loads(config)["Driver"]
    assert (
        cfg["AccessToken"] == "" and cfg["DropletID"] == driver.droplet_id and cfg["IPAddress"].startswith("127.77.0.")
    )
    assert list(cfg)[:9] == ["IPAddress", "MachineName", "SSHUser", "SSHPort", "SSHKeyPath", "StorePath",
                             "SwarmMaster", "SwarmHost", "SwarmDiscovery"]
    secrets = mdir / "secrets.json"
    assert json.loads(secrets.read_text())["AccessToken"] == TOKEN
    assert stat.S_IMODE(os.stat(secrets).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(mdir / "id_rsa").st_mode) == 0o600
    assert not any(TOKEN in line for line in lines)
    # url and ip answer from the stored address: no API call.
    before = len(fake.requests)
    assert pm.ok("url", "do1").stdout.strip() == f"tcp://{cfg['IPAddress']}:2376"
    assert pm.ok("ip", "do1").stdout.strip() == cfg["IPAddress"]
    assert len(fake.requests) == before


def test_ls_uses_one_list_call_for_all_droplets(pm, fake):
    drivers = [stored_machine(pm, fake, f"do{i}")[0] for i in range(1, 4)]
    fake.set_status(drivers[1].droplet_id, "off")
    fake.set_status(drivers[2].droplet_id, "archive")
    before = len(fake.requests)
    out = pm.ok("ls", "--format", "{{.Name}} {{.DriverName}} {{.State}}").stdout.split("\n")
    assert out[:3] == ["do1 digitalocean Running", "do2 digitalocean Stopped", "do3 digitalocean Stopped"]
    calls = fake.requests[before:]
    assert [(c.method, c.path, c.query.get("tag_name")) for c in calls] == [("GET", "/v2/droplets", ["pymachine"])]
    # A droplet deleted behind pymachine's back shows as an error, not a crash.
    fake.droplets.pop(drivers[2].droplet_id)
    rows = pm.ok("ls", "--format", "{{.Name}}|{{.State}}|{{.Error}}").stdout.splitlines()
    assert rows[2].startswith("do3|Error|") and "no longer exists" in rows[2]
    assert pm.ok("status", "do2").stdout.strip() == "Stopped"


def test_lifecycle_actions(pm, fake):
    driver, _ = stored_machine(pm, fake, "do1")
    did = driver.droplet_id

    def kinds() -> list[str]:
        return [c.body["type"] for c in fake.calls("POST", f"/v2/droplets/{did}/actions")]

    pm.ok("stop", "do1")
    assert fake.droplets[did]["status"] == "off" and kinds() == ["shutdown"]
    pm.ok("start", "do1")
    assert fake.droplets[did]["status"] == "active" and kinds()[-1] == "power_on"
    assert "already running" in pm("start", "do1").stderr
    pm.ok("kill", "do1")
    assert fake.droplets[did]["status"] == "off" and kinds()[-1] == "power_off"
    pm.ok("start", "do1")
    # A droplet that ignores the graceful shutdown is powered off after the bound.
    fake.ignore_shutdown = True
    res = pm.ok("stop", "do1", env={"PYMACHINE_DIGITALOCEAN_SHUTDOWN_WAIT": "1"})
    assert "did not shut down within 1s, powering it off" in res.stdout + res.stderr
    assert kinds()[-2:] == ["shutdown", "power_off"] and fake.droplets[did]["status"] == "off"
    pm.ok("rm", "-y", "do1")
    assert_nothing_left(pm, fake, "do1")


def test_rm_of_a_droplet_already_gone(pm, fake):
    stored_machine(pm, fake, "do1")
    fake.droplets.clear()
    fake.keys.clear()
    res = pm.ok("rm", "-y", "do1")
    assert "assuming it is already deleted" in res.stdout + res.stderr
    assert not (pm.store / "machines" / "do1").exists()


def test_rate_limit_that_never_ends_fails_bounded(pm, fake):
    fake.rate_limit(100)
    started = time.monotonic()
    res = pm(*do_args(fake, "do1"), env={"DIGITALOCEAN_ACCESS_TOKEN": TOKEN}, timeout=60)
    assert res.returncode == 3
    assert "429 API Rate limit exceeded. (still rate limited after 6 attempts)" in one_line_error(res)
    assert len(fake.requests) == 6 and time.monotonic() - started < 30
    assert not (pm.store / "machines" / "do1").exists()


def test_unreachable_api_and_untrusted_ca_are_precreate_errors(pm, fake, tmp_path):
    env = {"DIGITALOCEAN_ACCESS_TOKEN": TOKEN}
    res = pm("create", "-d", "digitalocean", "--digitalocean-api-url", fake.url, "do1", env=env)
    assert res.returncode == 3
    assert "cannot reach the DigitalOcean API" in one_line_error(res) and "CERTIFICATE_VERIFY_FAILED" in res.stderr
    res = pm("create", "-d", "digitalocean", "--digitalocean-api-url", "ftp://127.0.0.1/", "do1", env=env)
    assert res.returncode == 1 and "--digitalocean-api-url must be an http(s) URL" in one_line_error(res)
    assert fake.requests == []


def test_existing_key_by_fingerprint(pm, fake, tmp_path):
    user_key = tmp_path / "id_user"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f", str(user_key)],
                   check=True, timeout=60)
    theirs = fake.add_key("laptop", (tmp_path / "id_user.pub").read_text())
    res = pm(*do_args(fake, "--digitalocean-ssh-key-fingerprint", "00:11:22", "do1"),
             env={"DIGITALOCEAN_ACCESS_TOKEN": TOKEN})
    assert res.returncode == 3 and "fingerprint 00:11:22 doesn't exist" in one_line_error(res)

    userdata = tmp_path / "user-data"
    userdata.write_text("#cloud-config\n")
    driver, lines = stored_machine(pm, fake, "do1", **{
        "digitalocean-ssh-key-fingerprint": theirs["fingerprint"], "digitalocean-ssh-key-path": str(user_key),
        "digitalocean-userdata": str(userdata), "digitalocean-ipv6": True, "digitalocean-monitoring": True,
        "digitalocean-region": "ams3", "digitalocean-size": "s-2vcpu-4gb"})
    [create] = fake.calls("POST", "/v2/droplets")
    assert create.body["ssh_keys"] == [theirs["fingerprint"]] and fake.calls("POST", "/v2/account/keys") == []
    assert create.body["user_data"] == "#cloud-config\n" and create.body["ipv6"] and create.body["monitoring"]
    assert (create.body["region"], create.body["size"]) == ("ams3", "s-2vcpu-4gb")
    assert not any("Creating SSH key" in line for line in lines)
    assert driver.config["SSHKeyID"] == 0
    copied = pm.store / "machines" / "do1" / "id_rsa"
    assert copied.read_bytes() == user_key.read_bytes() and stat.S_IMODE(os.stat(copied).st_mode) == 0o600
    pm.ok("rm", "-y", "do1")
    assert list(fake.keys) == [theirs["id"]] and fake.droplets == {}


def test_ls_makes_one_list_call_per_token(pm, fake):
    fake.tokens.add("second-account-token")
    for name in ("a1", "a2"):
        stored_machine(pm, fake, name)
    for name in ("b1", "b2"):
        stored_machine(pm, fake, name, **{"digitalocean-access-token": "second-account-token"})
    before = len(fake.requests)
    states = pm.ok("ls", "--format", "{{.Name}}={{.State}}").stdout.split()
    assert states == ["a1=Running", "a2=Running", "b1=Running", "b2=Running"]
    calls = fake.requests[before:]
    assert sorted((c.path, c.authorization) for c in calls) == [
        ("/v2/droplets", "Bearer fake-do-token"), ("/v2/droplets", "Bearer second-account-token")]
