"""`pymachine env` output: byte-exact docker-machine 0.16 forms, and safe escaping.

Expected strings are written out by hand from docker-machine's templates
(commands/env.go) so a change in rendering shows up as a diff.  The escaping
tests evaluate the output in the real shells installed here.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pymachine.machine import shells
from pymachine.machine.errors import MachineError
from pymachine.machine.shells import (
    UNKNOWN_SHELL_HINT,
    WINDOWS_DEFAULT_NOTE,
    UnknownShell,
    detect_shell,
    docker_variables,
    env_output,
    find_no_proxy,
    no_proxy_update,
    render_set,
    render_unset,
    usage_hint,
)

VARS = docker_variables("tcp://1.2.3.4:2376", "/home/u/.docker/machine/machines/quux", "quux")
ARGV = ["docker-machine", "env", "quux"]

# --- byte-exact docker-machine forms ------------------------------------------

SET_EXPECTED = {
    "bash": (
        'export DOCKER_TLS_VERIFY="1"\n'
        'export DOCKER_HOST="tcp://1.2.3.4:2376"\n'
        'export DOCKER_CERT_PATH="/home/u/.docker/machine/machines/quux"\n'
        'export DOCKER_MACHINE_NAME="quux"\n'
        "# Run this command to configure your shell: \n"
        "# eval $(docker-machine env quux)\n"
    ),
    "fish": (
        'set -gx DOCKER_TLS_VERIFY "1";\n'
        'set -gx DOCKER_HOST "tcp://1.2.3.4:2376";\n'
        'set -gx DOCKER_CERT_PATH "/home/u/.docker/machine/machines/quux";\n'
        'set -gx DOCKER_MACHINE_NAME "quux";\n'
        "# Run this command to configure your shell: \n"
        "# eval (docker-machine env quux)\n"
    ),
    "powershell": (
        '$Env:DOCKER_TLS_VERIFY = "1"\n'
        '$Env:DOCKER_HOST = "tcp://1.2.3.4:2376"\n'
        '$Env:DOCKER_CERT_PATH = "/home/u/.docker/machine/machines/quux"\n'
        '$Env:DOCKER_MACHINE_NAME = "quux"\n'
        "# Run this command to configure your shell: \n"
        "# & docker-machine env quux | Invoke-Expression\n"
    ),
    "cmd": (
        "SET DOCKER_TLS_VERIFY=1\n"
        "SET DOCKER_HOST=tcp://1.2.3.4:2376\n"
        "SET DOCKER_CERT_PATH=/home/u/.docker/machine/machines/quux\n"
        "SET DOCKER_MACHINE_NAME=quux\n"
        "REM Run this command to configure your shell: \n"
        "REM \t@FOR /f \"tokens=*\" %i IN ('docker-machine env quux') DO @%i\n"
    ),
    "tcsh": (
        'setenv DOCKER_TLS_VERIFY "1";\n'
        'setenv DOCKER_HOST "tcp://1.2.3.4:2376";\n'
        'setenv DOCKER_CERT_PATH "/home/u/.docker/machine/machines/quux";\n'
        'setenv DOCKER_MACHINE_NAME "quux";\n'
        ": Run this command to configure your shell: \n"
        ": eval `docker-machine env quux`\n"
    ),
    "emacs": (
        '(setenv "DOCKER_TLS_VERIFY" "1")\n'
        '(setenv "DOCKER_HOST" "tcp://1.2.3.4:2376")\n'
        '(setenv "DOCKER_CERT_PATH" "/home/u/.docker/machine/machines/quux")\n'
        '(setenv "DOCKER_MACHINE_NAME" "quux")\n'
        ";; Run this command to configure your shell: \n"
        ';; (with-temp-buffer (shell-command "docker-machine env quux" (current-buffer)) (eval-buffer))\n'
    ),
}


@pytest.mark.parametrize("shell", sorted(SET_EXPECTED))
def test_set_output_is_docker_machine_bytes(shell: str) -> None:
    assert env_output(shell, VARS, ARGV) == SET_EXPECTED[shell]


@pytest.mark.parametrize("shell", ["zsh", "sh", "ksh", "whatever", "Fish"])
def test_other_shells_use_the_default_syntax(shell: str) -> None:
    # docker-machine's switch is exact and case-sensitive: anything else is bash-like.
    assert env_output(shell, VARS, ARGV) == SET_EXPECTED["bash"]


def test_pwsh_is_powershell() -> None:
    assert env_output("pwsh", VARS, ARGV) == SET_EXPECTED["powershell"]


def test_windows_client_and_no_proxy_order() -> None:
    variables = docker_variables(
        "tcp://1.2.3.4:2376", r"C:\m\quux", "quux", windows_client=True, no_proxy=("NO_PROXY", "1.2.3.4")
    )
    assert [n for n, _ in variables] == [
        "DOCKER_TLS_VERIFY", "DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_MACHINE_NAME",
        "COMPOSE_CONVERT_WINDOWS_PATHS", "NO_PROXY",
    ]
    assert render_set("cmd", variables).splitlines()[-2:] == [
        "SET COMPOSE_CONVERT_WINDOWS_PATHS=true", "SET NO_PROXY=1.2.3.4",
    ]


UNSET_EXPECTED = {
    "bash": "unset DOCKER_TLS_VERIFY\nunset DOCKER_HOST\nunset DOCKER_CERT_PATH\nunset DOCKER_MACHINE_NAME\n",
    "fish": "set -e DOCKER_TLS_VERIFY;\nset -e DOCKER_HOST;\nset -e DOCKER_CERT_PATH;\nset -e DOCKER_MACHINE_NAME;\n",
    "powershell": (
        "Remove-Item Env:\\\\DOCKER_TLS_VERIFY\nRemove-Item Env:\\\\DOCKER_HOST\n"
        "Remove-Item Env:\\\\DOCKER_CERT_PATH\nRemove-Item Env:\\\\DOCKER_MACHINE_NAME\n"
    ),
    "cmd": "SET DOCKER_TLS_VERIFY=\nSET DOCKER_HOST=\nSET DOCKER_CERT_PATH=\nSET DOCKER_MACHINE_NAME=\n",
    "tcsh": (
        "unsetenv DOCKER_TLS_VERIFY;\nunsetenv DOCKER_HOST;\n"
        "unsetenv DOCKER_CERT_PATH;\nunsetenv DOCKER_MACHINE_NAME;\n"
    ),
    "emacs": (
        '(setenv "DOCKER_TLS_VERIFY" nil)\n(setenv "DOCKER_HOST" nil)\n'
        '(setenv "DOCKER_CERT_PATH" nil)\n(setenv "DOCKER_MACHINE_NAME" nil)\n'
    ),
}


@pytest.mark.parametrize("shell", sorted(UNSET_EXPECTED))
def test_unset_output_is_docker_machine_bytes(shell: str) -> None:
    argv = ["docker-machine", "env", "-u"]
    assert env_output(shell, [], argv, unset=True) == UNSET_EXPECTED[shell] + usage_hint(shell, argv)


@pytest.mark.parametrize(
    ("shell", "last_line"),
    [
        ("bash", "unset NO_PROXYlocalhost,10.0.0.1"),
        ("fish", "set -e NO_PROXYlocalhost,10.0.0.1;"),
        ("powershell", "Remove-Item Env:\\\\NO_PROXYlocalhost,10.0.0.1"),
        ("cmd", "SET NO_PROXY=localhost,10.0.0.1"),
        ("tcsh", "unsetenv NO_PROXYlocalhost,10.0.0.1;"),
        ("emacs", '(setenv "NO_PROXY" nillocalhost,10.0.0.1)'),
    ],
)
def test_unset_no_proxy_quirk_is_kept(shell: str, last_line: str) -> None:
    no_proxy = find_no_proxy({"NO_PROXY": "localhost,10.0.0.1"})
    out = render_unset(shell, shells.UNSET_NAMES, no_proxy)
    assert out.splitlines()[-1] == last_line
    assert len(out.splitlines()) == 5


def test_unset_no_proxy_quirk_never_carries_code() -> None:
    out = render_unset("bash", ["A"], ("no_proxy", "x; touch /tmp/pwned"))
    assert out == "unset A\nunset no_proxy\n"
    # and an unset no_proxy (the case docker-machine's tests cover) is clean
    assert render_unset("bash", [], find_no_proxy({})) == "unset NO_PROXY\n"


HINTS = [
    ("bash", ["machine", "env", "--no-proxy", "--swarm", "default"],
     "# Run this command to configure your shell: \n# eval $(machine env --no-proxy --swarm default)\n"),
    ("bash", ["C:\\\\Program Files\\docker-machine.exe", "env", "default"],
     '# Run this command to configure your shell: \n# eval $("C:\\\\Program Files\\docker-machine.exe" env default)\n'),
    ("bash", ["/opt/my tools/pymachine", "env", "default"],
     '# Run this command to configure your shell: \n# eval $("/opt/my tools/pymachine" env default)\n'),
    ("fish", ["./machine", "env", "--shell=fish", "--unset"],
     "# Run this command to configure your shell: \n# eval (./machine env --shell=fish --unset)\n"),
    ("powershell", ["C:\\\\Program Files\\docker-machine.exe", "env", "--shell=powershell", "default"],
     ('# Run this command to configure your shell: \n'
      '# & "C:\\\\Program Files\\docker-machine.exe" env --shell=powershell default | Invoke-Expression\n')),
    ("cmd", ["./machine", "env", "--shell=cmd", "default"],
     ("REM Run this command to configure your shell: \n"
      "REM \t@FOR /f \"tokens=*\" %i IN ('./machine env --shell=cmd default') DO @%i\n")),
    ("emacs", ["./machine", "env", "--shell=emacs", "--unset"],
     (";; Run this command to configure your shell: \n"
      ';; (with-temp-buffer (shell-command "./machine env --shell=emacs --unset" (current-buffer)) (eval-buffer))\n')),
    ("tcsh", ["./machine", "env", "--shell=tcsh", "default"],
     ": Run this command to configure your shell: \n: eval `./machine env --shell=tcsh default`\n"),
]


@pytest.mark.parametrize(("shell", "argv", "expected"), HINTS)
def test_usage_hint(shell: str, argv: list[str], expected: str) -> None:
    before = list(argv)
    assert usage_hint(shell, argv) == expected
    assert argv == before  # docker-machine mutated os.Args; we do not


def test_nushell_forms() -> None:
    out = env_output("nu", [("DOCKER_HOST", 'tcp://h:1'), ("X", 'a"b\\c\nd')], ["pymachine", "env", "dev"])
    lines = out.splitlines()
    assert lines[0] == '$env.DOCKER_HOST = "tcp://h:1"'
    assert lines[1] == '$env.X = "a\\"b\\\\c\\nd"'
    # the hint parses our own lines back: the quoted value must be valid JSON for `from json`
    assert json.loads(lines[1].split(" = ", 1)[1]) == 'a"b\\c\nd'
    assert "load-env" in lines[-1] and lines[-1].startswith("# pymachine env dev | lines")
    unset = env_output("nu", [], ["pymachine", "env", "-u"], unset=True, no_proxy=("NO_PROXY", "x"))
    assert unset.splitlines()[:5] == [f"hide-env -i {n}" for n in shells.UNSET_NAMES] + ["hide-env -i NO_PROXY"]
    assert "parse 'hide-env -i {name}'" in unset.splitlines()[-1]


# --- NO_PROXY ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, ("NO_PROXY", "1.2.3.4")),
        ({"NO_PROXY": "localhost"}, ("NO_PROXY", "localhost,1.2.3.4")),
        ({"no_proxy": "192.168.59.1"}, ("no_proxy", "192.168.59.1,1.2.3.4")),
        ({"no_proxy": "a", "NO_PROXY": "b"}, ("no_proxy", "a,1.2.3.4")),
        ({"no_proxy": "", "NO_PROXY": "b"}, ("NO_PROXY", "b,1.2.3.4")),
        ({"NO_PROXY": "x,1.2.3.4,y"}, ("NO_PROXY", "x,1.2.3.4,y")),
        ({"NO_PROXY": "1.2.3.45"}, ("NO_PROXY", "1.2.3.45")),  # docker-machine's substring test
    ],
)
def test_no_proxy_update(environ: dict[str, str], expected: tuple[str, str]) -> None:
    assert no_proxy_update(environ, "1.2.3.4") == expected


# --- detection -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shell_var", "expected"),
    [("/bin/bash", "bash"), ("/usr/bin/zsh", "zsh"), ("/usr/local/bin/fish", "fish"),
     ("tcsh", "tcsh"), ("/usr/bin/pwsh", "powershell"), ("/usr/bin/nu", "nu"), ("/bin/bash/", "bash")],
)
def test_detect_unix(shell_var: str, expected: str) -> None:
    assert detect_shell({"SHELL": shell_var}, "linux") == (expected, None)


@pytest.mark.parametrize("environ", [{}, {"SHELL": ""}])
def test_detect_unix_without_shell_fails(environ: dict[str, str]) -> None:
    with pytest.raises(UnknownShell) as info:
        detect_shell(environ, "darwin")
    assert isinstance(info.value, MachineError) and info.value.exit_code == 1
    assert str(info.value) == "Error: Unknown shell"
    assert UNKNOWN_SHELL_HINT == (
        "The default lines below are for a sh/bash shell, you can specify the shell you're using, "
        "with the --shell flag.\n\n"
    )


@pytest.mark.parametrize(
    ("environ", "parents", "expected"),
    [
        ({"SHELL": "/usr/bin/bash"}, ["cmd.exe"], ("bash", None)),
        ({"SHELL": "C:\\Program Files\\Git\\usr\\bin\\bash.exe"}, [], ("bash.exe", None)),
        ({"SHELL": "/usr/bin/fish", "__fish_bin_dir": "/usr/bin"}, [], ("fish", None)),
        ({"__fish_bin_dir": "/usr/bin"}, ["cmd.exe"], ("cmd", None)),  # fish only counts with SHELL
        ({}, ["powershell.exe", "explorer.exe"], ("powershell", None)),
        ({}, ["pwsh.exe"], ("powershell", None)),
        ({}, ["python.exe", "CMD.EXE"], ("cmd", None)),
        ({}, ["python.exe", "WindowsPowerShell.exe"], ("powershell", None)),
        ({}, ["python.exe", "explorer.exe", "cmd.exe"], ("cmd", WINDOWS_DEFAULT_NOTE)),  # only 2 levels
        ({}, [], ("cmd", WINDOWS_DEFAULT_NOTE)),
    ],
)
def test_detect_windows(environ: dict[str, str], parents: list[str], expected: tuple) -> None:
    assert detect_shell(environ, "win32", parents) == expected


def test_windows_note_text() -> None:
    assert WINDOWS_DEFAULT_NOTE == (
        "You can further specify your shell with either 'cmd' or 'powershell' with the --shell flag.\n\n"
    )


# --- escaping, checked by the real shells -------------------------------------

NASTY = [
    "plain",
    "with space",
    'dq"inside',
    "sq'inside",
    "$HOME and ${PATH} and $",
    "`touch pwned`",
    "$(touch pwned)",
    'back\\slash and \\" and \\$x',
    "trailing\\",
    '"; touch pwned; echo "',
    "';touch pwned;'",
    "semi;colon & amp | pipe < > redirect",
    "!bang !! !$ ^x",
    "unicode ü 日本 “curly” ‘q’",  # noqa: RUF001 - typographic quotes are the point
    "#hash ~tilde %PATH% {brace} (paren)",
    "C:\\Users\\me\\.docker\\machine",
]
# Only meaningful when the whole output is evaluated quoted (eval "$(...)"):
# docker-machine's unquoted `eval $(...)` hint word-splits and globs its input.
NASTY_QUOTED_ONLY = ["tab\there", "new\nline", "double  space", "glob * ? [a]", " lead and trail "]


def _names(values: list[str]) -> list[tuple[str, str]]:
    return [(f"PM_T{i}", v) for i, v in enumerate(values)]


DUMP = "import json, os, sys; sys.stdout.write(json.dumps(dict(os.environ)))"


def _run(argv: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYBIN": sys.executable, "HOME": str(cwd)}
    env.update(extra_env or {})
    proc = subprocess.run(argv, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert not (cwd / "pwned").exists(), "a value was executed as code"
    return json.loads(proc.stdout)


# shell -> (syntax, command that applies file F and then runs python DUMP)
def _posix(binary: str) -> list[str]:
    return [binary, "-c", 'eval "$(cat F)"; exec "$PYBIN" -c "$0"', DUMP]


SHELL_RUNNERS = {
    "bash": ("bash", lambda b: [b, "--norc", "--noprofile", "-c", 'eval "$(cat F)"; exec "$PYBIN" -c "$0"', DUMP]),
    "dash": ("sh", _posix),
    "sh": ("sh", _posix),
    "zsh": ("zsh", lambda b: [b, "-f", "-c", 'eval "$(cat F)"; exec "$PYBIN" -c "$0"', DUMP]),
    "fish": ("fish", lambda b: [b, "--no-config", "-c", "source F; and exec $PYBIN -c '" + DUMP + "'"]),
    "tcsh": ("tcsh", lambda b: [b, "-f", "-c", "source F; exec $PYBIN -c '" + DUMP + "'"]),
    "pwsh": ("powershell", lambda b: [b, "-NoProfile", "-NonInteractive", "-Command",
                                     "Get-Content F | Invoke-Expression; & $env:PYBIN -c '" + DUMP + "'"]),
}


def _values_for(syntax: str) -> list[str]:
    values = NASTY + NASTY_QUOTED_ONLY
    if syntax == "tcsh":  # csh cannot hold a newline inside quotes
        values = [v for v in values if "\n" not in v]
    return values


@pytest.mark.parametrize("shell_bin", sorted(SHELL_RUNNERS))
def test_real_shell_sets_exact_values(shell_bin: str, tmp_path: Path) -> None:
    binary = shutil.which(shell_bin)
    if binary is None:
        pytest.skip(f"{shell_bin} is not installed on this machine")
    syntax, argv_for = SHELL_RUNNERS[shell_bin]
    variables = _names(_values_for(syntax))
    (tmp_path / "F").write_text(env_output(syntax, variables, ["pymachine", "env", "dev"]))
    (tmp_path / "[a]").write_text("")  # so an unescaped glob would match something
    got = _run(argv_for(binary), tmp_path)
    assert {n: got.get(n) for n, _ in variables} == dict(variables)


@pytest.mark.parametrize("shell_bin", ["bash", "dash"])
def test_docker_machine_hint_command_works_in_real_shell(shell_bin: str, tmp_path: Path) -> None:
    """Run the printed hint itself (`eval $(pm env dev)`), then the unset hint."""
    binary = shutil.which(shell_bin)
    if binary is None:
        pytest.skip(f"{shell_bin} is not installed on this machine")
    variables = _names(NASTY)
    (tmp_path / "set.out").write_text(env_output("bash", variables, ["pm", "env", "dev"]))
    (tmp_path / "unset.out").write_text(
        env_output("bash", variables[:3], ["pm", "env", "-u"], unset=True, no_proxy=("NO_PROXY", "x"))
    )
    fake = tmp_path / "bin" / "pm"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nif [ "$2" = -u ]; then cat {tmp_path}/unset.out; else cat {tmp_path}/set.out; fi\n')
    fake.chmod(stat.S_IRWXU)
    out = env_output("bash", variables, ["pm", "env", "dev"])
    hint = out.splitlines()[-1].removeprefix("# ")
    assert hint == "eval $(pm env dev)"
    path = f"{fake.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    got = _run([binary, "-c", hint + '; exec "$PYBIN" -c "$0"', DUMP], tmp_path, {"PATH": path})
    assert {n: got.get(n) for n, _ in variables} == dict(variables)

    unset_hint = usage_hint("bash", ["pm", "env", "-u"]).splitlines()[-1].removeprefix("# ")
    preset = {n: "old" for n, _ in variables[:4]} | {"NO_PROXY": "x", "PATH": path}
    got = _run([binary, "-c", unset_hint + '; exec "$PYBIN" -c "$0"', DUMP], tmp_path, preset)
    assert [n for n, _ in variables[:4] if n in got] == ["PM_T3"]  # only the three listed are unset
    # docker-machine's -u --no-proxy quirk: `unset NO_PROXYx` leaves NO_PROXY alone
    assert got["NO_PROXY"] == "x"


def test_unset_evaluated_by_bash_removes_variables(tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed on this machine")
    names = list(shells.UNSET_NAMES)
    (tmp_path / "F").write_text(env_output("bash", [], ["pymachine", "env", "-u"], unset=True,
                                           no_proxy=find_no_proxy({})))
    preset = {n: "v" for n in names} | {"NO_PROXY": "", "KEEP": "1"}
    got = _run(SHELL_RUNNERS["bash"][1]("bash"), tmp_path, preset)
    assert not set(names) & set(got) and "NO_PROXY" not in got and got["KEEP"] == "1"
