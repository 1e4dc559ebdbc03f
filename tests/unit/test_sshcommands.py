"""argv builders for ssh/scp/rsync/sshfs and the remote command wrapper (pure, no network)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pymachine.machine.errors import MachineError
from pymachine.machine.sshcommands import (
    SSHTarget,
    check_key_file,
    require_tool,
    scp_argv,
    ssh_argv,
    sshfs_argv,
    unmount_argv,
    wrap_command,
)

KEY1 = Path("/store/machines/m1/id_rsa")
KH1 = Path("/store/machines/m1/known_hosts")
KEY2 = Path("/store/machines/m2/id_rsa")
KH2 = Path("/store/machines/m2/known_hosts")

M1 = SSHTarget(host="10.0.0.5", port=22, user="docker", key_path=KEY1, known_hosts=KH1)
M2 = SSHTarget(host="127.0.0.1", port=2222, user="ubuntu", key_path=KEY2, known_hosts=KH2)
MACHINES = {"m1": M1, "m2": M2}


def resolve(name: str) -> SSHTarget:
    if name not in MACHINES:
        raise MachineError(f'Docker machine "{name}" does not exist.')
    return MACHINES[name]


def scp(sources, dest, **kw):
    return scp_argv(sources, dest, resolve=resolve, **kw)


# ---------------------------------------------------------------------------- ssh
def test_ssh_argv_matches_docker_machine_options_but_pins_host_keys():
    assert ssh_argv(M1, ["uname", "-a"]) == [
        "ssh", "-F", "/dev/null",
        "-o", "ConnectionAttempts=3", "-o", "ConnectTimeout=10",
        "-o", "ControlMaster=no", "-o", "ControlPath=none",
        "-o", "LogLevel=ERROR", "-o", "PasswordAuthentication=no",
        "-o", "ServerAliveInterval=60",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f'UserKnownHostsFile="{KH1}"',
        "-o", "IdentitiesOnly=yes", "-i", str(KEY1),
        "-l", "docker", "-p", "22", "10.0.0.5", "uname", "-a",
    ]  # fmt: skip
    assert "StrictHostKeyChecking=no" not in ssh_argv(M1)
    assert "UserKnownHostsFile=/dev/null" not in ssh_argv(M1)


def test_ssh_argv_without_key_and_explicit_known_hosts():
    target = SSHTarget("192.168.99.100", 50022, "root", None, KH1)
    argv = ssh_argv(target, known_hosts=Path("/other/kh"))
    assert "-i" not in argv and "IdentitiesOnly=yes" not in argv
    assert 'UserKnownHostsFile="/other/kh"' in argv
    assert argv[-5:] == ["-l", "root", "-p", "50022", "192.168.99.100"]


@pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH client not installed")
def test_ssh_argv_is_accepted_by_the_real_ssh_parser(tmp_path):
    """`ssh -G` parses options and prints the resulting config without connecting."""
    key = tmp_path / "id key"  # a space, to check the quoting survives ssh's parser
    key.write_text("x")
    key.chmod(0o600)
    known_hosts = tmp_path / "known hosts"
    argv = ssh_argv(SSHTarget("127.0.0.1", 2222, "ubuntu", key, known_hosts))
    result = subprocess.run(
        [argv[0], "-G", *argv[1:]], check=False, capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 0, result.stderr
    config = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert config["port"] == "2222"
    assert config["user"] == "ubuntu"
    assert config["stricthostkeychecking"] == "true"
    assert config["userknownhostsfile"] == str(known_hosts)
    assert f"identityfile {key}" in result.stdout.splitlines()
    assert config["identitiesonly"] == "yes"


# ---------------------------------------------------------------------------- scp
def test_scp_local_to_remote():
    assert scp(["./docker-compose.yml"], "m1:/home/docker/app/") == [
        "scp", "-o", "LogLevel=ERROR",
        "-o", "StrictHostKeyChecking=yes", "-o", f'UserKnownHostsFile="{KH1}"',
        "-o", "IdentitiesOnly=yes", "-o", f'IdentityFile="{KEY1}"', "-o", "Port=22",
        "--", "./docker-compose.yml", "docker@10.0.0.5:/home/docker/app/",
    ]  # fmt: skip


def test_scp_remote_to_local_with_user_override_recursive_quiet():
    argv = scp(["root@m2:/etc/docker"], "./backup", recursive=True, quiet=True)
    assert argv == [
        "scp", "-o", "LogLevel=ERROR",
        "-o", "StrictHostKeyChecking=yes", "-o", f'UserKnownHostsFile="{KH2}"',
        "-r", "-q",
        "-o", "IdentitiesOnly=yes", "-o", f'IdentityFile="{KEY2}"', "-o", "Port=2222",
        "--", "root@127.0.0.1:/etc/docker", "./backup",
    ]  # fmt: skip
    assert "-3" not in argv


def test_scp_localhost_prefix_and_bare_paths_are_local():
    argv = scp(["localhost:/tmp/a"], "m1:b")
    assert argv[-2:] == ["/tmp/a", "docker@10.0.0.5:b"]
    argv = scp(["m1:b"], "localhost:")
    assert argv[-2:] == ["docker@10.0.0.5:b", ""]


def test_scp_remote_to_remote_uses_3_and_per_machine_ports_and_known_hosts():
    argv = scp(["m1:/var/log/syslog"], "m2:logs/syslog")
    assert "-3" in argv
    # one UserKnownHostsFile option naming both machines' pin files
    assert argv[argv.index("-o", 3) : argv.index("-o", 3) + 4] == [
        "-o", "StrictHostKeyChecking=yes", "-o", f'UserKnownHostsFile="{KH1}" "{KH2}"',
    ]  # fmt: skip
    assert f'IdentityFile="{KEY1}"' in argv and f'IdentityFile="{KEY2}"' in argv
    assert not any(a.startswith("Port=") for a in argv)
    assert argv[-2:] == [
        "scp://docker@10.0.0.5:22//var/log/syslog",
        "scp://ubuntu@127.0.0.1:2222/logs/syslog",
    ]


def test_scp_uris_escape_what_openssh_would_url_decode():
    """OpenSSH url-decodes an scp:// URI's user and path ('%XX', '+' as a space)."""
    argv = scp(["m1:/srv/50%off a+b"], "m2:%2Fx")
    assert argv[-2:] == ["scp://docker@10.0.0.5:22//srv/50%25off a%2Bb", "scp://ubuntu@127.0.0.1:2222/%252Fx"]


