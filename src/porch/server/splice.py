"""A passthrough: a client connection spliced to a `[[stream]]` target, bytes untouched.

server/mux.py hands over the client's transport (reading paused) and what it has read
so far; `Splice.start` connects to the target, sends the optional PROXY header and
those bytes, then copies both ways as they arrive:

- flow control both ways: when one side's write buffer passes its high-water mark
  (pause_writing), reading from the other side pauses until it drains;
- half-close: EOF from one side becomes write_eof on the other (a TLS session inside
  is end to end, so TCP half-close is all there is); once both sides have ended, or
  either connection is lost, both close;
- idle timeout: no byte either way for the stream's `idle_timeout` closes both;
- one access-log line when it ends: bytes each way and duration (AccessLog.stream).

Reload: a splice sits in the server's `connections` like an HTTP connection with a
request in flight, so a draining worker keeps it up to drain_timeout, then closes it
with a log line (`cut`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from porch.mux.proxy_protocol import encode_v1, encode_v2
from porch.server.tunnel import RelayEnd

if TYPE_CHECKING:
    from porch.config.model import Stream
    from porch.server.listener import Server

# A closed side still holding bytes its peer does not read is aborted after this long
# (as server/tunnel.py).
CLOSE_FLUSH_TIMEOUT = 5.0


class Splice:
    """Owns both transports from the hand-over until it closes them.  Duck-typed as
    a server connection (listener.py): `active`, `reading`, `check_deadlines`,
    `drain`, `shutdown`, `transport`."""

    __slots__ = ("server", "stream", "label", "client_ip", "client", "upstream", "transport",
                 "t_start", "deadline", "seen", "closed", "status", "active", "reading",
                 "deadline_kind")

    def __init__(self, server: Server, stream: Stream, label: str, client_ip: str,
                 transport: asyncio.Transport) -> None:
        self.server = server
        self.stream = stream
        self.label = label  # what the log line says was matched
        self.client_ip = client_ip
        self.transport = transport  # the client's (Server.shutdown aborts it)
        self.client = _End(self, transport)
        self.upstream: _End | None = None
        self.t_start = server.loop.time()
        self.deadline = self.t_start + stream.connect_timeout
        self.seen = False  # bytes moved since the sweeper last looked
        self.closed = False
        self.status = 200  # for the log: 502 when the target cannot be reached
        self.active = self  # never idle for Server.shutdown: it waits for it
        self.reading = None
        self.deadline_kind = 0

    def start(self, first: bytes, proxy_source: tuple[str, int], proxy_dest: tuple[str, int]) -> None:
        """Connect to the target; `first`: the client's bytes read so far.
        `proxy_*`: the addresses a PROXY header (if the stream sends one) carries."""
        self.server.connections.add(self)
        self.transport.set_protocol(self.client)
        header = b""
        version = self.stream.proxy_protocol
        if version is not None:
            header = (encode_v1 if version == "v1" else encode_v2)(proxy_source, proxy_dest)
        self.server.loop.create_task(self._connect(header + first, len(first)))

    async def _connect(self, first: bytes, counted: int) -> None:
        loop = self.server.loop
        host, port = self.stream.passthrough
        end = _End(self, None)
        try:
            await asyncio.wait_for(loop.create_connection(lambda: end, host, port),
                                   self.stream.connect_timeout)
        except (OSError, asyncio.TimeoutError) as err:
            cause = "timed out" if isinstance(err, asyncio.TimeoutError) else (err.strerror or str(err))
            self.server.runtime.error_log.error(
                f"passthrough to {self.stream.target} failed: {cause}", client=self.client_ip,
                stream=self.stream.key_path)
            self.status = 502
            self.close()
            return
        if self.closed:  # the client left while connecting
            end.transport.close()
            return
        self.upstream = end
        self.client.peer, end.peer = end, self.client
        self.client.received = counted
        self.seen = True
        self.deadline = loop.time() + self.stream.idle_timeout
        end.transport.write(first)
        if end.early:
            self.transport.write(end.early)
            end.early = b""
        if end.eof:  # the target spoke and closed before the join
            self.transport.write_eof()
        else:
            end.transport.resume_reading()
        if self.client.eof:
            end.transport.write_eof()
        else:
            self.transport.resume_reading()

    def check_deadlines(self, now: float) -> None:
        """Called by the server's sweeper: close a splice idle for `idle_timeout`."""
        if self.seen:
            self.seen = False
            self.deadline = now + self.stream.idle_timeout
        elif now >= self.deadline:
            if self.upstream is None:
                return  # connecting: wait_for bounds it
            self.close()

    def drain(self) -> None:
        pass  # no request to answer with Connection: close

    def shutdown(self) -> None:
        pass  # never idle: Server.shutdown cuts it once its drain time is over

    def cut(self, cause=None) -> int:
        """drain_timeout is over (Server.shutdown: this worker was replaced by a
        reload, or stops): close both sides now and say so (clients reconnect to the
        new workers).  No HTTP request is cut: returns 0 (`cause` is for those)."""
        if self.closed:
            return 0
        self.server.runtime.error_log.warn(
            f"passthrough to {self.stream.target} closed at the end of drain_timeout",
            client=self.client_ip, stream=self.stream.key_path,
            duration=f"{self.server.loop.time() - self.t_start:.1f}s")
        self.close()
        for end in (self.client, self.upstream):
            if end is not None and end.transport is not None:
                end.transport.abort()
        return 0

    def close(self) -> None:
        """Close both connections (each after writing what it still holds) and log."""
        if self.closed:
            return
        self.closed = True
        self.server.connections.discard(self)
        loop = self.server.loop
        for end in (self.client, self.upstream):
            if end is None or end.transport is None:
                continue
            transport = end.transport
            transport.close()
            if transport.get_write_buffer_size():
                loop.call_later(CLOSE_FLUSH_TIMEOUT, transport.abort)
        sent = self.upstream.received if self.upstream is not None else 0
        now = loop.time()
        what = f"PASSTHROUGH {self.label} -> {self.stream.target}"
        self.server.runtime.access_log.stream(self.client_ip, what, self.status, sent,
                                              self.client.received, now - self.t_start, now)


class _End(RelayEnd):
    """One side of a splice (its peer is None until the target is connected)."""

    __slots__ = ("splice", "early")

    def __init__(self, splice: Splice, transport: asyncio.Transport | None) -> None:
        RelayEnd.__init__(self, transport)
        self.splice = splice
        self.early = b""  # read before the sides were joined (uvloop may deliver a read
        # already under way when connection_made pauses reading)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The target's side, connected: it may speak first (SSH), before Splice._connect
        # has joined the two sides; it reads once they are.
        self.transport = transport  # type: ignore[assignment]
        transport.pause_reading()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self.splice.seen = True
        peer = self.peer
        if peer is None:
            self.early += data
        else:
            peer.transport.write(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        peer = self.peer
        if peer is None:
            return True  # connecting: the EOF is passed on once connected
        if not peer.eof and peer.transport.can_write_eof():
            peer.transport.write_eof()  # half-close: the other way stays open
            return True
        self.splice.close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.splice.close()

