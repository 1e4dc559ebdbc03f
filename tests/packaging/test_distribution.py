"""pymachine-cli as users install it: the built wheel and sdist, through pip, pypa's
installer, pipx and uv, each into a fresh environment (issue 12, item 2).

Offline after setup: the wheel and sdist are built from a copy of this checkout
with ``python -m build --no-isolation``; every install resolves dependencies with
``--no-index`` from a wheelhouse that ``scripts/setup.sh`` downloads once into
``$PYMACHINE_TEST_CACHE/wheelhouse`` (this module downloads it if setup did not).
Every command runs outside the checkout with a cleared PYTHONPATH, and the tests
check that ``pymachine`` is imported from the environment, never the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DIST_NAME = "pymachine-cli"
# What the wheel needs at run time plus what an isolated sdist build needs; installer
# is pypa's, installed side by side.  Kept in step with scripts/setup.sh.
WHEELHOUSE_REQS = ("cryptography>=41", "filelock>=3.12", "paramiko>=3.4", "installer>=0.7", "setuptools>=77")
WHEELHOUSE_NAMES = ("cryptography", "filelock", "paramiko", "installer", "setuptools")


def cache_dir() -> Path:
    return Path(os.environ.get("PYMACHINE_TEST_CACHE", "/var/tmp/pymachine-test-cache"))


def run(argv: list[str | Path], *, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd, check=False)
    assert proc.returncode == 0, f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
    return proc


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """Dependency wheels for offline installs (filled by setup.sh; else downloaded once here)."""
    wh = cache_dir() / "wheelhouse"

    def complete() -> bool:
        have = {p.name.split("-")[0].lower() for p in wh.glob("*.whl")} if wh.is_dir() else set()
        return all(n in have for n in WHEELHOUSE_NAMES)

    if not complete():
        wh.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--dest", str(wh),
                               *WHEELHOUSE_REQS], capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0 or not complete():
            pytest.skip(f"no wheelhouse in {wh} and no registry to fill it (run scripts/setup.sh): "
                        f"{proc.stderr.strip()[-300:]}")
    return wh


def offline_env(tmp: Path, wheelhouse: Path, **extra: str) -> dict[str, str]:
    """An environment in which pip, pipx and uv see only the wheelhouse, and not the checkout."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "UV_", "PIPX_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(
        PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse),
        PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1",
        HOME=str(tmp / "home"), XDG_CONFIG_HOME=str(tmp / "home" / ".config"),
        MACHINE_STORAGE_PATH=str(tmp / "store"), **extra,
    )
    (tmp / "home").mkdir(exist_ok=True)
    return env


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist, and the wheel built from that sdist, from a copy of this checkout."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to know which files are the project's")
    root = tmp_path_factory.mktemp("dist")
    src = root / "src"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True, timeout=60).stdout
    for rel in filter(None, listed.decode().split("\0")):
        path = REPO / rel
        if path.is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / rel)
    out = root / "out"
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src], cwd=root)
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def fresh_venv(path: Path) -> Path:
    """A new venv with pip (from ensurepip, offline); returns its python."""
    venv.create(path, with_pip=True, clear=True)
    return path / ("Scripts" if os.name == "nt" else "bin") / "python"


def check_cli(bindir: Path, python: Path, env: dict[str, str], cwd: Path) -> None:
    """The installed command and a ``python -m pymachine.…`` entry, run from the install."""
    version = run([bindir / "pymachine", "--version"], env=env, cwd=cwd).stdout
    assert version.startswith("pymachine version 0.1.0")
    lock = run([python, "-m", "pymachine.installer", "lock"], env=env, cwd=cwd).stdout
    assert "python-runtime" in lock and "docker-compose" in lock
    where = run([python, "-c", "import pymachine, pymachine.installer.lock as l; "
                 "print(pymachine.__file__); print(l.packaging_file('components.lock.json'))"],
                env=env, cwd=cwd).stdout.split()
    for path in where:
        assert not Path(path).is_relative_to(REPO), f"imported from the checkout: {path}"
        assert "site-packages" in path


