"""One keep-alive HTTP/1.1 connection to an upstream: asyncio.Protocol over httptools.

The connection parses responses and hands them to whichever exchange currently
leases it (`self.exchange`), through a small interface:
    on_response_head(status, reason, lines, special, keep_alive)
        lines: flat list [name, b": ", value, b"\r\n", ...] of headers to copy;
        special: [(kind, name, value)] of headers h1.RESPONSE_HEADERS flags, or None
    on_response_body(data)
    on_response_end()
    on_upstream_lost(cause, got_bytes)
    on_upstream_paused(paused)
    on_upstream_upgrade(transport, rest) -> bool   after a 101: True if it took the transport
    flush()                 after each read: write what the read produced, at once
and sets `exchange.up_seen` on every read (the sweeper's upstream timeout).
When no exchange leases it, it sits idle in its target's pool.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any

import httptools

from porch.http import h1
from porch.upstream.tls import tls_failure

if TYPE_CHECKING:
    from porch.upstream.pool import Target


_KINDS = h1.RESPONSE_HEADERS
_KINDS_SEEN = _KINDS.seen
_SEP = h1.SEP
_CRLF = h1.CRLF


class UpstreamConnection:
    # An asyncio.Protocol by its methods (asyncio and uvloop take any object that has
    # them): compiled, this is an extension type (connection.pxd declares its typed fields),
    # and an extension type cannot derive from a Python class.
    __slots__ = (
        "target",
        "transport",
        "parser",
        "exchange",
        "idle_since",
        "closed",
        "reused",
        "_reason",
        "_lines",
        "_special",
        "_got_bytes",
        "_skip_body",
        "_final",
    )

    def __init__(self, target: Target) -> None:
        # per connection
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Any = None
        self.idle_since = 0.0
        self.closed = False
        self.reused = False
        # per response
        self._reason = b""
        self._lines: list[bytes] = []
        self._special: list[tuple[int, bytes, bytes]] | None = None
        self._got_bytes = False
        self._skip_body = False
        self._final = False  # the head parsed last was a final (not 1xx) response

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # An idle connection must not talk: whatever it says, it is not reusable.
            self.close()
            return
        self._got_bytes = True
        exchange.up_seen = True
        try:
            self.parser.feed_data(data)
            if exchange.out is not None:
                exchange.flush()
        except httptools.HttpParserUpgrade as exc:
            # A 101: past it the bytes are not HTTP, and this connection is done with
            # the pool.  An exchange that asked for it takes the transport over.
            exchange = self.exchange
            self.exchange = None
            self.closed = True
            if exchange is None or not exchange.on_upstream_upgrade(self.transport, data[exc.args[0]:]):
                if exchange is not None:
                    exchange.on_upstream_lost("upstream switched protocols", True)
                self.transport.close()
        except httptools.HttpParserError as exc:
            exchange = self.exchange
            self.close()
            if exchange is not None:
                exchange.on_upstream_lost(f"invalid response from upstream: {exc}", True)

    def eof_received(self) -> bool | None:
        exchange = self.exchange
        if exchange is not None:
            try:
                self.parser.feed_data(b"")
            except httptools.HttpParserError:
                pass
        return None  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        exchange = self.exchange
        self.exchange = None
        if exchange is not None:
            if exc is None:
                cause = "upstream closed the connection"
            elif isinstance(exc, ssl.SSLError):  # a TLS 1.3 alert comes after the handshake
                cause = f"upstream TLS error: {tls_failure(exc)}"
            else:
                cause = f"upstream closed the connection: {exc}"
            exchange.on_upstream_lost(cause, self._got_bytes)
        else:
            self.target.forget(self)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.on_upstream_paused(True)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.on_upstream_paused(False)

    # -- lease -----------------------------------------------------------------

    def lease(self, exchange: Any, skip_body: bool) -> None:
        self.exchange = exchange
        self._skip_body = skip_body
        self._got_bytes = False

    def release(self) -> None:
        self.exchange = None
        self.reused = True

    def is_usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.closed = True
        self.exchange = None
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.exchange = None
        if self.transport is not None:
            self.transport.abort()

    # -- httptools callbacks ---------------------------------------------------

    # No on_message_begin (one callback fewer per response): the per-response
    # state is reset when a head has been handed over.

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        kind = _KINDS_SEEN.get(name)
        if kind is None:
            kind = _KINDS.kind(name)
        if not kind:
            lines = self._lines  # appends, not += (tuple): compiled, four C-level appends
            lines.append(name)
            lines.append(_SEP)
            lines.append(value)
            lines.append(_CRLF)
        elif self._special is None:
            self._special = [(kind, name, value)]
        else:
            self._special.append((kind, name, value))

    def on_headers_complete(self) -> None:
        lines, special, reason = self._lines, self._special, self._reason
        self._lines = []
        self._special = None
        self._reason = b""
        exchange = self.exchange
        if exchange is None:
            return
        parser = self.parser
        status = parser.get_status_code()
        self._final = status >= 200
        exchange.on_response_head(status, reason, lines, special, parser.should_keep_alive())
        if self._skip_body and status >= 200:
            # A response to HEAD has no body whatever its Content-Length says
            # (RFC 9110 9.3.2); httptools cannot be told, so the message ends here
            # and a fresh parser takes the next response.
            self.parser = httptools.HttpResponseParser(self)
            if self.exchange is exchange:
                exchange.on_response_end()

    def on_body(self, body: bytes) -> None:
        if body and self.exchange is not None:
            self.exchange.on_response_body(body)

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is not None and self._final:
            exchange.on_response_end()
