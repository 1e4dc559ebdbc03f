"""A stored machine with its driver loaded, and its lifecycle: start/stop/restart/kill, remove, state.

The Host layer sits between the CLI and the drivers and saves to the store after
each step.  What a new machine is made of (its HostOptions, its validated driver)
is built here too; the create's orchestration (certificates, driver create,
provisioning, rollback) is ``machine.creation``, which builds on this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pymachine.machine import hostoptions
from pymachine.machine.authpaths import MachineTLS, machine_tls
from pymachine.machine.drivers.base import Driver, State
from pymachine.machine.drivers.registry import driver_class, load_driver
from pymachine.machine.errors import MachineError
from pymachine.machine.store import Host, Store, check_new_name, driver_config

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
    if driver.provisionable:
        from pymachine.machine.sshcommands import check_ssh_value  # no "-oProxyCommand=" user

        check_ssh_value("SSH user", driver.settings.ssh_user)
    return driver
