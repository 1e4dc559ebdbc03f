"""Commands that change machines: start, stop, restart, kill, rm, provision,
regenerate-certs, upgrade.  Multi-machine forms run concurrently."""

from __future__ import annotations

import sys

from pymachine.machine.cli.common import (
    ARGV0,
    Context,
    UsageError,
    parse,
    parser,
    run_concurrently,
    target_names,
)
from pymachine.machine.errors import MachineError, quoted
from pymachine.machine.store import os_errors_as_messages


def _names(ctx: Context, command: str, description: str, args: list[str]) -> list[str]:
    p = parser(command, description, "[arg...]")
    p.add_argument("names", nargs="*")
    ns = parse(p, args)
    return target_names(ctx, ns.names + ns.rest)


def _machine(ctx: Context, name: str):
    from pymachine.machine.host import Machine

    return Machine.load(ctx.store, name)


def _each(ctx: Context, names: list[str], op: str) -> None:
    def act(name: str) -> None:
        ctx.store.require(name)  # validated before the lock touches the disk
        with ctx.store.lock(name), os_errors_as_messages(f"{op} {name}", ctx.store.machine_dir(name)):
            getattr(_machine(ctx, name), op)(ctx.out)

    run_concurrently(names, act)


def cmd_start(ctx: Context, args: list[str]) -> int:
    _each(ctx, _names(ctx, "start", "Start a machine", args), "start")
    ctx.out(f"Started machines may have new IP addresses. You may need to re-run the `{ARGV0} env` command.")
    return 0


def cmd_stop(ctx: Context, args: list[str]) -> int:
    _each(ctx, _names(ctx, "stop", "Stop a machine", args), "stop")
    return 0


def cmd_restart(ctx: Context, args: list[str]) -> int:
    _each(ctx, _names(ctx, "restart", "Restart a machine", args), "restart")
    ctx.out(f"Restarted machines may have new IP addresses. You may need to re-run the `{ARGV0} env` command.")
    return 0


def cmd_kill(ctx: Context, args: list[str]) -> int:
    _each(ctx, _names(ctx, "kill", "Kill a machine", args), "kill")
    return 0


def confirm(prompt: str) -> bool:
    sys.stdout.write(prompt)
    sys.stdout.flush()
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError):
        return False
    return answer.strip().lower().startswith("y")


def cmd_rm(ctx: Context, args: list[str]) -> int:
    p = parser("rm", "Remove a machine", "[arg...]")
    p.add_argument(
        "--force",
        "-f",
        action="store_true",
        help="Remove local configuration even if machine cannot be removed, also implies an automatic yes (`-y`)",
    )
    p.add_argument(
        "-y",
        dest="yes",
        action="store_true",
        help="Assumes automatic yes to proceed with remove, without prompting further user confirmation",
    )
    p.add_argument("names", nargs="*")
    ns = parse(p, args)
    names = ns.names + ns.rest
    if not names:
        raise UsageError("Error: Expected to get one or more machine names as arguments")
    ctx.out(f"About to remove {', '.join(names)}")
    ctx.out("WARNING: This action will delete both local reference and remote instance.")
    if not (ns.yes or ns.force) and not confirm("Are you sure? (y/n): "):
        return 0
    errors: list[str] = []
    for name in names:
        try:
            remove_one(ctx, name, ns.force, assume_yes=ns.yes or ns.force)
            ctx.out(f"Successfully removed {name}")
        except MachineError as exc:
            errors.append(f"Error removing host {quoted(name)}: {exc}")
    if errors:
        raise MachineError("\n".join(errors))
    return 0


def remove_one(ctx: Context, name: str, force: bool, assume_yes: bool = False) -> None:
    """One machine through the library's rm (machine.removal); a store that cannot be written is one line."""
    from pymachine.machine.removal import remove_machine

    with os_errors_as_messages(f"remove {name}", ctx.store.machines_dir):
        remove_machine(ctx.store, name, force=force, log=ctx.out, confirm=confirm,
                       assume_yes=assume_yes, environ=ctx.environ)


