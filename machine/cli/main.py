"""Entry point: global flags, then one command module imported on demand.

Global flags come before the command, as in docker-machine.  Each command
lives in its own module and is imported only when run, so ``pymachine env``
never pays for the SDKs, paramiko or cryptography that ``create`` needs.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from pymachine.machine import __version__
from pymachine.machine.cli.common import ARGV0, Context, UsageError
from pymachine.machine.errors import MachineError
from pymachine.machine.store import Store, default_storage_path

# command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "active": ("info", "cmd_active", "Print which machine is active"),
    "completion": ("completion", "cmd_completion", "Print a shell completion script (bash, zsh, fish)"),
    "config": ("env", "cmd_config", "Print the connection config for machine"),
    "create": ("create", "cmd_create", "Create a machine"),
    "env": ("env", "cmd_env", "Display the commands to set up the environment for the Docker client"),
    "engine": ("engine_cmd", "cmd_engine", "Build and inspect engine bundles (pymachine engine bundle ...)"),
    "image": ("image_cmd", "cmd_image", "Build and list pymachine base VM images"),
    "inspect": ("info", "cmd_inspect", "Inspect information about a machine"),
    "ip": ("info", "cmd_ip", "Get the IP address of a machine"),
    "kill": ("lifecycle", "cmd_kill", "Kill a machine"),
    "logs": ("logs_cmd", "cmd_logs", "Show a machine's host agent log (published ports, conflicts)"),
    "ls": ("ls", "cmd_ls", "List machines"),
    "mount": ("sshcmds", "cmd_mount", "Mount or unmount a directory from a machine with SSHFS."),
    "provision": ("lifecycle", "cmd_provision", "Re-provision existing machines"),
    "quickstart": (
        "quickstart_cmd",
        "cmd_quickstart",
        "Create or start the default machine and open a shell wired to it",
    ),
    "regenerate-certs": ("lifecycle", "cmd_regenerate_certs", "Regenerate TLS Certificates for a machine"),
    "restart": ("lifecycle", "cmd_restart", "Restart a machine"),
    "rm": ("lifecycle", "cmd_rm", "Remove a machine"),
    "ssh": ("sshcmds", "cmd_ssh", "Log into or run a command on a machine with SSH."),
    "ssh-config": (
        "sshconfig_cmd",
        "cmd_ssh_config",
        "Print an OpenSSH config block for a machine (ssh -F, rsync, VS Code)",
    ),
    "scp": ("sshcmds", "cmd_scp", "Copy files between machines"),
    "start": ("lifecycle", "cmd_start", "Start a machine"),
    "status": ("info", "cmd_status", "Get the status of a machine"),
    "stop": ("lifecycle", "cmd_stop", "Stop a machine"),
    "swarm": ("swarm_cmd", "cmd_swarm", "List swarm-mode clusters and their nodes"),
    "upgrade": ("lifecycle", "cmd_upgrade", "Upgrade a machine to the latest version of Docker"),
    "url": ("info", "cmd_url", "Get the URL of a machine"),
    "use": ("use", "cmd_use", "Make a machine the current Docker CLI context (no eval needed)"),
    "version": ("info", "cmd_version", "Show the pymachine version or a machine docker version"),
    "help": ("main", "cmd_help", "Shows a list of commands or help for one command"),
    "__complete": ("completion", "cmd_complete", "(hidden) completion candidates for the shell scripts"),
}

# flag -> (attribute, env var, takes a value)
GLOBAL_FLAGS: dict[str, tuple[str, str | None, bool]] = {
    "--debug": ("debug", "MACHINE_DEBUG", False),
    "-D": ("debug", "MACHINE_DEBUG", False),
    "--storage-path": ("storage_path", "MACHINE_STORAGE_PATH", True),
    "-s": ("storage_path", "MACHINE_STORAGE_PATH", True),
    "--tls-ca-cert": ("tls_ca_cert", "MACHINE_TLS_CA_CERT", True),
    "--tls-ca-key": ("tls_ca_key", "MACHINE_TLS_CA_KEY", True),
    "--tls-client-cert": ("tls_client_cert", "MACHINE_TLS_CLIENT_CERT", True),
    "--tls-client-key": ("tls_client_key", "MACHINE_TLS_CLIENT_KEY", True),
    "--github-api-token": ("github_api_token", "MACHINE_GITHUB_API_TOKEN", True),
    "--native-ssh": ("native_ssh", "MACHINE_NATIVE_SSH", False),
    "--bugsnag-api-token": ("bugsnag_api_token", "MACHINE_BUGSNAG_API_TOKEN", True),
}


def version_line() -> str:
    return f"{ARGV0} version {__version__}, build python"


def app_help() -> str:
    width = max(len(c) for c in COMMANDS if not c.startswith("_")) + 2
    lines = [
        f"Usage: {ARGV0} [OPTIONS] COMMAND [arg...]",
        "",
        "Create and manage machines running Docker.",
        "",
        f"Version: {__version__}",
        "",
        "Options:",
        "  --debug, -D                Enable debug mode (every remote command and its timing) [$MACHINE_DEBUG]",
        "  --storage-path, -s         Configures storage path [$MACHINE_STORAGE_PATH]",
        "  --tls-ca-cert              CA to verify remotes against [$MACHINE_TLS_CA_CERT]",
        "  --tls-ca-key               Private key to generate certificates [$MACHINE_TLS_CA_KEY]",
        "  --tls-client-cert          Client cert to use for TLS [$MACHINE_TLS_CLIENT_CERT]",
        "  --tls-client-key           Private key used in client TLS auth [$MACHINE_TLS_CLIENT_KEY]",
        "  --github-api-token         Token to use for requests to the Github API [$MACHINE_GITHUB_API_TOKEN]",
        "  --native-ssh               Use the native (Python) SSH implementation [$MACHINE_NATIVE_SSH]",
        "  --bugsnag-api-token        Accepted for compatibility; pymachine sends no crash reports",
        "  --help, -h                 show help",
        "  --version, -v              print the version",
        "",
        "Commands:",
    ]
    lines += [f"  {name:<{width}}{info[2]}" for name, info in COMMANDS.items() if not name.startswith("_")]
    lines += ["", f"Run '{ARGV0} COMMAND --help' for more information on a command."]
    return "\n".join(lines)


def cmd_help(ctx: Context, args: Sequence[str]) -> int:
    if args and args[0] in COMMANDS and args[0] != "help":
        return dispatch(ctx, args[0], ["--help"])
    if args and args[0] != "help":  # urfave/cli's answer, as docker-machine gave it
        raise UsageError(f"No help topic for {args[0]!r}")
    print(app_help())
    return 0


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def parse_globals(argv: Sequence[str], environ: dict[str, str]) -> tuple[dict[str, object], list[str]]:
    values: dict[str, object] = {}
    for attr, env, takes in GLOBAL_FLAGS.values():
        if env and env in environ and attr not in values:
            values[attr] = environ[env] if takes else _truthy(environ[env])
    i = 0
    args = list(argv)
    while i < len(args) and args[i].startswith("-"):
        arg = args[i]
        if arg in ("-h", "--help", "-help"):
            return {"help": True}, []
        if arg in ("-v", "--version"):
            return {"version": True}, []
        name, eq, inline = arg.partition("=")
        if name not in GLOBAL_FLAGS:
            raise UsageError(f"flag provided but not defined: {name}")
        attr, _env, takes = GLOBAL_FLAGS[name]
        if takes:
            if eq:
                values[attr] = inline
            elif i + 1 < len(args):
                i += 1
                values[attr] = args[i]
            else:
                raise UsageError(f"flag needs an argument: {name}")
        else:
            values[attr] = _truthy(inline) if eq else True
        i += 1
    return values, args[i:]


def dispatch(ctx: Context, command: str, args: Sequence[str]) -> int:
    if command not in COMMANDS:
        raise UsageError(f"{ARGV0}: '{command}' is not a {ARGV0} command. See '{ARGV0} --help'.")
    module_name, func_name, _ = COMMANDS[command]
    module = (
        sys.modules[__name__]
        if module_name == "main"
        else importlib.import_module(f"pymachine.machine.cli.{module_name}")
    )
    result = getattr(module, func_name)(ctx, list(args))
    return int(result or 0)


def setup_debug(enabled: bool) -> None:
    if enabled:
        import logging  # only with --debug: logging costs start-up time on every command

        logging.basicConfig(
            level=logging.DEBUG, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
        )
        # Third-party chatter (paramiko transport, boto) stays at INFO: keys must never be logged.
        for noisy in ("paramiko", "botocore", "boto3", "urllib3", "azure"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def missing_sdk_hint(exc: ModuleNotFoundError, argv: list[str], environ: dict[str, str]) -> str | None:
    """One line naming the pip extra for a missing optional SDK; the driver from ``create -d``,
    or the named machine's stored driver, picks the extra where several bring the module."""
    from pymachine.machine import extras

    driver = None
    try:
        values, rest = parse_globals(argv, environ)
        if rest[:1] == ["create"]:
            from pymachine.machine.cli.create import find_driver

            driver = find_driver(rest[1:], environ)
        else:
            storage = values.get("storage_path") or default_storage_path(environ)
            names = [a for a in rest[1:] if not a.startswith("-")]
            if names:
                driver = Store(str(storage)).load(names[0]).driver_name
    except Exception:  # noqa: BLE001 -- only a better hint is at stake
        driver = None
    return extras.install_hint(exc.name or "", driver)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = dict(os.environ)
    try:
        values, rest = parse_globals(argv, environ)
        if values.get("version"):
            print(version_line())
            return 0
        if values.get("help") or not rest:
            print(app_help())
            return 0
        setup_debug(bool(values.get("debug")))
        storage = values.get("storage_path") or default_storage_path(environ)
        ctx = Context(
            store=Store(str(storage)),
            debug=bool(values.get("debug")),
            native_ssh=bool(values.get("native_ssh")),
            tls_ca_cert=values.get("tls_ca_cert"),  # type: ignore[arg-type]
            tls_ca_key=values.get("tls_ca_key"),  # type: ignore[arg-type]
            tls_client_cert=values.get("tls_client_cert"),  # type: ignore[arg-type]
            tls_client_key=values.get("tls_client_key"),  # type: ignore[arg-type]
            environ=environ,
        )
        return dispatch(ctx, rest[0], rest[1:])
    except MachineError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"{exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # noqa: BLE001 -- a bug: still one line for the user, the trace with --debug
        hint = missing_sdk_hint(exc, argv, environ) if isinstance(exc, ModuleNotFoundError) else None
        if hint:  # not a bug: an optional SDK this install lacks
            sys.stdout.flush()
            sys.stderr.write(hint + "\n")
            return 1
        if "logging" in sys.modules and sys.modules["logging"].getLogger().isEnabledFor(10):
            sys.modules["logging"].getLogger("pymachine").exception("unexpected error")
        sys.stderr.write(f"Error: {exc.__class__.__name__}: {exc} (run with --debug for details)\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
