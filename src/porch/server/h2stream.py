"""One HTTP/2 stream: to the request lifecycle (server/proxy.py), a client connection.

An HTTP/2 request runs through the same Exchange as an HTTP/1.1 one: the same
routing, policies, forwarding headers, upstream pools and log line.  Two classes
adapt it:

- `H2Stream` stands where ClientConnection stands for HTTP/1.1 on the request side
  (it derives from it, so the Exchange's calls on its client are the same C calls
  when compiled): it owns the stream's flow control both ways.  Response bytes
  beyond the client's window wait in `buffered`; past SEND_BUFFER, reading from the
  upstream pauses.  Request bytes are acknowledged (WINDOW_UPDATE) only once passed
  on upstream, so a client cannot send faster than the upstream takes them.
- `H2Downstream` is how the Exchange writes the response (server/downstream.py):
  HEADERS and DATA frames on the stream instead of HTTP/1.1 bytes.  The Exchange is
  the same class for both protocols.

WebSockets over HTTP/2 (RFC 8441): an extended CONNECT with `:protocol websocket`
goes upstream as an HTTP/1.1 Upgrade request; the upstream's 101 becomes a 200 on
the stream, and the stream and the upstream connection become a tunnel
(server/tunnel.py) through `StreamTransport`, which makes the stream look like a
transport.
"""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING

from h2.errors import ErrorCodes

from porch.errors import ProxyError, client_error
from porch.http.h1 import BODY_NONE
from porch.http.h2 import SEND_BUFFER, RequestFields, request_line_problem, response_headers
from porch.http.model import ResponseHead
from porch.observability.accesslog import escape
from porch.pipeline import FileBody
from porch.server import filesend
from porch.server.client import _D_NONE, ClientConnection
from porch.server.downstream import Downstream
from porch.server.lifecycle import EV_HEAD
from porch.server.proxy import Exchange

if TYPE_CHECKING:
    import asyncio

    from porch.server.h2conn import H2Connection

# Reasons the stream's request side is blocked (besides ClientConnection's B_*).
B_TUNNEL = 16  # the tunnel's upstream side is not taking more

_CONTINUE = [(b":status", b"100")]
# RFC 8441 5: the upstream's 101 headers that belong to HTTP/1.1's handshake only.
_SWITCH_ONLY = frozenset({b"sec-websocket-accept"})


