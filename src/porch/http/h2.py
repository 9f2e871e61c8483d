"""HTTP/2 to clients: the rules Porch adds around the `h2` library's state machine.

No sockets here: settings, the mapping between HTTP/2 header lists and what the
HTTP/1.1 side needs, and the flood guard.  server/h2conn.py does the I/O.

Limits and their precedent:
- SETTINGS_MAX_CONCURRENT_STREAMS: `max_concurrent_streams` (default 100; RFC 9113
  6.5.2 recommends no less than 100; nginx 128, Go 250).
- SETTINGS_MAX_HEADER_LIST_SIZE: `max_header_size`, as for HTTP/1.1 heads (431 past
  it); h2's HPACK decoder refuses a decoded list over 64 KiB, which defeats HPACK
  bombs (one indexed 4 KiB entry referenced thousands of times) by ending the
  connection.  h2 also caps a header block at 64 CONTINUATION frames (the 2024
  CONTINUATION flood).
- Flood guard: more than RESET_LIMIT streams reset by the client before their
  response ended, or more than CONTROL_LIMIT PING and SETTINGS frames, within one
  second, end the connection with GOAWAY ENHANCE_YOUR_CALM.  Rapid reset
  (CVE-2023-44487) costs the attacker one HEADERS and one RST_STREAM per upstream
  request; Envoy and HAProxy cut such connections the same way, counting "premature"
  resets, nginx by capping new streams per read.
"""

from __future__ import annotations

from h2.config import H2Configuration
from h2.settings import SettingCodes
from hyperframe.frame import SettingsFrame

# Receive windows.  A stream's window is what one upload may have in flight beyond
# what the upstream took (nginx http2_body_preread_size 64k); the connection's is
# shared by all streams (nginx http2_recv_buffer_size 256k).
STREAM_WINDOW = 256 * 1024
CONNECTION_WINDOW = 1024 * 1024
# Response bytes held for a stream beyond what its window lets out, before reading
# from its upstream pauses (flow control: memory per stream stays about this).
SEND_BUFFER = 64 * 1024

RESET_LIMIT = 100  # client resets of unfinished streams per second
CONTROL_LIMIT = 100  # PING + SETTINGS frames per second

# Headers with no meaning in HTTP/2 (RFC 9113 8.2.2): never sent to an HTTP/2 client.
CONNECTION_SPECIFIC = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
})


def configuration() -> H2Configuration:
    """The h2 state machine's configuration: server side, bytes headers.

    What clients send is validated (RFC 9113 8.2: no uppercase names, no CR, LF or
    NUL in values, no connection-specific headers, pseudo-headers well-formed):
    it goes on to HTTP/1.1 upstreams, where such bytes would smuggle requests.
    What we send is not checked again: `response_headers` lowercases names and drops
    connection-specific ones, and values come from httptools, which refuses CR, LF
    and NUL in them (h2's outbound checks cost ~15% of a small response's CPU)."""
    return H2Configuration(
        client_side=False, header_encoding=None, validate_inbound_headers=True,
        normalize_inbound_headers=True, validate_outbound_headers=False,
        normalize_outbound_headers=False, split_outbound_cookies=False,
    )


def local_settings() -> dict[int, int]:
    """The settings h2 itself applies (they shape its flow control and validation)."""
    return {
        SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        SettingCodes.ENABLE_PUSH: 0,
        SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,  # WebSockets over HTTP/2 (RFC 8441)
    }


def limits_frame(max_concurrent_streams: int, max_header_list_size: int) -> bytes:
    """A SETTINGS frame announcing the limits Porch enforces itself.

    h2 would apply MAX_CONCURRENT_STREAMS from the start (not once acknowledged) and
    treat a stream past it as a connection error, ending every stream of the
    connection; RFC 9113 5.1.2 wants a stream error, as nginx gives (REFUSED_STREAM),
    so h2 is not told and H2Connection counts.  The header list limit is checked
    on the decoded head as for HTTP/1.1 (431); h2's HPACK decoder keeps its own
    64 KiB cap, past which the connection ends (the HPACK bomb guard)."""
    frame = SettingsFrame(0)
    frame.settings = {
        SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
        SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list_size,
    }
    return frame.serialize()


