"""Docker swarm mode behind docker-machine's ``--swarm*`` flags.

docker-machine ran classic swarm containers found through a discovery
service; both are gone.  pymachine keeps the flags and gives them swarm-mode
meaning: ``--swarm-master`` makes a manager (the first one initialises the
swarm), ``--swarm`` a worker, and ``--swarm-discovery`` names the pymachine
manager (machine NAME or engine URL) whose cluster to join.

Everything goes through the engines' TLS Docker API with the machines' own
client certificates (stdlib ``http.client`` over ``ssl``).  Join tokens are
read from the manager just before a join and never logged or stored; what
is stored is the node's role, node ID and cluster ID, under top-level
``Pymachine.Swarm`` in config.json (docker-machine ignores unknown keys).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymachine.machine import layout
from pymachine.machine.errors import MachineError

if TYPE_CHECKING:  # pragma: no cover
    from pymachine.machine.host import Machine
    from pymachine.machine.store import Host, Store

Log = Callable[[str], None]
SWARM_PORT = 2377
TOKEN_GONE = ("token:// discovery is gone (Docker Hub's token service shut down): "
              "pass --swarm-discovery the NAME or engine URL of a pymachine swarm manager")

# --swarm-opt (init) and --swarm-join-opt (join): option -> (path in the request body, type)
INIT_OPTS: dict[str, tuple[tuple[str, ...], str]] = {
    "listen-addr": (("ListenAddr",), "str"),
    "data-path-addr": (("DataPathAddr",), "str"),
    "data-path-port": (("DataPathPort",), "int"),
    "default-addr-pool": (("DefaultAddrPool",), "list"),
    "default-addr-pool-mask-length": (("SubnetSize",), "int"),
    "availability": (("Availability",), "str"),
    "autolock": (("Spec", "EncryptionConfig", "AutoLockManagers"), "bool"),
    "task-history-limit": (("Spec", "Orchestration", "TaskHistoryRetentionLimit"), "int"),
    "dispatcher-heartbeat": (("Spec", "Dispatcher", "HeartbeatPeriod"), "duration"),
    "cert-expiry": (("Spec", "CAConfig", "NodeCertExpiry"), "duration"),
    "snapshot-interval": (("Spec", "Raft", "SnapshotInterval"), "int"),
    "max-snapshots": (("Spec", "Raft", "KeepOldSnapshots"), "int"),
}
JOIN_OPTS: dict[str, tuple[tuple[str, ...], str]] = {
    k: INIT_OPTS[k] for k in ("listen-addr", "data-path-addr", "availability")
}
_DURATION_UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def quote(text: str) -> str:
    """URL-quote a path part (urllib imported only here: ``ls`` imports this module)."""
    from urllib.parse import quote as q

    return q(text, safe="")


# ---------------------------------------------------------------------------- engine API
class APIError(MachineError):
    """The engine answered with an HTTP error; ``status`` tells which."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Engine:
    """One engine's TLS endpoint and the client certificate that opens it."""

    url: str
    ca: Path
    cert: Path
    key: Path
    name: str = ""

    @property
    def label(self) -> str:
        return f'"{self.name}"' if self.name else self.url

    def call(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """One JSON request; raises APIError (HTTP error) or MachineError (unreachable)."""
        import http.client
        import ssl

        from pymachine.machine import dockerapi
        from pymachine.machine.tlsclient import client_tls_context

        host, port = dockerapi.split_url(self.url)
        conn = http.client.HTTPSConnection(host, port, context=client_tls_context(self.ca, self.cert, self.key),
                                           timeout=timeout)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Host": "docker", "Content-Type": "application/json"}
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read(8 << 20)
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            raise MachineError(f"cannot reach the Docker engine of {self.label} at {self.url}: "
                               f"{dockerapi.describe_error(exc)}") from None
        finally:
            conn.close()
        try:
            payload = json.loads(raw) if raw.strip() else None
        except ValueError:
            payload = raw.decode(errors="replace").strip()
        if resp.status >= 400:
            message = payload.get("message") if isinstance(payload, dict) else payload
            raise APIError(resp.status, f"{self.label}: {str(message or resp.reason).strip()}")
        return payload

    def swarm_info(self, timeout: float = 10.0) -> dict[str, Any]:
        return (self.call("GET", "/info", timeout=timeout) or {}).get("Swarm") or {}


def engine_of(machine: Machine) -> Engine:
    url = machine.driver.engine_url()  # without a state query where the driver knows it
    if not url:
        raise MachineError(f'Host "{machine.name}" is not running')
    tls = machine.tls()
    return Engine(url, tls.ca_cert, tls.client_cert, tls.client_key, machine.name)


# ---------------------------------------------------------------------------- stored record
def record_of(host: Host) -> dict[str, Any]:
    """The stored ``Pymachine.Swarm`` record of a host ({} when it is in no swarm)."""
    rec = (host.extra.get("Pymachine") or {}).get("Swarm")
    return rec if isinstance(rec, dict) else {}


def _set_record(machine: Machine, rec: dict[str, Any] | None) -> None:
    ext = machine.host.extra.setdefault("Pymachine", {})
    if rec:
        ext["Swarm"] = rec
    else:
        ext.pop("Swarm", None)
        if not ext:
            machine.host.extra.pop("Pymachine", None)
    machine.save()


def clusters(store: Store) -> dict[str, list[Host]]:
    """Stored swarm members grouped by cluster ID (managers first, then by name)."""
    from pymachine.machine.store import Host as HostCls

    out: dict[str, list[Host]] = {}
    for host in store.load_all():
        if isinstance(host, HostCls) and record_of(host).get("ClusterID"):
            out.setdefault(record_of(host)["ClusterID"], []).append(host)
    for members in out.values():
        members.sort(key=lambda h: (record_of(h).get("Role") != "manager", h.name))
    return out


# ---------------------------------------------------------------------------- discovery
def resolve_manager(store: Store, discovery: str, exclude: str = "") -> Engine:
    """The engine named by ``--swarm-discovery``: a machine NAME or an engine URL."""
    from pymachine.machine.host import Machine
    from pymachine.machine.store import BrokenHost

    if discovery.startswith("token://"):
        raise MachineError(TOKEN_GONE)
    if "://" in discovery:
        scheme, _, rest = discovery.partition("://")
        if scheme not in ("tcp", "https"):
            raise MachineError(f"--swarm-discovery {discovery}: swarm mode has no {scheme}:// discovery service; "
                               "pass the NAME or engine URL (tcp://IP:PORT) of a pymachine swarm manager")
        url = "tcp://" + rest.split("/", 1)[0]
        for host in store.load_all():
            if host.name == exclude or isinstance(host, BrokenHost):
                continue
            try:
                machine = Machine(store, host)
                if machine.driver.url() == url:
                    return engine_of(machine)
            except MachineError:
                continue
        certs = store.certs_dir
        return Engine(url, certs / layout.CA_CERT, certs / layout.CLIENT_CERT, certs / layout.CLIENT_KEY)
    from pymachine.machine.store import valid_name

    if not valid_name(discovery) or not store.exists(discovery):
        raise MachineError(f'swarm manager "{discovery}" not found: --swarm-discovery takes the NAME or engine URL '
                           "of a pymachine swarm manager")
    machine = Machine.load(store, discovery)
    rec = record_of(machine.host)
    if rec.get("Role") == "worker" or not machine.host.swarm_options.get("IsSwarm"):
        raise MachineError(f'"{discovery}" is not a swarm manager: --swarm-discovery must name a manager')
    return engine_of(machine)


def check_manager(engine: Engine, timeout: float = 5.0) -> dict[str, Any]:
    """The manager's /info Swarm section, or one clear error saying why it cannot be joined."""
    info = engine.swarm_info(timeout=timeout)
    if info.get("LocalNodeState") != "active":
        raise MachineError(f"{engine.label} is not in a swarm (state {info.get('LocalNodeState') or 'unknown'})")
    if not info.get("ControlAvailable"):
        raise MachineError(f'{engine.label} is not a swarm manager: --swarm-discovery must name a manager')
    return info


def check_create(store: Store, *, agent: bool, master: bool, discovery: str,
                 swarm_opts: list[str], join_opts: list[str]) -> str:
    """Validate the ``--swarm*`` flags before anything is created; returns the discovery to store.

    A worker with no ``--swarm-discovery`` joins the store's only cluster.
    The manager is asked now, so a bad or unreachable one fails the create
    before a host is touched.
    """
    if discovery.startswith("token://"):
        raise MachineError(TOKEN_GONE)
    if not (agent or master):
        if discovery and "://" not in discovery:  # docker-machine's check, kept when no swarm is asked for
            raise MachineError(f"Swarm Discovery URL was in the wrong format: {discovery}")
        return discovery
    init_body(swarm_opts)
    join_body(join_opts)
    if not discovery and master:
        return ""
    if not discovery:
        found = clusters(store)
        managers = {cid: [h.name for h in hs if record_of(h).get("Role") == "manager"] for cid, hs in found.items()}
        managers = {cid: names for cid, names in managers.items() if names}
        if not managers:
            raise MachineError("no swarm manager to join: create one with --swarm-master, "
                               "or name one with --swarm-discovery NAME")
        if len(managers) > 1:
            raise MachineError("several swarms in this store: choose one with --swarm-discovery NAME")
        discovery = next(iter(managers.values()))[0]
    check_manager(resolve_manager(store, discovery))
    return discovery


# ---------------------------------------------------------------------------- options
def _duration_ns(text: str) -> int:
    import re

    total, pos = 0, 0
    for match in re.finditer(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", text):
        if match.start() != pos:
            break
        total += int(float(match.group(1)) * _DURATION_UNITS[match.group(2)])
        pos = match.end()
    if pos != len(text) or not text:
        raise MachineError(f"invalid duration {text!r} (e.g. 5s, 90m, 2160h)")
    return total


def _opts_body(opts: list[str], table: dict[str, tuple[tuple[str, ...], str]], flag: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for opt in opts:
        key, sep, value = opt.lstrip("-").partition("=")
        if key not in table:
            raise MachineError(f"unknown {flag} {key!r}; swarm mode accepts: {', '.join(sorted(table))}")
        path, kind = table[key]
        if kind == "bool":
            if value.lower() not in ("", "true", "false", "1", "0"):
                raise MachineError(f"{flag} {key} takes true or false, got {value!r}")
            parsed: Any = value.lower() in ("", "true", "1")
        elif not sep or not value:
            raise MachineError(f"{flag} {key} needs a value ({key}=VALUE)")
        elif kind == "int":
            try:
                parsed = int(value)
            except ValueError:
                raise MachineError(f"{flag} {key} takes a number, got {value!r}") from None
        elif kind == "duration":
            parsed = _duration_ns(value)
        elif kind == "list":
            parsed = [v for v in value.split(",") if v]
        else:
            parsed = value
        node = body
        for part in path[:-1]:
            node = node.setdefault(part, {})
        if kind == "list":
            node.setdefault(path[-1], []).extend(parsed)
        else:
            node[path[-1]] = parsed
    return body


def init_body(swarm_opts: list[str], advertise: str = "") -> dict[str, Any]:
    """The POST /swarm/init body for ``--swarm-opt`` values (docker swarm init's options)."""
    body = {"ListenAddr": f"0.0.0.0:{SWARM_PORT}", "AdvertiseAddr": advertise, "ForceNewCluster": False}
    body.update(_opts_body(swarm_opts, INIT_OPTS, "--swarm-opt"))
    return body


def join_body(join_opts: list[str], advertise: str = "", remotes: list[str] | None = None,
              token: str = "") -> dict[str, Any]:
    """The POST /swarm/join body for ``--swarm-join-opt`` values (docker swarm join's options)."""
    body: dict[str, Any] = {"ListenAddr": f"0.0.0.0:{SWARM_PORT}", "AdvertiseAddr": advertise,
                            "RemoteAddrs": list(remotes or []), "JoinToken": token}
    body.update(_opts_body(join_opts, JOIN_OPTS, "--swarm-join-opt"))
    return body


def node_labels(engine_labels: list[str]) -> dict[str, str]:
    """``--engine-label k=v`` values as swarm node labels."""
    out: dict[str, str] = {}
    for label in engine_labels:
        key, _, value = label.partition("=")
        if key:
            out[key] = value
    return out


# ---------------------------------------------------------------------------- configure
def configure(machine: Machine, log: Log) -> None:
    """Put the machine's engine into the swarm its options ask for; idempotent.

    Called by provisioning once the engine answers.  A node already in the
    wanted swarm stays (a worker asked to be a manager is promoted); a node
    in another swarm is an error and is left untouched.
    """
    opts = machine.host.swarm_options
    if not opts.get("IsSwarm"):
        return
    started = time.monotonic()
    want = "manager" if opts.get("Master") else "worker"
    me = engine_of(machine)
    me.name = machine.name
    addr = opts.get("Address") or machine.driver.ip()
    discovery = opts.get("Discovery") or ""
    manager = (
        resolve_manager(machine.store, discovery, exclude=machine.name)
        if discovery and discovery != machine.name
        else None
    )
    if manager is None and want == "worker":
        raise MachineError("a swarm worker needs --swarm-discovery NAME of a manager")
    info = me.swarm_info()
    state = info.get("LocalNodeState") or "inactive"
    if state == "active":
        action = _already_member(machine, me, info, manager, want)
    elif state != "inactive":
        raise MachineError(f'"{machine.name}" has swarm state {state}; run "docker swarm leave --force" on it first')
    elif manager is None:
        log(f"Initialising a swarm on {machine.name} (advertising {addr})...")
        me.call("POST", "/swarm/init", init_body(list(opts.get("ArbitraryFlags") or []), addr), timeout=30)
        action = "initialised a new swarm"
    else:
        _join(machine, me, manager, want, addr, list(opts.get("ArbitraryJoinFlags") or []), log)
        action = f"joined as {want}"
    info = me.swarm_info()
    control = me if info.get("ControlAvailable") else manager
    assert control is not None
    cluster_id = (control.call("GET", "/swarm") or {}).get("ID", "")
    _apply_labels(control, info.get("NodeID", ""), node_labels(list(machine.host.engine_options.get("Labels") or [])))
    rec = {"ClusterID": cluster_id, "NodeID": info.get("NodeID", ""), "Role": want,
           "Manager": machine.name if want == "manager" else (manager.name if manager else ""),
           "AdvertiseAddr": info.get("NodeAddr") or addr}
    if want == "manager":
        _point_swarm_host_at_engine(machine, me.url)
    _set_record(machine, rec)
    log(f"Swarm: {machine.name} {action} (cluster {cluster_id[:12]}) in {time.monotonic() - started:.2f}s")


def _already_member(machine: Machine, me: Engine, info: dict[str, Any], manager: Engine | None, want: str) -> str:
    node_id = info.get("NodeID", "")
    if manager is None:
        if info.get("ControlAvailable"):
            return "is already a swarm manager"
        raise MachineError(
            f'"{machine.name}" is already a worker in another swarm; run "docker swarm leave" on it first'
        )
    try:
        node = manager.call("GET", f"/nodes/{quote(node_id)}")
    except APIError as exc:
        if exc.status != 404:
            raise
        raise MachineError(
            f'"{machine.name}" is already in another swarm; run "docker swarm leave" on it first'
        ) from None
    if want == "manager" and (node.get("Spec") or {}).get("Role") != "manager":
        _update_node(manager, node_id, lambda spec: spec.__setitem__("Role", "manager"))
        return "was promoted to manager"
    return f"is already a swarm {want}"


def _join(machine: Machine, me: Engine, manager: Engine, want: str, addr: str, join_opts: list[str], log: Log) -> None:
    minfo = check_manager(manager)
    remotes = [m["Addr"] for m in minfo.get("RemoteManagers") or [] if m.get("Addr")]
    tokens = (manager.call("GET", "/swarm") or {}).get("JoinTokens") or {}
    token = tokens.get("Manager" if want == "manager" else "Worker", "")
    log(f"Joining {machine.name} to the swarm of {manager.label} as {want} (advertising {addr})...")
    try:
        me.call("POST", "/swarm/join", join_body(join_opts, addr, remotes, token), timeout=60)
    except MachineError as exc:
        message = str(exc).replace(token, "<token>") if token else str(exc)
        try:  # nothing half-joined: undo whatever the engine kept of the attempt
            if me.swarm_info().get("LocalNodeState") != "inactive":
                me.call("POST", "/swarm/leave?force=true", timeout=30)
        except MachineError:
            pass
        raise MachineError(f"joining the swarm failed: {message}") from None


def _update_node(control: Engine, node_id: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Read-modify-write a node spec (retrying a version conflict a few times)."""
    for _ in range(5):
        node = control.call("GET", f"/nodes/{quote(node_id)}")
        spec = dict(node.get("Spec") or {})
        before = json.dumps(spec, sort_keys=True)
        change(spec)
        if json.dumps(spec, sort_keys=True) == before:
            return
        version = (node.get("Version") or {}).get("Index", 0)
        try:
            control.call("POST", f"/nodes/{quote(node_id)}/update?version={version}", spec)
            return
        except APIError as exc:
            if "update out of sequence" not in str(exc):
                raise
    raise MachineError(f"could not update swarm node {node_id}: it kept changing")


def _apply_labels(control: Engine, node_id: str, labels: dict[str, str]) -> None:
    if not labels or not node_id:
        return

    def add(spec: dict[str, Any]) -> None:
        spec["Labels"] = {**(spec.get("Labels") or {}), **labels}

    _update_node(control, node_id, add)


def _point_swarm_host_at_engine(machine: Machine, url: str) -> None:
    """In swarm mode the manager's API IS its engine: make ``env --swarm`` (and ls's
    active-swarm check, which swap in the SwarmOptions.Host port) use the engine port."""
    from pymachine.machine import dockerapi

    _, port = dockerapi.split_url(url)
    machine.host.swarm_options["Host"] = f"tcp://0.0.0.0:{port}"


# ---------------------------------------------------------------------------- removal
def other_managers(machine: Machine) -> list[Engine]:
    """Engines of the other stored managers of this machine's cluster."""
    from pymachine.machine.host import Machine as MachineCls

    cid = record_of(machine.host).get("ClusterID")
    out = []
    for host in clusters(machine.store).get(cid or "", []):
        if host.name != machine.name and record_of(host).get("Role") == "manager":
            try:
                out.append(engine_of(MachineCls(machine.store, host)))
            except MachineError:
                continue
    return out


def _reachable(engines: list[Engine]) -> Engine | None:
    for engine in engines:
        try:
            check_manager(engine, timeout=3.0)
            return engine
        except MachineError:
            continue
    return None


def before_remove(machine: Machine, log: Log, confirm: Callable[[str], bool], assume_yes: bool) -> bool:
    """Take a swarm node out of its cluster before its machine goes: drain, leave, forget.

    Returns False when the user declines to remove the last manager.  Swarm
    errors are warnings here: ``rm`` must still be able to remove a dead host.
    """
    rec = record_of(machine.host)
    if not rec.get("NodeID"):
        return True
    node_id = rec["NodeID"]
    control = _reachable(other_managers(machine))
    me: Engine | None
    try:
        me = engine_of(machine)
        # Generous: a live engine that answers slowly (a loaded CI host) must still
        # leave its swarm; a dead one fails fast (refused or unreachable).
        me.swarm_info(timeout=10)
    except MachineError as exc:
        me = None
        log(f"Warning: {exc}; the swarm forgets {machine.name} without draining it")
    if rec.get("Role") == "manager" and control is None:
        if me is None:
            return True
        try:
            nodes = me.call("GET", "/nodes", timeout=5)
            others = [n for n in nodes if n.get("ID") != node_id]
        except MachineError:
            others = []
        if others:
            log(f'WARNING: "{machine.name}" is the last swarm manager: its {len(others)} other node(s) '
                "will be left without a manager.")
            if not assume_yes and not confirm("Remove the last manager anyway? (y/n): "):
                return False
        _try(log, "leaving the swarm", lambda: me.call("POST", "/swarm/leave?force=true", timeout=30))
        return True
    if me is not None:
        if control is None:
            log(f'Warning: no reachable manager for "{machine.name}"; it leaves the swarm without draining')
        else:
            log(f"Draining {machine.name}...")
            _try(log, "draining", lambda: _drain(control, node_id))
            if rec.get("Role") == "manager":
                _try(log, "demoting", lambda: _demote(control, me, node_id))
        _try(log, "leaving the swarm", lambda: me.call("POST", "/swarm/leave", timeout=30))
    if control is not None:
        _try(log, "removing the node", lambda: _forget_node(control, node_id, 15.0 if me else 0.0))
    return True


def _try(log: Log, what: str, action: Callable[[], Any]) -> None:
    try:
        action()
    except MachineError as exc:
        log(f"Warning: {what} failed: {exc}")


def _demote(control: Engine, me: Engine, node_id: str, timeout: float = 30.0) -> None:
    """Make a manager a worker and wait (bounded) until the node itself knows it,
    so its leave does not cost the remaining managers their quorum."""
    _update_node(control, node_id, lambda spec: spec.__setitem__("Role", "worker"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # a demoted leader's engine may stall while leadership moves: keep asking
            if not me.swarm_info(timeout=3).get("ControlAvailable"):
                return
        except MachineError:
            pass
        time.sleep(0.3)
    raise MachineError(f"{me.label} is still a manager {timeout:g}s after its demotion")


def _drain(control: Engine, node_id: str, timeout: float = 30.0) -> None:
    _update_node(control, node_id, lambda spec: spec.__setitem__("Availability", "drain"))
    filters = quote(json.dumps({"node": [node_id], "desired-state": ["running"]}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = control.call("GET", f"/tasks?filters={filters}") or []
        if not [t for t in tasks if (t.get("Status") or {}).get("State") in ("running", "starting", "preparing")]:
            return
        time.sleep(0.3)


def _forget_node(control: Engine, node_id: str, timeout: float = 15.0) -> None:
    """Remove the departed node from the manager's list once it is down (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            control.call("DELETE", f"/nodes/{quote(node_id)}")
            return
        except APIError as exc:
            if exc.status == 404:
                return
            time.sleep(0.3)
    control.call("DELETE", f"/nodes/{quote(node_id)}?force=true")


# ---------------------------------------------------------------------------- listing
@dataclass
class ClusterView:
    """One cluster as ``pymachine swarm ls`` shows it."""

    cluster_id: str
    managers: list[str]
    machines: list[str]
    nodes: list[dict[str, Any]]
    reached: str = ""
    error: str = ""

    @property
    def ready(self) -> int:
        return sum(1 for n in self.nodes if (n.get("Status") or {}).get("State") == "ready")

    @property
    def health(self) -> str:
        if not self.reached:
            return "unreachable"
        reachable_mgrs = [n for n in self.nodes if (n.get("ManagerStatus") or {}).get("Reachability") == "reachable"]
        all_mgrs = [n for n in self.nodes if n.get("ManagerStatus")]
        if self.ready == len(self.nodes) and len(reachable_mgrs) == len(all_mgrs):
            return "healthy"
        return f"degraded ({len(self.nodes) - self.ready} not ready)"


def survey(store: Store, timeout: float = 3.0) -> list[ClusterView]:
    """Every stored cluster with its live node list from the first manager that answers."""
    from pymachine.machine.host import Machine

    views = []
    for cid, hosts in sorted(clusters(store).items(), key=lambda kv: kv[1][0].name):
        managers = [h.name for h in hosts if record_of(h).get("Role") == "manager"]
        view = ClusterView(cid, managers, [h.name for h in hosts], [])
        for name in managers:
            host = next(h for h in hosts if h.name == name)
            try:
                view.nodes = engine_of(Machine(store, host)).call("GET", "/nodes", timeout=timeout) or []
                view.reached = name
                break
            except MachineError as exc:
                view.error = str(exc)
        views.append(view)
    return views


def swarm_column(hosts: list[Host]) -> dict[str, tuple[str, str]]:
    """name -> (SWARM column text, cluster ID) for swarm-mode machines.

    A manager shows ``NAME (manager)``; a worker the manager it joined
    through, or another stored manager of its cluster if that one is gone.
    """
    managers: dict[str, list[str]] = {}
    for host in hosts:
        rec = record_of(host)
        if rec.get("Role") == "manager":
            managers.setdefault(rec.get("ClusterID", ""), []).append(host.name)
    out = {}
    for host in hosts:
        rec = record_of(host)
        if not rec.get("ClusterID"):
            continue
        cid = rec["ClusterID"]
        if rec.get("Role") == "manager":
            out[host.name] = (f"{host.name} (manager)", cid)
        else:
            known = managers.get(cid, [])
            via = rec.get("Manager", "")
            out[host.name] = (via if via in known else (min(known) if known else ""), cid)
    return out
