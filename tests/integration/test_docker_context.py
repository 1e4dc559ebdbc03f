"""`pymachine use` backend against the real docker CLI (20.10 and 28) and a real dockerd.

DOCKER_CONFIG points at a temp dir; the docker CLI reads what
machine.docker_context wrote, with no -H flag and no DOCKER_* variables.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_dockerd import DOCKERD, TLSFiles, make_tls_material, start_dockerd
from pymachine.machine import docker_context as dc
from pymachine.machine.errors import MachineError

pytestmark = pytest.mark.integration

CLIS = [p for p in ("/usr/local/bin/docker", "/usr/bin/docker") if os.access(p, os.X_OK)]
if not CLIS:
    pytest.skip("no docker CLI installed", allow_module_level=True)
if shutil.which("openssl") is None:
    pytest.skip("openssl CLI is needed to make test certificates", allow_module_level=True)


@pytest.fixture(params=CLIS, ids=lambda p: {"/usr/local/bin/docker": "cli28"}.get(p, "cli20"))
def docker(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_material(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    """A clean environment whose docker config is a temp dir."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT",
                        "DOCKER_MACHINE_NAME")}
    env["DOCKER_CONFIG"] = str(tmp_path / "dockercfg")
    env["HOME"] = str(tmp_path)
    return env


def run_docker(docker: str, environ: dict[str, str], *args: str, check: bool = True) -> str:
    proc = subprocess.run([docker, *args], env=environ, capture_output=True, text=True, timeout=60, check=False)
    if check:
        assert proc.returncode == 0, f"{args}: {proc.stderr}"
    return proc.stdout


def current_in_ls(docker: str, environ: dict[str, str]) -> str:
    """The context `docker context ls` marks with '*'."""
    names = [line.split()[0] for line in run_docker(docker, environ, "context", "ls").splitlines()[1:]
             if line.split() and line.split()[1:2] == ["*"]]
    assert len(names) == 1, names
    return names[0]


def use(name: str, url: str, tls: TLSFiles, environ: dict[str, str], **kw: str) -> str:
    return dc.use_machine(name, url, tls.ca, tls.client_cert, tls.client_key, environ=environ, **kw)


