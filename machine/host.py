"""A machine's lifecycle: create, start/stop/restart/kill, remove, state.

The Host layer sits between the CLI and the drivers: it owns the order of
steps and saves to the store after each one, so an interrupted create is
visible (and removable) rather than silently lost.  A failure while the
driver makes the box rolls back what was made; a failure while provisioning
keeps the machine, marked with the failing step, so ``provision`` can retry.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pymachine.machine import hostoptions
from pymachine.machine.atomic import write_atomic
from pymachine.machine.authpaths import MachineTLS, machine_tls
from pymachine.machine.drivers.base import Driver, State
from pymachine.machine.drivers.registry import driver_class, load_driver
from pymachine.machine.errors import MachineError
from pymachine.machine.store import (
    Host,
    MachineRemoved,
    Store,
    StoreError,
    check_new_name,
    describe_os_error,
    driver_config,
)

Log = Callable[[str], None]


class CreateOptions:
    """Everything ``create`` takes besides the driver's own flags."""

    def __init__(
        self,
        engine: dict[str, Any] | None = None,
        swarm: dict[str, Any] | None = None,
        tls_sans: list[str] | None = None,
        ca_cert: str | None = None,
        ca_key: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        extra: dict[str, Any] | None = None,  # pymachine-only top-level settings
    ) -> None:
        self.engine = hostoptions.engine_options() if engine is None else engine
        self.swarm = hostoptions.swarm_options() if swarm is None else swarm
        self.tls_sans = list(tls_sans or [])
        self.ca_cert = ca_cert
        self.ca_key = ca_key
        self.client_cert = client_cert
        self.client_key = client_key
        self.extra = dict(extra or {})


class Machine:
    """A stored host with its driver loaded."""

    def __init__(self, store: Store, host: Host) -> None:
        self.store = store
        self.host = host
        # The driver's files are found from this store and the directory name (the
        # machine's identity), never from a StorePath or MachineName in the file.
        self.driver: Driver = load_driver(host.driver_name, driver_config(store, host))

    @classmethod
    def load(cls, store: Store, name: str) -> Machine:
        return cls(store, store.load(name))

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def dir(self) -> Path:
        return self.store.machine_dir(self.name)

    def tls(self) -> MachineTLS:
        return machine_tls(self.store, self.host)

    def save(self) -> None:
        from pymachine.machine.secrets import protect_host  # proxy passwords stay out of config.json

        self.host.driver = self.driver.config
        protect_host(self.dir, self.host.host_options)
        self.store.save(self.host, must_exist=True)  # never re-made after a concurrent rm

    def url(self) -> str:
        return self.driver.url()

    def state(self, timeout: float = 10.0) -> State:
        return self.driver.state(timeout)

    # Lifecycle -------------------------------------------------------------------------
    def start(self, log: Log) -> None:
        if self.driver.state() == State.RUNNING:
            raise MachineError(f'Machine "{self.name}" is already running.')
        log(f'Starting "{self.name}"...')
        self.driver.start(log)
        self.save()
        log(f'Machine "{self.name}" was started.')

    def stop(self, log: Log) -> None:
        if self.driver.state() == State.STOPPED:
            raise MachineError(f'Machine "{self.name}" is already stopped.')
        log(f'Stopping "{self.name}"...')
        self.driver.stop(log)
        self.save()
        log(f'Machine "{self.name}" was stopped.')

    def restart(self, log: Log) -> None:
        log(f'Restarting "{self.name}"...')
        if self.driver.state() == State.STOPPED:
            self.driver.start(log)
        else:
            self.driver.restart(log)
        self.save()

    def kill(self, log: Log) -> None:
        if self.driver.state() == State.STOPPED:
            raise MachineError(f'Machine "{self.name}" is already stopped.')
        log(f'Killing "{self.name}"...')
        self.driver.kill(log)
        self.save()
        log(f'Machine "{self.name}" was killed.')

    def remove(self, log: Log, force: bool = False) -> None:
        try:
            self.driver.remove(log)
        except MachineError:
            if not force:
                raise
        self.store.remove(self.name)


def new_host(store: Store, name: str, driver: Driver, opts: CreateOptions) -> Host:
    auth = hostoptions.auth_options(
        str(store.path), name,
        ca_cert=opts.ca_cert, ca_key=opts.ca_key,
        client_cert=opts.client_cert, client_key=opts.client_key,
        sans=opts.tls_sans,
    )
    options = hostoptions.host_options(opts.engine, opts.swarm, auth)
    return Host(name=name, driver_name=driver.name, driver=driver.config, host_options=options,
                extra={"Pymachine": dict(opts.extra)} if opts.extra else {})


def prepare_driver(store: Store, name: str, driver_name: str, values: Mapping[str, Any]) -> Driver:
    """Validate everything that needs no side effect: the store stays untouched on error."""
    check_new_name(name)
    if store.exists(name):
        raise MachineError(f'Docker machine "{name}" already exists')
    cls = driver_class(driver_name)
    driver = cls.new(name, str(store.path))
    driver.set_config_from_flags(values)
    if driver.provisionable and driver.config.get("SSHUser") is not None:
        from pymachine.machine.sshcommands import check_ssh_value  # no "-oProxyCommand=" user

        check_ssh_value("SSH user", str(driver.config["SSHUser"]))
    return driver


def cert_paths(store: Store, opts: CreateOptions) -> tuple[Any, set[Path]]:
    """The CA and client files for a create, and which of them are the user's own."""
    from pymachine.machine import certs

    given = {"ca_cert": opts.ca_cert, "ca_key": opts.ca_key,
             "client_cert": opts.client_cert, "client_key": opts.client_key}
    default = certs.CertPaths.in_dir(store.certs_dir)
    paths = certs.CertPaths(**{k: Path(v).expanduser().absolute() if v else getattr(default, k)
                               for k, v in given.items()})
    user = {getattr(paths, k) for k, v in given.items() if v}
    return paths, user


