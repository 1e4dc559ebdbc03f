"""``pymachine scp m1:PATH m2:PATH`` between two machines on one address (127.0.0.1).

Two real sshd instances on loopback, on different ports, each with its own host key and
its own client key: the machines of two local VMs (QEMU forwards both to 127.0.0.1).
The copy goes through this host (``scp -3``), each side reached by its own port, key
and pinned ``known_hosts``; a changed host key on one side is refused and nothing lands.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures_sshd import SSHD, unavailable_reason

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(180),
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]


def _generic_machine(pm, name: str, server: SSHD) -> Path:
    """A generic machine pointing at ``server`` (written by hand: create would provision Docker)."""
    pm.ok("create", "-d", "none", "--url", "tcp://127.0.0.1:2376", name)
    mdir = pm.store / "machines" / name
    cfg = json.loads((mdir / "config.json").read_text())
    cfg["DriverName"] = "generic"
    cfg["Driver"] = {
        "IPAddress": server.host, "MachineName": name, "SSHUser": "root", "SSHPort": server.port,
        "SSHKeyPath": str(server.client_key), "StorePath": str(pm.store), "EnginePort": 2376, "SSHKey": "",
    }
    (mdir / "config.json").write_text(json.dumps(cfg))
    return mdir


@pytest.fixture
def two_machines(pm, tmp_path):
    with SSHD(tmp_path / "sshd-1") as one, SSHD(tmp_path / "sshd-2") as two:
        assert one.port != two.port and one.host == two.host
        _generic_machine(pm, "m1", one)
        _generic_machine(pm, "m2", two)
        yield one, two


def test_scp_copies_between_two_machines_on_one_address(pm, tmp_path, two_machines):
    one, two = two_machines
    # each key opens only its own server: a copy that used one key for both sides fails
    assert one.authorized_keys.read_text() != two.authorized_keys.read_text()
    src = tmp_path / "on-m1" / "payload.bin"
    src.parent.mkdir()
    payload = bytes(range(256)) * 4096 + b"m1 -> m2\n"
    src.write_bytes(payload)
    dest_dir = tmp_path / "on m2"  # a space in the remote path survives the scp:// URI
    dest_dir.mkdir()

    res = pm("scp", f"m1:{src}", f"m2:{dest_dir}/copy.bin", timeout=90)
    assert res.returncode == 0, res.stderr
    assert (dest_dir / "copy.bin").read_bytes() == payload
    # both host keys were pinned, each in its own machine's file, for its own port
    for name, server in (("m1", one), ("m2", two)):
        pins = (pm.store / "machines" / name / "known_hosts").read_text()
        assert f"[127.0.0.1]:{server.port} " in pins
        assert server.host_public_key.split()[1] in pins
        other = two if server is one else one
        assert f":{other.port} " not in pins

    # names an scp:// URI would decode ('%XX', '+' as a space) arrive as they are named
    for name in ("50%off.txt", "a+b.txt", "a%20b.txt"):
        (src.parent / name).write_text(name)
        res = pm("scp", f"m1:{src.parent / name}", f"m2:{dest_dir}/{name}", timeout=90)
        assert res.returncode == 0, res.stderr
        assert (dest_dir / name).read_text() == name
    assert sorted(p.name for p in dest_dir.iterdir()) == ["50%off.txt", "a%20b.txt", "a+b.txt", "copy.bin"]

    # and back the other way, with a user given on the command line
    back = tmp_path / "back.bin"
    res = pm("scp", f"root@m2:{dest_dir}/copy.bin", f"m1:{back}", timeout=90)
    assert res.returncode == 0, res.stderr
    assert back.read_bytes() == payload


def test_scp_refuses_a_changed_host_key_on_one_side(pm, tmp_path, two_machines):
    _one, two = two_machines
    src = tmp_path / "src.txt"
    src.write_text("first\n")
    first = pm("scp", f"m1:{src}", f"m2:{tmp_path}/first.txt", timeout=90)  # pins both host keys
    assert first.returncode == 0, first.stderr
    pins = (pm.store / "machines" / "m2" / "known_hosts").read_text()

    two.restart(new_host_key=True)  # m2 now answers with a key nobody pinned
    res = pm("scp", f"m1:{src}", f"m2:{tmp_path}/second.txt", timeout=90)
    assert res.returncode != 0
    assert "host key" in res.stderr.lower() or "host identification" in res.stderr.lower(), res.stderr
    assert not (tmp_path / "second.txt").exists()
    assert (pm.store / "machines" / "m2" / "known_hosts").read_text() == pins  # never re-pinned

    # the unchanged side still works on its own
    ok = pm("scp", f"m1:{src}", str(tmp_path / "local.txt"), timeout=90)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "local.txt").read_text() == "first\n"
