"""How an Exchange writes to its client: the `Downstream` interface.

The request lifecycle (server/proxy.py) is the same for HTTP/1.1 and HTTP/2; only the
way a response goes out differs: status lines, chunks and `Connection` for HTTP/1.1,
HEADERS and DATA frames with flow control for HTTP/2.  The Exchange holds no
protocol code for that: it calls the downstream of its client connection
(`client.down`), one object per protocol with no state of its own (a strategy, as
Pingora's `HttpSession` is one interface over its v1 and v2 sessions).  Whatever it
needs of the exchange it reads from the exchange passed in, so a connection's
downstream costs no allocation a request and makes no reference cycle.

- `H1Downstream` (here): HTTP/1.1 bytes on the connection's transport.  The head and
  the body a single upstream read brought are gathered in `ex.out` and written by
  `flush` in one call (writev).
- `H2Downstream` (server/h2stream.py): frames on the exchange's stream.

The calls, in the order an exchange makes them:

    send_continue            100 Continue, when the request asked for it
    send_interim             an upstream's 1xx (103 Early Hints)
    send_head                the response head; framing decided (ex.framing)
    send_data / flush        body bytes, then written out after each upstream read
    send_end                 the body is complete
    send_local               Porch's own answer: a ResponseHead and its body
    send_file_piece          a piece of a file answer (pipeline.FileBody)
    prepare_switch, send_switch   a WebSocket's switch (101, or HTTP/2's 200)
    reset                    cut a response short: the client must see it is not whole
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from porch.http import h1
from porch.http.h1 import BODY_CHUNKED, BODY_CLOSE, BODY_LENGTH, BODY_NONE, LAST_CHUNK, relayed_status_line
from porch.http.upgrade import WEBSOCKET_LINES
from porch.server import filesend
from porch.server.lifecycle import EV_HEAD, RQ_DONE, RS_IDLE, RS_SENDING

if TYPE_CHECKING:
    import asyncio

    from porch.http.model import ResponseHead
    from porch.pipeline import FileBody
    from porch.server.proxy import Exchange

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CHUNKED_LINE = b"Transfer-Encoding: chunked\r\n"
_CLOSE_LINE = b"Connection: close\r\n"
_KEEPALIVE_LINE = b"Connection: keep-alive\r\n"
_CRLF = h1.CRLF


class Downstream:
    """The interface; each method's contract is its docstring.  Compiled, the
    Exchange's calls are C calls (downstream.pxd)."""

    def send_continue(self, ex: Exchange) -> None:
        """The client asked to be told to send its body (Expect: 100-continue)."""
        raise NotImplementedError

    def send_interim(self, ex: Exchange, status: int, reason: bytes, lines: list[bytes]) -> None:
        """An upstream's informational response other than 100 and 101."""
        raise NotImplementedError

    def send_head(self, ex: Exchange, status: int, reason: bytes, lines: list[bytes]) -> None:
        """The response head: `lines` is the flat field list, policies done.  The
        exchange has set `framing` to BODY_NONE where the response has no body;
        otherwise to how the upstream delimits it, which this may change to how the
        client gets it.  Moves the exchange on (`EV_HEAD`, server/lifecycle.py) once
        the head is on its way."""
        raise NotImplementedError

    def send_data(self, ex: Exchange, data: bytes) -> None:
        """Body bytes (not empty)."""
        raise NotImplementedError

    def flush(self, ex: Exchange) -> None:
        """Write what the last upstream read produced."""
        raise NotImplementedError

    def send_end(self, ex: Exchange) -> None:
        """The body is complete (written out by the exchange's finish)."""
        raise NotImplementedError

    def send_local(self, ex: Exchange, head: ResponseHead, body: bytes, more: bool) -> None:
        """Porch's own answer, whole (`more`: a file body follows, piece by piece)."""
        raise NotImplementedError

    def send_file_piece(self, ex: Exchange, body: FileBody) -> int:
        """Up to filesend.CHUNK bytes of a file answer; how many went."""
        raise NotImplementedError

    def prepare_switch(self, ex: Exchange, reason: bytes, lines: list[bytes]) -> None:
        """The upstream accepted a WebSocket upgrade (its 101, `lines` after the
        response hooks): what the client will get when the tunnel starts."""
        raise NotImplementedError

    def send_switch(self, ex: Exchange, transport: asyncio.Transport) -> int:
        """The tunnel starts on `transport`: the switch goes out; returns the status
        the client got."""
        raise NotImplementedError

    def reset(self, ex: Exchange) -> None:
        """A response already begun is cut short: the client must be able to tell."""
        raise NotImplementedError


