"""The qemu driver end to end, through the installed ``pymachine`` command.

One real VM (pymachine's own Debian image, cached by recipe hash, booted
under TCG with a restricted network: it can reach nothing but its two
loopback port forwards) is reused across the lifecycle steps, because each
emulated boot costs tens of seconds.  The bad-input tests need no boot.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PYMACHINE, PyMachine, Result
from tests.hosts.images import IMAGE_NAME, busybox_image_tar
from tests.vm_image import cached_image, missing_prerequisites

DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker")
#: A current Docker CLI (28.x here): it must reach the machine without DOCKER_API_VERSION.
CURRENT_DOCKER = "/usr/local/bin/docker" if os.path.exists("/usr/local/bin/docker") else None


def assert_current_engine(pm: PyMachine, name: str, env: dict[str, str]) -> None:
    """The engine is new enough for Docker 29 clients (API >= 1.44); the guest's CLI has the
    Compose and buildx plugins; dockerd, containerd and docker are on the SSH user's PATH;
    the machine's SSH host key is the one pymachine made and pinned (the guest made none)."""
    if CURRENT_DOCKER:
        plain = {k: v for k, v in env.items() if k != "DOCKER_API_VERSION"}
        res = subprocess.run([CURRENT_DOCKER, "version", "--format", "{{.Client.Version}} {{.Server.APIVersion}}"],
                             env=plain, capture_output=True, text=True, timeout=120, check=False)
        assert res.returncode == 0, res.stderr
        client, api = res.stdout.split()
        print(f"[engine] docker CLI {client} -> server API {api}")
        assert tuple(int(x) for x in api.split(".")) >= (1, 44)
    out = pm(
        "ssh",
        name,
        "--",
        "docker compose version && docker buildx version && command -v dockerd containerd docker",
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "Docker Compose version" in out.stdout and "github.com/docker/buildx" in out.stdout
    assert "/usr/sbin/dockerd" in out.stdout and "/usr/bin/containerd" in out.stdout
    machine_dir = pm.store / "machines" / name
    pinned = (machine_dir / "known_hosts").read_text().splitlines()
    seeded = (machine_dir / "ssh_host_ed25519_key.pub").read_text().strip()
    assert pinned and all(line.split(" ", 1)[1] == seeded for line in pinned), pinned
    keys = pm("ssh", name, "--", "ls /etc/ssh/ && cat /etc/ssh/ssh_host_ed25519_key.pub", timeout=60).stdout
    assert seeded.split()[1] in keys and "ssh_host_rsa_key" not in keys and "ssh_host_ecdsa_key" not in keys


def qemu_pids_under(path: Path) -> list[int]:
    """QEMU processes whose command line names a file under ``path`` (ours only)."""
    found = []
    needle = str(path).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmdline.split(b"\0")[0] and needle in cmdline:
            found.append(int(entry))
    return found


def kill_leftovers(path: Path) -> None:
    for pid in qemu_pids_under(path):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def timed(pm: PyMachine, *args: str, timeout: float) -> tuple[Result, list[tuple[float, str]]]:
    """Run pymachine, stamping each output line with seconds since start (for phase timings)."""
    start = time.monotonic()
    proc = subprocess.Popen([PYMACHINE, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=pm.env)
    lines: list[tuple[float, str]] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append((time.monotonic() - start, line.rstrip("\n")))
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"pymachine {' '.join(args)} ran longer than {timeout}s")
        proc.wait(timeout=max(1.0, timeout - (time.monotonic() - start)))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    text = "\n".join(line for _, line in lines)
    return Result(proc.returncode, text, ""), lines


def docker_env(pm: PyMachine, name: str) -> dict[str, str]:
    out = pm.ok("env", name).stdout
    env = dict(pm.env)
    for key, value in re.findall(r'^export (\w+)="([^"]*)"$', out, flags=re.MULTILINE):
        env[key] = value
    assert env.get("DOCKER_HOST", "").startswith("tcp://127.0.0.1:")
    return env


def docker(
    env: dict[str, str], *args: str, timeout: float = 120, stdin: bytes | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, *args], env=env, capture_output=True, timeout=timeout, input=stdin, check=False)


