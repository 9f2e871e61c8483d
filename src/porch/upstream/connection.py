"""One keep-alive HTTP/1.1 connection to an upstream: asyncio.Protocol over httptools.

The connection parses responses and hands them to whichever listener currently
leases it (`self.exchange`: the server's Exchange, or a subrequest such as
forward_auth's), through the interface of upstream/listener.py:
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

A connection serves one response at a time, so the bytes after a complete final
response (a 101 aside: past it the bytes are the tunnel's) can only be a broken or
hostile upstream: a second response nobody asked for, a body after a response to
HEAD or a 204/304.  Such a connection is closed, never pooled: were it kept, the
next client's request, on another connection and another path, would be answered
with those bytes (a response-splitting attack on the pool; nginx closes it too).

httptools calls back for the head as a whole, not per header nor for the reason
phrase: once llhttp has checked a head, http/response_head.py splits the same bytes
(one C loop instead of a Python call per header).  For that the connection keeps
track of where the awaited head begins: at the start of a read when the response
before it has ended, right after a 1xx head, or in the bytes kept from earlier
reads while it is incomplete.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any

import httptools

from porch.http.response_head import parse_response_head
from porch.upstream.pool import Pooled
from porch.upstream.tls import tls_failure

if TYPE_CHECKING:
    from porch.upstream.pool import Target

# A response head longer than this (all its header lines) is refused with a 502.
# nginx refuses one over proxy_buffer_size (4 or 8 KiB) as "upstream sent too big header".
MAX_HEAD = 1 << 20


class UpstreamConnection(Pooled):
    # An asyncio.Protocol by its methods (asyncio and uvloop take any object that has
    # them): compiled, this is an extension type (connection.pxd declares its typed fields),
    # and an extension type cannot derive from a Python class (pool.Pooled is one too).
    __slots__ = (
        "target",
        "transport",
        "parser",
        "exchange",
        "closed",
        "reused",
        "_data",
        "_pos",
        "_parts",
        "_kept",
        "_in_head",
        "_got_bytes",
        "_skip_body",
        "_final",
        "_ended",
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
        # where the head llhttp is reading begins (see the module docstring)
        self._data = b""  # the read being parsed
        self._pos = 0  # offset in it of the awaited head; -1: not in this read
        self._parts: list[bytes] | None = None  # its bytes from earlier reads
        self._kept = 0  # their length
        self._in_head = True  # a head is awaited (or incomplete), no body is being read
        # per response
        self._got_bytes = False
        self._skip_body = False
        self._final = False  # the head parsed last was a final (not 1xx) response
        self._ended = False  # this lease's final response has ended: nothing may follow

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # An idle connection must not talk: whatever it says, it is not reusable.
            if not self.closed:
                self._log_broken("upstream sent bytes on an idle connection")
            self.close()
            return
        self._got_bytes = True
        exchange.up_seen = True
        self._data = data
        self._pos = 0 if self._in_head else -1
        try:
            self.parser.feed_data(data)
            self._data = b""  # not kept: a body read can be 256 KiB
            if self._in_head and self._pos >= 0:
                self._keep_head_part(data)
            if exchange.out is not None:
                exchange.flush()
        except httptools.HttpParserUpgrade as exc:
            # A 101: past it the bytes are not HTTP, and this connection is done with
            # the pool.  An exchange that asked for it takes the transport over.
            exchange = self.exchange
            self.exchange = None
            self.closed = True
            self.parser = None  # no more HTTP here; and it holds our bound methods (a cycle)
            if exchange is None or not exchange.on_upstream_upgrade(self.transport, data[exc.args[0]:]):
                if exchange is not None:
                    exchange.on_upstream_lost("upstream switched protocols", True)
                self.transport.close()
        except httptools.HttpParserError as exc:
            exchange = self.exchange
            was_closed = self.closed
            self.close()
            if isinstance(exc, httptools.HttpParserCallbackError) and exc.__context__ is not None:
                exc = exc.__context__  # raised by a callback below: it says why
            if exchange is not None:
                exchange.on_upstream_lost(f"invalid response from upstream: {exc}", True)
            elif self._ended and not was_closed:
                self._log_broken(str(exc))

    def _keep_head_part(self, data: bytes) -> None:
        """The read ended inside a head: keep its bytes for when the head is complete."""
        part = data[self._pos:] if self._pos else data
        if self._parts is None:
            if not part.strip(b"\r\n"):
                return  # nothing, or the CR/LF llhttp skips before a message
            self._parts = [part]
            self._kept = len(part)
        else:
            self._parts.append(part)
            self._kept += len(part)
        if self._kept > MAX_HEAD:
            raise httptools.HttpParserError(f"response head over {MAX_HEAD} bytes")

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
        self.parser = None  # it holds our bound methods: a cycle (server/client.py connection_lost)
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
        self._ended = False

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

    def _log_broken(self, why: str) -> None:
        """The response was relayed whole, but the connection is broken: say so."""
        log = self.target.error_log
        if log is not None:
            log.error(f"{why}: upstream connection closed, not reused", upstream=self.target.label)

    # -- httptools callbacks ---------------------------------------------------

    def on_message_begin(self) -> None:
        # A callback per response (~1% of a small request's instructions) buys the one
        # sure sign of bytes after the response: llhttp begins a message with them
        # (the CR/LF it skips between messages aside).  The per-response state is
        # reset when a head has been handed over.
        if self._ended:
            raise httptools.HttpParserError("upstream sent bytes after a complete response")

    # No on_status and no on_header: the head is split from its bytes here.

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        if exchange is None:
            # A head nobody asked for (after a response has ended): not reusable.
            self.close()
            return
        data = self._data
        start = self._pos
        if start < 0:
            raise httptools.HttpParserError("response head in the middle of a read")
        if self._parts is not None:  # the head began in earlier reads
            self._parts.append(data[start:] if start else data)
            data = b"".join(self._parts)
            self._parts = None
            start = 0
        parsed = parse_response_head(data, start)
        if parsed is None:
            raise httptools.HttpParserError("response head not found where expected")
        end, status, reason, lines, special = parsed
        if status < 100:
            # RFC 9110 15: status codes are 100-599; llhttp takes any 3 digits
            # (nginx: "upstream sent no valid HTTP/1.0 header", 502).
            raise httptools.HttpParserError(f"status {status:03d} is not a status code")
        self._final = status >= 200
        if self._final:
            self._in_head = False
        else:  # a 1xx has no body: the next head follows it (offset in this read)
            self._pos = end - (len(data) - len(self._data))
        exchange.on_response_head(status, reason, lines, special, self.parser.should_keep_alive())
        if self._skip_body and status >= 200:
            # A response to HEAD has no body whatever its Content-Length says
            # (RFC 9110 9.3.2); httptools cannot be told, so the message ends here
            # and a fresh parser takes the next response.
            self.parser = httptools.HttpResponseParser(self)
            self._in_head = True
            self._pos = -1  # the fresh parser starts with the next read
            self._ended = True  # (the old parser calls on_message_begin if more follows)
            if end < len(data) and data[end:].strip(b"\r\n"):
                # Bytes after the head of a response to HEAD (its body, or whatever
                # it is): the upstream's framing is not ours, the connection is broken.
                self.closed = True  # Exchange.finish() closes it instead of pooling it
                self._log_broken("upstream sent a body after its response to HEAD")
            if self.exchange is exchange:
                exchange.on_response_end()

    def on_body(self, body: bytes) -> None:
        if body and self.exchange is not None:
            self.exchange.on_response_body(body)

    def on_message_complete(self) -> None:
        if self._final:
            # The next head starts with the next read (a head right after this one
            # in the same read was not asked for: on_message_begin refuses it).
            self._in_head = True
            self._pos = -1
            self._ended = True
            exchange = self.exchange
            if exchange is not None:
                exchange.on_response_end()
