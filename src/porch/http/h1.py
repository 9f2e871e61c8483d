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

# Methods that RFC 9110 9.2.2 calls idempotent: safe to send again on a fresh
# connection when a reused keep-alive connection turned out to be closed.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_REASONS[431] = b"Request Header Fields Too Large"


def reason(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")


def status_line(status: int, version: bytes = b"1.1") -> bytes:
    return b"HTTP/%s %d %s\r\n" % (version, status, reason(status))


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 7.1).  Empty data encodes nothing."""
    if not data:
        return b""
    return b"%x\r\n%s\r\n" % (len(data), data)


def simple_response(
    status: int, body: bytes | None = None, *, close: bool = False, extra: bytes = b"",
    head_only: bool = False,
) -> bytes:
    """A complete short response Porch answers itself (errors, redirects).

    `extra` is pre-encoded header lines ("Name: value\\r\\n"...).
    """
    if body is None:
        body = b"%d %s\n" % (status, reason(status))
    head = [
        status_line(status),
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % len(body),
        extra,
    ]
    if close:
        head.append(b"Connection: close\r\n")
    head.append(CRLF)
    if head_only:  # HEAD: the length of the body a GET would get, no body (RFC 9110 9.3.2)
        return b"".join(head)
    return b"".join(head) + body


def parse_transfer_encoding(value: bytes) -> bool:
    """True when the Transfer-Encoding is exactly "chunked" (any case).

    RFC 9112 6.1 allows codings before chunked, but a proxy that forwards a
    body it re-frames cannot pass them on honestly, and anything but "chunked"
    is a known smuggling vector; nginx answers them with an error too.
    """
    return value.strip().lower() == b"chunked"


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