def test_docker_cli_sees_context_and_tls(docker: str, tls: TLSFiles, environ: dict[str, str]) -> None:
    assert use("dev", "tcp://127.0.0.1:2376", tls, environ, description="my dev box") == "dev"
    assert current_in_ls(docker, environ) == "dev"
    info = json.loads(run_docker(docker, environ, "context", "inspect", "dev"))[0]
    assert info["Name"] == "dev"
    assert info["Endpoints"]["docker"] == {"Host": "tcp://127.0.0.1:2376", "SkipTLSVerify": False}
    assert info["Metadata"]["Description"] == "my dev box"
    assert sorted(info["TLSMaterial"]["docker"]) == ["ca.pem", "cert.pem", "key.pem"]
    tls_dir = Path(info["Storage"]["TLSPath"]) / "docker"
    assert (tls_dir / "key.pem").read_bytes() == tls.client_key.read_bytes()
    assert (tls_dir / "ca.pem").read_bytes() == tls.ca.read_bytes()
    assert stat.S_IMODE((tls_dir / "key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(info["Storage"]["MetadataPath"]).stat().st_mode) == 0o700


def test_context_written_by_docker_cli_matches_ours(docker: str, tls: TLSFiles, environ: dict[str, str]) -> None:
    """Our files sit exactly where the CLI's own `context create` puts them."""
    run_docker(docker, environ, "context", "create", "theirs", "--docker",
               f"host=tcp://127.0.0.1:2376,ca={tls.ca},cert={tls.client_cert},key={tls.client_key}")
    use("ours", "tcp://127.0.0.1:2376", tls, environ)
    cfg = Path(environ["DOCKER_CONFIG"])
    for name in ("theirs", "ours"):
        info = json.loads(run_docker(docker, environ, "context", "inspect", name))[0]
        assert Path(info["Storage"]["MetadataPath"]) == dc._meta_dir(cfg, name)
        assert Path(info["Storage"]["TLSPath"]) == dc._tls_dir(cfg, name)
        assert sorted(p.name for p in (dc._tls_dir(cfg, name) / "docker").iterdir()) == list(dc.TLS_FILES)
    # a context pymachine did not create is never overwritten or removed
    with pytest.raises(MachineError, match="not created by pymachine"):
        use("theirs", "tcp://127.0.0.1:9", tls, environ)
    dc.remove_context("theirs", environ)
    assert "tcp://127.0.0.1:2376" in run_docker(docker, environ, "context", "inspect", "theirs")


def test_use_switch_unuse_restores_users_context(docker: str, tls: TLSFiles, environ: dict[str, str]) -> None:
    cfg = Path(environ["DOCKER_CONFIG"])
    cfg.mkdir()
    # the user's own config: other keys must survive, and their own context is current
    run_docker(docker, environ, "context", "create", "mine", "--docker", "host=unix:///tmp/nothing.sock")
    run_docker(docker, environ, "context", "use", "mine")
    config = json.loads((cfg / "config.json").read_text())
    config.update({"auths": {"registry.example": {"auth": "dTpw"}}, "psFormat": "table {{.ID}}",
                   "proxies": {"default": {"httpProxy": "http://127.0.0.1:3128"}}})
    (cfg / "config.json").write_text(json.dumps(config, indent="\t"))

    use("a", "tcp://127.0.0.1:2376", tls, environ)
    use("b", "tcp://127.0.0.1:2377", tls, environ)  # machine to machine: still returns to "mine"
    use("b", "tcp://127.0.0.1:2378", tls, environ)  # re-use updates in place
    assert current_in_ls(docker, environ) == "b"
    assert run_docker(docker, environ, "context", "inspect", "b", "--format",
                      "{{.Endpoints.docker.Host}}").strip() == "tcp://127.0.0.1:2378"
    after = json.loads((cfg / "config.json").read_text())
    assert after == config | {"currentContext": "b"}

    assert dc.unuse(environ) == "mine"
    assert current_in_ls(docker, environ) == "mine"
    assert json.loads((cfg / "config.json").read_text()) == config
    assert dc.unuse(environ) == "mine"  # not ours: left alone

    # back to default: currentContext disappears, the rest stays
    run_docker(docker, environ, "context", "use", "default")
    use("a", "tcp://127.0.0.1:2376", tls, environ)
    assert dc.unuse(environ) == "default"
    assert current_in_ls(docker, environ) == "default"
    assert "currentContext" not in json.loads((cfg / "config.json").read_text())


def test_remove_context_falls_back(docker: str, tls: TLSFiles, environ: dict[str, str]) -> None:
    run_docker(docker, environ, "context", "create", "mine", "--docker", "host=unix:///tmp/nothing.sock")
    run_docker(docker, environ, "context", "use", "mine")
    use("gone", "tcp://127.0.0.1:2376", tls, environ)
    use("other", "tcp://127.0.0.1:2377", tls, environ)
    dc.remove_context("gone", environ)  # not current: just removed
    assert current_in_ls(docker, environ) == "other"
    dc.remove_context("other", environ)  # current: falls back to the user's context
    assert current_in_ls(docker, environ) == "mine"
    listed = run_docker(docker, environ, "context", "ls", "--format", "{{.Name}}").split()
    assert "gone" not in listed and "other" not in listed
    cfg = Path(environ["DOCKER_CONFIG"])
    assert not dc._tls_dir(cfg, "gone").exists() and not dc._meta_dir(cfg, "gone").exists()
    # the previous context vanished meanwhile: unuse lands on default
    use("x1", "tcp://127.0.0.1:2376", tls, environ)
    run_docker(docker, environ, "context", "rm", "mine")
    assert dc.unuse(environ) == "default"
    assert current_in_ls(docker, environ) == "default"


def test_reserved_and_short_names(docker: str, tls: TLSFiles, environ: dict[str, str]) -> None:
    assert use("default", "tcp://127.0.0.1:2376", tls, environ) == "pymachine-default"
    assert current_in_ls(docker, environ) == "pymachine-default"
    assert use("x", "tcp://127.0.0.1:2377", tls, environ) == "x"  # docker's own create wants 2+ chars
    assert current_in_ls(docker, environ) == "x"
    assert run_docker(docker, environ, "context", "inspect", "x", "--format",
                      "{{.Endpoints.docker.Host}}").strip() == "tcp://127.0.0.1:2377"


def test_unreadable_config_is_not_clobbered(tls: TLSFiles, environ: dict[str, str]) -> None:
    cfg = Path(environ["DOCKER_CONFIG"])
    cfg.mkdir()
    (cfg / "config.json").write_text("{not json")
    with pytest.raises(MachineError, match="not valid JSON"):
        use("dev", "tcp://127.0.0.1:2376", tls, environ)
    assert (cfg / "config.json").read_text() == "{not json"


def test_docker_config_dir_rule(tmp_path: Path) -> None:
    assert dc.docker_config_dir({"DOCKER_CONFIG": "/x/y", "HOME": "/h"}) == Path("/x/y")
    assert dc.docker_config_dir({"HOME": "/h"}) == Path("/h/.docker")
    assert dc.overriding_variable({"DOCKER_HOST": "tcp://1.2.3.4:2376"}) == "DOCKER_HOST"
    assert dc.overriding_variable({"DOCKER_CONTEXT": ""}) is None


# --- against a real daemon -----------------------------------------------------


@pytest.fixture(scope="module")
def dockerd(tls: TLSFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    if not os.access(DOCKERD, os.X_OK):
        pytest.skip(f"{DOCKERD} is not installed")
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root")
    handle = start_dockerd(tmp_path_factory.mktemp("dockerd"), tls.ca, tls.server_cert, tls.server_key)
    try:
        yield handle
    finally:
        handle.stop()


def test_docker_talks_to_daemon_through_context(
    docker: str, dockerd, tls: TLSFiles, environ: dict[str, str]
) -> None:
    expected = subprocess.run([DOCKERD, "--version"], capture_output=True, text=True, timeout=30,
                              check=True).stdout.split()[2].rstrip(",")
    root = str(Path(dockerd.log).parent / "data")
    # without the context the CLI does not reach this daemon (whatever else it finds)
    out = subprocess.run([docker, "info", "--format", "{{.DockerRootDir}}"], env=environ,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.stdout.strip() != root

    use("live", dockerd.url, tls, environ)
    assert run_docker(docker, environ, "version", "--format", "{{.Server.Version}}").strip() == expected
    assert run_docker(docker, environ, "info", "--format", "{{.DockerRootDir}}").strip() == root
    assert dc.unuse(environ) == "default"
    assert current_in_ls(docker, environ) == "default"
