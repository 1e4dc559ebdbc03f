"""Hostile input through the installed ``pymachine``, command by command.

Every bad case must: exit non-zero, print exactly one line on stderr, name no
internal exception, leave the store byte-for-byte as it was (contents and modes)
and write nothing outside it: not in its working directory, HOME, DOCKER_CONFIG,
the store's parent or /tmp (hostile names carry a unique token, looked for
afterwards).  Valid edge inputs are controls and must succeed.

Each case runs on its own copy of a store holding two ``none`` machines, so cases
run in parallel and a case that damages its store cannot mask another.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BIN = Path(sys.executable).parent / "pymachine"
TOKEN = "pmbad" + uuid.uuid4().hex[:8]
TMP = Path("/tmp")
MACHINES = ("alpha", "beta-1")

INTERNAL = re.compile(
    r"Traceback|\b(OSError|KeyError|ValueError|TypeError|AttributeError|RecursionError|IndexError"
    r"|Unicode\w*Error|FileNotFoundError|FileExistsError|PermissionError|IsADirectoryError"
    r"|NotADirectoryError|OverflowError|AssertionError|RuntimeError|ZeroDivisionError"
    r"|JSONDecodeError|re\.error|sre_constants)\b"
)

# Hostile machine names; each carries TOKEN so a file made from it can be found.
NAMES = {
    "dotdot": f"../{TOKEN}",
    "absolute": f"/tmp/{TOKEN}",
    "newline": f"{TOKEN}\n",
    "long": TOKEN + "a" * 300,
    "dash": "-rf",
    "empty": "",
    "unicode": f"bücher-{TOKEN}",
    "space": f"{TOKEN} x",
    "semicolon": f"{TOKEN};touch {TOKEN}-sh",
    "dot": ".",
    "dotdot-bare": "..",
    "slash": f"alpha/../{TOKEN}",
    "nul-like": f"{TOKEN}\x01",
}

NAME_COMMANDS = [
    ["inspect"], ["ip"], ["url"], ["status"], ["start"], ["stop"], ["restart"], ["kill"],
    ["rm", "-y"], ["rm", "-f", "-y"], ["env"], ["config"], ["regenerate-certs", "-f"], ["provision"],
    ["upgrade"], ["ssh"], ["ssh-config"], ["use"], ["version"], ["logs"],
]


@dataclass
class Case:
    id: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ok: bool = False  # a control: must succeed


def _cases() -> list[Case]:
    cases: list[Case] = []
    for cmd in NAME_COMMANDS:
        for key, name in NAMES.items():
            if key == "dash" and cmd[0] in ("ssh",):
                continue  # `ssh -rf`: flags after ssh belong to ssh; covered below
            cases.append(Case(f"{' '.join(cmd)}[{key}]", [*cmd, name]))
        cases.append(Case(f"{' '.join(cmd)}[unknown-flag]", [*cmd, "--bogus-flag", "alpha"]))
    for key, name in NAMES.items():
        cases.append(Case(f"create[{key}]", ["create", "-d", "none", "--url", "tcp://127.0.0.1:1", name]))
        cases.append(Case(f"scp[{key}]", ["scp", f"{name}:/etc/hostname", "./copy"]))
        cases.append(Case(f"mount[{key}]", ["mount", f"{name}:/tmp", f"./{TOKEN}-mnt"]))

    bad = [
        # wrong argument counts and types
        ("inspect[two]", ["inspect", "alpha", "beta-1"]),
        ("create[none-name]", ["create", "-d", "none", "--url", "tcp://127.0.0.1:1"]),
        ("create[two-names]", ["create", "-d", "none", "--url", "tcp://127.0.0.1:1", "a", "b"]),
        ("create[exists]", ["create", "-d", "none", "--url", "tcp://127.0.0.1:1", "alpha"]),
        ("create[bad-driver]", ["create", "-d", f"{TOKEN}", "x"]),
        ("create[driver-path]", ["create", "-d", f"../{TOKEN}", "x"]),
        ("create[int-type]", ["create", "-d", "generic", "--generic-ip-address", "127.0.0.1",
                              "--generic-ssh-port", "abc", "x"]),
        ("create[port-range]", ["create", "-d", "generic", "--generic-ip-address", "127.0.0.1",
                                "--generic-ssh-port", "70000", "x"]),
        ("create[port-zero]", ["create", "-d", "generic", "--generic-ip-address", "127.0.0.1",
                               "--generic-ssh-port=0", "x"]),
        ("create[port-negative]", ["create", "-d", "generic", "--generic-ip-address", "127.0.0.1",
                                   "--generic-ssh-port=-1", "x"]),
        ("create[port-huge]", ["create", "-d", "generic", "--generic-ip-address", "127.0.0.1",
                               "--generic-engine-port", "9" * 30, "x"]),
        ("create[port-float]", ["create", "-d", "generic", "--generic-ip-address", "127.0.0.1",
                                "--generic-ssh-port", "1e3", "x"]),
        ("create[ip-newline]", ["create", "-d", "generic", "--generic-ip-address", "127.0.0.1\n", "x"]),
        ("create[key-missing]", ["create", "-d", "generic", "--generic-ip-address", "127.0.0.1",
                                 "--generic-ssh-key", f"/nonexistent/{TOKEN}", "x"]),
        ("create[ssh-user-dash]", ["create", "-d", "generic", "--generic-ip-address", "127.0.0.1",
                                   "--generic-ssh-user", f"-oProxyCommand=touch /tmp/{TOKEN}", "x"]),
        ("create[ip-dash]", ["create", "-d", "generic", "--generic-ip-address", "-oProxyCommand=x", "x"]),
        ("scp[one-arg]", ["scp", "alpha:/x"]),
        ("scp[dash-user]", ["scp", f"-oProxyCommand=touch /tmp/{TOKEN}@alpha:/x", "./y"]),
        ("mount[three]", ["mount", "alpha:/a", "b", "c"]),
        ("use[two]", ["use", "alpha", "beta-1"]),
        ("active[extra]", ["active", "extra"]),
        ("rm[none]", ["rm"]),
        ("env[u-and-name]", ["env", "-u", "alpha"]),
        ("frobnicate", [f"{TOKEN}"]),
        ("global-flag", ["--nonsense", "ls"]),
        ("help[unknown]", ["help", f"{TOKEN}"]),
        ("ls[format-no-value]", ["ls", "--format"]),
        ("ls[filter-no-value]", ["ls", "--filter"]),
        ("inspect[f-no-value]", ["inspect", "-f"]),
        ("create[d-no-value]", ["create", "-d"]),
        ("create[url-no-value]", ["create", "-d", "none", "--url"]),
        ("global[s-no-value]", ["-s"]),
        # the other commands
        ("image[unknown]", ["image", TOKEN]),
        ("image[flag]", ["image", "--bogus"]),
        ("image-load[missing]", ["image", "load", f"/nonexistent/{TOKEN}.tar.gz"]),
        ("image-load[not-archive]", ["image", "load", "/etc/hostname"]),
        ("engine[unknown]", ["engine", TOKEN]),
        ("engine-bundle[flag]", ["engine", "bundle", "--bogus"]),
        ("completion[unknown]", ["completion", TOKEN]),
        ("logs[tail-negative]", ["logs", "-n", "-1", "alpha"]),
        ("logs[tail-word]", ["logs", "--tail", "many", "alpha"]),
        ("swarm[unknown]", ["swarm", TOKEN]),
        ("quickstart[flag]", ["quickstart", "--bogus"]),
        ("use[u-and-name]", ["use", "-u", "alpha"]),
        # numbers
        ("ls[timeout-inf]", ["ls", "--timeout", "inf"]),
        ("ls[timeout-nan]", ["ls", "--timeout", "nan"]),
        ("ls[timeout-neg]", ["ls", "--timeout", "-1"]),
        ("ls[timeout-abc]", ["ls", "--timeout", "abc"]),
        ("ls[timeout-huge]", ["ls", "-t", "1e308"]),
        ("active[timeout-nan]", ["active", "-t", "nan"]),
        ("swarm[timeout-inf]", ["swarm", "ls", "-t", "inf"]),
        # templates
        ("ls[tmpl-open]", ["ls", "--format", "{{"]),
        ("ls[tmpl-unclosed-range]", ["ls", "--format", "{{range .}}"]),
        ("ls[tmpl-define]", ["ls", "--format", '{{define "x"}}{{end}}']),
        ("ls[tmpl-deep]", ["ls", "--format", "{{" + "(" * 500 + "1" + ")" * 500 + "}}"]),
        ("ls[tmpl-deep-if]", ["ls", "--format", "{{if 1}}" * 500 + "{{end}}" * 500]),
        ("ls[tmpl-output]", ["ls", "--format", '{{range $i := "x"}}{{end}}']),
        ("ls[tmpl-func]", ["ls", "--format", "{{nosuchfunc .Name}}"]),
        ("ls[tmpl-huge-out]", ["ls", "--format", '{{$a := printf "%999999d" 1}}'
                               '{{$b := printf "%s%s%s%s%s" $a $a $a $a $a}}{{printf "%s%s" $b $b}}']),
        ("inspect[tmpl-bad]", ["inspect", "-f", "{{.Name", "alpha"]),
        ("inspect[tmpl-if]", ["inspect", "-f", "{{if}}{{end}}", "alpha"]),
        ("inspect[tmpl-call]", ["inspect", "-f", "{{index .Name 5 6}}", "alpha"]),
        # filters
        ("ls[filter-regex]", ["ls", "--filter", "name=("]),
        ("ls[filter-backref]", ["ls", "--filter", r"name=(a)\1"]),
        ("ls[filter-repeat]", ["ls", "--filter", "name=a{5000}"]),
        ("ls[filter-long]", ["ls", "--filter", "name=" + "a" * 5000]),
        ("ls[filter-key]", ["ls", "--filter", "colour=red"]),
        ("ls[filter-syntax]", ["ls", "--filter", "nosyntax"]),
        # URLs
        ("create[url-port]", ["create", "-d", "none", "--url", "tcp://127.0.0.1:99999", "x"]),
        ("create[url-port0]", ["create", "-d", "none", "--url", "tcp://127.0.0.1:0", "x"]),
        ("create[url-portabc]", ["create", "-d", "none", "--url", "tcp://127.0.0.1:abc", "x"]),
        ("create[url-newline]", ["create", "-d", "none", "--url", "tcp://127.0.0.1:2376\n", "x"]),
        ("create[url-ipv6]", ["create", "-d", "none", "--url", "tcp://[::1:2376", "x"]),
        ("create[url-nohost]", ["create", "-d", "none", "--url", "tcp://:2376", "x"]),
        ("create[url-noscheme]", ["create", "-d", "none", "--url", "127.0.0.1:2376", "x"]),
        ("create[url-empty]", ["create", "-d", "none", "--url", "", "x"]),
    ]
    cases += [Case(i, a) for i, a in bad]
    # garbage environment variables
    create_x = ["create", "-d", "none", "--url", "tcp://127.0.0.1:1", "x"]
    for key, value in [("PYMACHINE_SSH_WAIT", "abc"), ("PYMACHINE_SSH_WAIT", "nan"),
                       ("PYMACHINE_SSH_WAIT", "inf"), ("PYMACHINE_SSH_WAIT", "-5"),
                       ("MACHINE_DRIVER", TOKEN)]:
        argv = create_x if key != "MACHINE_DRIVER" else ["create", "x"]
        cases.append(Case(f"env-{key}={value}", argv, env={key: value}))

    controls = [
        ("ls", ["ls"]),
        ("ls-q", ["ls", "-q"]),
        ("ls-filter", ["ls", "--filter", "name=^alp"]),
        ("ls-filter-backtracking", ["ls", "--filter", "name=(a|aa)+$"]),
        ("ls-format", ["ls", "--format", "{{.Name}}"]),
        ("ls-format-badwidth", ["ls", "--format", '{{printf "%999999999d" 1}}']),
        ("ls-format-json", ["ls", "--format", "json"]),
        ("ls-timeout", ["ls", "--timeout", "5"]),
        ("inspect", ["inspect", "alpha"]),
        ("inspect-f", ["inspect", "-f", "{{.DriverName}}", "beta-1"]),
        ("url", ["url", "alpha"]),
        ("ip", ["ip", "beta-1"]),
        ("status", ["status", "alpha"]),
        ("version", ["version"]),
        ("help", ["help", "ls"]),
        ("create-short", ["create", "-d", "none", "--url", "tcp://[::1]:2376", "a"]),
        ("create-dots", ["create", "-d", "none", "--url", "tcp://127.0.0.1:2376", "x-1.y"]),
        ("create-63", ["create", "-d", "none", "--url", "tcp://127.0.0.1:2376", "m" * 63]),
        ("create-ssh-wait", ["create", "-d", "none", "--url", "tcp://127.0.0.1:2376", "w"]),
    ]
    for i, argv in controls:
        env = {"PYMACHINE_SSH_WAIT": "5"} if i == "create-ssh-wait" else {}
        cases.append(Case(f"control-{i}", argv, env=env, ok=True))
    return cases


CASES = _cases()


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under ``root`` with its mode and content digest (or link target).

    ``pymachine-state.json`` is left out, as in test_cli_input: it is ``ls``'s cache
    of the last state it observed, written by any listing that queried the machines.
    """
    out: dict[str, tuple[int, str]] = {}
    for path in sorted([root, *root.rglob("*")]):
        if path.name == "pymachine-state.json":
            continue
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            digest = "link:" + os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            digest = "dir"
        out[str(path.relative_to(root))] = (stat.S_IMODE(st.st_mode), digest)
    return out


