"""compress (policies/compress.py) with real peers: curl --compressed, raw HTTP/1.1 and
HTTP/2 clients whose bodies Python's own decoders (zlib, brotli, zstandard) read back,
streams coded as they pass, the responses never to touch, and nginx's gzip as the
reference for which responses get compressed."""

from __future__ import annotations

import zlib

import brotli
import pytest
import zstandard

from .h2client import H2Client
from .helpers import RawConn, curl_fetch, get, resolve
from .shaped import Shaped, body, start_nginx
from .test_h2 import h2porch  # noqa: F401  (a fixture: both HTTP/2 engines)

HOST = "app.test"
BROWSER = "gzip, deflate, br, zstd"  # what Chrome and Firefox send


def decode(coding: str | None, data: bytes) -> bytes:
    if coding == "gzip":
        return zlib.decompress(data, 31)
    if coding == "br":
        return brotli.decompress(data)
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    assert coding is None, coding
    return data


class Incremental:
    """Decodes a coded body piece by piece, as a browser does while it arrives."""

    def __init__(self, coding: str) -> None:
        self.d = {"gzip": lambda: zlib.decompressobj(31), "br": brotli.Decompressor,
                  "zstd": lambda: zstandard.ZstdDecompressor().decompressobj()}[coding]()
        self.coding = coding
        self.out = bytearray()

    def feed(self, data: bytes) -> bytes:
        self.out += self.d.process(data) if self.coding == "br" else self.d.decompress(data)
        return bytes(self.out)


@pytest.fixture
def shaped():
    s = Shaped()
    yield s
    s.close()


def site(up: str, extra: str = "compress = true", tls: str = 'tls = "off"') -> str:
    return f'[[site]]\nhosts = ["{HOST}"]\n{tls}\nredirect_http = false\nproxy = "{up}"\n{extra}\n'


def fetch(port: int, path: str, accept: str | None = BROWSER, method: str = "GET", version: str = "HTTP/1.1"):
    extra = f"Accept-Encoding: {accept}\r\n" if accept is not None else ""
    with RawConn(port, timeout=10) as c:
        c.send(f"{method} {path} {version}\r\nHost: {HOST}\r\n{extra}\r\n".encode())
        if version == "HTTP/1.0":
            raw = c.read_until_closed()
            head, _, rest = raw.partition(b"\r\n\r\n")
            c.buf = head + b"\r\n\r\n"
            r = c.read_response(head_request=True)
            r.body = rest
            return r
        return c.read_response(head_request=method == "HEAD")


# -- the codings, over HTTP/1.1 --------------------------------------------------------


@pytest.mark.parametrize("accept, coding", [
    (BROWSER, "zstd"), ("gzip", "gzip"), ("br", "br"), ("zstd", "zstd"), ("x-gzip", "gzip"),
    ("gzip;q=0.5, br;q=0.8", "br"), ("zstd;q=0, *", "br"), ("br;q=0, zstd;q=0, *;q=0.1", "gzip"),
    ("gzip, identity;q=0", "gzip"), ("*;q=0", None), ("gzip;q=0", None), ("identity", None),
    (None, None), ("deflate", None), ("gzip;q=0.4, identity;q=0.9", None),
])
def test_accept_encoding_chooses_the_coding_python_decodes(porch, shaped, accept, coding):
    p = porch(site(shaped.url))
    r = fetch(p.port, '/x?size=50k&h=ETag:"v1"', accept)
    assert r.status == 200
    assert r.header("Content-Encoding") == coding
    assert decode(coding, r.body) == body(50 * 1024)
    assert r.header("Vary") == "Accept-Encoding"  # compressed or not: a cache must tell them apart
    if coding:
        assert r.header("Content-Length") is None and r.header("Transfer-Encoding") == "chunked"
        assert r.header("ETag") == 'W/"v1"'
        assert len(r.body) < 50 * 1024 / 4
    else:
        assert r.header("Content-Length") == str(50 * 1024) and r.header("ETag") == '"v1"'


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_every_upstream_framing_is_coded_whole(porch, shaped, framing):
    p = porch(site(shaped.url))
    for coding in ("gzip", "br", "zstd"):
        r = fetch(p.port, f"/x?size=300k&parts=7&framing={framing}", coding)
        assert r.header("Content-Encoding") == coding
        assert decode(coding, r.body) == body(300 * 1024)


