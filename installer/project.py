"""Who maintains pymachine and where it lives, as pyproject.toml's ``[project]`` says: one place.

A checkout reads ``pyproject.toml`` itself (always current); an installed wheel
carries the same values in its core metadata (``Maintainer-email``/``Author-email``,
``Project-URL``), read with ``importlib.metadata``.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from pathlib import Path

from pymachine.machine.errors import MachineError

DISTRIBUTION = "pymachine-cli"


@dataclass(frozen=True)
class ProjectInfo:
    maintainer: str  # "Name <address>", or "" when pyproject names nobody with an address
    homepage: str  # "" when pyproject has no [project.urls] Homepage


def _person(entries: list[dict[str, str]]) -> str:
    for entry in entries:
        if entry.get("email"):
            name = entry.get("name", "").strip()
            return f"{name} <{entry['email'].strip()}>" if name else entry["email"].strip()
    return ""


def _from_pyproject(path: Path) -> ProjectInfo:
    import tomllib

    try:
        project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MachineError(f"{path}: cannot read [project] ({exc})") from None
    urls = {k.lower(): v for k, v in project.get("urls", {}).items()}
    return ProjectInfo(_person(project.get("maintainers", [])) or _person(project.get("authors", [])),
                       urls.get("homepage", ""))


def _from_metadata() -> ProjectInfo:
    from importlib import metadata

    try:
        meta = metadata.metadata(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return ProjectInfo("", "")
    who = ""
    for field in ("Maintainer-email", "Author-email"):
        pairs = email.utils.getaddresses(meta.get_all(field) or [])
        if pairs and pairs[0][1]:
            name, addr = pairs[0]
            who = f"{name} <{addr}>" if name else addr
            break
    homepage = ""
    for entry in meta.get_all("Project-URL") or []:
        label, _sep, url = entry.partition(",")
        if label.strip().lower() == "homepage":
            homepage = url.strip()
    return ProjectInfo(who, homepage or next(iter(meta.get_all("Home-page") or []), ""))


def project_info(source: Path | None = None) -> ProjectInfo:
    """``source``'s pyproject.toml, else the running checkout's, else the installed distribution's."""
    from pymachine.installer.sources import default_source

    for root in (source, default_source()):  # a checkout's root holds pyproject.toml; a wheel's has none
        if root is not None and (root / "pyproject.toml").is_file():
            return _from_pyproject(root / "pyproject.toml")
    return _from_metadata()