class H1Downstream(Downstream):
    """HTTP/1.1 (and 1.0) on the client connection's transport."""

    def send_continue(self, ex: Exchange) -> None:
        if ex.version == b"1.1":
            ex.client.transport.write(_CONTINUE)

    def send_interim(self, ex: Exchange, status: int, reason: bytes, lines: list[bytes]) -> None:
        if ex.version == b"1.1":  # HTTP/1.0 has no 1xx (RFC 9110 15.2)
            ex.client.transport.write(b"".join((relayed_status_line(status, reason), *lines, _CRLF)))

    def send_head(self, ex: Exchange, status: int, reason: bytes, lines: list[bytes]) -> None:
        framing = ex.framing
        if framing != BODY_LENGTH and framing != BODY_NONE:
            if ex.version == b"1.1":
                ex.framing = BODY_CHUNKED
                lines.append(_CHUNKED_LINE)
            else:  # HTTP/1.0: until the connection closes
                ex.framing = BODY_CLOSE
                ex.keep_alive = False
        if ex.rq != RQ_DONE:
            ex.keep_alive = False  # an early answer: the rest of the body is unread
        if not ex.keep_alive or ex.client.closing:
            ex.keep_alive = False
            lines.append(_CLOSE_LINE)
        elif ex.version == b"1.0":
            lines.append(_KEEPALIVE_LINE)
        lines.append(_CRLF)
        # Not response_started yet: flush() writes the head, and an upstream error
        # before that (a bad chunk size in the same read) can still be a clean 502.
        ex.out = [b"".join((relayed_status_line(status, reason), *lines))]

    def send_data(self, ex: Exchange, data: bytes) -> None:
        out = ex.out
        if ex.framing == BODY_CHUNKED:
            if out is None:
                ex.out = [b"%x\r\n" % len(data), data, _CRLF]
            else:
                out += (b"%x\r\n" % len(data), data, _CRLF)
        elif out is None:
            ex.client.transport.write(data)
        else:
            out.append(data)

    def flush(self, ex: Exchange) -> None:
        out = ex.out
        if out is not None:
            ex.out = None
            if ex.rs == RS_IDLE:  # the head is in `out` until its first flush
                ex.rs = RS_SENDING  # the table's `head` from IDLE, inlined (as in Exchange.finish)
            if len(out) == 1:
                ex.client.transport.write(out[0])
            else:
                ex.client.transport.writelines(out)

    def send_end(self, ex: Exchange) -> None:
        if ex.framing == BODY_CHUNKED:
            if ex.out is None:
                ex.out = [LAST_CHUNK]
            else:
                ex.out.append(LAST_CHUNK)

    def send_local(self, ex: Exchange, head: ResponseHead, body: bytes, more: bool) -> None:
        ex.move(EV_HEAD)
        parts = [h1.status_line(head.status), *head.headers.flat]
        if not ex.keep_alive:
            parts.append(_CLOSE_LINE)
        parts.append(_CRLF)
        if body:
            parts.append(body)
        ex.client.transport.write(b"".join(parts))

    def send_file_piece(self, ex: Exchange, body: FileBody) -> int:
        transport = ex.client.transport
        size = min(body.length, filesend.CHUNK)
        if transport.get_write_buffer_size() == 0:
            fd = filesend.plain_socket_fd(transport)
            if fd >= 0:
                sent = filesend.sendfile(fd, body, size)
                if sent:
                    return sent
        data = filesend.read(body, size)
        transport.write(data)
        return len(data)

    def prepare_switch(self, ex: Exchange, reason: bytes, lines: list[bytes]) -> None:
        ex.switch_head = b"".join((relayed_status_line(101, reason), *lines, WEBSOCKET_LINES, _CRLF))

    def send_switch(self, ex: Exchange, transport: asyncio.Transport) -> int:
        transport.write(ex.switch_head)
        return 101

    def reset(self, ex: Exchange) -> None:
        ex.keep_alive = False
        ex.client.close()  # a short body is never passed as whole: the close says it


class H1TlsDownstream(H1Downstream):
    """HTTP/1.1 over TLS: what one upstream read produced goes out as one write.
    uvloop's SSL transport makes each piece of a writelines() its own SSL_write, so
    its own TLS record (5 bytes of header, 16 of AEAD tag, one encryption each): a
    head and a small body were two records, each chunk of a chunked body three."""

    def flush(self, ex: Exchange) -> None:
        out = ex.out
        if out is not None:
            ex.out = None
            if ex.rs == RS_IDLE:
                ex.rs = RS_SENDING  # the table's `head` from IDLE, inlined (as in H1Downstream)
            ex.client.transport.write(out[0] if len(out) == 1 else b"".join(out))


# The HTTP/1.1 downstreams: they have no state (server/client.py gives one to each connection).
H1 = H1Downstream()
H1_TLS = H1TlsDownstream()
