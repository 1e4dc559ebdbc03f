"""Driver secrets (API tokens, access keys, passwords) kept out of config.json.

config.json is read by tools, pasted into bug reports and backed up; secrets
given by flag live instead in ``<machine dir>/secrets.json`` (0600), which
only the driver reads.  A driver falls back to the provider's own credential
chain (environment, profile files) when no secret was saved.
"""

from __future__ import annotations

import json
from pathlib import Path

from pymachine.machine.atomic import write_atomic

FILE = "secrets.json"


def load_secrets(machine_dir: str | Path) -> dict[str, str]:
    try:
        data = json.loads((Path(machine_dir) / FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def load_secret(machine_dir: str | Path, key: str) -> str | None:
    return load_secrets(machine_dir).get(key)


def save_secrets(machine_dir: str | Path, **values: str | None) -> None:
    """Merge ``values`` (None or "" removes a key) into the machine's secrets file (0600)."""
    current = load_secrets(machine_dir)
    for key, value in values.items():
        if value:
            current[key] = value
        else:
            current.pop(key, None)
    write_atomic(Path(machine_dir) / FILE, json.dumps(current, indent=1).encode(), mode=0o600)
