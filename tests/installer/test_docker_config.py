"""cliPluginsExtraDirs merged into existing Docker configs: nothing the user had is lost or rewritten."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pymachine.installer import docker_config
from pymachine.installer.docker_config import add_plugin_dir, bundled_plugin_dir, config_path, remove_plugin_dir
from pymachine.machine.errors import MachineError

PLUGINS = "/usr/local/pymachine/cli-plugins"


def test_config_path_follows_docker_config_then_home(tmp_path, monkeypatch):
    assert config_path({"DOCKER_CONFIG": str(tmp_path)}) == tmp_path / "config.json"
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    assert config_path() == tmp_path / "h" / ".docker" / "config.json"


def test_missing_config_is_created_private(tmp_path):
    cfg = tmp_path / "new" / ".docker" / "config.json"
    assert add_plugin_dir(PLUGINS, cfg) is True
    assert json.loads(cfg.read_text()) == {"cliPluginsExtraDirs": [PLUGINS]}
    assert cfg.stat().st_mode & 0o777 == 0o600 and cfg.parent.stat().st_mode & 0o777 == 0o700


def test_existing_keys_order_and_mode_are_kept_and_second_run_changes_nothing(tmp_path):
    cfg = tmp_path / "config.json"
    original = {"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"}}, "credsStore": "osxkeychain",
                "cliPluginsExtraDirs": ["/opt/homebrew/lib/docker/cli-plugins"], "currentContext": "desktop-linux",
                "proxies": {"default": {"httpProxy": "http://127.0.0.1:3128"}}}
    cfg.write_text(json.dumps(original, indent=2))
    cfg.chmod(0o644)
    assert add_plugin_dir(PLUGINS, cfg) is True
    merged = json.loads(cfg.read_text())
    assert list(merged) == list(original)  # key order kept
    assert merged == {**original, "cliPluginsExtraDirs": ["/opt/homebrew/lib/docker/cli-plugins", PLUGINS]}
    assert cfg.stat().st_mode & 0o777 == 0o644
    before = cfg.read_bytes()
    assert add_plugin_dir(PLUGINS + "/", cfg) is False  # same dir, spelled differently
    assert cfg.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name != "config.json"]  # no temp file left


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
        add_plugin_dir(PLUGINS, cfg)
    assert "\n" not in str(exc.value)
    assert cfg.read_text() == text
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_bom_empty_and_symlinked_configs(tmp_path):
    bom = tmp_path / "bom.json"
    bom.write_bytes(b'\xef\xbb\xbf{"psFormat": "x"}')  # Windows PowerShell 5 writes UTF-8 with a BOM
    add_plugin_dir("C:\\Program Files\\pymachine\\cli-plugins", bom)
    assert json.loads(bom.read_text()) == {"psFormat": "x", "cliPluginsExtraDirs": ["C:\\Program Files\\pymachine\\cli-plugins"]}
    empty = tmp_path / "empty.json"
    empty.write_text("")
    add_plugin_dir(PLUGINS, empty)
    assert json.loads(empty.read_text()) == {"cliPluginsExtraDirs": [PLUGINS]}
    target = tmp_path / "dotfiles" / "docker.json"
    target.parent.mkdir()
    target.write_text('{"detachKeys": "ctrl-e,e"}')
    link = tmp_path / "linked.json"
    link.symlink_to(target)
    add_plugin_dir(PLUGINS, link)
    assert link.is_symlink()  # the user's dotfile link survives; its target is updated
    assert json.loads(target.read_text()) == {"detachKeys": "ctrl-e,e", "cliPluginsExtraDirs": [PLUGINS]}


def test_remove_drops_only_ours(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {}, "cliPluginsExtraDirs": ["/opt/a", PLUGINS]}))
    assert remove_plugin_dir(PLUGINS, cfg) is True
    assert json.loads(cfg.read_text()) == {"auths": {}, "cliPluginsExtraDirs": ["/opt/a"]}
    assert remove_plugin_dir(PLUGINS, cfg) is False
    add_plugin_dir(PLUGINS, cfg)
    remove_plugin_dir("/opt/a", cfg)
    remove_plugin_dir(PLUGINS, cfg)
    assert json.loads(cfg.read_text()) == {"auths": {}}  # the key goes when it is empty
    assert remove_plugin_dir(PLUGINS, tmp_path / "absent.json") is False
    assert not (tmp_path / "absent.json").exists()


def test_cli_entry_prints_and_fails_in_one_line(tmp_path):
    cfg = tmp_path / "config.json"
    run = lambda *a: subprocess.run([sys.executable, "-m", "pymachine.installer", "cli-plugins", *a],
                                    capture_output=True, text=True, timeout=60, check=False)
    ok = run(PLUGINS, "--config", str(cfg))
    assert ok.returncode == 0 and ok.stdout.strip() == f"{cfg}: cliPluginsExtraDirs updated"
    assert run(PLUGINS, "--config", str(cfg)).stdout.strip() == f"{cfg}: cliPluginsExtraDirs unchanged"
    cfg.write_text("{oops")
    bad = run(PLUGINS, "--config", str(cfg))
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "not valid JSON" in bad.stderr
    assert cfg.read_text() == "{oops"


def test_quickstart_registers_the_bundled_plugin_for_its_user(tmp_path, monkeypatch):
    from pymachine.installer import quickstart

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
    assert os.path.exists(home / "config.json") and (home / "config.json").read_text() == "not json"
