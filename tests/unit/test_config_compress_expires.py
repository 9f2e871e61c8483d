"""`compress` and `expires` in porch.toml: read, merged (the innermost value wins whole),
shown by `porch check`, refused with the key, the value and the fix; and the
Accept-Encoding negotiation (policies/codings.py) on its own."""

from __future__ import annotations

import pytest

from porch.config.describe import describe
from porch.config.errors import ConfigError
from porch.config.toml import loads
from porch.policies.codings import Chooser, choose
from porch.policies.compress import CompressConfig
from porch.policies.expires import ExpiresConfig

SITE = '[[site]]\nhosts = ["a.test"]\nproxy = "http://127.0.0.1:9"\n'


def policies(text: str, route: int = -1) -> dict:
    return dict(loads(text).sites[0].routes[route].policies)


def problem(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        loads(text)
    return str(e.value)


# -- compress ---------------------------------------------------------------------------


def test_compress_true_and_a_table():
    assert policies(SITE + "compress = true\n")["compress"] == CompressConfig(
        ("zstd", "br", "gzip"), (), 256, (("zstd", 3), ("br", 4), ("gzip", 5)))
    config = policies(SITE + 'compress = { algorithms = ["gzip", "br"], types = ["Font/*", "*"],'
                             ' min_length = "1k", level = 4 }\n')["compress"]
    assert config == CompressConfig(("gzip", "br"), ("font/*", "*"), 1024, (("gzip", 4), ("br", 4)))
    config = policies(SITE + "compress = { level = { br = 11, zstd = 19 } }\n")["compress"]
    assert config.levels == (("zstd", 19), ("br", 11), ("gzip", 5))


def test_compress_merges_the_innermost_whole_and_false_turns_it_off():
    text = ("[porch]\ncompress = { level = 1 }\n" + SITE + "compress = { min_length = 20 }\n"
            '  [[site.route]]\n  path = "/media/"\n  compress = false\n')
    assert policies(text, 0).get("compress") is None  # the route's false
    assert policies(text, 1)["compress"].min_length == 20
    assert policies(text, 1)["compress"].levels == (("zstd", 3), ("br", 4), ("gzip", 5))  # not [porch]'s
    lines = describe(loads(text)).splitlines()[-2:]
    assert lines[0].endswith("(compress off)")
    assert lines[1].endswith("(compress zstd 3, br 4, gzip 5 from 20 bytes)")


@pytest.mark.parametrize("value, message", [
    ('"gzip"', "is not true, or a table like"),
    ('{ algorithm = ["gzip"] }', "'algorithm' is not one of algorithms, types, min_length, level"),
    ('{ algorithms = ["brotli"] }', "'brotli' is not one of \"zstd\", \"br\", \"gzip\" (brotli is \"br\""),
    ('{ algorithms = [] }', "is not a list of codings; write algorithms = [\"zstd\", \"br\", \"gzip\"]"),
    ('{ algorithms = ["gzip", "gzip"] }', "names a coding twice"),
    ('{ types = "text/csv" }', "is not a list; write types = ["),
    ('{ types = ["text/csv; charset=utf-8"] }', "is not a media type; write \"type/subtype\""),
    ('{ min_length = -1 }', "min_length: -1 is negative"),
    ('{ level = 10 }', "level: 10 is not a gzip level; gzip levels are 1 to 9 (write level = { gzip = 5 }"),
    ('{ level = 20, algorithms = ["zstd"] }', "zstd levels are 1 to 19"),
    ('{ level = { deflate = 3 } }', "level: 'deflate' is not one of algorithms"),
    ('{ level = true }', "level: True is not a"),
])
def test_compress_errors_name_the_key_the_value_and_the_fix(value, message):
    text = problem(SITE + f"compress = {value}\n")
    assert text.startswith("site[0].compress") and message in text, text


# -- Accept-Encoding --------------------------------------------------------------------


@pytest.mark.parametrize("accept, expected", [
    (b"gzip, deflate, br, zstd", "zstd"),
    (b"gzip, deflate, br", "br"),
    (b"GZIP", "gzip"),
    (b"x-gzip", "gzip"),
    (b"gzip;q=1.0, br;q=0.9", "gzip"),
    (b"br; q=0.2, gzip ; Q=0.1", "br"),
    (b"*", "zstd"),
    (b"gzip, *;q=0", "gzip"),
    (b"zstd;q=0, *", "br"),
    (b"gzip;q=0", None),
    (b"gzip;q=0.000", None),
    (b"gzip;q=abc", None),  # a weight that does not parse: not acceptable
    (b"gzip;q=2", None),
    (b"identity", None),
    (b"", None),
    (b",,", None),
    (b"gzip;q=0.5, identity", None),  # identity named heavier
    (b"gzip, identity;q=0.5", "gzip"),
    (b"compress, deflate", None),
])
def test_accept_encoding(accept, expected):
    assert choose(accept, ("zstd", "br", "gzip")) == expected


def test_preference_is_the_order_of_algorithms_and_answers_are_remembered_boundedly():
    assert choose(b"zstd, br, gzip", ("gzip", "br")) == "gzip"
    chooser = Chooser(("br", "gzip"))
    for i in range(1000):
        assert chooser(b"gzip, made-up-%d" % i) == "gzip"
    assert len(chooser._cache) <= 256


# -- expires ----------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ('"7d"', ExpiresConfig("access", 604800, "7d")),
    ('"1h 30m"', ExpiresConfig("access", 5400, "1h 30m")),
    ('"1y1M1w1d1h1m1s"', ExpiresConfig("access", 365 * 86400 + 30 * 86400 + 7 * 86400 + 90061, "1y1M1w1d1h1m1s")),
    ('"90"', ExpiresConfig("access", 90, "90")),
    ("3600", ExpiresConfig("access", 3600, "3600")),
    ('"-1"', ExpiresConfig("access", -1, "-1")),
    ('"+2h"', ExpiresConfig("access", 7200, "+2h")),
    ('"epoch"', ExpiresConfig("epoch", 0, "epoch")),
    ('"max"', ExpiresConfig("max", 0, "max")),
    ('"modified +1h"', ExpiresConfig("modified", 3600, "modified +1h")),
    ('"modified -1d"', ExpiresConfig("modified", -86400, "modified -1d")),
])
def test_expires_values(value, expected):
    assert policies(SITE + f"expires = {value}\n")["expires"] == expected


