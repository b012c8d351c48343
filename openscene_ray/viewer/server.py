"""The viewer's web server: viser on a free loopback port, the token gate on the address asked
for, one :class:`~openscene_ray.viewer.session.PageSession` per connected page.

Why viser: it is a pip package that serves its own built three.js client from the package (works
offline and over SSH port forwarding, nothing to build or download), streams point clouds as
binary arrays and lets the server update only the colours of a cloud, and gives per-client GUI
and scene elements, so each page has its own scene and query.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
import time

from openscene_ray.viewer.backend import ViewerBackend
from openscene_ray.viewer.config import ViewerConfig, is_loopback
from openscene_ray.viewer.gate import Gate
from openscene_ray.viewer.session import PageSession
from openscene_ray.viewer.urlstate import ViewState

__all__ = ["ViewerServer"]

log = logging.getLogger(__name__)


class ViewerServer:
    """``start()`` serves the viewer and returns its URL; ``stop()`` ends it."""

    def __init__(self, config: ViewerConfig, backend: ViewerBackend | None = None, hello_timeout: float = 5.0):
        self.config = config
        self.backend = backend or ViewerBackend(config)
        self.hello_timeout = hello_timeout
        self.sessions: dict[int, PageSession] = {}
        self._lock = threading.Lock()
        self.viser = self.gate = None
        self.port: int | None = None

    @property
    def token(self) -> str | None:
        return self.config.token.get_secret_value() if self.config.token is not None else None

    def url(self, with_token: bool = True) -> str:
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        host = f"[{host}]" if ":" in host else host
        token = f"?token={self.token}" if with_token and self.token else ""
        return f"http://{host}:{self.port}/{token}"

    def start(self) -> str:
        import viser

        logging.getLogger("websockets").setLevel(logging.WARNING)  # a line per connection otherwise
        with contextlib.redirect_stdout(io.StringIO()):  # viser prints its own (internal) address
            self.viser = viser.ViserServer(host="127.0.0.1", port=0, label="openscene-ray", verbose=False)
        self.viser.request_share_url = self._refuse_share  # a public share tunnel would bypass the token
        self.viser.gui.configure_theme(show_share_button=False, control_width="medium")
        self.viser.on_client_connect(self._connect)
        self.viser.on_client_disconnect(self._disconnect)
        self.gate = Gate(self.viser.get_port(), self.config.host, self.config.port, self.token, self._hello)
        try:
            self.port = self.gate.start()
        except OSError:
            self.stop()
            raise
        if not is_loopback(self.config.host):
            log.warning("the viewer listens on %s: anyone who can reach it and has the token can see the data",
                        self.config.host)  # fmt: skip
        return self.url()

    def stop(self) -> None:
        """Close the gate (and with it every page's connection), let viser see the pages go, stop it."""
        if self.gate is not None:
            self.gate.stop()
        if self.viser is not None:
            deadline = time.monotonic() + 3.0
            while self.viser.get_clients() and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.redirect_stdout(io.StringIO()):
                self.viser.stop()

    def serve_forever(self) -> None:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    @staticmethod
    def _refuse_share(*_args, **_kwargs) -> None:
        log.warning("a page asked for a public share URL; the viewer does not open one")
        return None

    def _connect(self, client) -> None:
        start = ViewState(scene=self.config.scene, source=self.config.source, template=self.config.template)
        session = PageSession(client, self.backend, start, self.config.point_size)
        with self._lock:
            self.sessions[client.client_id] = session
        session.start(self.hello_timeout)

    def _disconnect(self, client) -> None:
        with self._lock:
            session = self.sessions.pop(client.client_id, None)
        if session is not None:
            with session.lock:
                session.closed = True

    def _hello(self, client_id: int, nonce: str, search: str) -> bool:
        with self._lock:
            session = self.sessions.get(client_id)
        return session is not None and session.receive_hello(nonce, search)
