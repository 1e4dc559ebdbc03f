"""Benchmark the hot path: ``pymachine env`` and ``ls``, as ratios to ``python3 -c pass``.

Also ``ls`` over 50 machines of which 10 have hung engines (a listener that
accepts and never answers TLS), by default and with ``--timeout N``.
Run as root (it starts a private dockerd): ``.venv/bin/python bench/bench_cli.py``.
Everything it dials is on 127.0.0.1.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "integration")]

from fixtures_dockerd import free_loopback_port, start_dockerd
from test_ls_deadline import Tarpit, clone_machine

PYMACHINE = str(Path(sys.executable).parent / "pymachine")
RUNS = int(os.environ.get("BENCH_RUNS", "15"))


def wall(argv: list[str], env: dict[str, str], runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, timeout=120, check=False)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.decode()}")
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pm-bench-") as tmp:
        t = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(MACHINE_STORAGE_PATH=str(t / "store"), HOME=str(t), SHELL="/bin/bash",
                   DOCKER_CONFIG=str(t / "docker"))
        port = free_loopback_port()
        subprocess.run([PYMACHINE, "create", "-d", "none", "--url", f"tcp://127.0.0.1:{port}", "m00"],
                       env=env, check=True, capture_output=True)
        mdir = t / "store" / "machines" / "m00"
        engine = start_dockerd(t / "d", mdir / "ca.pem", mdir / "server.pem", mdir / "server-key.pem", port=port)
        pits: list[Tarpit] = []
        try:
            for i in range(1, 20):
                clone_machine(t / "store", "m00", f"m{i:02d}", engine.url)
            base = wall([sys.executable, "-c", "pass"], env)
            env_t = wall([PYMACHINE, "env", "m00"], env)
            ls_t = wall([PYMACHINE, "ls"], env)
            print(f"baseline python3 -c pass      {base * 1000:7.1f} ms")
            print(f"pymachine env m00             {env_t * 1000:7.1f} ms   {env_t / base:4.1f}x baseline (goal <= 3x)")
            print(f"pymachine ls (20 machines)    {ls_t * 1000:7.1f} ms   {ls_t / base:4.1f}x baseline")

            pits = [Tarpit() for _ in range(10)]
            for i in range(20, 40):
                clone_machine(t / "store", "m00", f"m{i:02d}", engine.url)
            for i, pit in enumerate(pits):
                clone_machine(t / "store", "m00", f"hung{i}", f"tcp://127.0.0.1:{pit.port}")
            hung_default = wall([PYMACHINE, "ls"], env, runs=3)
            hung_3 = wall([PYMACHINE, "ls", "--timeout", "3"], env, runs=3)
            print(f"ls, 50 machines, 10 hung      {hung_default:7.2f} s    (goal <= 2.5 s; docker-machine: 10 s)")
            print(f"ls --timeout 3, same          {hung_3:7.2f} s    (goal <= 3.5 s)")
        finally:
            for pit in pits:
                pit.close()
            engine.stop()


if __name__ == "__main__":
    main()