def test_keep_alive_goes_on_after_a_compressed_response(porch, shaped):
    p = porch(site(shaped.url))
    with RawConn(p.port, timeout=10) as c:
        for i, coding in enumerate(("gzip", "br", "zstd", None, "gzip")):
            accept = f"Accept-Encoding: {coding}\r\n" if coding else ""
            c.send(get(f"/x?size={3 + i}k", HOST, accept))
            r = c.read_response()
            assert r.header("Content-Encoding") == coding
            assert decode(coding, r.body) == body((3 + i) * 1024)


def test_an_http10_client_gets_it_until_the_close(porch, shaped):
    p = porch(site(shaped.url))
    r = fetch(p.port, "/x?size=20k", "gzip", version="HTTP/1.0")
    assert r.header("Content-Encoding") == "gzip" and r.header("Transfer-Encoding") is None
    assert r.header("Content-Length") is None
    assert decode("gzip", r.body) == body(20 * 1024)


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_curl_compressed_over_http1(porch, shaped, coding):
    p = porch(site(shaped.url))
    r = curl_fetch(f"http://{HOST}:{p.port}/page?type=text/html;%20charset=utf-8&size=80k",
                   "--compressed", "-H", f"Accept-Encoding: {coding}", *resolve(HOST, p.port))
    assert r.rc == 0, r.stderr
    assert r.header("content-encoding") == coding
    assert r.body == body(80 * 1024)  # curl decoded it


# -- HTTP/2 ------------------------------------------------------------------------------


def test_curl_compressed_over_http2(h2porch, shaped):
    p = h2porch(site(shaped.url, tls='tls = "internal"'))
    for coding in ("gzip", "br", "zstd"):
        r = curl_fetch(f"https://{HOST}:{p.https_port}/x?size=90k&framing=chunked", "--http2", "-k",
                       "--compressed", "-H", f"Accept-Encoding: {coding}", *resolve(HOST, p.https_port))
        assert r.rc == 0, r.stderr
        assert r.header("content-encoding") == coding and r.header("content-length") is None
        assert r.body == body(90 * 1024)


def test_http2_bodies_decode_and_heads_say_so(h2porch, shaped):
    p = h2porch(site(shaped.url, tls='tls = "internal"'))
    with H2Client(p.https_port) as c:
        r = c.get('/x?size=64k&h=ETag:"e"&h=Vary:Origin', headers=[("accept-encoding", BROWSER)])
        assert r.status == 200 and r.header(b"content-encoding") == b"zstd"
        assert r.header(b"content-length") is None
        assert r.header(b"vary") == b"Origin, Accept-Encoding" and r.header(b"etag") == b'W/"e"'
        assert decode("zstd", bytes(r.data)) == body(64 * 1024)
        r = c.get("/x?size=64k", method="HEAD", headers=[("accept-encoding", BROWSER)])
        assert r.header(b"content-encoding") is None and r.header(b"content-length") == b"65536"
        r = c.get("/x?size=64k&type=image/png", headers=[("accept-encoding", "gzip")])
        assert r.header(b"content-encoding") is None and bytes(r.data) == body(64 * 1024)


# -- streams: coded as they pass ---------------------------------------------------------


def read_chunk(c: RawConn) -> bytes:
    """One chunk of a chunked body (b"" at its end)."""
    size = int(c._read_until(b"\r\n").strip(), 16)
    if size == 0:
        c._read_until(b"\r\n")
        return b""
    data = c._read_exact(size)
    c._read_exact(2)
    return data


def open_stream(port: int, path: str, coding: str) -> RawConn:
    c = RawConn(port, timeout=15)
    c.send(get(path, HOST, f"Accept-Encoding: {coding}\r\n"))
    head = c.read_response(head_request=True)
    assert head.header("Content-Encoding") == coding and head.header("Transfer-Encoding") == "chunked"
    return c


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_a_large_body_reaches_the_client_before_the_upstream_finished(porch, shaped, coding):
    """4 MiB with Content-Length: the upstream sends half, then waits.  The client must
    already decode most of that half: nothing holds the body back until its end."""
    p = porch(site(shaped.url))
    size = 4 * 1024 * 1024
    with open_stream(p.port, f"/big?size=4M&parts=2&gate=big-{coding}", coding) as c:
        assert shaped.wait_gate(f"big-{coding}")
        decoder = Incremental(coding)
        while len(decoder.out) < size // 2 - 512 * 1024:  # all but what the encoder may hold
            data = read_chunk(c)
            assert data, "the body ended before the upstream sent its second half"
            decoder.feed(data)
        assert bytes(decoder.out) == body(size)[:len(decoder.out)]
        shaped.release(f"big-{coding}")  # only now the rest
        while data := read_chunk(c):
            decoder.feed(data)
    assert bytes(decoder.out) == body(size)


@pytest.mark.parametrize("query", [
    "type=text/event-stream&framing=length",  # events: flushed, whatever the framing
    "type=application/json&framing=chunked",  # unknown length: the upstream sets the pace
], ids=["events", "unknown-length"])
def test_each_piece_is_flushed_to_the_client_as_it_comes(porch, shaped, query):
    p = porch(site(shaped.url))
    content = body(3000)
    for coding in ("gzip", "br", "zstd"):
        gate = f"ev-{coding}-{query[5:9]}"
        with open_stream(p.port, f"/events?{query}&size=3000&parts=3&gate={gate}", coding) as c:
            decoder = Incremental(coding)
            for n in range(3):
                if n < 2:
                    assert shaped.wait_gate(f"{gate}{n}")
                # the piece decodes whole, while the upstream waits for us to release it
                while len(decoder.out) < 1000 * (n + 1):
                    decoder.feed(read_chunk(c))
                assert bytes(decoder.out) == content[:1000 * (n + 1)]
                if n < 2:
                    shaped.release(f"{gate}{n}")
            while data := read_chunk(c):
                decoder.feed(data)
            assert bytes(decoder.out) == content


def test_http2_stream_flushes_events(h2porch, shaped):
    p = h2porch(site(shaped.url, tls='tls = "internal"'))
    content = body(3000)
    with H2Client(p.https_port, timeout=10) as c:
        sid = c.request("/sse?type=text/event-stream&size=3000&parts=3&gate=h2ev",
                        headers=[("accept-encoding", "br")])
        stream = c.streams[sid]
        decoder = Incremental("br")
        fed = 0
        for n in range(3):
            def decoded(n=n) -> bool:
                nonlocal fed
                decoder.feed(bytes(stream.data[fed:]))
                fed = len(stream.data)
                return len(decoder.out) >= 1000 * (n + 1)
            assert c.pump(decoded, timeout=10), f"piece {n} not decoded: {len(decoder.out)} bytes"
            assert bytes(decoder.out) == content[:1000 * (n + 1)]
            if n < 2:
                shaped.release(f"h2ev{n}")
        c.response(sid)
        assert stream.header(b"content-encoding") == b"br"


# -- what is never compressed -------------------------------------------------------------


@pytest.mark.parametrize("path, method", [
    ("/x?size=5k&h=Content-Encoding:gzip", "GET"),  # coded by the app already
    ("/x?size=5k&status=206&h=Content-Range:bytes%200-5119/9999", "GET"),
    ("/x?size=5k&h=Cache-Control:public,%20no-transform", "GET"),
    ("/x?size=5k&type=image/png", "GET"),
    ("/x?size=5k&type=none", "GET"),
    ("/x?size=255", "GET"),  # under min_length
    ("/x?size=5k&h=Content-Digest:sha-256=:AAAA:", "GET"),
    ("/x?status=204", "GET"),
    ("/x?status=304&h=ETag:%22v%22", "GET"),
    ("/x?size=5k", "HEAD"),
], ids=["content-encoding", "206", "no-transform", "png", "no-type", "short", "digest", "204", "304", "head"])
def test_never_compressed(porch, shaped, path, method):
    p = porch(site(shaped.url))
    direct = fetch(shaped.port, path, BROWSER, method)
    r = fetch(p.port, path, BROWSER, method)
    assert r.status == direct.status
    assert r.header("Content-Encoding") == direct.header("Content-Encoding")
    assert r.header("Content-Length") == direct.header("Content-Length")
    assert r.header("ETag") == direct.header("ETag")
    assert r.body == direct.body


def test_head_and_short_bodies_vary_as_the_get_would(porch, shaped):
    p = porch(site(shaped.url))
    assert fetch(p.port, "/x?size=5k", BROWSER, "HEAD").header("Vary") == "Accept-Encoding"
    assert fetch(p.port, "/x?size=100", BROWSER).header("Vary") is None  # (never compressed: as nginx)


