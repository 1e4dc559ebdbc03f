"""Docker CLI contexts for `pymachine use NAME` / `pymachine use -u` and `rm`.

Instead of exporting DOCKER_HOST into one shell (`env`), `use` writes a
docker context, so every shell and tool that honours contexts talks to the
machine.  The layout is the docker CLI's own (docker/cli
``cli/context/store``), checked against CLI 20.10 and 28:

* ``$DOCKER_CONFIG/contexts/meta/<sha256(name)>/meta.json`` =
  ``{"Name", "Metadata": {"Description", ...}, "Endpoints": {"docker": {"Host", "SkipTLSVerify"}}}``
* ``$DOCKER_CONFIG/contexts/tls/<sha256(name)>/docker/{ca,cert,key}.pem``
* ``currentContext`` in ``$DOCKER_CONFIG/config.json`` (absent = "default").

Ownership and the context to return to are kept in the context's own
Metadata (``pymachine.machine``, ``pymachine.previous``), which the docker
CLI keeps and shows but ignores.  ``previous`` is always a context that
pymachine did not create: switching from one machine to another inherits it,
so ``unuse`` returns to what the user had before pymachine took over.
Every file is written atomically (machine.atomic) so a crash never leaves
a half-written meta.json, which would break every `docker context` command.
"""

from __future__ import annotations

import hashlib
import json
import ntpath
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pymachine.machine import layout
from pymachine.machine.atomic import write_atomic
from pymachine.machine.errors import MachineError

DEFAULT_CONTEXT = "default"
OWNER_KEY = "pymachine.machine"
PREVIOUS_KEY = "pymachine.previous"
TLS_FILES = layout.CLIENT_FILES
# The docker CLI's own name check, minus its 2-character minimum: a
# one-letter machine name works when written directly (verified with the CLI).
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.+-]*$")
# Variables that make the docker CLI ignore currentContext.
OVERRIDING_VARIABLES = ("DOCKER_HOST", "DOCKER_CONTEXT")


def docker_config_dir(environ: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """``$DOCKER_CONFIG``, else ``<home>/.docker`` (the docker CLI's rule).

    Home is the docker CLI's: %USERPROFILE% on Windows (docker.exe ignores the HOME
    that Git Bash sets), else $HOME -- as store.default_storage_path does.
    """
    env = os.environ if environ is None else environ
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"])
    if (sys.platform if platform is None else platform).startswith("win"):
        home = env.get("USERPROFILE") or env.get("HOME") or str(Path.home())
        return Path(ntpath.join(home, ".docker"))
    unix_home = env.get("HOME") or env.get("USERPROFILE")
    return (Path(unix_home) if unix_home else Path.home()) / ".docker"


def context_name(machine: str) -> str:
    """The context for a machine: its name, except "default", which docker reserves."""
    name = "pymachine-default" if machine == DEFAULT_CONTEXT else machine
    if not _NAME_RE.match(name):
        raise MachineError(f'"{machine}" cannot be used as a docker context name')
    return name


def overriding_variable(environ: Mapping[str, str] | None = None) -> str | None:
    """The environment variable (if any) that would make docker ignore the current context."""
    env = os.environ if environ is None else environ
    for var in OVERRIDING_VARIABLES:
        if env.get(var):
            return var
    return None


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def _meta_dir(cfg: Path, name: str) -> Path:
    return cfg / "contexts" / "meta" / _digest(name)


def _tls_dir(cfg: Path, name: str) -> Path:
    return cfg / "contexts" / "tls" / _digest(name)


def _load_meta(cfg: Path, name: str) -> dict[str, Any] | None:
    path = _meta_dir(cfg, name) / "meta.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise MachineError(f"cannot read docker context {name!r}: {err}") from err


def _owned_by(meta: dict[str, Any] | None) -> str | None:
    """The machine a context belongs to, or None if pymachine did not create it."""
    if not meta:
        return None
    owner = (meta.get("Metadata") or {}).get(OWNER_KEY)
    return owner if isinstance(owner, str) else None


def _config_path(cfg: Path) -> Path:
    # Follow a symlinked config.json (dotfile managers) instead of replacing the link.
    path = cfg / "config.json"
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _load_config(cfg: Path) -> dict[str, Any]:
    path = _config_path(cfg)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as err:
        raise MachineError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise MachineError(f"{path} is not a JSON object")
    return data


def current_machine(environ: Mapping[str, str] | None = None) -> str | None:
    """The machine whose pymachine context the docker CLI uses now, else None.

    ``DOCKER_CONTEXT`` wins over config.json, as in the docker CLI.  A context
    maps to a machine only through the owner pymachine wrote in its metadata
    (``use default`` writes ``pymachine-default``), never by name alone.  For
    ``ls``/``active``, so an unreadable docker config means "no machine".
    """
    env = os.environ if environ is None else environ
    cfg = docker_config_dir(env)
    try:
        name = env.get("DOCKER_CONTEXT") or _load_config(cfg).get("currentContext") or DEFAULT_CONTEXT
        if not isinstance(name, str) or name == DEFAULT_CONTEXT:
            return None
        return _owned_by(_load_meta(cfg, name))
    except MachineError:
        return None


def _set_current(cfg: Path, name: str) -> None:
    """Rewrite config.json with only currentContext changed (tab-indented, as docker does)."""
    data = _load_config(cfg)
    if name == DEFAULT_CONTEXT:
        if "currentContext" not in data:
            return
        data.pop("currentContext")
    else:
        if data.get("currentContext") == name:
            return
        data["currentContext"] = name
    path = _config_path(cfg)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    cfg.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent="\t", ensure_ascii=False).encode("utf-8"), mode)


