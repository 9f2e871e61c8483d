"""Request-target handling (RFC 9112 3.2): split, normalise, rewrite.

Routing must see the path the upstream will act on, or `/public/../admin/` could
match a `/public/` route with no auth while the upstream serves `/admin/`.  So,
like nginx, the path used for matching (and forwarded when a prefix is stripped)
has unreserved percent-escapes decoded, dot segments removed (RFC 3986 5.2.4) and
repeated slashes merged; a path that climbs above the root is refused.
"""

from __future__ import annotations

import re


class BadTarget(ValueError):
    """The request target cannot be served (answer 400)."""


# Percent-escapes of unreserved characters (RFC 3986 2.3) may be decoded without
# changing meaning; reserved ones such as %2F must stay encoded.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = b"0123456789abcdefABCDEF"
_LOOK = re.compile(rb"[%#]|/[/.]").search
_COMPILED = not __file__.endswith(".py")  # built by setup.py into an extension module


def needs_a_look(path: bytes) -> bool:
    """Cheap test for the common path: nothing to decode, no dot segment, no //,
    no fragment.  Only a path that fails it goes through `clean_path`."""
    if not _COMPILED:
        return _LOOK(path) is not None
    # Compiled (target.pxd types `c` and `prev` as C chars), this is a loop in C: one
    # pass, no call.  Interpreted, the regex above is the fastest one-call test;
    # bytes `in` would be four calls, each first trying the needle as an integer and
    # raising and clearing a TypeError (~1,800 instructions each, bench/hotpath.py).
    prev = 0
    for c in path:
        if c == 37 or c == 35:  # "%", "#"
            return True
        if prev == 47 and (c == 47 or c == 46):  # "//", "/."
            return True
        prev = c
    return False


def clean_path(path: bytes) -> bytes:
    """The path (query already split off) to route by, or BadTarget."""
    if b"#" in path:
        raise BadTarget("fragment in request target")
    return normalise(path)


def normalise(path: bytes) -> bytes:
    """The canonical form of an origin-form path (see module docstring)."""
    if b"%" in path:
        path = _decode_unreserved(path)
    segments: list[bytes] = []
    parts = path.split(b"/")
    for seg in parts[1:-1]:
        _push(segments, seg)
    last = parts[-1] if len(parts) > 1 else b""
    trailing = last in (b"", b".", b"..")
    _push(segments, last)
    out = b"/" + b"/".join(segments)
    if trailing and segments:
        out += b"/"
    return out


def _push(segments: list[bytes], seg: bytes) -> None:
    if seg in (b"", b"."):
        return
    if seg == b"..":
        if not segments:
            raise BadTarget("path climbs above the root")
        segments.pop()
        return
    segments.append(seg)


def _decode_unreserved(path: bytes) -> bytes:
    head, *pieces = path.split(b"%")
    out = [head]
    for piece in pieces:
        pair = piece[:2]
        if len(pair) != 2 or pair.translate(None, _HEX):
            raise BadTarget("malformed percent-escape in path")
        byte = int(pair, 16)
        if byte in _UNRESERVED:
            out.append(bytes((byte,)) + piece[2:])
        else:
            out.append(b"%" + pair.upper() + piece[2:])
    return b"".join(out)
