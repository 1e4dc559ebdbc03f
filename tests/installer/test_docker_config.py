"""cliPluginsExtraDirs merged into existing Docker configs: nothing the user had is lost or rewritten."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pymachine.machine import cli_plugins as docker_config
from pymachine.machine.cli_plugins import add_plugin_dir, bundled_plugin_dir, remove_plugin_dir
from pymachine.machine.errors import MachineError

PLUGINS = "/usr/local/pymachine/cli-plugins"


def test_missing_config_is_created_private(tmp_path):
    cfg = tmp_path / "new" / ".docker"
    assert add_plugin_dir(PLUGINS, cfg) is True
    assert json.loads((cfg / "config.json").read_text()) == {"cliPluginsExtraDirs": [PLUGINS]}
    assert (cfg / "config.json").stat().st_mode & 0o777 == 0o600 and cfg.stat().st_mode & 0o777 == 0o700


def test_default_is_the_users_docker_config(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    assert add_plugin_dir(PLUGINS) is True
    assert json.loads((tmp_path / "dc" / "config.json").read_text()) == {"cliPluginsExtraDirs": [PLUGINS]}


def test_existing_keys_order_and_mode_are_kept_and_second_run_changes_nothing(tmp_path):
    cfg = tmp_path / "config.json"
    original = {"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"}}, "credsStore": "osxkeychain",
                "cliPluginsExtraDirs": ["/opt/homebrew/lib/docker/cli-plugins"], "currentContext": "desktop-linux",
                "proxies": {"default": {"httpProxy": "http://127.0.0.1:3128"}}}
    cfg.write_text(json.dumps(original, indent=2))
    cfg.chmod(0o644)
    assert add_plugin_dir(PLUGINS, tmp_path) is True
    merged = json.loads(cfg.read_text())
    assert list(merged) == list(original)  # key order kept
    assert merged == {**original, "cliPluginsExtraDirs": ["/opt/homebrew/lib/docker/cli-plugins", PLUGINS]}
    assert cfg.stat().st_mode & 0o777 == 0o644
    before = cfg.read_bytes()
    assert add_plugin_dir(PLUGINS + "/", tmp_path) is False  # same dir, spelled differently
    assert cfg.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temp file left


@pytest.mark.parametrize("text, why", [
    ('{"auths": {', "not valid JSON"),
    ('["a"]', "not a JSON object"),
    ('{"cliPluginsExtraDirs": "/opt/x"}', "not a list of paths"),
    ('{"cliPluginsExtraDirs": [1]}', "not a list of paths"),
])
def test_unusable_config_is_left_byte_for_byte(tmp_path, text, why):
    cfg = tmp_path / "config.json"
    cfg.write_text(text)
    with pytest.raises(MachineError, match=why) as exc:
        add_plugin_dir(PLUGINS, tmp_path)
    assert "\n" not in str(exc.value)
    assert cfg.read_text() == text
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_empty_and_symlinked_configs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("")
    add_plugin_dir("C:\\Program Files\\pymachine\\cli-plugins", empty)
    assert json.loads((empty / "config.json").read_text()) == {
        "cliPluginsExtraDirs": ["C:\\Program Files\\pymachine\\cli-plugins"]}
    target = tmp_path / "dotfiles" / "docker.json"
    target.parent.mkdir()
    target.write_text('{"detachKeys": "ctrl-e,e"}')
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "config.json").symlink_to(target)
    add_plugin_dir(PLUGINS, linked)
    assert (linked / "config.json").is_symlink()  # the user's dotfile link survives; its target is updated
    assert json.loads(target.read_text()) == {"detachKeys": "ctrl-e,e", "cliPluginsExtraDirs": [PLUGINS]}


def test_remove_drops_only_ours(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {}, "cliPluginsExtraDirs": ["/opt/a", PLUGINS]}))
    assert remove_plugin_dir(PLUGINS, tmp_path) is True
    assert json.loads(cfg.read_text()) == {"auths": {}, "cliPluginsExtraDirs": ["/opt/a"]}
    assert remove_plugin_dir(PLUGINS, tmp_path) is False
    add_plugin_dir(PLUGINS, tmp_path)
    remove_plugin_dir("/opt/a", tmp_path)
    remove_plugin_dir(PLUGINS, tmp_path)
    assert json.loads(cfg.read_text()) == {"auths": {}}  # the key goes when it is empty
    assert remove_plugin_dir(PLUGINS, tmp_path / "absent") is False
    assert not (tmp_path / "absent").exists()


def test_cli_entry_prints_and_fails_in_one_line(tmp_path):
    cfg = tmp_path / "config.json"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pymachine.installer", "cli-plugins", *args],
                              capture_output=True, text=True, timeout=60, check=False)

    ok = run(PLUGINS, "--config-dir", str(tmp_path))
    assert ok.returncode == 0 and ok.stdout.strip() == f"{cfg}: cliPluginsExtraDirs updated"
    assert run(PLUGINS, "--config-dir", str(tmp_path)).stdout.strip() == f"{cfg}: cliPluginsExtraDirs unchanged"
    removed = run("--remove", PLUGINS, "--config-dir", str(tmp_path))
    assert removed.returncode == 0 and json.loads(cfg.read_text()) == {}
    cfg.write_text("{oops")
    bad = run(PLUGINS, "--config-dir", str(tmp_path))
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "not valid JSON" in bad.stderr
    assert cfg.read_text() == "{oops"


def test_quickstart_registers_the_bundled_plugin_for_its_user(tmp_path, monkeypatch):
    from pymachine.machine import quickstart

    prefix = tmp_path / "pymachine"
    (prefix / "lib").mkdir(parents=True)
    assert bundled_plugin_dir(prefix / "lib") is None  # a checkout or a wheel: nothing to register
    (prefix / "cli-plugins").mkdir()
    (prefix / "cli-plugins" / "docker-compose").write_bytes(b"\x7fELF")
    assert bundled_plugin_dir(prefix / "lib") == prefix / "cli-plugins"
    monkeypatch.setattr(docker_config, "bundled_plugin_dir", lambda: prefix / "cli-plugins")
    warnings: list[str] = []
    home = tmp_path / "docker-home"
    quickstart.register_bundled_compose({"DOCKER_CONFIG": str(home)}, warnings.append)
    assert json.loads((home / "config.json").read_text()) == {"cliPluginsExtraDirs": [str(prefix / "cli-plugins")]}
    (home / "config.json").write_text("not json")
    quickstart.register_bundled_compose({"DOCKER_CONFIG": str(home)}, warnings.append)
    assert len(warnings) == 1 and "not valid JSON" in warnings[0]  # a warning, never fatal
    assert (home / "config.json").read_text() == "not json"