def wait_docker_ps(env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`docker ps` until it answers: an emulated guest on a loaded machine can be slow."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            res = docker(env, "ps", timeout=60)
        except subprocess.TimeoutExpired as exc:
            res = subprocess.CompletedProcess(exc.cmd, 124, b"", b"docker ps timed out")
        if res.returncode == 0 or time.monotonic() > deadline:
            return res
        time.sleep(2)


def ls_state(pm: PyMachine, name: str) -> str:
    """The STATE column; ls reports "Timeout" when its bounded look could not finish (a
    loaded 2-core host under emulation): asked again, bounded, before judging."""
    deadline = time.monotonic() + 90
    while True:
        state = pm.ok("ls", "--filter", f"name={name}", "--format", "{{.State}}").stdout.strip()
        if state != "Timeout" or time.monotonic() > deadline:
            return state
        time.sleep(3)


@pytest.fixture(scope="module")
def image():
    reason = missing_prerequisites()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    info = cached_image()
    print(f"\n[timing] image ready in {time.monotonic() - started:.1f}s: {info.directory} "
          f"({info.disk.stat().st_size / 1e6:.0f} MB qcow2, {info.virtual_size >> 20} MB virtual)")
    return info


@pytest.fixture
def vm_pm(pm: PyMachine):
    yield pm
    pm("rm", "-f", "-y", "dev", timeout=120)
    kill_leftovers(pm.root)


@pytest.mark.vm
@pytest.mark.timeout(1500)
def test_qemu_machine_lifecycle(vm_pm: PyMachine, image) -> None:
    pm = vm_pm
    assert DOCKER, "docker CLI not installed"
    pm.env["PYMACHINE_VIRTIOFSD"] = "none"  # the home share over 9p here; virtiofs: test_home_share_over_virtiofs
    # -- create ----------------------------------------------------------------------------
    res, lines = timed(pm, "create", "-d", "qemu", "--qemu-image", str(image.directory),
                       "--qemu-restrict-network", "--qemu-memory", "1024",
                       "--engine-label", "tier=vm", "dev", timeout=900)
    assert res.returncode == 0, res.stdout
    for t, line in lines:
        print(f"[create +{t:6.1f}s] {line}")
    assert "Docker is up and running!" in res.stdout
    assert ls_state(pm, "dev") == "Running"
    machine_dir = pm.store / "machines" / "dev"
    (pid,) = qemu_pids_under(machine_dir)
    # -- env + a real container -----------------------------------------------------------------
    env = docker_env(pm, "dev")
    tar = busybox_image_tar()
    imported = docker(env, "import", "-", IMAGE_NAME, stdin=tar.read_bytes(), timeout=300)
    assert imported.returncode == 0, imported.stderr
    t = time.monotonic()
    run = docker(env, "run", "--rm", "--network", "none", IMAGE_NAME, "sh", "-c", "echo hello from $(hostname -s)",
                 timeout=300)
    print(f"[timing] docker run in the VM: {time.monotonic() - t:.1f}s")
    assert run.returncode == 0, run.stderr
    assert run.stdout.decode().startswith("hello from ")
    assert_current_engine(pm, "dev", env)
    assert_published_ports_reach_the_host(pm, env)
    assert_home_is_shared(pm, env)
    # Containers stay confined by docker-default although apparmor.service is masked on this path.
    confined = pm("ssh", "dev", "--", f"sudo docker run --rm --network none {IMAGE_NAME} cat /proc/self/attr/current",
                  timeout=300)
    assert confined.stdout.strip().startswith("docker-default"), confined.stdout + confined.stderr
    blame = pm("ssh", "dev", "--", "systemd-analyze; systemd-analyze blame | head -n 12", timeout=120)
    print("[boot] " + blame.stdout.replace("\n", "\n[boot] "))
    # -- ssh ------------------------------------------------------------------------------------------
    ssh = pm("ssh", "dev", "--", "echo", "hi", "&&", "hostname", timeout=60)
    assert ssh.returncode == 0, ssh.stderr
    assert ssh.stdout.split() == ["hi", "dev"]
    # -- the systemd path: the engine runs from pymachine's drop-in (the image's engine is
    #    configured, not installed: qemu's default install source is "preinstalled") ----------
    assert "Installing Docker..." not in res.stdout
    dropin = pm("ssh", "dev", "--", "cat", "/etc/systemd/system/docker.service.d/10-machine.conf", timeout=60)
    assert dropin.returncode == 0, dropin.stderr
    assert "ExecStart=\n" in dropin.stdout and "--tlsverify" in dropin.stdout and "--label tier=vm" in dropin.stdout
    labels = docker(env, "info", "--format", "{{json .Labels}}")
    assert "tier=vm" in labels.stdout.decode() and "provider=qemu" in labels.stdout.decode()
    assert pm("ssh", "dev", "--", "systemctl", "is-active", "docker", timeout=60).stdout.strip() == "active"
    # -- the engine's final configuration rode on the seed, rendered by the provisioner's own
    #    code: byte for byte what provisioning compared against, installed before docker.service
    from pymachine.machine.seed import read_seed_iso

    seeded = read_seed_iso(machine_dir / "seed.iso")
    assert seeded["pymachine/docker-machine.conf"] == dropin.stdout
    assert seeded["pymachine/docker-ca.pem"] == (machine_dir / "ca.pem").read_text()
    starts = pm(
        "ssh",
        "dev",
        "--",
        "sudo journalctl -b -u docker.service --no-pager -o cat | grep -c '^Started docker'",
        timeout=60,
    )
    print(f"[timing] engine starts during create: {starts.stdout.strip()}")
    # sshd answered before the engine was up (nothing orders it after docker.service), and
    # provisioning joined that start: the engine started once, never restarted.
    assert starts.stdout.strip() == "1", starts.stdout + starts.stderr
    boot = pm("ssh", "dev", "--",
              "systemctl show -p After --value ssh.service; "
              "systemctl show -p ConditionResult --value ldconfig.service systemd-sysusers.service "
              "systemd-journal-catalog-update.service; "
              "systemctl is-active pymachine-growroot.service; test -e /var/lib/pymachine/root-grown && echo grown",
              timeout=60)
    after, *rest = [line for line in boot.stdout.splitlines() if line]  # `show` puts a blank line between units
    assert "docker.service" not in after.split() and "pymachine-firstboot.service" in after.split(), after
    # The image's build stamped /etc and /var: the first boot skipped what the build already did.
    assert rest[:3] == ["no", "no", "no"], boot.stdout
    assert rest[3:] == ["active", "grown"], boot.stdout
    # -- stop / start (a container the engine restarts at boot publishes a port now taken on the
    #    host: `start` says so on stderr, as `logs` does) ----------------------------------------------
    held = _free_loopback_port()
    keeper = docker(env, "run", "-d", "--restart", "always", "--name", "keeper", "-p", f"{held}:8080", IMAGE_NAME,
                    "/bin/busybox", "sleep", "3600", timeout=300)
    assert keeper.returncode == 0, keeper.stderr
    t = time.monotonic()
    pm.ok("stop", "dev", timeout=180)
    print(f"[timing] stop: {time.monotonic() - t:.1f}s")
    assert ls_state(pm, "dev") == "Stopped"
    assert qemu_pids_under(machine_dir) == []
    assert not os.path.exists(f"/proc/{pid}") or b"qemu" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    t = time.monotonic()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", held))
        holder.listen()
        started = pm.ok("start", "dev", timeout=400)
    print(f"[timing] start (with its look at the forwards): {time.monotonic() - t:.1f}s")
    conflict = f"(dev) CONFLICT: cannot forward 127.0.0.1:{held}/tcp for container keeper"
    assert conflict in started.stderr, started.stderr + pm.ok("logs", "dev").stdout
    assert conflict[len("(dev) "):] in pm.ok("logs", "dev").stdout
    ps = wait_docker_ps(env)
    print(f"[timing] start to docker ps: {time.monotonic() - t:.1f}s")
    assert ps.returncode == 0, ps.stderr  # same 127.0.0.1 certificate: no TLS error
    assert docker(env, "rm", "-f", "keeper", timeout=120).returncode == 0
    assert ls_state(pm, "dev") == "Running"
    # -- fault: QEMU killed from outside ------------------------------------------------------------
    (pid,) = qemu_pids_under(machine_dir)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while ls_state(pm, "dev") != "Stopped" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ls_state(pm, "dev") == "Stopped"
    pm.ok("start", "dev", timeout=400)
    ps = wait_docker_ps(env)
    assert ps.returncode == 0, ps.stderr
    listed = docker(env, "images", "--format", "{{.Repository}}:{{.Tag}}")
    assert IMAGE_NAME in listed.stdout.decode()  # the disk survived the kill
    # -- rm ------------------------------------------------------------------------------------------
    ports = [int(p) for p in re.findall(r'"(?:SSHPort|EnginePort)": (\d+)', (machine_dir / "config.json").read_text())]
    pm.ok("rm", "-y", "dev", timeout=120)
    assert qemu_pids_under(pm.store) == []
    assert not machine_dir.exists()
    for port in ports:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))  # free again


