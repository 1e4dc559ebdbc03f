"""Proxy URLs shown without their password, whatever the user typed."""

from __future__ import annotations

import pytest
from pymachine.engine.proxy import redact_url
from pymachine.machine.secrets import split_host_secrets


@pytest.mark.parametrize(
    "url,shown",
    [
        ("http://bob:pw@proxy:3128", "http://bob:****@proxy:3128"),
        ("http://token@proxy:3128/", "http://****@proxy:3128/"),
        ("http://bob:p/ss@proxy:3128", "http://bob:****@proxy:3128"),  # unencoded "/" in the password
        ("http://bob:p@ss@proxy:3128", "http://bob:****@proxy:3128"),  # unencoded "@"
        ("http://proxy:3128", "http://proxy:3128"),
        ("localhost,.corp,10.0.0.0/8", "localhost,.corp,10.0.0.0/8"),
        ("", ""),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_split_host_secrets_redacts_in_place_and_returns_the_real_values():
    options = {
        "EngineOptions": {
            "Env": ["HTTPS_PROXY=https://u:secret@p:1", "PLAIN=1"],
            "Pymachine": {"Proxy": {"HttpProxy": "http://u:secret@p:1", "HttpsProxy": "", "NoProxy": ""}},
        },
        "SwarmOptions": {"Env": ["HTTPS_PROXY=https://u:secret@p:1"]},
    }
    found = split_host_secrets(options)
    assert found == {"Proxy.HttpProxy": "http://u:secret@p:1", "EngineEnv.HTTPS_PROXY": "https://u:secret@p:1"}
    assert "secret" not in repr(options)
    assert split_host_secrets(options) == {}  # already redacted: nothing new to keep
