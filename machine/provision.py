"""Provision a machine over ONE SSH connection: detect the OS, install and
configure the engine, install its certificates, wait for its TLS endpoint.

docker-machine opened a new SSH session per command (20 for a generic
create) and polled ``netstat`` every 3 s; here one paramiko connection
carries every step and readiness is the engine answering ``/version`` over
TLS with the machine's own certificates, which is what the user needs.

A failed step is recorded in config.json (top-level ``Pymachine.LastError``,
which docker-machine ignores), so ``ls`` shows the machine in state Error and
``inspect`` names the step; a later ``provision`` clears it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymachine.machine.errors import MachineError
from pymachine.machine.sshconnect import connect, ssh_run, ssh_target

__all__ = ["build_plan", "connect", "engine_url", "provision_over", "reprovision", "ssh_run", "ssh_target",
           "ssh_wait", "upgrade", "wait_for_engine"]

if TYPE_CHECKING:  # pragma: no cover
    from pymachine.machine.drivers.base import Driver
    from pymachine.machine.firstboot import FirstBoot
    from pymachine.machine.host import Machine
    from pymachine.machine.ssh import SSHClient
    from pymachine.provisioners.base import ProvisionPlan

Log = Callable[[str], None]
SSH_WAIT = 120.0
SSH_WAIT_ENV = "PYMACHINE_SSH_WAIT"
ENGINE_WAIT = 90.0


def ssh_wait(environ: dict[str, str] | None = None) -> float:
    """Seconds to wait for SSH after create (``$PYMACHINE_SSH_WAIT``, default 120).

    A slow cloud image may need more; tests and scripts that know the host is
    already up want a short bound so an unreachable address fails fast.
    """
    raw = (os.environ if environ is None else environ).get(SSH_WAIT_ENV, "").strip()
    if not raw:
        return SSH_WAIT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise MachineError(f"{SSH_WAIT_ENV} must be a number of seconds between 0 and 86400, got {raw!r}")
    return value


def engine_url(driver: Driver) -> str:
    """The engine URL without a state query where the driver knows it (``Driver.engine_url``)."""
    return driver.engine_url()


def engine_port(machine: Machine) -> int:
    """The port dockerd listens on inside the host (not a host-side forward)."""
    return machine.driver.guest_engine_port()


def wait_for_engine(machine: Machine, timeout: float = ENGINE_WAIT) -> str:
    """Poll the engine's TLS /version until it answers; returns the version."""
    from pymachine.machine import dockerapi

    url = engine_url(machine.driver)
    tls = machine.tls()
    deadline = time.monotonic() + timeout
    delay = 0.1
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            return dockerapi.engine_version(url, tls.ca_cert, tls.client_cert, tls.client_key,
                                            timeout=min(5.0, max(0.5, deadline - time.monotonic())))
        except (OSError, MachineError) as exc:
            last = exc
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    reason = dockerapi.describe_error(last) if last else "no answer"
    raise MachineError(f"the Docker engine at {url} did not answer within {timeout:g}s: {reason}")