def _exists(cfg: Path, name: str) -> bool:
    return name == DEFAULT_CONTEXT or (_meta_dir(cfg, name) / "meta.json").is_file()


def _previous_of(cfg: Path, meta: dict[str, Any] | None) -> str:
    """Where to go back to from a pymachine context; "default" if that context is gone."""
    prev = ((meta or {}).get("Metadata") or {}).get(PREVIOUS_KEY) or DEFAULT_CONTEXT
    return prev if isinstance(prev, str) and _exists(cfg, prev) else DEFAULT_CONTEXT


def use_machine(
    name: str,
    host_url: str,
    ca: Path,
    cert: Path,
    key: Path,
    environ: Mapping[str, str] | None = None,
    description: str = "",
) -> str:
    """Create or update the context for machine ``name`` and make it current.

    TLS material is copied (files 0600, directories 0700).  Refuses to touch
    a same-named context pymachine did not create.  Returns the context name.
    """
    cfg = docker_config_dir(environ)
    ctx = context_name(name)
    existing = _load_meta(cfg, ctx)
    if existing is not None and _owned_by(existing) != name:
        raise MachineError(f'docker context "{ctx}" already exists and was not created by pymachine')
    material = {}
    for fname, src in zip(TLS_FILES, (ca, cert, key), strict=True):
        try:
            material[fname] = Path(src).read_bytes()
        except OSError as err:
            raise MachineError(f"cannot read TLS file {src}: {err.strerror}") from err

    current = _load_config(cfg).get("currentContext") or DEFAULT_CONTEXT
    if current == ctx:
        previous = _previous_of(cfg, existing)
    else:
        current_meta = _load_meta(cfg, current) if current != DEFAULT_CONTEXT else None
        previous = _previous_of(cfg, current_meta) if _owned_by(current_meta) else current

    tls = _tls_dir(cfg, ctx) / "docker"
    for fname, data in material.items():
        write_atomic(tls / fname, data, 0o600)
    meta = {
        "Name": ctx,
        "Metadata": {
            "Description": description or f'pymachine machine "{name}"',
            OWNER_KEY: name,
            PREVIOUS_KEY: previous,
        },
        "Endpoints": {"docker": {"Host": host_url, "SkipTLSVerify": False}},
    }
    write_atomic(_meta_dir(cfg, ctx) / "meta.json", json.dumps(meta).encode("utf-8"), 0o600)
    _set_current(cfg, ctx)
    return ctx


def unuse(environ: Mapping[str, str] | None = None) -> str:
    """Go back to the context that was current before pymachine's; returns the one now current.

    If the current context is not one pymachine created (the user switched
    away meanwhile) nothing changes.
    """
    cfg = docker_config_dir(environ)
    current = _load_config(cfg).get("currentContext") or DEFAULT_CONTEXT
    if current == DEFAULT_CONTEXT:
        return current
    meta = _load_meta(cfg, current)
    if meta is not None and not _owned_by(meta):
        return current
    target = _previous_of(cfg, meta)
    _set_current(cfg, target)
    return target


def remove_context(name: str, environ: Mapping[str, str] | None = None) -> None:
    """Delete machine ``name``'s context if pymachine created it (for `rm`).

    When it was current, the previous context becomes current first, so the
    docker CLI is never left pointing at a context that does not exist.
    """
    cfg = docker_config_dir(environ)
    try:
        ctx = context_name(name)
    except MachineError:
        return
    meta = _load_meta(cfg, ctx)
    if _owned_by(meta) != name:
        return
    if (_load_config(cfg).get("currentContext") or DEFAULT_CONTEXT) == ctx:
        _set_current(cfg, _previous_of(cfg, meta))
    shutil.rmtree(_meta_dir(cfg, ctx), ignore_errors=True)
    shutil.rmtree(_tls_dir(cfg, ctx), ignore_errors=True)
