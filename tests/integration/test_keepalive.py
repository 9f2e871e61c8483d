"""Persistent connections: client keep-alive, pipelining, upstream pool reuse and stale retry."""

from __future__ import annotations

import socket
import time

from .helpers import RawConn, curl_fetch, get


def site(up_url: str) -> str:
    return f'[[site]]\nhosts = ["app.test"]\nproxy = "{up_url}"\n'


def test_http11_keepalive_serves_several_requests(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    with RawConn(p.port) as c:
        conn_ids = []
        for i in range(4):
            c.send(get(f"/ka/{i}"))
            r = c.read_response()
            assert r.status == 200
            assert r.json()["path"] == f"/ka/{i}"
            assert "close" not in (r.header("Connection") or "").lower()
            conn_ids.append(r.json()["conn_id"])
    assert len(set(conn_ids)) == 1, f"upstream connections not reused: {conn_ids}"


def test_http10_keepalive_when_asked(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    with RawConn(p.port) as c:
        for i in range(3):
            c.send(get(f"/old/{i}", version="HTTP/1.0", extra="Connection: keep-alive\r\n"))
            r = c.read_response()
            assert r.status == 200
            assert r.json()["path"] == f"/old/{i}"
            # HTTP/1.0 has no chunked: the length must be given, and the keep-alive confirmed.
            assert r.header("Content-Length") is not None
            assert r.header("Transfer-Encoding") is None
            assert (r.header("Connection") or "").lower() == "keep-alive"


def test_http10_without_keepalive_is_closed(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    with RawConn(p.port) as c:
        c.send(get("/old", version="HTTP/1.0"))
        r = c.read_response()
        assert r.status == 200
        assert c.closed_by_peer(timeout=3)


def test_pipelined_requests_answered_in_order(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    with RawConn(p.port) as c:
        # The first one is slow: answering in arrival order means waiting for it.
        c.send(get("/slow?delay=0.4") + get("/second") + get("/third"))
        paths = [c.read_response().json()["path"] for _ in range(3)]
    assert paths == ["/slow", "/second", "/third"]


def test_upstream_connection_reused_across_client_connections(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    conn_ids = []
    for i in range(4):
        with RawConn(p.port) as c:
            c.send(get(f"/c/{i}"))
            conn_ids.append(c.read_response().json()["conn_id"])
    assert len(set(conn_ids)) == 1, f"one upstream connection per client connection: {conn_ids}"
    assert up.stats()["connections"] == 1


def test_connection_close_from_client_honoured(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    with RawConn(p.port) as c:
        c.send(get("/bye", extra="Connection: close\r\n"))
        r = c.read_response()
        assert r.status == 200
        assert (r.header("Connection") or "").lower() == "close"
        assert c.closed_by_peer(timeout=3), "Porch kept the connection open after Connection: close"


def test_idle_client_connection_closed_after_keepalive_timeout(upstream, porch):
    up = upstream()
    p = porch(site(up.url), keepalive_timeout="1s")
    with RawConn(p.port) as c:
        c.send(get("/idle"))
        assert c.read_response().status == 200
        start = time.monotonic()
        assert c.closed_by_peer(timeout=4), "idle connection still open 4 s after a 1 s timeout"
        assert time.monotonic() - start >= 0.5


def test_upstream_closing_idle_connections_is_invisible(upstream, porch):
    up = upstream("close-after-response")
    p = porch(site(up.url))
    for i in range(5):
        r = curl_fetch(f"{p.url}/stale/{i}", "-H", "Host: app.test")
        assert r.status == 200, f"request {i}: {r.status} {r.body[:200]!r}"
        time.sleep(0.1)


def test_stale_pooled_connection_retried_on_fresh_one(upstream, porch):
    # Every reused upstream connection is closed when the request arrives on it (the
    # idle-timeout race): each GET must still succeed, on a fresh connection.
    up = upstream("drop-reused")
    p = porch(site(up.url))
    for i in range(5):
        r = curl_fetch(f"{p.url}/race/{i}", "-H", "Host: app.test")
        assert r.status == 200, f"request {i}: {r.status} {r.body[:200]!r}"
        assert r.json()["path"] == f"/race/{i}"


def test_upstream_connection_paused_for_a_slow_client_is_reusable(upstream, porch):
    """A response that ends while its client is not reading (Porch paused the upstream
    connection for it) must not leave that connection paused in the pool: the next
    request on it would hang until the upstream timeout."""
    up = upstream()
    p = porch(site(up.url))
    with RawConn(p.port) as slow:
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        slow.send(get("/stream?size=4M"))
        # read slowly to the end: Porch's buffer to this client stays full, so the
        # upstream is paused and resumed all along, and when its last bytes come
        received = 0
        while received < 4 * 1024 * 1024:
            data = slow.sock.recv(32768)
            assert data
            received += len(data)
            time.sleep(0.002)
    start = time.monotonic()
    r = curl_fetch(f"{p.url}/next", "-H", "Host: app.test", timeout=10)
    assert r.status == 200 and time.monotonic() - start < 3
    assert up.stats()["connections"] == 1  # the same upstream connection, reused