# -- bad input: refused by the pre-create checks, nothing created, no boot --------------------------


@pytest.fixture
def tiny_image(tmp_path: Path) -> Path:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    path = tmp_path / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True, timeout=30)
    return path


def assert_refused(pm: PyMachine, res: Result, *needles: str) -> None:
    assert res.returncode == 3, (res.returncode, res.stdout, res.stderr)
    last = res.stderr.strip().splitlines()[-1]
    for needle in needles:
        assert needle in last
    assert not (pm.store / "machines" / "dev").exists()
    assert qemu_pids_under(pm.root) == []


def test_too_little_memory(pm: PyMachine, tiny_image: Path) -> None:
    res = pm("create", "-d", "qemu", "--qemu-image", str(tiny_image), "--qemu-memory", "128", "dev")
    assert_refused(pm, res, "--qemu-memory must be at least 256 MB")


def test_missing_image_path(pm: PyMachine, tmp_path: Path) -> None:
    res = pm("create", "-d", "qemu", "--qemu-image", str(tmp_path / "missing.qcow2"), "dev")
    assert_refused(pm, res, "QEMU image not found", "missing.qcow2")


def test_qemu_not_installed(pm: PyMachine, tiny_image: Path) -> None:
    bin_dir = Path(sys.executable).parent
    res = pm("create", "-d", "qemu", "--qemu-image", str(tiny_image), "dev", env={"PATH": str(bin_dir)})
    assert_refused(pm, res, "qemu-system-x86_64 not found", "qemu-system-x86 qemu-utils")


