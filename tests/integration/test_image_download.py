"""engine.download against a real HTTP server on 127.0.0.1 (http.server in a thread).

The server honours Range (or ignores it, on request), can drop the connection
halfway through a body, counts requests, and can act as an HTTP proxy for an
absolute-URI request, so resume, restart, verification, caching and proxy use
are all exercised over real sockets.  No VM boots here.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pymachine.engine import download
from pymachine.machine.errors import MachineError

pytestmark = pytest.mark.integration

BODY = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes, not chunk aligned


class Server:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {"/img/disk.qcow2": BODY}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.drops = 0  # how many of the next body responses stop halfway
        self.honour_range = True
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = urlsplit(self.path).path  # absolute URI when used as a proxy
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and server.honour_range and rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if server.drops > 0 and len(body) > 1000:
                    server.drops -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "")
    srv = Server()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=10)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def no_sleep(_: float) -> None:
    pass


def test_good_checksum_is_cached_and_reused_without_a_request(server: Server, tmp_path: Path) -> None:
    logs: list[str] = []
    path = download.fetch(server.url("/img/disk.qcow2"), tmp_path, "sha256:" + sha256(BODY), logs.append)
    assert path == tmp_path / "by-digest" / sha256(BODY)
    assert path.read_bytes() == BODY
    assert len(server.requests) == 1
    again = download.fetch(server.url("/img/disk.qcow2"), tmp_path, sha256(BODY).upper(), logs.append)
    assert again == path
    assert len(server.requests) == 1  # the second call asked nothing
    assert any("cached" in line.lower() for line in logs)
    assert [p.name for p in (tmp_path / "by-digest").iterdir()] == [sha256(BODY)]  # no partial left


def test_download_progress_is_live_on_a_terminal_only(server: Server, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Off a terminal the log's own lines say each step; the live meter stays off stdout."""
    import os
    import pty
    import sys

    download.fetch(server.url("/img/disk.qcow2"), tmp_path / "a", "sha256:" + sha256(BODY), lambda _: None)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    master, slave = pty.openpty()
    saved = sys.stderr
    try:
        sys.stderr = os.fdopen(slave, "w", closefd=False)
        download.fetch(server.url("/img/disk.qcow2"), tmp_path / "b", "sha256:" + sha256(BODY), lambda _: None)
        sys.stderr.flush()
    finally:
        sys.stderr = saved
        os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert b"\r\x1b[KDownloading disk.qcow2 " in seen and b"Downloading disk.qcow2: done in " in seen


def test_sha512_digest_is_verified_and_aliased(server: Server, tmp_path: Path) -> None:
    digest = hashlib.sha512(BODY).hexdigest()
    path = download.fetch(server.url("/img/disk.qcow2"), tmp_path, digest, lambda _m: None)
    assert path.name == sha256(BODY) and path.read_bytes() == BODY
    assert download.fetch(server.url("/img/disk.qcow2"), tmp_path, "sha512:" + digest, lambda _m: None) == path
    assert len(server.requests) == 1


def test_bad_checksum_is_refused_and_nothing_is_cached(server: Server, tmp_path: Path) -> None:
    wrong = "0" * 64
    with pytest.raises(MachineError) as err:
        download.fetch(server.url("/img/disk.qcow2"), tmp_path, wrong, lambda _m: None)
    message = str(err.value)
    assert "\n" not in message
    assert f"sha256:{wrong}" in message and f"sha256:{sha256(BODY)}" in message
    assert list((tmp_path / "by-digest").iterdir()) == []
    # A later call with the right digest downloads again (nothing bad was kept).
    download.fetch(server.url("/img/disk.qcow2"), tmp_path, sha256(BODY), lambda _m: None)
    assert len(server.requests) == 2


def test_interrupted_download_resumes_with_range(server: Server, tmp_path: Path) -> None:
    server.drops = 2
    logs: list[str] = []
    path = download.fetch(server.url("/img/disk.qcow2"), tmp_path, sha256(BODY), logs.append, sleep=no_sleep)
    assert path.read_bytes() == BODY
    ranges = [rng for _, rng in server.requests]
    assert ranges[0] is None and len(ranges) == 3
    half = len(BODY) // 2
    assert ranges[1] == f"bytes={half}-"  # resumed where the first transfer stopped
    assert ranges[2] == f"bytes={half + (len(BODY) - half) // 2}-"
    assert sum("retrying" in line for line in logs) == 2


