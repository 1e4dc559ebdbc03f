"""Shell completion: ``pymachine completion bash|zsh|fish`` and the hidden ``__complete``.

The shell scripts are thin: on every TAB they run ``pymachine __complete WORDS...`` (the
words typed after ``pymachine``, the last one the word being completed), as the docker
CLI and kubectl do, so the logic lives here once, for all three shells, and always
matches this build's commands, global flags, per-driver create flags and the store's
machine names.  A command's flags are read from its own ``--help`` (one module imported
per TAB), so a new flag needs no second list to keep in step.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Sequence

from pymachine.machine.cli.common import Context, UsageError

SHELLS_FOR_ENV = ("bash", "zsh", "fish", "tcsh", "powershell", "cmd", "emacs")
COMPLETION_SHELLS = ("bash", "zsh", "fish")
# Commands whose free arguments are not machine names.
_NO_MACHINE_ARGS = {"create", "engine", "image", "swarm", "completion", "version", "help"}
_OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)(?:[ =]([A-Z][A-Z0-9_\-\[\]\.]*))?")
_VALUE_CHOICES = {
    "--shell": SHELLS_FOR_ENV,
    "--driver": None,  # filled from the driver registry
    "-d": None,
}


def _global_flags() -> dict[str, bool]:
    from pymachine.machine.cli.main import GLOBAL_FLAGS

    flags = {name: takes for name, (_attr, _env, takes) in GLOBAL_FLAGS.items()}
    flags.update({"--help": False, "-h": False, "--version": False, "-v": False})
    return flags


def _commands() -> list[str]:
    from pymachine.machine.cli.main import COMMANDS

    return [c for c in COMMANDS if not c.startswith("_")]


def _drivers() -> list[str]:
    from pymachine.machine.drivers.registry import available

    return available()


def command_flags(ctx: Context, command: str, args: Sequence[str] = ()) -> dict[str, bool]:
    """``{flag: takes a value}`` for ``command``, read from its ``--help`` (with ``args``,
    e.g. ``-d qemu`` so ``create`` lists that driver's flags)."""
    from pymachine.machine.cli.main import dispatch

    out = io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(io.StringIO()),
        contextlib.suppress(SystemExit, UsageError, Exception),  # noqa: BLE001 - help text is best effort
    ):
        dispatch(ctx, command, [*args, "--help"])
    flags: dict[str, bool] = {}
    for line in out.getvalue().splitlines():
        stripped = line.strip()
        if not stripped.startswith("-"):
            continue
        spec = re.split(r"\s{2,}", stripped, maxsplit=1)[0]  # the option column only
        for match in _OPTION.finditer(spec):
            flags[match.group(1)] = flags.get(match.group(1), False) or bool(match.group(2))
    flags.pop("--help", None)
    flags.pop("-h", None)
    return flags


def _machine_names(ctx: Context) -> list[str]:
    try:
        return ctx.store.list_names()
    except OSError:
        return []


def _driver_args(words: Sequence[str]) -> list[str]:
    """The ``-d NAME`` / ``--driver NAME`` already typed, so create's help lists its flags."""
    for i, word in enumerate(words):
        if word in ("-d", "--driver") and i + 1 < len(words):
            return ["-d", words[i + 1]]
        if word.startswith("--driver="):
            return ["-d", word.split("=", 1)[1]]
    return []


def _flag_before(words: Sequence[str]) -> str | None:
    """The flag whose value is being completed (bash splits ``--flag=value`` at ``=``)."""
    if len(words) >= 3 and words[-2] == "=":
        return words[-3]
    if len(words) >= 2:
        return words[-2]
    return None


