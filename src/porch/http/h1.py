"""HTTP/1.1 framing helpers: no sockets, no loop.

Parsing is done by httptools (llhttp, node's parser), which already refuses most
request-smuggling shapes (RFC 9112 section 6.3): Content-Length together with
Transfer-Encoding, duplicate Content-Length, invalid chunk sizes, obs-fold, CR/LF/NUL
inside header values.  What llhttp leaves to the application is checked here:
Host presence and uniqueness (RFC 9112 3.2), the Transfer-Encoding list (we accept
exactly "chunked", as nginx does), and the request target form.
"""

from __future__ import annotations

from http import HTTPStatus

_COMPILED = not __file__.endswith(".py")  # built by setup.py into an extension module

# Body framing kinds, for requests and responses.
BODY_NONE = 0  # no body at all
BODY_LENGTH = 1  # Content-Length
BODY_CHUNKED = 2  # Transfer-Encoding: chunked
BODY_CLOSE = 3  # delimited by connection close (responses only, RFC 9112 6.3 item 8)

LAST_CHUNK = b"0\r\n\r\n"
CRLF = b"\r\n"

# Headers that describe one connection, not the message (RFC 9110 7.6.1), plus the
# framing headers Porch re-creates itself.  Lowercase.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

SEP = b": "


class HeaderKinds:
    """Header name as received -> what to do with it (an int; 0: copy it as it is).

    Names are case-insensitive (RFC 9110 5.1).  Lowercasing each name of each
    message costs more than a dict hit on the name as sent, so names are remembered
    as they arrive, up to `limit` of them: a peer inventing names cannot grow the
    memo without bound, it only pays the lowercasing.
    """

    __slots__ = ("table", "seen", "limit", "underscore", "protected")

    def __init__(self, table: dict[bytes, int], limit: int = 2048, *, underscore: int = 0,
                 protected: int = 0) -> None:
        self.table = table  # lowercase name -> kind
        self.seen: dict[bytes, int] = {}
        self.limit = limit
        # Request headers only: the kind of a name with "_" (0: as any other name), and
        # of one that is a name of `table` once "_" is read as "-" (see `kind`).
        self.underscore = underscore
        self.protected = protected

    def kind(self, name: bytes) -> int:
        kind = self.seen.get(name)
        if kind is None:
            lower = name.lower()
            kind = self.table.get(lower, 0)
            if kind == 0 and self.underscore and b"_" in lower:
                # CGI and WSGI servers read X_Remote_User as X-Remote-User (both become
                # HTTP_X_REMOTE_USER): a name of the table spelled with "_" is never
                # passed, whatever underscores_in_headers says.  Only new names pay
                # this: the kind is remembered in `seen`.
                dashed = lower.replace(b"_", b"-")
                kind = self.protected if dashed in self.table else self.underscore
            if len(self.seen) < self.limit:
                self.seen[name] = kind
        return kind


# Response headers that are instructions to the proxy, never passed to the client:
# nginx's default proxy_hide_header list.  X-Accel-Buffering: no needs nothing more,
# since every response is streamed as it arrives, flushed after each upstream read.
PROXY_ONLY = frozenset({b"x-accel-buffering", b"x-accel-redirect", b"x-accel-expires",
                        b"x-accel-limit-rate", b"x-accel-charset"})

# Response headers that need a look (the rest are copied as received).  Location and
# Content-Location hold a URL, Refresh one after `url=`: the upstream's own URLs in them
# are rewritten to the client's (server/proxy.py, nginx's proxy_redirect default).
RH_DROP, RH_LENGTH, RH_TE, RH_CONNECTION, RH_LOCATION, RH_REFRESH = range(1, 7)
RESPONSE_HEADERS = HeaderKinds({
    **{name: RH_DROP for name in HOP_BY_HOP | PROXY_ONLY},
    b"content-length": RH_LENGTH,
    b"transfer-encoding": RH_TE,
    b"connection": RH_CONNECTION,
    b"location": RH_LOCATION,
    b"content-location": RH_LOCATION,
    b"refresh": RH_REFRESH,
    # Porch sends the client the id it sent upstream (server/proxy.py): an upstream's
    # echo of it would be a second field
    b"x-request-id": RH_DROP,
})

# Methods that RFC 9110 9.2.2 calls idempotent: safe to send again on a fresh
# connection when a reused keep-alive connection turned out to be closed.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_REASONS[431] = b"Request Header Fields Too Large"


def reason(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")


def status_line(status: int, version: bytes = b"1.1") -> bytes:
    return b"HTTP/%s %d %s\r\n" % (version, status, reason(status))


_RELAYED_LINES: dict[int, tuple[bytes, bytes]] = {}


# The last line made (compiled: C variables, compared without a dict lookup).
_last_status = 0
_last_reason = b""
_last_line = b""


def relayed_status_line(status: int, reason_phrase: bytes) -> bytes:
    """The status line for an upstream's status and reason, memoised per status."""
    global _last_status, _last_reason, _last_line
    if status == _last_status and reason_phrase == _last_reason:
        return _last_line
    known = _RELAYED_LINES.get(status)
    if known is not None and known[0] == reason_phrase:
        line = known[1]
    else:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase)
        if 100 <= status <= 999:
            _RELAYED_LINES[status] = (reason_phrase, line)
    _last_status, _last_reason, _last_line = status, reason_phrase, line
    return line


