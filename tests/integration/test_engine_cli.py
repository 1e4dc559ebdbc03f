"""env, config, use, ls, version driven through the real ``docker`` CLI against a
real dockerd that serves TLS with certificates from the pymachine store."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from fixtures_dockerd import free_loopback_port, start_dockerd, start_engine_for

pytestmark = pytest.mark.integration

DOCKER = shutil.which("docker") or "/usr/bin/docker"


@pytest.fixture
def engine(pm, tmp_path):
    """A none machine 'dev' whose URL is a live dockerd using the machine's own server cert."""
    handle = start_engine_for(pm, "dev", tmp_path / "d")
    try:
        yield handle
    finally:
        handle.stop()


def server_version(handle) -> str:
    out = subprocess.run(
        [DOCKER, "-H", f"unix://{handle.socket}", "version", "--format", "{{.Server.Version}}"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return out.stdout.strip()


def bash(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, env=env, check=False)


def test_env_drives_the_docker_cli(pm, engine):
    expected = server_version(engine)
    res = pm.ok("env", "dev")
    assert 'export DOCKER_TLS_VERIFY="1"' in res.stdout
    assert f'export DOCKER_HOST="{engine.url}"' in res.stdout
    assert f'export DOCKER_CERT_PATH="{pm.store / "machines" / "dev"}"' in res.stdout
    assert 'export DOCKER_MACHINE_NAME="dev"' in res.stdout
    assert "# Run this command to configure your shell: \n# eval $(pymachine env dev)\n" in res.stdout
    out = bash(f'eval "$(pymachine env dev)" && {DOCKER} version --format "{{{{.Server.Version}}}}"', pm.env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
    fish = pm.ok("env", "--shell", "fish", "dev")
    assert f'set -gx DOCKER_HOST "{engine.url}";' in fish.stdout
    ps = pm.ok("env", "--shell", "powershell", "dev")
    assert f'$Env:DOCKER_HOST = "{engine.url}"' in ps.stdout
    cmd = pm.ok("env", "--shell", "cmd", "dev")
    assert f"SET DOCKER_HOST={engine.url}" in cmd.stdout
    unset = pm.ok("env", "-u")
    assert unset.stdout.startswith("unset DOCKER_TLS_VERIFY\nunset DOCKER_HOST\n")
    noproxy = pm.ok("env", "--no-proxy", "dev", env={"NO_PROXY": "example.test"})
    assert 'export NO_PROXY="example.test,127.0.0.1"' in noproxy.stdout


def test_config_drives_the_docker_cli(pm, engine):
    res = pm.ok("config", "dev")
    lines = res.stdout.splitlines()
    mdir = pm.store / "machines" / "dev"
    assert lines == [
        "--tlsverify",
        f'--tlscacert="{mdir}/ca.pem"',
        f'--tlscert="{mdir}/cert.pem"',
        f'--tlskey="{mdir}/key.pem"',
        f"-H={engine.url}",
    ]
    out = bash(f'{DOCKER} $(pymachine config dev) version --format "{{{{.Server.Version}}}}"', pm.env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == server_version(engine)


def test_use_makes_a_docker_context(pm, engine):
    res = pm.ok("use", "dev")
    assert 'Current context is now "dev"' in res.stdout
    out = subprocess.run([DOCKER, "version", "--format", "{{.Server.Version}}"], capture_output=True,
                         text=True, timeout=60, env=pm.env, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == server_version(engine)
    ls = pm.ok("ls", "--format", "{{.Name}} {{.Active}}")
    assert "dev *" in ls.out_lines
    pm.ok("use", "--unset")
    cfg = json.loads((pm.docker_config / "config.json").read_text())
    assert cfg.get("currentContext", "default") == "default"
    out = subprocess.run([DOCKER, "context", "ls", "--format", "{{.Name}} {{.Current}}"], capture_output=True,
                         text=True, timeout=60, env=pm.env, check=False)
    assert "default true" in out.stdout


def test_ls_and_version_show_the_live_engine(pm, engine):
    expected = server_version(engine)
    res = pm.ok("ls", env={"DOCKER_HOST": engine.url})
    header, row = res.out_lines[0], res.out_lines[1]
    assert header.split() == ["NAME", "ACTIVE", "DRIVER", "STATE", "URL", "SWARM", "DOCKER", "ERRORS"]
    assert row.split() == ["dev", "*", "none", "Running", engine.url, f"v{expected}"]
    # Columns line up: every field starts where its header starts.
    for title in ("DRIVER", "STATE", "URL", "DOCKER"):
        col = header.index(title)
        assert row[col - 1] == " " and row[col] != " "
    assert pm.ok("version", "dev").stdout.strip() == expected
    js = json.loads(pm.ok("ls", "--format", "json").stdout)
    assert js[0]["Name"] == "dev" and js[0]["DockerVersion"] == f"v{expected}" and js[0]["State"] == "Running"
    table = pm.ok("ls", "--format", "table {{.Name}}: {{.DriverName}}")
    assert table.out_lines == ["NAME: DRIVER", "dev: none"]
    assert pm.ok("ls", "--filter", "state=running", "-q").out_lines == ["dev"]
    assert pm.ok("ls", "--filter", "driver=generic", "-q").out_lines == []


def test_env_reports_a_dead_engine_with_docker_machines_text(pm, engine):
    engine.stop()
    res = pm("env", "dev")
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr.startswith(
        "Error checking TLS connection: Error checking and/or regenerating the certs: "
        f'There was an error validating certificates for host "{engine.url[6:]}": connection refused'
    )
    assert "pymachine regenerate-certs [name]" in res.stderr


def test_env_refuses_an_engine_with_a_foreign_certificate(pm, tmp_path):
    from fixtures_dockerd import make_tls_material

    port = free_loopback_port()
    pm.ok("create", "-d", "none", "--url", f"tcp://127.0.0.1:{port}", "stranger")
    foreign = make_tls_material(tmp_path / "foreign")
    handle = start_dockerd(tmp_path / "d", foreign.ca, foreign.server_cert, foreign.server_key, port=port)
    try:
        res = pm("env", "stranger")
        assert res.returncode == 1
        assert "There was an error validating certificates" in res.stderr
        assert "certificate verify failed" in res.stderr or "x509" in res.stderr
    finally:
        handle.stop()
