"""Which images the machines of every store using the user's cache might need (``image prune``).

The stores are those machine/cachedir.py recorded; each is read through the
Store.  A store whose directory is gone is dropped from the record; one that
exists but cannot be read is reported, and then every image is kept: pruning
must never pull a base image from under a machine it could not see.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from pymachine.machine.cachedir import forget_stores, known_stores


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
