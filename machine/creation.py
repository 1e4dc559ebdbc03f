"""``create`` as one library call: a Python caller gets exactly what ``pymachine create`` does.

:func:`create_machine` takes a typed :class:`CreateRequest` (the command's flags as
data) and a log callback, and runs every step the command runs, in the same
order: the name and the store first (nothing touched on a bad name), the SSH wait
setting, the swarm checks (a bad or unreachable manager fails before any host is
made), the driver's own options, the engine's install source, proxy and bundle,
then the create itself: CA and client certificates, pre-create check, driver
create, server certificate, provisioning.  A create is all or nothing: a failure,
Ctrl-C or SIGTERM before the machine is usable removes what was made.

The CLI (``machine/cli/create.py``) only turns argv into a ``CreateRequest`` and
prints what the log callback is given.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymachine.machine import hostoptions
from pymachine.machine.drivers.base import Driver, Flag
from pymachine.machine.errors import MachineError
from pymachine.machine.host import CreateOptions, Machine, new_host, prepare_driver
from pymachine.machine.store import MachineRemoved, Store, StoreError, check_new_name, describe_os_error
from pymachine.machine.tls import copy_client_certs, issue_server_cert

Log = Callable[[str], None]
INSTALL_SOURCES = ("", "packages", "script", "bundle", "preinstalled")


@dataclass
class CreateRequest:
    """What ``pymachine create`` takes, as data; field names follow the flags.

    ``driver_options`` holds the driver's own flags by name without the ``--``
    (``{"url": "tcp://..."}`` for ``none``, ``{"generic-ip-address": ...}`` for
    ``generic``); an option left out takes its
    default, or its environment variable from ``environ`` as the command does.
    ``engine_install_url`` None means the default URL, with the driver's default
    install source; a URL given means the install script at that URL.
    """

    name: str
    driver: str
    driver_options: dict[str, Any] = field(default_factory=dict)
    engine_install_url: str | None = None
    engine_opt: list[str] = field(default_factory=list)
    engine_insecure_registry: list[str] = field(default_factory=list)
    engine_registry_mirror: list[str] = field(default_factory=list)
    engine_label: list[str] = field(default_factory=list)
    engine_storage_driver: str = ""
    engine_env: list[str] = field(default_factory=list)
    engine_install_source: str = ""  # "", packages, script, bundle, preinstalled
    engine_bundle: str = ""
    swarm: bool = False
    swarm_image: str = hostoptions.DEFAULT_SWARM_IMAGE
    swarm_master: bool = False
    swarm_discovery: str = ""
    swarm_strategy: str = "spread"
    swarm_opt: list[str] = field(default_factory=list)
    swarm_join_opt: list[str] = field(default_factory=list)
    swarm_host: str = hostoptions.DEFAULT_SWARM_HOST
    swarm_addr: str = ""
    swarm_experimental: bool = False
    tls_san: list[str] = field(default_factory=list)
    http_proxy: str = ""
    https_proxy: str = ""
    no_proxy: str = ""
    proxy_from_env: bool = False  # copy HTTP_PROXY/HTTPS_PROXY/NO_PROXY from ``environ``
    # The CA and client certificate to use instead of the store's (the global --tls-* flags).
    tls_ca_cert: str | None = None
    tls_ca_key: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = None


def create_machine(
    store: Store,
    request: CreateRequest,
    log: Log,
    *,
    environ: Mapping[str, str] | None = None,
    argv0: str = "pymachine",
    sigterm_rolls_back: bool = True,
) -> Machine:
    """Validate ``request``, then create, provision and save the machine; returns it.

    Raises MachineError (one line) on bad input before anything is written.  With
    ``sigterm_rolls_back`` (the main thread only) a SIGTERM during the create is
    handled like Ctrl-C: what was made is removed.
    """
    env = dict(os.environ if environ is None else environ)
    name = request.name
    check_new_name(name)  # before anything touches the disk
    if store.exists(name):
        raise MachineError(f'Docker machine "{name}" already exists')
    from pymachine.machine.provision import ssh_wait

    wait = ssh_wait(env)  # a bad PYMACHINE_SSH_WAIT fails now, before anything is made
    from pymachine.machine import swarm  # swarm mode: discovery is a manager's NAME or engine URL

    discovery = swarm.check_create(store, agent=request.swarm, master=request.swarm_master,
                                   discovery=request.swarm_discovery, swarm_opts=request.swarm_opt,
                                   join_opts=request.swarm_join_opt)
    from pymachine.machine.drivers.registry import driver_class

    values = driver_values(driver_class(request.driver).flags, request.driver_options, env)
    driver = prepare_driver(store, name, request.driver, values)
    opts = create_options(request, discovery, env, default_install_source(driver))
    with terminate_as_interrupt(sigterm_rolls_back):
        return create_with_driver(store, name, driver, opts, log, argv0=argv0, ssh_wait=wait)


def driver_values(flags: list[Flag] | tuple[Flag, ...], given: Mapping[str, Any],
                  environ: Mapping[str, str]) -> dict[str, Any]:
    """Every flag of the driver: the given value, else its environment variable or default."""
    known = {flag.name for flag in flags}
    unknown = sorted(set(given) - known)
    if unknown:
        raise MachineError(f"flag provided but not defined: --{unknown[0]}")
    values: dict[str, Any] = {}
    for flag in flags:
        if flag.name in given:
            values[flag.name] = given[flag.name]
            continue
        default = flag.env_default(environ)
        if flag.kind == "list":
            default = list(default or [])
        elif flag.kind == "bool":
            default = bool(default)
        values[flag.name] = default
    return values


def default_install_source(driver: Driver) -> str:
    """A driver whose image carries the engine (qemu) defaults to configuring it only."""
    return driver.default_install_source


def create_options(request: CreateRequest, discovery: str, environ: Mapping[str, str],
                   driver_default_source: str = "packages") -> CreateOptions:
    """The request's engine, swarm and TLS settings in docker-machine's HostOptions shape."""
    from pymachine.engine.options import DEFAULT_INSTALL_URL

    engine = hostoptions.engine_options(
        arbitrary_flags=request.engine_opt, env=request.engine_env,
        insecure_registry=request.engine_insecure_registry, labels=request.engine_label,
        storage_driver=request.engine_storage_driver, registry_mirror=request.engine_registry_mirror,
        install_url=DEFAULT_INSTALL_URL if request.engine_install_url is None else request.engine_install_url,
    )
    engine = engine_extras(engine, request, environ, driver_default_source)
    is_swarm = request.swarm or request.swarm_master
    swarm = hostoptions.swarm_options(
        is_swarm=is_swarm, address=request.swarm_addr, discovery=discovery,
        master=request.swarm_master, host=request.swarm_host, image=request.swarm_image,
        strategy=request.swarm_strategy, arbitrary_flags=request.swarm_opt,
        arbitrary_join_flags=request.swarm_join_opt,
        env=(request.engine_env or None) if is_swarm else None,  # docker-machine 0.16.2: null off swarm
        experimental=request.swarm_experimental,
    )
    return CreateOptions(
        engine=engine, swarm=swarm, tls_sans=request.tls_san,
        ca_cert=request.tls_ca_cert, ca_key=request.tls_ca_key,
        client_cert=request.tls_client_cert, client_key=request.tls_client_key,
    )


def engine_extras(engine: dict[str, Any], request: CreateRequest, environ: Mapping[str, str],
                  driver_default_source: str = "packages") -> dict[str, Any]:
    """Fold pymachine's proxy and install-source settings into EngineOptions."""
    from pymachine.engine.options import EngineOptions
    from pymachine.engine.proxy import ProxySettings

    opts = EngineOptions.from_json(engine)
    proxy = ProxySettings(request.http_proxy, request.https_proxy, request.no_proxy)
    if request.proxy_from_env:
        proxy = ProxySettings.merged(proxy, ProxySettings.from_user_environment(dict(environ)))
    opts.proxy = proxy
    source = request.engine_install_source
    if source not in INSTALL_SOURCES:
        raise MachineError(f"unknown engine install source {source!r}: choose packages, script, bundle "
                           "or preinstalled")
    if request.engine_bundle:
        bundle = os.path.abspath(os.path.expanduser(request.engine_bundle))
        if not os.path.isfile(bundle):
            raise MachineError(f"engine bundle not found: {request.engine_bundle}")
        if source not in ("", "bundle"):
            raise MachineError("--engine-bundle needs --engine-install-source bundle (or none)")
        source, opts.bundle_path = "bundle", bundle
    elif source == "bundle":
        raise MachineError("--engine-install-source bundle needs --engine-bundle FILE")
    if not source:
        source = "script" if request.engine_install_url is not None else driver_default_source
    opts.install_source = source
    return opts.to_json()


@contextlib.contextmanager
def terminate_as_interrupt(enabled: bool = True) -> Iterator[None]:
    """SIGTERM during a create raises KeyboardInterrupt, so the create rolls back like on Ctrl-C."""
    import signal
    import threading

    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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


def create_with_driver(
    store: Store,
    name: str,
    driver: Driver,
    opts: CreateOptions,
    log: Log,
    argv0: str = "pymachine",
    ssh_wait: float | None = None,
) -> Machine:
    """The create's steps for a validated driver; all or nothing: any failure or interrupt
    before the machine is usable rolls it back.  ``ssh_wait``: seconds to wait for SSH
    (default: ``$PYMACHINE_SSH_WAIT`` of this process, else 120).

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
            if driver.capabilities.seed:  # the provisioner's first-boot plan, for the driver's seed
                from pymachine.machine.provision import seed_first_boot

                seed_first_boot(machine, log)
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
        provision.after_create(machine, log, wait=ssh_wait)
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