def _record(machine: Machine, step: str | None, message: str | None) -> None:
    ext: dict[str, Any] = machine.host.extra.setdefault("Pymachine", {})
    if step is None:
        ext.pop("LastError", None)
        if not ext:
            machine.host.extra.pop("Pymachine", None)
    else:
        ext["LastError"] = {"Step": step, "Message": message or "",
                            "Time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    machine.save()


def seed_network(driver: Driver) -> str:
    """The smallest IPv4 network holding every seed address of a driver that carries a seed
    (a single address as itself); "" for other drivers or none known before boot."""
    import ipaddress

    if not driver.capabilities.seed:
        return ""
    addresses = [ipaddress.IPv4Address(a) for a in driver.seed_addresses() if ":" not in a]
    if not addresses:
        return ""
    low, high = min(addresses), max(addresses)
    net = ipaddress.IPv4Network(low)
    while high not in net:
        net = net.supernet()
    return str(low) if net.num_addresses == 1 else str(net)


def build_plan(machine: Machine, log: Log | None = None) -> ProvisionPlan:
    """The one ProvisionPlan builder: the machine's engine options, its TLS files
    as they are on disk now, its address and the engine's port inside the host.

    With ``log``, a bundle install source gets its upload hook (provisioning);
    without, the plan only renders files (a first-boot seed).
    """
    from pymachine.engine.options import EngineOptions
    from pymachine.machine.secrets import engine_with_secrets
    from pymachine.provisioners.base import ProvisionPlan

    tls = machine.tls()
    # config.json holds proxy URLs with the password masked; the engine needs the real ones.
    engine = engine_with_secrets(machine.dir, EngineOptions.from_json(machine.host.engine_options))
    bundle_hook = None
    if log is not None and engine.install_source == "bundle":
        from pymachine.engine import bundle

        bundle_hook = bundle.installer(Path(engine.bundle_path), log)
    return ProvisionPlan(
        hostname=machine.name,
        engine=engine,
        driver_name=machine.driver.name,
        ca_pem=tls.ca_cert.read_bytes(),
        server_pem=tls.server_cert.read_bytes(),
        server_key_pem=tls.server_key.read_bytes(),
        machine_ip=machine.driver.ip(),
        machine_network=seed_network(machine.driver),
        engine_port=engine_port(machine),
        install_bundle=bundle_hook,
    )


def first_boot_plan(machine: Machine, log: Log) -> FirstBoot:
    """The first-boot plan for a driver that carries a seed: the provisioner of
    pymachine's base image renders the engine's TLS files, drop-in and proxy.

    The driver first fixes the addresses its engine will be reached at (a port it
    picks, a DHCP pool); the server certificate covers them all, so provisioning
    keeps it (``server_cert_reusable``) and finds nothing to change.
    """
    from dataclasses import replace

    from pymachine.machine.tls import copy_client_certs, issue_server_cert
    from pymachine.provisioners.debian import DebianProvisioner

    addresses = machine.driver.seed_addresses()
    log("Rendering the engine's TLS files and configuration for the first boot...")
    copy_client_certs(machine)
    issue_server_cert(machine, extra_sans=addresses)
    plan = DebianProvisioner.first_boot(build_plan(machine))
    # No address known before boot (vSphere's DHCP): the certificate cannot name the guest,
    # so the engine waits for provisioning's certificate and starts once, configured.
    return replace(plan, hold_engine=not addresses)


def seed_first_boot(machine: Machine, log: Log) -> None:
    """Hand the first-boot plan to a driver that declares it can carry a seed (before its create)."""
    if machine.driver.capabilities.seed:
        machine.driver.first_boot = first_boot_plan(machine, log)


def provision_plan(machine: Machine, log: Log, new_certs: bool = True) -> ProvisionPlan:
    """The plan provisioning runs: client certs copied, the server cert kept when still good
    (``new_certs=False``: the one the first-boot seed carried) or issued anew."""
    from pymachine.machine.tls import copy_client_certs, issue_server_cert

    log("Copying certs to the local machine directory...")
    copy_client_certs(machine)
    if new_certs or not server_cert_reusable(machine):
        issue_server_cert(machine)
    return build_plan(machine, log)


def provision_over(machine: Machine, client: SSHClient, log: Log, new_certs: bool = True) -> str:
    """Run the provisioner for ``machine`` over an open connection; returns the engine version."""
    from pymachine.provisioners.base import ProvisionError
    from pymachine.provisioners.detect import detect

    log("Detecting the provisioner...")
    try:
        provisioner = detect(client)
    except MachineError as exc:
        _record(machine, "detect", str(exc))
        raise
    log(f"Provisioning with {provisioner.name}...")
    try:
        plan = provision_plan(machine, log, new_certs)
        provisioner.provision(client, plan, log)
    except ProvisionError as exc:
        _record(machine, exc.step, str(exc))
        raise
    except MachineError as exc:
        _record(machine, "prepare", str(exc))
        raise
    log("Checking connection to Docker...")
    try:
        version = wait_for_engine(machine)
    except MachineError as exc:
        _record(machine, "wait_for_engine", str(exc))
        raise
    from pymachine.machine import swarm

    try:
        swarm.configure(machine, log)
    except MachineError as exc:
        _record(machine, "swarm", str(exc))
        raise
    _record(machine, None, None)
    machine.store.write_state(machine.name, State="Running", DockerVersion=f"v{version}")
    log("Docker is up and running!")
    return version


def after_create(machine: Machine, log: Log, wait: float | None = None) -> None:
    """Reach the new machine over SSH (``wait`` seconds, default ``ssh_wait()``) and provision it."""
    log("Waiting for machine to be running, this may take a few minutes...")
    log("Detecting operating system of created instance...")
    log("Waiting for SSH to be available...")
    try:
        client = connect(machine.driver, wait=ssh_wait() if wait is None else wait)
    except MachineError as exc:
        _record(machine, "ssh", str(exc))
        raise
    with client:
        # new_certs=False: the server cert issued for the first-boot seed (the engine
        # started configured with it) is kept when it covers the address; others get one.
        provision_over(machine, client, log, new_certs=False)


def server_cert_reusable(machine: Machine) -> bool:
    """A server cert that still covers the machine's address and SANs and is far from expiry.

    ``provision`` keeps such a cert, so an unchanged host needs no engine restart;
    ``regenerate-certs`` and an address change always issue a new one.
    """
    from datetime import timedelta

    from pymachine.machine import certs
    from pymachine.machine.tls import server_cert_sans

    path = machine.tls().server_cert
    try:
        if certs.is_expired(path, margin=timedelta(days=30)):
            return False
        return all(certs.cert_covers_host(path, san) for san in server_cert_sans(machine))
    except (MachineError, OSError):
        return False


def reprovision(machine: Machine, log: Log, new_certs: bool = False) -> None:
    with connect(machine.driver, wait=10.0) as client:
        provision_over(machine, client, log, new_certs)


def upgrade(machine: Machine, log: Log) -> None:
    """Upgrade the engine package (or re-install the bundle), then re-provision.

    A stopped machine is started first and waited for, as docker-machine did."""
    from pymachine.machine.drivers.base import State
    from pymachine.provisioners.detect import detect

    wait = 10.0
    if machine.driver.state() != State.RUNNING:
        log("Starting machine so machine can be upgraded...")
        machine.start(log)
        wait = ssh_wait()
    with connect(machine.driver, wait=wait) as client:
        provisioner = detect(client)
        log(f"Upgrading docker on {machine.name} ({provisioner.name})...")
        upgrade_cmd = getattr(provisioner, "packages_upgrade", None)
        if callable(upgrade_cmd):
            cmd = upgrade_cmd()
            if cmd:
                client.run(cmd, sudo=True, timeout=1800)
        provision_over(machine, client, log)