def request_line_version(data: bytes, start: int) -> bytes | None:
    """b"1.1" or b"1.0" when the first line ending in CRLF at or after `start`
    (CR/LF before it skipped) ends with " HTTP/1.1" or " HTTP/1.0"; else None.

    For a head llhttp has accepted and whose bytes from its request line on begin at
    `start`, that is its version: cheaper than httptools' get_http_version(), which
    formats a str (~2,300 instructions, bench/hotpath.py).  A read that begins inside
    the request line still ends it with the version; one that begins inside
    "HTTP/1.x" gives None.
    """
    p = data  # compiled: a `const unsigned char *` (h1.pxd)
    n = len(data)
    while start < n and (p[start] == 13 or p[start] == 10):
        start += 1
    if _COMPILED:
        # The line's CR (llhttp allows no other in a request line), looked for in C
        # over the first 1 KiB: bytes.find costs ~850 instructions on a short line; a
        # longer line is left to llhttp.
        end = min(n, start + 1024)
        eol = start
        while eol < end and p[eol] != 13:
            eol += 1
        if eol + 1 >= end or p[eol + 1] != 10:
            return None
    else:
        eol = data.find(b"\r\n", start)
        if eol < 0:
            return None
    if eol - start < 9:
        return None
    if (p[eol - 9] != 32 or p[eol - 8] != 72 or p[eol - 7] != 84 or p[eol - 6] != 84
            or p[eol - 5] != 80 or p[eol - 4] != 47 or p[eol - 3] != 49 or p[eol - 2] != 46):
        return None  # not " HTTP/1."
    minor = p[eol - 1]
    if minor == 49:
        return b"1.1"
    if minor == 48:
        return b"1.0"
    return None


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 7.1).  Empty data encodes nothing."""
    if not data:
        return b""
    return b"%x\r\n%s\r\n" % (len(data), data)


TEXT_PLAIN = b"text/plain; charset=utf-8"  # the type of Porch's own bodies


def error_body(status: int) -> bytes:
    """The short body of Porch's own answers: "502 Bad Gateway\\n"."""
    return b"%d %s\n" % (status, reason(status))


def transfer_encoding_error(value: bytes) -> int:
    """0 when a request's Transfer-Encoding is exactly "chunked" (any case); else the
    status to answer with.

    RFC 9112 6.3: chunked not last (or absent) leaves the body's length unknown: 400,
    and close.  RFC 9112 6.1: a coding we do not decode before it ("gzip, chunked")
    gets 501, as nginx answers anything but "chunked".  A proxy that re-frames the
    body cannot pass codings on honestly, and they are a known smuggling vector.
    """
    if value.strip().lower() == b"chunked":
        return 0
    codings = [c.strip().lower() for c in value.split(b",")]
    return 501 if codings[-1] == b"chunked" else 400


# A chunk size above 2^53 (JavaScript's exact integers; 14 hex digits) is refused:
# no body that large is real, and back ends that read sizes as doubles miscount it.
MAX_CHUNK_SIZE = 2**53
# Bytes looked back for the start of a chunk-size line split across reads; a longer
# line (a chunk extension over 1 KiB) is refused, as node does since CVE-2024-22019.
CHUNK_LINE_LOOKBACK = 1024


def chunk_size_error(before: bytes) -> str | None:
    """Why the chunk-size line that `before` ends with (its CRLF last) is refused, or
    None.  `before` is what was received up to the line's end, at least the line
    itself and the LF before it when it holds one (a caller keeps CHUNK_LINE_LOOKBACK
    bytes)."""
    end = len(before) - 1
    if end > 0 and before[end - 1] == 13:  # CR
        end -= 1
    start = before.rfind(b"\n", 0, end) + 1
    if start == 0 and len(before) > CHUNK_LINE_LOOKBACK:
        return f"chunk-size line over {CHUNK_LINE_LOOKBACK} bytes"
    line = before[start:end]
    n = 0
    while n < len(line) and line[n] in _HEX_DIGITS:
        n += 1
    digits = line[:n].lstrip(b"0")
    if len(digits) > 14 or (digits and int(digits, 16) > MAX_CHUNK_SIZE):
        return f"chunk size 0x{line[:n].decode()} over 2^53"
    return None


_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def connection_tokens(value: bytes) -> set[bytes]:
    """The lowercase tokens of a Connection header value."""
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


# Host header: reg-name / IPv4 / [IPv6], optional port.  Checked by a translate
# table rather than a regex: one C call per request.
_HOST_OK = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._:[]")
_HOST_DELETE = bytes(_HOST_OK)


def split_host(value: bytes) -> tuple[str, bytes] | None:
    """Normalise a Host header into (lowercase name without port or final dot, port).

    Returns None when the value is not a valid host (RFC 9110 7.2).
    """
    if not value or value.translate(None, _HOST_DELETE):
        return None
    if value[0] == 0x5B:  # "[" IPv6 literal
        end = value.find(b"]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
        if rest and (rest[0] != 0x3A or not rest[1:].isdigit()):
            return None
        return name.decode("ascii").lower(), rest[1:]
    name, sep, port = value.partition(b":")
    if sep and (not port.isdigit() or b":" in port):
        return None
    if not name:
        return None
    host = name.decode("ascii").lower()
    if host.endswith("."):
        host = host[:-1]
    return host, port
