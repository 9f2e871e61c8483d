"""Issue 11, the request side: what a client sends that Porch must refuse, rewrite or
stop at.  Raw bytes over real sockets, the echo upstream (upstreams.py), a real
Radicale for the identity-header case, HTTP/2 through h2client.py."""

from __future__ import annotations

import json
import time

import pytest

from .h2client import H2Client
from .helpers import PYTHON, Porch, RawConn, Upstream, fd_count, free_port, wait_for_port, wait_until
from .test_h2 import H2_ENGINES

HIDDEN = b"POST /hidden HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello"


@pytest.fixture(scope="module")
def proxy(module_procs, tmp_path_factory):
    up = Upstream(module_procs, tmp_path_factory.mktemp("up"))
    other = Upstream(module_procs, tmp_path_factory.mktemp("internal"))
    sites = (f'[[site]]\nhosts = ["app.test", "public.test"]\nproxy = "{up.url}"\n'
             f'[[site.route]]\npath = "/traced/"\nallow_trace = true\n'
             f'[[site]]\nhosts = ["internal.test"]\nproxy = "{other.url}"\n')
    p = Porch(module_procs, tmp_path_factory.mktemp("porch"), sites, error_log_level="debug")
    return p, up, other


def seen(up: Upstream) -> list[str]:
    return up.stats()["targets"]


# -- item 1 (and 8's 501): nothing after a response that closes the connection -----------