def test_port_already_taken(pm: PyMachine, tiny_image: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = pm("create", "-d", "qemu", "--qemu-image", str(tiny_image), "--qemu-ssh-port", str(port), "dev")
    assert_refused(pm, res, f"127.0.0.1:{port} is already in use")


@pytest.mark.vm
def test_image_build_reuses_the_cache_and_ls_lists_it(pm: PyMachine, image) -> None:
    """``pymachine image build`` finds the image cached for the current recipe (no rebuild)."""
    cache = pm.store / "cache" / "images"
    cache.mkdir(parents=True)
    (cache / image.recipe).symlink_to(image.directory)
    started = time.monotonic()
    out = pm.ok("image", "build", timeout=60).stdout.splitlines()
    assert time.monotonic() - started < 30
    assert out[0] == str(cache / image.recipe)
    assert image.manifest["disk_sha256"] in out[2] and out[2].endswith("(cached)")
    listing = pm.ok("image", "ls").stdout.splitlines()
    assert listing[0].split() == ["RECIPE", "ARCH", "SUITE", "KERNEL", "ENGINE", "SIZE", "BUILT", "CURRENT"]
    assert listing[1].split()[0] == image.recipe and listing[1].split()[-1] == "*"
    assert image.manifest["kernel_version"] in listing[1]
    bad = pm("image")
    assert bad.returncode == 1 and "needs a subcommand: build" in bad.stderr and "| ls |" in bad.stderr


@pytest.mark.vm
@pytest.mark.timeout(2400)
def test_qemu_machine_of_the_other_arch(vm_pm: PyMachine) -> None:
    """An arm64 machine on this x86_64 host (or the reverse): qemu-system-aarch64 -machine virt under
    TCG, booted through the firmware (AAVMF -> the disk's signed shim -> GRUB), no -kernel."""
    from pymachine.engine.images import host_arch

    pm = vm_pm
    arch = "arm64" if host_arch() == "amd64" else "amd64"
    reason = missing_prerequisites(arch)
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    image = cached_image(arch)
    print(f"\n[timing] {arch} image ready in {time.monotonic() - started:.1f}s "
          f"(built in {image.manifest.get('build_seconds')}s)")
    res, lines = timed(pm, "create", "-d", "qemu", "--qemu-arch", arch, "--qemu-image", str(image.directory),
                       "--qemu-restrict-network", "--qemu-memory", "1024", "--qemu-cpu-count", "2", "dev",
                       timeout=1500)
    for t, line in lines:
        print(f"[create {arch} +{t:6.1f}s] {line}")
    assert res.returncode == 0, res.stdout
    assert "Docker is up and running!" in res.stdout
    machine_dir = pm.store / "machines" / "dev"
    (pid,) = qemu_pids_under(machine_dir)
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert os.path.basename(argv[0]) == (b"qemu-system-aarch64" if arch == "arm64" else b"qemu-system-x86_64")
    assert b"-kernel" not in argv and any(a.startswith(b"if=pflash") for a in argv)
    env = docker_env(pm, "dev")
    assert pm("ssh", "dev", "--", "uname -m", timeout=60).stdout.strip() == ("aarch64" if arch == "arm64" else "x86_64")
    assert pm("ssh", "dev", "--", "test -d /sys/firmware/efi && echo uefi", timeout=60).stdout.strip() == "uefi"
    assert_current_engine(pm, "dev", env)
    # An image of the guest's own arch: its echo and C library, imported through the engine.
    imported = pm("ssh", "dev", "--",
                  "set -e; d=$(mktemp -d); mkdir -p $d/usr/bin; cp /usr/bin/echo $d/usr/bin/; "
                  "cp -L --parents $(ldd /usr/bin/echo | grep -o '/[^ ]*') $d/; "
                  "sudo tar -C $d -c . | sudo docker import - local/echo:1 >/dev/null && echo imported", timeout=300)
    assert imported.stdout.strip().endswith("imported"), imported.stderr
    run = docker(env, "run", "--rm", "--network", "none", "local/echo:1", "/usr/bin/echo", "hello", arch, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.decode().strip() == f"hello {arch}"
    pm.ok("stop", "dev", timeout=300)
    assert ls_state(pm, "dev") == "Stopped" and qemu_pids_under(machine_dir) == []
    t = time.monotonic()
    pm.ok("start", "dev", timeout=900)
    ps = wait_docker_ps(env, timeout=600)
    print(f"[timing] {arch} start to docker ps: {time.monotonic() - t:.1f}s")
    assert ps.returncode == 0, ps.stderr
    pm.ok("rm", "-y", "dev", timeout=300)
    assert qemu_pids_under(pm.store) == [] and not machine_dir.exists()


@pytest.mark.vm
@pytest.mark.timeout(1500)
def test_qemu_machine_through_uefi(vm_pm: PyMachine, image) -> None:
    """--qemu-firmware uefi: OVMF from Debian's ovmf, the machine's own copy of the variable store,
    and the disk's own shim and GRUB instead of -kernel; the engine answers the host's CLI."""
    from pymachine.machine.drivers import qemu_firmware

    pm = vm_pm
    try:
        qemu_firmware.find_uefi("amd64")
    except Exception as exc:  # noqa: BLE001 - no OVMF here
        pytest.skip(str(exc))
    res, lines = timed(pm, "create", "-d", "qemu", "--qemu-firmware", "uefi", "--qemu-image", str(image.directory),
                       "--qemu-restrict-network", "--qemu-memory", "1024", "dev", timeout=1200)
    for t, line in lines:
        print(f"[create uefi +{t:6.1f}s] {line}")
    assert res.returncode == 0, res.stdout
    machine_dir = pm.store / "machines" / "dev"
    (pid,) = qemu_pids_under(machine_dir)
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"-kernel" not in argv
    assert f"if=pflash,format=raw,unit=1,file={machine_dir / 'efivars.fd'}".encode() in argv
    assert oct((machine_dir / "efivars.fd").stat().st_mode & 0o777) == "0o600"
    boot = pm("ssh", "dev", "--", "test -d /sys/firmware/efi && echo uefi; cat /proc/cmdline", timeout=60).stdout
    assert boot.startswith("uefi") and "BOOT_IMAGE=/vmlinuz" in boot  # GRUB from the ESP booted it
    env = docker_env(pm, "dev")
    ps = wait_docker_ps(env)
    assert ps.returncode == 0, ps.stderr
    pm.ok("rm", "-y", "dev", timeout=300)
    assert qemu_pids_under(pm.store) == [] and not machine_dir.exists()


def _http_get(port: int, timeout: float = 3.0) -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    return body.decode(errors="replace") if head.startswith(b"HTTP/1.") else None


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_published_ports_reach_the_host(pm: PyMachine, env: dict[str, str]) -> None:
    """``docker run -p`` in the VM answers on the host's 127.0.0.1 (the host agent adds a QEMU
    forward), stops answering after ``docker rm -f``, and a taken host port is in ``logs``."""
    serve = ("mkdir -p /www && echo hello-from-the-vm > /www/index.html && "
             "exec /bin/busybox httpd -f -p 8080 -h /www")
    port, taken = _free_loopback_port(), _free_loopback_port()
    run = docker(env, "run", "-d", "--name", "web", "-p", f"{port}:8080", IMAGE_NAME, "/bin/busybox", "sh", "-c",
                 serve, timeout=300)
    assert run.returncode == 0, run.stderr
    started = time.monotonic()
    body = None
    while body is None and time.monotonic() - started < 90:
        body = _http_get(port)
        if body is None:
            time.sleep(0.25)
    print(f"[timing] published port answering on the host {time.monotonic() - started:.1f}s after docker run")
    assert body == "hello-from-the-vm\n", pm("logs", "dev").stdout
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        clash = docker(env, "run", "-d", "--name", "clash", "-p", f"{taken}:8080", IMAGE_NAME, "/bin/busybox",
                       "sh", "-c", serve, timeout=300)
        assert clash.returncode == 0, clash.stderr
        deadline = time.monotonic() + 60
        wanted = f"CONFLICT: cannot forward 127.0.0.1:{taken}/tcp for container clash"
        while wanted not in pm.ok("logs", "dev").stdout and time.monotonic() < deadline:
            time.sleep(0.5)
        assert wanted in pm.ok("logs", "dev").stdout
    assert docker(env, "rm", "-f", "web", "clash", timeout=120).returncode == 0
    deadline = time.monotonic() + 30
    while _http_get(port, timeout=1.0) is not None and time.monotonic() < deadline:
        time.sleep(0.25)
    assert _http_get(port, timeout=1.0) is None, "the forward goes away with the container"
    assert f"stopped forwarding 127.0.0.1:{port}/tcp" in pm.ok("logs", "dev").stdout


def assert_home_is_shared(pm: PyMachine, env: dict[str, str]) -> None:
    """The user's home is in the guest at the same path (9p): ``docker run -v`` of a folder under
    it sees the host's files, and a file written back belongs to the host user."""
    proj = pm.home / "proj"
    proj.mkdir(exist_ok=True)
    (proj / "in.txt").write_text("from-the-host\n")
    read = docker(env, "run", "--rm", "--network", "none", "-v", f"{proj}:/src", IMAGE_NAME, "cat", "/src/in.txt",
                  timeout=300)
    assert read.returncode == 0 and read.stdout.decode() == "from-the-host\n", read.stderr
    wrote = docker(env, "run", "--rm", "--network", "none", "-v", f"{proj}:/src", IMAGE_NAME, "sh", "-c",
                   "echo back > /src/out.txt", timeout=300)
    assert wrote.returncode == 0, wrote.stderr
    out = proj / "out.txt"
    assert out.read_text() == "back\n" and out.stat().st_uid == os.getuid()


@pytest.mark.vm
@pytest.mark.timeout(1500)
def test_home_share_over_virtiofs(vm_pm: PyMachine, image) -> None:
    """Where a virtiofsd this user can run is found (here QEMU's own /usr/lib/qemu/virtiofsd, as
    root), the home share is virtiofs: the guest mounts it so, ``docker run -v`` reads and writes
    through it, and its daemon lives while the VM runs and ends with it."""
    import json

    from pymachine.machine.drivers import virtiofs

    if virtiofs.choose_transport([["share"]]) != "virtiofs":
        pytest.skip("no virtiofsd this user can run (9p is tested in test_qemu_machine_lifecycle)")
    pm = vm_pm
    res, lines = timed(pm, "create", "-d", "qemu", "--qemu-image", str(image.directory), "--qemu-restrict-network",
                       "--qemu-memory", "1024", "dev", timeout=900)
    for t, line in lines:
        print(f"[create virtiofs +{t:6.1f}s] {line}")
    assert res.returncode == 0, res.stdout
    machine_dir = pm.store / "machines" / "dev"
    assert json.loads((machine_dir / "config.json").read_text())["Driver"]["ShareTransport"] == "virtiofs"
    mounts = pm.ok("ssh", "dev", "--", "cat /proc/mounts", timeout=60).stdout
    assert f"pmshare0 {pm.home} virtiofs " in mounts, mounts
    env = docker_env(pm, "dev")
    imported = docker(env, "import", "-", IMAGE_NAME, stdin=busybox_image_tar().read_bytes(), timeout=300)
    assert imported.returncode == 0, imported.stderr
    assert_home_is_shared(pm, env)
    pid = int((machine_dir / "pmshare0.vfsd.pid").read_text())
    assert b"virtiofsd" in Path(f"/proc/{pid}/cmdline").read_bytes()
    pm.ok("stop", "dev", timeout=180)
    deadline = time.monotonic() + 20
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not os.path.exists(f"/proc/{pid}") or b"virtiofsd" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert not (machine_dir / "pmshare0.vfsd.sock").exists()
