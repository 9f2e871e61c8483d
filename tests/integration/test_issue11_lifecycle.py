"""Connection lifecycle defects of issue 11 (items 4, 11, 17, 18, 19), each sent as the
reproduction over real sockets: HTTP/2 request lines that are not one, raw control
bytes in the error log, memory held by closed TLS connections, tracebacks when wss
tunnels close on reload, and what a drain that runs out logs.

Real processes: Porch (a local-CA or test-CA HTTPS site), the echo upstream
(upstreams.py), the `websockets` upstream (ws_upstream.py); raw h2 frames through
h2client.py, raw TLS sockets, `websockets` clients.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import time

import pytest
from websockets.exceptions import ConnectionClosed

from .h2client import H2Client
from .helpers import (ClosedBeforeResponse, RawConn, free_port, rss_kib, site, wait_for_port,
                      wait_until)
from .test_h2 import H2_ENGINES
from .test_websocket import WsUpstream, ws
from .tlscerts import TestCA

HOST = "app.test"


def https_porch(porch, sites: str, **keys):
    """Porch serving `sites` over HTTPS (local CA) on `p.https_port`, one worker."""
    keys.setdefault("https_port", free_port())
    keys.setdefault("tls", "internal")
    keys.setdefault("workers", 1)
    p = porch(sites, **keys)
    p.https_port = keys["https_port"]
    wait_for_port(p.https_port, p.managed, what="porch https")
    return p


def tls_site(proxy: str, extra: str = "") -> str:
    return f'[[site]]\nhosts = ["{HOST}"]\nproxy = "{proxy}"\nredirect_http = false\n{extra}'


# -- item 17: memory held after connections close -----------------------------------


def _short_tls_requests(port: int, count: int) -> None:
    """`count` connections, one after the other: TLS handshake, one request, close."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    request = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=HOST) as s:
                s.sendall(request)
                got = b""
                while chunk := s.recv(65536):
                    got += chunk
                assert got.startswith(b"HTTP/1.1 200 "), got[:100]


def test_closed_tls_connections_leave_no_memory_behind(porch, upstream):
    # Each ClientConnection formed a cycle with its parser that also held the TLS
    # machinery (SSLProtocol, SSLObject, two MemoryBIOs): ~0.28 MiB per closed
    # connection until a cyclic collection, which the worker runs rarely (gc threshold
    # 20,000).  Freed by reference counting, memory stays flat.
    up = upstream()
    p = https_porch(porch, tls_site(up.url))
    (worker,) = p.wait_workers(1)
    _short_tls_requests(p.https_port, 300)  # warm-up: caches, allocator arenas
    before = rss_kib(worker)
    _short_tls_requests(p.https_port, 2000)
    grown = rss_kib(worker) - before
    assert grown < 6 * 1024, f"worker RSS grew by {grown / 1024:.1f} MiB over 2,000 closed TLS connections"


# -- item 4: :method and :path that are not a request line ---------------------------


def _unchecked(client: H2Client) -> H2Client:
    """Let the h2 client send what it would refuse (the attacker's side)."""
    client.conn.config.validate_outbound_headers = False
    client.conn.config.normalize_outbound_headers = False
    return client


@pytest.mark.parametrize("method, path", [
    ("GET /be/x", "/be/h2methsp"),  # issue 11: reached the upstream as `GET /be/x /be/h2methsp`
    ("GET", "/be/a b"),
    ("GET", "/be/a\tb"),
    ("G\"T", "/be/quote"),
    ("GET", "be/no-slash"),
    ("GET", "*"),
])
@pytest.mark.parametrize("engine", H2_ENGINES)  # nghttp2 would reset these streams itself
def test_h2_method_and_path_must_make_a_request_line(porch, upstream, method, path, engine):
    up = upstream()
    p = https_porch(porch, tls_site(up.url), http2_engine=engine)
    with _unchecked(H2Client(p.https_port, HOST)) as c:
        bad = c.get(path, method=method)
        assert bad.status == 400 and bad.ended, bad
        good = c.get("/be/after")  # the same connection goes on
        assert good.status == 200, good
    stats = up.stats()
    assert stats["targets"] == ["GET /be/after"], stats["targets"]
    assert wait_until(lambda: ":path" in p.error_log_text() or ":method" in p.error_log_text(), timeout=3)
    assert ' 400 ' in p.access_log_lines(2)[0]


