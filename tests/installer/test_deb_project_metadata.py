"""The .deb's Maintainer and Homepage come from one place, pyproject.toml's [project]; the
environment overrides the Maintainer; placeholders are refused with one line and no package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pymachine.installer import project, sources
from pymachine.installer.linux import MAINTAINER_ENV, build_deb
from pymachine.machine.errors import MachineError

pytest_plugins = ["standins"]

pytestmark = pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb (scripts/setup.sh)")

REPO = Path(__file__).resolve().parents[2]
EPOCH = 1700000000


def _fields(deb: Path) -> dict[str, str]:
    out = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True, timeout=60).stdout
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line and not line.startswith(" "))


def _repo_project() -> tuple[str, str]:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    who = meta["maintainers"][0]
    return f"{who['name']} <{who['email']}>", meta["urls"]["Homepage"]


def _source_with(src_snapshot: Path, tmp_path: Path, pyproject: str) -> Path:
    """A copy of the sources with its own pyproject.toml, as a checkout has."""
    src = tmp_path / "src"
    shutil.copytree(src_snapshot, src)
    (src / "pyproject.toml").write_text(pyproject)
    return src


def test_deb_maintainer_and_homepage_are_pyprojects(src_snapshot, tmp_path, monkeypatch):
    monkeypatch.delenv(MAINTAINER_ENV, raising=False)
    who, home = _repo_project()
    assert "pymachine.dev" not in who and "localhost" not in who + home
    fields = _fields(build_deb(tmp_path / "repo", [], epoch=EPOCH, source=src_snapshot))
    assert (fields["Maintainer"], fields["Homepage"]) == (who, home)
    copyright_ = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(tmp_path / "repo" / "pymachine_0.1.0_all.deb")],
                                capture_output=True, check=True, timeout=60).stdout
    assert f"Source: {home}".encode() in copyright_
    # one place: a source tree whose pyproject says otherwise gets that, Homepage included
    src = _source_with(src_snapshot, tmp_path, '[project]\nname = "x"\nversion = "1"\n'
                       'authors = [{ name = "Ada Lovelace" }, { name = "Jane Roe", email = "jane@roe.example.org" }]\n'
                       '[project.urls]\nhomepage = "https://pymachine.example.org/home"\n')
    fields = _fields(build_deb(tmp_path / "other", [], epoch=EPOCH, source=src))
    assert fields["Maintainer"] == "Jane Roe <jane@roe.example.org>"  # authors when no maintainers; first with email
    assert fields["Homepage"] == "https://pymachine.example.org/home"
    # the environment still overrides the Maintainer (not the Homepage)
    monkeypatch.setenv(MAINTAINER_ENV, "Release Bot <release@pymachine.example.net>")
    fields = _fields(build_deb(tmp_path / "env", [], epoch=EPOCH, source=src))
    assert (fields["Maintainer"], fields["Homepage"]) == ("Release Bot <release@pymachine.example.net>",
                                                          "https://pymachine.example.org/home")


@pytest.mark.parametrize(("pyproject", "env", "want"), [
    ('[project]\nname = "x"\nauthors = [{ name = "Nobody" }]\n[project.urls]\nHomepage = "https://a.example.org"\n',
     "", "no Maintainer for the .deb: set PYMACHINE_DEB_MAINTAINER="),
    ('[project]\nname = "x"\nmaintainers = [{ name = "Dev", email = "dev@localhost" }]\n'
     '[project.urls]\nHomepage = "https://a.example.org"\n',
     "", "pyproject.toml [project] maintainers: 'Dev <dev@localhost>' is not 'Name <address@domain>'"),
    ('[project]\nname = "x"\nmaintainers = [{ name = "Dev", email = "dev@a.example.org" }]\n',
     "", "no usable Homepage for the .deb: pyproject.toml's [project.urls] Homepage is ''"),
    ('[project]\nname = "x"\nmaintainers = [{ name = "Dev", email = "dev@a.example.org" }]\n'
     '[project.urls]\nHomepage = "http://localhost:8000/"\n', "", "no usable Homepage"),
    ('[project]\nname = "x"\nmaintainers = [{ name = "Dev", email = "dev@a.example.org" }]\n'
     '[project.urls]\nHomepage = "https://a.example.org"\n', "nobody", "PYMACHINE_DEB_MAINTAINER: 'nobody' is not"),
])
def test_placeholders_and_missing_values_are_one_line_and_no_package(pyproject, env, want, src_snapshot, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv(MAINTAINER_ENV, env)
    src = _source_with(src_snapshot, tmp_path, pyproject)
    with pytest.raises(MachineError) as exc:
        build_deb(tmp_path / "out", [], epoch=EPOCH, source=src)
    assert want in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_installed_wheel_reads_the_same_values_from_its_metadata(tmp_path, monkeypatch):
    """No pyproject.toml beside an installed package: the core metadata setuptools wrote from it."""
    egg = tmp_path / "egg"
    egg.mkdir()
    subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "egg_info",
                    "--egg-base", str(egg)], cwd=REPO, check=True, capture_output=True, timeout=120)
    (pkg_info,) = egg.glob("*.egg-info/PKG-INFO")
    site = tmp_path / "site"
    dist_info = site / "pymachine_cli-0.1.0.dist-info"
    dist_info.mkdir(parents=True)
    shutil.copyfile(pkg_info, dist_info / "METADATA")
    installed = tmp_path / "site" / "pymachine"  # an installed package directory: no pyproject.toml
    (installed / "machine").mkdir(parents=True)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(sources, "default_source", lambda: installed)
    info = project.project_info(installed)
    assert (info.maintainer, info.homepage) == _repo_project()