def complete(ctx: Context, words: Sequence[str]) -> list[str]:
    """Candidates for the last of ``words`` (the words after ``pymachine``)."""
    words = list(words) or [""]
    current = words[-1]
    before = words[:-1]
    gflags = _global_flags()
    # Skip global flags (and their values) to find the command.
    i = 0
    while i < len(before) and before[i].startswith("-"):
        name = before[i].split("=", 1)[0]
        i += 2 if gflags.get(name) and "=" not in before[i] else 1
    if i >= len(before):  # still before the command
        previous = before[-1] if before else None
        if previous is not None and gflags.get(previous):
            return []  # a global flag's value: paths, tokens (the shell completes files)
        pool = sorted(gflags) if current.startswith("-") else _commands()
        return [c for c in pool if c.startswith(current)]
    command, rest = before[i], before[i + 1:]
    flag = _flag_before([*rest, current]) if rest else None
    if flag in ("-d", "--driver"):
        return [d for d in _drivers() if d.startswith(current)]
    if flag == "--shell":
        return [s for s in SHELLS_FOR_ENV if s.startswith(current)]
    if command == "help":
        return [c for c in _commands() if c.startswith(current)] if not rest else []
    if command == "completion":
        return [s for s in COMPLETION_SHELLS if s.startswith(current)] if not rest else []
    flags = command_flags(ctx, command, _driver_args(rest) if command == "create" else ())
    if flag is not None and flag.startswith("-") and flags.get(flag.split("=", 1)[0]):
        return []  # a flag's free-form value
    if current.startswith("-"):
        return sorted(f for f in flags if f.startswith(current))
    if command in _NO_MACHINE_ARGS:
        return []
    return [n for n in _machine_names(ctx) if n.startswith(current)]


BASH = r"""# pymachine bash completion: eval "$(pymachine completion bash)" (e.g. in ~/.bashrc)
_pymachine() {
    local IFS=$'\n'
    COMPREPLY=($(pymachine __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -o default -o nospace -F _pymachine pymachine 2>/dev/null \
    || complete -o default -F _pymachine pymachine
"""

ZSH = r"""#compdef pymachine
# pymachine zsh completion: source <(pymachine completion zsh) after compinit,
# or save it as _pymachine in a directory on $fpath.
_pymachine() {
    local -a candidates
    candidates=("${(@f)$(pymachine __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    candidates=(${candidates:#})
    if (( ${#candidates} )); then
        compadd -- "${candidates[@]}"
    else
        _files
    fi
}
if [[ "${funcstack[1]}" == "_pymachine" ]]; then
    _pymachine "$@"
else
    compdef _pymachine pymachine
fi
"""

FISH = r"""# pymachine fish completion: pymachine completion fish > ~/.config/fish/completions/pymachine.fish
function __pymachine_complete
    set -l tokens (commandline -opc) (commandline -ct)
    pymachine __complete $tokens[2..-1] 2>/dev/null
end
complete -c pymachine -f -n 'not __fish_seen_subcommand_from scp mount' -a '(__pymachine_complete)'
complete -c pymachine -F -n '__fish_seen_subcommand_from scp mount' -a '(__pymachine_complete)'
"""

SCRIPTS = {"bash": BASH, "zsh": ZSH, "fish": FISH}


def cmd_completion(ctx: Context, args: list[str]) -> int:
    if args and args[0] in ("-h", "--help", "-help"):
        print("Usage: pymachine completion bash|zsh|fish\n\n"
              "Print the shell completion script (bash: eval \"$(pymachine completion bash)\").")
        return 0
    if not args:
        raise UsageError("Error: name a shell: pymachine completion bash|zsh|fish")
    if len(args) > 1:
        raise UsageError(f"Invalid command line. Found extra arguments {args[1:]}")
    shell = args[0]
    if shell not in SCRIPTS:
        raise UsageError(f"unknown shell {shell!r}: choose one of {', '.join(COMPLETION_SHELLS)}")
    print(SCRIPTS[shell], end="")
    return 0


def cmd_complete(ctx: Context, args: list[str]) -> int:
    """``pymachine __complete WORDS...``: one candidate per line (hidden; the scripts call it)."""
    for candidate in complete(ctx, args):
        print(candidate)
    return 0
