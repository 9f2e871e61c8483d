"""Probes: which plain protocol a connection speaks, from its first bytes (sslh's probes).

Sans-IO.  Each probe takes the bytes received so far and answers MATCH, NO, or
MAYBE (these bytes are a prefix of what it looks for: wait for more).  `detect`
runs the probes of the configured streams in file order, as sslh does: the first
MATCH wins, but a MAYBE before it means waiting, so that file order decides.

- xmpp: an XML declaration or a stream header (RFC 6120 4.2), after optional
  whitespace (sslh looks for "jabber" in the first 50 bytes; the stream header
  starts the same way in every client, declaration or not).
- ssh: the identification string "SSH-" (RFC 4253 4.2).  A client that waits for
  the server's banner sends nothing at all: server/mux.py routes a connection
  silent for `SSH_WAIT` to the ssh stream, as sslh's `on_timeout`.
- http: a request line's method and a space (RFC 9112 3; the WebDAV and CalDAV
  methods too, Radicale's), and "PRI " for HTTP/2 with prior knowledge.
- openvpn: over TCP, a 2-byte packet length, then the opcode
  P_CONTROL_HARD_RESET_CLIENT_V2 or V3 (7, 10) with key id 0 (OpenVPN's ssl.h;
  sslh's probe checks the same opcode).
- any: everything.
"""

from __future__ import annotations

MATCH = "match"
NO = "no"
MAYBE = "maybe"

PROTOCOLS = ("xmpp", "ssh", "http", "openvpn", "any")

_XMPP_STARTS = (b"<?xml", b"<stream:stream")
_WHITESPACE = b" \t\r\n"
_HTTP_METHODS = tuple(m + b" " for m in (
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
    b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"REPORT",
    b"MKCALENDAR", b"PRI",
))
_OPENVPN_RESET_CLIENT = (7, 10)  # P_CONTROL_HARD_RESET_CLIENT_V2, _V3


def _prefixes(data: bytes, starts: tuple[bytes, ...]) -> str:
    """MATCH when `data` starts with one of `starts`, MAYBE when it is a prefix of one."""
    for start in starts:
        if data.startswith(start):
            return MATCH
    for start in starts:
        if start.startswith(data):
            return MAYBE
    return NO


def xmpp(data: bytes) -> str:
    stripped = data.lstrip(_WHITESPACE)
    if not stripped:
        return MAYBE if len(data) < 64 else NO
    return _prefixes(stripped, _XMPP_STARTS)


def ssh(data: bytes) -> str:
    return _prefixes(data, (b"SSH-",))


def http(data: bytes) -> str:
    return _prefixes(data, _HTTP_METHODS)


def openvpn(data: bytes) -> str:
    if len(data) < 3:
        return MAYBE
    length = int.from_bytes(data[:2], "big")
    opcode, key_id = data[2] >> 3, data[2] & 7
    # opcode, 8-byte session id and a packet id at least
    if opcode in _OPENVPN_RESET_CLIENT and key_id == 0 and length >= 14:
        return MATCH
    return NO


def any_(data: bytes) -> str:
    return MATCH


PROBES = {"xmpp": xmpp, "ssh": ssh, "http": http, "openvpn": openvpn, "any": any_}


def detect(data: bytes, protocols: tuple[str, ...]) -> int | str:
    """The index in `protocols` of the first that matches `data`, or MAYBE (wait for
    more bytes: an earlier probe cannot tell yet), or NO (none will ever match)."""
    for index, name in enumerate(protocols):
        verdict = PROBES[name](data)
        if verdict == MATCH:
            return index
        if verdict == MAYBE:
            return MAYBE
    return NO
