"""Ambiguous or malformed requests: 400, connection closed, nothing reaches the upstream.

Each case is a way for a front proxy and a back end to disagree about where a request
ends (request smuggling, RFC 9112 sections 6.1 and 6.3, 5.2 obs-fold, 5.1 whitespace;
RFC 9110 section 5.5 CR/LF/NUL in values).  Porch must refuse them outright.
"""

from __future__ import annotations

import socket

import pytest

from .helpers import ClosedBeforeResponse, Porch, RawConn, Upstream


@pytest.fixture(scope="module")
def proxy(module_procs, tmp_path_factory):
    up = Upstream(module_procs, tmp_path_factory.mktemp("up"))
    p = Porch(module_procs, tmp_path_factory.mktemp("porch"),
              f'[[site]]\nhosts = ["app.test"]\nproxy = "{up.url}"\n')
    return p, up


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"

CASES = {
    "content-length-and-transfer-encoding":
        b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 48\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "transfer-encoding-and-content-length":
        b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 3\r\n\r\n0\r\n\r\n",
    "two-different-content-lengths":
        b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\n"
        b"hello" + SMUGGLED,
    "content-length-list-differing":
        b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5, 50\r\n\r\nhello" + SMUGGLED,
    "content-length-with-sign":
        b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: +5\r\n\r\nhello",
    "transfer-encoding-gzip":
        b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: gzip\r\n\r\n" + SMUGGLED,
    "transfer-encoding-identity":
        b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: identity\r\n\r\n" + SMUGGLED,
    "transfer-encoding-chunked-not-last":
        b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
        b"0\r\n\r\n",
    "bad-chunk-size":
        b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nhello\r\n0\r\n\r\n",
    "space-before-colon":
        b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length : 5\r\n\r\nhello",
    "obs-fold":
        b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Folded: a\r\n b\r\n\r\n",
    "cr-in-header-value":
        b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Bad: a\rb\r\n\r\n",
    "nul-in-header-value":
        b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Bad: a\x00b\r\n\r\n",
    "bare-lf-in-header-value":
        b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Bad: a\nTransfer-Encoding: chunked\r\n\r\n",
    "http11-without-host":
        b"GET / HTTP/1.1\r\nUser-Agent: raw\r\n\r\n",
    "two-host-headers":
        b"GET / HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n\r\n",
    "request-line-http09":
        b"GET /\r\n\r\n",
    "request-line-garbage-version":
        b"GET / HTTQ/1.1\r\nHost: app.test\r\n\r\n",
    "request-line-extra-token":
        b"GET / HTTP/1.1 extra\r\nHost: app.test\r\n\r\n",
    "request-line-bad-method":
        b"G(T / HTTP/1.1\r\nHost: app.test\r\n\r\n",
}


@pytest.mark.parametrize("name", list(CASES))
def test_rejected_with_400_and_closed(proxy, name):
    p, up = proxy
    before = up.stats()["requests"]
    with RawConn(p.port, timeout=5) as c:
        c.send(CASES[name])
        try:
            r = c.read_response()
        except ClosedBeforeResponse:
            raise AssertionError("connection closed without a 400") from None
        except (socket.timeout, TimeoutError):
            raise AssertionError("no answer within 5 s") from None
        assert r.status == 400, f"{r.status} {r.body[:200]!r}"
        assert c.closed_by_peer(timeout=3), "connection left open after a 400"
    assert up.stats()["requests"] == before, up.stats()["targets"][-3:]


def test_well_formed_request_still_served(proxy):
    """The control: the same Porch answers a clean request, so the 400s above mean something."""
    p, up = proxy
    before = up.stats()["requests"]
    with RawConn(p.port) as c:
        c.send(b"POST /ok HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello")
        r = c.read_response()
    assert r.status == 200
    assert r.json()["body_length"] == 5
    assert up.stats()["requests"] == before + 1
