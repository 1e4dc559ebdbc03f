"""The store format, tested against Docker Machine's own output.

``tests/fixtures/dm0162-store`` was written by docker-machine 0.16.2 itself
(see its README): a ``none`` machine ``local1`` and a ``generic`` machine
``gen1`` whose certificates docker-machine issued.  Only what the README says
was replaced is rewritten here (``@STORE@`` and ``@HOME@`` in config.json).

Everything runs in a private network namespace made for the test, where
``gen1``'s address 10.231.67.2 sits on the loopback device: ``gen1``'s engine
is a real dockerd serving docker-machine's own server certificate for that
address, ``local1``'s a dockerd on 127.0.0.1:2376 with a certificate from the
fixture's CA.  Nothing dials outside the namespace.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from conftest import PYMACHINE
from fixtures_dockerd import start_dockerd

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "dm0162-store"
GEN1_IP = "10.231.67.2"
DOCKER = shutil.which("docker") or "/usr/bin/docker"

if os.name != "posix" or os.geteuid() != 0 or shutil.which("ip") is None:
    pytest.skip("needs root and iproute2 for a private network namespace", allow_module_level=True)


def sh(*args: str, timeout: float = 30) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr}"
    return proc.stdout


@contextmanager
def private_netns() -> Iterator[str]:
    """A network namespace with only ``lo`` (127.0.0.1 and GEN1_IP); removed with all its processes."""
    name = f"pmdm-{secrets.token_hex(4)}"  # not pmt-*: the hosts tier's janitor owns those
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "addr", "add", f"{GEN1_IP}/32", "dev", "lo")
        yield name
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                              timeout=10, check=False).stdout.split()
        for pid in pids:
            with suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10, check=False)


def load_fixture(dest: Path, home: Path) -> Path:
    """Copy the fixture store to ``dest``, substituting only @STORE@ and @HOME@ in config.json."""
    shutil.copytree(FIXTURE, dest, ignore=shutil.ignore_patterns("README.md"))
    for config in dest.glob("machines/*/config.json"):
        text = config.read_text().replace("@STORE@", str(dest)).replace("@HOME@", str(home))
        config.write_text(text)
    for key in [*dest.glob("machines/*/*key*"), *dest.glob("machines/*/id_*"), *dest.glob("certs/*")]:
        key.chmod(0o600)  # docker-machine's modes (git keeps no modes)
    return dest


def fixture_config(name: str, store: Path, home: Path) -> dict:
    text = (FIXTURE / "machines" / name / "config.json").read_text()
    return json.loads(text.replace("@STORE@", str(store)).replace("@HOME@", str(home)))


def shape(value):
    """Key order and JSON types, recursively; lists by their items' shapes."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return ["list", *[shape(v) for v in value]]
    return type(value).__name__


class InNetns:
    """Runs pymachine, the docker CLI and bash inside the namespace with the test's environment."""

    def __init__(self, netns: str, env: dict[str, str]) -> None:
        self.netns, self.env = netns, env

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", f"--net=/run/netns/{self.netns}", *argv], capture_output=True, text=True,
                              timeout=timeout, env=self.env, check=False)

    def pm(self, *args: str) -> str:
        proc = self.run(PYMACHINE, *args)
        assert proc.returncode == 0, f"pymachine {' '.join(args)} failed ({proc.returncode}): {proc.stderr}"
        return proc.stdout


def issue_cert_from_fixture_ca(store: Path, out: Path) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 from the fixture's own CA, with the openssl CLI."""
    out.mkdir(parents=True)
    key, csr, cert, ext = out / "server-key.pem", out / "server.csr", out / "server.pem", out / "ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    sh("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    sh("openssl", "req", "-new", "-key", str(key), "-subj", "/O=local1", "-out", str(csr))
    sh("openssl", "x509", "-req", "-in", str(csr), "-CA", str(store / "certs" / "ca.pem"),
       "-CAkey", str(store / "certs" / "ca-key.pem"), "-CAcreateserial", "-CAserial", str(out / "ca.srl"),
       "-days", "2", "-sha256", "-extfile", str(ext), "-out", str(cert))
    return cert, key


