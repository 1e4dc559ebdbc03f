"""Issue 13, items 2, 3 and 5: the store's names and directories are trusted, its files are not.

Every test drives the installed ``pymachine`` against a private store (the
``pm`` fixture) and hand-edits the store the way a user (or an attacker with
write access to one machine directory) could.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
from pathlib import Path

import pytest

URL = "tcp://127.0.0.1:1"


def tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under ``root`` (lock files included) with its mode and content digest."""
    out: dict[str, tuple[int, str]] = {}
    if not root.exists():
        return out
    for path in sorted(root.rglob("*")):
        if path.name == "pymachine-state.json":
            continue  # ls's cache of the last state seen
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[str(path.relative_to(root))] = (stat.S_IMODE(st.st_mode), digest)
    return out


def one_line_error(res) -> str:
    assert res.returncode != 0, res.stdout
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {res.stderr!r}"
    assert "Traceback" not in res.stderr and "Error: " + "OSError" not in res.stderr
    return lines[0]


def ls_rows(pm) -> dict[str, dict]:
    res = pm.ok("ls", "--format", "{{json .}}")
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    return {row["Name"]: row for row in rows}


# -- item 3: names are validated before anything touches the disk ----------------------------


@pytest.mark.parametrize("command", [["stop"], ["start"], ["kill"], ["restart"], ["provision"],
                                     ["upgrade"], ["regenerate-certs", "-f"], ["rm", "-f"]])
def test_hostile_names_make_no_lock_file_anywhere(pm, tmp_path, command):
    pm.ok("create", "-d", "none", "--url", URL, "first")
    outside = tmp_path / "outside"
    outside.mkdir()
    before_store, before_outside = tree(pm.store), tree(tmp_path / "outside")
    for name in (str(outside / "x"), "../x", "../../outside/y", "ghost", "a" * 300):
        res = pm(*command, name)
        assert res.returncode != 0
        assert "Traceback" not in res.stderr
    assert tree(pm.store) == before_store  # no locks/ghost.lock, no store/x.lock
    assert tree(outside) == before_outside  # no /…/outside/x.lock
    assert not list(tmp_path.glob("*.lock"))


def test_trailing_newline_is_not_a_valid_name(pm):
    pm.ok("create", "-d", "none", "--url", URL, "first")
    before = tree(pm.store)
    res = pm("create", "-d", "none", "--url", URL, "second\n")
    assert one_line_error(res).startswith("Error creating machine: Invalid hostname specified.")
    assert tree(pm.store) == before
    assert sorted(p.name for p in (pm.store / "machines").iterdir()) == ["first"]


def test_name_length_limit_is_one_every_command_handles(pm):
    longest = "n" * 63
    pm.ok("create", "-d", "none", "--url", URL, longest)
    assert longest in ls_rows(pm)
    pm.ok("inspect", longest)
    pm.ok("url", longest)
    pm.ok("regenerate-certs", "-f", longest)
    pm.ok("rm", "-y", longest)
    assert list((pm.store / "machines").iterdir()) == []
    before = tree(pm.store)
    for length in (64, 240, 251, 255, 300):
        res = pm("create", "-d", "none", "--url", URL, "n" * length)
        assert "at most 63 characters" in one_line_error(res)
        assert tree(pm.store) == before  # no orphan directory, no lock


# -- item 2: the directory name is the machine's identity -------------------------------------


def test_removing_a_copied_machine_dir_never_touches_the_original(pm):
    pm.ok("create", "-d", "none", "--url", URL, "prod")
    machines = pm.store / "machines"
    shutil.copytree(machines / "prod", machines / "prod-copy", symlinks=True)  # cp -a
    prod_before = tree(machines / "prod")

    rows = ls_rows(pm)
    assert rows["prod"]["State"] == "Running" and "rm -f" not in rows["prod"]["Error"]
    assert rows["prod-copy"]["State"] == "Error"
    assert "rm -f prod-copy" in rows["prod-copy"]["Error"]

    res = pm("rm", "-y", "prod-copy")
    assert res.returncode != 0 and "prod-copy" in res.stderr
    assert tree(machines / "prod") == prod_before

    pm.ok("rm", "-f", "prod-copy")
    assert not (machines / "prod-copy").exists()
    assert tree(machines / "prod") == prod_before
    pm.ok("inspect", "prod")
    assert set(ls_rows(pm)) == {"prod"}


def test_crafted_name_in_config_reaches_nothing_outside_the_store(pm, tmp_path):
    pm.ok("create", "-d", "none", "--url", URL, "evil")
    victim = tmp_path / "x"  # what store/machines/../../x resolves to
    victim.mkdir()
    (victim / "config.json").write_text('{"precious": true}')
    (victim / "server.pem").write_text("not yours")
    victim_before = tree(victim)
    config = pm.store / "machines" / "evil" / "config.json"
    data = json.loads(config.read_text())
    data["Name"] = data["Driver"]["MachineName"] = "../../x"
    config.write_text(json.dumps(data))

    assert ls_rows(pm)["evil"]["State"] == "Error"
    for args in (["rm", "-y", "evil"], ["regenerate-certs", "-f", "evil"], ["inspect", "evil"],
                 ["env", "evil"], ["ls"]):
        pm(*args)
        assert tree(victim) == victim_before, args
    pm.ok("rm", "-f", "evil")
    assert tree(victim) == victim_before
    assert list((pm.store / "machines").iterdir()) == []


# -- item 5: one bad machine never takes down the store ---------------------------------------