class RequestFields:
    """A request's pseudo-headers, and its other headers as the HTTP/1.1 side takes
    them: `headers` in order, with the `cookie` crumbs joined back into one header
    (RFC 9113 8.2.3: "; " between them), `host` for :authority or Host."""

    __slots__ = ("method", "path", "scheme", "authority", "protocol", "headers")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.method = self.path = self.scheme = self.authority = self.protocol = b""
        headers: list[tuple[bytes, bytes]] = []
        cookies: list[bytes] = []
        for name, value in raw:
            if name[:1] == b":":
                if name == b":method":
                    self.method = value
                elif name == b":path":
                    self.path = value
                elif name == b":authority":
                    self.authority = value
                elif name == b":scheme":
                    self.scheme = value
                elif name == b":protocol":
                    self.protocol = value
            elif name == b"cookie":
                cookies.append(value)
            else:
                headers.append((name, value))
        if cookies:
            headers.append((b"cookie", b"; ".join(cookies)))
        self.headers = headers


# RFC 9110 5.6.2: token = 1*tchar (a method is a token, 9.1).
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# What llhttp accepts in an HTTP/1.1 request target: visible ASCII (no space, control,
# DEL or byte past 0x7E).  An HTTP/2 :path takes the same bytes, so that a request is
# refused or passed alike whichever version brings it.
_VCHAR = bytes(range(0x21, 0x7F))


def request_line_problem(fields: RequestFields) -> str | None:
    """Why `fields`' :method and :path cannot make an HTTP/1.1 request line, or None.

    HTTP/2 carries them as header values, in which h2 only refuses CR, LF, NUL and
    surrounding whitespace; Porch writes them into the request line it sends
    upstream, where a space would let the client choose another target than the one
    routed (`:method: GET /x` with `:path: /y` went upstream as `GET /x /y`).  So:
    :method must be a token (RFC 9110 5.6.2), :path an origin-form target
    (RFC 9113 8.3.1, RFC 9112 3.2.1: "/" then visible characters), or "*" for
    OPTIONS (RFC 9112 3.2.4).  A plain CONNECT has no :path (RFC 9113 8.5): h2 has
    checked that; it is refused later as in HTTP/1.1.  nginx answers such requests
    400, as Porch does."""
    method, path = fields.method, fields.path
    if not method or method.translate(None, _TCHAR):
        return f"invalid :method {_shown(method)}: not a token (RFC 9110 5.6.2)"
    if path[:1] == b"/":
        if not path.translate(None, _VCHAR):
            return None
    elif path == b"*":
        return None if method == b"OPTIONS" else ':path "*" is for OPTIONS only (RFC 9112 3.2.4)'
    elif not path and method == b"CONNECT" and not fields.protocol:
        return None
    return f"invalid :path {_shown(path)}: not an origin-form target (RFC 9113 8.3.1)"


def _shown(value: bytes) -> str:
    """A client's bytes in a message, quoted (the error log escapes what is not printable)."""
    return '"' + value[:200].decode("latin-1") + ('..."' if len(value) > 200 else '"')


def response_headers(status: int, lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """The HEADERS of a response from a flat [name, b": ", value, b"\\r\\n", ...]
    list of HTTP/1.1 header lines: names lowercased, connection-specific ones dropped,
    whitespace after a value removed (HTTP/1.1 allows it; RFC 9113 8.2.1 does not, and
    nghttp2 clients reset a stream that has it)."""
    headers = [(b":status", b"%d" % status)]
    for i in range(0, len(lines) - 3, 4):
        name = lines[i].lower()
        if name not in CONNECTION_SPECIFIC:
            value = lines[i + 2]
            if value and (value[-1] == 32 or value[-1] == 9):
                value = value.rstrip(b" \t")
            headers.append((name, value))
    return headers


class FloodGuard:
    """Counts what a client may not do too often, per one-second window."""

    __slots__ = ("window_start", "resets", "control")

    def __init__(self) -> None:
        self.window_start = 0.0
        self.resets = 0
        self.control = 0

    def _roll(self, now: float) -> None:
        if now - self.window_start >= 1.0:
            self.window_start = now
            self.resets = self.control = 0

    def reset(self, now: float) -> str | None:
        """A stream reset by the client before its response ended.  Returns why the
        connection must end, or None."""
        self._roll(now)
        self.resets += 1
        if self.resets > RESET_LIMIT:
            return f"more than {RESET_LIMIT} streams reset by the client within a second (rapid reset)"
        return None

    def control_frame(self, now: float, kind: str) -> str | None:
        """A PING or SETTINGS frame from the client."""
        self._roll(now)
        self.control += 1
        if self.control > CONTROL_LIMIT:
            return f"more than {CONTROL_LIMIT} PING and SETTINGS frames within a second ({kind} flood)"
        return None
