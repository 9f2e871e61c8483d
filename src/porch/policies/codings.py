"""Content codings for `compress` (policies/compress.py): which one a client takes,
and streaming encoders that turn body chunks into coded chunks as they pass.

Negotiation (RFC 9110 12.5.3, Accept-Encoding):
- each element is a coding with an optional weight ``;q=`` from 0 to 1; ``q=0`` means
  "not acceptable"; a weight that does not parse makes the element unacceptable (never
  send what the client may not decode);
- ``*`` weighs every coding the field does not name; ``x-gzip`` is gzip (RFC 9110 8.4.1.3);
- among the codings Porch offers, the heaviest wins; equal weights go to Porch's
  preference (the order of `algorithms`: zstd, br, gzip by default: zstd and brotli
  make smaller bodies than gzip, and zstd costs the least CPU of the three);
- identity is always acceptable to Porch (it sends the body as it is rather than a 406);
  it wins only when the field names it with a heavier weight than the best coding.

Encoders: one object per response, made when its head is seen, with `push(chunk)`
(the coded bytes the encoder has ready, maybe b"") and `finish(chunk)` (the rest,
ending the stream).  `flush_each` makes every push end with a flush, so the client
can decode everything sent so far: for live streams (server-sent events, bodies of
unknown length), where holding bytes back would hold back events.
"""

from __future__ import annotations

import zlib
from typing import Any

import brotli
import zstandard

GZIP, BR, ZSTD = "gzip", "br", "zstd"
ALGORITHMS = (ZSTD, BR, GZIP)  # the default preference, best first
# coding -> (lowest level, highest level, default level)
# - gzip 5: nginx's gzip_comp_level is 1; 5 costs ~2x its CPU for a body ~15% smaller
#   (100 KB of JSON, bench/compress.py), near zlib's own default (6); gzip is what
#   clients without zstd or br get, and they are few;
# - br 4: brotli's streaming sweet spot (ngx_brotli and Caddy use 4 to 6 on the fly;
#   10 and 11 are for compressing once, ahead of time);
# - zstd 3: zstd's own default; 20-22 need windows above the 8 MiB that RFC 9659 3
#   lets an HTTP zstd encoder use, so levels stop at 19.
LEVELS: dict[str, tuple[int, int, int]] = {GZIP: (1, 9, 5), BR: (0, 11, 4), ZSTD: (1, 19, 3)}
_ALIASES = {b"x-gzip": GZIP.encode()}
_MAX_CACHED = 256  # distinct Accept-Encoding values remembered per policy (browsers send a few)
_UNSEEN = object()


def choose(accept: bytes, offered: tuple[str, ...]) -> str | None:
    """The coding of `offered` (Porch's preference order) that a request with this
    Accept-Encoding value takes best, or None to send the body as it is."""
    named, star = _weights(accept)
    best, best_q = None, 0.0
    for coding in offered:
        q = named.get(coding.encode(), star)
        if q > best_q:
            best, best_q = coding, q
    if best is not None and named.get(b"identity", -1.0) > best_q:
        return None
    return best


def _weights(accept: bytes) -> tuple[dict[bytes, float], float]:
    """(coding -> weight for the codings named, the weight of `*` or 0)."""
    named: dict[bytes, float] = {}
    star = 0.0
    for element in accept.split(b","):
        coding, _, params = element.partition(b";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = _weight(params)
        if coding == b"*":
            star = q
        else:
            coding = _ALIASES.get(coding, coding)
            named[coding] = max(q, named.get(coding, 0.0))
    return named, star


def _weight(params: bytes) -> float:
    """The q of ``;q=0.5`` (1 when absent); 0 for a weight that does not parse."""
    for param in params.split(b";"):
        name, _, value = param.partition(b"=")
        if name.strip().lower() == b"q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


class Chooser:
    """`choose` for one policy's offered codings, remembering recent answers: the
    Accept-Encoding values of real traffic are a handful, parsed once each."""

    def __init__(self, offered: tuple[str, ...]) -> None:
        self.offered = offered
        self._cache: dict[bytes, str | None] = {}

    def __call__(self, accept: bytes) -> str | None:
        return self.pick(accept)

    def pick(self, accept: bytes) -> str | None:
        coding = self._cache.get(accept, _UNSEEN)
        if coding is not _UNSEEN:
            return coding
        coding = choose(accept, self.offered)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()  # a client making up values gets no memory growth from it
        self._cache[accept] = coding
        return coding


# -- encoders --------------------------------------------------------------------------


def _window_bits(length: int, largest: int, smallest: int) -> int:
    """The smallest window (log2) that holds a body of `length` bytes (-1: unknown),
    within [smallest, largest]: a small body needs no large window, and the encoder's
    memory follows the window (nginx shrinks gzip's window by the same reasoning)."""
    if length < 0:
        return largest
    return max(smallest, min(largest, (length + 1).bit_length()))


class GzipEncoder:
    """gzip (RFC 1952) with zlib: deflate wrapped in a gzip header and trailer (wbits 31)."""

    def __init__(self, level: int, length: int, flush_each: bool) -> None:
        wbits = _window_bits(length, 15, 9)
        # memLevel follows the window as in zlib's own sizing: 2^(wbits+2) + 2^(mem+9) bytes
        self.z = zlib.compressobj(level, zlib.DEFLATED, 16 + wbits, max(1, wbits - 7))
        self.flush_each = flush_each

    def push(self, data: bytes) -> bytes:
        out = self.z.compress(data)
        if self.flush_each:
            out += self.z.flush(zlib.Z_SYNC_FLUSH)
        return out

    def finish(self, data: bytes) -> bytes:
        if not data:  # (the usual last call: the body is in already)
            return self.z.flush(zlib.Z_FINISH)
        return self.z.compress(data) + self.z.flush(zlib.Z_FINISH)


class BrotliEncoder:
    """br (RFC 7932); the window is at most 512 KiB (lgwin 19, as ngx_brotli's default
    brotli_window), so a stream's memory stays under a megabyte."""

    def __init__(self, level: int, length: int, flush_each: bool) -> None:
        self.c = brotli.Compressor(quality=level, lgwin=_window_bits(length, 19, 10))
        self.flush_each = flush_each

    def push(self, data: bytes) -> bytes:
        out = self.c.process(data)
        if self.flush_each:
            out += self.c.flush()
        return out

    def finish(self, data: bytes) -> bytes:
        return self.c.process(data) + self.c.finish()


class ZstdEncoder:
    """zstd (RFC 8878).  The length, when known, goes in the frame header and lets zstd
    size its window to the body; a `ZstdCompressor` (a context, ~30 us to make) is
    taken from the worker's `ZstdContexts` and given back once the frame is done."""

    def __init__(self, pool: ZstdContexts, length: int, flush_each: bool) -> None:
        self.pool = pool
        self.cctx = pool.take()
        self.obj = self.cctx.compressobj(size=length)
        self.flush_each = flush_each

    def push(self, data: bytes) -> bytes:
        out = self.obj.compress(data)
        if self.flush_each:
            out += self.obj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        return out

    def finish(self, data: bytes) -> bytes:
        out = self.obj.compress(data) + self.obj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)
        self.pool.give(self.cctx)
        return out


class ZstdContexts:
    """A few idle `ZstdCompressor`s of one level, reused by the next responses (one pool
    per level for the whole worker: `contexts(level)`).  A context that grew for a long
    stream is not kept: idle, it would hold its ~3.5 MiB for nothing.  A stream cut
    before its end never gives its context back: it is simply collected."""

    __slots__ = ("level", "idle")
    KEEP = 4  # idle contexts kept per level
    LARGEST = 2 << 20  # bytes: a level-3 context sized for a body under a few hundred KB is ~1 MiB

    def __init__(self, level: int) -> None:
        self.level = level
        self.idle: list[Any] = []

    def take(self) -> Any:
        return self.idle.pop() if self.idle else zstandard.ZstdCompressor(level=self.level)

    def give(self, cctx: Any) -> None:
        if len(self.idle) < self.KEEP and cctx.memory_size() <= self.LARGEST:
            self.idle.append(cctx)


_POOLS: dict[int, ZstdContexts] = {}


def contexts(level: int) -> ZstdContexts:
    """The worker's pool of zstd contexts of `level`, shared by every route."""
    pool = _POOLS.get(level)
    if pool is None:
        pool = _POOLS[level] = ZstdContexts(level)
    return pool
