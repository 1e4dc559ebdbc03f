"""Benchmark ``create -d qemu`` phases and ``ls`` over qemu machines.

Create (pymachine's prebuilt image, restricted network, one run per variant):
phase timings (overlay + seed prep, boot to SSH, provisioning, engine ready),
how many times the guest's engine started, and the share of the wall time
beyond the guest's own boot.  Variants, measured in the same run:

* ``baseline``  -- no engine files on the seed: the engine boots with Debian's
  packaged configuration and provisioning rewrites it and restarts it (the
  behaviour before the seeded first boot);
* ``seeded``    -- the code as it is: certs + drop-in on the seed;
* ``seeded+keep-cert`` -- ``seeded`` with ``after_create`` keeping the server
  certificate the driver already issued (``provision_over(new_certs=False)``),
  i.e. the one-line change to machine/provision.py this depends on;
* ``1-vcpu``    -- ``seeded`` with ``--qemu-cpu-count 1`` (the default before it became 2).

ls: five qemu machine directories whose pidfiles point at live QEMU processes
(``-machine none``, paused) or dead pids; ``ls`` answers from pidfiles and
/proc without SSH.  Goal <= 0.3 s; the baseline is ``ls`` of an empty store.

``--arch arm64`` benches a machine of that arch instead (on x86_64: under TCG,
booted through AAVMF and the disk's shim/GRUB) and prints the image's build
time from its manifest.  The target for the host's arch, image cached and
the KVM probe answered once this boot: create to "Docker is up" <= 40 s.

Run as root from the repository root: ``.venv/bin/python -m bench.bench_qemu``
(``--skip-create`` for the ls part only; ``--variants seeded,...`` to choose).
Everything it dials is 127.0.0.1; the guest's network is restricted.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PYMACHINE = str(Path(sys.executable).parent / "pymachine")
VARIANTS = ("baseline", "seeded", "seeded+keep-cert", "1-vcpu")
#: Flags a variant adds to ``create``.
VARIANT_ARGS = {"1-vcpu": ["--qemu-cpu-count", "1"]}
LS_GOAL = 0.3
_VM_UP = re.compile(r"VM up: prepare (?P<prep>[0-9.]+)s, boot to SSH (?P<boot>[0-9.]+)s")


# ----------------------------------------------------------------------------- child: one create


def child(variant: str, argv: list[str]) -> int:
    """Run the pymachine CLI in this process with the variant's patch applied."""
    from pymachine.machine import provision
    from pymachine.machine.cli import main as cli
    from pymachine.machine.drivers import qemu

    if variant == "baseline":
        qemu.QemuDriver._engine_files = lambda self: {}  # type: ignore[method-assign]
    elif variant == "seeded+keep-cert":
        def after_create(machine, log):  # the proposed machine/provision.py behaviour
            log("Waiting for SSH to be available...")
            client = provision.connect(machine.driver, wait=provision.ssh_wait())
            with client:
                provision.provision_over(machine, client, log, new_certs=False)

        provision.after_create = after_create  # type: ignore[assignment]
    elif variant not in ("seeded", *VARIANT_ARGS):
        raise SystemExit(f"unknown variant {variant!r}")
    return cli.main(argv)


# ----------------------------------------------------------------------------- parent


def _run_stamped(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, list[tuple[float, str]], float]:
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[tuple[float, str]] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append((time.monotonic() - start, line.rstrip("\n")))
            if time.monotonic() - start > timeout:
                break
        proc.wait(timeout=max(1.0, timeout - (time.monotonic() - start)))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode, lines, time.monotonic() - start


def _at(lines: list[tuple[float, str]], needle: str) -> float | None:
    return next((t for t, line in lines if needle in line), None)


