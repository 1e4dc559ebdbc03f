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
(:func:`record_store`, atomic and under the project's one lock).

Nothing here imports more than the standard library until a store is
recorded: the CLI's hot path (``env``, ``ls``) never calls it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
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


@dataclass
class StoreUsage:
    """What the stores that use a cache hold: their machines' configs, and the stores not seen."""

    configs: list[str] = field(default_factory=list)
    unseen: list[tuple[Path, str]] = field(default_factory=list)  # (store, why)
    forgotten: list[Path] = field(default_factory=list)  # stores gone from disk, dropped from the list

    def might_use(self, image_dir: Path) -> bool:
        """Whether a machine might name a file in ``image_dir`` (a qemu overlay's base, say).

        A store that could not be read might use any image: then every one is kept."""
        if self.unseen:
            return True
        needles = {str(image_dir), os.path.realpath(image_dir)}  # a path reached through a symlink, or not
        return any(needle in text for text in self.configs for needle in needles)


def _read_configs(store_path: Path) -> list[str]:
    """Every machine config's text in the store; OSError/StoreError when any cannot be read."""
    from pymachine.machine.store import Store

    store = Store(store_path)
    return [store.config_path(name).read_text(errors="replace") for name in store.list_names()]


def store_usage(cache_root: Path, current_store: str | os.PathLike[str]) -> StoreUsage:
    """Read the machines of ``current_store`` and of every store recorded in ``cache_root``.

    A recorded store whose directory is gone is dropped from the record; one that
    exists but cannot be read (a machine dir or config unreadable) is reported as unseen.
    """
    from pymachine.machine.errors import MachineError

    usage = StoreUsage()
    current = os.path.abspath(current_store)
    stores = [Path(current), *(s for s in known_stores(cache_root) if str(s) != current)]
    for store in stores:
        if str(store) != current and not store.exists():
            usage.forgotten.append(store)
            continue
        try:
            usage.configs += _read_configs(store)
        except OSError as exc:
            usage.unseen.append((store, exc.strerror or exc.__class__.__name__))
        except MachineError as exc:
            usage.unseen.append((store, str(exc)))
    with contextlib.suppress(OSError, MachineError):
        forget_stores(cache_root, usage.forgotten)
    return usage
