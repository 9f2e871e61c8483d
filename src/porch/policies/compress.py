"""`compress`: response bodies coded with zstd, brotli or gzip on their way to the client.

    compress = true
    compress = { algorithms = ["zstd", "br", "gzip"], types = ["application/x-ndjson"],
                 min_length = 256, level = 5 }

What gets compressed (decided on the response head, in the `response` phase):
- a coding the client accepts (Accept-Encoding, weights and `*` honoured: codings.py),
  of `algorithms` (also Porch's preference among equal weights);
- a type worth it: text/*, JSON (application/json, */*+json), JavaScript, XML
  (application/xml, */*+xml, so SVG), application/wasm, and the `types` written (beside
  these, as nginx's gzip_types: "type/subtype", "type/*" or "*"); parameters such as
  charset do not count.  Images, video, archives and fonts are compressed already;
- a body of at least `min_length` bytes when the upstream says its length (256 by
  default: below that the coding's header and trailer eat what it saves; nginx's
  gzip_min_length is 20); a body of unknown length is compressed;
- never: a response with a Content-Encoding already (the app compressed it), a 206 or
  anything with Content-Range (the ranges count the uncoded bytes), 1xx, 204 and 304
  (no body), the answer to HEAD (no body; it still gets the Vary a GET would), a
  response with Cache-Control: no-transform (RFC 9110 7.7), or one that carries a digest
  of its bytes (Content-Digest, Repr-Digest, Digest, Content-MD5: RFC 9530; the app
  vouches for exactly those bytes).  Porch's own short answers are not compressed.
- any status with a body: nginx compresses 200, 403 and 404 only; an API's 201 or an
  app's 500 page gains the same from it.  HTTP/1.0 clients too (the body is then
  delimited by the close; nginx's gzip_http_version refuses them by default).

A compressed response loses Content-Length (HTTP/1.1 clients get it chunked) and
Accept-Ranges, its strong ETag becomes weak (W/"...": the coded bytes differ from the
ones the tag names, RFC 9110 8.8.1, as nginx does), and it gets Content-Encoding.  Every
response of a compressible type gets ``Vary: Accept-Encoding`` (added to the app's own
Vary), compressed or not, so that a cache never gives a coded body to a client that did
not ask for it (nginx's gzip_vary, always on).

The body (`response_body` phase) is coded chunk by chunk as it arrives, never held
whole: what the encoder has ready goes out at once.  Server-sent events and bodies of
unknown length (chunked or until close) are flushed after every chunk, so each event
reaches the client when the upstream sends it; a body of known length is flushed at its
end only (the encoder's blocks are then as large as they can be).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from porch.config.units import parse_size
from porch.http.model import Headers, ResponseHead
from porch.pipeline import Context, Policy
from porch.policies import codings

_STATE = "compress"  # ctx.vars key: the response's encoder
_KEYS = ("algorithms", "types", "min_length", "level")
_EXAMPLE = 'true, or a table like { algorithms = ["zstd", "br", "gzip"], min_length = 256, level = 5 }'
DEFAULT_MIN_LENGTH = 256

# The types compressed without being listed (their parameters taken off, lowercase).
_TYPES = frozenset((
    b"application/json", b"application/javascript", b"application/x-javascript",
    b"application/ecmascript", b"application/xml", b"application/wasm",
    b"application/x-ndjson", b"image/svg+xml",
))
_SUFFIXES = (b"+json", b"+xml")
_TYPE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$&^_.+-")
_NO_BODY = frozenset((204, 206, 304))  # 206: a part, counted in uncoded bytes
# A Content-Type: not compressed, compressed, an event stream.
_NO = 0
_YES = 1
_STREAM = 2


@dataclass(frozen=True)
class CompressConfig:
    algorithms: tuple[str, ...] = codings.ALGORITHMS
    types: tuple[str, ...] = ()  # compressed beside the built-in ones
    min_length: int = DEFAULT_MIN_LENGTH
    levels: tuple[tuple[str, int], ...] = tuple((c, codings.LEVELS[c][2]) for c in codings.ALGORITHMS)


# -- config -------------------------------------------------------------------------------


def parse(value: Any) -> CompressConfig | None:
    if value is True:
        return CompressConfig()
    if value is False:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{value!r} is not {_EXAMPLE}")
    unknown = [key for key in value if key not in _KEYS]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not one of {', '.join(_KEYS)}")
    algorithms = _algorithms(value.get("algorithms", list(codings.ALGORITHMS)))
    try:
        min_length = parse_size(value.get("min_length", DEFAULT_MIN_LENGTH))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"min_length: {exc}") from None
    return CompressConfig(algorithms, _types(value.get("types", [])), min_length,
                          _levels(value.get("level"), algorithms))


def _algorithms(value: Any) -> tuple[str, ...]:
    names = ", ".join(f'"{a}"' for a in codings.ALGORITHMS)
    if not isinstance(value, list) or not value:
        raise ValueError(f"algorithms: {value!r} is not a list of codings; write algorithms = [{names}]"
                         " (the order is Porch's preference)")
    for name in value:
        if name not in codings.ALGORITHMS:
            hint = ' (brotli is "br", its HTTP name)' if name == "brotli" else ""
            raise ValueError(f"algorithms: {name!r} is not one of {names}{hint}")
    if len(set(value)) != len(value):
        raise ValueError(f"algorithms: {value!r} names a coding twice; write each once")
    return tuple(value)


def _types(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f'types: {value!r} is not a list; write types = ["application/x-ndjson", "font/*"]')
    for text in value:
        if not isinstance(text, str) or not _valid_type(text):
            raise ValueError(f'types: {text!r} is not a media type; write "type/subtype", "type/*" or "*"'
                             " (without parameters such as charset)")
    return tuple(text.lower() for text in value)


def _valid_type(text: str) -> bool:
    if text == "*":
        return True
    major, slash, minor = text.lower().partition("/")
    return bool(slash and major and minor and set(major) <= _TYPE_CHARS
                and (minor == "*" or set(minor) <= _TYPE_CHARS))


def _levels(value: Any, algorithms: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """`level = 5` (every algorithm), `level = { gzip = 6, br = 5 }` (those named), or
    absent (the defaults of codings.LEVELS)."""
    levels = {name: codings.LEVELS[name][2] for name in algorithms}
    if value is None:
        return tuple(levels.items())
    if isinstance(value, dict):
        given = value
        for name in given:
            if name not in algorithms:
                raise ValueError(f"level: {name!r} is not one of algorithms ({', '.join(algorithms)})")
    else:
        given = dict.fromkeys(algorithms, value)
    for name, level in given.items():
        low, high, _ = codings.LEVELS[name]
        if isinstance(level, bool) or not isinstance(level, int) or not low <= level <= high:
            raise ValueError(f"level: {level!r} is not a {name} level; {name} levels are {low} to {high}"
                             f" (write level = {{ {name} = {codings.LEVELS[name][2]} }} to set it alone)")
        levels[name] = level
    return tuple(levels.items())


def dump(config: CompressConfig | None) -> dict[str, Any] | bool:
    """The value as porch.toml spells it (`porch check --dump`), every key written out."""
    if config is None:
        return False
    return {"algorithms": list(config.algorithms), "types": list(config.types),
            "min_length": config.min_length, "level": dict(config.levels)}


def describe(config: CompressConfig | None) -> str:
    if config is None:
        return "off"
    levels = dict(config.levels)
    text = ", ".join(f"{name} {levels[name]}" for name in config.algorithms)
    text += f" from {config.min_length} bytes"
    return text + (f", also {', '.join(config.types)}" if config.types else "")


def build(config: CompressConfig | None, env: object = None) -> Policy | None:
    return None if config is None else Compress(config)


# -- the policy -------------------------------------------------------------------------


class Compress(Policy):
    name = "compress"
    __slots__ = ("plan",)

    def __init__(self, config: CompressConfig) -> None:
        self.plan = Plan(config)

    def hook(self, phase: str) -> Any:
        # The compiled Plan's methods themselves: no call through this class a response.
        if phase == "response":
            return self.plan.response
        if phase == "response_body":
            return self.plan.response_body
        return getattr(self, phase)

    def response(self, ctx: Context, head: ResponseHead) -> None:
        self.plan.response(ctx, head)

    def response_body(self, ctx: Context, data: bytes, end: bool) -> bytes:
        return self.plan.response_body(ctx, data, end)


class Plan:
    """What one `compress` decides by, and its two hooks (an extension type in the
    compiled build, compress.pxd: they run on every response of the route)."""

    name = "compress"  # (Chain.owner names a hook's policy by it)

    def __init__(self, config: CompressConfig) -> None:
        self.choose = codings.Chooser(config.algorithms)
        self.levels = dict(config.levels)
        self.min_length = config.min_length
        self.types = _TYPES | {t.encode() for t in config.types if not t.endswith("/*")}
        self.majors = tuple(t[:-1].encode() for t in config.types if t.endswith("/*"))
        self.any_type = "*" in config.types
        self.zstd = codings.contexts(self.levels.get(codings.ZSTD, 3))
        self.typed: dict[bytes, int] = {}  # Content-Type value -> _NO, _YES or _STREAM

    def response(self, ctx: Context, head: ResponseHead) -> None:
        status = head.status
        if status < 200 or status in _NO_BODY or not ctx.upstream_status:
            return  # (Porch's own answers are short, and their bodies pass no body hook)
        headers = head.headers
        flat = headers.flat
        # One pass over the fields the decision reads (several of one name joined with
        # ", ", as RFC 9110 5.3 lets a list field be).
        kind = length_text = control = etag = vary = None
        etag_at = -1
        for i in range(0, len(flat), 4):
            code = _code(flat[i])
            if code == _F_NONE or code == _F_RANGES:
                continue
            if code == _F_SKIP:
                return  # coded already, a part, or a digest of these very bytes
            value = flat[i + 2]
            if code == _F_TYPE:
                kind = value if kind is None else kind + b", " + value
            elif code == _F_LENGTH:
                length_text = value if length_text is None else length_text + b", " + value
            elif code == _F_CONTROL:
                control = value if control is None else control + b", " + value
            elif code == _F_ETAG:
                etag_at = i if etag is None else -1  # (-1: several, weakened by _weaken_etag)
                etag = value if etag is None else etag + b", " + value
            else:
                vary = value if vary is None else vary + b", " + value
        if kind is None:
            return
        typed = self.typed.get(kind, -1)
        if typed < 0:
            typed = self.classify(kind)
        if typed == _NO:
            return
        if control is not None and b"no-transform" in control.lower():
            return
        length = -1  # unknown
        if length_text is not None:
            length = int(length_text.partition(b",")[0])  # (equal duplicates joined above)
            if length < self.min_length or length == 0:
                return
        _add_vary(headers, vary)
        if ctx.method == b"HEAD":
            return
        accept = Headers(ctx.headers).get_all(b"accept-encoding")
        coding = self.choose.pick(b",".join(accept)) if accept else None
        if coding is None:
            return
        ctx.vars[_STATE] = self.encoder(coding, length, typed == _STREAM)
        if etag_at >= 0 and etag.startswith(b'"'):
            flat[etag_at + 2] = b"W/" + etag  # the usual one strong ETag (see _weaken_etag)
            etag = None
        for i in range(len(flat) - 4, -1, -4):  # from the end: deletions keep the indexes before
            code = _code(flat[i])
            if code == _F_LENGTH or code == _F_RANGES:
                del flat[i : i + 4]
        flat += (b"Content-Encoding", b": ", _CODING_NAMES[coding], b"\r\n")
        _weaken_etag(headers, etag)

    def response_body(self, ctx: Context, data: bytes, end: bool) -> bytes:
        encoder = ctx.vars.get(_STATE)
        if encoder is None:
            return data
        return encoder.finish(data) if end else encoder.push(data) if data else b""

    def classify(self, value: bytes) -> int:
        """_NO, _YES or _STREAM for a Content-Type value, remembered (bounded)."""
        kind = value.partition(b";")[0].strip().lower()
        known = _NO
        if (kind.startswith(b"text/") or kind in self.types or kind.endswith(_SUFFIXES)
                or self.any_type or kind.startswith(self.majors)):
            known = _STREAM if kind == b"text/event-stream" else _YES
        if len(self.typed) >= 256:
            self.typed.clear()  # bounded, whatever types upstreams make up
        self.typed[value] = known
        return known

    def encoder(self, coding: str, length: int, stream: bool) -> Any:
        # Live streams are flushed chunk by chunk; see the module docstring.
        flush_each = length < 0 or stream
        if coding == codings.ZSTD:
            return codings.ZstdEncoder(self.zstd, length, flush_each)
        if coding == codings.BR:
            return codings.BrotliEncoder(self.levels[coding], length, flush_each)
        return codings.GzipEncoder(self.levels[coding], length, flush_each)


# What the decision makes of a response field, by name (_CODES: lowercase names).
_F_NONE = 0
_F_TYPE = 1
_F_LENGTH = 2
_F_CONTROL = 3
_F_ETAG = 4
_F_VARY = 5
_F_RANGES = 6
_F_SKIP = 7
_CODES = {b"content-type": _F_TYPE, b"content-length": _F_LENGTH, b"cache-control": _F_CONTROL,
          b"etag": _F_ETAG, b"vary": _F_VARY, b"accept-ranges": _F_RANGES,
          # never compressed: coded already, a part (its ranges count uncoded bytes),
          # or a digest of these very bytes
          b"content-encoding": _F_SKIP, b"content-range": _F_SKIP, b"content-digest": _F_SKIP,
          b"repr-digest": _F_SKIP, b"digest": _F_SKIP, b"content-md5": _F_SKIP}
# Field names as received -> their _F_ code: upstreams send a handful of spellings, so a
# response's pass makes no lowercase copies.
_NAMES: dict[bytes, int] = {}
_CODING_NAMES = {name: name.encode() for name in codings.ALGORITHMS}


def _code(field: bytes) -> int:
    code = _NAMES.get(field, -1)
    if code < 0:
        code = _CODES.get(field.lower(), _F_NONE)
        if len(_NAMES) >= 512:
            _NAMES.clear()  # bounded, whatever names upstreams make up
        _NAMES[field] = code
    return code


def _add_vary(headers: Headers, vary: bytes | None) -> None:
    """Vary: Accept-Encoding, merged into the app's first Vary field when it has one."""
    if vary is None:
        headers.add(b"Vary", b"Accept-Encoding")
        return
    tokens = {token.strip().lower() for token in vary.split(b",")}
    if b"accept-encoding" in tokens or b"*" in tokens:
        return
    flat = headers.flat
    for i in range(0, len(flat), 4):
        if flat[i].lower() == b"vary":
            flat[i + 2] = flat[i + 2] + b", Accept-Encoding" if flat[i + 2].strip() else b"Accept-Encoding"
            return


def _weaken_etag(headers: Headers, etag: bytes | None) -> None:
    """A strong ETag names these exact bytes: once coded they are others, so it becomes
    weak (W/"x"); a malformed one is dropped (nginx's ngx_http_weak_etag does both)."""
    if etag is None or etag.startswith(b"W/"):
        return
    if etag.startswith(b'"'):
        headers.set(b"ETag", b"W/" + etag)
    else:
        headers.remove(b"etag")
