"""``ls`` under one deadline with hosts that hang, and the lean hot path of env/ls."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fixtures_dockerd import start_engine_for

pytestmark = pytest.mark.integration

HEAVY = ("paramiko", "cryptography", "boto3", "botocore", "azure", "libcloud", "rich", "pycdlib", "pyvmomi")


class Tarpit:
    """Accepts TCP connections and never says a word: a hung engine."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stopped = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
                self.held.append(conn)
            except OSError:
                continue

    def close(self) -> None:
        self.stopped.set()
        for conn in self.held:
            conn.close()
        self.sock.close()


def clone_machine(store: Path, src: str, name: str, url: str) -> None:
    """Copy a none machine's directory under a new name and URL (test setup only)."""
    sdir, ddir = store / "machines" / src, store / "machines" / name
    ddir.mkdir(mode=0o700)
    for f in ("ca.pem", "cert.pem", "key.pem", "server.pem", "server-key.pem"):
        (ddir / f).write_bytes((sdir / f).read_bytes())
    cfg = json.loads((sdir / "config.json").read_text())
    cfg["Name"] = cfg["Driver"]["MachineName"] = name
    cfg["Driver"]["URL"] = url
    cfg["Driver"]["IPAddress"] = url.split("://", 1)[1]
    auth = cfg["HostOptions"]["AuthOptions"]
    for key in ("ServerCertPath", "ServerKeyPath", "StorePath"):
        auth[key] = auth[key].replace(f"/machines/{src}", f"/machines/{name}")
    (ddir / "config.json").write_text(json.dumps(cfg, indent=4))


@pytest.fixture
def fleet(pm, tmp_path):
    """40 machines on one live engine and 10 whose engines hang."""
    engine = start_engine_for(pm, "live00", tmp_path / "d")
    port = engine.port
    pits = [Tarpit() for _ in range(10)]
    for i in range(1, 40):
        clone_machine(pm.store, "live00", f"live{i:02d}", f"tcp://127.0.0.1:{port}")
    for i, pit in enumerate(pits):
        clone_machine(pm.store, "live00", f"hung{i:02d}", f"tcp://127.0.0.1:{pit.port}")
    try:
        yield engine, pits
    finally:
        for pit in pits:
            pit.close()
        engine.stop()


def rows(res) -> dict[str, list[str]]:
    return {line.split("|")[0]: line.split("|") for line in res.out_lines}


def test_ls_answers_at_its_deadline_with_what_is_known(pm, fleet):
    engine, pits = fleet
    fmt = "{{.Name}}|{{.State}}|{{.DockerVersion}}|{{.Error}}"
    # Seed the cache: hung05 was live once, so its last seen engine version is known.
    clone_machine(pm.store, "live00", "was-live", engine.url)
    first = rows(pm.ok("ls", "--format", fmt))
    version = first["was-live"][2]
    assert version.startswith("v20.")
    cfg_path = pm.store / "machines" / "was-live" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["Driver"]["URL"] = f"tcp://127.0.0.1:{pits[0].port}"
    cfg_path.write_text(json.dumps(cfg, indent=4))

    for args in ((), ("--timeout", "1")):
        got = rows(pm.ok("ls", "--format", fmt, *args))
        assert len(got) == 51
        hung = {n: r for n, r in got.items() if n.startswith("hung") or n == "was-live"}
        live = {n: r for n, r in got.items() if n.startswith("live")}
        assert all(r[1] == "Timeout" for r in hung.values()), hung
        assert all("no answer within" in r[3] and "last known state Running" in r[3] for r in hung.values())
        assert all(r[1:3] == ["Running", version] for r in live.values()), live
        assert got["was-live"][2] == f"{version} (cached)"
    table = pm.ok("ls").out_lines
    assert table[0].split()[:4] == ["NAME", "ACTIVE", "DRIVER", "STATE"]
    js = json.loads(pm.ok("ls", "--format", "json", "--filter", "name=^hung0[0-2]$").stdout)
    assert [(j["Name"], j["State"], j["Fresh"], j["LocalState"]) for j in js] == [
        (f"hung0{i}", "Timeout", False, "Running") for i in range(3)
    ]


def in_process(pm, *args: str) -> set[str]:
    """Run the CLI in a fresh interpreter and report which heavy modules it imported."""
    code = (
        "import sys; from machine.cli.main import main; rc = main(sys.argv[1:]);"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r});"
        "print('HEAVY=' + ','.join(heavy), file=sys.stderr); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=60, env=pm.env, check=False)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("HEAVY=")][-1]
    return {m for m in line[len("HEAVY="):].split(",") if m}


def test_env_and_ls_import_no_sdk_ssh_or_crypto(pm, tmp_path):
    engine = start_engine_for(pm, "dev", tmp_path / "d")
    try:
        assert in_process(pm, "env", "dev") == set()
        assert in_process(pm, "ls") == set()
        assert in_process(pm, "config", "dev") == set()
    finally:
        engine.stop()