def bench_create(variant: str, image: Path, env: dict[str, str], arch: str = "") -> dict[str, float] | None:
    name = "bench-" + re.sub(r"[^a-z]", "", variant)
    argv = [sys.executable, "-m", "bench.bench_qemu", "--child", variant, "--",
            "create", "-d", "qemu", "--qemu-image", str(image), "--qemu-restrict-network",
            *(["--qemu-arch", arch] if arch else []), *VARIANT_ARGS.get(variant, []), name]
    code, lines, total = _run_stamped(argv, env, timeout=1800)
    try:
        if code != 0:
            print(f"  {variant}: create failed (exit {code}):")
            for t, line in lines[-8:]:
                print(f"    +{t:6.1f}s {line}")
            return None
        up = next((m for _, line in lines if (m := _VM_UP.search(line))), None)
        t_up = _at(lines, "VM up:")
        t_check = _at(lines, "Checking connection to Docker")
        t_done = _at(lines, "Docker is up and running!")
        if up is None or None in (t_up, t_check, t_done):
            print(f"  {variant}: could not find the phase lines in the output")
            return None
        count = "sudo journalctl -b -u docker.service --no-pager -o cat | grep -c '^Started docker'"
        starts = subprocess.run([PYMACHINE, "ssh", name, "--", count], env=env, capture_output=True, text=True,
                                timeout=120, check=False)
        boot = float(up["boot"])
        result = {
            "before the driver (checks, certs)": t_up - float(up["prep"]) - boot,  # type: ignore[operator]
            "overlay + seed prep": float(up["prep"]),
            "boot to SSH": boot,
            "provisioning": t_check - t_up,  # type: ignore[operator]
            "engine ready": t_done - t_check,  # type: ignore[operator]
            "after (env hint, exit)": total - t_done,  # type: ignore[operator]
            "total": total,
            "engine starts": float(starts.stdout.strip() or "nan"),
        }
        return result
    finally:
        subprocess.run([PYMACHINE, "rm", "-f", "-y", name], env=env, capture_output=True, timeout=180, check=False)


def print_create(results: dict[str, dict[str, float]]) -> None:
    keys = [k for k in next(iter(results.values())) if k not in ("total", "engine starts")]
    width = max(len(k) for k in keys) + 2
    print(f"\n{'create -d qemu (TCG)':<{width}}" + "".join(f"{v:>20}" for v in results))
    for key in [*keys, "total"]:
        print(f"{key:<{width}}" + "".join(f"{r[key]:>19.1f}s" for r in results.values()))
    print(f"{'engine starts in guest':<{width}}" + "".join(f"{r['engine starts']:>20.0f}" for r in results.values()))
    print(f"{'beyond the boot':<{width}}" + "".join(
        f"{r['total'] - r['boot to SSH']:>12.1f}s {100 * (r['total'] - r['boot to SSH']) / r['total']:>4.0f}%"
        for r in results.values()))
    if "baseline" in results:
        base = results["baseline"]
        for variant, r in results.items():
            if variant != "baseline":
                print(f"{variant}: total {r['total'] / base['total']:.2f}x baseline, "
                      f"beyond-boot {(r['total'] - r['boot to SSH']) / (base['total'] - base['boot to SSH']):.2f}x")


def _make_ls_store(root: Path, live: int, dead: int) -> list[subprocess.Popen]:
    """A store with ``live + dead`` qemu machines; returns the live QEMU processes."""
    from pymachine.machine import certs
    from pymachine.machine.drivers.qemu import PIDFILE
    from pymachine.machine.host import CreateOptions, new_host, prepare_driver
    from pymachine.machine.store import Store

    store = Store(root)
    store.ensure()
    certs.bootstrap_certificates(certs.CertPaths(store.certs_dir / "ca.pem", store.certs_dir / "ca-key.pem",
                                                 store.certs_dir / "cert.pem", store.certs_dir / "key.pem"),
                                 log=lambda _m: None)
    procs = []
    for i in range(live + dead):
        name = f"vm{i}"
        driver = prepare_driver(store, name, "qemu", {})
        driver.settings.update(ssh_port=20000 + i, engine_port=21000 + i, accel_used="tcg")
        store.reserve(name)
        store.save(new_host(store, name, driver, CreateOptions()))
        pidfile = store.machine_dir(name) / PIDFILE
        if i < live:
            qmp = store.machine_dir(name) / "qmp.sock"
            subprocess.run(["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none", "-S",
                            "-qmp", f"unix:{qmp},server=on,wait=off", "-pidfile", str(pidfile), "-daemonize"],
                           check=True, timeout=60, stdin=subprocess.DEVNULL)
        else:
            dead_proc = subprocess.Popen(["true"])
            dead_proc.wait(timeout=10)
            pidfile.write_text(f"{dead_proc.pid}\n")
    return procs