REFUSED = {
    "missing-host": (b"GET /a HTTP/1.1\r\n\r\n", 400),
    "duplicate-host": (b"GET /a HTTP/1.1\r\nHost: app.test\r\nHost: app.test\r\n\r\n", 400),
    "invalid-host": (b"GET /a HTTP/1.1\r\nHost: a b/c\r\n\r\n", 400),
    "dot-dot-above-root": (b"GET /../etc HTTP/1.1\r\nHost: app.test\r\n\r\n", 400),
    "get-asterisk": (b"GET * HTTP/1.1\r\nHost: app.test\r\n\r\n", 400),
    "te-gzip-chunked": (b"POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                        b"0\r\n\r\n", 501),
    "head-over-16k": (b"GET /a HTTP/1.1\r\nHost: app.test\r\nX-Big: " + b"b" * 17000 + b"\r\n\r\n", 431),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_request_pipelined_after_a_refusal_is_never_parsed(proxy, name):
    p, up, _ = proxy
    head, status = REFUSED[name]
    with RawConn(p.port, timeout=5) as c:
        c.send(head + HIDDEN)
        r = c.read_response()
        assert r.status == status, (r.status, r.body)
        assert r.header("connection") == "close"
        assert c.closed_by_peer(timeout=6), "connection left open after the refusal"
        assert c.buf == b"", f"a second response: {c.buf[:200]!r}"
    assert "POST /hidden" not in seen(up)
    assert not [ln for ln in p.access_log_lines(1) if "/hidden" in ln]
    assert "Cannot call write()" not in p.managed.output()


def test_no_descriptor_left_by_a_hundred_refused_pipelines(proxy):
    p, up, _ = proxy
    (worker,) = p.workers()
    before = fd_count(worker)
    conns = [RawConn(p.port, timeout=10) for _ in range(100)]
    try:
        for c in conns:
            c.send(b"GET /a HTTP/1.1\r\n\r\n" + HIDDEN)
        for c in conns:
            assert c.read_response().status == 400
        for c in conns:
            assert c.closed_by_peer(timeout=10), "connection left open after the 400"
    finally:
        for c in conns:
            c.close()
    assert wait_until(lambda: fd_count(worker) <= before, timeout=10), (before, fd_count(worker))
    assert "POST /hidden" not in seen(up)
    assert "Cannot call write()" not in p.managed.output()


def test_http10_with_transfer_encoding_is_answered_then_closed(proxy):
    p, up, _ = proxy
    with RawConn(p.port, timeout=5) as c:
        c.send(b"POST /te10 HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + HIDDEN)
        r = c.read_response()
        assert r.status == 200
        assert r.json()["body_length"] == 5
        assert r.header("connection") == "close"
        assert c.closed_by_peer(timeout=6)
    assert "POST /hidden" not in seen(up)


# -- item 3: header names with underscores ------------------------------------------------

SPOOF = [("X_Remote_User", "alice"), ("x-remote_USER", "bob"), ("X_Forwarded_For", "6.6.6.6"),
         ("X-Real_IP", "6.6.6.6"), ("Transfer_Encoding", "chunked"), ("Remote_User", "carol")]


def upstream_headers(port: int, extra: list[tuple[str, str]]) -> dict[str, str]:
    lines = "".join(f"{k}: {v}\r\n" for k, v in extra).encode()
    with RawConn(port) as c:
        c.send(b"GET /hdr HTTP/1.1\r\nHost: app.test\r\n" + lines + b"\r\n")
        r = c.read_response()
    assert r.status == 200
    return {k.lower(): v for k, v in r.json()["headers"]}


def test_underscore_names_dropped_and_logged_at_debug(proxy):
    p, _, _ = proxy
    mark = p.error_log_mark()
    got = upstream_headers(p.port, [*SPOOF, ("My_Header", "1"), ("X-Plain", "2")])
    assert got["x-plain"] == "2"
    assert not [k for k in got if "_" in k], got
    assert got["x-forwarded-for"] == "127.0.0.1"
    assert "x-remote-user" not in got
    assert "[debug]" in p.error_log_text(wait_for="My_Header", since=mark)


def test_underscores_in_headers_passes_all_but_protected_names(procs, tmp_path):
    (tmp_path / "up").mkdir()
    up = Upstream(procs, tmp_path / "up")
    p = Porch(procs, tmp_path, f'[[site]]\nhosts = ["app.test"]\nproxy = "{up.url}"\n',
              underscores_in_headers=True)
    got = upstream_headers(p.port, [*SPOOF, ("My_Header", "1")])
    assert got["my_header"] == "1"
    assert [k for k in got if "_" in k] == ["my_header"], got
    assert got["x-forwarded-for"] == "127.0.0.1"


@pytest.fixture(params=H2_ENGINES)  # both HTTP/2 engines, as test_h2.py
def h2proxy(procs, tmp_path, request):
    up = Upstream(procs, tmp_path)
    https = free_port()
    p = Porch(procs, tmp_path, f'[[site]]\nhosts = ["app.test"]\nproxy = "{up.url}"\nredirect_http = false\n'
              '[[site.route]]\npath = "/traced/"\nallow_trace = true\n', tls="internal", https_port=https,
              http2_engine=request.param)
    wait_for_port(https, p.managed, what="porch https")
    return https, up


def test_http2_underscore_names_and_trace(h2proxy):
    https, up = h2proxy
    with H2Client(https) as c:
        r = c.get("/hdr", headers=[("x_remote_user", "alice"), ("my_header", "1"), ("x-plain", "2")])
        got = {k.lower(): v for k, v in json.loads(bytes(r.data))["headers"]}
        assert got["x-plain"] == "2" and "x-remote-user" not in got
        assert not [k for k in got if "_" in k], got
        trace = c.get("/t", method="TRACE")
        assert trace.status == 405 and trace.header(b"allow")
        assert c.get("/traced/x", method="TRACE").status == 200
    assert "TRACE /t" not in seen(up) and "TRACE /traced/x" in seen(up)


RADICALE_PROPFIND = (b"PROPFIND /alice/ HTTP/1.1\r\nHost: %s\r\nDepth: 0\r\nX_Remote_User: alice\r\n"
                     b"Content-Length: 0\r\nConnection: close\r\n\r\n")


def test_radicale_does_not_take_x_remote_user_with_underscores_from_a_client(procs, tmp_path):
    """Radicale with auth type http_x_remote_user trusts HTTP_X_REMOTE_USER, which its
    wsgiref server fills from X_Remote_User too: behind Porch, no client can be alice."""
    port = free_port()
    conf = tmp_path / "radicale.conf"
    conf.write_text(f"[server]\nhosts = 127.0.0.1:{port}\n[auth]\ntype = http_x_remote_user\n"
                    f"[rights]\ntype = owner_only\n[storage]\nfilesystem_folder = {tmp_path / 'col'}\n")
    server = procs.start([PYTHON, "-m", "radicale", "--config", str(conf)], cwd=tmp_path, name="radicale")
    wait_for_port(port, server, what="radicale")
    with RawConn(port) as c:  # the control: straight to Radicale, the header makes alice
        c.send(RADICALE_PROPFIND % b"127.0.0.1")
        assert c.read_response().status == 207
    (tmp_path / "porch").mkdir()
    p = Porch(procs, tmp_path / "porch", f'[[site]]\nhosts = ["dav.test"]\nproxy = "http://127.0.0.1:{port}"\n')
    with RawConn(p.port) as c:
        c.send(RADICALE_PROPFIND % b"dav.test")
        r = c.read_response()
    assert r.status in (401, 403), (r.status, r.body[:300])


# -- item 5: absolute-form targets -----------------------------------------------------------

def test_absolute_form_authority_replaces_host_everywhere(proxy):
    p, up, other = proxy
    with RawConn(p.port) as c:
        c.send(b"GET http://internal.test/abs-1 HTTP/1.1\r\nHost: public.test\r\n\r\n")
        r = c.read_response()
    assert r.status == 200
    got = {k.lower(): v for k, v in r.json()["headers"]}
    assert (got["host"], got["x-forwarded-host"]) == ("internal.test", "internal.test")
    assert "GET /abs-1" in seen(other) and "GET /abs-1" not in seen(up)


# -- items 9 and 10 -------------------------------------------------------------------------

def test_trace_is_405_unless_the_route_allows_it(proxy):
    p, up, _ = proxy
    with RawConn(p.port) as c:
        c.send(b"TRACE /t HTTP/1.1\r\nHost: app.test\r\nCookie: s=1\r\n\r\n"
               b"TRACE /traced/ok HTTP/1.1\r\nHost: app.test\r\n\r\n")
        r = c.read_response()
        assert r.status == 405
        assert "GET" in r.header("allow") and "TRACE" not in r.header("allow")
        assert c.read_response().status == 200  # kept alive; this route allows it
    assert "TRACE /t" not in seen(up) and "TRACE /traced/ok" in seen(up)


def test_options_asterisk_goes_upstream_as_asterisk(proxy):
    p, up, _ = proxy
    with RawConn(p.port) as c:
        c.send(b"OPTIONS * HTTP/1.1\r\nHost: app.test\r\n\r\n")
        assert c.read_response().status == 200
    assert seen(up)[-1] == "OPTIONS *"


@pytest.mark.parametrize("split", [False, True])
def test_chunk_size_over_2_53_is_400(proxy, split):
    p, up, _ = proxy
    head = b"POST /huge HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    with RawConn(p.port) as c:
        if split:  # the size line across two reads
            c.send(head + b"5\r\nhello\r\nffffff")
            time.sleep(0.3)  # two TCP segments, two reads (nothing to wait for)
            c.send(b"ffffffffff\r\nabc")
        else:
            c.send(head + b"ffffffffffffffff\r\nabc")
        r = c.read_response()
        assert r.status == 400, (r.status, r.body)
        assert c.closed_by_peer(timeout=6)


def test_chunked_body_whose_lines_look_like_sizes_is_fine(proxy):
    """The control: hex lines in a chunk's data are data, not sizes."""
    p, _, _ = proxy
    data = b"ffffffffffffffff\r\n" * 4
    with RawConn(p.port) as c:
        c.send(b"POST /hex HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n" % len(data) + data + b"\r\n" + b"3\r\nabc")
        c.send(b"\r\n0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200 and r.json()["body_length"] == len(data) + 3
