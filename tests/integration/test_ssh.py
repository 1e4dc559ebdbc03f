"""SSHClient and the external-tool argv against a real OpenSSH sshd on loopback."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:  # so `tests.fixtures_sshd` imports under plain `pytest` too
    sys.path.insert(0, _REPO)

from pymachine.machine.errors import CommandError, MachineError
from pymachine.machine.ssh import HostKeyChanged, SSHClient, SSHTimeout
from pymachine.machine.sshcommands import SSHTarget, scp_argv, ssh_argv, wrap_command

from tests.fixtures_sshd import SSHD, free_port, generate_key, unavailable_reason

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with SSHD(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def own_sshd(tmp_path):
    """A server a test may restart or re-key without disturbing the others."""
    server = SSHD(tmp_path / "own-sshd")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(sshd, tmp_path):
    with SSHClient.connect(sshd.target(known_hosts=tmp_path / "known_hosts")) as c:
        yield c


# ------------------------------------------------------------------ run/put/get
def test_run_returns_stdout_stderr_and_exit_code(client):
    result = client.run("echo out; echo err >&2; exit 3", check=False)
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.ok
    with pytest.raises(CommandError) as info:
        client.run("echo broken >&2; exit 7")
    assert info.value.exit_status == 7
    assert "exit 7" in str(info.value) and "broken" in str(info.value)


def test_run_exports_env_and_feeds_stdin(client):
    env = {"PM_PROXY": "http://u:p@proxy:3128", "PM_TRICKY": "a b'c;$HOME"}
    assert client.run('echo "$PM_PROXY|$PM_TRICKY"', env=env).stdout == (
        "http://u:p@proxy:3128|a b'c;$HOME\n"
    )
    payload = bytes(range(256)) * 2000  # 512 KB, more than one SSH window's worth of chunks
    assert client.run("sha256sum", stdin=payload).stdout.split()[0] == (
        __import__("hashlib").sha256(payload).hexdigest()
    )
    assert client.run("cat").stdout == ""  # stdin is closed when none is given


def test_sudo_wrapping_runs_through_a_real_shell(client, tmp_path):
    """No sudo (and no second user) here: a shell-function shim stands in for sudo."""
    shim = 'sudo() { [ "$1" = -E ] && shift; "$@"; }; '
    text = wrap_command(
        "printf '%s|' \"$PM_V\" 'it''s'; id -u", user="docker", sudo=True, env={"PM_V": "x y"}
    )
    assert "sudo -E sh -c" in text
    assert client.run(shim + text).stdout == "x y|its|0\n"


def test_put_and_get_round_trip_atomically(client, tmp_path):
    dest = tmp_path / "remote" / "deep" / "server-key.pem"
    data = b"-----BEGIN KEY-----\n" + bytes(range(256)) * 100
    client.put(str(dest), data, mode=0o600)
    assert dest.read_bytes() == data
    assert dest.stat().st_mode & 0o777 == 0o600
    assert client.get(str(dest)) == data
    client.put(str(dest), b"v2\n", mode=0o644)
    assert client.get(str(dest)) == b"v2\n"
    assert dest.stat().st_mode & 0o777 == 0o644
    # no staging files left next to the target or in /tmp
    assert sorted(p.name for p in dest.parent.iterdir()) == ["server-key.pem"]
    assert client.run("ls -d /tmp/.pymachine-put-* 2>/dev/null || true").stdout == ""
    with pytest.raises(MachineError, match="No such file"):
        client.get(str(tmp_path / "missing"))


def test_command_timeout_closes_channel_and_names_command(client):
    started = time.monotonic()
    with pytest.raises(SSHTimeout, match=r"timed out after 0\.5s: sleep 30"):
        client.run("sleep 30", timeout=0.5)
    assert time.monotonic() - started < 5
    assert client.run("echo still-usable").stdout == "still-usable\n"


def test_debug_log_names_commands_but_not_secrets(client, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="pymachine.ssh")
    client.run("true", env={"PM_SECRET": "hunter2"}, stdin=b"stdin-secret")
    client.put(str(tmp_path / "f"), b"file-secret")
    lines = [r.getMessage() for r in caplog.records if r.name == "pymachine.ssh"]
    assert any(
        line.startswith(f"ssh root@{client.target.address} [") and "exit=0: " in line
        and line.endswith("true") for line in lines
    ), lines  # fmt: skip
    assert any(f"put {tmp_path / 'f'} (11 bytes" in line for line in lines)
    text = "\n".join(lines)
    for secret in ("hunter2", "stdin-secret", "file-secret", "PRIVATE KEY"):
        assert secret not in text


# ---------------------------------------------------------------- the connection
def test_socket_has_tcp_nodelay(client):
    sock = client.transport.sock
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_twenty_commands_share_one_connection(client):
    outputs = [client.run(f"echo {i}").stdout for i in range(20)]
    assert outputs == [f"{i}\n" for i in range(20)]
    assert client.stats.connections == 1
    assert client.stats.commands == 20


def test_host_key_pinned_on_first_use_then_verified(sshd, tmp_path):
    known_hosts = tmp_path / "m" / "known_hosts"
    target = sshd.target(known_hosts=known_hosts)
    with SSHClient.connect(target) as c:
        c.run("true")
    assert known_hosts.stat().st_mode & 0o777 == 0o600
    pinned = known_hosts.read_text()
    kind, b64 = sshd.host_public_key.split()[:2]
    assert pinned == f"[127.0.0.1]:{sshd.port} {kind} {b64}\n"
    with SSHClient.connect(target) as c:
        assert c.run("echo again").stdout == "again\n"
    assert known_hosts.read_text() == pinned  # verified, not re-added


def test_changed_host_key_is_refused(own_sshd, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    target = own_sshd.target(known_hosts=known_hosts)
    SSHClient.connect(target).close()
    own_sshd.restart(new_host_key=True)
    with pytest.raises(HostKeyChanged) as info:
        SSHClient.connect(target)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"Host key for 127.0.0.1:{own_sshd.port} has changed (expected SHA256:"
    )
    assert ", got SHA256:" in message and message.endswith(f"remove {known_hosts}")
    with pytest.raises(HostKeyChanged, match=r"run 'pymachine regenerate-host-key dev'$"):
        SSHClient.connect(target, host_key_hint="run 'pymachine regenerate-host-key dev'")


def test_wrong_key_gives_one_line_auth_error(sshd, tmp_path):
    other = tmp_path / "id_other"
    generate_key(other, "rsa")
    target = sshd.target(known_hosts=tmp_path / "kh", key=other)
    with pytest.raises(MachineError) as info:
        SSHClient.connect(target)
    assert str(info.value) == (
        f"SSH authentication failed for root@127.0.0.1:{sshd.port} with key {other}"
    )


@pytest.mark.parametrize("kind", ["rsa", "ecdsa", "ed25519"])
def test_key_types(sshd, tmp_path, kind):
    key = tmp_path / f"id_{kind}"
    sshd.authorize(generate_key(key, kind))
    with SSHClient.connect(sshd.target(known_hosts=tmp_path / "kh", key=key)) as c:
        assert c.run("echo ok").stdout == "ok\n"


def test_too_open_or_missing_key_is_refused(sshd, tmp_path):
    key = tmp_path / "id_loose"
    sshd.authorize(generate_key(key))
    key.chmod(0o644)
    with pytest.raises(MachineError, match=rf"^permissions 0644 for '{key}' are too open$"):
        SSHClient.connect(sshd.target(known_hosts=tmp_path / "kh", key=key))
    missing = tmp_path / "nope"
    with pytest.raises(MachineError, match=f"^No SSH key found at {missing}$"):
        SSHClient.connect(sshd.target(known_hosts=tmp_path / "kh", key=missing))


def test_closed_port_is_refused_quickly(sshd, tmp_path):
    port = free_port()
    target = sshd.target(known_hosts=tmp_path / "kh")
    target.port = port
    started = time.monotonic()
    with pytest.raises(MachineError) as info:
        SSHClient.connect(target)
    assert str(info.value) == f"Unable to connect to 127.0.0.1:{port}: connection refused"
    assert time.monotonic() - started < 1.0


def test_silent_or_closing_server_gives_one_line_error_and_no_stderr_noise(tmp_path, capfd):
    """A port that accepts TCP but never speaks SSH (sshd still starting, or not sshd)."""
    with socket.socket() as silent, socket.socket() as closing:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        closing.bind(("127.0.0.1", 0))
        closing.listen(4)

        def hang_up():
            conn, _addr = closing.accept()
            conn.close()

        closer = threading.Thread(target=hang_up, daemon=True)
        closer.start()
        target = SSHTarget("127.0.0.1", silent.getsockname()[1], "root", None, tmp_path / "kh")
        started = time.monotonic()
        with pytest.raises(MachineError) as info:
            SSHClient.connect(target, timeout=0.5)
        assert (
            str(info.value) == f"Unable to connect to {target.address}: no SSH banner within 0.5s"
        )
        assert time.monotonic() - started < 3
        target.port = closing.getsockname()[1]
        with pytest.raises(MachineError, match=r"connection closed during the SSH handshake$"):
            SSHClient.connect(target, timeout=5)
        closer.join(timeout=1)
    assert capfd.readouterr().err == ""
    assert not target.known_hosts.exists()


def test_wait_retries_until_the_server_comes_up(tmp_path):
    server = SSHD(tmp_path / "late", port=free_port())
    timer = threading.Timer(1.0, server.start)
    timer.start()
    try:
        started = time.monotonic()
        with SSHClient.connect(server.target(known_hosts=tmp_path / "kh"), wait=2) as c:
            assert c.run("echo up").stdout == "up\n"
        assert 0.9 < time.monotonic() - started < 3.5
    finally:
        timer.join(timeout=15)
        server.stop()


def test_wait_is_bounded(tmp_path, sshd):
    target = sshd.target(known_hosts=tmp_path / "kh")
    target.port = free_port()
    started = time.monotonic()
    with pytest.raises(MachineError, match="connection refused"):
        SSHClient.connect(target, wait=0.6)
    assert 0.5 < time.monotonic() - started < 2.0


# --------------------------------------------------------- external OpenSSH tools
def _run(argv, **kw):
    return subprocess.run(
        argv,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        **kw,
    )


def test_external_ssh_uses_the_pinned_key(sshd, tmp_path):
    target = sshd.target(known_hosts=tmp_path / "kh")
    SSHClient.connect(target).close()  # pins the host key, as `create` does
    result = _run(ssh_argv(target, ["echo", "hi"]))
    assert (result.returncode, result.stdout) == (0, "hi\n"), result.stderr


def test_external_ssh_refuses_a_different_pinned_key(sshd, tmp_path):
    target = sshd.target(known_hosts=tmp_path / "kh")
    impostor = generate_key(tmp_path / "impostor_host_key")
    target.known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {impostor}\n")
    result = _run(ssh_argv(target, ["echo", "hi"]))
    assert result.returncode == 255
    assert "hi" not in result.stdout
    # an empty pin file is refused too: never trust blindly
    target.known_hosts.write_text("")
    assert _run(ssh_argv(target, ["echo", "hi"])).returncode == 255


def test_external_scp_and_rsync_round_trips(sshd, tmp_path):
    target = sshd.target(known_hosts=tmp_path / "kh")
    SSHClient.connect(target).close()
    remote = tmp_path / "remote dir"
    remote.mkdir()
    local = tmp_path / "local.txt"
    local.write_text("payload\n")

    def resolve(name):
        assert name == "dev"
        return target

    up = _run(scp_argv([str(local)], f"dev:{remote}/up.txt", resolve=resolve))
    assert up.returncode == 0, up.stderr
    assert (remote / "up.txt").read_text() == "payload\n"
    down = _run(
        scp_argv([f"root@dev:{remote}/up.txt"], str(tmp_path / "down.txt"), resolve=resolve)
    )
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "down.txt").read_text() == "payload\n"
    # remote -> remote through this host (-3, scp:// URIs)
    both = _run(scp_argv([f"dev:{remote}/up.txt"], f"dev:{remote}/copy.txt", resolve=resolve))
    assert both.returncode == 0, both.stderr
    assert (remote / "copy.txt").read_text() == "payload\n"
    delta = _run(
        scp_argv([f"{remote}/"], f"dev:{tmp_path}/synced", recursive=True, delta=True,
                 quiet=True, resolve=resolve)
    )  # fmt: skip
    assert delta.returncode == 0, delta.stderr
    assert (tmp_path / "synced" / "copy.txt").read_text() == "payload\n"
