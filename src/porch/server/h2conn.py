"""An HTTP/2 client connection: asyncio.Protocol over the `h2` state machine.

ALPN picks h2 on the HTTPS listener, and the ClientConnection made for the socket
hands its transport to an H2Connection (client.py `_speak_h2`).  Each request
stream gets an H2Stream and an Exchange writing through H2Downstream (server/h2stream.py), so it runs the same
request lifecycle as HTTP/1.1, to the same HTTP/1.1 upstream pools.

What this class adds is the connection's share:
- frames in -> h2 events -> streams; h2's output written once per turn of the
  event loop (`want_flush`), so frames produced together leave in one send;
- refusals: new streams while shutting down or beyond `max_concurrent_streams`
  (RST_STREAM REFUSED_STREAM: counted here, see http/h2.py `limits_frame`), flood
  guards (http/h2.py) -> GOAWAY ENHANCE_YOUR_CALM;
- the socket's flow control: while the client does not read (write buffer over its
  high-water mark), nothing more is read from it, so a client cannot pile up
  PING and SETTINGS acknowledgements, and every stream pauses its upstream;
- deadlines, from the server's sweeper: idle (`keepalive_timeout`), `send_timeout`,
  and each stream's body and upstream deadlines (ClientConnection.check_deadlines);
- graceful shutdown and reload: GOAWAY at once, streams in flight finish, then a
  final GOAWAY and close.  h2 treats a GOAWAY it sends as the end of the connection
  (it refuses to send anything after it), so the first one is written here
  directly, and h2's own `close_connection` sends the last one.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import h2.events as ev
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from hyperframe.frame import GoAwayFrame

from porch.http.h2 import FloodGuard
from porch.server.h2engine import native_events, new_engine
from porch.server.h2stream import H2Stream

if TYPE_CHECKING:
    from porch.errors import ProxyError
    from porch.server.client import ClientConnection

FLUSH_NOW = 64 * 1024


class H2Connection:
    __slots__ = ("server", "hosts", "loop", "transport", "h2", "streams", "guard", "peer_ip",
                 "peer_trusted", "local_port", "forwarding", "max_streams", "write_paused",
                 "write_paused_at", "closing", "gone", "last_stream", "idle_since", "flush_soon",
                 "unflushed",
                 "active", "reading", "queue", "deadline_kind", "deadline")

    def __init__(self, client: ClientConnection) -> None:
        self.server = client.server
        self.hosts = client.hosts  # its listener's sites, for each stream
        self.loop = client.loop
        self.transport: asyncio.Transport = client.transport
        self.peer_ip = client.peer_ip
        self.peer_trusted = client.peer_trusted
        self.local_port = client.local_port
        self.forwarding = client.forwarding
        runtime = self.server.runtime
        self.max_streams = runtime.max_concurrent_streams
        # nghttp2 or h2 (server/h2engine.py): the same interface, h2's
        self.h2 = new_engine(runtime.http2_engine)
        self.streams: dict[int, H2Stream] = {}
        self.guard = FloodGuard()
        self.write_paused = False
        self.write_paused_at = 0.0
        self.closing = False  # GOAWAY sent (or received): no new streams
        self.gone = False
        self.last_stream = 0  # the last stream the GOAWAY lets finish
        self.idle_since = self.loop.time()
        self.flush_soon = False  # a write of h2's output is scheduled (want_flush)
        self.unflushed = 0  # DATA bytes given to h2 since the last write
        # What Server.shutdown() reads of every connection (HTTP/1.1's request slots)
        self.active = self.reading = None
        self.queue = ()
        self.deadline_kind = 0
        self.deadline = 0.0

    def start(self) -> None:
        self.server.connections.add(self)
        # our SETTINGS (with the limits of http/h2.py limits_frame) and connection window
        self.transport.write(self.h2.start(self.max_streams, self.server.runtime.max_header_size))

    # -- asyncio.Protocol ------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.gone:
            return
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:
            self._fail(exc.error_code or ErrorCodes.PROTOCOL_ERROR, f"HTTP/2 protocol error: {exc}")
            return
        try:
            for event in events:
                handler = _HANDLERS.get(type(event))
                if handler is not None:
                    handler(self, event)
                    if self.gone:
                        return
        except Exception as exc:  # a bug of ours: end this connection, not the worker's loop
            self._fail(ErrorCodes.INTERNAL_ERROR, f"HTTP/2 connection failed: {exc!r}")
            raise
        self.want_flush()

    def eof_received(self) -> bool | None:
        return None  # close: HTTP/2 has no half-closed connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = self.closing = True
        self.server.connections.discard(self)
        if self.server.limits is not None:  # max_connections(_per_client): its places are free
            self.server.limits.closed(self.transport)
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            stream.reset_by_client()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_paused_at = self.loop.time()
        self.transport.pause_reading()
        for stream in list(self.streams.values()):
            stream.sync_paused()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.gone:
            self.transport.resume_reading()
        for stream in list(self.streams.values()):
            stream.pump()
        self.flush()

    # -- events ----------------------------------------------------------------

    def _request(self, event: ev.RequestReceived) -> None:
        sid = event.stream_id
        if (self.closing and sid > self.last_stream) or len(self.streams) >= self.max_streams:
            # After GOAWAY, or past max_concurrent_streams (http/h2.py limits_frame):
            # refused, so the client may retry it (RFC 9113 8.7).
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        limits = self.server.limits
        if limits is not None and self.streams and not limits.admit_stream(self.transport):
            # max_connections(_per_client): each stream beside the first counts as a
            # connection, as in nginx's limit_conn (server/limits.py); refused, retryable
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        stream = H2Stream(self, sid)
        self.streams[sid] = stream
        stream.start(event.headers, event.stream_ended is not None)

    def _data(self, event: ev.DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.data_in(event.data, event.flow_controlled_length)
        else:  # a stream we reset: its bytes still count against the connection window
            self.acknowledge(event.stream_id, event.flow_controlled_length)

    def _stream_ended(self, event: ev.StreamEnded) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None and not stream.remote_ended:
            stream.remote_end()

    def _stream_reset(self, event: ev.StreamReset) -> None:
        stream = self.streams.pop(event.stream_id, None)
        if stream is None:
            return
        self._stream_gone()
        if not stream.ended:  # reset before its response ended
            cause = self.guard.reset(self.loop.time())
            if cause is not None:
                stream.reset_by_client()
                self._calm(cause)
                return
        stream.reset_by_client()
        self._after_stream()

    def _window(self, event: ev.WindowUpdated) -> None:
        if event.stream_id:
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.pump()
        else:
            self._pump_all()

    def _pump_all(self) -> None:
        for stream in list(self.streams.values()):
            if stream.buffered:
                stream.pump()

    def _settings(self, event: ev.RemoteSettingsChanged) -> None:
        cause = self.guard.control_frame(self.loop.time(), "SETTINGS")
        if cause is not None:
            self._calm(cause)
        else:  # a new initial window may have opened every stream's window
            self._pump_all()

    def _ping(self, event: ev.PingReceived) -> None:
        cause = self.guard.control_frame(self.loop.time(), "PING")
        if cause is not None:
            self._calm(cause)

    def _goaway(self, event: ev.ConnectionTerminated) -> None:
        # h2 sends nothing after a GOAWAY from the peer: the streams are over.
        self.closing = True
        self.transport.close()

    # -- used by the streams ---------------------------------------------------

    def flush(self) -> None:
        """Write what h2 has for the client now."""
        self.unflushed = 0
        data = self.h2.data_to_send()
        if data:
            self.transport.write(data)

    def want_flush(self) -> None:
        """Write what h2 has once this turn of the loop is done: the frames of every
        stream that moved in it leave in one TLS write and one send(2), not one per
        upstream read (bench/RESULTS.md, HTTP/2: a sixth of the CPU went there).
        Past FLUSH_NOW bytes of DATA, now: big bodies gain nothing from waiting, and
        the socket's flow control (pause_writing) must see them as they come."""
        if self.unflushed >= FLUSH_NOW:
            self.flush()
        elif not self.flush_soon:
            self.flush_soon = True
            self.loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self.flush_soon = False
        if not self.gone and not self.transport.is_closing():
            self.flush()

    def acknowledge(self, stream_id: int, length: int) -> None:
        """Request bytes passed on: let the client send as many more (WINDOW_UPDATE;
        h2 batches them)."""
        if length and not self.gone:
            self.h2.acknowledge_received_data(length, stream_id)

    def reset_stream(self, stream: H2Stream, code: int) -> None:
        if not self.gone:
            try:
                self.h2.reset_stream(stream.stream_id, code)
            except ProtocolError:
                pass  # h2 has closed it already
            self.want_flush()
        self.forget(stream)

    def forget(self, stream: H2Stream) -> None:
        """The stream is closed both ways."""
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
            self._stream_gone()
            self._after_stream()

    def _stream_gone(self) -> None:
        # A stream that ends beside others gives back the place admit_stream counted
        # (streams beyond the first hold one each; the first uses the connection's).
        if self.streams and self.server.limits is not None:
            self.server.limits.stream_ended(self.transport)

    def _after_stream(self) -> None:
        if not self.streams:
            self.idle_since = self.loop.time()
            if self.closing and not self.gone:
                self._close(ErrorCodes.NO_ERROR)

    # -- endings -----------------------------------------------------------------

    def drain(self) -> None:
        """The server stops (or this worker is replaced): GOAWAY at once (RFC 9113
        6.8), so the client opens its next streams elsewhere, and not half a second
        later as an idle HTTP/1.1 connection's close."""
        self.shutdown()

    def shutdown(self) -> None:
        """Graceful stop (SIGTERM, reload): GOAWAY now, close after the streams."""
        if self.gone:
            return
        if not self.closing:
            self.closing = True
            self.last_stream = self.h2.highest_inbound_stream_id
            frame = GoAwayFrame(0)
            frame.last_stream_id = self.last_stream
            frame.error_code = ErrorCodes.NO_ERROR
            self.flush()
            self.transport.write(frame.serialize())
        if not self.streams:
            self._close(ErrorCodes.NO_ERROR)

    def _close(self, code: int) -> None:
        """The last GOAWAY, through h2, then close (after what is written has gone)."""
        if self.transport.is_closing():
            return
        try:
            self.h2.close_connection(error_code=code, last_stream_id=self.h2.highest_inbound_stream_id)
            self.flush()
        except ProtocolError:
            pass  # h2 has already ended the connection
        self.closing = True
        self.transport.close()

    def _calm(self, cause: str) -> None:
        self.server.runtime.error_log.error(cause, client=self.peer_ip)
        self._end_streams()
        self._close(ErrorCodes.ENHANCE_YOUR_CALM)
        self.gone = True

    def _fail(self, code: int, cause: str) -> None:
        self.server.runtime.error_log.error(cause, client=self.peer_ip)
        self._end_streams()
        self._close(code)
        self.gone = True

    def _end_streams(self, cut: ProxyError | None = None) -> int:
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            stream.reset_by_client(cut)  # aborts each upstream request, logs 499 (or `cut`)
        return len(streams)

    def cut(self, cause: ProxyError) -> int:
        """The drain timeout ran out (Server.shutdown): end the streams in flight,
        logged with `cause`, and drop the connection.  Returns how many were cut."""
        self.gone = self.closing = True
        self.server.connections.discard(self)
        count = self._end_streams(cause)
        self.transport.abort()
        return count

    # -- deadlines (the server's sweeper) ----------------------------------------

    def check_deadlines(self, now: float) -> None:
        runtime = self.server.runtime
        if self.write_paused and now - self.write_paused_at > runtime.send_timeout:
            runtime.error_log.error(f"client read nothing for {runtime.send_timeout:g}s",
                                    client=self.peer_ip)
            self._end_streams()
            self.transport.abort()
            return
        if self.server.draining and not self.closing:
            self.shutdown()
        if not self.streams:
            if now - self.idle_since >= runtime.keepalive_timeout:
                self._close(ErrorCodes.NO_ERROR)
            return
        for stream in list(self.streams.values()):
            if stream.tunnel is None:
                stream.check_deadlines(now)
        self.flush()


_HANDLERS = {
    ev.RequestReceived: H2Connection._request,
    ev.DataReceived: H2Connection._data,
    ev.StreamEnded: H2Connection._stream_ended,
    ev.StreamReset: H2Connection._stream_reset,
    ev.WindowUpdated: H2Connection._window,
    ev.RemoteSettingsChanged: H2Connection._settings,
    ev.PingReceived: H2Connection._ping,
    ev.ConnectionTerminated: H2Connection._goaway,
}
# The nghttp2 engine's events (server/ngh2.pyx): h2's names and attributes, same handlers.
for _name, _native in native_events().items():
    _HANDLERS[_native] = _HANDLERS[getattr(ev, _name)]
