"""Swarm mode logic that needs no engine: flag validation, request bodies, the SWARM column."""

from __future__ import annotations

import pytest
from pymachine.machine import swarm
from pymachine.machine.errors import MachineError
from pymachine.machine.hostoptions import swarm_options
from pymachine.machine.listing import ListItem, fill_swarm_mode_column, matches_dynamic
from pymachine.machine.store import Host, Store


def test_init_body_maps_swarm_opts_to_the_api():
    body = swarm.init_body(["autolock=true", "task-history-limit=3", "cert-expiry=2160h",
                            "default-addr-pool=10.20.0.0/16,10.21.0.0/16", "dispatcher-heartbeat=5s"], "10.240.1.2")
    assert body["AdvertiseAddr"] == "10.240.1.2"
    assert body["ListenAddr"] == "0.0.0.0:2377"
    assert body["Spec"] == {
        "EncryptionConfig": {"AutoLockManagers": True},
        "Orchestration": {"TaskHistoryRetentionLimit": 3},
        "CAConfig": {"NodeCertExpiry": 2160 * 3600 * 10**9},
        "Dispatcher": {"HeartbeatPeriod": 5 * 10**9},
    }
    assert body["DefaultAddrPool"] == ["10.20.0.0/16", "10.21.0.0/16"]


def test_join_body_carries_token_remotes_and_join_opts():
    body = swarm.join_body(["availability=drain", "--data-path-addr=10.240.1.3"], "10.240.1.3",
                           ["10.240.1.2:2377"], "SWMTKN-1-x")
    assert body == {"ListenAddr": "0.0.0.0:2377", "AdvertiseAddr": "10.240.1.3", "RemoteAddrs": ["10.240.1.2:2377"],
                    "JoinToken": "SWMTKN-1-x", "Availability": "drain", "DataPathAddr": "10.240.1.3"}


@pytest.mark.parametrize(("opts", "message"), [
    (["strategy=spread"], "unknown --swarm-opt 'strategy'"),
    (["task-history-limit=many"], "takes a number"),
    (["cert-expiry=90days"], "invalid duration"),
    (["autolock=maybe"], "takes true or false"),
    (["listen-addr"], "needs a value"),
])
def test_bad_swarm_opts_are_one_clear_error(opts, message):
    with pytest.raises(MachineError, match=message):
        swarm.init_body(opts)


def test_join_rejects_init_only_options():
    with pytest.raises(MachineError, match="unknown --swarm-join-opt 'autolock'"):
        swarm.join_body(["autolock=true"])


def test_node_labels_from_engine_labels():
    assert swarm.node_labels(["zone=a", "ssd", "k=v=w", "=x"]) == {"zone": "a", "ssd": "", "k": "v=w"}


def _host(name: str, role: str = "", cluster: str = "", via: str = "", master: bool = False) -> Host:
    extra = {"Pymachine": {"Swarm": {"ClusterID": cluster, "NodeID": f"n-{name}", "Role": role,
                                     "Manager": via}}} if role else {}
    return Host(name, "generic", {}, {"SwarmOptions": swarm_options(is_swarm=bool(role), master=master)},
                extra=extra)


def _store(tmp_path, *hosts: Host) -> Store:
    store = Store(tmp_path / "store")
    store.ensure()
    for h in hosts:
        store.save(h)
    return store


def test_check_create_errors_before_anything_exists(tmp_path):
    store = _store(tmp_path, _host("w1", "worker", "c1", "m1"), _host("plain"))
    kw = {"swarm_opts": [], "join_opts": []}
    with pytest.raises(MachineError, match="token:// discovery is gone"):
        swarm.check_create(store, agent=True, master=False, discovery="token://abc", **kw)
    with pytest.raises(MachineError, match="token:// discovery is gone"):  # even without --swarm
        swarm.check_create(store, agent=False, master=False, discovery="token://abc", **kw)
    with pytest.raises(MachineError, match='swarm manager "ghost" not found'):
        swarm.check_create(store, agent=True, master=False, discovery="ghost", **kw)
    with pytest.raises(MachineError, match='"w1" is not a swarm manager'):
        swarm.check_create(store, agent=True, master=False, discovery="w1", **kw)
    with pytest.raises(MachineError, match='"plain" is not a swarm manager'):
        swarm.check_create(store, agent=True, master=False, discovery="plain", **kw)
    with pytest.raises(MachineError, match="no swarm manager to join"):
        swarm.check_create(store, agent=True, master=False, discovery="", **kw)
    with pytest.raises(MachineError, match="no consul:// discovery service"):
        swarm.check_create(store, agent=True, master=False, discovery="consul://1.2.3.4:8500", **kw)
    with pytest.raises(MachineError, match="wrong format: nodiscovery"):  # docker-machine's check without --swarm
        swarm.check_create(store, agent=False, master=False, discovery="nodiscovery", **kw)
    # A first manager needs nothing else; its options are still validated.
    assert swarm.check_create(store, agent=False, master=True, discovery="", **kw) == ""
    with pytest.raises(MachineError, match="unknown --swarm-opt"):
        swarm.check_create(store, agent=False, master=True, discovery="", swarm_opts=["x=1"], join_opts=[])


