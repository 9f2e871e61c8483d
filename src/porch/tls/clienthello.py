"""A TLS ClientHello reader: the server name (SNI) and ALPN list, before any TLS.

Sans-IO: `parse(data)` takes every byte received so far and returns a `ClientHello`
or one of three verdicts, NEED_MORE (call again with more bytes), NOT_TLS (the first
bytes are not a TLS handshake record: try the plain-protocol probes) or MALFORMED
(a TLS record that breaks the grammar, or a hello over MAX_HELLO).  It never
consumes: the caller keeps the bytes and hands all of them on, to Porch's own TLS
or to a passthrough target, so the handshake itself is untouched.

What is read (RFC 8446 4.1.2, 4.2; RFC 5246 6.2.1 for the record layer):
- records of type handshake (22), legacy version 3.x, each at most 2^14 bytes of
  fragment (RFC 8446 5.1); the handshake message may span several records (RFC 8446
  5.1 allows fragmenting it) and any number of reads;
- the first handshake message must be a client_hello (1), of at most MAX_HELLO bytes;
- extensions: server_name (0, RFC 6066 3: the host_name entry) and
  application_layer_protocol_negotiation (16, RFC 7301 3.1); a duplicated extension
  is MALFORMED (RFC 8446 4.2: "There MUST NOT be more than one extension of the
  same type").  A hello with no extensions block (SSL 3.0 style) has neither.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.Enum):
    NEED_MORE = "need more bytes"
    NOT_TLS = "not TLS"
    MALFORMED = "malformed ClientHello"


NEED_MORE = Verdict.NEED_MORE
NOT_TLS = Verdict.NOT_TLS
MALFORMED = Verdict.MALFORMED

# The largest hello read: 16 KiB, as nginx's ssl_preread (its buffer is 16 KiB) and
# HAProxy's tune.bufsize.  Browsers' hellos are 0.5-2 KiB (Chromium with the
# post-quantum key share ~1.8 KiB).
MAX_HELLO = 16 * 1024
# The most bytes read to find it: the hello and a few record headers (a hello may
# legitimately span records; thousands of one-byte records may not).
MAX_BYTES = MAX_HELLO + 64

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_RECORD_MAX = 1 << 14  # RFC 8446 5.1: a fragment of at most 2^14 bytes
_EXT_SNI = 0
_EXT_ALPN = 16


@dataclass(frozen=True)
class ClientHello:
    """What routing needs from a hello.  `server_name`: lowercased, no trailing dot,
    None when not sent; `alpn`: the offered protocols in the client's order."""

    server_name: str | None
    alpn: tuple[str, ...]


class _Malformed(Exception):
    pass


def parse(data: bytes) -> ClientHello | Verdict:
    """Read the ClientHello at the start of `data` (all bytes received so far)."""
    try:
        body = _handshake_message(data)
    except _Malformed:
        return MALFORMED
    if isinstance(body, Verdict):
        return body
    try:
        return _client_hello(body)
    except (_Malformed, IndexError, UnicodeDecodeError):
        return MALFORMED


def _handshake_message(data: bytes) -> bytes | Verdict:
    """Reassemble the first handshake message from the records in `data`."""
    if not data:
        return NEED_MORE
    if data[0] != _HANDSHAKE or (len(data) > 1 and data[1] != 3):
        return NOT_TLS
    fragments = bytearray()
    pos = 0
    need = -1  # the message's length with its 4-byte header, once known
    while True:
        if pos + 5 > MAX_BYTES:
            raise _Malformed  # a hello spread over a swarm of tiny records
        if len(data) < pos + 5:
            return NEED_MORE
        if data[pos] != _HANDSHAKE or data[pos + 1] != 3:
            raise _Malformed  # another record type before the hello is whole
        length = int.from_bytes(data[pos + 3:pos + 5], "big")
        if length == 0 or length > _RECORD_MAX:
            raise _Malformed
        end = pos + 5 + length
        fragments += data[pos + 5:end]  # maybe only the start of this record
        if need < 0 and len(fragments) >= 4:
            if fragments[0] != _CLIENT_HELLO:
                raise _Malformed
            need = 4 + int.from_bytes(fragments[1:4], "big")
            if need > MAX_HELLO:
                raise _Malformed
        if need >= 0 and len(fragments) >= need:
            return bytes(fragments[4:need])  # the rest of the record does not matter
        if len(data) < end:
            return NEED_MORE
        pos = end


def _client_hello(body: bytes) -> ClientHello:
    """The ClientHello body (after the handshake header), RFC 8446 4.1.2."""
    r = _Reader(body)
    r.skip(2 + 32)  # legacy_version, random
    r.skip(r.u8())  # legacy_session_id
    r.skip(r.u16())  # cipher_suites
    r.skip(r.u8())  # legacy_compression_methods
    if r.done():
        return ClientHello(None, ())
    ext = _Reader(r.take(r.u16()))
    if not r.done():
        raise _Malformed  # bytes after the extensions
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    seen: set[int] = set()
    while not ext.done():
        kind = ext.u16()
        data = ext.take(ext.u16())
        if kind in seen:
            raise _Malformed
        seen.add(kind)
        if kind == _EXT_SNI:
            server_name = _server_name(data)
        elif kind == _EXT_ALPN:
            alpn = _alpn(data)
    return ClientHello(server_name, alpn)


def _server_name(data: bytes) -> str | None:
    """RFC 6066 3: a list of (name_type, name); only host_name (0) is defined.
    An empty extension is what a server sends back, not a client: malformed."""
    r = _Reader(data)
    names = _Reader(r.take(r.u16()))
    if not r.done() or names.done():
        raise _Malformed
    host = None
    while not names.done():
        kind = names.u8()
        name = names.take(names.u16())
        if kind == 0 and host is None:
            if not name:
                raise _Malformed
            # RFC 6066 3: ASCII, no trailing dot; lowercased for matching (names
            # are case-insensitive, RFC 4343).  Bytes outside ASCII: malformed.
            host = name.decode("ascii").lower().rstrip(".")
    return host


def _alpn(data: bytes) -> tuple[str, ...]:
    """RFC 7301 3.1: ProtocolNameList, each name 1..255 bytes, the list non-empty."""
    r = _Reader(data)
    names = _Reader(r.take(r.u16()))
    if not r.done() or names.done():
        raise _Malformed
    protocols = []
    while not names.done():
        name = names.take(names.u8())
        if not name:
            raise _Malformed
        protocols.append(name.decode("latin-1"))  # opaque bytes, one char each
    return tuple(protocols)


class _Reader:
    """Bounds-checked reads from one length-delimited block."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise _Malformed
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def skip(self, n: int) -> None:
        self.take(n)

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")
