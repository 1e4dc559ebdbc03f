"""vcsim (govmomi's vCenter simulator) for the vSphere driver's tests, built offline.

Debian ships govmomi's ``simulator`` library (golang-github-vmware-govmomi-dev)
but not the ``vcsim`` command, so a ~40-line ``main`` (below) is built with
Debian's Go from ``/usr/share/gocode`` only: ``GO111MODULE=off``,
``GOPROXY=off``, no network.  The binary is cached under
``$PYMACHINE_TEST_CACHE/vcsim/<key>/`` (default ``/var/tmp/pymachine-test-cache``),
keyed by the govmomi source package version, the Go version and this main's
text; it is built into a temp dir and renamed under a lock, so parallel test
processes share one build (~15-35 s cold, then nothing).

Import ``vcsim_fixture`` into a test module to get the ``vcsim`` fixture.
``run_vcsim`` starts it on 127.0.0.1 (the kernel picks a free port) with TLS from
a CA the fixture makes, so tests verify the server cert with that CA rather
than disabling verification; it accepts exactly one user/password pair, so a
wrong password is a real login failure.  The model is govmomi's VPX one:
datacenter DC0, cluster DC0_C0, standalone host DC0_H0, datastore LocalDS_0,
network "VM Network".
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

GOVMOMI_PKG = "golang-github-vmware-govmomi-dev"
GOPATH_SYSTEM = "/usr/share/gocode"
BUILD_TIMEOUT = 600.0
LOCK_TIMEOUT = 700.0
READY_TIMEOUT = 30.0
USER, PASSWORD = "pm-user", "pm-secret"

MAIN_GO = r'''// Command pmvcsim: govmomi's vCenter simulator (VPX model) for pymachine's tests.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	listen := flag.String("l", "127.0.0.1:0", "listen address")
	certFile := flag.String("cert", "", "TLS certificate (PEM)")
	keyFile := flag.String("key", "", "TLS key (PEM)")
	user := flag.String("username", "user", "the one accepted user name")
	pass := flag.String("password", "pass", "its password")
	flag.Parse()

	model := simulator.VPX()
	if err := model.Create(); err != nil {
		fmt.Fprintln(os.Stderr, "model:", err)
		os.Exit(1)
	}
	cfg := new(tls.Config)
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tls:", err)
			os.Exit(1)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *pass)}
	model.Service.TLS = cfg
	s := model.Service.NewServer()
	u := *s.URL
	u.User = nil
	fmt.Printf("PMVCSIM_URL=%s\n", u.String())
	os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	s.Close()
	model.Remove()
}
'''


def cache_root() -> Path:
    return Path(os.environ.get("PYMACHINE_TEST_CACHE", "/var/tmp/pymachine-test-cache")) / "vcsim"


def unavailable_reason() -> str | None:
    if not shutil.which("go"):
        return "go (golang-go) is not installed"
    if not Path(GOPATH_SYSTEM, "src/github.com/vmware/govmomi/simulator").is_dir():
        return f"{GOVMOMI_PKG} is not installed"
    try:
        import pyVmomi  # noqa: F401
    except ImportError:
        return "pyvmomi is not installed"
    return None


def _cmd(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout.strip()


def cache_key() -> str:
    pkg = _cmd(["dpkg-query", "-W", "-f", "${Version}", GOVMOMI_PKG])
    go = _cmd(["go", "version"])
    digest = hashlib.sha256(f"{pkg}\n{go}\n{MAIN_GO}".encode()).hexdigest()[:16]
    return f"{pkg}-{digest}"


def vcsim_binary() -> Path:
    """The cached pmvcsim binary, built (once, under a lock) if missing."""
    root = cache_root() / cache_key()
    binary = root / "pmvcsim"
    if binary.is_file():
        return binary
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / ".lock", "w") as lock:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError("timed out waiting for another vcsim build") from None
                time.sleep(0.5)
        if binary.is_file():
            return binary
        work = Path(tempfile.mkdtemp(prefix="build-", dir=root.parent))
        try:
            src = work / "src" / "pmvcsim"
            src.mkdir(parents=True)
            (src / "main.go").write_text(MAIN_GO)
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work),
                "GO111MODULE": "off", "GOPROXY": "off", "GOFLAGS": "", "CGO_ENABLED": "0",
                "GOPATH": f"{GOPATH_SYSTEM}:{work}", "GOCACHE": str(root.parent / "go-build"),
            }
            out = work / "out"
            out.mkdir()
            proc = subprocess.run(["go", "build", "-o", str(out / "pmvcsim"), "pmvcsim"], cwd=src, env=env,
                                  capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"building vcsim failed: {proc.stderr.strip()[-2000:]}")
            os.replace(out, root)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return binary


@dataclass
class Vcsim:
    """A running pmvcsim: its address, login, and the CA that signed its certificate."""

    host: str
    port: int
    ca_cert: Path
    username: str = USER
    password: str = PASSWORD
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def flags(self, *, ca: bool = True) -> list[str]:
        """The --vmwarevsphere-* connection flags for this simulator."""
        out = ["--vmwarevsphere-vcenter", self.host, "--vmwarevsphere-vcenter-port", str(self.port),
               "--vmwarevsphere-username", self.username, "--vmwarevsphere-password", self.password]
        return out + (["--vmwarevsphere-ca-cert", str(self.ca_cert)] if ca else [])

    @contextlib.contextmanager
    def connect(self) -> Iterator[Any]:
        """A pyvmomi ServiceInstance verified against the fixture's CA (for inspecting inventory)."""
        import ssl

        from pyVim.connect import Disconnect, SmartConnect

        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        si = SmartConnect(host=self.host, port=self.port, user=self.username, pwd=self.password,
                          sslContext=ctx, httpConnectionTimeout=30)
        try:
            yield si
        finally:
            Disconnect(si)


