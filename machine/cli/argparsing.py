"""argparse, configured the way docker-machine's CLI behaved.

Kept apart from ``common`` so the commands that need no flag parser framework
(``env``, the hottest path) do not pay ~12 ms to import argparse.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from pymachine.machine.cli.usage import ARGV0, UsageError


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


def seconds(text: str) -> float:
    """argparse ``type`` for a timeout: a finite, positive number (not ``inf``/``nan``)."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0 or value > 86400:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds between 0 and 86400, got {text!r}"
        )
    return value


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


