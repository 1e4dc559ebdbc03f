"""The Windows branches of pymachine's path, shell and ssh logic, with the platform passed in.

Windows cannot run here, so these call the functions with ``platform``/``windows``
given explicitly.  The ssh option quoting is checked by the real OpenSSH client:
``ssh -G`` prints the configuration it parsed, without connecting anywhere.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pymachine.machine.errors import MachineError
from pymachine.machine.shells import detect_shell, docker_variables, env_output
from pymachine.machine.sshcommands import (
    SSHTarget,
    parse_scp_arg,
    require_tool,
    scp_argv,
    ssh_argv,
)
from pymachine.machine.store import default_storage_path

WIN_HOME = r"C:\Users\Jane Doe"
WIN_MACHINE = WIN_HOME + r"\.docker\machine\machines\dev"


def win_target() -> SSHTarget:
    return SSHTarget(host="127.0.0.1", port=2222, user="docker",
                     key_path=Path(WIN_MACHINE + r"\id_rsa"), known_hosts=Path(WIN_MACHINE + r"\known_hosts"))


# --- store path ------------------------------------------------------------------------


def test_windows_store_is_under_userprofile_even_when_git_bash_sets_home() -> None:
    env = {"USERPROFILE": WIN_HOME, "HOME": "/c/Users/jane"}
    assert str(default_storage_path(env, "win32")) == WIN_HOME + r"\.docker\machine"
    assert str(default_storage_path({"HOME": "/home/jane", "USERPROFILE": "x"}, "linux")) == \
        "/home/jane/.docker/machine"
    assert str(default_storage_path({**env, "MACHINE_STORAGE_PATH": r"D:\m"}, "win32")) == r"D:\m"


def test_windows_docker_config_is_under_userprofile_even_when_git_bash_sets_home() -> None:
    """docker.exe reads %USERPROFILE%\\.docker (docker's homedir.Get on Windows), so contexts and plugins go there."""
    from pymachine.machine.docker_context import docker_config_dir

    env = {"USERPROFILE": WIN_HOME, "HOME": "/c/Users/jane"}
    assert str(docker_config_dir(env, "win32")) == WIN_HOME + r"\.docker"
    assert str(docker_config_dir({"HOME": "/home/jane", "USERPROFILE": "x"}, "linux")) == "/home/jane/.docker"
    assert str(docker_config_dir({**env, "DOCKER_CONFIG": r"D:\cfg"}, "win32")) == r"D:\cfg"


# --- shells ------------------------------------------------------------------------------


@pytest.mark.parametrize(("environ", "parents", "expected"), [
    ({"SHELL": r"C:\Program Files\Git\usr\bin\bash.exe"}, [], "bash.exe"),  # Git Bash
    ({"SHELL": "/usr/bin/fish", "__fish_bin_dir": "x"}, [], "fish"),
    ({}, ["pwsh.exe", "WindowsTerminal.exe"], "powershell"),
    ({}, ["cmd.exe"], "cmd"),
    ({}, ["python.exe", "powershell.exe"], "powershell"),  # python -m pymachine: the grandparent
])
def test_windows_shell_detection(environ: dict[str, str], parents: list[str], expected: str) -> None:
    assert detect_shell(environ, "win32", parents)[0] == expected


def test_windows_env_lines_for_powershell_and_cmd() -> None:
    variables = docker_variables("tcp://127.0.0.1:2376", WIN_MACHINE, "dev", windows_client=True)
    ps = env_output("powershell", variables, [r"C:\Program Files\pymachine\bin\pymachine.exe", "env", "dev"])
    assert f'$Env:DOCKER_CERT_PATH = "{WIN_MACHINE}"\n' in ps
    assert '$Env:COMPOSE_CONVERT_WINDOWS_PATHS = "true"\n' in ps
    assert ps.endswith('# & "C:\\Program Files\\pymachine\\bin\\pymachine.exe" env dev | Invoke-Expression\n')
    cmd = env_output("cmd", variables, ["pymachine", "env", "dev"])
    assert f"SET DOCKER_CERT_PATH={WIN_MACHINE}\n" in cmd
    assert cmd.endswith("REM \t@FOR /f \"tokens=*\" %i IN ('pymachine env dev') DO @%i\n")


# --- ssh / scp argv ----------------------------------------------------------------------


def test_ssh_argv_on_windows_has_no_control_master() -> None:
    win = ssh_argv(win_target(), windows=True)
    posix = ssh_argv(win_target(), windows=False)
    assert not any(a.startswith("Control") for a in win)
    assert "ControlMaster=no" in posix and "ControlPath=none" in posix
    assert len(posix) - len(win) == 4  # exactly the two "-o Control..." pairs dropped
    assert win[win.index("-i") + 1] == WIN_MACHINE + r"\id_rsa"  # an argv element: no quoting
    assert win[-5:] == ["-l", "docker", "-p", "2222", "127.0.0.1"]  # no "--": options after the host stay options


@pytest.mark.skipif(not shutil.which("ssh"), reason="needs the OpenSSH client")
@pytest.mark.parametrize("path", [WIN_MACHINE + r"\known_hosts", r"\\fileserver\share\u\known_hosts",
                                  r"C:\Users\o'brien\kh", "/home/u/.docker/machine/machines/dev/known_hosts"])
def test_known_hosts_and_identity_quoting_survives_ssh_own_parser(path: str) -> None:
    target = SSHTarget(host="127.0.0.1", port=2222, user="docker", key_path=None, known_hosts=Path(path))
    argv = ssh_argv(target, windows=True)
    option = argv[argv.index("StrictHostKeyChecking=yes") + 2]
    assert option.startswith("UserKnownHostsFile=")
    # ssh -G parses the options and prints the result; it never connects.
    out = subprocess.run(["ssh", "-G", "-F", "/dev/null", "-o", option, "-p", "2222", "127.0.0.1"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert f"userknownhostsfile {path}\n" in out


def test_scp_windows_drive_paths_are_local() -> None:
    resolved: list[str] = []

    def resolve(name: str) -> SSHTarget:
        resolved.append(name)
        return win_target()

    assert parse_scp_arg(r"C:\Users\jane\f.txt", resolve, windows=True).target is None
    assert parse_scp_arg("d:/data", resolve, windows=True).target is None
    assert parse_scp_arg("C:", resolve, windows=True).target is None
    assert resolved == []
    # the same text on Linux names a machine "C", as docker-machine read it
    assert parse_scp_arg("C:/x", resolve, windows=False).target is not None and resolved == ["C"]
    # a machine name longer than one letter is a machine on Windows too
    assert parse_scp_arg("dev:/tmp", resolve, windows=True).target is not None

    argv = scp_argv([r"C:\Users\jane\f.txt"], "dev:/tmp/", resolve=resolve, windows=True)
    assert argv[-3:] == ["--", r"C:\Users\jane\f.txt", "docker@127.0.0.1:/tmp/"]
    identity = next(a for a in argv if a.startswith("IdentityFile="))
    assert identity == 'IdentityFile="' + (WIN_MACHINE + r"\id_rsa").replace("\\", "\\\\") + '"'


def test_windows_prefers_system32_openssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ntpath joins with backslashes; on this Linux filesystem that is one file name.
    root = tmp_path / "Windows"
    (tmp_path / "Windows\\System32\\OpenSSH\\ssh.exe").write_text("")
    env = {"SystemRoot": str(root)}
    assert require_tool(["ssh", "-V"], windows=True, environ=env) == [
        str(tmp_path / "Windows\\System32\\OpenSSH\\ssh.exe"), "-V"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(MachineError, match="You must have a copy of the scp binary locally"):
        require_tool(["scp"], windows=True, environ=env)  # no scp.exe there, none on PATH
    with pytest.raises(MachineError, match="You must have a copy of the ssh binary locally"):
        require_tool(["ssh"], windows=False, environ=env)  # not Windows: PATH only


def test_native_interactive_ssh_without_termios_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from pymachine.machine.cli import sshcmds

    monkeypatch.setitem(sys.modules, "termios", None)  # as on Windows: the import fails
    with pytest.raises(MachineError, match="needs a POSIX terminal: install Windows' OpenSSH client"):
        sshcmds._interactive(client=None)