def test_expires_off_and_false_turn_a_site_value_off():
    for off in ('"off"', "false"):
        text = SITE + f'expires = "1h"\n  [[site.route]]\n  path = "/api/"\n  expires = {off}\n'
        assert policies(text, 0)["expires"] is None
        assert policies(text, 1)["expires"].seconds == 3600
    assert describe(loads(SITE + 'expires = "max"\n')).splitlines()[-1].endswith("(expires max)")


@pytest.mark.parametrize("value, message", [
    ('"7 days"', '"7 days" is not a time; write a duration like "7d"'),
    ('"30m1h"', "is not a time"),  # units largest first, as nginx
    ('"1h1h"', "is not a time"),
    ('"10 1h"', "is not a time"),  # a bare number comes last
    ('"1.5h"', "is not a time"),
    ('"modified"', "is not a time"),
    ('"@15h30m"', "a time of day (\"@...\", nginx's daily expiry) is not supported"),
    ('"modified @1h"', "is not supported"),
    ('"101y"', 'more than 100 years; write "max"'),
    ("true", 'True is not a time; write a duration like "7d"'),
    ('"Max"', "is not a time"),  # nginx's words are lowercase
])
def test_expires_errors_name_the_key_the_value_and_the_fix(value, message):
    text = problem(SITE + f"expires = {value}\n")
    assert text.startswith("site[0].expires") and message in text, text