class H2Stream(ClientConnection):
    """One stream of an HTTP/2 connection, as its Exchange's client."""

    __slots__ = ("conn", "stream_id", "buffered", "buffered_size", "end_pending", "ended",
                 "remote_ended", "reset_after", "unacked", "tunnel", "switch_headers")

    def __init__(self, conn: H2Connection, stream_id: int) -> None:
        ClientConnection.__init__(self, conn.server, b"https", conn.hosts)
        # no parser and no socket of its own: frames come through the connection
        self.parser = None
        self.transport = StreamTransport(conn, stream_id)
        self.down = H2
        self.peer_ip = conn.peer_ip
        self.peer_trusted = conn.peer_trusted
        self.local_port = conn.local_port
        self.forwarding = conn.forwarding
        # per stream
        self.conn = conn
        self.stream_id = stream_id
        self.buffered: list[bytes] = []  # response bytes waiting for window
        self.buffered_size = 0
        self.end_pending = False  # END_STREAM goes once `buffered` is out
        self.ended = False  # END_STREAM or RST_STREAM sent: nothing more from us
        self.remote_ended = False  # the client's END_STREAM came
        self.reset_after = False  # RST_STREAM NO_ERROR once our END_STREAM is out
        self.unacked = 0  # request bytes received while blocked, not yet acknowledged
        self.tunnel: asyncio.Protocol | None = None  # RFC 8441: the tunnel's client end
        self.switch_headers: list[tuple[bytes, bytes]] | None = None

    # -- request side, driven by H2Connection ------------------------------------

    def start(self, raw: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        """A request's HEADERS: make its Exchange, route it, send it on its way."""
        fields = RequestFields(raw)
        ex = Exchange(self, self.server.runtime, self.loop.time())
        ex.version = b"2.0"
        self.reading = ex
        self._head_size = len(fields.path) + len(fields.method)
        for name, value in fields.headers:
            self.on_header(name, value)  # sorted as HTTP/1.1 headers are (client.py)
        if fields.authority:
            ex.host_header = fields.authority  # RFC 9113 8.3.1: it replaces Host
        ex.target = fields.path
        ex.method = fields.method
        if fields.protocol:  # extended CONNECT (RFC 8441 4)
            self._websocket(ex, fields.protocol)
        elif not end_stream and ex.content_length is None:
            ex.chunked = True  # no length: the body goes upstream chunked
        ex.keep_alive = True  # the connection's business, not the request's
        problem = request_line_problem(fields)
        if problem is None:
            self._route_head(ex)
        else:  # 400 on this stream only; the connection goes on (RFC 9113 8.1.1)
            ex.method = escape(ex.method).encode()  # logged as it came, in one line
            ex.answer(400, problem, source_error=client_error(400, problem))
        self.active = ex
        self.remote_ended = end_stream
        if end_stream:
            # No body: the request is whole with its head (as client.py does), and the
            # upstream's timeout starts when it is sent (Exchange._attach).
            ex.end_request()
            self.reading = None
        elif ex.websocket:
            self.reading = None  # the stream stays open for the tunnel; no body to read
        ex.begin()
        if ex.websocket and not ex.request_done:
            ex.on_request_end()

    def _websocket(self, ex: Exchange, protocol: bytes) -> None:
        if ex.method != b"CONNECT" or protocol.lower() != b"websocket":
            ex.head_error = client_error(400, "malformed request")  # answered by _route_head
            return
        ex.method = b"GET"
        ex.websocket = True
        ex.connection_tokens = {b"upgrade"}
        # The HTTP/1.1 handshake needs a key the HTTP/2 one has not (RFC 8441 5).
        ex.headers += (b"Sec-WebSocket-Key", b": ", base64.b64encode(os.urandom(16)), b"\r\n")
        self.block(self.B_UPGRADE)  # early bytes wait for the 101, as in HTTP/1.1

    def data_in(self, data: bytes, flow_length: int) -> None:
        if self.tunnel is not None:
            self.tunnel.data_received(data)
        elif self.reading is not None:
            self.on_body(data)  # as HTTP/1.1's: the body deadline, then the exchange
        else:
            ex = self.active  # a WebSocket's early bytes wait for the 101 (or are dropped)
            if ex is not None and ex.websocket and ex.switch_head is None and not ex.done:
                ex.tunnel_early += data
        if self.blocks:
            self.unacked += flow_length
        else:
            self.conn.acknowledge(self.stream_id, flow_length)

    def remote_end(self) -> None:
        """The client's END_STREAM: the request body is whole."""
        self.remote_ended = True
        if self.tunnel is not None:
            if not self.tunnel.eof_received():
                self.transport.close()
            return
        self.on_message_complete()  # as HTTP/1.1's: the body is whole
        if self.ended:
            self.conn.forget(self)

    def reset_by_client(self, cut: ProxyError | None = None) -> None:
        """RST_STREAM from the client, or the connection gone (`cut`: Porch cut it,
        see Exchange.client_gone)."""
        self.gone = self.closing = self.ended = True
        self._release()
        self.buffered = []
        if self.tunnel is not None:
            self.tunnel.connection_lost(None)
            return
        for ex in (self.active, self.reading):
            if ex is not None:
                ex.client_gone(cut)
        self.active = self.reading = None

    # -- ClientConnection's interface to the Exchange ----------------------------

    def block(self, reason: int) -> None:
        self.blocks |= reason  # reads are acknowledged no more: the client's window closes

    def unblock(self, reason: int) -> None:
        if self.blocks & reason:
            self.blocks &= ~reason
            if not self.blocks and self.unacked and not self.gone:
                self.conn.acknowledge(self.stream_id, self.unacked)
                self.unacked = 0
                self.conn.want_flush()

    def exchange_finished(self, ex: Exchange) -> None:
        if ex is not self.active:
            return
        self.active = None
        self.deadline_kind = _D_NONE
        self._release()
        if not self.ended:
            self.end()  # the exchange wrote its last frame but END_STREAM (fail, local)
        if not self.remote_ended and not self.gone:
            # Answered before the whole body came: ask the client to stop sending
            # (RFC 9113 8.1), once the response is out.
            self.reading = None
            self.stop_request()

    def stop_request(self) -> None:
        """Our response is complete but the client is still sending: RST_STREAM
        NO_ERROR once the response is out (RFC 9113 8.1)."""
        if self.ended:
            if not self.remote_ended and self.conn.streams.get(self.stream_id) is self:
                self.conn.reset_stream(self, ErrorCodes.NO_ERROR)
        else:
            self.reset_after = True

    def _release(self) -> None:
        """No exchange holds the request side back any more: what came meanwhile is
        acknowledged (else it would stay off the connection's window for good, and
        every stream of the connection would stall once a few had failed), and what
        comes from now on is, as it comes."""
        self.blocks = 0
        if self.unacked:
            self.conn.acknowledge(self.stream_id, self.unacked)
            self.unacked = 0

    def close(self) -> None:
        """The Exchange gave up on a response already started: reset the stream, so
        the client knows it is cut short (HTTP/1.1 closes the connection instead)."""
        self.reset(ErrorCodes.INTERNAL_ERROR)

    def hand_over(self) -> StreamTransport:
        self.active = None
        self.deadline_kind = _D_NONE
        return self.transport

    def shutdown(self) -> None:
        pass  # the connection sends GOAWAY; the stream finishes

    def check_deadlines(self, now: float) -> None:
        """As ClientConnection's (body, upstream and send deadlines), but a client
        that reads nothing of this stream gets CANCEL: nothing broke on our side."""
        if (self.write_paused and not self.conn.write_paused
                and now - self.write_paused_at > self.server.runtime.send_timeout):
            self.reset(ErrorCodes.CANCEL)
        ClientConnection.check_deadlines(self, now)

    # -- response side -----------------------------------------------------------

    def send_headers(self, headers: list[tuple[bytes, bytes]], end: bool = False) -> None:
        if not self.ended:
            self.conn.h2.send_headers(self.stream_id, headers, end_stream=end)
            if end:
                self._ended()

    def send_data(self, data: bytes) -> None:
        if self.ended:
            return
        self.buffered.append(data)
        self.buffered_size += len(data)
        self.pump()

    def end(self) -> None:
        """END_STREAM once what is buffered has gone out."""
        if not self.ended:
            self.end_pending = True
            self.pump()

    def reset(self, code: int) -> None:
        if not self.ended:
            self.ended = True
            self.end_pending = False
            self.buffered = []
            self.buffered_size = 0
            self.conn.reset_stream(self, code)

    def pump(self) -> None:
        """Send what the stream's and the connection's windows allow."""
        buffered = self.buffered
        if buffered:
            h2 = self.conn.h2
            sid = self.stream_id
            window = h2.local_flow_control_window(sid)
            frame = h2.max_outbound_frame_size
            while buffered and window > 0:
                chunk = buffered[0]
                n = min(len(chunk), window, frame)
                if n < len(chunk):
                    buffered[0] = chunk[n:]
                    chunk = chunk[:n]
                else:
                    buffered.pop(0)
                h2.send_data(sid, chunk)
                self.conn.unflushed += n
                window -= n
                self.buffered_size -= n
        if self.end_pending and not buffered and not self.ended:
            self.conn.h2.end_stream(self.stream_id)
            self._ended()
        self.sync_paused()

    def _ended(self) -> None:
        self.ended = True
        self.end_pending = False
        if self.remote_ended:
            self.conn.forget(self)
        elif self.reset_after:
            self.conn.reset_stream(self, ErrorCodes.NO_ERROR)

    def sync_paused(self) -> None:
        """Pause reading from the upstream while the stream holds more than
        SEND_BUFFER, or while the client's socket does not drain."""
        paused = self.buffered_size > SEND_BUFFER or self.conn.write_paused
        if paused != self.write_paused:
            if self.tunnel is not None:
                self.write_paused = paused
                if not paused:
                    self.tunnel.resume_writing()
                else:
                    self.write_paused_at = self.loop.time()
                    self.tunnel.pause_writing()
            elif paused:
                self.pause_writing()  # ClientConnection's: pauses the upstream's reads
            else:
                self.resume_writing()


class H2Downstream(Downstream):
    """HTTP/2 (server/downstream.py): the response as HEADERS and DATA frames on the
    exchange's stream (`ex.client`), sent as the windows allow (H2Stream.pump)."""

    def send_continue(self, ex: Exchange) -> None:
        ex.client.send_headers(_CONTINUE)  # RFC 9113 8.1: an interim HEADERS

    def send_interim(self, ex: Exchange, status: int, reason: bytes, lines: list[bytes]) -> None:
        ex.client.send_headers(response_headers(status, lines))
        ex.out = []  # flushed after this read

    def send_head(self, ex: Exchange, status: int, reason: bytes, lines: list[bytes]) -> None:
        # (every body is framed alike: a length changed by body hooks needs nothing)
        ex.move(EV_HEAD)
        ex.client.send_headers(response_headers(status, lines), end=ex.framing == BODY_NONE)
        ex.out = []  # written by flush(), with the body this upstream read brought

    def send_data(self, ex: Exchange, data: bytes) -> None:
        ex.client.send_data(data)  # paused past SEND_BUFFER (H2Stream.sync_paused)
        ex.out = []

    def flush(self, ex: Exchange) -> None:
        ex.out = None
        ex.client.conn.want_flush()

    def send_end(self, ex: Exchange) -> None:
        ex.client.end()  # END_STREAM once what is buffered is out
        ex.out = []

    def send_local(self, ex: Exchange, head: ResponseHead, body: bytes, more: bool) -> None:
        ex.move(EV_HEAD)
        stream = ex.client
        stream.send_headers(response_headers(head.status, head.headers.flat), end=not (body or more))
        if body:
            stream.send_data(body)
            if not more:
                stream.end()
        stream.conn.want_flush()

    def send_file_piece(self, ex: Exchange, body: FileBody) -> int:
        stream = ex.client
        data = filesend.read(body, min(body.length, filesend.CHUNK))
        stream.send_data(data)  # paused past SEND_BUFFER (sync_paused): send_file waits
        stream.conn.want_flush()
        return len(data)

    def prepare_switch(self, ex: Exchange, reason: bytes, lines: list[bytes]) -> None:
        # RFC 8441 5: a 200 opens the tunnel, without the HTTP/1.1 handshake's fields
        ex.switch_head = b""
        ex.client.switch_headers = [h for h in response_headers(200, lines) if h[0] not in _SWITCH_ONLY]

    def send_switch(self, ex: Exchange, transport: asyncio.Transport) -> int:
        stream = ex.client
        stream.send_headers(stream.switch_headers)
        stream.conn.want_flush()
        return 200  # what the client got (the upstream's 101 is upstream_status)

    def reset(self, ex: Exchange) -> None:
        ex.keep_alive = False
        ex.client.reset(ErrorCodes.INTERNAL_ERROR)  # HTTP/1.1 closes the connection instead


# The one HTTP/2 downstream: it has no state (each H2Stream gives it to its exchange).
H2 = H2Downstream()


class StreamTransport:
    """An HTTP/2 stream as the transport a tunnel (server/tunnel.py) writes to and
    pauses: DATA frames out, END_STREAM for EOF, RST_STREAM for abort.

    It finds its stream through the connection, not by holding it: the stream holds
    its transport, and a reference back would make each stream a cycle that only the
    cyclic collector frees (issue 11).  Once the connection has forgotten the stream
    (closed both ways, reset, or the connection gone) the calls do nothing."""

    __slots__ = ("conn", "stream_id")

    def __init__(self, conn: H2Connection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id

    @property
    def stream(self) -> H2Stream | None:
        return self.conn.streams.get(self.stream_id)

    def set_protocol(self, protocol: asyncio.Protocol) -> None:
        stream = self.stream
        if stream is not None:
            stream.tunnel = protocol

    def get_protocol(self) -> asyncio.Protocol | None:
        stream = self.stream
        return None if stream is None else stream.tunnel

    def write(self, data: bytes) -> None:
        stream = self.stream
        if data and stream is not None:
            stream.send_data(data)
            self.conn.want_flush()

    def writelines(self, parts: list[bytes]) -> None:
        self.write(b"".join(parts))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        stream = self.stream
        if stream is not None:
            stream.end()
            self.conn.want_flush()

    def pause_reading(self) -> None:
        stream = self.stream
        if stream is not None:
            stream.block(B_TUNNEL)

    def resume_reading(self) -> None:
        stream = self.stream
        if stream is not None:
            stream.unblock(stream.blocks)  # the tunnel decides alone from now on

    def is_closing(self) -> bool:
        stream = self.stream
        return stream is None or stream.ended

    def close(self) -> None:
        stream = self.stream
        if stream is None:
            return
        if not stream.ended:
            stream.end()
            self.conn.want_flush()
        if not stream.remote_ended:
            stream.stop_request()

    def abort(self) -> None:
        stream = self.stream
        if stream is None:
            return
        if stream.ended:
            if not stream.remote_ended:
                self.conn.reset_stream(stream, ErrorCodes.CANCEL)
        else:
            stream.reset(ErrorCodes.CANCEL)
        self.conn.want_flush()

    def get_write_buffer_size(self) -> int:
        stream = self.stream
        return 0 if stream is None else stream.buffered_size

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.conn.transport.get_extra_info(name, default)
