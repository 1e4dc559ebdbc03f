"""What every command shares: the global context, argument parsing, target names."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NoReturn

from machine.errors import MachineError
from machine.store import Store

ARGV0 = "pymachine"


class UsageError(MachineError):
    """Bad command line: one line, exit 1 (docker-machine's codegangsta/cli did the same)."""


@dataclass
class Context:
    store: Store
    debug: bool = False
    native_ssh: bool = False
    tls_ca_cert: str | None = None
    tls_ca_key: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = None
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    _out_lock: threading.Lock = field(default_factory=threading.Lock)

    def out(self, text: str) -> None:
        """Info messages and results go to stdout, as docker-machine's log.Info did."""
        with self._out_lock:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def err(self, text: str) -> None:
        with self._out_lock:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line with exit code 1 instead of usage + 2."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            flags = [a for a in message.split(": ", 1)[1].split() if a.startswith("-")]
            if flags:
                raise UsageError(f"flag provided but not defined: {flags[0]}")
            raise UsageError(f"Invalid command line. Found extra arguments {message.split(': ', 1)[1].split()}")
        raise UsageError(message)

    def format_help(self) -> str:
        text = super().format_help()
        return "Usage:" + text[len("usage:"):] if text.startswith("usage:") else text

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise SystemExit(status)


def parser(command: str, description: str, usage_args: str = "[arg...]") -> Parser:
    return Parser(
        prog=f"{ARGV0} {command}",
        usage=f"{ARGV0} {command} [OPTIONS] {usage_args}",
        description=description,
        allow_abbrev=False,
    )


def parse(p: Parser, args: Sequence[str]) -> argparse.Namespace:
    ns, extra = p.parse_known_args(list(args))
    flags = [a for a in extra if a.startswith("-") and a != "-"]
    if flags:
        raise UsageError(f"flag provided but not defined: {flags[0]}")
    ns.rest = extra
    return ns


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
    with ThreadPoolExecutor(max_workers=min(16, len(names))) as pool:
        futures = {pool.submit(action, n): n for n in names}
        for fut in futures:
            exc = fut.exception()
            if exc is not None:
                errors.append(str(exc))
    if errors:
        raise MachineError("\n".join(errors))
