"""Benchmark ``pymachine ls`` over 30 cloud machines: 10 amazonec2, 10 digitalocean, 10 azure.

The clouds are moto_server (behind the counting ``ApiProxy``), ``FakeDigitalOcean``
and ``FakeARM``, all on 127.0.0.1.  Machines are made the way the integration
tests make them (the driver's own ``create`` against the emulator, then the
stored config; no provisioning).  Prints median wall times (default deadline
and ``--timeout 10``), whether every row got a fresh state, and how many
list/describe API calls each cloud received per ``ls`` -- the goal is one per
driver and account/region, not one per machine.  Baselines measured in the
same run: ``python3 -c pass`` and ``ls`` over 30 ``none`` machines.

Run: ``.venv/bin/python -m bench.bench_cloud_ls`` (``BENCH_RUNS`` = runs per figure).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "integration")]

from moto_server import ApiProxy, free_port, start_moto_server
from test_ls_deadline import clone_machine

from tests.fakes.azure_arm import FakeARM
from tests.fakes.digitalocean import FakeDigitalOcean

PYMACHINE = str(Path(sys.executable).parent / "pymachine")
RUNS = int(os.environ.get("BENCH_RUNS", "7"))
N = 10
STOPPED = 3  # per driver: the first three machines are stopped, so a state must really be read
FORMAT = "{{.Name}}|{{.DriverName}}|{{.State}}|{{.Error}}"
AZURE_IP = "127.0.0.9"
LAST_OUT: dict[tuple[str, ...], str] = {}


def clean_env(tmp: Path) -> dict[str, str]:
    """A private environment: own store and HOME, no proxies, no CA overrides, no metadata service."""
    drop = ("DOCKER_", "AWS_", "AZURE_", "DIGITALOCEAN_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy",
                                 "requests_ca_bundle", "curl_ca_bundle")}
    env.update(MACHINE_STORAGE_PATH=str(tmp / "store"), HOME=str(tmp), DOCKER_CONFIG=str(tmp / "docker"),
               AWS_EC2_METADATA_DISABLED="true", AWS_SHARED_CREDENTIALS_FILE=str(tmp / "no-credentials"),
               AWS_CONFIG_FILE=str(tmp / "no-config"), NO_PROXY="127.0.0.1,localhost")
    return env


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed, proc.stdout


def rows_of(out: str) -> dict[str, str]:
    rows = {}
    for line in out.splitlines():
        name, _driver, state, error = [*line.split("|", 3), "", "", ""][:4]
        rows[name] = f"{state}:Timeout" if "timeout" in error.lower() else state
    return rows


def do_address() -> Callable[..., str]:
    """Droplet addresses on loopback (the fake would otherwise have none to give)."""
    counter = iter(range(1, 250))
    return lambda _droplet, _keys: f"127.77.0.{next(counter)}"


def make_ec2(store: Path, proxy: ApiProxy, moto) -> None:
    from test_amazonec2 import flag_values, loopback_subnet, make_machine, some_ami

    _, subnet = loopback_subnet(moto, 7)
    ami = some_ami(moto)
    for i in range(N):
        make_machine(store, f"ec2-{i:02d}", flag_values(endpoint=proxy.url, ami=ami, subnet_id=subnet,
                                                        use_private_address=True,
                                                        private_ip_address=f"127.0.7.{20 + i}"))


    ids = [json.loads((store / "machines" / f"ec2-{i:02d}" / "config.json").read_text())["Driver"]["InstanceId"]
           for i in range(STOPPED)]
    moto.client().stop_instances(InstanceIds=ids)


def make_do(store: Path, fake: FakeDigitalOcean) -> None:
    from test_digitalocean import stored_machine

    pm = SimpleNamespace(store=store)
    for i in range(N):
        driver, _ = stored_machine(pm, fake, f"do-{i:02d}")
        if i < STOPPED:
            fake.set_status(driver.droplet_id, "off")


def make_azure(store: Path, fake: FakeARM) -> None:
    from test_azure import new_driver, save_machine

    for i in range(N):
        driver = new_driver(fake, store, f"az-{i:02d}")
        if i == 0:
            driver.pre_create_check()
        driver.create(lambda _line: None)
        save_machine(store, driver)
        if i < STOPPED:
            driver.stop(lambda _line: None)


def bootstrap_certs(store: Path) -> None:
    """The store's CA and client cert, as ``create`` makes them, so ``ls`` really dials each engine."""
    from pymachine.machine import certs
    from pymachine.machine.store import Store

    d = Store(store).certs_dir
    certs.bootstrap_certificates(certs.CertPaths(d / "ca.pem", d / "ca-key.pem", d / "cert.pem", d / "key.pem"),
                                 log=lambda _line: None)


