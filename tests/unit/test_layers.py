"""The layers hold: import-linter's contracts (pyproject ``[tool.importlinter]``), and
extras that match the drivers' imports.

import-linter builds its graph from the package directory, so the checkout is
copied into the installed (wheel) layout first: ``pymachine/machine``,
``pymachine/engine``... exactly as setuptools' ``package-dir`` installs it.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pymachine.machine import extras

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("machine", "engine", "provisioners", "installer", "packaging")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CORE = {"cryptography", "paramiko", "filelock"}  # [project] dependencies
#: SDK modules that arrive with an extra's distribution (imported, but not listed by name).
COMES_WITH = {"botocore": "boto3", "pyVim": "pyVmomi", "requests": "azure"}
#: Optional imports no extra can bring: VirtualBox's SDK binding ships with VirtualBox only.
NOT_ON_PYPI = {"vboxapi"}
#: pyproject distribution -> the top-level module it provides.
DIST_MODULE = {"boto3": "boto3", "pycdlib": "pycdlib", "pyvmomi": "pyVmomi", "azure-mgmt-compute": "azure",
               "azure-mgmt-network": "azure", "azure-mgmt-resource": "azure", "azure-identity": "azure"}


def wheel_layout(dest: Path) -> Path:
    """The checkout's Python files under ``dest/pymachine/...``; returns ``dest``."""
    pkg = dest / "pymachine"
    pkg.mkdir(parents=True)
    shutil.copy(ROOT / "pymachine" / "__init__.py", pkg / "__init__.py")
    for folder in FOLDERS:
        for src in (ROOT / folder).rglob("*.py"):
            if "__pycache__" in src.parts:
                continue
            target = pkg / src.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, target)
    return dest


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


needs_linter = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (test extra)")


@needs_linter
def test_import_contracts_hold(tmp_path):
    proc = lint_imports(wheel_layout(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout and "Analyzed" in proc.stdout


@needs_linter
@pytest.mark.parametrize(("module", "source"), [
    # a driver reaching up to the store, inside a function (import-linter sees those too)
    ("machine/drivers/zz_bad.py", "def f():\n    from pymachine.machine.store import Store\n"),
    # the engine importing the CLI
    ("engine/zz_bad.py", "import pymachine.machine.cli.main\n"),
    # the runtime importing the installer builder
    ("machine/zz_bad.py", "from pymachine.installer import stage\n"),
    # a cycle among provisioners
    ("provisioners/zz_bad.py", "import pymachine.provisioners.base\n"),
])
def test_a_broken_layer_fails_the_check(tmp_path, module, source):
    tree = wheel_layout(tmp_path)
    (tree / "pymachine" / module).write_text(source)
    if module.startswith("provisioners"):
        base = tree / "pymachine" / "provisioners" / "base.py"
        base.write_text(base.read_text() + "\n\ndef _cycle():\n    import pymachine.provisioners.zz_bad\n")
    proc = lint_imports(tree)
    assert proc.returncode != 0 and "BROKEN" in proc.stdout, proc.stdout


def third_party_imports() -> dict[str, set[str]]:
    """Top-level modules imported anywhere in the runtime and installer -> the files importing them."""
    found: dict[str, set[str]] = {}
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top != "pymachine":
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def pyproject_extras() -> dict[str, list[str]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data["project"]["optional-dependencies"]


def dist_name(requirement: str) -> str:
    for sep in "<>=![; ":
        requirement = requirement.split(sep)[0]
    return requirement.strip().lower()


def test_extras_match_the_imports():
    declared = {name: reqs for name, reqs in pyproject_extras().items() if name not in ("all", "test")}
    as_modules = {name: sorted({DIST_MODULE[dist_name(r)] for r in reqs}) for name, reqs in declared.items()}
    assert as_modules == {name: sorted(set(mods)) for name, mods in extras.EXTRAS.items()}
    imported = third_party_imports()
    # No extra lists a package the code never imports.
    for name, modules in as_modules.items():
        for module in modules:
            assert module in imported, f"extra [{name}] lists {module}, which nothing imports"
    # Every optional import is brought by an extra (or arrives with one, or is not on PyPI).
    provided = {m for mods in as_modules.values() for m in mods}
    for module, files in imported.items():
        if module in CORE or module in NOT_ON_PYPI:
            continue
        assert COMES_WITH.get(module, module) in provided, f"{module} ({sorted(files)}) is in no extra"
    everything = pyproject_extras()["all"][0]
    assert sorted(everything.partition("[")[2].rstrip("]").split(",")) == sorted(declared)


def test_each_driver_that_needs_an_sdk_names_the_extra_that_brings_it():
    """A driver importing an SDK (or the seed writer, which needs pycdlib) maps to an extra holding it."""
    from pymachine.machine.drivers.registry import BUILTIN

    for driver, target in BUILTIN.items():
        path = ROOT / (target.partition(":")[0].removeprefix("pymachine.").replace(".", "/") + ".py")
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        needs = {m for mods in extras.EXTRAS.values() for m in mods if f"import {m}" in text or f"from {m}" in text}
        if "import seed" in text or "certs, seed" in text or "machine.seed import" in text:
            needs.add("pycdlib")
        if needs:
            extra = extras.DRIVER_EXTRA.get(driver)
            assert extra and needs <= set(extras.EXTRAS[extra]), (driver, needs, extra)


def test_a_missing_sdk_is_one_line_naming_the_exact_pip_install(tmp_path):
    """Driven through the CLI with the SDK made unimportable, as on a machine without the extra."""
    code = ("import sys; sys.modules['boto3'] = None\n"
            "from pymachine.machine.cli.main import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    env = {**os.environ, "MACHINE_STORAGE_PATH": str(tmp_path / "store"), "HOME": str(tmp_path),
           "AWS_EC2_METADATA_DISABLED": "true"}
    proc = subprocess.run([sys.executable, "-c", code, "create", "-d", "amazonec2", "--amazonec2-region",
                           "us-east-1", "--amazonec2-access-key", "a", "--amazonec2-secret-key", "b", "x"],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        f"Error: the Python package 'boto3' is not installed: pip install '{extras.distribution()}[aws]'")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "store" / "machines" / "x").exists()


def test_install_hint_picks_the_drivers_extra():
    dist = extras.distribution()
    assert extras.install_hint("pycdlib", "virtualbox").endswith(f"pip install '{dist}[virtualbox]'")
    assert extras.install_hint("pycdlib", "vmwarefusion").endswith(f"pip install '{dist}[vmware]'")
    assert extras.install_hint("pyVmomi.vim", "vmwarevsphere").endswith(f"pip install '{dist}[vsphere]'")
    assert "[qemu]" in extras.install_hint("pycdlib") and "[virtualbox]" in extras.install_hint("pycdlib")
    assert extras.install_hint("numpy") is None
