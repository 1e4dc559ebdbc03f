"""No option injection through SSH values, and the external tools say why they refuse.

A user, host or key path starting with ``-`` would become an ssh/scp option
(``-oProxyCommand=...`` runs a local command).  These tests drive the CLI as a user
would and run the real OpenSSH tools; a marker file that a ProxyCommand would create
must never appear.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from pymachine.machine.errors import MachineError
from pymachine.machine.ssh import SSHClient
from pymachine.machine.sshcommands import SSHTarget, check_ssh_value, scp_argv, ssh_argv

from tests.fixtures_sshd import SSHD, free_port, generate_key, unavailable_reason

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

needs_sshd = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


def _hostile(marker: Path) -> str:
    return f"-oProxyCommand=touch {marker}"


def _planted(marker: Path) -> list[Path]:
    """Files a ProxyCommand would have made (ssh may glue "@host" onto the path)."""
    return list(marker.parent.glob(marker.name + "*"))


def _one_line_error(res) -> None:
    assert res.returncode != 0, res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "flag",
    ["--generic-ssh-user", "--generic-ip-address", "--generic-ssh-key"],
)
def test_create_refuses_option_like_ssh_values(pm, tmp_path, flag):
    marker = tmp_path / "pwned"
    args = {"--generic-ip-address": "127.0.0.1", "--generic-ssh-user": "root"}
    args[flag] = _hostile(marker)
    argv = ["create", "-d", "generic"]
    for k, v in args.items():
        argv += [f"{k}={v}"]
    res = pm(*argv, "victim")
    _one_line_error(res)
    assert "may not start with '-'" in res.stderr
    assert not (pm.store / "machines" / "victim").exists()
    assert not _planted(marker)


def test_create_refuses_a_hostile_user_for_any_provisionable_driver(pm, tmp_path):
    marker = tmp_path / "pwned"
    res = pm("create", "-d", "digitalocean", "--digitalocean-access-token", "x",
             f"--digitalocean-ssh-user={_hostile(marker)}", "victim")
    _one_line_error(res)
    assert not (pm.store / "machines" / "victim").exists()


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


def test_pymachine_ssh_with_a_tampered_config_runs_no_local_command(pm, tmp_path):
    """A config edited (or written by an old version) to carry a hostile user is refused."""
    marker = tmp_path / "pwned"
    listener = _listener()  # the generic driver's state is a TCP dial of the SSH port
    try:
        port = listener.getsockname()[1]
        # Write the machine by hand: create would refuse the user (and provision over SSH).
        mdir = pm.store / "machines" / "victim"
        pm.ok("create", "-d", "none", "--url", "tcp://127.0.0.1:2376", "victim")
        cfg = json.loads((mdir / "config.json").read_text())
        cfg["DriverName"] = "generic"
        cfg["Driver"] = {
            "IPAddress": "127.0.0.1", "MachineName": "victim", "SSHUser": _hostile(marker),
            "SSHPort": port, "SSHKeyPath": "", "StorePath": str(pm.store), "EnginePort": 2376,
            "SSHKey": "",
        }
        (mdir / "config.json").write_text(json.dumps(cfg))
        for argv in (["ssh", "victim", "true"], ["scp", "victim:/etc/hostname", str(tmp_path / "x")]):
            res = pm(*argv, timeout=60)
            _one_line_error(res)
            assert "may not start with '-'" in res.stderr, res.stderr
        assert not _planted(marker)
    finally:
        listener.close()


def test_ssh_argv_keeps_a_dash_user_out_of_option_position(tmp_path):
    """Even past validation, ``-l`` and ``--`` keep the user and host from being options."""
    marker = tmp_path / "pwned"
    target = SSHTarget("127.0.0.1", free_port(), "root", None, tmp_path / "kh")
    object.__setattr__(target, "user", _hostile(marker))  # bypass __post_init__ on purpose
    res = subprocess.run(ssh_argv(target, ["true"]), capture_output=True, text=True, timeout=30,
                         stdin=subprocess.DEVNULL, check=False)
    assert res.returncode == 255
    assert not _planted(marker)


def test_scp_operands_come_after_double_dash(tmp_path):
    target = SSHTarget("10.0.0.5", 22, "docker", None, tmp_path / "kh")
    argv = scp_argv(["-rf"], "m:/x", resolve=lambda name: target)
    assert argv[argv.index("--") + 1:] == ["-rf", "docker@10.0.0.5:/x"]
    marker = tmp_path / "pwned"
    with pytest.raises(MachineError, match="may not start with '-'"):
        scp_argv([f"{_hostile(marker)}@m:/x"], "y", resolve=lambda name: target)


@pytest.mark.parametrize("value", ["-oProxyCommand=x", "a b", "a\nb", 'a"b', "a@b", ""])
def test_check_ssh_value_refuses(value):
    with pytest.raises(MachineError):
        check_ssh_value("SSH user", value)
    with pytest.raises(MachineError):
        SSHTarget("h", 22, value, None, Path("/kh"))


def test_key_paths_may_hold_spaces_but_not_a_leading_dash():
    check_ssh_value("SSH key path", "/home/John Smith/.ssh/id_rsa", path=True)
    with pytest.raises(MachineError):
        replace(SSHTarget("h", 22, "u", None, Path("/kh")), key_path=Path("-oProxyCommand=x"))


# ------------------------------------------------------------- host key changed
@needs_sshd
def test_external_ssh_and_scp_say_why_a_changed_host_key_is_refused(tmp_path):
    with SSHD(tmp_path / "sshd") as sshd:
        target = sshd.target(known_hosts=tmp_path / "kh")
        SSHClient.connect(target).close()  # pin the real key
        impostor = generate_key(tmp_path / "impostor_host_key")
        target.known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {impostor}\n")
        for argv in (ssh_argv(target, ["echo", "hi"]),
                     scp_argv([str(tmp_path / "kh")], "m:/tmp/x", resolve=lambda name: target)):
            res = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                                 stdin=subprocess.DEVNULL, check=False)
            assert res.returncode != 0
            assert "hi" not in res.stdout
            assert "Host key verification failed" in res.stderr, res.stderr


@needs_sshd
def test_ssh_options_after_the_host_still_reach_ssh(tmp_path):
    """``pymachine ssh NAME -L ... -N`` (docker-machine's usage): ssh parses options
    after the host, so the argv must not end them with ``--`` before it."""
    with SSHD(tmp_path / "sshd") as sshd:
        target = sshd.target(known_hosts=tmp_path / "kh")
        SSHClient.connect(target).close()
        res = subprocess.run(ssh_argv(target, ["-T", "-o", "BatchMode=yes", "echo", "hi"]),
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                             check=False)
        assert (res.returncode, res.stdout) == (0, "hi\n"), res.stderr
