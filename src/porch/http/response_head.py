"""An upstream's response head, split from the bytes llhttp has already checked.

The upstream parser (upstream/connection.py) does not ask httptools for a Python
callback per header and for the reason phrase (~1,900 instructions each, most of the
cost of relaying a small response: bench/RESULTS.md).  llhttp still parses and
validates every byte; once it reports the head complete, `parse_response_head()` walks the same
bytes once and returns what the Exchange needs: the status, the reason phrase, the
headers to copy as a flat [name, b": ", value, b"\\r\\n", ...] list, and the headers
h1.RESPONSE_HEADERS flags as [(kind, name, value)].

What llhttp lets through, and so all `parse_response_head()` has to handle (strict mode, checked
in tests/unit/test_response_head.py): CR/LF before the status line; a status line
`PROTOCOL SP 3DIGIT [SP reason] CRLF` (refused here unless PROTOCOL begins with
"HTTP/"); header lines `name ":" OWS value CRLF` with
the value's trailing whitespace kept (as llhttp reports it); no obs-fold, no bare CR
or LF.  Compiled (response_head.pxd), the walk is a C loop over the bytes.
"""

from __future__ import annotations

from porch.http.conditional import date_now
from porch.http.h1 import CRLF, RESPONSE_HEADERS, RH_CONNECTION, RH_LENGTH, SEP

_COMPILED = not __file__.endswith(".py")  # built by setup.py into an extension module

_KINDS = RESPONSE_HEADERS
_KINDS_SEEN = RESPONSE_HEADERS.seen


def _gate(names) -> bytes:
    """A byte per (name length < 64, first letter folded to 5 bits), whose bit k is set
    when some name with a kind has them and a last letter folded to 3 bits equal to k.
    Most header names fail it and skip the dictionary lookup (hashing a new bytes
    object costs ~400 instructions a name): the last letter tells Content-Location
    from Content-Encoding and Content-Language, which share its length and first."""
    gate = bytearray(64 * 32)
    for name in names:
        if len(name) < 64:
            gate[len(name) * 32 + (name[0] | 0x20) % 32] |= 1 << ((name[-1] | 0x20) % 8)
    if any(len(name) >= 64 for name in names):
        raise ValueError("header names with a kind must be under 64 bytes")
    return bytes(gate)


_GATE = _gate(RESPONSE_HEADERS.table)


def parse_response_head(head: bytes, start: int) -> tuple[int, int, bytes, list[bytes], list | None] | None:
    """Split the response head that begins at `head[start:]`.

    Returns (end, status, reason, lines, special): `end` is the offset just past the
    empty line that ends the head; `special` is None when no header needs a look.
    None when `head` holds no complete head from `start` (the caller's bookkeeping
    of where the head begins is wrong, or the bytes are not what llhttp accepted).

    A final response without a Date field gets one in `lines`: a proxy with a clock
    adds it to what it forwards (RFC 9110 6.6.1), as nginx does.
    """
    if not _COMPILED:
        return _parse_split(head, start)
    p = head  # compiled: a `const unsigned char *` (response_head.pxd)
    gate = _GATE
    n = len(head)
    i = start
    while i < n and (p[i] == 13 or p[i] == 10):  # llhttp skips CR/LF before a message
        i += 1
    # A status line begins with HTTP-version (RFC 9112 4): anything else means the
    # bookkeeping of where the head begins is off, and is never relayed as a status.
    if i + 5 > n or p[i] != 72 or p[i + 1] != 84 or p[i + 2] != 84 or p[i + 3] != 80 or p[i + 4] != 47:
        return None
    sp = i
    while sp < n and p[sp] != 32:
        sp += 1
    if sp + 4 >= n:
        return None
    status = (p[sp + 1] - 48) * 100 + (p[sp + 2] - 48) * 10 + (p[sp + 3] - 48)
    j = sp + 4  # after the status code: SP and a reason, or the CR
    eol = j
    while eol < n and p[eol] != 13:
        eol += 1
    reason = p[j + 1:eol] if eol > j else b""
    i = eol + 2
    lines: list[bytes] = []
    special: list | None = None
    dated = status < 200  # no Date added to a 1xx
    while i + 1 < n:
        if p[i] == 13:  # the empty line
            if not dated:
                lines += (b"Date", SEP, date_now(), CRLF)
            return i + 2, status, reason, lines, special
        colon = i
        while colon < n and p[colon] != 58:
            colon += 1
        v = colon + 1
        while v < n and (p[v] == 32 or p[v] == 9):
            v += 1
        e = v
        while e < n and p[e] != 13:
            e += 1
        if e >= n:
            return None
        name = p[i:colon]
        value = p[v:e]
        length = colon - i
        if length == 4 and (p[i] | 0x20) == 100 and (p[i + 1] | 0x20) == 97 and (p[i + 2] | 0x20) == 116 \
                and (p[i + 3] | 0x20) == 101:  # "date", in any case
            dated = True
        kind = 0
        if length < 64 and gate[length * 32 + (p[i] | 0x20) % 32] & (1 << ((p[colon - 1] | 0x20) % 8)):
            # The two in most responses, as most servers spell them, by a compare;
            # the rest by a lookup (hashing a new name: ~400 instructions).
            if length == 14 and name == b"Content-Length":
                kind = RH_LENGTH
            elif length == 10 and name == b"Connection":
                kind = RH_CONNECTION
            else:
                kind = _KINDS_SEEN.get(name)
                if kind is None:
                    kind = _KINDS.kind(name)
        i = e + 2
        if not kind:
            lines.append(name)
            lines.append(SEP)
            lines.append(value)
            lines.append(CRLF)
        elif special is None:
            special = [(kind, name, value)]
        else:
            special.append((kind, name, value))
    return None


def _parse_split(head: bytes, start: int) -> tuple[int, int, bytes, list[bytes], list | None] | None:
    """`parse_response_head()` with bytes methods: the same result, faster uncompiled."""
    i = start
    n = len(head)
    while i < n and head[i] in (13, 10):
        i += 1
    if not head.startswith(b"HTTP/", i):
        return None
    end = head.find(b"\r\n\r\n", i)
    if end < 0:
        # a head without header lines ends at its status line's CRLF + CRLF
        return None
    block = head[i:end].split(b"\r\n")
    status_line = block[0]
    sp = status_line.find(b" ")
    if sp < 0 or len(status_line) < sp + 4:
        return None
    status = int(status_line[sp + 1:sp + 4])
    reason = status_line[sp + 5:]
    lines: list[bytes] = []
    special: list | None = None
    dated = status < 200
    for line in block[1:]:
        name, _, value = line.partition(b":")
        value = value.lstrip(b" \t")
        if len(name) == 4 and name.lower() == b"date":
            dated = True
        kind = _KINDS.kind(name)
        if not kind:
            lines += (name, SEP, value, CRLF)
        elif special is None:
            special = [(kind, name, value)]
        else:
            special.append((kind, name, value))
    if not dated:
        lines += (b"Date", SEP, date_now(), CRLF)
    return end + 4, status, reason, lines, special
