"""The import cycles issue 14 broke stay broken: import-linter's contracts (pyproject
``[tool.importlinter]``) fail when one comes back, inside a function or not.

Each case puts the old cycle back into a copy of the tree laid out as installed
(``test_layers.wheel_layout``) and expects lint-imports to report a broken contract.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

import pytest

from tests.unit.test_layers import ROOT, lint_imports, needs_linter, wheel_layout

ACYCLIC = "no import cycles among the modules of the machine layer"
PACKAGES = "the engine and the provisioners never import the machine modules above them"
INSTALLER = "the runtime never imports the installer"

#: case -> (file, text appended, the contract that must break)
CYCLES = {
    # machine.host <-> machine.provision (<-> machine.swarm): the create's provisioning called from host.py
    "host-provision": ("machine/host.py", "from pymachine.machine import provision", ACYCLIC),
    # the TLS helpers back in the Host layer's reach: tls -> creation -> tls
    "tls-creation": ("machine/tls.py", "from pymachine.machine import creation", ACYCLIC),
    # swarm asking provisioning for the engine URL again, while provisioning configures the swarm
    "swarm-provision": ("machine/swarm.py", "from pymachine.machine.provision import ssh_wait", ACYCLIC),
    # vbox_api reaching into the virtualbox driver (its private lock), which selects vbox_api
    "virtualbox-vbox_api": ("machine/drivers/vbox_api.py", "from pymachine.machine.drivers import virtualbox",
                            ACYCLIC),
    # package level: the engine importing the Host layer (machine -> engine -> machine)
    "engine-machine": ("engine/options.py", "from pymachine.machine.host import Machine", PACKAGES),
    # package level: a provisioner importing provisioning
    "provisioners-machine": ("provisioners/base.py", "from pymachine.machine import provision", PACKAGES),
    # package level: the runtime importing the installer again (machine -> installer -> machine)
    "machine-installer": ("machine/quickstart.py", "import pymachine.installer", INSTALLER),
}


def _verdicts(stdout: str) -> dict[str, str]:
    """Contract name prefix -> KEPT or BROKEN, from lint-imports' summary (long names wrap)."""
    text = " ".join(stdout.split())
    verdicts = {}
    for name in (ACYCLIC, PACKAGES, INSTALLER):
        after = text[text.index(name):] if name in text else ""
        words = [w for w in after.split() if w in ("KEPT", "BROKEN")]
        verdicts[name] = words[0] if words else "missing"
    return verdicts


@needs_linter
@pytest.mark.parametrize("case", sorted(CYCLES))
def test_a_cycle_that_comes_back_fails_the_check(tmp_path, case):
    module, statement, contract = CYCLES[case]
    tree = wheel_layout(tmp_path)
    path = tree / "pymachine" / module
    # inside a function, where a lazy import used to hide the cycle
    path.write_text(path.read_text(encoding="utf-8") + f"\n\ndef _cycle():\n    {statement}\n", encoding="utf-8")
    proc = lint_imports(tree)
    assert proc.returncode != 0
    assert _verdicts(proc.stdout)[contract] == "BROKEN", proc.stdout


@needs_linter
def test_the_cycle_contracts_hold_on_the_tree(tmp_path):
    proc = lint_imports(wheel_layout(tmp_path))
    assert _verdicts(proc.stdout) == {ACYCLIC: "KEPT", PACKAGES: "KEPT", INSTALLER: "KEPT"}, proc.stdout


def _contract(name_start: str) -> dict:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    found = [c for c in data["tool"]["importlinter"]["contracts"] if c["name"].startswith(name_start)]
    assert len(found) == 1, name_start
    return found[0]


#: Which machine modules reach the engine or the provisioners, from grimp (import-linter's graph).
ABOVE_SCRIPT = """
import json, grimp
graph = grimp.build_graph("pymachine", exclude_type_checking_imports=True, cache_dir=None)
lower = ("pymachine.engine", "pymachine.provisioners")
print(json.dumps(sorted(child for child in graph.find_children("pymachine.machine")
                        if any(graph.chain_exists(importer=child, imported=p, as_packages=True) for p in lower))))
"""


@needs_linter
def test_every_machine_module_above_the_engine_is_named_in_the_package_contract(tmp_path):
    """The package-level contract lists the machine modules the engine and the provisioners must
    not import; one that imports either but is missing there would let a package cycle back unseen."""
    listed = set(_contract("the engine and the provisioners never import the machine modules above them")
                 ["forbidden_modules"])
    tree = wheel_layout(tmp_path)
    proc = subprocess.run([sys.executable, "-c", ABOVE_SCRIPT], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    above = set(json.loads(proc.stdout))
    assert "pymachine.machine.host" in above  # the check sees the graph (the host imports engine options)
    assert above - listed == set(), f"add to the contract's forbidden_modules: {sorted(above - listed)}"
