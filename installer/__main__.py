"""``python -m pymachine.installer``: refresh the lock, build installers, write and check SHA256SUMS.

    python -m pymachine.installer lock [--update] [--only NAME] [--lock FILE]
    python -m pymachine.installer build --platform linux|windows|macos|all --out DIR [--lock FILE]
        [--without NAME] [--source DIR] [--cert C --key K] [--gpg-key ID | --minisign-key FILE]
    python -m pymachine.installer verify DIR [--gpg-home H | --minisign-pub FILE]
    python -m pymachine.installer cli-plugins [--remove] DIR [--config-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from pymachine.installer.lock import DEFAULT_LOCK, Lock
from pymachine.installer.sources import default_source
from pymachine.machine.errors import MachineError


def _lock_cmd(ns: argparse.Namespace) -> int:
    from pymachine.installer import lock as lockmod

    lock = Lock.load(ns.lock)
    if not ns.update:
        for plat, comps in sorted(lock.platforms.items()):
            for c in comps:
                pin = f"{c.sha256[:12]} {c.size}" if c.sha256 else "UNPINNED"
                print(f"{plat:8} {c.name:22} {c.arch or 'any':7} {c.version:12} {pin}")
        return 0
    changes = lockmod.update(lock, set(ns.only) if ns.only else None)
    lock.save(ns.lock)
    print("\n".join(changes) if changes else "lock is up to date")
    return 0


def _components(lock: Lock, platform: str, without: list[str], arch: str | None = None):
    comps = [c for c in lock.components(platform, arch) if c.name not in without]
    for c in comps:
        c.require_pinned()
    return comps


def _build_cmd(ns: argparse.Namespace) -> int:
    from pymachine.installer import sums

    lock = Lock.load(ns.lock)
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    source = Path(ns.source).resolve() if ns.source else default_source()
    platforms = ["linux", "windows", "macos"] if ns.platform == "all" else [ns.platform]
    artefacts: list[Path] = []
    for plat in platforms:
        started = time.monotonic()
        if plat == "linux":
            from pymachine.installer import linux

            artefacts.append(linux.build_pyz(out / "pymachine.pyz", source=source))
            for arch in lock.arches("linux"):
                artefacts.append(linux.build_deb(out, _components(lock, "linux", ns.without, arch),
                                                 source=source, arch=arch))
        elif plat == "windows":
            from pymachine.installer import windows

            artefacts.append(windows.build_exe(out, _components(lock, "windows", ns.without, "x86_64"),
                                               cert=ns.cert, key=ns.key, source=source))
        else:
            from pymachine.installer import macos

            for arch in lock.arches("macos"):  # one .pkg per Mac: see installer/macos.py
                artefacts.append(macos.build_pkg(out, _components(lock, "macos", ns.without, arch),
                                                 source=source, arch=arch))
        sys.stderr.write(f"{plat}: built in {time.monotonic() - started:.2f}s\n")
    sums_path = sums.write_sums(out, artefacts)
    if ns.gpg_key:
        sums.sign_gpg(sums_path, ns.gpg_key)
    elif ns.minisign_key:
        sums.sign_minisign(sums_path, Path(ns.minisign_key))
    for a in [*artefacts, sums_path]:
        print(f"{a.stat().st_size:>10}  {a.name}")
    return 0


def _verify_cmd(ns: argparse.Namespace) -> int:
    from pymachine.installer import sums

    directory = Path(ns.dir)
    if ns.minisign_pub:
        sums.verify_minisign(directory / "SHA256SUMS", Path(ns.minisign_pub))
    elif (directory / "SHA256SUMS.asc").exists() or ns.gpg_home:
        sums.verify_gpg(directory / "SHA256SUMS", ns.gpg_home)
    checked = sums.check_sums(directory)
    print(f"OK: signature and {len(checked)} checksums")
    return 0


def _cli_plugins_cmd(ns: argparse.Namespace) -> int:
    from pymachine.machine import cli_plugins as docker_config
    from pymachine.machine.docker_context import docker_config_dir

    cfg = Path(ns.config_dir) if ns.config_dir else docker_config_dir()
    changed = docker_config.remove_plugin_dir(ns.dir, cfg) if ns.remove else docker_config.add_plugin_dir(ns.dir, cfg)
    print(f"{cfg / 'config.json'}: {docker_config.KEY} {'updated' if changed else 'unchanged'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pymachine.installer", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    lk = sub.add_parser("lock", help="show or refresh the component lock")
    lk.add_argument("--lock", default=str(DEFAULT_LOCK))
    lk.add_argument("--update", action="store_true", help="refresh from upstream release metadata")
    lk.add_argument("--only", action="append", default=[], help="update only this component")
    b = sub.add_parser("build", help="build installers from the lock")
    b.add_argument("--lock", default=str(DEFAULT_LOCK))
    b.add_argument("--platform", required=True, choices=["linux", "windows", "macos", "all"])
    b.add_argument("--out", required=True)
    b.add_argument("--source", default=None,
                   help="tree holding pymachine's packages (default: this checkout)")
    b.add_argument("--without", action="append", default=[], help="leave out this component")
    b.add_argument("--cert", help="Authenticode certificate (PEM) for the Windows installer")
    b.add_argument("--key", help="Authenticode private key (PEM)")
    b.add_argument("--gpg-key", default=os.environ.get("PYMACHINE_GPG_KEY", ""), help="gpg key id to sign SHA256SUMS")
    b.add_argument("--minisign-key", default=os.environ.get("PYMACHINE_MINISIGN_KEY", ""))
    v = sub.add_parser("verify", help="check SHA256SUMS and its signature")
    v.add_argument("dir")
    v.add_argument("--gpg-home", default=None)
    v.add_argument("--minisign-pub", default=None)
    cp = sub.add_parser("cli-plugins", help="add (or --remove) a docker CLI plugin dir in the user's Docker config")
    cp.add_argument("dir")
    cp.add_argument("--remove", action="store_true")
    cp.add_argument("--config-dir", default=None, help="the Docker config dir (default: $DOCKER_CONFIG or ~/.docker)")
    ns = p.parse_args(argv)
    try:
        return {"lock": _lock_cmd, "build": _build_cmd, "verify": _verify_cmd,
                "cli-plugins": _cli_plugins_cmd}[ns.cmd](ns)
    except MachineError as exc:
        sys.stderr.write(f"{exc}\n")
        return exc.exit_code or 1


if __name__ == "__main__":
    sys.exit(main())
