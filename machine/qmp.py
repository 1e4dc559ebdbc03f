"""A tiny QMP (QEMU Machine Protocol) client over a unix socket.

pymachine needs three things from a running QEMU: ask the guest to power
down, ask for its run status, and quit it.  That is a greeting, one
capabilities handshake and a few JSON commands, so a dependency (``qemu.qmp``)
is not worth it.  Every read is bounded by a timeout.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from pymachine.machine.errors import MachineError


class QMPError(MachineError):
    pass


class QMPClient:
    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""

    def __enter__(self) -> QMPClient:  # noqa: PYI034
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise QMPError(f"cannot connect to QEMU's monitor at {self.path}: {exc.strerror or exc}") from None
        self._sock = sock
        greeting = self._read_message(time.monotonic() + self.timeout)
        if "QMP" not in greeting:
            raise QMPError(f"unexpected QMP greeting: {greeting!r}")
        self.execute("qmp_capabilities")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _read_message(self, deadline: float) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QMPError("QEMU's monitor did not answer in time")
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise QMPError("QEMU's monitor did not answer in time") from None
            except OSError as exc:
                raise QMPError(f"QEMU's monitor connection failed: {exc}") from None
            if not chunk:
                raise QMPError("QEMU closed its monitor connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError:
            raise QMPError(f"QEMU sent a malformed QMP message: {line[:80]!r}") from None
        if not isinstance(message, dict):
            raise QMPError(f"QEMU sent a malformed QMP message: {line[:80]!r}")
        return message

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one command; events arriving meanwhile are skipped."""
        if self._sock is None:
            raise QMPError("QMP client is not connected")
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as exc:
            raise QMPError(f"QEMU's monitor connection failed: {exc}") from None
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._read_message(deadline)
            if "return" in message:
                return message["return"]
            if "error" in message:
                err = message["error"]
                raise QMPError(f"QEMU refused {command}: {err.get('desc', err)}")
            # {"event": ...}: not an answer


def qmp_command(path: str, command: str, arguments: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
    with QMPClient(path, timeout=timeout) as client:
        return client.execute(command, arguments)
