"""Driver secrets (API tokens, access keys, passwords) kept out of config.json.

config.json is read by tools, pasted into bug reports and backed up; secrets
given by flag live instead in ``<machine dir>/secrets.json`` (0600), which
only the driver reads.  A driver falls back to the provider's own credential
chain (environment, profile files) when no secret was saved.
"""

from __future__ import annotations

import json
from pathlib import Path

from pymachine.machine import layout
from pymachine.machine.atomic import write_atomic

FILE = layout.SECRETS


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


# Proxy credentials ---------------------------------------------------------------------
# ``--http-proxy http://user:PASS@proxy`` (and https/no-proxy, ``--engine-env K=URL``)
# would otherwise sit in config.json, which ``inspect`` and ``ls --format json`` print.
# config.json keeps the URL with the password replaced (``user:****@``); the real value
# lives here under ``Proxy.<Field>`` / ``EngineEnv.<NAME>`` and is put back only where
# the engine is configured (``engine_with_secrets``).
_PROXY_FIELDS = ("HttpProxy", "HttpsProxy", "NoProxy")


def split_host_secrets(host_options: dict) -> dict[str, str]:
    """Redact credentials in ``host_options`` in place; return ``{secret key: real value}``."""
    from pymachine.engine.proxy import redact_url

    found: dict[str, str] = {}
    engine = host_options.get("EngineOptions")
    if isinstance(engine, dict):
        ext = engine.get("Pymachine")
        proxy = ext.get("Proxy") if isinstance(ext, dict) else None
        if isinstance(proxy, dict):
            for field in _PROXY_FIELDS:
                value = proxy.get(field)
                if isinstance(value, str) and redact_url(value) != value:
                    found[f"Proxy.{field}"] = value
                    proxy[field] = redact_url(value)
        found.update(_split_env(engine.get("Env"), "EngineEnv"))
    swarm = host_options.get("SwarmOptions")
    if isinstance(swarm, dict):
        _split_env(swarm.get("Env"), "EngineEnv")  # same values as the engine's: redact only
    return found


def _split_env(items: object, prefix: str) -> dict[str, str]:
    from pymachine.engine.proxy import redact_url

    found: dict[str, str] = {}
    if not isinstance(items, list):
        return found
    for i, item in enumerate(items):
        if not isinstance(item, str):
            continue
        key, sep, value = item.partition("=")
        if sep and redact_url(value) != value:
            found[f"{prefix}.{key}"] = value
            items[i] = f"{key}={redact_url(value)}"
    return found


def protect_host(machine_dir: str | Path, host_options: dict) -> None:
    """Before a config is written: move credentials out of it into secrets.json.

    Secrets are written first, so a config never names a secret that is not kept;
    nothing is written when the machine dir is gone (a concurrent ``rm`` wins).
    """
    found = split_host_secrets(host_options)
    if found and Path(machine_dir).is_dir():
        save_secrets(machine_dir, **found)


def engine_with_secrets(machine_dir: str | Path, engine):
    """``engine`` (an EngineOptions) with the real proxy URLs put back from secrets.json.

    A value is restored only where config.json still holds its redacted form, so a
    proxy the user later changed by hand is not replaced by an old secret.
    """
    from dataclasses import replace

    from pymachine.engine.proxy import redact_url

    kept = load_secrets(machine_dir)
    if not kept:
        return engine
    proxy = engine.proxy
    changes = {}
    for field, attr in zip(_PROXY_FIELDS, ("http_proxy", "https_proxy", "no_proxy"), strict=True):
        real = kept.get(f"Proxy.{field}")
        if real and getattr(proxy, attr) == redact_url(real):
            changes[attr] = real
    env = []
    for item in engine.env:
        key, sep, value = item.partition("=")
        real = kept.get(f"EngineEnv.{key}")
        env.append(f"{key}={real}" if sep and real and value == redact_url(real) else item)
    return replace(engine, proxy=replace(proxy, **changes), env=env)
