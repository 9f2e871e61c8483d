"""`expires`: Expires and Cache-Control: max-age on responses, as nginx's `expires` sets them.

    expires = "7d"              # also "1h 30m", "-1", 3600, "0"
    expires = "max"             # far future: for files whose names change with their content
    expires = "epoch"           # already expired: never served from a cache unchecked
    expires = "modified +1h"    # counted from the response's Last-Modified
    expires = "off"             # (or false) nothing: turns off a site's value on a route

Durations are nginx's: a number with a unit, units largest first, each once: y (365
days), M (30 days), w, d, h, m, s; a number without a unit is seconds ("1h 30m",
"90", "1d12h").  A leading "-" makes the time lie in the past.

What a response gets, exactly as ngx_http_headers_filter_module does it:
- only on 200, 201, 204, 206, 301, 302, 303, 304, 307 and 308 (nginx's list: the
  statuses whose responses caches keep); errors pass untouched;
- Expires: now + time (or Last-Modified + time with "modified"; without a Last-Modified,
  now); Cache-Control: max-age=time (with "modified": what is left until Expires);
- time 0: Expires is now, max-age=0; a negative time, or a "modified" time already
  past: Cache-Control: no-cache;
- "epoch": Expires: Thu, 01 Jan 1970 00:00:01 GMT and no-cache; "max": Expires: Thu, 31
  Dec 2037 23:55:55 GMT and max-age=315360000 (ten years);
- the upstream's own Expires and first Cache-Control are replaced where they stand, its
  other Cache-Control fields removed (nginx hides them): the app's "private" or
  "no-store" is gone, so write expires only where every response may be cached that way.
- Porch's own answers of those statuses (redirects) get them too, as nginx's do.

nginx's daily form ("@15h30m": at that time of day, local time) is not supported: it is
refused with what to write instead.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from typing import Any

from porch.http.model import ResponseHead
from porch.pipeline import Context, Policy

# nginx's ngx_http_headers_filter: the statuses expires (and add_header) apply to.
STATUSES = frozenset((200, 201, 204, 206, 301, 302, 303, 304, 307, 308))
_EPOCH = (b"Thu, 01 Jan 1970 00:00:01 GMT", b"no-cache")
_MAX = (b"Thu, 31 Dec 2037 23:55:55 GMT", b"max-age=315360000")
_UNITS = {"y": 365 * 86400, "M": 30 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)([yMwdhms]?)\s*")
_LONGEST = 100 * 365 * 86400  # beyond that, "max" says it
_HELP = ('write a duration like "7d", "1h 30m" or "-1", or one of "max", "epoch", "off",'
         ' or "modified +1h"')


@dataclass(frozen=True)
class ExpiresConfig:
    mode: str  # "access" (from now), "modified" (from Last-Modified), "epoch", "max"
    seconds: int = 0
    text: str = ""  # as written, for `porch check`


def parse(value: Any) -> ExpiresConfig | None:
    if value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{value!r} is not a time; {_HELP}")
    if isinstance(value, int):
        return ExpiresConfig("access", _bounded(value, str(value)), str(value))
    text = value.strip()
    if text in ("off", "epoch", "max"):
        return None if text == "off" else ExpiresConfig(text, 0, text)
    mode, rest = "access", text
    if text.startswith("modified") and text[8:9].isspace():
        mode, rest = "modified", text[8:].strip()
    if rest.startswith("@"):
        raise ValueError(f'"{value}": a time of day ("@...", nginx\'s daily expiry) is not supported;'
                         ' write a duration like "1d"')
    return ExpiresConfig(mode, _signed_seconds(rest, value), text)


def _signed_seconds(text: str, value: str) -> int:
    sign = -1 if text.startswith("-") else 1
    seconds = _seconds(text[1:] if text[:1] in "+-" else text)
    if seconds is None:
        raise ValueError(f'"{value}" is not a time; {_HELP}')
    return _bounded(sign * seconds, value)


def _seconds(text: str) -> int | None:
    """Seconds of an nginx time ("1d12h", "1h 30m", "90"), units largest first, each
    once, a bare number only last; None when it is not one."""
    total, pos, last_rank = 0, 0, -1
    order = "yMwdhms"
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None:
            return None
        number, unit = match.groups()
        rank = order.index(unit) if unit else len(order)
        if rank <= last_rank or (not unit and match.end() != len(text)):
            return None
        total += int(number) * _UNITS.get(unit, 1)
        pos, last_rank = match.end(), rank
    return total if text else None


def _bounded(seconds: int, value: str) -> int:
    if abs(seconds) > _LONGEST:
        raise ValueError(f'"{value}" is more than 100 years; write "max" for the far future')
    return seconds


def dump(config: ExpiresConfig | None) -> str | bool:
    """The value as porch.toml spells it (`porch check --dump`)."""
    return False if config is None else config.text


def describe(config: ExpiresConfig | None) -> str:
    return "off" if config is None else config.text


def build(config: ExpiresConfig | None, env: object = None) -> Policy | None:
    return None if config is None else Expires(config)


class Expires(Policy):
    name = "expires"
    __slots__ = ("mode", "seconds", "fixed", "control")

    def __init__(self, config: ExpiresConfig) -> None:
        self.mode = config.mode
        self.seconds = config.seconds
        self.fixed = _EPOCH if config.mode == "epoch" else _MAX if config.mode == "max" else None
        # the Cache-Control of a time from now, the same for every response
        self.control = b"no-cache" if config.seconds < 0 else b"max-age=%d" % config.seconds

    def response(self, ctx: Context, head: ResponseHead) -> None:
        if head.status not in STATUSES:
            return
        expires, control = self.fixed or self._values(head)
        headers = head.headers
        headers.set(b"Expires", expires)  # in place of the upstream's, as nginx
        headers.set(b"Cache-Control", control)  # the first one's place; the others go

    def _values(self, head: ResponseHead) -> tuple[bytes, bytes]:
        now = int(time.time())
        if self.seconds == 0:
            return http_date(now), b"max-age=0"
        if self.mode == "modified":
            modified = _last_modified(head)
            if modified is not None:
                at = modified + self.seconds
                left = at - now
                return http_date(at), b"no-cache" if self.seconds < 0 or left < 0 else b"max-age=%d" % left
        return http_date(now + self.seconds), self.control


def _last_modified(head: ResponseHead) -> int | None:
    value = head.headers.get(b"last-modified")
    if value is None:
        return None
    try:
        return int(parsedate_to_datetime(value.decode("latin-1")).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # unparsable: from now, as nginx with no Last-Modified


_last_date: tuple[int, bytes] = (-1, b"")


def http_date(when: int) -> bytes:
    """`when` as an HTTP date (RFC 9110 5.6.7: "Sun, 06 Nov 1994 08:49:37 GMT"); the last
    one is kept, since a busy second asks for the same date again and again."""
    global _last_date
    if _last_date[0] == when:
        return _last_date[1]
    text = formatdate(when, usegmt=True).encode()
    _last_date = (when, text)
    return text
