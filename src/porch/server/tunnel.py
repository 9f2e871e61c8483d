"""A tunnel: a client and an upstream connection joined after a 101 (WebSocket).

Once the upstream has switched protocols, Porch speaks no more HTTP on either
connection: each transport gets an `_End` protocol that writes what it reads to
the other side, as it arrives.

- Flow control both ways: when one side's write buffer passes its high-water mark
  (pause_writing), reading from the other side pauses until it drains, so a fast
  sender cannot grow Porch's memory past about one buffer per direction.
- Half-close: EOF from one side becomes write_eof on the other when both transports
  can half-close (TCP, HTTP/2 streams; TLS cannot: after close_notify the TLS
  transport closes whatever eof_received returns, and it cannot send one and keep
  reading), else the tunnel closes; once both sides have ended, or as soon as
  either connection is lost, both are closed.  Nothing is written to a transport
  already closing (a reload closes tunnels while EOFs are on their way).
- Idle timeout: no byte either way for the route's `tunnel_idle_timeout` closes the
  tunnel; the server's sweeper checks it, as it does request deadlines.
- The upstream connection never goes back to the pool: it is not HTTP any more.
- One access-log line when the tunnel ends: status 101, bytes each way, duration.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from porch.errors import ProxyError, client_error, upstream_error

if TYPE_CHECKING:
    from porch.server.proxy import Exchange

# A closed side still holding bytes its peer does not read is aborted after this long
# (nginx's send_timeout plays this part): a stuck reader cannot keep the socket.
CLOSE_FLUSH_TIMEOUT = 5.0


class Tunnel:
    """Owns both transports from the switch until it closes them."""

    __slots__ = ("tunnels", "exchange", "client", "upstream", "idle_timeout", "deadline",
                 "seen", "closed")

    def __init__(self, tunnels: set[Tunnel], exchange: Exchange, client: asyncio.Transport,
                 upstream: asyncio.Transport, idle_timeout: float, now: float) -> None:
        self.tunnels = tunnels  # the server's live tunnels (its sweeper checks them)
        self.exchange = exchange  # the request that opened it, logged when it ends
        self.client = _End(self, client)
        self.upstream = _End(self, upstream)
        self.client.peer, self.upstream.peer = self.upstream, self.client
        self.idle_timeout = idle_timeout
        self.deadline = now + idle_timeout
        self.seen = False  # bytes moved since the sweeper last looked
        self.closed = False

    def start(self, to_upstream: bytes, to_client: bytes, client_paused: bool,
              upstream_paused: bool) -> None:
        """Take both transports over.  `to_upstream` / `to_client`: bytes that came
        with the upgrade request / the 101 head; `*_paused`: whose write buffer is
        over its high-water mark right now."""
        self.tunnels.add(self)
        client, upstream = self.client, self.upstream
        client.transport.set_protocol(client)
        upstream.transport.set_protocol(upstream)
        if to_upstream:
            client.data_received(to_upstream)
        if to_client:
            upstream.data_received(to_client)
        # The client connection stopped reading at the upgrade request; reading
        # from each side resumes unless the other cannot take more yet.
        for end, paused in ((client, upstream_paused), (upstream, client_paused)):
            if paused:
                end.peer.write_paused = True
                end.transport.pause_reading()
            else:
                end.transport.resume_reading()

    def check(self, now: float) -> None:
        """Called by the sweeper: close a tunnel idle for `idle_timeout`."""
        if self.seen:
            self.seen = False
            self.deadline = now + self.idle_timeout
        elif now >= self.deadline:
            self.close(client_error(0, f"tunnel idle for {self.idle_timeout:g}s"))

    def close(self, error: ProxyError | None = None) -> None:
        """Close both connections (each after writing what it still holds) and log."""
        if self.closed:
            return
        self.closed = True
        self.tunnels.discard(self)
        ex = self.exchange
        loop = ex.client.loop
        for end in (self.client, self.upstream):
            transport = end.transport
            transport.close()
            if transport.get_write_buffer_size():
                loop.call_later(CLOSE_FLUSH_TIMEOUT, transport.abort)
        ex.bytes_in = self.client.received
        ex.bytes_out = self.upstream.received
        if error is not None:
            ex.error = error
        if ex.chain.log:
            ex._run_logs()
        ex.account(loop.time())
        # The ends and the tunnel refer to each other (and through the exchange, an
        # HTTP/2 stream to its end): cycles the worker's rare cyclic collections would
        # leave in memory.  Closed, the tunnel needs none of it (issue 11).
        self.client.peer = self.upstream.peer = None
        self.client = self.upstream = self.exchange = None


class RelayEnd(asyncio.Protocol):
    """One side of a byte relay (a tunnel here, a passthrough in server/splice.py):
    what it reads goes to `peer`'s transport, and while that side's writes are paused,
    reading from `peer` pauses too (flow control both ways)."""

    __slots__ = ("transport", "peer", "received", "eof", "write_paused")

    def __init__(self, transport: asyncio.Transport | None) -> None:
        self.transport = transport
        self.peer: RelayEnd | None = None  # set by the relay; None once it has closed
        self.received = 0
        self.eof = False
        self.write_paused = False

    def pause_writing(self) -> None:
        self.write_paused = True
        peer = self.peer
        if peer is not None and not peer.transport.is_closing():
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        peer = self.peer
        if peer is not None and not peer.transport.is_closing() and not peer.eof:
            peer.transport.resume_reading()


class _End(RelayEnd):
    """One side of a tunnel."""

    __slots__ = ("tunnel",)

    def __init__(self, tunnel: Tunnel, transport: asyncio.Transport) -> None:
        RelayEnd.__init__(self, transport)
        self.tunnel = tunnel

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        peer = self.peer
        if peer is not None:  # not after the close: the bytes have nowhere to go
            self.tunnel.seen = True
            peer.transport.write(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        peer = self.peer
        if peer is None:  # closed already (a TLS transport reports close_notify late)
            return None
        # Half-close needs both transports: this one kept open for reading after its
        # EOF, the peer able to send one (a TLS transport can do neither; returning
        # True from it only earns a warning from the event loop).
        if (not peer.eof and self.transport.can_write_eof() and peer.transport.can_write_eof()
                and not peer.transport.is_closing()):
            peer.transport.write_eof()  # the other way stays open
            return True
        self.tunnel.close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        tunnel = self.tunnel
        if not tunnel.closed:
            side = "client" if self is tunnel.client else "upstream"
            cause = f"{side} closed the connection{': ' + str(exc) if exc else ''}"
            tunnel.close(None if exc is None else
                         client_error(0, cause) if side == "client" else upstream_error(0, cause))