@pytest.mark.parametrize("engine", H2_ENGINES)
def test_h2_options_asterisk_is_a_request_line(porch, upstream, engine):
    # What target it becomes upstream is item 10's business; it is not refused here.
    up = upstream()
    p = https_porch(porch, tls_site(up.url), http2_engine=engine)
    with H2Client(p.https_port, HOST) as c:
        assert c.get("*", method="OPTIONS").status == 200
    assert [t.split()[0] for t in up.stats()["targets"]] == ["OPTIONS"]


@pytest.mark.parametrize("value", ["a\r\nX-Evil: 1", "a\nX-Evil: 1", "a\x00b"])
@pytest.mark.parametrize("engine", H2_ENGINES)  # nghttp2 checks by h2's rules (server/ngh2.pyx)
def test_h2_header_values_with_cr_lf_nul_never_reach_the_upstream(porch, upstream, value, engine):
    # h2 validates what clients send (RFC 9113 8.2.1); the connection ends with a
    # GOAWAY PROTOCOL_ERROR, and nothing of the request goes upstream.
    up = upstream()
    p = https_porch(porch, tls_site(up.url), http2_engine=engine)
    with _unchecked(H2Client(p.https_port, HOST)) as c:
        c.request("/be/inj", headers=[("x-inj", value)])
        assert c.pump(lambda: c.goaway is not None, timeout=5)
    assert c.goaway.error_code == 1  # PROTOCOL_ERROR
    assert up.stats()["requests"] == 0
    # item 11: the message quoting the value (h2's) is one line, its bytes escaped
    text = p.error_log_text(wait_for="illegal character")
    assert "Illegal character" in text
    _assert_one_line_each(p)


