"""SHA256SUMS for the final, signed artefacts, and its detached signature.

Checksums are taken after Authenticode signing and on the published file
names (Toolbox's sums did not match its releases because they were not).
The list is signed with gpg (key id from --gpg-key / $PYMACHINE_GPG_KEY,
keyring from $GNUPGHOME) or minisign (secret key file), both offline.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from pymachine.installer.fetch import sha256_file
from pymachine.machine.errors import MachineError

SUMS = "SHA256SUMS"


class SignatureError(MachineError):
    """A checksum or signature does not verify."""


def write_sums(directory: Path, artefacts: Iterable[Path]) -> Path:
    lines = sorted((a.name, f"{sha256_file(a)}  {a.name}\n") for a in artefacts)
    path = directory / SUMS
    path.write_text("".join(line for _name, line in lines))
    return path


def check_sums(directory: Path) -> list[str]:
    """Verify every file listed in SHA256SUMS; returns the names checked."""
    names = []
    for line in (directory / SUMS).read_text().splitlines():
        digest, _, name = line.partition("  ")
        if not name or "/" in name or name.startswith("."):
            raise SignatureError(f"{SUMS}: malformed line {line!r}")
        path = directory / name
        if not path.is_file():
            raise SignatureError(f"{name}: listed in {SUMS} but missing")
        actual = sha256_file(path)
        if actual != digest:
            raise SignatureError(f"{name}: sha256 {actual} does not match {SUMS} ({digest})")
        names.append(name)
    return names


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, check=False)
    except FileNotFoundError:
        raise MachineError(f"{argv[0]} is not installed") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise SignatureError(f"{what} failed: {detail[-1] if detail else proc.returncode}")
    return proc


def sign_gpg(sums: Path, key_id: str, gnupghome: str | None = None) -> Path:
    sig = sums.with_name(sums.name + ".asc")
    env = {**os.environ, **({"GNUPGHOME": gnupghome} if gnupghome else {})}
    _run(["gpg", "--batch", "--yes", "--local-user", key_id, "--armor", "--detach-sign",
          "--output", str(sig), str(sums)], "gpg signing", env)
    return sig


def verify_gpg(sums: Path, gnupghome: str | None = None) -> None:
    sig = sums.with_name(sums.name + ".asc")
    env = {**os.environ, **({"GNUPGHOME": gnupghome} if gnupghome else {})}
    _run(["gpg", "--batch", "--verify", str(sig), str(sums)], f"gpg verification of {sums.name}", env)


def sign_minisign(sums: Path, secret_key: Path) -> Path:
    sig = sums.with_name(sums.name + ".minisig")
    _run(["minisign", "-S", "-s", str(secret_key), "-m", str(sums), "-x", str(sig),
          "-t", f"pymachine {sums.name}"], "minisign signing")
    return sig


def verify_minisign(sums: Path, public_key: Path) -> None:
    sig = sums.with_name(sums.name + ".minisig")
    _run(["minisign", "-V", "-p", str(public_key), "-m", str(sums), "-x", str(sig)],
         f"minisign verification of {sums.name}")
