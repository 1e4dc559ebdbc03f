"""Shell completion through the real bash, zsh and fish, and ``ssh-config`` blocks.

Each shell sources the script ``pymachine completion SHELL`` prints and completes the way
it does on TAB; the candidates come from the installed ``pymachine`` and a real store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
PYMACHINE = BIN / "pymachine"


@pytest.fixture
def store(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "MACHINE_STORAGE_PATH": str(tmp_path / "store"), "HOME": str(tmp_path),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
           "XDG_DATA_HOME": str(tmp_path / "xdgdata")}
    for name, port in (("dev", 2376), ("devbox", 2377), ("prod", 2378)):
        proc = subprocess.run([str(PYMACHINE), "create", "-d", "none", "--url", f"tcp://127.0.0.1:{port}", name],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
    return env


def _need(shell: str) -> str:
    path = shutil.which(shell)
    if path is None:
        pytest.fail(f"{shell} is not installed: scripts/setup.sh installs it")
    return path


def _script(shell: str, env: dict[str, str]) -> str:
    proc = subprocess.run([str(PYMACHINE), "completion", shell], capture_output=True, text=True, env=env,
                          timeout=30, check=True)
    return proc.stdout


def _bash(env: dict[str, str], words: list[str]) -> list[str]:
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    code = (f'eval "$(pymachine completion bash)"\n'
            f"complete -p pymachine >/dev/null || exit 9\n"
            f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
            "_pymachine\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    proc = subprocess.run([_need("bash"), "--norc", "--noprofile", "-c", code], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def _zsh(env: dict[str, str], words: list[str]) -> list[str]:
    arr = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    code = ("autoload -U compinit && compinit -u -D\n"
            'eval "$(pymachine completion zsh)"\n'
            '[[ $_comps[pymachine] == _pymachine ]] || exit 9\n'
            # outside a completion widget, compadd and _files are stood in for: they print
            "compadd() { while (( $# )) && [[ $1 != -- ]]; do shift; done; shift; print -rl -- \"$@\"; }\n"
            "_files() { print -r -- __FILES__; }\n"
            f"words=({arr}); CURRENT={len(words)}\n_pymachine\n")
    proc = subprocess.run([_need("zsh"), "-f", "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def _fish(env: dict[str, str], line: str) -> list[str]:
    code = f"pymachine completion fish | source; complete -C {_fish_quote(line)}"
    proc = subprocess.run([_need("fish"), "--no-config", "-c", code], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [c.split("\t", 1)[0] for c in proc.stdout.splitlines() if c]


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def test_bash_completes_commands_flags_drivers_and_machines(store: dict[str, str]) -> None:
    assert _bash(store, ["pymachine", "cr"]) == ["create"]
    assert _bash(store, ["pymachine", "env", "dev"]) == ["dev", "devbox"]
    assert _bash(store, ["pymachine", "create", "-d", "q"]) == ["qemu"]
    assert "--qemu-memory" in _bash(store, ["pymachine", "create", "-d", "qemu", "--qemu-m"])
    assert "--virtualbox-memory" not in _bash(store, ["pymachine", "create", "-d", "qemu", "--"])
    assert _bash(store, ["pymachine", "env", "--shell", "p"]) == ["powershell"]
    assert _bash(store, ["pymachine", "--storage-path", "/tmp/x", "stop", "p"]) == ["prod"]
    # bash splits --driver=q at the '=': the value is still completed
    assert _bash(store, ["pymachine", "create", "--driver", "=", "vmware"]) == [
        "vmwarefusion", "vmwarevsphere", "vmwareworkstation"]
    assert _bash(store, ["pymachine", "--de"]) == ["--debug"]


def test_bash_completion_sees_a_new_machine(store: dict[str, str]) -> None:
    assert _bash(store, ["pymachine", "rm", "q"]) == []
    subprocess.run([str(PYMACHINE), "create", "-d", "none", "--url", "tcp://127.0.0.1:2399", "qa"], env=store,
                   capture_output=True, timeout=60, check=True)
    assert _bash(store, ["pymachine", "rm", "q"]) == ["qa"]


def test_zsh_completes_through_compdef(store: dict[str, str]) -> None:
    assert _zsh(store, ["pymachine", "ss"]) == ["ssh", "ssh-config"]
    assert _zsh(store, ["pymachine", "ip", "de"]) == ["dev", "devbox"]
    assert _zsh(store, ["pymachine", "create", "-d", "virtualbox", "--virtualbox-mem"]) == ["--virtualbox-memory"]
    assert _zsh(store, ["pymachine", "scp", "./nothing-matches-"]) == ["__FILES__"]  # falls back to files


def test_fish_completes_with_complete_C(store: dict[str, str]) -> None:
    assert _fish(store, "pymachine sta") == ["start", "status"]
    assert _fish(store, "pymachine env --shell f") == ["fish"]
    assert _fish(store, "pymachine inspect pr") == ["prod"]
    assert "--amazonec2-region" in _fish(store, "pymachine create -d amazonec2 --amazonec2-reg")


def test_completion_of_an_unknown_shell_is_one_line(store: dict[str, str]) -> None:
    proc = subprocess.run([str(PYMACHINE), "completion", "tcsh"], capture_output=True, text=True, env=store,
                          timeout=30)
    assert proc.returncode != 0 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "bash, zsh, fish" in proc.stderr


def test_completion_does_not_load_cloud_sdks(store: dict[str, str]) -> None:
    code = ("import sys; from pymachine.machine.cli.main import main; main(['__complete', 'env', 'd']); "
            "print('SDKS', sorted(m for m in sys.modules if m.split('.')[0] in "
            "('boto3', 'botocore', 'azure', 'pyVmomi', 'libcloud', 'paramiko', 'cryptography')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=store, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "SDKS []"
