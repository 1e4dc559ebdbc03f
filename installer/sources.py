"""pymachine's own files as the installers ship them: one ``pymachine/`` import namespace.

``source`` is either a checkout (the design card's top-level folders ``machine/``,
``engine/``, ``provisioners/``, ``installer/``, ``packaging/`` beside ``pymachine/``) or
an installed ``pymachine`` package directory (those folders already inside it).  Both
yield the same relative paths, ``pymachine/machine/cli/main.py`` and so on, so a staged
tree runs ``python -m pymachine`` with ``lib/`` on its path whichever was built from.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pymachine.installer.template import walk_sorted

import pymachine

SUBPACKAGES = ("machine", "engine", "provisioners", "installer", "packaging")  # installer: cli-plugins (postinstall)


def default_source() -> Path:
    """The pymachine that is running: its checkout, or its installed package directory."""
    here = Path(pymachine.__file__).resolve().parent
    return here if (here / "machine").is_dir() else here.parent


def _roots(source: Path) -> tuple[Path, Path]:
    """(directory of pymachine/__init__.py, directory holding the sub-packages)."""
    if (source / "pymachine" / "__init__.py").is_file() and (source / "machine").is_dir():
        return source / "pymachine", source  # a checkout
    if (source / "__init__.py").is_file() and (source / "machine").is_dir():
        return source, source  # an installed package directory
    raise FileNotFoundError(f"{source} holds no pymachine sources (no pymachine/ beside machine/)")


def _shippable(path: Path) -> bool:
    return path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo")


def iter_sources(source: Path) -> Iterator[tuple[str, Path]]:
    """Yield (``pymachine/...`` relative POSIX path, file) in a fixed order."""
    top, subroot = _roots(source)
    for path in walk_sorted(top):
        if _shippable(path) and path.parent == top:
            yield f"pymachine/{path.name}", path
    for name in SUBPACKAGES:
        root = subroot / name
        if not root.is_dir():
            continue
        for path in walk_sorted(root):
            if _shippable(path):
                yield f"pymachine/{name}/{path.relative_to(root).as_posix()}", path


def copy_sources(source: Path, lib: Path) -> None:
    """Copy pymachine's files under ``lib/pymachine/``."""
    import shutil

    for rel, path in iter_sources(source):
        dest = lib / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
