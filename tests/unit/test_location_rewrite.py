"""policies/location_rewrite.py on a real Exchange over fake transports (the harness
of test_pipeline_exchange.py), HTTP/1.1 and HTTP/2: the upstream's own URLs in
Location and Refresh become the client's, other URLs pass as they are."""

from __future__ import annotations

import pytest

from porch.policies.location_rewrite import LocationRewrite
from test_pipeline_exchange import h2harness, harness  # noqa: F401 (fixtures)


def _redirect(location: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\n" + extra
            + b"Content-Length: 0\r\n\r\n")


@pytest.mark.parametrize(("sent", "got"), [
    (b"http://127.0.0.1:9/login?next=/a", b"http://app.test/login?next=/a"),  # the proxy URL
    (b"HTTP://127.0.0.1:9/x", b"http://app.test/x"),  # scheme and host in any case
    (b"http://app.test/x", b"http://app.test/x"),  # the Host it was sent: already the client's
    (b"https://elsewhere.example/x", b"https://elsewhere.example/x"),  # not the upstream's
    (b"/relative", b"/relative"),
])
def test_http1_location(harness, sent, got):
    h = harness()
    h.request()
    h.respond(_redirect(sent))
    assert b"\r\nLocation: " + got + b"\r\n" in bytes(h.ct.data)


def test_http1_refresh_url_is_rewritten_too(harness):
    h = harness()
    h.request()
    h.respond(b"HTTP/1.1 200 OK\r\nRefresh: 5; url=http://127.0.0.1:9/next\r\nContent-Length: 0\r\n\r\n")
    assert b"\r\nRefresh: 5; url=http://app.test/next\r\n" in bytes(h.ct.data)


def test_http2_location(h2harness):
    h = h2harness()
    sid = h.get("/a")
    h.respond(_redirect(b"http://127.0.0.1:9/b"))
    h.exchange()
    headers, _ = h.response(sid)
    assert headers[b":status"] == b"302" and headers[b"location"] == b"https://app.test/b"


class Ctx:
    """The Context fields the policy reads."""
    peer_trusted = False
    xf_host = xf_proto = None
    scheme = b"https"
    host_header = b"dav.example.org"
    upstream_peer = ("http", "127.0.0.1", 5232)


@pytest.mark.parametrize(("sent", "got"), [
    (b"/alice/", b"/radicale/alice/"),  # path-absolute: the prefix goes in front
    (b"/radicale/alice/", b"/radicale/alice/"),  # it has it already (X-Script-Name)
    (b"http://localhost:5232/alice/", b"https://dav.example.org/radicale/alice/"),  # a proxy URL
    (b"http://127.0.0.1:5232/alice/", b"https://dav.example.org/radicale/alice/"),  # the address reached
    (b"http://127.0.0.1:5233/alice/", b"http://127.0.0.1:5233/alice/"),  # another port: not it
    (b"//cdn.example/x", b"//cdn.example/x"),  # scheme-relative: another host
])
def test_prefix_route(sent, got):
    policy = LocationRewrite(b"/radicale", b"", (b"http://localhost:5232",), None)
    assert policy.location(Ctx(), sent) == got


def test_trusted_proxy_says_the_clients_host_and_scheme():
    ctx = Ctx()
    ctx.peer_trusted, ctx.xf_host, ctx.xf_proto = True, b"public.example", b"https"
    policy = LocationRewrite(None, b"/app", (b"http://localhost:5232",), None)
    # the proxy URL's path (/app) is the upstream's: the client does not see it
    assert policy.location(ctx, b"http://localhost:5232/app/x") == b"https://public.example/x"
