"""Let the docker CLI find the bundled Compose plugin: add its directory to
``cliPluginsExtraDirs`` in the user's Docker config, merged, never clobbered.

Why the config and not ``~/.docker/cli-plugins``: the installers put Compose in
their own tree (``/usr/local/pymachine/cli-plugins``, ``%ProgramFiles%\\pymachine\\cli-plugins``)
so an upgrade or an uninstall replaces exactly it; copying it into each user's
home would leave stale binaries behind.  The docker CLI (>= 20.10) searches
``cliPluginsExtraDirs`` before its default plugin directories.

One implementation, run by the macOS postinstall (as the console user), the
Windows installer, and every ``pymachine quickstart`` (for users who did not
run the installer).  A config that is not a JSON object, or whose
``cliPluginsExtraDirs`` is not a list of strings, is left untouched: the user
gets a one-line error instead of a rewritten file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pymachine.machine.atomic import write_atomic
from pymachine.machine.errors import MachineError

KEY = "cliPluginsExtraDirs"


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json`` (the docker CLI's own rule)."""
    env = os.environ if environ is None else environ
    base = env.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return Path(base) / "config.json"


def _same(a: str, b: str) -> bool:
    return os.path.normcase(os.path.normpath(a)) == os.path.normcase(os.path.normpath(b))


def _load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise MachineError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MachineError(f"{path} is not valid JSON ({exc}); left unchanged: add {KEY} yourself") from None
    if not isinstance(data, dict):
        raise MachineError(f"{path} is not a JSON object; left unchanged")
    dirs = data.get(KEY, [])
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise MachineError(f"{path}: {KEY} is not a list of paths; left unchanged")
    return data


def _save(path: Path, data: dict[str, Any]) -> None:
    """Atomic write keeping the file's mode (0600 for a new one: it may hold credentials)."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    # the docker CLI's own layout (tab-indented)
    write_atomic(path, (json.dumps(data, indent="\t") + "\n").encode("utf-8"), mode)


def add_plugin_dir(directory: str | os.PathLike[str], config: Path | None = None) -> bool:
    """Append ``directory`` to the config's ``cliPluginsExtraDirs``; False if it was there."""
    path = (config or config_path()).resolve()  # a symlinked config.json: write its target
    data = _load(path)
    dirs: list[str] = list(data.get(KEY, []))
    if any(_same(d, os.fspath(directory)) for d in dirs):
        return False
    data[KEY] = [*dirs, os.fspath(directory)]
    _save(path, data)
    return True


def remove_plugin_dir(directory: str | os.PathLike[str], config: Path | None = None) -> bool:
    """Drop ``directory`` from ``cliPluginsExtraDirs`` (the uninstallers); False if absent."""
    path = (config or config_path()).resolve()
    if not path.exists():
        return False
    data = _load(path)
    dirs: list[str] = list(data.get(KEY, []))
    kept = [d for d in dirs if not _same(d, os.fspath(directory))]
    if kept == dirs:
        return False
    if kept:
        data[KEY] = kept
    else:
        data.pop(KEY, None)
    _save(path, data)
    return True


def bundled_plugin_dir(lib: Path | None = None) -> Path | None:
    """``<prefix>/cli-plugins`` of the installed tree this pymachine runs from (``<prefix>/lib/pymachine``)."""
    if lib is None:
        import pymachine

        lib = Path(pymachine.__file__).resolve().parent.parent
    candidate = lib.parent / "cli-plugins"
    has_compose = (candidate / "docker-compose").is_file() or (candidate / "docker-compose.exe").is_file()
    return candidate if has_compose else None
