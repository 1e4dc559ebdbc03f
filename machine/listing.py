"""What ``ls`` (and ``active``) know about each machine, gathered in parallel.

docker-machine queried every host with its own 10 s timeout, so one hung
host held the whole listing for 10 s.  Here every host is queried at once
under ONE deadline for the whole listing (2 s by default); a host that has
not answered by then is shown from local evidence (its driver's local state,
the last engine version seen, marked as not fresh) with state ``Timeout``.
Worker threads are daemons whose sockets time out at the deadline too, so
nothing lingers after the answer is printed.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pymachine.machine import docker_context, urls
from pymachine.machine.drivers.base import State
from pymachine.machine.errors import MachineError
from pymachine.machine.store import BrokenHost, Host, Store, driver_config

DEFAULT_DEADLINE = 2.0


@dataclass
class ListItem:
    """One row; attribute names are docker-machine's template fields."""

    Name: str
    Active: str = "-"
    ActiveHost: bool = False
    ActiveSwarm: bool = False
    DriverName: str = ""
    State: str = ""
    URL: str = ""
    SwarmOptions: dict[str, Any] | None = None
    Swarm: str = ""
    EngineOptions: dict[str, Any] | None = None
    Error: str = ""
    DockerVersion: str = ""
    ResponseTime: str = ""
    Fresh: bool = True
    LocalState: str = ""
    _labels: list[str] = field(default_factory=list, repr=False)
    _managers: tuple[str, ...] = field(default=(), repr=False)  # swarm mode: its cluster's managers
    _timed_out: bool = field(default=False, repr=False)

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


def natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


