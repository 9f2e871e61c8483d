"""max_connections_per_client and max_connections (server/limits.py) with real sockets:
the connection over the limit is closed at accept (before any TLS handshake), a
refusal is logged once per client, a closed connection frees its place at once, and
the count holds across two workers.  Clients are told apart by their source address
(127.0.0.2, 127.0.0.3 ... are all this machine's)."""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from .h2client import H2Client
from .helpers import ClosedBeforeResponse, RawConn, free_port, site, wait_for_port, wait_until

HOST = "app.test"


class From(RawConn):
    """A RawConn from source address `source`."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
        self.sock.settimeout(timeout)
        self.buf = b""
        self.eof = False

    def get(self) -> int:
        self.send(f"GET /x HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        return self.read_response().status


def refused(port: int, source: str = "127.0.0.1") -> bool:
    """A connection from `source` is closed by Porch without any byte sent by us."""
    with From(port, source) as c:
        return c.closed_by_peer(timeout=2.0)


def admitted(port: int, n: int) -> list[From]:
    """`n` connections that each got an answer.  A connection the test closed a moment
    ago (wait_for_port's) may still count in the worker that had it until that worker
    sees it close: such a refusal is retried, for up to 3 s."""
    conns: list[From] = []

    def one_more() -> bool:
        c = From(port)
        try:
            assert c.get() == 200
        except ClosedBeforeResponse:
            c.close()
            return False
        conns.append(c)
        return True

    for _ in range(n):
        assert wait_until(one_more, timeout=3.0), f"only {len(conns)} of {n} connections admitted"
    return conns


def test_the_51st_connection_is_refused_and_logged_once(porch, upstream):
    up = upstream()
    p = porch(site(up.url), max_connections_per_client=50)
    conns = admitted(p.port, 50)
    try:
        mark = p.error_log_mark()
        assert all(refused(p.port) for _ in range(5))
        assert From(p.port, "127.0.0.2").get() == 200  # another client
        assert all(c.get() == 200 for c in conns[:3])  # the 50 go on
        log = p.error_log_text(wait_for="connection refused", since=mark)
        assert log.count("connection refused: max_connections_per_client 50") == 1, log
        assert "client=127.0.0.1" in log
        conns.pop().close()  # one place free: taken at once
        assert wait_until(lambda: not refused(p.port), timeout=2.0)
    finally:
        for c in conns:
            c.close()


def test_tls_connections_are_refused_before_the_handshake(porch, upstream):
    up = upstream()
    https_port = free_port()
    p = porch(site(up.url, 'tls = "internal"\nredirect_http = false\n'), https_port=https_port,
              tls="internal", max_connections_per_client=2)
    wait_for_port(https_port, p.managed, what="porch https")
    with H2Client(https_port, HOST) as a, H2Client(https_port, HOST) as b:
        assert a.get("/x").status == 200 and b.get("/x").status == 200
        # silent, as a client before its ClientHello: closed at once, no TLS byte sent
        with From(https_port) as c:
            start = time.monotonic()
            assert c.closed_by_peer(timeout=3.0) and c.buf == b""
            assert time.monotonic() - start < 1.0
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            H2Client(https_port, HOST)
        assert a.get("/y").status == 200  # the two admitted go on over HTTP/2
    assert wait_until(lambda: _h2_ok(https_port), timeout=2.0)  # closed: places free again


def _h2_ok(port: int) -> bool:
    try:
        with H2Client(port, HOST) as c:
            return c.get("/z").status == 200
    except (ssl.SSLError, OSError):
        return False


def test_max_connections_counts_every_client(porch, upstream):
    up = upstream()
    p = porch(site(up.url), max_connections=3)
    conns = [From(p.port, f"127.0.0.{i}") for i in (2, 3, 4)]
    try:
        assert [c.get() for c in conns] == [200] * 3
        assert refused(p.port, "127.0.0.5")
        assert "connection refused: max_connections 3" in p.error_log_text(wait_for="max_connections 3")
        conns.pop().close()
        assert wait_until(lambda: not refused(p.port, "127.0.0.6"), timeout=3.0)
    finally:
        for c in conns:
            c.close()


def test_the_count_holds_across_two_workers(porch, upstream):
    """Ten connections spread by SO_REUSEPORT over two workers; the 11th is refused
    by whichever worker gets it (with a count per worker, up to 20 would pass)."""
    up = upstream()
    p = porch(site(up.url), max_connections_per_client=10, workers=2)
    p.wait_workers(2)
    conns = admitted(p.port, 10)
    try:
        assert all(refused(p.port) for _ in range(6))
        assert From(p.port, "127.0.0.2").get() == 200
    finally:
        for c in conns:
            c.close()


# -- HTTP/2: each stream counts as a connection (nginx's limit_conn) ------------------

REFUSED_STREAM = 7  # RFC 9113 7


def h2_site(porch, upstream, **limits):
    up = upstream()
    https_port = free_port()
    p = porch(site(up.url, 'tls = "internal"\nredirect_http = false\n'), https_port=https_port,
              tls="internal", **limits)
    wait_for_port(https_port, p.managed, what="porch https")
    return p, https_port


def concurrent(c: H2Client, n: int, path: str = "/slow?delay=1.5") -> list[int]:
    """`n` streams opened in one write; their outcome: status, or -code when reset."""
    sids = [c.request(path, flush=False) for _ in range(n)]
    c.flush()
    results = [c.response(sid) for sid in sids]
    return [-r.reset if r.reset is not None else r.status for r in results]


def test_http2_streams_over_the_limit_get_refused_stream_and_the_connection_lives(porch, upstream):
    p, port = h2_site(porch, upstream, max_connections_per_client=3)
    mark = p.error_log_mark()
    with H2Client(port, HOST) as c:
        assert concurrent(c, 5) == [200, 200, 200, -REFUSED_STREAM, -REFUSED_STREAM]
        assert concurrent(c, 4) == [200, 200, 200, -REFUSED_STREAM]  # places given back, taken again
        assert c.get("/x").status == 200 and c.goaway is None
        with H2Client(port, HOST) as other:  # a second connection of the client holds a place
            assert other.get("/x").status == 200
            assert concurrent(c, 3) == [200, 200, -REFUSED_STREAM]
        assert wait_until(lambda: concurrent(c, 3, "/x") == [200] * 3, timeout=3.0)  # its place is free
    log = p.error_log_text(wait_for="HTTP/2 stream refused", since=mark)
    assert log.count("HTTP/2 stream refused: max_connections_per_client 3 reached") == 1, log


def test_http2_streams_count_against_max_connections(porch, upstream):
    p, port = h2_site(porch, upstream, max_connections=2)
    with H2Client(port, HOST) as c:
        assert concurrent(c, 3) == [200, 200, -REFUSED_STREAM]
        assert "HTTP/2 stream refused: max_connections 2" in p.error_log_text(wait_for="stream refused")
        c.request("/slow?delay=5")  # two streams still open when the connection goes
        c.request("/slow?delay=5")
        c.pump(lambda: False, timeout=0.3)
    # every place the connection and its streams held is free again

    def two_streams_pass() -> bool:
        try:
            with H2Client(port, HOST) as again:
                return concurrent(again, 2, "/x") == [200, 200]
        except (ssl.SSLError, OSError):
            return False
    assert wait_until(two_streams_pass, timeout=3.0)
