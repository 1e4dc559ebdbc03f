"""``ssh``, ``scp`` and ``mount``: hand over to the system tools, with the host key pinned.

docker-machine ran ``ssh -o StrictHostKeyChecking=no``; pymachine pins the
host key in the machine directory on first contact and passes that file to
ssh/scp/sshfs with strict checking.  ``--native-ssh`` (or no ``ssh`` binary)
uses the built-in paramiko client instead.
"""

from __future__ import annotations

import os
import subprocess
import sys

from pymachine.machine.cli.common import Context, UsageError, parse, parser, target_names
from pymachine.machine.drivers.base import State
from pymachine.machine.errors import MachineError


def _running_target(ctx: Context, name: str):
    from pymachine.machine.host import Machine
    from pymachine.machine.sshconnect import ssh_target

    machine = Machine.load(ctx.store, name)
    if not machine.driver.provisionable:
        raise MachineError(f'machine "{name}" uses the {machine.driver.name} driver: it has no SSH access')
    if machine.state() != State.RUNNING:
        raise MachineError(f'Error: Cannot run SSH command: Host "{name}" is not running')
    target = ssh_target(machine.driver)
    if not target.known_hosts.exists():
        _pin_host_key(target)
    return target


def _pin_host_key(target) -> None:
    """First contact: record the host key so the strict external client can verify it."""
    from pymachine.machine.ssh import SSHClient

    SSHClient.connect(target, timeout=10.0, wait=5.0).close()


def cmd_ssh(ctx: Context, args: list[str]) -> int:
    if args and args[0] in ("-h", "-help", "--help"):
        print("Usage: pymachine ssh [NAME] [-- COMMAND...]\n\nLog into or run a command on a machine with SSH.")
        return 0
    # Flags after the name belong to the remote command (docker-machine's SkipFlagParsing).
    name = args[0] if args and not args[0].startswith("-") else None
    rest = args[1:] if name else args
    if rest and rest[0] == "--":
        rest = rest[1:]
    name = name or target_names(ctx, [])[0]
    target = _running_target(ctx, name)
    from pymachine.machine.sshcommands import require_tool, ssh_argv

    if not ctx.native_ssh and _has_ssh():
        argv = require_tool(ssh_argv(target, rest))
        sys.stdout.flush()
        if os.name == "nt":  # execv there starts ssh.exe and returns to the shell at once
            return subprocess.call(argv)
        os.execv(argv[0], argv)
    return native_ssh(target, rest)


def _has_ssh() -> bool:
    import shutil

    return shutil.which("ssh") is not None


def native_ssh(target, command: list[str]) -> int:
    """The built-in client: run a command, or an interactive shell on a pty."""
    import shlex

    from pymachine.machine.ssh import SSHClient

    with SSHClient.connect(target, timeout=10.0) as client:
        if command:
            res = client.run(" ".join(shlex.quote(c) for c in command) if len(command) > 1 else command[0], check=False)
            sys.stdout.write(res.stdout)
            sys.stderr.write(res.stderr)
            return res.exit_status
        return _interactive(client)


def _interactive(client) -> int:
    import select
    import shutil

    try:
        import termios
        import tty
    except ImportError:  # Windows: no POSIX terminal to put in raw mode
        raise MachineError("An interactive shell with the built-in SSH client needs a POSIX terminal: "
                           "install Windows' OpenSSH client (ssh.exe), or pass a command") from None

    cols, rows = shutil.get_terminal_size()
    chan = client.transport.open_session()
    chan.get_pty(term=os.environ.get("TERM", "xterm"), width=cols, height=rows)
    chan.invoke_shell()
    stdin = sys.stdin.fileno()
    is_tty = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if is_tty else None
    try:
        if is_tty:
            tty.setraw(stdin)
        while True:
            ready, _, _ = select.select([chan, stdin], [], [], 1.0)
            if chan in ready:
                data = chan.recv(32768)
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if stdin in ready:
                data = os.read(stdin, 4096)
                if not data:
                    chan.shutdown_write()
                else:
                    chan.sendall(data)
            if chan.exit_status_ready() and not chan.recv_ready():
                break
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
    return chan.recv_exit_status()


def cmd_scp(ctx: Context, args: list[str]) -> int:
    from pymachine.machine.sshcommands import require_tool, scp_argv

    p = parser("scp", "Copy files between machines", "[[user@]machine:][path] [[user@]machine:][path]")
    p.add_argument(
        "--recursive", "-r", action="store_true", help="Copy files recursively (required to copy directories)"
    )
    p.add_argument(
        "--delta",
        "-d",
        action="store_true",
        help="Reduce amount of data sent over network by sending only the differences (uses rsync)",
    )
    p.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="Disables the progress meter as well as warning and diagnostic messages from ssh",
    )
    p.add_argument("paths", nargs="*")
    ns = parse(p, args)
    paths = ns.paths + ns.rest
    if len(paths) < 2:
        raise UsageError("Improper number of arguments")
    argv = scp_argv(paths[:-1], paths[-1], recursive=ns.recursive, quiet=ns.quiet, delta=ns.delta,
                    resolve=lambda name: _running_target(ctx, name))
    argv = require_tool(argv)
    return subprocess.call(argv)


def cmd_mount(ctx: Context, args: list[str]) -> int:
    from pymachine.machine.sshcommands import require_tool, sshfs_argv, unmount_argv

    p = parser("mount", "Mount or unmount a directory from a machine with SSHFS.", "[machine:][path] [mountpoint]")
    p.add_argument("--unmount", "-u", action="store_true", help="Unmount instead of mount")
    p.add_argument("paths", nargs="*")
    ns = parse(p, args)
    paths = ns.paths + ns.rest
    if not paths or len(paths) > 2:
        raise UsageError("Improper number of arguments")
    source = paths[0]
    machine_name, sep, remote = source.partition(":")
    if not sep:
        machine_name, remote = "default", source
    local = paths[1] if len(paths) == 2 else remote
    if ns.unmount:
        return subprocess.call(require_tool(unmount_argv(local)))
    target = _running_target(ctx, machine_name)
    os.makedirs(local, exist_ok=True)
    return subprocess.call(require_tool(sshfs_argv(target, remote, local)))