def _make_tls(dir_: Path) -> tuple[Path, Path, Path]:
    from pymachine.machine import certs

    paths = certs.CertPaths.in_dir(dir_)
    certs.generate_ca(paths.ca_cert, paths.ca_key, "pymachine-vcsim-test-ca")
    server, key = dir_ / "server.pem", dir_ / "server-key.pem"
    certs.generate_server_cert(paths, server, key, "pymachine-vcsim", ["127.0.0.1"])
    return paths.ca_cert, server, key


@contextlib.contextmanager
def run_vcsim(workdir: Path) -> Iterator[Vcsim]:
    """Start pmvcsim on 127.0.0.1 with TLS; wait (bounded) for its URL; kill it afterwards."""
    binary = vcsim_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    ca, cert, key = _make_tls(workdir)
    with open(workdir / "vcsim.log", "wb") as log:
        proc = subprocess.Popen(
            [str(binary), "-l", "127.0.0.1:0", "-cert", str(cert), "-key", str(key),
             "-username", USER, "-password", PASSWORD],
            stdout=subprocess.PIPE, stderr=log, start_new_session=True,
        )
    try:
        url = _read_url(proc, READY_TIMEOUT)
        hostport = url.split("://", 1)[1].split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        assert host == "127.0.0.1", f"vcsim listens on {host}, expected loopback"
        yield Vcsim(host=host, port=int(port), ca_cert=ca, proc=proc)
    finally:
        _stop(proc)


def _read_url(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(max(0.0, deadline - time.monotonic())):
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
                for line in buf.decode(errors="replace").splitlines():
                    if line.startswith("PMVCSIM_URL="):
                        return line.split("=", 1)[1].strip()
    raise RuntimeError(f"vcsim did not report its URL within {timeout:g} s (exit {proc.poll()})")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture(name="vcsim")
def vcsim_fixture(tmp_path: Path) -> Iterator[Vcsim]:
    """A fresh simulator per test (0.2 s to start): no inventory leaks between tests."""
    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"vcsim unavailable: {reason} (CI=true: these tests must run)")
        pytest.skip(f"vcsim unavailable: {reason}")
    with run_vcsim(tmp_path / "vcsim") as sim:
        yield sim


