"""`use`, `ls` and `active` agree on which machine is active, driven through the CLI.

`use default` writes the Docker context ``pymachine-default`` (docker reserves
"default"); `ls` and `active` must still show the machine ``default`` as active,
because they read the current context through machine.docker_context, the one
module that knows the mapping between contexts and machines.
"""

from __future__ import annotations

import pytest
from fixtures_dockerd import start_engine_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", ["default", "dev"])
def test_use_then_ls_and_active_show_the_machine(pm, tmp_path, name):
    handle = start_engine_for(pm, name, tmp_path / "d")
    try:
        pm.ok("create", "-d", "none", "--url", "tcp://127.0.0.1:9", "other")
        assert pm("active").returncode == 1  # nothing active yet
        pm.ok("use", name)
        rows = pm.ok("ls", "--format", "{{.Name}} {{.Active}}").out_lines
        assert f"{name} *" in rows and "other -" in rows, rows
        assert pm.ok("active").stdout == f"{name}\n"
        # DOCKER_CONTEXT names a context too, as the docker CLI reads it.
        ctx = "pymachine-default" if name == "default" else name
        assert pm.ok("active", env={"DOCKER_CONTEXT": ctx}).stdout == f"{name}\n"
        pm.ok("use", "--unset")
        assert pm("active").returncode == 1
        assert f"{name} -" in pm.ok("ls", "--format", "{{.Name}} {{.Active}}").out_lines
    finally:
        handle.stop()


def test_a_context_pymachine_did_not_write_names_no_machine(pm, tmp_path):
    """A user's own context that happens to share a machine's name is not that machine."""
    import json

    handle = start_engine_for(pm, "dev", tmp_path / "d")
    try:
        pm.docker_config.mkdir(parents=True, exist_ok=True)
        (pm.docker_config / "config.json").write_text(json.dumps({"currentContext": "dev"}))
        assert pm("active").returncode == 1
        assert "dev -" in pm.ok("ls", "--format", "{{.Name}} {{.Active}}").out_lines
    finally:
        handle.stop()


def test_removing_a_machine_from_python_also_forgets_its_context(pm, tmp_path):
    """rm's behaviour is the library's: machine.removal.remove_machine deletes the context too."""
    import json

    from pymachine.machine import docker_context
    from pymachine.machine.removal import remove_machine
    from pymachine.machine.store import Store

    handle = start_engine_for(pm, "dev", tmp_path / "d")
    try:
        pm.ok("use", "dev")
    finally:
        handle.stop()
    environ = {"DOCKER_CONFIG": str(pm.docker_config), "HOME": str(pm.home)}
    assert docker_context.current_machine(environ) == "dev"
    lines: list[str] = []
    remove_machine(Store(str(pm.store)), "dev", log=lines.append, environ=environ)
    assert not (pm.store / "machines" / "dev").exists()
    assert docker_context.current_machine(environ) is None
    assert json.loads((pm.docker_config / "config.json").read_text()).get("currentContext", "default") == "default"
    assert not list((pm.docker_config / "contexts" / "meta").iterdir())
    assert pm.ok("ls", "-q").stdout == ""