def test_docker_machine_0162_store_loads_as_it_is(pm, tmp_path):
    """ls, inspect, config and env work on the store docker-machine wrote, and change none of it."""
    store = load_fixture(tmp_path / "dm-store", pm.home)
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    env = {**pm.env, "MACHINE_STORAGE_PATH": str(store)}
    local_cert, local_key = issue_cert_from_fixture_ca(store, tmp_path / "local1-srv")
    with private_netns() as ns:
        gen1 = store / "machines" / "gen1"
        engines = [
            start_dockerd(tmp_path / "d-gen1", gen1 / "ca.pem", gen1 / "server.pem", gen1 / "server-key.pem",
                          port=2376, address=GEN1_IP, netns=ns),
        ]
        try:
            engines.append(start_dockerd(tmp_path / "d-local1", store / "certs" / "ca.pem", local_cert, local_key,
                                         port=2376, netns=ns))
            # The generic driver's state is a TCP dial of the SSH port: something listens there.
            ssh_port = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-c",
                 f"import socket,time; s=socket.socket(); s.bind(({GEN1_IP!r}, 22)); s.listen(8); time.sleep(600)"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            run = InNetns(ns, env)
            versions = {}
            for name, handle in zip(("gen1", "local1"), engines, strict=True):
                versions[name] = sh(DOCKER, "-H", f"unix://{handle.socket}", "version", "--format",
                                    "{{.Server.Version}}").strip()

            rows = run.pm("ls", "--timeout", "20", "--format",
                          "{{.Name}}|{{.DriverName}}|{{.State}}|{{.URL}}|{{.DockerVersion}}|{{.Error}}").splitlines()
            assert rows == [
                f"gen1|generic|Running|tcp://{GEN1_IP}:2376|v{versions['gen1']}|",
                f"local1|none|Running|tcp://127.0.0.1:2376|v{versions['local1']}|",
            ]

            for name in ("gen1", "local1"):
                text = run.pm("inspect", name)
                inspected = json.loads(text)
                expected = fixture_config(name, store, pm.home)
                assert inspected == expected and shape(inspected) == shape(expected)
            assert run.pm("inspect", "-f", "{{.HostOptions.EngineOptions.Labels}}", "gen1") == "[env=dev]\n"
            assert run.pm("inspect", "-f", "{{.Driver.SSHKeyPath}}", "gen1") == f"{gen1 / 'id_ed25519'}\n"

            for name in ("gen1", "local1"):
                config = run.pm("config", name).split()
                assert config[0] == "--tlsverify" and config[-1] in (
                    f"-H=tcp://{GEN1_IP}:2376", "-H=tcp://127.0.0.1:2376")
                out = run.run(DOCKER, *[arg.replace('"', "") for arg in config], "version", "--format",
                              "{{.Server.Version}}")
                assert out.returncode == 0 and out.stdout.strip() == versions[name], out.stderr
                out = run.run("bash", "-c", f'eval "$({PYMACHINE} env {name})" && '
                                            f'{DOCKER} version --format "{{{{.Server.Version}}}}"')
                assert out.returncode == 0 and out.stdout.strip() == versions[name], out.stderr
            ssh_port.kill()
            ssh_port.wait(timeout=10)
        finally:
            for handle in engines:
                handle.stop()
    after = {p: p.read_bytes() for p in store.rglob("*")
             if p.is_file() and "pymachine-state" not in p.name and "locks" not in p.parts}
    assert after == before, "reading a docker-machine store must not rewrite it"


def test_a_machine_pymachine_writes_matches_docker_machines_config(pm, tmp_path):
    """The README's create commands, run by pymachine: the same keys, order, types and values."""
    key = pm.home / ".ssh" / "id_ed25519"
    key.parent.mkdir(mode=0o700)
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    with private_netns() as ns:
        run = InNetns(ns, {**pm.env, "PYMACHINE_SSH_WAIT": "0"})
        run.pm("create", "-d", "none", "--url", "tcp://127.0.0.1:2376", "local1")
        # Nothing answers on GEN1_IP:22 in the namespace: create fails at the SSH step,
        # after writing the machine; docker-machine's run reached a real host.
        res = run.run(PYMACHINE, "create", "-d", "generic", "--generic-ip-address", GEN1_IP,
                      "--generic-ssh-key", str(key), "--generic-ssh-user", "root",
                      "--engine-label", "env=dev", "--engine-env", "HTTP_PROXY=http://proxy.example:3128",
                      "--engine-opt", "log-level=warn", "--engine-insecure-registry", "reg.example:5000",
                      "--engine-registry-mirror", "https://mirror.example", "--tls-san", "extra.example", "gen1")
        assert res.returncode == 1 and "connection refused" in res.stderr, res.stderr
    for name in ("local1", "gen1"):
        text = (pm.store / "machines" / name / "config.json").read_text()
        ours = json.loads(text)
        if name == "gen1":
            # pymachine's own top-level record of the failed step, which Go's decoder ignores.
            assert ours.pop("Pymachine")["LastError"]["Step"] == "ssh"
        theirs = fixture_config(name, pm.store, pm.home)
        assert shape(ours) == shape(theirs), name
        assert ours == theirs, name
        assert text.startswith('{\n    "ConfigVersion": 3,\n    "Driver": {\n        "IPAddress": ')


def test_load_save_round_trip_keeps_docker_machines_bytes_and_unknown_fields(tmp_path):
    from pymachine.machine.store import Store

    store_dir = load_fixture(tmp_path / "s", tmp_path / "home")
    store = Store(store_dir)
    for name in ("gen1", "local1"):
        path = store_dir / "machines" / name / "config.json"
        original = path.read_bytes()
        store.save(store.load(name))
        assert path.read_bytes() == original  # 4-space indent, key order, null vs []: all docker-machine's
    path = store_dir / "machines" / "gen1" / "config.json"
    data = json.loads(path.read_text())
    data["FutureField"] = {"a": 1}
    data["Driver"]["FutureDriverField"] = [1, None]
    path.write_text(json.dumps(data, indent=4))
    store.save(store.load("gen1"))
    assert json.loads(path.read_text()) == data
