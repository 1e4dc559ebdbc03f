"""Issue 13: concurrent and killed creates and removes leave a store that loads.

30 real ``pymachine`` processes create and remove overlapping names at once;
then creates and removes are killed with SIGKILL at random moments and at
every atomic write.  Afterwards every machine either loads cleanly or is
removed by ``rm -f``, and nothing lingers: no tomb, no temp file, no
half-made directory.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import PYMACHINE
from tests.integration.test_trust_create import INJECT

URL = "tcp://127.0.0.1:1"
# One-line errors a loser of a race may see; anything else (or a traceback) is a bug.
RACE_ERRORS = ("already exists", "does not exist", "is busy", "removed while", "has no config.json")


def run(pm, *args: str):
    return subprocess.run([PYMACHINE, *args], capture_output=True, text=True, timeout=120, env=pm.env, check=False)


def settle_and_clean(pm) -> None:
    """Every machine loads or is removable with rm -f; then nothing at all is left."""
    res = run(pm, "ls", "--format", "{{json .}}")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    rows = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]
    for row in rows:
        if row["State"] == "Running" and not row["Error"].startswith("create"):
            assert run(pm, "inspect", row["Name"]).returncode == 0  # it loads
        res = run(pm, "rm", "-f", row["Name"])
        assert res.returncode == 0, res.stderr
    machines = pm.store / "machines"
    assert sorted(p.name for p in machines.iterdir()) == []  # no tomb, no orphan directory
    stray = [p for p in pm.store.rglob("*") if ".tmp" in p.name]
    assert stray == []  # no temp file of an interrupted atomic write
    res = run(pm, "ls", "-q")
    assert res.returncode == 0 and res.stdout == ""


def _check(res) -> None:
    assert "Traceback" not in res.stderr and "Error: " not in res.stderr[:7], res.stderr
    if res.returncode != 0:
        lines = [x for x in res.stderr.splitlines() if x.strip()]
        assert lines and all(any(e in x for e in RACE_ERRORS) for x in lines), res.stderr


def test_30_parallel_creates_and_removes_of_overlapping_names(pm):
    pm.ok("create", "-d", "none", "--url", URL, "seed")  # CA and client cert exist: the race is about machines
    rng = random.Random(13)
    names = [f"c{i}" for i in range(5)]
    ops = [("create", "-d", "none", "--url", URL, rng.choice(names)) if i % 2 == 0 else
           ("rm", "-f", rng.choice(names)) for i in range(30)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=30) as pool:
        results = list(pool.map(lambda op: run(pm, *op), ops))
    elapsed = time.monotonic() - started
    for res in results:
        _check(res)
    created = sum(1 for op, res in zip(ops, results, strict=True) if op[0] == "create" and res.returncode == 0)
    assert created >= 1
    rows = {
        json.loads(x)["Name"]: json.loads(x) for x in run(pm, "ls", "--format", "{{json .}}").stdout.split("\n") if x
    }
    for row in rows.values():  # nothing is left half-made after clean races
        assert row["State"] == "Running" and "rm -f" not in row["Error"], row
    settle_and_clean(pm)
    print(f"30 parallel creates/removes in {elapsed:.1f}s, {created} creates won")


KILL_POINTS = ["config.json", "ca.pem", "cert.pem", "key.pem", "server-key.pem", "server.pem"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_create_killed_at_each_write_is_removable(pm, tmp_path, point):
    pm.ok("create", "-d", "none", "--url", URL, "seed")
    script = tmp_path / "inject.py"
    script.write_text(INJECT)
    res = subprocess.run([sys.executable, str(script), "create", "-d", "none", "--url", URL, "m"],
                         capture_output=True, text=True, timeout=120, check=False,
                         env={**pm.env, "INJECT_MODE": "sigkill", "INJECT_TARGET": point})
    assert res.returncode == -9, res.stderr
    row = {
        json.loads(x)["Name"]: json.loads(x) for x in run(pm, "ls", "--format", "{{json .}}").stdout.split("\n") if x
    }["m"]
    assert row["State"] == "Error", row  # never a plain Running machine
    settle_and_clean(pm)


def test_kill_9_at_random_points_of_create_and_rm(pm):
    pm.ok("create", "-d", "none", "--url", URL, "seed")
    rng = random.Random(1313)
    names = ["k0", "k1", "k2"]
    for _ in range(14):
        name = rng.choice(names)
        args = (["create", "-d", "none", "--url", URL, name] if rng.random() < 0.6 else ["rm", "-f", name])
        proc = subprocess.Popen([PYMACHINE, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=pm.env)
        time.sleep(rng.uniform(0.05, 0.9))
        proc.kill()  # SIGKILL: no handler runs
        proc.wait(timeout=30)
        res = run(pm, "ls")
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    settle_and_clean(pm)
    assert not (pm.store / "machines" / "seed").exists()