# -- the encoders -------------------------------------------------------------------------

CONTENT = b"".join(b'{"id": %d, "name": "row %d"}\n' % (i, i * 7) for i in range(20000))


def encoder(coding: str, length: int, flush_each: bool):
    from porch.policies import codings
    if coding == "zstd":
        return codings.ZstdEncoder(codings.contexts(3), length, flush_each)
    return {"gzip": codings.GzipEncoder, "br": codings.BrotliEncoder}[coding](5 if coding == "gzip" else 4,
                                                                             length, flush_each)


def decoder(coding: str):
    import zlib

    import brotli
    import zstandard
    if coding == "gzip":
        return zlib.decompressobj(31).decompress
    if coding == "br":
        return brotli.Decompressor().process
    return zstandard.ZstdDecompressor().decompressobj().decompress


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
@pytest.mark.parametrize("known", [True, False])
def test_encoders_round_trip_in_pieces(coding, known):
    enc = encoder(coding, len(CONTENT) if known else -1, flush_each=False)
    pieces = [CONTENT[i:i + 7000] for i in range(0, len(CONTENT), 7000)]
    out = b"".join(enc.push(p) for p in pieces[:-1]) + enc.finish(pieces[-1])
    assert decoder(coding)(out) == CONTENT
    assert len(out) < len(CONTENT) / 5


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_flush_each_lets_every_piece_decode_at_once(coding):
    enc, dec = encoder(coding, -1, flush_each=True), decoder(coding)
    got = b""
    for i in range(5):
        piece = b"data: event %d\n\n" % i
        got += dec(enc.push(piece))
        assert got.endswith(piece)  # the whole event, before the next one exists
    got += dec(enc.finish(b""))
    assert got == b"".join(b"data: event %d\n\n" % i for i in range(5))


def test_zstd_contexts_are_reused_but_not_kept_big():
    from porch.policies import codings
    pool = codings.ZstdContexts(3)
    small = codings.ZstdEncoder(pool, 1000, False)
    small.finish(CONTENT[:1000])
    assert pool.idle == [small.cctx]
    again = codings.ZstdEncoder(pool, -1, False)  # takes the idle one
    assert again.cctx is small.cctx and pool.idle == []
    again.finish(CONTENT * 8)  # a long stream of unknown length: the context grew
    assert pool.idle == []


# -- the response hook, on heads ------------------------------------------------------------


class FakeContext:
    """What pipeline.Context offers the hook, for one request."""

    def __init__(self, upstream_status: int, accept: bytes = b"gzip", method: bytes = b"GET") -> None:
        from porch.http.model import Headers, RequestHead
        self.upstream_status = upstream_status
        self.method = method
        self.vars: dict = {}
        self.request = RequestHead(method, b"/", b"a.test", b"1.1", Headers.of([(b"Accept-Encoding", accept)]))
        self.headers = self.request.headers.flat


def hooked(ctx, status: int, fields: list[tuple[bytes, bytes]]):
    from porch.http.model import Headers, ResponseHead
    from porch.policies.compress import CompressConfig, build
    head = ResponseHead(status, Headers.of(fields))
    build(CompressConfig()).response(ctx, head)
    return list(head.headers.items())


def test_porchs_own_answers_never_take_a_coding_even_with_a_type():
    """A policy's Reply whose fields name a Content-Type (a static page, say) is Porch's
    own answer: its body passes no body hook, so it must not be announced as coded."""
    fields = [(b"Content-Type", b"text/html"), (b"Content-Length", b"5000")]
    ctx = FakeContext(upstream_status=0)
    assert hooked(ctx, 200, fields) == fields and ctx.vars == {}
    ctx = FakeContext(upstream_status=200)
    assert hooked(ctx, 200, fields) == [(b"Content-Type", b"text/html"), (b"Vary", b"Accept-Encoding"),
                                        (b"Content-Encoding", b"gzip")]
    assert "compress" in ctx.vars