def create(
    store: Store,
    name: str,
    driver: Driver,
    opts: CreateOptions,
    log: Log,
    argv0: str = "pymachine",
) -> Machine:
    """All or nothing: any failure or interrupt before the machine is usable rolls it back.

    ``Pymachine.Creating`` (this PID) is in the config from the first save to the
    last, so a create killed midway shows as interrupted in ``ls``.  Provisioning
    runs without the machine's lock so an ``rm`` can win: the store then refuses
    the create's next save (the directory is never re-made) and the create stops.
    """
    from pymachine.machine import certs  # heavy (cryptography): only on create

    check_new_name(name)
    certs.check_sans(opts.tls_sans)
    store.ensure()
    paths, user_files = cert_paths(store, opts)
    certs.bootstrap_certificates(paths, log=log, lock_dir=store.certs_dir, user_files=user_files)
    log("Running pre-create checks...")
    driver.pre_create_check()
    store.reserve(name)
    try:
        with store.lock(name):
            machine = Machine(store, new_host(store, name, driver, opts))
            machine.driver = driver
            machine.host.extra.setdefault("Pymachine", {})["Creating"] = {"Pid": os.getpid()}
            machine.save()
            log("Creating machine...")
            driver.create(log)
            machine.save()
            copy_client_certs(machine)
            if not driver.provisionable:
                issue_server_cert(machine)
                finish_create(machine)
    except MachineRemoved:
        raise _removed_meanwhile(name) from None
    except BaseException as exc:
        _rollback(store, name, driver, log)
        if isinstance(exc, OSError):
            raise StoreError(f"Error creating machine {name!r}: {describe_os_error(exc, store.machine_dir(name))}; "
                             "nothing was kept") from None
        raise
    if not driver.provisionable:
        return machine
    from pymachine.machine import provision  # paramiko and the provisioners: only when needed

    try:
        provision.after_create(machine, log)
    except MachineRemoved:
        raise _removed_meanwhile(name) from None
    except MachineError:
        if not store.exists(name):
            raise _removed_meanwhile(name) from None
        last = (machine.host.extra.get("Pymachine") or {}).get("LastError") or {}
        if driver.rollback_unreachable and last.get("Step") == "ssh":
            log(f"Removing {name}: the host never answered over SSH")
            _rollback(store, name, driver, log)
            raise
        finish_create(machine)  # kept for 'provision' to retry; LastError says why
        raise
    except BaseException:  # an interrupt while provisioning: nothing half-made is kept
        if store.exists(name):
            _rollback(store, name, driver, log)
        raise
    finish_create(machine)
    log(
        "To see how to connect your Docker Client to the Docker Engine running on this "
        f"virtual machine, run: {argv0} env {name}"
    )
    return machine


def finish_create(machine: Machine) -> None:
    """Clear the create's in-progress mark; a concurrent rm makes this raise MachineRemoved."""
    ext = machine.host.extra.get("Pymachine")
    if isinstance(ext, dict):
        ext.pop("Creating", None)
        if not ext:
            machine.host.extra.pop("Pymachine")
    try:
        machine.save()
    except MachineRemoved:
        raise _removed_meanwhile(machine.name) from None


def _removed_meanwhile(name: str) -> MachineError:
    return MachineError(f'create of "{name}" stopped: the machine was removed while it was being created')


def _rollback(store: Store, name: str, driver: Driver, log: Log) -> None:
    try:
        driver.remove(log)
    except Exception as exc:  # noqa: BLE001 -- the original error matters more; say what may be left
        log(f"Warning: could not remove what the driver made for {name}: {exc}")
    try:
        store.remove(name)
    except MachineError as exc:
        log(f"Warning: {exc}")


def copy_client_certs(machine: Machine) -> None:
    """Put ca.pem, cert.pem and key.pem in the machine dir: it is DOCKER_CERT_PATH."""
    tls = machine.tls()
    for src, dst, mode in (
        (tls.ca_cert, "ca.pem", 0o600),
        (tls.client_cert, "cert.pem", 0o600),
        (tls.client_key, "key.pem", 0o600),
    ):
        # A new file renamed into place: a symlink planted at the target is replaced, not
        # followed (copyfile would write the client key wherever it points).
        write_atomic(machine.dir / dst, Path(src).read_bytes(), mode=mode)


def server_cert_sans(machine: Machine) -> list[str]:
    from urllib.parse import urlsplit

    sans = list(machine.host.auth_options.get("ServerCertSANs") or [])
    url = machine.driver.url() if machine.driver.name == "none" else ""
    host = urlsplit(url).hostname if url else machine.driver.ip()
    if host:
        sans.append(host)
    return sans


def issue_server_cert(machine: Machine) -> None:
    """(Re)issue the machine's server certificate for its current address.

    docker-machine gave ``none`` machines no server cert; pymachine issues one
    so a user can start their own engine with it and ``env`` just works.
    """
    from pymachine.machine import certs

    tls = machine.tls()
    paths = certs.CertPaths(tls.ca_cert, tls.ca_key, tls.client_cert, tls.client_key)
    org = f"{certs.current_user_org()}.{machine.name}"
    certs.generate_server_cert(
        paths, machine.dir / "server.pem", machine.dir / "server-key.pem", org,
        server_cert_sans(machine), swarm_master=bool(machine.host.swarm_options.get("Master")),
    )
