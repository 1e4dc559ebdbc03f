"""The one engine/swarm URL builder: IPv6 bracketed, no IP a clear error, every driver uses it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pymachine.machine import urls
from pymachine.machine.errors import MachineError

ROOT = Path(__file__).resolve().parents[2]


def test_engine_url_brackets_ipv6_and_refuses_no_ip():
    assert urls.engine_url("10.0.0.5") == "tcp://10.0.0.5:2376"
    assert urls.engine_url("fd00::5", 2377) == "tcp://[fd00::5]:2377"
    with pytest.raises(MachineError, match='Host "dev" has no IP address yet'):
        urls.engine_url("", machine="dev")


def test_swarm_url_takes_the_engine_host_and_the_swarm_port():
    assert urls.swarm_url("tcp://10.0.0.5:2376", "tcp://0.0.0.0:3377") == "tcp://10.0.0.5:3377"
    assert urls.swarm_url("tcp://[fd00::5]:2376", "") == "tcp://[fd00::5]:3376"
    with pytest.raises(MachineError):
        urls.swarm_url("", "")


def test_no_driver_formats_an_engine_url_itself():
    """A tcp:// f-string outside machine/urls.py is a second implementation waiting to drift."""
    offenders = []
    for path in sorted((ROOT / "machine").rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r'f"tcp://\{', line) and path.name != "urls.py":
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []
