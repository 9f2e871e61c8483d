"""Request ids (X-Request-ID): Porch's own, and whether a received one may be kept.

Porch's are a per-process random prefix and a counter, in hex (16 + 8 digits):
unique across workers and restarts without a random draw per request (os.urandom is
a system call, uuid4 ~3,000 instructions).  The prefix and the counter's high digits
are formatted once per 256 requests; a request pays one concatenation with its last
two digits (formatting the whole id: ~900 instructions, bench/hotpath.py under
callgrind).  Compiled (request_id.pxd), `next_request_id` is a C call.
"""

from __future__ import annotations

import os
import re

_HEX2 = tuple(b"%02x" % i for i in range(256))
_rid_prefix = b""
_rid_base = b""
_rid_n = 0


def reseed() -> None:
    """A new prefix and counter: at import, and in each forked worker, so that
    workers forked from one parent never share a prefix."""
    global _rid_prefix, _rid_base, _rid_n
    _rid_prefix = os.urandom(8).hex().encode()
    _rid_n = 0
    _rid_base = _rid_prefix + b"000000"


def next_request_id() -> bytes:
    """A new id: 24 lowercase hex digits."""
    global _rid_n, _rid_base
    _rid_n += 1
    low = _rid_n & 255
    if low == 0:
        _rid_base = b"%s%06x" % (_rid_prefix, (_rid_n >> 8) & 0xFFFFFF)
    return _rid_base + _HEX2[low]


reseed()
os.register_at_fork(after_in_child=reseed)

# An id a trusted proxy sends is kept when it is 1-200 token characters (RFC 9110
# 5.6.2): nothing that could split a header or a log line, nor bloat every log line.
_SANE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,200}")


def sane(value: bytes) -> bool:
    return _SANE.fullmatch(value) is not None