def make_none(store_env: dict[str, str], store: Path) -> None:
    """30 ``none`` machines whose engine port is closed (refused at once, like the cloud ones)."""
    url = f"tcp://127.0.0.1:{free_port()}"
    subprocess.run([PYMACHINE, "create", "-d", "none", "--url", url, "none-00"], env=store_env,
                   check=True, capture_output=True, timeout=120)
    for i in range(1, 3 * N):
        clone_machine(store, "none-00", f"none-{i:02d}", url)


def series(argv: list[str], env: dict[str, str], before: Callable[[], None] | None = None,
           after: Callable[[], dict[str, int]] | None = None) -> tuple[float, list[dict[str, str]], list[dict]]:
    times, rows, calls = [], [], []
    for _ in range(RUNS):
        if before:
            before()
        elapsed, out = timed(argv, env)
        times.append(elapsed)
        rows.append(rows_of(out))
        LAST_OUT[tuple(argv)] = out
        if after:
            calls.append(after())
    return statistics.median(times), rows, calls


def fresh(all_rows: list[dict[str, str]], expected: dict[str, str]) -> str:
    """'yes' when every run listed every machine with its true state (no Timeout, no Error)."""
    wrong = Counter(f"{name}={state}" for rows in all_rows for name, state in rows.items()
                    if expected.get(name) != state)
    sizes = {len(rows) for rows in all_rows}
    ok = not wrong and sizes == {len(expected)}
    return "yes" if ok else f"NO (rows per run {sorted(sizes)}, wrong rows {dict(wrong)})"


def expected_states(prefixes: tuple[str, ...], stopped: int) -> dict[str, str]:
    return {f"{p}-{i:02d}": "Stopped" if i < stopped else "Running" for p in prefixes for i in range(N)}


