"""The user's cache directory for pymachine, and the stores that use it.

Base images, their exports and downloads are large (hundreds of MB) and the
same for every store, so they live once per user, where each OS keeps caches
(Lima does the same): ``$XDG_CACHE_HOME/pymachine`` (default
``~/.cache/pymachine``) on Linux and other Unixes, ``~/Library/Caches/pymachine``
on macOS, ``%LOCALAPPDATA%\\pymachine\\Cache`` on Windows; ``PYMACHINE_CACHE_DIR``
overrides all of them.  :func:`user_cache_dir` is the one place that decides it.

A machine's disk can stay backed by a cached image (a qemu overlay), so
``image prune`` must consult the machines of every store that took images
from here: each such store is listed in ``stores.json`` in the cache
(:func:`record_store`, atomic and under the project's one lock); reading
those stores is machine/cacheusers.py's job (drivers use this module and
must not reach the store).

Nothing here imports more than the standard library until a store is
recorded: the CLI's hot path (``env``, ``ls``) never calls it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

ENV_OVERRIDE = "PYMACHINE_CACHE_DIR"
APP = "pymachine"
STORES_NAME = "stores.json"
_STORES_LOCK = ".stores.lock"
_LOCK_TIMEOUT = 30.0


def user_cache_dir(environ: Mapping[str, str] | None = None, platform: str | None = None,
                   home: str | os.PathLike[str] | None = None) -> Path:
    """pymachine's cache directory for this user (not created here).

    ``environ``, ``platform`` (``sys.platform``'s values) and ``home`` default
    to this process's; tests pass other platforms' values.
    """
    env = os.environ if environ is None else environ
    system = sys.platform if platform is None else platform
    override = env.get(ENV_OVERRIDE, "")
    if override:
        return Path(override).expanduser()
    base_home = Path(home) if home is not None else Path.home()
    if system == "win32":
        local = env.get("LOCALAPPDATA", "")
        return (Path(local) if local else base_home / "AppData" / "Local") / APP / "Cache"
    if system == "darwin":
        return base_home / "Library" / "Caches" / APP
    xdg = env.get("XDG_CACHE_HOME", "")
    # The XDG spec: a relative value is invalid and must be ignored.
    return (Path(xdg) if xdg and os.path.isabs(xdg) else base_home / ".cache") / APP


def _read_stores(cache_root: Path) -> list[str]:
    try:
        data = json.loads((cache_root / STORES_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    stores = data.get("stores") if isinstance(data, dict) else None
    return [s for s in stores if isinstance(s, str)] if isinstance(stores, list) else []


def known_stores(cache_root: Path) -> list[Path]:
    """The stores recorded as having used the cache at ``cache_root``, in the order first seen."""
    return [Path(s) for s in _read_stores(Path(cache_root))]


def _update_stores(cache_root: Path, add: str | None, drop: frozenset[str] = frozenset()) -> None:
    from pymachine.machine.atomic import write_atomic
    from pymachine.machine.locking import exclusive

    cache_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    with exclusive(cache_root / _STORES_LOCK, timeout=_LOCK_TIMEOUT,
                   busy_message=f"timed out waiting for the lock on {cache_root / STORES_NAME}"):
        stores = _read_stores(cache_root)
        wanted = [s for s in stores if s not in drop]
        if add and add not in wanted:
            wanted.append(add)
        if wanted != stores:
            body = json.dumps({"stores": wanted}, indent=2) + "\n"
            write_atomic(cache_root / STORES_NAME, body.encode(), 0o600, dir_mode=None)


def record_store(cache_root: Path, store_path: str | os.PathLike[str]) -> None:
    """Note that the store at ``store_path`` takes images from ``cache_root`` (a no-op when known).

    Cheap when already recorded (one small read, no lock, no write).
    """
    store = os.path.abspath(store_path)
    if store in _read_stores(Path(cache_root)):
        return
    _update_stores(Path(cache_root), store)


def forget_stores(cache_root: Path, stores: list[Path]) -> None:
    """Drop ``stores`` (gone from disk) from the list."""
    if stores:
        _update_stores(Path(cache_root), None, frozenset(os.path.abspath(s) for s in stores))
