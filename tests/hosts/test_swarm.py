"""Swarm mode end to end: three namespaced Debian hosts on one private bridge.

``--swarm-master`` initialises the swarm, two ``--swarm`` machines join it
(one by the manager's NAME, one by its engine URL), all through the engines'
TLS APIs.  The real docker CLI then sees three Ready nodes through
``env --swarm``, a stack runs one task per node, and ``rm`` of a worker
drains it, makes it leave and reschedules its task.

The stack's overlay network (VXLAN between the hosts' network namespaces)
works here; the kernel has no IPVS, so the service uses DNS round robin
(``endpoint_mode: dnsrr``) instead of a virtual IP.  The busybox image has
no registry to come from: it is imported on every node.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.hosts.bridge import TestBridge, cleanup_stale_bridges

pytestmark = pytest.mark.hosts
DOCKER = "/usr/local/bin/docker"  # CLI 28: stack deploy with max_replicas_per_node

COMPOSE = """\
version: "3.8"
services:
  web:
    image: local/busybox:1
    command: ["sleep", "3600"]
    deploy:
      endpoint_mode: dnsrr
      replicas: 3
      placement:
        max_replicas_per_node: 1
"""


def docker_env(pm, name: str, *flags: str) -> dict[str, str]:
    env = dict(pm.env)
    for line in pm.ok("env", *flags, name).stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.strip('"')
    return env


def docker(env: dict[str, str], *args: str, input: bytes | None = None, timeout: float = 120) -> str:
    proc = subprocess.run([DOCKER, *args], input=input, capture_output=True, timeout=timeout, env=env, check=False)
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr.decode()}"
    return proc.stdout.decode()


def wait_for(what: str, probe, timeout: float = 60.0, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def swarm_seconds(output: str) -> float:
    match = re.search(r"^Swarm: .* in ([0-9.]+)s$", output, re.MULTILINE)
    assert match, output
    return float(match.group(1))


def one_line_failure(res) -> str:
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


def closed_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_three_node_swarm(pm, make_test_host, ssh_keypair, busybox_image, tmp_path):
    from bundle_cache import real_engine_bundle

    cleanup_stale_bridges()
    bundle = str(real_engine_bundle())
    hosts = [make_test_host(f"sw{i}") for i in (1, 2, 3)]
    with TestBridge(hosts) as lan:
        ips = [lan.ip_of(h) for h in hosts]

        def create(name: str, host, *swarm_flags: str, **kw):
            return pm("create", "-d", "generic", "--generic-ip-address", host.ip,
                      "--generic-ssh-key", str(ssh_keypair.private_key), "--engine-bundle", bundle,
                      *swarm_flags, name, timeout=600, **kw)

        res = create("m1", hosts[0], "--swarm-master", "--swarm-addr", ips[0])
        assert res.returncode == 0, res.stdout + res.stderr
        formed = swarm_seconds(res.stdout)
        m1_url = pm.ok("url", "m1").stdout.strip()

        # Bad input fails before anything is created: one line, non-zero, no machine dir.
        other_store = {"MACHINE_STORAGE_PATH": str(tmp_path / "empty-store")}
        for flags, message, env in (
            (("--swarm", "--swarm-discovery", "token://0123abcd"), "token:// discovery is gone", None),
            (("--swarm", "--swarm-discovery", "ghost"), 'swarm manager "ghost" not found', None),
            (("--swarm", "--swarm-discovery", f"tcp://127.0.0.1:{closed_loopback_port()}"), "connection refused", None),
            (("--swarm",), "no swarm manager to join", other_store),
            (("--swarm-master", "--swarm-opt", "frobnicate=1"), "unknown --swarm-opt 'frobnicate'", None),
        ):
            bad = create("bad1", hosts[1], *flags, env=env)
            assert message in one_line_failure(bad), bad.stderr
            assert not (pm.store / "machines" / "bad1").exists()

        res = create("w1", hosts[1], "--swarm", "--swarm-discovery", "m1", "--swarm-addr", ips[1],
                     "--engine-label", "zone=a")
        assert res.returncode == 0, res.stdout + res.stderr
        formed += swarm_seconds(res.stdout)
        res = create("w2", hosts[2], "--swarm", "--swarm-discovery", m1_url, "--swarm-addr", ips[2])
        assert res.returncode == 0, res.stdout + res.stderr
        formed += swarm_seconds(res.stdout)
        print(f"\n[swarm] time to form the 3-node cluster beyond the creates: {formed:.2f}s")
        assert formed < 30

        # A worker cannot be a discovery, nor the target of env --swarm.
        bad = create("bad2", hosts[1], "--swarm", "--swarm-discovery", "w1")
        assert '"w1" is not a swarm manager' in one_line_failure(bad)
        assert not (pm.store / "machines" / "bad2").exists()
        bad = pm("env", "--swarm", "w1")
        assert "is not a swarm master" in one_line_failure(bad)

        swarm_env = docker_env(pm, "m1", "--swarm")
        assert swarm_env["DOCKER_HOST"] == m1_url  # swarm mode: the manager's own engine
        nodes = docker(swarm_env, "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}").split("\n")
        assert sorted(n for n in nodes if n) == ["m1 Ready Leader", "w1 Ready ", "w2 Ready "]
        labels = json.loads(docker(swarm_env, "node", "inspect", "w1", "--format", "{{json .Spec.Labels}}"))
        assert labels == {"zone": "a"}

        rows = pm.ok("ls", "--format", "{{.Name}}|{{.Swarm}}").stdout.splitlines()
        assert rows == ["m1|m1 (manager)", "w1|m1", "w2|m1"]
        assert pm.ok("ls", "-q", "--filter", "swarm=m1").stdout.split() == ["m1", "w1", "w2"]
        cid = pm.ok("inspect", "-f", "{{.Pymachine.Swarm.ClusterID}}", "m1").stdout.strip()
        assert pm.ok(
            "inspect", "-f", "{{.Pymachine.Swarm.Role}} {{.Pymachine.Swarm.ClusterID}}", "w2"
        ).stdout.split() == ["worker", cid]
        for name in ("m1", "w1", "w2"):
            assert "SWMTKN" not in (pm.store / "machines" / name / "config.json").read_text()
        listing = pm.ok("swarm", "ls").stdout.splitlines()
        assert listing[1].split() == [cid[:12], "m1", "3", "3", "3", "healthy"]
        node_rows = [r.split() for r in pm.ok("swarm", "ls", "--nodes").stdout.splitlines()[1:]]
        assert [r[1:6] for r in node_rows] == [["m1", "m1", "manager", "ready", "active"],
                                               ["w1", "w1", "worker", "ready", "active"],
                                               ["w2", "w2", "worker", "ready", "active"]]
        assert node_rows[0][6:] == ["Leader", ips[0]] and node_rows[1][6:] == ["-", ips[1]]
        clusters = json.loads(pm.ok("swarm", "ls", "--format", "json").stdout)
        assert [(c["ClusterID"], c["Managers"], c["Nodes"], c["Ready"], c["Health"]) for c in clusters] == [
            (cid, ["m1"], 3, 3, "healthy")]
        nodes_json = json.loads(pm.ok("swarm", "ls", "--nodes", "--format", "json").stdout)
        assert [(n["Machine"], n["Role"], n["ManagerStatus"]) for n in nodes_json] == [
            ("m1", "manager", "Leader"), ("w1", "worker", ""), ("w2", "worker", "")]
        table = pm.ok("swarm", "ls", "--nodes", "--format", "table {{.Node}}\t{{.Role}}").stdout.splitlines()
        assert [r.split() for r in table] == [["NODE", "ROLE"], ["m1", "manager"], ["w1", "worker"], ["w2", "worker"]]

        # Idempotent: provisioning a member again keeps it where it is.
        again = pm.ok("provision", "w1", timeout=300)
        assert "w1 is already a swarm worker" in again.stdout

        # A stack with one task per node, from an image imported on every node.
        for name in ("m1", "w1", "w2"):
            docker(docker_env(pm, name), "import", "-", "local/busybox:1", input=busybox_image.read_bytes())
        compose = tmp_path / "stack.yml"
        compose.write_text(COMPOSE)
        docker(swarm_env, "stack", "deploy", "--resolve-image", "never", "-c", str(compose), "st")

        def running() -> list[str]:
            out = docker(swarm_env, "service", "ps", "st_web", "--filter", "desired-state=running",
                         "--format", "{{.Node}} {{.CurrentState}}")
            return sorted(line.split()[0] for line in out.splitlines() if " Running " in f" {line} ")

        assert wait_for("3 running tasks", lambda: running() if len(running()) == 3 else None, 90) == ["m1", "w1", "w2"]
        # The overlay carries traffic between nodes: m1's task reaches every task by its DNS name.
        task = hosts[0].run("docker ps -q --filter name=st_web").stdout.split()[0]
        found = hosts[0].run(f"docker exec {task} /bin/busybox nslookup tasks.web 127.0.0.11").stdout
        peers = re.findall(r"^Address:\s*(\d+\.\d+\.\d+\.\d+)$", found, re.MULTILINE)
        assert len(peers) == 3, found
        for peer in peers:
            ping = hosts[0].run(f"docker exec {task} /bin/busybox ping -c 1 -W 3 {peer}")
            assert ping.returncode == 0, ping.stdout + ping.stderr

        # rm of a worker: drained, left, forgotten; its task is rescheduled.
        res = pm.ok("rm", "-y", "w1", timeout=180)
        assert "Draining w1..." in res.stdout
        assert hosts[1].run("docker info --format '{{.Swarm.LocalNodeState}}'").stdout.strip() == "inactive"
        nodes = docker(swarm_env, "node", "ls", "--format", "{{.Hostname}} {{.Status}}").split("\n")
        assert sorted(n for n in nodes if n) == ["m1 Ready", "w2 Ready"]
        wanted = docker(swarm_env, "service", "ps", "st_web", "--filter", "desired-state=running",
                        "--format", "{{.Node}}|{{.CurrentState}}").splitlines()
        assert len(wanted) == 3, wanted  # the replacement task is wanted again...
        assert sorted(r.split("|")[0] for r in wanted if r.split("|")[1].startswith("Running")) == ["m1", "w2"]
        assert any(r.split("|")[1].startswith("Pending") for r in wanted), wanted  # ...but 1 per node
        assert pm.ok("ls", "-q", "--filter", "swarm=m1").stdout.split() == ["m1", "w2"]

        # A host already in another swarm is refused and left alone.
        init = hosts[1].run(f"docker swarm init --advertise-addr {ips[1]}")
        assert init.returncode == 0, init.stderr
        other_cluster = hosts[1].run("docker info --format '{{.Swarm.Cluster.ID}}'").stdout.strip()
        bad = create("w3", hosts[1], "--swarm", "--swarm-discovery", "m1", "--swarm-addr", ips[1])
        assert 'is already in another swarm' in one_line_failure(bad)
        assert hosts[1].run("docker info --format '{{.Swarm.Cluster.ID}}'").stdout.strip() == other_cluster
        nodes = docker(swarm_env, "node", "ls", "--format", "{{.Hostname}}").split()
        assert sorted(nodes) == ["m1", "w2"]
        pm.ok("rm", "-f", "-y", "w3")

        # A second --swarm-master joins as a manager (the host first leaves its own swarm).
        assert hosts[1].run("docker swarm leave --force").returncode == 0
        res = create("m2", hosts[1], "--swarm-master", "--swarm-discovery", "m1", "--swarm-addr", ips[1])
        assert res.returncode == 0, res.stdout + res.stderr
        assert "m2 joined as manager" in res.stdout
        nodes = docker(docker_env(pm, "m2", "--swarm"), "node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}")
        assert sorted(line.strip() for line in nodes.splitlines()) == ["m1 Leader", "m2 Reachable", "w2"]
        assert pm.ok("ls", "--format", "{{.Name}}|{{.Swarm}}").stdout.splitlines() == [
            "m1|m1 (manager)", "m2|m2 (manager)", "w2|m1"]

        # rm of a manager that is not the last: demoted, drained, gone; m2 leads.
        res = pm.ok("rm", "-y", "m1", timeout=180)
        assert "Warning:" not in res.stdout and "last swarm manager" not in res.stdout
        m2_env = docker_env(pm, "m2", "--swarm")

        def members() -> list[str]:
            out = subprocess.run([DOCKER, "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"],
                                 capture_output=True, text=True, env=m2_env, timeout=30, check=False).stdout
            return sorted(line.strip() for line in out.splitlines())

        assert wait_for("m2 leading w2", lambda: members() == ["m2 Ready Leader", "w2 Ready"], 60)
        assert pm.ok("ls", "--format", "{{.Name}}|{{.Swarm}}").stdout.splitlines() == ["m2|m2 (manager)", "w2|m2"]

        # The last manager: rm warns and asks; "n" keeps it.
        res = pm("rm", "m2", input="y\nn\n", timeout=120)
        assert res.returncode == 1
        assert '"m2" is the last swarm manager: its 1 other node(s) will be left without a manager.' in res.stdout
        assert (pm.store / "machines" / "m2").exists()
        assert len(docker(m2_env, "node", "ls", "-q").split()) == 2

        # A dead worker: rm still works, and the manager forgets the node.
        hosts[2].stop()
        res = pm.ok("rm", "-y", "w2", timeout=120)
        assert "the swarm forgets w2 without draining it" in res.stdout
        assert docker(m2_env, "node", "ls", "--format", "{{.Hostname}}").split() == ["m2"]
        res = pm.ok("rm", "-y", "m2", timeout=120)
        assert "last swarm manager" not in res.stdout  # nobody is left behind
        assert "Warning" not in res.stdout, res.stdout  # its live engine was reached and left
        assert hosts[1].run("docker info --format '{{.Swarm.LocalNodeState}}'").stdout.strip() == "inactive"
        assert not list(Path(pm.store / "machines").iterdir())
    assert lan.netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                                check=False).stdout