def test_worker_without_discovery_needs_exactly_one_cluster(tmp_path):
    store = _store(tmp_path, _host("m1", "manager", "c1", "m1", True), _host("m2", "manager", "c2", "m2", True))
    with pytest.raises(MachineError, match="several swarms"):
        swarm.check_create(store, agent=True, master=False, discovery="", swarm_opts=[], join_opts=[])


def test_unreachable_manager_fails_the_check(tmp_path):
    import socket

    from pymachine.machine import certs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    store = _store(tmp_path)
    d = store.certs_dir
    certs.bootstrap_certificates(certs.CertPaths(d / "ca.pem", d / "ca-key.pem", d / "cert.pem", d / "key.pem"),
                                 log=lambda _m: None)
    with pytest.raises(
        MachineError, match=f"cannot reach the Docker engine of tcp://127.0.0.1:{port}.*connection refused"
    ):
        swarm.check_create(store, agent=True, master=False, discovery=f"tcp://127.0.0.1:{port}",
                           swarm_opts=[], join_opts=[])


def test_swarm_column_and_filter():
    hosts = [
        _host("m1", "manager", "c1", "m1", True), _host("m2", "manager", "c1", "m1", True),
        _host("w1", "worker", "c1", "m2"), _host("w2", "worker", "c1", "gone"),
        _host("x1", "manager", "c2", "x1", True), _host("plain"),
    ]
    items = [ListItem(Name=h.name) for h in hosts]
    fill_swarm_mode_column(items, hosts)
    assert {it.Name: it.Swarm for it in items} == {
        "m1": "m1 (manager)", "m2": "m2 (manager)", "w1": "m2", "w2": "m1", "x1": "x1 (manager)", "plain": "",
    }
    kept = [it.Name for it in items if matches_dynamic(it, {"swarm": ["m2"]})]
    assert kept == ["m1", "m2", "w1", "w2"]  # every node of the cluster m2 manages
    assert [it.Name for it in items if matches_dynamic(it, {"swarm": ["x1"]})] == ["x1"]


def test_clusters_group_stored_members(tmp_path):
    store = _store(tmp_path, _host("w1", "worker", "c1", "m1"), _host("m1", "manager", "c1", "m1", True),
                   _host("plain"))
    found = swarm.clusters(store)
    assert list(found) == ["c1"]
    assert [h.name for h in found["c1"]] == ["m1", "w1"]  # managers first


def test_api_error_messages_come_from_the_engine(tmp_path):
    """A real TLS server speaking the engine's error format: the message reaches the user."""
    import http.server
    import json
    import ssl
    import threading

    from pymachine.machine import certs

    paths = certs.CertPaths(tmp_path / "ca.pem", tmp_path / "ca-key.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    certs.bootstrap_certificates(paths, log=lambda _m: None)
    certs.generate_server_cert(paths, tmp_path / "server.pem", tmp_path / "server-key.pem", "t.m", ["127.0.0.1"])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            body = json.dumps({"message": "This node is already part of a swarm."}).encode()
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(str(paths.ca_cert))
    ctx.load_cert_chain(str(tmp_path / "server.pem"), str(tmp_path / "server-key.pem"))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        engine = swarm.Engine(f"tcp://127.0.0.1:{server.server_address[1]}", paths.ca_cert, paths.client_cert,
                              paths.client_key, "m1")
        with pytest.raises(swarm.APIError) as info:
            engine.call("POST", "/swarm/init", {"ListenAddr": "0.0.0.0:2377"}, timeout=5)
        assert info.value.status == 503
        assert str(info.value) == '"m1": This node is already part of a swarm.'
    finally:
        server.shutdown()
        server.server_close()
