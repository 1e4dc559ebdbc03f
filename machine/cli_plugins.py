"""Let the docker CLI find the bundled Compose plugin: add its directory to
``cliPluginsExtraDirs`` in the user's Docker config, merged, never clobbered.

Why the config and not ``~/.docker/cli-plugins``: the installers put Compose in
their own tree (``/usr/local/pymachine/cli-plugins``, ``%ProgramFiles%\\pymachine\\cli-plugins``)
so an upgrade or an uninstall replaces exactly it; copying it into each user's
home would leave stale binaries behind.  The docker CLI (>= 20.10) searches
``cliPluginsExtraDirs`` before its default plugin directories.

One implementation, run by the macOS postinstall (as the console user), the
Windows installer, and every ``pymachine quickstart`` (for users who did not
run the installer): a runtime module, so quickstart needs nothing from the
installer builder.  The config is read and written by machine.docker_context's
rules (``$DOCKER_CONFIG`` or ``~/.docker``, a symlinked config.json followed,
tab-indented, atomic, mode kept).  A config that is not a JSON object, or whose
``cliPluginsExtraDirs`` is not a list of strings, is left untouched: the user
gets a one-line error instead of a rewritten file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pymachine.machine.atomic import write_atomic
from pymachine.machine.docker_context import _config_path, _load_config, docker_config_dir
from pymachine.machine.errors import MachineError

KEY = "cliPluginsExtraDirs"


def _same(a: str, b: str) -> bool:
    return os.path.normcase(os.path.normpath(a)) == os.path.normcase(os.path.normpath(b))


def _load(cfg: Path) -> dict[str, Any]:
    data = _load_config(cfg)
    dirs = data.get(KEY, [])
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise MachineError(f"{_config_path(cfg)}: {KEY} is not a list of paths; left unchanged")
    return data


def _save(cfg: Path, data: dict[str, Any]) -> None:
    path = _config_path(cfg)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600  # it may come to hold registry credentials
    write_atomic(path, json.dumps(data, indent="\t", ensure_ascii=False).encode("utf-8"), mode)


def add_plugin_dir(directory: str | os.PathLike[str], cfg: Path | None = None) -> bool:
    """Append ``directory`` to ``cliPluginsExtraDirs`` of the config in ``cfg`` (default: the
    user's Docker config dir); False if it was there already (the file is not rewritten)."""
    cfg = cfg if cfg is not None else docker_config_dir()
    data = _load(cfg)
    dirs: list[str] = list(data.get(KEY, []))
    if any(_same(d, os.fspath(directory)) for d in dirs):
        return False
    data[KEY] = [*dirs, os.fspath(directory)]
    _save(cfg, data)
    return True


def remove_plugin_dir(directory: str | os.PathLike[str], cfg: Path | None = None) -> bool:
    """Drop ``directory`` from ``cliPluginsExtraDirs`` (the uninstallers); False if absent."""
    cfg = cfg if cfg is not None else docker_config_dir()
    if not _config_path(cfg).exists():
        return False
    data = _load(cfg)
    dirs: list[str] = list(data.get(KEY, []))
    kept = [d for d in dirs if not _same(d, os.fspath(directory))]
    if kept == dirs:
        return False
    if kept:
        data[KEY] = kept
    else:
        data.pop(KEY, None)
    _save(cfg, data)
    return True


def bundled_plugin_dir(lib: Path | None = None) -> Path | None:
    """``<prefix>/cli-plugins`` of the installed tree this pymachine runs from (``<prefix>/lib/pymachine``)."""
    if lib is None:
        import pymachine

        lib = Path(pymachine.__file__).resolve().parent.parent
    candidate = lib.parent / "cli-plugins"
    has_compose = (candidate / "docker-compose").is_file() or (candidate / "docker-compose.exe").is_file()
    return candidate if has_compose else None
