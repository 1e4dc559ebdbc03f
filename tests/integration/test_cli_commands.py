"""The everyday commands as a docker-machine user types them."""

from __future__ import annotations

import json


def test_help_and_version(pm):
    res = pm.ok("--help")
    assert res.stdout.startswith(
        "Usage: pymachine [OPTIONS] COMMAND [arg...]\n\nCreate and manage machines running Docker."
    )
    for command in ("active", "config", "create", "env", "inspect", "ip", "kill", "ls", "mount", "provision",
                    "regenerate-certs", "restart", "rm", "ssh", "scp", "start", "status", "stop", "upgrade",
                    "url", "use", "version", "completion", "ssh-config"):
        assert f"\n  {command} " in res.stdout
    assert "__complete" not in res.stdout  # the shell scripts' hook stays hidden
    assert pm.ok("--version").stdout.startswith("pymachine version 0.1.0, build ")
    assert pm.ok("version").stdout == pm.ok("-v").stdout
    assert "--url" in pm.ok("create", "-d", "none", "--help").stdout
    assert "Usage: pymachine ls" in pm.ok("help", "ls").stdout


def test_rm_asks_unless_told(pm):
    pm.ok("create", "-d", "none", "--url", "tcp://127.0.0.1:9", "keep")
    res = pm.ok("rm", "keep", input="n\n")
    assert res.stdout == ("About to remove keep\nWARNING: This action will delete both local reference and "
                          "remote instance.\nAre you sure? (y/n): ")
    assert (pm.store / "machines" / "keep").exists()
    res = pm.ok("rm", "keep", input="y\n")
    assert res.stdout.endswith("Successfully removed keep\n")
    assert not (pm.store / "machines" / "keep").exists()


def test_default_machine_and_queries(pm):
    pm.ok("create", "-d", "none", "--url", "tcp://127.0.0.1:7777", "default")
    assert pm.ok("ip").stdout == "127.0.0.1:7777\n"
    assert pm.ok("url").stdout == "tcp://127.0.0.1:7777\n"
    assert pm.ok("status").stdout == "Running\n"
    assert json.loads(pm.ok("inspect").stdout)["Name"] == "default"
    res = pm("active")
    assert res.returncode == 1 and res.stderr.strip() == "No active host found"
    res = pm("kill")
    assert res.returncode == 1 and "hosts without a driver cannot be killed" in res.stderr


def test_multi_machine_actions_and_ls_order(pm):
    for name in ("m10", "m2", "M1"):
        pm.ok("create", "-d", "none", "--url", f"tcp://127.0.0.1:{len(name)}", name)
    assert sorted(pm.ok("ip", "m10", "m2").out_lines) == ["127.0.0.1:2", "127.0.0.1:3"]
    # ls sorts naturally on lower-cased names, as docker-machine did.
    names = [line.split()[0] for line in pm.ok("ls", "--timeout", "1").out_lines[1:]]
    assert names == ["M1", "m2", "m10"]
    res = pm("stop", "m10", "m2")
    assert res.returncode == 1
    assert res.stderr.count("hosts without a driver cannot be stopped") == 2


def test_debug_flag_and_storage_path_flag(pm, tmp_path):
    other = tmp_path / "elsewhere"
    pm.ok("-s", str(other), "create", "-d", "none", "--url", "tcp://127.0.0.1:5", "far")
    assert (other / "machines" / "far" / "config.json").exists()
    assert pm.ok("--storage-path", str(other), "ls", "-q").out_lines == ["far"]
    assert pm.ok("ls", "-q").out_lines == []
    res = pm.ok("--debug", "-s", str(other), "ls", "-q")
    assert res.out_lines == ["far"]