def test_name_is_the_free_one_and_the_command_stays_pymachine(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = whl.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = whl.read(f"{dist_info}/METADATA").decode()
        entry_points = whl.read(f"{dist_info}/entry_points.txt").decode()
    assert f"Name: {DIST_NAME}\n" in metadata
    assert dist_info == "pymachine_cli-0.1.0.dist-info"
    assert "pymachine = pymachine.machine.cli.main:main" in entry_points
    assert dists["sdist"].name == "pymachine_cli-0.1.0.tar.gz"


def test_wheel_holds_only_the_pymachine_package(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = whl.namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"pymachine", "pymachine_cli-0.1.0.dist-info"}, top
    for pkg in ("machine", "engine", "provisioners", "installer"):
        assert f"pymachine/{pkg}/__init__.py" in names
    assert "pymachine/packaging/components.lock.json" in names
    assert "pymachine/machine/locking.py" in names


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_pip_installs_wheel_and_sdist_in_a_fresh_venv(kind: str, dists: dict[str, Path], wheelhouse: Path,
                                                      tmp_path: Path) -> None:
    python = fresh_venv(tmp_path / "venv")
    env = offline_env(tmp_path, wheelhouse)
    # The sdist builds in pip's isolated build env from the wheelhouse's setuptools.
    run([python, "-m", "pip", "install", dists[kind]], env=env, cwd=tmp_path)
    check_cli(python.parent, python, env, tmp_path)


def test_side_by_side_with_pypa_installer(dists: dict[str, Path], wheelhouse: Path, tmp_path: Path) -> None:
    python = fresh_venv(tmp_path / "venv")
    env = offline_env(tmp_path, wheelhouse)
    pip = [python, "-m", "pip"]
    run([*pip, "install", dists["wheel"], "installer"], env=env, cwd=tmp_path)

    def pypa_installer_works() -> None:
        usage = run([python, "-m", "installer", "--help"], env=env, cwd=tmp_path).stdout
        assert "wheel" in usage and "--destdir" in usage  # pypa installer's own CLI
        where = run([python, "-c", "import installer; print(installer.__file__, installer.__version__)"],
                    env=env, cwd=tmp_path).stdout
        assert "site-packages" in where and not where.startswith(str(REPO))

    pypa_installer_works()
    check_cli(python.parent, python, env, tmp_path)
    # Use pypa's installer for real: unpack our wheel into a staging root with it.
    staged = tmp_path / "staged"
    run([python, "-m", "installer", "--destdir", staged, dists["wheel"]], env=env, cwd=tmp_path)
    assert list(staged.rglob("site-packages/pymachine/machine/cli/main.py"))
    assert not list(staged.rglob("site-packages/installer"))  # nothing of ours lands on its name

    run([*pip, "uninstall", "-y", DIST_NAME], env=env, cwd=tmp_path)
    pypa_installer_works()
    assert not (python.parent / "pymachine").exists()

    run([*pip, "install", dists["wheel"]], env=env, cwd=tmp_path)
    run([*pip, "uninstall", "-y", "installer"], env=env, cwd=tmp_path)
    check_cli(python.parent, python, env, tmp_path)
    gone = subprocess.run([python, "-m", "installer", "--help"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert gone.returncode != 0 and "No module named installer" in gone.stderr


def test_pipx_install(dists: dict[str, Path], wheelhouse: Path, tmp_path: Path) -> None:
    pipx = Path(sys.executable).parent / "pipx"
    if not pipx.exists():
        pytest.skip("pipx is not installed in this venv (pip install -e '.[test]')")
    env = offline_env(tmp_path, wheelhouse, PIPX_HOME=str(tmp_path / "pipx"),
                      PIPX_BIN_DIR=str(tmp_path / "bin"), PIPX_MAN_DIR=str(tmp_path / "man"),
                      PIPX_DEFAULT_PYTHON=sys.executable)
    run([pipx, "install", "--pip-args", f"--no-index --find-links {wheelhouse}", dists["wheel"]],
        env=env, cwd=tmp_path)
    venv_python = tmp_path / "pipx" / "venvs" / DIST_NAME / "bin" / "python"
    check_cli(tmp_path / "bin", venv_python, env, tmp_path)
    run([pipx, "uninstall", DIST_NAME], env=env, cwd=tmp_path)
    assert not (tmp_path / "bin" / "pymachine").exists()


def test_uv_tool_install(dists: dict[str, Path], wheelhouse: Path, tmp_path: Path) -> None:
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists():
        pytest.skip("uv is not installed in this venv (pip install -e '.[test]')")
    env = offline_env(tmp_path, wheelhouse, UV_TOOL_DIR=str(tmp_path / "uvtools"),
                      UV_TOOL_BIN_DIR=str(tmp_path / "bin"), UV_CACHE_DIR=str(tmp_path / "uvcache"),
                      UV_PYTHON_DOWNLOADS="never", UV_NO_CONFIG="1")
    run([uv, "tool", "install", "--offline", "--no-index", "--find-links", wheelhouse,
         "--python", sys.executable, dists["wheel"]], env=env, cwd=tmp_path)
    tool_python = tmp_path / "uvtools" / DIST_NAME / "bin" / "python"
    check_cli(tmp_path / "bin", tool_python, env, tmp_path)
    run([uv, "tool", "uninstall", DIST_NAME], env=env, cwd=tmp_path)
    assert not (tmp_path / "bin" / "pymachine").exists()
