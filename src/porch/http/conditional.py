"""Validators, conditional requests and byte ranges for content Porch serves itself
(static files): RFC 9110 8.8 (Last-Modified, ETag), 13 (conditional requests), 14
(range requests).  Protocol logic only: values in, decisions out; no I/O.
"""

from __future__ import annotations

import calendar
import time
from email.utils import formatdate, parsedate_tz

# A range header Porch does not act on: the whole representation is sent (RFC 9110
# 14.2 lets a server ignore Range).  UNSATISFIABLE: 416.
WHOLE = None
UNSATISFIABLE = (-1, -1)


def etag(mtime: int, size: int) -> bytes:
    """nginx's ETag: modification time and size, in hex ("5f8d2e1a-1c4")."""
    return b'"%x-%x"' % (mtime, size)


def http_date(seconds: float) -> bytes:
    """An IMF-fixdate (RFC 9110 5.6.7): "Sun, 06 Nov 1994 08:49:37 GMT"."""
    return formatdate(seconds, usegmt=True).encode()


_now: list = [-1, b""]  # the second date_now() last formatted, and its text


def date_now() -> bytes:
    """The Date field's value for a response made or forwarded now (RFC 9110 6.6.1),
    formatted once a second."""
    second = int(time.time())
    if _now[0] != second:
        _now[1] = formatdate(second, usegmt=True).encode()
        _now[0] = second
    return _now[1]


def parse_http_date(value: bytes) -> int | None:
    """Seconds since the epoch of an HTTP date (any of RFC 9110 5.6.7's three forms),
    or None when it is not one."""
    try:
        parts = parsedate_tz(value.decode("latin-1"))
    except (UnicodeDecodeError, ValueError, TypeError, IndexError):
        return None
    if parts is None:
        return None
    try:
        return calendar.timegm(parts[:6]) - (parts[9] or 0)
    except (ValueError, OverflowError):
        return None


def _tags(value: bytes) -> list[bytes]:
    return [t.strip() for t in value.split(b",") if t.strip()]


def _opaque(tag: bytes) -> bytes:
    return tag[2:] if tag[:2] == b"W/" else tag


def none_match(value: bytes, tag: bytes) -> bool:
    """If-None-Match `value` matches `tag` (weak comparison, RFC 9110 13.1.2): the
    request's condition is false and the answer is 304."""
    if value.strip() == b"*":
        return True
    mine = _opaque(tag)
    return any(_opaque(t) == mine for t in _tags(value))


def not_modified(if_none_match: bytes | None, if_modified_since: bytes | None, tag: bytes,
                 mtime: int) -> bool:
    """Whether a GET/HEAD is answered 304 (RFC 9110 13.2.2's order: If-None-Match,
    when present, decides alone; else If-Modified-Since, a file not changed since
    that date).  nginx's default compares the date for equality (`if_modified_since
    exact`); a date later than the file's also means "not modified" here, as RFC 9110
    13.1.3 says and nginx's `if_modified_since before` does."""
    if if_none_match is not None:
        return none_match(if_none_match, tag)
    if if_modified_since is not None:
        since = parse_http_date(if_modified_since)
        return since is not None and mtime <= since
    return False


def if_range_holds(value: bytes | None, tag: bytes, last_modified: bytes) -> bool:
    """If-Range (RFC 9110 13.1.5): the Range applies only when the validator is the
    current one: the same strong ETag, or exactly the Last-Modified date."""
    if value is None:
        return True
    value = value.strip()
    if value[:1] == b'"' or value[:2] == b"W/":
        return value == tag  # strong comparison; a weak tag never matches
    return value == last_modified


def byte_range(value: bytes, size: int) -> tuple[int, int] | None:
    """The (first byte, length) that `Range: value` asks of `size` bytes; WHOLE (None)
    when the header is to be ignored (not bytes, malformed, or several ranges:
    served whole, see README); UNSATISFIABLE when no byte of it exists (416)."""
    unit, eq, spec = value.partition(b"=")
    if not eq or unit.strip().lower() != b"bytes" or b"," in spec:
        return WHOLE
    first, dash, last = spec.strip().partition(b"-")
    if not dash or not (first.isdigit() or last.isdigit()) or (first and not first.isdigit()) \
            or (last and not last.isdigit()):
        return WHOLE
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return UNSATISFIABLE
        n = min(n, size)
        return size - n, n
    start = int(first)
    if last and int(last) < start:
        return WHOLE  # invalid range-spec (RFC 9110 14.1.1): ignored
    if start >= size:
        return UNSATISFIABLE
    end = int(last) if last else size - 1
    end = min(end, size - 1)
    return start, end - start + 1