def test_server_ignoring_range_restarts_cleanly(server: Server, tmp_path: Path) -> None:
    server.drops = 1
    server.honour_range = False
    path = download.fetch(server.url("/img/disk.qcow2"), tmp_path, sha256(BODY), lambda _m: None, sleep=no_sleep)
    assert path.read_bytes() == BODY  # a 200 after a Range request truncated, not appended
    assert len(server.requests) == 2 and server.requests[1][1] is not None


def test_retries_are_bounded(server: Server, tmp_path: Path) -> None:
    server.drops = 10
    with pytest.raises(MachineError, match="after 3 attempts"):
        download.fetch(server.url("/img/disk.qcow2"), tmp_path, sha256(BODY), lambda _m: None,
                       attempts=3, sleep=no_sleep)
    assert len(server.requests) == 3
    assert not (tmp_path / "by-digest" / sha256(BODY)).exists()


def test_sums_file_form(server: Server, tmp_path: Path) -> None:
    server.files["/img/SHA256SUMS"] = (
        f"{'1' * 64}  other.qcow2\n{sha256(BODY)} *disk.qcow2\n".encode()
    )
    server.files["/img/SHA512SUMS"] = f"SHA512 (disk.qcow2) = {hashlib.sha512(BODY).hexdigest()}\n".encode()
    url = server.url("/img/disk.qcow2")
    path = download.fetch(url, tmp_path, "sums:" + server.url("/img/SHA256SUMS"), lambda _m: None)
    assert path.read_bytes() == BODY
    other = tmp_path / "other"
    assert download.fetch(url, other, "file:" + server.url("/img/SHA512SUMS"), lambda _m: None).read_bytes() == BODY
    server.files["/img/SHA256SUMS"] = f"{'1' * 64}  other.qcow2\n".encode()
    with pytest.raises(MachineError, match=r"no entry for disk\.qcow2"):
        download.fetch(url, tmp_path / "third", "sums:" + server.url("/img/SHA256SUMS"), lambda _m: None)


def test_http_error_and_bad_digest_are_one_line(server: Server, tmp_path: Path) -> None:
    with pytest.raises(MachineError, match="HTTP 404"):
        download.fetch(server.url("/img/missing.qcow2"), tmp_path, sha256(BODY), lambda _m: None)
    with pytest.raises(MachineError, match="not a sha256/sha512 digest"):
        download.fetch(server.url("/img/disk.qcow2"), tmp_path, "md5:abc", lambda _m: None)
    assert [p for p, _ in server.requests] == ["/img/missing.qcow2"]


def test_download_goes_through_http_proxy(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The loopback server acts as the proxy: urllib sends it the absolute URI and
    # never resolves or dials the (unresolvable) origin host itself.
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{server.port}")
    url = "http://images.pymachine.invalid/img/disk.qcow2"
    path = download.fetch(url, tmp_path, sha256(BODY), lambda _m: None)
    assert path.read_bytes() == BODY
    assert server.requests[0][0] == url


def test_qemu_driver_downloads_a_url_image_and_boots_it_through_the_firmware(
        server: Server, tmp_path: Path) -> None:
    """``--qemu-image URL``: the driver fetches into the user's image cache and,
    with no kernel beside the disk, builds a firmware-boot command line."""
    import shutil
    import subprocess

    from pymachine.machine.drivers import qemu
    from pymachine.machine.drivers.registry import driver_class

    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    disk = tmp_path / "cloud.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True, timeout=30)
    server.files["/img/cloud.qcow2"] = disk.read_bytes()
    cls = driver_class("qemu")
    drv = cls.new("dev", str(tmp_path / "store"))
    flags = {f.name: f.default for f in cls.flags}
    flags.update({"qemu-image": server.url("/img/cloud.qcow2"),
                  "qemu-image-checksum": "sha256:" + sha256(disk.read_bytes())})
    drv.set_config_from_flags(flags)
    drv.pre_create_check()
    assert server.requests == []  # pre-create checks never download
    image = drv._resolve_image(lambda _m: None)
    from pymachine.machine.cachedir import user_cache_dir  # the user's shared cache (tests: a private one)

    assert Path(image.disk) == user_cache_dir() / "images" / "by-digest" / sha256(disk.read_bytes())
    assert (image.format, image.kernel, image.pymachine) == ("qcow2", "", False)
    drv._resolve_image(lambda _m: None)
    assert len(server.requests) == 1  # the second create reuses the cached file
    argv = qemu.qemu_argv(qemu.VMSpec(machine_dir=str(tmp_path / "m"), cpus=1, memory_mb=512, accel="tcg",
                                      overlay="o.qcow2", seed="s.iso", ssh_port=1, engine_port=2,
                                      kernel=image.kernel, initrd=image.initrd))
    assert "-kernel" not in argv and "-append" not in argv