def format_duration(seconds: float) -> str:
    """Go's time.Duration String() for the RESPONSE column (ms precision is enough)."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3f}".rstrip("0").rstrip(".") + "ms"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def is_active(item: ListItem, environ: dict[str, str]) -> None:
    docker_host = environ.get("DOCKER_HOST", "")
    if item.State != State.RUNNING.value:
        return
    if docker_host:
        if item.URL and docker_host == item.URL:
            item.ActiveHost, item.Active = True, "*"
        elif item.URL and item.SwarmOptions and item.SwarmOptions.get("Master") and swarm_url(item) == docker_host:
            item.ActiveSwarm, item.Active = True, "* (swarm)"
    elif docker_context.current_machine(environ) == item.Name:
        item.ActiveHost, item.Active = True, "*"


def swarm_url(item: ListItem) -> str:
    return urls.swarm_url(item.URL, (item.SwarmOptions or {}).get("Host") or "")


def base_item(host: Host | BrokenHost) -> ListItem:
    if isinstance(host, BrokenHost):
        return ListItem(Name=host.name, DriverName=host.driver_name, State=State.ERROR.value, Error=host.error)
    return ListItem(
        Name=host.name,
        DriverName=host.driver_name,
        SwarmOptions=host.swarm_options,
        EngineOptions=host.engine_options,
        _labels=_labels_of(host),
    )


def _labels_of(host: Host) -> list[str]:
    """EngineOptions.Labels as strings; a hand-edited non-list counts as none."""
    labels = host.engine_options.get("Labels")
    return [str(label) for label in labels] if isinstance(labels, list) else []


def creation_error(host: Host) -> tuple[bool, str] | None:
    """(interrupted?, message) for a machine whose create has not finished.

    ``create`` records ``Pymachine.Creating`` with its PID first and clears it
    last; a PID that is gone means the create was killed midway.
    """
    from pymachine.machine.store import pid_alive

    info = (host.extra.get("Pymachine") or {}).get("Creating")
    if info is None:
        return None
    pid = info.get("Pid") if isinstance(info, dict) else None
    if isinstance(pid, int) and pid_alive(pid):
        return False, f"create in progress (pid {pid})"
    return True, (f"create was interrupted; remove it with 'pymachine rm -f {host.name}'"
                  + (f" or finish it with 'pymachine provision {host.name}'" if host.driver_name != "none" else ""))


def query_host(store: Store, host: Host, item: ListItem, deadline: float,
               known_states: dict[str, State] | None = None) -> None:
    """Fill ``item`` from the driver and the engine; runs in a worker thread."""
    from pymachine.machine import dockerapi
    from pymachine.machine.authpaths import machine_tls
    from pymachine.machine.drivers.registry import load_driver

    started = time.monotonic()
    try:
        driver = load_driver(host.driver_name, driver_config(store, host))
        state = (known_states or {}).get(host.name) or driver.state(timeout=max(0.1, deadline - time.monotonic()))
        item.State = state.value
        if state == State.RUNNING:
            item.URL = driver.running_url()
            if item.URL:
                tls = machine_tls(store, host)
                try:
                    version = dockerapi.engine_version(
                        item.URL, tls.ca_cert, tls.client_cert, tls.client_key,
                        timeout=max(0.1, deadline - time.monotonic()),
                    )
                    item.DockerVersion = f"v{version}"
                except TimeoutError:
                    item._timed_out = True  # the deadline ran out inside the query
                except (OSError, MachineError, ValueError) as exc:
                    item.DockerVersion = "Unknown"
                    item.Error = f"Unable to query docker version: {dockerapi.describe_error(exc)}"
    except MachineError as exc:
        item.State = State.ERROR.value
        if str(exc) != "Host is not running":
            item.Error = str(exc)
    except Exception as exc:  # noqa: BLE001 -- a hand-edited driver config: one error row, not a crash
        item.State = State.ERROR.value
        item.Error = f"cannot use the {host.driver_name} driver's config: {exc.__class__.__name__}"
    local_evidence(host, item)
    item.ResponseTime = format_duration(time.monotonic() - started)


def local_evidence(host: Host, item: ListItem) -> None:
    """A recorded provisioning failure or an unfinished create overrides what was queried."""
    failed = (host.extra.get("Pymachine") or {}).get("LastError")
    if isinstance(failed, dict):
        item.State = State.ERROR.value
        item.Error = provisioning_error(host.name, failed)
    creating = creation_error(host)
    if creating is not None:
        interrupted, message = creating
        if interrupted:
            item.State = State.ERROR.value
        item.Error = message


def batch_states(hosts: list[Host], deadline: float, store: Store | None = None) -> dict[str, State]:
    """One ``batch_states`` call per driver class that has more than one machine, in parallel."""
    from pymachine.machine.drivers.base import Driver
    from pymachine.machine.drivers.registry import load_driver

    groups: dict[type[Driver], list[Any]] = {}
    for host in hosts:
        try:
            driver = load_driver(host.driver_name, driver_config(store, host) if store else host.driver)
        except Exception:  # noqa: BLE001 -- query_host reports it as that machine's error row
            continue
        groups.setdefault(type(driver), []).append(driver)
    results: dict[str, State] = {}
    threads = []
    for cls, drivers in groups.items():
        # classmethods bound to their class: the same function underneath means "not overridden"
        if len(drivers) < 2 or cls.batch_states.__func__ is Driver.batch_states.__func__:  # type: ignore[attr-defined]
            continue  # fewer than two machines, or a driver without a batch query

        def work(c: Any = cls, ds: list[Any] = drivers) -> None:
            try:
                found = c.batch_states(ds, max(0.1, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 -- fall back to per-machine state()
                found = {}
            results.update(found)

        t = threading.Thread(target=work, daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return dict(results)


def timed_out_item(store: Store, host: Host, item: ListItem, deadline_s: float) -> ListItem:
    """What is known locally about a host that missed the deadline."""
    from pymachine.machine.drivers.registry import load_driver

    cached = store.read_state(host.name)
    local: State | None = None
    try:
        local = load_driver(host.driver_name, driver_config(store, host)).local_state()
    except Exception:  # noqa: BLE001 -- no local evidence from a driver that cannot load
        local = None
    out = base_item(host)
    out.State = State.TIMEOUT.value
    out.Fresh = False
    out.LocalState = (local.value if local else cached.get("State", "")) or ""
    if cached.get("DockerVersion"):
        out.DockerVersion = f"{cached['DockerVersion']} (cached)"
    hint = f"; last known state {out.LocalState}" if out.LocalState else ""
    out.Error = f"no answer within {deadline_s:g}s{hint}"
    local_evidence(host, out)  # a recorded provisioning failure is local evidence too
    return out


def provisioning_error(name: str, failed: dict[str, Any]) -> str:
    return (
        f"provisioning failed at step {failed.get('Step')}: {failed.get('Message')} (run: pymachine provision {name})"
    )


def gather(
    store: Store,
    hosts: list[Host | BrokenHost],
    environ: dict[str, str],
    deadline_s: float = DEFAULT_DEADLINE,
) -> list[ListItem]:
    deadline = time.monotonic() + deadline_s
    known_states = batch_states([h for h in hosts if isinstance(h, Host)], deadline, store)
    items: dict[str, ListItem] = {}
    done: dict[str, threading.Event] = {}
    for host in hosts:
        item = base_item(host)
        items[host.name] = item
        if isinstance(host, BrokenHost):
            continue
        event = threading.Event()
        done[host.name] = event

        def work(h: Host = host, it: ListItem = item, ev: threading.Event = event) -> None:
            try:
                query_host(store, h, it, deadline, known_states)
            finally:
                ev.set()

        threading.Thread(target=work, name=f"ls-{host.name}", daemon=True).start()

    result: list[ListItem] = []
    by_name = {h.name: h for h in hosts}
    for name, item in items.items():
        waited = done.get(name)
        if waited is not None and (not waited.wait(max(0.0, deadline - time.monotonic())) or item._timed_out):
            host = by_name[name]
            assert isinstance(host, Host)
            item = timed_out_item(store, host, item, deadline_s)
        elif waited is not None and item.State:
            store.write_state(
                name,
                State=item.State,
                **({"DockerVersion": item.DockerVersion} if item.DockerVersion.startswith("v") else {}),
            )
        is_active(item, environ)
        result.append(item)
    try:
        fill_swarm_column(result)
        fill_swarm_mode_column(result, [h for h in hosts if isinstance(h, Host)])
    except Exception:  # noqa: BLE001 -- a hand-edited swarm record costs the SWARM column, not the listing
        pass
    result.sort(key=lambda it: natural_key(it.Name))
    return result


def fill_swarm_column(items: list[ListItem]) -> None:
    masters = {
        (it.SwarmOptions or {}).get("Discovery"): it.Name
        for it in items
        if (it.SwarmOptions or {}).get("Master")
    }
    for it in items:
        opts = it.SwarmOptions or {}
        if not opts.get("IsSwarm"):
            continue
        master = masters.get(opts.get("Discovery"), "")
        it.Swarm = f"{master} (master)" if opts.get("Master") else master


def fill_swarm_mode_column(items: list[ListItem], hosts: list[Host]) -> None:
    """Swarm mode: ``NAME (manager)`` for managers, a worker's manager otherwise;
    ``swarm=M`` then keeps every node of a cluster M manages."""
    if not any((h.extra.get("Pymachine") or {}).get("Swarm") for h in hosts):
        return
    from pymachine.machine.swarm import swarm_column

    column = swarm_column(hosts)
    managers: dict[str, list[str]] = {}
    for name, (text, cid) in column.items():
        if text.endswith(" (manager)"):
            managers.setdefault(cid, []).append(name)
    for it in items:
        if it.Name in column:
            it.Swarm, cid = column[it.Name]
            it._managers = tuple(managers.get(cid, ()))


# Filters ---------------------------------------------------------------------------------
def parse_filters(specs: list[str]) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep:
            raise MachineError("Unsupported filter syntax.")
        key = key.lower()
        if key not in ("driver", "state", "name", "label", "swarm"):
            raise MachineError(f"Unsupported filter key '{key}'")
        if key == "name":  # RE2-like and linear time: no pattern can backtrack for minutes
            from pymachine.machine.namefilter import compile_filter

            compile_filter(value)
        filters.setdefault(key, []).append(value)
    return filters


def matches_static(host: Host | BrokenHost, filters: dict[str, list[str]]) -> bool:
    """Every filter that needs no query (all but state)."""
    driver = host.driver_name
    if "driver" in filters and not any(driver.lower() == v.lower() for v in filters["driver"]):
        return False
    if "name" in filters and not any(_name_matches(v, host.name) for v in filters["name"]):
        return False
    if isinstance(host, BrokenHost):
        return not ({"label", "swarm"} & filters.keys())
    if "label" in filters:
        labels = _labels_of(host)
        if not any(_label_match(v, labels) for v in filters["label"]):
            return False
    return True


def _name_matches(pattern: str, name: str) -> bool:
    from pymachine.machine.namefilter import compile_filter

    return compile_filter(pattern).search(name)


def _label_match(wanted: str, labels: list[str]) -> bool:
    key, _, value = wanted.partition("=")
    for label in labels:
        lk, _, lv = label.partition("=")
        if lk == key and lv.lower() == value.lower():
            return True
    return False


def matches_dynamic(item: ListItem, filters: dict[str, list[str]]) -> bool:
    if "state" in filters and not any(item.State.lower() == v.lower() for v in filters["state"]):
        return False
    if "swarm" in filters:
        master = item.Swarm.replace(" (master)", "").replace(" (manager)", "")
        if not any(master == v or v in item._managers for v in filters["swarm"]):
            return False
    return True