def _entries_with_token(*dirs: Path) -> list[str]:
    found = []
    for d in dirs:
        if d.exists():
            found += [str(p) for p in d.rglob(f"*{TOKEN}*")]
    return found


@pytest.fixture(scope="module")
def template_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("badinput-template")
    env = _env(root / "store", root)
    for name in MACHINES:
        subprocess.run([str(BIN), "create", "-d", "none", "--url", "tcp://127.0.0.1:1", name],
                       env=env, check=True, capture_output=True, timeout=120)
    return root / "store"


def _env(store: Path, root: Path) -> dict[str, str]:
    cleared = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_MACHINE_NAME",
               "DOCKER_CONTEXT", "MACHINE_STORAGE_PATH", "MACHINE_DRIVER", "PYMACHINE_SSH_WAIT")
    env = {k: v for k, v in os.environ.items() if k not in cleared}
    env.update(MACHINE_STORAGE_PATH=str(store), HOME=str(root / "home"),
               DOCKER_CONFIG=str(root / "docker-config"), SHELL="/bin/bash")
    (root / "home").mkdir(exist_ok=True)
    return env


@dataclass
class Outcome:
    case: Case
    problems: list[str]


def _run(case: Case, template: Path, base: Path) -> Outcome:
    root = base / f"case-{abs(hash(case.id)):x}"
    root.mkdir()
    store = root / "store"
    shutil.copytree(template, store, symlinks=True)
    cwd = root / "cwd"
    cwd.mkdir()
    env = {**_env(store, root), **case.env}
    before = snapshot(store)
    try:
        res = subprocess.run([str(BIN), *case.argv], env=env, cwd=cwd, capture_output=True,
                             text=True, timeout=60, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Outcome(case, ["did not finish within 60 s"])
    problems: list[str] = []
    stderr = res.stderr
    if case.ok:
        if res.returncode != 0:
            problems.append(f"control failed ({res.returncode}): {stderr.strip()[:300]}")
        if INTERNAL.search(stderr + res.stdout):
            problems.append(f"internal error text: {stderr.strip()[:300]}")
        if os.listdir(cwd):
            problems.append(f"wrote into its working directory: {os.listdir(cwd)}")
        return Outcome(case, problems)
    if res.returncode == 0:
        problems.append(f"exit 0 (stdout {res.stdout[:200]!r})")
    lines = stderr.splitlines()
    if len(lines) != 1 or not lines[0].strip():
        problems.append(f"{len(lines)} stderr lines: {stderr[:300]!r}")
    if INTERNAL.search(stderr + res.stdout):
        problems.append(f"internal error text: {stderr.strip()[:300]!r}")
    after = snapshot(store)
    if after != before:
        changed = sorted(set(before.items()) ^ set(after.items()))
        problems.append(f"store changed: {changed[:6]}")
    if os.listdir(cwd):
        problems.append(f"wrote into its working directory: {os.listdir(cwd)}")
    for d in ("home", "docker-config"):
        if (root / d).exists() and os.listdir(root / d):
            problems.append(f"wrote into {d}: {os.listdir(root / d)}")
    return Outcome(case, problems)


@pytest.fixture(scope="module")
def outcomes(template_store, tmp_path_factory) -> dict[str, Outcome]:
    base = tmp_path_factory.mktemp("badinput-cases")
    tmp_before = {p.name for p in TMP.iterdir()}
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda c: _run(c, template_store, base), CASES))
    by_id = {o.case.id: o for o in results}
    # Nothing named after a hostile input anywhere outside the stores: /tmp, the store's
    # parent and the cases' own directories (their stores excluded: they were compared).
    stray = [p for p in TMP.iterdir() if p.name not in tmp_before and TOKEN in p.name]
    stray += [p for p in _entries_with_token(template_store.parent) if "/store/" not in p]
    for p in _entries_with_token(base):
        if "/store/" not in p:
            stray.append(p)
    by_id["__stray__"] = Outcome(Case("__stray__", []), [f"stray entries: {stray}"] if stray else [])
    return by_id


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case_id", [c.id for c in CASES] + ["__stray__"])
def test_bad_input(outcomes, case_id):
    outcome = outcomes[case_id]
    assert not outcome.problems, f"{outcome.case.argv!r}: " + "; ".join(outcome.problems)


@pytest.mark.parametrize(
    "argv,env",
    [
        (["create", "-d", "none", "--url", "tcp://127.0.0.1:2376", "x"], {"PYMACHINE_SSH_WAIT": "abc"}),
        (["create", "-d", "none", "--url", "tcp://127.0.0.1:99999", "x"], {}),
        (["create", "-d", "none", "--url", "tcp://[::1:2376", "x"], {}),
        (["create", "-d", "generic", "--generic-ip-address", "127.0.0.1",
          "--generic-ssh-user", "-oProxyCommand=true", "x"], {}),
        (["ls", "--timeout", "nan"], {}),
    ],
)
def test_parse_time_refusals_make_nothing_not_even_the_store(tmp_path, argv, env):
    """Checked while parsing: no store, CA or machine dir appears for a refused create."""
    store = tmp_path / "store"
    res = subprocess.run([str(BIN), *argv], env={**_env(store, tmp_path), **env}, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode != 0
    assert len(res.stderr.splitlines()) == 1, res.stderr
    assert not store.exists()
