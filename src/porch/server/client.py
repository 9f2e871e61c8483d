"""A client connection: asyncio.Protocol over httptools, keep-alive and pipelining.

It parses requests into Exchanges (server/proxy.py) and runs them one at a time, in
order: a pipelined request waits, with reading paused, until the one before it has
been answered (RFC 9112 9.3.2).  Timeouts are deadlines checked by the server's
sweeper twice a second, not timers armed per request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from functools import partial
from typing import TYPE_CHECKING

import httptools

from porch.errors import ProxyError, client_error
from porch.http import h1
from porch.http.forwarding import FORWARDING, IDENTITY
from porch.policies.forwarding import connection_part
from porch.http.h1 import request_line_version
from porch.http.upgrade import DROPPED, BodyAfterUpgrade, is_websocket
from porch.http.request_id import sane as sane_request_id
from porch.server.proxy import Exchange
# The module, not its H1: imported first, downstream's compiled types import this
# module before downstream's own body has run (a cycle through proxy.py).
from porch.server import downstream as _downstream
from porch.server.lifecycle import RQ_DONE, RS_DONE, RS_IDLE

if TYPE_CHECKING:
    from porch.routing import HostTable
    from porch.runtime import Runtime
    from porch.server.listener import Server

# Header names the parser looks at (lowercase) -> what to do with them.
_H_FORWARD = 0
(_H_HOST, _H_CL, _H_TE, _H_CONNECTION, _H_EXPECT, _H_DROP, _H_XFF, _H_XFPROTO,
 _H_XFHOST, _H_XFPORT, _H_REFERER, _H_UA, _H_UPGRADE, _H_UNDERSCORE, _H_REQID) = range(1, 16)
# Names with "_" are dropped unless `underscores_in_headers` (nginx's default, since
# CGI and WSGI servers read "_" and "-" alike); one of these names spelled with "_"
# (X_Remote_User, X_Forwarded_For, Transfer_Encoding) always (h1.HeaderKinds.kind).
# Each load adds the identity fields its policies set (a basic_auth user_header) and
# reads its own copy with its own memo (`_kinds`).
_SPECIAL = h1.HeaderKinds({
    **{name: _H_DROP for name in h1.HOP_BY_HOP | FORWARDING | IDENTITY | DROPPED},
    b"upgrade": _H_UPGRADE,
    b"host": _H_HOST,
    b"content-length": _H_CL,
    b"transfer-encoding": _H_TE,
    b"connection": _H_CONNECTION,
    b"expect": _H_EXPECT,
    b"x-forwarded-for": _H_XFF,
    b"x-forwarded-proto": _H_XFPROTO,
    b"x-forwarded-host": _H_XFHOST,
    b"x-forwarded-port": _H_XFPORT,
    b"referer": _H_REFERER,
    b"user-agent": _H_UA,
    b"x-request-id": _H_REQID,
}, underscore=_H_UNDERSCORE, protected=_H_DROP)


def _kinds(runtime: Runtime) -> h1.HeaderKinds:
    """The load's table of request header names: `_SPECIAL` with the identity fields
    of its policies dropped too (Runtime.identity_headers), made at the first name the
    load has not seen; its memo is `runtime.header_seen`, which on_header reads first."""
    kinds = runtime.header_kinds
    if kinds is None:
        table = {**_SPECIAL.table, **dict.fromkeys(runtime.identity_headers, _H_DROP)}
        kinds = h1.HeaderKinds(table, underscore=_H_UNDERSCORE, protected=_H_DROP)
        kinds.seen = runtime.header_seen
        runtime.header_kinds = kinds
    return kinds  # type: ignore[return-value]

_SEP = h1.SEP
_CRLF = h1.CRLF
_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0"}

# Deadline kinds
_D_NONE, _D_IDLE, _D_HEAD, _D_BODY, _D_LINGER = range(5)


class _NoMoreRequests(Exception):
    """Raised in a parser callback to stop llhttp at a request that must not be
    parsed: one after a response that closes the connection."""


# nginx lingering_timeout 5s / lingering_time 30s; a short one suffices for the
# client to read our answer before the connection goes.
LINGER_TIMEOUT = 2.0


def _parsed_method(parser: object) -> bytes:
    """The method of a request line llhttp has read, or b"" (not that far yet)."""
    try:
        return parser.get_method()  # type: ignore[attr-defined]
    except Exception:  # httptools raises when no method was parsed
        return b""


class ClientConnection:
    # An asyncio.Protocol by its methods (asyncio and uvloop take any object that has
    # them): compiled, this is an extension type (client.pxd declares its typed fields),
    # and an extension type cannot derive from a Python class.
    # reasons reading from the client is paused (bit flags)
    B_PIPELINE = 1  # an earlier request is still being answered
    B_PENDING = 2  # the upstream connection is not there yet
    B_UPSTREAM = 4  # the upstream is not taking the body as fast as it comes
    B_UPGRADE = 8  # after a WebSocket upgrade request, until the upstream answers it
    B_CLOSING = 32  # the last request is parsed: nothing after it is read (16: h2stream.py)
    B_POLICY = 64  # a policy's request hook is being awaited (pipeline.py)

    # Slots: an idle keep-alive connection is mostly this object (bench/ --idle).
    __slots__ = (
        "server", "loop", "scheme", "hosts", "down", "transport", "parser", "peer_ip", "peer_trusted",
        "local_port", "forwarding", "active", "queue", "blocks", "write_paused",
        "write_paused_at", "closing", "draining", "gone", "deadline", "deadline_kind", "reading",
        "_head_size", "_head_bytes", "_data", "_pos", "_chunk_at", "_tail",
    )

    def __init__(self, server: Server, scheme: bytes | None = None, hosts: HostTable | None = None) -> None:
        # per connection
        self.server = server
        self.loop = server.loop
        self.scheme = scheme or server.scheme  # b"https" on the TLS listener
        # the sites of the listener that accepted it (config/listeners.py), chosen once here
        self.hosts = hosts if hosts is not None else server.runtime.hosts
        self.down = _downstream.H1  # how its exchanges write to it (server/downstream.py)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.peer_ip = ""
        self.peer_trusted = False
        self.local_port = b""
        self.forwarding = b""  # this connection's forwarding fields (policies/forwarding.py)
        self.active: Exchange | None = None  # being answered
        # pipelined requests waiting their turn; a deque only once there are some
        # (an empty deque is 600 bytes, a third of an idle connection's cost)
        self.queue: deque[Exchange] | tuple[()] = ()
        self.blocks = 0
        self.write_paused = False
        self.write_paused_at = 0.0
        self.closing = False
        self.draining = server.draining  # answer with Connection: close (Server.stop_accepting)
        self.gone = False
        self.deadline = 0.0
        self.deadline_kind = _D_NONE
        # per request, while its head and body are parsed
        self.reading: Exchange | None = None
        self._head_size = 0  # parsed bytes of the head (request line + headers)
        self._head_bytes = 0  # raw bytes received while a head is incomplete
        # The read being parsed, and where in it a request line begins (-1: not known):
        # the version is read from there (h1.request_line_version).
        self._data = b""
        self._pos = -1
        # Chunked request bodies: body bytes since the last chunk-size line in this read
        # (-1: none to check), and the end of the read before (h1.chunk_size_error).
        self._chunk_at = -1
        self._tail = b""

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("sockname")
        ip = self.peer_ip  # set before when a PROXY protocol header named the client (server/mux.py)
        if not ip:
            peer = transport.get_extra_info("peername")
            ip = peer[0] if peer else ""
        if ip.startswith("::ffff:"):
            ip = ip[7:]
        self.peer_ip = ip
        self.local_port = str(sock[1]).encode() if sock else b""
        runtime = self.server.runtime
        self.peer_trusted = bool(runtime.trusted) and runtime.trusted.contains(ip)
        self.forwarding = connection_part(ip, self.scheme, self.local_port)  # policies/forwarding.py
        self.server.connections.add(self)
        self._set_deadline(_D_HEAD, runtime.header_timeout)
        if self.scheme == b"https":
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                self.down = _downstream.H1_TLS  # one TLS record per flush (downstream.py)
                if ssl_object.selected_alpn_protocol() == "h2":
                    self._speak_h2()

    def _speak_h2(self) -> None:
        """ALPN chose HTTP/2: an H2Connection (server/h2conn.py) takes the transport."""
        from porch.server.h2conn import H2Connection  # imported here: it imports this module

        self.server.connections.discard(self)
        self.deadline_kind = _D_NONE
        self.gone = self.closing = True  # any late call here is a no-op
        self.parser = None  # it holds this object's bound methods: a cycle (see connection_lost)
        conn = H2Connection(self)
        self.transport.set_protocol(conn)
        conn.start()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # lingering after an error answer, or stopping: discard
        ex = self.reading
        if ex is None or not ex.method:
            # A head is incomplete.  httptools keeps partial lines in memory, so the
            # bytes of a head still unfinished after earlier reads are capped here;
            # the exact limit is checked on the parsed head (on_headers_complete).
            if self._head_bytes > self.server.runtime.max_header_size:
                self._reject(431, "request head too large")
                return
            self._head_bytes += len(data)
            if ex is None:  # no request under way: the next request line is in this read
                self._data = data
                self._pos = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade_requested(data[exc.args[0]:])
        except httptools.HttpParserError as exc:
            if not self.closing:
                self._reject(400, f"malformed request: {exc}")
        self._pos = -1
        self._data = b""  # an idle connection keeps no read
        if self._chunk_at >= 0:
            self._check_chunk_size(data)
        ex = self.reading
        if ex is not None and ex.chunked:
            self._tail = data[-h1.CHUNK_LINE_LOOKBACK:]

    def eof_received(self) -> bool | None:
        # The client finished sending.  With nothing in flight we are done; with a
        # whole request in flight, keep the connection half-open to answer it (a
        # client may shut down its write side after the request).  Half a request
        # will never be whole: close, which aborts its upstream request too.
        if (self.active is None and self.reading is None) or self.deadline_kind == _D_LINGER:
            return None
        if self.reading is not None:
            return None
        self.closing = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(None)

    def _end(self, cut: ProxyError | None) -> int:
        """The connection is over: end (and log) its requests, as the client's doing
        (`cut` None) or Porch's (`cut`, see Exchange.client_gone); how many."""
        self.gone = True
        self.closing = True
        self.server.connections.discard(self)
        if self.server.limits is not None:  # max_connections(_per_client): its place is free
            self.server.limits.closed(self.transport)
        count = 0
        for ex in (self.active, self.reading, *self.queue):
            if ex is not None and ex.rs < RS_DONE:
                count += 1
                if cut is not None and ex is self.reading and not ex.method and self.parser is not None:
                    ex.method = _parsed_method(self.parser)  # a head cut short
                ex.client_gone(cut)
        self.queue = ()
        self.active = self.reading = None
        # The parser holds this object's bound methods (its callbacks): a reference
        # cycle, which with TLS also keeps the transport's SSLProtocol, SSLObject and
        # buffers (~0.28 MiB) until a cyclic collection, and the worker runs those
        # rarely (worker.py).  Dropped, reference counting frees it all now.
        self.parser = None
        return count

    def cut(self, cause: ProxyError) -> int:
        """The drain timeout ran out (Server.shutdown): end what is in flight, logged
        with `cause` (not as a client that left), and drop the connection.  Returns
        how many requests were cut."""
        count = self._end(cause)
        self.transport.abort()
        return count

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_paused_at = self.loop.time()
        ex = self.active
        if ex is not None and ex.upstream is not None:
            ex.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.active
        if ex is not None:
            if ex.upstream is not None:
                ex.upstream.transport.resume_reading()
                if ex.rq == RQ_DONE:
                    ex.up_deadline = self.loop.time() + ex.route.upstream_timeout
            elif ex.sending is not None:  # a file waits for room (filesend.py)
                ex.send_file()

    # -- httptools callbacks ---------------------------------------------------

    # No on_message_begin: the Exchange is made on the first piece of the URL, which
    # every request has (one parser callback fewer per request).

    def on_url(self, url: bytes) -> None:
        ex = self.reading
        if ex is None:
            if self.closing or self._last_parsed():
                self._stop_parsing()
            now = self.loop.time()
            # (Exchange.setup says why; through the typed field: a C call)
            self.reading = Exchange.__new__(Exchange)
            self.reading.setup(self, self.server.runtime, now)
            ex = self.reading
            ex.target = url
            self._head_size = len(url)
            self.deadline_kind = _D_HEAD
            self.deadline = now + ex.runtime.header_timeout
        else:
            ex.target += url
            self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.reading
        if ex is None or ex.method:  # trailers: dropped (RFC 9110 6.5.1 allows it)
            return
        self._head_size += len(name) + len(value) + 4
        if name == b"Host":  # in every request: a compare, not hashing a new name (~400)
            kind = _H_HOST
        else:
            found = ex.runtime.header_seen.get(name)
            kind = _kinds(ex.runtime).kind(name) if found is None else found
        if kind == _H_FORWARD or kind == _H_REFERER or kind == _H_UA:
            if kind == _H_REFERER:
                ex.referer = value
            elif kind == _H_UA:
                ex.user_agent = value
            headers = ex.headers  # appends, not += (tuple): compiled, four C-level appends
            headers.append(name)
            headers.append(_SEP)
            headers.append(value)
            headers.append(_CRLF)
        else:
            self._special_header(ex, kind, name, value)

    def _special_header(self, ex: Exchange, kind: int, name: bytes, value: bytes) -> None:
        if kind == _H_HOST:
            if ex.host_header is not None:  # RFC 9112 3.2
                ex.head_error = client_error(400, "duplicate Host header")
            ex.host_header = value
        elif kind == _H_CL:
            ex.content_length = int(value)  # llhttp has checked the digits
        elif kind == _H_TE:
            status = h1.transfer_encoding_error(value)
            if status:  # answered once the head is complete (_route_head)
                ex.head_error = client_error(status, f"unsupported Transfer-Encoding {value.decode('latin-1')!r}")
            ex.chunked = True
        elif kind == _H_CONNECTION:
            tokens = h1.connection_tokens(value) - {b"close", b"keep-alive"}
            if tokens:
                ex.connection_tokens = (ex.connection_tokens or set()) | tokens
        elif kind == _H_EXPECT:
            ex.expect_continue = value.strip().lower() == b"100-continue"
        elif kind == _H_XFF:
            ex.xff = value if ex.xff is None else ex.xff + b", " + value
        elif kind == _H_XFPROTO:
            ex.xf_proto = value
        elif kind == _H_XFHOST:
            ex.xf_host = value
        elif kind == _H_XFPORT:
            ex.xf_port = value
        elif kind == _H_UPGRADE:
            ex.websocket = is_websocket(value)
        elif kind == _H_UNDERSCORE:
            self._underscore_header(ex, name, value)
        elif kind == _H_REQID:
            # A trusted proxy's id goes on (it is the id of the whole chain); anyone
            # else's, or one that could split a header or a log line, is replaced.
            if self.peer_trusted and sane_request_id(value):
                ex.request_id = value

    def _underscore_header(self, ex: Exchange, name: bytes, value: bytes) -> None:
        runtime = ex.runtime
        if runtime.underscores_in_headers:
            ex.headers += (name, _SEP, value, _CRLF)
        elif runtime.error_log.debugging:  # nginx drops them silently
            runtime.error_log.debug(f"request header {name.decode('latin-1')!r} dropped: its name has"
                                    " an underscore (underscores_in_headers = true passes it)",
                                    client=self.peer_ip)

    def on_headers_complete(self) -> None:
        ex = self.reading
        parser = self.parser
        ex.method = parser.get_method()
        version = request_line_version(self._data, self._pos) if self._pos >= 0 else None
        if version is None:  # the head began in an earlier read, or after another one
            text = parser.get_http_version()
            version = _VERSIONS.get(text) or text.encode()
        self._pos = -1  # the next head in this read begins at an offset not known here
        ex.version = version
        ex.keep_alive = parser.should_keep_alive() and not self.closing and not self.draining
        if ex.chunked and version == b"1.0":
            # RFC 9112 6.1: HTTP/1.0 with Transfer-Encoding: its framing is suspect;
            # answer it, then close.
            ex.keep_alive = False
        self._head_bytes = 0
        self._route_head(ex)
        if not (ex.chunked or ex.content_length):
            # No body (RFC 9112 6.3): the request is whole with its head, and the
            # upstream's timeout starts when it is sent (Exchange._attach).  The table's
            # `end` from BODY (server/lifecycle.py), inlined: a new exchange is in BODY.
            ex.rq = RQ_DONE
        if self.active is None:
            self.active = ex
            ex.begin()
        else:
            self._enqueue(ex)
            self.block(self.B_PIPELINE)

    def _route_head(self, ex: Exchange) -> None:
        """The head is parsed (HTTP/1.1 here, HTTP/2 in h2stream.py): check its size and
        route it, or prepare the error answer; then wait for its body, if any."""
        runtime = ex.runtime
        if self._head_size > runtime.max_header_size:
            ex.answer(431, "", source_error=client_error(
                431, f"request head of {self._head_size} bytes over max_header_size {runtime.max_header_size}"))
        elif ex.head_error is not None:  # found while parsing (client.py, h2stream.py)
            ex.answer(ex.head_error.status, "", source_error=ex.head_error)
        else:
            err = ex.route_request()
            if err is not None:
                ex.answer(err.status, err.cause, source_error=err)
        if ex.local is None and ex.route is not None and (ex.chunked or ex.content_length):
            self._set_deadline(_D_BODY, ex.route.body_timeout)
        else:
            self.deadline_kind = _D_NONE

    def on_body(self, body: bytes) -> None:
        if self._chunk_at >= 0:
            self._chunk_at += len(body)
        ex = self.reading
        if ex is not None and body:
            if self.deadline_kind == _D_BODY:
                self.deadline = self.loop.time() + ex.route.body_timeout
            ex.on_request_body(body)

    def on_chunk_header(self) -> None:
        self._chunk_at = 0  # its size line ends where its data begins: checked after the read

    def on_chunk_complete(self) -> None:
        self._chunk_at = -1  # whole within one read: its size is no larger than the read

    def _check_chunk_size(self, data: bytes) -> None:
        """A chunk began in this read and runs past its end: the data after its
        size line is what followed in the read, so the line ends `_chunk_at` bytes
        before the read's end.  Refuse a size over 2^53 (h1.chunk_size_error)."""
        end = len(data) - self._chunk_at
        self._chunk_at = -1
        before = data[max(0, end - h1.CHUNK_LINE_LOOKBACK - 1):end]
        if end <= h1.CHUNK_LINE_LOOKBACK:
            before = self._tail + before
        cause = h1.chunk_size_error(before)
        if cause is not None and self.reading is not None and not self.closing:
            self._reject(400, cause)

    def on_message_complete(self) -> None:
        ex = self.reading
        self.reading = None
        if self.deadline_kind == _D_BODY:
            self.deadline_kind = _D_NONE
        if ex is not None:
            ex.on_request_end()

    def _last_parsed(self) -> bool:
        """The request before the one beginning is answered with Connection: close."""
        prev = self.queue[-1] if self.queue else self.active  # type: ignore[index]
        return prev is not None and not prev.keep_alive

    def _stop_parsing(self) -> None:
        """A request begins after one whose response closes the connection (or while
        closing): it is never parsed, routed, forwarded or logged (a pipelined
        request behind a 400 would otherwise reach the upstream unseen).  Reading
        stops; close() lingers, discarding what comes, then closes."""
        self.closing = True
        self.block(self.B_CLOSING)
        raise _NoMoreRequests

    # -- driven by exchanges ---------------------------------------------------

    def _enqueue(self, ex: Exchange) -> None:
        if not self.queue:
            self.queue = deque()
        self.queue.append(ex)  # type: ignore[union-attr]

    def exchange_finished(self, ex: Exchange) -> None:
        if ex is not self.active:
            return
        self.active = None
        if self.gone:
            return
        if not ex.keep_alive:
            self.close()
            return
        if self.queue:
            nxt = self.queue.popleft()  # type: ignore[union-attr]
            self.active = nxt
            if not self.queue:
                self.unblock(self.B_PIPELINE)
            nxt.begin()
            return
        if self.closing:
            self.close()
            return
        if self.reading is None:
            self.deadline_kind = _D_IDLE
            self.deadline = ex.t_end + ex.runtime.keepalive_timeout

    def block(self, reason: int) -> None:
        if not self.blocks and not self.gone:
            self.transport.pause_reading()
        self.blocks |= reason

    def unblock(self, reason: int) -> None:
        if self.blocks & reason:
            self.blocks &= ~reason
            if not self.blocks and not self.gone:
                self.transport.resume_reading()
                if self.deadline_kind == _D_BODY and self.reading is not None:
                    self.deadline = self.loop.time() + self.reading.route.body_timeout

    def close(self) -> None:
        """Close after what has been written is flushed.

        When the client may still be sending (an error answered before its body
        was read), close only our side and discard what comes for a moment: a
        close with unread data sends RST, and the client could lose our answer
        (nginx's lingering_close).
        """
        self.closing = True
        if self.gone:
            return
        reading = self.reading
        if reading is not None and not self.blocks and reading.rq == RQ_DONE \
                and not self.transport.can_write_eof():
            # TLS has no half close to tell the client we are done, so lingering would
            # only make a client that reads until the close wait LINGER_TIMEOUT; and
            # its request is whole: there is nothing of it left to discard.
            self.reading = None
            self.transport.close()
        elif reading is not None or self.blocks:
            self.reading = None
            if self.blocks:
                self.blocks = 0
                self.transport.resume_reading()
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self._set_deadline(_D_LINGER, LINGER_TIMEOUT)
        else:
            self.transport.close()

    def drain(self) -> None:
        """The server stops (or this worker is replaced): requests not answered yet are
        answered with Connection: close.  Not an answer already written, or built
        (ex.local): its head says keep-alive, so the connection idles after it, and is
        closed within the server's idle grace."""
        for ex in (self.active, self.reading, *self.queue):
            if ex is not None and ex.rs == RS_IDLE and ex.local is None:
                ex.keep_alive = False

    def shutdown(self) -> None:
        """Graceful stop: idle connections close now, busy ones after their response."""
        self.closing = True
        if self.active is None and self.reading is None:
            self.close()

    # -- timeouts --------------------------------------------------------------

    def _set_deadline(self, kind: int, seconds: float) -> None:
        self.deadline_kind = kind
        self.deadline = self.loop.time() + seconds

    def check_deadlines(self, now: float) -> None:
        """Called by the server's sweeper."""
        kind = self.deadline_kind
        if kind != _D_NONE and now >= self.deadline and not (kind == _D_BODY and self.blocks):
            self._deadline_passed(kind)
            return
        ex = self.active
        if ex is not None and ex.up_deadline:
            if ex.up_seen:  # the upstream sent something since we last looked
                ex.up_seen = False
                ex.up_deadline = now + ex.route.upstream_timeout
            elif now >= ex.up_deadline and not self.write_paused:
                ex.on_upstream_timeout()
                return
        if self.write_paused and now - self.write_paused_at > self.server.runtime.send_timeout:
            if ex is not None:
                ex.fail(client_error(0, f"client read nothing for {self.server.runtime.send_timeout:g}s"))
            self.transport.abort()

    def _deadline_passed(self, kind: int) -> None:
        self.deadline_kind = _D_NONE
        if kind == _D_IDLE or kind == _D_LINGER:
            self.transport.close()
        elif kind == _D_HEAD:
            if self.reading is None and self.active is None:
                self.close()  # nothing of a request yet: nginx closes silently too
            else:
                self._reject(408, "timed out reading the request head")
        elif kind == _D_BODY and self.reading is not None:
            self.reading.fail(client_error(408, "timed out reading the request body"))

    # -- refusals --------------------------------------------------------------

    def _reject(self, status: int, cause: str) -> None:
        """Answer a request we could not parse, then close (nothing after it can be
        trusted to be framed right)."""
        self.block(self.B_PIPELINE)
        ex = self.reading
        self.reading = None
        self.closing = True
        if ex is not None and ex.method:
            ex.fail(client_error(status, cause))  # the head was fine, the body was not
            return
        if ex is None:
            ex = Exchange(self, self.server.runtime, self.loop.time())
        ex.keep_alive = False
        ex.answer(status, cause, source_error=client_error(status, cause))
        if self.active is None:
            self.active = ex
            ex.begin()
        else:
            self._enqueue(ex)

    def _upgrade_requested(self, rest: bytes) -> None:
        """llhttp stops after CONNECT and after a request with Upgrade and Connection:
        upgrade; `rest` is what came after it.

        - CONNECT was refused: what follows is not HTTP we can frame; close.
        - WebSocket, on its way upstream: read nothing more until the upstream answers.
          A 101 makes this connection a tunnel (`hand_over`) and `rest` its first bytes;
          any other answer is a plain response, after which the connection closes.
        - Any other upgrade (h2c) went upstream as a plain request without its Upgrade
          (http/upgrade.py): parsing goes on with a fresh parser, keep-alive kept,
          once the request's body, which llhttp left in `rest`, has been passed on.
        """
        # The upgrade request is the last one parsed (still queued, active, or done).
        ex = self.queue[-1] if self.queue else self.active  # type: ignore[index]
        if self.parser.get_method() == b"CONNECT":
            self.closing = True
            for pending in (self.active, *self.queue):
                if pending is not None:
                    pending.keep_alive = False
            if self.active is None:
                self.close()
        elif (ex is not None and ex.websocket and ex.local is None and ex.rs < RS_DONE
              and not (ex.content_length or ex.chunked)):  # as Exchange._upstream_head
            ex.keep_alive = False
            ex.tunnel_early = rest
            self.block(self.B_UPGRADE)
        elif ex is not None and ex.chunked and ex.local is None:
            # llhttp has ended the request (a last chunk went upstream): its chunks
            # cannot be framed any more.  curl sends Content-Length bodies only.
            ex.fail(client_error(400, "chunked request body with Upgrade is not supported"))
        elif ex is not None and ex.content_length and ex.local is None:
            self.parser = BodyAfterUpgrade(ex.content_length, partial(self._upgrade_body, ex),
                                           self._upgrade_body_done)  # type: ignore[assignment]
            if rest:
                self.parser.feed_data(rest)
        else:
            self._upgrade_body_done(rest)

    def _upgrade_body(self, ex: Exchange, data: bytes) -> None:
        self._head_bytes = 0  # body bytes, not an unfinished head
        ex.on_request_body(data)

    def _upgrade_body_done(self, rest: bytes) -> None:
        self.parser = httptools.HttpRequestParser(self)
        if rest and not self.closing:
            self.data_received(rest)

    def hand_over(self) -> asyncio.Transport:
        """This connection leaves HTTP (a 101 answered its WebSocket upgrade): stop
        tracking it and return its transport, which a tunnel (server/tunnel.py) takes."""
        self.server.connections.discard(self)
        self.active = None
        self.gone = self.closing = True  # any late call here is a no-op
        self.deadline_kind = _D_NONE
        self.parser = None  # a cycle with this object (see connection_lost)
        return self.transport
