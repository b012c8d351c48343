"""The viewer's front door: an HTTP + websocket relay in front of viser that checks the token.

viser serves its page and websocket on one port with no access control, so the viewer runs viser
on a free loopback port and puts this gate on the address the user asked for. With a token, every
request needs it: ``?token=…`` on the first page load (answered with a cookie and a redirect to
the same URL without the token, so shared URLs don't carry it) or the cookie afterwards, for the
page, its assets and its websocket alike; anything else gets 401. The gate also answers the
page's hello (:data:`~openscene_ray.viewer.urlstate.HELLO_PATH`: which URL a new page was opened
with) and relays everything else unchanged.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from openscene_ray.viewer.urlstate import HELLO_PATH

__all__ = ["Gate"]

log = logging.getLogger(__name__)

PASSED_HEADERS = ("Content-Type", "Content-Encoding", "Cache-Control", "ETag", "Last-Modified")
DENIED_PAGE = (
    "<!doctype html><title>openscene-ray viewer</title><body style='font-family:sans-serif'>"
    "<h3>This viewer needs its access token.</h3><p>Open the URL that <code>openscene-ray view</code> "
    "printed (it ends in <code>?token=…</code>).</p></body>"
)


def _response(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Response:
    fields = Headers(headers or {})
    fields["Content-Length"] = str(len(body))
    fields["Connection"] = "close"
    return Response(status, http.HTTPStatus(status).phrase, fields, body)


class Gate:
    """Relay ``host:port`` -> viser on ``127.0.0.1:upstream_port``; ``token=None`` lets every
    request through (loopback only: the config refuses other hosts without a token).

    ``on_hello(client_id, nonce, search)`` is called (on the gate's thread) for a page's hello and
    returns whether it matched a waiting page.
    """

    def __init__(self, upstream_port: int, host: str, port: int, token: str | None,
                 on_hello: Callable[[int, str, str], bool]):  # fmt: skip
        self.upstream = f"127.0.0.1:{upstream_port}"
        self.host, self.port, self._token = host, port, token
        self.on_hello = on_hello
        self.cookie = f"openscene_viewer_{port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # lifecycle --------------------------------------------------------------------------------
    def start(self) -> int:
        """Listen (in a daemon thread); returns the port bound (useful with port 0)."""
        self._thread = threading.Thread(target=self._run, name="viewer-gate", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise OSError(f"the viewer cannot listen on {self.host}:{self.port}: {self._error}") from self._error
        return self.port

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with serve(self._relay, self.host, self.port, process_request=self._process_request,
                         select_subprotocol=lambda _, offered: offered[0] if offered else None,
                         max_size=None, compression=None) as server:  # fmt: skip
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    # requests ---------------------------------------------------------------------------------
    def _authorised(self, request: Request, query: dict[str, list[str]]) -> tuple[bool, bool]:
        """(allowed, by the URL's token)."""
        if self._token is None:
            return True, False
        given = query.get("token", [""])[-1]
        if given and hmac.compare_digest(given.encode(), self._token.encode()):
            return True, True
        try:
            morsel = SimpleCookie(request.headers.get("Cookie", "")).get(self.cookie)
        except CookieError:
            morsel = None
        return bool(morsel and hmac.compare_digest(morsel.value.encode(), self._token.encode())), False

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        allowed, by_url = self._authorised(request, query)
        if not allowed:
            return _response(401, DENIED_PAGE.encode(), {"Content-Type": "text/html; charset=utf-8"})
        websocket = request.headers.get("Upgrade", "").lower() == "websocket"
        if by_url and not websocket:  # set the cookie, drop the token from the address bar
            rest = urlencode([(k, v) for k, vs in query.items() if k != "token" for v in vs])
            cookie = f"{self.cookie}={self._token}; Path=/; HttpOnly; SameSite=Strict"
            return _response(303, b"", {"Location": urlunsplit(("", "", parts.path or "/", rest, "")),
                                        "Set-Cookie": cookie})  # fmt: skip
        if websocket:
            return None  # the handshake goes on: _relay takes over
        if parts.path == HELLO_PATH:
            return self._hello(query)
        return await asyncio.to_thread(self._fetch, request)

    def _hello(self, query: dict[str, list[str]]) -> Response:
        try:
            client = int(query.get("client", [""])[-1])
        except ValueError:
            return _response(400)
        matched = self.on_hello(client, query.get("nonce", [""])[-1], query.get("search", [""])[-1])
        return _response(204 if matched else 404)

    def _fetch(self, request: Request) -> Response:
        """A plain GET relayed to viser (its page and assets)."""
        headers = {k: request.headers[k] for k in ("Accept", "Accept-Encoding") if k in request.headers}
        upstream = urllib.request.Request(f"http://{self.upstream}{request.path}", headers=headers)
        try:
            with urllib.request.urlopen(upstream, timeout=30) as answer:  # noqa: S310 - our own loopback viser
                status, body, got = answer.status, answer.read(), answer.headers
        except urllib.error.HTTPError as exc:
            status, body, got = exc.code, exc.read(), exc.headers
        except OSError as exc:
            log.warning("viewer gate: viser did not answer %s: %s", request.path, exc)
            return _response(502, b"the viewer's page server did not answer")
        return _response(status, body, {k: got[k] for k in PASSED_HEADERS if got.get(k)})

    async def _relay(self, page: ServerConnection) -> None:
        """Pass websocket messages both ways between the page and viser until either side closes."""
        protocols = [page.subprotocol] if page.subprotocol else None
        try:
            async with connect(f"ws://{self.upstream}{page.request.path}", subprotocols=protocols, max_size=None,
                               compression=None, open_timeout=30) as viser:  # fmt: skip
                pumps = [asyncio.create_task(self._pump(page, viser)), asyncio.create_task(self._pump(viser, page))]
                _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        except (OSError, asyncio.TimeoutError) as exc:
            if not self._stop.is_set():
                log.warning("viewer gate: cannot reach viser: %s", exc)
        finally:
            await page.close()

    @staticmethod
    async def _pump(source, sink) -> None:
        try:
            async for message in source:
                await sink.send(message)
        except ConnectionClosed:
            pass
        finally:
            await sink.close()