# Inspecting vcsim and playing the guest ------------------------------------------------------

def inventory(sim: Vcsim) -> dict[str, Any]:
    """What vcsim holds: VMs by name (power state, annotation, extraConfig) and LocalDS_0's files on disk."""
    from pyVmomi import vim

    with sim.connect() as si:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        vms = {}
        for vm in view.view:
            cfg = vm.config
            vms[vm.name] = {
                "ref": vm._moId, "power": str(vm.runtime.powerState), "annotation": cfg.annotation,
                "cpu": cfg.hardware.numCPU, "memory": cfg.hardware.memoryMB,
                "extra": {o.key: o.value for o in cfg.extraConfig},
                "cdrom": [getattr(d.backing, "fileName", None) for d in cfg.hardware.device
                          if isinstance(d, vim.vm.device.VirtualCdrom)],
                "nics": [getattr(d.backing, "deviceName", None) for d in cfg.hardware.device
                         if isinstance(d, vim.vm.device.VirtualEthernetCard)],
            }
        view.Destroy()
        ds = next(d for d in content.rootFolder.childEntity[0].datastore if d.name == "LocalDS_0")
        root = Path(ds.info.url)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    return {"vms": vms, "files": files, "root": root}


def ours(inv: dict[str, Any], name: str) -> list[str]:
    """Everything in the inventory that belongs to machine ``name``."""
    left = [f"vm:{n}" for n, vm in inv["vms"].items() if n == name or vm["annotation"] == f"pymachine-machine={name}"]
    return left + [f"file:{f}" for f in inv["files"] if f == name or f.startswith(name + "/")]


def inject_guest_ip(sim: Vcsim, machine: str, ip: str, *, timeout: float = 60.0,
                    before: Callable[[dict[str, str]], None] | None = None) -> dict[str, Any]:
    """Play VMware tools in a thread: once machine's VM exists, make vcsim report ``ip`` as its
    guest IP (extraConfig ``SET.guest.ipAddress``).  ``before(extraConfig)`` runs first -- the
    end-to-end test uses it to do what cloud-init would do with the guestinfo.

    Only loopback or a namespaced test host's 10.231.x address may be injected:
    whatever is set here is an address pymachine will dial.
    """
    addr = ipaddress.ip_address(ip)
    assert addr.is_loopback or addr in ipaddress.ip_network("10.231.0.0/16"), ip
    result: dict[str, Any] = {}

    def run() -> None:
        from pymachine.machine.drivers.vsphere import wait_task
        from pyVmomi import vim

        try:
            with sim.connect() as si:
                content = si.RetrieveContent()
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
                    found = [
                        vm for vm in view.view if vm.config and vm.config.annotation == f"pymachine-machine={machine}"
                    ]
                    view.Destroy()
                    if found:
                        if before is not None:
                            before({o.key: str(o.value) for o in found[0].config.extraConfig})
                        spec = vim.vm.ConfigSpec(
                            extraConfig=[vim.option.OptionValue(key="SET.guest.ipAddress", value=ip)]
                        )
                        wait_task(si, found[0].ReconfigVM_Task(spec=spec), "inject guest IP", timeout=30)
                        result["vm"] = found[0]._moId
                        return
                    time.sleep(0.1)
                result["error"] = f"no VM for {machine} within {timeout} s"
        except Exception as exc:  # noqa: BLE001 -- reported to the test thread by finish()
            result["error"] = repr(exc)

    thread = threading.Thread(target=run, name=f"inject-{machine}", daemon=True)
    thread.start()
    result["thread"] = thread
    return result


def finish(injection: dict[str, Any], timeout: float = 70.0) -> str:
    """Join the injector; fail with its error; return the VM's managed object id."""
    injection["thread"].join(timeout)
    assert not injection["thread"].is_alive(), "guest IP injector still running"
    assert "error" not in injection, injection["error"]
    return str(injection["vm"])