def _not_provisionable(machine) -> MachineError:
    return MachineError(
        f'machine "{machine.name}" uses the {machine.driver.name} driver: pymachine has no SSH access to provision it'
    )


def _over_ssh(ctx: Context, names: list[str], operation: str) -> None:
    """Run ``machine.provision.<operation>`` on each machine, refusing drivers without SSH."""

    def act(name: str) -> None:
        ctx.store.require(name)
        with ctx.store.lock(name), os_errors_as_messages(f"{operation} {name}", ctx.store.machine_dir(name)):
            machine = _machine(ctx, name)
            if not machine.driver.provisionable:
                raise _not_provisionable(machine)
            from pymachine.machine import provision

            getattr(provision, operation)(machine, ctx.out)
            if operation == "reprovision" and "Creating" in (machine.host.extra.get("Pymachine") or {}):
                from pymachine.machine.creation import finish_create

                finish_create(machine)  # a provision that succeeds finishes an interrupted create

    run_concurrently(names, act)


def cmd_provision(ctx: Context, args: list[str]) -> int:
    _over_ssh(ctx, _names(ctx, "provision", "Re-provision existing machines", args), "reprovision")
    return 0


def cmd_regenerate_certs(ctx: Context, args: list[str]) -> int:
    p = parser("regenerate-certs", "Regenerate TLS Certificates for a machine", "[arg...]")
    p.add_argument("--force", "-f", action="store_true", help="Forces certificate regeneration w/o prompting")
    p.add_argument("--client-certs", action="store_true", help="Also regenerate client certificates and CA.")
    p.add_argument("names", nargs="*")
    ns = parse(p, args)
    names = target_names(ctx, ns.names + ns.rest)
    if not ns.force and not confirm("Regenerate TLS machine certs?  Warning: this is irreversible. (y/n): "):
        return 0
    if ns.client_certs:
        with os_errors_as_messages("regenerate the client certificates", ctx.store.certs_dir):
            regenerate_client_certs(ctx, names[0])

    def act(name: str) -> None:
        ctx.store.require(name)
        with ctx.store.lock(name), os_errors_as_messages(f"regenerate the certificates of {name}",
                                                         ctx.store.machine_dir(name)):
            machine = _machine(ctx, name)
            ctx.out("Regenerating TLS certificates")
            if machine.driver.provisionable:
                from pymachine.machine import provision

                provision.reprovision(machine, ctx.out, new_certs=True)
            else:
                from pymachine.machine.tls import copy_client_certs, issue_server_cert

                copy_client_certs(machine)
                issue_server_cert(machine)

    run_concurrently(names, act)
    return 0


def regenerate_client_certs(ctx: Context, name: str) -> None:
    """Make a new CA and client certificate (``--client-certs``)."""
    from pymachine.machine import certs

    ctx.out("Regenerating local certificates")
    tls = _machine(ctx, name).tls()
    paths = certs.CertPaths(tls.ca_cert, tls.ca_key, tls.client_cert, tls.client_key)
    own = ctx.store.certs_dir.resolve()
    # Only pymachine's own files (in the store's certs dir) are remade; a CA or client
    # certificate the user provided elsewhere is used as it is, never deleted.
    user = {p for p in (paths.ca_cert, paths.ca_key, paths.client_cert, paths.client_key)
            if p.resolve().parent != own}
    for cert, key in ((paths.ca_cert, paths.ca_key), (paths.client_cert, paths.client_key)):
        if cert not in user and key not in user:
            cert.unlink(missing_ok=True)
    certs.bootstrap_certificates(paths, log=ctx.out, lock_dir=ctx.store.certs_dir, user_files=user)


def cmd_upgrade(ctx: Context, args: list[str]) -> int:
    _over_ssh(ctx, _names(ctx, "upgrade", "Upgrade a machine to the latest version of Docker", args), "upgrade")
    return 0
