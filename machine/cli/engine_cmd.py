"""``pymachine engine bundle|inspect|verify``: offline engine bundles.

New in pymachine.  ``bundle`` builds the archive that ``create
--engine-install-source bundle --engine-bundle FILE`` installs on hosts with
no network; ``inspect`` prints its manifest and ``verify`` checks every
digest, so a bundle can be checked before it is trusted.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from pymachine.machine.cli.common import ARGV0, Context, UsageError, parse, parser

USAGE = f"""Usage: {ARGV0} engine COMMAND [OPTIONS] [arg...]

Build and inspect engine bundles: one archive that installs a Docker engine
on a host with no network access.

Commands:
  bundle   Build a bundle (--from-static TGZ | --from-debs DIR | --from-apt) [-o FILE]
  inspect  Print a bundle's manifest
  verify   Check every file of a bundle against its manifest

Run '{ARGV0} engine COMMAND --help' for more information on a command."""


def cmd_engine(ctx: Context, args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    sub, rest = args[0], args[1:]
    if sub == "bundle":
        return _bundle(ctx, rest)
    if sub == "inspect":
        return _inspect(ctx, rest)
    if sub == "verify":
        return _verify(ctx, rest)
    raise UsageError(f"{ARGV0} engine: '{sub}' is not an engine command. See '{ARGV0} engine --help'.")


def _bundle(ctx: Context, args: list[str]) -> int:
    from pymachine.engine import bundle

    p = parser("engine bundle", "Build an offline Docker engine bundle", "")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--from-static", metavar="TGZ",
                     help="Docker's static binaries archive (docker-<version>.tgz)")
    src.add_argument("--from-debs", metavar="DIR",
                     help="a directory of .deb files (docker.io, containerd, runc, tini, libraries)")
    src.add_argument("--from-apt", action="store_true",
                     help="download Debian's docker.io, containerd, runc, tini and their libraries "
                          "with apt-get download")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="archive to write (default: pymachine-engine-<version>-<arch>.tar.gz here)")
    ns = parse(p, args)
    if ns.rest:
        raise UsageError(f"Invalid command line. Found extra arguments {ns.rest}")
    if ns.from_static:
        kind, source = "static", Path(ns.from_static)
    elif ns.from_debs:
        kind, source = "debs", Path(ns.from_debs)
    elif ns.from_apt:
        kind, source = "apt", None
    else:
        raise UsageError("Error: give a source: --from-static TGZ, --from-debs DIR or --from-apt")
    started = time.monotonic()
    info = bundle.build_bundle(kind, source, Path(ns.output) if ns.output else None, log=ctx.err)
    ctx.err(f"Built Docker {info.engine_version} bundle in {time.monotonic() - started:.1f} s "
            f"({info.path.stat().st_size / 1e6:.1f} MB)")
    # sha256sum's format, so `sha256sum -c` can check a copy of the file later.
    ctx.out(f"{info.sha256}  {info.path}")
    return 0


def _one_file(command: str, description: str, args: list[str]) -> Path:
    p = parser(f"engine {command}", description, "FILE")
    p.add_argument("file", nargs="?")
    ns = parse(p, args)
    if not ns.file or ns.rest:
        raise UsageError(f"Error: {ARGV0} engine {command} expects one bundle file")
    return Path(ns.file)


def _inspect(ctx: Context, args: list[str]) -> int:
    from pymachine.engine import bundle

    path = _one_file("inspect", "Print an engine bundle's manifest", args)
    sys.stdout.write(json.dumps(bundle.read_manifest(path), indent=2) + "\n")
    return 0


def _verify(ctx: Context, args: list[str]) -> int:
    from pymachine.engine import bundle

    path = _one_file("verify", "Check every file of an engine bundle against its manifest", args)
    manifest = bundle.verify_bundle(path)
    ctx.out(f"bundle {path}: OK (Docker {manifest.get('engine_version')}, "
            f"{len(manifest['files'])} files)")
    return 0
