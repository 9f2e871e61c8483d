"""A raw HTTP/2 client for tests: the `h2` library's client state machine over a
blocking TLS socket (ALPN h2), with every frame's outcome recorded per stream.

It does what a test needs to see and to misbehave: requests with or without
END_STREAM, DATA in pieces, resets, window updates held back (`auto_ack=False`),
and raw bytes.  `pump()` reads until a condition holds.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events as ev
import h2.exceptions


@dataclass
class StreamResult:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    interim: list[list[tuple[bytes, bytes]]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None  # RST_STREAM error code from the server

    def __repr__(self) -> str:  # not the body: it can be megabytes
        return (f"StreamResult(headers={self.headers}, {len(self.data)} bytes of data, "
                f"ended={self.ended}, reset={self.reset})")

    @property
    def status(self) -> int:
        return int(dict(self.headers)[b":status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.headers).get(name)

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class H2Client:
    def __init__(self, port: int, server_name: str = "app.test", *, settings: dict | None = None,
                 timeout: float = 5.0, auto_ack: bool = True, alpn: tuple[str, ...] = ("h2",)):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(list(alpn))
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=server_name)
        except BaseException:
            raw.close()
            raise
        self.sock.settimeout(timeout)
        self.alpn = self.sock.selected_alpn_protocol()
        self.server_name = server_name
        self.auto_ack = auto_ack
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.streams: dict[int, StreamResult] = {}
        self.goaway: ev.ConnectionTerminated | None = None
        self.remote_settings: dict[int, int] = {}
        self.closed = False  # the server closed the TCP connection
        # For the attack tests (test_h2_attacks.py): what came when, and how much.
        self.goaway_at: float | None = None  # time.monotonic() of the GOAWAY
        self.ping_acks = 0
        self.settings_acks = 0
        self._inbuf = bytearray()
        self.flush()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- sending ---------------------------------------------------------------

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.send_raw(data)

    def send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def request(self, path: str = "/", method: str = "GET", *, headers: list[tuple[str, str]] = (),
                body: bytes | None = None, end: bool = True, authority: str | None = None,
                extra_pseudo: list[tuple[str, str]] = (), flush: bool = True) -> int:
        """Open a stream; END_STREAM after `body` (or on the HEADERS) when `end`.
        `flush=False` leaves the frames in `conn` (to send many in one write)."""
        sid = self.conn.get_next_available_stream_id()
        head = [(":method", method), (":scheme", "https"), (":authority", authority or self.server_name),
                (":path", path), *extra_pseudo, *headers]
        encoded = [(k.encode(), v.encode()) for k, v in head]
        self.streams[sid] = StreamResult()
        self.conn.send_headers(sid, encoded, end_stream=end and not body)
        if body:
            self.send_body(sid, body, end=end)
        if flush:
            self.flush()
        return sid

    def send_body(self, sid: int, body: bytes, end: bool = True) -> None:
        """Send DATA as the windows allow (reading WINDOW_UPDATEs as needed)."""
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.flush()
                self.read_once()
                continue
            self.conn.send_data(sid, bytes(view[:window]))
            view = view[window:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    # -- receiving -------------------------------------------------------------

    def read_once(self, timeout: float | None = None) -> bool:
        """Read what is there and process it; False when the server has closed."""
        before = self.sock.gettimeout()
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        finally:  # a short wait asked for here must not cut the caller's next, longer one
            if timeout is not None and not self.sock._closed:
                self.sock.settimeout(before)
        if not data:
            self.closed = True
            self.sock.close()  # as browsers and curl do: the server's TLS shutdown completes
            return False
        self._inbuf += data
        # One frame at a time through h2: an error on one frame (one for a stream we
        # reset, or anything after a GOAWAY) loses only that frame's events.
        while len(self._inbuf) >= 9:
            size = 9 + int.from_bytes(self._inbuf[:3], "big")
            if len(self._inbuf) < size:
                break
            frame, self._inbuf = bytes(self._inbuf[:size]), self._inbuf[size:]
            try:
                for event in self.conn.receive_data(frame):
                    self._event(event)
            except h2.exceptions.ProtocolError:
                continue
        self.flush()
        return True

    def _event(self, event) -> None:
        sid = getattr(event, "stream_id", None)
        stream = self.streams.get(sid) if sid else None
        if isinstance(event, ev.ResponseReceived) and stream:
            stream.headers = event.headers
        elif isinstance(event, ev.InformationalResponseReceived) and stream:
            stream.interim.append(event.headers)
        elif isinstance(event, ev.DataReceived):
            if stream:
                stream.data += event.data
            if self.auto_ack:
                self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
        elif isinstance(event, ev.StreamEnded) and stream:
            stream.ended = True
        elif isinstance(event, ev.StreamReset) and stream:
            stream.reset = event.error_code
        elif isinstance(event, ev.ConnectionTerminated):
            self.goaway = event
            self.goaway_at = time.monotonic()
            # h2 takes any GOAWAY as the end and refuses every later frame; a real
            # client (RFC 9113 6.8) still reads the streams up to last_stream_id.
            self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        elif isinstance(event, ev.PingAckReceived):
            self.ping_acks += 1
        elif isinstance(event, ev.SettingsAcknowledged):
            self.settings_acks += 1
        elif isinstance(event, ev.RemoteSettingsChanged):
            self.remote_settings.update({k: v.new_value for k, v in event.changed_settings.items()})

    def pump(self, until, timeout: float = 10.0) -> bool:
        """Read until `until()` is true (True) or the server closes or time is up (False)."""
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return until()
            try:
                if not self.read_once(timeout=left):
                    return until()
            except socket.timeout:
                return until()
        return True

    def response(self, sid: int, timeout: float = 10.0) -> StreamResult:
        stream = self.streams[sid]
        if not self.pump(lambda: stream.done, timeout):
            raise AssertionError(f"stream {sid} not done after {timeout}s: {stream}")
        return stream

    def get(self, path: str = "/", **kwargs) -> StreamResult:
        return self.response(self.request(path, **kwargs))