def test_scp_agent_allowed_when_a_machine_has_no_key():
    nokey = SSHTarget("10.0.0.9", 22, "core", None, Path("/kh9"))
    argv = scp_argv(["a"], "n:b", resolve=lambda name: nokey)
    assert "IdentitiesOnly=yes" not in argv
    assert not any(a.startswith("IdentityFile") for a in argv)


def test_scp_delta_builds_rsync():
    argv = scp(["./src/"], "m2:/srv/app", delta=True, recursive=True)
    assert argv[0] == "rsync" and argv[1] == "--progress"
    assert argv[2] == "-e"
    ssh_cmd = shlex.split(argv[3])
    assert ssh_cmd == [
        "ssh", "-o", "LogLevel=ERROR",
        "-o", "StrictHostKeyChecking=yes", "-o", f'UserKnownHostsFile="{KH2}"',
        "-o", "IdentitiesOnly=yes", "-o", f'IdentityFile="{KEY2}"', "-o", "Port=2222",
    ]  # fmt: skip
    assert argv[4:] == ["-r", "--", "./src/", "ubuntu@127.0.0.1:/srv/app"]
    quiet = scp(["m1:/a"], "b", delta=True, quiet=True)
    assert "--progress" not in quiet and quiet[-2:] == ["docker@10.0.0.5:/a", "b"]


def test_scp_delta_refuses_two_remote_sides():
    with pytest.raises(MachineError, match="two remote machines"):
        scp(["m1:/a"], "m2:/b", delta=True)


@pytest.mark.parametrize("sources,dest", [([], "m1:/x"), (["a"], "")])
def test_scp_improper_number_of_arguments(sources, dest):
    with pytest.raises(MachineError, match=r"^Improper number of arguments$"):
        scp(sources, dest)


def test_scp_unknown_machine_error_comes_from_resolver():
    with pytest.raises(MachineError, match='"nope" does not exist'):
        scp(["nope:/a"], "b")


# ---------------------------------------------------------------------- sshfs/umount
def test_sshfs_and_unmount_argv():
    assert sshfs_argv(M2, "/home/ubuntu", "/mnt/m2") == [
        "sshfs",
        "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={KH2}",
        "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes", "-o", "Port=2222",
        "-o", f"IdentityFile={KEY2}",
        "--", "ubuntu@127.0.0.1:/home/ubuntu", "/mnt/m2",
    ]  # fmt: skip
    assert unmount_argv(Path("/mnt/m2")) == ["fusermount", "-u", "--", "/mnt/m2"]


def test_sshfs_escapes_commas_in_option_values():
    target = SSHTarget("h", 22, "u", Path("/keys/a,b"), Path("/kh"))
    assert "IdentityFile=/keys/a\\,b" in sshfs_argv(target, "/", "/mnt")


def test_require_tool_resolves_or_fails_with_docker_machine_message(monkeypatch):
    assert require_tool(["sh", "-c", "true"])[1:] == ["-c", "true"]
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MachineError, match=r"^You must have a copy of the scp binary locally"):
        require_tool(["scp", "a", "b"])


