"""A server that breaks HTTP itself (garbage status line, short body, endless header) is one clear line.

``http.client`` raises ``HTTPException`` subclasses (BadStatusLine, IncompleteRead,
LineTooLong) for these, which are not ``OSError``: each is checked through the
shared client and through the CLI (``create -d openstack`` against such a Keystone).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.integration

BROKEN_ANSWERS = {
    "bad-status-line": b"SPAM SPAM SPAM\r\n\r\n",
    "incomplete-read": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"tok",
    "line-too-long": b"HTTP/1.1 200 OK\r\nX-Junk: " + b"a" * 70000 + b"\r\n\r\n",
}


@pytest.fixture(params=sorted(BROKEN_ANSWERS))
def broken_server(request) -> Iterator[str]:
    """A loopback HTTP server answering every request with one broken answer; yields its base URL."""
    answer = BROKEN_ANSWERS[request.param]
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    conn.sendall(answer)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_client_reports_a_broken_answer_as_one_machine_error(broken_server: str) -> None:
    from pymachine.machine.drivers.restclient import RestClient
    from pymachine.machine.errors import MachineError

    client = RestClient(broken_server + "/api", timeout=5, what="the test API")
    with pytest.raises(MachineError) as info:
        client.call("GET", "/things")
    message = str(info.value)
    assert message.startswith(f"bad answer from the test API at {broken_server}/api: ")
    assert "\n" not in message


def test_cli_reports_a_broken_keystone_in_one_line(pm, broken_server: str) -> None:
    res = pm("create", "-d", "openstack", "o1",
             env={"OS_AUTH_URL": broken_server + "/v3", "OS_USERNAME": "u", "OS_PASSWORD": "p",
                  "OS_TENANT_NAME": "t", "OS_FLAVOR_NAME": "f", "OS_IMAGE_NAME": "i"})
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"bad answer from Keystone at {broken_server}" in lines[0], res.stderr
    assert not (pm.store / "machines" / "o1").exists()
