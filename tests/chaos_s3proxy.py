"""A loopback HTTP proxy in front of an S3 server (moto) that injects S3 faults, for chaos tests.

* ``slowdown_fraction``: a seeded fraction of requests is answered ``503 SlowDown`` with S3's XML
  error body (what S3 says when a prefix is throttled);
* ``fail_request``: a predicate ``(method, path, query) -> bool``; matching requests get
  ``500 InternalError`` (e.g. every ``UploadPart`` of one part number), or ``503 SlowDown`` with
  ``fail_with_slowdown``;
* :meth:`FaultyS3Proxy.disappear` makes the endpoint vanish: it stops listening and closes every
  open client connection (clients then see resets and refused connections);
  :meth:`FaultyS3Proxy.reappear` listens again on the same port;
* ``stalled``: the endpoint accepts requests and never answers them (until unset), as a hung
  server or a black-holed load balancer does: clients wait for their read timeouts.

Requests are forwarded unchanged (headers included, so SigV4 signatures stay as the client made
them); the proxy counts what it received, forwarded and failed.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

__all__ = ["FaultyS3Proxy", "first_requests", "is_upload_part", "s3_error_body"]

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


def s3_error_body(code: str, message: str) -> bytes:
    """S3's XML error document."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId><HostId>chaos-proxy</HostId></Error>"
    ).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, proxy: FaultyS3Proxy):
        self.proxy = proxy
        super().__init__(address, handler)

    def handle_error(self, request, client_address):  # clients and the proxy drop connections on purpose
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect
    server: _Server

    def log_message(self, format, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        self.server.proxy._track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.proxy._track(self.connection, False)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        head = self.command == "HEAD"  # a HEAD's Content-Length is the object's size, not the body's
        for key, value in headers:
            if key.lower() not in HOP_BY_HOP and (head or key.lower() != "content-length"):
                self.send_header(key, value)
        if not head:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._body()
        with proxy._lock:
            proxy.counts["received"] += 1
        while proxy.stalled and proxy._server is self.server:  # hold the request, answer nothing
            time.sleep(0.1)
        if proxy._server is not self.server:  # the endpoint is gone: drop the request
            self.close_connection = True
            return
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        fault = proxy._fault(self.command, parts.path, query)
        if fault is not None:
            status, code, message = fault
            self._reply(status, [("Content-Type", "application/xml")], s3_error_body(code, message))
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=120)
        try:
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            self._reply(response.status, response.getheaders(), data)
        finally:
            upstream.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


class FaultyS3Proxy:
    """See the module docstring. ``with FaultyS3Proxy(moto_endpoint) as proxy: proxy.url``."""

    def __init__(self, upstream: str, seed: int = 0):
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.slowdown_fraction = 0.0
        self.fail_request: Callable[[str, str, dict], bool] | None = None
        self.fail_with_slowdown = False
        self.stalled = False
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FaultyS3Proxy:
        self._server = _Server(("127.0.0.1", self.port), _Handler, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def disappear(self) -> None:
        """Stop listening and close every open connection (the endpoint is gone)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._thread.join(5)

    def reappear(self) -> None:
        """Listen again on the same port."""
        if self._server is None:
            self.start()

    def __enter__(self) -> FaultyS3Proxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.disappear()

    # ------------------------------------------------------------------ internals
    def _track(self, conn: socket.socket, open_: bool) -> None:
        with self._lock:
            (self._connections.add if open_ else self._connections.discard)(conn)

    def _fault(self, method: str, path: str, query: dict) -> tuple[int, str, str] | None:
        with self._lock:
            self.counts["requests"] += 1
            failed = self.fail_request is not None and self.fail_request(method, path, query)
            if failed and not self.fail_with_slowdown:
                self.counts["internal_error"] += 1
                return 500, "InternalError", "We encountered an internal error. Please try again."
            if failed or (self.slowdown_fraction and self._rng.random() < self.slowdown_fraction):
                self.counts["slowdown"] += 1
                return 503, "SlowDown", "Please reduce your request rate."
            self.counts["forwarded"] += 1
        return None


def is_upload_part(part_number: int | None = None) -> Callable[[str, str, dict], bool]:
    """A ``fail_request`` predicate: ``UploadPart`` requests (of ``part_number``, or any)."""

    def predicate(method: str, path: str, query: dict) -> bool:
        if method != "PUT" or "uploadId" not in query or "partNumber" not in query:
            return False
        return part_number is None or query["partNumber"][0] == str(part_number)

    return predicate


def first_requests(count: int) -> Callable[[str, str, dict], bool]:
    """A ``fail_request`` predicate: the first ``count`` requests (any kind)."""
    seen = [0]

    def predicate(method: str, path: str, query: dict) -> bool:
        seen[0] += 1
        return seen[0] <= count

    return predicate