# ------------------------------------------------------------------------ key file
def test_check_key_file_permissions(tmp_path):
    key = tmp_path / "id_rsa"
    with pytest.raises(MachineError, match=f"^No SSH key found at {key}$"):
        check_key_file(key)
    key.write_text("x")
    key.chmod(0o600)
    check_key_file(key)
    key.chmod(0o644)
    with pytest.raises(MachineError, match=f"^permissions 0644 for '{key}' are too open$"):
        check_key_file(key)
    key.chmod(0o640)
    with pytest.raises(MachineError, match="permissions 0640 for"):
        check_key_file(key)


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_check_key_file_not_readable(tmp_path):
    key = tmp_path / "id_rsa"
    key.write_text("x")
    key.chmod(0o200)
    with pytest.raises(MachineError, match="is not readable"):
        check_key_file(key)


# -------------------------------------------------------------------- wrap_command
def test_wrap_command_root_runs_plainly():
    assert wrap_command("apt-get update", user="root", sudo=True) == "apt-get update"
    assert wrap_command("id -u", user="docker") == "id -u"


def test_wrap_command_sudo_quotes_the_whole_command():
    cmd = "printf '%s\\n' \"$HOME\" && echo it's > /etc/x"
    text = wrap_command(cmd, user="docker", sudo=True)
    assert text.startswith("sudo -E sh -c ")
    assert shlex.split(text) == ["sudo", "-E", "sh", "-c", cmd]


def test_wrap_command_exports_env_before_sudo():
    text = wrap_command(
        "apt-get update", user="ubuntu", sudo=True,
        env={"HTTP_PROXY": "http://u:p@proxy:3128", "NO_PROXY": "a b;'c"},
    )  # fmt: skip
    exports, rest = text.rsplit("; sudo -E sh -c ", 1)
    assert shlex.split(rest) == ["apt-get update"]
    assert exports == "export HTTP_PROXY=http://u:p@proxy:3128; export NO_PROXY='a b;'\"'\"'c'"


def test_wrap_command_really_runs_in_a_shell_with_a_sudo_shim(tmp_path):
    """The wrapped text runs in a real sh; a shim `sudo` records its argv and env."""
    shim = tmp_path / "sudo"
    shim.write_text('#!/bin/sh\nprintf "%s|" "$@" > "$OUT"; echo "$NO_PROXY" >> "$OUT"\n')
    shim.chmod(0o755)
    out = tmp_path / "out"
    text = wrap_command(
        "echo 'a b' > x", user="docker", sudo=True, env={"NO_PROXY": "it's, here", "OUT": str(out)}
    )
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    subprocess.run(["sh", "-c", text], check=True, env=env, timeout=10)
    assert out.read_text() == "-E|sh|-c|echo 'a b' > x|it's, here\n"


def test_wrap_command_rejects_bad_env_names():
    with pytest.raises(ValueError):
        wrap_command("true", user="root", env={"A;rm -rf /": "x"})


def test_sshcommands_does_not_import_paramiko():
    code = "import sys, machine.sshcommands; print('paramiko' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=30
    )
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH client not installed")
def test_scp_remote_to_remote_on_windows_paths_reach_ssh_intact():
    """Two machines on one address (Windows paths, a space in the user's folder): ``ssh -G``
    (which parses options without connecting) reads both pin files and both keys back."""
    base = "C:\\Users\\Jane Doe\\.docker\\machine\\machines\\"
    w1 = SSHTarget("127.0.0.1", 50022, "docker", Path(base + "m1\\id_rsa"), Path(base + "m1\\known_hosts"))
    w2 = SSHTarget("127.0.0.1", 50023, "docker", Path(base + "m2\\id_rsa"), Path(base + "m2\\known_hosts"))
    argv = scp_argv(["m1:/etc/hostname"], "m2:/tmp/x", resolve={"m1": w1, "m2": w2}.__getitem__, windows=True)
    end = argv.index("--")
    assert "-3" in argv[:end]
    assert argv[end:] == ["--", "scp://docker@127.0.0.1:50022//etc/hostname", "scp://docker@127.0.0.1:50023//tmp/x"]
    options = [arg for i, a in enumerate(argv[:end]) if a == "-o" for arg in ("-o", argv[i + 1])]
    out = subprocess.run(["ssh", "-G", "-F", "/dev/null", *options, "-p", "50023", "127.0.0.1"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert f"userknownhostsfile {w1.known_hosts} {w2.known_hosts}\n" in out
    assert f"identityfile {w1.key_path}\n" in out and f"identityfile {w2.key_path}\n" in out
    assert "stricthostkeychecking true\n" in out and "identitiesonly yes\n" in out
