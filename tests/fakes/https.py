"""What every local HTTPS API fake shares: a test CA, a TLS server thread on 127.0.0.1, stop.

Subclasses (dataclasses) provide ``workdir``, ``_server`` and ``_thread`` fields and call
``serve_https(handler_base, ...)`` from their ``start``; their handler reads ``self.fake``.
"""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self


class HTTPSFake:
    workdir: Path
    _server: ThreadingHTTPServer | None
    _thread: threading.Thread | None

    @property
    def ca_cert(self) -> Path:
        return self.workdir / "ca.pem"

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def serve_https(self, handler_base: type[BaseHTTPRequestHandler], ca_org: str, server_org: str,
                    thread_name: str) -> Self:
        """Make a CA and a 127.0.0.1 server cert (distinct subjects), then serve on a free port."""
        from pymachine.machine import certs

        self.workdir.mkdir(parents=True, exist_ok=True)
        paths = certs.CertPaths(self.ca_cert, self.workdir / "ca-key.pem",
                                self.workdir / "unused-cert.pem", self.workdir / "unused-key.pem")
        certs.generate_ca(paths.ca_cert, paths.ca_key, ca_org)
        server_cert, server_key = self.workdir / "server.pem", self.workdir / "server-key.pem"
        certs.generate_server_cert(paths, server_cert, server_key, server_org, ["127.0.0.1"])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(server_cert, server_key)
        handler: Any = type("Handler", (handler_base,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        self.stop()
