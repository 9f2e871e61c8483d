"""Broken upstream responses (issue 11, items 2 and 8): bytes after a complete response
never reach another client, and a response Porch cannot relay faithfully is a 502 that
the access log records as such.

The upstreams here are raw sockets in a thread: each accepted connection is answered
by a script function that reads requests and writes exact bytes.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading

import pytest

from .h2client import H2Client
from .helpers import RawConn, get, site, wait_until
from .test_h2 import curl2, h2porch, tls_site  # noqa: F401 (h2porch: a fixture)
from .test_tls import TlsConn, certs, files, tls_porch  # noqa: F401 (certs: a fixture)
from .test_websocket import WsUpstream


class RawUpstream:
    """An upstream whose every connection runs `script(conn, upstream)`; `heads` holds
    the request heads it read, `closed` the number of connections Porch closed."""

    def __init__(self, script) -> None:
        self.script = script
        self.heads: list[bytes] = []
        self.connections = 0
        self.closed = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with self.listener:
            while True:
                try:
                    conn, _ = self.listener.accept()
                except OSError:
                    return
                self.connections += 1
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with conn:
            try:
                self.script(Peer(conn, self))
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()


class Peer:
    """One upstream connection, as the script sees it."""

    def __init__(self, sock: socket.socket, upstream: RawUpstream) -> None:
        self.sock = sock
        self.upstream = upstream
        self.buf = b""

    def read_head(self, timeout: float = 10.0) -> bytes | None:
        """The next request head (GET/HEAD: no body), or None when Porch closed."""
        self.sock.settimeout(timeout)
        while b"\r\n\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                self.upstream.closed += 1
                return None
            self.buf += data
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.upstream.heads.append(head)
        return head

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)


@pytest.fixture
def raw_upstream():
    made: list[RawUpstream] = []

    def make(script) -> RawUpstream:
        up = RawUpstream(script)
        made.append(up)
        return up

    yield make
    for up in made:
        up.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
POISON_HEAD = b"HTTP/1.1 200 OK\r\nX-Poison: 1\r\n"
POISON_REST = b"Content-Length: 8\r\n\r\npoisoned"


def access_log(p, count: int) -> list[str]:
    lines = p.access_log_lines(count)
    assert len(lines) >= count, lines
    return lines


# -- item 2: a response after the response -------------------------------------------

@pytest.mark.parametrize("method, first", [
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
    ("GET", b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"),
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),  # a body after HEAD
], ids=["length", "chunked", "204", "304", "head"])
def test_bytes_after_a_response_never_reach_the_next_client(raw_upstream, porch, method, first):
    # The reproduction: the first response is followed, in the same write, by
    # the start of a second head; its end comes later.  Porch must close that
    # connection: were it pooled, the next request (another client, another path)
    # would be answered by the poison, or by its tail read as a status line.
    def script(peer: Peer) -> None:
        head = peer.read_head()
        if head is None:
            return
        if head.startswith(b"GET /first") or head.startswith(b"HEAD /first"):
            peer.send(first + POISON_HEAD)
            if peer.read_head() is not None:  # Porch reused this connection
                peer.send(POISON_REST)
                peer.read_head()
            return
        while head is not None:
            peer.send(OK)
            head = peer.read_head()

    up = raw_upstream(script)
    p = porch(site(f"http://127.0.0.1:{up.port}"))
    with RawConn(p.port) as c:
        c.send(f"{method} /first HTTP/1.1\r\nHost: app.test\r\n\r\n".encode())
        resp = c.read_response(head_request=method == "HEAD")
        assert resp.status == int(first[9:12])
        assert resp.header("X-Poison") is None
    # At once (the pool keeps an idle connection for 2 s): Porch read the poison with
    # the first response, so it knows by now.
    with RawConn(p.port) as c:
        c.send(get("/second"))
        resp = c.read_response()
        assert (resp.status, resp.body, resp.header("X-Poison")) == (200, b"ok", None)
    assert up.connections == 2
    assert wait_until(lambda: up.closed >= 1)  # Porch closed the broken connection
    assert "not reused" in p.error_log_text(wait_for="not reused")


def test_bytes_on_an_idle_connection_close_it(raw_upstream, porch):
    # A pooled connection that talks with no request asked is broken in the same way:
    # closed (and said so), and the next request goes out on a fresh one.
    client_has_it = threading.Event()

    def script(peer: Peer) -> None:
        head = peer.read_head()
        if head is not None and head.startswith(b"GET /first"):
            peer.send(OK)
            client_has_it.wait(10)
            peer.send(POISON_HEAD + POISON_REST)
            if peer.read_head() is not None:  # Porch reused this connection
                peer.send(OK)
            return
        while head is not None:
            peer.send(OK)
            head = peer.read_head()

    up = raw_upstream(script)
    p = porch(site(f"http://127.0.0.1:{up.port}"))
    with RawConn(p.port) as c:
        c.send(get("/first"))
        assert c.read_response().body == b"ok"
    client_has_it.set()
    assert "idle connection" in p.error_log_text(wait_for="idle connection")
    with RawConn(p.port) as c:
        c.send(get("/second"))
        resp = c.read_response()
        assert (resp.status, resp.body, resp.header("X-Poison")) == (200, b"ok", None)
    assert up.connections == 2


# -- item 8: what Porch cannot relay is a 502, and logged as what the client got -----

def answer_once(response: bytes):
    def script(peer: Peer) -> None:
        if peer.read_head() is not None:
            peer.send(response)
            peer.read_head()
    return script


@pytest.mark.parametrize("response, cause", [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
     "invalid response from upstream"),  # a chunk-size error in the first read
    (b"HTTP/1.1 042 X\r\nContent-Length: 2\r\n\r\nok", "status 042"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
     + b"%x\r\n" % len(gzip.compress(b"hello")) + gzip.compress(b"hello") + b"\r\n0\r\n\r\n",
     "unknown Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n"
     + gzip.compress(b"hello"), "unknown Transfer-Encoding"),
], ids=["chunk-size", "status-042", "gzip-chunked", "gzip-alone"])
def test_unrelayable_response_is_502_and_logged_so(raw_upstream, porch, response, cause):
    up = raw_upstream(answer_once(response))
    p = porch(site(f"http://127.0.0.1:{up.port}"), access_log_format="json")
    with RawConn(p.port) as c:
        c.send(get("/broken"))
        resp = c.read_response()
        assert resp.status == 502
        assert b"hello" not in resp.body and b"ok" != resp.body
    entry = json.loads(access_log(p, 1)[0])
    assert entry["status"] == 502
    assert cause in entry["error"]
    assert cause in p.error_log_text(wait_for=cause)


def test_chunk_error_after_the_head_was_sent_is_logged_with_its_cause(raw_upstream, porch):
    # The head and a first chunk reach the client; the broken chunk comes in a later
    # read.  The client sees a cut response (the connection closes, no last chunk);
    # the access log says 200 with the bytes sent, and why it was cut.
    client_has_head = threading.Event()

    def script(peer: Peer) -> None:
        if peer.read_head() is not None:
            peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            client_has_head.wait(10)
            peer.send(b"zz\r\nworld\r\n0\r\n\r\n")
            peer.read_head()

    up = raw_upstream(script)
    p = porch(site(f"http://127.0.0.1:{up.port}"), access_log_format="json")
    with RawConn(p.port) as c:
        c.send(get("/cut"))
        got = c._read_until(b"hello\r\n")
        client_has_head.set()
        got += c.read_until_closed()
    assert got.startswith(b"HTTP/1.1 200 ") and not got.endswith(b"0\r\n\r\n")
    entry = json.loads(access_log(p, 1)[0])
    assert (entry["status"], entry["bytes_out"]) == (200, 5)
    assert "invalid response from upstream" in entry["error"]


# -- item 6: the upstream's own URLs become the client's, on every route --------------

def rewrite_cases(up_port: int) -> list[tuple[str, str, str, str]]:
    """(route, header, the upstream's value, the path the client must be sent to);
    the route is "/" (plain), "/app/" with strip_prefix, or "/raw/" without it."""
    return [
        ("/", "Location", f"http://localhost:{up_port}/next?q=1", "/next?q=1"),
        ("/", "Location", f"http://127.0.0.1:{up_port}/next", "/next"),  # its IP
        ("/", "Location", "http://internal.test/next", "/next"),  # the Host it was sent
        ("/", "Content-Location", f"http://LOCALHOST:{up_port}/c", "/c"),
        ("/", "Refresh", f"0; url=http://localhost:{up_port}/r", "/r"),
        ("/app/", "Location", f"http://localhost:{up_port}/next", "/app/next"),
        ("/app/", "Refresh", f"5;URL='http://127.0.0.1:{up_port}/'", "/app/"),
        ("/raw/", "Location", f"http://localhost:{up_port}/raw/next", "/raw/next"),
    ]


def rewrite_config(up_port: int, host: str = "app.test") -> str:
    return f"""
[[site]]
hosts = ["{host}"]
redirect_http = false
  [[site.route]]
  path = "/"
  proxy = "http://localhost:{up_port}"
  upstream_host = "internal.test"
  [[site.route]]
  path = "/app/"
  proxy = "http://localhost:{up_port}"
  strip_prefix = true
  [[site.route]]
  path = "/raw/"
  proxy = "http://localhost:{up_port}"
"""


def asking_for(route: str, header: str, value: str) -> str:
    from urllib.parse import quote

    if header == "Location" and route != "/raw/":  # /raw/redirect is not the upstream's /redirect
        return f"{route}redirect?to={quote(value, safe='')}"
    return f"{route}echo?h={quote(f'{header}:{value}', safe='')}"


def expected(header: str, value: str, base: str, path: str) -> str:
    if header == "Refresh":
        head = value[:value.lower().index("url=") + 4]
        return head + ("'" if value.endswith("'") else "") + base + path + ("'" if value.endswith("'") else "")
    return base + path


def test_upstream_urls_rewritten_on_every_route_http1(upstream, porch):
    up = upstream()
    p = porch(rewrite_config(up.port))
    base = f"http://app.test:{p.port}"
    for route, header, value, path in rewrite_cases(up.port):
        with RawConn(p.port) as c:
            c.send(get(asking_for(route, header, value), host=f"app.test:{p.port}"))
            resp = c.read_response()
        assert resp.header(header) == expected(header, value, base, path), (route, header, value)
    # Other URLs are the app's business: passed as they are.
    with RawConn(p.port) as c:
        c.send(get(asking_for("/", "Location", "https://elsewhere.example/x"), host=f"app.test:{p.port}"))
        assert c.read_response().header("Location") == "https://elsewhere.example/x"


def test_upstream_urls_rewritten_on_every_route_http2(upstream, h2porch):
    up = upstream()
    p = h2porch(rewrite_config(up.port))
    base = f"https://app.test:{p.https_port}"
    for route, header, value, path in rewrite_cases(up.port):
        r = curl2(p, asking_for(route, header, value))
        assert r.rc == 0, r.stderr
        assert r.header(header) == expected(header, value, base, path), (route, header, value)


# -- item 7: the 101 of a WebSocket carries the site's HSTS too --------------------------

WS_REQUEST = (b"GET /upgrade-count HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Sec-WebSocket-Version: 13\r\n\r\n")


def test_switching_protocols_carries_hsts_http1(porch, upstream, certs):
    up = upstream()
    cert, key, _ = certs.leaf(["a.test"], "a")
    p = tls_porch(porch, site(up.url, files(cert, key) + 'hsts = "1y"\n', host="a.test"))
    with TlsConn(p.https_port, "a.test", certs.ca_path) as c:
        c.send(WS_REQUEST)
        resp = c.read_response()
        assert resp.status == 101
        assert resp.header_all("Strict-Transport-Security") == ["max-age=31536000"]


def test_websocket_over_h2_carries_hsts(h2porch, procs, tmp_path):
    ws = WsUpstream(procs, tmp_path)
    p = h2porch(tls_site(ws.url, 'hsts = "1y"\n'))
    with H2Client(p.https_port) as c:
        c.pump(lambda: c.remote_settings, 5)
        sid = c.request("/echo", "CONNECT", end=False, extra_pseudo=[(":protocol", "websocket")],
                        headers=[("sec-websocket-version", "13")])
        stream = c.streams[sid]
        assert c.pump(lambda: stream.headers or stream.done, 5)
        assert stream.status == 200 and not stream.done
        assert stream.header(b"strict-transport-security") == b"max-age=31536000"
