"""A small JSON-over-HTTPS client shared by the ``google`` and ``openstack`` drivers.

Why not a cloud SDK or apache-libcloud: pointing libcloud's GCE and OpenStack
drivers at a private endpoint needs private methods, its TLS trust is process
wide (no CA bundle per machine), and it retries no 429 (see the two driver
docstrings).  What both drivers need is a dozen plain JSON calls with: a CA
bundle or "insecure" per machine, a deadline per call (``ls`` has one),
bounded retries with backoff on 429 and, for idempotent calls, 5xx (``Retry-After`` honoured), and
errors that keep the API's status and message for one-line reports.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from pymachine.machine.errors import MachineError

RETRIES = 5
MAX_DELAY = 20.0
RETRY_STATUSES = (429, 500, 502, 503, 504)
IDEMPOTENT = ("GET", "HEAD", "PUT", "DELETE")


class HTTPError(MachineError):
    """A non-2xx answer: ``status``, the API's ``message`` and ``reason`` (if any), the body."""

    def __init__(self, method: str, url: str, status: int, message: str, reason: str = "",
                 body: Any = None) -> None:
        super().__init__(f"{method} {url}: {status} {message}")
        self.status = status
        self.api_message = message
        self.reason = reason
        self.body = body


def retry_delay(headers: Mapping[str, str], attempt: int) -> float:
    """Seconds before the next try: ``Retry-After`` when given, else exponential backoff; capped."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        delay = float(lower["retry-after"]) if "retry-after" in lower else 0.5 * 2.0 ** attempt
    except ValueError:
        delay = 0.5 * 2.0 ** attempt
    return min(max(delay, 0.2), MAX_DELAY)


#: (status, parsed body or None, raw body) -> (message, reason) for an error answer.
ErrorParser = Callable[[int, Any, bytes], "tuple[str, str]"]


def _default_error(status: int, payload: Any, raw: bytes) -> tuple[str, str]:
    if isinstance(payload, dict):
        for value in payload.values():
            if isinstance(value, dict) and value.get("message"):
                return str(value["message"]), str(value.get("reason") or value.get("type") or "")
        if payload.get("message"):
            return str(payload["message"]), ""
    return raw[:200].decode(errors="replace").strip() or "no message", ""


class RestClient:
    """JSON calls to one base URL; the credential goes in headers only and never in messages."""

    def __init__(self, base_url: str, *, headers: Callable[[], dict[str, str]] | None = None,
                 ca_cert: str = "", insecure: bool = False, timeout: float = 30.0,
                 error_parser: ErrorParser = _default_error, what: str = "the API",
                 retry_statuses: tuple[int, ...] = RETRY_STATUSES, retries: int = RETRIES) -> None:
        split = urlsplit(base_url)
        if split.scheme not in ("https", "http") or not split.hostname:
            raise MachineError(f"{what} URL must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._split = split
        self._prefix = split.path.rstrip("/")
        self._headers = headers or (dict)
        self._ca_cert = ca_cert
        self._insecure = insecure
        self.timeout = timeout
        self._error_parser = error_parser
        self._what = what
        self._retry_statuses = retry_statuses
        self._retries = retries

    def _connection(self, timeout: float):
        host, port = self._split.hostname or "", self._split.port
        if self._split.scheme == "http":
            return http.client.HTTPConnection(host, port, timeout=timeout)
        import ssl

        if self._insecure:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context(cafile=self._ca_cert or None)
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)

    def url_for(self, path: str) -> str:
        return self.base_url + path

    def request(self, method: str, path: str, body: Any = None, query: Mapping[str, Any] | None = None,
                timeout: float | None = None, form: Mapping[str, str] | None = None,
                extra_headers: Mapping[str, str] | None = None,
                idempotent: bool = False) -> tuple[Any, dict[str, str]]:
        """One call (retried on 429/5xx within the deadline): (parsed JSON or None, response headers).

        ``idempotent`` marks a POST the server dedupes (a request id repeated on each try), so a
        5xx may be retried for it as for GET/PUT/DELETE.
        """
        url_path = self._prefix + path + (f"?{urlencode(query, doseq=True)}" if query else "")
        shown = self.base_url + path
        budget = timeout if timeout is not None else self.timeout * 3
        deadline = time.monotonic() + budget
        if form is not None:
            data: bytes | None = urlencode(form).encode()
            ctype = "application/x-www-form-urlencoded"
        else:
            data = json.dumps(body).encode() if body is not None else None
            ctype = "application/json"
        for attempt in range(self._retries + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                raise MachineError(f"{method} {shown}: no answer within {budget:g}s")
            headers = {"Accept": "application/json", "User-Agent": "pymachine", **self._headers(),
                       **(extra_headers or {})}
            if data is not None:
                headers["Content-Type"] = ctype
            conn = self._connection(min(self.timeout, left))
            try:
                conn.request(method, url_path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                status, resp_headers = resp.status, dict(resp.getheaders())
            except OSError as exc:
                reason = getattr(exc, "reason", None) or exc.strerror or exc
                raise MachineError(f"cannot reach {self._what} at {self.base_url}: {reason}") from None
            except http.client.HTTPException as exc:  # BadStatusLine, IncompleteRead, LineTooLong: not OSError
                detail = " ".join(str(exc).split())[:120] or "no detail"
                raise MachineError(f"bad answer from {self._what} at {self.base_url}: "
                                   f"{type(exc).__name__}: {detail}") from None
            finally:
                conn.close()
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                payload = None
            # 429 means "not processed": always safe to repeat.  A 5xx may come after the work was
            # done (a proxy timing out), so only idempotent calls are repeated; a POST is not,
            # unless the caller made it idempotent (Compute's requestId).
            retryable = status == 429 or (status in self._retry_statuses and (method in IDEMPOTENT or idempotent))
            if retryable and attempt < self._retries:
                delay = retry_delay(resp_headers, attempt)
                if time.monotonic() + delay < deadline:
                    time.sleep(delay)
                    continue
            if status >= 400:
                message, reason = self._error_parser(status, payload, raw)
                if retryable:
                    message += f" (still failing after {attempt + 1} attempts)"
                raise HTTPError(method, shown, status, message, reason, payload)
            return payload, resp_headers
        raise AssertionError("unreachable")  # pragma: no cover

    def call(self, method: str, path: str, body: Any = None, query: Mapping[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        return self.request(method, path, body, query, timeout)[0]


def seconds_from_env(env: str, default: float) -> float:
    """A wait in seconds from ``$env`` (0..86400), else ``default``; a bad value is a clear error."""
    import os

    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise MachineError(f"{env} must be a number of seconds between 0 and 86400, got {raw!r}")
    return value
