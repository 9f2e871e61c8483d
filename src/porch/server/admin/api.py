"""The admin API and dashboard: a small HTTP/1.1 server in the supervisor's loop.

    GET  /                        the dashboard (static/: page, script, style)
    GET  /api/dashboard           what the dashboard polls (JSON)
    GET  /config                  the config being served: porch.toml as `porch check --dump`
                                  writes it (?format=json: the model; ?format=text: check's report)
    POST /load                    a porch.toml as the body (Content-Type: application/toml):
                                  checked as `porch check` checks it, then served as a
                                  reload would (400 with check's message if not valid)
    GET  /certificates            each certificate: names, issuer, not_after, days left, state
    GET  /upstreams               each target: state, in flight, failures, last error
    POST /upstreams/TARGET/drain  out of rotation for new requests (/undrain: back)
    GET  /metrics                 Prometheus text format (server/admin/collect.py)

It listens on `[porch] admin` only: a socket the supervisor opens and no worker
inherits, so nothing on the public ports reaches it.  Over TCP every request needs
`Authorization: Bearer TOKEN` (compared in constant time); a browser opens
`/?token=TOKEN` once and gets the token as an HttpOnly, SameSite=Strict cookie,
accepted for GET only (a form on another site cannot POST with it).  A unix socket
is mode 0600: whoever can connect is the owner or root, no token asked.

One request per connection (`Connection: close`): the clients are curl, Prometheus
and one dashboard, and it keeps the parser state trivial.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import httptools

from porch.config import admin as admin_config

if TYPE_CHECKING:
    from porch.server.supervisor import Supervisor

MAX_BODY = 1024 * 1024  # a porch.toml is kilobytes
MAX_HEAD = 16 * 1024
READ_TIMEOUT = 10.0
COOKIE = "porch_admin"


class Request:
    def __init__(self) -> None:
        self.method = ""
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.too_big = False


class Response:
    def __init__(self, status: int, body: bytes | str = b"", content_type: str = "text/plain; charset=utf-8",
                 headers: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.content_type = content_type
        self.headers = headers or []

    def encode(self) -> bytes:
        reason = HTTPStatus(self.status).phrase
        lines = [f"HTTP/1.1 {self.status} {reason}", f"Content-Type: {self.content_type}",
                 f"Content-Length: {len(self.body)}", "Connection: close", "Cache-Control: no-store",
                 "X-Content-Type-Options: nosniff", *(f"{k}: {v}" for k, v in self.headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


def text(status: int, message: str) -> Response:
    return Response(status, message.rstrip("\n") + "\n")


def as_json(value: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(value, indent=1, default=str) + "\n", "application/json")


class _Protocol(asyncio.Protocol):
    """Reads one request, hands it to the server, writes the answer, closes."""

    def __init__(self, server: AdminServer, unix: bool) -> None:
        self.server = server
        self.unix = unix
        self.request = Request()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.head_size = 0
        self.done = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(READ_TIMEOUT, transport.close)

    def connection_lost(self, exc) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._answer(text(400, f"bad request: {err}"))

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.request.url += url
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value)
        if self.head_size > MAX_HEAD:
            self._answer(text(431, "request head over 16 KiB"))
            return
        self.request.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.request.method = self.parser.get_method().decode("latin-1")

    def on_body(self, body: bytes) -> None:
        if len(self.request.body) + len(body) > MAX_BODY:
            self.request.too_big = True
        else:
            self.request.body += body

    def on_message_complete(self) -> None:
        if self.done:
            return
        self.done = True
        task = asyncio.get_running_loop().create_task(self.server.handle(self.request, self.unix))
        task.add_done_callback(self._handled)

    def _handled(self, task: asyncio.Task) -> None:
        try:
            response = task.result()
        except Exception as err:  # a bug: say it, keep serving
            self.server.supervisor.log.error(f"admin API: {self.request.method} failed: {err!r}")
            response = text(500, f"internal error: {err!r}")
        self._answer(response)

    def _answer(self, response: Response) -> None:
        self.done = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response.encode())
            self.transport.close()


class AdminServer:
    """The admin listener of one Supervisor; `settings` (address, token, token file)
    tell whether a reload must restart it."""

    def __init__(self, supervisor: Supervisor, settings: tuple[str, str | None, str | None]) -> None:
        from porch.server.admin.handlers import Handlers

        self.supervisor = supervisor
        self.settings = settings
        self.address = settings[0]
        self.token = admin_config.token(*settings)  # ValueError: the file went bad since check
        self.unix = admin_config.is_unix(self.address)
        self.handlers = Handlers(supervisor)
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.unix:
            if os.path.exists(self.address):  # left by a porch that was killed
                os.unlink(self.address)
            old = os.umask(0o177)  # created 0600: no window where others may connect
            try:
                self.server = await loop.create_unix_server(lambda: _Protocol(self, True), self.address)
            finally:
                os.umask(old)
            os.chmod(self.address, 0o600)
        else:
            if self.token is None:
                raise ValueError(f"no token: set admin_token, admin_token_file or ${admin_config.ENV_TOKEN}")
            host, port = admin_config.split(self.address)
            self.server = await loop.create_server(lambda: _Protocol(self, False), host, port, reuse_address=True)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
            if self.unix:
                try:
                    os.unlink(self.address)
                except OSError:
                    pass

    # -- one request ---------------------------------------------------------------

    async def handle(self, request: Request, unix: bool) -> Response:
        parts = urlsplit(request.url.decode("latin-1"))
        path, query = unquote(parts.path), parse_qs(parts.query)
        if not unix:
            refused = self._authorize(request, path, query)
            if refused is not None:
                return refused
        if request.too_big:
            return text(413, f"body over {MAX_BODY // 1024} KiB")
        return await self.handlers.dispatch(request.method, path, query, request)

    def _authorize(self, request: Request, path: str, query: dict[str, list[str]]) -> Response | None:
        """None if the request carries the token; else 401 (or, for /?token=, the cookie)."""
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and self._is_token(auth[7:].strip()):
            return None
        if request.method == "GET" and self._is_token(_cookie(request.headers.get("cookie", ""))):
            return None
        if request.method == "GET" and path == "/" and self._is_token(query.get("token", [""])[0]):
            # Out of the URL (and the browser's history) at once; the cookie does the rest.
            cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            return Response(303, b"", headers=[("Location", "/"), ("Set-Cookie", cookie)])
        return Response(401, b"admin API: send Authorization: Bearer <admin_token>\n",
                        headers=[("WWW-Authenticate", 'Bearer realm="porch admin"')])

    def _is_token(self, given: str) -> bool:
        # hmac.compare_digest: the time taken does not tell how much of it matched.
        return bool(given) and self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())


def _cookie(header: str) -> str:
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return ""