def _time_cmd(argv: list[str], env: dict[str, str], runs: int) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(runs):
        t = time.monotonic()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
        times.append(time.monotonic() - t)
        out = proc.stdout if proc.returncode == 0 else proc.stderr
    return statistics.median(times), out


def bench_ls(runs: int = 7) -> None:
    with tempfile.TemporaryDirectory(prefix="pm-bench-ls-") as tmp:
        empty = Path(tmp) / "empty"
        full = Path(tmp) / "store"
        base_env = {k: v for k, v in os.environ.items() if k not in ("MACHINE_STORAGE_PATH",)}
        try:
            _make_ls_store(full, live=3, dead=2)
            version, _ = _time_cmd([PYMACHINE, "--version"], base_env, runs)
            baseline, _ = _time_cmd([PYMACHINE, "ls"], {**base_env, "MACHINE_STORAGE_PATH": str(empty)}, runs)
            listed, out = _time_cmd([PYMACHINE, "ls"], {**base_env, "MACHINE_STORAGE_PATH": str(full)}, runs)
        finally:
            for pidfile in full.glob("machines/*/qemu.pid"):
                try:
                    pid = int(pidfile.read_text())
                    if b"qemu-system" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(pid, signal.SIGKILL)
                except (OSError, ValueError):
                    pass
        print("\nls with 5 qemu machines (3 live QEMU pids, 2 dead), median of", runs)
        print(out.rstrip())
        print(f"pymachine --version      {version:.3f}s")
        print(f"ls, empty store          {baseline:.3f}s  (baseline)")
        print(f"ls, 5 qemu machines      {listed:.3f}s  ({listed / baseline:.2f}x baseline; goal <= {LS_GOAL}s: "
              f"{'met' if listed <= LS_GOAL else 'NOT met'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--image", help="image directory (default: the tests' cached image)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--arch", default="", help="amd64 or arm64 (default: the host's)")
    parser.add_argument("--skip-create", action="store_true")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.child:
        rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
        return child(args.child, rest)
    if not args.skip_create:
        if args.image:
            image = Path(args.image)
        else:
            from tests.vm_image import cached_image

            info = cached_image(args.arch or None)
            image = info.directory
            print(f"image {info.recipe} ({info.arch}): built in {info.manifest.get('build_seconds')}s", flush=True)
        results: dict[str, dict[str, float]] = {}
        with tempfile.TemporaryDirectory(prefix="pm-bench-qemu-") as store:
            env = {**os.environ, "MACHINE_STORAGE_PATH": store}
            for variant in args.variants.split(","):
                print(f"create ({variant})...", flush=True)
                r = bench_create(variant, image, env, args.arch)
                if r is not None:
                    results[variant] = r
                    print("  " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()), flush=True)
            for pidfile in Path(store).glob("machines/*/qemu.pid"):  # never leave a VM behind
                subprocess.run([PYMACHINE, "rm", "-f", "-y", pidfile.parent.name], env=env,
                               capture_output=True, timeout=180, check=False)
        if results:
            print_create(results)
    if shutil.which("qemu-system-x86_64"):
        bench_ls()
    return 0


if __name__ == "__main__":
    sys.exit(main())
