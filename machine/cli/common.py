"""What every command shares: the global context, argument parsing, target names."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence

from pymachine.machine.cli.usage import ARGV0, UsageError
from pymachine.machine.errors import MachineError
from pymachine.machine.store import Store

__all__ = ["ARGV0", "Context", "UsageError", "one_target", "parse", "parser", "run_concurrently", "target_names"]


class Context:
    """What every command gets: the store, the global flags and the environment.

    A plain class, not a dataclass: ``dataclasses`` (with ``inspect``) costs ~10 ms
    of start-up on every ``pymachine env``.
    """

    def __init__(
        self,
        store: Store,
        debug: bool = False,
        native_ssh: bool = False,
        tls_ca_cert: str | None = None,
        tls_ca_key: str | None = None,
        tls_client_cert: str | None = None,
        tls_client_key: str | None = None,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.store = store
        self.debug = debug
        self.native_ssh = native_ssh
        self.tls_ca_cert = tls_ca_cert
        self.tls_ca_key = tls_ca_key
        self.tls_client_cert = tls_client_cert
        self.tls_client_key = tls_client_key
        self.environ = dict(os.environ) if environ is None else environ
        self._out_lock = threading.Lock()

    def out(self, text: str) -> None:
        """Info messages and results go to stdout, as docker-machine's log.Info did."""
        with self._out_lock:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def err(self, text: str) -> None:
        with self._out_lock:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()


def parser(command: str, description: str, usage_args: str = "[arg...]"):
    """An argparse parser that fails with one line and exit code 1 (see argparsing.py)."""
    from pymachine.machine.cli.argparsing import parser as make

    return make(command, description, usage_args)


def parse(p, args: Sequence[str]):
    from pymachine.machine.cli.argparsing import parse as run

    return run(p, args)


def target_names(ctx: Context, names: Sequence[str]) -> list[str]:
    """docker-machine's targetHost rule: no name means the machine called ``default``."""
    if names:
        return list(names)
    if ctx.store.exists("default"):
        return ["default"]
    raise UsageError('Error: No machine name(s) specified and no "default" machine exists')


def one_target(ctx: Context, names: Sequence[str]) -> str:
    if len(names) > 1:
        raise UsageError("Error: Expected one machine name as an argument")
    return target_names(ctx, names)[0]


def run_concurrently(names: Sequence[str], action: Callable[[str], None]) -> None:
    """Run ``action`` for each machine at once (as docker-machine's runAction); join errors."""
    errors: list[str] = []
    if len(names) == 1:
        action(names[0])
        return
    from concurrent.futures import ThreadPoolExecutor  # ~11 ms with logging: only when needed

    with ThreadPoolExecutor(max_workers=min(16, len(names))) as pool:
        futures = {pool.submit(action, n): n for n in names}
        for fut in futures:
            exc = fut.exception()
            if exc is not None:
                errors.append(str(exc))
    if errors:
        raise MachineError("\n".join(errors))
