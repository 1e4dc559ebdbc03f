"""Bad input through the real command: one clear line, non-zero exit, store unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and directory under ``root`` with its mode and content digest."""
    out: dict[str, tuple[int, str]] = {}
    if not root.exists():
        return out
    for path in sorted(root.rglob("*")):
        if path.name == "pymachine-state.json" or "locks" in path.relative_to(root).parts:
            continue  # ls's cache of the last state seen, and lock files: not user data
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[str(path.relative_to(root))] = (stat.S_IMODE(st.st_mode), digest)
    return out


def one_line_error(res) -> str:
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {res.stderr!r}"
    assert "Traceback" not in res.stderr
    return lines[0]


@pytest.fixture
def populated(pm):
    pm.ok("create", "-d", "none", "--url", "tcp://127.0.0.1:1", "first")
    return pm


BAD_INPUT = [
    (
        ["create", "-d", "none", "--url", "tcp://127.0.0.1:1", "bad_name"],
        "Error creating machine: Invalid hostname specified. Allowed hostname chars are: 0-9a-zA-Z . -",
    ),
    (["create", "-d", "none", "--url", "tcp://127.0.0.1:1", "-x"], "flag provided but not defined: -x"),
    (["create", "-d", "bogus", "x"], 'Driver "bogus" not found'),
    (["create", "-d", "none", "--bogus-flag", "x"], "flag provided but not defined: --bogus-flag"),
    (["create", "-d", "none", "x"], "--url option is required when no driver is selected"),
    (["create", "-d", "none", "--url", "tcp://127.0.0.1:1", "first"], 'Docker machine "first" already exists'),
    (["create", "-d", "none", "--url", "tcp://127.0.0.1:1"], "Error: No machine name specified"),
    (
        ["create", "-d", "none", "--url", "tcp://127.0.0.1:1", "a", "b"],
        "Invalid command line. Found extra arguments ['b']",
    ),
    (["create", "-d", "none", "--url", "not a url", "x"], "is not a URL"),
    (
        ["create", "-d", "none", "--url", "tcp://127.0.0.1:1", "--swarm-discovery", "nodiscovery", "x"],
        "Swarm Discovery URL was in the wrong format",
    ),
    (["inspect", "ghost"], 'Docker machine "ghost" does not exist. Use "pymachine ls" to list machines.'),
    (["inspect", "first", "ghost"], "Error: Expected one machine name as an argument"),
    (["url", "ghost"], 'Docker machine "ghost" does not exist'),
    (["rm", "-y", "ghost"], 'Error removing host "ghost": Docker machine "ghost" does not exist'),
    (["rm"], "Error: Expected to get one or more machine names as arguments"),
    (["env", "-u", "first"], "Error: Expected no machine name when the -u flag is present"),
    (["ip"], 'Error: No machine name(s) specified and no "default" machine exists'),
    (["stop", "first"], "hosts without a driver cannot be stopped"),
    (["ls", "--filter", "colour=red"], "Unsupported filter key 'colour'"),
    (["ls", "--filter", "nosyntax"], "Unsupported filter syntax."),
    (["ls", "--bogus"], "flag provided but not defined: --bogus"),
    (["frobnicate"], "pymachine: 'frobnicate' is not a pymachine command. See 'pymachine --help'."),
    (["--nonsense", "ls"], "flag provided but not defined: --nonsense"),
    (["active", "extra"], "Error: Too many arguments given"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_one_line_nonzero_store_unchanged(populated, args, message):
    before = snapshot(populated.store)
    res = populated(*args)
    line = one_line_error(res) if "\n" not in message else res.stderr
    assert message in line
    assert res.returncode == 1
    assert snapshot(populated.store) == before


def test_unknown_driver_creates_nothing(pm):
    res = pm("create", "-d", "bogus", "x")
    one_line_error(res)
    assert not (pm.store / "machines" / "x").exists()


def test_unwritable_storage_path(pm, tmp_path):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("I am a file")
    res = pm("create", "-d", "none", "--url", "tcp://127.0.0.1:1", "x",
             env={"MACHINE_STORAGE_PATH": str(blocker / "store")})
    line = one_line_error(res)
    assert "cannot create storage path" in line
    assert blocker.read_text() == "I am a file"


def test_corrupt_config_is_an_error_row_not_a_crash(populated):
    pm = populated
    pm.ok("create", "-d", "none", "--url", "tcp://127.0.0.1:2", "second")
    (pm.store / "machines" / "second" / "config.json").write_text('{"ConfigVersion": 3, "Driv')
    (pm.store / "machines" / "halfmade").mkdir()
    unreadable = pm.store / "machines" / "third"
    unreadable.mkdir()
    (unreadable / "config.json").write_text("[1, 2]")
    before = snapshot(pm.store)
    res = pm("ls", "--format", "{{.Name}} {{.DriverName}} {{.State}} {{.Error}}")
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: line for line in res.out_lines}
    assert rows["first"].startswith("first none Running")
    assert "second not found Error corrupt config.json" in rows["second"]
    assert "halfmade not found Error" in rows["halfmade"] and "no config.json" in rows["halfmade"]
    assert "third not found Error config.json is not a JSON object" in rows["third"]
    one_line_error(pm("inspect", "second"))
    assert snapshot(pm.store) == before
    # A broken machine can still be removed with -f, and the rest of the store is untouched.
    pm.ok("rm", "-f", "second")
    assert not (pm.store / "machines" / "second").exists()
    assert (pm.store / "machines" / "first" / "config.json").exists()


def test_store_files_are_private(populated):
    store = populated.store
    for path in [store, *store.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.is_dir():
            assert mode == 0o700, path
        elif path.name.endswith("key.pem") or path.name == "config.json":
            assert mode == 0o600, path


def test_concurrent_creates_leave_a_consistent_store(pm):
    """20 distinct names and 5 racing on one name: 21 loadable machines and one CA."""
    names = [f"m{i}" for i in range(20)] + ["same"] * 5

    def create(name: str):
        return pm("create", "-d", "none", "--url", "tcp://127.0.0.1:9", name)

    with ThreadPoolExecutor(max_workers=25) as pool:
        results = list(pool.map(create, names))
    same = [r for n, r in zip(names, results, strict=True) if n == "same"]
    assert sum(r.returncode == 0 for r in same) == 1
    assert all('Docker machine "same" already exists' in r.stderr for r in same if r.returncode)
    assert all(r.returncode == 0 for n, r in zip(names, results, strict=True) if n != "same")
    res = pm.ok("ls", "-q")
    assert sorted(res.out_lines) == sorted(set(names))
    assert len(res.out_lines) == 21
    for name in set(names):
        data = json.loads((pm.store / "machines" / name / "config.json").read_text())
        assert data["Name"] == name and data["DriverName"] == "none"
    created_ca = [r for r in results if "Creating CA:" in r.stdout]
    assert len(created_ca) == 1
    ca = (pm.store / "certs" / "ca.pem").read_bytes()
    for name in set(names):
        assert (pm.store / "machines" / name / "ca.pem").read_bytes() == ca
    assert not [p for p in os.listdir(pm.store / "machines") if p.startswith(".")]