def _write_bad(pm, name: str, text: str) -> None:
    d = pm.store / "machines" / name
    d.mkdir(mode=0o700)
    (d / "config.json").write_text(text)


def _good_config(pm, name: str) -> dict:
    data = json.loads((pm.store / "machines" / "good" / "config.json").read_text())
    data["Name"] = data["Driver"]["MachineName"] = name
    data["Driver"]["URL"] = "tcp://127.0.0.1:2"  # never the active one
    return data


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


BAD_CONFIGS = {
    "deep": lambda good: '{"a":' * 200_000 + "1" + "}" * 200_000,
    "deep-in-driver": lambda good: json.dumps({**good, "Driver": {**good["Driver"], "X": _nested(60)}}),
    "auth-list": lambda good: json.dumps({**good, "HostOptions": {**good["HostOptions"], "AuthOptions": []}}),
    "engine-str": lambda good: json.dumps({**good, "HostOptions": {**good["HostOptions"], "EngineOptions": "x"}}),
    "labels-int": lambda good: json.dumps({**good, "HostOptions": {**good["HostOptions"], "EngineOptions": {
        **good["HostOptions"]["EngineOptions"], "Labels": 5}}}),
    "swarm-list": lambda good: json.dumps({**good, "HostOptions": {**good["HostOptions"], "SwarmOptions": [1]}}),
    "driver-url-obj": lambda good: json.dumps({**good, "Driver": {**good["Driver"], "URL": {"a": 1}}}),
    "pymachine-list": lambda good: json.dumps({**good, "Pymachine": [1, 2]}),
    "name-int": lambda good: json.dumps({**good, "Name": 7}),
    "discovery-list": lambda good: json.dumps({**good, "HostOptions": {**good["HostOptions"], "SwarmOptions": {
        "IsSwarm": True, "Master": True, "Discovery": ["x"]}}}),
}


@pytest.mark.parametrize("kind", sorted(BAD_CONFIGS))
def test_one_bad_config_is_one_error_row_removable_with_rm_f(pm, kind):
    pm.ok("create", "-d", "none", "--url", URL, "good")
    name = f"bad-{kind}"
    _write_bad(pm, name, BAD_CONFIGS[kind](_good_config(pm, name)))

    res = pm("ls")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and "RecursionError" not in res.stderr
    rows = ls_rows(pm)
    assert set(rows) == {"good", name}
    assert rows["good"]["State"] == "Running"
    if kind not in ("labels-int", "discovery-list", "driver-url-obj"):  # harmless oddities may load
        assert rows[name]["State"] == "Error" and rows[name]["Error"]

    res = pm("active", env={"DOCKER_HOST": URL})
    assert res.returncode == 0 and res.stdout.strip() == "good", res.stderr
    res = pm("ls", "--filter", "label=a=b")
    assert res.returncode == 0 and "Traceback" not in res.stderr

    pm.ok("rm", "-f", name)
    assert set(ls_rows(pm)) == {"good"}


def test_recorded_server_key_path_never_reads_a_file_outside_the_machine(pm, tmp_path):
    """A ServerKeyPath edited to name another file is ignored: provisioning would upload it."""
    from pymachine.machine.authpaths import machine_tls
    from pymachine.machine.store import Store

    pm.ok("create", "-d", "none", "--url", URL, "m")
    secret = tmp_path / "id_rsa"
    secret.write_text("not for the machine")
    config = pm.store / "machines" / "m" / "config.json"
    data = json.loads(config.read_text())
    data["HostOptions"]["AuthOptions"].update(ServerKeyPath=str(secret), ServerCertPath=str(secret))
    config.write_text(json.dumps(data))
    store = Store(pm.store)
    tls = machine_tls(store, store.load("m"))
    assert tls.server_key == pm.store / "machines" / "m" / "server-key.pem"
    assert tls.server_cert == pm.store / "machines" / "m" / "server.pem"


def test_crafted_store_path_in_driver_config_reaches_nothing_outside(pm, tmp_path):
    """A qemu config whose StorePath names another store: ls and rm work on this store's directory only."""
    victim = tmp_path / "victim" / "machines" / "q"
    victim.mkdir(parents=True)
    for name in ("disk.qcow2", "seed.iso", "console.log", "qemu.log"):
        (victim / name).write_text("keep")
    before = tree(tmp_path / "victim")
    d = pm.store / "machines" / "q"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({
        "ConfigVersion": 3, "DriverName": "qemu", "Name": "q", "HostOptions": {},
        "Driver": {"MachineName": "q", "StorePath": str(tmp_path / "victim")}}))
    assert "q" in ls_rows(pm)
    pm.ok("rm", "-y", "q")
    assert not d.exists()
    assert tree(tmp_path / "victim") == before


def test_a_long_name_an_older_version_made_still_lists_and_removes(pm):
    pm.ok("create", "-d", "none", "--url", URL, "good")
    long = "l" * 150  # over today's limit of 63, as earlier versions allowed
    shutil.copytree(pm.store / "machines" / "good", pm.store / "machines" / long)
    config = pm.store / "machines" / long / "config.json"
    data = json.loads(config.read_text())
    data["Name"] = data["Driver"]["MachineName"] = long
    config.write_text(json.dumps(data))
    assert ls_rows(pm)[long]["State"] == "Running"
    pm.ok("rm", "-y", long)
    assert sorted(p.name for p in (pm.store / "machines").iterdir()) == ["good"]
    assert not (pm.store / "locks" / f"{long}.lock").exists()
