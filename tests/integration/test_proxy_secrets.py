"""Proxy credentials stay out of config.json and every printout, yet reach the engine.

Drives ``create`` as a user would, then reads every file in the store and every
printing command for the passwords; the engine's configuration is rendered from
the stored machine by the same code provisioning uses.
"""

from __future__ import annotations

import json
import os
import stat

import pytest
from pymachine.machine.host import Machine
from pymachine.machine.provision import build_plan
from pymachine.machine.store import Store
from pymachine.provisioners.debian import DebianProvisioner

pytestmark = pytest.mark.integration

HTTP = "http://bob:S3cretHttpPW@proxy.example:3128"
HTTPS = "https://alice:S3cretHttpsPW@proxy.example:3129"
ENV = "http://carol:S3cretEnvPW@proxy.example:8080"
PASSWORDS = ("S3cretHttpPW", "S3cretHttpsPW", "S3cretEnvPW")


@pytest.fixture
def px(pm):
    pm.ok("create", "-d", "none", "--url", "tcp://127.0.0.1:2376", "--http-proxy", HTTP,
          "--https-proxy", HTTPS, "--no-proxy", "localhost,.corp",
          "--engine-env", f"FTP_PROXY={ENV}", "--engine-env", "PLAIN=value", "px")
    return pm


def test_config_json_keeps_no_password_and_secrets_json_is_private(px):
    mdir = px.store / "machines" / "px"
    for path in px.store.rglob("*"):
        if path.is_file() and path.name != "secrets.json":
            data = path.read_bytes()
            assert not any(pw.encode() in data for pw in PASSWORDS), path
    cfg = json.loads((mdir / "config.json").read_text())
    engine = cfg["HostOptions"]["EngineOptions"]
    assert engine["Pymachine"]["Proxy"]["HttpProxy"] == "http://bob:****@proxy.example:3128"
    assert "FTP_PROXY=http://carol:****@proxy.example:8080" in engine["Env"]
    assert "PLAIN=value" in engine["Env"]
    secrets = mdir / "secrets.json"
    assert stat.S_IMODE(os.stat(secrets).st_mode) == 0o600
    kept = json.loads(secrets.read_text())
    assert set(kept.values()) == {HTTP, HTTPS, ENV}


@pytest.mark.parametrize("argv", [["inspect", "px"], ["ls", "--format", "json"],
                                  ["ls", "--format", "{{json .}}"], ["config", "px"],
                                  ["inspect", "-f", "{{json .HostOptions}}", "px"]])
def test_no_command_prints_a_proxy_password(px, argv):
    res = px(*argv)
    assert not any(pw in res.stdout + res.stderr for pw in PASSWORDS), argv


def test_the_engine_still_gets_the_real_proxy_urls(px):
    store = Store(px.store)
    machine = Machine.load(store, "px")
    plan = build_plan(machine)
    assert plan.engine.proxy.http_proxy == HTTP
    assert plan.engine.proxy.https_proxy == HTTPS
    assert f"FTP_PROXY={ENV}" in plan.engine.env
    rendered = "\n".join(DebianProvisioner.first_boot(plan).engine_files().values())
    assert HTTP in rendered and HTTPS in rendered
    assert "****" not in rendered


def test_saving_again_keeps_the_secret_and_a_hand_edited_proxy_wins(px):
    store = Store(px.store)
    machine = Machine.load(store, "px")
    machine.save()  # a later save (e.g. after start) must not lose or expose the secret
    assert build_plan(Machine.load(store, "px")).engine.proxy.http_proxy == HTTP
    cfg_path = px.store / "machines" / "px" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["HostOptions"]["EngineOptions"]["Pymachine"]["Proxy"]["HttpProxy"] = "http://other:3128"
    cfg_path.write_text(json.dumps(cfg))
    assert build_plan(Machine.load(store, "px")).engine.proxy.http_proxy == "http://other:3128"