def test_porchs_own_answers_are_left_alone(porch, shaped):
    p = porch(f'[[site]]\nhosts = ["{HOST}"]\ncompress = true\n  [[site.route]]\n  path = "/app/"\n'
              f'  proxy = "{shaped.url}"\n')
    r = fetch(p.port, "/elsewhere", BROWSER)
    assert r.status == 404 and r.header("Content-Encoding") is None and r.header("Vary") is None
    assert r.header("Content-Length") == str(len(r.body))
    assert fetch(p.port, "/app/x?size=5k", BROWSER).header("Content-Encoding") == "zstd"


def test_vary_merged_and_etags(porch, shaped):
    p = porch(site(shaped.url))
    r = fetch(p.port, '/x?size=5k&h=Vary:Origin&h=ETag:W/"w"&h=Accept-Ranges:bytes', "gzip")
    assert r.header_all("Vary") == ["Origin, Accept-Encoding"] and r.header("ETag") == 'W/"w"'
    assert r.header("Accept-Ranges") is None  # ranges of the uncoded body: not of this one
    r = fetch(p.port, "/x?size=5k&h=Vary:accept-encoding,%20Cookie&h=ETag:bare", "gzip")
    assert r.header_all("Vary") == ["accept-encoding, Cookie"] and r.header("ETag") is None


def test_route_settings(porch, shaped):
    p = porch(site(shaped.url, 'compress = { algorithms = ["gzip", "br"], types = ["application/octet-stream"],'
                               ' min_length = "1k", level = { gzip = 9 } }'))
    r = fetch(p.port, "/x?size=5k&type=application/octet-stream", BROWSER)
    assert r.header("Content-Encoding") == "gzip"  # the first of algorithms: zstd is not offered
    assert decode("gzip", r.body) == body(5 * 1024)
    assert fetch(p.port, "/x?size=1000", BROWSER).header("Content-Encoding") is None
    assert fetch(p.port, "/x?size=1024", "br").header("Content-Encoding") == "br"


# -- nginx as the reference -------------------------------------------------------------

# (query, compressed?) for `gzip on; gzip_types ...; gzip_min_length 256; gzip_proxied any`
NGINX_TABLE = [
    ("size=5k&type=text/html", True),
    ("size=5k&type=text/html;%20charset=utf-8", True),
    ("size=5k&type=application/json", True),
    ("size=5k&type=image/svg%2Bxml", True),
    ("size=5k&type=image/png", False),
    ("size=5k&type=none", False),
    ("size=255&type=text/plain", False),
    ("size=256&type=text/plain", True),  # min_length is "at least", as nginx's
    ("size=100&type=text/plain&framing=chunked", True),  # unknown length: compressed
    ("size=5k&h=Content-Encoding:br", False),
    ("size=5k&status=404", True),
    ("size=5k&status=206&h=Content-Range:bytes%200-5119/9999", False),
    ("status=204", False),
    ("status=304", False),
]
NGINX_TYPES = "text/plain application/json image/svg+xml"


def test_same_decisions_as_nginx_gzip(porch, procs, tmp_path, shaped):
    ngx = start_nginx(procs, tmp_path, f"location / {{ proxy_pass {shaped.url}; proxy_http_version 1.1;"
                                       f" gzip on; gzip_types {NGINX_TYPES}; gzip_min_length 256;"
                                       " gzip_proxied any; gzip_vary on; }")
    types = ", ".join(f'"{t}"' for t in NGINX_TYPES.split())
    p = porch(site(shaped.url, f'compress = {{ algorithms = ["gzip"], types = [{types}], min_length = 256 }}'))
    for query, compressed in NGINX_TABLE:
        theirs, ours = fetch(ngx, f"/t?{query}", "gzip"), fetch(p.port, f"/t?{query}", "gzip")
        assert (theirs.header("Content-Encoding") == "gzip") is compressed, (query, theirs.headers)
        assert ours.header("Content-Encoding") == theirs.header("Content-Encoding"), query
        assert ours.header("Vary") == theirs.header("Vary"), query
        if ours.header("Content-Encoding") == "gzip":
            assert decode("gzip", ours.body) == decode("gzip", theirs.body), query
        else:
            assert ours.body == theirs.body, query
    # Where Porch differs on purpose (README): a 201 or a 500 with a body is compressed
    # too (nginx: 200, 403, 404 only), and JSON's +json types without being listed
    for query in ("size=5k&status=201", "size=5k&status=500", "size=5k&type=application/ld%2Bjson"):
        assert fetch(ngx, f"/t?{query}", "gzip").header("Content-Encoding") is None
        assert fetch(p.port, f"/t?{query}", "gzip").header("Content-Encoding") == "gzip"
