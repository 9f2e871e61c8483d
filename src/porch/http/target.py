"""Request-target handling (RFC 9112 3.2): split, normalise, rewrite.

Routing must see the path the upstream will act on, or `/public/../admin/` could
match a `/public/` route with no auth while the upstream serves `/admin/`.  So,
like nginx, the path used for matching (and forwarded when a prefix is stripped)
has unreserved percent-escapes decoded, dot segments removed (RFC 3986 5.2.4) and
repeated slashes merged; a path that climbs above the root is refused.
"""

from __future__ import annotations


class BadTarget(ValueError):
    """The request target cannot be served (answer 400)."""


# Percent-escapes of unreserved characters (RFC 3986 2.3) may be decoded without
# changing meaning; reserved ones such as %2F must stay encoded.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = b"0123456789abcdefABCDEF"


def needs_a_look(path: bytes) -> bool:
    """Cheap test for the common path: nothing to decode, no dot segment, no //,
    no fragment.  Only a path that fails it goes through `clean_path`.

    `find`, not `in`: CPython's bytes `__contains__` first tries the needle as an
    integer and raises and clears a TypeError before searching: ~1,800 machine
    instructions each, a tenth of a request's Python work (bench/hotpath.py)."""
    return (path.find(b"%") >= 0 or path.find(b"/.") >= 0 or path.find(b"//") >= 0
            or path.find(b"#") >= 0)


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