def main() -> None:
    saved = dict(os.environ)
    for key in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "AZURE_CLIENT_SECRET", "HTTP_PROXY", "HTTPS_PROXY",
                "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(key, None)
    os.environ.update(AWS_EC2_METADATA_DISABLED="true", AWS_ACCESS_KEY_ID="testing",
                      AWS_SECRET_ACCESS_KEY="testing-secret", PYMACHINE_AZURE_POLL_INTERVAL="0.01",
                      NO_PROXY="127.0.0.1,localhost")
    try:
        with tempfile.TemporaryDirectory(prefix="pm-bench-cloud-") as tmp_s:
            run(Path(tmp_s))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run(tmp: Path) -> None:
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp / "no-credentials")
    os.environ["AWS_CONFIG_FILE"] = str(tmp / "no-config")
    env = clean_env(tmp)
    from test_azure import azure_env

    with (
        start_moto_server() as moto,
        ApiProxy(moto.port) as proxy,
        FakeDigitalOcean(tmp / "fake-do", address_for=do_address()) as do_fake,
        FakeARM(tmp / "fake-arm", public_ip=AZURE_IP) as arm,
    ):
        store = tmp / "store"
        t0 = time.perf_counter()
        make_ec2(store, proxy, moto)
        make_do(store, do_fake)
        make_azure(store, arm)
        bootstrap_certs(store)
        setup = time.perf_counter() - t0
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing-secret")
        env.update(azure_env(arm, AZURE_CLIENT_SECRET="", AZURE_CLIENT_ID=""))
        env.pop("PYMACHINE_SSH_WAIT", None)

        marks = {"do": 0, "arm": 0}

        def reset() -> None:
            proxy.calls.clear()
            marks["do"], marks["arm"] = len(do_fake.requests), len(arm.requests)

        def count() -> dict[str, int]:
            do_new = do_fake.requests[marks["do"]:]
            arm_new = arm.requests[marks["arm"]:]
            return {
                "ec2 DescribeInstances": proxy.calls["DescribeInstances"],
                "ec2 other Describe*": sum(v for k, v in proxy.calls.items()
                                           if k.startswith("Describe") and k != "DescribeInstances"),
                "ec2 all calls": sum(proxy.calls.values()),
                "do GET /v2/droplets (list)": sum(1 for r in do_new if r.method == "GET" and r.path == "/v2/droplets"),
                "do other GETs": sum(1 for r in do_new if r.method == "GET" and r.path != "/v2/droplets"),
                "do all calls": len(do_new),
                "azure GET .../virtualMachines (list)": sum(
                    1 for r in arm_new if r.method == "GET" and r.path.endswith("/Microsoft.Compute/virtualMachines")),
                "azure GET instanceView/VM (per machine)": sum(
                    1 for r in arm_new if r.method == "GET" and "/virtualMachines/" in r.path),
                "azure all calls (incl. token)": len(arm_new),
            }

        ls = [PYMACHINE, "ls", "--format", FORMAT]
        base, _, _ = series([sys.executable, "-c", "pass"], env)
        d_t, d_rows, d_calls = series(ls, env, reset, count)
        cloud_out = LAST_OUT[tuple(ls)]
        t_t, t_rows, t_calls = series([*ls, "--timeout", "10"], env, reset, count)

    none_env = clean_env(tmp)
    none_env["MACHINE_STORAGE_PATH"] = str(tmp / "none-store")
    make_none(none_env, tmp / "none-store")
    n_t, n_rows, _ = series(ls, none_env)
    n_fresh = fresh(n_rows, {f"none-{i:02d}": "Running" for i in range(3 * N)})

    cloud = expected_states(("ec2", "do", "az"), STOPPED)
    print(f"runs per figure: {RUNS}; setup of 30 cloud machines: {setup:.1f} s")
    print(f"baseline python3 -c pass                      {base * 1000:8.1f} ms")
    print(f"baseline pymachine ls, 30 none machines       {n_t * 1000:8.1f} ms   {n_t / base:5.1f}x python"
          f"   (all rows listed: {n_fresh})")
    print(f"pymachine ls, 30 cloud machines (default -t)  {d_t * 1000:8.1f} ms   {d_t / base:5.1f}x python"
          f"   {d_t / n_t:4.2f}x none-ls")
    print(f"pymachine ls, 30 cloud machines (-t 10)       {t_t * 1000:8.1f} ms   {t_t / base:5.1f}x python"
          f"   {t_t / n_t:4.2f}x none-ls")
    print(f"every row a fresh state (default -t): {fresh(d_rows, cloud)}")
    print(f"every row a fresh state (-t 10):      {fresh(t_rows, cloud)}")
    states = Counter(s for s in d_rows[-1].values())
    print(f"states in last ls: {dict(states)}")
    none_out = LAST_OUT[tuple(ls)]
    errors = Counter(f"{line.split('|')[1]}: {line.split('|', 3)[3][:60]}"
                     for line in (cloud_out + none_out).splitlines())
    print("Error column in the last default ls of each store (driver: first 60 chars -> rows):")
    for text, count in sorted(errors.items()):
        print(f"  {text} -> {count}")
    print("API calls per ls (min-max over runs, default -t and -t 10):")
    for key in d_calls[0]:
        values = [c[key] for c in d_calls + t_calls]
        print(f"  {key:42s} {min(values)}-{max(values)}")


if __name__ == "__main__":
    main()