def _assert_one_line_each(p) -> None:
    """Every line of Porch's error log is a whole entry: nothing a client sent split it."""
    raw = p.error_log_path.read_bytes()
    assert b"\r" not in raw and b"\x00" not in raw, raw[-600:]
    for line in raw.decode("utf-8").splitlines():
        assert re.match(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[\w+\] \d+: ", line), line


# -- item 18: wss tunnels closed by a reload ------------------------------------------


def _wss_porch(porch, tmp_path, upstream_url: str, **keys):
    """Porch with app.test over HTTPS from a test CA's files (as test_websocket's wss)."""
    ca = TestCA(tmp_path)
    cert, key, _ = ca.leaf([HOST], "app")
    keys.setdefault("https_port", free_port())
    p = porch(f'[[site]]\nhosts = ["{HOST}"]\ntls = {{ cert = "{cert}", key = "{key}" }}\n'
              f'proxy = "{upstream_url}"\n', **keys)
    wait_for_port(keys["https_port"], p.managed, what="porch https")
    p.ws_scheme, p.ws_port = "wss", keys["https_port"]
    p.ssl = ssl.create_default_context(cafile=str(ca.ca_path))
    return p


TRACEBACK_SIGNS = ("Traceback", "Error calling", "returning true from eof_received", "RuntimeError")


def test_wss_tunnels_closed_by_a_reload_leave_no_traceback(porch, procs, tmp_path):
    # Issue 11: each wss tunnel open during a reload printed `Error calling
    # eof_received()` ... `peer.transport.write_eof()` `RuntimeError: ... closed=True`
    # and "returning true from eof_received() has no effect when using ssl" on stderr.
    wsup = WsUpstream(procs, tmp_path)
    p = _wss_porch(porch, tmp_path, wsup.url, shutdown_timeout="30s")
    p.wait_workers(1)
    mark = p.error_log_mark()

    async def tunnels() -> None:
        clients = [await ws(p, "/echo").__aenter__() for _ in range(30)]
        for i, c in enumerate(clients):
            await c.send(f"before {i}")
            assert await c.recv() == f"before {i}"
        r = await asyncio.to_thread(p.reload)
        assert r.returncode == 0, r.stdout + r.stderr
        for c in clients:  # the old worker closes them; each client sees its end
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(c.recv(), 10)
        async with ws(p, "/echo") as new:  # the new worker serves
            await new.send("after")
            assert await new.recv() == "after"

    asyncio.run(asyncio.wait_for(tunnels(), 60))
    # the old worker has finished (its lines are all written) before looking
    assert p.error_log_text(wait_for="worker stopping", since=mark)
    assert wait_until(lambda: len(p.workers()) == 1, timeout=10)
    _assert_no_traceback(p, mark)


def test_wss_client_close_notify_ends_the_tunnel_without_a_warning(porch, procs, tmp_path):
    # TLS has no half-close: after the client's close_notify the TLS transport
    # closes whatever eof_received answers, and answering True (to keep the other
    # way open, as over TCP) only made the event loop warn on stderr.
    wsup = WsUpstream(procs, tmp_path)
    p = _wss_porch(porch, tmp_path, wsup.url)
    p.wait_workers(1)
    mark = p.error_log_mark()
    raw = socket.create_connection(("127.0.0.1", p.ws_port), timeout=5)
    with p.ssl.wrap_socket(raw, server_hostname=HOST) as s:
        s.sendall(f"GET /echo HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\n"
                  "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 "), head
        s.unwrap()  # close_notify: done sending, still reading
    assert wait_until(lambda: wsup.stats()["open"] == 0, timeout=5)  # the tunnel ended
    assert p.access_log_lines(1)
    _assert_no_traceback(p, mark)


def _assert_no_traceback(p, mark: int) -> None:
    """Nothing on Porch's stderr or in its error log (from `mark`) looks like a traceback
    or an event loop's complaint."""
    stderr = p.managed.stderr_path.read_text(errors="replace")
    log = p.error_log_text(since=mark)
    for sign in TRACEBACK_SIGNS:
        assert sign not in stderr, stderr[-3000:]
        assert sign not in log, log[-3000:]


# -- item 19: what a drain that runs out logs -----------------------------------------


def _recv_until(conn: RawConn, marker: bytes) -> bytes:
    got = b""
    while marker not in got:
        data = conn.sock.recv(65536)
        assert data, f"closed; had {got[:300]!r}"
        got += data
    return got


@pytest.mark.parametrize("how", ["reload", "stop"])
def test_connections_cut_at_the_drain_timeout_are_logged_as_cut(porch, upstream, how):
    # Issue 11: a half-sent head was logged `499 "client closed the connection"` with
    # an empty method, a response cut short as a plain 200, and the error log said
    # nothing.
    up = upstream()
    p = https_porch(porch, tls_site(up.url), drain_timeout="1s", shutdown_timeout="1s",
                    access_log_format="json")
    p.wait_workers(1)
    slow = RawConn(p.port, timeout=15)  # its upstream answers after the drain timeout
    slow.send(f"GET /slow?delay=20 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    events = RawConn(p.port, timeout=15)  # a response under way
    events.send(f"GET /events?count=1000&interval=0.2 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    assert _recv_until(events, b"data: ").startswith(b"HTTP/1.1 200 ")
    half = RawConn(p.port, timeout=15)  # a head never finished
    half.send(b"POST /half HTTP/1.1\r\nHost: app.te")
    h2 = H2Client(p.https_port, HOST, timeout=15)  # an HTTP/2 stream waiting for its upstream
    sid = h2.request("/slow?delay=20")
    assert wait_until(lambda: up.stats()["requests"] >= 3, timeout=5)
    mark = p.error_log_mark()
    if how == "reload":
        assert p.reload().returncode == 0
    else:
        p.signal()  # SIGTERM: the same drain, for shutdown_timeout
    t0 = time.monotonic()
    for conn in (slow, half):
        with pytest.raises(ClosedBeforeResponse):
            conn.read_response()
    events.read_until_closed()
    assert h2.pump(lambda: h2.closed or h2.streams[sid].done, timeout=10)
    assert time.monotonic() - t0 < 6
    for conn in (slow, events, half, h2):
        conn.close()
    text = p.error_log_text(wait_for="drain timeout", since=mark, timeout=10)
    assert re.search(r"\[warn\] \d+: drain timeout: 4 connection\(s\) still open after 1s cut, "
                     r"4 request\(s\) unfinished", text), text
    lines = _json_lines(p, 4)
    got = sorted((r["method"], r["target"], r["protocol"], r["status"], r["error"]) for r in lines)
    assert got == [
        ("GET", "/events?count=1000&interval=0.2", "HTTP/1.1", 200, "internal: drain timeout"),
        ("GET", "/slow?delay=20", "HTTP/1.1", 444, "internal: drain timeout"),
        ("GET", "/slow?delay=20", "HTTP/2.0", 444, "internal: drain timeout"),
        ("POST", "/half", "HTTP/1.1", 444, "internal: drain timeout"),
    ], lines


def _json_lines(p, count: int) -> list[dict]:
    return [json.loads(line) for line in p.access_log_lines(count, timeout=10)]
